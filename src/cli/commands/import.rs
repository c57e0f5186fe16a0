//! `imgsearch import PARTS...`: Parquet embedding shards into an index.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use imgsearch::import::{self, ImportReport};
use imgsearch::index;

use crate::cli::args::IndexArg;
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Shard files, or folders of them (their `*.parquet` files), as written
    /// by `imgsearch embed --out` or `imgsearch export --format parquet`.
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    #[command(flatten)]
    index: IndexArg,
    /// Model for a new index (default: the one the shards name). Shards
    /// made with another model than the index's are refused.
    #[arg(long, short)]
    model: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<Outcome> {
    let dir = &args.index.index;
    let new_index = !dir.join("db").exists();
    let files = import::shard_files(&args.parts)?;
    let result = {
        let bar = Bar::new();
        import::import(dir, &files, args.model.as_deref(), &bar)
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            // A first import that failed leaves no index stamped with a
            // model behind.
            if new_index && dir.join("db").exists() {
                index::discard_new(dir)
                    .with_context(|| format!("removing the new index {}", dir.display()))?;
            }
            return Err(e).with_context(|| format!("importing into {}", dir.display()));
        }
    };
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

impl Table for ImportReport {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let already = self.files.iter().filter(|f| f.already_imported).count();
        writeln!(
            out,
            "{}: {} shard files ({} already imported), {} rows: added {}, updated {}, unchanged {} in {:.1}s ({:.0} rows/s)",
            self.index.display(),
            self.files.len(),
            already,
            self.rows,
            self.added,
            self.updated,
            self.unchanged,
            self.seconds,
            self.rows_per_second
        )?;
        if self.rows > 0 {
            writeln!(
                out,
                "busy (seconds): store {:.2}, index {:.2}",
                self.store_seconds, self.index_seconds
            )?;
        }
        Ok(())
    }
}
