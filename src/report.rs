//! What commands report about the inputs they skipped.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// A file (or folder) that could not be used, and why. Reports list every
/// one, so a run that skips inputs says what and where.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    pub reason: String,
}

impl Failure {
    pub fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
