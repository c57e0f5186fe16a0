//! Embedding shards: the I-th of N disjoint shares of a collection, embedded
//! into one Parquet file, so that many machines (Spark tasks, say) can each
//! embed a share and an index can be built from the files afterwards.
//!
//! The share is decided by position in the sorted list of inputs (absolute
//! paths, compared as bytes): file `k` goes to shard `k mod N`. Every task
//! lists the same inputs, so the N shares are disjoint and cover them all
//! without any coordination. A shard's output has a name of its own
//! (`part-IIIII-of-NNNNN.parquet`) and is written to a temporary name and
//! renamed when complete: a retried task overwrites nothing that was
//! finished, and a rerun skips shards already done.

mod parquet_file;

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use serde::Serialize;

pub use parquet_file::{read_shard, ShardMeta, ShardReader, ShardRow, COLUMNS};

use crate::imageio::DecodeLimits;
use crate::labels::LabelSource;
use crate::model::{Model, ModelError};
use crate::prepare;
use crate::progress::Progress;
use crate::report::Failure;
use crate::walk::Walker;

/// Files embedded per Parquet row group (decoded in parallel, encoded in
/// one call).
pub const ROWS_PER_GROUP: usize = 256;

/// One share of N: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole collection as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The output file's name: `part-00002-of-00007.parquet`.
    pub fn file_name(self) -> String {
        format!("part-{:05}-of-{:05}.parquet", self.index, self.count)
    }

    /// Whether the `position`-th input (in sorted order) belongs here.
    pub fn holds(self, position: usize) -> bool {
        position % self.count as usize == self.index as usize
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, with `0 ≤ I < N`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{text}` is not a shard: write I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("cannot read input {path}: {source}")]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("model failed: {0}")]
    Model(#[from] ModelError),
}

/// An image to embed, and the folder its label is taken from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Input {
    pub path: PathBuf,
    /// The folder given on the command line (the image's parent for a file
    /// named directly): the label is the parent folder's name below it.
    pub root: PathBuf,
}

/// What the command line named, resolved: every image, sorted.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Sorted by absolute path (as bytes), without repeats.
    pub files: Vec<Input>,
    /// The folders given (canonical), sorted.
    pub roots: Vec<PathBuf>,
    /// Entries of those folders that could not be read.
    pub failures: Vec<Failure>,
}

/// Every image file the inputs name, sorted by absolute path: folders are
/// walked (links are not followed), files are taken as they are. Entries
/// that cannot be read are returned as failures.
pub fn list_inputs(inputs: &[PathBuf], progress: &dyn Progress) -> Result<Inputs, ShardError> {
    let walker = Walker::new();
    let (mut files, mut roots, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for given in inputs {
        let root = std::fs::canonicalize(given).map_err(|source| ShardError::Input {
            path: given.clone(),
            source,
        })?;
        if root.is_dir() {
            roots.push(root.clone());
            let (paths, errors) = walker.collect(&root, progress);
            files.extend(paths.into_iter().map(|path| Input {
                path,
                root: root.clone(),
            }));
            failures.extend(errors.into_iter().map(|e| Failure::new(&e.path, e.error)));
        } else {
            let parent = root.parent().unwrap_or(Path::new("/")).to_path_buf();
            files.push(Input {
                path: root,
                root: parent,
            });
        }
    }
    files.sort();
    files.dedup_by(|a, b| a.path == b.path);
    roots.sort();
    roots.dedup();
    Ok(Inputs {
        files,
        roots,
        failures,
    })
}

/// What embedding one shard did.
#[derive(Debug, Serialize)]
pub struct ShardReport {
    pub shard: Shard,
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub file: PathBuf,
    /// Inputs listed (all shards together).
    pub inputs: u64,
    /// Rows written to this shard's file.
    pub rows: u64,
    pub failed: u64,
    /// The file was already complete, so nothing was done.
    pub skipped: bool,
    pub seconds: f64,
    pub failures: Vec<Failure>,
}

/// Embeds this shard's share of `inputs` into `out_dir/part-…parquet`,
/// failures into `out_dir/errors/part-I.jsonl`. A complete file for the
/// same shard, model and roots is left as it is.
pub fn embed_shard(
    model: &Model,
    inputs: &Inputs,
    shard: Shard,
    out_dir: &Path,
    limits: DecodeLimits,
    progress: &dyn Progress,
) -> Result<ShardReport, ShardError> {
    let started = std::time::Instant::now();
    let file = out_dir.join(shard.file_name());
    let meta = ShardMeta::of(model, shard, &inputs.roots);
    let mut report = ShardReport {
        shard,
        file: file.clone(),
        inputs: inputs.files.len() as u64,
        rows: 0,
        failed: 0,
        skipped: false,
        seconds: 0.0,
        failures: Vec::new(),
    };
    if let Ok((done, rows)) = parquet_file::read_meta(&file) {
        if done == meta {
            report.skipped = true;
            report.rows = rows;
            return Ok(report);
        }
    }
    let write_err = |path: &Path, source| ShardError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out_dir).map_err(|e| write_err(out_dir, e))?;
    let mine: Vec<&Input> = inputs
        .files
        .iter()
        .enumerate()
        .filter(|(k, _)| shard.holds(*k))
        .map(|(_, input)| input)
        .collect();
    progress.stage("images", Some(mine.len() as u64));
    let shape = model.input_shape();
    let mut failures = Vec::new();
    let rows = crate::fsutil::write_atomically(
        &file,
        |out| {
            let mut writer = parquet_file::Writer::new(out, &meta, &file)?;
            for group in mine.chunks(ROWS_PER_GROUP) {
                let prepared: Vec<Result<(ShardRow, prepare::Prepared), Failure>> = group
                    .par_iter()
                    .map(|input| prepare_row(input, shape, limits))
                    .collect();
                let (mut rows, mut pixels) = (Vec::new(), Vec::new());
                for item in prepared {
                    match item {
                        Ok((row, image)) => {
                            rows.push(row);
                            pixels.push(image.pixels);
                        }
                        Err(failure) => failures.push(failure),
                    }
                }
                let scored = model.embed_and_score(&pixels)?;
                for (row, (embedding, error)) in rows.iter_mut().zip(scored) {
                    row.embedding = embedding;
                    row.recon_error = error;
                }
                writer.write(&rows)?;
                progress.advance(group.len() as u64);
            }
            writer.finish()
        },
        write_err,
    )?;
    let errors = out_dir.join("errors");
    std::fs::create_dir_all(&errors).map_err(|e| write_err(&errors, e))?;
    let log = errors.join(format!("part-{:05}.jsonl", shard.index));
    let lines: String = failures
        .iter()
        .map(|f| serde_json::to_string(f).expect("a failure serializes") + "\n")
        .collect();
    crate::fsutil::write_bytes_atomically(&log, lines.as_bytes())
        .map_err(|e| write_err(&log, e))?;
    report.rows = rows;
    report.failed = failures.len() as u64;
    report.failures = failures;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Rows per row group when writing rows that come ready (an export).
const ROWS_PER_EXPORT_GROUP: usize = 8192;

/// Writes `rows` as one shard file at `path` (to a temporary name, renamed
/// when complete); returns how many. Errors in `rows` stop the write and
/// leave no file.
pub fn write_shard_file<E: From<ShardError>>(
    path: &Path,
    meta: &ShardMeta,
    rows: impl Iterator<Item = Result<ShardRow, E>>,
) -> Result<usize, E> {
    let write_err = |path: &Path, source| ShardError::Write {
        path: path.to_path_buf(),
        source,
    };
    let written = crate::fsutil::write_atomically(
        path,
        |out| -> Result<u64, E> {
            let mut writer = parquet_file::Writer::new(out, meta, path)?;
            let mut group = Vec::with_capacity(ROWS_PER_EXPORT_GROUP);
            for row in rows {
                group.push(row?);
                if group.len() == ROWS_PER_EXPORT_GROUP {
                    writer.write(&group)?;
                    group.clear();
                }
            }
            writer.write(&group)?;
            Ok(writer.finish()?)
        },
        |path, source| E::from(write_err(path, source)),
    )?;
    Ok(written as usize)
}

/// Reads, hashes and decodes one input into a row (embedding to come).
fn prepare_row(
    input: &Input,
    shape: prepare::InputShape,
    limits: DecodeLimits,
) -> Result<(ShardRow, prepare::Prepared), Failure> {
    let path = &input.path;
    let fail = |reason: String| Failure::new(path, reason);
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let content = prepare::read(path).map_err(|e| fail(e.reason()))?;
    let image =
        prepare::decode(&content.bytes, path, shape, limits).map_err(|e| fail(e.reason()))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let row = ShardRow {
        path: path.clone(),
        blake3: content.hash,
        size: meta.len(),
        mtime_ns,
        width: image.width,
        height: image.height,
        label: LabelSource::Folders.label_for(&input.root, path),
        embedding: Vec::new(),
        recon_error: 0.0,
    };
    Ok((row, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_specs() {
        assert_eq!("2/7".parse::<Shard>(), Ok(Shard { index: 2, count: 7 }));
        assert!("7/7".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("3".parse::<Shard>().is_err());
        assert_eq!(
            Shard { index: 2, count: 7 }.file_name(),
            "part-00002-of-00007.parquet"
        );
        let shares: Vec<Vec<usize>> = (0..3)
            .map(|i| {
                (0..10)
                    .filter(|k| Shard { index: i, count: 3 }.holds(*k))
                    .collect()
            })
            .collect();
        assert_eq!(shares, [vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
    }
}
