//! Where image labels come from: the parent folder's name
//! (`root/<label>/img.png`), or a CSV file of `path,label` rows.
//!
//! Labels are what kNN classification votes with; images without one are
//! stored and searchable but never vote.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot read the labels file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the folder {path}: {error}")]
    Root {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// How each image under a root gets its label.
#[derive(Debug, Default)]
pub enum LabelSource {
    /// The name of the folder holding the image; files directly in the root
    /// have none.
    #[default]
    Folders,
    /// Rows of a CSV file; images it does not list have none.
    File(LabelFile),
}

impl LabelSource {
    /// Labels for images under `root`: from `file` when given (its relative
    /// paths resolved against the canonical `root`), else folder names.
    pub fn from_file_or_folders(file: Option<&Path>, root: &Path) -> Result<Self, LabelError> {
        let Some(file) = file else {
            return Ok(LabelSource::Folders);
        };
        let root = std::fs::canonicalize(root).map_err(|error| LabelError::Root {
            path: root.to_path_buf(),
            error,
        })?;
        Ok(LabelSource::File(LabelFile::read(file, &root)?))
    }

    /// The label of `path`, a file under the (canonical) `root`.
    pub fn label_for(&self, root: &Path, path: &Path) -> Option<String> {
        match self {
            LabelSource::Folders => path
                .parent()
                .filter(|p| *p != root)
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
            LabelSource::File(file) => file.label_for(path),
        }
    }
}

/// A parsed `path,label` file. Paths are relative to the root being
/// ingested (or absolute); a header row `path,label` is optional; fields may
/// be double-quoted (`""` inside quotes is a quote); an empty label means
/// "no label".
#[derive(Debug)]
pub struct LabelFile {
    by_path: HashMap<PathBuf, String>,
    /// Rows whose path met a file, counted as the walk meets them.
    matched: AtomicUsize,
}

impl LabelFile {
    /// Reads `file`, resolving its relative paths against `root`.
    pub fn read(file: &Path, root: &Path) -> Result<Self, LabelError> {
        let text = std::fs::read_to_string(file).map_err(|source| LabelError::Read {
            path: file.to_path_buf(),
            source,
        })?;
        let syntax = |line: usize, message: String| LabelError::Syntax {
            path: file.to_path_buf(),
            line,
            message,
        };
        let mut by_path = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fields = split_csv_line(line).map_err(|m| syntax(line_no, m))?;
            let [path, label] = <[String; 2]>::try_from(fields).map_err(|f| {
                syntax(
                    line_no,
                    format!("expected two fields `path,label`, found {}", f.len()),
                )
            })?;
            let (path, label) = (path.trim(), label.trim());
            if line_no == 1
                && path.eq_ignore_ascii_case("path")
                && label.eq_ignore_ascii_case("label")
            {
                continue;
            }
            if path.is_empty() {
                return Err(syntax(line_no, "empty path".into()));
            }
            let full = normalize(&root.join(path));
            if label.is_empty() {
                continue;
            }
            if let Some(previous) = by_path.insert(full, label.to_string()) {
                if previous != label {
                    return Err(syntax(
                        line_no,
                        format!("{path} is labelled both {previous:?} and {label:?}"),
                    ));
                }
            }
        }
        Ok(Self {
            by_path,
            matched: AtomicUsize::new(0),
        })
    }

    fn label_for(&self, path: &Path) -> Option<String> {
        let label = self.by_path.get(path).cloned();
        if label.is_some() {
            self.matched.fetch_add(1, Ordering::Relaxed);
        }
        label
    }

    /// Labelled rows in the file.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Rows that matched a file so far (each file is looked up once per walk).
    pub fn matched(&self) -> usize {
        self.matched.load(Ordering::Relaxed)
    }
}

/// Removes `.` and resolves `..` lexically (the walk's paths have neither).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Splits one CSV line into fields (RFC 4180 quoting, no embedded newlines).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_relative_and_absolute_rows() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("labels.csv");
        std::fs::write(
            &csv,
            "path,label\n\
             a/1.png,cat\n\
             \"./b/x, y.png\",\"dog \"\"big\"\"\"\n\
             /abs/2.png,bird\n\
             c/3.png,\n",
        )
        .unwrap();
        let root = Path::new("/data");
        let src = LabelSource::File(LabelFile::read(&csv, root).unwrap());
        let label = |p: &str| src.label_for(root, Path::new(p));
        assert_eq!(label("/data/a/1.png").as_deref(), Some("cat"));
        assert_eq!(label("/data/b/x, y.png").as_deref(), Some("dog \"big\""));
        assert_eq!(label("/abs/2.png").as_deref(), Some("bird"));
        assert_eq!(label("/data/c/3.png"), None);
        assert_eq!(label("/data/a/other.png"), None);
        let LabelSource::File(f) = &src else {
            unreachable!()
        };
        assert_eq!((f.len(), f.matched()), (3, 3));
    }

    #[test]
    fn bad_rows_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("l.csv");
        for (text, want) in [
            ("a.png,x\nb.png\n", "l.csv:2: expected two fields"),
            ("a.png,x\n\"b.png,y\n", "l.csv:2: unterminated"),
            ("a.png,x\na.png,y\n", "l.csv:2: a.png is labelled both"),
        ] {
            std::fs::write(&csv, text).unwrap();
            let err = LabelFile::read(&csv, Path::new("/r"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
        let missing = LabelFile::read(&dir.path().join("none.csv"), Path::new("/r"));
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("cannot read the labels file"));
    }

    #[test]
    fn folder_labels_skip_the_root() {
        let root = Path::new("/r");
        let src = LabelSource::Folders;
        assert_eq!(
            src.label_for(root, Path::new("/r/cat/1.png")).as_deref(),
            Some("cat")
        );
        assert_eq!(src.label_for(root, Path::new("/r/1.png")), None);
    }
}
