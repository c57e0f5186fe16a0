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
    let label_ok = |rec: &crate::store::Record| {
        opts.label
            .as_ref()
            .is_none_or(|l| rec.label.as_ref() == Some(l))
    };
    let mut ids: Vec<u64> = match &opts.under {
        Some(dir) => {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            let mut prefix = path_to_bytes(&dir);
            if !prefix.ends_with(b"/") {
                prefix.push(b'/');
            }
            let mut ids = Vec::new();
            for item in index.store.paths_under(&prefix) {
                let (_, id) = item?;
                // A label filter needs the record; a prefix alone does not.
                if opts.label.is_none() || index.store.record(id)?.is_some_and(|r| label_ok(&r)) {
                    ids.push(id);
                }
            }
            ids
        }
        // Label only: one pass over the records.
        None => index
            .store
            .records()
            .filter(|r| r.as_ref().map_or(true, |(_, rec)| label_ok(rec)))
            .map(|r| r.map(|(id, _)| id))
            .collect::<Result<_, _>>()?,
    };
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
    let mut best = crate::knn::TopK::new(k);
    let mut consider = |id: u64, v: &[f32]| {
        best.push(id, v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum());
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
    Ok(best
        .into_sorted()
        .into_iter()
        .map(|(id, d)| (id, d.sqrt()))
        .collect())
}

/// A set of images that are near-duplicates of each other.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateGroup {
    /// `identical` when every member has the same bytes (blake3), else `similar`.
    pub kind: &'static str,
    /// Largest distance of a pair that joined the group.
    pub max_distance: f32,
    pub members: Vec<DuplicateMember>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateMember {
    pub id: u64,
    pub path: String,
    /// Members sharing this number hold byte-identical files.
    pub identical_set: usize,
}

/// Default threshold as a similarity (see [`Hit::similarity`]): pairs at or
/// above it are near-duplicates.
pub const DEFAULT_DUPLICATE_SIMILARITY: f32 = 0.6;

/// Groups of near-duplicates: each image's `neighbours` nearest within
/// `threshold` (latent distance) are linked, byte-identical files always are,
/// and linked images are merged (union-find).
pub fn duplicates(
    index: &Index,
    threshold: f32,
    neighbours: usize,
) -> Result<Vec<DuplicateGroup>, StoreError> {
    let records: Vec<(u64, crate::store::Record)> =
        index.store.records().collect::<Result<_, _>>()?;
    let pos: std::collections::HashMap<u64, usize> = records
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut parent: Vec<usize> = (0..records.len()).collect();
    let mut link_distance = vec![0f32; records.len()];
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut union = |parent: &mut Vec<usize>, a: usize, b: usize, d: f32| {
        let (ra, rb) = (find(parent, a), find(parent, b));
        if ra != rb {
            parent[rb] = ra;
            link_distance[ra] = link_distance[ra].max(link_distance[rb]).max(d);
        } else {
            link_distance[ra] = link_distance[ra].max(d);
        }
    };
    // Byte-identical files.
    let mut by_hash: std::collections::HashMap<[u8; 32], usize> = std::collections::HashMap::new();
    for (i, (_, rec)) in records.iter().enumerate() {
        if let Some(&first) = by_hash.get(&rec.hash) {
            union(&mut parent, first, i, 0.0);
        } else {
            by_hash.insert(rec.hash, i);
        }
    }
    // Near neighbours within the threshold. Vectors are read once; a small
    // index is searched exactly in one batched pass (GEMM), a large one
    // through the graph.
    let mut ids = Vec::with_capacity(records.len());
    let mut flat = Vec::new();
    for item in index.store.vectors_after(None) {
        let (id, v) = item?;
        ids.push(id);
        flat.extend(v);
    }
    let dim = index.model.latent_dim();
    let k = neighbours + 1;
    let found: Vec<Vec<(u64, f32)>> = if ids.len() <= EXACT_BELOW {
        let all = crate::knn::Vectors { dim, data: &flat };
        crate::knn::exact_knn(&all, &all, k)
            .map_err(|e| StoreError::Corrupt {
                id: 0,
                message: format!("exact search failed: {e}"),
            })?
            .into_iter()
            .map(|row| row.into_iter().map(|(i, d2)| (ids[i], d2.sqrt())).collect())
            .collect()
    } else {
        flat.chunks(dim)
            .map(|v| index.ann.search(v, k, DEFAULT_EF.max(k)))
            .collect()
    };
    for (id, hits) in ids.iter().zip(found) {
        let Some(&i) = pos.get(id) else { continue };
        for (other, d) in hits.into_iter().filter(|(o, d)| o != id && *d <= threshold) {
            if let Some(&j) = pos.get(&other) {
                union(&mut parent, i, j, d);
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> =
        std::collections::BTreeMap::new();
    for i in 0..records.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut out: Vec<DuplicateGroup> = groups
        .into_iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(root, members)| {
            let mut sets: Vec<[u8; 32]> = Vec::new();
            let mut members: Vec<DuplicateMember> = members
                .iter()
                .map(|&i| {
                    let (id, rec) = &records[i];
                    let set = sets.iter().position(|h| *h == rec.hash).unwrap_or_else(|| {
                        sets.push(rec.hash);
                        sets.len() - 1
                    });
                    DuplicateMember {
                        id: *id,
                        path: rec.path_buf().display().to_string(),
                        identical_set: set,
                    }
                })
                .collect();
            members.sort_by(|a, b| a.path.cmp(&b.path));
            DuplicateGroup {
                kind: if sets.len() == 1 {
                    "identical"
                } else {
                    "similar"
                },
                max_distance: link_distance[root],
                members,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(a.members[0].path.cmp(&b.members[0].path))
    });
    Ok(out)
}
