//! The store: sled, the source of truth for an index.
//!
//! Trees (keys are big-endian ids so they sort numerically):
//! - `meta`: schema version, model, counters (`next_id`, `live`, `tombstones`), roots.
//! - `records`: id → the embedding and the [`Record`], in one value
//!   ([`value`]). The embedding is immutable once written: changed content
//!   gets a new id, which is what lets the HNSW graph be append-only.
//! - `paths`: path bytes → id (one live record per path).
//! - `content`: the first 8 bytes of the blake3 ‖ id → () (renames, exact
//!   duplicates). 8 bytes, not 32: a key that short keeps the tree's
//!   random inserts cheap, and a lookup checks the whole hash in the
//!   records it finds.
//! - `tombstones`: id → () for ids still in the HNSW graph but no longer live.
//! - `labels`: label → live count (big-endian u64), for `status`.
//! - `imports`: shard file name → [`ImportedShard`] (postcard), for every
//!   Parquet shard `import` finished, so importing it again is a no-op.
//!
//! Every change is one multi-tree transaction, so a kill at any moment leaves
//! whole batches or nothing; counters move in the same transaction.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sled::Transactional;

mod migrate;
mod rewrite;
mod tx;
mod value;
pub use rewrite::Rewritten;
use tx::{tx_error, Tally, TxTrees};

/// Current schema; [`migrate`] lifts older stores to it.
pub const SCHEMA_VERSION: u32 = 5;

/// A shard file that `import` finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedShard {
    /// blake3 of the whole file: a file of the same name with other
    /// contents (a shard re-embedded since) is imported again.
    pub blake3: [u8; 32],
    pub rows: u64,
    /// Unix seconds.
    pub imported_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the index database at {path}: {error}")]
    Open { path: PathBuf, error: sled::Error },
    #[error("the index database at {path} is damaged ({message}). The images themselves are untouched: build a new index from their folders with `imgsearch ingest DIR --index NEW` (`imgsearch status` on a backup lists the folders), then replace this one")]
    Damaged { path: PathBuf, message: String },
    #[error("the index at {path} is in use by another imgsearch process (a running `serve` or ingest); stop it, or wait for it to finish")]
    InUse { path: PathBuf },
    #[error("the index at {path} has schema version {found}, newer than this imgsearch understands ({SCHEMA_VERSION}); upgrade imgsearch")]
    TooNew { path: PathBuf, found: u32 },
    #[error("the disk holding {path} is full; free some space and run the same command again (nothing was lost)")]
    NoSpace { path: PathBuf },
    #[error("cannot rewrite the index database at {path}: {error}")]
    Rewrite {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the file system holding {path} cannot swap two folders in one step, so its database was not rewritten (nothing changed)")]
    CannotSwap { path: PathBuf },
    #[error("index database error: {0}")]
    Db(#[from] sled::Error),
    #[error("corrupt record {id}: {message}")]
    Corrupt { id: u64, message: String },
    #[error("corrupt index metadata `{key}`: {message}")]
    CorruptMeta { key: &'static str, message: String },
    #[error("corrupt import record of `{name}`: {message}")]
    CorruptImport { name: String, message: String },
    #[error("a write to the index database was abandoned: {0}")]
    Aborted(String),
}

impl StoreError {
    /// Whether the database failed because its disk is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::NoSpace { .. } => true,
            StoreError::Db(sled::Error::Io(io))
            | StoreError::Open {
                error: sled::Error::Io(io),
                ..
            } => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

/// One image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Canonical path, as the OS's bytes (names need not be UTF-8).
    pub path: Vec<u8>,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    pub hash: [u8; 32],
    /// Parent folder name (relative to the ingest root), for `root/<label>/file`.
    pub label: Option<String>,
    pub width: u32,
    pub height: u32,
    /// The autoencoder's mean squared reconstruction error on this image.
    pub recon_error: f32,
    /// Unix seconds.
    pub ingested_at: u64,
}

impl Record {
    pub fn path_buf(&self) -> PathBuf {
        bytes_to_path(&self.path)
    }

    /// Takes what depends only on the content (dimensions, reconstruction
    /// error) from a record of the same bytes.
    pub fn copy_image_facts(&mut self, same_content: &Record) {
        self.width = same_content.width;
        self.height = same_content.height;
        self.recon_error = same_content.recon_error;
    }
}

/// Opens sled's database at `dir`, with its failures in our words.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    // sled panics on some damage (a truncated log) instead of erring.
    let opened = crate::guard::catch_panic(|| {
        sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
    })
    .map_err(|message| StoreError::Damaged {
        path: dir.to_path_buf(),
        message,
    })?;
    opened.map_err(|error| match &error {
        // sled reports a held lock as an I/O error whose text says so.
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            StoreError::InUse {
                path: dir.parent().unwrap_or(dir).to_path_buf(),
            }
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            StoreError::NoSpace {
                path: dir.to_path_buf(),
            }
        }
        _ => StoreError::Open {
            path: dir.to_path_buf(),
            error,
        },
    })
}

/// Removes sled's unfinished snapshot files (`snap.*.generating`) from
/// `dir`; returns how many there were.
fn remove_unfinished_snapshots(dir: &Path) -> Result<usize, StoreError> {
    let unfinished = |name: &std::ffi::OsStr| {
        let name = name.to_string_lossy();
        name.starts_with("snap.") && name.ends_with(".generating")
    };
    let io = |error: std::io::Error| StoreError::Open {
        path: dir.to_path_buf(),
        error: sled::Error::Io(error),
    };
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if unfinished(&entry.file_name()) {
            std::fs::remove_file(entry.path()).map_err(io)?;
            removed += 1;
        }
    }
    if removed > 0 {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(removed)
}

pub fn path_to_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

pub fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// Model identity recorded at creation; every later command must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStamp {
    pub name: String,
    pub fingerprint: String,
    pub latent: usize,
}

/// One change in a batch.
pub enum Change {
    /// A new record with its embedding.
    Add { record: Record, vector: Vec<f32> },
    /// Same content at a new path: the record moves, its id and vector stay.
    Move { id: u64, record: Record },
    /// Same content, new size/mtime (touched): metadata only.
    Touch { id: u64, record: Record },
    /// Gone (or replaced by new content): the id becomes a tombstone.
    Remove { id: u64 },
}

/// What [`Store::apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new ids of the batch's `Add` changes, in order.
    pub added: Vec<u64>,
    /// Live records rewritten in place (moved, touched, relabelled).
    pub changed: Vec<u64>,
    /// Records removed: now tombstones.
    pub removed: Vec<u64>,
}

pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    records: sled::Tree,
    paths: sled::Tree,
    content: sled::Tree,
    tombstones: sled::Tree,
    labels: sled::Tree,
    imports: sled::Tree,
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn id_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8-byte id"))
}

/// Bytes of the content hash that key the `content` tree.
const CONTENT_PREFIX: usize = 8;

fn content_key(hash: &[u8; 32], id: u64) -> [u8; CONTENT_PREFIX + 8] {
    let mut k = [0; CONTENT_PREFIX + 8];
    k[..CONTENT_PREFIX].copy_from_slice(&hash[..CONTENT_PREFIX]);
    k[CONTENT_PREFIX..].copy_from_slice(&key(id));
    k
}

fn read_u64(tree: &sled::Tree, name: &str) -> Result<u64, StoreError> {
    Ok(tree
        .get(name)?
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
        .unwrap_or(0))
}

fn corrupt(id: u64) -> impl FnOnce(String) -> StoreError {
    move |message| StoreError::Corrupt { id, message }
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, migrating old schemas.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = match open_db(dir) {
            // sled writes a snapshot to `snap.<lsn>.generating` and renames
            // it when complete, but its reader counts the unfinished file
            // as a snapshot too, and the newest one wins. A snapshot write
            // that failed (a full disk) leaves that file behind, empty, and
            // every later open fails with "Read corrupted data". The file
            // holds nothing the log does not (sled deletes older snapshots
            // only after the rename), so it is removed and the open retried.
            // Only after a failed open: a process that holds the index may
            // be writing such a file right now.
            Err(StoreError::Open { .. } | StoreError::Damaged { .. })
                if remove_unfinished_snapshots(dir)? > 0 =>
            {
                open_db(dir)?
            }
            opened => opened?,
        };
        // Only now, holding sled's lock on `dir`: see `rewrite`.
        rewrite::remove_leftover(dir)?;
        let store = Self {
            meta: db.open_tree("meta")?,
            records: db.open_tree("records")?,
            paths: db.open_tree("paths")?,
            content: db.open_tree("content")?,
            tombstones: db.open_tree("tombstones")?,
            labels: db.open_tree("labels")?,
            imports: db.open_tree("imports")?,
            db,
        };
        migrate::migrate(&store.db, &store.meta, dir)?;
        Ok(store)
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self.meta_u64("schema_version")? as u32)
    }

    fn meta_u64(&self, name: &str) -> Result<u64, StoreError> {
        read_u64(&self.meta, name)
    }

    /// Live records (kept as a counter: sled's `len` scans the tree).
    pub fn live_count(&self) -> Result<u64, StoreError> {
        self.meta_u64("live")
    }

    pub fn tombstone_count(&self) -> Result<u64, StoreError> {
        self.meta_u64("tombstones")
    }

    pub fn model_stamp(&self) -> Result<Option<ModelStamp>, StoreError> {
        match self.meta.get("model")? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::CorruptMeta {
                    key: "model",
                    message: e.to_string(),
                }),
        }
    }

    pub fn set_model_stamp(&self, stamp: &ModelStamp) -> Result<(), StoreError> {
        self.meta
            .insert("model", serde_json::to_vec(stamp).expect("serializable"))?;
        self.db.flush()?;
        Ok(())
    }

    /// Folders that have been ingested, canonical.
    pub fn roots(&self) -> Result<Vec<PathBuf>, StoreError> {
        Ok(self
            .meta
            .get("roots")?
            .and_then(|v| serde_json::from_slice::<Vec<Vec<u8>>>(&v).ok())
            .unwrap_or_default()
            .iter()
            .map(|b| bytes_to_path(b))
            .collect())
    }

    pub fn add_root(&self, root: &Path) -> Result<(), StoreError> {
        let mut roots: Vec<Vec<u8>> = self.roots()?.iter().map(|p| path_to_bytes(p)).collect();
        let new = path_to_bytes(root);
        if !roots.contains(&new) {
            roots.push(new);
            roots.sort();
            self.meta
                .insert("roots", serde_json::to_vec(&roots).expect("serializable"))?;
        }
        Ok(())
    }

    pub fn id_for_path(&self, path: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.paths.get(path)?.map(|v| id_of(&v)))
    }

    pub fn record(&self, id: u64) -> Result<Option<Record>, StoreError> {
        self.records
            .get(key(id))?
            .map(|v| value::record(&v).map_err(corrupt(id)))
            .transpose()
    }

    pub fn vector(&self, id: u64) -> Result<Option<Vec<f32>>, StoreError> {
        self.records
            .get(key(id))?
            .map(|v| value::vector(&v).map_err(corrupt(id)))
            .transpose()
    }

    /// Live ids whose content hash is `hash`.
    pub fn ids_with_hash(&self, hash: &[u8; 32]) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for k in self.content.scan_prefix(&hash[..CONTENT_PREFIX]).keys() {
            let id = id_of(&k?[CONTENT_PREFIX..]);
            // The key holds a prefix of the hash; the record holds all of it.
            if self.record(id)?.is_some_and(|r| r.hash == *hash) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every live (id, record), in id order.
    pub fn records(&self) -> impl Iterator<Item = Result<(u64, Record), StoreError>> + '_ {
        self.records.iter().map(|kv| {
            let (k, v) = kv?;
            let id = id_of(&k);
            Ok((id, value::record(&v).map_err(corrupt(id))?))
        })
    }

    /// Every live (id, embedding), in id order; `after` skips ids ≤ it.
    pub fn vectors_after(
        &self,
        after: Option<u64>,
    ) -> impl Iterator<Item = Result<(u64, Vec<f32>), StoreError>> + '_ {
        let start = after.map_or(0, |a| a + 1);
        self.records.range(key(start)..).map(|kv| {
            let (k, v) = kv?;
            let id = id_of(&k);
            Ok((id, value::vector(&v).map_err(corrupt(id))?))
        })
    }

    /// Live (id, path) pairs whose path starts with `prefix`.
    pub fn paths_under(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, u64), StoreError>> + '_ {
        self.paths.scan_prefix(prefix).map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), id_of(&v)))
                .map_err(StoreError::from)
        })
    }

    pub fn tombstones(&self) -> Result<Vec<u64>, StoreError> {
        self.tombstones
            .iter()
            .keys()
            .map(|k| Ok(id_of(&k?)))
            .collect()
    }

    /// Live images per label, by label.
    pub fn label_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.labels
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let n = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
                Ok((String::from_utf8_lossy(&k).into_owned(), n))
            })
            .collect()
    }

    /// Every live labelled (id, label), in id order. Read from the
    /// records: schema 4 kept a tree of them, a fourth insert per record
    /// that cost an import of a million records 5 s of its 56.
    pub fn labelled(&self) -> impl Iterator<Item = Result<(u64, String), StoreError>> + '_ {
        self.records()
            .filter_map(|item| item.map(|(id, r)| r.label.map(|l| (id, l))).transpose())
    }

    /// The label of a live record, if it has one.
    pub fn label_of(&self, id: u64) -> Result<Option<String>, StoreError> {
        Ok(self.record(id)?.and_then(|r| r.label))
    }

    /// Clears the tombstones after the graph was rebuilt without them.
    pub fn clear_tombstones(&self) -> Result<(), StoreError> {
        // Read first: iterating a tree inside its own transaction deadlocks.
        let ids = self.tombstones()?;
        (&self.meta, &self.tombstones)
            .transaction(|(meta, tombs)| {
                for id in &ids {
                    tombs.remove(&key(*id))?;
                }
                meta.insert("tombstones", &0u64.to_be_bytes())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.db.flush()?;
        Ok(())
    }

    /// Applies a batch atomically and makes it durable, and says what it
    /// did: the new ids of `Add` changes (in order), and every record it
    /// rewrote or removed, including those an `Add` or `Move` displaced
    /// from their path.
    pub fn apply(&self, changes: &[Change]) -> Result<Applied, StoreError> {
        let applied = (
            &self.meta,
            &self.records,
            &self.paths,
            &self.content,
            &self.tombstones,
            &self.labels,
        )
            .transaction(|(meta, records, paths, content, tombs, labels)| {
                let applied = std::cell::RefCell::new(Applied::default());
                let tally = std::cell::RefCell::new(Tally::default());
                let tx = TxTrees {
                    meta,
                    records,
                    paths,
                    content,
                    tombs,
                    labels,
                    applied: &applied,
                    tally: &tally,
                };
                for change in changes {
                    match change {
                        Change::Add { record, vector } => {
                            tx.add(record, vector)?;
                        }
                        Change::Move { id, record } | Change::Touch { id, record } => {
                            tx.update(*id, record)?
                        }
                        Change::Remove { id } => tx.remove(*id)?,
                    }
                }
                tx.finish()?;
                Ok(applied.into_inner())
            })
            .map_err(tx_error)?;
        self.db.flush()?;
        Ok(applied)
    }

    /// What `import` recorded for a shard file of this name, if anything.
    pub fn imported(&self, name: &str) -> Result<Option<ImportedShard>, StoreError> {
        self.imports
            .get(name)?
            .map(|v| {
                postcard::from_bytes(&v).map_err(|e| StoreError::CorruptImport {
                    name: name.to_string(),
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    /// Records a finished shard import (durably): call it only once every
    /// row of the file is committed.
    pub fn record_import(&self, name: &str, shard: &ImportedShard) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(shard).expect("an import record serializes");
        self.imports.insert(name, bytes)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
