//! Helpers shared by the end-to-end tests: the binary, its output, and the
//! exported MNIST set.
#![allow(dead_code)] // each test file uses a different subset

pub mod http;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgsearch"))
}

/// Panics with the command's stderr unless it exited 0.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command, whatever its exit code.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("imgsearch runs")
}

/// Runs a command that must succeed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert_ok(&out);
    out
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Set (to anything but `0`) where the datasets must be there: CI sets it,
/// so a test that needs data fails there instead of skipping.
pub const REQUIRE_DATA_ENV: &str = "IMGSEARCH_REQUIRE_DATA";

/// A shared dataset folder, or `None` (with a message) where it is absent;
/// with [`REQUIRE_DATA_ENV`] set, a missing folder fails the test.
pub fn data(sub: &str) -> Option<PathBuf> {
    let root = imgsearch::dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    match root.map(|d| d.join(sub)) {
        Some(d) if d.is_dir() => Some(d),
        _ => {
            let why = format!(
                "dataset folder `{sub}` is absent (set IMGSEARCH_DATA or provide ../shared/data)"
            );
            if std::env::var(REQUIRE_DATA_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
                panic!("{why}, and {REQUIRE_DATA_ENV} is set");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// The first `limit` MNIST test images as `imgs/<digit>/NNNNN.png` in a new
/// temporary folder, with an index path beside it; `None` (skip) without data.
pub fn mnist_export(limit: usize) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let src = data("mnist")?;
    let tmp = tempfile::tempdir().unwrap();
    let (root, index) = (tmp.path().join("imgs"), tmp.path().join("idx"));
    run_ok(
        bin()
            .args(["dataset", "export", "mnist"])
            .arg(&src)
            .arg("--out")
            .arg(&root)
            .args(["--split", "test", "--limit", &limit.to_string()]),
    );
    Some((tmp, root, index))
}

/// `split` of MNIST (first `limit` images) exported under `out` as
/// `<digit>/NNNNN.png`; `None` (skip) without data.
pub fn mnist_split(out: &std::path::Path, split: &str, limit: usize) -> Option<()> {
    let src = data("mnist")?;
    run_ok(
        bin()
            .args(["dataset", "export", "mnist"])
            .arg(&src)
            .arg("--out")
            .arg(out)
            .args(["--split", split, "--limit", &limit.to_string()]),
    );
    Some(())
}

/// Runs an imgsearch subcommand against `index` with `--json` and parses
/// its output; the command must succeed.
pub fn json_cmd(command: &str, index: &std::path::Path, args: &[&std::ffi::OsStr]) -> Value {
    json_of(&run_ok(
        bin()
            .arg(command)
            .arg("--index")
            .arg(index)
            .arg("--json")
            .args(args),
    ))
}

/// Ingests `root` into `index` with the `digits` model; must succeed.
pub fn ingest_digits(root: &std::path::Path, index: &std::path::Path) {
    run_ok(
        bin()
            .arg("ingest")
            .arg(root)
            .arg("--index")
            .arg(index)
            .args(["--model", "digits"]),
    );
}

/// [`mnist_export`] of `limit` digits, ingested with the `digits` model.
pub fn mnist_index(limit: usize) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let (tmp, root, index) = mnist_export(limit)?;
    ingest_digits(&root, &index);
    Some((tmp, root, index))
}

/// Files under `dir`, sorted.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}

/// What `imgsearch export --format csv` prints of `index`: every live
/// record, through the binary (so it opens the store as any command does).
pub fn export_csv(index: &std::path::Path) -> Vec<u8> {
    run_ok(
        bin()
            .args(["export", "--format", "csv", "--index"])
            .arg(index),
    )
    .stdout
}

/// Path → (label, embedding) of every live record, after checking that the
/// flat file and the graph hold exactly the live records.
pub fn records(
    index: &std::path::Path,
) -> std::collections::BTreeMap<Vec<u8>, (Option<String>, Vec<f32>)> {
    let idx = imgsearch::index::Index::open(index, None, false).unwrap();
    let live = idx.store.live_count().unwrap();
    idx.load_graph().unwrap();
    let ann = idx.ann();
    assert_eq!(ann.flat.live() as u64, live, "flat rows = live records");
    let graph = ann.loaded_graph().unwrap();
    assert_eq!(
        graph.live_points() as u64,
        live,
        "graph points = live records"
    );
    idx.store
        .records()
        .map(|r| {
            let (id, rec) = r.unwrap();
            (
                rec.path,
                (rec.label, idx.store.vector(id).unwrap().unwrap()),
            )
        })
        .collect()
}

/// Panics unless `index` holds exactly the records of `want`: the same
/// paths and labels, embeddings within 1e-4.
pub fn assert_same_records(
    want: &std::collections::BTreeMap<Vec<u8>, (Option<String>, Vec<f32>)>,
    index: &std::path::Path,
) {
    let got = records(index);
    assert_eq!(got.len(), want.len(), "no duplicates, no missing records");
    for (path, (label, vector)) in want {
        let name = String::from_utf8_lossy(path);
        let (got_label, got_vector) = got.get(path).unwrap_or_else(|| panic!("{name} is missing"));
        assert_eq!(got_label, label, "{name}");
        let diff = vector
            .iter()
            .zip(got_vector)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "embedding of {name} differs by {diff}");
    }
}

/// Starts `command` once per fraction and SIGKILLs it after that fraction
/// of `whole` (this machine's own uninterrupted run, measured by the
/// caller); panics unless at least half the kills land before the run
/// finishes.
///
/// Delays scale with the measured run because fixed ones stop landing once
/// the command gets faster. A rerun that resumes where the last one was
/// killed needs fractions adding up to about one whole run, to keep the
/// later kills mid-run too.
pub fn kill_at_fractions(
    whole: std::time::Duration,
    fractions: &[f64],
    mut command: impl FnMut() -> Command,
) {
    let mut kills = 0;
    for &fraction in fractions {
        let mut child = command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(whole.mul_f64(fraction));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills * 2 >= fractions.len(),
        "the kills must land mid-run (only {kills} did; a whole run took {whole:?})"
    );
}
