//! Drawing a layout: a sample of thumbnails snapped to the nearest free
//! cell of a grid, so none overlap (as PixPlot and FiftyOne's embeddings
//! view do), each framed in its label's colour.

use std::collections::BTreeMap;

use image::{imageops, DynamicImage, Rgb, RgbImage};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::imageio::Pixels;

/// The canvas's longest side, in pixels, at most.
pub const MAX_SIDE: u32 = 4096;
/// Thumbnails drawn at most; larger sets are sampled.
pub const MAX_THUMBNAILS: usize = 2500;
const LARGEST_CELL: u32 = 64;
const SMALLEST_CELL: u32 = 16;
const BACKGROUND: Rgb<u8> = Rgb([250, 250, 250]);
const MISSING: Rgb<u8> = Rgb([200, 200, 200]);
/// 20 colours told apart easily (Tableau 20), one per label in label order.
const PALETTE: [[u8; 3]; 20] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
    [174, 199, 232],
    [255, 187, 120],
    [152, 223, 138],
    [255, 152, 150],
    [197, 176, 213],
    [196, 156, 148],
    [247, 182, 210],
    [199, 199, 199],
    [219, 219, 141],
    [158, 218, 229],
];

/// The colour of each label, in label order (labels past the 20th reuse
/// colours).
fn label_palette<'a>(
    labels: impl IntoIterator<Item = &'a Option<String>>,
) -> BTreeMap<String, Rgb<u8>> {
    let names: std::collections::BTreeSet<&String> = labels.into_iter().flatten().collect();
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), Rgb(PALETTE[i % PALETTE.len()])))
        .collect()
}

/// The same colours as `#rrggbb`, for reports and the web page's legend.
pub fn label_colours<'a>(
    labels: impl IntoIterator<Item = &'a Option<String>>,
) -> BTreeMap<String, String> {
    label_palette(labels)
        .into_iter()
        .map(|(name, Rgb([r, g, b]))| (name, format!("#{r:02x}{g:02x}{b:02x}")))
        .collect()
}

/// The range `[2nd, 98th]` percentile of `values`, widened when flat, so a
/// few outliers do not squeeze the rest into a corner.
pub fn span(values: impl Iterator<Item = f32>) -> (f32, f32) {
    let mut v: Vec<f32> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (-1.0, 1.0);
    }
    v.sort_unstable_by(f32::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let (lo, hi) = (at(0.02), at(0.98));
    if hi - lo > 1e-6 {
        (lo, hi)
    } else {
        (lo - 1.0, hi + 1.0)
    }
}

/// Which points get a thumbnail: all of them up to `max`, else a uniform
/// sample of `max` drawn with `seed`, in index order.
pub fn sample_for_drawing(points: usize, max: usize, seed: u64) -> Vec<usize> {
    if points <= max {
        return (0..points).collect();
    }
    let mut chosen = sample(&mut ChaCha8Rng::seed_from_u64(seed), points, max).into_vec();
    chosen.sort_unstable();
    chosen
}

/// Where each drawn point landed.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Cells per side of the (square) grid.
    pub grid: usize,
    /// Side of a cell, in pixels.
    pub cell: u32,
    /// `(point, column, row)` for each drawn point (row 0 at the top).
    pub cells: Vec<(usize, usize, usize)>,
}

/// Snaps the points `chosen` of `positions` to a square grid with about
/// twice as many cells as points, each to the free cell nearest its place.
pub fn place(positions: &[[f32; 2]], chosen: &[usize]) -> Placement {
    let grid = ((2.0 * chosen.len() as f64).sqrt().ceil() as usize).max(1);
    let cell = (MAX_SIDE / grid as u32).clamp(SMALLEST_CELL, LARGEST_CELL);
    let [xs, ys] = [0, 1].map(|axis| span(chosen.iter().map(|&i| positions[i][axis])));
    let scale =
        |v: f32, (lo, hi): (f32, f32)| ((v - lo) / (hi - lo)).clamp(0.0, 1.0) * (grid - 1) as f32;
    let mut taken = vec![false; grid * grid];
    let mut cells = Vec::with_capacity(chosen.len());
    for &i in chosen {
        let (fx, fy) = (
            scale(positions[i][0], xs),
            (grid - 1) as f32 - scale(positions[i][1], ys),
        );
        let (cx, cy) = (fx.round() as i64, fy.round() as i64);
        // Rings of growing radius around the wanted cell; the nearest free
        // cell of the first ring holding one wins (ties by row, column).
        let mut best: Option<(f32, usize, usize)> = None;
        for r in 0..grid as i64 {
            for y in cy - r..=cy + r {
                for x in cx - r..=cx + r {
                    let on_ring = (y - cy).abs() == r || (x - cx).abs() == r;
                    if !on_ring || x < 0 || y < 0 || x >= grid as i64 || y >= grid as i64 {
                        continue;
                    }
                    let (x, y) = (x as usize, y as usize);
                    if taken[y * grid + x] {
                        continue;
                    }
                    let d = (x as f32 - fx).powi(2) + (y as f32 - fy).powi(2);
                    if best.is_none_or(|(bd, _, _)| d < bd) {
                        best = Some((d, x, y));
                    }
                }
            }
            if best.is_some() {
                break;
            }
        }
        let (_, x, y) = best.expect("the grid has more cells than points");
        taken[y * grid + x] = true;
        cells.push((i, x, y));
    }
    Placement { grid, cell, cells }
}

/// Draws a placement: `thumbnail(point)` in each cell (grey where it is
/// `None`), framed in the colour of `labels[point]` when labelled.
pub fn draw(
    placement: &Placement,
    labels: &[Option<String>],
    thumbnail: impl Fn(usize) -> Option<DynamicImage> + Sync,
) -> RgbImage {
    let colours = label_palette(labels);
    let side = placement.grid as u32 * placement.cell;
    let mut canvas = RgbImage::from_pixel(side, side, BACKGROUND);
    let frame = if colours.is_empty() {
        0
    } else {
        (placement.cell / 16).max(2)
    };
    let inner = placement.cell - 2 * frame - 2;
    let tiles: Vec<RgbImage> = placement
        .cells
        .par_iter()
        .map(|&(i, _, _)| {
            let mut tile = RgbImage::from_pixel(placement.cell - 2, placement.cell - 2, BACKGROUND);
            if let Some(&colour) = labels[i].as_ref().and_then(|l| colours.get(l)) {
                tile.pixels_mut().for_each(|p| *p = colour);
            }
            let image = match thumbnail(i) {
                Some(img) => img
                    .resize(inner, inner, imageops::FilterType::Triangle)
                    .to_rgb8(),
                None => RgbImage::from_pixel(inner, inner, MISSING),
            };
            let (dx, dy) = (
                frame + (inner - image.width()) / 2,
                frame + (inner - image.height()) / 2,
            );
            imageops::overlay(&mut tile, &image, dx as i64, dy as i64);
            tile
        })
        .collect();
    for (&(_, x, y), tile) in placement.cells.iter().zip(&tiles) {
        let (px, py) = (x as u32 * placement.cell + 1, y as u32 * placement.cell + 1);
        imageops::overlay(&mut canvas, tile, px as i64, py as i64);
    }
    canvas
}

/// Decoded images laid edge to edge, `side` per row, each scaled up to at
/// least 48 pixels (nearest neighbour, so the decoder's pixels show).
pub fn tile_decoded(images: &[Pixels], side: usize) -> RgbImage {
    let native = images.first().map_or(1, |p| p.size as u32);
    let scale = 48u32.div_ceil(native).max(1);
    let cell = native * scale;
    let rows = images.len().div_ceil(side.max(1)) as u32;
    let mut canvas = RgbImage::from_pixel(side as u32 * cell, rows * cell, BACKGROUND);
    for (i, p) in images.iter().enumerate() {
        let img = crate::imageio::planar_to_image(&p.data, p.size, p.channels);
        let big = img
            .resize_exact(cell, cell, imageops::FilterType::Nearest)
            .to_rgb8();
        let (x, y) = ((i % side) as u32 * cell, (i / side) as u32 * cell);
        imageops::overlay(&mut canvas, &big, x as i64, y as i64);
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_gives_every_point_its_own_cell_near_its_place() {
        // 300 points, a third of them piled on one spot.
        let positions: Vec<[f32; 2]> = (0..300)
            .map(|i| {
                if i % 3 == 0 {
                    [0.5, 0.5]
                } else {
                    [(i % 17) as f32, (i % 23) as f32]
                }
            })
            .collect();
        let chosen: Vec<usize> = (0..300).collect();
        let placed = place(&positions, &chosen);
        assert_eq!(placed.cells.len(), 300);
        let mut cells: Vec<(usize, usize)> = placed.cells.iter().map(|&(_, x, y)| (x, y)).collect();
        cells.sort_unstable();
        cells.dedup();
        assert_eq!(cells.len(), 300, "no two points share a cell");
        assert!(placed.grid as u32 * placed.cell <= MAX_SIDE);
        // The pile stays together: within a few cells of its centre.
        let pile: Vec<&(usize, usize, usize)> =
            placed.cells.iter().filter(|c| c.0 % 3 == 0).collect();
        let (mx, my) = pile
            .iter()
            .fold((0.0, 0.0), |(a, b), c| (a + c.1 as f64, b + c.2 as f64));
        let (mx, my) = (mx / pile.len() as f64, my / pile.len() as f64);
        let far = pile
            .iter()
            .filter(|c| ((c.1 as f64 - mx).powi(2) + (c.2 as f64 - my).powi(2)).sqrt() > 8.0)
            .count();
        assert_eq!(far, 0);
    }

    #[test]
    fn big_sets_are_sampled_and_the_canvas_stays_capped() {
        let chosen = sample_for_drawing(100_000, MAX_THUMBNAILS, 1);
        assert_eq!(chosen.len(), MAX_THUMBNAILS);
        assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(chosen, sample_for_drawing(100_000, MAX_THUMBNAILS, 1));
        let positions: Vec<[f32; 2]> = (0..100_000)
            .map(|i| [(i % 311) as f32, (i / 311) as f32])
            .collect();
        let placed = place(&positions, &chosen);
        assert!(placed.grid as u32 * placed.cell <= MAX_SIDE);
        let labels = vec![Some("a".to_string()); 100_000];
        let canvas = draw(&placed, &labels, |_| None);
        assert!(canvas.width() <= MAX_SIDE && canvas.height() <= MAX_SIDE);
    }
}
