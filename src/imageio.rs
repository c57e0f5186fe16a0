//! Reading images: decode with limits and EXIF orientation, convert to the
//! model's channels, resize to the model's input, lay out as planar bytes.
//!
//! Everything a model sees passes through [`Pixels`]: `channels` planes of
//! `size × size` bytes (CHW order), the same layout the datasets use, so an
//! exported MNIST PNG and the IDX record it came from give the same input.

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageReader};
use serde::{Deserialize, Serialize};

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
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_megapixels: DEFAULT_MAX_MEGAPIXELS,
        }
    }
}

/// How an image that is not square becomes the model's square input.
/// Recorded in the model file, so training and every query prepare images
/// the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prep {
    /// Stretch to a square (the aspect ratio is lost). What models made
    /// before preparation was recorded assume.
    #[default]
    Squash,
    /// The largest centred square, resized: shapes keep their proportions,
    /// the edges of a wide or tall image are cut off.
    Crop,
    /// The whole image, resized to fit and centred on grey bars.
    Letterbox,
}

impl Prep {
    pub fn as_str(self) -> &'static str {
        match self {
            Prep::Squash => "squash",
            Prep::Crop => "crop",
            Prep::Letterbox => "letterbox",
        }
    }
}

/// A model-ready image: `channels` planes of `size × size` bytes, CHW order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    pub size: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    /// Pixels scaled to `[0, 1]`, the model's normalization.
    pub fn to_unit_f32(&self) -> impl Iterator<Item = f32> + '_ {
        self.data.iter().map(|&b| b as f32 / 255.0)
    }
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

/// Decodes an image held in memory; `name` is used in error messages.
pub fn decode_bytes(
    bytes: &[u8],
    name: &Path,
    limits: DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty {
            path: name.to_path_buf(),
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            path: name.to_path_buf(),
            source,
        })?;
    decode_reader(reader, name, limits)
}

fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    path: &Path,
    limits: DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    let decode_err = |source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    if (width as f64) * (height as f64) > limits.max_megapixels * 1e6 {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: limits.max_megapixels,
        });
    }
    let orientation = decoder.orientation().map_err(decode_err)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Converts to 1 (luma) or 3 (RGB) channels and resizes to `size × size`
/// (the whole image, aspect ratio not kept), returning planar bytes.
pub fn to_pixels(
    image: &DynamicImage,
    size: usize,
    channels: usize,
    path: &Path,
) -> Result<Pixels, ImageError> {
    to_pixels_with(image, size, channels, Prep::Squash, path)
}

/// [`to_pixels`] with a choice of how a non-square image meets the square
/// input ([`Prep`]).
pub fn to_pixels_with(
    image: &DynamicImage,
    size: usize,
    channels: usize,
    prep: Prep,
    path: &Path,
) -> Result<Pixels, ImageError> {
    let (pixel_type, interleaved, (w, h)) = match channels {
        1 => {
            let luma = image.to_luma8();
            let dims = luma.dimensions();
            (fr::PixelType::U8, luma.into_raw(), dims)
        }
        3 => {
            let rgb = image.to_rgb8();
            let dims = rgb.dimensions();
            (fr::PixelType::U8x3, rgb.into_raw(), dims)
        }
        n => {
            return Err(ImageError::Resize {
                path: path.to_path_buf(),
                message: format!("unsupported channel count {n}"),
            })
        }
    };
    let resized = if (w as usize, h as usize) == (size, size) {
        interleaved
    } else {
        resize(interleaved, w, h, size, pixel_type, prep).map_err(|message| ImageError::Resize {
            path: path.to_path_buf(),
            message,
        })?
    };
    Ok(Pixels {
        size,
        channels,
        data: interleaved_to_planar(&resized, channels),
    })
}

fn resize(
    interleaved: Vec<u8>,
    w: u32,
    h: u32,
    size: usize,
    pixel_type: fr::PixelType,
    prep: Prep,
) -> Result<Vec<u8>, String> {
    let src =
        fr::images::Image::from_vec_u8(w, h, interleaved, pixel_type).map_err(|e| e.to_string())?;
    // A convolution filter widens with the scale factor, so large downscales
    // average whole areas instead of sampling (no aliasing).
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    let side = size as u32;
    let (options, out_w, out_h) = match prep {
        Prep::Squash => (options, side, side),
        Prep::Crop => {
            let crop = w.min(h) as f64;
            let (left, top) = ((w as f64 - crop) / 2.0, (h as f64 - crop) / 2.0);
            (options.crop(left, top, crop, crop), side, side)
        }
        Prep::Letterbox => {
            let scale = side as f64 / w.max(h) as f64;
            let fit = |d: u32| ((d as f64 * scale).round() as u32).clamp(1, side);
            (options, fit(w), fit(h))
        }
    };
    let mut dst = fr::images::Image::new(out_w, out_h, pixel_type);
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| e.to_string())?;
    if (out_w, out_h) == (side, side) {
        return Ok(dst.into_vec());
    }
    // Letterbox: the whole image centred on mid-grey bars, which sit at the
    // middle of the model's input range rather than at an extreme.
    let bytes_per_pixel = pixel_type.size();
    let mut canvas = vec![LETTERBOX_FILL; size * size * bytes_per_pixel];
    let (left, top) = ((side - out_w) / 2, (side - out_h) / 2);
    let row = out_w as usize * bytes_per_pixel;
    for (y, line) in dst.buffer().chunks_exact(row).enumerate() {
        let start = ((top as usize + y) * size + left as usize) * bytes_per_pixel;
        canvas[start..start + row].copy_from_slice(line);
    }
    Ok(canvas)
}

/// The grey of letterbox bars.
pub const LETTERBOX_FILL: u8 = 128;

/// Interleaved pixels (`RGBRGB…`) to planes (`RR…GG…BB…`, CHW).
pub fn interleaved_to_planar<T: Copy + Default>(interleaved: &[T], channels: usize) -> Vec<T> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    let plane = interleaved.len() / channels;
    let mut planar = vec![T::default(); interleaved.len()];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            planar[c * plane + i] = v;
        }
    }
    planar
}

/// Planes (CHW) back to interleaved pixels.
pub fn planar_to_interleaved<T: Copy>(planar: &[T], channels: usize) -> Vec<T> {
    let plane = planar.len() / channels.max(1);
    (0..planar.len())
        .map(|i| planar[(i % channels) * plane + i / channels])
        .collect()
}

/// Turns planar (CHW) bytes back into an image, for export and previews.
pub fn planar_to_image(data: &[u8], size: usize, channels: usize) -> DynamicImage {
    let s = size as u32;
    let raw = planar_to_interleaved(data, channels);
    match channels {
        1 => DynamicImage::ImageLuma8(image::GrayImage::from_raw(s, s, raw).expect("size matches")),
        _ => DynamicImage::ImageRgb8(image::RgbImage::from_raw(s, s, raw).expect("size matches")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_round_trip() {
        let img = image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let dynimg = DynamicImage::ImageRgb8(img.clone());
        let px = to_pixels(&dynimg, 4, 3, Path::new("t")).unwrap();
        assert_eq!(px.data[0..4], [0, 1, 2, 3]);
        assert_eq!(px.data[32..48], [7; 16]);
        let back = planar_to_image(&px.data, 4, 3).to_rgb8();
        assert_eq!(back, img);
    }

    #[test]
    fn resize_downscales_averaging() {
        let img = image::GrayImage::from_fn(64, 64, |_, _| image::Luma([200]));
        let px = to_pixels(&DynamicImage::ImageLuma8(img), 8, 1, Path::new("t")).unwrap();
        assert_eq!(px.data.len(), 64);
        assert!(px.data.iter().all(|&v| v == 200));
    }

    #[test]
    fn crop_keeps_the_centre_and_letterbox_keeps_everything() {
        // 30×10: a red left third, a green middle third, a blue right third.
        let wide = image::RgbImage::from_fn(30, 10, |x, _| match x / 10 {
            0 => image::Rgb([255, 0, 0]),
            1 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let wide = DynamicImage::ImageRgb8(wide);
        let at = |px: &Pixels, x: usize, y: usize| {
            let plane = px.size * px.size;
            [0, 1, 2].map(|c| px.data[c * plane + y * px.size + x])
        };
        let crop = to_pixels_with(&wide, 10, 3, Prep::Crop, Path::new("t")).unwrap();
        assert!(crop
            .data
            .chunks(100)
            .nth(1)
            .unwrap()
            .iter()
            .all(|&g| g == 255));
        assert_eq!(at(&crop, 0, 0), [0, 255, 0]);

        let boxed = to_pixels_with(&wide, 9, 3, Prep::Letterbox, Path::new("t")).unwrap();
        // 30×10 fits 9×3, centred: rows 0-2 and 6-8 are bars.
        assert_eq!(at(&boxed, 4, 0), [LETTERBOX_FILL; 3]);
        assert_eq!(at(&boxed, 4, 8), [LETTERBOX_FILL; 3]);
        assert_eq!(at(&boxed, 0, 4), [255, 0, 0]);
        assert_eq!(at(&boxed, 4, 4), [0, 255, 0]);
        assert_eq!(at(&boxed, 8, 4), [0, 0, 255]);

        let squashed = to_pixels_with(&wide, 9, 3, Prep::Squash, Path::new("t")).unwrap();
        assert_eq!(at(&squashed, 4, 0), [0, 255, 0]);
        assert_eq!(at(&squashed, 0, 8), [255, 0, 0]);
    }

    #[test]
    fn refuses_huge_and_garbage() {
        let limits = DecodeLimits {
            max_megapixels: 0.001,
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
}
