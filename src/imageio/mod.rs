//! Reading images: open only regular files, decode with limits and EXIF
//! orientation, and refuse truncated or corrupt data.
//!
//! JPEG goes through libjpeg-turbo (`jpeg.rs`), which decodes at 1/2, 1/4
//! or 1/8 size in the DCT domain when the caller needs no more, and reports
//! the warnings (premature end, corrupt entropy data) that `image` hides.
//! Other formats go through `image`. `pixels.rs` turns a decoded image into
//! model input.

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};

mod jpeg;
mod pixels;

pub use pixels::*;

/// File extensions treated as images when walking a folder.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"];

/// Default cap on decoded pixels: refuses decompression bombs before they allocate.
pub const DEFAULT_MAX_MEGAPIXELS: f64 = 100.0;

/// Why an image could not be read; every variant names the file, and
/// [`ImageError::reason`] says why without it (for reports that list the
/// path in a column of their own).
#[derive(Debug)]
pub enum ImageError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Empty {
        path: PathBuf,
    },
    /// A FIFO, socket, device or folder where an image file was expected.
    NotAFile {
        path: PathBuf,
        kind: &'static str,
    },
    Decode {
        path: PathBuf,
        source: image::ImageError,
    },
    /// The data ends before the image does (a half-copied file, a failed
    /// download).
    Truncated {
        path: PathBuf,
        detail: String,
    },
    /// The data is damaged: corrupt entropy-coded data, a missing marker, a
    /// bad checksum.
    Corrupt {
        path: PathBuf,
        detail: String,
    },
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: f64,
    },
    Resize {
        path: PathBuf,
        message: String,
    },
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path().display(), self.reason())
    }
}

// The message already carries the underlying error's text, so it is not
// also offered as `source()`: error chains would print it twice.
impl std::error::Error for ImageError {}

impl ImageError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::Empty { path }
            | Self::NotAFile { path, .. }
            | Self::Decode { path, .. }
            | Self::Truncated { path, .. }
            | Self::Corrupt { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Resize { path, .. } => path,
        }
    }

    /// What went wrong, without the path.
    pub fn reason(&self) -> String {
        match self {
            Self::Io { source, .. } => format!("cannot read: {source}"),
            Self::Empty { .. } => "empty file".into(),
            Self::NotAFile { kind, .. } => format!("not a regular file ({kind})"),
            Self::Decode { source, .. } => format!("not a decodable image: {source}"),
            Self::Truncated { detail, .. } => format!("truncated: {detail}"),
            Self::Corrupt { detail, .. } => format!("corrupt: {detail}"),
            Self::TooLarge {
                width,
                height,
                limit,
                ..
            } => format!(
                "image is {width}x{height} ({:.1} MP), above the limit of {limit} MP",
                (*width as f64) * (*height as f64) / 1e6
            ),
            Self::Resize { message, .. } => format!("cannot resize: {message}"),
        }
    }
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_megapixels: f64,
    /// Keep what a truncated file holds (the missing part mid-grey) instead
    /// of refusing it. Off by default: a half-copied photo would be indexed
    /// with a wrong embedding and nothing would say so.
    pub allow_truncated: bool,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_megapixels: DEFAULT_MAX_MEGAPIXELS,
            allow_truncated: false,
        }
    }
}

impl DecodeLimits {
    fn check_size(&self, width: u32, height: u32, path: &Path) -> Result<(), ImageError> {
        if (width as f64) * (height as f64) > self.max_megapixels * 1e6 {
            return Err(ImageError::TooLarge {
                path: path.to_path_buf(),
                width,
                height,
                limit: self.max_megapixels,
            });
        }
        Ok(())
    }
}

/// How much of an image the caller needs, so that a JPEG is decoded no
/// larger than that (DCT scaling: 1/2, 1/4 or 1/8 of its size, at a
/// fraction of the cost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeSize {
    /// Every pixel (restore, masks, anything shown at full size).
    Full,
    /// Enough to make a `side × side` square with `prep`: the model's input,
    /// or (with [`Prep::Letterbox`]) a thumbnail that fits in that square.
    Cover { side: u32, prep: Prep },
}

impl DecodeSize {
    /// Whether an image of `width × height` still has at least one pixel
    /// for each output pixel, in both directions.
    pub fn covered_by(self, width: u32, height: u32) -> bool {
        match self {
            DecodeSize::Full => false,
            DecodeSize::Cover { side, prep } => match prep {
                Prep::Squash | Prep::Crop => width.min(height) >= side,
                Prep::Letterbox => width.max(height) >= side,
            },
        }
    }
}

/// A decoded image and the size of the original (after orientation), which
/// a reduced-size decode no longer shows.
pub struct Decoded {
    pub image: DynamicImage,
    pub width: u32,
    pub height: u32,
}

/// Whether `path` has an extension imgsearch treats as an image.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Opens a file for reading only if it is a regular file. The open does not
/// block (a FIFO with no writer would hang a plain `open`), and `fstat` on
/// the opened file (not the path, which may change meanwhile) decides.
pub fn open_regular(path: &Path) -> Result<File, ImageError> {
    let io_err = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io_err)?;
    let kind = file.metadata().map_err(io_err)?.file_type();
    if !kind.is_file() {
        return Err(ImageError::NotAFile {
            path: path.to_path_buf(),
            kind: file_kind(kind),
        });
    }
    Ok(file)
}

/// A file's whole content, read only if it is a regular, non-empty file.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// What kind of file system entry this is, in words.
pub fn file_kind(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        } else if kind.is_socket() {
            return "a socket";
        } else if kind.is_block_device() || kind.is_char_device() {
            return "a device";
        }
    }
    if kind.is_dir() {
        "a folder"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// Decodes an image file, checking its size before any pixel is allocated and
/// applying its EXIF orientation.
pub fn decode_file(path: &Path, limits: DecodeLimits) -> Result<DynamicImage, ImageError> {
    let bytes = read_file(path)?;
    decode_bytes(&bytes, path, limits)
}

/// Decodes an image held in memory at full size; `name` is used in errors.
pub fn decode_bytes(
    bytes: &[u8],
    name: &Path,
    limits: DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    decode_at(bytes, name, limits, DecodeSize::Full).map(|d| d.image)
}

/// Decodes an image held in memory, no larger than `size` needs (JPEG
/// only; other formats decode whole); `name` is used in errors.
pub fn decode_at(
    bytes: &[u8],
    name: &Path,
    limits: DecodeLimits,
    size: DecodeSize,
) -> Result<Decoded, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty {
            path: name.to_path_buf(),
        });
    }
    if jpeg::is_jpeg(bytes) {
        return jpeg::decode(bytes, name, limits, size);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            path: name.to_path_buf(),
            source,
        })?;
    let image = decode_reader(reader, bytes, name, limits)?;
    let (width, height) = (image.width(), image.height());
    Ok(Decoded {
        image,
        width,
        height,
    })
}

fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    bytes: &[u8],
    path: &Path,
    limits: DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    let failed = |source| decode_failure(bytes, path, source);
    let mut decoder = reader.into_decoder().map_err(failed)?;
    let (width, height) = decoder.dimensions();
    limits.check_size(width, height, path)?;
    let orientation = decoder.orientation().map_err(failed)?;
    let mut image = if limits.allow_truncated {
        read_partial(decoder, bytes, path)?
    } else {
        DynamicImage::from_decoder(decoder).map_err(failed)?
    };
    image.apply_orientation(orientation);
    Ok(image)
}

/// Reads the pixels into a mid-grey buffer and keeps what a truncated file
/// delivered before it ended (codecs that decode row by row, as PNG, GIF,
/// BMP and TIFF do, fill the rows they reached).
fn read_partial(
    decoder: impl ImageDecoder,
    bytes: &[u8],
    path: &Path,
) -> Result<DynamicImage, ImageError> {
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let mut buf = vec![pixels::LETTERBOX_FILL; decoder.total_bytes() as usize];
    if let Err(source) = decoder.read_image(&mut buf) {
        match decode_failure(bytes, path, source) {
            ImageError::Truncated { .. } => {}
            other => return Err(other),
        }
    }
    pixels::image_from_raw(width, height, color, buf).ok_or_else(|| ImageError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("unsupported pixel layout {color:?}"),
    })
}

/// Names a codec's failure: the data ended early (`Truncated`), or it is
/// damaged (`Corrupt`), or the file is not an image we can read (`Decode`).
/// The file's own structure decides first ([`cut_short`]); codecs report a
/// short file in many ways (an I/O error of kind `UnexpectedEof`, "corrupt
/// bitstream"), and the rest are recognised by their words.
fn decode_failure(bytes: &[u8], path: &Path, source: image::ImageError) -> ImageError {
    use image::ImageError as E;
    const EARLY_END: &[&str] = &[
        "eof",
        "end of file",
        "unexpected end",
        "premature end",
        "truncated",
    ];
    let path = path.to_path_buf();
    let text = source.to_string();
    let lower = text.to_ascii_lowercase();
    let ended_early = cut_short(bytes)
        || matches!(&source, E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        || EARLY_END.iter().any(|w| lower.contains(w));
    match source {
        _ if ended_early => ImageError::Truncated { path, detail: text },
        E::Decoding(_) => ImageError::Corrupt { path, detail: text },
        source => ImageError::Decode { path, source },
    }
}

/// Whether a file's own structure says it was cut short: the length its
/// header declares (WebP's RIFF size, BMP's file size) runs past its end,
/// or the end marker (PNG's `IEND` chunk, GIF's trailer) is missing.
fn cut_short(bytes: &[u8]) -> bool {
    let declared = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        declared(4).is_some_and(|n| n.saturating_add(8) > bytes.len())
    } else if bytes.starts_with(b"BM") {
        declared(2).is_some_and(|n| n > bytes.len())
    } else if bytes.starts_with(b"\x89PNG") {
        !bytes.windows(4).rev().any(|w| w == b"IEND")
    } else if bytes.starts_with(b"GIF8") {
        bytes.last() != Some(&0x3B)
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_huge_and_garbage() {
        let limits = DecodeLimits {
            max_megapixels: 0.001,
            ..Default::default()
        };
        let mut png = Vec::new();
        image::GrayImage::new(100, 100)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let err = decode_bytes(&png, Path::new("big.png"), limits).unwrap_err();
        assert!(err.to_string().contains("above the limit"), "{err}");
        let err =
            decode_bytes(b"not an image", Path::new("x.png"), DecodeLimits::default()).unwrap_err();
        assert!(err.to_string().contains("x.png"), "{err}");
    }

    #[test]
    fn a_short_file_is_told_by_its_structure() {
        let mut bmp = b"BM".to_vec();
        bmp.extend(1000u32.to_le_bytes());
        assert!(cut_short(&bmp));
        bmp.resize(1000, 0);
        assert!(!cut_short(&bmp));
        assert!(cut_short(b"GIF89a\x01\x00"));
        assert!(!cut_short(b"GIF89a\x01\x00;"));
        let mut webp = b"RIFF".to_vec();
        webp.extend(100u32.to_le_bytes());
        webp.extend(b"WEBP");
        assert!(cut_short(&webp));
        webp.resize(108, 0);
        assert!(!cut_short(&webp));
        assert!(cut_short(b"\x89PNG\r\n\x1a\n"));
        assert!(!cut_short(b"not an image"));
    }
}
