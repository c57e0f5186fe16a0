//! Queries: nearest live images to a vector, through the HNSW graph or an
//! exact scan of the store, with path-prefix and label filters applied
//! inside the search (so a filtered query still returns k results when k
//! images match).

use serde::Serialize;

use crate::index::Index;
use crate::store::{path_to_bytes, StoreError};

/// At or below this many candidate images an exact scan is used: it is
/// exact, and at this size as fast as the graph.
pub const EXACT_BELOW: usize = 20_000;

/// Default search-time candidate list (`ef`) for the graph.
pub const DEFAULT_EF: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    pub k: usize,
    /// Only images whose path starts with this folder.
    pub under: Option<std::path::PathBuf>,
    /// Only images with this label.
    pub label: Option<String>,
    /// Force the exact scan.
    pub exact: bool,
    /// Force the graph (for comparisons; loses to exact on small sets).
    pub hnsw: bool,
    /// Graph search candidate list size; `None`: [`DEFAULT_EF`].
    pub ef: Option<usize>,
}

/// How a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Hnsw,
    Exact,
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
    pub path: String,
    pub label: Option<String>,
}

/// The k nearest live images to `vector`.
pub fn nearest(
    index: &Index,
    vector: &[f32],
    opts: &QueryOptions,
) -> Result<(Vec<Hit>, Method), StoreError> {
    let k = opts.k.max(1);
    let allowed = allowed_ids(index, opts)?;
    let candidates = allowed
        .as_ref()
        .map_or(index.store.live_count()? as usize, Vec::len);
    let (raw, method) = if opts.exact || (!opts.hnsw && candidates <= EXACT_BELOW) {
        (exact(index, vector, k, allowed.as_deref())?, Method::Exact)
    } else {
        let ef = opts.ef.unwrap_or(DEFAULT_EF).max(k);
        let hits = match &allowed {
            Some(ids) => index
                .ann
                .search_where(vector, k, ef, |id| ids.binary_search(&id).is_ok()),
            None => index.ann.search(vector, k, ef),
        };
        (hits, Method::Hnsw)
    };
    let scale = (vector.len() as f32).sqrt();
    let mut out = Vec::with_capacity(raw.len());
    for (rank, (id, distance)) in raw.into_iter().enumerate() {
        let Some(rec) = index.store.record(id)? else {
            continue;
        };
        out.push(Hit {
            rank: rank + 1,
            id,
            distance,
            similarity: 1.0 / (1.0 + distance / scale),
            path: rec.path_buf().display().to_string(),
            label: rec.label,
        });
    }
    Ok((out, method))
}

/// Sorted ids passing the filters, or `None` when there are none.
fn allowed_ids(index: &Index, opts: &QueryOptions) -> Result<Option<Vec<u64>>, StoreError> {
    if opts.under.is_none() && opts.label.is_none() {
        return Ok(None);
    }
    let mut ids: Vec<u64> = match &opts.under {
        Some(dir) => {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            let mut prefix = path_to_bytes(&dir);
            if !prefix.ends_with(b"/") {
                prefix.push(b'/');
            }
            index
                .store
                .paths_under(&prefix)
                .map(|r| r.map(|(_, id)| id))
                .collect::<Result<_, _>>()?
        }
        None => index
            .store
            .records()
            .map(|r| r.map(|(id, _)| id))
            .collect::<Result<_, _>>()?,
    };
    if let Some(label) = &opts.label {
        let mut keep = Vec::with_capacity(ids.len());
        for id in ids {
            if index
                .store
                .record(id)?
                .is_some_and(|r| r.label.as_deref() == Some(label))
            {
                keep.push(id);
            }
        }
        ids = keep;
    }
    ids.sort_unstable();
    Ok(Some(ids))
}

/// Exact scan over the stored vectors (all live ones, or `only`).
fn exact(
    index: &Index,
    q: &[f32],
    k: usize,
    only: Option<&[u64]>,
) -> Result<Vec<(u64, f32)>, StoreError> {
    let mut best: Vec<(u64, f32)> = Vec::with_capacity(k + 1);
    let mut consider = |id: u64, v: &[f32]| {
        let d: f32 = v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
        if best.len() == k && d >= best[k - 1].1 {
            return;
        }
        let at = best.partition_point(|&(_, b)| b <= d);
        best.insert(at, (id, d));
        best.truncate(k);
    };
    match only {
        Some(ids) => {
            for &id in ids {
                if let Some(v) = index.store.vector(id)? {
                    consider(id, &v);
                }
            }
        }
        None => {
            for item in index.store.vectors_after(None) {
                let (id, v) = item?;
                consider(id, &v);
            }
        }
    }
    Ok(best.into_iter().map(|(id, d)| (id, d.sqrt())).collect())
}
