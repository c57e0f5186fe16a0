//! kNN classification on latents: the k nearest *labelled* images of an
//! embedding vote for its label.
//!
//! The autoencoder never saw a label; the vote is where labels enter. Images
//! without a label are searched past (they never vote), and an image never
//! votes for itself: its own record and stored copies of the same bytes are
//! left out ([`copies_of`]; leave-one-out), so a prediction for an indexed
//! image says what the *other* images make of it, and `eval` on a test set
//! that overlaps the index is not flattered.

use serde::Serialize;

use crate::filter::Filter;
use crate::index::Index;
use crate::knn::{self, Tally, Weighting};
use crate::search::{self, Hit, Method, QueryLatent, QueryOptions, SearchError};

/// Default neighbour count: odd, and the setting of the published results.
pub const DEFAULT_K: usize = 7;

#[derive(Debug, Clone)]
pub struct ClassifyOptions {
    /// Neighbours that vote.
    pub k: usize,
    pub weighting: Weighting,
    /// Force the exact scan (`false`, `false`: planned as for a query).
    pub exact: bool,
    /// Force the HNSW graph.
    pub hnsw: bool,
    /// Graph search candidate list size.
    pub ef: Option<usize>,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        Self {
            k: DEFAULT_K,
            weighting: Weighting::Majority,
            exact: false,
            hnsw: false,
            ef: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("the index has no labelled images, so nothing can vote; label images by folder (root/<label>/img.png) or with `ingest --labels FILE.csv`")]
    NoLabels,
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What the neighbours decided for one image.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// `None` only when no labelled image was left to vote.
    pub label: Option<String>,
    /// The winner's share of the votes (of the weight, when weighted).
    pub confidence: f64,
    /// Every label that got a vote, winner first.
    pub votes: Vec<Tally<String>>,
    /// The neighbours that voted, nearest first.
    pub voters: Vec<Hit>,
}

/// Classifies each latent. `exclude[i]` (when given) lists ids that may not
/// vote for query `i`: the query's own record and its byte-identical copies.
pub fn classify(
    index: &Index,
    latents: &[Vec<f32>],
    exclude: &[Vec<u64>],
    opts: &ClassifyOptions,
) -> Result<(Vec<Prediction>, Method), ClassifyError> {
    if index.store.label_counts()?.is_empty() {
        return Err(ClassifyError::NoLabels);
    }
    let k = opts.k.max(1);
    // Ask for enough neighbours that k remain after the exclusions.
    let extra = exclude.iter().map(Vec::len).max().unwrap_or(0);
    let query = QueryOptions {
        k: k + extra,
        filter: Filter {
            labelled: true,
            ..Filter::default()
        },
        exact: opts.exact,
        hnsw: opts.hnsw,
        ef: opts.ef,
    };
    let (found, method) = search::nearest_many(index, latents, &query)?;
    let predictions = found
        .into_iter()
        .enumerate()
        .map(|(i, hits)| {
            let skip = exclude.get(i).map_or(&[][..], Vec::as_slice);
            let voters: Vec<Hit> = hits
                .into_iter()
                .filter(|h| h.label.is_some() && !skip.contains(&h.id))
                .take(k)
                .enumerate()
                .map(|(rank, h)| Hit {
                    rank: rank + 1,
                    ..h
                })
                .collect();
            decide(voters, opts.weighting)
        })
        .collect();
    Ok((predictions, method))
}

/// Indexed records that are the same image as a query: its own record (an
/// indexed query) and every record with the same bytes. These may not vote
/// on it. Unreadable files have none.
pub fn copies_of(index: &Index, query: &QueryLatent) -> Vec<u64> {
    let hash = match query.id {
        Some(id) => index.store.record(id).ok().flatten().map(|r| r.hash),
        None => query.hash,
    };
    copies(&index.store, hash.as_ref(), query.id)
}

/// The record `id` (if any) and every record whose bytes hash to `hash`.
pub fn copies(store: &crate::store::Store, hash: Option<&[u8; 32]>, id: Option<u64>) -> Vec<u64> {
    let mut ids = hash
        .and_then(|h| store.ids_with_hash(h).ok())
        .unwrap_or_default();
    ids.extend(id);
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The vote over `voters` (all labelled). An index whose only labelled
/// images were excluded leaves no voters, and no label.
fn decide(voters: Vec<Hit>, weighting: Weighting) -> Prediction {
    let ballot = knn::vote(
        voters
            .iter()
            .map(|h| (h.label.clone().unwrap_or_default(), h.distance)),
        weighting,
    );
    match ballot {
        Some(b) => Prediction {
            label: Some(b.winner().clone()),
            confidence: b.confidence(),
            votes: b.tallies,
            voters,
        },
        None => Prediction {
            label: None,
            confidence: 0.0,
            votes: Vec::new(),
            voters,
        },
    }
}
