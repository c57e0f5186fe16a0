//! `imgsearch train DIR -o model.safetensors`: train an autoencoder.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use imgsearch::model::head::HeadConfig;
use imgsearch::model::{self, ArchConfig, EpochReport, ModelInfo, TrainConfig, TrainSet};
use imgsearch::prepare::InputShape;
use imgsearch::report::Failure;

use crate::cli::args::{DecodeArgs, LossArg, NormalizationArg, PrepArg};
use crate::cli::output::{self, Outcome, Table};
use crate::cli::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// Folder of training images (searched recursively; any format imgsearch decodes).
    dir: PathBuf,
    /// Where to write the model (safetensors).
    #[arg(long, short)]
    out: PathBuf,
    /// Side of the square model input; images are resized to it.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// How a non-square image becomes the square input, recorded in the
    /// model file so every query is prepared the same way.
    #[arg(long, value_enum, default_value_t = PrepArg::Crop)]
    prep: PrepArg,
    /// Augment inputs: random crops (75-100% of the side) and flips on input
    /// and target, brightness/contrast/saturation jitter (±20%) on the input
    /// only, so the decoder rebuilds the un-jittered image.
    #[arg(long)]
    augment: bool,
    /// Weight of a view-contrast term beside the reconstruction loss (with
    /// --augment): two augmented views of each image are pooled from the
    /// last encoder block and pulled together, views of other images pushed
    /// apart (SimCLR's NT-Xent, temperature 0.2). Costs two views per image.
    #[arg(long, default_value_t = 0.0, requires = "augment")]
    contrastive: f64,
    /// Embed with a head that pools these encoder blocks' feature maps
    /// (1-based, comma-separated; mean and std of each channel over
    /// positions), projected by PCA fitted on the training images. Without
    /// it the bottleneck latent is the embedding.
    #[arg(long, value_delimiter = ',')]
    pool: Option<Vec<usize>>,
    /// Length of the head's embedding (with --pool).
    #[arg(long, default_value_t = 128, requires = "pool")]
    embedding: usize,
    /// Whitening of the head's PCA axes (with --pool): each axis divided by
    /// variance^w; 0 keeps PCA's scale, 0.5 whitens fully.
    #[arg(long, default_value_t = 0.25, requires = "pool")]
    whitening: f64,
    /// Also pool each cell of a grid this many cells across (with --pool):
    /// a coarse layout beside the global statistics; 1 pools globally only.
    #[arg(long, default_value_t = 1, requires = "pool")]
    grid: usize,
    /// Also pool these blocks' channel co-occurrences (with --pool; 1-based,
    /// comma-separated): the Gram matrix of the feature map, a texture
    /// description. A block of C channels adds C(C+1)/2 values.
    #[arg(long, value_delimiter = ',', requires = "pool")]
    gram: Vec<usize>,
    /// 1 (grayscale) or 3 (RGB); images are converted.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Latent (embedding) length, 8 to 128 is typical.
    #[arg(long, default_value_t = 32)]
    latent: usize,
    /// Encoder block widths, comma-separated (default: chosen from --size).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, value_enum, default_value_t = LossArg::Bce)]
    loss: LossArg,
    /// Train as a denoiser: Gaussian noise of this std-dev on inputs, clean targets.
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// Input normalization, recorded in the model file: `unit` (pixel / 255)
    /// or `gain` (also scaled to a fixed mean brightness, so exposure changes
    /// barely move embeddings; used for the `photos` default).
    #[arg(long, value_enum, default_value_t = NormalizationArg::Unit)]
    normalize: NormalizationArg,
    /// Share of images held out for validation (the best-validation epoch is kept).
    #[arg(long, default_value_t = 0.1)]
    val: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// What to record as the training data in the model header (default: the folder).
    #[arg(long)]
    data_name: Option<String>,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `train --json` prints; the table shows epochs as they end, then
/// the last line.
#[derive(Serialize)]
struct Trained {
    out: PathBuf,
    model: ModelInfo,
    history: Vec<EpochReport>,
    skipped: Vec<Failure>,
}

pub fn run(args: Args) -> Result<Outcome> {
    let mut arch = ArchConfig::for_input(args.size, args.channels, args.latent);
    if let Some(widths) = args.widths {
        arch.widths = widths;
    }
    if let Err(msg) = arch.validate() {
        bail!("invalid model shape: {msg}");
    }
    let shape = InputShape {
        size: args.size,
        channels: args.channels,
        prep: args.prep.into(),
    };
    let (data, failures) = {
        let bar = Bar::new();
        TrainSet::from_folder(&args.dir, shape, args.decode.limits(), &bar)
    };
    for f in &failures {
        eprintln!("skipped {}: {}", f.path.display(), f.reason);
    }
    if data.len() < 2 {
        bail!(
            "found {} usable images under {} (need at least 2)",
            data.len(),
            args.dir.display()
        );
    }
    let cfg = TrainConfig {
        arch,
        epochs: args.epochs,
        batch_size: args.batch,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        loss: args.loss.into(),
        noise: args.noise,
        normalization: args.normalize.into(),
        prep: args.prep.into(),
        augment: args.augment,
        contrastive: args.contrastive,
        head: args.pool.map(|layers| HeadConfig {
            layers,
            dim: args.embedding,
            whitening: args.whitening,
            grid: args.grid,
            gram: args.gram,
        }),
        validation_fraction: args.val,
        seed: args.seed,
    };
    let data_name = args
        .data_name
        .unwrap_or_else(|| args.dir.display().to_string());
    let json = args.json;
    if !json {
        eprintln!(
            "training on {} images ({} skipped): {}x{}x{} -> {} latent, widths {:?}, {} epochs",
            data.len(),
            failures.len(),
            cfg.arch.input_size,
            cfg.arch.input_size,
            cfg.arch.channels,
            cfg.arch.latent,
            cfg.arch.widths,
            cfg.epochs
        );
        output::print_with(|out| {
            writeln!(
                out,
                "{:>5}  {:>10}  {:>10}  {:>8}",
                "epoch", "train", "validation", "seconds"
            )
        })?;
    }
    let mut printed = Ok(());
    let trained = {
        let bar = Bar::new();
        model::train::train(&cfg, &data, &data_name, &bar, |epoch| {
            if !json && printed.is_ok() {
                printed = output::print_with(|out| epoch.table(out));
            }
        })?
    };
    printed?;
    trained
        .save(&args.out)
        .with_context(|| format!("saving {}", args.out.display()))?;
    let report = Trained {
        out: args.out,
        model: trained.info,
        history: trained.history,
        skipped: failures,
    };
    output::print(&report, json)?;
    Ok(if report.skipped.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

impl Table for EpochReport {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let mark = if self.best { " *" } else { "" };
        writeln!(
            out,
            "{:>5}  {:>10.6}  {:>10.6}  {:>8.1}{mark}",
            self.epoch, self.train_loss, self.validation_loss, self.seconds
        )
    }
}

impl Table for Trained {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let t = &self.model.training;
        writeln!(
            out,
            "saved {} (best epoch {}: train {:.6}, validation {:.6}; {:.1}s)",
            self.out.display(),
            t.best_epoch,
            t.train_loss,
            t.validation_loss,
            t.seconds
        )
    }
}
