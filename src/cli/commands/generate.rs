//! `imgsearch generate --near IMAGE`: new images decoded from latents drawn
//! around an image's, in the directions its nearest indexed images spread.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use imgsearch::generate;
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::Index;
use imgsearch::model::Model;
use imgsearch::prepare;
use imgsearch::search::{self, QueryOptions};
use imgsearch::sheet;

use crate::cli::args::{DecodeArgs, IndexArg};
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    /// The image to draw variations of (indexed or not).
    #[arg(long)]
    near: PathBuf,
    /// Images to draw.
    #[arg(short, long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    n: u16,
    /// Indexed neighbours whose spread the samples follow.
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..=1000))]
    k: u16,
    /// How far to stray, in units of the neighbours' spread.
    #[arg(long, default_value_t = 1.0)]
    scale: f32,
    /// Seed of the draws: the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the sheet (PNG): the image, the model's
    /// reconstruction of it (caption 0), then the samples (1, 2, ...).
    #[arg(long, short)]
    out: PathBuf,
    #[command(flatten)]
    index: IndexArg,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    near: PathBuf,
    model: String,
    samples: usize,
    /// The neighbours whose spread was used, nearest first.
    neighbours: Vec<Neighbour>,
    /// Root-mean-square distance of the neighbours' latents from their mean.
    neighbour_spread: f32,
    /// Mean distance of the samples' latents from the image's.
    sample_distance: f32,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Neighbour {
    id: u64,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    path: PathBuf,
    distance: f32,
}

pub fn run(args: Args) -> Result<Outcome> {
    if !(args.scale.is_finite() && args.scale >= 0.0) {
        bail!("--scale must be a finite number ≥ 0, not {}", args.scale);
    }
    let dir = &args.index.index;
    let index = Index::open(dir, None, false)
        .with_context(|| format!("opening index {}", dir.display()))?;
    let model = &index.model;
    let (_, prepared) = prepare::file(&args.near, model.input_shape(), args.decode.limits())
        .with_context(|| format!("reading {}", args.near.display()))?;
    let embedding = model
        .embed(std::slice::from_ref(&prepared.pixels))?
        .remove(0);
    let opts = QueryOptions {
        k: args.k as usize,
        ..Default::default()
    };
    let (hits, _) = search::nearest(&index, &embedding, &opts)?;
    if hits.len() < 2 {
        bail!(
            "index {} holds {} image(s): a spread needs at least two neighbours",
            dir.display(),
            hits.len()
        );
    }
    let centre = model
        .latents(std::slice::from_ref(&prepared.pixels))?
        .remove(0);
    let latents = neighbour_latents(&index, model, &hits)?;
    let samples = generate::near(
        model,
        &centre,
        &latents,
        args.n as usize,
        args.scale,
        args.seed,
    )?;
    let dim = centre.len();
    let mean: Vec<f32> = (0..dim)
        .map(|d| latents.iter().map(|v| v[d]).sum::<f32>() / latents.len() as f32)
        .collect();
    let neighbour_spread = {
        let squares: f32 = latents.iter().map(|v| distance(v, &mean).powi(2)).sum();
        (squares / latents.len() as f32).sqrt()
    };
    let sample_distance = samples
        .iter()
        .map(|(z, _)| distance(z, &centre))
        .sum::<f32>()
        / samples.len() as f32;

    let reconstruction = model.decode(std::slice::from_ref(&centre))?.remove(0);
    let original = imageio::decode_file(&args.near, DecodeLimits::default()).ok();
    let mut tiles = vec![
        (String::new(), original),
        ("0".to_string(), Some(to_image(&reconstruction))),
    ];
    tiles.extend(
        samples
            .iter()
            .enumerate()
            .map(|(i, (_, pixels))| ((i + 1).to_string(), Some(to_image(pixels)))),
    );
    sheet::write_grid(&tiles, tiles.len().min(10), &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;

    let report = Report {
        near: args.near,
        model: model.name.clone(),
        samples: samples.len(),
        neighbours: hits
            .iter()
            .map(|h| Neighbour {
                id: h.id,
                path: h.path.clone(),
                distance: h.distance,
            })
            .collect(),
        neighbour_spread,
        sample_distance,
        out: args.out,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

/// The neighbours' latents: their stored vectors where the index stores
/// latents; else re-encoded from the files readable here.
fn neighbour_latents(index: &Index, model: &Model, hits: &[search::Hit]) -> Result<Vec<Vec<f32>>> {
    if model.embeds_latents() {
        let ann = index.ann();
        return Ok(hits.iter().filter_map(|h| ann.flat.get(h.id)).collect());
    }
    let pixels: Vec<_> = hits
        .iter()
        .filter_map(|h| prepare::file(&h.path, model.input_shape(), DecodeLimits::default()).ok())
        .map(|(_, prepared)| prepared.pixels)
        .collect();
    if pixels.len() < 2 {
        bail!(
            "model `{}` stores embeddings, not latents, and fewer than two of the {} nearest \
             images can be read here to re-encode",
            model.name,
            hits.len()
        );
    }
    Ok(model.latents(&pixels)?)
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn to_image(p: &imageio::Pixels) -> image::DynamicImage {
    imageio::planar_to_image(&p.data, p.size, p.channels)
}

impl Table for Report {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{} images near {} (model {}), drawn from the spread of its {} nearest indexed images \
             (spread {:.3}, samples {:.3} from the image) -> {}",
            self.samples,
            self.near.display(),
            self.model,
            self.neighbours.len(),
            self.neighbour_spread,
            self.sample_distance,
            Path::new(&self.out).display()
        )
    }
}
