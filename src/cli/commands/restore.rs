//! `reconstruct`, `denoise` and `inpaint`: the autoencoder as an image
//! restorer. Outputs are always the input's size; `--fit` says how a larger
//! or smaller image meets the model's window.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::DynamicImage;
use serde::Serialize;

use imgsearch::imageio;
use imgsearch::model::Model;
use imgsearch::restore::{self, Fit, Planes};
use imgsearch::sheet;

use crate::cli::args::{DecodeArgs, FitArg};
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

/// The default model for `denoise`.
const DENOISE_MODEL: &str = "digits-denoise";
/// Rebuilding colour images: the CIFAR model's 32×32 tiles through a
/// 64-float latent keep more detail than `photos`' 64×64 tiles through 128
/// floats (25.5 against 22.4 dB on an Imagenette photo); `photos` is made
/// for search.
const RESTORE_MODEL: &str = "photos-cifar32";

#[derive(clap::Args)]
pub struct RestoreCommon {
    /// How an image that is not the model's size meets it: `tiles`
    /// (overlapping model-sized windows at full resolution, blended) or
    /// `resize` (the whole image to the model's size and back; for content
    /// at the model's scale, such as one large digit).
    #[arg(long, value_enum, default_value_t = FitArg::Tiles)]
    fit: FitArg,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ReconstructArgs {
    /// The image to reconstruct.
    input: PathBuf,
    /// Where to write the reconstruction (format from the extension).
    #[arg(long, short, required_unless_present = "sheet")]
    out: Option<PathBuf>,
    /// Write original | reconstruction | difference side by side (PNG).
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// A default model name or a model file (default: photos-cifar32, the
    /// built-in model that rebuilds colour photos with the most detail).
    #[arg(long, short, default_value = RESTORE_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    #[command(flatten)]
    common: RestoreCommon,
}

#[derive(clap::Args)]
pub struct DenoiseArgs {
    /// The noisy image.
    input: PathBuf,
    /// Where to write the cleaned image (format from the extension).
    #[arg(long, short)]
    out: PathBuf,
    /// A model trained with `train --noise` (default: digits-denoise, for
    /// handwriting-like images on a dark ground).
    #[arg(long, short, default_value = DENOISE_MODEL)]
    model: String,
    #[command(flatten)]
    common: RestoreCommon,
}

#[derive(clap::Args)]
pub struct InpaintArgs {
    /// The image with missing or damaged pixels.
    input: PathBuf,
    /// Same-size image marking the pixels to fill: white (luma >= 128) is
    /// filled, black is kept exactly.
    #[arg(long)]
    mask: PathBuf,
    /// Where to write the filled image (format from the extension).
    #[arg(long, short)]
    out: PathBuf,
    /// A default model name or a model file (default: photos-cifar32, the
    /// built-in model that rebuilds colour photos with the most detail).
    #[arg(long, short, default_value = RESTORE_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    /// Reconstruct-and-keep passes (more: closer to convergence, slower).
    #[arg(long, default_value_t = restore::INPAINT_ITERATIONS)]
    iterations: usize,
    #[command(flatten)]
    common: RestoreCommon,
}

/// What every restore command reports: the files, the model and the size.
#[derive(Serialize)]
struct Restored {
    input: PathBuf,
    output: Option<PathBuf>,
    model: String,
    fit: Fit,
    width: usize,
    height: usize,
    #[serde(flatten)]
    result: RestoreResult,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RestoreResult {
    Reconstructed {
        sheet: Option<PathBuf>,
        mse: f64,
        psnr_db: f64,
    },
    Denoised {
        trained_noise_sigma: Option<f64>,
        rms_change: f64,
    },
    Inpainted {
        mask: PathBuf,
        filled_pixels: usize,
        iterations: usize,
        last_change: f64,
    },
}

pub fn reconstruct(args: ReconstructArgs) -> Result<Outcome> {
    let job = Job::start(&args.input, &args.model, &args.common)?;
    let recon = {
        let _spinner = Bar::spinner("reconstructing");
        restore::reconstruct(&job.model, &job.planes, job.fit)?
    };
    let mse = recon.mse(&job.planes, None);
    if let Some(out) = &args.out {
        write(&recon, out)?;
    }
    if let Some(out) = &args.sheet {
        let diff = difference(&job.planes, &recon);
        let items = [
            ("ORIGINAL".to_string(), Some(job.image.clone())),
            ("REBUILT".to_string(), Some(recon.to_image())),
            ("DIFFERENCE".to_string(), Some(diff.to_image())),
        ];
        sheet::write_grid(&items, 3, out)
            .with_context(|| format!("writing the sheet {}", out.display()))?;
    }
    let result = RestoreResult::Reconstructed {
        sheet: args.sheet,
        mse,
        psnr_db: restore::psnr(mse),
    };
    job.finish(args.out, result)
}

pub fn denoise(args: DenoiseArgs) -> Result<Outcome> {
    let job = Job::start(&args.input, &args.model, &args.common)?;
    let clean = {
        let _spinner = Bar::spinner("denoising");
        restore::denoise(&job.model, &job.planes, job.fit)?
    };
    write(&clean, &args.out)?;
    let result = RestoreResult::Denoised {
        trained_noise_sigma: job.model.denoising_sigma(),
        rms_change: clean.mse(&job.planes, None).sqrt(),
    };
    job.finish(Some(args.out), result)
}

pub fn inpaint(args: InpaintArgs) -> Result<Outcome> {
    let job = Job::start(&args.input, &args.model, &args.common)?;
    let mask = imageio::decode_file(&args.mask, args.common.decode.limits())
        .context("reading the mask")?;
    let missing = restore::mask_from_image(&mask, job.planes.width, job.planes.height)
        .with_context(|| format!("mask {}", args.mask.display()))?;
    let (filled, done) = {
        let bar = Bar::new();
        restore::inpaint(
            &job.model,
            &job.planes,
            &missing,
            job.fit,
            args.iterations,
            &bar,
        )?
    };
    write(&filled, &args.out)?;
    let result = RestoreResult::Inpainted {
        mask: args.mask,
        filled_pixels: done.filled_pixels,
        iterations: done.iterations,
        last_change: done.last_change,
    };
    job.finish(Some(args.out), result)
}

/// What every restore command starts from and reports on: the model, the
/// input decoded (EXIF orientation applied) and as planes in the model's
/// colour space (gray for 1-channel models), and how it meets the model.
struct Job {
    input: PathBuf,
    model: Model,
    image: DynamicImage,
    planes: Planes,
    fit: Fit,
    json: bool,
}

impl Job {
    fn start(input: &Path, model: &str, common: &RestoreCommon) -> Result<Self> {
        let model = Model::load(model).with_context(|| format!("loading model `{model}`"))?;
        let image = imageio::decode_file(input, common.decode.limits())?;
        let planes = Planes::from_image(&image, model.channels());
        Ok(Self {
            input: input.to_path_buf(),
            model,
            image,
            planes,
            fit: common.fit.into(),
            json: common.json,
        })
    }

    fn finish(self, output: Option<PathBuf>, result: RestoreResult) -> Result<Outcome> {
        let report = Restored {
            input: self.input,
            output,
            model: self.model.name,
            fit: self.fit,
            width: self.planes.width,
            height: self.planes.height,
            result,
        };
        output::print(&report, self.json)?;
        Ok(Outcome::Success)
    }
}

impl Table for Restored {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let (input, size) = (
            self.input.display(),
            format!("{}x{}", self.width, self.height),
        );
        let output = self.output.as_deref().unwrap_or(Path::new("-")).display();
        match &self.result {
            RestoreResult::Reconstructed { mse, psnr_db, .. } => writeln!(
                out,
                "reconstructed {input} ({size}) with {}: mean squared error {mse:.5} (PSNR {psnr_db:.2} dB)",
                self.model
            ),
            RestoreResult::Denoised { rms_change, .. } => writeln!(
                out,
                "denoised {input} ({size}) with {} -> {output} (RMS change {rms_change:.4})",
                self.model
            ),
            RestoreResult::Inpainted {
                filled_pixels,
                iterations,
                last_change,
                ..
            } => writeln!(
                out,
                "filled {filled_pixels} of {} pixels of {input} with {} in {iterations} iterations (last RMS change {last_change:.5}) -> {output}",
                self.width * self.height,
                self.model
            ),
        }
    }
}

/// Writes in the format the extension names, atomically: a failure never
/// leaves a half-written output.
fn write(planes: &Planes, out: &Path) -> Result<()> {
    let format = image::ImageFormat::from_path(out)
        .with_context(|| format!("writing {}: unknown image format", out.display()))?;
    imgsearch::fsutil::save_image(&planes.to_image(), out, format)
        .with_context(|| format!("writing {}", out.display()))
}

/// |a − b| per value, stretched so the largest difference is white.
fn difference(a: &Planes, b: &Planes) -> Planes {
    let diff: Vec<f32> = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .collect();
    let max = diff.iter().copied().fold(1e-6, f32::max);
    Planes {
        data: diff.into_iter().map(|d| d / max).collect(),
        ..a.clone()
    }
}
