//! The embedding head: what turns an image's encoder feature maps into the
//! vector an index stores.
//!
//! The bottleneck latent has to remember *where* things are to rebuild the
//! image, which is what makes two photos of the same kind of thing far apart
//! when their contents sit in different places. The head instead pools each
//! chosen block's feature map over positions (the mean and the standard
//! deviation of every channel: how much of each learned pattern there is,
//! and how unevenly it is spread), takes the square root to damp the few
//! very strong channels, and projects the result onto principal axes fitted
//! on the training images, each axis scaled by `variance^-whitening` so no
//! handful of directions dominates distances. The vector is finally scaled to
//! unit length, so L2 distance ranks as cosine similarity does.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::pca::Pca;

/// Shape of an embedding head, recorded in the model header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Encoder blocks (1-based) whose feature maps are pooled.
    pub layers: Vec<usize>,
    /// Length of the embedding.
    pub dim: usize,
    /// Exponent of the variance each axis is divided by: 0 keeps PCA's
    /// scale, 0.5 is full whitening.
    pub whitening: f64,
    /// Cells per side of a grid whose cells' channel means are pooled too
    /// (a coarse layout: sky above, ground below); 1 pools globally only.
    #[serde(default = "one")]
    pub grid: usize,
    /// Encoder blocks (1-based) whose channel co-occurrences are pooled
    /// too: the mean over positions of every product of two channels (the
    /// Gram matrix, which describes texture), upper triangle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gram: Vec<usize>,
}

fn one() -> usize {
    1
}

impl HeadConfig {
    /// Pooled values per image for an encoder of these block widths.
    pub fn features(&self, widths: &[usize]) -> usize {
        let per_channel = 2 + if self.grid > 1 {
            self.grid * self.grid
        } else {
            0
        };
        let first: usize = self
            .layers
            .iter()
            .map(|&l| per_channel * widths[l - 1])
            .sum();
        let second: usize = self
            .gram
            .iter()
            .map(|&l| widths[l - 1] * (widths[l - 1] + 1) / 2)
            .sum();
        first + second
    }

    pub fn validate(&self, widths: &[usize]) -> std::result::Result<(), String> {
        let blocks = self.layers.iter().chain(&self.gram);
        if self.layers.is_empty() || blocks.clone().any(|&l| l == 0 || l > widths.len()) {
            return Err(format!(
                "head layers must name encoder blocks 1 to {}, got {:?}",
                widths.len(),
                blocks.collect::<Vec<_>>()
            ));
        }
        let features = self.features(widths);
        if self.dim == 0 || self.dim > features {
            return Err(format!(
                "embedding length must be 1 to {features} (the pooled features), not {}",
                self.dim
            ));
        }
        if !(1..=4).contains(&self.grid) {
            return Err(format!(
                "grid must be 1 to 4 cells per side, not {}",
                self.grid
            ));
        }
        if !(0.0..=0.5).contains(&self.whitening) {
            return Err(format!(
                "whitening must be between 0 and 0.5, not {}",
                self.whitening
            ));
        }
        Ok(())
    }
}

/// A fitted head: the pooled features' mean and the projection.
pub struct Head {
    cfg: HeadConfig,
    /// `1 × features`.
    mean: Tensor,
    /// `features × dim`, whitening folded in.
    projection: Tensor,
}

impl Head {
    /// The head's tensors, by name under its prefix.
    pub const TENSORS: [&'static str; 2] = ["mean", "projection"];

    pub fn new(cfg: &HeadConfig, widths: &[usize], vb: VarBuilder) -> Result<Self> {
        let features = cfg.features(widths);
        let [mean, projection] = Self::TENSORS;
        Ok(Self {
            cfg: cfg.clone(),
            mean: vb.get((1, features), mean)?,
            projection: vb.get((features, cfg.dim), projection)?,
        })
    }

    /// A head fitted to pooled features (`n × features`, row-major), as
    /// training fits it; for comparing head shapes without retraining.
    pub fn fitted(cfg: &HeadConfig, features: &[f32], n_features: usize) -> Result<Self> {
        let mut tensors = fit(cfg, features, n_features)?.into_iter();
        let mut next = || tensors.next().expect("mean and projection").1;
        let (mean, projection) = (next(), next());
        Ok(Self {
            cfg: cfg.clone(),
            mean,
            projection,
        })
    }

    /// Unit-length embeddings (`batch × dim`) from the encoder's maps.
    pub fn forward(&self, maps: &[Tensor]) -> Result<Tensor> {
        self.project(&pool(maps, &self.cfg)?)
    }

    /// Unit-length embeddings (`batch × dim`) from pooled features.
    pub fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        let embedding = pooled.broadcast_sub(&self.mean)?.matmul(&self.projection)?;
        let norm = embedding.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        embedding.broadcast_div(&(norm + 1e-12)?)
    }
}

/// Square roots of the mean and standard deviation over positions of each
/// channel of the chosen (1-based) maps, then of each grid cell's channel
/// means: `batch × features`.
pub fn pool(maps: &[Tensor], cfg: &HeadConfig) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(3 * cfg.layers.len());
    for &layer in &cfg.layers {
        let map = &maps[layer - 1];
        let flat = map.flatten_from(2)?;
        let mean = flat.mean(D::Minus1)?;
        let variance = (flat.sqr()?.mean(D::Minus1)? - mean.sqr()?)?.relu()?;
        parts.push(mean.sqrt()?);
        parts.push(variance.sqrt()?.sqrt()?);
        if cfg.grid > 1 {
            let (b, c, h, w) = map.dims4()?;
            let g = cfg.grid;
            let cells = map
                .reshape((b, c, g, h / g, g, w / g))?
                .mean(5)?
                .mean(3)?
                .flatten_from(1)?;
            parts.push(cells.sqrt()?);
        }
    }
    for &layer in &cfg.gram {
        let flat = maps[layer - 1].flatten_from(2)?;
        let (b, c, n) = flat.dims3()?;
        let gram = (flat.matmul(&flat.t()?)? / n as f64)?.reshape((b, c * c))?;
        let upper: Vec<u32> = (0..c)
            .flat_map(|i| (i..c).map(move |j| (i * c + j) as u32))
            .collect();
        let upper = Tensor::from_vec(upper, c * (c + 1) / 2, gram.device())?;
        parts.push(gram.index_select(&upper, 1)?.sqrt()?);
    }
    Tensor::cat(&parts, 1)
}

/// Fits a head's mean and projection to pooled features (`n × features`,
/// row-major). Returns the tensors under the names [`Head::new`] reads.
pub fn fit(
    cfg: &HeadConfig,
    features: &[f32],
    n_features: usize,
) -> Result<Vec<(&'static str, Tensor)>> {
    let pca = Pca::fit(features, n_features, cfg.dim)?;
    // A floor on the variance keeps near-empty axes from being blown up.
    let floor = pca.variances.first().copied().unwrap_or(1.0) * 1e-4;
    let scales: Vec<f32> = pca
        .variances
        .iter()
        .map(|&v| (v.max(floor) as f64).powf(-cfg.whitening) as f32)
        .collect();
    let projection: Vec<f32> = pca
        .components
        .chunks_exact(cfg.dim)
        .flat_map(|row| row.iter().zip(&scales).map(|(c, s)| c * s))
        .collect();
    let dev = candle_core::Device::Cpu;
    Ok(vec![
        ("mean", Tensor::from_vec(pca.mean, (1, n_features), &dev)?),
        (
            "projection",
            Tensor::from_vec(projection, (n_features, cfg.dim), &dev)?,
        ),
    ])
}
