//! Schema migrations: each lifts a store one version, and is safe to re-run
//! after a kill (it rebuilds what it writes from scratch); the version is
//! bumped only once it is done and flushed.

use std::path::Path;

use super::{content_key, id_of, value, Record, StoreError, SCHEMA_VERSION};

/// Brings a database from one schema version to the next.
type Migration = fn(&sled::Db) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` lifts a store from version `i + 1` to `i + 2`.
const MIGRATIONS: &[Migration] = &[
    migrate_v1_label_trees,
    migrate_v2_imports,
    migrate_v3_catalogue,
    migrate_v4_one_value,
];

/// Trees of older schemas that a migration replaced. They are dropped only
/// after the version moved past them, so a kill part way through a
/// migration leaves the old trees whole for the rerun.
const RETIRED_TREES: &[&str] = &["images", "vectors", "hashes", "labelled"];

/// Lifts the store in `db` to [`SCHEMA_VERSION`], or stamps a new one
/// with it; `dir` is for errors.
pub(super) fn migrate(db: &sled::Db, meta: &sled::Tree, dir: &Path) -> Result<(), StoreError> {
    let found = super::read_u64(meta, "schema_version")? as u32;
    if found == 0 {
        meta.insert("schema_version", &(SCHEMA_VERSION as u64).to_be_bytes())?;
        db.flush()?;
        return Ok(());
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: dir.to_path_buf(),
            found,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize - 1) {
        migration(db)?;
        db.flush()?;
        meta.insert("schema_version", &(i as u64 + 2).to_be_bytes())?;
        db.flush()?;
    }
    // Also after a kill between the last bump and this.
    let names = db.tree_names();
    for retired in RETIRED_TREES {
        if names.iter().any(|name| name == retired.as_bytes()) {
            db.drop_tree(retired)?;
        }
    }
    Ok(())
}

/// v1 → v2: the `labelled` and `labels` trees, derived from the records.
fn migrate_v1_label_trees(db: &sled::Db) -> Result<(), StoreError> {
    let (images, labelled, labels) = (
        db.open_tree("images")?,
        db.open_tree("labelled")?,
        db.open_tree("labels")?,
    );
    labelled.clear()?;
    labels.clear()?;
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for kv in images.iter() {
        let (k, v) = kv?;
        let rec: Record = postcard::from_bytes(&v).map_err(|e| StoreError::Corrupt {
            id: id_of(&k),
            message: e.to_string(),
        })?;
        if let Some(label) = rec.label {
            labelled.insert(&k, label.as_bytes())?;
            *counts.entry(label).or_default() += 1;
        }
    }
    for (label, n) in counts {
        labels.insert(label.as_bytes(), &n.to_be_bytes())?;
    }
    Ok(())
}

/// v2 → v3: the `imports` tree. A v2 store imported nothing, so it starts
/// empty.
fn migrate_v2_imports(db: &sled::Db) -> Result<(), StoreError> {
    db.open_tree("imports")?.clear()?;
    Ok(())
}

/// v3 → v4: the record catalogue beside the store (`crate::catalogue`).
/// Nothing changes in sled: the catalogue is derived, and written on the
/// next open. The version moves so that an imgsearch that does not keep
/// the catalogue up to date refuses to write to the store behind its back.
fn migrate_v3_catalogue(_db: &sled::Db) -> Result<(), StoreError> {
    Ok(())
}

/// Records copied per `apply_batch` by [`migrate_v4_one_value`]: large
/// enough to amortise sled's per-batch work, small enough to hold.
const MIGRATE_BATCH: usize = 8192;

/// v4 → v5: a record and its embedding in one value of `records` (they
/// were `images` and `vectors`), and the content-hash index keyed by the
/// hash's first 8 bytes (`content`; `hashes` was keyed by all 32), and
/// no `labelled` tree (labels are read from the records). Together they
/// halve what an import asks of sled per record (bench/RESULTS.md).
fn migrate_v4_one_value(db: &sled::Db) -> Result<(), StoreError> {
    let (images, vectors, records, content) = (
        db.open_tree("images")?,
        db.open_tree("vectors")?,
        db.open_tree("records")?,
        db.open_tree("content")?,
    );
    records.clear()?;
    content.clear()?;
    let (mut to_records, mut to_content, mut pending) =
        (sled::Batch::default(), sled::Batch::default(), 0);
    for kv in images.iter() {
        let (k, v) = kv?;
        let id = id_of(&k);
        let corrupt = |message: String| StoreError::Corrupt { id, message };
        let record: Record = postcard::from_bytes(&v).map_err(|e| corrupt(e.to_string()))?;
        let vector = vectors
            .get(&k)?
            .ok_or_else(|| corrupt("it has no embedding".into()))?;
        to_records.insert(&k, value::encode(&record, &value::floats(&vector)));
        to_content.insert(content_key(&record.hash, id).as_slice(), &[]);
        pending += 1;
        if pending == MIGRATE_BATCH {
            records.apply_batch(std::mem::take(&mut to_records))?;
            content.apply_batch(std::mem::take(&mut to_content))?;
            pending = 0;
        }
    }
    records.apply_batch(to_records)?;
    content.apply_batch(to_content)?;
    Ok(())
}
