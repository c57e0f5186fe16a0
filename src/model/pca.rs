//! Principal component analysis, for the embedding head's projection (fitted
//! when a model is trained), the PCA map of a collection, and the
//! benchmarks' reference rows.

use candle_core::{Device, Tensor};

/// The mean and the leading principal axes of a set of vectors.
pub struct Pca {
    /// Mean of the data, `dim` values.
    pub mean: Vec<f32>,
    /// `dim × k`, row-major: column `j` is the `j`-th axis.
    pub components: Vec<f32>,
    /// Variance of the data along each axis, largest first.
    pub variances: Vec<f32>,
    /// Total variance of the data (the covariance's trace), so
    /// `variances[j] / total_variance` is the share axis `j` explains.
    pub total_variance: f32,
    pub dim: usize,
    pub k: usize,
}

impl Pca {
    /// Fits `k` axes to `data` (`n × dim`, row-major) by subspace iteration
    /// on the covariance matrix, from a fixed start so the result is the same
    /// every run.
    pub fn fit(data: &[f32], dim: usize, k: usize) -> candle_core::Result<Self> {
        assert!(k <= dim && dim > 0 && data.len() % dim == 0);
        let dev = Device::Cpu;
        let n = data.len() / dim;
        let x = Tensor::from_slice(data, (n, dim), &dev)?;
        let mean = x.mean_keepdim(0)?;
        let centered = x.broadcast_sub(&mean)?;
        let cov = (centered.t()?.matmul(&centered)? / n.max(1) as f64)?;
        let start: Vec<f32> = (0..dim * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
            .collect();
        let mut q = Tensor::from_vec(start, (dim, k), &dev)?;
        for _ in 0..ROUNDS {
            q = orthonormalize(&cov.matmul(&q)?)?;
        }
        // Rayleigh quotients: the variance along each converged axis.
        let variances = (q.t()?.matmul(&cov)?.t()? * &q)?.sum(0)?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| variances[b].total_cmp(&variances[a]));
        let columns = q.to_vec2::<f32>()?;
        let components = columns
            .iter()
            .flat_map(|row| order.iter().map(move |&j| row[j]))
            .collect();
        let covariance = cov.to_vec2::<f32>()?;
        let total_variance = (0..dim).map(|i| covariance[i][i]).sum();
        Ok(Self {
            mean: mean.flatten_all()?.to_vec1()?,
            total_variance,
            components,
            variances: order.iter().map(|&j| variances[j].max(0.0)).collect(),
            dim,
            k,
        })
    }

    /// Projects `data` (`n × dim`) onto the axes: `n × k`.
    pub fn project(&self, data: &[f32]) -> candle_core::Result<Vec<f32>> {
        let dev = Device::Cpu;
        let x = Tensor::from_slice(data, (data.len() / self.dim, self.dim), &dev)?;
        let mean = Tensor::from_slice(&self.mean, (1, self.dim), &dev)?;
        let axes = Tensor::from_slice(&self.components, (self.dim, self.k), &dev)?;
        x.broadcast_sub(&mean)?
            .matmul(&axes)?
            .flatten_all()?
            .to_vec1()
    }
}

impl Pca {
    /// The vector at `coords` along the first `coords.len()` axes: the
    /// inverse of [`Pca::project`] on the axes' span.
    pub fn unproject(&self, coords: &[f32]) -> Vec<f32> {
        let mut v = self.mean.clone();
        for (j, &c) in coords.iter().enumerate().take(self.k) {
            for (i, x) in v.iter_mut().enumerate() {
                *x += c * self.components[i * self.k + j];
            }
        }
        v
    }
}

/// Rounds of multiply + re-orthonormalize; enough for the leading axes to
/// settle on the feature sets imgsearch fits (hundreds of dimensions).
const ROUNDS: usize = 100;

/// Modified Gram-Schmidt on the columns, in f64.
fn orthonormalize(m: &Tensor) -> candle_core::Result<Tensor> {
    let (dim, k) = m.dims2()?;
    let rows = m.to_vec2::<f32>()?;
    let mut cols: Vec<Vec<f64>> = (0..k)
        .map(|j| rows.iter().map(|r| r[j] as f64).collect())
        .collect();
    for j in 0..k {
        let (done, rest) = cols.split_at_mut(j);
        let col = &mut rest[0];
        for prev in done.iter() {
            let dot: f64 = prev.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(prev).for_each(|(v, p)| *v -= dot * p);
        }
        let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        col.iter_mut().for_each(|v| *v /= norm);
    }
    let flat: Vec<f32> = (0..dim)
        .flat_map(|r| cols.iter().map(move |c| c[r] as f32))
        .collect();
    Tensor::from_vec(flat, (dim, k), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_axis_of_largest_variance_and_its_variance() {
        // Points along (3, 4)/5 with spread 10, plus small noise across it.
        let data: Vec<f32> = (0..200)
            .flat_map(|i| {
                let t = (i as f32 - 100.0) / 10.0;
                let side = if i % 2 == 0 { 0.1 } else { -0.1 };
                [t * 0.6 - side * 0.8, t * 0.8 + side * 0.6]
            })
            .collect();
        let pca = Pca::fit(&data, 2, 2).unwrap();
        let axis = [pca.components[0], pca.components[2]];
        assert!((axis[0].abs() - 0.6).abs() < 1e-3, "{axis:?}");
        assert!((axis[1].abs() - 0.8).abs() < 1e-3, "{axis:?}");
        assert!(
            pca.variances[0] > 30.0 && pca.variances[1] < 0.02,
            "{:?}",
            pca.variances
        );
        let projected = pca.project(&data[..2]).unwrap();
        assert!((projected[0].abs() - 10.0).abs() < 0.1, "{projected:?}");
        let share = pca.variances[0] / pca.total_variance;
        assert!(share > 0.999 && share <= 1.0, "{share}");
        let back = pca.unproject(&projected);
        assert!((back[0] - data[0]).abs() < 1e-3 && (back[1] - data[1]).abs() < 1e-3);
    }
}
