//! `imgsearch eval --test DIR`: kNN classification measured on a labelled folder.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use imgsearch::eval::{self, EvalOptions, EvalReport, Score};
use imgsearch::index::Index;
use imgsearch::knn::Weighting;
use imgsearch::labels::LabelSource;

use crate::cli::args::{DecodeArgs, IndexArg, VoteArgs};
use crate::cli::output::{self, truncate, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print the full report as JSON (per-class scores, confusion matrix, timings).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Baseline {
    /// kNN on pixel values scaled to [0, 1].
    Raw,
}

pub fn run(args: Args) -> Result<Outcome> {
    let index = Index::open(&args.index.index, None, false)?;
    let opts = EvalOptions {
        classify: args.vote.options(),
        labels: LabelSource::from_file_or_folders(args.labels.as_deref(), &args.test)?,
        limits: args.decode.limits(),
        raw_baseline: args.baseline.is_some(),
        compare_exact: args.exact,
    };
    let report = {
        let bar = Bar::new();
        eval::evaluate(&index, &args.test, &opts, &bar)
            .with_context(|| format!("evaluating on {}", args.test.display()))?
    };
    index.save()?;
    for f in &report.failures {
        eprintln!("skipped {}: {}", f.path.display(), f.reason);
    }
    output::print(&report, args.json)?;
    Ok(if report.failures.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

impl Table for EvalReport {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let r = self;
        writeln!(
            out,
            "{} test images from {} against {} labelled indexed images; k={}, {} vote",
            r.images,
            r.test_dir.display(),
            r.voters,
            r.k,
            match r.weighting {
                Weighting::Majority => "majority",
                Weighting::InverseDistance => "1/distance weighted",
            }
        )?;
        if r.unlabelled > 0 {
            writeln!(
                out,
                "{} test images without a label were left out",
                r.unlabelled
            )?;
        }
        if r.in_index > 0 {
            writeln!(
                out,
                "{} test images are also in the index; their indexed copies did not vote",
                r.in_index
            )?;
        }
        writeln!(
            out,
            "decode {:.2}s, encode {:.2}s ({:.3} ms/image)\n",
            r.decode_s, r.encode_s, r.encode_ms_per_image
        )?;
        writeln!(
            out,
            "{:<12} {:>6} {:>7} {:>10} {:>11} {:>12} {:>10}",
            "vectors", "dim", "method", "accuracy", "vectors s", "search s", "ms/image"
        )?;
        for s in std::iter::once(&r.latent).chain(&r.raw) {
            writeln!(
                out,
                "{:<12} {:>6} {:>7} {:>9.2}% {:>11.2} {:>12.3} {:>10.4}",
                s.representation,
                s.dim,
                s.method.as_str(),
                100.0 * s.accuracy,
                s.vectors_s,
                s.search_s,
                s.search_ms_per_image
            )?;
        }
        if let Some(x) = &r.exact_check {
            writeln!(out,
            "\nhnsw vs exact: accuracy {:.2}% vs {:.2}%, same label {:.2}%, voter recall {:.4}, search {:.3}s vs {:.3}s",
            100.0 * x.hnsw_accuracy,
            100.0 * x.exact_accuracy,
            100.0 * x.agreement,
            x.voter_recall,
            x.hnsw_search_s,
            x.exact_search_s
        )?;
        }
        print_classes(&r.latent, out)
    }
}

fn print_classes(s: &Score, out: &mut dyn Write) -> io::Result<()> {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    writeln!(
        out,
        "\n{:<16} {:>8} {:>10} {:>10}",
        "label", "support", "precision", "recall"
    )?;
    for c in &s.per_class {
        writeln!(
            out,
            "{:<16} {:>8} {:>10} {:>10}",
            c.label,
            c.support,
            pct(c.precision),
            pct(c.recall)
        )?;
    }
    let width = s
        .confusion
        .labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1)
        .clamp(5, 12);
    writeln!(
        out,
        "\nconfusion matrix (rows: true label, columns: predicted)"
    )?;
    write!(out, "{:<width$}", "")?;
    for l in &s.confusion.labels {
        write!(out, " {:>width$}", truncate(l, width))?;
    }
    writeln!(out)?;
    for (l, row) in s.confusion.labels.iter().zip(&s.confusion.counts) {
        write!(out, "{:<width$}", truncate(l, width))?;
        for n in row {
            write!(out, " {n:>width$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
