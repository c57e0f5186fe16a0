//! `export`: the index's latents for other tools.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use imgsearch::export::{self, ExportFilter, Format};
use imgsearch::index::Index;

use crate::IndexArg;

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    index: IndexArg,
    /// `jsonl` (one object per image), `csv` (id,path,label,recon_error,z0..)
    /// or `npy` (float32 matrix; row names in FILE.rows.csv beside it).
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Output file (default: standard output; required for npy). Written
    /// to FILE.tmp and renamed when complete.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Only images under this folder.
    #[arg(long)]
    under: Option<PathBuf>,
    /// Only images with this label.
    #[arg(long)]
    label: Option<String>,
    /// Print a JSON report of what was written (needs --out).
    #[arg(long, requires = "out")]
    json: bool,
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
    if args.format == Format::Npy && args.out.is_none() {
        bail!("--format npy writes a binary file: name it with --out FILE.npy");
    }
    let index = Index::open(&args.index.index, None, false)?;
    let filter = ExportFilter {
        under: args.under.clone(),
        label: args.label.clone(),
    };
    let rows = export::rows(&index, &filter)?;
    let report = match export::export(
        rows,
        index.model.latent_dim(),
        args.format,
        args.out.as_deref(),
    ) {
        Ok(report) => report,
        // `imgsearch export | head`: the reader had enough.
        Err(export::ExportError::Write { error, .. })
            if error.kind() == std::io::ErrorKind::BrokenPipe && args.out.is_none() =>
        {
            return Ok(ExitCode::SUCCESS)
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.out.is_some() {
        println!(
            "exported {} latents of {} floats to {}",
            report.images,
            report.dim,
            report.files.join(" and ")
        );
    } else {
        eprintln!(
            "exported {} latents of {} floats",
            report.images, report.dim
        );
    }
    Ok(ExitCode::SUCCESS)
}
