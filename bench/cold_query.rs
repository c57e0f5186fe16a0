//! A one-shot query in a cold process: through the record catalogue (what
//! `imgsearch query` does now) against through the store (what it did
//! before: open sled, catch the flat file up, read each hit's record).
//!
//! The indexes are those of "The graph beside hnswlib and faiss"
//! (`target/bench-ann/idx-N`: replicated `digits` latents, real sled, flat
//! file and graph, virtual paths), built through the library if missing.
//! Queries are MNIST test images. In this process, for each size, the two
//! read paths alternate (open, one exact query, hits with paths; the OS file
//! cache warm for both); then `imgsearch query IMAGE` runs as a fresh
//! process, the number users see, plain and with `--hnsw` (the saved
//! graph read beside the catalogue, still without the store).
//!
//! Run: `cargo build --release && cargo bench --bench cold_query`.
//! `BENCH_SIZES` (default 10000,100000,1000000), `BENCH_RUNS` (11).

use std::path::Path;
use std::time::{Duration, Instant};

use imgsearch::cold::ColdIndex;
use imgsearch::dataset;
use imgsearch::index::Index;
use imgsearch::search::{self, QueryOptions, Searchable};

#[path = "common.rs"]
mod common;
use common::latents::Latents;
use common::{cold_queries, env_list, p50_p99, release_binary};

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!("cold_query: skipped, no dataset folder (set IMGSEARCH_DATA)");
        return Ok(());
    };
    let sizes = env_list("BENCH_SIZES", "10000,100000,1000000");
    let runs = env_list("BENCH_RUNS", "11")[0];
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-ann");
    std::fs::create_dir_all(&work)?;
    let binary = release_binary()?;
    let latents = Latents::load(&root, runs)?;
    let query_png = work.join("cold-query.png");
    imgsearch::imageio::planar_to_image(
        latents.test.image(0),
        latents.test.size,
        latents.test.channels,
    )
    .save(&query_png)?;
    let opts = QueryOptions {
        k: 10,
        ..QueryOptions::default()
    };

    let mut rows = Vec::new();
    for &size in &sizes {
        let dir = work.join(format!("idx-{size}"));
        let (built, _) = latents.build_index(&dir, size)?;
        println!("\n== {size} vectors ({built}) ==");
        // A full open first: it writes the catalogue if this index predates it.
        drop(open_store(&dir)?);

        let (mut through_catalogue, mut through_store) = (Vec::new(), Vec::new());
        let (mut open_catalogue, mut open_store_ms) = (Vec::new(), Vec::new());
        for q in latents.queries.iter().take(runs) {
            let t = Instant::now();
            let cold = ColdIndex::open(&dir)?.map_err(anyhow::Error::msg)?;
            open_catalogue.push(t.elapsed().as_secs_f64() * 1e3);
            // Pieces of the flat file and catalogue are checked as read.
            let (a, _) = cold
                .answer(|cold| search::nearest(cold, q, &opts))
                .map_err(anyhow::Error::msg)??;
            through_catalogue.push(t.elapsed().as_secs_f64() * 1e3);
            drop(cold);

            let t = Instant::now();
            let index = open_store(&dir)?;
            open_store_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let (b, _) = search::nearest(&index as &dyn Searchable, q, &opts)?;
            through_store.push(t.elapsed().as_secs_f64() * 1e3);
            let same = a
                .iter()
                .map(|h| (h.id, &h.path))
                .eq(b.iter().map(|h| (h.id, &h.path)));
            anyhow::ensure!(same, "the two read paths disagree at {size}");
        }

        let (mut process, _) = cold_queries(&binary, &query_png, &dir, &[], runs)?;
        // The graph, read beside the catalogue when it is current (the
        // build above saved it whole).
        let (mut process_hnsw, method) =
            cold_queries(&binary, &query_png, &dir, &["--hnsw"], runs)?;
        anyhow::ensure!(method == "hnsw", "`--hnsw` answered by {method}");
        let p50 = |v: &mut Vec<f64>| p50_p99(v).0;
        let row = [
            size as f64,
            p50(&mut open_store_ms),
            p50(&mut through_store),
            p50(&mut open_catalogue),
            p50(&mut through_catalogue),
            p50(&mut process),
            p50(&mut process_hnsw),
        ];
        println!(
            "through the store: open {:.1} ms, answered {:.1} ms; through the catalogue: open {:.1} ms, answered {:.1} ms; `imgsearch query` process {:.1} ms, with --hnsw {:.1} ms",
            row[1], row[2], row[3], row[4], row[5], row[6]
        );
        rows.push(row);
    }

    println!("\nIn-process p50 of {runs} alternating runs (open, one exact 10-NN query, each hit's path and label), and a fresh `imgsearch query IMAGE` process, plain and with `--hnsw` (p50 of {runs}):\n");
    println!("| vectors | store: open | store: answered | catalogue: open | catalogue: answered | speed-up | `imgsearch query` process | `query --hnsw` process |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0}× | {:.1} ms | {:.0} ms |",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[2] / r[4],
            r[5],
            r[6]
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "\n`imgsearch query` at {} is {:.2}× the one at {}",
            last[0],
            last[5] / first[5],
            first[0]
        );
    }
    Ok(())
}

/// Opens the index through its store. sled lets go of its lock from a
/// background thread after the previous open's drop, so this waits for it.
fn open_store(dir: &Path) -> anyhow::Result<Index> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Index::open(dir, None, false) {
            Ok(index) => return Ok(index),
            Err(e) if Instant::now() < deadline && e.to_string().contains("in use") => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
