//! Anomalies: images ranked by how badly the autoencoder rebuilds them.
//!
//! An autoencoder trained on one kind of image rebuilds that kind well and
//! anything else badly, so reconstruction error is an anomaly score that
//! needs no labels. Ingest stores each image's error under the index's
//! model, so ranking the index reads records and sorts: no decoding.
//!
//! One model's ranking is noisy at the top (a few odd-but-valid images rank
//! beside true outliers); several models disagree on those and agree on the
//! outliers, so `models` can name more. Each extra model decodes the
//! indexed files again (its errors are not stored). Errors of different
//! models are on different scales, so each is divided by that model's
//! median error over the scored images before they are combined (mean or
//! max). Per-label z-scores then ask "odd *for its label*".

use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::filter::Filter;
use crate::imageio::DecodeLimits;
use crate::index::Index;
use crate::model::{Model, ModelError};
use crate::prepare;
use crate::progress::Progress;
use crate::report::Failure;
use crate::store::{Record, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AnomalyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("loading model `{name}`: {error}")]
    Model { name: String, error: ModelError },
    #[error("no images to score (the index is empty, or nothing matches the filters)")]
    Empty,
}

/// How several models' normalized errors become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Average: steadies the ranking.
    #[default]
    Mean,
    /// Largest: flags what any one model finds odd.
    Max,
}

#[derive(Debug, Clone, Default)]
pub struct AnomalyOptions {
    /// Models whose errors are combined; empty: the index's own (stored).
    pub models: Vec<String>,
    pub combine: Combine,
    /// Score each image against the others of its label (z-score).
    pub by_label: bool,
    /// Which indexed images are scored.
    pub filter: Filter,
}

/// One model taking part, and the scale its errors were divided by.
#[derive(Debug, Clone, Serialize)]
pub struct ModelScale {
    pub name: String,
    pub fingerprint: String,
    /// Median reconstruction error over the scored images.
    pub median_error: f32,
    /// Whether its errors were read from the store (the index's model).
    pub stored: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub id: u64,
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    pub label: Option<String>,
    /// Reconstruction error (mean squared, model input in `[0, 1]`) per model.
    pub errors: Vec<f32>,
    /// What the ranking sorts by: the error itself for one model; the
    /// combined median-normalized errors for several; a z-score within the
    /// label with `by_label`.
    pub score: f32,
    /// Share of scored images with a lower score, in percent.
    pub percentile: f64,
}

/// Every scored image, highest score first.
#[derive(Debug, Clone, Serialize)]
pub struct Ranking {
    pub models: Vec<ModelScale>,
    pub combine: Combine,
    pub by_label: bool,
    pub images: Vec<Scored>,
    /// Indexed files another model could not re-read.
    pub failed: Vec<Failure>,
}

/// Which of the ranked images to report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Select {
    Top(usize),
    /// Score at or above this.
    Threshold(f32),
    /// Score at or above this percentile (0–100) of all scores.
    Percentile(f64),
}

impl Ranking {
    /// The selected images, highest first.
    pub fn select(&self, select: Select) -> &[Scored] {
        let n = match select {
            Select::Top(n) => n.min(self.images.len()),
            Select::Threshold(t) => self.images.partition_point(|s| s.score >= t),
            Select::Percentile(p) => {
                let bar = self.score_at_percentile(p);
                self.images.partition_point(|s| s.score >= bar)
            }
        };
        &self.images[..n]
    }

    /// The score at percentile `p` (nearest rank).
    pub fn score_at_percentile(&self, p: f64) -> f32 {
        let n = self.images.len();
        if n == 0 {
            return f32::INFINITY;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
        // Ascending position `rank - 1` is descending position `n - rank`.
        self.images[n - rank.clamp(1, n)].score
    }

    /// Share of ranked images scoring below `score`, in percent.
    pub fn percentile_of(&self, score: f32) -> f64 {
        let below = self.images.len() - self.images.partition_point(|s| s.score >= score);
        100.0 * below as f64 / self.images.len().max(1) as f64
    }
}

/// A model and where its errors come from: the index's own model (`own`
/// empty) has them stored; another model is loaded and re-reads files.
struct Scorer<'a> {
    own: Option<Model>,
    index_model: &'a Model,
}

impl<'a> Scorer<'a> {
    fn load(index: &'a Index, names: &[String]) -> Result<Vec<Self>, AnomalyError> {
        let index_model = &index.model;
        if names.is_empty() {
            return Ok(vec![Scorer {
                own: None,
                index_model,
            }]);
        }
        names
            .iter()
            .map(|name| {
                let model = load_model(name)?;
                // The index's model, named again: use the stored errors.
                let own = (model.fingerprint != index_model.fingerprint).then_some(model);
                Ok(Scorer { own, index_model })
            })
            .collect()
    }

    fn model(&self) -> &Model {
        self.own.as_ref().unwrap_or(self.index_model)
    }

    fn stored(&self) -> bool {
        self.own.is_none()
    }

    /// Errors of the given files under this model; a file that cannot be
    /// read gets `Err(reason)`.
    fn errors(&self, paths: &[PathBuf]) -> Vec<Result<f32, String>> {
        let model = self.model();
        let shape = model.input_shape();
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(crate::model::BATCH) {
            let decoded: Vec<_> = chunk
                .par_iter()
                .map(|p| prepare::file(p, shape, DecodeLimits::default()).map(|(_, i)| i.pixels))
                .collect();
            // Decoded images go to the model in one batch; each slot keeps
            // its place, or the reason it has no image.
            let mut images = Vec::with_capacity(decoded.len());
            let slots: Vec<Result<(), String>> = decoded
                .into_iter()
                .map(|d| d.map(|px| images.push(px)).map_err(|e| e.reason()))
                .collect();
            let mut scores = match model.embed_and_score(&images) {
                Ok(s) => s.into_iter().map(|(_, e)| Ok(e)).collect::<Vec<_>>(),
                Err(e) => vec![Err(format!("model failed: {e}")); images.len()],
            }
            .into_iter();
            out.extend(slots.into_iter().map(|slot| {
                slot.and_then(|()| scores.next().expect("one score per decoded image"))
            }));
        }
        out
    }
}

fn load_model(name: &str) -> Result<Model, AnomalyError> {
    Model::load(name).map_err(|error| AnomalyError::Model {
        name: name.to_string(),
        error,
    })
}

/// Ranks the index's images by reconstruction error. `progress` counts the
/// files the non-stored models re-read (nothing when every error is stored).
pub fn rank(
    index: &Index,
    opts: &AnomalyOptions,
    progress: &dyn Progress,
) -> Result<Ranking, AnomalyError> {
    let records = selected_records(index, opts)?;
    if records.is_empty() {
        return Err(AnomalyError::Empty);
    }
    let scorers = Scorer::load(index, &opts.models)?;
    let paths: Vec<PathBuf> = records.iter().map(|(_, r)| r.path_buf()).collect();
    // errors[m][i]: model m on record i; None where the file was unreadable.
    let mut errors: Vec<Vec<Option<f32>>> = Vec::with_capacity(scorers.len());
    let mut failed = std::collections::BTreeMap::new();
    let rereads = (scorers.iter().filter(|s| !s.stored()).count() * paths.len()) as u64;
    if rereads > 0 {
        progress.stage("images re-read", Some(rereads));
    }
    for scorer in &scorers {
        if scorer.stored() {
            errors.push(records.iter().map(|(_, r)| Some(r.recon_error)).collect());
            continue;
        }
        let mut column = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(1024) {
            for (p, e) in chunk.iter().zip(scorer.errors(chunk)) {
                match e {
                    Ok(e) => column.push(Some(e)),
                    Err(reason) => {
                        failed.insert(p.clone(), reason);
                        column.push(None);
                    }
                }
            }
            progress.advance(chunk.len() as u64);
        }
        errors.push(column);
    }
    let medians: Vec<f32> = errors
        .iter()
        .map(|col| median(col.iter().flatten().copied()))
        .collect();
    let mut images: Vec<Scored> = records
        .into_iter()
        .enumerate()
        .filter_map(|(i, (id, rec))| {
            let errs: Option<Vec<f32>> = errors.iter().map(|col| col[i]).collect();
            let errs = errs?;
            Some(Scored {
                id,
                path: rec.path_buf(),
                label: rec.label,
                score: combine(&errs, &medians, opts.combine),
                errors: errs,
                percentile: 0.0,
            })
        })
        .collect();
    if opts.by_label {
        z_score_by_label(&mut images);
    }
    images.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    let n = images.len();
    for i in 0..n {
        // Ties share the percentile of their lowest position.
        let below = n - images.partition_point(|s| s.score >= images[i].score);
        images[i].percentile = 100.0 * below as f64 / n as f64;
    }
    Ok(Ranking {
        models: scorers
            .iter()
            .zip(medians)
            .map(|(s, median_error)| ModelScale {
                name: s.model().name.clone(),
                fingerprint: s.model().fingerprint.clone(),
                median_error,
                stored: s.stored(),
            })
            .collect(),
        combine: opts.combine,
        by_label: opts.by_label,
        images,
        failed: failed
            .into_iter()
            .map(|(path, reason)| Failure::new(&path, reason))
            .collect(),
    })
}

/// A new image scored against a ranking.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    /// Errors per model, as in the ranking, or why the image was not scored.
    pub result: Result<CheckScore, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckScore {
    pub errors: Vec<f32>,
    pub score: f32,
    /// Share of the index's images scoring below this one, in percent.
    pub percentile: f64,
}

/// Scores images that need not be indexed against the index's distribution.
/// Not with `by_label` (a new image has no label to be compared within).
pub fn check(
    index: &Index,
    ranking: &Ranking,
    opts: &AnomalyOptions,
    images: &[PathBuf],
) -> Result<Vec<Check>, AnomalyError> {
    let scorers = Scorer::load(index, &opts.models)?;
    let per_model: Vec<Vec<Result<f32, String>>> =
        scorers.iter().map(|s| s.errors(images)).collect();
    let medians: Vec<f32> = ranking.models.iter().map(|m| m.median_error).collect();
    Ok(images
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let errs: Result<Vec<f32>, String> =
                per_model.iter().map(|col| col[i].clone()).collect();
            Check {
                path: path.clone(),
                result: errs.map(|errors| {
                    let score = combine(&errors, &medians, opts.combine);
                    CheckScore {
                        percentile: ranking.percentile_of(score),
                        errors,
                        score,
                    }
                }),
            }
        })
        .collect())
}

fn selected_records(
    index: &Index,
    opts: &AnomalyOptions,
) -> Result<Vec<(u64, Record)>, StoreError> {
    opts.filter.records(&index.store)?.collect()
}

fn combine(errors: &[f32], medians: &[f32], how: Combine) -> f32 {
    if errors.len() == 1 {
        return errors[0];
    }
    let scaled = errors
        .iter()
        .zip(medians)
        .map(|(e, m)| e / m.max(f32::MIN_POSITIVE));
    match how {
        Combine::Mean => scaled.sum::<f32>() / errors.len() as f32,
        Combine::Max => scaled.fold(f32::MIN, f32::max),
    }
}

fn median(values: impl Iterator<Item = f32>) -> f32 {
    let mut v: Vec<f32> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// Replaces each score by its z-score among images of the same label
/// (unlabelled images form one group). A group of one, or with no spread,
/// scores 0.
fn z_score_by_label(images: &mut [Scored]) {
    let mut groups: std::collections::HashMap<Option<String>, Vec<usize>> = Default::default();
    for (i, s) in images.iter().enumerate() {
        groups.entry(s.label.clone()).or_default().push(i);
    }
    for members in groups.values() {
        let n = members.len() as f64;
        let mean = members.iter().map(|&i| images[i].score as f64).sum::<f64>() / n;
        let var = members
            .iter()
            .map(|&i| (images[i].score as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = var.sqrt();
        for &i in members {
            images[i].score = if sd > 0.0 {
                ((images[i].score as f64 - mean) / sd) as f32
            } else {
                0.0
            };
        }
    }
}

/// Area under the ROC curve of `scores` for telling `positive` ones apart:
/// the chance a random positive outscores a random negative (ties count
/// half). Used by the benchmark and tests.
pub fn auroc(scores: &[f32], positive: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney U with mid-ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| positive[order[k]]).count() as f64 * mid_rank;
        i = j + 1;
    }
    let pos = positive.iter().filter(|&&p| p).count() as f64;
    let neg = positive.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(id: u64, label: Option<&str>, score: f32) -> Scored {
        Scored {
            id,
            path: format!("/x/{id}.png").into(),
            label: label.map(str::to_string),
            errors: vec![score],
            score,
            percentile: 0.0,
        }
    }

    #[test]
    fn auroc_counts_pairs_and_ties() {
        assert_eq!(auroc(&[0.1, 0.2, 0.9], &[false, false, true]), 1.0);
        assert_eq!(auroc(&[0.9, 0.2, 0.1], &[false, false, true]), 0.0);
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), 0.5);
        // One positive above one of two negatives.
        assert_eq!(auroc(&[0.1, 0.3, 0.2], &[false, false, true]), 0.5);
    }

    #[test]
    fn combining_is_scale_free() {
        // Model 2's errors are 10x model 1's: normalized, they weigh the same.
        let medians = [0.01, 0.1];
        assert_eq!(combine(&[0.02, 0.2], &medians, Combine::Mean), 2.0);
        assert_eq!(combine(&[0.01, 0.3], &medians, Combine::Max), 3.0);
        assert_eq!(combine(&[0.5], &medians[..1], Combine::Mean), 0.5);
    }

    #[test]
    fn selection_and_percentiles() {
        let mut images: Vec<Scored> = (0..10).map(|i| scored(i, None, 9.0 - i as f32)).collect();
        images[9].score = 0.0;
        let ranking = Ranking {
            models: vec![],
            combine: Combine::Mean,
            by_label: false,
            images,
            failed: vec![],
        };
        assert_eq!(ranking.select(Select::Top(3)).len(), 3);
        assert_eq!(ranking.select(Select::Top(30)).len(), 10);
        assert_eq!(ranking.select(Select::Threshold(7.0)).len(), 3);
        // The 90th percentile of 0..=9 is 8: two images at or above it.
        assert_eq!(ranking.score_at_percentile(90.0), 8.0);
        assert_eq!(ranking.select(Select::Percentile(90.0)).len(), 2);
        assert_eq!(ranking.percentile_of(100.0), 100.0);
        assert_eq!(ranking.percentile_of(-1.0), 0.0);
        assert_eq!(ranking.percentile_of(4.5), 50.0);
    }

    #[test]
    fn z_scores_are_within_each_label() {
        let mut images = vec![
            scored(0, Some("a"), 1.0),
            scored(1, Some("a"), 3.0),
            scored(2, Some("b"), 100.0),
            scored(3, Some("b"), 300.0),
            scored(4, None, 5.0),
        ];
        z_score_by_label(&mut images);
        let z: Vec<f32> = images.iter().map(|s| s.score).collect();
        assert_eq!(z, vec![-1.0, 1.0, -1.0, 1.0, 0.0]);
    }
}
