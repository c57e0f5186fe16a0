//! Writes N large synthetic "photos" (1920×1080 JPEG, quality 85) for the
//! ingest benchmark: smooth colour fields with detail and noise, so the
//! decoder does about the work a real photo asks of it.
//!
//! `cargo run --release --example make_photos -- OUT_DIR N`

use rayon::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).expect("OUT_DIR"));
    let n: u32 = args.get(2).map_or(Ok(500), |s| s.parse())?;
    std::fs::create_dir_all(&out)?;
    (0..n)
        .into_par_iter()
        .try_for_each(|i| -> anyhow::Result<()> {
            let path = out.join(format!("photo{i:04}.jpg"));
            if path.exists() {
                return Ok(());
            }
            let mut state = 0x9E3779B97F4A7C15u64 ^ i as u64;
            let img = image::RgbImage::from_fn(1920, 1080, |x, y| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state % 24) as f32;
                let fx = x as f32 / 1920.0;
                let fy = y as f32 / 1080.0;
                let wave = ((fx * (7.0 + i as f32 % 5.0)).sin() * (fy * 11.0).cos() * 60.0) as f32;
                image::Rgb([
                    (90.0 + 120.0 * fx + wave + noise).clamp(0.0, 255.0) as u8,
                    (60.0 + 150.0 * fy - wave + noise).clamp(0.0, 255.0) as u8,
                    (40.0 + ((i * 37) % 200) as f32 * (1.0 - fx) + noise).clamp(0.0, 255.0) as u8,
                ])
            });
            let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            image::codecs::jpeg::JpegEncoder::new_with_quality(file, 85).encode_image(&img)?;
            Ok(())
        })?;
    println!("{n} photos in {}", out.display());
    Ok(())
}
