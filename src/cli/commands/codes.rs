//! `compress` and `decompress`: images as latent codes, and back.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use imgsearch::codes::{self, Coded, CodesHeader};
use imgsearch::imageio;
use imgsearch::model::{self, Model};
use imgsearch::prepare;
use imgsearch::progress::Progress;
use imgsearch::report::Failure;
use imgsearch::shards;

use crate::cli::args::DecodeArgs;
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(clap::Args)]
pub struct CompressArgs {
    /// Images, or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The codes file to write.
    #[arg(long, short)]
    out: PathBuf,
    /// A default model name or a model file; decompress needs the same one.
    #[arg(long, short, default_value = model::DEFAULT_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    /// Bits per latent value (1 to 8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=8))]
    bits: u8,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct DecompressArgs {
    /// A codes file from `imgsearch compress`.
    codes: PathBuf,
    /// Folder for the decoded images (PNG, named after the originals).
    #[arg(long, short)]
    out: PathBuf,
    /// Write the decoder's images at the model's size instead of each
    /// original's.
    #[arg(long)]
    native: bool,
    /// The model to decode with (default: the one the file names). Its
    /// fingerprint must match the file's.
    #[arg(long, short)]
    model: Option<String>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Compressed {
    model: String,
    images: usize,
    bits: u8,
    bytes: u64,
    bytes_per_image: f64,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    out: PathBuf,
    failures: Vec<Failure>,
}

#[derive(Serialize)]
struct Decompressed {
    model: String,
    images: usize,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    out: PathBuf,
    files: Vec<String>,
}

pub fn compress(args: CompressArgs) -> Result<Outcome> {
    let model =
        Model::load(&args.model).with_context(|| format!("loading model `{}`", args.model))?;
    let bar = Bar::new();
    let inputs = shards::list_inputs(&args.inputs, &bar)?;
    let mut failures = inputs.failures;
    let mut images = Vec::new();
    bar.stage("images", Some(inputs.files.len() as u64));
    for chunk in inputs.files.chunks(model::BATCH) {
        let mut pixels = Vec::new();
        for input in chunk {
            match prepare::file(&input.path, model.input_shape(), args.decode.limits()) {
                Ok((_, image)) => {
                    let name = input
                        .path
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    images.push(Coded {
                        name,
                        width: image.width,
                        height: image.height,
                        latent: Vec::new(),
                    });
                    pixels.push(image.pixels);
                }
                Err(e) => failures.push(Failure::new(&input.path, e.reason())),
            }
        }
        if !pixels.is_empty() {
            let first = images.len() - pixels.len();
            for (image, latent) in images[first..].iter_mut().zip(model.latents(&pixels)?) {
                image.latent = latent;
            }
        }
        bar.advance(chunk.len() as u64);
    }
    drop(bar);
    if images.is_empty() {
        for f in &failures {
            eprintln!("skipped {}: {}", f.path.display(), f.reason);
        }
        bail!("no image could be read, so nothing was written");
    }
    let header = CodesHeader {
        model: model.name.clone(),
        fingerprint: model.fingerprint.clone(),
        latent: model.latent_dim(),
        bits: args.bits,
        count: images.len(),
    };
    let bytes = codes::encode(&header, &images)?;
    imgsearch::fsutil::write_bytes_atomically(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if !args.json {
        for f in &failures {
            eprintln!("skipped {}: {}", f.path.display(), f.reason);
        }
    }
    let report = Compressed {
        model: model.name.clone(),
        images: images.len(),
        bits: args.bits,
        bytes: bytes.len() as u64,
        bytes_per_image: bytes.len() as f64 / images.len() as f64,
        out: args.out,
        failures,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::of(report.images, report.failures.len()))
}

pub fn decompress(args: DecompressArgs) -> Result<Outcome> {
    let path = &args.codes;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (header, images) =
        codes::decode(&bytes).with_context(|| format!("reading codes file {}", path.display()))?;
    let name = args.model.as_deref().unwrap_or(&header.model);
    let name = model::renamed_default(name, &header.fingerprint).unwrap_or(name);
    let model = Model::load(name).with_context(|| format!("loading model `{name}`"))?;
    if model.fingerprint != header.fingerprint || model.latent_dim() != header.latent {
        bail!(
            "{} was written with model `{}` ({}); `{}` here is {}, whose decoder would draw something else",
            path.display(),
            header.model,
            header.fingerprint,
            name,
            model.fingerprint
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let latents: Vec<Vec<f32>> = images.iter().map(|i| i.latent.clone()).collect();
    let mut files = Vec::with_capacity(images.len());
    for (i, (image, pixels)) in images.iter().zip(model.decode(&latents)?).enumerate() {
        let mut decoded = imageio::planar_to_image(&pixels.data, pixels.size, pixels.channels);
        if !args.native && image.width > 0 && image.height > 0 {
            decoded = decoded.resize_exact(
                image.width,
                image.height,
                image::imageops::FilterType::CatmullRom,
            );
        }
        let file = output_name(&image.name, i, &files);
        let target = args.out.join(&file);
        imgsearch::fsutil::save_image(&decoded, &target, image::ImageFormat::Png)
            .with_context(|| format!("writing {}", target.display()))?;
        files.push(file);
    }
    let report = Decompressed {
        model: model.name.clone(),
        images: files.len(),
        out: args.out,
        files,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

/// `name`'s stem as a PNG, made unique among `taken` (and never a path).
fn output_name(name: &str, index: usize, taken: &[String]) -> String {
    let stem = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty() && !s.starts_with('.'))
        .unwrap_or_else(|| format!("image-{index:05}"));
    let plain = format!("{stem}.png");
    if !taken.contains(&plain) {
        return plain;
    }
    format!("{stem}-{index:05}.png")
}

impl Table for Compressed {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{} images as {}-bit latent codes of model {}: {} bytes ({:.1} per image) -> {}",
            self.images,
            self.bits,
            self.model,
            self.bytes,
            self.bytes_per_image,
            self.out.display()
        )
    }
}

impl Table for Decompressed {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{} images decoded with model {} -> {}",
            self.images,
            self.model,
            self.out.display()
        )
    }
}
