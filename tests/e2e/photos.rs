//! The `photos` default on photographs that are not square, and indexes
//! built with the default it replaced.

use std::path::Path;

use crate::common::{bin, json_of, run_ok};
use imgsearch::index::Index;
use imgsearch::prepare::Prep;
use rand::{Rng, SeedableRng};

/// A 2:1 picture of a few coloured discs and bars on a tinted background,
/// different for every seed.
fn wide_picture(seed: u64) -> image::RgbImage {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let background = [
        rng.random::<u8>() / 2,
        rng.random::<u8>() / 2,
        rng.random::<u8>() / 2,
    ];
    let mut img = image::RgbImage::from_pixel(240, 120, image::Rgb(background));
    for _ in 0..6 {
        let colour = image::Rgb([rng.random(), rng.random(), rng.random()]);
        let (cx, cy, r) = (
            rng.random_range(0..240i32),
            rng.random_range(0..120i32),
            rng.random_range(8..30i32),
        );
        let disc = rng.random_bool(0.5);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let (dx, dy) = (x as i32 - cx, y as i32 - cy);
            let inside = if disc {
                dx * dx + dy * dy < r * r
            } else {
                dx.abs() < r && dy.abs() < r / 3
            };
            if inside {
                *p = colour;
            }
        }
    }
    img
}

#[test]
fn a_cropped_copy_of_a_wide_photo_finds_its_original() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, copies) = (tmp.path().join("photos"), tmp.path().join("copies"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&copies).unwrap();
    for seed in 0..40 {
        let img = wide_picture(seed);
        img.save(root.join(format!("{seed:02}.png"))).unwrap();
        // The centre square, as a phone's square crop would keep it.
        let square = image::imageops::crop_imm(&img, 60, 0, 120, 120).to_image();
        square.save(copies.join(format!("{seed:02}.png"))).unwrap();
    }
    let index = tmp.path().join("index");
    run_ok(bin().arg("ingest").arg(&root).arg("--index").arg(&index));
    let model = imgsearch::model::Model::load("photos").unwrap();
    assert_eq!(
        model.input_shape().prep,
        Prep::Crop,
        "the photos default crops"
    );

    let queries: Vec<_> = (0..40)
        .map(|s| copies.join(format!("{s:02}.png")))
        .collect();
    let out = run_ok(
        bin()
            .arg("query")
            .arg("--index")
            .arg(&index)
            .args(&queries)
            .args(["-k", "1", "--exact", "--json"]),
    );
    let v = json_of(&out);
    let found = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| {
            let query = Path::new(q["query"].as_str().unwrap());
            let hit = Path::new(q["results"][0]["path"].as_str().unwrap());
            hit.file_name() == query.file_name()
        })
        .count();
    assert_eq!(found, 40, "{v}");
}

#[test]
fn an_index_of_the_replaced_default_opens_with_it_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    std::fs::create_dir_all(&root).unwrap();
    for seed in 0..3 {
        wide_picture(seed)
            .save(root.join(format!("{seed}.png")))
            .unwrap();
    }
    let index = tmp.path().join("index");
    run_ok(
        bin()
            .arg("ingest")
            .arg(&root)
            .arg("--index")
            .arg(&index)
            .args(["--model", "photos-cifar32"]),
    );
    // Stamp it the way the release before the rename did: `photos`, with
    // the CIFAR model's fingerprint.
    {
        let opened = Index::open(&index, None, false).unwrap();
        let mut stamp = opened.store.model_stamp().unwrap().unwrap();
        stamp.name = "photos".into();
        opened.store.set_model_stamp(&stamp).unwrap();
    }
    // That release kept no record catalogue (the stamp was written behind
    // this one's back, which only a test does).
    std::fs::remove_file(index.join("records.cat")).unwrap();
    let out = run_ok(bin().arg("status").arg("--index").arg(&index).arg("--json"));
    let v = json_of(&out);
    assert_eq!(v["model"]["name"], "photos");
    assert_eq!(v["model_renamed"]["now_called"], "photos-cifar32");
    assert!(v["model_renamed"]["advice"]
        .as_str()
        .unwrap()
        .contains("imgsearch reindex --model photos"));
    let out = run_ok(
        bin()
            .arg("query")
            .arg("--index")
            .arg(&index)
            .arg(root.join("1.png"))
            .args(["-k", "1", "--json"]),
    );
    assert!(json_of(&out)[0]["results"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("1.png"));

    // Moving on re-embeds with the new default.
    run_ok(
        bin()
            .arg("reindex")
            .arg("--index")
            .arg(&index)
            .args(["--model", "photos"]),
    );
    let v = json_of(&run_ok(
        bin().arg("status").arg("--index").arg(&index).arg("--json"),
    ));
    assert!(v.get("model_renamed").is_none(), "{v}");
    assert_eq!(v["images"], 3);
}
