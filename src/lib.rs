//! imgsearch: offline image search, indexing and classification on the
//! latent vectors of a small convolutional autoencoder.
//!
//! Data flows one way: [`walk`] finds files, [`imageio`] decodes them to
//! model input, [`model`] encodes them. [`dataset`] reads the standard
//! datasets; [`knn`] is exact nearest-neighbour search and voting.
//! [`ingest`] runs walk → decode → encode → [`store`] (sled) → [`ann`]
//! (flat vector file and HNSW graph) into an [`index`] folder; [`search`]
//! and [`duplicates`] read it. [`labels`] says where labels come from;
//! [`classify`] lets labelled neighbours vote and [`eval`] measures that on
//! a labelled test folder. The autoencoder's other uses: [`anomaly`]
//! ranks by reconstruction error, [`restore`] reconstructs, denoises and
//! inpaints, [`export`] writes the latents for other tools.

pub mod ann;
pub mod anomaly;
pub mod catalogue;
pub mod checksum;
pub mod classify;
pub mod clusters;
pub mod codes;
pub mod cold;
pub mod dataset;
pub mod duplicates;
pub mod eval;
pub mod export;
pub mod filter;
pub mod fsutil;
pub mod generate;
pub mod guard;
pub mod imageio;
pub mod import;
pub mod index;
pub mod ingest;
pub mod knn;
pub mod labels;
pub mod map;
pub mod model;
pub mod prepare;
pub mod progress;
pub mod report;
pub mod restore;
pub mod search;
pub mod serve;
pub mod shards;
pub mod sheet;
pub mod sorted;
pub mod store;
pub mod walk;
