//! Building the HNSW graph alone (no store, no flat file): the same
//! replicated `digits` latents as `ann_peers` and `import`, inserted in
//! `import`'s batches of 4,096 into `Graph`, on 1 thread and on every
//! thread of this machine, each build in a pool of its own. Reports
//! seconds, inserts/s, the speed-up over one thread, and recall@10 at ef
//! 64 and 128 against the exact top 10 (the MNIST test latents as
//! queries), so a faster build that makes a worse graph shows.
//!
//! Run: `cargo bench --bench graph_build`. `BENCH_SIZES` (default 100000),
//! `BENCH_THREADS` (default `1,` and this machine's core count).

use std::path::Path;
use std::time::Instant;

use imgsearch::ann::kernels::squared_distance;
use imgsearch::ann::{Graph, HnswParams};
use imgsearch::dataset;

#[path = "common.rs"]
mod common;
use common::env_list;
use common::latents::Latents;

const BATCH: usize = 4096;

/// The allocator the `imgsearch` binary runs with (`src/main.rs`).
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!("graph_build: skipped, no dataset folder (set IMGSEARCH_DATA)");
        return Ok(());
    };
    let sizes = env_list("BENCH_SIZES", "100000");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = env_list("BENCH_THREADS", &format!("1,{cores}"));
    let latents = Latents::load(&root, 200)?;
    let params = HnswParams::default();
    println!(
        "\nM {}, ef_construction {}, {} queries",
        params.m,
        params.ef_construction,
        latents.queries.len()
    );
    println!("\n| vectors | threads | build s | inserts/s | speed-up | recall@10 ef 64 | recall@10 ef 128 |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &size in &sizes {
        let points: Vec<(u64, Vec<f32>)> = latents
            .replicated(size)
            .enumerate()
            .map(|(i, v)| (i as u64, v))
            .collect();
        let truth = exact_top10(&points, &latents.queries);
        let mut one_thread = None;
        for &n in &threads {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build()?;
            let graph = Graph::empty(latents.base[0].len(), params, size);
            let t = Instant::now();
            pool.install(|| {
                for batch in points.chunks(BATCH) {
                    graph.insert(batch);
                }
            });
            let s = t.elapsed().as_secs_f64();
            let base = *one_thread.get_or_insert(s);
            let recall = |ef| recall_at_10(&graph, &latents.queries, &truth, ef);
            println!(
                "| {size} | {n} | {s:.1} | {:.0} | {:.2}× | {:.4} | {:.4} |",
                size as f64 / s,
                base / s,
                recall(64),
                recall(128)
            );
        }
    }
    Ok(())
}

/// Each query's 10 nearest ids by exact scan.
fn exact_top10(points: &[(u64, Vec<f32>)], queries: &[Vec<f32>]) -> Vec<Vec<u64>> {
    use rayon::prelude::*;
    queries
        .par_iter()
        .map(|q| {
            let mut all: Vec<(f32, u64)> = points
                .iter()
                .map(|(id, v)| (squared_distance(q, v), *id))
                .collect();
            all.select_nth_unstable_by(9, |a, b| a.0.total_cmp(&b.0));
            all.truncate(10);
            all.into_iter().map(|(_, id)| id).collect()
        })
        .collect()
}

fn recall_at_10(graph: &Graph, queries: &[Vec<f32>], truth: &[Vec<u64>], ef: usize) -> f64 {
    let found: usize = queries
        .iter()
        .zip(truth)
        .map(|(q, want)| {
            graph
                .search(q, 10, ef)
                .iter()
                .filter(|(id, _)| want.contains(id))
                .count()
        })
        .sum();
    found as f64 / (10 * queries.len()) as f64
}
