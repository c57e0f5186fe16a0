//! `imgsearch embed IMAGE...`: print each image's latent vector; with
//! `--out DIR [--shard I/N]`, embed a share of folders and files into a
//! Parquet shard instead.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::model::{self, Model};
use imgsearch::prepare;
use imgsearch::report::Failure;
use imgsearch::shards::{self, Shard, ShardReport};

use crate::cli::args::DecodeArgs;
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Image files to embed (with `--out`, folders too).
    #[arg(required_unless_present = "list")]
    images: Vec<PathBuf>,
    /// Write a Parquet shard into this folder
    /// (`part-IIIII-of-NNNNN.parquet`, failures in `errors/part-IIIII.jsonl`)
    /// instead of printing. A shard already complete is skipped.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With `--out`: embed only the I-th of N disjoint shares of the inputs
    /// (file k of the sorted absolute paths goes to shard k mod N).
    #[arg(long, default_value = "0/1", requires = "out")]
    shard: Shard,
    /// With `--out`: a file of input paths, one per line, added to the others.
    #[arg(long, requires = "out")]
    list: Option<PathBuf>,
    /// A default model name (photos, digits, fashion, …; see `imgsearch models`) or a model file path.
    #[arg(long, short, default_value = model::DEFAULT_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print JSON instead of one line per image.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Embeddings {
    model: ModelId,
    embeddings: Vec<Embedding>,
    errors: Vec<EmbedError>,
}

#[derive(Serialize)]
struct ModelId {
    name: String,
    fingerprint: String,
    latent: usize,
}

#[derive(Serialize)]
struct Embedding {
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    path: PathBuf,
    latent: Vec<f32>,
}

#[derive(Serialize)]
struct EmbedError {
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    path: PathBuf,
    error: String,
}

pub fn run(args: Args) -> Result<Outcome> {
    let model =
        Model::load(&args.model).with_context(|| format!("loading model `{}`", args.model))?;
    if let Some(out) = &args.out {
        return run_shard(&args, &model, out);
    }
    let (mut paths, mut pixels, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for path in &args.images {
        match prepare::file(path, model.input_shape(), args.decode.limits()) {
            Ok((_, image)) => {
                paths.push(path.clone());
                pixels.push(image.pixels);
            }
            Err(e) => failures.push(Failure::new(path, e.reason())),
        }
    }
    let latents = model.embed(&pixels)?;
    let report = Embeddings {
        model: ModelId {
            name: model.name.clone(),
            fingerprint: model.fingerprint.clone(),
            latent: model.embedding_dim(),
        },
        embeddings: paths
            .into_iter()
            .zip(latents)
            .map(|(path, latent)| Embedding { path, latent })
            .collect(),
        errors: failures
            .iter()
            .map(|f| EmbedError {
                path: f.path.clone(),
                error: f.reason.clone(),
            })
            .collect(),
    };
    output::print(&report, args.json)?;
    for f in &failures {
        eprintln!("skipped {}: {}", f.path.display(), f.reason);
    }
    Ok(Outcome::of(report.embeddings.len(), failures.len()))
}

/// `--out`: one Parquet shard.
fn run_shard(args: &Args, model: &Model, out: &std::path::Path) -> Result<Outcome> {
    let mut inputs = args.images.clone();
    if let Some(list) = &args.list {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("reading the input list {}", list.display()))?;
        inputs.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(PathBuf::from),
        );
    }
    let bar = Bar::new();
    let mut inputs = shards::list_inputs(&inputs, &bar)?;
    let mut failures = std::mem::take(&mut inputs.failures);
    let mut report =
        shards::embed_shard(model, &inputs, args.shard, out, args.decode.limits(), &bar)?;
    drop(bar);
    report.failed += failures.len() as u64;
    failures.append(&mut report.failures);
    report.failures = failures;
    if !args.json {
        for f in &report.failures {
            eprintln!("skipped {}: {}", f.path.display(), f.reason);
        }
    }
    output::print(&report, args.json)?;
    Ok(Outcome::of(
        report.rows as usize + report.skipped as usize,
        report.failed as usize,
    ))
}

impl Table for ShardReport {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let Shard { index, count } = self.shard;
        if self.skipped {
            writeln!(
                out,
                "shard {index}/{count}: {} already complete ({} rows), nothing to do",
                self.file.display(),
                self.rows
            )
        } else {
            writeln!(
                out,
                "shard {index}/{count}: {} rows, {} failed, of {} inputs in {:.1}s -> {}",
                self.rows,
                self.failed,
                self.inputs,
                self.seconds,
                self.file.display()
            )
        }
    }
}

impl Table for Embeddings {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        for e in &self.embeddings {
            let values: Vec<String> = e.latent.iter().map(|v| format!("{v:.6}")).collect();
            writeln!(out, "{}\t{}", e.path.display(), values.join(" "))?;
        }
        Ok(())
    }
}
