//! Ingest throughput, each stage alone and then the whole pipeline, in one
//! process on the same files:
//!
//! 1. read + hash, then decode + resize of the bytes in memory (rayon over
//!    all cores): the floor for photos;
//! 2. encode (candle, batches of 256) with reconstruction error;
//! 3. store: sled transactions of 256 records;
//! 4. HNSW insert (parallel), with recall@10 against exact search;
//! 5. the whole `ingest` into a fresh index.
//!
//! Run: `bench/ingest.sh` (prepares the image sets), or directly
//! `BENCH_INGEST_DIR=/path cargo bench --bench ingest_stages`.

use std::time::Instant;

use imgsearch::ann::{Graph, HnswParams};
use imgsearch::imageio::{DecodeLimits, Pixels};
use imgsearch::index::Index;
use imgsearch::ingest::{self, IngestOptions};
use imgsearch::knn::{self, Vectors};
use imgsearch::model::Model;
use imgsearch::store::{Change, Record, Store};
use rayon::prelude::*;

#[path = "common.rs"]
mod common;
use common::peak_rss_mb;

fn main() -> anyhow::Result<()> {
    let Ok(dir) = std::env::var("BENCH_INGEST_DIR") else {
        println!("ingest_stages: set BENCH_INGEST_DIR (bench/ingest.sh does)");
        return Ok(());
    };
    let model_name = std::env::var("BENCH_MODEL").unwrap_or_else(|_| "photos".into());
    let model = Model::load(&model_name)?;
    let params = HnswParams {
        m: std::env::var("BENCH_M")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(HnswParams::default().m),
        ef_construction: std::env::var("BENCH_EFC")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(HnswParams::default().ef_construction),
    };
    let (files, _) = imgsearch::walk::Walker::new()
        .collect(std::path::Path::new(&dir), &imgsearch::progress::NoProgress);
    let n = files.len();
    println!(
        "{dir}: {n} images, model `{model_name}`, {} threads",
        rayon::current_num_threads()
    );
    let mut rows: Vec<(String, f64, f64)> = Vec::new();

    let shape = model.input_shape();
    let t = Instant::now();
    let contents: Vec<_> = files
        .par_iter()
        .filter_map(|p| imgsearch::prepare::read(p).ok())
        .collect();
    rows.push((
        "read + hash".into(),
        t.elapsed().as_secs_f64(),
        contents.len() as f64,
    ));
    let t = Instant::now();
    let pixels: Vec<Pixels> = contents
        .par_iter()
        .zip(&files)
        .filter_map(|(c, p)| {
            imgsearch::prepare::decode(&c.bytes, p, shape, DecodeLimits::default()).ok()
        })
        .map(|image| image.pixels)
        .collect();
    rows.push((
        "decode + resize".into(),
        t.elapsed().as_secs_f64(),
        pixels.len() as f64,
    ));
    drop(contents);

    let t = Instant::now();
    let scored = model.embed_and_score(&pixels)?;
    rows.push((
        "encode (+ recon error)".into(),
        t.elapsed().as_secs_f64(),
        scored.len() as f64,
    ));

    let tmp = tempfile::tempdir()?;
    let store = Store::open(&tmp.path().join("db"))?;
    let t = Instant::now();
    for (chunk_i, chunk) in scored.chunks(256).enumerate() {
        let changes: Vec<Change> = chunk
            .iter()
            .enumerate()
            .map(|(i, (v, e))| Change::Add {
                record: Record {
                    path: format!("/bench/{chunk_i}/{i}.png").into_bytes(),
                    size: 1000,
                    mtime_ns: 1,
                    hash: *blake3::hash(format!("{chunk_i}/{i}").as_bytes()).as_bytes(),
                    label: Some("bench".into()),
                    width: 28,
                    height: 28,
                    recon_error: *e,
                    ingested_at: 0,
                },
                vector: v.clone(),
            })
            .collect();
        store.apply(&changes)?;
    }
    rows.push((
        "store (sled, 256/txn)".into(),
        t.elapsed().as_secs_f64(),
        scored.len() as f64,
    ));

    let t = Instant::now();
    let (ann, _) = Graph::open(
        &tmp.path().join("none"),
        &store,
        model.embedding_dim(),
        params,
    )?;
    let insert_s = t.elapsed().as_secs_f64();
    rows.push((
        format!(
            "HNSW insert (M={}, ef_c={})",
            params.m, params.ef_construction
        ),
        insert_s,
        ann.points() as f64,
    ));

    // Recall@10 of the graph against exact search, 500 queries from the set.
    let dim = model.embedding_dim();
    let flat: Vec<f32> = scored.iter().flat_map(|(v, _)| v.iter().copied()).collect();
    let step = (scored.len() / 500).max(1);
    let queries: Vec<f32> = scored
        .iter()
        .step_by(step)
        .take(500)
        .flat_map(|(v, _)| v.iter().copied())
        .collect();
    let exact = knn::exact_knn(
        &Vectors { dim, data: &flat },
        &Vectors {
            dim,
            data: &queries,
        },
        10,
    )?;
    let mut hits = 0usize;
    for (q, truth) in queries.chunks(dim).zip(&exact) {
        let found: Vec<u64> = ann.search(q, 10, 64).iter().map(|h| h.0).collect();
        // Ties at equal distance may swap ids: count by distance, with the
        // float slack of the GEMM form (|q|² + |x|² − 2q·x) of the exact scan.
        let cutoff = truth.last().map_or(0.0, |t| t.1);
        hits += found
            .iter()
            .filter(|id| {
                let v = &flat[**id as usize * dim..(**id as usize + 1) * dim];
                v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
                    <= cutoff * (1.0 + 1e-3) + 1e-3
            })
            .count()
            .min(10);
    }
    let recall = hits as f64 / (10 * exact.len()) as f64;
    drop(ann);
    drop(store);

    let index_dir = tmp.path().join("index");
    let index = Index::open(&index_dir, Some(&model_name), true)?;
    let t = Instant::now();
    let report = ingest::ingest(
        &index,
        std::path::Path::new(&dir),
        &IngestOptions::default(),
        &imgsearch::progress::NoProgress,
    )?;
    let whole = t.elapsed().as_secs_f64();
    rows.push(("whole ingest".into(), whole, report.encoded as f64));

    println!("\n| stage | seconds | images | images/s |");
    println!("|---|---:|---:|---:|");
    let slowest = rows[..5].iter().map(|r| r.1).fold(0.0, f64::max);
    for (name, s, count) in &rows {
        println!("| {name} | {s:.2} | {count:.0} | {:.0} |", count / s);
    }
    println!("\nwhole ingest / slowest stage = {:.2}", whole / slowest);
    let busy = &report.stages;
    println!(
        "whole ingest, busy seconds by stage (summed over threads): walk {:.2}, read {:.2}, decode {:.2}, encode {:.2}, store {:.2}, index {:.2}",
        busy.walk, busy.read, busy.decode, busy.encode, busy.store, busy.index
    );
    println!("HNSW recall@10 at ef=64: {recall:.4}");
    println!(
        "peak RSS of this process (all stages): {:.0} MB",
        peak_rss_mb()
    );
    Ok(())
}
