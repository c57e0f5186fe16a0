//! Small file-system helpers every writer shares.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes a file so that readers, and a crash at any moment, see either the
/// old file or the complete new one, never a torn one: the content goes to
/// `PATH.tmp`, is flushed and fsynced, renamed over `PATH`, and the folder is
/// fsynced so the rename itself survives a power cut. On failure the
/// temporary file is removed and `PATH` is untouched.
///
/// `write` gets a buffered writer; the error it returns and any I/O error
/// (through `io_err`, with the path it concerns) come back as `E`.
pub fn write_atomically<T, E>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
    io_err: impl Fn(&Path, std::io::Error) -> E,
) -> Result<T, E> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let mut out = BufWriter::new(file);
        let value = write(&mut out)?;
        let file = out.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
        sync_parent(path).map_err(|e| io_err(path, e))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// blake3 of a whole file, read in blocks (the checksums of graph dumps
/// and of imported shard files).
pub fn file_blake3(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(hasher.finalize())
}

/// [`write_atomically`] for bytes already in memory.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, |out| out.write_all(bytes), |_, e| e)
}

/// Encodes `image` as `format` into `path`, through [`write_atomically`].
pub fn save_image(
    image: &image::DynamicImage,
    path: &Path,
    format: image::ImageFormat,
) -> image::ImageResult<()> {
    write_atomically(
        path,
        |out| image.write_to(out, format),
        |_, e| image::ImageError::IoError(e),
    )
}

/// Where [`write_atomically`] puts a file before it is complete.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Fsyncs the folder holding `path`, making a rename in it durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Bytes the files under `dir` hold (what cannot be read counts nothing).
pub fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Serializes a path as text, replacing bytes that are not UTF-8, so JSON
/// output never fails on an odd file name (serde refuses such a `PathBuf`).
pub fn serialize_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        write_bytes_atomically(&path, b"one").unwrap();
        let failed: Result<(), std::io::Error> = write_atomically(
            &path,
            |out| {
                out.write_all(b"partial")?;
                Err(std::io::Error::other("disk full"))
            },
            |_, e| e,
        );
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert!(!temp_path(&path).exists());
        write_bytes_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
