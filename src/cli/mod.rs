//! Subcommands of the `imgsearch` binary that live outside `main.rs`: each
//! file holds a command's arguments, its call into the library and its output.

pub mod anomalies;
pub mod export;
pub mod knn;
pub mod restore;
pub mod serve;
