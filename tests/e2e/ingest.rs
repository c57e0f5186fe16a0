//! `imgsearch ingest` end to end on real image files: counts, incremental
//! changes, broken files, and kill -9 at random moments.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use imgsearch::index::Index;
use serde_json::Value;

use crate::common::{assert_ok, bin, json_of, kill_at_fractions, mnist_export, run_ok};

fn ingest(root: &Path, index: &Path, extra: &[&str]) -> (Option<i32>, Value) {
    let out = bin()
        .arg("ingest")
        .arg(root)
        .arg("--index")
        .arg(index)
        .args(["--model", "digits", "--json"])
        .args(extra)
        .output()
        .unwrap();
    (out.status.code(), json_of(&out))
}

fn status(index: &Path) -> Value {
    let out = bin()
        .args(["status", "--json", "--index"])
        .arg(index)
        .output()
        .unwrap();
    assert_ok(&out);
    json_of(&out)
}

/// Writes `n` distinct little images in several formats under `dir`.
fn generated_images(dir: &Path, n: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let img = image::RgbImage::from_fn(40 + i, 30, |x, y| {
                image::Rgb([
                    (x * 5 + i * 17) as u8,
                    (y * 7 + i * 3) as u8,
                    ((x ^ y) * 3) as u8,
                ])
            });
            let (ext, fmt) = [
                ("png", image::ImageFormat::Png),
                ("jpg", image::ImageFormat::Jpeg),
                ("gif", image::ImageFormat::Gif),
                ("webp", image::ImageFormat::WebP),
            ][i as usize % 4];
            let path = dir.join(format!("gen{i}.{ext}"));
            let dynimg = image::DynamicImage::ImageRgb8(img);
            let dynimg = if fmt == image::ImageFormat::Gif {
                image::DynamicImage::ImageRgba8(dynimg.to_rgba8())
            } else {
                dynimg
            };
            dynimg.save_with_format(&path, fmt).unwrap();
            path
        })
        .collect()
}

fn png_bytes(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([(x as u8).wrapping_mul(seed) ^ y as u8])
    })
    .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
    .unwrap();
    out
}

#[test]
fn ingest_counts_incremental_changes_and_bad_files() {
    let Some((_tmp, root, index)) = mnist_export(200) else {
        return;
    };
    let generated = generated_images(&root.join("generated"), 12);
    let broken = root.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("zero.png"), b"").unwrap();
    std::fs::write(broken.join("garbage.jpg"), b"this is text, not a jpeg").unwrap();
    let png = png_bytes(64, 64, 3);
    std::fs::write(broken.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(broken.join("huge.png"), png_bytes(1500, 1000, 5)).unwrap(); // 1.5 MP, over the 1 MP cap below
    std::fs::write(broken.join("notes.txt"), b"ignored: not an image extension").unwrap();
    // A non-UTF-8 file name holding a good image.
    use std::os::unix::ffi::OsStrExt;
    let odd = root
        .join("generated")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    std::fs::write(&odd, png_bytes(28, 28, 9)).unwrap();
    let good = 200 + 12 + 1;

    let (code, r) = ingest(&root, &index, &["--max-megapixels", "1"]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["scanned"], good + 4);
    assert_eq!(r["added"], good);
    assert_eq!(r["encoded"], good);
    assert_eq!(r["failed"], 4);
    let failures: BTreeMap<String, String> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                Path::new(f["path"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(failures["zero.png"].contains("empty"), "{failures:?}");
    assert!(
        failures["huge.png"].contains("above the limit"),
        "{failures:?}"
    );
    assert!(failures.contains_key("garbage.jpg") && failures.contains_key("truncated.png"));

    let s = status(&index);
    assert_eq!(s["images"], good);
    assert_eq!(s["model"]["name"], "digits");
    assert_eq!(s["labels"]["generated"], 13);
    let digits: u64 = (0..10)
        .map(|d| s["labels"][d.to_string()].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(digits, 200);
    assert_eq!(s["graph_points"], good);
    // What each part takes on disk, and the graph's parameters.
    assert_eq!(
        s["graph_params"],
        serde_json::json!({"m": 16, "ef_construction": 128})
    );
    let files: BTreeMap<String, u64> = s["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(files["db/"] > 0 && files["vectors.flat"] > 0, "{files:?}");
    assert!(files.contains_key("graph.hnsw"), "{files:?}");
    assert_eq!(
        files.values().sum::<u64>(),
        s["bytes_on_disk"].as_u64().unwrap()
    );
    let table = run_ok(bin().arg("status").arg("--index").arg(&index));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("graph       HNSW, M 16, ef_construction 128"),
        "{table}"
    );
    assert!(table.contains("  vectors.flat"), "{table}");

    // Nothing changed: nothing is decoded or encoded again.
    let (code, r) = ingest(&root, &index, &["--max-megapixels", "1"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        (
            r["unchanged"].as_u64(),
            r["encoded"].as_u64(),
            r["added"].as_u64()
        ),
        (Some(good), Some(0), Some(0))
    );

    // Modify one, rename one, delete one, add one, copy one.
    std::fs::write(&generated[0], png_bytes(33, 33, 77)).unwrap();
    let moved_to = root.join("7").join("moved-here.gif");
    std::fs::rename(&generated[2], &moved_to).unwrap();
    std::fs::remove_file(&generated[3]).unwrap();
    std::fs::write(
        root.join("generated").join("new.png"),
        png_bytes(20, 40, 13),
    )
    .unwrap();
    std::fs::copy(&generated[1], root.join("generated").join("copy-of-1.jpg")).unwrap();
    let (code, r) = ingest(&root, &index, &["--max-megapixels", "1"]);
    assert_eq!(code, Some(0));
    let counts: Vec<u64> = ["updated", "renamed", "removed", "added", "encoded"]
        .iter()
        .map(|k| r[*k].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        [1, 1, 1, 2, 2],
        "updated, renamed, removed, added (new + copy), encoded (modified + new): {r}"
    );
    assert_eq!(r["unchanged"], good - 3);
    let s = status(&index);
    assert_eq!(s["images"], good + 1);
    assert!(s["labels"]["7"].as_u64().unwrap() > 0, "{s}");
    // Graph and flat file: every live record is a point; replaced and
    // removed ones are tombstones.
    for held in ["graph_points", "flat_rows"] {
        assert_eq!(
            s[held].as_u64().unwrap() - s["tombstones"].as_u64().unwrap(),
            s["images"].as_u64().unwrap(),
            "{held}: {s}"
        );
    }

    // The moved image kept its record and embedding; each image finds itself.
    let idx = Index::open(&index, None, false).unwrap();
    let moved_id = idx
        .store
        .id_for_path(moved_to.canonicalize().unwrap().as_os_str().as_bytes())
        .unwrap()
        .expect("moved file stored");
    assert_eq!(
        idx.store
            .record(moved_id)
            .unwrap()
            .unwrap()
            .label
            .as_deref(),
        Some("7")
    );
    let vectors: Vec<(u64, Vec<f32>)> = idx
        .store
        .vectors_after(None)
        .take(50)
        .map(Result::unwrap)
        .collect();
    idx.load_graph().unwrap();
    let ann = idx.ann();
    let graph = ann.loaded_graph().unwrap();
    for (id, v) in vectors {
        let hits = graph.search(&v, 1, 64);
        assert_eq!(
            hits[0].1, 0.0,
            "id {id} should find an identical vector first"
        );
    }
    drop(ann);
    drop(idx);

    // Compact drops the tombstones, and rewrites the database without the
    // old versions of the records sled was holding; every record stays.
    let export = || crate::common::export_csv(&index);
    let before = export();
    let out = bin()
        .args(["compact", "--json", "--index"])
        .arg(&index)
        .output()
        .unwrap();
    assert_ok(&out);
    let compacted = json_of(&out);
    assert_eq!(compacted["store_rewritten"], true, "{compacted}");
    let (was, is) = (
        compacted["store_bytes_before"].as_u64().unwrap(),
        compacted["store_bytes_after"].as_u64().unwrap(),
    );
    assert!(0 < is && is < was, "{compacted}");
    assert!(!index.join("db.rewrite").exists());
    assert_eq!(export(), before);
    let s = status(&index);
    assert_eq!(
        (
            s["tombstones"].as_u64(),
            s["graph_points"].as_u64(),
            s["flat_rows"].as_u64()
        ),
        (Some(0), s["images"].as_u64(), s["images"].as_u64())
    );
}

#[test]
fn a_different_model_is_refused_and_nothing_ingestable_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imgs");
    generated_images(&root, 3);
    let index = tmp.path().join("idx");
    let (code, _) = ingest(&root, &index, &[]);
    assert_eq!(code, Some(0));
    let out = bin()
        .arg("ingest")
        .arg(&root)
        .arg("--index")
        .arg(&index)
        .args(["--model", "fashion"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built with model `digits`") && err.contains("reindex"),
        "{err}"
    );

    // Re-embedding under the other model makes it the index's model.
    let out = bin()
        .args(["reindex", "--json", "--model", "fashion", "--index"])
        .arg(&index)
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(json_of(&out)["roots"][0]["added"], 3);
    let s = status(&index);
    assert_eq!(
        (s["model"]["name"].as_str(), s["images"].as_u64()),
        (Some("fashion"), Some(3))
    );
    let out = bin()
        .arg("ingest")
        .arg(&root)
        .arg("--index")
        .arg(&index)
        .args(["--model", "fashion"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.png"), b"nope").unwrap();
    let (code, r) = ingest(&bad, &tmp.path().join("idx2"), &[]);
    assert_eq!(code, Some(1), "nothing could be ingested: {r}");
    assert_eq!(r["failed"], 1);
}

/// Path → embedding of every live record.
fn contents(index: &Path) -> BTreeMap<Vec<u8>, Vec<f32>> {
    crate::common::records(index)
        .into_iter()
        .map(|(path, (_, vector))| (path, vector))
        .collect()
}

#[test]
fn kill_9_at_random_moments_then_rerun_equals_an_uninterrupted_run() {
    let Some((tmp, root, _)) = mnist_export(1500) else {
        return;
    };
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    let (code, _) = ingest(&root, &reference, &[]);
    let whole = started.elapsed();
    assert_eq!(code, Some(0));
    let want = contents(&reference);
    assert_eq!(want.len(), 1500);

    // Moments spread over the run, from start-up to the end.
    let crashed = tmp.path().join("crashed");
    kill_at_fractions(whole, &[0.03, 0.2, 0.1, 0.3, 0.15, 0.22], || {
        let mut ingest = bin();
        ingest
            .arg("ingest")
            .arg(&root)
            .arg("--index")
            .arg(&crashed)
            .args(["--model", "digits"]);
        ingest
    });
    let (code, r) = ingest(&root, &crashed, &[]);
    assert_eq!(code, Some(0), "{r}");
    let got = contents(&crashed);
    assert_eq!(got.len(), want.len(), "no duplicates, no missing records");
    for (path, v) in &want {
        let g = got
            .get(path)
            .unwrap_or_else(|| panic!("missing {}", String::from_utf8_lossy(path)));
        let diff = v
            .iter()
            .zip(g)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff < 1e-4,
            "embedding of {} differs by {diff}",
            String::from_utf8_lossy(path)
        );
    }
    // The rerun leaves the graph whole and saved, even when a kill came
    // after the last batch committed and left it nothing to insert.
    let after = status(&crashed);
    assert_eq!(after["graph_points"], after["flat_rows"], "{after}");
    assert_eq!(after["flat_rows"], 1500, "{after}");
}
