//! Query at scale: HNSW against the exact scan on the same queries (recall@10,
//! latency p50/p99, both warm in this process), and the cold `imgsearch
//! query` process time, at 100k and 1M indexed vectors.
//!
//! The vectors are real latents: the `digits` model's embeddings of the 60,000
//! MNIST training images. To reach 100k and 1M they are replicated with small
//! Gaussian noise (σ = 0.05 × the latents' per-dimension standard
//! deviation), so each replica is a distinct point near a real one. Queries
//! are the embeddings of MNIST *test* images, which are not in the index.
//! The indexes are real: sled store, flat vector file and HNSW graph written
//! through the library, with records whose paths are virtual (they are never
//! opened by a query).
//!
//! Run: `cargo bench --bench query_scale` (about 10 minutes on 2 cores).
//! `BENCH_SIZES=100000,1000000` chooses the sizes, `BENCH_QUERIES` the
//! number of queries (default 1000), `BENCH_COLD_RUNS` the cold runs (20).
//! Indexes are kept in `target/bench-query/` and reused while they match.

use std::path::Path;
use std::time::Instant;

use imgsearch::ann::Graph;
use imgsearch::dataset;
use imgsearch::index::Index;

const K: usize = 10;

#[path = "common.rs"]
mod common;
use common::latents::Latents;
use common::{cold_queries, env_list, p50_p99 as ms, peak_rss_mb, release_binary};

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!("query_scale: skipped, no dataset folder (set IMGSEARCH_DATA)");
        return Ok(());
    };
    let sizes = env_list("BENCH_SIZES", "100000,1000000");
    let n_queries = env_list("BENCH_QUERIES", "1000")[0];
    let cold_runs = env_list("BENCH_COLD_RUNS", "20")[0];
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-query");
    std::fs::create_dir_all(&work)?;
    let binary = release_binary()?;

    let latents = Latents::load(&root, n_queries)?;
    let (test, queries) = (&latents.test, &latents.queries);
    // The query image the cold runs use: a test image, as a PNG file.
    let query_png = work.join("query.png");
    imgsearch::imageio::planar_to_image(test.image(0), test.size, test.channels)
        .save(&query_png)?;

    let mut rows = Vec::new();
    for &size in &sizes {
        let dir = work.join(format!("idx-{size}"));
        let (built, _) = latents.build_index(&dir, size)?;
        println!("\n== {size} vectors ({built}) ==");

        // Warm, in this process: the graph loaded, the flat file mapped.
        let index = Index::open(&dir, None, false)?;
        let t = Instant::now();
        index.load_graph()?;
        let load_s = t.elapsed().as_secs_f64();
        println!(
            "graph reload: {load_s:.1} s, peak RSS {:.0} MB",
            peak_rss_mb()
        );
        let ann = index.ann();
        let flat = &ann.flat;
        let graph: &Graph = ann.loaded_graph().expect("loaded");

        let mut exact_ms = Vec::new();
        let mut truth = Vec::new();
        for q in queries {
            let t = Instant::now();
            let hits = flat.search(&[q.as_slice()], K, &|_| true).remove(0);
            exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
            truth.push(hits.into_iter().map(|h| h.0).collect::<Vec<_>>());
        }
        let t = Instant::now();
        let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
        let batched = flat.search(&refs, K, &|_| true);
        let batched_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
        assert!(batched
            .iter()
            .zip(&truth)
            .all(|(b, t)| b.iter().map(|h| h.0).collect::<Vec<_>>() == *t));
        let (e50, e99) = ms(&mut exact_ms);
        let scan_ns_per_float = e50 * 1e6 / (size * latents.std.len()) as f64;
        println!(
            "exact scan: p50 {e50:.2} ms, p99 {e99:.2} ms ({scan_ns_per_float:.3} ns per float); batched {batched_ms:.2} ms/query"
        );
        rows.push(vec![
            size.to_string(),
            "exact scan (flat file, 2 threads)".into(),
            "1.0000".into(),
            format!("{e50:.2}"),
            format!("{e99:.2}"),
            format!("{:.0}", 1e3 / e50),
        ]);
        for ef in [16, 32, 64, 96, 128] {
            let mut lat = Vec::new();
            let mut hit = 0usize;
            for (q, t_ids) in queries.iter().zip(&truth) {
                let t = Instant::now();
                let found = graph.search(q, K, ef);
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                hit += found.iter().filter(|h| t_ids.contains(&h.0)).count();
            }
            let recall = hit as f64 / (K * queries.len()) as f64;
            let (p50, p99) = ms(&mut lat);
            println!("hnsw ef={ef}: recall@10 {recall:.4}, p50 {p50:.3} ms, p99 {p99:.3} ms");
            rows.push(vec![
                size.to_string(),
                format!("HNSW ef={ef} (1 thread)"),
                format!("{recall:.4}"),
                format!("{p50:.3}"),
                format!("{p99:.3}"),
                format!("{:.0}", 1e3 / p50),
            ]);
        }
        let points = graph.points();
        drop(ann);
        drop(index);

        // Cold: a fresh `imgsearch query` process per run (OS file cache warm).
        let cold = |extra: &[&str], runs: usize| -> anyhow::Result<(f64, f64, String)> {
            let (mut times, method) = cold_queries(&binary, &query_png, &dir, extra, runs)?;
            let (p50, _) = ms(&mut times);
            // Sorted by now: the last is the slowest.
            Ok((p50, times[times.len() - 1], method))
        };
        let (c50, cmax, method) = cold(&[], cold_runs)?;
        println!("cold query process: p50 {c50:.0} ms, max {cmax:.0} ms ({method})");
        let (h50, _, hmethod) = cold(&["--hnsw"], 1)?;
        println!("cold query process with --hnsw: {h50:.0} ms ({hmethod})");
        rows.push(vec![
            size.to_string(),
            format!("cold `imgsearch query` ({method}), {cold_runs} runs"),
            "1.0000".into(),
            format!("{c50:.0}"),
            format!("{cmax:.0} (max)"),
            String::new(),
        ]);
        rows.push(vec![
            size.to_string(),
            "cold `imgsearch query --hnsw` (graph reload), 1 run".into(),
            String::new(),
            format!("{h50:.0}"),
            String::new(),
            String::new(),
        ]);
        println!(
            "graph reload {:.1} µs/point ({points} points)",
            load_s * 1e6 / points as f64
        );
    }

    println!("\n| vectors | method | recall@10 | p50 ms | p99 ms | queries/s |");
    println!("|---:|---|---:|---:|---:|---:|");
    for r in &rows {
        println!("| {} |", r.join(" | "));
    }
    println!("\npeak RSS of this process: {:.0} MB", peak_rss_mb());
    Ok(())
}
