//! `imgsearch duplicates`: groups of near-duplicate images.

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use imgsearch::duplicates::{self, DuplicateGroup};
use imgsearch::export::csv_field;
use imgsearch::index::Index;

use crate::cli::args::IndexArg;
use crate::cli::output::{self, Outcome, Table};

/// Neighbours each image is compared with.
const NEIGHBOURS: usize = 8;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    index: IndexArg,
    /// Latent distance at or below which two images are duplicates
    /// (default: similarity 0.6, i.e. 0.667 * sqrt(latent)).
    #[arg(long)]
    threshold: Option<f32>,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV: group,kind,identical_set,id,path.
    #[arg(long)]
    csv: bool,
}

#[derive(Serialize)]
struct Duplicates {
    threshold: f32,
    groups: Vec<DuplicateGroup>,
}

pub fn run(args: Args) -> Result<Outcome> {
    let index = Index::open(&args.index.index, None, false)?;
    let threshold = args
        .threshold
        .unwrap_or_else(|| duplicates::default_threshold(&index.model));
    let groups = duplicates::duplicates(&index, threshold, NEIGHBOURS)?;
    index.save()?;
    super::report_repairs(&index);
    let report = Duplicates { threshold, groups };
    if args.csv {
        output::print_with(|out| report.csv(out))?;
    } else {
        output::print(&report, args.json)?;
    }
    Ok(Outcome::Success)
}

impl Duplicates {
    fn csv(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "group,kind,identical_set,id,path")?;
        for (g, group) in self.groups.iter().enumerate() {
            for m in &group.members {
                writeln!(
                    out,
                    "{},{},{},{},{}",
                    g + 1,
                    group.kind,
                    m.identical_set,
                    m.id,
                    csv_field(&m.path.to_string_lossy())
                )?;
            }
        }
        Ok(())
    }
}

impl Table for Duplicates {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{} groups at distance <= {:.3}",
            self.groups.len(),
            self.threshold
        )?;
        for (g, group) in self.groups.iter().enumerate() {
            writeln!(
                out,
                "\n#{} {} ({} images, max distance {:.3})",
                g + 1,
                group.kind,
                group.members.len(),
                group.max_distance
            )?;
            for m in &group.members {
                writeln!(out, "  [{}] {}", m.identical_set, m.path.display())?;
            }
        }
        Ok(())
    }
}
