//! The JPEG decoders imgsearch could use, side by side on the same files,
//! one thread, bytes already in memory (decoding alone):
//!
//! 1. `image` 0.25 (zune-jpeg inside), full size: what imgsearch used before;
//! 2. `jpeg-decoder` 0.3, full size, and with its `scale` (reduced-size
//!    IDCT) asked for the model's input side;
//! 3. libjpeg-turbo through `turbojpeg`, full size, and through
//!    `imageio::decode_at` at the smallest DCT scale that covers the model's
//!    input: imgsearch's path now;
//! 4. the whole preparation (`prepare::decode`: that decode, then resize to
//!    the model's input).
//!
//! Run: `bench/ingest.sh` (makes the photo sets), or
//! `BENCH_PHOTOS_DIR=/path cargo bench --bench jpeg_decoders`.

use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use imgsearch::imageio::{self, DecodeLimits, DecodeSize};
use imgsearch::model::Model;
use imgsearch::prepare;

fn main() -> anyhow::Result<()> {
    let Ok(dir) = std::env::var("BENCH_PHOTOS_DIR") else {
        println!("jpeg_decoders: set BENCH_PHOTOS_DIR (bench/ingest.sh does)");
        return Ok(());
    };
    let model = Model::load(&std::env::var("BENCH_MODEL").unwrap_or_else(|_| "photos".into()))?;
    let shape = model.input_shape();
    let side = shape.size as u32;
    let mut paths: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    let limit: usize = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(paths.len());
    paths.truncate(limit);
    let files: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let megabytes = files.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!(
        "{dir}: {} JPEGs, {:.2} MB each; model input {side} px ({}); one thread",
        files.len(),
        megabytes / files.len() as f64,
        shape.prep.as_str()
    );

    type Decode<'a> = Box<dyn Fn(&[u8]) -> anyhow::Result<(u32, u32)> + 'a>;
    let name = Path::new("bench.jpg");
    let limits = DecodeLimits::default();
    let cover = DecodeSize::Cover {
        side,
        prep: shape.prep,
    };
    let candidates: Vec<(&str, Decode)> = vec![
        (
            "image 0.25 (zune-jpeg), full size",
            Box::new(|b| {
                let img = image::load_from_memory_with_format(b, image::ImageFormat::Jpeg)?;
                Ok((img.width(), img.height()))
            }),
        ),
        (
            "jpeg-decoder 0.3, full size",
            Box::new(|b| {
                let mut d = jpeg_decoder::Decoder::new(Cursor::new(b));
                d.decode()?;
                let info = d.info().expect("decoded");
                Ok((info.width as u32, info.height as u32))
            }),
        ),
        (
            "jpeg-decoder 0.3, `scale` to the input side",
            Box::new(|b| {
                let mut d = jpeg_decoder::Decoder::new(Cursor::new(b));
                d.read_info()?;
                let (w, h) = d.scale(side as u16, side as u16)?;
                d.decode()?;
                Ok((w as u32, h as u32))
            }),
        ),
        (
            "libjpeg-turbo (turbojpeg), full size",
            Box::new(|b| {
                let img = imageio::decode_at(b, name, limits, DecodeSize::Full)?.image;
                Ok((img.width(), img.height()))
            }),
        ),
        (
            "libjpeg-turbo, DCT-scaled to cover the input (imgsearch)",
            Box::new(|b| {
                let img = imageio::decode_at(b, name, limits, cover)?.image;
                Ok((img.width(), img.height()))
            }),
        ),
        (
            "imgsearch prepare::decode (scaled decode + resize)",
            Box::new(|b| {
                let p = prepare::decode(b, name, shape, limits)?;
                Ok((p.pixels.size as u32, p.pixels.size as u32))
            }),
        ),
    ];

    println!("| decoder | decoded size | seconds | images/s |");
    println!("|---|---|---:|---:|");
    for (label, decode) in &candidates {
        decode(&files[0])?; // warm up
        let started = Instant::now();
        let mut size = (0, 0);
        for bytes in &files {
            size = decode(bytes)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "| {label} | {}×{} | {seconds:.2} | {:.0} |",
            size.0,
            size.1,
            files.len() as f64 / seconds
        );
    }
    Ok(())
}
