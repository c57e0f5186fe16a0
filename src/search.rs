//! Queries: nearest live images to a vector, through the HNSW graph or an
//! exact scan of the flat vector file, with path-prefix and label filters
//! applied inside the search (so a filtered query still returns k results
//! when k images match).
//!
//! The method is planned per batch of queries: exact below
//! [`EXACT_BELOW`] candidates; above, whichever is cheaper: the graph's
//! searches ([`GRAPH_SEARCH_NS`]) plus, in a cold process, its reload
//! ([`GRAPH_LOAD_NS_PER_POINT`]), against the scans ([`SCAN_NS_PER_FLOAT`],
//! or [`BATCH_SCAN_NS_PER_FLOAT`] for a batch). A one-shot CLI query
//! therefore scans (milliseconds even at a million images), a warm `serve`
//! query uses the graph, and a 10,000-image `eval` scans exactly.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::ann::FlatVectors;
use crate::filter::Filter;
use crate::imageio::DecodeLimits;
use crate::index::Index;
use crate::model::Model;
use crate::prepare;
use crate::store::{path_to_bytes, StoreError};

/// At or below this many candidate images an exact scan is used: it is
/// exact, and at this size as fast as the graph.
pub const EXACT_BELOW: usize = 20_000;

/// Default search-time candidate list (`ef`) for graphs below
/// [`LARGE_GRAPH`] points.
pub const DEFAULT_EF: usize = 64;

/// From this many points the default `ef` doubles: at 1M replicated
/// latents ef 64 finds 0.982 of the true top 10 (every HNSW we measured
/// does the same), ef 128 0.997; at 100k ef 64 already finds 0.999
/// (`bench/RESULTS.md`, "The graph beside hnswlib and faiss").
pub const LARGE_GRAPH: usize = 300_000;

/// The `ef` a search of a graph of `points` points uses unless told.
pub fn default_ef(points: usize) -> usize {
    if points >= LARGE_GRAPH {
        2 * DEFAULT_EF
    } else {
        DEFAULT_EF
    }
}

/// Cost, per point, of what a cold process pays before its first graph
/// search through the store: opening it and reading the saved graph
/// (measured: a cold `query --hnsw` at 1M points took about 1 s on 2
/// cores, the graph's read 0.2 s of it; see `bench/RESULTS.md`).
pub const GRAPH_LOAD_NS_PER_POINT: f64 = 1_000.0;

/// The same without the store, for a cold query that reads the saved graph
/// beside the flat file ([`crate::cold::ColdIndex`]): reading and checking
/// `graph.hnsw` (measured: 0.21 s at 1M points; rounded up).
pub const SAVED_GRAPH_LOAD_NS_PER_POINT: f64 = 250.0;

/// Cost of the exact scan per stored float (measured: about 1M × 16 floats
/// in 6 ms on 2 cores with AVX2).
pub const SCAN_NS_PER_FLOAT: f64 = 0.4;

/// Cost of one graph search at the default `ef` (measured: p50 0.06 ms at
/// 100k points and ef 64, 0.22 ms at 1M and ef 128, on 2 cores; rounded up).
pub const GRAPH_SEARCH_NS: f64 = 250_000.0;

/// The same per query and float for a batch, which runs blocks of queries
/// over cached tiles (measured: 10,000 queries over 60,000 × 16 floats in
/// 0.85 s on 2 busy cores; rounded up).
pub const BATCH_SCAN_NS_PER_FLOAT: f64 = 0.1;

#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    pub k: usize,
    /// Which images may be found.
    pub filter: Filter,
    /// Force the exact scan.
    pub exact: bool,
    /// Force the graph (for comparisons; loses to exact on small sets).
    pub hnsw: bool,
    /// Graph search candidate list size; `None`: [`default_ef`] of the graph.
    pub ef: Option<usize>,
}

/// One query's nearest `(id, distance)` pairs, nearest first.
pub type Neighbours = Vec<(u64, f32)>;

/// How a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Hnsw,
    Exact,
}

impl Method {
    /// The name JSON reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Hnsw => "hnsw",
            Method::Exact => "exact",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub id: u64,
    /// Euclidean distance between latents.
    pub distance: f32,
    /// `1 / (1 + distance / sqrt(latent))`: 1 for identical latents, falling
    /// towards 0; comparable across models of different latent sizes.
    pub similarity: f32,
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    pub label: Option<String>,
}

/// An index a query reads: an open [`Index`], or a
/// [`crate::cold::ColdIndex`] that reads only the derived files (the flat
/// vectors and the record catalogue) and never opens the store.
pub trait Searchable: Sync {
    fn model(&self) -> &Model;
    /// The live record stored under this canonical path.
    fn id_for_path(&self, path: &[u8]) -> Result<Option<u64>, StoreError>;
    /// The stored embedding of a live id.
    fn stored_vector(&self, id: u64) -> Option<Vec<f32>>;
    /// A live record's path and label.
    fn path_and_label(&self, id: u64) -> Result<Option<(PathBuf, Option<String>)>, StoreError>;
    /// The k nearest live images to each of `vectors`, as bare
    /// `(id, distance)` pairs, and how they were found.
    fn neighbours(
        &self,
        vectors: &[Vec<f32>],
        opts: &QueryOptions,
    ) -> Result<(Vec<Neighbours>, Method), SearchError>;
}

impl Searchable for Index {
    fn model(&self) -> &Model {
        &self.model
    }

    fn id_for_path(&self, path: &[u8]) -> Result<Option<u64>, StoreError> {
        self.store.id_for_path(path)
    }

    fn stored_vector(&self, id: u64) -> Option<Vec<f32>> {
        self.ann().flat.get(id)
    }

    fn path_and_label(&self, id: u64) -> Result<Option<(PathBuf, Option<String>)>, StoreError> {
        Ok(self.store.record(id)?.map(|r| (r.path_buf(), r.label)))
    }

    fn neighbours(
        &self,
        vectors: &[Vec<f32>],
        opts: &QueryOptions,
    ) -> Result<(Vec<Neighbours>, Method), SearchError> {
        neighbours(self, vectors, opts)
    }
}

/// The k nearest live images to `vector`.
pub fn nearest(
    index: &dyn Searchable,
    vector: &[f32],
    opts: &QueryOptions,
) -> Result<(Vec<Hit>, Method), SearchError> {
    let (mut all, method) = nearest_many(index, std::slice::from_ref(&vector.to_vec()), opts)?;
    Ok((all.pop().unwrap_or_default(), method))
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ann(#[from] crate::ann::AnnError),
    /// The plan picked the graph, and the saved one is not current: only
    /// an open [`Index`] catches it up.
    #[error("this search needs the HNSW graph, and the saved one is behind the index: it is caught up with the store open")]
    NeedsGraph,
}

/// The k nearest live images to each of `vectors`, searched in parallel.
/// Filters are resolved once and the method is planned once for the batch.
///
/// Searches share the index's lock with each other and with an ingest's
/// graph inserts; the graph is loaded first if the plan needs it.
pub fn nearest_many(
    index: &dyn Searchable,
    vectors: &[Vec<f32>],
    opts: &QueryOptions,
) -> Result<(Vec<Vec<Hit>>, Method), SearchError> {
    let (found, method) = index.neighbours(vectors, opts)?;
    let dim = index.model().embedding_dim();
    let hits = found
        .into_par_iter()
        .map(|found| to_hits(index, found, dim))
        .collect::<Result<_, _>>()?;
    Ok((hits, method))
}

/// [`nearest_many`] as bare `(id, distance)` pairs, nearest first, for
/// whole-index passes (duplicates) that need no record per hit.
pub fn neighbours(
    index: &Index,
    vectors: &[Vec<f32>],
    opts: &QueryOptions,
) -> Result<(Vec<Neighbours>, Method), SearchError> {
    let k = opts.k.max(1);
    let allowed = opts.filter.allowed_ids(&index.store)?;
    let candidates = allowed
        .as_ref()
        .map_or(index.store.live_count()? as usize, Vec::len);
    let method = {
        let ann = index.ann();
        let load_ns_per_point = match ann.loaded_graph() {
            Some(_) => 0.0,
            None => GRAPH_LOAD_NS_PER_POINT,
        };
        plan(
            opts,
            load_ns_per_point,
            ann.flat.rows(),
            candidates,
            vectors.len(),
            ann.dim(),
        )
    };
    if method == Method::Hnsw {
        index.load_graph()?;
    }
    let ann = index.ann();
    let ann = &*ann;
    let found: Vec<Vec<(u64, f32)>> = match method {
        Method::Exact => exact(&ann.flat, vectors, k, allowed.as_deref()),
        Method::Hnsw => {
            let graph = ann.loaded_graph().expect("loaded above");
            graph_search(graph, vectors, opts, allowed.as_deref())
        }
    };
    Ok((found, method))
}

/// Each vector's k nearest live ids in `graph` (only `allowed` ones, a
/// sorted list, when given), at the query's `ef` or the default for the
/// graph's size.
pub(crate) fn graph_search(
    graph: &crate::ann::Graph,
    vectors: &[Vec<f32>],
    opts: &QueryOptions,
    allowed: Option<&[u64]>,
) -> Vec<Neighbours> {
    let k = opts.k.max(1);
    let ef = opts.ef.unwrap_or(default_ef(graph.points())).max(k);
    vectors
        .par_iter()
        .map(|v| match allowed {
            Some(ids) => graph.search_where(v, k, ef, |id| ids.binary_search(&id).is_ok()),
            None => graph.search(v, k, ef),
        })
        .collect()
}

/// Picks the method for `queries` searches over `candidates` of `points`
/// indexed images, when the graph costs `load_ns_per_point` to load (0
/// when it is in memory).
pub(crate) fn plan(
    opts: &QueryOptions,
    load_ns_per_point: f64,
    points: usize,
    candidates: usize,
    queries: usize,
    dim: usize,
) -> Method {
    if opts.exact {
        Method::Exact
    } else if opts.hnsw {
        Method::Hnsw
    } else {
        cheaper(load_ns_per_point, points, candidates, queries, dim)
    }
}

/// The cheaper method: exact for small candidate sets; otherwise the graph
/// only if its searches (plus its reload, when it is not in memory) cost
/// less than the scans. A warm graph wins single queries on large indexes;
/// a large batch (eval) is scanned exactly even then.
fn cheaper(
    load_ns_per_point: f64,
    points: usize,
    candidates: usize,
    queries: usize,
    dim: usize,
) -> Method {
    if candidates <= EXACT_BELOW {
        return Method::Exact;
    }
    let per_float = if queries >= crate::ann::flat::BATCH_FROM {
        BATCH_SCAN_NS_PER_FLOAT
    } else {
        SCAN_NS_PER_FLOAT
    };
    let scans = queries as f64 * candidates as f64 * dim as f64 * per_float;
    let searches = queries as f64 * GRAPH_SEARCH_NS;
    let load = points as f64 * load_ns_per_point;
    if scans > load + searches {
        Method::Hnsw
    } else {
        Method::Exact
    }
}

fn to_hits(
    index: &dyn Searchable,
    found: Vec<(u64, f32)>,
    dim: usize,
) -> Result<Vec<Hit>, StoreError> {
    let scale = (dim as f32).sqrt();
    let mut out = Vec::with_capacity(found.len());
    for (id, distance) in found {
        // A record removed since the structures were written is skipped.
        let Some((path, label)) = index.path_and_label(id)? else {
            continue;
        };
        out.push(Hit {
            rank: out.len() + 1,
            id,
            distance,
            similarity: 1.0 / (1.0 + distance / scale),
            path,
            label,
        });
    }
    Ok(out)
}

/// Exact search over the flat vector file: a full scan, or for a small
/// filtered set, a lookup of just those rows.
pub(crate) fn exact(
    flat: &FlatVectors,
    queries: &[Vec<f32>],
    k: usize,
    only: Option<&[u64]>,
) -> Vec<Vec<(u64, f32)>> {
    match only {
        Some(ids) if ids.len() * 32 < flat.rows() => {
            let rows: Vec<(u64, Vec<f32>)> = ids
                .iter()
                .filter_map(|&id| flat.get(id).map(|v| (id, v)))
                .collect();
            queries
                .par_iter()
                .map(|q| {
                    let mut best = crate::ann::kernels::TopK::new(k);
                    for (id, v) in &rows {
                        best.push(*id, crate::ann::kernels::l2sq(v, q));
                    }
                    best.into_sorted()
                        .into_iter()
                        .map(|(id, d)| (id, d.sqrt()))
                        .collect()
                })
                .collect()
        }
        _ => {
            let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
            match only {
                Some(ids) => flat.search(&refs, k, &|id| ids.binary_search(&id).is_ok()),
                None => flat.search(&refs, k, &|_| true),
            }
        }
    }
}

/// A query's embedding, or why there is none.
pub struct QueryLatent {
    /// What the user named, for display: a path, or `id N`.
    pub name: String,
    /// The file, when the query is one.
    pub path: Option<PathBuf>,
    /// The indexed image this query is, if any (its stored vector is used).
    pub id: Option<u64>,
    /// The hash of the file's bytes, when it was read.
    pub hash: Option<[u8; 32]>,
    pub latent: Result<Vec<f32>, String>,
}

/// Embeddings for query files (folders are expanded): an indexed file uses
/// its stored vector without decoding; others are decoded in parallel and
/// encoded in one batch with the index's model.
pub fn query_latents(index: &dyn Searchable, inputs: &[PathBuf]) -> Vec<QueryLatent> {
    let files = crate::walk::expand(inputs);
    let model = index.model();
    let shape = model.input_shape();
    let decoded: Vec<_> = files
        .par_iter()
        .map(|p| {
            let stored = std::fs::canonicalize(p)
                .ok()
                .and_then(|c| index.id_for_path(&path_to_bytes(&c)).ok().flatten());
            match stored {
                Some(id) => Ok(Err(id)),
                None => prepare::file(p, shape, DecodeLimits::default())
                    .map(|(content, prepared)| Ok((content.hash, prepared.pixels))),
            }
        })
        .collect();
    let mut out = Vec::with_capacity(files.len());
    let mut to_embed = Vec::new();
    for (path, d) in files.iter().zip(decoded) {
        let name = path.display().to_string();
        let (id, hash, latent) = match d {
            Ok(Err(id)) => (Some(id), None, stored_vector(index, id)),
            Ok(Ok((hash, px))) => {
                to_embed.push((out.len(), px));
                (None, Some(hash), Ok(Vec::new()))
            }
            Err(e) => (None, None, Err(e.reason())),
        };
        out.push(QueryLatent {
            name,
            path: Some(path.clone()),
            id,
            hash,
            latent,
        });
    }
    let (slots, pixels): (Vec<usize>, Vec<_>) = to_embed.into_iter().unzip();
    match model.embed(&pixels) {
        Ok(latents) => {
            for (at, z) in slots.into_iter().zip(latents) {
                out[at].latent = Ok(z);
            }
        }
        Err(e) => {
            for at in slots {
                out[at].latent = Err(format!("encoding failed: {e}"));
            }
        }
    }
    out
}

/// The query for an indexed id: its stored vector.
pub fn id_latent(index: &dyn Searchable, id: u64) -> QueryLatent {
    QueryLatent {
        name: format!("id {id}"),
        path: None,
        id: Some(id),
        hash: None,
        latent: stored_vector(index, id),
    }
}

fn stored_vector(index: &dyn Searchable, id: u64) -> Result<Vec<f32>, String> {
    index
        .stored_vector(id)
        .ok_or_else(|| format!("no live image with id {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planner_scans_when_cold_and_uses_a_warm_graph() {
        let (warm, store, saved) = (0.0, GRAPH_LOAD_NS_PER_POINT, SAVED_GRAPH_LOAD_NS_PER_POINT);
        // Small sets are always scanned.
        assert_eq!(cheaper(warm, 10_000, 10_000, 1, 16), Method::Exact);
        // A cold million: one query (or a hundred) is cheaper to scan than
        // the graph is to load; tens of thousands of queries are not.
        assert_eq!(cheaper(store, 1_000_000, 1_000_000, 1, 16), Method::Exact);
        assert_eq!(cheaper(store, 1_000_000, 1_000_000, 100, 16), Method::Exact);
        assert_eq!(
            cheaper(store, 1_000_000, 1_000_000, 50_000, 16),
            Method::Hnsw
        );
        // Read beside the flat file, without the store, the graph pays for
        // itself from a few hundred queries: 500 take it, through the
        // store they would not. One query is still scanned.
        assert_eq!(cheaper(store, 1_000_000, 1_000_000, 500, 16), Method::Exact);
        assert_eq!(cheaper(saved, 1_000_000, 1_000_000, 500, 16), Method::Hnsw);
        assert_eq!(cheaper(saved, 1_000_000, 1_000_000, 1, 16), Method::Exact);
        // A cold batch (eval: 10,000 test images over 60,000) runs the
        // tiled scan, cheaper per query than single scans.
        assert_eq!(cheaper(store, 60_000, 60_000, 10_000, 16), Method::Exact);
        // ... even with the graph in memory.
        assert_eq!(cheaper(warm, 60_000, 60_000, 10_000, 16), Method::Exact);
        // Once the graph is in memory (serve), single queries use it.
        assert_eq!(cheaper(warm, 1_000_000, 1_000_000, 1, 16), Method::Hnsw);
    }

    #[test]
    fn large_graphs_search_with_a_longer_candidate_list() {
        assert_eq!(default_ef(100_000), DEFAULT_EF);
        assert_eq!(default_ef(LARGE_GRAPH - 1), DEFAULT_EF);
        assert_eq!(default_ef(LARGE_GRAPH), 2 * DEFAULT_EF);
        assert_eq!(default_ef(1_000_000), 128);
    }
}
