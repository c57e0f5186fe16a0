//! The one preparation step between finding a file and encoding it:
//! read (whole, once), hash (blake3 of the bytes), decode (with limits and
//! EXIF orientation; a JPEG at the smallest DCT scale that still covers the
//! model's input), convert and resize to the model's input.
//!
//! Ingest, eval, search, anomalies, train and `serve` all come through here,
//! so an image gives the same pixels, and the same embedding, whichever
//! command reads it. Ingest calls the halves separately: it hashes first and
//! decodes only content it has not stored.

use std::path::Path;

pub use crate::imageio::Prep;
use crate::imageio::{self, DecodeLimits, DecodeSize, ImageError, Pixels};

/// What a model takes in: `size × size` pixels of `channels` planes, and
/// how an image that is not square gets there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputShape {
    pub size: usize,
    pub channels: usize,
    pub prep: Prep,
}

/// A file's bytes and the hash that identifies its content.
pub struct FileContent {
    pub bytes: Vec<u8>,
    pub hash: [u8; 32],
}

/// An image ready for the model, with the size it had before resizing.
pub struct Prepared {
    pub pixels: Pixels,
    pub width: u32,
    pub height: u32,
}

/// The content hash stored with every record (blake3 of the file's bytes).
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Reads a whole file and hashes it; an empty file, or anything but a
/// regular file (a FIFO, a device), is an error.
pub fn read(path: &Path) -> Result<FileContent, ImageError> {
    let bytes = imageio::read_file(path)?;
    let hash = content_hash(&bytes);
    Ok(FileContent { bytes, hash })
}

/// Decodes image bytes (named `name` in errors) and makes them model input.
pub fn decode(
    bytes: &[u8],
    name: &Path,
    shape: InputShape,
    limits: DecodeLimits,
) -> Result<Prepared, ImageError> {
    let needed = DecodeSize::Cover {
        side: shape.size as u32,
        prep: shape.prep,
    };
    let decoded = imageio::decode_at(bytes, name, limits, needed)?;
    let pixels =
        imageio::to_pixels_with(&decoded.image, shape.size, shape.channels, shape.prep, name)?;
    Ok(Prepared {
        pixels,
        width: decoded.width,
        height: decoded.height,
    })
}

/// [`read`] then [`decode`]: a file straight to model input, with its hash.
pub fn file(
    path: &Path,
    shape: InputShape,
    limits: DecodeLimits,
) -> Result<(FileContent, Prepared), ImageError> {
    let content = read(path)?;
    let prepared = decode(&content.bytes, path, shape, limits)?;
    Ok((content, prepared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_read_hashed_and_resized_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        image::RgbImage::from_fn(40, 20, |x, _| image::Rgb([x as u8, 0, 0]))
            .save(&path)
            .unwrap();
        let shape = InputShape {
            size: 8,
            channels: 1,
            prep: Prep::Squash,
        };
        let (content, prepared) = file(&path, shape, DecodeLimits::default()).unwrap();
        assert_eq!(content.hash, content_hash(&std::fs::read(&path).unwrap()));
        assert_eq!((prepared.width, prepared.height), (40, 20));
        assert_eq!(prepared.pixels.data.len(), 64);

        std::fs::write(dir.path().join("e.png"), b"").unwrap();
        let err = read(&dir.path().join("e.png")).err().unwrap();
        assert_eq!(err.reason(), "empty file");
        let err = read(&dir.path().join("missing.png")).err().unwrap();
        assert!(err.reason().starts_with("cannot read: "), "{err}");
        assert!(err.to_string().contains("missing.png"), "{err}");
    }
}
