//! What an unlucky user or an attacker meets: special files where images
//! should be, links, damaged derived files, a busy index, a first ingest
//! that fails. Each case once hung, crashed, or left a mess.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::http::Server;
use crate::common::{bin, json_of, run};

/// Runs a command that must finish within `limit` (a hang is a failure).
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo has no other effects.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// `n` distinct small grey PNGs in `dir`.
fn images(dir: &Path, n: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("img{i}.png"));
            image::GrayImage::from_fn(28, 28, |x, y| {
                image::Luma([((x * (i + 3) + y * 7) % 251) as u8])
            })
            .save(&path)
            .unwrap();
            path
        })
        .collect()
}

fn ingest(root: &Path, index: &Path, extra: &[&str]) -> Output {
    run_within(
        bin()
            .arg("ingest")
            .arg(root)
            .arg("--index")
            .arg(index)
            .args(["--model", "digits", "--json"])
            .args(extra),
        Duration::from_secs(60),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_fifo_named_as_an_image_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    images(&root, 3);
    let index = dir.path().join("idx");
    assert_eq!(ingest(&root, &index, &[]).status.code(), Some(0));
    let fifo = dir.path().join("y.png");
    mkfifo(&fifo);
    for args in [
        vec!["embed".into(), fifo.clone().into_os_string()],
        vec![
            "query".into(),
            fifo.clone().into_os_string(),
            "--index".into(),
            index.clone().into_os_string(),
        ],
    ] {
        let out = run_within(bin().args(&args), Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        // The path is named once, not twice.
        assert_eq!(err.matches("y.png").count(), 1, "{err}");
    }
}

#[test]
fn the_walk_counts_links_and_special_files_and_follows_links_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    let files = images(&root, 3);
    let outside = dir.path().join("outside");
    let private = images(&outside, 1);
    std::os::unix::fs::symlink(&files[0], root.join("link.png")).unwrap();
    std::os::unix::fs::symlink(&private[0], root.join("away.png")).unwrap();
    std::os::unix::fs::symlink(root.join("missing.png"), root.join("dead.png")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();
    mkfifo(&root.join("pipe.png"));

    // Default: links are passed over, the FIFO is never opened; all counted.
    let out = ingest(&root, &dir.path().join("idx"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["added"], 3, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["skipped"]["symlinks"], 4, "{report}");
    assert_eq!(report["skipped"]["special_files"], 1, "{report}");
    // ... and the text summary says so.
    let text = run_within(
        bin()
            .arg("ingest")
            .arg(&root)
            .arg("--index")
            .arg(dir.path().join("idx")),
        Duration::from_secs(60),
    );
    let summary = String::from_utf8_lossy(&text.stdout);
    assert!(
        summary.contains("passed over 4 symbolic links"),
        "{summary}"
    );

    // --follow-links: both linked images come in, the dangling link and
    // the loop are failures with reasons, the FIFO is still skipped.
    let out = ingest(&root, &dir.path().join("idx2"), &["--follow-links"]);
    let report = json_of(&out);
    assert_eq!(report["added"], 5, "{report}");
    assert_eq!(report["skipped"]["special_files"], 1, "{report}");
    let reasons: Vec<String> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["path"], f["reason"]))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("dead.png")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.to_lowercase().contains("loop")),
        "{reasons:?}"
    );
}

#[test]
fn a_first_ingest_that_stores_nothing_leaves_no_index_behind() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("not-really.png"), b"plain text").unwrap();
    let index = dir.path().join("idx");
    // The default model, by mistake, on a folder with nothing usable.
    let out = run(bin().arg("ingest").arg(&junk).arg("--index").arg(&index));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!index.exists(), "a failed first ingest left an index");
    // The corrected command, with another model, is not refused.
    let good = dir.path().join("good");
    images(&good, 2);
    let out = ingest(&good, &index, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_of(&out)["added"], 2);
}

#[test]
fn a_busy_index_is_named_as_in_use_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    images(&root, 2);
    let index = dir.path().join("idx");
    assert_eq!(ingest(&root, &index, &[]).status.code(), Some(0));
    let bin_path = PathBuf::from(env!("CARGO_BIN_EXE_imgsearch"));
    let server = Server::start(&bin_path, &index, &[]);
    // `status` and `query` read the record catalogue and need no store; a
    // writer does.
    let out = run(bin().args(["status", "--index"]).arg(&index));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(bin().arg("ingest").arg(&root).arg("--index").arg(&index));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is in use by another imgsearch process"),
        "{err}"
    );
    assert!(!err.contains("WouldBlock"), "{err}");
    drop(server);
}

/// The saved graph of an index.
fn graph_file(index: &Path) -> PathBuf {
    let path = index.join("graph.hnsw");
    assert!(path.is_file(), "a saved graph");
    path
}

/// `query IMAGE --hnsw -k K --json` against `index`, within a minute.
fn query_hnsw(index: &Path, image: &Path, k: usize) -> Output {
    run_within(
        bin()
            .arg("query")
            .arg(image)
            .args(["--hnsw", "-k", &k.to_string(), "--json", "--index"])
            .arg(index),
        Duration::from_secs(60),
    )
}

#[test]
fn a_damaged_graph_dump_is_rebuilt_with_one_line_and_no_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    let files = images(&root, 40);
    let index = dir.path().join("idx");
    assert_eq!(ingest(&root, &index, &[]).status.code(), Some(0));
    let dump = graph_file(&index);
    let mut bytes = std::fs::read(&dump).unwrap();
    for b in bytes.iter_mut().skip(64).step_by(97) {
        *b = !*b;
    }
    std::fs::write(&dump, &bytes).unwrap();

    // An ingest that adds nothing does not even open the graph.
    let out = ingest(&root, &index, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("HNSW"), "{}", stderr(&out));

    // A search through the graph rebuilds it, says so once, and answers.
    let query = || query_hnsw(&index, &files[5], 3);
    let out = query();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let answers: Value = json_of(&out);
    assert_eq!(answers[0]["results"][0]["path"], files[5].to_str().unwrap());
    // The rebuilt graph was saved: the next search says nothing.
    let out = query();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}

/// The paths of a `query --json` answer's hits, sorted.
fn hit_paths(out: &Output) -> Vec<String> {
    let mut paths: Vec<String> = json_of(out)[0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    paths
}

#[test]
fn a_torn_stale_missing_or_old_format_graph_is_caught_up_or_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    let files = images(&root, 12);
    let index = dir.path().join("idx");
    let everything = |out: &Output| {
        let mut want: Vec<String> = files
            .iter()
            .map(|f| f.to_str().unwrap().to_string())
            .collect();
        want.sort();
        assert_eq!(hit_paths(out), want, "every image once");
    };
    // Six images, a search through the graph (which saves it), then six
    // more (held aside meanwhile; a rename keeps them unchanged).
    let aside = dir.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    for f in &files[6..] {
        std::fs::rename(f, aside.join(f.file_name().unwrap())).unwrap();
    }
    assert_eq!(ingest(&root, &index, &[]).status.code(), Some(0));
    assert_eq!(query_hnsw(&index, &files[0], 3).status.code(), Some(0));
    let stale = std::fs::read(graph_file(&index)).unwrap();
    for f in &files[6..] {
        std::fs::rename(aside.join(f.file_name().unwrap()), f).unwrap();
    }
    assert_eq!(ingest(&root, &index, &[]).status.code(), Some(0));
    assert_ne!(std::fs::read(graph_file(&index)).unwrap(), stale);

    // Stale: the six-image graph put back is caught up, silently.
    std::fs::write(graph_file(&index), &stale).unwrap();
    let out = query_hnsw(&index, &files[9], 12);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    everything(&out);

    // Torn: cut short, as by a crash mid-write of a file not yet renamed
    // into place (or a disk that lost its tail).
    let whole = std::fs::read(graph_file(&index)).unwrap();
    std::fs::write(graph_file(&index), &whole[..whole.len() / 3]).unwrap();
    let out = query_hnsw(&index, &files[9], 12);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    everything(&out);
    assert_eq!(
        std::fs::read(graph_file(&index)).unwrap().len(),
        whole.len()
    );

    // Missing: rebuilt without a word (nothing was wrong).
    std::fs::remove_file(graph_file(&index)).unwrap();
    let out = query_hnsw(&index, &files[9], 12);
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(0), ""));
    everything(&out);

    // An older imgsearch's hnsw_rs dump: said once, replaced, removed.
    std::fs::remove_file(graph_file(&index)).unwrap();
    std::fs::write(index.join("hnsw.json"), r#"{"folder": "hnsw-13-12"}"#).unwrap();
    std::fs::create_dir_all(index.join("hnsw-13-12")).unwrap();
    std::fs::write(index.join("hnsw-13-12/graph.hnsw.graph"), b"old").unwrap();
    let out = query_hnsw(&index, &files[9], 12);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("older imgsearch"), "{}", stderr(&out));
    everything(&out);
    assert!(!index.join("hnsw.json").exists() && !index.join("hnsw-13-12").exists());
    let out = query_hnsw(&index, &files[9], 12);
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(0), ""));
}

#[test]
fn a_confined_ingest_refuses_a_root_swapped_for_a_link() {
    use imgsearch::index::Index;
    use imgsearch::ingest::{self, IngestError, IngestOptions};
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let private = dir.path().join("private");
    images(&private, 2);
    std::fs::create_dir_all(&allowed).unwrap();
    // Asked for (and resolved) while a real folder ...
    let asked = std::fs::canonicalize(&allowed).unwrap().join("x");
    std::fs::create_dir_all(&asked).unwrap();
    // ... swapped for a link to a private folder before the job ran.
    std::fs::remove_dir(&asked).unwrap();
    std::os::unix::fs::symlink(&private, &asked).unwrap();
    let index = Index::open(&dir.path().join("idx"), Some("digits"), true).unwrap();
    let opts = IngestOptions {
        confine: true,
        ..IngestOptions::default()
    };
    let err = ingest::ingest(&index, &asked, &opts, &imgsearch::progress::NoProgress)
        .expect_err("refused");
    assert!(matches!(err, IngestError::Moved { .. }), "{err}");
    assert_eq!(index.store.live_count().unwrap(), 0);
    assert!(index.store.roots().unwrap().is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// sled's log cut short at several points. Where sled recovers, fine;
/// where it cannot (it panics on some cuts: an index out of bounds in its
/// segment code), the user gets a clear error saying how to rebuild,
/// never a panic and its backtrace.
#[test]
fn a_truncated_database_is_a_clear_error_not_a_panic() {
    // Enough records that the log spans several segments.
    let Some((tmp, _root, index)) = crate::common::mnist_index(3000) else {
        return;
    };
    let len = std::fs::metadata(index.join("db/db")).unwrap().len();
    let mut damaged = 0;
    for (n, keep) in [1.0 / 2.0, 1.0 / 3.0, 2.0 / 3.0, 1.0 / 4.0, 3.0 / 4.0]
        .into_iter()
        .enumerate()
    {
        let copy = tmp.path().join(format!("cut{n}"));
        copy_dir(&index, &copy);
        std::fs::OpenOptions::new()
            .write(true)
            .open(copy.join("db/db"))
            .unwrap()
            .set_len((len as f64 * keep) as u64)
            .unwrap();
        let out = run(bin().args(["status", "--index"]).arg(&copy));
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "cut to {keep}: {err}");
        match out.status.code() {
            Some(0) => {}
            Some(1) => {
                damaged += 1;
                assert!(err.contains("is damaged"), "cut to {keep}: {err}");
                assert!(err.contains("imgsearch ingest DIR --index NEW"), "{err}");
            }
            other => panic!("cut to {keep}: exit {other:?}: {err}"),
        }
    }
    eprintln!("{damaged} of 5 cuts left a database sled could not open");
}

#[test]
fn zeroed_rows_in_the_flat_file_are_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    let files = images(&root, 40);
    let index = dir.path().join("idx");
    assert_eq!(ingest(&root, &index, &[]).status.code(), Some(0));
    // Zero ten rows in the middle: same file size, ids and vectors gone.
    let flat = index.join("vectors.flat");
    let mut bytes = std::fs::read(&flat).unwrap();
    let row = 8 + 4 * 16;
    bytes[32 + 10 * row..32 + 20 * row].fill(0);
    std::fs::write(&flat, &bytes).unwrap();
    // Every image is still found (as itself, first), and the repair is told.
    let out = run_within(
        bin()
            .arg("query")
            .args(&files[10..20])
            .args(["--exact", "-k", "1", "--json", "--index"])
            .arg(&index),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    let answers: Value = json_of(&out);
    for (answer, file) in answers.as_array().unwrap().iter().zip(&files[10..20]) {
        assert_eq!(answer["results"][0]["path"], file.to_str().unwrap());
    }
    assert_ne!(std::fs::read(&flat).unwrap(), bytes);
}
