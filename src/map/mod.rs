//! A map of a collection: every embedding placed on a plane, so that a
//! picture of the plane shows what the index holds and how it hangs
//! together.
//!
//! Two layouts:
//! - [`Method::Pca`], the plane of the two leading principal axes. It is
//!   linear, so every point of the plane is a latent the decoder can draw
//!   ([`decode_grid`]): the picture only an autoencoder can make.
//! - [`Method::Neighbours`], a UMAP-style layout (see [`neighbours`]) that
//!   keeps each image beside its nearest neighbours, at the price of
//!   distances between far-apart groups meaning little.
//!
//! [`canvas`] draws either as thumbnails snapped to a grid.

pub mod canvas;
pub mod neighbours;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::filter::Selection;
use crate::model::pca::Pca;
use crate::model::{Model, ModelError};

/// Points the PCA plane is fitted to at most (an even stride through the
/// set): the leading axes of 20,000 points are those of the whole set to
/// within what a picture shows, at a fixed cost.
pub const PCA_SAMPLE: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("nothing to map: no images are selected")]
    Empty,
    #[error(
        "model `{model}` embeds images with a head on top of its latent, so points of the \
         embedding plane are not latents its decoder can draw; a decoded grid needs a model \
         whose embedding is its latent (digits, fashion)"
    )]
    NotDecodable { model: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("fitting the PCA plane: {0}")]
    Pca(#[from] candle_core::Error),
}

/// How the plane is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Pca,
    Neighbours,
}

/// Settings of a layout, builder style.
#[derive(Debug, Clone, Copy)]
pub struct MapBuilder {
    method: Method,
    seed: u64,
    epochs: Option<usize>,
}

impl MapBuilder {
    pub fn new(method: Method) -> Self {
        Self {
            method,
            seed: 0,
            epochs: None,
        }
    }

    /// Seed of NN-descent's start and the descent's negative samples.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Epochs of the neighbour layout's descent (default:
    /// [`neighbours::epochs`] of the set's size).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = Some(epochs);
        self
    }

    /// Lays out `points` (all of one length).
    pub fn build(&self, points: &[Vec<f32>]) -> Result<Layout, MapError> {
        if points.is_empty() {
            return Err(MapError::Empty);
        }
        let started = Instant::now();
        let (pca, mut positions) = pca_coordinates::<2>(points)?;
        let share = |j: usize| {
            let v = pca.variances.get(j).copied().unwrap_or(0.0) as f64;
            if pca.total_variance > 0.0 {
                v / pca.total_variance as f64
            } else {
                0.0
            }
        };
        let explained = [share(0), share(1)];
        if self.method == Method::Neighbours {
            let epochs = self
                .epochs
                .unwrap_or_else(|| neighbours::epochs(points.len()));
            positions = neighbours::layout(points, positions, epochs, self.seed);
        }
        Ok(Layout {
            method: self.method,
            positions,
            pca,
            explained,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The PCA fitted to `points` (to a sample of [`PCA_SAMPLE`] at most) and
/// every point's first `D` coordinates (zero beyond the points' length).
pub fn pca_coordinates<const D: usize>(
    points: &[Vec<f32>],
) -> Result<(Pca, Vec<[f32; D]>), MapError> {
    let dim = points[0].len();
    let stride = points.len().div_ceil(PCA_SAMPLE).max(1);
    let sample: Vec<f32> = points.iter().step_by(stride).flatten().copied().collect();
    let pca = Pca::fit(&sample, dim, D.min(dim))?;
    let all: Vec<f32> = points.iter().flatten().copied().collect();
    let coordinates = pca
        .project(&all)?
        .chunks(pca.k)
        .map(|c| std::array::from_fn(|d| c.get(d).copied().unwrap_or(0.0)))
        .collect();
    Ok((pca, coordinates))
}

/// An image's place on the map.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub id: u64,
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    pub label: Option<String>,
    pub x: f32,
    pub y: f32,
}

/// A finished layout.
pub struct Layout {
    pub method: Method,
    /// One `[x, y]` per point, in the order given.
    pub positions: Vec<[f32; 2]>,
    /// The PCA plane (the layout itself for [`Method::Pca`], the start of
    /// the descent for [`Method::Neighbours`]).
    pub pca: Pca,
    /// Share of the variance along each PCA axis.
    pub explained: [f64; 2],
    pub seconds: f64,
}

impl Layout {
    /// The places of `selection`'s images (the points laid out, in order).
    pub fn points(&self, selection: &Selection) -> Vec<Point> {
        self.positions
            .iter()
            .enumerate()
            .map(|(i, &[x, y])| Point {
                id: selection.ids[i],
                path: selection.paths[i].clone(),
                label: selection.labels[i].clone(),
                x,
                y,
            })
            .collect()
    }
}

/// The decoder's images at a `side × side` grid of points spanning the
/// middle 96% of the PCA plane's `positions` (row 0 at the top: largest
/// `y`), as `(x, y, pixels)`. Needs a model whose embedding is its latent.
pub fn decode_grid(
    model: &Model,
    pca: &Pca,
    positions: &[[f32; 2]],
    side: usize,
) -> Result<Vec<([f32; 2], crate::imageio::Pixels)>, MapError> {
    if !model.embeds_latents() {
        return Err(MapError::NotDecodable {
            model: model.name.clone(),
        });
    }
    let [xs, ys] = [0, 1].map(|axis| canvas::span(positions.iter().map(|p| p[axis])));
    let at = |(lo, hi): (f32, f32), i: usize| lo + (hi - lo) * i as f32 / (side.max(2) - 1) as f32;
    let plane: Vec<[f32; 2]> = (0..side * side)
        .map(|i| [at(xs, i % side), at(ys, side - 1 - i / side)])
        .collect();
    let latents: Vec<Vec<f32>> = plane.iter().map(|xy| pca.unproject(xy)).collect();
    let decoded = model.decode(&latents)?;
    Ok(plane.into_iter().zip(decoded).collect())
}
