//! `imgsearch anomalies`: the indexed images the autoencoder rebuilds worst,
//! and `--check` for new images against the index's distribution.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::anomaly::{
    self, AnomalyOptions, Check, Combine, ModelScale, Ranking, Scored, Select,
};
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::Index;
use imgsearch::report::Failure;
use imgsearch::sheet;

use crate::cli::args::{CombineArg, FilterArgs, IndexArg};
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

/// Images shown on a `--sheet`, at most.
const SHEET_MAX: usize = 100;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    index: IndexArg,
    /// Report the N highest-scoring images (the default, N = 20).
    #[arg(long, conflicts_with_all = ["threshold", "percentile"])]
    top: Option<usize>,
    /// Report every image scoring at or above T.
    #[arg(long, conflicts_with = "percentile")]
    threshold: Option<f32>,
    /// Report every image at or above this percentile (0-100) of the scores.
    #[arg(long)]
    percentile: Option<f64>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Score each image as a z-score among images of its own label
    /// (unusual for its class, not just unusual).
    #[arg(long)]
    by_label: bool,
    /// Combine the reconstruction errors of these models (comma-separated
    /// default names or files). The index's own model uses its stored
    /// errors; others re-read every indexed file. Each model's errors are
    /// divided by its median before combining.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// How several models' errors combine.
    #[arg(long, value_enum, default_value_t = CombineArg::Mean)]
    combine: CombineArg,
    /// Score these images (not necessarily indexed) against the index:
    /// their percentile rank among the indexed images' scores.
    #[arg(long, num_args = 1.., value_name = "IMAGE", conflicts_with = "by_label")]
    check: Vec<PathBuf>,
    /// Also write the reported images as a captioned contact sheet (PNG).
    #[arg(long)]
    sheet: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// The selected images of a ranking.
#[derive(Serialize)]
struct Selected<'a> {
    index: &'a Path,
    models: &'a [ModelScale],
    combine: Combine,
    by_label: bool,
    scored: usize,
    selected: &'a [Scored],
    failed: &'a [Failure],
}

/// New images scored against the index.
#[derive(Serialize)]
struct Checked<'a> {
    models: &'a [ModelScale],
    scored: usize,
    checks: Vec<Checked1<'a>>,
}

#[derive(Serialize)]
struct Checked1<'a> {
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    path: &'a Path,
    #[serde(flatten)]
    score: Option<&'a anomaly::CheckScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

pub fn run(args: Args) -> Result<Outcome> {
    let index = Index::open(&args.index.index, None, false)?;
    let opts = AnomalyOptions {
        models: args.models.clone(),
        combine: args.combine.into(),
        by_label: args.by_label,
        filter: args.filter.filter(),
    };
    let ranking = {
        let bar = Bar::new();
        anomaly::rank(&index, &opts, &bar)?
    };
    for f in &ranking.failed {
        eprintln!("warning: {}: not scored: {}", f.path.display(), f.reason);
    }
    if !args.check.is_empty() {
        let checks = anomaly::check(&index, &ranking, &opts, &args.check)?;
        return print_checks(&ranking, &checks, args.json);
    }
    let select = match (args.top, args.threshold, args.percentile) {
        (_, Some(t), _) => Select::Threshold(t),
        (_, _, Some(p)) => Select::Percentile(p),
        (n, _, _) => Select::Top(n.unwrap_or(20)),
    };
    let chosen = ranking.select(select);
    if let Some(out) = &args.sheet {
        write_sheet(chosen, out)?;
    }
    let report = Selected {
        index: &args.index.index,
        models: &ranking.models,
        combine: ranking.combine,
        by_label: ranking.by_label,
        scored: ranking.images.len(),
        selected: chosen,
        failed: &ranking.failed,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::of(ranking.images.len(), ranking.failed.len()))
}

impl Table for Selected<'_> {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        let what = match (names.len(), self.by_label) {
            (1, false) => "reconstruction error".to_string(),
            (1, true) => "z-score of the reconstruction error within the label".to_string(),
            (_, by_label) => format!(
                "{} of errors divided by each model's median{}",
                match self.combine {
                    Combine::Mean => "mean",
                    Combine::Max => "max",
                },
                if by_label {
                    ", z-scored within the label"
                } else {
                    ""
                }
            ),
        };
        writeln!(
            out,
            "{} of {} images by {what} (model{} {}):",
            self.selected.len(),
            self.scored,
            if names.len() > 1 { "s" } else { "" },
            names.join(", ")
        )?;
        let show_errors = names.len() > 1 || self.by_label;
        writeln!(
            out,
            "{:>5}  {:>10}  {:>6}  {}{:<10}  path",
            "rank",
            "score",
            "pct",
            if show_errors { "errors  " } else { "" },
            "label"
        )?;
        for (i, s) in self.selected.iter().enumerate() {
            let errors = if show_errors {
                let e: Vec<String> = s.errors.iter().map(|e| format!("{e:.5}")).collect();
                format!("{}  ", e.join(","))
            } else {
                String::new()
            };
            writeln!(
                out,
                "{:>5}  {:>10.5}  {:>6.2}  {errors}{:<10}  {}",
                i + 1,
                s.score,
                s.percentile,
                s.label.as_deref().unwrap_or("-"),
                s.path.display()
            )?;
        }
        Ok(())
    }
}

fn print_checks(ranking: &Ranking, checks: &[Check], json: bool) -> Result<Outcome> {
    let failed = checks.iter().filter(|c| c.result.is_err()).count();
    for c in checks {
        if let Err(e) = &c.result {
            eprintln!("error: {}: {e}", c.path.display());
        }
    }
    let report = Checked {
        models: &ranking.models,
        scored: ranking.images.len(),
        checks: checks
            .iter()
            .map(|c| Checked1 {
                path: &c.path,
                score: c.result.as_ref().ok(),
                error: c.result.as_ref().err().map(String::as_str),
            })
            .collect(),
    };
    output::print(&report, json)?;
    Ok(Outcome::of(checks.len() - failed, failed))
}

impl Table for Checked<'_> {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{:>10}  {:>8}  path   (percentile: share of the {} indexed images scoring lower)",
            "score", "pct", self.scored
        )?;
        for c in &self.checks {
            if let Some(s) = c.score {
                writeln!(
                    out,
                    "{:>10.5}  {:>8.2}  {}",
                    s.score,
                    s.percentile,
                    c.path.display()
                )?;
            }
        }
        Ok(())
    }
}

fn write_sheet(chosen: &[Scored], out: &Path) -> Result<()> {
    let items: Vec<(String, Option<image::DynamicImage>)> = chosen
        .iter()
        .take(SHEET_MAX)
        .enumerate()
        .map(|(i, s)| {
            let img = imageio::decode_file(&s.path, DecodeLimits::default()).ok();
            (format!("#{} {:.4}", i + 1, s.score), img)
        })
        .collect();
    sheet::write_grid(&items, 10, out)
        .with_context(|| format!("writing the sheet {}", out.display()))?;
    eprintln!("sheet: {} ({} images)", out.display(), items.len());
    Ok(())
}
