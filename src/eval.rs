//! `eval`: classify every image of a labelled test folder against the index
//! and measure it: accuracy, per-class precision and recall, the confusion
//! matrix, and the time of each stage (decoding, encoding and searching are
//! timed apart). In the same run, optionally: the same kNN over raw pixels
//! at the model's input resolution (the baseline latents must beat), and the
//! graph's votes against the exact scan's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::classify::{self, ClassifyError, ClassifyOptions, Prediction};
use crate::imageio::{DecodeLimits, Pixels};
use crate::index::Index;
use crate::knn::{self, Vectors, Weighting};
use crate::labels::LabelSource;
use crate::prepare;
use crate::progress::{NoProgress, Progress};
use crate::report::Failure;
use crate::search::Method;
use crate::store::StoreError;
use crate::walk::Walker;

/// Test images encoded per model call.
const ENCODE_BATCH: usize = 1024;

#[derive(Debug, Default)]
pub struct EvalOptions {
    pub classify: ClassifyOptions,
    /// Labels of the test images (folder names unless a labels file is given).
    pub labels: LabelSource,
    pub limits: DecodeLimits,
    /// Also run kNN on raw pixels of the indexed images.
    pub raw_baseline: bool,
    /// Also run both the graph and the exact scan and compare their votes.
    pub compare_exact: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read the test folder {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no labelled test images under {path} ({unlabelled} without a label, {failed} unreadable); put them in <root>/<label>/ folders or pass --labels")]
    NoTestImages {
        path: PathBuf,
        unlabelled: usize,
        failed: usize,
    },
    #[error("the test folder has labels the index does not: {}; the index's labels are: {}", list_counts(.unknown), .known.join(", "))]
    UnknownLabels {
        unknown: Vec<(String, usize)>,
        known: Vec<String>,
    },
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model failed: {0}")]
    Model(#[from] crate::model::ModelError),
    #[error("raw-pixel kNN failed: {0}")]
    Raw(#[from] candle_core::Error),
}

fn list_counts(items: &[(String, usize)]) -> String {
    items
        .iter()
        .map(|(l, n)| format!("{l:?} ({n} images)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One label's row of the per-class table.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScore {
    pub label: String,
    /// Test images with this label.
    pub support: u64,
    /// Test images predicted as this label.
    pub predicted: u64,
    pub correct: u64,
    /// `correct / predicted`; `None` when nothing was predicted as it.
    pub precision: Option<f64>,
    /// `correct / support`; `None` when no test image has it.
    pub recall: Option<f64>,
}

/// Counts of (true label, predicted label); rows and columns in `labels` order.
#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
    pub labels: Vec<String>,
    /// `counts[true][predicted]`.
    pub counts: Vec<Vec<u64>>,
}

/// Label shown for a test image no labelled image could vote on.
pub const NO_VOTE: &str = "(no vote)";

/// How one representation (latents or raw pixels) classified the test set.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// "latent" or "raw pixels".
    pub representation: String,
    pub dim: usize,
    /// How the neighbours were found.
    pub method: Method,
    pub accuracy: f64,
    pub correct: u64,
    /// Seconds to turn images into vectors: encoding the test images
    /// (latents) or decoding the indexed images (raw pixels).
    pub vectors_s: f64,
    /// Seconds of neighbour search and voting for the whole test set.
    pub search_s: f64,
    pub search_ms_per_image: f64,
    pub per_class: Vec<ClassScore>,
    pub confusion: Confusion,
}

/// The graph's votes beside the exact scan's, on the same latents.
#[derive(Debug, Clone, Serialize)]
pub struct ExactCheck {
    pub hnsw_accuracy: f64,
    pub exact_accuracy: f64,
    /// Share of test images given the same label by both.
    pub agreement: f64,
    /// Share of the exact voters the graph found too.
    pub voter_recall: f64,
    pub hnsw_search_s: f64,
    pub exact_search_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub test_dir: PathBuf,
    /// Labelled test images classified.
    pub images: usize,
    /// Test images without a label (not evaluated).
    pub unlabelled: usize,
    /// Test files that could not be read or decoded (not evaluated).
    pub failures: Vec<Failure>,
    /// Test images whose bytes are also in the index; their indexed copies
    /// did not vote on them.
    pub in_index: usize,
    /// Labelled images in the index (the voters).
    pub voters: u64,
    pub k: usize,
    pub weighting: Weighting,
    /// Seconds reading and decoding the test images to model input.
    pub decode_s: f64,
    /// Seconds encoding the test images (the model's forward pass).
    pub encode_s: f64,
    pub encode_ms_per_image: f64,
    pub latent: Score,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<Score>,
    /// Raw baseline: indexed images whose file could not be decoded again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_skipped: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_check: Option<ExactCheck>,
    pub seconds: f64,
}

/// A test image ready to classify.
struct TestImage {
    label: String,
    pixels: Pixels,
    /// Indexed records with the same bytes (they may not vote on it).
    copies: Vec<u64>,
}

/// The labelled test images found, and what was left out on the way.
struct TestSet {
    root: PathBuf,
    images: Vec<TestImage>,
    unlabelled: usize,
    failures: Vec<Failure>,
    decode_s: f64,
}

/// Evaluates the index's kNN classification on the labelled images under
/// `test_dir`. Stages: find and label the test images (refusing labels the
/// index lacks before any work), prepare them, encode them, classify, and
/// optionally compare with the graph and with raw pixels.
pub fn evaluate(
    index: &Index,
    test_dir: &Path,
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    let known = index.store.label_counts()?;
    let set = test_set(index, test_dir, &known, opts)?;
    let tests = &set.images;
    let (latents, encode_s) = encode(index, tests, progress)?;

    let truth: Vec<&str> = tests.iter().map(|t| t.label.as_str()).collect();
    let exclude: Vec<Vec<u64>> = tests.iter().map(|t| t.copies.clone()).collect();
    let copt = ClassifyOptions {
        exact: opts.classify.exact || opts.compare_exact,
        ..opts.classify.clone()
    };
    let search_started = Instant::now();
    let (predictions, method) = classify::classify(index, &latents, &exclude, &copt)?;
    let search_s = search_started.elapsed().as_secs_f64();
    let latent = score(
        "latent",
        index.model.embedding_dim(),
        method,
        &truth,
        &predicted_labels(&predictions),
        encode_s,
        search_s,
    );
    let exact_check = if opts.compare_exact {
        let hnsw_opts = ClassifyOptions {
            exact: false,
            hnsw: true,
            ..opts.classify.clone()
        };
        let started = Instant::now();
        let (graph_predictions, _) = classify::classify(index, &latents, &exclude, &hnsw_opts)?;
        let hnsw_search_s = started.elapsed().as_secs_f64();
        Some(compare(
            &truth,
            &graph_predictions,
            &predictions,
            hnsw_search_s,
            search_s,
        ))
    } else {
        None
    };
    let (raw, raw_skipped) = if opts.raw_baseline {
        let (score, skipped) = raw_baseline(index, tests, &truth, opts, progress)?;
        (Some(score), Some(skipped))
    } else {
        (None, None)
    };

    Ok(EvalReport {
        images: tests.len(),
        in_index: tests.iter().filter(|t| !t.copies.is_empty()).count(),
        test_dir: set.root,
        unlabelled: set.unlabelled,
        failures: set.failures,
        voters: known.values().sum(),
        k: opts.classify.k,
        weighting: opts.classify.weighting,
        decode_s: set.decode_s,
        encode_s,
        encode_ms_per_image: 1e3 * encode_s / tests.len() as f64,
        latent,
        raw,
        raw_skipped,
        exact_check,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Walks the test folder, labels its images, refuses labels the index does
/// not have, then reads, hashes and decodes the labelled images.
fn test_set(
    index: &Index,
    test_dir: &Path,
    known: &BTreeMap<String, u64>,
    opts: &EvalOptions,
) -> Result<TestSet, EvalError> {
    let root = std::fs::canonicalize(test_dir).map_err(|source| EvalError::Root {
        path: test_dir.to_path_buf(),
        source,
    })?;
    let (files, walk_errors) = Walker::new().collect(&root, &NoProgress);
    let mut failures: Vec<Failure> = walk_errors
        .into_iter()
        .map(|e| Failure::new(&e.path, e.error))
        .collect();

    // Labels first: a test set the index cannot answer fails before any work.
    let labelled: Vec<(PathBuf, String)> = files
        .iter()
        .filter_map(|p| opts.labels.label_for(&root, p).map(|l| (p.clone(), l)))
        .collect();
    let unlabelled = files.len() - labelled.len();
    if known.is_empty() {
        return Err(ClassifyError::NoLabels.into());
    }
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for (_, label) in &labelled {
        if !known.contains_key(label) {
            *unknown.entry(label.clone()).or_default() += 1;
        }
    }
    if !unknown.is_empty() {
        return Err(EvalError::UnknownLabels {
            unknown: unknown.into_iter().collect(),
            known: known.keys().cloned().collect(),
        });
    }

    let decode_started = Instant::now();
    let shape = index.model.input_shape();
    let store = &index.store;
    let prepared: Vec<Result<TestImage, Failure>> = labelled
        .par_iter()
        .map(|(path, label)| {
            let fail = |reason: String| Failure::new(path, reason);
            let (content, image) =
                prepare::file(path, shape, opts.limits).map_err(|e| fail(e.reason()))?;
            let copies = store
                .ids_with_hash(&content.hash)
                .map_err(|e| fail(e.to_string()))?;
            Ok(TestImage {
                label: label.clone(),
                pixels: image.pixels,
                copies,
            })
        })
        .collect();
    let mut images = Vec::with_capacity(prepared.len());
    for p in prepared {
        match p {
            Ok(t) => images.push(t),
            Err(f) => failures.push(f),
        }
    }
    if images.is_empty() {
        return Err(EvalError::NoTestImages {
            path: root,
            unlabelled,
            failed: failures.len(),
        });
    }
    Ok(TestSet {
        root,
        images,
        unlabelled,
        failures,
        decode_s: decode_started.elapsed().as_secs_f64(),
    })
}

/// The test images' latents, in batches, and the seconds it took.
fn encode(
    index: &Index,
    tests: &[TestImage],
    progress: &dyn Progress,
) -> Result<(Vec<Vec<f32>>, f64), EvalError> {
    let started = Instant::now();
    progress.stage("images encoded", Some(tests.len() as u64));
    let mut latents = Vec::with_capacity(tests.len());
    for chunk in tests.chunks(ENCODE_BATCH) {
        let pixels: Vec<Pixels> = chunk.iter().map(|t| t.pixels.clone()).collect();
        latents.extend(index.model.embed(&pixels)?);
        progress.advance(chunk.len() as u64);
    }
    Ok((latents, started.elapsed().as_secs_f64()))
}

fn predicted_labels(predictions: &[Prediction]) -> Vec<String> {
    predictions
        .iter()
        .map(|p| p.label.clone().unwrap_or_else(|| NO_VOTE.into()))
        .collect()
}

/// The same kNN and vote over raw pixels (scaled to [0, 1]) of the indexed
/// labelled images, decoded again at the model's input resolution. Exact
/// (one matrix product per block of queries): there is no graph over pixels.
fn raw_baseline(
    index: &Index,
    tests: &[TestImage],
    truth: &[&str],
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<(Score, usize), EvalError> {
    let started = Instant::now();
    let store = &index.store;
    let shape = index.model.input_shape();
    let voters: Vec<(u64, String)> = store.labelled().collect::<Result<_, _>>()?;
    progress.stage("indexed images decoded", Some(voters.len() as u64));
    let decoded: Vec<Option<Pixels>> = voters
        .par_iter()
        .map(|(id, _)| {
            let path = store.record(*id).ok().flatten()?.path_buf();
            let pixels = prepare::file(&path, shape, opts.limits).ok();
            progress.advance(1);
            pixels.map(|(_, image)| image.pixels)
        })
        .collect();
    let mut base = Vec::new();
    let mut base_ids = Vec::new();
    let mut base_labels = Vec::new();
    for ((id, label), px) in voters.iter().zip(decoded) {
        if let Some(px) = px {
            base.extend(px.to_unit_f32());
            base_ids.push(*id);
            base_labels.push(label.as_str());
        }
    }
    let skipped = voters.len() - base_ids.len();
    let queries: Vec<f32> = tests.iter().flat_map(|t| t.pixels.to_unit_f32()).collect();
    let vectors_s = started.elapsed().as_secs_f64();

    let dim = shape.size * shape.size * shape.channels;
    let k = opts.classify.k.max(1);
    let extra = tests.iter().map(|t| t.copies.len()).max().unwrap_or(0);
    let search_started = Instant::now();
    let mut predicted = Vec::with_capacity(tests.len());
    if !base_ids.is_empty() {
        let found = knn::exact_knn(
            &Vectors { dim, data: &base },
            &Vectors {
                dim,
                data: &queries,
            },
            k + extra,
        )?;
        for (neighbours, t) in found.iter().zip(tests) {
            let voters = neighbours
                .iter()
                .filter(|(i, _)| !t.copies.contains(&base_ids[*i]))
                .take(k)
                .map(|&(i, d)| (base_labels[i], d.sqrt()));
            let ballot = knn::vote(voters, opts.classify.weighting);
            predicted.push(ballot.map_or(NO_VOTE.to_string(), |b| b.winner().to_string()));
        }
    } else {
        predicted.resize(tests.len(), NO_VOTE.to_string());
    }
    let search_s = search_started.elapsed().as_secs_f64();
    Ok((
        score(
            "raw pixels",
            dim,
            Method::Exact,
            truth,
            &predicted,
            vectors_s,
            search_s,
        ),
        skipped,
    ))
}

fn compare(
    truth: &[&str],
    graph: &[Prediction],
    exact: &[Prediction],
    hnsw_search_s: f64,
    exact_search_s: f64,
) -> ExactCheck {
    let n = truth.len().max(1) as f64;
    let accuracy = |p: &[Prediction]| {
        p.iter()
            .zip(truth)
            .filter(|(p, t)| p.label.as_deref() == Some(**t))
            .count() as f64
            / n
    };
    let agree = graph
        .iter()
        .zip(exact)
        .filter(|(g, e)| g.label == e.label)
        .count();
    let (mut found, mut total) = (0usize, 0usize);
    for (g, e) in graph.iter().zip(exact) {
        let ids: BTreeSet<u64> = g.voters.iter().map(|h| h.id).collect();
        found += e.voters.iter().filter(|h| ids.contains(&h.id)).count();
        total += e.voters.len();
    }
    ExactCheck {
        hnsw_accuracy: accuracy(graph),
        exact_accuracy: accuracy(exact),
        agreement: agree as f64 / n,
        voter_recall: found as f64 / total.max(1) as f64,
        hnsw_search_s,
        exact_search_s,
    }
}

/// Accuracy, per-class precision and recall, and the confusion matrix.
fn score(
    representation: &str,
    dim: usize,
    method: Method,
    truth: &[&str],
    predicted: &[String],
    vectors_s: f64,
    search_s: f64,
) -> Score {
    let labels: Vec<String> = truth
        .iter()
        .copied()
        .chain(predicted.iter().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_string)
        .collect();
    let at = |l: &str| {
        labels
            .binary_search_by(|x| x.as_str().cmp(l))
            .expect("listed")
    };
    let mut counts = vec![vec![0u64; labels.len()]; labels.len()];
    for (t, p) in truth.iter().zip(predicted) {
        counts[at(t)][at(p)] += 1;
    }
    let per_class = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let support: u64 = counts[i].iter().sum();
            let predicted: u64 = counts.iter().map(|row| row[i]).sum();
            let correct = counts[i][i];
            ClassScore {
                label: label.clone(),
                support,
                predicted,
                correct,
                precision: (predicted > 0).then(|| correct as f64 / predicted as f64),
                recall: (support > 0).then(|| correct as f64 / support as f64),
            }
        })
        .collect();
    let correct: u64 = (0..labels.len()).map(|i| counts[i][i]).sum();
    let n = truth.len().max(1) as f64;
    Score {
        representation: representation.into(),
        dim,
        method,
        accuracy: correct as f64 / n,
        correct,
        vectors_s,
        search_s,
        search_ms_per_image: 1e3 * search_s / n,
        per_class,
        confusion: Confusion { labels, counts },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_add_up() {
        let truth = ["a", "a", "b", "b", "b"];
        let predicted: Vec<String> = ["a", "b", "b", "b", "c"].map(String::from).into();
        let s = score("latent", 2, Method::Exact, &truth, &predicted, 0.0, 1.0);
        assert_eq!(s.correct, 3);
        assert!((s.accuracy - 0.6).abs() < 1e-12);
        assert_eq!(s.confusion.labels, ["a", "b", "c"]);
        assert_eq!(s.confusion.counts, [[1, 1, 0], [0, 2, 1], [0, 0, 0]]);
        let total: u64 = s.confusion.counts.iter().flatten().sum();
        assert_eq!(total, 5);
        let b = &s.per_class[1];
        assert_eq!((b.support, b.predicted, b.correct), (3, 3, 2));
        assert_eq!(s.per_class[2].recall, None);
        assert_eq!(s.per_class[2].precision, Some(0.0));
        assert_eq!(s.per_class[0].precision, Some(1.0));
        assert!((s.search_ms_per_image - 200.0).abs() < 1e-9);
    }
}
