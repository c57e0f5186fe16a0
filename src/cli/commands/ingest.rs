//! `imgsearch ingest DIR`: walk, embed, store and index.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use imgsearch::index::{self, Index};
use imgsearch::ingest::{self, IngestOptions, IngestReport};
use imgsearch::labels::LabelSource;

use crate::cli::args::{DecodeArgs, IndexArg};
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Folder to ingest (searched recursively; `root/<label>/img.png` gives labels).
    dir: PathBuf,
    #[command(flatten)]
    index: IndexArg,
    /// Model for a new index (default: photos). An existing index keeps its own;
    /// naming a different one is refused.
    #[arg(long, short)]
    model: Option<String>,
    /// Leave out files and folders matching this glob (relative path or name); repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// Follow symbolic links under DIR (loops are reported and skipped).
    /// Without it links are passed over and counted.
    #[arg(long)]
    follow_links: bool,
    /// Take labels from this CSV of `path,label` rows (paths relative to DIR
    /// or absolute; optional header) instead of folder names. Unlisted images
    /// are stored unlabelled; a changed label is updated without re-encoding.
    #[arg(long, value_name = "FILE.csv")]
    labels: Option<PathBuf>,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print the full report as JSON (every failure with its reason).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<Outcome> {
    let dir = args.index.index.clone();
    let new_index = !dir.join("db").exists();
    let result = ingest(args);
    // A first ingest that stored nothing leaves no index behind: otherwise
    // its model (perhaps the default, by mistake) would be stamped on it,
    // and the corrected command refused.
    if new_index && !matches!(result, Ok(Outcome::Success)) && dir.join("db").exists() {
        index::discard_new(&dir)
            .with_context(|| format!("removing the empty new index {}", dir.display()))?;
    }
    result
}

fn ingest(args: Args) -> Result<Outcome> {
    let dir = &args.index.index;
    let index = Index::open(dir, args.model.as_deref(), true)
        .with_context(|| format!("opening index {}", dir.display()))?;
    let opts = IngestOptions {
        exclude: args.exclude,
        follow_links: args.follow_links,
        confine: false,
        limits: args.decode.limits(),
        labels: LabelSource::from_file_or_folders(args.labels.as_deref(), &args.dir)?,
        cancel: None,
        pool: None,
    };
    let report = {
        let bar = Bar::new();
        ingest::ingest(&index, &args.dir, &opts, &bar)
            .with_context(|| format!("ingesting {}", args.dir.display()))?
    };
    super::report_repairs(&index);
    if !args.json {
        for f in &report.failures {
            eprintln!("skipped {}: {}", f.path.display(), f.reason);
        }
        if let (Some(n @ 1..), Some(file)) = (report.labels_unmatched, &args.labels) {
            eprintln!(
                "warning: {n} labelled rows of {} named no image under {}",
                file.display(),
                report.root.display()
            );
        }
    }
    output::print(&report, args.json)?;
    // Failures are in the report; only a run that stored nothing failed.
    let stored = report.added + report.updated + report.renamed + report.unchanged;
    Ok(if report.failed > 0 && stored == 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}

impl Table for IngestReport {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{}: scanned {}, added {}, updated {}, renamed {}, unchanged {}, removed {}, failed {} in {:.1}s ({:.0} images/s encoded)",
            self.root.display(),
            self.scanned,
            self.added,
            self.updated,
            self.renamed,
            self.unchanged,
            self.removed,
            self.failed,
            self.seconds,
            self.images_per_second
        )?;
        let s = &self.stages;
        if self.encoded > 0 {
            writeln!(
                out,
                "busy (seconds, summed over threads): walk {:.2}, read {:.2}, decode {:.2}, encode {:.2}, store {:.2}, index {:.2}",
                s.walk, s.read, s.decode, s.encode, s.store, s.index
            )?;
        }
        let skipped = self.skipped;
        if skipped.total() > 0 {
            writeln!(
                out,
                "passed over {} symbolic links (see --follow-links), {} special files (FIFOs, sockets, devices) and {} folders that resolved outside it",
                skipped.symlinks, skipped.special_files, skipped.outside
            )?;
        }
        Ok(())
    }
}
