//! Training: AdamW on binary cross-entropy (or MSE), optional input noise
//! (denoising), a held-out validation split, best-validation weights kept.
//!
//! Deterministic for a fixed seed: candle's CPU RNG cannot be seeded, so
//! initial weights, shuffling and noise all come from one ChaCha stream.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::augment::Draw;
use super::autoencoder::{ArchConfig, Autoencoder};
use super::contrast::{self, Projector};
use super::file::{
    self, ModelFileError, ModelInfo, Normalization, TrainingRecord, ARCHITECTURE, HEAD_PREFIX,
};
use super::head::{self, HeadConfig};
use crate::prepare::{self, InputShape, Prep};
use crate::progress::Progress;
use crate::report::Failure;
use crate::walk::Walker;

/// Reconstruction loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Binary cross-entropy on logits (pixels read as probabilities).
    Bce,
    /// Mean squared error on sigmoid outputs.
    Mse,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::Bce => "bce",
            Loss::Mse => "mse",
        }
    }

    /// Mean loss of `logits` against `targets` in `[0, 1]`.
    pub fn compute(self, logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            // Stable on logits: relu(x) - x*t + log(1 + exp(-|x|)). candle's
            // sigmoid-then-log form gives NaN once outputs saturate.
            Loss::Bce => {
                let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
                ((logits.relu()? - (logits * targets)?)? + softplus_neg_abs)?.mean_all()
            }
            Loss::Mse => candle_nn::ops::sigmoid(logits)?
                .sub(targets)?
                .sqr()?
                .mean_all(),
        }
    }
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub arch: ArchConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub loss: Loss,
    /// Std-dev of Gaussian noise added to inputs (targets stay clean).
    pub noise: f64,
    /// How pixels become input (and reconstruction targets).
    pub normalization: Normalization,
    /// How images were made square; recorded so queries match.
    pub prep: Prep,
    /// Random crops, flips and colour jitter on the inputs ([`super::augment`]).
    pub augment: bool,
    /// Weight of the view-contrast term ([`super::contrast`]) beside the
    /// reconstruction loss; 0 trains on reconstruction alone. Needs
    /// `augment`: each image is seen as two augmented views per batch.
    pub contrastive: f64,
    /// The embedding head to fit after training; `None` embeds with the latent.
    pub head: Option<HeadConfig>,
    pub validation_fraction: f64,
    pub seed: u64,
}

/// A set of equally shaped images, planar bytes back to back.
pub struct TrainSet {
    pub size: usize,
    pub channels: usize,
    pixels: Vec<u8>,
}

impl TrainSet {
    pub fn new(size: usize, channels: usize) -> Self {
        Self {
            size,
            channels,
            pixels: Vec::new(),
        }
    }

    pub fn push(&mut self, planar: &[u8]) {
        assert_eq!(
            planar.len(),
            self.image_len(),
            "image shape differs from the set's"
        );
        self.pixels.extend_from_slice(planar);
    }

    pub fn image_len(&self) -> usize {
        self.size * self.size * self.channels
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Decodes every image under `dir` (in parallel) to the given shape.
    /// Files that cannot be read or decoded are returned, not fatal.
    pub fn from_folder(
        dir: &std::path::Path,
        shape: InputShape,
        limits: crate::imageio::DecodeLimits,
        progress: &dyn Progress,
    ) -> (Self, Vec<Failure>) {
        use rayon::prelude::*;
        progress.stage("images read", None);
        let (files, walk_errors) = Walker::new().collect(dir, progress);
        let mut failures: Vec<Failure> = walk_errors
            .into_iter()
            .map(|e| Failure::new(&e.path, e.error))
            .collect();
        let decoded: Vec<_> = files
            .par_iter()
            .map(|p| {
                let prepared = prepare::file(p, shape, limits);
                progress.advance(1);
                prepared
            })
            .collect();
        let mut set = Self::new(shape.size, shape.channels);
        for (path, result) in files.iter().zip(decoded) {
            match result {
                Ok((_, image)) => set.push(&image.pixels.data),
                Err(e) => failures.push(Failure::new(path, e.reason())),
            }
        }
        (set, failures)
    }

    fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub seconds: f64,
    /// Whether this epoch has the best validation loss so far (its weights are kept).
    pub best: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid model shape: {0}")]
    Arch(String),
    #[error("need at least 2 training images, found {0}")]
    TooFew(usize),
    #[error(
        "training images are {found}x{found}x{found_c}, the model wants {want}x{want}x{want_c}"
    )]
    Shape {
        found: usize,
        found_c: usize,
        want: usize,
        want_c: usize,
    },
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("loss became {0} at epoch {1}; lower the learning rate")]
    Diverged(f64, usize),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A trained network's weights and header, ready to save.
pub struct TrainedModel {
    pub tensors: HashMap<String, Tensor>,
    pub info: ModelInfo,
    pub history: Vec<EpochReport>,
}

impl TrainedModel {
    pub fn save(&self, path: &std::path::Path) -> Result<(), ModelFileError> {
        file::save(path, &self.tensors, &self.info)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        file::serialize(&self.tensors, &self.info)
    }
}

/// Trains an autoencoder on `data`. `data_name` is recorded in the header.
/// Each epoch is a `progress` stage counting batches (with the running loss
/// as its message); `on_epoch` hears each epoch's result as it ends.
pub fn train(
    cfg: &TrainConfig,
    data: &TrainSet,
    data_name: &str,
    progress: &dyn Progress,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<TrainedModel, TrainError> {
    cfg.arch.validate().map_err(TrainError::Arch)?;
    if let Some(head) = &cfg.head {
        head.validate(&cfg.arch.widths).map_err(TrainError::Arch)?;
    }
    if data.size != cfg.arch.input_size || data.channels != cfg.arch.channels {
        return Err(TrainError::Shape {
            found: data.size,
            found_c: data.channels,
            want: cfg.arch.input_size,
            want_c: cfg.arch.channels,
        });
    }
    if data.len() < 2 {
        return Err(TrainError::TooFew(data.len()));
    }
    if !(0.0..1.0).contains(&cfg.validation_fraction) || cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(TrainError::Setting(
            "need 0 <= validation fraction < 1, epochs >= 1 and batch >= 1".into(),
        ));
    }
    if !(cfg.contrastive >= 0.0 && cfg.contrastive.is_finite())
        || (cfg.contrastive > 0.0 && (!cfg.augment || cfg.batch_size < 2))
    {
        return Err(TrainError::Setting(
            "the contrastive weight must be >= 0, and above 0 it needs augmentation and a batch of at least 2".into(),
        ));
    }
    let started = Instant::now();
    let device = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);

    let varmap = VarMap::new();
    let net = Autoencoder::new(
        &cfg.arch,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    init_weights(&varmap, &mut rng)?;
    // The contrast term's projector trains beside the network but is not
    // part of the model: its own VarMap, never saved.
    let projector_vars = VarMap::new();
    let projector = if cfg.contrastive > 0.0 {
        let top = *cfg.arch.widths.last().expect("validated: widths not empty");
        let projector = Projector::new(
            top,
            VarBuilder::from_varmap(&projector_vars, DType::F32, &device),
        )?;
        init_weights(&projector_vars, &mut rng)?;
        Some(projector)
    } else {
        None
    };

    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut rng);
    let n_val = ((data.len() as f64) * cfg.validation_fraction).round() as usize;
    let n_val = n_val.min(data.len() - 1);
    let (val_idx, train_idx) = order.split_at(n_val);
    let mut train_idx = train_idx.to_vec();
    // With no validation split the training loss picks the best epoch.
    let val_seed: u64 = rng.random();

    let mut opt = candle_nn::AdamW::new(
        [varmap.all_vars(), projector_vars.all_vars()].concat(),
        candle_nn::ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;

    // Cosine decay from the base rate to zero over all steps: large steps
    // early, fine ones at the end, and no schedule to tune.
    let total_steps = (cfg.epochs * train_idx.len().div_ceil(cfg.batch_size)) as f64;
    let mut step = 0usize;
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut best: Option<(f64, usize, HashMap<String, Tensor>)> = None;
    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        train_idx.shuffle(&mut rng);
        let batches = train_idx.len().div_ceil(cfg.batch_size);
        progress.stage(&format!("batches of epoch {epoch}"), Some(batches as u64));
        let (mut sum, mut count) = (0.0, 0usize);
        for chunk in train_idx.chunks(cfg.batch_size) {
            let done = step as f64 / total_steps;
            opt.set_learning_rate(
                cfg.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
            );
            step += 1;
            let loss = match &projector {
                None => {
                    let (inputs, targets) =
                        make_batch(data, chunk, cfg, cfg.augment, &mut rng, &device)?;
                    cfg.loss.compute(&net.forward_logits(&inputs)?, &targets)?
                }
                Some(projector) => {
                    // Every image twice, each with its own draw: rows i and
                    // i + n are two views of one photo, both rebuilt.
                    let views = [chunk, chunk].concat();
                    let (inputs, targets) = make_batch(data, &views, cfg, true, &mut rng, &device)?;
                    let (maps, latent) = net.encoder.maps_and_latent(&inputs)?;
                    let rebuilt = cfg.loss.compute(&latent.apply(&net.decoder)?, &targets)?;
                    let last = maps.last().expect("validated: at least one block");
                    let contrast = contrast::nt_xent(&last.apply(projector)?)?;
                    (rebuilt + (contrast * cfg.contrastive)?)?
                }
            };
            opt.backward_step(&loss)?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(TrainError::Diverged(value, epoch));
            }
            sum += value * chunk.len() as f64;
            count += chunk.len();
            let rate = count as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            progress.message(&format!("loss {value:.5}, {rate:.0} images/s"));
            progress.advance(1);
        }
        let train_loss = sum / count as f64;
        let validation_loss = if val_idx.is_empty() {
            train_loss
        } else {
            let mut val_rng = ChaCha8Rng::seed_from_u64(val_seed);
            evaluate(&net, cfg, data, val_idx, &mut val_rng, &device)?
        };
        let is_best = best.as_ref().is_none_or(|(b, _, _)| validation_loss < *b);
        if is_best {
            best = Some((validation_loss, epoch, snapshot(&varmap)?));
        }
        let report = EpochReport {
            epoch,
            train_loss,
            validation_loss,
            seconds: epoch_start.elapsed().as_secs_f64(),
            best: is_best,
        };
        on_epoch(&report);
        history.push(report);
    }

    let (validation_loss, best_epoch, mut tensors) = best.expect("at least one epoch ran");
    if let Some(head_cfg) = &cfg.head {
        let fitted = fit_head(cfg, head_cfg, &tensors, data, &train_idx, progress)?;
        tensors.extend(fitted);
    }
    let info = ModelInfo {
        architecture: ARCHITECTURE.to_string(),
        arch: cfg.arch.clone(),
        loss: cfg.loss.name().to_string(),
        normalization: cfg.normalization.header().to_string(),
        prep: cfg.prep,
        embedding: cfg.head.clone(),
        training: TrainingRecord {
            data: data_name.to_string(),
            images: data.len(),
            epochs: cfg.epochs,
            best_epoch,
            batch_size: cfg.batch_size,
            learning_rate: cfg.learning_rate,
            noise: cfg.noise,
            augment: cfg.augment,
            contrastive: cfg.contrastive,
            validation_fraction: cfg.validation_fraction,
            seed: cfg.seed,
            train_loss: history[best_epoch - 1].train_loss,
            validation_loss,
            seconds: started.elapsed().as_secs_f64(),
        },
    };
    Ok(TrainedModel {
        tensors,
        info,
        history,
    })
}

/// Mean loss over `indices`, in batches, with the same noise each call.
fn evaluate(
    net: &Autoencoder,
    cfg: &TrainConfig,
    data: &TrainSet,
    indices: &[usize],
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<f64, TrainError> {
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in indices.chunks(cfg.batch_size.max(256)) {
        let (inputs, targets) = make_batch(data, chunk, cfg, false, rng, device)?;
        let loss = cfg
            .loss
            .compute(&net.forward_logits(&inputs)?.detach(), &targets)?;
        sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        count += chunk.len();
    }
    Ok(sum / count as f64)
}

/// Fits the embedding head to the kept weights' pooled features of the
/// training images (un-augmented), in batches. Returns the head's tensors
/// under their names in the model file.
fn fit_head(
    cfg: &TrainConfig,
    head_cfg: &HeadConfig,
    tensors: &HashMap<String, Tensor>,
    data: &TrainSet,
    indices: &[usize],
    progress: &dyn Progress,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    let device = Device::Cpu;
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &device);
    let net = Autoencoder::new(&cfg.arch, vb)?;
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    let batch = cfg.batch_size.max(256);
    progress.stage(
        "images pooled for the embedding head",
        Some(sorted.len() as u64),
    );
    let mut features = Vec::new();
    for chunk in sorted.chunks(batch) {
        let mut values = Vec::with_capacity(chunk.len() * data.image_len());
        for &i in chunk {
            cfg.normalization.extend(data.image(i), &mut values);
        }
        let shape = (chunk.len(), data.channels, data.size, data.size);
        let inputs = Tensor::from_vec(values, shape, &device)?;
        let pooled = head::pool(&net.encoder.maps(&inputs)?, head_cfg)?;
        features.extend(pooled.flatten_all()?.to_vec1::<f32>()?);
        progress.advance(chunk.len() as u64);
    }
    let fitted = head::fit(head_cfg, &features, head_cfg.features(&cfg.arch.widths))?;
    Ok(fitted
        .into_iter()
        .map(|(name, t)| (format!("{HEAD_PREFIX}.{name}"), t))
        .collect())
}

/// Inputs and targets for the given images. Targets are the clean images
/// (reframed when augmenting); inputs add the lighting jitter (when
/// augmenting) and the noise (when `noise > 0`).
fn make_batch(
    data: &TrainSet,
    indices: &[usize],
    cfg: &TrainConfig,
    augment: bool,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let noise = cfg.noise;
    let shape = (indices.len(), data.channels, data.size, data.size);
    let per = data.image_len();
    let mut clean: Vec<f32> = Vec::with_capacity(indices.len() * per);
    for &i in indices {
        cfg.normalization.extend(data.image(i), &mut clean);
    }
    if !augment && noise <= 0.0 {
        let targets = Tensor::from_vec(clean, shape, device)?;
        return Ok((targets.clone(), targets));
    }
    let mut inputs = clean.clone();
    if augment {
        for (target, input) in clean
            .chunks_exact_mut(per)
            .zip(inputs.chunks_exact_mut(per))
        {
            let draw = Draw::new(rng);
            target.copy_from_slice(&draw.reframe(target, data.size, data.channels));
            input.copy_from_slice(&draw.relight(target, data.channels));
        }
    }
    if noise > 0.0 {
        for v in &mut inputs {
            *v = (*v + (noise * gaussian(rng)) as f32).clamp(0.0, 1.0);
        }
    }
    Ok((
        Tensor::from_vec(inputs, shape, device)?,
        Tensor::from_vec(clean, shape, device)?,
    ))
}

/// Standard normal sample (Box-Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Re-draws every weight from the seeded stream, in name order, with the
/// usual fan-in bound `1/sqrt(fan_in)` (PyTorch's default for conv and linear
/// layers); biases use their weight's bound.
fn init_weights(varmap: &VarMap, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let fan_in = |dims: &[usize]| -> usize { dims[1..].iter().product::<usize>().max(1) };
    for name in names {
        let var = &vars[name];
        let weight_dims = if let Some(layer) = name.strip_suffix(".bias") {
            vars.get(&format!("{layer}.weight"))
                .map(|w| w.dims().to_vec())
                .unwrap_or_else(|| vec![1, 1])
        } else {
            var.dims().to_vec()
        };
        let bound = 1.0 / (fan_in(&weight_dims) as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        var.set(&Tensor::from_vec(values, var.dims(), var.device())?)?;
    }
    Ok(())
}

fn snapshot(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let vars = varmap.data().lock().expect("varmap lock");
    vars.iter()
        .map(|(name, var): (&String, &Var)| Ok((name.clone(), var.as_tensor().copy()?)))
        .collect()
}
