//! The flat file against the store: catch-up, torn tails, damage, and
//! reads that check blocks as they go.

use super::*;
use crate::ann::kernels::l2sq;
use crate::store::{Change, Record};

fn record(n: u8) -> Record {
    Record {
        path: format!("/r/{n}.png").into_bytes(),
        size: 1,
        mtime_ns: 1,
        hash: [n; 32],
        label: None,
        width: 1,
        height: 1,
        recon_error: 0.0,
        ingested_at: 0,
    }
}

fn vector(n: u8) -> Vec<f32> {
    (0..10)
        .map(|i| (n as f32) * 0.5 + i as f32 * 0.01)
        .collect()
}

/// A new store in a temporary folder holding vectors `0..n`.
fn store_with(n: u8) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let adds: Vec<Change> = (0..n)
        .map(|n| Change::Add {
            record: record(n),
            vector: vector(n),
        })
        .collect();
    store.apply(&adds).unwrap();
    (dir, store)
}

#[test]
fn catches_up_survives_torn_tail_and_matches_brute_force() {
    let (dir, store) = store_with(50);
    let (flat, state) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    assert_eq!((state.caught_up, state.rebuilt), (50, true));
    let q = vector(20);
    let hits = flat.search(&[&q], 3, &|_| true);
    assert_eq!(hits[0][0], (20, 0.0));
    assert_eq!(hits[0].len(), 3);
    drop(flat);

    // A crash after appending but before the header moved: garbage past
    // the counted rows is ignored and replaced by the store's truth.
    store
        .apply(&[Change::Add {
            record: record(60),
            vector: vector(60),
        }])
        .unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0xAB; 37]).unwrap();
    drop(f);
    store.apply(&[Change::Remove { id: 20 }]).unwrap();
    let (flat, state) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    assert_eq!((state.caught_up, state.rebuilt), (1, false));
    assert_eq!(flat.rows(), 51);
    assert_eq!(flat.live(), 50);
    assert_eq!(flat.get(20), None);
    assert_eq!(flat.get(50), Some(vector(60)));
    let odd = |id: u64| id % 2 == 1 || id == 50;
    let hits = flat.search(&[&q, &vector(60)], 4, &odd);
    assert!(hits[0].iter().all(|(id, _)| *id != 20 && odd(*id)));
    assert_eq!(hits[0].len(), 4);
    assert_eq!(hits[1][0], (50, 0.0));
    // Against a brute-force scan of the live rows.
    let mut all: Vec<(u64, f32)> = flat
        .iter()
        .filter(|(id, _)| odd(*id))
        .map(|(id, v)| (id, l2sq(&v, &q).sqrt()))
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1));
    let want: Vec<u64> = all[..4].iter().map(|x| x.0).collect();
    let have: Vec<u64> = hits[0].iter().map(|x| x.0).collect();
    assert_eq!(have, want);

    // Compaction drops the dead row.
    let mut flat = flat;
    store.clear_tombstones().unwrap();
    assert_eq!(flat.rewrite(&store).unwrap(), 50);
    assert_eq!(flat.get(20), None);
    let (flat, state) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    assert_eq!((flat.rows(), state.caught_up), (50, 0));
}

#[test]
fn a_header_claiming_more_rows_than_memory_is_rebuilt_not_trusted() {
    let (dir, store) = store_with(5);
    drop(FlatVectors::open(dir.path(), &store, 10).unwrap());
    // A row count whose byte size overflows (it once wrapped around to
    // a small number and was believed).
    let path = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let huge = u64::MAX / 48 * 2 + 3;
    bytes[16..24].copy_from_slice(&huge.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (flat, state) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    assert!(state.rebuilt && state.damaged, "{state:?}");
    assert_eq!((flat.rows(), flat.get(3)), (5, Some(vector(3))));
    drop(flat);

    // The header's last id (outside the block checksums) disagreeing
    // with the last row's, and a lost `.sum`: both found by the fuzzer
    // to leave rows missing or repeated; both now rebuild.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[24..32].copy_from_slice(&2u64.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (flat, state) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    assert!(state.rebuilt, "{state:?}");
    assert_eq!((flat.rows(), flat.live()), (5, 5));
    drop(flat);
    std::fs::remove_file(Sums::path(&path)).unwrap();
    let (flat, state) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    assert!(state.rebuilt && state.damaged, "{state:?}");
    assert_eq!((flat.rows(), flat.live()), (5, 5));
    drop(flat);
    // And a healthy file opens as it is.
    let (_, state) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    assert!(!state.rebuilt, "{state:?}");
}

#[test]
fn batched_tiles_agree_with_the_row_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    // 300 rows of 10 floats: several tiles' worth of lanes, a ragged end.
    let point = |n: u32| -> Vec<f32> {
        (0..10)
            .map(|i| ((n * 31 + i * 17) % 97) as f32 / 9.0)
            .collect()
    };
    let adds: Vec<Change> = (0..300u32)
        .map(|n| Change::Add {
            record: Record {
                path: format!("/r/{n}.png").into_bytes(),
                hash: blake3::hash(&n.to_le_bytes()).into(),
                ..record(0)
            },
            vector: point(n),
        })
        .collect();
    store.apply(&adds).unwrap();
    store.apply(&[Change::Remove { id: 7 }]).unwrap();
    let (flat, _) = FlatVectors::open(dir.path(), &store, 10).unwrap();
    let queries: Vec<Vec<f32>> = (0..40).map(|n| point(n * 7 + 3)).collect();
    let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
    let keep = |id: u64| id % 3 != 0;
    let tiled = flat.search(&refs, 5, &keep);
    let by_rows: Vec<_> = refs
        .iter()
        .map(|q| flat.search(std::slice::from_ref(q), 5, &keep).remove(0))
        .collect();
    for (t, r) in tiled.iter().zip(&by_rows) {
        assert_eq!(t.len(), 5);
        assert!(t.iter().all(|(id, _)| keep(*id) && *id != 7));
        for ((_, dt), (_, dr)) in t.iter().zip(r) {
            assert!((dt - dr).abs() < 1e-4, "{t:?} vs {r:?}");
        }
    }
}

#[test]
fn a_reader_checking_on_read_never_answers_a_damaged_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let (mut flat, _) = FlatVectors::open(dir.path(), &store, 2).unwrap();
    let rows = 3 * BLOCK_ROWS - 5;
    let points: Vec<(u64, Vec<f32>)> = (0..rows as u64)
        .map(|id| (id, vec![id as f32, 0.0]))
        .collect();
    flat.append(&points).unwrap();
    flat.sync().unwrap();
    drop(flat);

    // Intact: every row is answered, and nothing is said.
    let flat = FlatVectors::open_checked_on_read(dir.path(), 2).unwrap();
    let near = |flat: &FlatVectors, id: u64| flat.search(&[&[id as f32, 0.0]], 1, &|_| true);
    assert_eq!(near(&flat, 5000)[0][0].0, 5000);
    assert_eq!(
        (flat.get(9000), flat.damage()),
        (Some(vec![9000.0, 0.0]), None)
    );

    // One flipped bit in the middle block's vectors.
    let path = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let row = 8 + 4 * 2;
    bytes[HEADER + (BLOCK_ROWS + 100) * row + 9] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    // A read of the other blocks finds nothing wrong...
    let flat = FlatVectors::open_checked_on_read(dir.path(), 2).unwrap();
    assert_eq!(flat.get(10), Some(vec![10.0, 0.0]));
    assert_eq!(flat.damage(), None);
    // ...and one of the damaged block gives nothing, and says so.
    assert_eq!(flat.get(BLOCK_ROWS as u64 + 7), None);
    let said = flat.damage().unwrap();
    assert!(said.contains("rows 4096..8192"), "{said}");
    // A scan answers from the intact blocks only.
    let flat = FlatVectors::open_checked_on_read(dir.path(), 2).unwrap();
    let hit = near(&flat, 5000)[0][0].0;
    assert!(!(4096..8192).contains(&hit), "{hit}");
    assert!(flat.damage().is_some());
    // The whole check on open refuses the file, as the store's open does.
    assert!(FlatVectors::open_verified(dir.path(), 2).is_none());
    // A damaged last row is refused on open: its id is checked against
    // the header's.
    bytes[HEADER + (BLOCK_ROWS + 100) * row + 9] ^= 0x08;
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(FlatVectors::open_checked_on_read(dir.path(), 2).is_none());
}
