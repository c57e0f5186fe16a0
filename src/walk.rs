//! Finding image files under a folder: the one walker behind ingest, eval,
//! query and train.
//!
//! Policy, the same everywhere:
//! - files are yielded sorted by path, so runs are reproducible;
//! - symbolic links are not followed (no loops, no escaping the folder),
//!   the root included, unless [`Walker::following_links`] asks; then a
//!   loop is reported as an error;
//! - only regular files with an image extension ([`has_image_extension`])
//!   count; symbolic links left alone and special files (FIFOs, sockets,
//!   devices) are counted in [`Skipped`];
//! - excluded globs prune whole folders;
//! - an unreadable entry is yielded as a [`WalkError`] and the walk goes on.
//!
//! Walks stream: ingest prepares the first batch while the walk goes on, and
//! the total grows through [`Progress::grow`] as files are found, instead
//! of a second walk to count them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::imageio::has_image_extension;
use crate::progress::Progress;

/// A file or folder that could not be read during a walk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalkError {
    pub path: PathBuf,
    pub error: String,
}

/// What a walk passed over by policy, rather than for an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Symbolic links, not followed.
    pub symlinks: u64,
    /// FIFOs, sockets and devices: never read (a FIFO would block).
    pub special_files: u64,
    /// Folders that resolved outside the root when the walk reached them
    /// (swapped for a link meanwhile): never entered.
    pub outside: u64,
}

impl Skipped {
    pub fn total(&self) -> u64 {
        self.symlinks + self.special_files + self.outside
    }
}

/// Walks folders for image files, leaving out excluded paths.
#[derive(Debug, Default)]
pub struct Walker {
    excludes: GlobSet,
    follow_links: bool,
    symlinks: AtomicU64,
    special_files: AtomicU64,
    outside: AtomicU64,
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
            ..Self::default()
        })
    }

    /// Follows symbolic links (the root's too), reporting loops as errors.
    pub fn following_links(mut self, follow: bool) -> Self {
        self.follow_links = follow;
        self
    }

    /// What the walks so far passed over by policy.
    pub fn skipped(&self) -> Skipped {
        Skipped {
            symlinks: self.symlinks.load(Ordering::Relaxed),
            special_files: self.special_files.load(Ordering::Relaxed),
            outside: self.outside.load(Ordering::Relaxed),
        }
    }

    /// The image files under `root` (or `root` itself when it is a file),
    /// in path order; each one found grows `progress` by one.
    pub fn files<'a>(
        &'a self,
        root: &'a Path,
        progress: &'a dyn Progress,
    ) -> impl Iterator<Item = Result<PathBuf, WalkError>> + 'a {
        let canonical = std::fs::canonicalize(root).ok();
        walkdir::WalkDir::new(root)
            .follow_links(self.follow_links)
            .follow_root_links(self.follow_links)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(move |e| {
                e.depth() == 0 || !(self.excluded(root, e) || self.escapes(canonical.as_deref(), e))
            })
            .filter_map(move |entry| match entry {
                Ok(e) if e.file_type().is_file() => {
                    if !has_image_extension(e.path()) {
                        return None;
                    }
                    progress.grow(1);
                    Some(Ok(e.into_path()))
                }
                Ok(e) if e.file_type().is_dir() => None,
                Ok(e) => {
                    let counter = if e.path_is_symlink() {
                        &self.symlinks
                    } else {
                        &self.special_files
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    None
                }
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

    /// Whether a folder about to be entered resolves outside `root`. Without
    /// link following that takes a folder swapped for a link mid-walk; the
    /// check narrows that race to the moment between it and the open.
    fn escapes(&self, root: Option<&Path>, entry: &walkdir::DirEntry) -> bool {
        let Some(root) = root.filter(|_| !self.follow_links && entry.file_type().is_dir()) else {
            return false;
        };
        let outside =
            std::fs::canonicalize(entry.path()).map_or(true, |dir| !dir.starts_with(root));
        if outside {
            self.outside.fetch_add(1, Ordering::Relaxed);
        }
        outside
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
