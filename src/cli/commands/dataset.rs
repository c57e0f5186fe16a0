//! `imgsearch dataset export`: standard datasets as labelled PNG folders.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use imgsearch::dataset::{self, ExportReport, Split};

use crate::cli::args::{DatasetArg, SplitArg};
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(Subcommand)]
pub enum Command {
    /// Write a dataset as labelled PNG folders: OUT/<class>/<index>.png.
    Export {
        /// Which dataset.
        #[arg(value_enum)]
        name: DatasetArg,
        /// Folder holding its files (IDX files, or CIFAR-10 .bin/.bin.gz records).
        src: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = SplitArg::Train)]
        split: SplitArg,
        /// Export only the first N images.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Command) -> Result<Outcome> {
    let Command::Export {
        name,
        src,
        out,
        split,
        limit,
        json,
    } = command;
    let ds = dataset::load(name.into(), &src, split.into(), limit)?;
    let report = {
        let _spinner = Bar::spinner(&format!("writing {} images to {}", ds.len(), out.display()));
        dataset::export(&ds, &out)?
    };
    output::print(&report, json)?;
    Ok(Outcome::Success)
}

impl Table for ExportReport {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let split = match self.split {
            Split::Train => "train",
            Split::Test => "test",
        };
        writeln!(
            out,
            "exported {} {} {split} images to {}",
            self.images,
            self.dataset.as_str(),
            self.out.display()
        )?;
        for (class, n) in &self.per_class {
            writeln!(out, "  {class:<12} {n:>6}")?;
        }
        Ok(())
    }
}
