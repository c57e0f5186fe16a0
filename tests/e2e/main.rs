//! End-to-end tests: the binary and the library on real files, real sled,
//! real HNSW, a real HTTP server and browser. One test binary, one module
//! per area: each file under `tests/` would be a binary of its own linking
//! the whole library, and fifteen of them cost more build time than
//! everything else in CI together.

mod common;

mod anomalies;
mod browser;
mod cli;
mod decode;
mod export;
mod full_disk;
mod generate;
mod hardening;
mod import;
mod ingest;
mod knn;
mod map;
mod model;
mod photos;
mod query;
mod restore;
mod serve;
mod shards;
mod spark;
