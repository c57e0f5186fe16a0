//! `imgsearch export`: the index's latents for other tools.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{bail, Result};

use imgsearch::export::{self, ExportReport, Format};
use imgsearch::index::Index;

use crate::cli::args::{FilterArgs, FormatArg, IndexArg};
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    index: IndexArg,
    /// `jsonl` (one object per image), `csv` (id,path,label,recon_error,z0..)
    /// `npy` (float32 matrix; row names in FILE.rows.csv beside it) or
    /// `parquet` (the schema of `embed --out` shards: `import` reads it back).
    #[arg(long, value_enum, default_value_t = FormatArg::Jsonl)]
    format: FormatArg,
    /// Output file (default: standard output; required for npy). Written
    /// to FILE.tmp and renamed when complete.
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print a JSON report of what was written (needs --out).
    #[arg(long, requires = "out")]
    json: bool,
}

pub fn run(args: Args) -> Result<Outcome> {
    let format = Format::from(args.format);
    match format {
        Format::Npy if args.out.is_none() => {
            bail!("--format npy writes a binary file: name it with --out FILE.npy")
        }
        Format::Parquet if args.out.is_none() => {
            bail!("--format parquet writes a binary file: name it with --out FILE.parquet")
        }
        _ => {}
    }
    let index = Index::open(&args.index.index, None, false)?;
    let rows = export::rows(&index, &args.filter.filter())?;
    // Latents on standard output are the command's output; the report then
    // goes to stderr so it never mixes with them.
    let report = export::export(rows, &index, format, args.out.as_deref())?;
    if args.out.is_some() {
        output::print(&report, args.json)?;
    } else {
        eprintln!(
            "exported {} latents of {} floats",
            report.images, report.dim
        );
    }
    Ok(Outcome::Success)
}

impl Table for ExportReport {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "exported {} latents of {} floats to {}",
            self.images,
            self.dim,
            self.files.join(" and ")
        )
    }
}
