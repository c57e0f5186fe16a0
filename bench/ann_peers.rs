//! The graph beside its peers: imgsearch's own HNSW, hnsw_rs as imgsearch
//! used it before (at up to 200,000 vectors), hnswlib and
//! faiss (`IndexHNSWFlat`, `IndexFlatL2`), on exactly the same vectors and
//! queries, on this machine, in one run.
//!
//! The vectors are the replicated `digits` latents of "Query at scale"
//! (`common::latents`); queries are MNIST test images. This bench writes
//! them as raw little-endian f32 files with the exact top 10 of each query,
//! measures imgsearch's graph (inside a real index: sled, flat file, graph),
//! then runs `bench/ann_peers.py` in `target/venv-peers` on the same files
//! and prints one table.
//!
//! Per system: build seconds and resident memory, reload seconds, recall@10
//! and one-thread p50/p99 at several ef, batch queries/s on 2 threads, and a
//! cold process answering one query (our CLI against Python importing the
//! library and reading its saved index).
//!
//! Run: `bash bench/ann-peers.sh` (makes the venv, then
//! `cargo bench --bench ann_peers`). `BENCH_SIZES` (default 100000),
//! `BENCH_QUERIES` (1000), `BENCH_EFS` (16,32,64,128,256). `BENCH_OURS_ONLY=1`
//! measures imgsearch's graph alone (no baseline: for trying a change).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use imgsearch::ann::kernels::{l2sq, TopK};
use imgsearch::dataset;
use imgsearch::index::Index;
use rayon::prelude::*;

#[path = "common.rs"]
mod common;
use common::latents::Latents;
use common::{env_list, p50_p99, release_binary, run_measured};

/// The allocator the `imgsearch` binary runs with (`src/main.rs`), so the
/// index built and searched here is built and searched as the CLI does.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const K: usize = 10;

/// One row of the table; the Python side prints the same fields as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    size: usize,
    system: String,
    build_s: Option<f64>,
    memory_mb: Option<f64>,
    reload_s: Option<f64>,
    ef: Option<usize>,
    recall: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    batch_qps: Option<f64>,
    cold_ms: Option<f64>,
}

impl Row {
    fn new(size: usize, system: &str) -> Self {
        Self {
            size,
            system: system.into(),
            build_s: None,
            memory_mb: None,
            reload_s: None,
            ef: None,
            recall: None,
            p50_ms: None,
            p99_ms: None,
            batch_qps: None,
            cold_ms: None,
        }
    }
}

fn write_f32(path: &Path, rows: impl Iterator<Item = Vec<f32>>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for row in rows {
        out.write_all(bytemuck::cast_slice(&row))?;
    }
    out.flush()
}

/// Recall@10 and one-thread p50/p99 of `search` at each ef, and its batch
/// throughput on every core: one row per ef, under a row naming `system`.
fn measure(
    size: usize,
    system: Row,
    efs: &[usize],
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
    search: impl Fn(&[f32], usize) -> Vec<u64> + Sync,
) -> Vec<Row> {
    // rayon's pool starts on first use; not inside the first timing.
    let _: Vec<_> = queries.par_iter().map(|q| search(q, 16)).collect();
    let name = system.system.clone();
    let mut rows = vec![system];
    for &ef in efs {
        let (mut lat, mut hit) = (Vec::with_capacity(queries.len()), 0);
        for (q, want) in queries.iter().zip(truth) {
            let t = Instant::now();
            let found = search(q, ef);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            hit += found
                .iter()
                .filter(|&&id| want.contains(&(id as u32)))
                .count();
        }
        let (p50, p99) = p50_p99(&mut lat);
        let t = Instant::now();
        let _: Vec<_> = queries.par_iter().map(|q| search(q, ef)).collect();
        let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
        let mut row = Row::new(size, "");
        row.ef = Some(ef);
        row.recall = Some(hit as f64 / (K * queries.len()) as f64);
        (row.p50_ms, row.p99_ms, row.batch_qps) = (Some(p50), Some(p99), Some(qps));
        println!(
            "{name} ef {ef}: recall {:.4}, p50 {p50:.3} ms, p99 {p99:.3} ms, {qps:.0} q/s on all cores",
            row.recall.unwrap()
        );
        rows.push(row);
    }
    rows
}

/// Euclidean distance for hnsw_rs through our kernel, as imgsearch used
/// it before the graph became its own.
#[derive(Clone, Copy, Default)]
struct KernelL2;

impl hnsw_rs::prelude::Distance<f32> for KernelL2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        l2sq(a, b).sqrt()
    }
}

/// hnsw_rs as imgsearch used it until it had its own graph (M 16,
/// ef_construction 128, our kernel as its distance, the plain `search`),
/// built here in memory from the same vectors: the baseline the own graph
/// replaced, in the same run.
fn hnsw_rs_before(size: usize, latents: &Latents, truth: &[Vec<u32>], efs: &[usize]) -> Vec<Row> {
    use hnsw_rs::prelude::Hnsw;
    let base: Vec<Vec<f32>> = latents.replicated(size).collect();
    let (rss_before, t) = (common::rss_mb(), Instant::now());
    let hnsw = Hnsw::<f32, KernelL2>::new(16, size, 16, 128, KernelL2);
    for (start, chunk) in base.chunks(4096).enumerate() {
        let refs: Vec<(&[f32], usize)> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_slice(), start * 4096 + i))
            .collect();
        hnsw.parallel_insert_slice(&refs);
    }
    let mut head = Row::new(
        size,
        "hnsw_rs 0.3.5 as imgsearch used it (before), built in memory",
    );
    head.build_s = Some(t.elapsed().as_secs_f64());
    head.memory_mb = Some(common::rss_mb() - rss_before);
    measure(size, head, efs, &latents.queries, truth, |q, ef| {
        hnsw.search(q, K, ef)
            .iter()
            .map(|n| n.d_id as u64)
            .collect()
    })
}

fn main() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(root) = dataset::data_root(manifest) else {
        println!("ann_peers: skipped, no dataset folder (set IMGSEARCH_DATA)");
        return Ok(());
    };
    let sizes = env_list("BENCH_SIZES", "100000");
    let efs = env_list("BENCH_EFS", "16,32,64,128,256");
    let n_queries = env_list("BENCH_QUERIES", "1000")[0];
    let work = manifest.join("target/bench-ann");
    std::fs::create_dir_all(&work)?;
    let binary = release_binary()?;
    let python = manifest.join("target/venv-peers/bin/python");
    anyhow::ensure!(
        python.is_file(),
        "make the peers' venv first: bash bench/ann-peers.sh"
    );

    let latents = Latents::load(&root, n_queries)?;
    let queries = &latents.queries;
    let query_png = work.join("query.png");
    let test = &latents.test;
    imgsearch::imageio::planar_to_image(test.image(0), test.size, test.channels)
        .save(&query_png)?;
    let queries_file = work.join("queries.f32");
    write_f32(&queries_file, queries.iter().cloned())?;

    let mut rows: Vec<Row> = Vec::new();
    for &size in &sizes {
        let dir = work.join(format!("idx-{size}"));
        let (built, insert_s) = latents.build_index(&dir, size)?;
        println!("\n== {size} vectors: index {built} ==");
        let build_record = dir.join("bench-build.json");
        let insert_s = match insert_s {
            Some(s) => {
                std::fs::write(&build_record, serde_json::to_string(&s)?)?;
                Some(s)
            }
            None => std::fs::read(&build_record)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        };

        // The exact top 10, for every system's recall.
        let base_file = work.join(format!("base-{size}.f32"));
        write_f32(&base_file, latents.replicated(size))?;
        let base: Vec<Vec<f32>> = latents.replicated(size).collect();
        let truth: Vec<Vec<u32>> = queries
            .par_iter()
            .map(|q| {
                let mut top = TopK::new(K);
                for (i, v) in base.iter().enumerate() {
                    top.push(i as u32, l2sq(q, v));
                }
                top.into_sorted().into_iter().map(|(i, _)| i).collect()
            })
            .collect();
        drop(base);
        let truth_file = work.join(format!("truth-{size}.u32"));
        std::fs::File::create(&truth_file)?.write_all(bytemuck::cast_slice(&truth.concat()))?;

        // Ours: what the graph adds to a cold process answering one query
        // (peak RSS of `query --hnsw` less that of the planned exact scan).
        let cold_query = |extra: &[&str]| {
            run_measured(
                Command::new(&binary)
                    .arg("query")
                    .arg(&query_png)
                    .args(["-k", "10", "--json", "--index"])
                    .arg(&dir)
                    .args(extra),
            )
        };
        let (hnsw_wall, hnsw_peak, _) = cold_query(&["--hnsw"])?;
        let mut cold = Vec::new();
        let mut exact_peak = 0f64;
        for _ in 0..10 {
            let (wall, peak, _) = cold_query(&[])?;
            cold.push(wall * 1e3);
            exact_peak = exact_peak.max(peak);
        }

        // Then reload the saved graph here and search it one query at a time.
        let index = Index::open(&dir, None, false)?;
        let t = Instant::now();
        index.load_graph()?;
        let reload_s = t.elapsed().as_secs_f64();
        let ann = index.ann();
        let graph = ann.loaded_graph().expect("loaded");
        // Store ids start at 0 in insertion order, so id = row.
        let mut head = Row::new(size, "imgsearch (own HNSW, M 16, ef_construction 128)");
        head.build_s = insert_s;
        head.memory_mb = Some(hnsw_peak - exact_peak);
        head.reload_s = Some(reload_s);
        let ids = |found: Vec<(u64, f32)>| found.into_iter().map(|h| h.0).collect();
        rows.extend(measure(size, head, &efs, queries, &truth, |q, ef| {
            ids(graph.search(q, K, ef))
        }));

        drop(ann);
        drop(index);
        // The graph it replaced, built again: 645 s at a million, so only
        // at the smaller sizes.
        let ours_only = std::env::var("BENCH_OURS_ONLY").is_ok_and(|v| v == "1");
        if size <= 200_000 && !ours_only {
            rows.extend(hnsw_rs_before(size, &latents, &truth, &efs));
        }

        let mut row = Row::new(
            size,
            "imgsearch cold `query` process (exact scan, 10 runs, p50)",
        );
        row.cold_ms = Some(p50_p99(&mut cold).0);
        rows.push(row);
        let mut row = Row::new(size, "imgsearch cold `query --hnsw` process (graph reload)");
        row.cold_ms = Some(hnsw_wall * 1e3);
        rows.push(row);

        if ours_only {
            let _ = std::fs::remove_file(&base_file);
            continue;
        }
        // The peers, on the same files.
        let out = Command::new(&python)
            .arg(manifest.join("bench/ann_peers.py"))
            .args(["--size", &size.to_string(), "--dim"])
            .arg(latents.std.len().to_string())
            .arg("--base")
            .arg(&base_file)
            .arg("--queries")
            .arg(&queries_file)
            .arg("--truth")
            .arg(&truth_file)
            .arg("--work")
            .arg(&work)
            .arg("--efs")
            .arg(
                efs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .stderr(std::process::Stdio::inherit())
            .output()?;
        anyhow::ensure!(out.status.success(), "bench/ann_peers.py failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            rows.push(serde_json::from_str(line)?);
        }
        let _ = std::fs::remove_file(&base_file);
    }

    let cell = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    println!("\n| vectors | system | build s | memory MB | reload s | ef | recall@10 | p50 ms | p99 ms | batch q/s (2 threads) | cold process ms |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.size,
            r.system,
            cell(r.build_s, 1),
            cell(r.memory_mb, 0),
            cell(r.reload_s, 2),
            r.ef.map_or(String::new(), |e| e.to_string()),
            cell(r.recall, 4),
            cell(r.p50_ms, 3),
            cell(r.p99_ms, 3),
            cell(r.batch_qps, 0),
            cell(r.cold_ms, 0),
        );
    }
    Ok(())
}
