//! `imgsearch map`: the index's embeddings laid out on a plane and drawn as
//! thumbnails, or (`--decode-grid`) the decoder's images of the plane.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::imageio::{self, DecodeLimits, DecodeSize, Prep};
use imgsearch::index::Index;
use imgsearch::map::{self, canvas, MapBuilder, Method, Point};

use crate::cli::args::{FilterArgs, IndexArg, MethodArg};
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    index: IndexArg,
    /// Where to write the map (PNG): thumbnails placed by the layout and
    /// snapped to a grid, framed in their label's colour.
    #[arg(long, short, required_unless_present_any = ["json", "decode_grid"])]
    out: Option<PathBuf>,
    /// `pca`: the plane of the two leading principal axes (linear, so it
    /// can be decoded). `neighbours`: a UMAP-style layout that keeps each
    /// image beside its nearest neighbours.
    #[arg(long, value_enum, default_value_t = MethodArg::Pca)]
    method: MethodArg,
    /// Also write (PNG) what the decoder draws at a regular grid of points
    /// spanning the PCA plane (needs `--method pca` and a model whose
    /// embedding is its latent).
    #[arg(long, value_name = "PNG")]
    decode_grid: Option<PathBuf>,
    /// Points per side of the decoded grid.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=64))]
    grid_side: u32,
    /// Thumbnails drawn at most; larger selections are drawn as a uniform
    /// sample (the layout and `--json` still cover every image).
    #[arg(long, default_value_t = canvas::MAX_THUMBNAILS as u32,
          value_parser = clap::value_parser!(u32).range(1..=20_000))]
    thumbnails: u32,
    /// Seed of the neighbour layout and of the thumbnail sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print JSON, with every image's place.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    method: Method,
    images: usize,
    /// Thumbnails on the PNG (a uniform sample when fewer than `images`).
    drawn: usize,
    /// Cells per side of the thumbnail grid, and a cell's side in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    grid: Option<GridReport>,
    /// Share of the variance along each PCA axis.
    explained_variance: [f64; 2],
    /// The frame colour of each label.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    label_colours: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_opt")]
    out: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_opt")]
    decode_grid: Option<PathBuf>,
    layout_seconds: f64,
    seconds: f64,
    points: Vec<Point>,
}

#[derive(Serialize)]
struct GridReport {
    cells_per_side: usize,
    cell_pixels: u32,
}

fn lossy_opt<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => imgsearch::fsutil::serialize_lossy(p, s),
        None => s.serialize_none(),
    }
}

pub fn run(args: Args) -> Result<Outcome> {
    let started = Instant::now();
    let method = Method::from(args.method);
    if args.decode_grid.is_some() && method != Method::Pca {
        anyhow::bail!(
            "--decode-grid needs --method pca: only a linear map has a plane whose points \
             are latents"
        );
    }
    let dir = &args.index.index;
    let index = Index::open(dir, None, false)
        .with_context(|| format!("opening index {}", dir.display()))?;
    let selected = args.filter.filter().select(&index.store)?;
    let layout = MapBuilder::new(method)
        .seed(args.seed)
        .build(&selected.vectors)
        .with_context(|| format!("mapping index {}", dir.display()))?;
    let layout_seconds = layout.seconds;
    if let Some(out) = &args.decode_grid {
        let side = args.grid_side as usize;
        let cells = map::decode_grid(&index.model, &layout.pca, &layout.positions, side)?;
        let images: Vec<_> = cells.into_iter().map(|(_, pixels)| pixels).collect();
        save(canvas::tile_decoded(&images, side), out)?;
    }
    let mut grid = None;
    let mut drawn = 0;
    if let Some(out) = &args.out {
        let chosen =
            canvas::sample_for_drawing(selected.ids.len(), args.thumbnails as usize, args.seed);
        let placement = canvas::place(&layout.positions, &chosen);
        let side = placement.cell;
        let thumbnail = |i: usize| thumbnail(&selected.paths[i], side);
        save(canvas::draw(&placement, &selected.labels, thumbnail), out)?;
        drawn = placement.cells.len();
        grid = Some(GridReport {
            cells_per_side: placement.grid,
            cell_pixels: placement.cell,
        });
    }
    let points = layout.points(&selected);
    let report = Report {
        method,
        images: selected.ids.len(),
        drawn,
        grid,
        explained_variance: layout.explained,
        label_colours: canvas::label_colours(&selected.labels),
        out: args.out,
        decode_grid: args.decode_grid,
        layout_seconds,
        seconds: started.elapsed().as_secs_f64(),
        points,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::Success)
}

/// The image at `path`, decoded no larger than a `side`-pixel cell needs;
/// `None` when it cannot be read here (the cell is drawn grey).
fn thumbnail(path: &Path, side: u32) -> Option<image::DynamicImage> {
    let bytes = imageio::read_file(path).ok()?;
    let size = DecodeSize::Cover {
        side,
        prep: Prep::Letterbox,
    };
    imageio::decode_at(&bytes, path, DecodeLimits::default(), size)
        .ok()
        .map(|d| d.image)
}

fn save(canvas: image::RgbImage, out: &Path) -> Result<()> {
    let image = image::DynamicImage::ImageRgb8(canvas);
    imgsearch::fsutil::save_image(&image, out, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", out.display()))
}

impl Table for Report {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        let method = match self.method {
            Method::Pca => "PCA",
            Method::Neighbours => "neighbour layout",
        };
        writeln!(
            out,
            "{} images mapped ({method}, {:.1}s; PCA axes hold {:.0}% and {:.0}% of the variance)",
            self.images,
            self.layout_seconds,
            100.0 * self.explained_variance[0],
            100.0 * self.explained_variance[1]
        )?;
        if let (Some(path), Some(grid)) = (&self.out, &self.grid) {
            let sampled = if self.drawn < self.images {
                format!(" (a uniform sample of {} of {})", self.drawn, self.images)
            } else {
                String::new()
            };
            writeln!(
                out,
                "map: {} thumbnails{sampled} on a {}x{} grid of {}px cells -> {}",
                self.drawn,
                grid.cells_per_side,
                grid.cells_per_side,
                grid.cell_pixels,
                path.display()
            )?;
        }
        if let Some(path) = &self.decode_grid {
            writeln!(out, "decoded grid of the PCA plane -> {}", path.display())?;
        }
        if !self.label_colours.is_empty() {
            let legend: Vec<String> = self
                .label_colours
                .iter()
                .map(|(label, colour)| format!("{label} {colour}"))
                .collect();
            writeln!(out, "frames: {}", legend.join(", "))?;
        }
        Ok(())
    }
}
