//! `import`: Parquet shards (from `embed --out` and `export --format
//! parquet`) into an index, compared with `ingest` of the same images;
//! idempotence, model checks, replaced paths, and kill -9.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use serde_json::Value;

use crate::common::{
    assert_same_records, bin, ingest_digits, json_of, kill_at_fractions, mnist_export, records,
    run, run_ok,
};
use imgsearch::model::Model;
use imgsearch::shards::{write_shard_file, Shard, ShardError, ShardMeta, ShardRow};

fn import(parts: &[&Path], index: &Path) -> Output {
    run(bin()
        .arg("import")
        .args(parts)
        .arg("--index")
        .arg(index)
        .arg("--json"))
}

fn import_ok(parts: &[&Path], index: &Path) -> Value {
    let out = import(parts, index);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)
}

fn embed(root: &Path, out: &Path, shard: &str, model: &str) {
    run_ok(
        bin()
            .args(["embed", "--model", model, "--shard", shard, "--out"])
            .arg(out)
            .arg(root),
    );
}

/// The paths of the 10 nearest indexed images to `query`.
fn top10(index: &Path, query: &Path) -> Vec<String> {
    let out = json_of(&run_ok(
        bin()
            .args(["query", "--json", "-k", "10", "--index"])
            .arg(index)
            .arg(query),
    ));
    out[0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["path"].as_str().unwrap().to_string())
        .collect()
}

fn status(index: &Path) -> Value {
    json_of(&run_ok(
        bin().args(["status", "--json", "--index"]).arg(index),
    ))
}

#[test]
fn shards_imported_give_the_index_ingest_gives_and_import_is_idempotent() {
    let Some((tmp, root, reference)) = mnist_export(600) else {
        return;
    };
    ingest_digits(&root, &reference);
    let want = records(&reference);
    assert_eq!(want.len(), 600);

    // Three shards, imported into a new index: the model comes from them.
    let parts = tmp.path().join("parts");
    for i in 0..3 {
        embed(&root, &parts, &format!("{i}/3"), "digits");
    }
    let imported = tmp.path().join("imported");
    let report = import_ok(&[&parts], &imported);
    assert_eq!(
        (&report["rows"], &report["added"], &report["model"]),
        (&Value::from(600), &Value::from(600), &Value::from("digits")),
        "{report}"
    );
    assert_same_records(&want, &imported);
    let queries: Vec<PathBuf> = crate::common::files_under(&root)
        .into_iter()
        .step_by(97)
        .collect();
    for q in &queries {
        assert_eq!(top10(&reference, q), top10(&imported, q), "{}", q.display());
    }
    // The folder embedded is the index's root, as after ingest.
    let roots = status(&imported)["roots"].clone();
    let canonical = std::fs::canonicalize(&root).unwrap();
    assert_eq!(roots, serde_json::json!([canonical.to_str().unwrap()]));

    // Again, and after re-running a shard (complete, so skipped): no-ops.
    embed(&root, &parts, "1/3", "digits");
    let again = import_ok(&[&parts], &imported);
    assert_eq!(
        (&again["rows"], &again["added"]),
        (&Value::from(0), &Value::from(0))
    );
    let already: Vec<bool> = again["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["already_imported"].as_bool().unwrap())
        .collect();
    assert_eq!(already, [true, true, true]);
    assert_same_records(&want, &imported);
    assert_eq!(status(&imported)["tombstones"], 0);

    // export --format parquet round-trips through import.
    let exported = tmp.path().join("all.parquet");
    run_ok(
        bin()
            .args(["export", "--format", "parquet", "--index"])
            .arg(&reference)
            .arg("--out")
            .arg(&exported),
    );
    let round = tmp.path().join("round");
    import_ok(&[&exported], &round);
    assert_same_records(&want, &round);
    // Ingest over an imported index finds every file unchanged.
    let out = json_of(&run_ok(
        bin()
            .arg("ingest")
            .arg(&root)
            .arg("--index")
            .arg(&round)
            .arg("--json"),
    ));
    assert_eq!(
        (&out["unchanged"], &out["encoded"]),
        (&Value::from(600), &Value::from(0)),
        "{out}"
    );
}

#[test]
fn another_model_is_refused_naming_the_file_and_a_changed_path_is_replaced() {
    let Some((tmp, root, index)) = mnist_export(40) else {
        return;
    };
    let parts = tmp.path().join("parts");
    embed(&root, &parts, "0/1", "digits");
    import_ok(&[&parts], &index);
    let before = records(&index);

    let fashion = tmp.path().join("fashion-parts");
    embed(&root, &fashion, "0/1", "fashion");
    let out = import(&[&fashion], &index);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("part-00000-of-00001.parquet") && err.contains("`fashion`"),
        "{err}"
    );
    // Mixed with a good shard: refused before anything is written.
    let out = import(&[&parts, &fashion], &index);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(records(&index).len(), before.len());
    // Into a new index: refused too, and no index is left behind.
    let fresh = tmp.path().join("fresh");
    let out = import(&[&parts, &fashion], &fresh);
    assert_eq!(out.status.code(), Some(1));
    assert!(!fresh.join("db").exists());
    // Not a shard at all.
    let junk = tmp.path().join("junk.parquet");
    std::fs::write(&junk, b"PAR1 not really").unwrap();
    let out = import(&[&junk], &index);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.parquet"));

    // One image changes; its re-embedded shard replaces the record.
    let victim = crate::common::files_under(&root)[7].clone();
    let mut img = image::open(&victim).unwrap().to_luma8();
    img.pixels_mut().for_each(|p| p.0[0] = 255 - p.0[0]);
    img.save(&victim).unwrap();
    let second = tmp.path().join("parts-2");
    embed(&root, &second, "0/1", "digits");
    let report = import_ok(&[&second], &index);
    assert_eq!(
        (&report["added"], &report["updated"], &report["unchanged"]),
        (&Value::from(0), &Value::from(1), &Value::from(39)),
        "{report}"
    );
    let after = records(&index);
    assert_eq!(after.len(), before.len());
    let key = std::fs::canonicalize(&victim)
        .unwrap()
        .into_os_string()
        .into_encoded_bytes();
    assert_ne!(after[&key].1, before[&key].1);
}

/// `rows` synthetic rows of the `digits` model's size, for files on no
/// machine at all.
fn synthetic_shard(file: &Path, rows: usize) {
    let model = Model::load("digits").unwrap();
    let dim = model.embedding_dim();
    let meta = ShardMeta::of(&model, Shard::ALL, &[]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let rows = (0..rows).map(|i| {
        let embedding: Vec<f32> = (0..dim).map(|_| next()).collect();
        Ok::<_, ShardError>(ShardRow {
            path: PathBuf::from(format!("/elsewhere/{}/img-{i:06}.png", i % 10)),
            blake3: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            size: 1000 + i as u64,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
            width: 28,
            height: 28,
            label: Some((i % 10).to_string()),
            embedding,
            recon_error: 0.01,
        })
    });
    write_shard_file(file, &meta, rows).unwrap();
}

#[test]
fn kill_9_during_import_then_rerun_equals_an_uninterrupted_import() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = tmp.path().join("big.parquet");
    synthetic_shard(&shard, 20_000);
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    import_ok(&[&shard], &reference);
    let whole = started.elapsed();
    let want = records(&reference);
    assert_eq!(want.len(), 20_000);

    let crashed = tmp.path().join("crashed");
    kill_at_fractions(whole, &[0.1, 0.2, 0.15, 0.25, 0.12, 0.18], || {
        let mut import = bin();
        import
            .arg("import")
            .arg(&shard)
            .arg("--index")
            .arg(&crashed);
        import
    });
    import_ok(&[&shard], &crashed);
    assert_same_records(&want, &crashed);
    let after = status(&crashed);
    assert_eq!(after["tombstones"], 0);
    // The graph lags the store by a batch or two while importing (it
    // takes each on its own thread); a kill leaves it behind, and the
    // rerun catches it up and saves it whole.
    assert_eq!(after["graph_points"], 20_000, "{after}");
    assert_eq!(after["flat_rows"], 20_000, "{after}");

    // None of these files is on this machine: a query still answers, and
    // its contact sheet says what it could not show.
    let probe = tmp.path().join("probe.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8]))
        .save(&probe)
        .unwrap();
    let sheet = tmp.path().join("sheet.png");
    let out = run_ok(
        bin()
            .args(["query", "-k", "3", "--index"])
            .arg(&crashed)
            .arg("--sheet")
            .arg(&sheet)
            .arg(&probe),
    );
    assert!(sheet.exists());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 hits are not on this machine"), "{err}");
}

#[test]
fn kill_9_during_compact_leaves_the_index_whole_and_a_rerun_compacts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = tmp.path().join("big.parquet");
    synthetic_shard(&shard, 20_000);
    let index = tmp.path().join("idx");
    import_ok(&[&shard], &index);
    let export = || crate::common::export_csv(&index);
    let before = export();
    let compact = || {
        let mut compact = bin();
        compact.args(["compact", "--json", "--index"]).arg(&index);
        compact
    };
    let started = Instant::now();
    assert_eq!(json_of(&run_ok(&mut compact()))["store_rewritten"], true);
    let whole = started.elapsed();

    // A compaction starts over each time, so the kills may land anywhere
    // in it: the graph's rebuild, the copy of the database, the swap.
    kill_at_fractions(whole, &[0.1, 0.3, 0.5, 0.7, 0.85, 0.95], compact);
    // Whatever a kill left, the next open sees the whole index (and
    // removes a copy left beside the database).
    assert_eq!(export(), before);
    assert!(!index.join("db.rewrite").exists());
    let report = json_of(&run_ok(&mut compact()));
    assert_eq!(report["points"], 20_000, "{report}");
    assert_eq!(export(), before);
    let after = status(&index);
    assert_eq!(
        (
            &after["images"],
            &after["graph_points"],
            &after["flat_rows"]
        ),
        (
            &Value::from(20_000),
            &Value::from(20_000),
            &Value::from(20_000)
        ),
        "{after}"
    );
}
