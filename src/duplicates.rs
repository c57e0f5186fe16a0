//! Near-duplicate groups: a neighbour graph over the index's embeddings,
//! cut at a distance threshold, merged with union-find; byte-identical
//! files (same blake3) are always grouped and labelled as such.

use std::path::PathBuf;

use serde::Serialize;

use crate::index::Index;
use crate::search::{self, QueryOptions};

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
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    /// Members sharing this number hold byte-identical files.
    pub identical_set: usize,
}

/// Fallback threshold as a similarity (see [`crate::search::Hit::similarity`])
/// for models without a measured one: pairs at or above it are near-duplicates.
pub const DEFAULT_DUPLICATE_SIMILARITY: f32 = 0.6;

/// The default latent distance threshold for `model`: measured for the
/// shipped models (see the README), else [`DEFAULT_DUPLICATE_SIMILARITY`].
pub fn default_threshold(model: &crate::model::Model) -> f32 {
    match model.name.as_str() {
        // Below the 0.1th percentile of CIFAR-10 test images' distances to
        // their nearest other image (`cargo bench --bench near_duplicates`,
        // `BENCH_MODEL=photos-cifar32` for the second).
        "photos" => PHOTOS_THRESHOLD,
        "photos-cifar32" => PHOTOS_CIFAR32_THRESHOLD,
        _ => {
            let scale = (model.embedding_dim() as f32).sqrt();
            scale * (1.0 / DEFAULT_DUPLICATE_SIMILARITY - 1.0)
        }
    }
}

/// `photos` embeddings have unit length, so distances run from 0 to 2.
const PHOTOS_THRESHOLD: f32 = 0.22;
const PHOTOS_CIFAR32_THRESHOLD: f32 = 0.75;

/// Groups of near-duplicates: each image's `neighbours` nearest within
/// `threshold` (latent distance) are linked, byte-identical files always are,
/// and linked images are merged (union-find).
pub fn duplicates(
    index: &Index,
    threshold: f32,
    neighbours: usize,
) -> Result<Vec<DuplicateGroup>, crate::search::SearchError> {
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
    // Near neighbours within the threshold: every vector is a query, and
    // the search planner picks the batched exact scan or the graph, as it
    // does for any batch of queries.
    let mut ids = Vec::with_capacity(records.len());
    let mut vectors = Vec::with_capacity(records.len());
    for (id, v) in index.ann().flat.iter() {
        ids.push(id);
        vectors.push(v.into_owned());
    }
    // Each image's own row comes back too: ask for one more.
    let opts = QueryOptions {
        k: neighbours + 1,
        ..QueryOptions::default()
    };
    let (found, _) = search::neighbours(index, &vectors, &opts)?;
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
                        path: rec.path_buf(),
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
