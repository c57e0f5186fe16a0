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

#[test]
fn clusters_group_digits_and_show_decoded_centroids() {
    let Some((tmp, root, index)) = crate::common::mnist_index(2000) else {
        return;
    };
    let sheet = tmp.path().join("clusters.png");
    let report = json_of(&run_ok(
        bin()
            .args(["clusters", "-k", "10", "--json", "--index"])
            .arg(&index)
            .arg("--sheet")
            .arg(&sheet),
    ));
    assert_eq!(
        (&report["k"], &report["images"]),
        (&10.into(), &2000.into())
    );
    assert_eq!(report["space"], "neighbours");
    let clusters = report["clusters"].as_array().unwrap();
    let sizes: u64 = clusters.iter().map(|c| c["size"].as_u64().unwrap()).sum();
    assert_eq!(sizes, 2000);
    for c in clusters {
        let d: Vec<f64> = c["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["distance"].as_f64().unwrap())
            .collect();
        assert!(!d.is_empty() && d.len() <= 8);
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "most central first");
    }
    // Unsupervised, yet the clusters follow the digits (chance: purity
    // about 0.11, NMI 0), and better than k-means on the raw pixels of the
    // same images, or on the embeddings themselves.
    let scores =
        |r: &serde_json::Value| (r["purity"].as_f64().unwrap(), r["nmi"].as_f64().unwrap());
    let (purity, nmi) = scores(&report);
    let embedding = json_of(&run_ok(
        bin()
            .args([
                "clusters",
                "-k",
                "10",
                "--space",
                "embedding",
                "--json",
                "--index",
            ])
            .arg(&index),
    ));
    let (embedding_purity, embedding_nmi) = scores(&embedding);
    let files = crate::common::files_under(&root);
    let pixels: Vec<Vec<f32>> = files
        .iter()
        .map(|f| {
            let img = image::open(f).unwrap().to_luma8();
            img.as_raw().iter().map(|&v| v as f32 / 255.0).collect()
        })
        .collect();
    let labels: Vec<Option<String>> = files
        .iter()
        .map(|f| {
            Some(
                f.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect();
    let raw = imgsearch::clusters::KMeans {
        k: 10,
        restarts: 3,
        seed: 0,
    }
    .fit(&pixels)
    .unwrap();
    let (raw_purity, raw_nmi) = imgsearch::clusters::agreement(&raw.assignment, &labels).unwrap();
    eprintln!(
        "purity / NMI on 2,000 MNIST digits: neighbour space {purity:.3} / {nmi:.3}, \
         embedding {embedding_purity:.3} / {embedding_nmi:.3}, raw pixels {raw_purity:.3} / {raw_nmi:.3}"
    );
    assert!(purity >= 0.75, "purity {purity}");
    assert!(nmi > raw_nmi && nmi > embedding_nmi, "NMI {nmi}");
    assert!(
        embedding_nmi > raw_nmi,
        "the embedding beats raw pixels too"
    );
    // One row per cluster: the decoded centroid, then 8 members.
    let image = image::open(&sheet).unwrap();
    let (x, y) = tile_origin(9, 8);
    assert!(image.width() >= x + TILE && image.height() >= y + TILE);
    let (x, y) = tile_origin(0, 0);
    let centroid = image.crop_imm(x, y, TILE, TILE).to_luma8();
    let spread = centroid.pixels().map(|p| p[0]).max().unwrap() as i32
        - centroid.pixels().map(|p| p[0]).min().unwrap() as i32;
    assert!(
        spread > 100,
        "the decoded centroid is a picture, not a blank"
    );

    // --auto tries k = 2..15 and keeps the best silhouette.
    let auto = json_of(&run_ok(
        bin()
            .args(["clusters", "--auto", "--json", "--index"])
            .arg(&index),
    ));
    let tried = auto["silhouettes"].as_array().unwrap();
    assert_eq!(tried.len(), 14);
    let best = tried
        .iter()
        .max_by(|a, b| {
            a["silhouette"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["silhouette"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(auto["k"], best["k"]);

    // Bad requests: k = 0, k above the images, nothing selected.
    let code = |args: &[&str]| {
        run(bin().arg("clusters").args(args).arg("--index").arg(&index))
            .status
            .code()
    };
    assert_eq!(code(&["-k", "0"]), Some(2));
    assert_eq!(code(&["-k", "2001"]), Some(1));
    assert_eq!(code(&["--label", "no-such-label"]), Some(1));
}

#[test]
fn generate_near_draws_variations_in_the_spread_of_the_neighbours() {
    let Some((tmp, root, index)) = crate::common::mnist_index(300) else {
        return;
    };
    let image = crate::common::files_under(&root.join("3"))[0].clone();
    let sheet = tmp.path().join("near.png");
    let generate = |extra: &[&str]| {
        json_of(&run_ok(
            bin()
                .args(["generate", "--json", "-n", "6", "--near"])
                .arg(&image)
                .arg("--index")
                .arg(&index)
                .arg("-o")
                .arg(&sheet)
                .args(extra),
        ))
    };
    let report = generate(&[]);
    assert_eq!(report["samples"], 6);
    let neighbours = report["neighbours"].as_array().unwrap();
    assert_eq!(neighbours.len(), 16);
    assert!(
        neighbours[0]["distance"].as_f64().unwrap() < 1e-3,
        "the image itself is indexed: {report}"
    );
    let (spread, strayed) = (
        report["neighbour_spread"].as_f64().unwrap(),
        report["sample_distance"].as_f64().unwrap(),
    );
    assert!(
        spread > 0.0 && strayed > 0.1 * spread && strayed < 3.0 * spread,
        "{report}"
    );
    // The image, its reconstruction, then the six samples, which differ.
    let drawn = image::open(&sheet).unwrap().to_rgb8();
    let (x, y) = tile_origin(0, 7);
    assert!(drawn.width() >= x + TILE && drawn.height() >= y + TILE);
    assert!(tile_difference(&drawn, 2, 3) > 1.0);
    // The same seed draws the same sheet; scale 0 draws only the image's
    // own latent.
    let before = std::fs::read(&sheet).unwrap();
    generate(&[]);
    assert_eq!(std::fs::read(&sheet).unwrap(), before);
    let still = generate(&["--scale", "0"]);
    assert_eq!(still["sample_distance"], 0.0);
    assert!(tile_difference(&image::open(&sheet).unwrap().to_rgb8(), 1, 4) < 0.5);

    // Bad requests.
    let out = run(bin()
        .args(["generate", "-n", "0", "--near"])
        .arg(&image)
        .arg("-o")
        .arg(&sheet));
    assert_eq!(out.status.code(), Some(2));
    let out = run(bin()
        .args(["generate", "--near"])
        .arg(tmp.path().join("nope.png"))
        .arg("--index")
        .arg(&index)
        .arg("-o")
        .arg(&sheet));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.png"));
}
