//! JPEG through libjpeg-turbo (the `turbojpeg` crate, built from source).
//!
//! Two things `image`'s JPEG decoder (zune-jpeg, which `image` runs in its
//! lenient mode) does not do:
//! - decode at reduced size in the DCT domain. A model looks at ≤ 96 pixels
//!   a side, so a 12-megapixel photo is decoded at 1/8 size, which skips most
//!   of the inverse DCT, upsampling and colour conversion;
//! - say that the data ended early or is damaged. libjpeg reports both as
//!   warnings and fills what is missing with grey, which `image` accepts
//!   silently; here they refuse the file unless the caller allows truncation.

use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

use super::{DecodeLimits, DecodeSize, Decoded, ImageError};

/// Whether `bytes` start like a JPEG (SOI and the next marker's 0xFF).
pub(super) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes a JPEG no larger than `size` needs, oriented by its EXIF tag.
pub(super) fn decode(
    bytes: &[u8],
    path: &Path,
    limits: DecodeLimits,
    size: DecodeSize,
) -> Result<Decoded, ImageError> {
    let mut decompressor = Decompressor::new().map_err(|e| failure(bytes, path, e))?;
    let header = decompressor
        .read_header(bytes)
        .map_err(|e| failure(bytes, path, e))?;
    let side = |d: usize| u32::try_from(d).unwrap_or(u32::MAX);
    let (width, height) = (side(header.width), side(header.height));
    // From the header alone, before libjpeg allocates anything.
    limits.check_size(width, height, path)?;

    let scale = if header.is_lossless {
        ScalingFactor::ONE
    } else {
        scale_for(header.width, header.height, size)
    };
    decompressor
        .set_scaling_factor(scale)
        .map_err(|e| failure(bytes, path, e))?;
    let scaled = header.scaled(scale);
    // libjpeg converts YCbCr to RGB itself; it cannot convert CMYK, so that
    // comes out as it is stored and is converted below.
    let format = match header.colorspace {
        Colorspace::Gray => PixelFormat::GRAY,
        Colorspace::CMYK | Colorspace::YCCK => PixelFormat::CMYK,
        _ => PixelFormat::RGB,
    };
    let pitch = scaled.width * format.size();
    let mut pixels = vec![0u8; pitch * scaled.height];
    let output = Image {
        pixels: pixels.as_mut_slice(),
        width: scaled.width,
        pitch,
        height: scaled.height,
        format,
    };
    if let Err(e) = decompressor.decompress(bytes, output) {
        match failure(bytes, path, e) {
            ImageError::Truncated { .. } if limits.allow_truncated => {}
            ImageError::Corrupt { detail, .. } if is_harmless(&detail) => {}
            err => return Err(err),
        }
    }

    let (w, h) = (side(scaled.width), side(scaled.height));
    let mut image = match format {
        PixelFormat::GRAY => GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        PixelFormat::CMYK => RgbImage::from_raw(w, h, cmyk_to_rgb(&pixels, is_adobe(bytes)))
            .map(DynamicImage::ImageRgb8),
        _ => RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
    }
    .expect("the buffer was sized for these dimensions");
    let orientation = exif_orientation(bytes);
    image.apply_orientation(orientation);
    let turned = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (width, height) = if turned {
        (height, width)
    } else {
        (width, height)
    };
    Ok(Decoded {
        image,
        width,
        height,
    })
}

/// The smallest DCT scale (1/8, 1/4, 1/2, else whole) whose output still
/// covers `size`. Rotation does not matter: the targets are square.
fn scale_for(width: usize, height: usize, size: DecodeSize) -> ScalingFactor {
    [8, 4, 2]
        .into_iter()
        .map(|denom| ScalingFactor::new(1, denom))
        .find(|f| {
            let (w, h) = (f.scale(width), f.scale(height));
            size.covered_by(w as u32, h as u32)
        })
        .unwrap_or(ScalingFactor::ONE)
}

/// Names libjpeg's complaint: `Truncated` when the entropy-coded data runs
/// to the end of the file without an end-of-image marker, else `Corrupt`.
fn failure(bytes: &[u8], path: &Path, error: turbojpeg::Error) -> ImageError {
    let detail = match error {
        turbojpeg::Error::TurboJpegError(message) => message,
        other => other.to_string(),
    };
    let path = path.to_path_buf();
    if ends_early(bytes) {
        ImageError::Truncated { path, detail }
    } else {
        ImageError::Corrupt { path, detail }
    }
}

/// Warnings about a well-formed image: stray bytes before a marker (common
/// in camera files, the image data is whole) and unknown versions or
/// thumbnail sizes in the JFIF header. libjpeg keeps only its last message,
/// so these are recognised by their text.
fn is_harmless(detail: &str) -> bool {
    detail.contains("extraneous bytes before marker")
        || detail.starts_with("Warning: unknown JFIF revision")
        || detail.starts_with("Warning: thumbnail image size")
}

/// Whether the data stops inside the image: there is no end-of-image
/// marker after the last start-of-scan. Entropy-coded data escapes every
/// 0xFF byte, so a marker found after the scan header is a real one.
fn ends_early(bytes: &[u8]) -> bool {
    const SOS: [u8; 2] = [0xFF, 0xDA];
    const EOI: [u8; 2] = [0xFF, 0xD9];
    match bytes.windows(2).rposition(|w| w == SOS) {
        None => true,
        Some(at) => !bytes[at..].windows(2).any(|w| w == EOI),
    }
}

/// The segments before the first scan: (marker, payload) pairs.
fn header_segments(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 2; // after SOI
    std::iter::from_fn(move || {
        let marker = *bytes.get(at + 1)?;
        if bytes[at] != 0xFF || marker == 0xDA {
            return None;
        }
        let len = u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]) as usize;
        let payload = bytes.get(at + 4..at + 2 + len.max(2))?;
        at += 2 + len.max(2);
        Some((marker, payload))
    })
}

/// The EXIF orientation tag of the first APP1 `Exif` segment, if any.
fn exif_orientation(bytes: &[u8]) -> Orientation {
    header_segments(bytes)
        .find_map(|(marker, payload)| match marker {
            0xE1 => payload.strip_prefix(b"Exif\0\0"),
            _ => None,
        })
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
}

/// Whether an Adobe APP14 segment is present: Adobe's writers store CMYK
/// inverted (0 is full ink), which every reader of such files assumes.
fn is_adobe(bytes: &[u8]) -> bool {
    header_segments(bytes).any(|(marker, payload)| marker == 0xEE && payload.starts_with(b"Adobe"))
}

/// CMYK samples to RGB, the naive conversion without a colour profile.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = [px[0], px[1], px[2], px[3]].map(|v| {
            let ink = if inverted { 255 - v } else { v };
            255 - ink as u32
        });
        // Each channel is what its ink and the black leave of white.
        rgb.extend([c, m, y].map(|v| (v * k / 255) as u8));
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_the_smallest_that_covers() {
        let cover = |side, prep| DecodeSize::Cover { side, prep };
        let s = |w, h, size| {
            let f = scale_for(w, h, size);
            (f.num(), f.denom())
        };
        use super::super::Prep::*;
        // 1920x1080 for 64 px: 1/8 gives 240x135, enough.
        assert_eq!(s(1920, 1080, cover(64, Crop)), (1, 8));
        // 600x400 for 96 px crop: 1/4 gives 150x100, 1/8 75x50.
        assert_eq!(s(600, 400, cover(96, Crop)), (1, 4));
        // Letterbox only needs the long side: 1/8 of 800 is 100.
        assert_eq!(s(800, 100, cover(96, Letterbox)), (1, 8));
        assert_eq!(s(800, 100, cover(96, Squash)), (1, 1));
        assert_eq!(s(4000, 3000, DecodeSize::Full), (1, 1));
    }

    #[test]
    fn end_of_image_after_the_last_scan() {
        let whole = [0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0x00, 3, 0xFF, 0xD9];
        assert!(!ends_early(&whole));
        assert!(ends_early(&whole[..9]));
        // An EOI before the scan (an embedded thumbnail's) does not count.
        let thumb = [0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 1, 2];
        assert!(ends_early(&thumb));
    }

    #[test]
    fn cmyk_conversion() {
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 0], false), [0, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255], true), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 255, 255, 255], true), [0, 255, 255]);
    }
}
