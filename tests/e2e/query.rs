//! `imgsearch query` end to end: self-queries, transformed copies, filters
//! inside the search, removed images, JSON shape.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{assert_ok, bin, json_of, mnist_export, run_ok};

fn query(index: &Path, args: &[&str]) -> Value {
    json_of(&run_ok(
        bin()
            .arg("query")
            .arg("--index")
            .arg(index)
            .arg("--json")
            .args(args),
    ))
}

fn ingest_digits(root: &Path, index: &Path) {
    run_ok(
        bin()
            .arg("ingest")
            .arg(root)
            .arg("--index")
            .arg(index)
            .args(["--model", "digits"]),
    );
}

fn results(v: &Value) -> &Vec<Value> {
    v[0]["results"].as_array().unwrap()
}

#[test]
fn query_finds_itself_copies_respects_filters_and_removals() {
    let Some((tmp, root, index)) = mnist_export(600) else {
        return;
    };
    ingest_digits(&root, &index);

    // An indexed image, by path and as an outside copy: itself first, at ~0.
    let original = root.join("3").join("00018.png");
    let canonical = original.canonicalize().unwrap().display().to_string();
    let v = query(&index, &[original.to_str().unwrap(), "-k", "5"]);
    let hits = results(&v);
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0]["path"], canonical.as_str());
    assert_eq!(hits[0]["rank"], 1);
    assert!(hits[0]["distance"].as_f64().unwrap() < 1e-3);
    for field in ["id", "distance", "similarity", "path", "label"] {
        assert!(hits[0].get(field).is_some(), "missing {field}");
    }
    assert_eq!(
        v[0]["method"], "exact",
        "a 600-image index is scanned exactly"
    );

    // A re-encoded, resized copy (JPEG, 2x) finds its original first, on both paths.
    let copy = tmp.path().join("copy.jpg");
    image::open(&original)
        .unwrap()
        .resize_exact(56, 56, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(&copy)
        .unwrap();
    for method in ["--exact", "--hnsw"] {
        let v = query(&index, &[copy.to_str().unwrap(), "-k", "3", method]);
        assert_eq!(results(&v)[0]["path"], canonical.as_str(), "{method}");
    }

    // Filters run inside the search: exactly k results, all matching.
    for method in ["--exact", "--hnsw"] {
        let v = query(
            &index,
            &[copy.to_str().unwrap(), "-k", "7", "--label", "5", method],
        );
        let hits = results(&v);
        assert_eq!(hits.len(), 7, "{method}");
        assert!(hits.iter().all(|h| h["label"] == "5"));
        let under = root.join("8");
        let v = query(
            &index,
            &[
                copy.to_str().unwrap(),
                "-k",
                "9",
                "--under",
                under.to_str().unwrap(),
                method,
            ],
        );
        assert_eq!(results(&v).len(), 9);
        assert!(results(&v)
            .iter()
            .all(|h| h["path"].as_str().unwrap().contains("/8/")));
    }

    // Removed images never come back.
    let removed: Vec<_> = ["3/00018.png", "3/00030.png", "1/00002.png"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    let removed_names: Vec<String> = removed
        .iter()
        .map(|p| p.canonicalize().unwrap().display().to_string())
        .collect();
    for p in &removed {
        std::fs::remove_file(p).unwrap();
    }
    let out = bin()
        .arg("ingest")
        .arg(&root)
        .arg("--index")
        .arg(&index)
        .output()
        .unwrap();
    assert!(out.status.success());
    for method in ["--exact", "--hnsw"] {
        let v = query(
            &index,
            &[copy.to_str().unwrap(), "-k", "597", "--ef", "600", method],
        );
        let paths: Vec<&str> = results(&v)
            .iter()
            .map(|h| h["path"].as_str().unwrap())
            .collect();
        assert!(paths.len() >= 590, "{method}: {}", paths.len());
        assert!(
            removed_names.iter().all(|r| !paths.contains(&r.as_str())),
            "{method}"
        );
    }

    // The flat vector file is derived: deleted (or torn), it is rewritten
    // from the store and answers exactly as before.
    let before = query(&index, &[copy.to_str().unwrap(), "-k", "20", "--exact"]);
    std::fs::remove_file(index.join("vectors.flat")).unwrap();
    let after = query(&index, &[copy.to_str().unwrap(), "-k", "20", "--exact"]);
    assert_eq!(results(&before), results(&after));
    let len = std::fs::metadata(index.join("vectors.flat")).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(index.join("vectors.flat"))
        .unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let torn = query(&index, &[copy.to_str().unwrap(), "-k", "20", "--exact"]);
    assert_eq!(results(&before), results(&torn));

    // By id, several queries at once, and an unreadable query.
    let v = query(&index, &["--id", "5", "-k", "1"]);
    assert_eq!(results(&v)[0]["id"], 5);
    let out = bin()
        .arg("query")
        .arg("--index")
        .arg(&index)
        .arg(&copy)
        .arg(root.join("7"))
        .arg("missing.png")
        .args(["-k", "2", "--paths-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let lines = String::from_utf8(out.stdout).unwrap().lines().count();
    let sevens = std::fs::read_dir(root.join("7")).unwrap().count();
    assert_eq!(lines, 2 * (1 + sevens));
}

#[test]
fn duplicates_groups_identical_and_near_copies() {
    let Some((_tmp, root, index)) = mnist_export(300) else {
        return;
    };
    let original = root.join("2").join("00001.png");
    std::fs::copy(&original, root.join("2").join("exact-copy.png")).unwrap();
    // A near copy: a few stroke pixels brightened (a change in an empty
    // corner may leave the latent exactly as it was).
    let mut near = image::open(&original).unwrap().to_luma8();
    for (x, y) in [(13, 13), (14, 13), (13, 14), (14, 14)] {
        let v = near.get_pixel(x, y)[0];
        near.put_pixel(x, y, image::Luma([v.saturating_add(60).max(60)]));
    }
    near.save(root.join("2").join("near-copy.png")).unwrap();
    ingest_digits(&root, &index);

    let out = bin()
        .args(["duplicates", "--json", "--threshold", "1.0", "--index"])
        .arg(&index)
        .output()
        .unwrap();
    assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v["groups"].as_array().unwrap();
    let ours = groups
        .iter()
        .find(|g| {
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["path"].as_str().unwrap().ends_with("exact-copy.png"))
        })
        .expect("the copies form a group");
    let members = ours["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| {
            Path::new(m["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["00001.png", "exact-copy.png", "near-copy.png"]);
    assert_eq!(ours["kind"], "similar");
    let sets: Vec<u64> = members
        .iter()
        .map(|m| m["identical_set"].as_u64().unwrap())
        .collect();
    assert_eq!(sets[0], sets[1], "byte-identical files share a set");
    assert_ne!(sets[0], sets[2]);

    // With a zero threshold only the byte-identical pair remains, as "identical".
    let out = bin()
        .args(["duplicates", "--csv", "--threshold", "0", "--index"])
        .arg(&index)
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows.iter().all(|r| r.starts_with("1,identical,0,")),
        "{csv}"
    );
}

#[test]
fn contact_sheet_shows_the_query_and_its_neighbours() {
    let Some((tmp, root, index)) = mnist_export(100) else {
        return;
    };
    ingest_digits(&root, &index);
    let q = root.join("7").join("00000.png");
    let sheet = tmp.path().join("sheet.png");
    let out = bin()
        .arg("query")
        .arg(&q)
        .arg("--index")
        .arg(&index)
        .args(["-k", "3", "--sheet"])
        .arg(&sheet)
        .output()
        .unwrap();
    assert_ok(&out);
    let img = image::open(&sheet).unwrap().to_rgb8();
    let tile = imgsearch::sheet::TILE;
    let (w, h) = (
        imgsearch::sheet::tile_origin(0, 4).0,
        imgsearch::sheet::tile_origin(1, 0).1,
    );
    assert_eq!(img.dimensions(), (w, h), "one row of query + 3 neighbours");
    // The query finds itself first: tile 1 shows the same picture as the
    // query tile (inside the query's frame).
    let ((qx, qy), (nx, ny)) = (
        imgsearch::sheet::tile_origin(0, 0),
        imgsearch::sheet::tile_origin(0, 1),
    );
    for y in 4..tile - 4 {
        for x in 4..tile - 4 {
            assert_eq!(
                img.get_pixel(qx + x, qy + y),
                img.get_pixel(nx + x, ny + y),
                "pixel {x},{y}"
            );
        }
    }
    let expected = imgsearch::sheet::thumbnail(&image::open(&q).unwrap());
    assert_eq!(img.get_pixel(nx + 48, ny + 48), expected.get_pixel(48, 48));
}

/// The record catalogue lets a one-shot query answer from the derived
/// files alone. Shown through sled's lock: while `serve` holds the store,
/// only a query that never opens it can answer. A catalogue it cannot
/// trust (torn, left dirty, missing, or from another moment) sends the
/// query to the store, which repairs it.
#[test]
fn a_cold_query_reads_the_record_catalogue_and_opens_the_store_only_when_it_must() {
    use crate::common::http::Server;
    let Some((_tmp, root, index)) = mnist_export(300) else {
        return;
    };
    ingest_digits(&root, &index);
    let bin_path = Path::new(env!("CARGO_BIN_EXE_imgsearch"));
    let probe = crate::common::files_under(&root.join("4")).remove(0);
    let probe = probe.to_str().unwrap().to_string();
    let ask = || query(&index, &[&probe, "-k", "8"]);
    let baseline = ask();
    assert_eq!(results(&baseline).len(), 8);
    let catalogue = index.join("records.cat");
    let store_held = |why: &str| {
        let out = bin()
            .arg("query")
            .arg("--index")
            .arg(&index)
            .arg(&probe)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{why}: answered without the store");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("in use by another imgsearch"),
            "{why}: {stderr}"
        );
    };

    // Everything but sizes on disk (serve's open of the store grows `db/`).
    let status = || {
        let mut v = json_of(&run_ok(
            bin().arg("status").arg("--index").arg(&index).arg("--json"),
        ));
        let fields = v.as_object_mut().unwrap();
        fields.remove("files").unwrap();
        fields.remove("bytes_on_disk").unwrap();
        v
    };
    let before = status();

    // Serve holds the store; the query answers as before, filters included,
    // and `status` says what it said.
    let mut server = Server::start(bin_path, &index, &[]);
    assert_eq!(results(&ask()), results(&baseline));
    let held = status();
    assert_eq!(held, before);
    assert_eq!(held["images"], 300);
    assert_eq!(held["schema_version"], 5);
    assert_eq!(held["model"]["name"], "digits");
    let canonical_root = root.canonicalize().unwrap();
    assert_eq!(held["roots"][0], canonical_root.to_str().unwrap());
    let labelled: u64 = held["labels"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(labelled, 300);
    let sevens = query(&index, &[&probe, "-k", "5", "--label", "7"]);
    assert_eq!(results(&sevens).len(), 5);
    assert!(results(&sevens).iter().all(|h| h["label"] == "7"));
    let by_id = query(&index, &["--id", "3", "-k", "1"]);
    assert_eq!(results(&by_id)[0]["id"], 3);
    // The graph too: `--hnsw` reads the saved graph beside the catalogue
    // and finds the same images (300 points: the walk misses none).
    let paths = |v: &Value| -> Vec<String> {
        results(v)
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_string())
            .collect()
    };
    let by_graph = query(&index, &[&probe, "-k", "8", "--hnsw"]);
    assert_eq!(by_graph[0]["method"], "hnsw");
    assert_eq!(paths(&by_graph), paths(&baseline));
    // A graph that is not there (or is behind) sends `--hnsw` to the
    // store, which serve holds; plain queries still answer.
    let graph_file = index.join("graph.hnsw");
    let saved_graph = std::fs::read(&graph_file).unwrap();
    std::fs::remove_file(&graph_file).unwrap();
    let out = bin()
        .args(["query", "--hnsw", "--index"])
        .arg(&index)
        .arg(&probe)
        .output()
        .unwrap();
    assert!(!out.status.success(), "--hnsw answered without a graph");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another imgsearch"));
    assert_eq!(results(&ask()), results(&baseline));
    std::fs::write(&graph_file, &saved_graph).unwrap();

    // Torn, or marked dirty (a writer killed mid-commit): not trusted.
    let len = std::fs::metadata(&catalogue).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&catalogue)
        .unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);
    store_held("torn");
    server.terminate(Duration::from_secs(30));
    // Without serve the store opens, answers alike, and repairs the catalogue.
    assert_eq!(results(&ask()), results(&baseline));
    assert_eq!(std::fs::metadata(&catalogue).unwrap().len(), len);
    let mut server = Server::start(bin_path, &index, &[]);
    assert_eq!(results(&ask()), results(&baseline), "repaired");
    let mut bytes = std::fs::read(&catalogue).unwrap();
    bytes[8] = 1; // the header's state: dirty
    std::fs::write(&catalogue, &bytes).unwrap();
    store_held("dirty");
    bytes[8] = 0;
    std::fs::write(&catalogue, &bytes).unwrap();
    assert_eq!(results(&ask()), results(&baseline), "clean again");
    // Damaged where the query reads: a flipped bit in the first hit's path
    // (checked against `records.sum` as it is read), then in the flat
    // file's rows (checked block by block as they are scanned).
    let strings_file = index.join("records.str");
    let strings = std::fs::read(&strings_file).unwrap();
    let first = results(&baseline)[0]["path"].as_str().unwrap().to_string();
    let at = strings
        .windows(first.len())
        .position(|w| w == first.as_bytes())
        .unwrap();
    let mut damaged = strings.clone();
    damaged[at + first.len() - 5] ^= 0x01;
    std::fs::write(&strings_file, &damaged).unwrap();
    store_held("a damaged path");
    std::fs::write(&strings_file, &strings).unwrap();
    let flat_file = index.join("vectors.flat");
    let flat = std::fs::read(&flat_file).unwrap();
    let mut damaged = flat.clone();
    damaged[32 + 8 * 72 + 20] ^= 0x01;
    std::fs::write(&flat_file, &damaged).unwrap();
    store_held("damaged rows");
    std::fs::write(&flat_file, &flat).unwrap();
    assert_eq!(results(&ask()), results(&baseline), "put back");
    server.terminate(Duration::from_secs(30));

    // Missing: rebuilt by the next query.
    std::fs::remove_file(&catalogue).unwrap();
    std::fs::remove_file(index.join("records.str")).unwrap();
    assert_eq!(results(&ask()), results(&baseline));
    assert!(catalogue.exists());

    // Stale: the catalogue from before an image was removed, put back. Its
    // rows still match the flat file's (removed rows stay until
    // compaction), but its generation does not, so the removed image is
    // never answered from it.
    let old = (
        std::fs::read(&catalogue).unwrap(),
        std::fs::read(index.join("records.str")).unwrap(),
    );
    let gone = results(&baseline)[1]["path"].as_str().unwrap().to_string();
    std::fs::remove_file(&gone).unwrap();
    ingest_digits(&root, &index);
    std::fs::write(&catalogue, &old.0).unwrap();
    std::fs::write(index.join("records.str"), &old.1).unwrap();
    let all = query(&index, &[&probe, "-k", "300"]);
    let paths: Vec<&str> = results(&all)
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 299);
    assert!(!paths.contains(&gone.as_str()));

    // That query repaired the catalogue; through it, the graph keeps the
    // removed image as a point and never answers it (a tombstone from the
    // catalogue), while serve holds the store.
    let server = Server::start(bin_path, &index, &[]);
    let all = query(&index, &[&probe, "-k", "300", "--hnsw", "--ef", "400"]);
    assert_eq!(all[0]["method"], "hnsw");
    let found: Vec<&str> = results(&all)
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert_eq!(found.len(), 299);
    assert!(!found.contains(&gone.as_str()));
    drop(server);
}
