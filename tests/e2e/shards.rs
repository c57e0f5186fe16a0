//! `embed --out DIR --shard I/N`: Parquet shards through the binary, read
//! back with the parquet crate.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::common::{bin, json_of, run, run_ok};
use imgsearch::shards::{read_shard, Shard, COLUMNS};

/// `count` small PNGs spread over three label folders, one loose file, and
/// one truncated PNG; returns the root and the good files.
fn collection(dir: &Path, count: usize) -> (PathBuf, Vec<PathBuf>) {
    let root = dir.join("pictures");
    let mut good = Vec::new();
    for i in 0..count {
        let folder = root.join(["cats", "dogs", "boats"][i % 3]);
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(format!("img-{i:03}.png"));
        image::RgbImage::from_fn(40 + i as u32, 30, |x, y| {
            image::Rgb([(x * 5 + i as u32 * 9) as u8, (y * 7) as u8, (i * 31) as u8])
        })
        .save(&path)
        .unwrap();
        good.push(path);
    }
    let loose = root.join("loose.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * y) as u8]))
        .save(&loose)
        .unwrap();
    good.push(loose);
    let png = std::fs::read(&good[0]).unwrap();
    std::fs::write(root.join("cats/broken.png"), &png[..png.len() / 2]).unwrap();
    let good = good
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap())
        .collect();
    (root, good)
}

fn embed_shard(root: &Path, out: &Path, shard: &str, model: &str) -> serde_json::Value {
    let out = run(bin()
        .args([
            "embed", "--json", "--model", model, "--shard", shard, "--out",
        ])
        .arg(out)
        .arg(root));
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
    json_of(&out)
}

#[test]
fn shards_are_disjoint_and_cover_every_input() {
    let dir = tempfile::tempdir().unwrap();
    let (root, good) = collection(dir.path(), 20);
    let all: BTreeSet<PathBuf> = good.iter().cloned().collect();
    for n in [1u32, 3, 7] {
        let out = dir.path().join(format!("shards-{n}"));
        let mut seen = BTreeSet::new();
        let mut failed = Vec::new();
        for i in 0..n {
            let report = embed_shard(&root, &out, &format!("{i}/{n}"), "digits");
            failed.extend(
                report["failures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["reason"].as_str().unwrap().to_string()),
            );
            let shard = Shard { index: i, count: n };
            let (meta, rows) = read_shard(&out.join(shard.file_name())).unwrap();
            assert_eq!(meta.shard, shard);
            assert_eq!(rows.len() as u64, report["rows"].as_u64().unwrap());
            for row in rows {
                assert!(
                    seen.insert(row.path.clone()),
                    "{} in two shards",
                    row.path.display()
                );
            }
        }
        assert_eq!(seen, all, "N = {n}");
        // The truncated file failed in exactly one shard, and is logged there.
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].starts_with("truncated"), "{failed:?}");
        let logged: usize = (0..n)
            .map(|i| {
                let log = out.join(format!("errors/part-{i:05}.jsonl"));
                std::fs::read_to_string(log).unwrap().lines().count()
            })
            .sum();
        assert_eq!(logged, 1);
    }
}

#[test]
fn a_shard_reads_back_with_its_schema_metadata_and_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let (root, good) = collection(dir.path(), 6);
    let out = dir.path().join("shards");
    embed_shard(&root, &out, "0/1", "digits");
    let file = out.join(Shard::ALL.file_name());

    // Schema and metadata, through the parquet crate itself.
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).unwrap())
            .unwrap();
    let meta = parquet::file::reader::FileReader::metadata(&reader).file_metadata();
    let names: Vec<&str> = meta
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name())
        .collect();
    assert_eq!(names, COLUMNS);
    let kv: HashMap<&str, &str> = meta
        .key_value_metadata()
        .unwrap()
        .iter()
        .filter_map(|kv| Some((kv.key.as_str(), kv.value.as_deref()?)))
        .collect();
    assert_eq!(kv["imgsearch.model"], "digits");
    assert_eq!(kv["imgsearch.latent"], "16");
    assert_eq!(kv["imgsearch.shard"], "0/1");
    assert_eq!(kv["imgsearch.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta.num_rows(), good.len() as i64);

    // Rows: facts of the files, and the embeddings `embed` prints.
    let (_, rows) = read_shard(&file).unwrap();
    let printed = json_of(&run_ok(
        bin()
            .args(["embed", "--json", "--model", "digits"])
            .args(&good),
    ));
    let latents: HashMap<PathBuf, Vec<f32>> = printed["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                std::fs::canonicalize(e["path"].as_str().unwrap()).unwrap(),
                serde_json::from_value(e["latent"].clone()).unwrap(),
            )
        })
        .collect();
    for row in &rows {
        let bytes = std::fs::read(&row.path).unwrap();
        assert_eq!(row.blake3, *blake3::hash(&bytes).as_bytes());
        assert_eq!(row.size, bytes.len() as u64);
        let img = image::open(&row.path).unwrap();
        assert_eq!((row.width, row.height), (img.width(), img.height()));
        let folder = row
            .path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let want = (folder != "pictures").then(|| folder.to_string());
        assert_eq!(row.label, want, "{}", row.path.display());
        let printed = &latents[&row.path];
        assert_eq!(row.embedding.len(), 16);
        for (a, b) in row.embedding.iter().zip(printed) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert!(row.recon_error > 0.0);
    }
}

#[test]
fn a_complete_shard_is_skipped_and_another_model_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = collection(dir.path(), 5);
    let out = dir.path().join("shards");
    let first = embed_shard(&root, &out, "1/2", "digits");
    assert_eq!(first["skipped"], false);
    let file = out.join(Shard { index: 1, count: 2 }.file_name());
    let written = std::fs::metadata(&file).unwrap().modified().unwrap();
    let again = embed_shard(&root, &out, "1/2", "digits");
    assert_eq!(again["skipped"], true, "{again}");
    assert_eq!(again["rows"], first["rows"]);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        written
    );
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");

    let other = embed_shard(&root, &out, "1/2", "fashion");
    assert_eq!(other["skipped"], false, "{other}");
    assert_eq!(read_shard(&file).unwrap().0.model, "fashion");

    let bad = run(bin()
        .args(["embed", "--shard", "2/2", "--out"])
        .arg(&out)
        .arg(&root));
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
