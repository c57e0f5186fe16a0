use std::path::Path;

use super::*;
use crate::ann::FlatVectors;
use crate::filter::Filter;
use crate::store::{Change, Record, Store};

fn record(path: &str, label: Option<&str>, n: u8) -> Record {
    Record {
        path: path.as_bytes().to_vec(),
        size: 1,
        mtime_ns: 1,
        hash: [n; 32],
        label: label.map(str::to_string),
        width: 1,
        height: 1,
        recon_error: 0.0,
        ingested_at: 0,
    }
}

fn stamp() -> ModelStamp {
    ModelStamp {
        name: "digits".into(),
        fingerprint: "f00d".into(),
        latent: 2,
    }
}

/// A store, its flat file and its catalogue in a temporary folder.
struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    flat: FlatVectors,
    writer: CatalogueWriter,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.set_model_stamp(&stamp()).unwrap();
        let (mut flat, _) = FlatVectors::open(dir.path(), &store, 2).unwrap();
        let (writer, rebuilt) =
            CatalogueWriter::open(dir.path(), &store, &mut flat, &stamp()).unwrap();
        assert_eq!(rebuilt.as_deref(), Some("missing"));
        Self {
            dir,
            store,
            flat,
            writer,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What `Index::commit` does, in its order.
    fn commit(&mut self, changes: Vec<Change>) {
        self.writer.begin().unwrap();
        let applied = self.store.apply(&changes).unwrap();
        let adds: Vec<(Record, Vec<f32>)> = changes
            .into_iter()
            .filter_map(|c| match c {
                Change::Add { record, vector } => Some((record, vector)),
                _ => None,
            })
            .collect();
        let points: Vec<(u64, Vec<f32>)> = applied
            .added
            .iter()
            .zip(&adds)
            .map(|(&id, (_, v))| (id, v.clone()))
            .collect();
        self.flat.append(&points).unwrap();
        self.flat.add_tombstones(applied.removed.iter().copied());
        let added: Vec<(u64, &Record)> = applied
            .added
            .iter()
            .copied()
            .zip(adds.iter().map(|(r, _)| r))
            .collect();
        self.writer.record(&self.store, &added, &applied).unwrap();
    }

    /// What `Index::save` does.
    fn save(&mut self) {
        self.store.flush().unwrap();
        self.flat.sync().unwrap();
        self.writer.save(&self.store, &mut self.flat).unwrap();
    }

    /// A writer opening the folder afresh, as the next process would.
    fn reopen(&mut self) -> Option<String> {
        let (flat, _) = FlatVectors::open(self.path(), &self.store, 2).unwrap();
        self.flat = flat;
        let (writer, rebuilt) =
            CatalogueWriter::open(self.dir.path(), &self.store, &mut self.flat, &stamp()).unwrap();
        self.writer = writer;
        rebuilt
    }
}

fn add(path: &str, label: Option<&str>, n: u8) -> Change {
    Change::Add {
        record: record(path, label, n),
        vector: vec![n as f32, 0.0],
    }
}

/// Every row as owned values, to compare two catalogues.
fn rows(catalogue: &Catalogue) -> Vec<(u64, Vec<u8>, Option<String>, bool)> {
    catalogue
        .iter()
        .map(|r| {
            (
                r.id,
                r.path.to_vec(),
                r.label.map(str::to_string),
                r.removed,
            )
        })
        .collect()
}

#[test]
fn mirrors_adds_moves_relabels_and_removals_as_a_rebuild_would() {
    let mut f = Fixture::new();
    f.commit(vec![
        add("/p/a/0.png", Some("a"), 0),
        add("/p/a/1.png", Some("a"), 1),
        add("/p/b/2.png", Some("b"), 2),
        add("/p/3.png", None, 3),
        add("/p/b/4.png", Some("b"), 4),
    ]);
    f.save();
    let catalogue = Catalogue::open(f.path()).unwrap();
    assert_eq!((catalogue.rows(), catalogue.live()), (5, 5));
    let meta = catalogue.meta().unwrap();
    assert_eq!(
        (meta.stamp, meta.schema_version),
        (stamp(), crate::store::SCHEMA_VERSION)
    );
    assert_eq!(meta.labels.get("a"), Some(&2));
    let two = catalogue.find(2).unwrap();
    assert_eq!((two.path, two.label), (&b"/p/b/2.png"[..], Some("b")));
    assert_eq!(catalogue.find(3).unwrap().label, None);

    // A move with a new label, a removal, and an add that displaces the
    // record at its path.
    f.commit(vec![
        Change::Move {
            id: 1,
            record: record("/p/c/1-moved.png", Some("c"), 1),
        },
        Change::Remove { id: 3 },
        add("/p/a/0.png", Some("a"), 9),
    ]);
    f.save();
    let catalogue = Catalogue::open(f.path()).unwrap();
    assert_eq!((catalogue.rows(), catalogue.live()), (6, 4));
    assert_eq!(catalogue.find(0), None, "displaced by the new add");
    assert_eq!(catalogue.find(3), None, "removed");
    let moved = catalogue.find(1).unwrap();
    assert_eq!(
        (moved.path, moved.label),
        (&b"/p/c/1-moved.png"[..], Some("c"))
    );
    assert_eq!(catalogue.id_for_path(b"/p/c/1-moved.png"), Some(1));
    assert_eq!(catalogue.id_for_path(b"/p/a/1.png"), None);
    assert_eq!(catalogue.id_for_path(b"/p/a/0.png"), Some(5));
    assert_eq!(catalogue.removed_ids(), [0, 3]);

    // Filters select what the store's filter selects.
    let by_label = Filter {
        label: Some("b".into()),
        ..Filter::default()
    };
    assert_eq!(by_label.allowed_ids_in(&catalogue), Some(vec![2, 4]));
    assert_eq!(by_label.allowed_ids(&f.store).unwrap(), Some(vec![2, 4]));
    let under = Filter {
        under: Some("/p/a".into()),
        ..Filter::default()
    };
    assert_eq!(under.allowed_ids_in(&catalogue), Some(vec![5]));
    assert_eq!(under.allowed_ids(&f.store).unwrap(), Some(vec![5]));
    assert_eq!(Filter::default().allowed_ids_in(&catalogue), None);

    // What the writer kept up change by change is what a rebuild from the
    // store writes (removed rows stay until compaction, as in the flat file).
    let kept = rows(&catalogue);
    CatalogueWriter::write_fresh(f.dir.path(), &f.store, &mut f.flat, &stamp()).unwrap();
    assert_eq!(rows(&Catalogue::open(f.path()).unwrap()), kept);
    // And a writer reopening a clean, current catalogue keeps it.
    assert_eq!(f.reopen(), None);
}

#[test]
fn a_dirty_torn_damaged_missing_or_stale_catalogue_is_not_trusted_and_is_rebuilt() {
    let mut f = Fixture::new();
    f.commit(
        (0..20)
            .map(|n| add(&format!("/p/{n}.png"), Some("x"), n))
            .collect(),
    );
    f.save();
    let good = rows(&Catalogue::open(f.path()).unwrap());
    let cat = f.path().join(FILE_NAME);
    let strings = f.path().join(STRINGS_NAME);
    let reader_says = |f: &Fixture| Catalogue::open(f.path()).err().unwrap_or_default();

    // Dirty: a writer killed between its store commit and its save.
    f.commit(vec![add("/p/new.png", None, 30)]);
    assert!(
        reader_says(&f).contains("unfinished"),
        "{}",
        reader_says(&f)
    );
    assert_eq!(
        f.reopen().as_deref(),
        Some("left dirty: a writer stopped before it finished")
    );
    let rebuilt = Catalogue::open(f.path()).unwrap();
    assert_eq!(rebuilt.rows(), 21);
    assert_eq!(rebuilt.find(20).unwrap().path, b"/p/new.png");

    // Torn: shorter than its row count.
    let len = std::fs::metadata(&cat).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cat)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    assert!(reader_says(&f).starts_with("torn"), "{}", reader_says(&f));
    assert!(f.reopen().unwrap().starts_with("torn"));
    assert_eq!(Catalogue::open(f.path()).unwrap().rows(), 21);

    // Damaged: one flipped byte in the meta. A reader checks what it reads
    // against the piece sums in `records.sum`, so it finds the damage when
    // it reads the meta; without them, it checks both files whole on open.
    let mut bytes = std::fs::read(&strings).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&strings, &bytes).unwrap();
    let reader = Catalogue::open(f.path()).unwrap();
    assert!(reader.meta().unwrap_err().contains("checksum"));
    assert!(reader.damage().unwrap().contains("strings are damaged"));
    std::fs::remove_file(f.path().join(SUMS_NAME)).unwrap();
    assert!(reader_says(&f).contains("checksum"), "{}", reader_says(&f));
    assert!(f.reopen().unwrap().contains("checksum"));
    assert!(
        f.path().join(SUMS_NAME).exists(),
        "written with the rebuild"
    );
    assert_eq!(
        Catalogue::open(f.path()).unwrap().find(20).unwrap().path,
        b"/p/new.png"
    );

    // Missing: either file.
    std::fs::remove_file(&strings).unwrap();
    assert!(reader_says(&f).contains("strings unreadable"));
    assert!(f.reopen().is_some());
    std::fs::remove_file(&cat).unwrap();
    assert_eq!(reader_says(&f), "missing");
    assert_eq!(f.reopen().as_deref(), Some("missing"));

    // Stale: a clean catalogue from before later commits, put back. Its
    // generation is not the flat file's, so a reader (which checks it
    // beside the flat file) and a writer both refuse it, even when the
    // commits since were removals only and left the rows as they were.
    let current = |f: &Fixture| Catalogue::open(f.path()).unwrap().describes(&f.flat);
    assert!(current(&f));
    let old = (
        std::fs::read(&cat).unwrap(),
        std::fs::read(&strings).unwrap(),
    );
    f.commit(vec![Change::Remove { id: 2 }]);
    f.save();
    assert!(current(&f));
    std::fs::write(&cat, &old.0).unwrap();
    std::fs::write(&strings, &old.1).unwrap();
    let stale = Catalogue::open(f.path()).unwrap();
    assert_eq!(
        (stale.rows(), stale.last_id()),
        (f.flat.rows(), f.flat.last_id())
    );
    assert!(!stale.describes(&f.flat));
    assert_eq!(
        f.reopen().as_deref(),
        Some("made for another state of the flat file")
    );
    let rebuilt = Catalogue::open(f.path()).unwrap();
    assert!(rebuilt.describes(&f.flat));
    assert_eq!((rebuilt.find(2), rebuilt.live()), (None, 20));
    assert_eq!(rows(&rebuilt).len(), good.len() + 1);
}

/// With `records.sum`, a reader checks only the 64 KiB pieces it reads: a
/// damaged path elsewhere does not stop it, a damaged one it reads is
/// never answered, and sums that do not add up to the header's checksums
/// are passed over for a whole check.
#[test]
fn a_reader_checks_only_the_pieces_it_reads() {
    let mut f = Fixture::new();
    let long = "d".repeat(200);
    f.commit(
        (0..3000u32)
            .map(|n| add(&format!("/p/{long}/{n:05}.png"), Some("x"), n as u8))
            .collect(),
    );
    f.save();
    let strings = f.path().join(STRINGS_NAME);
    let sums = f.path().join(SUMS_NAME);
    let intact = std::fs::read(&strings).unwrap();
    assert!(intact.len() > 8 * crate::checksum::PIECE, "several pieces");

    // Damage the path of record 2000, far from records 10 and 2999.
    let at = {
        let reader = Catalogue::open(f.path()).unwrap();
        let path = reader.find(2000).unwrap().path;
        path.as_ptr() as usize - reader.strings.as_ptr() as usize
    };
    let mut bytes = intact.clone();
    bytes[at + 5] ^= 0x01;
    std::fs::write(&strings, &bytes).unwrap();
    let reader = Catalogue::open(f.path()).expect("the damage is not read on open");
    assert!(reader.meta().is_ok());
    let far = format!("/p/{long}/00010.png");
    assert_eq!(reader.find(10).unwrap().path, far.as_bytes());
    assert!(reader.find(2999).is_some());
    assert_eq!(reader.damage(), None);
    assert_eq!(reader.find(2000), None, "a damaged path is never answered");
    assert!(reader.damage().unwrap().contains("strings are damaged"));
    // Whole reads (filters, path lookups) check everything first.
    let reader = Catalogue::open(f.path()).unwrap();
    assert_eq!(reader.iter().count(), 0);
    assert!(reader.damage().is_some());

    // Sums that do not add up to the header's checksums (one flipped bit)
    // are passed over: the reader checks whole, and refuses on open.
    std::fs::write(&strings, &intact).unwrap();
    let mut saved = std::fs::read(&sums).unwrap();
    saved[40] ^= 0x01;
    std::fs::write(&sums, &saved).unwrap();
    let whole = Catalogue::open(f.path()).unwrap();
    assert_eq!(rows(&whole).len(), 3000);
    std::fs::write(&strings, &bytes).unwrap();
    assert!(Catalogue::open(f.path())
        .err()
        .unwrap()
        .contains("checksum"));
    std::fs::write(&strings, &intact).unwrap();

    // Lost, they are written again by the next writer, which keeps the
    // catalogue itself.
    std::fs::remove_file(&sums).unwrap();
    assert_eq!(f.reopen(), None);
    assert!(super::read_sums(f.path(), &Catalogue::open(f.path()).unwrap().header).is_some());
}

/// Rows keep their path's CRC32C, so a lookup by path reads the strings of
/// matching rows only; rows from before that (no flag) are still found by
/// their bytes, and the next writer rewrites them once.
#[test]
fn a_lookup_by_path_uses_the_rows_hashes_and_old_rows_still_answer() {
    let mut f = Fixture::new();
    // Same lengths throughout: only the hash tells them apart.
    f.commit(
        (0..50u8)
            .map(|n| add(&format!("/p/{n:03}.png"), None, n))
            .collect(),
    );
    f.save();
    let reader = Catalogue::open(f.path()).unwrap();
    let row = RowFields::decode(&reader.rows[7 * ROW..]);
    assert_eq!(row.flags, PATH_HASHED);
    assert_eq!(row.path_hash, crc32c::crc32c(b"/p/007.png"));
    assert_eq!(reader.id_for_path(b"/p/007.png"), Some(7));
    assert_eq!(reader.id_for_path(b"/p/999.png"), None);
    assert_eq!(reader.damage(), None);

    // A damaged path is not answered, and is named.
    let strings = f.path().join(STRINGS_NAME);
    let intact = std::fs::read(&strings).unwrap();
    let at = intact.windows(10).position(|w| w == b"/p/007.png").unwrap();
    let mut damaged = intact.clone();
    damaged[at + 4] ^= 0x01;
    std::fs::write(&strings, &damaged).unwrap();
    let reader = Catalogue::open(f.path()).unwrap();
    assert_eq!(reader.id_for_path(b"/p/007.png"), None);
    assert!(reader.damage().is_some());
    std::fs::write(&strings, &intact).unwrap();

    // Rows as an older writer left them: no flag, no hash (checksums fixed
    // up, the piece sums gone, as they were then).
    let cat = f.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&cat).unwrap();
    for row in bytes[HEADER..].chunks_exact_mut(ROW) {
        row[24..32].fill(0);
    }
    let crc = checksum(&bytes[HEADER..]);
    bytes[48..52].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&cat, &bytes).unwrap();
    std::fs::remove_file(f.path().join(SUMS_NAME)).unwrap();
    let old = Catalogue::open(f.path()).unwrap();
    assert_eq!(old.id_for_path(b"/p/031.png"), Some(31));
    assert_eq!(old.id_for_path(b"/p/999.png"), None);
    assert_eq!(
        f.reopen().as_deref(),
        Some("made before its rows kept their path's hash")
    );
    let rewritten = Catalogue::open(f.path()).unwrap();
    assert_eq!(
        RowFields::decode(&rewritten.rows[31 * ROW..]).flags,
        PATH_HASHED
    );
    assert_eq!(rewritten.id_for_path(b"/p/031.png"), Some(31));
    assert_eq!(f.reopen(), None, "kept from then on");
}
