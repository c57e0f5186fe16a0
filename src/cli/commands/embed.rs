//! `imgsearch embed IMAGE...`: print each image's latent vector.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::model::{self, Model};
use imgsearch::prepare;
use imgsearch::report::Failure;

use crate::cli::args::DecodeArgs;
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    /// Image files to embed.
    #[arg(required = true)]
    images: Vec<PathBuf>,
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

impl Table for Embeddings {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        for e in &self.embeddings {
            let values: Vec<String> = e.latent.iter().map(|v| format!("{v:.6}")).collect();
            writeln!(out, "{}\t{}", e.path.display(), values.join(" "))?;
        }
        Ok(())
    }
}
