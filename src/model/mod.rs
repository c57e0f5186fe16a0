//! The autoencoder, its file format, training, and the embedded defaults.
//!
//! [`Model`] is what the rest of imgsearch uses: load by name or path, then
//! `embed` (images → latents) or `reconstruct` (images → images + error).

pub mod augment;
pub mod autoencoder;
pub mod contrast;
pub mod file;
pub mod head;
pub mod pca;
pub mod train;

use std::path::Path;

use candle_core::{Device, Tensor};

pub use autoencoder::ArchConfig;
pub use file::{LoadedModel, ModelFileError, ModelInfo, Normalization};
pub use train::{EpochReport, Loss, TrainConfig, TrainSet, TrainedModel};

use crate::imageio::Pixels;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/default_models.rs"));
}

/// The default model used when none is named.
pub const DEFAULT_MODEL: &str = "photos";

/// Images per forward pass: large enough for efficient GEMMs, small enough
/// to keep memory flat. At 64, ingesting photos with `photos` runs as fast
/// as at 256 and peaks at about 105 MB instead of 255 (`bench/ingest.sh`).
pub const BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    File(#[from] ModelFileError),
    #[error("default model `{0}` is not embedded in this build (assets/models/{0}.safetensors was absent when it was compiled); run scripts/train-default-models.sh and rebuild")]
    NotEmbedded(String),
    #[error(
        "no model named `{spec}` and no such file; the defaults are {}",
        names()
    )]
    Unknown { spec: String },
    #[error(
        "image is {found_size}x{found_size}x{found_c}, the model wants {size}x{size}x{channels}"
    )]
    Shape {
        found_size: usize,
        found_c: usize,
        size: usize,
        channels: usize,
    },
    #[error("a latent of {found} floats, the model's decoder reads {latent}")]
    LatentSize { found: usize, latent: usize },
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

fn names() -> String {
    embedded::NAMES.join(", ")
}

/// Defaults that were replaced under their name: (old name, name the old
/// weights are built in under now). An index stamped with the old name and
/// the old weights' fingerprint opens with the renamed model.
pub const RENAMED_DEFAULTS: &[(&str, &str)] = &[("photos", "photos-cifar32")];

/// The name a default model is built in under now, when `name` with this
/// `fingerprint` is a default that has been replaced.
pub fn renamed_default(name: &str, fingerprint: &str) -> Option<&'static str> {
    RENAMED_DEFAULTS
        .iter()
        .filter(|(old, _)| *old == name)
        .map(|(_, new)| *new)
        .find(|new| {
            embedded::EMBEDDED
                .iter()
                .any(|(n, bytes)| n == new && file::fingerprint(bytes) == fingerprint)
        })
}

/// Names of the default models and whether each is embedded in this build.
pub fn default_models() -> Vec<(&'static str, bool)> {
    embedded::NAMES
        .iter()
        .map(|n| (*n, embedded::EMBEDDED.iter().any(|(e, _)| e == n)))
        .collect()
}

/// A loaded autoencoder ready for inference on the CPU.
pub struct Model {
    /// The default's name, or the file path it was loaded from.
    pub name: String,
    pub info: ModelInfo,
    /// Short hash of the model file's bytes.
    pub fingerprint: String,
    net: autoencoder::Autoencoder,
    head: Option<head::Head>,
    device: Device,
}

impl Model {
    /// Loads a default model by name, or a model file by path. A name wins
    /// over a file of the same name in the working directory only if the
    /// name has no path separator and no extension.
    pub fn load(spec: &str) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let looks_like_name = !spec.contains(['/', '\\', '.']);
        if looks_like_name && embedded::NAMES.contains(&spec) {
            let bytes = embedded::EMBEDDED
                .iter()
                .find(|(n, _)| *n == spec)
                .map(|(_, b)| *b)
                .ok_or_else(|| ModelError::NotEmbedded(spec.to_string()))?;
            let loaded =
                file::load_bytes(bytes.to_vec(), &format!("embedded model `{spec}`"), &device)?;
            return Ok(Self::from_loaded(spec.to_string(), loaded, device));
        }
        let path = Path::new(spec);
        if !path.exists() {
            return Err(ModelError::Unknown {
                spec: spec.to_string(),
            });
        }
        let loaded = file::load_file(path, &device)?;
        Ok(Self::from_loaded(spec.to_string(), loaded, device))
    }

    /// Loads a model held in memory (`origin` names it in messages).
    pub fn from_bytes(bytes: Vec<u8>, origin: &str) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let loaded = file::load_bytes(bytes, origin, &device)?;
        Ok(Self::from_loaded(origin.to_string(), loaded, device))
    }

    fn from_loaded(name: String, loaded: LoadedModel, device: Device) -> Self {
        Self {
            name,
            info: loaded.info,
            fingerprint: loaded.fingerprint,
            net: loaded.net,
            head: loaded.head,
            device,
        }
    }

    pub fn input_size(&self) -> usize {
        self.info.arch.input_size
    }

    pub fn channels(&self) -> usize {
        self.info.arch.channels
    }

    /// The shape images are prepared to ([`crate::prepare`]).
    pub fn input_shape(&self) -> crate::prepare::InputShape {
        crate::prepare::InputShape {
            size: self.input_size(),
            channels: self.channels(),
            prep: self.info.prep,
        }
    }

    /// Length of the bottleneck latent the decoder rebuilds images from.
    pub fn latent_dim(&self) -> usize {
        self.info.arch.latent
    }

    /// Whether the embeddings an index stores are the decoder's latents
    /// (no head), so that any point among them can be decoded.
    pub fn embeds_latents(&self) -> bool {
        self.head.is_none()
    }

    /// Length of the embeddings an index stores: the head's output, or the
    /// latent for a model without a head.
    pub fn embedding_dim(&self) -> usize {
        self.info.embedding_dim()
    }

    /// Embeddings of the images, in order.
    pub fn embed(&self, images: &[Pixels]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(BATCH) {
            let inputs = self.to_tensor(chunk)?;
            let embeddings = match &self.head {
                Some(head) => head.forward(&self.net.encoder.maps(&inputs)?)?,
                None => inputs.apply(&self.net.encoder)?,
            };
            out.extend(embeddings.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// The encoder's features pooled the way `head` says ([`head::pool`]),
    /// `images × features` row-major: what a head projects.
    pub fn pooled(
        &self,
        images: &[Pixels],
        head: &head::HeadConfig,
    ) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::new();
        for chunk in images.chunks(BATCH) {
            let maps = self.net.encoder.maps(&self.to_tensor(chunk)?)?;
            out.extend(head::pool(&maps, head)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Bottleneck latents of the images, in order (what the decoder reads).
    pub fn latents(&self, images: &[Pixels]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(BATCH) {
            let latents = self.to_tensor(chunk)?.apply(&self.net.encoder)?;
            out.extend(latents.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// Embedding and reconstruction error (mean squared, pixels in
    /// `[0, 1]`) of each image, in one encoder pass.
    pub fn embed_and_score(&self, images: &[Pixels]) -> Result<Vec<(Vec<f32>, f32)>, ModelError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(BATCH) {
            let (embeddings, _, errors) = self.forward_scored(chunk)?;
            out.extend(embeddings.to_vec2::<f32>()?.into_iter().zip(errors));
        }
        Ok(out)
    }

    /// Reconstructions of the images and each one's mean squared error
    /// (pixels in `[0, 1]`).
    pub fn reconstruct(&self, images: &[Pixels]) -> Result<Vec<(Pixels, f32)>, ModelError> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(BATCH) {
            let (_, recon, errors) = self.forward_scored(chunk)?;
            out.extend(self.to_pixels(&recon)?.into_iter().zip(errors));
        }
        Ok(out)
    }

    /// What the decoder makes of bottleneck latents ([`Model::latents`]),
    /// in order: any point of the latent space is an image.
    pub fn decode(&self, latents: &[Vec<f32>]) -> Result<Vec<Pixels>, ModelError> {
        let dim = self.latent_dim();
        let mut out = Vec::with_capacity(latents.len());
        for chunk in latents.chunks(BATCH) {
            if let Some(bad) = chunk.iter().find(|l| l.len() != dim) {
                return Err(ModelError::LatentSize {
                    found: bad.len(),
                    latent: dim,
                });
            }
            let values: Vec<f32> = chunk.concat();
            let latents = Tensor::from_vec(values, (chunk.len(), dim), &self.device)?;
            let recon = candle_nn::ops::sigmoid(&latents.apply(&self.net.decoder)?)?;
            out.extend(self.to_pixels(&recon)?);
        }
        Ok(out)
    }

    /// Decoder output in `[0, 1]` (`n × channels × size × size`) as bytes.
    fn to_pixels(&self, recon: &Tensor) -> Result<Vec<Pixels>, ModelError> {
        let rows = (recon * 255.0)?
            .round()?
            .clamp(0.0, 255.0)?
            .flatten_from(1)?
            .to_vec2::<f32>()?;
        Ok(rows
            .into_iter()
            .map(|row| Pixels {
                size: self.input_size(),
                channels: self.channels(),
                data: row.into_iter().map(|v| v as u8).collect(),
            })
            .collect())
    }

    /// Reconstructions of values already in model-input form: `n` images of
    /// `channels × size × size` floats each, laid out as [`Model::embed`]'s
    /// input would be after normalization. Returns the same layout, in
    /// `[0, 1]`. The restoration commands (denoise, inpaint) work here, in
    /// floats, so iterating does not round to bytes each pass.
    pub fn reconstruct_values(&self, values: &[f32]) -> Result<Vec<f32>, ModelError> {
        let (size, channels) = (self.input_size(), self.channels());
        let per = size * size * channels;
        assert_eq!(values.len() % per, 0, "whole images only");
        let mut out = Vec::with_capacity(values.len());
        for chunk in values.chunks(BATCH * per) {
            let n = chunk.len() / per;
            let inputs = Tensor::from_slice(chunk, (n, channels, size, size), &self.device)?;
            let recon = candle_nn::ops::sigmoid(
                &inputs.apply(&self.net.encoder)?.apply(&self.net.decoder)?,
            )?;
            out.extend(recon.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Whether the model was trained as a denoiser (`train --noise`), and
    /// at what noise level.
    pub fn denoising_sigma(&self) -> Option<f64> {
        Some(self.info.training.noise).filter(|&s| s > 0.0)
    }

    /// One batch through encoder and decoder: embeddings, reconstruction
    /// in `[0, 1]`, and each image's mean squared reconstruction error.
    fn forward_scored(&self, images: &[Pixels]) -> Result<(Tensor, Tensor, Vec<f32>), ModelError> {
        let inputs = self.to_tensor(images)?;
        let (maps, latents) = self.net.encoder.maps_and_latent(&inputs)?;
        let recon = candle_nn::ops::sigmoid(&latents.apply(&self.net.decoder)?)?;
        let errors = (&recon - &inputs)?
            .sqr()?
            .flatten_from(1)?
            .mean(1)?
            .to_vec1::<f32>()?;
        let embeddings = match &self.head {
            Some(head) => head.forward(&maps)?,
            None => latents,
        };
        Ok((embeddings, recon, errors))
    }

    fn to_tensor(&self, images: &[Pixels]) -> Result<Tensor, ModelError> {
        let (size, channels) = (self.input_size(), self.channels());
        let mut values = Vec::with_capacity(images.len() * size * size * channels);
        for px in images {
            if px.size != size || px.channels != channels {
                return Err(ModelError::Shape {
                    found_size: px.size,
                    found_c: px.channels,
                    size,
                    channels,
                });
            }
            self.info
                .input_normalization()
                .extend(&px.data, &mut values);
        }
        Ok(Tensor::from_vec(
            values,
            (images.len(), channels, size, size),
            &self.device,
        )?)
    }
}
