//! `anomalies`: the indexed images the autoencoder rebuilds worst, and
//! `--check` for new images against the index's distribution.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use imgsearch::anomaly::{self, AnomalyOptions, Combine, Ranking, Select};
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::Index;
use imgsearch::sheet;

use crate::{exit_for, progress_bar, IndexArg};

/// Images shown on a `--sheet`, at most.
const SHEET_MAX: usize = 100;

#[derive(Args)]
pub struct AnomaliesArgs {
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
    /// Only images under this folder.
    #[arg(long)]
    under: Option<PathBuf>,
    /// Only images with this label.
    #[arg(long)]
    label: Option<String>,
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
    #[arg(long, value_enum, default_value_t = Combine::Mean)]
    combine: Combine,
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

pub fn anomalies(args: AnomaliesArgs) -> Result<ExitCode> {
    let index = Index::open(&args.index.index, None, false)?;
    let opts = AnomalyOptions {
        models: args.models.clone(),
        combine: args.combine,
        by_label: args.by_label,
        under: args.under.clone(),
        label: args.label.clone(),
    };
    let bar = progress_bar("images re-read", || 0);
    let ranking = anomaly::rank(&index, &opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    for (path, reason) in &ranking.failed {
        eprintln!("warning: {path}: not scored: {reason}");
    }
    if !args.check.is_empty() {
        return check(&index, &ranking, &opts, &args);
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
    if args.json {
        let report = json!({
            "index": args.index.index,
            "models": ranking.models,
            "combine": ranking.combine,
            "by_label": ranking.by_label,
            "scored": ranking.images.len(),
            "selected": chosen,
            "failed": ranking.failed.iter().map(|(p, r)| json!({"path": p, "reason": r})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_ranking(&ranking, chosen);
    }
    Ok(exit_for(ranking.images.len(), ranking.failed.len()))
}

fn print_ranking(ranking: &Ranking, chosen: &[anomaly::Scored]) {
    let names: Vec<&str> = ranking.models.iter().map(|m| m.name.as_str()).collect();
    let what = match (names.len(), ranking.by_label) {
        (1, false) => "reconstruction error".to_string(),
        (1, true) => "z-score of the reconstruction error within the label".to_string(),
        (_, by_label) => format!(
            "{} of errors divided by each model's median{}",
            match ranking.combine {
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
    println!(
        "{} of {} images by {what} (model{} {}):",
        chosen.len(),
        ranking.images.len(),
        if names.len() > 1 { "s" } else { "" },
        names.join(", ")
    );
    let show_errors = names.len() > 1 || ranking.by_label;
    println!(
        "{:>5}  {:>10}  {:>6}  {}{:<10}  path",
        "rank",
        "score",
        "pct",
        if show_errors { "errors  " } else { "" },
        "label"
    );
    for (i, s) in chosen.iter().enumerate() {
        let errors = if show_errors {
            let e: Vec<String> = s.errors.iter().map(|e| format!("{e:.5}")).collect();
            format!("{}  ", e.join(","))
        } else {
            String::new()
        };
        println!(
            "{:>5}  {:>10.5}  {:>6.2}  {errors}{:<10}  {}",
            i + 1,
            s.score,
            s.percentile,
            s.label.as_deref().unwrap_or("-"),
            s.path
        );
    }
}

fn check(
    index: &Index,
    ranking: &Ranking,
    opts: &AnomalyOptions,
    args: &AnomaliesArgs,
) -> Result<ExitCode> {
    let checks = anomaly::check(index, ranking, opts, &args.check)?;
    let failed = checks.iter().filter(|c| c.result.is_err()).count();
    if args.json {
        let rows: Vec<_> = checks
            .iter()
            .map(|c| match &c.result {
                Ok(s) => json!({"path": c.path, "errors": s.errors, "score": s.score, "percentile": s.percentile}),
                Err(e) => json!({"path": c.path, "error": e}),
            })
            .collect();
        let report =
            json!({"models": ranking.models, "scored": ranking.images.len(), "checks": rows});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:>10}  {:>8}  path   (percentile: share of the {} indexed images scoring lower)",
            "score",
            "pct",
            ranking.images.len()
        );
        for c in &checks {
            match &c.result {
                Ok(s) => println!("{:>10.5}  {:>8.2}  {}", s.score, s.percentile, c.path),
                Err(e) => eprintln!("error: {}: {e}", c.path),
            }
        }
    }
    Ok(exit_for(checks.len() - failed, failed))
}

fn write_sheet(chosen: &[anomaly::Scored], out: &std::path::Path) -> Result<()> {
    let items: Vec<(String, Option<image::DynamicImage>)> = chosen
        .iter()
        .take(SHEET_MAX)
        .enumerate()
        .map(|(i, s)| {
            let img =
                imageio::decode_file(std::path::Path::new(&s.path), DecodeLimits::default()).ok();
            (format!("#{} {:.4}", i + 1, s.score), img)
        })
        .collect();
    sheet::write_grid(&items, 10, out)
        .with_context(|| format!("writing the sheet {}", out.display()))?;
    eprintln!("sheet: {} ({} images)", out.display(), items.len());
    Ok(())
}
