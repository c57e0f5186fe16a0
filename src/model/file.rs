//! The model file: safetensors weights plus a metadata header that makes the
//! file self-describing (format, architecture, training record).
//!
//! Header keys (all strings, as safetensors requires):
//! - `format` = `imgsearch-autoencoder`
//! - `format_version` = `2` (version 1 files load too: they have no `prep`,
//!   which means squash, and no embedding head, which means the latent is
//!   the embedding)
//! - `model` = JSON of [`ModelInfo`]
//! - `weights_blake3` = blake3 (hex) of the tensor data that follows the
//!   header. Files written before it existed (the embedded defaults among
//!   them, whose bytes are their identity) have none and load unchecked; a
//!   file that has one and does not match is refused as damaged instead of
//!   embedding with flipped weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::autoencoder::{ArchConfig, Autoencoder};
use super::head::{Head, HeadConfig};
use crate::imageio::Prep;

pub const FORMAT_NAME: &str = "imgsearch-autoencoder";
pub const FORMAT_VERSION: u32 = 2;
/// Every version this build reads.
pub const READABLE_VERSIONS: [u32; 2] = [1, 2];
pub const ARCHITECTURE: &str = "conv-autoencoder-v1";

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: not a safetensors file: {message}")]
    NotSafetensors { origin: String, message: String },
    #[error("{origin}: no imgsearch header (metadata key `format` must be `{FORMAT_NAME}`); it was not written by `imgsearch train`")]
    MissingHeader { origin: String },
    #[error("{origin}: header says format `{found}`, expected `{FORMAT_NAME}`")]
    WrongFormat { origin: String, found: String },
    #[error("{origin}: format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion { origin: String, found: String },
    #[error(
        "{origin}: architecture `{found}` is not supported (this build knows `{ARCHITECTURE}`)"
    )]
    UnknownArchitecture { origin: String, found: String },
    #[error("{origin}: malformed `model` header: {message}")]
    BadHeader { origin: String, message: String },
    #[error("{origin}: weights do not match the header's architecture ({arch}): {message}")]
    WeightsMismatch {
        origin: String,
        arch: String,
        message: String,
    },
    #[error("{origin}: the weights are damaged (their checksum does not match the header's); copy or train the model again")]
    Damaged { origin: String },
    #[error("cannot write model file {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// How pixels become model input, recorded in the header so a model is
/// always fed the way it was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// pixel / 255.
    #[default]
    Unit,
    /// pixel / 255, then scaled so the image's mean is [`GAIN_MEAN`]
    /// (clamped at 1). Exposure changes then barely move the embedding,
    /// which is what near-duplicate search on photos wants; digits, whose
    /// ink coverage *is* the content, keep `Unit`.
    Gain,
}

/// The mean brightness `Gain` normalizes every image to.
pub const GAIN_MEAN: f32 = 0.45;

impl Normalization {
    /// The header's text for this normalization.
    pub fn header(self) -> &'static str {
        match self {
            Self::Unit => "unit: pixel / 255, planar CHW",
            Self::Gain => "gain: pixel / 255 scaled to mean 0.45 (clamped at 1), planar CHW",
        }
    }

    pub fn from_header(text: &str) -> Option<Self> {
        [Self::Unit, Self::Gain]
            .into_iter()
            .find(|n| n.header() == text)
    }

    /// Appends one planar image's model input values to `out`.
    pub fn extend(self, bytes: &[u8], out: &mut Vec<f32>) {
        let mean =
            bytes.iter().map(|&b| b as f32).sum::<f32>() / (bytes.len().max(1) as f32 * 255.0);
        let gain = self.gain(mean);
        out.extend(bytes.iter().map(|&b| (b as f32 / 255.0 * gain).min(1.0)));
    }

    /// The factor pixels in `[0, 1]` are multiplied by (then clamped at 1)
    /// for an image of this mean brightness.
    pub fn gain(self, mean: f32) -> f32 {
        match self {
            Self::Unit => 1.0,
            Self::Gain => GAIN_MEAN / mean.max(1.0 / 255.0),
        }
    }
}

/// Everything the header records about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub architecture: String,
    #[serde(flatten)]
    pub arch: ArchConfig,
    pub loss: String,
    pub normalization: String,
    /// How images are made square (absent before version 2: squash).
    #[serde(default)]
    pub prep: Prep,
    /// The embedding head; absent (before version 2, or trained without
    /// one), the bottleneck latent is the embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<HeadConfig>,
    pub training: TrainingRecord,
}

impl ModelInfo {
    /// The input normalization (validated when the file was loaded).
    pub fn input_normalization(&self) -> Normalization {
        Normalization::from_header(&self.normalization).unwrap_or_default()
    }

    /// Length of the vectors the model embeds images as.
    pub fn embedding_dim(&self) -> usize {
        self.embedding.as_ref().map_or(self.arch.latent, |h| h.dim)
    }
}

/// How the weights were obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// What it was trained on (folder name or a description).
    pub data: String,
    pub images: usize,
    pub epochs: usize,
    /// Epoch whose weights were kept (best validation loss), 1-based.
    pub best_epoch: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub noise: f64,
    /// Whether inputs were augmented (crops, flips, colour jitter).
    #[serde(default)]
    pub augment: bool,
    /// Weight of the view-contrast term (0: reconstruction only).
    #[serde(default)]
    pub contrastive: f64,
    pub validation_fraction: f64,
    pub seed: u64,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub seconds: f64,
}

/// A loaded model: network, header and the bytes' fingerprint.
pub struct LoadedModel {
    pub net: Autoencoder,
    pub head: Option<Head>,
    pub info: ModelInfo,
    /// Short blake3 hash of the file bytes, so an index can tell whether it
    /// was built with these exact weights.
    pub fingerprint: String,
}

/// Reads and validates a model file from disk.
pub fn load_file(path: &Path, device: &Device) -> Result<LoadedModel, ModelFileError> {
    let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes(bytes, &path.display().to_string(), device)
}

/// Reads the header only.
pub fn read_info(bytes: &[u8], origin: &str) -> Result<ModelInfo, ModelFileError> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        ModelFileError::NotSafetensors {
            origin: origin.to_string(),
            message: e.to_string(),
        }
    })?;
    let header = meta.metadata().clone().unwrap_or_default();
    let get = |k: &str| header.get(k).cloned();
    let origin_s = origin.to_string();
    match get("format") {
        None => return Err(ModelFileError::MissingHeader { origin: origin_s }),
        Some(f) if f != FORMAT_NAME => {
            return Err(ModelFileError::WrongFormat {
                origin: origin_s,
                found: f,
            })
        }
        Some(_) => {}
    }
    let version = get("format_version").unwrap_or_default();
    if !READABLE_VERSIONS.iter().any(|v| v.to_string() == version) {
        return Err(ModelFileError::UnsupportedVersion {
            origin: origin_s,
            found: version,
        });
    }
    let json = get("model").ok_or_else(|| ModelFileError::BadHeader {
        origin: origin_s.clone(),
        message: "missing `model` key".into(),
    })?;
    let info: ModelInfo = serde_json::from_str(&json).map_err(|e| ModelFileError::BadHeader {
        origin: origin_s.clone(),
        message: e.to_string(),
    })?;
    if Normalization::from_header(&info.normalization).is_none() {
        return Err(ModelFileError::BadHeader {
            origin: origin_s,
            message: format!("unknown normalization `{}`", info.normalization),
        });
    }
    if info.architecture != ARCHITECTURE {
        return Err(ModelFileError::UnknownArchitecture {
            origin: origin_s,
            found: info.architecture,
        });
    }
    let head_ok = info
        .embedding
        .as_ref()
        .map_or(Ok(()), |h| h.validate(&info.arch.widths));
    info.arch
        .validate()
        .and(head_ok)
        .map_err(|message| ModelFileError::BadHeader {
            origin: origin_s,
            message,
        })?;
    Ok(info)
}

/// Reads and validates a model from bytes (a file or the embedded defaults).
pub fn load_bytes(
    bytes: Vec<u8>,
    origin: &str,
    device: &Device,
) -> Result<LoadedModel, ModelFileError> {
    let info = read_info(&bytes, origin)?;
    verify_weights(&bytes, origin)?;
    let fingerprint = fingerprint(&bytes);
    let mismatch = |message: String| ModelFileError::WeightsMismatch {
        origin: origin.to_string(),
        arch: format!(
            "{}x{}x{} -> {}, widths {:?}",
            info.arch.input_size,
            info.arch.input_size,
            info.arch.channels,
            info.arch.latent,
            info.arch.widths
        ),
        message,
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| mismatch(e.to_string()))?;
    let expected = expected_tensor_names(&info);
    if let Some(extra) = tensors.keys().find(|k| !expected.contains(*k)) {
        return Err(mismatch(format!("unexpected tensor `{extra}`")));
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let net = Autoencoder::new(&info.arch, vb.clone()).map_err(|e| mismatch(e.to_string()))?;
    let head = info
        .embedding
        .as_ref()
        .map(|cfg| Head::new(cfg, &info.arch.widths, vb.pp(HEAD_PREFIX)))
        .transpose()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(LoadedModel {
        net,
        head,
        info,
        fingerprint,
    })
}

/// Header key of the tensor data's checksum.
const WEIGHTS_CHECKSUM: &str = "weights_blake3";

/// The tensor data of a safetensors file: what follows its 8-byte header
/// length and the header.
fn tensor_data(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    bytes.get(8usize.checked_add(usize::try_from(len).ok()?)?..)
}

/// Checks the weights against the header's checksum, when it has one.
fn verify_weights(bytes: &[u8], origin: &str) -> Result<(), ModelFileError> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        ModelFileError::NotSafetensors {
            origin: origin.to_string(),
            message: e.to_string(),
        }
    })?;
    let Some(expected) = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(WEIGHTS_CHECKSUM))
    else {
        return Ok(());
    };
    let actual = tensor_data(bytes).map(|data| blake3::hash(data).to_hex().to_string());
    if actual.as_deref() == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(ModelFileError::Damaged {
            origin: origin.to_string(),
        })
    }
}

/// Where the head's tensors live in the file.
pub const HEAD_PREFIX: &str = "head";

/// Names of every tensor a model with this header holds. Listed, not
/// found by building the network: a header may claim any shape, and
/// building one allocates it before the weights are compared with it.
fn expected_tensor_names(info: &ModelInfo) -> Vec<String> {
    let mut names = Autoencoder::tensor_names(&info.arch);
    if info.embedding.is_some() {
        names.extend(Head::TENSORS.map(|t| format!("{HEAD_PREFIX}.{t}")));
    }
    names
}

/// Writes weights and header as one safetensors file (atomically: a temporary
/// file renamed into place, so a crash never leaves a half-written model).
pub fn save(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    info: &ModelInfo,
) -> Result<(), ModelFileError> {
    let bytes = serialize(tensors, info).map_err(|message| ModelFileError::Write {
        path: path.to_path_buf(),
        message,
    })?;
    let write_err = |e: std::io::Error| ModelFileError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_err)?;
    }
    crate::fsutil::write_bytes_atomically(path, &bytes).map_err(write_err)
}

/// The file's bytes, for saving or embedding.
pub fn serialize(tensors: &HashMap<String, Tensor>, info: &ModelInfo) -> Result<Vec<u8>, String> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut buffers = Vec::with_capacity(names.len());
    for name in &names {
        let t = &tensors[*name];
        let values = t
            .flatten_all()
            .and_then(|f| f.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.to_string(), t.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut header = HashMap::new();
    header.insert("format".to_string(), FORMAT_NAME.to_string());
    header.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    header.insert(
        "model".to_string(),
        serde_json::to_string(info).map_err(|e| e.to_string())?,
    );
    // The header cannot hold a checksum of bytes laid out after it until
    // they are laid out: serialize, hash the data, serialize with the hash
    // (the metadata does not move the data, which the check below ensures).
    let unsummed = safetensors::tensor::serialize(views.clone(), Some(header.clone()))
        .map_err(|e| e.to_string())?;
    let sum = blake3::hash(tensor_data(&unsummed).expect("just serialized"))
        .to_hex()
        .to_string();
    header.insert(WEIGHTS_CHECKSUM.to_string(), sum.clone());
    let bytes = safetensors::tensor::serialize(views, Some(header)).map_err(|e| e.to_string())?;
    if tensor_data(&bytes).map(|d| blake3::hash(d).to_hex().to_string()) != Some(sum) {
        return Err("the tensor data moved when its checksum was added".into());
    }
    Ok(bytes)
}

/// The first 16 hex digits of the blake3 hash of the file's bytes.
pub fn fingerprint(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gain_normalization_cancels_exposure_and_round_trips_its_header() {
        let img: Vec<u8> = (0..48).map(|i| (i * 4 + 20) as u8).collect();
        let darker: Vec<u8> = img
            .iter()
            .map(|&b| (b as f32 * 0.8).round() as u8)
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Normalization::Gain.extend(&img, &mut a);
        Normalization::Gain.extend(&darker, &mut b);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - GAIN_MEAN).abs() < 1e-3, "mean {mean}");
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 0.01, "a 20% darker copy differs by {worst}");
        let mut unit = Vec::new();
        Normalization::Unit.extend(&img, &mut unit);
        assert_eq!(unit[1], 24.0 / 255.0);
        for n in [Normalization::Unit, Normalization::Gain] {
            assert_eq!(Normalization::from_header(n.header()), Some(n));
        }
        assert_eq!(Normalization::from_header("unit"), None);
    }
}
