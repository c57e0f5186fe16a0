//! Exact k-nearest-neighbour search and voting over dense vectors.
//!
//! Squared L2 distances come from one matrix product per block of queries
//! (`|q|² + |x|² − 2 q·x`), which runs at GEMM speed on the CPU; this is the
//! ground truth the approximate index is measured against.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Row-major vectors of one dimension.
pub struct Vectors<'a> {
    pub dim: usize,
    pub data: &'a [f32],
}

impl Vectors<'_> {
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Indices and squared distances of the `k` nearest `base` vectors to each
/// query, nearest first (ties broken by lower index).
pub fn exact_knn(
    base: &Vectors,
    queries: &Vectors,
    k: usize,
) -> candle_core::Result<Vec<Vec<(usize, f32)>>> {
    assert_eq!(base.dim, queries.dim, "dimension mismatch");
    let dev = Device::Cpu;
    let n = base.len();
    let x = Tensor::from_slice(base.data, (n, base.dim), &dev)?;
    let x_norms = x.sqr()?.sum(1)?.to_vec1::<f32>()?;
    let xt = x.t()?.contiguous()?;
    let mut out = Vec::with_capacity(queries.len());
    // Blocks keep the distance matrix small (512 × n floats).
    for block in queries.data.chunks(512 * queries.dim) {
        let m = block.len() / queries.dim;
        let q = Tensor::from_slice(block, (m, queries.dim), &dev)?;
        let dots = q.matmul(&xt)?.to_vec2::<f32>()?;
        let q_norms = q.sqr()?.sum(1)?.to_vec1::<f32>()?;
        let block_out: Vec<Vec<(usize, f32)>> = dots
            .par_iter()
            .zip(q_norms.par_iter())
            .map(|(row, &qn)| {
                let dist = row
                    .iter()
                    .zip(&x_norms)
                    .map(|(&d, &xn)| (qn + xn - 2.0 * d).max(0.0));
                top_k(dist, k)
            })
            .collect();
        out.extend(block_out);
    }
    Ok(out)
}

/// The `k` smallest values with their positions, smallest first.
fn top_k(values: impl Iterator<Item = f32>, k: usize) -> Vec<(usize, f32)> {
    let mut best = TopK::new(k);
    for (i, v) in values.enumerate() {
        best.push(i, v);
    }
    best.into_sorted()
}

/// Keeps the `k` smallest distances pushed so far (ties: earliest first).
pub struct TopK<T> {
    k: usize,
    best: Vec<(T, f32)>,
}

impl<T> TopK<T> {
    pub fn new(k: usize) -> Self {
        Self {
            k: k.max(1),
            best: Vec::with_capacity(k + 1),
        }
    }

    pub fn push(&mut self, item: T, distance: f32) {
        if self.best.len() == self.k && distance >= self.best[self.k - 1].1 {
            return;
        }
        let at = self.best.partition_point(|&(_, d)| d <= distance);
        self.best.insert(at, (item, distance));
        self.best.truncate(self.k);
    }

    /// Whether `distance` would enter the list now.
    pub fn admits(&self, distance: f32) -> bool {
        self.best.len() < self.k || distance < self.best[self.k - 1].1
    }

    /// Adds everything another list kept.
    pub fn merge(&mut self, other: TopK<T>) {
        for (item, d) in other.best {
            self.push(item, d);
        }
    }

    /// Nearest first.
    pub fn into_sorted(self) -> Vec<(T, f32)> {
        self.best
    }
}

/// Majority vote over neighbour labels. Ties go to the label whose nearest
/// voter is closest (so k=1 behaviour is recovered), then the lower label.
pub fn vote(neighbours: &[(usize, f32)], labels: &[u32]) -> u32 {
    let mut tally: Vec<(u32, usize, usize)> = Vec::new(); // (label, votes, rank of first voter)
    for (rank, &(i, _)) in neighbours.iter().enumerate() {
        let label = labels[i];
        match tally.iter_mut().find(|t| t.0 == label) {
            Some(t) => t.1 += 1,
            None => tally.push((label, 1, rank)),
        }
    }
    tally
        .into_iter()
        .min_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)))
        .map(|t| t.0)
        .expect("at least one neighbour")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_brute_force() {
        let base: Vec<f32> = (0..200).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let queries: Vec<f32> = (0..20).map(|i| ((i * 13) % 17) as f32 / 3.0).collect();
        let (b, q) = (
            Vectors {
                dim: 4,
                data: &base,
            },
            Vectors {
                dim: 4,
                data: &queries,
            },
        );
        let got = exact_knn(&b, &q, 3).unwrap();
        for (qi, qv) in queries.chunks(4).enumerate() {
            let mut all: Vec<(usize, f32)> = base
                .chunks(4)
                .enumerate()
                .map(|(i, bv)| (i, bv.iter().zip(qv).map(|(a, c)| (a - c) * (a - c)).sum()))
                .collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            let want: Vec<usize> = all[..3].iter().map(|x| x.0).collect();
            let have: Vec<usize> = got[qi].iter().map(|x| x.0).collect();
            for (h, w) in have.iter().zip(&want) {
                // Equal distances may swap; compare distances instead of ids.
                let dh = all.iter().find(|x| x.0 == *h).unwrap().1;
                let dw = all.iter().find(|x| x.0 == *w).unwrap().1;
                assert!((dh - dw).abs() < 1e-3, "query {qi}: {have:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn vote_ties_go_to_nearest() {
        let labels = [0, 1, 1, 0];
        assert_eq!(vote(&[(3, 0.1), (1, 0.2), (2, 0.3), (0, 0.4)], &labels), 0);
        assert_eq!(vote(&[(1, 0.1), (0, 0.2), (3, 0.3)], &labels), 0);
    }
}
