//! Decoding real files end to end: truncated and corrupt data is a
//! per-file failure with its reason (or kept with `--allow-truncated`), an
//! EXIF-rotated JPEG embeds like the rotated picture, and a JPEG decoded at
//! reduced size (DCT scaling) embeds like the full decode.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::common::{bin, json_of, run, run_ok};
use image::{ImageFormat, RgbImage};
use imgsearch::imageio::{self, DecodeLimits, DecodeSize};
use imgsearch::model::Model;
use imgsearch::prepare::{self, InputShape};
use imgsearch::store::{path_to_bytes, Store};

/// A photo-like picture: smooth gradients, a few shapes and fine texture, so
/// that its JPEG has real entropy-coded data all the way down.
fn scene(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = ((fx - 0.3 - 0.05 * seed as f32).powi(2) + (fy - 0.5).powi(2)).sqrt() < 0.2;
        let stripes = ((x / 7 + y / 11 + seed) % 2) as f32 * 20.0;
        let noise = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503) ^ seed) % 23) as f32;
        let base = [fx * 200.0, fy * 180.0, (1.0 - fx) * 150.0];
        let px = base.map(|b| {
            let v = if disc { 230.0 - b * 0.3 } else { b };
            (v + stripes + noise).clamp(0.0, 255.0) as u8
        });
        image::Rgb(px)
    })
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

/// A JPEG with an APP1 Exif segment holding only the orientation tag.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec(); // header, IFD at 8, one entry
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]); // value padding, next IFD = 0
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

fn ingest_json(root: &Path, index: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run(bin()
        .args(["ingest", "--json", "--index"])
        .arg(index)
        .arg(root)
        .args(extra));
    // Failures make the exit code 1 (partial success), never a crash.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    json_of(&out)
}

fn failure_reasons(report: &serde_json::Value) -> HashMap<String, String> {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = Path::new(f["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, f["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn truncated_and_corrupt_files_fail_with_their_reason_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("photos");
    std::fs::create_dir(&root).unwrap();
    let small = encode(&scene(640, 480, 1), ImageFormat::Jpeg);
    let large = encode(&scene(1920, 1080, 2), ImageFormat::Jpeg);
    let png = encode(&scene(320, 240, 3), ImageFormat::Png);
    let webp = encode(&scene(320, 240, 4), ImageFormat::WebP);
    assert!(small.len() > 5000, "{}", small.len());
    let write = |name: &str, bytes: &[u8]| std::fs::write(root.join(name), bytes).unwrap();
    write("whole.jpg", &small);
    write("first-700-bytes.jpg", &small[..700]);
    write("half.jpg", &large[..large.len() / 2]);
    write("ninety-percent.jpg", &large[..large.len() * 9 / 10]);
    write("half.png", &png[..png.len() / 2]);
    write("half.webp", &webp[..webp.len() / 2]);
    // Damaged entropy data in a file that still ends properly.
    let mut damaged = large.clone();
    let mid = damaged.len() / 2;
    for b in &mut damaged[mid..mid + 400] {
        *b = b.wrapping_mul(31).wrapping_add(7) | 0x40;
    }
    write("damaged.jpg", &damaged);
    // Stray bytes before the end marker, as some cameras write: libjpeg
    // warns, but the image is whole, so it is kept.
    let mut stray = small.clone();
    stray.splice(stray.len() - 2..stray.len() - 2, [0x12, 0x34, 0x56]);
    write("stray-bytes.jpg", &stray);

    let report = ingest_json(&root, &dir.path().join("strict"), &[]);
    let reasons = failure_reasons(&report);
    for name in [
        "first-700-bytes.jpg",
        "half.jpg",
        "ninety-percent.jpg",
        "half.png",
        "half.webp",
    ] {
        let reason = reasons
            .get(name)
            .unwrap_or_else(|| panic!("{name} was not failed: {report}"));
        assert!(reason.starts_with("truncated"), "{name}: {reason}");
    }
    let damaged = &reasons["damaged.jpg"];
    assert!(damaged.starts_with("corrupt"), "{damaged}");
    assert_eq!(report["added"], 2, "{report}");
    assert_eq!(report["failed"], 6, "{report}");

    // Opted in: the truncated files come in (the rest of each is grey); the
    // damaged one is still refused.
    let report = ingest_json(&root, &dir.path().join("lenient"), &["--allow-truncated"]);
    let reasons = failure_reasons(&report);
    assert!(reasons["damaged.jpg"].starts_with("corrupt"), "{report}");
    assert_eq!(reasons.len(), 1, "{report}");
    assert_eq!(report["added"], 7, "{report}");
}

fn embed(paths: &[&Path]) -> Vec<Vec<f32>> {
    let out = run_ok(bin().args(["embed", "--json"]).args(paths));
    json_of(&out)["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e["latent"].clone()).unwrap())
        .collect()
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}

#[test]
fn an_exif_rotated_jpeg_embeds_like_the_rotated_picture() {
    let dir = tempfile::tempdir().unwrap();
    // Sides are multiples of 16, so rotating maps JPEG blocks onto blocks.
    let stored = scene(192, 128, 5);
    let upright = image::imageops::rotate90(&stored);
    let tagged = with_orientation(&encode(&stored, ImageFormat::Jpeg), 6);
    let paths: Vec<PathBuf> = ["tagged.jpg", "upright.jpg", "untagged.jpg"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    std::fs::write(&paths[0], &tagged).unwrap();
    std::fs::write(&paths[1], encode(&upright, ImageFormat::Jpeg)).unwrap();
    std::fs::write(&paths[2], encode(&stored, ImageFormat::Jpeg)).unwrap();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let e = embed(&refs);
    let (rotated, unrotated) = (distance(&e[0], &e[1]), distance(&e[2], &e[1]));
    assert!(
        rotated < 0.25 * unrotated,
        "tagged vs upright {rotated}, untagged vs upright {unrotated}"
    );

    // The size recorded is the displayed one.
    let root = dir.path().join("one");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("tagged.jpg"), &tagged).unwrap();
    let index = dir.path().join("index");
    ingest_json(&root, &index, &[]);
    let store = Store::open(&index.join("db")).unwrap();
    let path = std::fs::canonicalize(root.join("tagged.jpg")).unwrap();
    let id = store.id_for_path(&path_to_bytes(&path)).unwrap().unwrap();
    let record = store.record(id).unwrap().unwrap();
    assert_eq!((record.width, record.height), (128, 192));
}

/// Reduced-size decoding changes the pixels a model sees a little (libjpeg's
/// scaled inverse DCT averages each 8×8 block where the full decode's
/// pixels are averaged by the resize). The tolerance: the two embeddings of
/// a photo are closer than a tenth of the distance to the nearest other
/// photo of the set, so no search result can change order because of it.
#[test]
fn a_reduced_size_decode_embeds_like_the_full_decode() {
    let Some(val) = crate::common::data("imagenette/val") else {
        return;
    };
    let mut files = crate::common::files_under(&val);
    files.sort();
    let files: Vec<PathBuf> = files.into_iter().step_by(97).take(24).collect();
    let model = Model::load("photos").unwrap();
    let shape: InputShape = model.input_shape();
    let (mut scaled, mut full) = (Vec::new(), Vec::new());
    for path in &files {
        // 112-pixel photos upscaled 8× to 896: a 1/8 decode gives back 112.
        let small = image::open(path).unwrap().to_rgb8();
        let big = image::imageops::resize(&small, 896, 896, image::imageops::FilterType::Lanczos3);
        let jpeg = encode(&big, ImageFormat::Jpeg);
        let needed = DecodeSize::Cover {
            side: shape.size as u32,
            prep: shape.prep,
        };
        let reduced = imageio::decode_at(&jpeg, path, DecodeLimits::default(), needed).unwrap();
        assert_eq!(reduced.image.width(), 112, "decoded at 1/8");
        assert_eq!(
            (reduced.width, reduced.height),
            (896, 896),
            "original size kept"
        );
        scaled.push(
            prepare::decode(&jpeg, path, shape, DecodeLimits::default())
                .unwrap()
                .pixels,
        );
        let whole = imageio::decode_bytes(&jpeg, path, DecodeLimits::default()).unwrap();
        assert_eq!(whole.width(), 896);
        full.push(
            imageio::to_pixels_with(&whole, shape.size, shape.channels, shape.prep, path).unwrap(),
        );
    }
    let (scaled, full) = (model.embed(&scaled).unwrap(), model.embed(&full).unwrap());
    let mut worst: f32 = 0.0;
    for (i, (s, f)) in scaled.iter().zip(&full).enumerate() {
        let own = distance(s, f);
        let nearest_other = full
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| distance(f, o))
            .fold(f32::INFINITY, f32::min);
        assert!(
            own < 0.1 * nearest_other,
            "{}: scaled vs full {own}, nearest other photo {nearest_other}",
            files[i].display()
        );
        worst = worst.max(own / nearest_other);
    }
    eprintln!("scaled vs full decode: at most {worst:.3} of the nearest other photo's distance");
}
