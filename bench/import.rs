//! `imgsearch import` at scale: a million rows of Parquet shards into a new
//! index (records, flat file and HNSW graph), then the same shards again
//! (a no-op). Reports rows/s, where the time went and the import process's
//! peak RSS.
//!
//! The rows are real latents, as in `query_scale`: the `digits` model's
//! embeddings of the 60,000 MNIST training images, replicated with small
//! Gaussian noise (σ = 0.05 × the per-dimension standard deviation) to
//! reach the size, written as 8 shards (what 8 Spark tasks would leave),
//! with virtual paths (no file is opened).
//!
//! Run: `cargo build --release && cargo bench --bench import`.
//! `BENCH_ROWS` (default 1000000). Shards are kept in `target/bench-import/`
//! and reused while they match.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgsearch::dataset;
use imgsearch::model::Model;
use imgsearch::shards::{self, Shard, ShardError, ShardMeta, ShardRow};

#[path = "common.rs"]
mod common;
use common::latents::Latents;
use common::{env_list, peak_rss_mb_of, release_binary};

const SHARDS: u32 = 8;

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!("import: skipped, no dataset folder (set IMGSEARCH_DATA)");
        return Ok(());
    };
    let rows = env_list("BENCH_ROWS", "1000000")[0];
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-import");
    let binary = release_binary()?;
    let parts = work.join(format!("parts-{rows}"));
    let t = Instant::now();
    let made = make_shards(&parts, rows, &root)?;
    println!(
        "{rows} rows in {SHARDS} shards: {} in {:.1} s ({:.0} MB)",
        if made { "written" } else { "reused" },
        t.elapsed().as_secs_f64(),
        dir_mb(&parts)
    );

    let index = work.join("idx");
    if index.exists() {
        std::fs::remove_dir_all(&index)?;
    }
    println!("\n| run | wall s | rows/s | store s | index s | peak RSS MB |");
    println!("|---|---:|---:|---:|---:|---:|");
    for run in ["new index", "again (no-op)"] {
        let (wall, peak, report) = import(&binary, &parts, &index)?;
        let rows_done = report["rows"].as_f64().unwrap_or(0.0);
        let rate = match run {
            "new index" => format!("{:.0}", rows_done / wall),
            _ => "-".into(),
        };
        println!(
            "| {run} | {wall:.1} | {rate} | {:.1} | {:.1} | {peak:.0} |",
            report["store_seconds"].as_f64().unwrap_or(0.0),
            report["index_seconds"].as_f64().unwrap_or(0.0),
        );
    }
    println!("\nindex on disk: {:.0} MB", dir_mb(&index));
    Ok(())
}

/// Runs `imgsearch import` as its own process: wall seconds, peak RSS (MB,
/// polled from /proc) and its JSON report.
fn import(
    binary: &Path,
    parts: &Path,
    index: &Path,
) -> anyhow::Result<(f64, f64, serde_json::Value)> {
    let t = Instant::now();
    let mut child = Command::new(binary)
        .arg("import")
        .arg(parts)
        .arg("--index")
        .arg(index)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id().to_string();
    let mut peak = 0f64;
    while child.try_wait()?.is_none() {
        peak = peak.max(peak_rss_mb_of(&pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let wall = t.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "import failed: {:?}", out.status);
    Ok((wall, peak, serde_json::from_slice(&out.stdout)?))
}

/// Writes the shards unless they are there with this many rows; returns
/// whether it wrote them.
fn make_shards(parts: &Path, rows: usize, root: &Path) -> anyhow::Result<bool> {
    let done = parts.join(
        Shard {
            index: SHARDS - 1,
            count: SHARDS,
        }
        .file_name(),
    );
    if done.is_file() {
        return Ok(false);
    }
    std::fs::create_dir_all(parts)?;
    let model = Model::load("digits")?;
    let latents = Latents::load(root, 1)?;
    // The same vectors as `query_scale` and `ann_peers` at this size.
    let mut vectors = latents.replicated(rows);
    let per_shard = rows.div_ceil(SHARDS as usize);
    for s in 0..SHARDS {
        let shard = Shard {
            index: s,
            count: SHARDS,
        };
        let meta = ShardMeta::of(&model, shard, &[PathBuf::from("/bench/mnist")]);
        let range = (s as usize * per_shard)..((s as usize + 1) * per_shard).min(rows);
        let base = latents.base.len();
        let rows = range.zip(vectors.by_ref()).map(|(j, embedding)| {
            let (src, rep) = (j % base, j / base);
            let label = latents.train.class_name(src).to_string();
            let path = PathBuf::from(format!("/bench/mnist/r{rep}/{label}/{src:05}.png"));
            Ok::<_, ShardError>(ShardRow {
                blake3: *blake3::hash(path.as_os_str().as_encoded_bytes()).as_bytes(),
                path,
                size: 300,
                mtime_ns: 1,
                width: 28,
                height: 28,
                label: Some(label),
                embedding,
                recon_error: 0.0,
            })
        });
        shards::write_shard_file(&parts.join(shard.file_name()), &meta, rows)?;
    }
    Ok(true)
}

fn dir_mb(dir: &Path) -> f64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len() as f64 / 1e6)
        .sum()
}
