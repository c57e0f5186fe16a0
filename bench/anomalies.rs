//! Anomaly detection by reconstruction error, the seeds' experiment: the
//! MNIST test set (10,000 digits) indexed with the `digits` model, plus
//! 100 non-digits (Fashion-MNIST test items, 10 of each class) in the same
//! index. Everything goes through `ingest` into a real index and
//! `anomaly::rank` reads it back, as `imgsearch anomalies` does.
//!
//! Reported per model set: AUROC (non-digit vs digit), how many of the 100
//! are in the top 100, and "alone at #1": for each non-digit, whether it
//! would rank first if it were the only one inserted (seed 002's shoe),
//! which is its rank among the 10,000 digits. Also the time to rank.
//!
//! Run: `cargo bench --bench anomalies`. `ANOMALY_WORK` sets the work folder
//! (default target/anomaly-bench; files are reused between runs).

use std::path::{Path, PathBuf};
use std::time::Instant;

use imgsearch::anomaly::{self, AnomalyOptions, Combine};
use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::imageio;
use imgsearch::index::Index;
use imgsearch::ingest::{self, IngestOptions};

const ODD_LABEL: &str = "not-a-digit";

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!(
            "anomalies: skipped, no dataset folder (set IMGSEARCH_DATA or provide ../shared/data)"
        );
        return Ok(());
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work =
        std::env::var("ANOMALY_WORK").map_or(manifest.join("target/anomaly-bench"), PathBuf::from);
    let pile = work.join("pile");
    if !pile.join(ODD_LABEL).is_dir() {
        let digits = dataset::load(DatasetName::Mnist, &root.join("mnist"), Split::Test, None)?;
        dataset::export(&digits, &pile)?;
        let fashion = dataset::load(
            DatasetName::FashionMnist,
            &root.join("fashion-mnist"),
            Split::Test,
            None,
        )?;
        let odd = pile.join(ODD_LABEL);
        std::fs::create_dir_all(&odd)?;
        let mut per_class = [0usize; 10];
        for i in 0..fashion.len() {
            let c = fashion.labels[i] as usize;
            if per_class[c] < 10 {
                per_class[c] += 1;
                let name = format!("{}-{i:05}.png", fashion.class_name(i));
                imageio::planar_to_image(fashion.image(i), 28, 1).save(odd.join(name))?;
            }
        }
    }
    let index_dir = work.join("index-digits");
    let index = Index::open(&index_dir, Some("digits"), true)?;
    let started = Instant::now();
    let report = ingest::ingest(
        &index,
        &pile,
        &IngestOptions::default(),
        &imgsearch::progress::NoProgress,
    )?;
    println!(
        "indexed {} images ({} new) with `digits` in {:.1} s",
        report.scanned,
        report.added,
        started.elapsed().as_secs_f64()
    );

    let digits8 = manifest.join("target/bench-models/digits8.safetensors");
    let mut sets: Vec<(Vec<String>, Combine)> = vec![
        (vec![], Combine::Mean),
        (
            vec!["digits".into(), "digits-denoise".into()],
            Combine::Mean,
        ),
        (vec!["digits".into(), "digits-denoise".into()], Combine::Max),
    ];
    if digits8.is_file() {
        let d8 = digits8.display().to_string();
        sets.push((
            vec!["digits".into(), "digits-denoise".into(), d8.clone()],
            Combine::Mean,
        ));
        sets.push((
            vec!["digits".into(), "digits-denoise".into(), d8],
            Combine::Max,
        ));
    }
    println!("\n| models | combine | AUROC | non-digits in top 100 | alone at #1 (of 100) | median rank alone | rank time |");
    println!("|---|---|---|---|---|---|---|");
    let (mut shoes, mut seed_shoe) = (Vec::new(), None);
    for (models, combine) in sets {
        let opts = AnomalyOptions {
            models: models.clone(),
            combine,
            ..Default::default()
        };
        let started = Instant::now();
        let ranking = match anomaly::rank(&index, &opts, &imgsearch::progress::NoProgress) {
            Ok(r) => r,
            Err(e) => {
                println!("| {} | skipped: {e} |", models.join(", "));
                continue;
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let odd: Vec<bool> = ranking
            .images
            .iter()
            .map(|s| s.label.as_deref() == Some(ODD_LABEL))
            .collect();
        let scores: Vec<f32> = ranking.images.iter().map(|s| s.score).collect();
        let auroc = anomaly::auroc(&scores, &odd);
        let in_top = odd.iter().take(100).filter(|&&o| o).count();
        // Alone, a non-digit's rank is 1 + the digits scoring above it.
        let mut alone: Vec<usize> = Vec::new();
        let mut digits_above = 0;
        for &o in &odd {
            if o {
                alone.push(digits_above + 1);
            } else {
                digits_above += 1;
            }
        }
        let first = alone.iter().filter(|&&r| r == 1).count();
        let median = alone[alone.len() / 2];
        let names = if models.is_empty() {
            "digits (stored errors)".to_string()
        } else {
            models
                .iter()
                .map(|m| {
                    Path::new(m)
                        .file_stem()
                        .map_or(m.clone(), |s| s.to_string_lossy().into())
                })
                .collect::<Vec<_>>()
                .join(" + ")
        };
        println!(
            "| {names} | {} | {auroc:.4} | {in_top} | {first} | {median} | {secs:.2} s |",
            if models.len() > 1 {
                format!("{combine:?}").to_lowercase()
            } else {
                "-".into()
            }
        );
        if models.is_empty() {
            (shoes, seed_shoe) = footwear_alone(&ranking);
        }
    }
    if let Some((rank, score)) = seed_shoe {
        println!("\nthe seed's shoe (Fashion-MNIST test item 0, an ankle boot) alone ranks #{rank} (score {score:.4})");
    }
    println!("footwear (30 items), each one's rank if inserted alone (digits model): {shoes:?}");
    Ok(())
}

/// The seed's shoe: each footwear item's rank when inserted alone.
fn footwear_alone(ranking: &anomaly::Ranking) -> (Vec<usize>, Option<(usize, f32)>) {
    let mut digits_above = 0;
    let mut shoes = Vec::new();
    let mut seed_shoe = None;
    for s in &ranking.images {
        if s.label.as_deref() != Some(ODD_LABEL) {
            digits_above += 1;
        } else if s.path.ends_with("/ankle_boot-00000.png") {
            // Fashion-MNIST's first test image: the seed's shoe.
            seed_shoe = Some((digits_above + 1, s.score));
            shoes.push(digits_above + 1);
        } else if ["sneaker", "sandal", "ankle_boot"]
            .iter()
            .any(|c| s.path.to_string_lossy().contains(&format!("/{c}-")))
        {
            shoes.push(digits_above + 1);
        }
    }
    shoes.sort_unstable();
    (shoes, seed_shoe)
}
