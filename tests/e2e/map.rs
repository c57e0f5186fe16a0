//! `map`: every image placed on a plane, drawn as thumbnails or as the
//! decoder's images of the plane, through the binary.

use image::GenericImageView;

use crate::common::{bin, json_of, run, run_ok};

/// Share of points whose 5 nearest neighbours on the plane vote their label.
fn label_agreement_on_plane(points: &[serde_json::Value]) -> f64 {
    let xy: Vec<(f64, f64, &str)> = points
        .iter()
        .map(|p| {
            (
                p["x"].as_f64().unwrap(),
                p["y"].as_f64().unwrap(),
                p["label"].as_str().unwrap(),
            )
        })
        .collect();
    let right = xy
        .iter()
        .enumerate()
        .filter(|(i, (x, y, label))| {
            let mut others: Vec<(f64, &str)> = xy
                .iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .map(|(_, (u, v, l))| ((u - x).powi(2) + (v - y).powi(2), *l))
                .collect();
            others.sort_by(|a, b| a.0.total_cmp(&b.0));
            let votes = others[..5].iter().filter(|(_, l)| l == label).count();
            votes >= 3
        })
        .count();
    right as f64 / xy.len() as f64
}

#[test]
fn map_places_every_image_and_the_neighbour_layout_keeps_digits_together() {
    let Some((tmp, _root, index)) = crate::common::mnist_index(600) else {
        return;
    };
    let (png, grid) = (tmp.path().join("map.png"), tmp.path().join("grid.png"));
    let pca = json_of(&run_ok(
        bin()
            .args(["map", "--json", "--grid-side", "8", "--index"])
            .arg(&index)
            .arg("-o")
            .arg(&png)
            .arg("--decode-grid")
            .arg(&grid),
    ));
    assert_eq!(pca["method"], "pca");
    assert_eq!((&pca["images"], &pca["drawn"]), (&600.into(), &600.into()));
    let points = pca["points"].as_array().unwrap();
    assert_eq!(points.len(), 600);
    let mut ids: Vec<u64> = points.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 600, "every image placed once");
    assert!(points
        .iter()
        .all(|p| p["x"].as_f64().unwrap().is_finite() && p["y"].as_f64().unwrap().is_finite()));
    assert_eq!(pca["label_colours"].as_object().unwrap().len(), 10);
    let explained: Vec<f64> = serde_json::from_value(pca["explained_variance"].clone()).unwrap();
    assert!(
        explained[0] >= explained[1] && explained[1] > 0.0,
        "{explained:?}"
    );

    // The PNG: a capped canvas of cells, each framed in its label's colour.
    let map = image::open(&png).unwrap().to_rgb8();
    let (cells, cell) = (
        pca["grid"]["cells_per_side"].as_u64().unwrap() as u32,
        pca["grid"]["cell_pixels"].as_u64().unwrap() as u32,
    );
    assert_eq!((map.width(), map.height()), (cells * cell, cells * cell));
    assert!(map.width() <= 4096);
    let colours: Vec<[u8; 3]> = pca["label_colours"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| {
            let v = u32::from_str_radix(&c.as_str().unwrap()[1..], 16).unwrap();
            [(v >> 16) as u8, (v >> 8) as u8, v as u8]
        })
        .collect();
    let framed = map.pixels().filter(|p| colours.contains(&p.0)).count();
    assert!(framed > 600 * 4 * 10, "{framed} frame pixels");

    // The decoded grid: 8×8 decoder images (28 px scaled ×2), which change
    // across the plane.
    let drawn = image::open(&grid).unwrap().to_luma8();
    assert_eq!((drawn.width(), drawn.height()), (8 * 56, 8 * 56));
    let tile = |col: u32, row: u32| drawn.view(col * 56, row * 56, 56, 56).to_image();
    let differ = |a: &image::GrayImage, b: &image::GrayImage| {
        a.pixels()
            .zip(b.pixels())
            .map(|(p, q)| (p[0] as f64 - q[0] as f64).abs())
            .sum::<f64>()
            / (56.0 * 56.0)
    };
    assert!(differ(&tile(0, 0), &tile(7, 7)) > 10.0);
    assert!(differ(&tile(0, 7), &tile(7, 0)) > 10.0);

    // The neighbour layout: on the plane, an image's nearest neighbours
    // share its digit far more often than on the PCA plane.
    let neighbours = json_of(&run_ok(
        bin()
            .args(["map", "--method", "neighbours", "--json", "--index"])
            .arg(&index),
    ));
    assert_eq!(neighbours["method"], "neighbours");
    assert_eq!(neighbours["drawn"], 0, "no -o: nothing drawn");
    let (on_pca, on_neighbours) = (
        label_agreement_on_plane(points),
        label_agreement_on_plane(neighbours["points"].as_array().unwrap()),
    );
    assert!(
        on_neighbours > 0.8 && on_neighbours > on_pca + 0.1,
        "5-NN label agreement on the plane: neighbours {on_neighbours:.3}, PCA {on_pca:.3}"
    );
    // Deterministic for a seed.
    let again = json_of(&run_ok(
        bin()
            .args(["map", "--method", "neighbours", "--json", "--index"])
            .arg(&index),
    ));
    assert_eq!(again["points"], neighbours["points"]);

    // A filter maps only what it selects.
    let sevens = json_of(&run_ok(
        bin()
            .args(["map", "--label", "7", "--json", "--index"])
            .arg(&index),
    ));
    let sevens = sevens["points"].as_array().unwrap();
    assert!(!sevens.is_empty() && sevens.iter().all(|p| p["label"] == "7"));

    // Bad requests: nothing selected, a grid of a non-linear map, no output.
    let out = run(bin()
        .args(["map", "--json", "--label", "none-such", "--index"])
        .arg(&index));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no images are selected"));
    let out = run(bin()
        .args(["map", "--method", "neighbours", "--decode-grid"])
        .arg(&grid)
        .arg("--index")
        .arg(&index));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--method pca"));
    let out = run(bin().args(["map", "--index"]).arg(&index));
    assert_eq!(
        out.status.code(),
        Some(2),
        "neither -o, --decode-grid nor --json"
    );
}
