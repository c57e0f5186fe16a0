//! Nearest-neighbour structures derived from the store: a flat,
//! memory-mapped vector file for exact scans ([`flat`]) and an HNSW graph
//! for approximate search ([`hnsw`]).
//!
//! Both are append-only copies of the store's embeddings, brought up to date
//! from it on open, so the store stays the only source of truth. The flat
//! file is always open (mapping it costs nothing); the graph is loaded only
//! when something needs it (reading and checking it takes about 0.3 s at a
//! million points): a one-shot CLI query scans the flat file instead, while
//! `serve` and whole-index jobs keep the graph in memory.

pub mod flat;
pub mod hnsw;
pub mod kernels;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use flat::{FlatError, FlatOpen, FlatVectors};
pub use hnsw::{Graph, HnswParams};

use crate::store::{Store, StoreError};

/// Rebuild (compact) when this share of the indexed points are tombstones.
pub const REBUILD_TOMBSTONE_SHARE: f64 = 0.2;

#[derive(Debug, thiserror::Error)]
pub enum AnnError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Flat(#[from] FlatError),
    #[error("cannot write the HNSW graph to {path}: {message}")]
    Dump {
        path: PathBuf,
        message: String,
        /// The I/O failure underneath, when there is one (a full disk).
        source: Option<std::io::Error>,
    },
}

/// The flat file, and the graph once loaded.
pub struct Ann {
    dir: PathBuf,
    dim: usize,
    params: HnswParams,
    pub flat: FlatVectors,
    pub flat_state: FlatOpen,
    graph: Option<Graph>,
    /// Why the saved graph could not be used and was rebuilt from the
    /// store in this process (damaged, or made for other vectors).
    pub graph_rebuilt: Option<String>,
}

/// What the derived structures hold, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct AnnStatus {
    /// Rows in the flat vector file (tombstones included).
    pub flat_rows: usize,
    /// Points in the saved graph (tombstones included), if one is saved.
    pub graph_points: Option<usize>,
    /// The graph's construction parameters (the saved graph's, else those
    /// a new graph gets).
    pub graph_params: HnswParams,
}

impl Ann {
    /// Opens the flat file in `dir` (catching it up with the store); the
    /// graph waits until [`Ann::graph`] is first called.
    pub fn open(dir: &Path, store: &Store, dim: usize) -> Result<Self, AnnError> {
        let (flat, flat_state) = FlatVectors::open(dir, store, dim)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            dim,
            params: HnswParams::default(),
            flat,
            flat_state,
            graph: None,
            graph_rebuilt: None,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The graph, loading (and catching up) the saved one on first use.
    pub fn graph(&mut self, store: &Store) -> Result<&mut Graph, AnnError> {
        if self.graph.is_none() {
            let (graph, rebuilt) = Graph::open(&self.dir, store, self.dim, self.params)?;
            self.graph = Some(graph);
            self.graph_rebuilt = rebuilt;
        }
        Ok(self.graph.as_mut().expect("loaded above"))
    }

    /// The graph if it is in memory already.
    pub fn loaded_graph(&self) -> Option<&Graph> {
        self.graph.as_ref()
    }

    /// Appends newly committed points to the flat file (fast: a copy).
    pub fn append_flat(&mut self, points: &[(u64, Vec<f32>)]) -> Result<(), AnnError> {
        if !points.is_empty() {
            self.flat.append(points)?;
        }
        Ok(())
    }

    /// Inserts newly committed points into the graph, if it is loaded (an
    /// unloaded graph catches up from the store when it loads). Takes
    /// `&self`: searches run beside it. One inserter at a time.
    pub fn insert_graph(&self, points: &[(u64, Vec<f32>)]) {
        // Loading caught the graph up with the store, which already holds
        // these points; the graph skips those it has.
        if let Some(graph) = &self.graph {
            graph.insert(points);
        }
    }

    /// Marks ids as removed from the store (committed already).
    pub fn add_tombstones(&mut self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        self.flat.add_tombstones(ids.iter().copied());
        if let Some(g) = &mut self.graph {
            g.add_tombstones(ids.iter().copied());
        }
    }

    /// Whether tombstones have passed [`REBUILD_TOMBSTONE_SHARE`].
    pub fn needs_rebuild(store: &Store) -> Result<bool, AnnError> {
        let (live, dead) = (store.live_count()?, store.tombstone_count()?);
        Ok(dead > 0 && dead as f64 > REBUILD_TOMBSTONE_SHARE * (live + dead) as f64)
    }

    /// A fresh graph of the store's live vectors, saved beside the old one.
    /// Needs no lock on the `Ann`: searches go on while it builds.
    pub fn build_graph(&self, store: &Store) -> Result<Graph, AnnError> {
        let graph = Graph::build(store, self.dim, self.params)?;
        graph.save(&self.dir)?;
        Ok(graph)
    }

    /// Swaps in a graph from [`Ann::build_graph`], rewrites the flat file
    /// without tombstones, then clears the store's tombstones. The order
    /// matters: until the new graph and file are saved, the old ones still
    /// need the tombstones to hide removed ids, so a crash anywhere leaves
    /// a consistent index.
    pub fn replace_graph(&mut self, graph: Graph, store: &Store) -> Result<usize, AnnError> {
        self.graph = Some(graph);
        let n = self.flat.rewrite(store)?;
        store.clear_tombstones()?;
        Ok(n)
    }

    /// Makes the flat file's appended rows durable.
    pub fn sync_flat(&mut self) -> Result<(), AnnError> {
        Ok(self.flat.sync()?)
    }

    /// Dumps the graph if it is loaded and changed (no insert may run).
    pub fn save_graph(&self) -> Result<(), AnnError> {
        if let Some(g) = &self.graph {
            g.save(&self.dir)?;
        }
        Ok(())
    }

    pub fn status(&self) -> AnnStatus {
        let (graph_points, graph_params) = match &self.graph {
            Some(graph) => (Some(graph.points()), graph.params()),
            None => {
                Graph::saved(&self.dir).map_or((None, self.params), |(p, params)| (Some(p), params))
            }
        };
        AnnStatus {
            flat_rows: self.flat.rows(),
            graph_points,
            graph_params,
        }
    }
}
