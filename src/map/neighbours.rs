//! A layout that keeps nearest neighbours close, in the manner of UMAP
//! (McInnes, Healy & Melville 2018):
//!
//! 1. the `k` nearest neighbours of every point: exact below
//!    [`EXACT_BELOW`] points, else NN-descent (Dong, Moses & Li 2011);
//! 2. UMAP's fuzzy neighbour graph: each point's distances shifted by its
//!    nearest one (`ρ`) and scaled (`σ`) so its weights sum to `log₂ k`,
//!    then symmetrised (`a + b − ab`);
//! 3. stochastic gradient descent from the PCA layout: neighbours attract in
//!    proportion to their weight, random points repel. The low-dimensional
//!    kernel is `1 / (1 + d²)` (UMAP's curve with `a = b = 1`, t-SNE's).
//!
//! Every step is deterministic for a seed, whatever the thread count: the
//! neighbour lists keep the best `k` under a total order, and each epoch
//! moves every point from the positions of the epoch before.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Neighbours per point (UMAP's `n_neighbors` default).
pub const K: usize = 15;
/// Below this many points the neighbour lists are computed exactly.
pub const EXACT_BELOW: usize = 4096;
/// NN-descent: share of each list sampled per round (`ρ`, as in the paper)
/// and the share of list entries a round must change for another to run
/// (`δ`: the paper's 0.001 buys the last tenth of a percent of recall with
/// three more rounds; a layout cannot tell).
const SAMPLE_RATE: f64 = 0.5;
const DELTA: f64 = 0.01;
const MAX_ROUNDS: usize = 12;
/// Random projection trees that seed NN-descent, and their leaf size.
const TREES: usize = 4;
const LEAF_SIZE: usize = 32;
/// Random points each point is pushed from, per epoch and per unit of its
/// neighbours' weight.
const NEGATIVES: f32 = 2.0;
/// Gradient steps are clipped to this (UMAP's value).
const CLIP: f32 = 4.0;

/// How long the descent runs: 500 epochs for small sets, falling to 100 at
/// 100,000 points and 50 beyond (UMAP uses 500 and 200), so the work grows
/// no faster than the set.
pub fn epochs(points: usize) -> usize {
    match points {
        0..=10_000 => 500,
        n if n <= 100_000 => (500 - (n - 10_000) * 400 / 90_000).max(100),
        _ => 50,
    }
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// One entry of a neighbour list, ordered by (distance, id): a total order,
/// so the `k` best of any set of candidates is one set.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    dist: f32,
    id: u32,
    /// Not yet used in a local join.
    fresh: bool,
    /// The NN-descent round that inserted it (0: the start). Counting the
    /// entries a round left behind, rather than its inserts, makes the stop
    /// independent of the order threads ran in.
    added: u16,
}

fn before(a: &Entry, b: &Entry) -> bool {
    (a.dist, a.id) < (b.dist, b.id)
}

/// Inserts `candidate` into the sorted list `list` of at most `k`; whether
/// the list changed.
fn offer(list: &mut Vec<Entry>, candidate: Entry, k: usize) -> bool {
    if list.len() == k && !before(&candidate, list.last().expect("k > 0")) {
        return false;
    }
    if list.iter().any(|e| e.id == candidate.id) {
        return false;
    }
    let at = list.partition_point(|e| before(e, &candidate));
    list.insert(at, candidate);
    list.truncate(k);
    true
}

/// Each point's `k` nearest other points (id, squared distance), nearest
/// first. `k` is cut to `points.len() - 1`.
pub fn nearest_neighbours(points: &[Vec<f32>], k: usize, seed: u64) -> Vec<Vec<(u32, f32)>> {
    let k = k.min(points.len().saturating_sub(1));
    if k == 0 {
        return vec![Vec::new(); points.len()];
    }
    let lists = if points.len() < EXACT_BELOW {
        exact(points, k)
    } else {
        nn_descent(points, k, seed)
    };
    lists
        .into_iter()
        .map(|l| l.into_iter().map(|e| (e.id, e.dist)).collect())
        .collect()
}

fn exact(points: &[Vec<f32>], k: usize) -> Vec<Vec<Entry>> {
    points
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut list = Vec::with_capacity(k + 1);
            for (j, q) in points.iter().enumerate() {
                if j != i {
                    let e = Entry {
                        dist: sq_dist(p, q),
                        id: j as u32,
                        fresh: false,
                        added: 0,
                    };
                    offer(&mut list, e, k);
                }
            }
            list
        })
        .collect()
}

/// NN-descent: start from random lists, then repeatedly compare each
/// point's neighbours (and reverse neighbours) with one another, since a
/// neighbour of a neighbour is likely a neighbour.
fn nn_descent(points: &[Vec<f32>], k: usize, seed: u64) -> Vec<Vec<Entry>> {
    let n = points.len();
    // One contiguous block: a vector is one cache line away, not two.
    let dim = points[0].len();
    let flat: Vec<f32> = points.iter().flatten().copied().collect();
    let at = |i: u32| &flat[i as usize * dim..(i as usize + 1) * dim];
    // Start from random lists, then offer every pair within each leaf of a
    // few random projection trees, as pynndescent does: most true
    // neighbours share a leaf with the point, so the descent starts close
    // and needs fewer (costly) rounds.
    let lists: Vec<Mutex<Vec<Entry>>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut list = Vec::with_capacity(k + 1);
            while list.len() < k {
                let j = rng.random_range(0..n);
                if j != i {
                    let e = Entry {
                        dist: sq_dist(at(i as u32), at(j as u32)),
                        id: j as u32,
                        fresh: true,
                        added: 0,
                    };
                    offer(&mut list, e, k);
                }
            }
            Mutex::new(list)
        })
        .collect();
    let leaves: Vec<Vec<u32>> = (0..TREES)
        .into_par_iter()
        .flat_map_iter(|t| projection_tree_leaves(points, seed ^ (0x7EE5 + t as u64)))
        .collect();
    leaves.par_iter().for_each(|leaf| {
        for (x, &a) in leaf.iter().enumerate() {
            for &b in &leaf[x + 1..] {
                let dist = sq_dist(at(a), at(b));
                for (to, from) in [(a, b), (b, a)] {
                    let e = Entry {
                        dist,
                        id: from,
                        fresh: true,
                        added: 0,
                    };
                    offer(&mut lists[to as usize].lock().expect("not poisoned"), e, k);
                }
            }
        }
    });
    // Each list's k-th distance (f32 bits), read without its lock to turn
    // away most candidates: it only falls, so a stale read turns away less,
    // never more.
    let worst: Vec<AtomicU32> = lists
        .iter()
        .map(|l| AtomicU32::new(kth_distance(&l.lock().expect("not poisoned"), k).to_bits()))
        .collect();
    let per_list = ((k as f64 * SAMPLE_RATE).ceil() as usize).max(1);
    for round in 0..MAX_ROUNDS {
        // Candidates for this round, read from a snapshot: each list's
        // `fresh` entries (at most `per_list`, the nearest, now marked used)
        // and its used ones, as edges both ways, grouped by owner.
        let mut edges: Vec<(u32, u32, bool)> = lists
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, list)| {
                let mut list = list.lock().expect("not poisoned");
                let mut taken = 0;
                let mut out = Vec::with_capacity(2 * list.len());
                for e in list.iter_mut() {
                    let fresh = if e.fresh && taken < per_list {
                        e.fresh = false;
                        taken += 1;
                        true
                    } else if e.fresh {
                        continue;
                    } else {
                        false
                    };
                    out.push((i as u32, e.id, fresh));
                    out.push((e.id, i as u32, fresh));
                }
                out
            })
            .collect();
        edges.par_sort_unstable();
        edges.dedup();
        // Reverse lists can grow long around hubs: keep a deterministic
        // sample of each (the first `2 · per_list` after a seeded shuffle).
        let (fresh, stale): (Vec<Vec<u32>>, Vec<Vec<u32>>) = (0..n as u32)
            .into_par_iter()
            .map(|v| {
                let start = edges.partition_point(|e| e.0 < v);
                let end = edges.partition_point(|e| e.0 <= v);
                let mut rng =
                    SplitMix::new(seed ^ ((round * n + v as usize) as u64).wrapping_mul(0x5EED));
                let mut pick = |fresh: bool| {
                    let mut l: Vec<u32> = edges[start..end]
                        .iter()
                        .filter(|e| e.2 == fresh)
                        .map(|e| e.1)
                        .collect();
                    l.dedup();
                    if l.len() > 2 * per_list {
                        for a in 0..2 * per_list {
                            let b = a + rng.below(l.len() - a);
                            l.swap(a, b);
                        }
                        l.truncate(2 * per_list);
                    }
                    l
                };
                (pick(true), pick(false))
            })
            .unzip();
        let stamp = round as u16 + 1;
        (0..n).into_par_iter().for_each(|v| {
            let (new, old) = (&fresh[v], &stale[v]);
            let join = |a: u32, b: u32| {
                if a == b {
                    return;
                }
                let dist = sq_dist(at(a), at(b));
                for (to, from) in [(a, b), (b, a)] {
                    let to = to as usize;
                    if dist > f32::from_bits(worst[to].load(Ordering::Relaxed)) {
                        continue;
                    }
                    let e = Entry {
                        dist,
                        id: from,
                        fresh: true,
                        added: stamp,
                    };
                    let mut list = lists[to].lock().expect("not poisoned");
                    if offer(&mut list, e, k) {
                        worst[to].store(kth_distance(&list, k).to_bits(), Ordering::Relaxed);
                    }
                }
            };
            for (x, &a) in new.iter().enumerate() {
                for &b in &new[x + 1..] {
                    join(a, b);
                }
                for &b in old {
                    join(a, b);
                }
            }
        });
        let updates: usize = lists
            .par_iter()
            .map(|l| {
                l.lock()
                    .expect("not poisoned")
                    .iter()
                    .filter(|e| e.added == stamp)
                    .count()
            })
            .sum();
        if (updates as f64) < DELTA * (n * k) as f64 {
            break;
        }
    }
    lists
        .into_iter()
        .map(|m| m.into_inner().expect("not poisoned"))
        .collect()
}

/// The leaves (at most [`LEAF_SIZE`] points each) of a random projection
/// tree: each node splits its points by the hyperplane halfway between two
/// of them, drawn at random.
fn projection_tree_leaves(points: &[Vec<f32>], seed: u64) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut leaves = Vec::new();
    let mut todo = vec![(0..points.len() as u32).collect::<Vec<u32>>()];
    while let Some(node) = todo.pop() {
        if node.len() <= LEAF_SIZE {
            leaves.push(node);
            continue;
        }
        let a = &points[node[rng.random_range(0..node.len())] as usize];
        let b = &points[node[rng.random_range(0..node.len())] as usize];
        let normal: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let offset: f32 = normal
            .iter()
            .zip(a.iter().zip(b))
            .map(|(n, (x, y))| n * (x + y) / 2.0)
            .sum();
        let (mut left, mut right): (Vec<u32>, Vec<u32>) = node.iter().partition(|&&i| {
            points[i as usize]
                .iter()
                .zip(&normal)
                .map(|(x, n)| x * n)
                .sum::<f32>()
                < offset
        });
        if left.is_empty() || right.is_empty() {
            // The two points coincide (or every point lies on the plane):
            // halve the node as it is.
            let mut halves = node;
            right = halves.split_off(halves.len() / 2);
            left = halves;
        }
        todo.push(left);
        todo.push(right);
    }
    leaves
}

/// SplitMix64 (Steele, Lea & Flood 2014): a generator cheap enough to seed
/// afresh per point and epoch, so parallel work draws the same numbers
/// whatever the thread count.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³²
    /// for any n a collection reaches).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

/// The distance a candidate must not exceed to enter `list`.
fn kth_distance(list: &[Entry], k: usize) -> f32 {
    if list.len() < k {
        f32::INFINITY
    } else {
        list[k - 1].dist
    }
}

/// UMAP's fuzzy graph: for each point, weights `exp(−(d − ρ)/σ)` over its
/// neighbour distances `d` (ρ the nearest, σ found by bisection so the
/// weights sum to `log₂ k`), symmetrised as `a + b − ab`. Returns each
/// point's (neighbour, weight) list.
pub fn fuzzy_graph(neighbours: &[Vec<(u32, f32)>]) -> Vec<Vec<(u32, f32)>> {
    let directed: Vec<Vec<(u32, f32)>> = neighbours
        .par_iter()
        .map(|list| {
            let dists: Vec<f32> = list.iter().map(|&(_, d2)| d2.sqrt()).collect();
            let rho = dists.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
            let target = (list.len().max(2) as f32).log2();
            let total = |sigma: f32| -> f32 {
                dists
                    .iter()
                    .map(|&d| (-((d - rho).max(0.0)) / sigma).exp())
                    .sum()
            };
            let (mut lo, mut hi) = (1e-6f32, f32::INFINITY);
            let mut sigma = 1.0f32;
            for _ in 0..64 {
                let s = total(sigma);
                if (s - target).abs() < 1e-5 {
                    break;
                }
                if s > target {
                    hi = sigma;
                    sigma = (lo + hi) / 2.0;
                } else {
                    lo = sigma;
                    sigma = if hi.is_finite() {
                        (lo + hi) / 2.0
                    } else {
                        sigma * 2.0
                    };
                }
            }
            list.iter()
                .zip(&dists)
                .map(|(&(j, _), &d)| (j, (-((d - rho).max(0.0)) / sigma).exp()))
                .collect()
        })
        .collect();
    let mut edges: Vec<(u32, u32, f32)> = directed
        .iter()
        .enumerate()
        .flat_map(|(i, list)| {
            list.iter()
                .flat_map(move |&(j, w)| [(i as u32, j, w), (j, i as u32, w)])
        })
        .collect();
    // Each (i, j) now appears once per direction it was found in; combine.
    edges.par_sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
    let mut graph = vec![Vec::new(); neighbours.len()];
    let mut at = 0;
    while at < edges.len() {
        let (i, j, _) = edges[at];
        let mut end = at;
        while end < edges.len() && (edges[end].0, edges[end].1) == (i, j) {
            end += 1;
        }
        let w = match &edges[at..end] {
            [one] => one.2,
            [a, b, ..] => a.2 + b.2 - a.2 * b.2,
            [] => unreachable!("at < end"),
        };
        graph[i as usize].push((j, w));
        at = end;
    }
    graph
}

/// The whole layout: `points` placed in `D` dimensions (2 for a map) so
/// that neighbours stay close, starting from `start` (their PCA
/// coordinates), which is scaled to a spread of about ten units (UMAP's
/// initial scale) and keeps the global arrangement.
pub fn layout<const D: usize>(
    points: &[Vec<f32>],
    mut start: Vec<[f32; D]>,
    epochs: usize,
    seed: u64,
) -> Vec<[f32; D]> {
    let spread = start
        .iter()
        .flat_map(|p| p.iter().map(|x| x.abs()))
        .fold(0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    start.iter_mut().flatten().for_each(|x| *x *= 10.0 / spread);
    let graph = fuzzy_graph(&nearest_neighbours(points, K, seed));
    optimise(&mut start, &graph, epochs, seed);
    start
}

/// Moves `positions` (one point of `D` coordinates each: 2 for a map) to
/// fit the fuzzy `graph`.
pub fn optimise<const D: usize>(
    positions: &mut [[f32; D]],
    graph: &[Vec<(u32, f32)>],
    epochs: usize,
    seed: u64,
) {
    let n = positions.len();
    if n < 2 {
        return;
    }
    let mut next = positions.to_vec();
    for epoch in 0..epochs {
        let rate = 1.0 - epoch as f32 / epochs as f32;
        let current = &*positions;
        next.par_iter_mut().enumerate().for_each(|(i, out)| {
            let me = current[i];
            let mut step = [0f32; D];
            // Adds `gradient(d²) · (me − other)`, clipped per coordinate.
            let mut pull = |other: &[f32; D], attract: bool, weight: f32| {
                let delta: [f32; D] = std::array::from_fn(|d| me[d] - other[d]);
                let d2: f32 = delta.iter().map(|x| x * x).sum();
                let c = if attract {
                    -2.0 / (1.0 + d2)
                } else {
                    2.0 / ((0.001 + d2) * (1.0 + d2))
                };
                for (s, x) in step.iter_mut().zip(delta) {
                    *s += weight * (c * x).clamp(-CLIP, CLIP);
                }
            };
            let mut weight = 0f32;
            for &(j, w) in &graph[i] {
                pull(&current[j as usize], true, w);
                weight += w;
            }
            let pushes = (NEGATIVES * weight).round() as usize;
            let mut rng = SplitMix::new(seed ^ ((epoch as u64) << 40) ^ (i as u64));
            for _ in 0..pushes {
                let j = rng.below(n);
                if j != i {
                    pull(&current[j], false, 1.0);
                }
            }
            *out = std::array::from_fn(|d| me[d] + rate * step[d]);
        });
        positions.copy_from_slice(&next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(per: usize, centres: &[[f32; 3]], seed: u64) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        centres
            .iter()
            .flat_map(|c| {
                (0..per)
                    .map(|_| {
                        c.iter()
                            .map(|&x| x + rng.random_range(-0.5f32..0.5))
                            .collect()
                    })
                    .collect::<Vec<Vec<f32>>>()
            })
            .collect()
    }

    #[test]
    fn nn_descent_finds_nearly_all_true_neighbours() {
        let points = blobs(1500, &[[0.0; 3], [5.0, 0.0, 0.0], [0.0, 5.0, 5.0]], 1);
        let truth = exact(&points, 10);
        let found = nn_descent(&points, 10, 7);
        let hits: usize = truth
            .iter()
            .zip(&found)
            .map(|(t, f)| t.iter().filter(|e| f.iter().any(|g| g.id == e.id)).count())
            .sum();
        let recall = hits as f64 / (points.len() * 10) as f64;
        assert!(recall > 0.95, "recall {recall}");
        assert_eq!(found, nn_descent(&points, 10, 7), "same seed, same lists");
    }

    #[test]
    fn the_layout_keeps_blobs_apart_and_is_deterministic() {
        let points = blobs(200, &[[0.0; 3], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]], 2);
        let run = || {
            let graph = fuzzy_graph(&nearest_neighbours(&points, K, 3));
            // A start that mixes the blobs: only the descent can separate them.
            let mut positions: Vec<[f32; 2]> = (0..points.len())
                .map(|i| [(i % 17) as f32, (i % 13) as f32])
                .collect();
            optimise(&mut positions, &graph, 300, 3);
            positions
        };
        let positions = run();
        assert_eq!(positions, run());
        let centre = |b: usize| {
            let s = &positions[b * 200..(b + 1) * 200];
            let n = s.len() as f32;
            [
                s.iter().map(|p| p[0]).sum::<f32>() / n,
                s.iter().map(|p| p[1]).sum::<f32>() / n,
            ]
        };
        let spread = |b: usize| {
            let c = centre(b);
            positions[b * 200..(b + 1) * 200]
                .iter()
                .map(|p| ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt())
                .sum::<f32>()
                / 200.0
        };
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            let (ca, cb) = (centre(a), centre(b));
            let gap = ((ca[0] - cb[0]).powi(2) + (ca[1] - cb[1]).powi(2)).sqrt();
            assert!(gap > 2.0 * (spread(a) + spread(b)), "blobs {a},{b} overlap");
        }
    }
}
