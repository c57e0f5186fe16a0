//! Contact sheets: a query and its neighbours as thumbnails, one row per
//! query, each neighbour captioned with its rank and distance. People would
//! rather look than read.

use std::path::Path;

use image::{imageops, Rgb, RgbImage};

/// Side of a thumbnail, in pixels.
pub const TILE: u32 = 96;
const GAP: u32 = 6;
const CAPTION: u32 = 14;
const BACKGROUND: Rgb<u8> = Rgb([250, 250, 250]);
const QUERY_FRAME: Rgb<u8> = Rgb([30, 110, 220]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);

/// One row: the query image, then (caption, image) per neighbour. `None`
/// images (unreadable files) leave a grey tile.
pub struct SheetRow {
    pub query: Option<image::DynamicImage>,
    pub neighbours: Vec<(String, Option<image::DynamicImage>)>,
}

/// Draws the rows and writes a PNG to `out`.
pub fn write(rows: &[SheetRow], out: &Path) -> image::ImageResult<()> {
    save_png(render(rows), out)
}

/// The sheet as an image. Tile `(row, col)` sits at
/// `x = GAP + col * (TILE + GAP)`, `y = GAP + row * (TILE + CAPTION + GAP)`.
pub fn render(rows: &[SheetRow]) -> RgbImage {
    let cols = rows
        .iter()
        .map(|r| r.neighbours.len() + 1)
        .max()
        .unwrap_or(1) as u32;
    let width = GAP + cols * (TILE + GAP);
    let height = GAP + rows.len().max(1) as u32 * (TILE + CAPTION + GAP);
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);
    for (r, row) in rows.iter().enumerate() {
        let y = GAP + r as u32 * (TILE + CAPTION + GAP);
        place(&mut sheet, row.query.as_ref(), GAP, y);
        frame(&mut sheet, GAP, y, QUERY_FRAME);
        draw_text(&mut sheet, "QUERY", GAP + 2, y + TILE + 3);
        for (c, (caption, img)) in row.neighbours.iter().enumerate() {
            let x = GAP + (c as u32 + 1) * (TILE + GAP);
            place(&mut sheet, img.as_ref(), x, y);
            draw_text(&mut sheet, caption, x + 2, y + TILE + 3);
        }
    }
    sheet
}

/// Captioned thumbnails in a grid, `cols` to a row, in order (anomalies;
/// original | reconstruction | difference). `None` leaves a grey tile.
pub fn grid(items: &[(String, Option<image::DynamicImage>)], cols: usize) -> RgbImage {
    let cols = cols.max(1);
    let rows = items.len().div_ceil(cols).max(1) as u32;
    let width = GAP + cols.min(items.len().max(1)) as u32 * (TILE + GAP);
    let height = GAP + rows * (TILE + CAPTION + GAP);
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);
    for (i, (caption, img)) in items.iter().enumerate() {
        let (x, y) = tile_origin(i / cols, i % cols);
        place(&mut sheet, img.as_ref(), x, y);
        draw_text(&mut sheet, caption, x + 2, y + TILE + 3);
    }
    sheet
}

/// Draws a grid and writes a PNG to `out`.
pub fn write_grid(
    items: &[(String, Option<image::DynamicImage>)],
    cols: usize,
    out: &Path,
) -> image::ImageResult<()> {
    save_png(grid(items, cols), out)
}

fn save_png(sheet: RgbImage, out: &Path) -> image::ImageResult<()> {
    let sheet = image::DynamicImage::ImageRgb8(sheet);
    crate::fsutil::save_image(&sheet, out, image::ImageFormat::Png)
}

/// The tile an image becomes: the whole image fitted into TILE×TILE, centred.
pub fn thumbnail(img: &image::DynamicImage) -> RgbImage {
    let fitted = img
        .resize(TILE, TILE, imageops::FilterType::Triangle)
        .to_rgb8();
    let mut tile = RgbImage::from_pixel(TILE, TILE, BACKGROUND);
    let (dx, dy) = ((TILE - fitted.width()) / 2, (TILE - fitted.height()) / 2);
    imageops::overlay(&mut tile, &fitted, dx as i64, dy as i64);
    tile
}

fn place(sheet: &mut RgbImage, img: Option<&image::DynamicImage>, x: u32, y: u32) {
    let tile = match img {
        Some(img) => thumbnail(img),
        None => RgbImage::from_pixel(TILE, TILE, Rgb([200, 200, 200])),
    };
    imageops::overlay(sheet, &tile, x as i64, y as i64);
}

fn frame(sheet: &mut RgbImage, x: u32, y: u32, color: Rgb<u8>) {
    for i in 0..TILE {
        for t in 0..2 {
            sheet.put_pixel(x + i, y + t, color);
            sheet.put_pixel(x + i, y + TILE - 1 - t, color);
            sheet.put_pixel(x + t, y + i, color);
            sheet.put_pixel(x + TILE - 1 - t, y + i, color);
        }
    }
}

/// 3×5 bitmap glyphs, one `u16` per glyph, rows top to bottom, 3 bits each.
fn glyph(c: char) -> Option<u16> {
    Some(match c {
        '0' => 0b111_101_101_101_111,
        '1' => 0b010_110_010_010_111,
        '2' => 0b111_001_111_100_111,
        '3' => 0b111_001_111_001_111,
        '4' => 0b101_101_111_001_001,
        '5' => 0b111_100_111_001_111,
        '6' => 0b111_100_111_101_111,
        '7' => 0b111_001_010_010_010,
        '8' => 0b111_101_111_101_111,
        '9' => 0b111_101_111_001_111,
        'A' => 0b010_101_111_101_101,
        'B' => 0b110_101_110_101_110,
        'C' => 0b011_100_100_100_011,
        'D' => 0b110_101_101_101_110,
        'E' => 0b111_100_111_100_111,
        'F' => 0b111_100_111_100_100,
        'G' => 0b011_100_101_101_011,
        'H' => 0b101_101_111_101_101,
        'I' => 0b111_010_010_010_111,
        'J' => 0b001_001_001_101_010,
        'K' => 0b101_101_110_101_101,
        'L' => 0b100_100_100_100_111,
        'M' => 0b101_111_111_101_101,
        'N' => 0b110_101_101_101_101,
        'O' => 0b010_101_101_101_010,
        'P' => 0b110_101_110_100_100,
        'Q' => 0b111_101_101_111_001,
        'R' => 0b110_101_110_101_101,
        'S' => 0b011_100_010_001_110,
        'T' => 0b111_010_010_010_010,
        'U' => 0b101_101_101_101_111,
        'V' => 0b101_101_101_101_010,
        'W' => 0b101_101_111_111_101,
        'X' => 0b101_101_010_101_101,
        'Y' => 0b101_101_010_010_010,
        'Z' => 0b111_001_010_100_111,
        '.' => 0b000_000_000_000_010,
        '#' => 0b101_111_101_111_101,
        '=' => 0b000_111_000_111_000,
        '-' => 0b000_000_111_000_000,
        '+' => 0b000_010_111_010_000,
        '%' => 0b101_001_010_100_101,
        ':' => 0b000_010_000_010_000,
        '/' => 0b001_001_010_100_100,
        '_' => 0b000_000_000_000_111,
        ' ' => 0,
        _ => return None,
    })
}

/// Draws text at 2× scale (6×10 pixels a glyph); unknown characters are skipped.
fn draw_text(sheet: &mut RgbImage, text: &str, x: u32, y: u32) {
    let mut cx = x;
    for c in text.chars().filter_map(|c| glyph(c.to_ascii_uppercase())) {
        for row in 0..5u32 {
            for col in 0..3u32 {
                if c >> (14 - (row * 3 + col)) & 1 == 1 {
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (px, py) = (cx + col * 2 + dx, y + row * 2 + dy);
                        if px < sheet.width() && py < sheet.height() {
                            sheet.put_pixel(px, py, INK);
                        }
                    }
                }
            }
        }
        cx += 8;
    }
}

/// Where tile `(row, col)` starts on a sheet.
pub fn tile_origin(row: usize, col: usize) -> (u32, u32) {
    (
        GAP + col as u32 * (TILE + GAP),
        GAP + row as u32 * (TILE + CAPTION + GAP),
    )
}
