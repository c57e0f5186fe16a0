//! `imgsearch compact`: rebuild the graph and flat file without tombstones.

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use imgsearch::index::Index;

use crate::cli::args::IndexOnly;
use crate::cli::output::{self, Outcome, Table};

#[derive(Serialize)]
struct Compacted {
    points: usize,
    tombstones_dropped: u64,
}

pub fn run(args: IndexOnly) -> Result<Outcome> {
    let index = Index::open(&args.index.index, None, false)?;
    let tombstones_dropped = index.store.tombstone_count()?;
    let points = index.compact()?;
    let report = Compacted {
        points,
        tombstones_dropped,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

impl Table for Compacted {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "rebuilt the graph: {} points, {} tombstones dropped",
            self.points, self.tombstones_dropped
        )
    }
}
