//! Clusters of an index's embeddings: k-means (Lloyd's iterations from
//! k-means++ seeds, several restarts, the lowest inertia kept), each cluster
//! reported by its most central images, and, where the images carry labels,
//! purity and NMI against them.
//!
//! `--auto` chooses k by the mean silhouette (Rousseeuw 1987) on a sample,
//! the k in `2..=AUTO_MAX_K` that scores highest.

use std::collections::HashMap;
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::filter::Selection;
use crate::imageio::{DecodeLimits, Pixels};
use crate::model::{Model, ModelError};
use crate::prepare;

/// Lloyd iterations per restart at most (most runs settle well before).
pub const MAX_ITERATIONS: usize = 50;
/// The largest k `--auto` tries.
pub const AUTO_MAX_K: usize = 15;
/// Points the silhouette of `--auto` is measured on.
pub const AUTO_SAMPLE: usize = 2000;

/// Dimensions of the neighbour layout that `Space::Neighbours` clusters in
/// (UMAP's authors suggest about ten for clustering, not the two of a map).
pub const NEIGHBOUR_DIMS: usize = 8;

/// Where k-means looks for groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// The embeddings themselves.
    Embedding,
    /// A [`NEIGHBOUR_DIMS`]-dimensional neighbour layout of the embeddings
    /// (the `neighbours` map's algorithm, UMAP-style), which pulls apart
    /// groups that touch in the embedding but are linked by few neighbours
    /// (the usual UMAP-then-k-means recipe). Centroids, distances and
    /// inertia are still reported in the embedding's space.
    #[default]
    Neighbours,
}

impl Space {
    /// k-means restarts when none are asked for: runs in the 8-D neighbour
    /// space are cheap and its layouts have more local optima.
    pub fn default_restarts(self) -> usize {
        match self {
            Space::Embedding => 3,
            Space::Neighbours => 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("nothing to cluster: no images are selected")]
    Empty,
    #[error("k must be at least 1")]
    ZeroK,
    #[error("k = {k} is more than the {points} images selected")]
    TooFew { k: usize, points: usize },
    #[error("laying out the neighbour space: {0}")]
    Layout(#[from] crate::map::MapError),
}

/// Clusters `points` in `space`: k-means with `k` clusters, or with `k =
/// None` the k chosen by [`choose_k`] (whose scores come back too).
pub fn cluster(
    points: &[Vec<f32>],
    k: Option<usize>,
    restarts: usize,
    seed: u64,
    space: Space,
) -> Result<(Clustering, Vec<KScore>), ClusterError> {
    if points.is_empty() {
        return Err(ClusterError::Empty);
    }
    // Refuse a bad k before the layout is paid for.
    match k {
        Some(0) => return Err(ClusterError::ZeroK),
        Some(k) if k > points.len() => {
            return Err(ClusterError::TooFew {
                k,
                points: points.len(),
            })
        }
        _ => {}
    }
    let layout = match space {
        Space::Embedding => None,
        Space::Neighbours => Some(neighbour_coordinates(points, seed)?),
    };
    let on = layout.as_deref().unwrap_or(points);
    let (clustering, scores) = match k {
        Some(k) => (KMeans { k, restarts, seed }.fit(on)?, Vec::new()),
        None => choose_k(on, restarts, seed)?,
    };
    Ok(match layout {
        Some(_) => (recentre(&clustering.assignment, points), scores),
        None => (clustering, scores),
    })
}

fn neighbour_coordinates(points: &[Vec<f32>], seed: u64) -> Result<Vec<Vec<f32>>, ClusterError> {
    let (_, start) = crate::map::pca_coordinates::<NEIGHBOUR_DIMS>(points)?;
    let epochs = crate::map::neighbours::epochs(points.len());
    let placed = crate::map::neighbours::layout(points, start, epochs, seed);
    Ok(placed.into_iter().map(|p| p.to_vec()).collect())
}

/// The clustering `assignment` of `points` with centroids (and inertia)
/// taken in the points' own space. Every cluster of an assignment has a
/// member, so every centroid is a mean.
fn recentre(assignment: &[usize], points: &[Vec<f32>]) -> Clustering {
    let k = assignment.iter().max().map_or(0, |m| m + 1);
    let dim = points[0].len();
    let mut sums = vec![vec![0f64; dim]; k];
    let mut counts = vec![0usize; k];
    for (p, &c) in points.iter().zip(assignment) {
        counts[c] += 1;
        sums[c].iter_mut().zip(p).for_each(|(s, &x)| *s += x as f64);
    }
    let centroids: Vec<Vec<f32>> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &n)| s.iter().map(|&x| (x / n.max(1) as f64) as f32).collect())
        .collect();
    let inertia = points
        .iter()
        .zip(assignment)
        .map(|(p, &c)| sq_dist(p, &centroids[c]) as f64)
        .sum();
    Clustering {
        centroids,
        assignment: assignment.to_vec(),
        inertia,
    }
}

/// How to cluster.
#[derive(Debug, Clone, Copy)]
pub struct KMeans {
    /// Clusters wanted.
    pub k: usize,
    /// Independent runs from new k-means++ seeds; the lowest inertia wins.
    pub restarts: usize,
    pub seed: u64,
}

/// A finished clustering.
#[derive(Debug, Clone)]
pub struct Clustering {
    pub centroids: Vec<Vec<f32>>,
    /// The cluster of each point.
    pub assignment: Vec<usize>,
    /// Sum of squared distances of the points to their centroids.
    pub inertia: f64,
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest centroid to `p` and the squared distance to it.
fn nearest(p: &[f32], centroids: &[Vec<f32>]) -> (usize, f32) {
    centroids
        .iter()
        .enumerate()
        .map(|(c, centroid)| (c, sq_dist(p, centroid)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one centroid")
}

impl KMeans {
    /// Clusters `points` (all of one length).
    pub fn fit(&self, points: &[Vec<f32>]) -> Result<Clustering, ClusterError> {
        if points.is_empty() {
            return Err(ClusterError::Empty);
        }
        if self.k == 0 {
            return Err(ClusterError::ZeroK);
        }
        if self.k > points.len() {
            return Err(ClusterError::TooFew {
                k: self.k,
                points: points.len(),
            });
        }
        let best = (0..self.restarts.max(1))
            .map(|r| self.run(points, self.seed.wrapping_add(r as u64)))
            .min_by(|a, b| a.inertia.total_cmp(&b.inertia))
            .expect("at least one restart");
        Ok(best)
    }

    fn run(&self, points: &[Vec<f32>], seed: u64) -> Clustering {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut centroids = seeds(points, self.k, &mut rng);
        let mut assignment = vec![usize::MAX; points.len()];
        for _ in 0..MAX_ITERATIONS {
            let next: Vec<usize> = points
                .par_iter()
                .map(|p| nearest(p, &centroids).0)
                .collect();
            let changed = next != assignment;
            assignment = next;
            if !changed {
                break;
            }
            centroids = means(points, &assignment, &centroids, &mut rng);
        }
        let inertia = points
            .par_iter()
            .zip(&assignment)
            .map(|(p, &c)| sq_dist(p, &centroids[c]) as f64)
            .sum();
        Clustering {
            centroids,
            assignment,
            inertia,
        }
    }
}

/// k-means++ (Arthur & Vassilvitskii 2007): each next seed drawn with
/// probability proportional to its squared distance from the seeds so far.
fn seeds(points: &[Vec<f32>], k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    let mut centroids = vec![points[rng.random_range(0..points.len())].clone()];
    let mut d2: Vec<f32> = points
        .par_iter()
        .map(|p| sq_dist(p, &centroids[0]))
        .collect();
    while centroids.len() < k {
        let total: f64 = d2.iter().map(|&d| d as f64).sum();
        let next = if total <= 0.0 {
            // Every point sits on a seed: any point will do.
            rng.random_range(0..points.len())
        } else {
            let mut target = rng.random::<f64>() * total;
            d2.iter()
                .position(|&d| {
                    target -= d as f64;
                    target <= 0.0
                })
                .unwrap_or(points.len() - 1)
        };
        centroids.push(points[next].clone());
        let newest = centroids.last().expect("pushed");
        d2.par_iter_mut()
            .zip(points)
            .for_each(|(d, p)| *d = d.min(sq_dist(p, newest)));
    }
    centroids
}

/// The mean of each cluster's points; an emptied cluster is re-seeded at
/// a random point.
fn means(
    points: &[Vec<f32>],
    assignment: &[usize],
    old: &[Vec<f32>],
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<f32>> {
    let dim = points[0].len();
    let mut sums = vec![vec![0f64; dim]; old.len()];
    let mut counts = vec![0usize; old.len()];
    for (p, &c) in points.iter().zip(assignment) {
        counts[c] += 1;
        for (s, x) in sums[c].iter_mut().zip(p) {
            *s += *x as f64;
        }
    }
    sums.into_iter()
        .zip(counts)
        .map(|(sum, n)| match n {
            0 => points[rng.random_range(0..points.len())].clone(),
            n => sum.into_iter().map(|s| (s / n as f64) as f32).collect(),
        })
        .collect()
}

/// Mean silhouette of a clustering over the points `sample` indexes:
/// for each, `(b - a) / max(a, b)` with `a` its mean distance to its own
/// cluster and `b` the smallest mean distance to another.
pub fn silhouette(points: &[Vec<f32>], assignment: &[usize], k: usize, sample: &[usize]) -> f64 {
    let scores: Vec<f64> = sample
        .par_iter()
        .map(|&i| {
            let mut sums = vec![0f64; k];
            let mut counts = vec![0usize; k];
            for &j in sample {
                if j != i {
                    sums[assignment[j]] += (sq_dist(&points[i], &points[j]) as f64).sqrt();
                    counts[assignment[j]] += 1;
                }
            }
            let own = assignment[i];
            if counts[own] == 0 {
                return 0.0;
            }
            let a = sums[own] / counts[own] as f64;
            let b = (0..k)
                .filter(|&c| c != own && counts[c] > 0)
                .map(|c| sums[c] / counts[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if b.is_infinite() {
                0.0
            } else {
                (b - a) / a.max(b)
            }
        })
        .collect();
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
}

/// One k tried by [`choose_k`].
#[derive(Debug, Clone, Serialize)]
pub struct KScore {
    pub k: usize,
    pub silhouette: f64,
}

/// The k in `2..=AUTO_MAX_K` (at most half the points) whose clustering
/// has the highest mean silhouette on a sample of at most [`AUTO_SAMPLE`]
/// points, with every score tried.
pub fn choose_k(
    points: &[Vec<f32>],
    restarts: usize,
    seed: u64,
) -> Result<(Clustering, Vec<KScore>), ClusterError> {
    let most = AUTO_MAX_K.min(points.len() / 2);
    if most < 2 {
        return Err(ClusterError::TooFew {
            k: 2,
            points: points.len() / 2,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sample: Vec<usize> = (0..points.len()).collect();
    if sample.len() > AUTO_SAMPLE {
        // A partial Fisher–Yates shuffle: the first AUTO_SAMPLE are a
        // uniform sample.
        for i in 0..AUTO_SAMPLE {
            let j = rng.random_range(i..sample.len());
            sample.swap(i, j);
        }
        sample.truncate(AUTO_SAMPLE);
    }
    let mut best: Option<(f64, Clustering)> = None;
    let mut scores = Vec::new();
    for k in 2..=most {
        let clustering = KMeans { k, restarts, seed }.fit(points)?;
        let score = silhouette(points, &clustering.assignment, k, &sample);
        scores.push(KScore {
            k,
            silhouette: score,
        });
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, clustering));
        }
    }
    Ok((best.expect("k = 2 at least").1, scores))
}

/// Purity and normalized mutual information (arithmetic-mean
/// normalization, as scikit-learn's default) of the clusters against the
/// labels, over the points that have one. `None` without any label.
pub fn agreement(assignment: &[usize], labels: &[Option<String>]) -> Option<(f64, f64)> {
    let pairs: Vec<(usize, &str)> = assignment
        .iter()
        .zip(labels)
        .filter_map(|(&c, l)| l.as_deref().map(|l| (c, l)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let mut joint: HashMap<(usize, &str), f64> = HashMap::new();
    let (mut by_cluster, mut by_label): (HashMap<usize, f64>, HashMap<&str, f64>) =
        Default::default();
    for &(c, l) in &pairs {
        *joint.entry((c, l)).or_default() += 1.0;
        *by_cluster.entry(c).or_default() += 1.0;
        *by_label.entry(l).or_default() += 1.0;
    }
    let mut best_per_cluster: HashMap<usize, f64> = HashMap::new();
    for (&(c, _), &count) in &joint {
        let best = best_per_cluster.entry(c).or_default();
        *best = best.max(count);
    }
    let purity = best_per_cluster.values().sum::<f64>() / n;
    let entropy = |counts: &mut dyn Iterator<Item = f64>| -> f64 {
        counts.map(|c| -(c / n) * (c / n).ln()).sum()
    };
    let mutual: f64 = joint
        .iter()
        .map(|(&(c, l), &count)| {
            let p = count / n;
            p * (p / ((by_cluster[&c] / n) * (by_label[l] / n))).ln()
        })
        .sum();
    let (hc, hl) = (
        entropy(&mut by_cluster.values().copied()),
        entropy(&mut by_label.values().copied()),
    );
    let nmi = match (hc + hl) / 2.0 {
        m if m > 0.0 => mutual / m,
        // One cluster and one label: they agree entirely.
        _ => 1.0,
    };
    Some((purity, nmi))
}

/// A cluster as reported: its size and its most central images.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSummary {
    pub id: usize,
    pub size: usize,
    /// Nearest the centroid first.
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub id: u64,
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    pub label: Option<String>,
    /// Distance to the cluster's centroid.
    pub distance: f32,
}

/// Each cluster of `selection` (the points clustered) with its size and
/// its `n` images nearest its centroid.
pub fn summarise(clustering: &Clustering, selection: &Selection, n: usize) -> Vec<ClusterSummary> {
    let mut by_cluster: Vec<Vec<(usize, f32)>> = vec![Vec::new(); clustering.centroids.len()];
    for (i, (&c, p)) in clustering
        .assignment
        .iter()
        .zip(&selection.vectors)
        .enumerate()
    {
        by_cluster[c].push((i, sq_dist(p, &clustering.centroids[c]).sqrt()));
    }
    by_cluster
        .into_iter()
        .enumerate()
        .map(|(id, mut members)| {
            let size = members.len();
            members.sort_by(|a, b| a.1.total_cmp(&b.1));
            members.truncate(n);
            ClusterSummary {
                id,
                size,
                members: members
                    .into_iter()
                    .map(|(i, distance)| Member {
                        id: selection.ids[i],
                        path: selection.paths[i].clone(),
                        label: selection.labels[i].clone(),
                        distance,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// What a cluster looks like to the decoder: its centroid decoded where the
/// index stores latents; for a model with an embedding head, the decoded
/// mean latent of those of its `members` that can be read here (`None`
/// when none can).
pub fn decoded_centroid(
    model: &Model,
    centroid: &[f32],
    members: &[Member],
) -> Result<Option<Pixels>, ModelError> {
    let latent = if model.embeds_latents() {
        centroid.to_vec()
    } else {
        let pixels: Vec<_> = members
            .iter()
            .filter_map(|m| {
                prepare::file(&m.path, model.input_shape(), DecodeLimits::default()).ok()
            })
            .map(|(_, image)| image.pixels)
            .collect();
        if pixels.is_empty() {
            return Ok(None);
        }
        let latents = model.latents(&pixels)?;
        let dim = latents[0].len();
        (0..dim)
            .map(|d| latents.iter().map(|l| l[d]).sum::<f32>() / latents.len() as f32)
            .collect()
    };
    Ok(Some(model.decode(&[latent])?.remove(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight blobs far apart, 40 points each, labelled by blob.
    fn blobs() -> (Vec<Vec<f32>>, Vec<Option<String>>) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let centres = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let mut points = Vec::new();
        let mut labels = Vec::new();
        for i in 0..120 {
            let c = centres[i % 3];
            points.push(vec![
                c[0] + rng.random_range(-0.5..0.5),
                c[1] + rng.random_range(-0.5..0.5),
            ]);
            labels.push(Some(format!("blob{}", i % 3)));
        }
        (points, labels)
    }

    #[test]
    fn kmeans_finds_separated_blobs_and_auto_chooses_their_number() {
        let (points, labels) = blobs();
        let run = KMeans {
            k: 3,
            restarts: 3,
            seed: 1,
        };
        let clustering = run.fit(&points).unwrap();
        let (purity, nmi) = agreement(&clustering.assignment, &labels).unwrap();
        assert_eq!(purity, 1.0);
        assert!((nmi - 1.0).abs() < 1e-9, "{nmi}");
        // Deterministic for a seed.
        assert_eq!(run.fit(&points).unwrap().assignment, clustering.assignment);
        let (auto, scores) = choose_k(&points, 2, 1).unwrap();
        assert_eq!(auto.centroids.len(), 3, "{scores:?}");
        assert!(scores[1].silhouette > 0.8);
    }

    #[test]
    fn bad_ks_are_refused_and_agreement_handles_chance() {
        let (points, labels) = blobs();
        let fit = |k| {
            KMeans {
                k,
                restarts: 1,
                seed: 0,
            }
            .fit(&points)
        };
        assert!(matches!(fit(0), Err(ClusterError::ZeroK)));
        assert!(matches!(fit(121), Err(ClusterError::TooFew { .. })));
        assert!(matches!(
            KMeans {
                k: 1,
                restarts: 1,
                seed: 0
            }
            .fit(&[]),
            Err(ClusterError::Empty)
        ));
        // One cluster for three equal labels: purity 1/3, no information.
        let (purity, nmi) = agreement(&[0; 120], &labels).unwrap();
        assert!((purity - 1.0 / 3.0).abs() < 1e-9 && nmi.abs() < 1e-9);
        assert_eq!(agreement(&[0, 1], &[None, None]), None);
    }
}
