//! Exact k-nearest-neighbour search and the vote over neighbours' labels.
//!
//! Squared L2 distances come from one matrix product per block of queries
//! (`|q|² + |x|² − 2 q·x`), which runs at GEMM speed on the CPU; this is the
//! ground truth the approximate index is measured against.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

pub use crate::ann::kernels::TopK;

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

/// How each of the k neighbours' votes counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// One vote each (plain kNN).
    #[default]
    Majority,
    /// `1 / distance`: nearer neighbours count more (Dudani's idea in its
    /// simplest form); a neighbour at distance 0 outweighs all others.
    InverseDistance,
}

impl Weighting {
    fn weight(self, distance: f32) -> f64 {
        match self {
            Weighting::Majority => 1.0,
            Weighting::InverseDistance => 1.0 / (distance as f64).max(1e-9),
        }
    }
}

/// One label's part in a vote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tally<L> {
    pub label: L,
    /// Neighbours with this label.
    pub votes: usize,
    /// Their summed weight (= `votes` for a majority vote).
    pub weight: f64,
    /// Rank (0 = nearest) of this label's nearest neighbour.
    pub nearest_rank: usize,
}

/// The outcome of a kNN vote: every label that got a vote, winner first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ballot<L> {
    pub tallies: Vec<Tally<L>>,
}

impl<L> Ballot<L> {
    pub fn winner(&self) -> &L {
        &self.tallies[0].label
    }

    /// The winner's share of the total weight (its vote share), 0 to 1.
    pub fn confidence(&self) -> f64 {
        let total: f64 = self.tallies.iter().map(|t| t.weight).sum();
        self.tallies[0].weight / total.max(f64::MIN_POSITIVE)
    }
}

/// Votes over neighbours given nearest first as `(label, distance)`.
///
/// The label with the most weight wins. Ties go to the label whose nearest
/// voter is closest (so a tie among k neighbours falls back to the k=1
/// answer), then to the label that sorts first. `None` when there are no
/// voters.
pub fn vote<L: Ord + Clone>(
    neighbours: impl IntoIterator<Item = (L, f32)>,
    weighting: Weighting,
) -> Option<Ballot<L>> {
    let mut tallies: Vec<Tally<L>> = Vec::new();
    for (rank, (label, distance)) in neighbours.into_iter().enumerate() {
        let weight = weighting.weight(distance);
        match tallies.iter_mut().find(|t| t.label == label) {
            Some(t) => {
                t.votes += 1;
                t.weight += weight;
            }
            None => tallies.push(Tally {
                label,
                votes: 1,
                weight,
                nearest_rank: rank,
            }),
        }
    }
    if tallies.is_empty() {
        return None;
    }
    tallies.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then(a.nearest_rank.cmp(&b.nearest_rank))
            .then_with(|| a.label.cmp(&b.label))
    });
    Some(Ballot { tallies })
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
    fn vote_ties_go_to_nearest_and_weights_count() {
        let majority = |n: &[(u32, f32)]| {
            *vote(n.iter().copied(), Weighting::Majority)
                .unwrap()
                .winner()
        };
        // 2–2: the label of the nearest neighbour wins.
        assert_eq!(majority(&[(0, 0.1), (1, 0.2), (1, 0.3), (0, 0.4)]), 0);
        assert_eq!(majority(&[(1, 0.1), (0, 0.2), (0, 0.3)]), 0);
        let ballot = vote([("b", 1.0), ("a", 2.0), ("a", 3.0)], Weighting::Majority).unwrap();
        assert_eq!((*ballot.winner(), ballot.confidence()), ("a", 2.0 / 3.0));
        assert_eq!(ballot.tallies[1].nearest_rank, 0);
        // Weighted: one very near neighbour outvotes two far ones.
        let weighted = vote(
            [("b", 0.1), ("a", 2.0), ("a", 3.0)],
            Weighting::InverseDistance,
        )
        .unwrap();
        assert_eq!(*weighted.winner(), "b");
        assert!((weighted.confidence() - 10.0 / (10.0 + 0.5 + 1.0 / 3.0)).abs() < 1e-6);
        assert!(vote(Vec::<(u8, f32)>::new(), Weighting::Majority).is_none());
    }
}
