//! Finding image files under a folder: the one walker behind ingest, eval,
//! query and train.
//!
//! Policy, the same everywhere:
//! - files are yielded sorted by path, so runs are reproducible;
//! - symbolic links are not followed (no loops, no escaping the folder);
//! - only files with an image extension ([`has_image_extension`]) count;
//! - excluded globs prune whole folders;
//! - an unreadable entry is yielded as a [`WalkError`] and the walk goes on.
//!
//! Walks stream: ingest prepares the first batch while the walk goes on, and
//! the total grows through [`Progress::grow`] as files are found, instead
//! of a second walk to count them.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::imageio::has_image_extension;
use crate::progress::Progress;

/// A file or folder that could not be read during a walk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalkError {
    pub path: PathBuf,
    pub error: String,
}

/// Walks folders for image files, leaving out excluded paths.
#[derive(Debug, Clone, Default)]
pub struct Walker {
    excludes: GlobSet,
}

impl Walker {
    /// A walker that leaves nothing out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves out files and folders matching any of these globs, matched
    /// against the path relative to the root and against the name alone.
    pub fn excluding(patterns: &[String]) -> Result<Self, globset::Error> {
        let mut set = GlobSetBuilder::new();
        for pattern in patterns {
            set.add(Glob::new(pattern)?);
        }
        Ok(Self {
            excludes: set.build()?,
        })
    }

    /// The image files under `root` (or `root` itself when it is a file),
    /// in path order; each one found grows `progress` by one.
    pub fn files<'a>(
        &'a self,
        root: &'a Path,
        progress: &'a dyn Progress,
    ) -> impl Iterator<Item = Result<PathBuf, WalkError>> + 'a {
        walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(move |e| e.depth() == 0 || !self.excluded(root, e))
            .filter_map(move |entry| match entry {
                Ok(e) if e.file_type().is_file() && has_image_extension(e.path()) => {
                    progress.grow(1);
                    Some(Ok(e.into_path()))
                }
                Ok(_) => None,
                Err(err) => Some(Err(WalkError {
                    path: err.path().unwrap_or(root).to_path_buf(),
                    error: err
                        .io_error()
                        .map_or_else(|| err.to_string(), |e| e.to_string()),
                })),
            })
    }

    /// Every image file under `root`, and the entries that could not be read.
    pub fn collect(&self, root: &Path, progress: &dyn Progress) -> (Vec<PathBuf>, Vec<WalkError>) {
        let (mut files, mut errors) = (Vec::new(), Vec::new());
        for item in self.files(root, progress) {
            match item {
                Ok(path) => files.push(path),
                Err(e) => errors.push(e),
            }
        }
        (files, errors)
    }

    fn excluded(&self, root: &Path, entry: &walkdir::DirEntry) -> bool {
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        self.excludes.is_match(rel) || self.excludes.is_match(entry.file_name())
    }
}

/// Expands folders among `inputs` into their image files; files are kept
/// as given (whatever their extension: the user named them).
pub fn expand(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let walker = Walker::new();
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            files.extend(walker.collect(input, &crate::progress::NoProgress).0);
        } else {
            files.push(input.clone());
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Counter;

    #[test]
    fn walks_sorted_excludes_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "b/2.png",
            "a/1.JPG",
            "a/skip/3.png",
            "a/notes.txt",
            "c.tmp.png",
        ] {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let walker = Walker::excluding(&["skip".into(), "*.tmp.png".into()]).unwrap();
        let counter = Counter::default();
        let (files, errors) = walker.collect(dir.path(), &counter);
        let rel: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(rel, [PathBuf::from("a/1.JPG"), PathBuf::from("b/2.png")]);
        assert!(errors.is_empty());
        assert_eq!(counter.total(), 2);
        assert!(Walker::excluding(&["[".into()]).is_err());
    }
}
