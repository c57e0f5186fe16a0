//! Near-duplicate retrieval: can a transformed copy of an indexed photo find
//! its original first, among thousands of distractors?
//!
//! The index is the 10,000 CIFAR-10 test images (`cifar-10-jpeg/`). The first
//! `BENCH_TARGETS` (default 1,000) are transformed: JPEG quality 50; resized
//! to 0.5× and back; a 10% crop (the central 90% × 90%, 5% off each side);
//! brightness +20% and −20% (pixel values scaled, clamped). Each copy queries
//! the index and scores a hit when its original is the nearest image, with
//! the other 9,999 images as distractors.
//!
//! Three methods run on the same images in this process:
//! - the `photos` model's latents (64 floats), exact L2: what `imgsearch
//!   query --exact` and `duplicates` see;
//! - raw pixels (32×32×3), exact L2;
//! - dHash (the image_hasher crate's gradient hash, 64 bits), Hamming.
//!   Ties are frequent with 64-bit hashes: a hit tied with t others counts
//!   1/(t+1), the expected score of a random tie-break.
//!
//! Also printed: the latent distance from each copy to its original beside
//! the distance to its nearest other image, which is what the `duplicates`
//! threshold must separate.
//!
//! Run: `cargo bench --bench near_duplicates`.

use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use image::{DynamicImage, ImageFormat};
use image_hasher::{HashAlg, HasherConfig};
use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::imageio::{self, DecodeLimits, Pixels};
use imgsearch::knn::{exact_knn, Vectors};
use imgsearch::model::Model;

#[path = "transforms.rs"]
mod transforms;
use transforms::TRANSFORMS;

fn to_image(px: &Pixels) -> DynamicImage {
    imageio::planar_to_image(&px.data, px.size, px.channels)
}

fn unit(px: &[Pixels]) -> Vec<f32> {
    px.iter().flat_map(|p| p.to_unit_f32()).collect()
}

/// Expected top-1 hit (random tie-break) from each query's distances to
/// every indexed item, given its original's position.
fn top1_from_knn(found: &[Vec<(usize, f32)>], originals: &[usize]) -> f64 {
    found
        .iter()
        .zip(originals)
        .filter(|(f, &o)| f.first().is_some_and(|h| h.0 == o))
        .count() as f64
        / originals.len() as f64
}

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!("near_duplicates: skipped, no dataset folder (set IMGSEARCH_DATA)");
        return Ok(());
    };
    let src = root.join("cifar-10-jpeg");
    if !src.is_dir() {
        println!("near_duplicates: skipped, {} is absent", src.display());
        return Ok(());
    }
    let targets: usize = std::env::var("BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let test = dataset::load(DatasetName::Cifar10, &src, Split::Test, None)?;
    let model_name = std::env::var("BENCH_MODEL").unwrap_or_else(|_| "photos".into());
    let model = Model::load(&model_name)?;
    let shape = model.input_shape();
    // Raw pixels compare at the images' own 32×32.
    let (size, channels) = (32, 3);
    let model_pixels = |images: &[DynamicImage]| -> anyhow::Result<Vec<Pixels>> {
        Ok(images
            .iter()
            .map(|im| {
                imageio::to_pixels_with(
                    im,
                    shape.size,
                    shape.channels,
                    shape.prep,
                    Path::new("image"),
                )
            })
            .collect::<Result<_, _>>()?)
    };
    println!(
        "index: {} CIFAR-10 test images; {targets} targets, {} distractors each",
        test.len(),
        test.len() - 1
    );

    let index_px: Vec<Pixels> = (0..test.len()).map(|i| test.pixels(i)).collect();
    let index_images: Vec<DynamicImage> = index_px.iter().map(to_image).collect();
    let t = Instant::now();
    let index_z: Vec<f32> = model
        .embed(&model_pixels(&index_images)?)?
        .into_iter()
        .flatten()
        .collect();
    println!("encoded the index in {:.1} s", t.elapsed().as_secs_f64());
    let index_raw = unit(&index_px);
    let hasher = HasherConfig::new()
        .hash_alg(HashAlg::Gradient)
        .hash_size(8, 8)
        .to_hasher();
    let index_hash: Vec<_> = index_images
        .iter()
        .map(|im| hasher.hash_image(im))
        .collect();
    let dim = model.embedding_dim();
    let originals: Vec<usize> = (0..targets).collect();

    println!("\n| transform | latent top-1 | raw pixels top-1 | dHash top-1 | latent d(copy, original) median / p95 | latent d(copy, nearest other) p5 / median |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut all_to_original = Vec::new();
    let mut all_to_other = Vec::new();
    for (name, transform) in TRANSFORMS {
        let copies: Vec<DynamicImage> = index_images[..targets].iter().map(transform).collect();
        // Round-trip through PNG so copies are real image files' contents.
        let copies: Vec<DynamicImage> = copies
            .iter()
            .map(|im| {
                let mut bytes = Vec::new();
                im.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
                    .expect("png encode");
                imageio::decode_bytes(&bytes, Path::new("copy.png"), DecodeLimits::default())
                    .expect("png decode")
            })
            .collect();
        let copy_px: Vec<Pixels> = copies
            .iter()
            .map(|im| imageio::to_pixels(im, size, channels, Path::new("copy")))
            .collect::<Result<_, _>>()?;

        let copy_z: Vec<f32> = model
            .embed(&model_pixels(&copies)?)?
            .into_iter()
            .flatten()
            .collect();
        let found = exact_knn(
            &Vectors {
                dim,
                data: &index_z,
            },
            &Vectors { dim, data: &copy_z },
            2,
        )?;
        let latent_top1 = top1_from_knn(&found, &originals);
        let mut to_original = Vec::new();
        let mut to_other = Vec::new();
        for (qi, f) in found.iter().enumerate() {
            let q = &copy_z[qi * dim..(qi + 1) * dim];
            let o = &index_z[qi * dim..(qi + 1) * dim];
            let d: f32 = q
                .iter()
                .zip(o)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            to_original.push(d);
            let other = f.iter().find(|h| h.0 != qi).expect("k=2");
            to_other.push(other.1.sqrt());
        }
        let copy_raw = unit(&copy_px);
        let raw_found = exact_knn(
            &Vectors {
                dim: size * size * channels,
                data: &index_raw,
            },
            &Vectors {
                dim: size * size * channels,
                data: &copy_raw,
            },
            1,
        )?;
        let raw_top1 = top1_from_knn(&raw_found, &originals);

        let mut dhash_score = 0.0;
        for (qi, im) in copies.iter().enumerate() {
            let h = hasher.hash_image(im);
            let d: Vec<u32> = index_hash.iter().map(|x| h.dist(x)).collect();
            let own = d[qi];
            let closer = d.iter().filter(|&&x| x < own).count();
            let tied = d.iter().filter(|&&x| x == own).count() - 1;
            if closer == 0 {
                dhash_score += 1.0 / (tied as f64 + 1.0);
            }
        }
        let dhash_top1 = dhash_score / targets as f64;
        let q = |v: &mut Vec<f32>, p: f64| {
            v.sort_by(f32::total_cmp);
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        println!(
            "| {name} | {latent_top1:.4} | {raw_top1:.4} | {dhash_top1:.4} | {:.2} / {:.2} | {:.2} / {:.2} |",
            q(&mut to_original, 0.5),
            q(&mut to_original, 0.95),
            q(&mut to_other, 0.05),
            q(&mut to_other, 0.5),
        );
        all_to_original.extend(to_original);
        all_to_other.extend(to_other);
    }
    // The duplicates threshold: the distance that keeps false pairs rare.
    all_to_other.sort_by(f32::total_cmp);
    all_to_original.sort_by(f32::total_cmp);
    let scale = (dim as f32).sqrt();
    println!(
        "\nlatent distances over all transforms (latent {dim}, similarity = 1/(1 + d/{scale:.0})):"
    );
    for p in [0.001, 0.01, 0.05] {
        let d = all_to_other[((all_to_other.len() - 1) as f64 * p) as usize];
        let caught = all_to_original.iter().filter(|&&x| x <= d).count() as f64
            / all_to_original.len() as f64;
        println!(
            "  threshold at the {:.1}th percentile of nearest-other distances: d = {d:.2} (similarity {:.3}); copies within it: {:.1}%",
            p * 100.0,
            1.0 / (1.0 + d / scale),
            caught * 100.0
        );
    }
    Ok(())
}
