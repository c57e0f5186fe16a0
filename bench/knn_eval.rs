//! kNN classification the way a user runs it: the train split exported as
//! labelled PNG folders, `ingest`ed into an index per model, the test split
//! classified with `eval` (the library calls behind the CLI commands), with
//! the raw-pixel baseline from the same `eval` run and PCA at the latent's
//! dimension as a reference, all on the same files in one process.
//!
//! Run: `bench/knn-eval.sh` (trains missing models with `TRAIN=1`, runs
//! this, and writes the table into bench/RESULTS.md), or directly
//! `cargo bench --bench knn_eval`. Environment: `KNN_DATASETS=mnist,fashion,cifar10`,
//! `KNN_WORK` (default target/knn-eval) for the exported folders and indexes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::eval::{self, EvalOptions};
use imgsearch::index::Index;
use imgsearch::ingest::{self, IngestOptions};
use imgsearch::knn::{self, Vectors, Weighting};

use imgsearch::model::pca::Pca;

const K: usize = 7;

struct Row {
    dataset: &'static str,
    model: String,
    dim: usize,
    accuracy: f64,
    encode_s: f64,
    search_s: f64,
    method: String,
    raw: Option<(f64, f64)>,
    pca: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!(
            "knn_eval: skipped, no dataset folder (set IMGSEARCH_DATA or provide ../shared/data)"
        );
        return Ok(());
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::var("KNN_WORK").map_or(manifest.join("target/knn-eval"), PathBuf::from);
    let bench_models = manifest.join("target/bench-models");
    let chosen = std::env::var("KNN_DATASETS").unwrap_or_else(|_| "mnist,fashion,cifar10".into());
    let setups: [(&str, DatasetName, &str, &[&str]); 3] = [
        (
            "mnist",
            DatasetName::Mnist,
            "mnist",
            &["digits8", "digits", "digits32"],
        ),
        (
            "fashion",
            DatasetName::FashionMnist,
            "fashion-mnist",
            &["fashion8", "fashion", "fashion32"],
        ),
        (
            "cifar10",
            DatasetName::Cifar10,
            "cifar-10-jpeg",
            &["photos"],
        ),
    ];
    let mut rows = Vec::new();
    for (key, name, folder, models) in setups {
        if !chosen.split(',').any(|c| c == key) {
            continue;
        }
        let src = root.join(folder);
        if !src.is_dir() {
            println!("{key}: skipped, {} is absent", src.display());
            continue;
        }
        let train = dataset::load(name, &src, Split::Train, None)?;
        let test = dataset::load(name, &src, Split::Test, None)?;
        let (train_dir, test_dir) = (
            work.join(format!("{key}-train")),
            work.join(format!("{key}-test")),
        );
        for (ds, dir) in [(&train, &train_dir), (&test, &test_dir)] {
            if !dir.is_dir() {
                dataset::export(ds, dir)?;
            }
        }
        println!("{key}: {} train, {} test images", train.len(), test.len());
        let train_raw = unit_pixels(&train);
        let test_raw = unit_pixels(&test);

        let mut raw_done = false;
        for spec in models.iter().copied() {
            let file = bench_models.join(format!("{spec}.safetensors"));
            let model = if imgsearch::model::default_models()
                .iter()
                .any(|(n, _)| *n == spec)
            {
                spec.to_string()
            } else if file.is_file() {
                file.display().to_string()
            } else {
                println!("  {spec}: not trained (bench/train-bench-models.sh {spec}), skipped");
                continue;
            };
            let index_dir = work.join(format!("idx-{spec}"));
            let index = Index::open(&index_dir, Some(&model), true)?;
            let started = Instant::now();
            let report = ingest::ingest(
                &index,
                &train_dir,
                &IngestOptions::default(),
                &imgsearch::progress::NoProgress,
            )?;
            println!(
                "  {spec}: ingested {} new of {} in {:.1}s",
                report.added,
                report.scanned,
                started.elapsed().as_secs_f64()
            );
            let opts = EvalOptions {
                raw_baseline: !raw_done,
                ..Default::default()
            };
            let r = eval::evaluate(&index, &test_dir, &opts, &imgsearch::progress::NoProgress)?;
            raw_done = true;
            let dim = r.latent.dim;
            let started = Instant::now();
            let pca = Pca::fit(&train_raw, train.image_len(), dim)?;
            let (a, b) = (pca.project(&train_raw)?, pca.project(&test_raw)?);
            let pca_accuracy = accuracy(&a, &b, dim, &train.labels, &test.labels)?;
            println!(
                "  PCA-{dim}: fit, project and kNN in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            rows.push(Row {
                dataset: key,
                model: spec.to_string(),
                dim,
                accuracy: r.latent.accuracy,
                encode_s: r.encode_s,
                search_s: r.latent.search_s,
                method: format!("{:?}", r.latent.method).to_lowercase(),
                raw: r.raw.as_ref().map(|s| (s.accuracy, s.search_s)),
                pca: Some(pca_accuracy),
            });
        }
    }
    println!("\n| dataset | model | latent dim | kNN accuracy (k={K}) | encode test s | eval search s (whole test set) | search method | raw-pixel accuracy | raw-pixel search s | PCA accuracy (same dim) |");
    println!("|---|---|---:|---:|---:|---:|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | `{}` | {} | {:.2}% | {:.2} | {:.3} | {} | {} | {} | {} |",
            r.dataset,
            r.model,
            r.dim,
            100.0 * r.accuracy,
            r.encode_s,
            r.search_s,
            r.method,
            r.raw
                .map_or("(above)".into(), |(a, _)| format!("{:.2}%", 100.0 * a)),
            r.raw.map_or("".into(), |(_, s)| format!("{s:.2}")),
            r.pca.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
        );
    }
    Ok(())
}

fn unit_pixels(ds: &dataset::Dataset) -> Vec<f32> {
    (0..ds.len())
        .flat_map(|i| ds.image(i).iter().map(|&b| b as f32 / 255.0))
        .collect()
}

/// k=7 exact kNN accuracy of majority votes.
fn accuracy(
    train: &[f32],
    test: &[f32],
    dim: usize,
    train_labels: &[u8],
    test_labels: &[u8],
) -> anyhow::Result<f64> {
    let found = knn::exact_knn(
        &Vectors { dim, data: train },
        &Vectors { dim, data: test },
        K,
    )?;
    let correct = found
        .iter()
        .zip(test_labels)
        .filter(|(n, &l)| {
            let voters = n.iter().map(|&(i, d)| (train_labels[i], d));
            knn::vote(voters, Weighting::Majority).map(|b| *b.winner()) == Some(l)
        })
        .count();
    Ok(correct as f64 / test_labels.len() as f64)
}
