//! One file per command: its arguments, its call into the library, and its
//! report. `restore` holds reconstruct, denoise and inpaint, which share
//! their arguments and their reading and writing of images.

pub mod anomalies;
pub mod classify;
pub mod compact;
pub mod dataset;
pub mod duplicates;
pub mod embed;
pub mod eval;
pub mod export;
pub mod ingest;
pub mod models;
pub mod query;
pub mod reindex;
pub mod restore;
pub mod serve;
pub mod status;
pub mod train;
