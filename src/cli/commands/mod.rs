//! One file per command: its arguments, its call into the library, and its
//! report. `restore` holds reconstruct, denoise and inpaint, which share
//! their arguments and their reading and writing of images.

pub mod anomalies;
pub mod classify;
pub mod clusters;
pub mod codes;
pub mod compact;
pub mod dataset;
pub mod duplicates;
pub mod embed;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod ingest;
pub mod interpolate;
pub mod map;
pub mod models;
pub mod query;
pub mod reindex;
pub mod restore;
pub mod serve;
pub mod status;
pub mod train;

use imgsearch::index::Index;

/// Tells the user, on stderr, about derived files this command had to
/// rebuild from the store (nothing was lost, but it took time and may
/// point at a disk problem).
pub fn report_repairs(index: &Index) {
    let ann = index.ann();
    if ann.flat_state.damaged {
        eprintln!("note: the flat vector file was unreadable or damaged; rewritten from the store");
    }
    if let Some(reason) = &ann.graph_rebuilt {
        eprintln!("note: the HNSW graph could not be used ({reason}); rebuilt from the store");
    }
}
