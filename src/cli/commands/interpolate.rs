//! `imgsearch interpolate A B -o strip.png`: the decoder's images along the
//! line between two images' latents.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::generate;
use imgsearch::imageio;
use imgsearch::model::{self, Model};
use imgsearch::prepare;
use imgsearch::sheet;

use crate::cli::args::DecodeArgs;
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    /// The image at one end (t = 0).
    a: PathBuf,
    /// The image at the other end (t = 1).
    b: PathBuf,
    /// Frames between the two ends (the strip has steps + 2).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(0..=254))]
    steps: u16,
    /// Where to write the strip (PNG): one captioned frame per point.
    #[arg(long, short)]
    out: PathBuf,
    /// A default model name or a model file.
    #[arg(long, short, default_value = model::DEFAULT_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Strip {
    model: String,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    a: PathBuf,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    b: PathBuf,
    /// The `t` of each frame, in order.
    frames: Vec<f32>,
    /// Side of each decoded frame, in pixels (the model's input size).
    frame_size: usize,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<Outcome> {
    let model =
        Model::load(&args.model).with_context(|| format!("loading model `{}`", args.model))?;
    let read = |path: &PathBuf| {
        prepare::file(path, model.input_shape(), args.decode.limits())
            .map(|(_, image)| image.pixels)
            .with_context(|| format!("reading {}", path.display()))
    };
    let (a, b) = (read(&args.a)?, read(&args.b)?);
    let frames = generate::interpolate(&model, &a, &b, args.steps as usize)?;
    let last = frames.len() - 1;
    let tiles: Vec<(String, Option<image::DynamicImage>)> = frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let caption = match i {
                0 => "A".to_string(),
                i if i == last => "B".to_string(),
                _ => format!("t={:.2}", frame.t),
            };
            let p = &frame.pixels;
            let image = imageio::planar_to_image(&p.data, p.size, p.channels);
            (caption, Some(image))
        })
        .collect();
    sheet::write_grid(&tiles, tiles.len(), &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let report = Strip {
        model: model.name.clone(),
        a: args.a,
        b: args.b,
        frames: frames.iter().map(|f| f.t).collect(),
        frame_size: model.input_size(),
        out: args.out,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

impl Table for Strip {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{} frames from {} to {} (model {}, decoded at {}x{}) -> {}",
            self.frames.len(),
            self.a.display(),
            self.b.display(),
            self.model,
            self.frame_size,
            self.frame_size,
            self.out.display()
        )
    }
}
