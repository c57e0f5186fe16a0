//! `imgsearch reindex --model M`: re-embed an index with another model.

use std::io::{self, Write};

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::ingest::{self, IngestOptions, IngestReport};

use crate::cli::args::IndexArg;
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    index: IndexArg,
    /// The new model: a default name or a model file.
    #[arg(long, short)]
    model: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Reindexed {
    model: String,
    roots: Vec<IngestReport>,
}

pub fn run(args: Args) -> Result<Outcome> {
    let dir = &args.index.index;
    let roots = {
        let bar = Bar::new();
        ingest::reindex(dir, &args.model, &IngestOptions::default(), &bar)
            .with_context(|| format!("re-indexing {} with model `{}`", dir.display(), args.model))?
    };
    let report = Reindexed {
        model: args.model,
        roots,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

impl Table for Reindexed {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        for r in &self.roots {
            writeln!(
                out,
                "{}: {} images re-embedded with `{}`, {} failed",
                r.root.display(),
                r.added,
                self.model,
                r.failed
            )?;
        }
        Ok(())
    }
}
