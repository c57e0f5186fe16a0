//! `interpolate`: the decoder's strip between two images, through the binary.

use std::path::Path;

use crate::common::{bin, json_of, run, run_ok};
use imgsearch::sheet::{tile_origin, TILE};

fn digit(path: &Path, on: impl Fn(u32, u32) -> bool) {
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([if on(x, y) { 255 } else { 0 }]))
        .save(path)
        .unwrap();
}

/// Mean absolute difference of two tiles of the strip.
fn tile_difference(strip: &image::RgbImage, a: usize, b: usize) -> f64 {
    let ((ax, ay), (bx, by)) = (tile_origin(0, a), tile_origin(0, b));
    let mut sum = 0f64;
    for y in 0..TILE {
        for x in 0..TILE {
            let (p, q) = (
                strip.get_pixel(ax + x, ay + y),
                strip.get_pixel(bx + x, by + y),
            );
            sum += (p[0] as f64 - q[0] as f64).abs();
        }
    }
    sum / (TILE * TILE) as f64
}

#[test]
fn interpolate_draws_a_strip_from_one_image_to_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (bar, ring) = (dir.path().join("bar.png"), dir.path().join("ring.png"));
    digit(&bar, |x, y| (12..16).contains(&x) && (4..24).contains(&y));
    digit(&ring, |x, y| {
        let r = ((x as f64 - 13.5).powi(2) + (y as f64 - 13.5).powi(2)).sqrt();
        (6.0..9.0).contains(&r)
    });
    let strip = dir.path().join("strip.png");
    let report = json_of(&run_ok(
        bin()
            .args([
                "interpolate",
                "--model",
                "digits",
                "--steps",
                "4",
                "--json",
                "-o",
            ])
            .arg(&strip)
            .arg(&bar)
            .arg(&ring),
    ));
    let ts: Vec<f64> = serde_json::from_value(report["frames"].clone()).unwrap();
    assert_eq!(ts.len(), 6, "{report}");
    for (i, t) in ts.iter().enumerate() {
        assert!((t - i as f64 * 0.2).abs() < 1e-6, "{ts:?}");
    }
    assert_eq!(report["frame_size"], 28);
    let image = image::open(&strip).unwrap().to_rgb8();
    let (x, y) = tile_origin(0, 5);
    assert!(image.width() >= x + TILE && image.height() >= y + TILE);
    // The ends differ, and the middle is neither end.
    let ends = tile_difference(&image, 0, 5);
    assert!(ends > 10.0, "{ends}");
    assert!(tile_difference(&image, 0, 2) > 1.0 && tile_difference(&image, 2, 5) > 1.0);

    // No steps: just the two reconstructions.
    let report = json_of(&run_ok(
        bin()
            .args([
                "interpolate",
                "--model",
                "digits",
                "--steps",
                "0",
                "--json",
                "-o",
            ])
            .arg(&strip)
            .arg(&bar)
            .arg(&ring),
    ));
    assert_eq!(report["frames"], serde_json::json!([0.0, 1.0]));

    // A missing image is named; too many steps is a usage error.
    let missing = dir.path().join("nope.png");
    let out = run(bin()
        .args(["interpolate", "--model", "digits", "-o"])
        .arg(&strip)
        .arg(&bar)
        .arg(&missing));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.png"));
    let out = run(bin()
        .args(["interpolate", "--steps", "1000", "-o"])
        .arg(&strip)
        .arg(&bar)
        .arg(&ring));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compress_then_decompress_draws_the_models_reconstructions_at_the_original_size() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(pics.join("more")).unwrap();
    digit(&pics.join("bar.png"), |x, y| {
        (12..16).contains(&x) && (4..24).contains(&y)
    });
    digit(&pics.join("more/ring.png"), |x, y| {
        let r = ((x as f64 - 13.5).powi(2) + (y as f64 - 13.5).powi(2)).sqrt();
        (6.0..9.0).contains(&r)
    });
    image::GrayImage::from_fn(56, 42, |x, y| image::Luma([((x + y) * 3) as u8]))
        .save(pics.join("wide.png"))
        .unwrap();
    std::fs::write(pics.join("broken.png"), b"not a png").unwrap();
    let codes = dir.path().join("codes.bin");
    let out = run(bin()
        .args(["compress", "--model", "digits", "--json", "-o"])
        .arg(&codes)
        .arg(&pics));
    assert_eq!(out.status.code(), Some(3), "one input was skipped");
    let report = json_of(&out);
    assert_eq!(report["images"], 3);
    // 16 latent bytes, the range, the size and the name, per image.
    let per_image = report["bytes_per_image"].as_f64().unwrap();
    assert!(per_image < 100.0, "{report}");
    assert_eq!(
        std::fs::metadata(&codes).unwrap().len(),
        report["bytes"].as_u64().unwrap()
    );

    let decoded = dir.path().join("decoded");
    let report = json_of(&run_ok(
        bin()
            .args(["decompress", "--json", "-o"])
            .arg(&decoded)
            .arg(&codes),
    ));
    assert_eq!(
        report["files"],
        serde_json::json!(["bar.png", "ring.png", "wide.png"])
    );
    let wide = image::open(decoded.join("wide.png")).unwrap();
    assert_eq!((wide.width(), wide.height()), (56, 42));
    // At the model's size the decoded image is the reconstruction, up to
    // 8-bit quantization of the latent.
    let native = dir.path().join("native");
    run_ok(
        bin()
            .args(["decompress", "--native", "-o"])
            .arg(&native)
            .arg(&codes),
    );
    let got = image::open(native.join("bar.png")).unwrap().to_luma8();
    let model = imgsearch::model::Model::load("digits").unwrap();
    let (_, prepared) = imgsearch::prepare::file(
        &pics.join("bar.png"),
        model.input_shape(),
        Default::default(),
    )
    .unwrap();
    let (want, _) = model.reconstruct(&[prepared.pixels]).unwrap().remove(0);
    let mean_diff = got
        .as_raw()
        .iter()
        .zip(&want.data)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / want.data.len() as f64;
    assert!(mean_diff < 4.0, "mean |difference| {mean_diff}");

    // Another model, a damaged file and a cut one are refused.
    let out = run(bin()
        .args(["decompress", "--model", "fashion", "-o"])
        .arg(&native)
        .arg(&codes));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was written with model `digits`"));
    let mut bytes = std::fs::read(&codes).unwrap();
    let damaged = dir.path().join("damaged.bin");
    let at = bytes.len() - 50;
    bytes[at] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for (file, why) in [(&damaged, "corrupt"), (&cut, "truncated")] {
        let out = run(bin().args(["decompress", "-o"]).arg(&native).arg(file));
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
    }
}
