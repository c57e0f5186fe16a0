//! Readers for the standard datasets in their original formats, and export
//! to labelled image folders (`DIR/<class>/<index>.png`).
//!
//! - MNIST and Fashion-MNIST: IDX files (`train-images-idx3-ubyte`, …),
//!   gzipped or not.
//! - CIFAR-10: binary record files (`*.bin` or `*.bin.gz`), each record one
//!   label byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue). A
//!   file whose name contains `test` is the test split; all others are
//!   training files, read in name order. Partial files (fewer records than a
//!   full batch) are fine; a trailing partial record is not.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::imageio;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    Cifar10,
}

impl DatasetName {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
        }
    }

    /// Class names as folder names (the datasets' own names, lower-cased,
    /// with `/` and spaces made safe).
    pub fn default_classes(self) -> Vec<String> {
        let names: &[&str] = match self {
            DatasetName::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetName::FashionMnist => &[
                "t-shirt_top",
                "trouser",
                "pullover",
                "dress",
                "coat",
                "sandal",
                "shirt",
                "sneaker",
                "bag",
                "ankle_boot",
            ],
            DatasetName::Cifar10 => &[
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt gzip stream: {source}")]
    Gzip {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no {what} in {dir} (looked for {looked_for})")]
    Missing {
        what: String,
        dir: PathBuf,
        looked_for: String,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: truncated: {message}")]
    Truncated { path: PathBuf, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// A split of a dataset in memory: planar images back to back, and labels.
pub struct Dataset {
    pub name: DatasetName,
    pub split: Split,
    pub size: usize,
    pub channels: usize,
    pub classes: Vec<String>,
    pub labels: Vec<u8>,
    pixels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.size * self.size * self.channels
    }

    /// Planar (CHW) bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    pub fn pixels(&self, i: usize) -> imageio::Pixels {
        imageio::Pixels {
            size: self.size,
            channels: self.channels,
            data: self.image(i).to_vec(),
        }
    }

    pub fn class_name(&self, i: usize) -> &str {
        &self.classes[self.labels[i] as usize]
    }
}

/// Reads one split of a dataset from `src`, keeping at most `limit` images.
pub fn load(
    name: DatasetName,
    src: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset, DatasetError> {
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => load_idx(name, src, split, limit),
        DatasetName::Cifar10 => load_cifar(src, split, limit),
    }
}

/// Reads a file, gunzipping it if it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let raw = std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| DatasetError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn find_file(dir: &Path, stems: &[String], what: &str) -> Result<PathBuf, DatasetError> {
    let candidates: Vec<String> = stems
        .iter()
        .flat_map(|s| [s.clone(), format!("{s}.gz")])
        .collect();
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| DatasetError::Missing {
            what: what.to_string(),
            dir: dir.to_path_buf(),
            looked_for: candidates.join(", "),
        })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn load_idx(
    name: DatasetName,
    src: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset, DatasetError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let stems = |kind: &str, idx: &str| {
        vec![
            format!("{prefix}-{kind}-{idx}-ubyte"),
            format!("{prefix}-{kind}.{idx}-ubyte"),
        ]
    };
    let images_path = find_file(src, &stems("images", "idx3"), "IDX image file")?;
    let labels_path = find_file(src, &stems("labels", "idx1"), "IDX label file")?;
    let images = read_maybe_gz(&images_path)?;
    let labels = read_maybe_gz(&labels_path)?;

    let corrupt = |path: &Path, message: String| DatasetError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    if images.len() < 16 || be_u32(&images, 0) != 0x0803 {
        return Err(corrupt(
            &images_path,
            "not an IDX image file (magic 2051 expected)".into(),
        ));
    }
    if labels.len() < 8 || be_u32(&labels, 0) != 0x0801 {
        return Err(corrupt(
            &labels_path,
            "not an IDX label file (magic 2049 expected)".into(),
        ));
    }
    let (n, rows, cols) = (
        be_u32(&images, 4) as usize,
        be_u32(&images, 8) as usize,
        be_u32(&images, 12) as usize,
    );
    if rows != cols || rows == 0 {
        return Err(corrupt(
            &images_path,
            format!("images are {rows}x{cols}, expected square"),
        ));
    }
    let n_labels = be_u32(&labels, 4) as usize;
    if n_labels != n {
        return Err(corrupt(
            &labels_path,
            format!("{n_labels} labels for {n} images"),
        ));
    }
    let want = 16 + n * rows * cols;
    if images.len() < want {
        return Err(DatasetError::Truncated {
            path: images_path,
            message: format!(
                "header says {n} images of {rows}x{cols} ({want} bytes), file has {} bytes",
                images.len()
            ),
        });
    }
    if labels.len() < 8 + n {
        return Err(DatasetError::Truncated {
            path: labels_path,
            message: format!("header says {n} labels, file has {}", labels.len() - 8),
        });
    }
    let keep = limit.map_or(n, |l| l.min(n));
    let label_bytes = labels[8..8 + keep].to_vec();
    if let Some(bad) = label_bytes.iter().find(|&&l| l >= 10) {
        return Err(corrupt(
            &labels_path,
            format!("label {bad} out of range 0-9"),
        ));
    }
    Ok(Dataset {
        name,
        split,
        size: rows,
        channels: 1,
        classes: name.default_classes(),
        labels: label_bytes,
        pixels: images[16..16 + keep * rows * cols].to_vec(),
    })
}

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

fn load_cifar(src: &Path, split: Split, limit: Option<usize>) -> Result<Dataset, DatasetError> {
    let entries = std::fs::read_dir(src).map_err(|source| DatasetError::Io {
        path: src.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_bin = name.ends_with(".bin") || name.ends_with(".bin.gz");
            is_bin && name.contains("test") == (split == Split::Test)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DatasetError::Missing {
            what: format!(
                "CIFAR-10 {} record file",
                if split == Split::Test {
                    "test"
                } else {
                    "training"
                }
            ),
            dir: src.to_path_buf(),
            looked_for: "*.bin or *.bin.gz; names with `test` hold the test split".into(),
        });
    }
    let limit = limit.unwrap_or(usize::MAX);
    let (mut labels, mut pixels) = (Vec::new(), Vec::new());
    for path in &files {
        if labels.len() >= limit {
            break;
        }
        let bytes = read_maybe_gz(path)?;
        if bytes.len() % CIFAR_RECORD != 0 {
            return Err(DatasetError::Truncated {
                path: path.clone(),
                message: format!(
                    "{} bytes is not a whole number of {CIFAR_RECORD}-byte records ({} whole, {} bytes left over)",
                    bytes.len(),
                    bytes.len() / CIFAR_RECORD,
                    bytes.len() % CIFAR_RECORD
                ),
            });
        }
        for record in bytes.chunks_exact(CIFAR_RECORD) {
            if labels.len() >= limit {
                break;
            }
            if record[0] >= 10 {
                return Err(DatasetError::Corrupt {
                    path: path.clone(),
                    message: format!(
                        "record {} has label {} (expected 0-9)",
                        labels.len(),
                        record[0]
                    ),
                });
            }
            labels.push(record[0]);
            pixels.extend_from_slice(&record[1..]);
        }
    }
    Ok(Dataset {
        name: DatasetName::Cifar10,
        split,
        size: 32,
        channels: 3,
        classes: cifar_classes(src),
        labels,
        pixels,
    })
}

/// Class names from `batches.meta.txt` when it holds ten names, else the
/// documented defaults.
fn cifar_classes(src: &Path) -> Vec<String> {
    let from_file = std::fs::read_to_string(src.join("batches.meta.txt"))
        .ok()
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| l.replace(['/', ' '], "_"))
                .collect::<Vec<_>>()
        });
    match from_file {
        Some(names) if names.len() == 10 => names,
        _ => DatasetName::Cifar10.default_classes(),
    }
}

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub dataset: DatasetName,
    pub split: Split,
    pub out: PathBuf,
    pub images: usize,
    pub per_class: BTreeMap<String, usize>,
}

/// Writes every image as `out/<class>/<index>.png` (index within the split,
/// zero-padded), in parallel.
pub fn export(ds: &Dataset, out: &Path) -> Result<ExportReport, DatasetError> {
    let write_err = |path: &Path, message: String| DatasetError::Write {
        path: path.to_path_buf(),
        message,
    };
    for class in &ds.classes {
        let dir = out.join(class);
        std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e.to_string()))?;
    }
    let width = ds.len().max(1).to_string().len().max(5);
    (0..ds.len()).into_par_iter().try_for_each(|i| {
        let path = out.join(ds.class_name(i)).join(format!("{i:0width$}.png"));
        imageio::planar_to_image(ds.image(i), ds.size, ds.channels)
            .save_with_format(&path, image::ImageFormat::Png)
            .map_err(|e| write_err(&path, e.to_string()))
    })?;
    let mut per_class = BTreeMap::new();
    for i in 0..ds.len() {
        *per_class.entry(ds.class_name(i).to_string()).or_insert(0) += 1;
    }
    Ok(ExportReport {
        dataset: ds.name,
        split: ds.split,
        out: out.to_path_buf(),
        images: ds.len(),
        per_class,
    })
}

/// Environment variable naming the folder of shared datasets.
pub const DATA_ENV: &str = "IMGSEARCH_DATA";

/// Where the shared datasets live: `$IMGSEARCH_DATA`, else `../shared/data`
/// or `shared/data` beside `project` (tests and benches pass their crate's
/// folder), or `None` when none of these exists.
pub fn data_root(project: &Path) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var(DATA_ENV) {
        return Some(PathBuf::from(dir));
    }
    [project.join("../shared/data"), project.join("shared/data")]
        .into_iter()
        .find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(n: u32, side: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [0x0803, n, side, side] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [0x0801, labels.len() as u32] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn idx_round_trip_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..3 * 4).map(|i| i as u8 * 10).collect();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            idx_images(3, 2, &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx_labels(&[1, 0, 1]),
        )
        .unwrap();
        let ds = load(DatasetName::Mnist, dir.path(), Split::Train, None).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.image(1), &pixels[4..8]);
        assert_eq!(ds.class_name(0), "1");

        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            idx_images(3, 2, &pixels[..10]),
        )
        .unwrap();
        let err = load(DatasetName::Mnist, dir.path(), Split::Train, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn cifar_partial_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![3u8; CIFAR_RECORD * 2];
        std::fs::write(dir.path().join("data_batch_1.bin"), &bytes).unwrap();
        let ds = load(DatasetName::Cifar10, dir.path(), Split::Train, None).unwrap();
        assert_eq!((ds.len(), ds.class_name(1)), (2, "cat"));
        bytes.truncate(CIFAR_RECORD + 100);
        std::fs::write(dir.path().join("data_batch_1.bin"), &bytes).unwrap();
        let err = load(DatasetName::Cifar10, dir.path(), Split::Train, None)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("1 whole, 100 bytes left over"),
            "{err}"
        );
        let err = load(DatasetName::Cifar10, dir.path(), Split::Test, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("test record file"), "{err}");
    }
}
