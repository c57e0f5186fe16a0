//! kNN classification end to end: `ingest` labels (folders and CSV),
//! `classify`, `eval` and `status`, on exported MNIST images.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{bin, json_cmd, mnist_split, run, run_ok};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn ingest(root: &Path, index: &Path, extra: &[&OsStr]) -> Value {
    let mut args = vec![root.as_os_str(), os("--model"), os("digits")];
    args.extend_from_slice(extra);
    json_cmd("ingest", index, &args)
}

/// The sum of `field` over a JSON array of objects.
fn sum_of(items: &Value, field: &str) -> u64 {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[field].as_u64().unwrap())
        .sum()
}

/// MNIST train and test images exported to a new folder, and the train
/// part ingested with `digits`: (folder, train, test, index).
fn indexed_split(
    train_n: usize,
    test_n: usize,
) -> Option<(tempfile::TempDir, PathBuf, PathBuf, PathBuf)> {
    let tmp = tempfile::tempdir().unwrap();
    let [train, test, index] = ["train", "test", "idx"].map(|d| tmp.path().join(d));
    mnist_split(&train, "train", train_n)?;
    mnist_split(&test, "test", test_n)?;
    ingest(&train, &index, &[]);
    Some((tmp, train, test, index))
}

#[test]
fn eval_agrees_with_classify_and_beats_chance() {
    let Some((_tmp, _train, test, index)) = indexed_split(1500, 300) else {
        return;
    };

    let report = json_cmd(
        "eval",
        &index,
        &[
            os("--test"),
            test.as_os_str(),
            os("--baseline"),
            os("raw"),
            os("--exact"),
        ],
    );
    assert_eq!(report["images"], 300);
    assert_eq!(report["voters"], 1500);
    let latent = &report["latent"];
    let accuracy = latent["accuracy"].as_f64().unwrap();
    // Ten classes: chance is 10%. 1,500 voters still give about 90%.
    assert!(accuracy > 0.8, "latent kNN accuracy {accuracy}");
    let confusion: u64 = latent["confusion"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, 300);
    let support = sum_of(&latent["per_class"], "support");
    assert_eq!(support, 300);
    let raw = report["raw"]["accuracy"].as_f64().unwrap();
    assert!(raw > 0.6 && report["raw"]["dim"] == 784, "raw {raw}");
    let check = &report["exact_check"];
    assert_eq!(check["exact_accuracy"].as_f64().unwrap(), accuracy);
    assert!(check["agreement"].as_f64().unwrap() > 0.95, "{check}");

    // classify, image by image, gets the same share right.
    let answers = json_cmd("classify", &index, &[test.as_os_str()]);
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 300);
    let mut correct = 0;
    for a in answers {
        let truth = Path::new(a["image"].as_str().unwrap())
            .parent()
            .and_then(|p| p.file_name())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let p = &a["prediction"];
        assert_eq!(p["voters"].as_array().unwrap().len(), 7);
        assert_eq!(sum_of(&p["votes"], "votes"), 7);
        correct += (p["label"].as_str() == Some(truth.as_str())) as u64;
    }
    assert_eq!(correct, latent["correct"].as_u64().unwrap());
}

#[test]
fn unlabelled_images_never_vote_and_csv_labels_replace_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, index) = (tmp.path().join("train"), tmp.path().join("idx"));
    if mnist_split(&train, "train", 300).is_none() {
        return;
    }
    // Unlabelled near-copies of a query, directly in the root: they are its
    // nearest images, yet may not vote.
    let query = std::fs::read_dir(train.join("3"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let img = image::open(&query).unwrap().to_luma8();
    for i in 0..10u8 {
        let mut copy = img.clone();
        copy.put_pixel(i as u32, 0, image::Luma([i * 20 + 1]));
        copy.save(train.join(format!("copy{i}.png"))).unwrap();
    }
    ingest(&train, &index, &[]);
    let status = json_cmd("status", &index, &[]);
    assert_eq!(
        (status["images"].as_u64(), status["unlabelled"].as_u64()),
        (Some(310), Some(10))
    );

    let q = tmp.path().join("query.png");
    std::fs::copy(&query, &q).unwrap();
    let unlabelled_query = json_cmd("query", &index, &[q.as_os_str(), os("-k"), os("5")]);
    let nearest = unlabelled_query[0]["results"].as_array().unwrap();
    // The stored original and its copies crowd the plain neighbour list.
    assert!(nearest.iter().filter(|h| h["label"].is_null()).count() >= 3);
    let answer = json_cmd("classify", &index, &[q.as_os_str(), os("--weighted")]);
    let p = &answer[0]["prediction"];
    let voters = p["voters"].as_array().unwrap();
    assert_eq!(voters.len(), 7);
    assert!(voters.iter().all(|v| v["label"].is_string()), "{voters:?}");
    // The query's bytes are stored (as train/3/...): that copy is the same
    // image, so it does not vote either.
    let stored = std::fs::canonicalize(&query).unwrap();
    assert!(voters
        .iter()
        .all(|v| Path::new(v["path"].as_str().unwrap()) != stored));
    let top = &p["votes"][0];
    assert_eq!(p["label"], top["label"]);
    let weight: f64 = p["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["weight"].as_f64().unwrap())
        .sum();
    let share = top["weight"].as_f64().unwrap() / weight;
    assert!((p["confidence"].as_f64().unwrap() - share).abs() < 1e-9);

    // An indexed image does not vote for itself.
    let own = json_cmd("classify", &index, &[query.as_os_str()]);
    let own_path = std::fs::canonicalize(&query).unwrap();
    assert!(own[0]["prediction"]["voters"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| Path::new(v["path"].as_str().unwrap()) != own_path));

    // A CSV relabels without re-encoding; unlisted images lose their label.
    let csv = tmp.path().join("labels.csv");
    let mut rows = String::from("path,label\n");
    for (i, e) in std::fs::read_dir(train.join("3")).unwrap().enumerate() {
        let name = e.unwrap().file_name().into_string().unwrap();
        rows.push_str(&format!(
            "3/{name},{}\n",
            if i % 2 == 0 { "three" } else { "drei" }
        ));
    }
    rows.push_str("missing/none.png,ghost\n");
    std::fs::write(&csv, rows).unwrap();
    let report = ingest(&train, &index, &[os("--labels"), csv.as_os_str()]);
    assert_eq!(report["encoded"], 0);
    assert_eq!(report["labels_unmatched"], 1);
    let status = json_cmd("status", &index, &[]);
    let labels = status["labels"].as_object().unwrap();
    let threes = std::fs::read_dir(train.join("3")).unwrap().count() as u64;
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_eq!(
        labels["three"].as_u64().unwrap() + labels["drei"].as_u64().unwrap(),
        threes
    );
    assert_eq!(status["unlabelled"].as_u64().unwrap(), 310 - threes);
    let answer = json_cmd("classify", &index, &[q.as_os_str()]);
    let p = &answer[0]["prediction"];
    assert!(
        ["three", "drei"].contains(&p["label"].as_str().unwrap()),
        "{p}"
    );
    assert_eq!(sum_of(&p["votes"], "votes"), 7);
}

#[test]
fn unknown_test_labels_and_unlabelled_indexes_are_reported() {
    let Some((tmp, _train, test, index)) = indexed_split(200, 20) else {
        return;
    };
    std::fs::rename(test.join("7"), test.join("seven")).unwrap();
    let out = run(bin()
        .arg("eval")
        .arg("--index")
        .arg(&index)
        .arg("--test")
        .arg(&test));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("labels the index does not") && err.contains("\"seven\""),
        "{err}"
    );

    // An index without labels: nothing can vote, and the error says how to fix it.
    let flat = tmp.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for e in std::fs::read_dir(test.join("1")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, flat.join(p.file_name().unwrap())).unwrap();
    }
    let bare = tmp.path().join("bare");
    ingest(&flat, &bare, &[]);
    let out = run(bin()
        .arg("classify")
        .arg("--index")
        .arg(&bare)
        .arg(test.join("1")));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no labelled images") && err.contains("--labels"),
        "{err}"
    );
    run_ok(bin().arg("status").arg("--index").arg(&bare));
}

/// A query file whose name is not UTF-8 and whose bytes are also indexed
/// (under another name): the indexed copy must not vote for it. The copy
/// is found by the query's content hash, which once came from re-reading
/// the file by its lossy display name, and so failed for such names.
#[test]
fn a_copy_does_not_vote_for_a_query_whose_name_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let Some((tmp, train, _test, index)) = indexed_split(200, 0) else {
        return;
    };
    let original = crate::common::files_under(&train)[0].clone();
    let query_dir = tmp.path().join("queries");
    std::fs::create_dir_all(&query_dir).unwrap();
    let query = query_dir.join(OsStr::from_bytes(b"copy-\xff.png"));
    std::fs::copy(&original, &query).unwrap();
    let out = json_cmd("classify", &index, &[query.as_os_str(), os("-k"), os("7")]);
    let prediction = &out[0]["prediction"];
    let voters = prediction["voters"].as_array().unwrap();
    assert_eq!(voters.len(), 7, "{out}");
    assert!(
        voters
            .iter()
            .all(|v| v["path"] != original.to_str().unwrap()),
        "the indexed copy voted: {out}"
    );
}
