//! `imgsearch clusters`: k-means on the index's embeddings, each cluster
//! shown by its decoded centroid and its most central images.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::clusters::{self, ClusterSummary, Clustering, KScore};
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::Index;
use imgsearch::model::Model;
use imgsearch::sheet;

use crate::cli::args::{FilterArgs, IndexArg, SpaceArg};
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
    /// k-means runs from fresh k-means++ seeds; the lowest inertia is kept
    /// (default: 10 in the neighbour space, where runs are cheap; 3 in the
    /// embedding's).
    #[arg(long)]
    restarts: Option<usize>,
    /// Seed of the k-means++ draws: the same seed gives the same clusters.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where k-means runs: `neighbours` (an 8-D neighbour layout of the
    /// embeddings, UMAP-style, which separates groups that touch but share
    /// few neighbours) or `embedding` (the stored embeddings as they are).
    /// Centroids and distances are reported in the embedding either way.
    #[arg(long, value_enum, default_value_t = SpaceArg::Neighbours)]
    space: SpaceArg,
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
    space: clusters::Space,
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
    clusters: Vec<ClusterSummary>,
    seconds: f64,
}

pub fn run(args: Args) -> Result<Outcome> {
    let started = Instant::now();
    let dir = &args.index.index;
    let index = Index::open(dir, None, false)
        .with_context(|| format!("opening index {}", dir.display()))?;
    let selected = args.filter.filter().select(&index.store)?;
    let points = &selected.vectors;
    let k = (!args.auto).then_some(args.k as usize);
    let space = clusters::Space::from(args.space);
    let restarts = args.restarts.unwrap_or(space.default_restarts());
    let (clustering, silhouettes) = clusters::cluster(points, k, restarts, args.seed, space)?;
    let (purity, nmi) = match clusters::agreement(&clustering.assignment, &selected.labels) {
        Some((p, n)) => (Some(p), Some(n)),
        None => (None, None),
    };
    let clusters = clusters::summarise(&clustering, &selected, args.members);
    let report = Report {
        space: args.space.into(),
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
        let decoded = clusters::decoded_centroid(model, centroid, &cluster.members)?;
        let image = decoded.map(|p| imageio::planar_to_image(&p.data, p.size, p.channels));
        tiles.push((caption, image));
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
