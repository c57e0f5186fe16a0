//! Ingestion: walk → read, hash, decode, resize (rayon workers) → encode
//! (candle, in batches) → store (one sled transaction per batch) → HNSW.
//!
//! Four threads, joined by bounded channels of batches, overlap the stages:
//! the walk; preparation (each file read, hashed and decoded by one rayon
//! task, so a worker holds one file's bytes at a time: a queue of read but
//! undecoded 12-megapixel photos would cost gigabytes); encoding; and, on
//! the calling thread, storing and indexing. Memory stays flat whatever the
//! tree size, and [`StageSeconds`] says where the time went.
//!
//! Incremental: a file whose path, size and mtime are in the store is
//! skipped; one whose content hash is already stored reuses that record's
//! embedding (a rename moves the record, a copy gets its own); vanished files
//! become tombstones. Resumable: every batch commits atomically, so re-running
//! after a kill finds the committed files unchanged and does the rest.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::Serialize;

use crate::imageio::{DecodeLimits, Pixels};
use crate::index::{Index, IndexError};
use crate::labels::LabelSource;
use crate::prepare::{self, InputShape};
use crate::progress::Progress;
use crate::store::{path_to_bytes, Change, Record, Store, StoreError};
use crate::walk::{Skipped, WalkError, Walker};

/// Files prepared per batch (decode in parallel, one transaction).
pub const BATCH: usize = 256;

#[derive(Debug, Default)]
pub struct IngestOptions {
    /// Glob patterns (matched against the path relative to the root, and
    /// against the file name) of files and folders to leave out.
    pub exclude: Vec<String>,
    /// Follow symbolic links under the root (loops are reported as
    /// failures). Off by default: a link may lead out of the folder.
    pub follow_links: bool,
    /// The root was resolved (canonical) when the ingest was asked for, and
    /// must still be that folder: one swapped for a link since (a queued
    /// `serve` job) is refused rather than followed.
    pub confine: bool,
    pub limits: DecodeLimits,
    /// Where labels come from (folder names unless a labels file is given).
    /// A stored image whose label changed is updated without re-encoding.
    pub labels: LabelSource,
    /// Set to stop after the batch in flight (`serve` on shutdown). What
    /// was committed stays; the next ingest of the root does the rest.
    pub cancel: Option<Arc<AtomicBool>>,
    /// The rayon pool that decoding, encoding and graph inserts run in;
    /// `None`: the global one. `serve` gives ingest a pool of its own, at a
    /// lower CPU priority, so searches (in the global pool) never queue
    /// behind a batch.
    pub pool: Option<Arc<rayon::ThreadPool>>,
}

impl IngestOptions {
    fn in_pool<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot ingest {path}: {error}")]
    Root {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid --exclude pattern: {0}")]
    Glob(#[from] globset::Error),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ann(#[from] crate::ann::AnnError),
    #[error("model failed: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error("refused to ingest {path}: it now resolves to {resolved}, not the folder that was asked for")]
    Moved { path: PathBuf, resolved: PathBuf },
    #[error("cannot swap in the re-embedded index at {path}: {source}")]
    Swap {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub use crate::report::Failure;

/// What an ingest did.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    pub root: PathBuf,
    /// Image files found.
    pub scanned: u64,
    /// New records (including identical copies of stored images).
    pub added: u64,
    /// Files whose content changed, re-embedded.
    pub updated: u64,
    /// Files recognized at a new path by content hash, not re-encoded.
    pub renamed: u64,
    pub unchanged: u64,
    /// Records whose file vanished, now tombstones.
    pub removed: u64,
    pub failed: u64,
    pub failures: Vec<Failure>,
    /// Entries passed over by policy: symbolic links (unless followed) and
    /// special files (FIFOs, sockets, devices).
    pub skipped: Skipped,
    /// Newly embedded images (encoder runs).
    pub encoded: u64,
    pub seconds: f64,
    pub images_per_second: f64,
    /// Where the time went, stage by stage.
    pub stages: StageSeconds,
    /// Whether the graph was rebuilt to drop tombstones.
    pub compacted: bool,
    /// Stopped early (see [`IngestOptions::cancel`]); vanished files were
    /// not looked for.
    pub cancelled: bool,
    /// With a labels file: its labelled rows that named no image found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels_unmatched: Option<u64>,
}

/// Seconds each stage was busy. The parallel stages (read, decode, and the
/// encoder's and graph's own threads) count the time of every worker, so on
/// `n` cores a stage can be busy up to `n` seconds per second of the run;
/// what the whole took is [`IngestReport::seconds`].
#[derive(Debug, Default, Clone, Serialize)]
pub struct StageSeconds {
    /// Listing folders and filtering names.
    pub walk: f64,
    /// Stat, store lookups, reading and hashing files (summed over workers).
    pub read: f64,
    /// Decoding and resizing new content (summed over workers).
    pub decode: f64,
    /// The model: embeddings and reconstruction errors.
    pub encode: f64,
    /// sled transactions.
    pub store: f64,
    /// The flat file and the HNSW graph.
    pub index: f64,
}

/// Busy time of the stages, added to from any thread.
#[derive(Default)]
struct StageClock {
    walk: AtomicU64,
    read: AtomicU64,
    decode: AtomicU64,
    encode: AtomicU64,
    store: AtomicU64,
    index: AtomicU64,
}

impl StageClock {
    /// Runs `work`, adding its duration to `stage`.
    fn time<R>(stage: &AtomicU64, work: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let out = work();
        stage.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    fn seconds(&self) -> StageSeconds {
        let s = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed)).as_secs_f64();
        StageSeconds {
            walk: s(&self.walk),
            read: s(&self.read),
            decode: s(&self.decode),
            encode: s(&self.encode),
            store: s(&self.store),
            index: s(&self.index),
        }
    }
}

/// A prepared batch on its way to the store, with the embeddings and
/// reconstruction errors of its new images (in the order they appear).
struct EncodedBatch {
    items: Vec<Prepared>,
    walk_errors: Vec<WalkError>,
    scored: Vec<(Vec<f32>, f32)>,
}

/// What the producer found for one file.
enum Prepared {
    Unchanged {
        id: u64,
    },
    /// Same content, new size/mtime.
    Touched {
        id: u64,
        record: Record,
    },
    /// Content already in the store (rename or copy): no decode needed.
    Known {
        record: Record,
        same_as: Vec<u64>,
        replaces: Option<u64>,
    },
    /// New content, decoded.
    New {
        record: Record,
        pixels: Pixels,
        replaces: Option<u64>,
    },
    Failed(Failure),
}

/// Ingests every image under `root` into `index`.
///
/// Each batch of new images becomes searchable as it commits: the index is
/// shared (`&Index`), so searches run between and beside the batches.
pub fn ingest(
    index: &Index,
    root: &Path,
    opts: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestReport, IngestError> {
    let started = Instant::now();
    let resolved = std::fs::canonicalize(root).map_err(|error| IngestError::Root {
        path: root.to_path_buf(),
        error,
    })?;
    if opts.confine && resolved != root {
        return Err(IngestError::Moved {
            path: root.to_path_buf(),
            resolved,
        });
    }
    let root = resolved;
    if !root.is_dir() {
        return Err(IngestError::Root {
            path: root,
            error: std::io::Error::other("not a folder"),
        });
    }
    let walker = Walker::excluding(&opts.exclude)?.following_links(opts.follow_links);
    let mut report = IngestReport {
        root: root.clone(),
        ..Default::default()
    };
    let mut seen: HashSet<u64> = HashSet::new();
    let mut unreadable_dirs: Vec<Vec<u8>> = Vec::new();

    let (store, model) = (&index.store, &index.model);
    let cancelled = || {
        opts.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    };
    progress.stage("files", None);
    let clock = StageClock::default();
    std::thread::scope(|scope| -> Result<(), IngestError> {
        let (paths_tx, paths_rx) = sync_channel::<(Vec<PathBuf>, Vec<WalkError>)>(2);
        let (prepared_tx, prepared_rx) = sync_channel::<(Vec<Prepared>, Vec<WalkError>)>(2);
        let (encoded_tx, encoded_rx) = sync_channel::<Result<EncodedBatch, IngestError>>(2);
        let (root, walker, clock) = (&root, &walker, &clock);

        // Walk: batches of paths. Each stage stops when the next one hangs
        // up (an error or a cancel downstream drops its receiver).
        scope.spawn(move || {
            let mut files = walker.files(root, progress);
            loop {
                let (mut paths, mut errors) = (Vec::with_capacity(BATCH), Vec::new());
                let more = StageClock::time(&clock.walk, || {
                    for entry in files.by_ref() {
                        match entry {
                            Ok(p) => paths.push(p),
                            Err(e) => errors.push(e),
                        }
                        if paths.len() == BATCH {
                            return true;
                        }
                    }
                    false
                });
                if paths_tx.send((paths, errors)).is_err() || !more {
                    return;
                }
            }
        });

        // Prepare: read, hash and (for new content) decode, in parallel.
        let shape = model.input_shape();
        scope.spawn(move || {
            for (paths, errors) in paths_rx {
                let prepared: Vec<Prepared> = opts.in_pool(|| {
                    paths
                        .par_iter()
                        .map(|p| prepare_file(p, root, opts, store, shape, clock))
                        .collect()
                });
                if prepared_tx.send((prepared, errors)).is_err() {
                    return;
                }
            }
        });

        // Encode the new images of each batch.
        scope.spawn(move || {
            for (mut items, walk_errors) in prepared_rx {
                // The pixels move to the encoder; the records stay.
                let pixels: Vec<Pixels> = items
                    .iter_mut()
                    .filter_map(|item| match item {
                        Prepared::New { pixels, .. } => Some(std::mem::take(pixels)),
                        _ => None,
                    })
                    .collect();
                let scored = match pixels.is_empty() {
                    true => Ok(Vec::new()),
                    false => StageClock::time(&clock.encode, || {
                        opts.in_pool(|| model.embed_and_score(&pixels))
                    }),
                };
                let batch = scored
                    .map_err(IngestError::from)
                    .map(|scored| EncodedBatch {
                        items,
                        walk_errors,
                        scored,
                    });
                if encoded_tx.send(batch).is_err() {
                    return;
                }
            }
        });

        // Store and index, here, in order.
        for batch in encoded_rx {
            if cancelled() {
                // Dropping the receiver stops the stages above at their
                // next send.
                report.cancelled = true;
                break;
            }
            let batch = batch?;
            for e in &batch.walk_errors {
                unreadable_dirs.push(path_to_bytes(&e.path));
                report.failed += 1;
                report.failures.push(Failure::new(&e.path, &e.error));
            }
            let files = batch.items.len() as u64;
            report.scanned += files;
            commit_batch(batch, index, opts, clock, &mut seen, &mut report)?;
            progress.advance(files);
        }
        Ok(())
    })?;
    report.stages = clock.seconds();
    report.skipped = walker.skipped();

    if report.cancelled {
        index.save()?;
        return Ok(finish(report, opts, started));
    }
    // Records under this root that the walk did not meet are gone, unless
    // they sit in a folder that could not be read.
    let mut prefix = path_to_bytes(&root);
    prefix.push(b'/');
    let mut gone = Vec::new();
    for item in store.paths_under(&prefix) {
        let (path, id) = item?;
        if !seen.contains(&id) && !unreadable_dirs.iter().any(|d| path.starts_with(d)) {
            gone.push(id);
        }
    }
    // Through the one write path, which tombstones them in the flat file,
    // graph and record catalogue.
    for chunk in gone.chunks(1024) {
        let removals = chunk.iter().map(|&id| Change::Remove { id }).collect();
        index.commit(removals, None)?;
        report.removed += chunk.len() as u64;
    }
    index.add_root(&root)?;
    if crate::ann::Ann::needs_rebuild(store)? {
        index.compact()?;
        report.compacted = true;
    }
    index.complete_graph()?;
    index.save()?;
    Ok(finish(report, opts, started))
}

fn finish(mut report: IngestReport, opts: &IngestOptions, started: Instant) -> IngestReport {
    if let LabelSource::File(file) = &opts.labels {
        report.labels_unmatched = Some(file.len().saturating_sub(file.matched()) as u64);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.images_per_second = report.encoded as f64 / report.seconds.max(1e-9);
    report
}

/// Stat, hash and (when the content is new) decode one file.
fn prepare_file(
    path: &Path,
    root: &Path,
    opts: &IngestOptions,
    store: &Store,
    shape: InputShape,
    clock: &StageClock,
) -> Prepared {
    let started = Instant::now();
    let read_so_far = || started.elapsed().as_nanos() as u64;
    let prepared = match read_and_look_up(path, root, &opts.labels, store) {
        Err(failure) => Prepared::Failed(failure),
        Ok(Looked::Done(prepared)) => prepared,
        Ok(Looked::Decode {
            bytes,
            mut record,
            replaces,
        }) => {
            clock.read.fetch_add(read_so_far(), Ordering::Relaxed);
            return StageClock::time(&clock.decode, || {
                match prepare::decode(&bytes, path, shape, opts.limits) {
                    Ok(image) => {
                        record.width = image.width;
                        record.height = image.height;
                        Prepared::New {
                            record,
                            pixels: image.pixels,
                            replaces,
                        }
                    }
                    Err(e) => Prepared::Failed(Failure::new(path, e.reason())),
                }
            });
        }
    };
    clock.read.fetch_add(read_so_far(), Ordering::Relaxed);
    prepared
}

/// How far [`read_and_look_up`] got: an answer, or new content to decode.
enum Looked {
    Done(Prepared),
    Decode {
        bytes: Vec<u8>,
        record: Record,
        replaces: Option<u64>,
    },
}

/// Stat, look up and (when size or mtime changed) read and hash one file.
fn read_and_look_up(
    path: &Path,
    root: &Path,
    labels: &LabelSource,
    store: &Store,
) -> Result<Looked, Failure> {
    let fail = |reason: String| Failure::new(path, reason);
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let size = meta.len();
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let path_bytes = path_to_bytes(path);
    let existing = store
        .id_for_path(&path_bytes)
        .map_err(|e| fail(e.to_string()))?
        .and_then(|id| store.record(id).ok().flatten().map(|r| (id, r)));
    let label = labels.label_for(root, path);
    if let Some((id, rec)) = &existing {
        if rec.size == size && rec.mtime_ns == mtime_ns {
            if rec.label == label {
                return Ok(Looked::Done(Prepared::Unchanged { id: *id }));
            }
            // Relabelled only: no need to read the file.
            let mut record = rec.clone();
            record.label = label;
            return Ok(Looked::Done(Prepared::Touched { id: *id, record }));
        }
    }
    let content = prepare::read(path).map_err(|e| fail(e.reason()))?;
    let mut record = Record {
        path: path_bytes,
        size,
        mtime_ns,
        hash: content.hash,
        label,
        width: 0,
        height: 0,
        recon_error: 0.0,
        ingested_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let replaces = existing.as_ref().map(|(id, _)| *id);
    if let Some((id, old)) = &existing {
        if old.hash == content.hash {
            record.copy_image_facts(old);
            return Ok(Looked::Done(Prepared::Touched { id: *id, record }));
        }
    }
    let same_as = store
        .ids_with_hash(&content.hash)
        .map_err(|e| fail(e.to_string()))?;
    if !same_as.is_empty() {
        return Ok(Looked::Done(Prepared::Known {
            record,
            same_as,
            replaces,
        }));
    }
    Ok(Looked::Decode {
        bytes: content.bytes,
        record,
        replaces,
    })
}

/// Encodes the new images of a batch, commits it in one transaction, then
/// inserts the new points into the graph.
fn commit_batch(
    batch: EncodedBatch,
    index: &Index,
    opts: &IngestOptions,
    clock: &StageClock,
    seen: &mut HashSet<u64>,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    let store = &index.store;
    let EncodedBatch { items, scored, .. } = batch;
    let mut scored = scored.into_iter();
    let mut changes = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Prepared::Unchanged { id } => {
                seen.insert(id);
                report.unchanged += 1;
            }
            Prepared::Touched { id, record } => {
                seen.insert(id);
                report.unchanged += 1;
                changes.push(Change::Touch { id, record });
            }
            Prepared::Failed(f) => {
                report.failed += 1;
                report.failures.push(f);
            }
            Prepared::Known {
                mut record,
                same_as,
                replaces,
            } => {
                // A stored twin whose file is gone (and not already claimed in
                // this run) was renamed here; otherwise this is a copy.
                let mut moved = None;
                for &id in &same_as {
                    if seen.contains(&id) {
                        continue;
                    }
                    if let Some(old) = store.record(id)? {
                        if !old.path_buf().exists() {
                            moved = Some((id, old));
                            break;
                        }
                    }
                }
                if let Some(old_id) = replaces {
                    changes.push(Change::Remove { id: old_id });
                }
                match moved {
                    Some((id, old)) => {
                        record.copy_image_facts(&old);
                        seen.insert(id);
                        changes.push(Change::Move { id, record });
                        report.renamed += 1;
                    }
                    None => {
                        let twin = same_as[0];
                        let (Some(old), Some(vector)) = (store.record(twin)?, store.vector(twin)?)
                        else {
                            continue;
                        };
                        record.copy_image_facts(&old);
                        changes.push(Change::Add { record, vector });
                        if replaces.is_some() {
                            report.updated += 1;
                        } else {
                            report.added += 1;
                        }
                    }
                }
            }
            Prepared::New {
                mut record,
                replaces,
                ..
            } => {
                if replaces.is_some() {
                    // The store removes the old record as it adds this one.
                    report.updated += 1;
                } else {
                    report.added += 1;
                }
                let (vector, error) = scored.next().expect("one embedding per new image");
                record.recon_error = error;
                report.encoded += 1;
                changes.push(Change::Add { record, vector });
            }
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let committed = index.commit(changes, opts.pool.as_deref())?;
    let nanos = |seconds: f64| (seconds * 1e9) as u64;
    clock
        .store
        .fetch_add(nanos(committed.store_seconds), Ordering::Relaxed);
    clock
        .index
        .fetch_add(nanos(committed.index_seconds), Ordering::Relaxed);
    seen.extend(committed.ids);
    Ok(())
}

/// Rebuilds the index in `dir` with another model: every root it holds is
/// ingested afresh into a sibling folder, which then replaces the old one.
/// A crash leaves the old index untouched (and a leftover sibling that the
/// next run clears), so re-running the same command is always safe.
pub fn reindex(
    dir: &Path,
    model: &str,
    opts: &IngestOptions,
    progress: &dyn Progress,
) -> Result<Vec<IngestReport>, IngestError> {
    let roots = Index::open(dir, None, false)?.store.roots()?;
    let name = dir
        .file_name()
        .map_or("index".into(), |n| n.to_string_lossy().into_owned());
    let fresh = dir.with_file_name(format!(".{name}.reindex"));
    let old = dir.with_file_name(format!(".{name}.old"));
    let io = |path: &Path, source| IngestError::Swap {
        path: path.to_path_buf(),
        source,
    };
    for leftover in [&fresh, &old] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(|e| io(leftover, e))?;
        }
    }
    let mut reports = Vec::new();
    {
        let index = Index::open(&fresh, Some(model), true)?;
        for root in &roots {
            reports.push(ingest(&index, root, opts, progress)?);
        }
    }
    std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
    std::fs::rename(&fresh, dir).map_err(|e| io(dir, e))?;
    crate::fsutil::sync_parent(dir).map_err(|e| io(dir, e))?;
    std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    Ok(reports)
}
