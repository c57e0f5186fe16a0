//! Import: Parquet embedding shards (made by `embed --out` on any number of
//! machines, or by `export --format parquet`) into an index, as the same
//! records, flat file and graph that ingest of the same images makes.
//!
//! A reader thread decodes the shard files row group by row group while
//! this thread commits batches through [`Index::commit`], the write path
//! ingest uses. Each row is matched by path: a path already stored with the
//! same content is left alone (or its file facts and label updated), one
//! with other content is replaced, a new one added. So a rerun after a kill
//! finds the committed rows unchanged and adds the rest, and two shards
//! naming one path leave one record. A file is recorded by name and
//! checksum once all its rows are committed; importing it again is a no-op.
//!
//! The files themselves need not be on this machine: a record keeps the
//! path its shard gives.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::index::{Index, IndexError, PendingGraph};
use crate::model::Model;
use crate::progress::Progress;
use crate::shards::{ShardError, ShardMeta, ShardReader, ShardRow};
use crate::store::{path_to_bytes, Change, ImportedShard, Record, StoreError};

/// Rows committed per sled transaction. Larger than ingest's batch: rows
/// come embedded, so a batch costs only its writes.
pub const BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("no shard files (*.parquet) in {0}")]
    NoShards(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    ModelMismatch(Box<ShardModelMismatch>),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ann(#[from] crate::ann::AnnError),
    #[error("model failed: {0}")]
    Model(#[from] crate::model::ModelError),
}

/// A shard made with another model than the index's (or than the model of
/// that name here).
#[derive(Debug, thiserror::Error)]
#[error("{file} was embedded with model `{shard_model}` ({shard_fp}), but {target} uses `{model}` ({fp}); their vectors cannot be searched together. Import it into another index, or re-embed it with `--model {model}`")]
pub struct ShardModelMismatch {
    pub file: PathBuf,
    pub shard_model: String,
    pub shard_fp: String,
    /// "the index at …" or "this imgsearch".
    pub target: String,
    pub model: String,
    pub fp: String,
}

/// What happened to one shard file.
#[derive(Debug, Serialize)]
pub struct ImportedFile {
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    pub rows: u64,
    /// Imported before with the same name and checksum: nothing was done.
    pub already_imported: bool,
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub index: PathBuf,
    pub model: String,
    pub files: Vec<ImportedFile>,
    /// Rows read from the files imported (not those already imported).
    pub rows: u64,
    /// New records.
    pub added: u64,
    /// Paths stored before with other content, now replaced.
    pub updated: u64,
    /// Paths stored before with the same content (size, mtime or label
    /// refreshed where they differed).
    pub unchanged: u64,
    /// Whether the graph was rebuilt to drop the replaced records.
    pub compacted: bool,
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Seconds in sled transactions, and in the flat file and graph. The
    /// graph runs beside the store, so the two can add up past `seconds`.
    pub store_seconds: f64,
    pub index_seconds: f64,
}

/// The shard files the arguments name: a folder gives its `*.parquet`
/// files (not its subfolders, so `errors/` is left out), a file itself.
/// Sorted by name within each folder.
pub fn shard_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ImportError> {
    let mut files = Vec::new();
    for input in inputs {
        let read = |source| ImportError::Read {
            path: input.clone(),
            source,
        };
        let meta = std::fs::metadata(input).map_err(read)?;
        if !meta.is_dir() {
            files.push(input.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(input)
            .map_err(read)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "parquet") && p.is_file())
            .collect();
        if found.is_empty() {
            return Err(ImportError::NoShards(input.clone()));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Imports shard `files` into the index in `dir`, creating it (with the
/// shards' model, or `model` if given) when there is none. Every file's
/// model is checked before anything is written.
pub fn import(
    dir: &Path,
    files: &[PathBuf],
    model: Option<&str>,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let metas: Vec<(ShardMeta, u64)> = files
        .iter()
        .map(|f| ShardReader::open(f).map(|r| (r.meta, r.rows)))
        .collect::<Result<_, _>>()?;
    let Some((first, _)) = metas.first() else {
        return Ok(ImportReport::default());
    };
    let index = open_index(dir, first, &files[0], model)?;
    for ((meta, _), file) in metas.iter().zip(files) {
        if meta.fingerprint != index.model.fingerprint {
            let target = format!("the index at {}", dir.display());
            return Err(mismatch(file, meta, target, &index.model));
        }
    }
    let mut report = ImportReport {
        index: dir.to_path_buf(),
        model: index.model.name.clone(),
        ..Default::default()
    };
    progress.stage("rows", Some(metas.iter().map(|(_, rows)| rows).sum()));
    // The graph takes each batch on a thread of its own while this one
    // commits the next to the store: those are an import's two costs, and
    // sled's inserts keep one core busy where the graph's keep them all.
    let (graph_tx, graph_rx) = sync_channel::<PendingGraph>(1);
    let (replaced_any, graph_seconds) = std::thread::scope(|scope| {
        let index = &index;
        let graph =
            scope.spawn(move || -> f64 { graph_rx.iter().map(|p| index.insert_pending(p)).sum() });
        let imported = import_files(index, files, &metas, &graph_tx, progress, &mut report);
        // Ends the graph's thread once it has taken every batch.
        drop(graph_tx);
        let graph_seconds = graph
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        imported.map(|replaced_any| (replaced_any, graph_seconds))
    })?;
    report.index_seconds += graph_seconds;
    if replaced_any && crate::ann::Ann::needs_rebuild(&index.store)? {
        index.compact()?;
        report.compacted = true;
    }
    index.complete_graph()?;
    index.save()?;
    report.seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = report.rows as f64 / report.seconds.max(1e-9);
    Ok(report)
}

/// Imports each file not imported before (by name and checksum), in
/// order, handing each batch's graph work to `graph`; returns whether any
/// stored record was replaced.
fn import_files(
    index: &Index,
    files: &[PathBuf],
    metas: &[(ShardMeta, u64)],
    graph: &SyncSender<PendingGraph>,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<bool, ImportError> {
    let mut replaced_any = false;
    for ((meta, rows), file) in metas.iter().zip(files) {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let checksum = *crate::fsutil::file_blake3(file)
            .map_err(|source| ImportError::Read {
                path: file.clone(),
                source,
            })?
            .as_bytes();
        let done = index.store.imported(&name)?;
        if done.is_some_and(|d| d.blake3 == checksum) {
            report.files.push(ImportedFile {
                path: file.clone(),
                rows: *rows,
                already_imported: true,
            });
            progress.advance(*rows);
            continue;
        }
        replaced_any |= import_file(index, file, graph, progress, report)?;
        for root in &meta.roots {
            index.add_root(root)?;
        }
        let imported_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        index.store.record_import(
            &name,
            &ImportedShard {
                blake3: checksum,
                rows: *rows,
                imported_at,
            },
        )?;
        report.rows += rows;
        report.files.push(ImportedFile {
            path: file.clone(),
            rows: *rows,
            already_imported: false,
        });
    }
    Ok(replaced_any)
}

fn mismatch(file: &Path, meta: &ShardMeta, target: String, model: &Model) -> ImportError {
    ImportError::ModelMismatch(Box::new(ShardModelMismatch {
        file: file.to_path_buf(),
        shard_model: meta.model.clone(),
        shard_fp: meta.fingerprint.clone(),
        target,
        model: model.name.clone(),
        fp: model.fingerprint.clone(),
    }))
}

/// Opens the index, or creates it with the model the first shard names
/// (a default since renamed is found by its fingerprint) once that model is
/// known to give the shard's embeddings.
fn open_index(
    dir: &Path,
    meta: &ShardMeta,
    file: &Path,
    model: Option<&str>,
) -> Result<Index, ImportError> {
    if dir.join("db").exists() {
        return Ok(Index::open(dir, model, false)?);
    }
    let name = model.unwrap_or_else(|| {
        crate::model::renamed_default(&meta.model, &meta.fingerprint).unwrap_or(&meta.model)
    });
    let candidate = Model::load(name)?;
    if candidate.fingerprint != meta.fingerprint {
        return Err(mismatch(file, meta, "this imgsearch".into(), &candidate));
    }
    Ok(Index::open(dir, Some(name), true)?)
}

/// Streams one file's rows into the index in batches; returns whether any
/// stored record was replaced.
fn import_file(
    index: &Index,
    file: &Path,
    graph: &SyncSender<PendingGraph>,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<bool, ImportError> {
    let reader = ShardReader::open(file)?;
    let mut replaced_any = false;
    std::thread::scope(|scope| -> Result<(), ImportError> {
        // Row groups are decoded here while the batch before commits.
        let (groups_tx, groups_rx) = sync_channel::<Result<Vec<ShardRow>, ShardError>>(4);
        scope.spawn(move || {
            for group in reader {
                if groups_tx.send(group).is_err() {
                    return;
                }
            }
        });
        let mut batch: Vec<ShardRow> = Vec::with_capacity(BATCH);
        let mut paths: HashSet<PathBuf> = HashSet::new();
        for group in groups_rx {
            for row in group? {
                // One path twice in a batch: the first commits before the
                // second is looked up, so the second replaces it.
                if batch.len() == BATCH || paths.contains(&row.path) {
                    replaced_any |= commit(index, &mut batch, graph, progress, report)?;
                    paths.clear();
                }
                paths.insert(row.path.clone());
                batch.push(row);
            }
        }
        replaced_any |= commit(index, &mut batch, graph, progress, report)?;
        Ok(())
    })?;
    Ok(replaced_any)
}

/// Commits a batch of rows (emptying it); returns whether it replaced any
/// stored record.
fn commit(
    index: &Index,
    batch: &mut Vec<ShardRow>,
    graph: &SyncSender<PendingGraph>,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<bool, ImportError> {
    if batch.is_empty() {
        return Ok(false);
    }
    let store = &index.store;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (mut changes, mut replaced) = (Vec::with_capacity(batch.len()), false);
    let rows = batch.len() as u64;
    for row in batch.drain(..) {
        let mut record = Record {
            path: path_to_bytes(&row.path),
            size: row.size,
            mtime_ns: row.mtime_ns.max(0) as u64,
            hash: row.blake3,
            label: row.label,
            width: row.width,
            height: row.height,
            recon_error: row.recon_error,
            ingested_at: now,
        };
        let stored = match store.id_for_path(&record.path)? {
            Some(id) => store.record(id)?.map(|r| (id, r)),
            None => None,
        };
        match stored {
            Some((id, old)) if old.hash == record.hash => {
                report.unchanged += 1;
                record.ingested_at = old.ingested_at;
                if record != old {
                    changes.push(Change::Touch { id, record });
                }
            }
            Some(_) => {
                // The store removes the old record as it adds this one.
                report.updated += 1;
                replaced = true;
                changes.push(Change::Add {
                    record,
                    vector: row.embedding,
                });
            }
            None => {
                report.added += 1;
                changes.push(Change::Add {
                    record,
                    vector: row.embedding,
                });
            }
        }
    }
    if !changes.is_empty() {
        let (committed, pending) = index.commit_deferred(changes)?;
        report.store_seconds += committed.store_seconds;
        report.index_seconds += committed.index_seconds;
        // The graph's thread lives until the sender is dropped, so it is
        // there to take it.
        graph
            .send(pending)
            .expect("the graph's thread takes batches until the import ends");
    }
    progress.advance(rows);
    Ok(replaced)
}
