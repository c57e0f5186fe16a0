//! Walking a folder for image files.

use std::path::{Path, PathBuf};

use crate::imageio::has_image_extension;

/// A file or folder that could not be read during a walk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalkError {
    pub path: PathBuf,
    pub error: String,
}

/// Every file under `root` with an image extension, sorted by path so runs
/// are reproducible. Symlinks are not followed (no loops); unreadable entries
/// are returned beside the files instead of stopping the walk.
pub fn image_files(root: &Path) -> (Vec<PathBuf>, Vec<WalkError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        match entry {
            Ok(e) if e.file_type().is_file() && has_image_extension(e.path()) => {
                files.push(e.into_path())
            }
            Ok(_) => {}
            Err(err) => errors.push(WalkError {
                path: err.path().unwrap_or(root).to_path_buf(),
                error: err
                    .io_error()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| err.to_string()),
            }),
        }
    }
    (files, errors)
}
