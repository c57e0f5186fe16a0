//! PCA for the benchmarks' reference rows: the linear projection to the
//! latent's dimension that an autoencoder has to beat.

use candle_core::{Device, Tensor};

/// Principal components by subspace iteration on the covariance matrix.
pub struct Pca {
    mean: Tensor,
    components: Tensor, // dim × k
}

impl Pca {
    pub fn fit(data: &[f32], dim: usize, k: usize) -> anyhow::Result<Self> {
        let dev = Device::Cpu;
        let n = data.len() / dim;
        let x = Tensor::from_slice(data, (n, dim), &dev)?;
        let mean = x.mean_keepdim(0)?;
        let centered = x.broadcast_sub(&mean)?;
        let cov = (centered.t()?.matmul(&centered)? / n as f64)?;
        // Deterministic start; 150 rounds of multiply + re-orthonormalize.
        let start: Vec<f32> = (0..dim * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
            .collect();
        let mut q = Tensor::from_vec(start, (dim, k), &dev)?;
        for _ in 0..150 {
            q = orthonormalize(&cov.matmul(&q)?)?;
        }
        Ok(Self {
            mean,
            components: q,
        })
    }

    pub fn project(&self, data: &[f32]) -> anyhow::Result<Vec<f32>> {
        let dim = self.components.dim(0)?;
        let x = Tensor::from_slice(data, (data.len() / dim, dim), &Device::Cpu)?;
        Ok(x.broadcast_sub(&self.mean)?
            .matmul(&self.components)?
            .flatten_all()?
            .to_vec1()?)
    }
}

/// Modified Gram-Schmidt on the columns.
fn orthonormalize(m: &Tensor) -> anyhow::Result<Tensor> {
    let (dim, k) = m.dims2()?;
    let rows = m.to_vec2::<f32>()?;
    let mut cols: Vec<Vec<f64>> = (0..k)
        .map(|j| rows.iter().map(|r| r[j] as f64).collect())
        .collect();
    for j in 0..k {
        for i in 0..j {
            let dot: f64 = cols[i].iter().zip(&cols[j]).map(|(a, b)| a * b).sum();
            let prev = cols[i].clone();
            cols[j]
                .iter_mut()
                .zip(&prev)
                .for_each(|(v, p)| *v -= dot * p);
        }
        let norm = cols[j].iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        cols[j].iter_mut().for_each(|v| *v /= norm);
    }
    let flat: Vec<f32> = (0..dim)
        .flat_map(|r| cols.iter().map(move |c| c[r] as f32))
        .collect();
    Ok(Tensor::from_vec(flat, (dim, k), &Device::Cpu)?)
}
