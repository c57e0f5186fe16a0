//! The HNSW graph (hnsw_rs) derived from the store, persisted beside it,
//! with tombstones for removed images.
//!
//! hnsw_rs cannot delete points. Embeddings are immutable per id (changed
//! content gets a new id), so the graph only grows; removed ids become
//! tombstones, filtered inside the search (`search_filter`), and the graph is
//! rebuilt from the store when tombstones pass [`super::REBUILD_TOMBSTONE_SHARE`] or
//! on `imgsearch compact`.
//!
//! Persistence: `file_dump` into a fresh folder `hnsw-<n>/`, then an atomic
//! rename of `hnsw.json` (the manifest naming that folder and the largest id
//! it holds), then old folders are deleted. A crash between steps leaves the
//! previous manifest valid; a missing, stale or unreadable dump is caught up
//! or rebuilt from the store on open.

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{AnnT, Distance, Hnsw};
use serde::{Deserialize, Serialize};

use super::{kernels, AnnError};
use crate::store::Store;

/// Euclidean distance for the graph, through the flat scan's kernel.
///
/// hnsw_rs's own `DistL2` sums with one accumulator (unless built with its
/// SIMD features), which serialises every addition and was 22% of the
/// build's samples under perf. hnsw_rs stamps the distance's type name
/// (last path segment only) into a dump and refuses to reload it under
/// another, so this type keeps the name: it is the same metric, and graphs
/// saved before it keep loading.
#[derive(Debug, Default, Clone, Copy)]
pub struct DistL2;

impl Distance<f32> for DistL2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        kernels::squared_distance(a, b).sqrt()
    }
}

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

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    folder: String,
    basename: String,
    points: usize,
    /// Every store id ≤ this was in the store when dumped, and is in the graph.
    max_id: Option<u64>,
    dim: usize,
    params: HnswParams,
    /// blake3 of each dump file, checked before the loader reads it (a
    /// damaged dump can make hnsw_rs allocate terabytes and abort).
    /// Dumps written before checksums existed have none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    checksums: BTreeMap<String, String>,
}

/// The graph. Inserts, searches and dumps take `&self` (hnsw_rs locks per
/// node), so `serve` inserts a batch while searches run beside it; only
/// tombstones need `&mut`. One inserter at a time: ids must increase.
pub struct Graph {
    /// Dropped by hand (see `Drop`).
    hnsw: ManuallyDrop<Hnsw<'static, f32, DistL2>>,
    dim: usize,
    params: HnswParams,
    /// The largest id inserted, plus one (0: none yet).
    max_id_plus_one: AtomicU64,
    tombstones: Tombstones,
    /// Whether points were added since the last dump.
    dirty: AtomicBool,
}

/// Graphs with at least this many points are freed on a thread of their own.
const FREE_IN_BACKGROUND_FROM: usize = 50_000;

impl Drop for Graph {
    /// hnsw_rs frees a graph one `Arc` per point and link at a time: about
    /// as long as loading it took (perf on a cold `query --hnsw` at 100k:
    /// 37% of the process in `Arc::drop_slow`, `free` and friends). A
    /// command that ends right after its search, or `serve` swapping in a
    /// compacted graph, need not wait for that: a large graph is handed to
    /// a thread that frees it, and a process that exits first lets the
    /// operating system take the memory back at once.
    fn drop(&mut self) {
        // SAFETY: the field is taken once, here, and never used again.
        let hnsw = unsafe { ManuallyDrop::take(&mut self.hnsw) };
        if hnsw.get_nb_point() >= FREE_IN_BACKGROUND_FROM {
            // If no thread can be started, the closure and the graph in it
            // are dropped here instead.
            let _ = std::thread::Builder::new()
                .name("free-graph".into())
                .spawn(move || drop(hnsw));
        }
    }
}

/// blake3 of a file's bytes, in hex, or `None` when it cannot be read.
fn file_checksum(path: &Path) -> Option<String> {
    let hash = crate::fsutil::file_blake3(path).ok()?;
    Some(hash.to_hex().to_string())
}

fn encode_id(id: Option<u64>) -> u64 {
    id.map_or(0, |m| m + 1)
}

/// The file naming the current graph dump.
pub const MANIFEST: &str = "hnsw.json";
const MAX_LAYER: usize = 16;

fn new_graph(params: HnswParams, capacity: usize) -> Hnsw<'static, f32, DistL2> {
    Hnsw::new(
        params.m,
        capacity.max(1024),
        MAX_LAYER,
        params.ef_construction,
        DistL2 {},
    )
}

fn load_graph(io: &'static mut HnswIo) -> anyhow::Result<Hnsw<'static, f32, DistL2>> {
    io.load_hnsw::<f32, DistL2>()
}

impl Graph {
    /// Opens the graph in `dir`, catching up with or rebuilding from `store`.
    pub fn open(
        dir: &Path,
        store: &Store,
        dim: usize,
        params: HnswParams,
    ) -> Result<(Self, Option<String>), AnnError> {
        // A dump that is missing, damaged or made for other vectors is
        // rebuilt from the store: it is derived data. Why, unless there was
        // simply none, is returned for the caller to tell.
        let (mut ann, rebuilt) = match Self::load(dir, dim, params) {
            Ok(ann) => (ann, None),
            Err(reason) => (
                Self::empty(dim, params, store.live_count()? as usize),
                Some(reason).filter(|_| dir.join(MANIFEST).exists()),
            ),
        };
        ann.add_tombstones(store.tombstones()?);
        ann.catch_up(store)?;
        Ok((ann, rebuilt))
    }

    /// An empty graph sized for about `capacity` points.
    pub fn empty(dim: usize, params: HnswParams, capacity: usize) -> Self {
        Self {
            hnsw: ManuallyDrop::new(new_graph(params, capacity)),
            dim,
            params,
            max_id_plus_one: AtomicU64::new(0),
            tombstones: Tombstones::default(),
            dirty: AtomicBool::new(true),
        }
    }

    /// The graph saved in `dir`, as it was saved (no tombstones, no
    /// catch-up); why not, when it cannot be used.
    pub fn load(dir: &Path, dim: usize, params: HnswParams) -> Result<Self, String> {
        let text = std::fs::read(dir.join(MANIFEST)).map_err(|_| "no saved graph".to_string())?;
        let m: Manifest =
            serde_json::from_slice(&text).map_err(|e| format!("unreadable manifest: {e}"))?;
        if m.dim != dim || m.params != params {
            return Err(format!(
                "saved graph has dim {} and {:?}; want {dim} and {params:?}",
                m.dim, m.params
            ));
        }
        // The manifest names files beside it, never elsewhere: a damaged
        // or planted one must not lead the loader to another folder.
        let plain =
            |name: &str| !name.is_empty() && !name.contains('/') && name != "." && name != "..";
        if !m.folder.starts_with("hnsw-")
            || !plain(&m.folder)
            || !plain(&m.basename)
            || m.checksums.keys().any(|name| !plain(name))
        {
            return Err("the manifest names files outside the index".into());
        }
        let folder = dir.join(&m.folder);
        let graph_file = folder.join(format!("{}.hnsw.graph", m.basename));
        if !graph_file.is_file() {
            return Err(format!("{} is missing", graph_file.display()));
        }
        for (name, want) in &m.checksums {
            let path = folder.join(name);
            if file_checksum(&path).as_deref() != Some(want.as_str()) {
                return Err(format!("{} is damaged (checksum mismatch)", path.display()));
            }
        }
        // `load_hnsw` borrows its loader for the graph's lifetime; one loader
        // per open is leaked so the graph can be owned ('static).
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&folder, &m.basename)));
        // A damaged dump can make the loader panic: that is a reason to
        // rebuild, not a crash, and its backtrace is no use to anyone.
        let hnsw = crate::guard::catch_panic(move || {
            let io = io; // moved in, so the closure is FnOnce
            load_graph(io)
        })
        .map_err(|panic| format!("the saved graph is damaged: {panic}"))?
        .map_err(|e| format!("unreadable graph: {e}"))?;
        if hnsw.get_nb_point() != m.points {
            return Err(format!(
                "saved graph holds {} points, manifest says {}",
                hnsw.get_nb_point(),
                m.points
            ));
        }
        // Catch-up starts after the manifest's newest id, so it must be the
        // graph's own: a wrong one made points go missing or in twice (the
        // fuzzer found it). The manifest is not under the dump's checksums.
        let newest = hnsw
            .get_point_indexation()
            .into_iter()
            .map(|point| point.get_origin_id() as u64)
            .max();
        if newest != m.max_id {
            return Err(format!(
                "the manifest's newest id ({:?}) is not the graph's ({newest:?})",
                m.max_id
            ));
        }
        Ok(Self {
            hnsw: ManuallyDrop::new(hnsw),
            dim,
            params,
            max_id_plus_one: AtomicU64::new(encode_id(m.max_id)),
            tombstones: Tombstones::default(),
            dirty: AtomicBool::new(false),
        })
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

    /// Inserts (id, vector) pairs in parallel. Ids must be new and increasing.
    pub fn insert(&self, points: &[(u64, Vec<f32>)]) {
        if points.is_empty() {
            return;
        }
        let refs: Vec<(&[f32], usize)> = points
            .iter()
            .map(|(id, v)| (v.as_slice(), *id as usize))
            .collect();
        self.hnsw.parallel_insert_slice(&refs);
        let newest = points.iter().map(|p| p.0).max();
        self.max_id_plus_one
            .fetch_max(encode_id(newest), Ordering::Release);
        self.dirty.store(true, Ordering::Release);
    }

    /// Marks ids as removed (they stay in the graph, never in results).
    pub fn add_tombstones(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.tombstones.insert(id);
        }
    }

    /// The largest store id in the graph.
    pub fn max_id(&self) -> Option<u64> {
        self.max_id_plus_one.load(Ordering::Acquire).checked_sub(1)
    }

    pub fn points(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn live_points(&self) -> usize {
        self.points().saturating_sub(self.tombstones.count)
    }

    /// Every point as hnsw_rs holds it: its id, its vector, and its
    /// neighbours' ids on each layer it is on (layer 0 first). How a graph
    /// built here can be carried into another structure without a rebuild
    /// (`bench/ann_peers.rs` measures a search over flat arrays made so).
    pub fn layers(&self) -> impl Iterator<Item = (u64, Vec<f32>, Vec<Vec<u64>>)> + '_ {
        self.hnsw.get_point_indexation().into_iter().map(|point| {
            // hnsw_rs keeps a list for every layer; the point is on those up
            // to its own.
            let level = point.get_point_id().0 as usize;
            let layers = point
                .get_neighborhood_id()
                .into_iter()
                .take(level + 1)
                .map(|layer| layer.into_iter().map(|n| n.d_id as u64).collect())
                .collect();
            (point.get_origin_id() as u64, point.get_v().to_vec(), layers)
        })
    }

    /// Nearest live ids to `query` with their L2 distances; `ef` is the
    /// search-time candidate list (larger: better recall, slower).
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(u64, f32)> {
        if self.tombstones.count > 0 {
            return self.search_where(query, k, ef, |_| true);
        }
        // hnsw_rs's filtered walk keeps going past where the plain one
        // stops: 2.6× the time at ef 64 when nothing is filtered (RESULTS).
        self.hnsw
            .search(query, k, ef.max(k))
            .into_iter()
            .map(|n| (n.d_id as u64, n.distance))
            .collect()
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
        let tombs = &self.tombstones;
        let filter = |id: &usize| !tombs.contains(*id as u64) && keep(*id as u64);
        self.hnsw
            .search_filter(query, k, ef.max(k), Some(&filter))
            .into_iter()
            .map(|n| (n.d_id as u64, n.distance))
            .collect()
    }

    /// A fresh graph of the store's live vectors (no tombstones).
    pub fn build(store: &Store, dim: usize, params: HnswParams) -> Result<Self, AnnError> {
        let graph = Self::empty(dim, params, store.live_count()? as usize);
        graph.catch_up(store)?;
        Ok(graph)
    }

    /// Points and parameters of the saved graph, read from its manifest
    /// without loading it.
    pub fn saved(dir: &Path) -> Option<(usize, HnswParams)> {
        let text = std::fs::read(dir.join(MANIFEST)).ok()?;
        serde_json::from_slice::<Manifest>(&text)
            .ok()
            .map(|m| (m.points, m.params))
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Writes the graph if it changed since it was loaded or last saved.
    pub fn save(&self, dir: &Path) -> Result<(), AnnError> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let dump_err = |path: &Path, error: std::io::Error| AnnError::Dump {
            path: path.to_path_buf(),
            message: error.to_string(),
            source: Some(error),
        };
        if self.points() == 0 {
            // hnsw_rs cannot dump an empty graph; no manifest means "build
            // from the store", which for an empty store is instant.
            let _ = std::fs::remove_file(dir.join(MANIFEST));
            self.dirty.store(false, Ordering::Release);
            return Ok(());
        }
        // Read before dumping: a point inserted during the dump may or may
        // not be in it, and the manifest must not claim it.
        let (max_id, points) = (self.max_id(), self.points());
        self.dirty.store(false, Ordering::Release);
        let folder_name = format!("hnsw-{}-{points}", encode_id(max_id));
        let folder = dir.join(&folder_name);
        let _ = std::fs::remove_dir_all(&folder);
        let dumped = std::fs::create_dir_all(&folder)
            .map_err(|e| dump_err(&folder, e))
            .and_then(|()| {
                self.hnsw.file_dump(&folder, "graph").map_err(|e| {
                    // hnsw_rs says why in an anyhow chain; keep an I/O cause
                    // so a full disk is recognised as one.
                    let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
                    AnnError::Dump {
                        path: folder.clone(),
                        message: format!("{e:#}"),
                        source: io.map(|io| std::io::Error::new(io.kind(), io.to_string())),
                    }
                })
            });
        let basename = match dumped {
            Ok(basename) => basename,
            Err(e) => {
                // A half-written dump is never named by the manifest; free
                // its space now (it matters most when the disk is full).
                let _ = std::fs::remove_dir_all(&folder);
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        };
        let mut checksums = BTreeMap::new();
        for suffix in ["hnsw.graph", "hnsw.data"] {
            let name = format!("{basename}.{suffix}");
            let path = folder.join(&name);
            let sum = file_checksum(&path)
                .ok_or_else(|| dump_err(&path, std::io::Error::other("cannot read it back")))?;
            checksums.insert(name, sum);
        }
        let manifest = Manifest {
            folder: folder_name.clone(),
            basename,
            points,
            max_id,
            dim: self.dim,
            params: self.params,
            checksums,
        };
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("serializable");
        crate::fsutil::write_bytes_atomically(&dir.join(MANIFEST), &manifest_bytes)
            .map_err(|e| dump_err(&dir.join(MANIFEST), e))?;
        // Older dumps are no longer named by the manifest.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("hnsw-") && name != folder_name {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_export_every_point_once_with_links_to_points() {
        let graph = Graph::empty(4, HnswParams::default(), 500);
        let points: Vec<(u64, Vec<f32>)> = (0..500u64)
            .map(|id| {
                (
                    id,
                    (0..4).map(|d| ((id * 7 + d * 13) % 31) as f32).collect(),
                )
            })
            .collect();
        graph.insert(&points);
        let mut seen: Vec<(u64, Vec<f32>, Vec<Vec<u64>>)> = graph.layers().collect();
        seen.sort_by_key(|p| p.0);
        assert_eq!(seen.len(), 500);
        for ((id, vector, layers), (want_id, want_vector)) in seen.iter().zip(&points) {
            assert_eq!((id, vector), (want_id, want_vector));
            // Every point is on layer 0 and linked there; links name points.
            assert!(
                !layers.is_empty() && !layers[0].is_empty(),
                "{id}: {layers:?}"
            );
            assert!(layers.iter().flatten().all(|n| *n < 500 && n != id));
        }
        // Some points reach the upper layers, fewer on each.
        let on = |layer: usize| seen.iter().filter(|p| p.2.len() > layer).count();
        assert!(on(1) > 0 && on(1) < 500, "{}", on(1));
    }
}
