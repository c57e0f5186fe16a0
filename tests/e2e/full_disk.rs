//! A full disk: every command, read-only ones included, either works or
//! fails with a clear message, and the index opens again once space is
//! freed, with nothing lost.
//!
//! The index lives on a small tmpfs that the test mounts, so it needs root
//! (and is skipped, saying so, elsewhere).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{bin, json_of, run, run_ok};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Tmpfs {
    fn mount(bytes: usize) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("disk");
        std::fs::create_dir(&root).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&root)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { _dir: dir, root }),
            other => {
                eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }

    /// Writes a filler file until the disk is full, then gives back `leave`
    /// bytes of it.
    fn fill(&self, leave: u64) {
        let path = self.root.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        file.set_len(written.saturating_sub(leave)).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.root.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.root).output();
    }
}

/// `n` distinct small PNGs named `{prefix}{i}.png` in `dir`.
fn images(dir: &Path, prefix: &str, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let seed = i + prefix.len() as u32 * 101;
        image::GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([((x * (seed % 13 + 3) + y * (seed % 7 + 1) + seed) % 251) as u8])
        })
        .save(dir.join(format!("{prefix}{i}.png")))
        .unwrap();
    }
}

fn imgsearch(args: &[&str], index: &Path, extra: &[&Path]) -> Output {
    run(bin().args(args).arg("--index").arg(index).args(extra))
}

/// The index's `status --json`, which must succeed.
fn status(index: &Path) -> Value {
    json_of(&run_ok(
        bin().arg("status").arg("--index").arg(index).arg("--json"),
    ))
}

/// After space is freed the index opens and its derived files agree with
/// the store.
fn assert_consistent(index: &Path) -> u64 {
    let st = status(index);
    let images = st["images"].as_u64().unwrap();
    assert_eq!(
        st["flat_rows"].as_u64().unwrap(),
        images + st["tombstones"].as_u64().unwrap(),
        "{st}"
    );
    images
}

#[test]
fn a_full_disk_never_leaves_an_index_that_will_not_open() {
    let Some(disk) = Tmpfs::mount(12 << 20) else {
        return;
    };
    let photos = tempfile::tempdir().unwrap();
    let (first, second, third) = (
        photos.path().join("a"),
        photos.path().join("b"),
        photos.path().join("c"),
    );
    images(&first, "a", 40);
    images(&second, "bb", 20);
    images(&third, "ccc", 30);
    let index = disk.root.join("idx");
    let ingest = ["ingest", "--model", "digits"];
    run_ok(bin().args(ingest).arg(&first).arg("--index").arg(&index));
    // A command after an ingest makes sled write a snapshot of its log:
    // the write that, failing on a full disk, once left an unfinished
    // snapshot file that made every later open fail ("Read corrupted data").
    status(&index);
    run_ok(bin().args(ingest).arg(&second).arg("--index").arg(&index));
    let query_image = first.join("a3.png");

    let commands: Vec<(&str, Vec<&str>, Vec<&Path>)> = vec![
        ("status", vec!["status"], vec![]),
        (
            "query",
            vec!["query", "-k", "3"],
            vec![query_image.as_path()],
        ),
        (
            "query --hnsw",
            vec!["query", "-k", "3", "--hnsw"],
            vec![query_image.as_path()],
        ),
        ("duplicates", vec!["duplicates"], vec![]),
        ("compact", vec!["compact"], vec![]),
        ("ingest", ingest.to_vec(), vec![third.as_path()]),
    ];
    for leave in [0u64, 16 << 10, 96 << 10] {
        for (name, args, extra) in &commands {
            disk.fill(leave);
            let out = imgsearch(args, &index, extra);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            // Success, or a plain failure that says what happened: never a
            // panic (101) or an abort (134).
            assert!(
                matches!(code, Some(0) | Some(1) | Some(3)),
                "{name} with {leave} bytes free: exit {code:?}: {stderr}"
            );
            if code == Some(1) {
                assert!(
                    stderr.contains("free some space") && !stderr.contains("panicked"),
                    "{name} with {leave} bytes free: {stderr}"
                );
            }
            disk.free();
            assert_consistent(&index);
        }
    }

    // With space again, the interrupted ingest completes and nothing is lost.
    run_ok(bin().args(ingest).arg(&third).arg("--index").arg(&index));
    run_ok(bin().args(ingest).arg(&first).arg("--index").arg(&index));
    assert_eq!(assert_consistent(&index), 90);
    let hits = json_of(&run_ok(
        bin()
            .args(["query", "-k", "1", "--json", "--index"])
            .arg(&index)
            .arg(third.join("ccc7.png")),
    ));
    let best = hits[0]["results"][0]["path"].as_str().unwrap_or_default();
    assert!(best.ends_with("ccc7.png"), "{hits}");
    // sled's unfinished snapshot files never outlive a command.
    let leftovers: Vec<_> = std::fs::read_dir(index.join("db"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".generating"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
