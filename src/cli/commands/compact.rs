//! `imgsearch compact`: rebuild the graph and flat file without tombstones,
//! then rewrite the store's database to give back the space sled keeps
//! for overwritten and dropped data.

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use imgsearch::index::{Index, IndexError};
use imgsearch::store::StoreError;

use crate::cli::args::IndexOnly;
use crate::cli::output::{self, Outcome, Table};

#[derive(Serialize)]
struct Compacted {
    points: usize,
    tombstones_dropped: u64,
    /// Bytes the store's database held before and after its rewrite; both
    /// the same where the file system could not swap folders in one step.
    store_bytes_before: u64,
    store_bytes_after: u64,
    store_rewritten: bool,
}

pub fn run(args: IndexOnly) -> Result<Outcome> {
    let index = Index::open(&args.index.index, None, false)?;
    let tombstones_dropped = index.store.tombstone_count()?;
    let points = index.compact()?;
    let (store_bytes_before, store_bytes_after, store_rewritten) = match index.rewrite_store() {
        Ok(rewritten) => (rewritten.bytes_before, rewritten.bytes_after, true),
        // The graph is compacted either way; the store is as it was.
        Err(IndexError::Store(error @ StoreError::CannotSwap { .. })) => {
            eprintln!("note: {error}");
            let bytes = imgsearch::fsutil::dir_size(&args.index.index.join("db"));
            (bytes, bytes, false)
        }
        Err(error) => return Err(error.into()),
    };
    let report = Compacted {
        points,
        tombstones_dropped,
        store_bytes_before,
        store_bytes_after,
        store_rewritten,
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
        )?;
        if self.store_rewritten {
            writeln!(
                out,
                "rewrote the store: {:.1} MB -> {:.1} MB",
                self.store_bytes_before as f64 / 1e6,
                self.store_bytes_after as f64 / 1e6
            )?;
        }
        Ok(())
    }
}
