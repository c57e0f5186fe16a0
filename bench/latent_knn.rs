//! Do the latents work as a representation? kNN (k=7, exact, squared L2)
//! over the latents of a full train split, evaluated on the full test split,
//! beside the same kNN on raw pixels and on PCA at the latent's dimension,
//! all in one process on the same data.
//!
//! Run: `cargo bench --bench latent_knn` (add models with
//! `bench/train-bench-models.sh`, which writes target/bench-models/).
//! Environment: `BENCH_DATASETS=mnist,fashion,cifar10` to choose,
//! `BENCH_TRAIN_LIMIT` / `BENCH_TEST_LIMIT` for a quick partial run,
//! `BENCH_MODELS=a,b` to measure other models (names or files).

use std::path::Path;
use std::time::Instant;

use imgsearch::dataset::{self, Dataset, DatasetName, Split};
use imgsearch::knn::{self, Vectors};
use imgsearch::model::Model;

use imgsearch::model::pca::Pca;

const K: usize = 7;

struct Row {
    dataset: &'static str,
    method: String,
    dim: usize,
    accuracy: f64,
    encode_s: Option<f64>,
    search_s: f64,
}

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!(
            "latent_knn: skipped, no dataset folder (set IMGSEARCH_DATA or provide ../shared/data)"
        );
        return Ok(());
    };
    let chosen = std::env::var("BENCH_DATASETS").unwrap_or_else(|_| "mnist,fashion,cifar10".into());
    let limit = |var: &str| std::env::var(var).ok().and_then(|v| v.parse().ok());
    let (train_limit, test_limit) = (limit("BENCH_TRAIN_LIMIT"), limit("BENCH_TEST_LIMIT"));
    let bench_models = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-models");

    let setups: [(&str, DatasetName, &str, Vec<String>); 3] = [
        (
            "mnist",
            DatasetName::Mnist,
            "mnist",
            vec!["digits".into(), "digits8".into()],
        ),
        (
            "fashion",
            DatasetName::FashionMnist,
            "fashion-mnist",
            vec!["fashion".into(), "fashion8".into()],
        ),
        (
            "cifar10",
            DatasetName::Cifar10,
            "cifar-10-jpeg",
            vec!["photos".into()],
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
        let train = dataset::load(name, &src, Split::Train, train_limit)?;
        let test = dataset::load(name, &src, Split::Test, test_limit)?;
        println!("{key}: {} train, {} test images", train.len(), test.len());

        // BENCH_MODELS replaces the model list (names or files), e.g. to
        // compare candidates before shipping one.
        let models = match std::env::var("BENCH_MODELS") {
            Ok(list) => list.split(',').map(str::to_string).collect(),
            Err(_) => models,
        };
        let mut dims = Vec::new();
        for spec in models {
            let model = match Model::load(&spec) {
                Ok(m) => m,
                Err(_) => match Model::load(
                    &bench_models
                        .join(format!("{spec}.safetensors"))
                        .display()
                        .to_string(),
                ) {
                    Ok(m) => m,
                    Err(_) => {
                        println!("  model {spec}: not available, skipped");
                        continue;
                    }
                },
            };
            let started = Instant::now();
            let train_z = embed_all(&model, &train)?;
            let test_z = embed_all(&model, &test)?;
            let encode_s = started.elapsed().as_secs_f64();
            let (accuracy, search_s) =
                knn_accuracy(&train_z, &test_z, model.embedding_dim(), &train, &test)?;
            dims.push(model.embedding_dim());
            rows.push(Row {
                dataset: key,
                method: format!("latent `{spec}`"),
                dim: model.embedding_dim(),
                accuracy,
                encode_s: Some(encode_s),
                search_s,
            });
        }

        let dim = train.image_len();
        let train_raw = unit_pixels(&train);
        let test_raw = unit_pixels(&test);
        let (accuracy, search_s) = knn_accuracy(&train_raw, &test_raw, dim, &train, &test)?;
        rows.push(Row {
            dataset: key,
            method: "raw pixels".into(),
            dim,
            accuracy,
            encode_s: None,
            search_s,
        });

        dims.sort();
        dims.dedup();
        for k in dims {
            let started = Instant::now();
            let pca = Pca::fit(&train_raw, dim, k)?;
            let (train_p, test_p) = (pca.project(&train_raw)?, pca.project(&test_raw)?);
            let encode_s = started.elapsed().as_secs_f64();
            let (accuracy, search_s) = knn_accuracy(&train_p, &test_p, k, &train, &test)?;
            rows.push(Row {
                dataset: key,
                method: "PCA".into(),
                dim: k,
                accuracy,
                encode_s: Some(encode_s),
                search_s,
            });
        }
    }

    println!("\n| dataset | method | dim | kNN accuracy (k={K}) | encode/fit s | search s |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2}% | {} | {:.2} |",
            r.dataset,
            r.method,
            r.dim,
            100.0 * r.accuracy,
            r.encode_s.map_or("-".into(), |s| format!("{s:.1}")),
            r.search_s
        );
    }
    Ok(())
}

fn embed_all(model: &Model, ds: &Dataset) -> anyhow::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(ds.len() * model.embedding_dim());
    for start in (0..ds.len()).step_by(4096) {
        let batch: Vec<_> = (start..(start + 4096).min(ds.len()))
            .map(|i| ds.pixels(i))
            .collect();
        for z in model.embed(&batch)? {
            out.extend(z);
        }
    }
    Ok(out)
}

fn unit_pixels(ds: &Dataset) -> Vec<f32> {
    (0..ds.len())
        .flat_map(|i| ds.image(i).iter().map(|&b| b as f32 / 255.0))
        .collect()
}

/// Accuracy of k=7 exact kNN and the seconds the search took.
fn knn_accuracy(
    train: &[f32],
    test: &[f32],
    dim: usize,
    train_ds: &Dataset,
    test_ds: &Dataset,
) -> anyhow::Result<(f64, f64)> {
    let labels: Vec<u32> = train_ds.labels.iter().map(|&l| l as u32).collect();
    let started = Instant::now();
    let neighbours = knn::exact_knn(
        &Vectors { dim, data: train },
        &Vectors { dim, data: test },
        K,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let correct = neighbours
        .iter()
        .zip(&test_ds.labels)
        .filter(|(n, &l)| {
            let voters = n.iter().map(|&(i, d)| (labels[i], d));
            knn::vote(voters, knn::Weighting::Majority).map(|b| *b.winner()) == Some(l as u32)
        })
        .count();
    Ok((correct as f64 / test_ds.len() as f64, seconds))
}
