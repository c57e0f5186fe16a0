//! The view-contrast term of `train --contrastive` (SimCLR's NT-Xent loss,
//! Chen et al. 2020): two augmented views of the same photo should pool to
//! nearby features, and views of different photos should not.
//!
//! Reconstruction alone teaches the encoder to keep whatever rebuilds the
//! pixels, and pooled statistics of such features sort photos no better than
//! untrained weights (bench/RESULTS.md, "Real photographs"). This term asks
//! the last block's pooled channels to be the same for a photo however it
//! is cropped, flipped or lit. The projector it is computed through exists
//! only during training and is not saved: SimCLR found that the features
//! *before* such a projector transfer best, and those are what the
//! embedding head pools.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// Temperature τ of the softmax over view similarities (SimCLR's 0.2 for
/// small batches).
pub const TEMPERATURE: f64 = 0.2;
/// Width of the projector's output.
pub const PROJECTION: usize = 128;

/// Two-layer MLP from the pooled last block to the space the loss compares in.
pub struct Projector {
    hidden: Linear,
    out: Linear,
}

impl Projector {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            hidden: candle_nn::linear(channels, channels, vb.pp("hidden"))?,
            out: candle_nn::linear(channels, PROJECTION, vb.pp("out"))?,
        })
    }
}

impl Module for Projector {
    /// `maps`: the encoder's last feature map `(n, c, h, w)`; pooled over
    /// positions first.
    fn forward(&self, maps: &Tensor) -> Result<Tensor> {
        maps.mean((2, 3))?
            .apply(&self.hidden)?
            .relu()?
            .apply(&self.out)
    }
}

/// NT-Xent over `2n` projections where row `i` and row `i + n` are two views
/// of one image: cross-entropy of each row's similarities (cosine / τ, self
/// excluded) against its partner.
pub fn nt_xent(projections: &Tensor) -> Result<Tensor> {
    let rows = projections.dim(0)?;
    if rows % 2 != 0 || rows < 4 {
        candle_core::bail!("NT-Xent needs an even number of views, at least 4, got {rows}");
    }
    let half = rows / 2;
    let norms = (projections.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    let unit = projections.broadcast_div(&norms)?;
    let similarity = (unit.matmul(&unit.t()?)? / TEMPERATURE)?;
    // A row's similarity to itself is 1/τ, larger than any partner's; push it
    // out of the softmax.
    let self_mask = (Tensor::eye(rows, DType::F32, projections.device())? * 1e4)?;
    let logits = (similarity - self_mask)?;
    let partners: Vec<u32> = (0..rows).map(|i| ((i + half) % rows) as u32).collect();
    let partners = Tensor::new(partners, projections.device())?;
    candle_nn::loss::cross_entropy(&logits, &partners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matching_views_score_lower_than_mismatched() {
        let dev = Device::Cpu;
        // Four distinct directions; the second half repeats them (perfect
        // views), or repeats them shifted by one (every partner wrong).
        let base = Tensor::new(
            &[
                [1f32, 0., 0., 0.],
                [0., 1., 0., 0.],
                [0., 0., 1., 0.],
                [0., 0., 0., 1.],
            ],
            &dev,
        )
        .unwrap();
        let shifted = Tensor::cat(
            &[
                &base.narrow(0, 1, 3).unwrap(),
                &base.narrow(0, 0, 1).unwrap(),
            ],
            0,
        )
        .unwrap();
        let good = nt_xent(&Tensor::cat(&[&base, &base], 0).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let bad = nt_xent(&Tensor::cat(&[&base, &shifted], 0).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Partner at cosine 1, the six others at 0: log(1 + 6 e^(-1/τ)).
        let expected = (1.0 + 6.0 * (-1.0 / TEMPERATURE).exp()).ln() as f32;
        assert!((good - expected).abs() < 1e-4, "perfect views: {good}");
        assert!(bad > 4.0, "wrong partners: {bad}");
        assert!(nt_xent(&base.narrow(0, 0, 3).unwrap()).is_err());
    }
}
