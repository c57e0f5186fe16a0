//! An index folder: the sled store (`db/`), the HNSW graph beside it, and
//! the model it was built with.

use std::path::{Path, PathBuf};
use std::time::Instant;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use serde::Serialize;

use crate::ann::{Ann, AnnError, AnnStatus};
use crate::catalogue::{CatalogueError, CatalogueWriter};
use crate::model::{Model, ModelError};
use crate::store::{Change, ModelStamp, Store, StoreError};

/// Environment variable naming the index folder.
pub const INDEX_ENV: &str = "IMGSEARCH_INDEX";
/// Default index folder, relative to the working directory.
pub const DEFAULT_INDEX: &str = "index";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("no index at {0} (create one with `imgsearch ingest DIR --index {0}`)")]
    Missing(PathBuf),
    #[error("cannot create the index folder {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    ModelMismatch(Box<ModelMismatch>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ann(#[from] AnnError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
}

/// An index opened with a model whose embeddings it cannot use.
#[derive(Debug, thiserror::Error)]
#[error("the index at {path} was built with model `{indexed}` ({indexed_fp}); `{asked}` ({asked_fp}) would give incompatible embeddings. Use `--model {indexed}` (or omit --model), or re-embed everything with `imgsearch reindex --model {asked}`")]
pub struct ModelMismatch {
    pub path: PathBuf,
    pub indexed: String,
    pub indexed_fp: String,
    pub asked: String,
    pub asked_fp: String,
}

/// What [`Index::commit`] stored, and where its time went.
pub struct Committed {
    /// The ids of the batch's `Add` changes, in order.
    pub ids: Vec<u64>,
    /// The sled transaction.
    pub store_seconds: f64,
    /// The flat file and the graph.
    pub index_seconds: f64,
}

/// A committed batch's part that the graph has yet to take: its new
/// points, and the ids it removed. See [`Index::commit_deferred`].
#[must_use = "the graph misses the batch until it is passed to Index::insert_pending"]
pub struct PendingGraph {
    points: Vec<(u64, Vec<f32>)>,
    removed: Vec<u64>,
}

/// An open index. Everything takes `&self`, so `serve` shares one `Index`
/// between threads: the store (sled) and model are thread-safe, and the
/// derived structures sit behind a read-write lock that searches share and
/// that writers hold only for short steps (see [`Index::ann`]).
pub struct Index {
    pub dir: PathBuf,
    pub store: Store,
    /// The flat vector file, and the HNSW graph once something needs it.
    ann: RwLock<Ann>,
    /// The record catalogue cold readers use instead of the store. Its lock
    /// is held across a whole commit (before the store changes until the
    /// catalogue has recorded it) and by [`Index::save`], so a save never
    /// says clean in the middle of a commit. Taken before `ann`, never after.
    catalogue: Mutex<CatalogueWriter>,
    pub model: Model,
}

impl Index {
    /// Opens the index in `dir`. `model` is the model asked for (`None`: the
    /// index's own). With `create`, a missing index is created with `model`
    /// (or the default).
    pub fn open(dir: &Path, model: Option<&str>, create: bool) -> Result<Self, IndexError> {
        let db_dir = dir.join("db");
        if !db_dir.exists() {
            if !create {
                return Err(IndexError::Missing(dir.to_path_buf()));
            }
            std::fs::create_dir_all(dir).map_err(|source| IndexError::Create {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let store = Store::open(&db_dir)?;
        let model = match (store.model_stamp()?, model) {
            (None, asked) => {
                let model = Model::load(asked.unwrap_or(crate::model::DEFAULT_MODEL))?;
                store.set_model_stamp(&stamp(&model))?;
                model
            }
            (Some(stamp), None) => model_of_stamp(&stamp)?,
            (Some(stamp), Some(asked)) => {
                let model = Model::load(asked)?;
                if model.fingerprint != stamp.fingerprint {
                    return Err(IndexError::ModelMismatch(Box::new(ModelMismatch {
                        path: dir.to_path_buf(),
                        indexed: stamp.name,
                        indexed_fp: stamp.fingerprint,
                        asked: asked.to_string(),
                        asked_fp: model.fingerprint,
                    })));
                }
                model
            }
        };
        let stored = store.model_stamp()?.expect("stamped above");
        if model.fingerprint != stored.fingerprint {
            return Err(IndexError::ModelMismatch(Box::new(ModelMismatch {
                path: dir.to_path_buf(),
                indexed: stored.name.clone(),
                indexed_fp: stored.fingerprint,
                asked: stored.name,
                asked_fp: model.fingerprint,
            })));
        }
        let mut ann = Ann::open(dir, &store, model.embedding_dim())?;
        // A rebuilt catalogue gets no note: after a kill it is expected,
        // and the store it is rebuilt from lost nothing either way.
        let (catalogue, _rebuilt) = CatalogueWriter::open(dir, &store, &mut ann.flat, &stored)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            store,
            ann: RwLock::new(ann),
            catalogue: Mutex::new(catalogue),
            model,
        })
    }

    /// The derived structures, shared with other readers (searches).
    pub fn ann(&self) -> RwLockReadGuard<'_, Ann> {
        self.ann.read()
    }

    /// The derived structures, exclusively: hold it briefly (appending to
    /// the flat file, adding tombstones), never across a graph insert.
    pub fn ann_mut(&self) -> RwLockWriteGuard<'_, Ann> {
        self.ann.write()
    }

    /// Loads the HNSW graph (catching it up with the store) unless it is in
    /// memory already.
    pub fn load_graph(&self) -> Result<(), AnnError> {
        if self.ann.read().loaded_graph().is_none() {
            self.ann.write().graph(&self.store)?;
        }
        Ok(())
    }

    /// Loads the graph (catching it up with the store) unless it is in
    /// memory or saved whole, so that the next [`Index::save`] leaves it
    /// whole. A writer calls it before its last save: a kill can leave the
    /// graph behind the store with nothing left for the rerun to commit,
    /// and the graph would otherwise be caught up by whichever reader
    /// needed it next (a million points: most of a minute at `serve`'s
    /// start).
    pub fn complete_graph(&self) -> Result<(), AnnError> {
        let behind = {
            let ann = self.ann();
            ann.loaded_graph().is_none()
                && crate::ann::Graph::saved(&self.dir)
                    .is_none_or(|(points, _)| points != ann.flat.rows())
        };
        if behind {
            self.load_graph()?;
        }
        Ok(())
    }

    /// The one write path of ingest and import: marks the record catalogue
    /// dirty, commits `changes` to the store in one transaction, then
    /// appends the new records' vectors to the flat file and graph and
    /// tombstones every record the store removed (including those a new
    /// record displaced from its path). Graph inserts run in `pool`
    /// (default: the global one). A kill at any point leaves the store
    /// whole and the derived files behind it, caught up on the next open.
    pub fn commit(
        &self,
        changes: Vec<Change>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<Committed, IndexError> {
        let (mut committed, pending) = self.commit_deferred(changes)?;
        committed.index_seconds += match pool {
            Some(pool) => pool.install(|| self.insert_pending(pending)),
            None => self.insert_pending(pending),
        };
        Ok(committed)
    }

    /// [`Index::commit`] up to the graph: the store, the flat file and the
    /// record catalogue. The graph's part comes back to be passed to
    /// [`Index::insert_pending`], in commit order, on any thread, so that
    /// a bulk writer (`import`) commits its next batch to the store while
    /// the graph takes this one. Searches see the batch through the flat
    /// file meanwhile; the graph, derived, is caught up on the next open
    /// if the process dies first.
    pub fn commit_deferred(
        &self,
        changes: Vec<Change>,
    ) -> Result<(Committed, PendingGraph), IndexError> {
        let started = Instant::now();
        let mut catalogue = self.catalogue.lock();
        catalogue.begin()?;
        let applied = self.store.apply(&changes)?;
        let store = started.elapsed();
        // The batch's adds, in order, got `applied.added`'s ids.
        let (records, vectors): (Vec<_>, Vec<_>) = changes
            .into_iter()
            .filter_map(|change| match change {
                Change::Add { record, vector } => Some((record, vector)),
                _ => None,
            })
            .unzip();
        let points: Vec<(u64, Vec<f32>)> = applied.added.iter().copied().zip(vectors).collect();
        // The flat file under a brief exclusive lock, taken on this thread
        // (not in a pool, which may run at a lower priority: a
        // low-priority thread holding or queueing for the lock would stall
        // every search); the graph (the slow part) later, under a shared
        // lock, so searches go on meanwhile. New points go into the graph
        // as they commit, so it is loaded before the first of them (a
        // batch that adds nothing never opens it).
        if !points.is_empty() {
            self.load_graph()?;
        }
        self.ann_mut().append_flat(&points)?;
        let added: Vec<(u64, &crate::store::Record)> =
            applied.added.iter().copied().zip(&records).collect();
        catalogue.record(&self.store, &added, &applied)?;
        drop(catalogue);
        let committed = Committed {
            ids: applied.added,
            store_seconds: store.as_secs_f64(),
            index_seconds: (started.elapsed() - store).as_secs_f64(),
        };
        let pending = PendingGraph {
            points,
            removed: applied.removed,
        };
        Ok((committed, pending))
    }

    /// Gives the graph a batch from [`Index::commit_deferred`] (batches in
    /// the order they committed: the graph takes increasing ids) on the
    /// current rayon pool, then tombstones what the batch removed. Returns
    /// the seconds it took.
    pub fn insert_pending(&self, pending: PendingGraph) -> f64 {
        let started = Instant::now();
        self.ann().insert_graph(&pending.points);
        if !pending.removed.is_empty() {
            self.ann_mut().add_tombstones(&pending.removed);
        }
        started.elapsed().as_secs_f64()
    }

    /// Flushes the store, then the flat file and graph (if it changed),
    /// then says the record catalogue is clean. Call it between inserts,
    /// not during one.
    pub fn save(&self) -> Result<(), IndexError> {
        let mut catalogue = self.catalogue.lock();
        self.store.flush()?;
        {
            let mut ann = self.ann.write();
            ann.sync_flat()?;
            catalogue.save(&self.store, &mut ann.flat)?;
        }
        self.ann.read().save_graph()?;
        Ok(())
    }

    /// Rebuilds the graph, the flat file and the record catalogue without
    /// tombstones. The graph is built without holding the lock, so searches
    /// continue meanwhile.
    pub fn compact(&self) -> Result<usize, IndexError> {
        let graph = self.ann.read().build_graph(&self.store)?;
        let mut catalogue = self.catalogue.lock();
        // Clearing the tombstones changes the store.
        catalogue.begin()?;
        let live = self.ann.write().replace_graph(graph, &self.store)?;
        let stamp = self
            .store
            .model_stamp()?
            .expect("an open index has a model");
        *catalogue = CatalogueWriter::write_fresh(
            &self.dir,
            &self.store,
            &mut self.ann.write().flat,
            &stamp,
        )?;
        Ok(live)
    }

    /// Closes the index and rewrites its store into a fresh database,
    /// giving back the space sled keeps for overwritten and dropped data
    /// ([`Store::rewrite`]). Ids and counters are kept, so the derived
    /// files need no change.
    pub fn rewrite_store(self) -> Result<crate::store::Rewritten, IndexError> {
        let Self {
            dir, store, ann, ..
        } = self;
        // The graph and flat file are closed first: nothing may write
        // after the copy is taken.
        drop(ann);
        Ok(store.rewrite(&dir.join("db"))?)
    }

    /// Bytes the index folder takes on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        crate::fsutil::dir_size(&self.dir)
    }

    /// Records an ingested root (what `reindex` re-ingests), marking the
    /// record catalogue dirty first: it keeps the roots for a cold `status`.
    pub fn add_root(&self, root: &Path) -> Result<(), IndexError> {
        let mut catalogue = self.catalogue.lock();
        catalogue.begin()?;
        self.store.add_root(root)?;
        Ok(())
    }

    pub fn status(&self) -> Result<Status, IndexError> {
        let stamp = self
            .store
            .model_stamp()?
            .expect("an open index has a model");
        Ok(Status::new(
            &self.dir,
            &self.model,
            stamp,
            self.store.schema_version()?,
            (self.store.live_count()?, self.store.tombstone_count()?),
            self.ann.read().status(),
            self.store.roots()?,
            self.store.label_counts()?,
        ))
    }
}

impl Status {
    /// A status from its parts, as an open [`Index`] or a
    /// [`crate::cold::ColdIndex`] reads them; sizes on disk are measured
    /// here. `counts`: live images and tombstones.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: &Path,
        model: &Model,
        stamp: ModelStamp,
        schema_version: u32,
        (images, tombstones): (u64, u64),
        ann: AnnStatus,
        roots: Vec<PathBuf>,
        labels: std::collections::BTreeMap<String, u64>,
    ) -> Self {
        // One walk of the folder gives both the parts and the total.
        let files = file_sizes(dir);
        let unlabelled = images.saturating_sub(labels.values().sum());
        let model_renamed = (model.name != stamp.name).then(|| ModelRenamed {
            now_called: model.name.clone(),
            advice: format!(
                "this index was built with the model then called `{}`, now built in as `{}`; \
                 it keeps working with it. `imgsearch reindex --model {}` re-embeds every image \
                 with the current `{}`",
                stamp.name, model.name, stamp.name, stamp.name
            ),
        });
        Status {
            index: dir.to_path_buf(),
            model: stamp,
            schema_version,
            images,
            tombstones,
            ann,
            roots,
            labels,
            unlabelled,
            bytes_on_disk: files.iter().map(|f| f.bytes).sum(),
            files,
            model_renamed,
        }
    }
}

/// Removes an index that the current command created and that holds
/// nothing (a first ingest that stored no image), so a corrected command
/// can create it again with another model. Only the index's own files go;
/// the folder goes too if that leaves it empty.
pub fn discard_new(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(dir.join("db"))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let flat = Path::new(crate::ann::flat::FILE_NAME);
        let sums = crate::ann::flat::Sums::path(flat);
        if Path::new(&name) == flat
            || Path::new(&name) == sums
            || name == crate::ann::hnsw::FILE_NAME
            || name == crate::ann::hnsw::OLD_MANIFEST
            || name == crate::catalogue::FILE_NAME
            || name == crate::catalogue::STRINGS_NAME
            || name == crate::catalogue::SUMS_NAME
        {
            std::fs::remove_file(entry.path())?;
        } else if name.starts_with("hnsw-") && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    if std::fs::read_dir(dir)?.next().is_none() {
        std::fs::remove_dir(dir)?;
    }
    Ok(())
}

/// The model an index stamped with `stamp` was built with. A default
/// replaced under its name since: the stamped weights now live under the
/// renamed default, so those load.
pub fn model_of_stamp(stamp: &ModelStamp) -> Result<Model, ModelError> {
    Model::load(
        crate::model::renamed_default(&stamp.name, &stamp.fingerprint).unwrap_or(&stamp.name),
    )
}

fn stamp(model: &Model) -> ModelStamp {
    ModelStamp {
        name: model.name.clone(),
        fingerprint: model.fingerprint.clone(),
        latent: model.embedding_dim(),
    }
}

/// What `imgsearch status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub index: PathBuf,
    pub model: ModelStamp,
    pub schema_version: u32,
    pub images: u64,
    pub tombstones: u64,
    #[serde(flatten)]
    pub ann: AnnStatus,
    pub roots: Vec<PathBuf>,
    pub labels: std::collections::BTreeMap<String, u64>,
    pub unlabelled: u64,
    pub bytes_on_disk: u64,
    /// What each top-level file or folder of the index takes on disk
    /// (`db/`: the store; `graph.hnsw`: the graph), largest first.
    pub files: Vec<FileSize>,
    /// When the model the index was built with has since been renamed (a
    /// default replaced by a new one): its name now, and what to run to move
    /// to the model that took over the old name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_renamed: Option<ModelRenamed>,
}

/// A default model renamed since the index was built.
#[derive(Debug, Serialize)]
pub struct ModelRenamed {
    pub now_called: String,
    pub advice: String,
}

/// One entry of an index folder and its size on disk.
#[derive(Debug, Serialize)]
pub struct FileSize {
    /// The name inside the index folder; folders end in `/`.
    pub name: String,
    pub bytes: u64,
}

fn file_sizes(dir: &Path) -> Vec<FileSize> {
    let mut files: Vec<FileSize> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let kind = entry.file_type().ok()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if kind.is_dir() {
                Some(FileSize {
                    name: format!("{name}/"),
                    bytes: crate::fsutil::dir_size(&entry.path()),
                })
            } else {
                let bytes = entry.metadata().ok().filter(|m| m.is_file())?.len();
                Some(FileSize { name, bytes })
            }
        })
        .collect();
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    files
}

// `serve` shares one open index between threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Index>();
};
