//! `anomalies` end to end, a small version of the seeds' experiment: MNIST
//! test digits and a few Fashion-MNIST items ingested with `digits`, then
//! ranked by the reconstruction errors stored at ingest.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{bin, data, json_cmd, mnist_split, run, run_ok};

const DIGITS: usize = 200;
const ODD: usize = 8;

/// `imgs/<digit>/*.png` plus `imgs/odd/*.png` (the first Fashion-MNIST test
/// items: boot, pullover, trousers, shirt, coat), ingested with `digits`.
fn fixture() -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let fashion = data("fashion-mnist")?;
    let tmp = tempfile::tempdir().unwrap();
    let (root, index) = (tmp.path().join("imgs"), tmp.path().join("idx"));
    mnist_split(&root, "test", DIGITS)?;
    let staging = tmp.path().join("fashion");
    run_ok(
        bin()
            .args(["dataset", "export", "fashion-mnist"])
            .arg(&fashion)
            .arg("--out")
            .arg(&staging)
            .args(["--split", "test", "--limit", &ODD.to_string()]),
    );
    let odd = root.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    for class in std::fs::read_dir(&staging).unwrap() {
        for f in std::fs::read_dir(class.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, odd.join(f.file_name().unwrap())).unwrap();
        }
    }
    json_cmd(
        "ingest",
        &index,
        &[
            root.as_os_str(),
            OsStr::new("--model"),
            OsStr::new("digits"),
        ],
    );
    Some((tmp, root, index))
}

fn anomalies(index: &Path, args: &[&str]) -> Value {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    json_cmd("anomalies", index, &args)
}

fn selected(report: &Value) -> &Vec<Value> {
    report["selected"].as_array().unwrap()
}

fn is_odd(item: &Value) -> bool {
    item["label"] == "odd"
}

#[test]
fn non_digits_rank_first_and_separate_cleanly() {
    let Some((_tmp, root, index)) = fixture() else {
        return;
    };
    let all = anomalies(&index, &["--top", "100000"]);
    let ranked = selected(&all);
    assert_eq!(ranked.len(), DIGITS + ODD);
    assert_eq!(all["scored"], DIGITS + ODD);
    // Every inserted item is in the top ODD.
    let top: Vec<&Value> = ranked.iter().take(ODD).collect();
    assert!(top.iter().all(|s| is_odd(s)), "top {ODD}: {top:#?}");
    // Scores descend and are the stored errors (one model).
    let scores: Vec<f64> = ranked
        .iter()
        .map(|s| s["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(ranked[0]["errors"][0], ranked[0]["score"]);
    let odd: Vec<bool> = ranked.iter().map(is_odd).collect();
    let f32s: Vec<f32> = scores.iter().map(|&s| s as f32).collect();
    assert!(imgsearch::anomaly::auroc(&f32s, &odd) >= 0.99);
    // Percentiles: the top image is above all others.
    let pct = ranked[0]["percentile"].as_f64().unwrap();
    assert!((pct - 100.0 * (DIGITS + ODD - 1) as f64 / (DIGITS + ODD) as f64).abs() < 1e-9);

    // --threshold keeps exactly the images at or above it.
    let bar = scores[5];
    let over = anomalies(&index, &["--threshold", &bar.to_string()]);
    assert_eq!(
        selected(&over).len(),
        scores.iter().filter(|&&s| s >= bar).count()
    );
    // --percentile 98: the top 2% (nearest rank), here 5 of 208.
    let p98 = anomalies(&index, &["--percentile", "98"]);
    assert_eq!(selected(&p98).len(), 5);
    // --under and --label filter before ranking.
    let under = anomalies(&index, &["--under", root.join("odd").to_str().unwrap()]);
    assert_eq!(under["scored"], ODD);
    let threes = anomalies(&index, &["--label", "3", "--top", "1000"]);
    assert!(selected(&threes).iter().all(|s| s["label"] == "3"));
    assert!(threes["scored"].as_u64().unwrap() > 10);
}

#[test]
fn per_label_scores_several_models_checks_and_sheet() {
    let Some((tmp, root, index)) = fixture() else {
        return;
    };
    // Per-label z-scores average zero within each label.
    let z = anomalies(&index, &["--by-label", "--top", "1000"]);
    let threes: Vec<f64> = selected(&z)
        .iter()
        .filter(|s| s["label"] == "3")
        .map(|s| s["score"].as_f64().unwrap())
        .collect();
    assert!(threes.iter().sum::<f64>().abs() / (threes.len() as f64) < 1e-4);

    // Two models: the index's errors are stored, the other's re-read; the
    // combined score is each error over its model's median, averaged.
    let both = anomalies(&index, &["--models", "digits,fashion", "--top", "1000"]);
    let models = both["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["stored"], true);
    assert_eq!(models[1]["stored"], false);
    let medians: Vec<f64> = models
        .iter()
        .map(|m| m["median_error"].as_f64().unwrap())
        .collect();
    let first = &selected(&both)[0];
    let e: Vec<f64> = first["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let expect = (e[0] / medians[0] + e[1] / medians[1]) / 2.0;
    assert!((first["score"].as_f64().unwrap() - expect).abs() < 1e-4 * expect);
    let max = anomalies(&index, &["--models", "digits,fashion", "--combine", "max"]);
    let m = &selected(&max)[0];
    let e: Vec<f64> = m["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let expect = (e[0] / medians[0]).max(e[1] / medians[1]);
    assert!((m["score"].as_f64().unwrap() - expect).abs() < 1e-4 * expect);

    // --check: a checkerboard (nothing like a digit) scores above the
    // whole index; an indexed digit somewhere below; an unreadable file is
    // an error for that file only (exit 3).
    let block = tmp.path().join("checker.png");
    image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([((x / 4 + y / 4) % 2 * 255) as u8])
    })
    .save(&block)
    .unwrap();
    let junk = tmp.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let digit = first_file(&root.join("1"));
    let out = run(bin()
        .args(["anomalies", "--json", "--index"])
        .arg(&index)
        .arg("--check")
        .args([&block, &digit, &junk]));
    assert_eq!(out.status.code(), Some(3));
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = checks["checks"].as_array().unwrap();
    assert_eq!(checks[0]["percentile"], 100.0);
    assert!(checks[1]["percentile"].as_f64().unwrap() < 90.0);
    // The path is its own field; the error says why, without repeating it.
    assert!(checks[2]["path"].as_str().unwrap().ends_with("junk.png"));
    let error = checks[2]["error"].as_str().unwrap();
    assert!(error.contains("not a decodable image"), "{error}");
    assert!(!error.contains("junk.png"), "{error}");

    // --sheet: one captioned tile per reported image.
    let sheet = tmp.path().join("odd.png");
    run_ok(
        bin()
            .args(["anomalies", "--top", "8", "--index"])
            .arg(&index)
            .arg("--sheet")
            .arg(&sheet),
    );
    let (w, h) = image::image_dimensions(&sheet).unwrap();
    // Eight tiles in one row: the sheet ends where a ninth column and a
    // second row would start.
    assert_eq!((w, h), imgsearch::sheet::tile_origin(1, 8));
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let Some((tmp, _root, index)) = fixture() else {
        return;
    };
    let out = run(bin()
        .args(["anomalies", "--index"])
        .arg(tmp.path().join("nowhere")));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no index at"));
    let out = run(bin()
        .args(["anomalies", "--models", "digits,nosuchmodel", "--index"])
        .arg(&index));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchmodel"));
    let out = run(bin()
        .args(["anomalies", "--top", "3", "--threshold", "0.1", "--index"])
        .arg(&index));
    assert_eq!(out.status.code(), Some(2));
    let out = run(bin()
        .args(["anomalies", "--label", "nosuchlabel", "--index"])
        .arg(&index));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no images to score"));
}

fn first_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.remove(0)
}
