//! `imgsearch status`: what an index holds.

use std::io::{self, Write};

use anyhow::Result;

use imgsearch::cold::ColdIndex;
use imgsearch::index::{Index, Status};

use crate::cli::args::IndexOnly;
use crate::cli::output::{self, Outcome, Table};

pub fn run(args: IndexOnly) -> Result<Outcome> {
    let dir = &args.index.index;
    // From the derived files when they are current (instant at any size,
    // and while `serve` holds the store); else from the store, which
    // repairs them.
    let status = match ColdIndex::open(dir)? {
        Ok(cold) => cold.status(),
        Err(_) => Index::open(dir, None, false)?.status()?,
    };
    output::print(&status, args.json)?;
    Ok(Outcome::Success)
}

impl Table for Status {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "index       {}", self.index.display())?;
        writeln!(
            out,
            "model       {} ({}, embedding {})",
            self.model.name, self.model.fingerprint, self.model.latent
        )?;
        if let Some(renamed) = &self.model_renamed {
            writeln!(out, "note        {}", renamed.advice)?;
        }
        writeln!(out, "schema      v{}", self.schema_version)?;
        writeln!(out, "images      {}", self.images)?;
        writeln!(
            out,
            "tombstones  {} (flat file holds {} rows, graph {})",
            self.tombstones,
            self.ann.flat_rows,
            self.ann
                .graph_points
                .map_or("not built yet".into(), |p| format!("{p} points"))
        )?;
        let params = &self.ann.graph_params;
        writeln!(
            out,
            "graph       HNSW, M {}, ef_construction {}",
            params.m, params.ef_construction
        )?;
        writeln!(
            out,
            "size        {:.1} MB on disk",
            self.bytes_on_disk as f64 / 1e6
        )?;
        for file in &self.files {
            writeln!(out, "  {:<20} {:>10}", file.name, size_text(file.bytes))?;
        }
        for r in &self.roots {
            writeln!(out, "root        {}", r.display())?;
        }
        if !self.labels.is_empty() {
            writeln!(
                out,
                "labels      {} (+{} unlabelled)",
                self.labels.len(),
                self.unlabelled
            )?;
            for (label, n) in &self.labels {
                writeln!(out, "  {label:<20} {n:>8}")?;
            }
        }
        Ok(())
    }
}

/// Bytes for a reader, in decimal units like the total: B, KB or MB.
fn size_text(bytes: u64) -> String {
    if bytes < 1_000 {
        format!("{bytes} B")
    } else if bytes < 1_000_000 {
        format!("{:.1} KB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}
