//! imgsearch: offline image search, indexing and classification on the
//! latent vectors of a small convolutional autoencoder.
//!
//! Data flows one way: [`walk`] finds files, [`imageio`] decodes them to
//! model input, [`model`] encodes them. [`dataset`] reads the standard
//! datasets; [`knn`] is exact nearest-neighbour search and voting.

pub mod dataset;
pub mod imageio;
pub mod knn;
pub mod model;
pub mod walk;
