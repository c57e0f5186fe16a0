use std::collections::BTreeMap;
use std::path::Path;

use super::*;

fn record(path: &str, hash: u8) -> Record {
    Record {
        path: path.as_bytes().to_vec(),
        size: 10,
        mtime_ns: 1,
        hash: [hash; 32],
        label: Some("x".into()),
        width: 4,
        height: 4,
        recon_error: 0.1,
        ingested_at: 0,
    }
}

#[test]
fn add_move_remove_keep_counters_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let ids = store
        .apply(&[
            Change::Add {
                record: record("/a/1.png", 1),
                vector: vec![1.0, 2.0],
            },
            Change::Add {
                record: record("/a/2.png", 1),
                vector: vec![1.0, 2.0],
            },
        ])
        .unwrap();
    assert_eq!(ids.added, [0, 1]);
    assert_eq!(store.live_count().unwrap(), 2);
    assert_eq!(store.ids_with_hash(&[1; 32]).unwrap(), [0, 1]);
    let moved = store
        .apply(&[Change::Move {
            id: 0,
            record: record("/b/1.png", 1),
        }])
        .unwrap();
    assert_eq!((moved.changed, moved.removed), (vec![0], vec![]));
    assert_eq!(store.id_for_path(b"/a/1.png").unwrap(), None);
    assert_eq!(store.id_for_path(b"/b/1.png").unwrap(), Some(0));
    store.apply(&[Change::Remove { id: 1 }]).unwrap();
    assert_eq!(
        (
            store.live_count().unwrap(),
            store.tombstone_count().unwrap()
        ),
        (1, 1)
    );
    assert_eq!(store.tombstones().unwrap(), [1]);
    assert_eq!(store.vector(0).unwrap(), Some(vec![1.0, 2.0]));
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.live_count().unwrap(), 1);
    let paths: Vec<_> = store.paths_under(b"/b/").map(|r| r.unwrap().1).collect();
    assert_eq!(paths, [0]);
    // An add at a stored path displaces the record there, and says so.
    let again = store
        .apply(&[Change::Add {
            record: record("/b/1.png", 2),
            vector: vec![0.0, 0.0],
        }])
        .unwrap();
    assert_eq!((again.added, again.removed), (vec![2], vec![0]));
    store.clear_tombstones().unwrap();
    assert_eq!(store.tombstone_count().unwrap(), 0);
}

#[test]
fn label_trees_follow_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut unlabelled = record("/a/3.png", 3);
    unlabelled.label = None;
    store
        .apply(&[
            Change::Add {
                record: record("/a/1.png", 1),
                vector: vec![0.0],
            },
            Change::Add {
                record: record("/a/2.png", 2),
                vector: vec![0.0],
            },
            Change::Add {
                record: unlabelled,
                vector: vec![0.0],
            },
        ])
        .unwrap();
    let mut relabelled = record("/a/2.png", 2);
    relabelled.label = Some("y".into());
    store
        .apply(&[Change::Touch {
            id: 1,
            record: relabelled,
        }])
        .unwrap();
    let counts = |s: &Store| s.label_counts().unwrap().into_iter().collect::<Vec<_>>();
    assert_eq!(counts(&store), [("x".into(), 1), ("y".into(), 1)]);
    store.apply(&[Change::Remove { id: 0 }]).unwrap();
    assert_eq!(counts(&store), [("y".to_string(), 1)]);
    let labelled: Vec<_> = store.labelled().map(|r| r.unwrap()).collect();
    assert_eq!(labelled, [(1, "y".to_string())]);
    assert_eq!(store.label_of(2).unwrap(), None);
}

/// Writes a store as schema `version` (1 or 4) laid it out, with sled
/// alone: `images` and `vectors` trees, a `hashes` tree keyed by the whole
/// hash, and from v2 the label trees. Record `i` gets the embedding
/// `[i, -i]`.
fn write_old_store(dir: &Path, version: u64, records: &[Record]) {
    let db = sled::open(dir).unwrap();
    let tree = |name: &str| db.open_tree(name).unwrap();
    let (meta, images, vectors, paths, hashes) = (
        tree("meta"),
        tree("images"),
        tree("vectors"),
        tree("paths"),
        tree("hashes"),
    );
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for (i, record) in records.iter().enumerate() {
        let k = key(i as u64);
        images
            .insert(k, postcard::to_stdvec(record).unwrap())
            .unwrap();
        let floats: Vec<u8> = [i as f32, -(i as f32)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        vectors.insert(k, floats).unwrap();
        paths.insert(record.path.as_slice(), &k).unwrap();
        let mut hash_key = record.hash.to_vec();
        hash_key.extend_from_slice(&k);
        hashes.insert(hash_key, &[]).unwrap();
        if let (Some(label), true) = (&record.label, version >= 2) {
            tree("labelled").insert(k, label.as_bytes()).unwrap();
            *counts.entry(label.clone()).or_default() += 1;
        }
    }
    for (label, n) in counts {
        tree("labels").insert(label, &n.to_be_bytes()).unwrap();
    }
    let n = records.len() as u64;
    for (name, v) in [("schema_version", version), ("next_id", n), ("live", n)] {
        meta.insert(name, &v.to_be_bytes()).unwrap();
    }
    db.flush().unwrap();
}

/// Retries `open` until it succeeds: sled releases a dropped handle's
/// lock from a background thread, a moment after the drop.
fn after_release<T>(open: impl Fn() -> Option<T>) -> T {
    (0..100)
        .find_map(|_| {
            let opened = open();
            if opened.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened
        })
        .expect("the database reopens")
}

fn reopen(dir: &Path) -> Store {
    after_release(|| Store::open(dir).ok())
}

/// sled alone, as the store in `dir` was left by a kill.
fn raw(dir: &Path) -> sled::Db {
    after_release(|| sled::open(dir).ok())
}

fn tree_names(store: &Store) -> Vec<String> {
    store
        .db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// Three records; the last two hash alike in the 8 bytes that key the
/// `content` tree, and differ after them.
fn old_records() -> Vec<Record> {
    let mut twin = record("/a/3.png", 2);
    twin.hash[31] = 9;
    twin.label = None;
    vec![record("/a/1.png", 1), record("/a/2.png", 2), twin]
}

/// What a store made from [`old_records`] must hold, whatever the
/// schema it was written in.
fn assert_holds_old_records(store: &Store) {
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let records: Vec<_> = store.records().map(|r| r.unwrap()).collect();
    let want: Vec<_> = old_records().into_iter().enumerate().collect();
    let want: Vec<_> = want.into_iter().map(|(i, r)| (i as u64, r)).collect();
    assert_eq!(records, want);
    let vectors: Vec<_> = store.vectors_after(Some(0)).map(|r| r.unwrap()).collect();
    assert_eq!(vectors, [(1, vec![1.0, -1.0]), (2, vec![2.0, -2.0])]);
    assert_eq!(store.ids_with_hash(&[2; 32]).unwrap(), [1]);
    assert_eq!(store.ids_with_hash(&old_records()[2].hash).unwrap(), [2]);
    assert_eq!(store.ids_with_hash(&[3; 32]).unwrap(), Vec::<u64>::new());
    assert_eq!(store.id_for_path(b"/a/3.png").unwrap(), Some(2));
    assert_eq!(
        store
            .label_counts()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [("x".to_string(), 2)]
    );
    assert_eq!(store.label_of(2).unwrap(), None);
    let names = tree_names(store);
    for retired in ["images", "vectors", "hashes", "labelled"] {
        assert!(
            !names.iter().any(|n| n == retired),
            "{retired} in {names:?}"
        );
    }
}

#[test]
fn a_v4_store_migrates_to_one_value_per_record_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    write_old_store(dir.path(), 4, &old_records());
    let store = reopen(dir.path());
    assert_holds_old_records(&store);
    // Writes after the migration see the migrated records.
    let applied = store
        .apply(&[
            Change::Move {
                id: 0,
                record: record("/b/1.png", 1),
            },
            Change::Add {
                record: record("/a/2.png", 5),
                vector: vec![5.0, 5.0],
            },
        ])
        .unwrap();
    assert_eq!(
        (applied.added, applied.changed, applied.removed),
        (vec![3], vec![0], vec![1])
    );
    assert_eq!(store.vector(0).unwrap(), Some(vec![0.0, -0.0]));
    assert_eq!(store.ids_with_hash(&[2; 32]).unwrap(), Vec::<u64>::new());
    assert_eq!(store.ids_with_hash(&[5; 32]).unwrap(), [3]);
    assert_eq!(store.tombstones().unwrap(), [1]);
}

#[test]
fn a_v1_store_migrates_through_every_version() {
    let dir = tempfile::tempdir().unwrap();
    write_old_store(dir.path(), 1, &old_records());
    let store = reopen(dir.path());
    assert_holds_old_records(&store);
    assert_eq!(store.imported("part-00000-of-00001.parquet").unwrap(), None);
}

#[test]
fn a_migration_killed_part_way_is_redone_by_the_next_open() {
    // Killed during v4 → v5: the new trees hold part of the copy (here,
    // a stale value and a stray key), the old trees are whole, and the
    // version still says 4.
    let dir = tempfile::tempdir().unwrap();
    write_old_store(dir.path(), 4, &old_records());
    {
        let db = raw(dir.path());
        db.open_tree("records")
            .unwrap()
            .insert(key(0), value::encode(&record("/stale", 7), &[9.0]))
            .unwrap();
        db.open_tree("content")
            .unwrap()
            .insert(content_key(&[7; 32], 0), &[])
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_holds_old_records(&store);
    assert_eq!(store.ids_with_hash(&[7; 32]).unwrap(), Vec::<u64>::new());
    drop(store);

    // Killed after the version moved to 5, before the old trees were
    // dropped: the next open drops them and keeps the records.
    {
        let db = raw(dir.path());
        db.open_tree("images")
            .unwrap()
            .insert(key(0), &[1])
            .unwrap();
        db.flush().unwrap();
    }
    assert_holds_old_records(&reopen(dir.path()));
}

/// A tree's pairs, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every tree's pairs, by tree name.
fn every_pair(store: &Store) -> BTreeMap<Vec<u8>, Pairs> {
    store
        .db
        .tree_names()
        .into_iter()
        .map(|name| {
            let pairs = store.db.open_tree(&name).unwrap().iter();
            let pairs = pairs
                .map(|kv| kv.unwrap())
                .map(|(k, v)| (k.to_vec(), v.to_vec()));
            (name.to_vec(), pairs.collect())
        })
        .collect()
}

#[test]
fn a_rewrite_keeps_every_pair_and_gives_back_space() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let store = Store::open(&dir).unwrap();
    // Records written, moved and removed leave sled holding old versions.
    for round in 0..3u8 {
        let adds: Vec<_> = (0..2000)
            .map(|i| Change::Add {
                record: record(&format!("/a/{i}.png"), round),
                vector: vec![f32::from(round); 64],
            })
            .collect();
        store.apply(&adds).unwrap();
    }
    let removes: Vec<_> = (4000..5000).map(|id| Change::Remove { id }).collect();
    store.apply(&removes).unwrap();
    store.db.flush().unwrap();
    let before = every_pair(&store);

    let rewritten = store.rewrite(&dir).unwrap();
    assert!(
        rewritten.bytes_after < rewritten.bytes_before,
        "{rewritten:?}"
    );
    assert!(!rewrite::rewrite_dir(&dir).exists());
    let store = reopen(&dir);
    assert_eq!(every_pair(&store), before);
    assert_eq!(
        (
            store.live_count().unwrap(),
            store.tombstone_count().unwrap()
        ),
        (1000, 5000)
    );
    // Counters came along: the next id follows the last one ever given.
    let added = store
        .apply(&[Change::Add {
            record: record("/b/new.png", 9),
            vector: vec![0.0; 64],
        }])
        .unwrap();
    assert_eq!(added.added, [6000]);
}

#[test]
fn what_a_killed_rewrite_leaves_is_removed_by_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let store = Store::open(&dir).unwrap();
    store
        .apply(&[Change::Add {
            record: record("/a/1.png", 1),
            vector: vec![1.0, 2.0],
        }])
        .unwrap();
    // A copy cut short: a database beside `db` with other contents.
    let leftover = rewrite::rewrite_dir(&dir);
    {
        let copy = sled::open(&leftover).unwrap();
        copy.open_tree("records")
            .unwrap()
            .insert(b"junk", b"x")
            .unwrap();
        copy.flush().unwrap();
    }
    // While the store is open here, another open is refused and touches
    // nothing: the folder could be a rewrite in progress.
    assert!(matches!(Store::open(&dir), Err(StoreError::InUse { .. })));
    assert!(leftover.exists());
    let before = every_pair(&store);
    drop(store);
    let store = reopen(&dir);
    assert!(!leftover.exists());
    assert_eq!(every_pair(&store), before);
    assert_eq!(store.vector(0).unwrap(), Some(vec![1.0, 2.0]));
}
