//! `classify` and `eval`: kNN classification on latents.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use imgsearch::classify::{self, ClassifyOptions, DEFAULT_K};
use imgsearch::eval::{self, EvalOptions, EvalReport, Score};
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::Index;
use imgsearch::knn::Weighting;
use imgsearch::labels::LabelSource;
use imgsearch::search;

use crate::{exit_for, progress_bar, IndexArg, EXIT_PARTIAL};

#[derive(Args)]
pub struct ClassifyArgs {
    /// Images (or folders of them) to classify. An indexed image uses its
    /// stored embedding; no image votes for itself (nor do stored copies of
    /// the same bytes).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    index: IndexArg,
    #[command(flatten)]
    vote: VoteArgs,
    /// Exact brute-force search (the default for small indexes).
    #[arg(long)]
    exact: bool,
    /// Print JSON: label, confidence, votes and voters per image.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Labelled test folder (`test/<label>/img.png`, or see --labels).
    #[arg(long)]
    test: PathBuf,
    #[command(flatten)]
    index: IndexArg,
    #[command(flatten)]
    vote: VoteArgs,
    /// Test labels from this CSV of `path,label` rows (paths relative to
    /// the test folder) instead of folder names.
    #[arg(long, value_name = "FILE.csv")]
    labels: Option<PathBuf>,
    /// Also run kNN on raw pixels (at the model's input resolution) of the
    /// indexed images, in the same run, as a baseline.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Classify with the exact scan and also with the HNSW graph, and
    /// compare their votes (agreement, voter recall, time).
    #[arg(long)]
    exact: bool,
    /// Refuse test images larger than this many megapixels.
    #[arg(long, default_value_t = imageio::DEFAULT_MAX_MEGAPIXELS)]
    max_megapixels: f64,
    /// Print the full report as JSON (per-class scores, confusion matrix, timings).
    #[arg(long)]
    json: bool,
}

/// How the neighbours vote (shared by classify and eval).
#[derive(Args)]
pub struct VoteArgs {
    /// Labelled neighbours that vote.
    #[arg(short, long, default_value_t = DEFAULT_K)]
    k: usize,
    /// Weight each vote by 1 / distance instead of one vote per neighbour.
    #[arg(long)]
    weighted: bool,
}

impl VoteArgs {
    fn options(&self) -> ClassifyOptions {
        ClassifyOptions {
            k: self.k,
            weighting: if self.weighted {
                Weighting::InverseDistance
            } else {
                Weighting::Majority
            },
            ..Default::default()
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Baseline {
    /// kNN on pixel values scaled to [0, 1].
    Raw,
}

pub fn classify(args: ClassifyArgs) -> Result<ExitCode> {
    let idx = Index::open(&args.index.index, None, false)?;
    let queries = search::query_latents(&idx, &args.images);
    let (mut latents, mut exclude) = (Vec::new(), Vec::new());
    for q in &queries {
        if let Ok(z) = &q.latent {
            latents.push(z.clone());
            exclude.push(classify::copies_of(&idx, q));
        }
    }
    let opts = ClassifyOptions {
        exact: args.exact,
        ..args.vote.options()
    };
    let (predictions, method) = classify::classify(&idx, &latents, &exclude, &opts)?;
    idx.save()?;
    let mut predictions = predictions.into_iter();
    let mut out = Vec::new();
    let mut failed = 0;
    for q in &queries {
        match &q.latent {
            Ok(_) => {
                let p = predictions
                    .next()
                    .expect("one prediction per embedded image");
                out.push(json!({ "image": q.name, "method": method, "prediction": p }));
            }
            Err(e) => {
                failed += 1;
                eprintln!("skipped {}: {e}", q.name);
                out.push(json!({ "image": q.name, "error": e }));
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:<12} {:>10}  {:<40}  image",
            "label", "confidence", "votes"
        );
        for o in &out {
            let Some(p) = o.get("prediction") else {
                continue;
            };
            let votes: Vec<String> = p["votes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let label = t["label"].as_str().unwrap_or_default();
                    if args.vote.weighted {
                        format!("{label}:{:.3}", t["weight"].as_f64().unwrap_or_default())
                    } else {
                        format!("{label}:{}", t["votes"].as_u64().unwrap_or_default())
                    }
                })
                .collect();
            println!(
                "{:<12} {:>9.1}%  {:<40}  {}",
                p["label"].as_str().unwrap_or(eval::NO_VOTE),
                100.0 * p["confidence"].as_f64().unwrap_or_default(),
                votes.join(" "),
                o["image"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(exit_for(queries.len() - failed, failed))
}

pub fn eval(args: EvalArgs) -> Result<ExitCode> {
    let idx = Index::open(&args.index.index, None, false)?;
    let labels = LabelSource::from_file_or_folders(args.labels.as_deref(), &args.test)?;
    let opts = EvalOptions {
        classify: args.vote.options(),
        labels,
        limits: DecodeLimits {
            max_megapixels: args.max_megapixels,
        },
        raw_baseline: args.baseline.is_some(),
        compare_exact: args.exact,
    };
    let bar = progress_bar("images", || 0);
    let report = eval::evaluate(&idx, &args.test, &opts, &bar)
        .with_context(|| format!("evaluating on {}", args.test.display()))?;
    bar.finish_and_clear();
    idx.save()?;
    for f in &report.failures {
        eprintln!("skipped {}: {}", f.path, f.reason);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

fn print_report(r: &EvalReport) {
    println!(
        "{} test images from {} against {} labelled indexed images; k={}, {} vote",
        r.images,
        r.test_dir.display(),
        r.voters,
        r.k,
        match r.weighting {
            Weighting::Majority => "majority",
            Weighting::InverseDistance => "1/distance weighted",
        }
    );
    if r.unlabelled > 0 {
        println!("{} test images without a label were left out", r.unlabelled);
    }
    if r.in_index > 0 {
        println!(
            "{} test images are also in the index; their indexed copies did not vote",
            r.in_index
        );
    }
    println!(
        "decode {:.2}s, encode {:.2}s ({:.3} ms/image)\n",
        r.decode_s, r.encode_s, r.encode_ms_per_image
    );
    println!(
        "{:<12} {:>6} {:>7} {:>10} {:>11} {:>12} {:>10}",
        "vectors", "dim", "method", "accuracy", "vectors s", "search s", "ms/image"
    );
    for s in std::iter::once(&r.latent).chain(&r.raw) {
        println!(
            "{:<12} {:>6} {:>7} {:>9.2}% {:>11.2} {:>12.3} {:>10.4}",
            s.representation,
            s.dim,
            format!("{:?}", s.method).to_lowercase(),
            100.0 * s.accuracy,
            s.vectors_s,
            s.search_s,
            s.search_ms_per_image
        );
    }
    if let Some(x) = &r.exact_check {
        println!(
            "\nhnsw vs exact: accuracy {:.2}% vs {:.2}%, same label {:.2}%, voter recall {:.4}, search {:.3}s vs {:.3}s",
            100.0 * x.hnsw_accuracy,
            100.0 * x.exact_accuracy,
            100.0 * x.agreement,
            x.voter_recall,
            x.hnsw_search_s,
            x.exact_search_s
        );
    }
    print_classes(&r.latent);
}

fn print_classes(s: &Score) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    println!(
        "\n{:<16} {:>8} {:>10} {:>10}",
        "label", "support", "precision", "recall"
    );
    for c in &s.per_class {
        println!(
            "{:<16} {:>8} {:>10} {:>10}",
            c.label,
            c.support,
            pct(c.precision),
            pct(c.recall)
        );
    }
    let width = s
        .confusion
        .labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1)
        .clamp(5, 12);
    println!("\nconfusion matrix (rows: true label, columns: predicted)");
    print!("{:<width$}", "");
    for l in &s.confusion.labels {
        print!(" {:>width$}", truncate(l, width));
    }
    println!();
    for (l, row) in s.confusion.labels.iter().zip(&s.confusion.counts) {
        print!("{:<width$}", truncate(l, width));
        for n in row {
            print!(" {n:>width$}");
        }
        println!();
    }
}

fn truncate(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}
