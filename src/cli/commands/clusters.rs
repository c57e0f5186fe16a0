//! `imgsearch clusters`: k-means on the index's embeddings, each cluster
//! shown by its decoded centroid and its most central images.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::clusters::{self, Clustering, KMeans, KScore};
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::Index;
use imgsearch::model::Model;
use imgsearch::prepare;
use imgsearch::sheet;

use crate::cli::args::{FilterArgs, IndexArg};
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    index: IndexArg,
    /// Number of clusters.
    #[arg(short, long, default_value_t = 10, conflicts_with = "auto",
          value_parser = clap::value_parser!(u32).range(1..))]
    k: u32,
    /// Choose k (2 to 15) by the highest mean silhouette on a sample of
    /// 2,000 images.
    #[arg(long)]
    auto: bool,
    /// k-means runs from fresh k-means++ seeds; the lowest inertia is kept.
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Seed of the k-means++ draws: the same seed gives the same clusters.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most central images listed per cluster.
    #[arg(long, default_value_t = 8)]
    members: usize,
    #[command(flatten)]
    filter: FilterArgs,
    /// Write a contact sheet (PNG): one row per cluster, its decoded
    /// centroid first, then its most central images.
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    k: usize,
    images: usize,
    inertia: f64,
    /// Fraction of labelled images in their cluster's most common label.
    #[serde(skip_serializing_if = "Option::is_none")]
    purity: Option<f64>,
    /// Normalized mutual information of clusters and labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    nmi: Option<f64>,
    /// With `--auto`: every k tried and its silhouette.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    silhouettes: Vec<KScore>,
    clusters: Vec<Cluster>,
    seconds: f64,
}

#[derive(Serialize)]
struct Cluster {
    id: usize,
    size: usize,
    members: Vec<Member>,
}

#[derive(Serialize)]
struct Member {
    id: u64,
    #[serde(serialize_with = "imgsearch::fsutil::serialize_lossy")]
    path: PathBuf,
    label: Option<String>,
    /// Distance to the cluster's centroid.
    distance: f32,
}

pub fn run(args: Args) -> Result<Outcome> {
    let started = Instant::now();
    let dir = &args.index.index;
    let index = Index::open(dir, None, false)
        .with_context(|| format!("opening index {}", dir.display()))?;
    let (mut ids, mut paths, mut labels, mut points) = (vec![], vec![], vec![], vec![]);
    for item in args.filter.filter().records(&index.store)? {
        let (id, record) = item?;
        let Some(vector) = index.store.vector(id)? else {
            continue;
        };
        ids.push(id);
        paths.push(record.path_buf());
        labels.push(record.label);
        points.push(vector);
    }
    let (clustering, silhouettes) = if args.auto {
        clusters::choose_k(&points, args.restarts, args.seed)?
    } else {
        let kmeans = KMeans {
            k: args.k as usize,
            restarts: args.restarts,
            seed: args.seed,
        };
        (kmeans.fit(&points)?, Vec::new())
    };
    let (purity, nmi) = match clusters::agreement(&clustering.assignment, &labels) {
        Some((p, n)) => (Some(p), Some(n)),
        None => (None, None),
    };
    let clusters = central_members(&clustering, &points, args.members)
        .into_iter()
        .enumerate()
        .map(|(c, (size, members))| Cluster {
            id: c,
            size,
            members: members
                .into_iter()
                .map(|(i, distance)| Member {
                    id: ids[i],
                    path: paths[i].clone(),
                    label: labels[i].clone(),
                    distance,
                })
                .collect(),
        })
        .collect();
    let report = Report {
        k: clustering.centroids.len(),
        images: points.len(),
        inertia: clustering.inertia,
        purity,
        nmi,
        silhouettes,
        clusters,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(out) = &args.sheet {
        write_sheet(&index.model, &clustering, &report, args.members, out)?;
    }
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

/// Each cluster's size and its `n` points nearest its centroid (index into
/// `points`, distance), nearest first.
fn central_members(
    clustering: &Clustering,
    points: &[Vec<f32>],
    n: usize,
) -> Vec<(usize, Vec<(usize, f32)>)> {
    let mut by_cluster: Vec<Vec<(usize, f32)>> = vec![Vec::new(); clustering.centroids.len()];
    for (i, (&c, p)) in clustering.assignment.iter().zip(points).enumerate() {
        let d = p
            .iter()
            .zip(&clustering.centroids[c])
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt();
        by_cluster[c].push((i, d));
    }
    by_cluster
        .into_iter()
        .map(|mut members| {
            let size = members.len();
            members.sort_by(|a, b| a.1.total_cmp(&b.1));
            members.truncate(n);
            (size, members)
        })
        .collect()
}

/// What a cluster looks like to the decoder: its centroid decoded where the
/// index stores latents; for a model with an embedding head, the decoded
/// mean latent of its central images that can be read here.
fn centroid_image(
    model: &Model,
    centroid: &[f32],
    members: &[Member],
) -> Result<Option<image::DynamicImage>> {
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
    let decoded = model.decode(&[latent])?.remove(0);
    Ok(Some(imageio::planar_to_image(
        &decoded.data,
        decoded.size,
        decoded.channels,
    )))
}

fn write_sheet(
    model: &Model,
    clustering: &Clustering,
    report: &Report,
    members: usize,
    out: &Path,
) -> Result<()> {
    let open = |p: &Path| imageio::decode_file(p, DecodeLimits::default()).ok();
    let mut tiles = Vec::new();
    for (cluster, centroid) in report.clusters.iter().zip(&clustering.centroids) {
        let caption = format!("#{} n={}", cluster.id, cluster.size);
        tiles.push((caption, centroid_image(model, centroid, &cluster.members)?));
        for m in &cluster.members {
            tiles.push((format!("d={:.2}", m.distance), open(&m.path)));
        }
        // Short clusters leave the rest of their row empty.
        tiles.extend((cluster.members.len()..members).map(|_| (String::new(), None)));
    }
    sheet::write_grid(&tiles, members + 1, out)
        .with_context(|| format!("writing contact sheet {}", out.display()))
}

impl Table for Report {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        write!(out, "{} clusters of {} images", self.k, self.images)?;
        if let (Some(p), Some(n)) = (self.purity, self.nmi) {
            write!(out, ", purity {p:.3}, NMI {n:.3}")?;
        }
        writeln!(out, " ({:.1}s)", self.seconds)?;
        for c in &self.clusters {
            writeln!(out, "cluster {} ({} images):", c.id, c.size)?;
            for m in &c.members {
                writeln!(
                    out,
                    "  {:>8.4}  {:<12}  {}",
                    m.distance,
                    m.label.as_deref().unwrap_or("-"),
                    m.path.display()
                )?;
            }
        }
        Ok(())
    }
}
