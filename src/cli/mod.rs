//! The command line: every flag (here and in [`args`]), one file per
//! command under [`commands`], and the only code that touches clap,
//! indicatif and standard output ([`output`], [`progress`]).
//!
//! A command parses into its `Args` struct, calls the library, and prints a
//! typed report; it returns an [`Outcome`] and `main` turns that (or an
//! error) into the exit code.

pub mod args;
pub mod commands;
pub mod output;
pub mod progress;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::*;
pub use output::Outcome;

#[derive(Parser)]
#[command(
    name = "imgsearch",
    version,
    about = "Search, sort and check a pile of images on your own machine, offline",
    long_about = "imgsearch embeds images with a small convolutional autoencoder (trained \
without labels) and works on those embeddings. Five default models are built in: \
`photos` (real photographs, 64x64 centre crops, the default), `digits` (MNIST), \
`digits-denoise` (MNIST, trained to remove noise), `fashion` (Fashion-MNIST) and \
`photos-cifar32` (32x32 thumbnails, the `photos` of indexes built before it was replaced).\n\n\
Exit codes: 0 success, 1 failure, 2 bad usage, 3 partial success (some inputs skipped). \
Output piped into a reader that stops early (`| head`) ends quietly with 0."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk a folder, embed every image, store and index it (incremental, resumable).
    Ingest(ingest::Args),
    /// Find the indexed images most similar to an image (or several).
    Query(query::Args),
    /// Predict labels by a vote of the nearest labelled indexed images (kNN).
    Classify(classify::Args),
    /// Measure kNN classification on a labelled test folder: accuracy,
    /// per-class precision/recall, confusion matrix, timings; optionally
    /// beside raw pixels (--baseline raw) and exact search (--exact).
    Eval(eval::Args),
    /// Indexed images ranked by reconstruction error (what the model finds
    /// unusual); --check scores new images against the index.
    Anomalies(anomalies::Args),
    /// The autoencoder's rebuild of an image (--sheet: original |
    /// reconstruction | difference).
    Reconstruct(restore::ReconstructArgs),
    /// Remove noise with a model trained as a denoiser (default digits-denoise).
    Denoise(restore::DenoiseArgs),
    /// Fill masked pixels by iterating reconstruction, known pixels kept.
    Inpaint(restore::InpaintArgs),
    /// Store images as their quantized latents, a few dozen bytes each
    /// (`decompress` draws them back with the model's decoder).
    Compress(codes::CompressArgs),
    /// Decode a codes file from `compress` into images.
    Decompress(codes::DecompressArgs),
    /// Decode the line between two images' latents: a strip of what the
    /// model sees between them.
    Interpolate(interpolate::Args),
    /// Decode new images drawn around an image's latent, following how its
    /// nearest indexed images vary (--near IMAGE).
    Generate(generate::Args),
    /// Write the index's latents with path, label and reconstruction error
    /// (jsonl, csv or npy) for pandas, numpy, sklearn.
    Export(export::Args),
    /// Serve the index over HTTP: a JSON API (search, classify, ingest jobs,
    /// images, anomalies, duplicates) and a web page at `/`.
    Serve(serve::Args),
    /// Groups of near-duplicate images in the index (byte-identical ones marked).
    Duplicates(duplicates::Args),
    /// Group the index's images by k-means on their embeddings; each cluster
    /// shown by its decoded centroid and most central images.
    Clusters(clusters::Args),
    /// Lay the index's images out on a plane (PCA or a neighbour layout) and
    /// draw them; --decode-grid draws the decoder's images of the plane.
    Map(map::Args),
    /// Show what an index holds: model, counts, roots, labels, size on disk.
    Status(args::IndexOnly),
    /// Re-embed every image of an index with another model (re-ingests its roots).
    Reindex(reindex::Args),
    /// Rebuild the HNSW graph without the tombstones of removed images, and
    /// rewrite the database to give back the space of overwritten and
    /// dropped data (after many removals, or an upgrade that migrated it).
    Compact(args::IndexOnly),
    /// Print the latent vector (embedding) of each image; with --out, embed
    /// one shard of a collection into a Parquet file (for many machines).
    Embed(embed::Args),
    /// Read Parquet embedding shards (from `embed --out` or `export --format
    /// parquet`) into an index (incremental, resumable).
    Import(import::Args),
    /// Train an autoencoder on every image under a folder.
    Train(train::Args),
    /// Work with the standard datasets (MNIST, Fashion-MNIST, CIFAR-10).
    #[command(subcommand)]
    Dataset(dataset::Command),
    /// List the built-in default models and what their headers record.
    Models(models::Args),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Ingest(args) => ingest::run(args),
        Command::Query(args) => query::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Anomalies(args) => anomalies::run(args),
        Command::Reconstruct(args) => restore::reconstruct(args),
        Command::Denoise(args) => restore::denoise(args),
        Command::Inpaint(args) => restore::inpaint(args),
        Command::Interpolate(args) => interpolate::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Compress(args) => codes::compress(args),
        Command::Decompress(args) => codes::decompress(args),
        Command::Export(args) => export::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Duplicates(args) => duplicates::run(args),
        Command::Clusters(args) => clusters::run(args),
        Command::Map(args) => map::run(args),
        Command::Status(args) => status::run(args),
        Command::Reindex(args) => reindex::run(args),
        Command::Compact(args) => compact::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Import(args) => import::run(args),
        Command::Train(args) => train::run(args),
        Command::Dataset(command) => dataset::run(command),
        Command::Models(args) => models::run(args),
    }
}
