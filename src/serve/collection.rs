//! The collection views of the web page: the map (every selected image's
//! place on a plane) and clusters (k-means, each cluster with its decoded
//! centroid and most central images).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{blocking, ApiError, App};
use crate::clusters::{self, ClusterError, ClusterSummary, Space};
use crate::filter::{Filter, Selection};
use crate::imageio;
use crate::map::{canvas, MapBuilder, MapError, Method, Point};

/// Points a map response carries when the request does not say, and at most.
const DEFAULT_MAP_POINTS: usize = 3000;
const MAX_MAP_POINTS: usize = 20_000;
/// Clusters when the request does not say, and members listed per cluster.
const DEFAULT_K: usize = 10;
const DEFAULT_MEMBERS: usize = 6;
const MAX_MEMBERS: usize = 50;

type Shared = State<Arc<App>>;
type Params<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapParams {
    /// `pca` (default) or `neighbours`.
    method: Option<Method>,
    under: Option<PathBuf>,
    label: Option<String>,
    /// Points returned at most (a uniform sample of the laid-out images).
    max: Option<usize>,
    seed: Option<u64>,
}

#[derive(Serialize)]
pub struct MapResponse {
    method: Method,
    /// Images laid out.
    images: usize,
    explained_variance: [f64; 2],
    label_colours: BTreeMap<String, String>,
    seconds: f64,
    /// The returned sample (every image when `images` ≤ `max`).
    points: Vec<Point>,
}

pub async fn map(
    State(app): Shared,
    params: Params<MapParams>,
) -> Result<Json<MapResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    blocking(move || {
        let selected = select(&app, params.under, params.label)?;
        let method = params.method.unwrap_or(Method::Pca);
        let seed = params.seed.unwrap_or(0);
        let layout = match MapBuilder::new(method).seed(seed).build(&selected.vectors) {
            Ok(layout) => layout,
            Err(MapError::Empty) => {
                return Ok(Json(MapResponse {
                    method,
                    images: 0,
                    explained_variance: [0.0; 2],
                    label_colours: BTreeMap::new(),
                    seconds: 0.0,
                    points: Vec::new(),
                }))
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        let max = params
            .max
            .unwrap_or(DEFAULT_MAP_POINTS)
            .clamp(1, MAX_MAP_POINTS);
        let points = layout.points(&selected);
        let chosen = canvas::sample_for_drawing(points.len(), max, seed);
        Ok(Json(MapResponse {
            method,
            images: points.len(),
            explained_variance: layout.explained,
            label_colours: canvas::label_colours(&selected.labels),
            seconds: layout.seconds,
            points: chosen.into_iter().map(|i| points[i].clone()).collect(),
        }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterParams {
    k: Option<usize>,
    /// `neighbours` (default) or `embedding`.
    space: Option<Space>,
    under: Option<PathBuf>,
    label: Option<String>,
    /// Most central images listed per cluster.
    members: Option<usize>,
    seed: Option<u64>,
}

#[derive(Serialize)]
pub struct ClustersResponse {
    space: Space,
    k: usize,
    images: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    purity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nmi: Option<f64>,
    clusters: Vec<DrawnCluster>,
}

#[derive(Serialize)]
pub struct DrawnCluster {
    #[serde(flatten)]
    cluster: ClusterSummary,
    /// The decoded centroid as a `data:image/png` URL (none when it cannot
    /// be drawn here).
    centroid_image: Option<String>,
}

pub async fn clusters(
    State(app): Shared,
    params: Params<ClusterParams>,
) -> Result<Json<ClustersResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    blocking(move || {
        let selected = select(&app, params.under, params.label)?;
        let space = params.space.unwrap_or_default();
        let k = params.k.unwrap_or(DEFAULT_K);
        let seed = params.seed.unwrap_or(0);
        let found = clusters::cluster(
            &selected.vectors,
            Some(k),
            space.default_restarts(),
            seed,
            space,
        );
        let clustering = match found {
            Ok((c, _)) => c,
            Err(ClusterError::Empty) => {
                return Ok(Json(ClustersResponse {
                    space,
                    k: 0,
                    images: 0,
                    purity: None,
                    nmi: None,
                    clusters: Vec::new(),
                }))
            }
            Err(e @ (ClusterError::ZeroK | ClusterError::TooFew { .. })) => {
                return Err(ApiError::bad_request(e.to_string()))
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        };
        let members = params.members.unwrap_or(DEFAULT_MEMBERS).min(MAX_MEMBERS);
        let agreement = clusters::agreement(&clustering.assignment, &selected.labels);
        let model = &app.index.model;
        let drawn = clusters::summarise(&clustering, &selected, members)
            .into_iter()
            .zip(&clustering.centroids)
            .map(|(cluster, centroid)| {
                let decoded = clusters::decoded_centroid(model, centroid, &cluster.members)
                    .map_err(|e| ApiError::internal(format!("decoding a centroid: {e}")))?;
                let centroid_image = decoded.map(|p| png_data_url(&p)).transpose()?;
                Ok(DrawnCluster {
                    cluster,
                    centroid_image,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(Json(ClustersResponse {
            space,
            k: clustering.centroids.len(),
            images: selected.ids.len(),
            purity: agreement.map(|a| a.0),
            nmi: agreement.map(|a| a.1),
            clusters: drawn,
        }))
    })
    .await
}

/// The images under a folder and with a label, when asked.
fn select(app: &App, under: Option<PathBuf>, label: Option<String>) -> Result<Selection, ApiError> {
    let filter = Filter {
        under,
        label,
        labelled: false,
    };
    Ok(filter.select(&app.index.store)?)
}

fn png_data_url(pixels: &imageio::Pixels) -> Result<String, ApiError> {
    let image = imageio::planar_to_image(&pixels.data, pixels.size, pixels.channels);
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("encoding a centroid: {e}")))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(png.into_inner());
    Ok(format!("data:image/png;base64,{encoded}"))
}
