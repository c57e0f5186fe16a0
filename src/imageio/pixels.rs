//! Pixels for the model: convert to its channels, resize to its square
//! input the way the model was trained to see photos ([`Prep`]), and lay out
//! as planes (CHW), the same layout the datasets use.

use std::path::Path;

use fast_image_resize as fr;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::ImageError;
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// An image from raw decoder output of any colour layout `image` knows
/// (16-bit and float samples in native byte order, as decoders write them).
pub(super) fn image_from_raw(
    width: u32,
    height: u32,
    color: image::ColorType,
    bytes: Vec<u8>,
) -> Option<DynamicImage> {
    use image::ColorType as C;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
    let u16s = |b: &[u8]| bytemuck::pod_collect_to_vec::<u8, u16>(b);
    let f32s = |b: &[u8]| bytemuck::pod_collect_to_vec::<u8, f32>(b);
    Some(match color {
        C::L8 => {
            DynamicImage::ImageLuma8(ImageBuffer::<Luma<u8>, _>::from_raw(width, height, bytes)?)
        }
        C::La8 => {
            DynamicImage::ImageLumaA8(ImageBuffer::<LumaA<u8>, _>::from_raw(width, height, bytes)?)
        }
        C::Rgb8 => {
            DynamicImage::ImageRgb8(ImageBuffer::<Rgb<u8>, _>::from_raw(width, height, bytes)?)
        }
        C::Rgba8 => {
            DynamicImage::ImageRgba8(ImageBuffer::<Rgba<u8>, _>::from_raw(width, height, bytes)?)
        }
        C::L16 => DynamicImage::ImageLuma16(ImageBuffer::from_raw(width, height, u16s(&bytes))?),
        C::La16 => DynamicImage::ImageLumaA16(ImageBuffer::from_raw(width, height, u16s(&bytes))?),
        C::Rgb16 => DynamicImage::ImageRgb16(ImageBuffer::from_raw(width, height, u16s(&bytes))?),
        C::Rgba16 => DynamicImage::ImageRgba16(ImageBuffer::from_raw(width, height, u16s(&bytes))?),
        C::Rgb32F => DynamicImage::ImageRgb32F(ImageBuffer::from_raw(width, height, f32s(&bytes))?),
        C::Rgba32F => {
            DynamicImage::ImageRgba32F(ImageBuffer::from_raw(width, height, f32s(&bytes))?)
        }
        _ => return None,
    })
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
}
