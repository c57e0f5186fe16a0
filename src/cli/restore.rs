//! `reconstruct`, `denoise` and `inpaint`: the autoencoder as an image
//! restorer. Outputs are always the input's size; `--fit` says how a larger
//! or smaller image meets the model's window.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use image::DynamicImage;
use serde_json::json;

use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::model::{self, Model};
use imgsearch::restore::{self, Fit, Planes};
use imgsearch::sheet;

use crate::{progress_bar, spinner};

/// The default model for `denoise`.
pub const DENOISE_MODEL: &str = "digits-denoise";

#[derive(Args)]
pub struct RestoreCommon {
    /// How an image that is not the model's size meets it: `tiles`
    /// (overlapping model-sized windows at full resolution, blended) or
    /// `resize` (the whole image to the model's size and back; for content
    /// at the model's scale, such as one large digit).
    #[arg(long, value_enum, default_value_t = Fit::Tiles)]
    fit: Fit,
    /// Refuse inputs larger than this many megapixels.
    #[arg(long, default_value_t = imageio::DEFAULT_MAX_MEGAPIXELS)]
    max_megapixels: f64,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReconstructArgs {
    /// The image to reconstruct.
    input: PathBuf,
    /// Where to write the reconstruction (format from the extension).
    #[arg(long, short, required_unless_present = "sheet")]
    out: Option<PathBuf>,
    /// Write original | reconstruction | difference side by side (PNG).
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// A default model name or a model file.
    #[arg(long, short, default_value = model::DEFAULT_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    #[command(flatten)]
    common: RestoreCommon,
}

#[derive(Args)]
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

#[derive(Args)]
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
    /// A default model name or a model file.
    #[arg(long, short, default_value = model::DEFAULT_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    /// Reconstruct-and-keep passes (more: closer to convergence, slower).
    #[arg(long, default_value_t = restore::INPAINT_ITERATIONS)]
    iterations: usize,
    #[command(flatten)]
    common: RestoreCommon,
}

pub fn reconstruct(args: ReconstructArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let (image, input) = read(&args.input, &model, &args.common)?;
    let spin = spinner("reconstructing");
    let recon = restore::reconstruct(&model, &input, args.common.fit)?;
    spin.finish_and_clear();
    let mse = recon.mse(&input, None);
    if let Some(out) = &args.out {
        write(&recon, out)?;
    }
    if let Some(out) = &args.sheet {
        let diff = difference(&input, &recon);
        let items = [
            ("ORIGINAL".to_string(), Some(image)),
            ("REBUILT".to_string(), Some(recon.to_image())),
            ("DIFFERENCE".to_string(), Some(diff.to_image())),
        ];
        sheet::write_grid(&items, 3, out)
            .with_context(|| format!("writing the sheet {}", out.display()))?;
    }
    let report = json!({
        "input": args.input, "output": args.out, "sheet": args.sheet,
        "model": model.name, "fit": args.common.fit,
        "width": input.width, "height": input.height,
        "mse": mse, "psnr_db": restore::psnr(mse),
    });
    print_report(&report, args.common.json, || {
        format!(
            "reconstructed {} ({}x{}) with {}: mean squared error {mse:.5} (PSNR {:.2} dB)",
            args.input.display(),
            input.width,
            input.height,
            model.name,
            restore::psnr(mse)
        )
    })
}

pub fn denoise(args: DenoiseArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let (_, input) = read(&args.input, &model, &args.common)?;
    let spin = spinner("denoising");
    let clean = restore::denoise(&model, &input, args.common.fit)?;
    spin.finish_and_clear();
    write(&clean, &args.out)?;
    let change = clean.mse(&input, None).sqrt();
    let report = json!({
        "input": args.input, "output": args.out, "model": model.name,
        "trained_noise_sigma": model.denoising_sigma(), "fit": args.common.fit,
        "width": input.width, "height": input.height, "rms_change": change,
    });
    print_report(&report, args.common.json, || {
        format!(
            "denoised {} ({}x{}) with {} -> {} (RMS change {change:.4})",
            args.input.display(),
            input.width,
            input.height,
            model.name,
            args.out.display()
        )
    })
}

pub fn inpaint(args: InpaintArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let (_, input) = read(&args.input, &model, &args.common)?;
    let limits = DecodeLimits {
        max_megapixels: args.common.max_megapixels,
    };
    let mask = imageio::decode_file(&args.mask, limits)
        .with_context(|| format!("reading the mask {}", args.mask.display()))?;
    let missing = restore::mask_from_image(&mask, input.width, input.height)
        .with_context(|| format!("mask {}", args.mask.display()))?;
    let bar = progress_bar("passes", || args.iterations as u64);
    let (filled, report) = restore::inpaint(
        &model,
        &input,
        &missing,
        args.common.fit,
        args.iterations,
        &|| bar.inc(1),
    )?;
    bar.finish_and_clear();
    write(&filled, &args.out)?;
    let json = json!({
        "input": args.input, "mask": args.mask, "output": args.out, "model": model.name,
        "fit": args.common.fit, "width": input.width, "height": input.height,
        "filled_pixels": report.filled_pixels, "iterations": report.iterations,
        "last_change": report.last_change,
    });
    print_report(&json, args.common.json, || {
        format!(
            "filled {} of {} pixels of {} with {} in {} iterations (last RMS change {:.5}) -> {}",
            report.filled_pixels,
            input.width * input.height,
            args.input.display(),
            model.name,
            report.iterations,
            report.last_change,
            args.out.display()
        )
    })
}

fn load_model(spec: &str) -> Result<Model> {
    Model::load(spec).with_context(|| format!("loading model `{spec}`"))
}

/// The decoded image (EXIF orientation applied) and its planes in the
/// model's colour space (gray for 1-channel models).
fn read(path: &Path, model: &Model, common: &RestoreCommon) -> Result<(DynamicImage, Planes)> {
    let limits = DecodeLimits {
        max_megapixels: common.max_megapixels,
    };
    let image = imageio::decode_file(path, limits)
        .with_context(|| format!("reading {}", path.display()))?;
    let planes = Planes::from_image(&image, model.channels());
    Ok((image, planes))
}

/// Writes in the format the extension names, through a temporary file
/// renamed into place, so a failure never leaves a half-written output.
fn write(planes: &Planes, out: &Path) -> Result<()> {
    let format = image::ImageFormat::from_path(out)
        .with_context(|| format!("writing {}: unknown image format", out.display()))?;
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = planes
        .to_image()
        .save_with_format(&tmp, format)
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(std::fs::rename(&tmp, out)?));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", out.display()))
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

fn print_report(
    report: &serde_json::Value,
    json: bool,
    line: impl FnOnce() -> String,
) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", line());
    }
    Ok(ExitCode::SUCCESS)
}
