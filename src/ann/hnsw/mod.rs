//! The HNSW graph (Malkov & Yashunin) derived from the store, persisted
//! beside it, with tombstones for removed images.
//!
//! The graph is imgsearch's own: flat arrays ([`layers`]), batch inserts
//! planned on every core while searches go on ([`insert`]), and a saved
//! form read straight into those arrays ([`file`]). It replaced hnsw_rs,
//! whose structures (an `Arc` and a lock per point, a hash set per search)
//! kept search at 2.3–3.6× hnswlib's time and a 1M-point graph at 2.7 GB
//! and 10–15 s to load, on the same graph (`bench/RESULTS.md`).
//!
//! Points are never deleted: embeddings are immutable per id (changed
//! content gets a new id), so the graph only grows; removed ids become
//! tombstones, skipped inside the walk, and the graph is rebuilt from the
//! store when tombstones pass [`super::REBUILD_TOMBSTONE_SHARE`] or on
//! `imgsearch compact`.
//!
//! Persistence: the whole graph is written to `graph.hnsw.tmp`, fsynced
//! and renamed over `graph.hnsw`; it records its points' ids, so on open
//! it is caught up with (or, when missing, damaged or made for other
//! vectors, rebuilt from) the store.

mod file;
mod insert;
mod layers;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::AnnError;
use crate::store::Store;
pub use file::FILE_NAME;
use layers::Layers;

/// The file that named an hnsw_rs dump (`hnsw-*/`), before the graph was
/// imgsearch's own. An index that has one gets its graph rebuilt once.
pub const OLD_MANIFEST: &str = "hnsw.json";

/// Removed ids, one bit each: a search asks about every point it visits,
/// so membership must be one load, not a binary search.
#[derive(Debug, Default, Clone)]
struct Tombstones {
    bits: Vec<u64>,
    count: usize,
}

impl Tombstones {
    fn insert(&mut self, id: u64) {
        let (word, bit) = ((id / 64) as usize, id % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.count += 1;
        }
    }

    #[inline]
    fn contains(&self, id: u64) -> bool {
        let word = (id / 64) as usize;
        word < self.bits.len() && self.bits[word] & (1 << (id % 64)) != 0
    }
}

/// HNSW construction parameters (Malkov & Yashunin): `M` links per node,
/// `ef_construction` candidates kept while inserting.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HnswParams {
    /// `M`: neighbours kept per node per layer (layer 0 keeps `2M`).
    pub m: usize,
    /// `ef_construction`: candidate list size during insertion.
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 128,
        }
    }
}

/// The graph. Inserts, searches and saves take `&self`: a search waits
/// only while an insert copies its planned links in, so `serve` inserts a
/// batch while searches run beside it; only tombstones need `&mut`.
/// Inserts run one at a time, with increasing ids.
pub struct Graph {
    layers: RwLock<Layers>,
    /// Held by an insert from planning to applying (a plan is made for the
    /// graph as it is), and by a save.
    inserting: Mutex<()>,
    params: HnswParams,
    tombstones: Tombstones,
    /// Whether points were added since the last save.
    dirty: AtomicBool,
}

/// A summary: the arrays are too large to print.
impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("points", &self.points())
            .field("removed", &self.tombstones.count)
            .field("params", &self.params)
            .finish()
    }
}

impl Graph {
    /// Opens the graph in `dir`, catching up with or rebuilding from `store`.
    pub fn open(
        dir: &Path,
        store: &Store,
        dim: usize,
        params: HnswParams,
    ) -> Result<(Self, Option<String>), AnnError> {
        // A saved graph that is missing, damaged or made for other vectors
        // is rebuilt from the store: it is derived data. Why, unless there
        // was simply none, is returned for the caller to tell.
        let (mut graph, rebuilt) = match Self::load(dir, dim, params) {
            Ok(graph) => (graph, None),
            Err(reason) => {
                let reason = if dir.join(FILE_NAME).exists() {
                    Some(reason)
                } else if dir.join(OLD_MANIFEST).exists() {
                    Some("it was saved by an older imgsearch (hnsw_rs); this one keeps its own format".into())
                } else {
                    None
                };
                (
                    Self::empty(dim, params, store.live_count()? as usize),
                    reason,
                )
            }
        };
        graph.add_tombstones(store.tombstones()?);
        graph.catch_up(store)?;
        Ok((graph, rebuilt))
    }

    /// An empty graph with room for about `capacity` points.
    pub fn empty(dim: usize, params: HnswParams, capacity: usize) -> Self {
        let mut layers = Layers::empty(dim, params.m);
        layers.ids.reserve(capacity);
        layers.levels.reserve(capacity);
        layers.vectors.reserve(capacity * dim);
        layers.layer0.reserve(capacity * layers.m0());
        Self::with(layers, params, true)
    }

    fn with(layers: Layers, params: HnswParams, dirty: bool) -> Self {
        Self {
            layers: RwLock::new(layers),
            inserting: Mutex::new(()),
            params,
            tombstones: Tombstones::default(),
            dirty: AtomicBool::new(dirty),
        }
    }

    /// The graph saved in `dir`, as it was saved (no tombstones, no
    /// catch-up); why not, when it cannot be used.
    pub fn load(dir: &Path, dim: usize, params: HnswParams) -> Result<Self, String> {
        Ok(Self::with(file::read(dir, dim, params)?, params, false))
    }

    /// Inserts every store vector newer than the graph. Returns how many.
    pub fn catch_up(&self, store: &Store) -> Result<usize, AnnError> {
        let mut batch: Vec<(u64, Vec<f32>)> = Vec::new();
        let mut n = 0;
        for item in store.vectors_after(self.max_id()) {
            batch.push(item?);
            if batch.len() == 4096 {
                n += batch.len();
                self.insert(&batch);
                batch.clear();
            }
        }
        n += batch.len();
        self.insert(&batch);
        Ok(n)
    }

    /// Inserts (id, vector) pairs, planned on every core of the current
    /// rayon pool. Ids must be new and increasing; any not newer than the
    /// graph's newest are already in it and skipped.
    pub fn insert(&self, points: &[(u64, Vec<f32>)]) {
        let _one_inserter = self.inserting.lock();
        let newest = self.max_id();
        let fresh = points.partition_point(|(id, _)| newest.is_some_and(|m| *id <= m));
        let mut rest = &points[fresh..];
        while !rest.is_empty() {
            let (batch, after) = rest.split_at(insert::batch_len(self.points()).min(rest.len()));
            let planned = insert::prepare(&self.layers.read(), batch, self.params.ef_construction);
            insert::apply(&mut self.layers.write(), batch, planned);
            self.dirty.store(true, Ordering::Release);
            rest = after;
        }
    }

    /// Marks ids as removed (they stay in the graph, never in results).
    pub fn add_tombstones(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.tombstones.insert(id);
        }
    }

    /// The largest store id in the graph.
    pub fn max_id(&self) -> Option<u64> {
        self.layers.read().ids.last().copied()
    }

    pub fn points(&self) -> usize {
        self.layers.read().rows()
    }

    pub fn live_points(&self) -> usize {
        self.points().saturating_sub(self.tombstones.count)
    }

    /// Nearest live ids to `query` with their L2 distances, nearest first;
    /// `ef` is the search-time candidate list (larger: better recall,
    /// slower).
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(u64, f32)> {
        self.search_where(query, k, ef, |_| true)
    }

    /// Like [`Graph::search`], keeping only ids that pass `keep`. The filter
    /// runs inside the graph walk, so k results come back whenever k live
    /// ids pass it and the walk reaches them.
    pub fn search_where(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: impl Fn(u64) -> bool,
    ) -> Vec<(u64, f32)> {
        let layers = self.layers.read();
        let ids = &layers.ids;
        let tombs = &self.tombstones;
        let found = if tombs.count == 0 {
            layers.search(query, ef.max(k), &|row| keep(ids[row as usize]))
        } else {
            layers.search(query, ef.max(k), &|row| {
                let id = ids[row as usize];
                !tombs.contains(id) && keep(id)
            })
        };
        found
            .into_iter()
            .take(k)
            .map(|near| (ids[near.row as usize], near.distance.sqrt()))
            .collect()
    }

    /// A fresh graph of the store's live vectors (no tombstones).
    pub fn build(store: &Store, dim: usize, params: HnswParams) -> Result<Self, AnnError> {
        let graph = Self::empty(dim, params, store.live_count()? as usize);
        graph.catch_up(store)?;
        Ok(graph)
    }

    /// Points and parameters of the saved graph, read from its header
    /// without loading it.
    pub fn saved(dir: &Path) -> Option<(usize, HnswParams)> {
        file::read_header(dir).ok().map(|h| (h.points, h.params))
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Writes the graph if it changed since it was loaded or last saved,
    /// then removes an older imgsearch's hnsw_rs dump if one is left.
    pub fn save(&self, dir: &Path) -> Result<(), AnnError> {
        let _no_insert = self.inserting.lock();
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let path = dir.join(FILE_NAME);
        let layers = self.layers.read();
        let dump_err = |path: &Path, error: std::io::Error| AnnError::Dump {
            path: path.to_path_buf(),
            message: error.to_string(),
            source: Some(error),
        };
        crate::fsutil::write_atomically(
            &path,
            |out| file::write(out, &layers, self.params).map_err(|e| dump_err(&path, e)),
            dump_err,
        )?;
        self.dirty.store(false, Ordering::Release);
        remove_old_dump(dir);
        Ok(())
    }
}

/// Removes an hnsw_rs dump (`hnsw.json` and the `hnsw-*/` folders it
/// named): once `graph.hnsw` is saved, nothing reads them.
fn remove_old_dump(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(OLD_MANIFEST));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && entry.file_name().to_string_lossy().starts_with("hnsw-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests;
