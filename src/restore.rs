//! The autoencoder as an image restorer: reconstruction, denoising and
//! inpainting, always at the input's own size.
//!
//! The model sees `size × size` windows. An image of another size is fitted
//! one of two ways ([`Fit`]):
//! - **tiles** (the default): model-sized windows at the image's native
//!   resolution, overlapping by half, blended with a raised-cosine weight so
//!   no seams show; nothing is resampled, so detail is kept. Right for photos
//!   and noise at pixel scale.
//! - **resize**: the whole image is resampled to the model's size, restored
//!   and resampled back. Right when the content is at the model's scale (a
//!   scanned digit at 280×280 for the `digits` model), at the cost of detail.
//!
//! Work happens in floats in `[0, 1]` ([`Planes`]), so iterating (inpaint)
//! never rounds to bytes in between.

use image::{imageops, DynamicImage, ImageBuffer, Luma};

use crate::imageio;
use crate::model::{Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("model `{model}` was trained without --noise, so it reconstructs but does not denoise; use `digits-denoise` (the default for denoise) or `digits`, or a model trained with `imgsearch train --noise SIGMA`")]
    NotDenoiser { model: String },
    #[error("the mask is {mask_w}x{mask_h} but the image is {image_w}x{image_h}; they must be the same size")]
    MaskSize {
        mask_w: usize,
        mask_h: usize,
        image_w: usize,
        image_h: usize,
    },
    #[error("the mask marks no pixels to fill (white or light pixels, luma >= 128, are filled; black ones are kept)")]
    MaskEmpty,
    #[error("the mask covers every pixel, so nothing is known to inpaint from")]
    MaskFull,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// How an image that is not the model's size is fitted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Overlapping model-sized windows at native resolution, blended.
    #[default]
    Tiles,
    /// Resample the whole image to the model's size and back.
    Resize,
}

/// A float image: `channels` planes of `width × height` values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Planes {
    /// The image as 1 (luma) or 3 (RGB) planes.
    pub fn from_image(image: &DynamicImage, channels: usize) -> Self {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let interleaved: Vec<u8> = if channels == 1 {
            image.to_luma8().into_raw()
        } else {
            image.to_rgb8().into_raw()
        };
        let data = imageio::interleaved_to_planar(&interleaved, channels)
            .into_iter()
            .map(|v| v as f32 / 255.0)
            .collect();
        Self {
            width,
            height,
            channels,
            data,
        }
    }

    /// Back to an 8-bit image (rounded, clamped).
    pub fn to_image(&self) -> DynamicImage {
        let bytes: Vec<u8> = self
            .data
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let raw = imageio::planar_to_interleaved(&bytes, self.channels);
        let (w, h) = (self.width as u32, self.height as u32);
        if self.channels == 1 {
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, raw).expect("sized"))
        } else {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, raw).expect("sized"))
        }
    }

    fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }

    /// Resampled to `width × height` (triangle filter, widened when
    /// shrinking so large downscales average instead of alias).
    pub fn resized(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let mut data = Vec::with_capacity(width * height * self.channels);
        for c in 0..self.channels {
            let src: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(
                self.width as u32,
                self.height as u32,
                self.plane(c).to_vec(),
            )
            .expect("sized");
            let dst = imageops::resize(
                &src,
                width as u32,
                height as u32,
                imageops::FilterType::Triangle,
            );
            data.extend(dst.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)));
        }
        Self {
            width,
            height,
            channels: self.channels,
            data,
        }
    }

    /// Mean squared difference from `other` (same shape), over all values
    /// or, with `only`, over the pixels it marks.
    pub fn mse(&self, other: &Planes, only: Option<&[bool]>) -> f64 {
        assert_eq!(self.data.len(), other.data.len());
        let plane = self.width * self.height;
        let (mut sum, mut n) = (0.0f64, 0usize);
        for (i, (a, b)) in self.data.iter().zip(&other.data).enumerate() {
            if only.is_none_or(|m| m[i % plane]) {
                sum += ((a - b) as f64).powi(2);
                n += 1;
            }
        }
        sum / n.max(1) as f64
    }
}

/// Peak signal-to-noise ratio in dB for values in `[0, 1]`.
pub fn psnr(mse: f64) -> f64 {
    10.0 * (1.0 / mse.max(1e-12)).log10()
}

/// The autoencoder's rebuild of the whole image, at its own size.
pub fn reconstruct(model: &Model, image: &Planes, fit: Fit) -> Result<Planes, RestoreError> {
    check_channels(model, image);
    let s = model.input_size();
    if (image.width, image.height) == (s, s) || fit == Fit::Resize {
        let small = image.resized(s, s);
        let out = Planes {
            data: through_model(model, &small.data, s * s * small.channels)?,
            ..small
        };
        return Ok(out.resized(image.width, image.height));
    }
    // Windows go through the model a chunk at a time, so memory stays a
    // small multiple of the image however many windows it has.
    let tiles = Tiles::new(image.width, image.height, s);
    let origins: Vec<(usize, usize)> = tiles.origins().collect();
    let mut blend = Blend::new(&tiles, image.channels);
    for chunk in origins.chunks(WINDOWS_PER_PASS) {
        let windows = tiles.extract(image, chunk);
        let restored = through_model(model, &windows, s * s * image.channels)?;
        blend.add(chunk, &restored);
    }
    Ok(blend.finish())
}

/// Windows per model call when tiling: four model batches.
const WINDOWS_PER_PASS: usize = 4 * crate::model::BATCH;

/// Removes noise with a model trained as a denoiser (`train --noise`).
pub fn denoise(model: &Model, image: &Planes, fit: Fit) -> Result<Planes, RestoreError> {
    if model.denoising_sigma().is_none() {
        return Err(RestoreError::NotDenoiser {
            model: model.name.clone(),
        });
    }
    reconstruct(model, image, fit)
}

/// A mask read from an image: true where a pixel is to be filled.
pub fn mask_from_image(
    mask: &DynamicImage,
    width: usize,
    height: usize,
) -> Result<Vec<bool>, RestoreError> {
    let (mw, mh) = (mask.width() as usize, mask.height() as usize);
    if (mw, mh) != (width, height) {
        return Err(RestoreError::MaskSize {
            mask_w: mw,
            mask_h: mh,
            image_w: width,
            image_h: height,
        });
    }
    let missing: Vec<bool> = mask
        .to_luma8()
        .into_raw()
        .iter()
        .map(|&v| v >= 128)
        .collect();
    match missing.iter().filter(|&&m| m).count() {
        0 => Err(RestoreError::MaskEmpty),
        n if n == missing.len() => Err(RestoreError::MaskFull),
        _ => Ok(missing),
    }
}

/// What inpainting did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InpaintReport {
    pub filled_pixels: usize,
    pub iterations: usize,
    /// Root-mean-square change of the filled pixels in the last iteration:
    /// near 0 means it converged.
    pub last_change: f64,
}

/// Default number of reconstruct-and-keep passes.
pub const INPAINT_ITERATIONS: usize = 10;

/// Fills the pixels `missing` marks (one flag per pixel, all channels):
/// starts them at the mean of the known pixels, then repeatedly replaces
/// them with the reconstruction while every known pixel stays as it was.
/// Known pixels of the result are exactly the input's. `progress` counts
/// the passes.
pub fn inpaint(
    model: &Model,
    image: &Planes,
    missing: &[bool],
    fit: Fit,
    iterations: usize,
    progress: &dyn crate::progress::Progress,
) -> Result<(Planes, InpaintReport), RestoreError> {
    progress.stage("passes", Some(iterations as u64));
    let plane = image.width * image.height;
    assert_eq!(missing.len(), plane, "one mask flag per pixel");
    let mut x = image.clone();
    for c in 0..image.channels {
        let values = &mut x.data[c * plane..(c + 1) * plane];
        let known: Vec<f32> = values
            .iter()
            .zip(missing)
            .filter(|(_, &m)| !m)
            .map(|(&v, _)| v)
            .collect();
        let mean = known.iter().sum::<f32>() / known.len().max(1) as f32;
        for (v, &m) in values.iter_mut().zip(missing) {
            if m {
                *v = mean;
            }
        }
    }
    let filled = missing.iter().filter(|&&m| m).count();
    let mut last_change = 0.0;
    for _ in 0..iterations {
        let r = reconstruct(model, &x, fit)?;
        let mut change = 0.0f64;
        for (i, (v, &new)) in x.data.iter_mut().zip(&r.data).enumerate() {
            if missing[i % plane] {
                change += ((new - *v) as f64).powi(2);
                *v = new;
            }
        }
        last_change = (change / (filled * image.channels).max(1) as f64).sqrt();
        progress.advance(1);
    }
    Ok((
        x,
        InpaintReport {
            filled_pixels: filled,
            iterations,
            last_change,
        },
    ))
}

fn check_channels(model: &Model, image: &Planes) {
    assert_eq!(
        image.channels,
        model.channels(),
        "Planes::from_image(.., model.channels()) first"
    );
}

/// Model-input windows (`per` floats each) through the autoencoder, with
/// the model's normalization applied on the way in and undone on the way
/// out (a `gain` model sees each window scaled to its fixed brightness).
fn through_model(model: &Model, windows: &[f32], per: usize) -> Result<Vec<f32>, RestoreError> {
    let norm = model.info.input_normalization();
    let mut inputs = Vec::with_capacity(windows.len());
    let mut gains = Vec::with_capacity(windows.len() / per);
    for w in windows.chunks(per) {
        let gain = norm.gain(w.iter().sum::<f32>() / per as f32);
        gains.push(gain);
        inputs.extend(w.iter().map(|v| (v * gain).min(1.0)));
    }
    let mut out = model.reconstruct_values(&inputs)?;
    for (w, gain) in out.chunks_mut(per).zip(gains) {
        w.iter_mut().for_each(|v| *v = (*v / gain).min(1.0));
    }
    Ok(out)
}

/// Where the model-sized windows of a `width × height` image sit: along
/// each axis from 0 in steps of half a window, the last flush with the far
/// edge. An axis shorter than a window has one, padded by repeating the
/// edge pixel.
struct Tiles {
    width: usize,
    height: usize,
    size: usize,
    xs: Vec<usize>,
    ys: Vec<usize>,
}

impl Tiles {
    fn new(width: usize, height: usize, size: usize) -> Self {
        let starts = |len: usize| {
            if len <= size {
                return vec![0];
            }
            let stride = (size / 2).max(1);
            let mut v: Vec<usize> = (0..len - size).step_by(stride).collect();
            v.push(len - size);
            v
        };
        Self {
            width,
            height,
            size,
            xs: starts(width),
            ys: starts(height),
        }
    }

    fn origins(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.ys
            .iter()
            .flat_map(|&y| self.xs.iter().map(move |&x| (x, y)))
    }

    /// The windows at `origins`, planar, one after another.
    fn extract(&self, image: &Planes, origins: &[(usize, usize)]) -> Vec<f32> {
        let s = self.size;
        let mut out = Vec::with_capacity(origins.len() * s * s * image.channels);
        for &(x0, y0) in origins {
            for c in 0..image.channels {
                let plane = image.plane(c);
                for dy in 0..s {
                    let y = (y0 + dy).min(self.height - 1);
                    for dx in 0..s {
                        let x = (x0 + dx).min(self.width - 1);
                        out.push(plane[y * self.width + x]);
                    }
                }
            }
        }
        out
    }
}

/// A weighted average of windows being put back into one image. The
/// weight is a raised cosine peaking mid-window (floored so edge pixels,
/// covered by one window only, still count).
struct Blend<'a> {
    tiles: &'a Tiles,
    channels: usize,
    bump: Vec<f32>,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl<'a> Blend<'a> {
    fn new(tiles: &'a Tiles, channels: usize) -> Self {
        let (s, plane) = (tiles.size, tiles.width * tiles.height);
        let bump = (0..s)
            .map(|i| {
                let t = std::f32::consts::PI * (i as f32 + 0.5) / s as f32;
                t.sin().powi(2).max(1e-3)
            })
            .collect();
        Self {
            tiles,
            channels,
            bump,
            sum: vec![0.0; plane * channels],
            weight: vec![0.0; plane],
        }
    }

    /// Adds the windows at `origins` (laid out as [`Tiles::extract`] gives).
    fn add(&mut self, origins: &[(usize, usize)], windows: &[f32]) {
        let t = self.tiles;
        let (s, c_n, plane) = (t.size, self.channels, t.width * t.height);
        for (k, &(x0, y0)) in origins.iter().enumerate() {
            let window = &windows[k * s * s * c_n..(k + 1) * s * s * c_n];
            for dy in 0..s.min(t.height - y0) {
                for dx in 0..s.min(t.width - x0) {
                    let w = self.bump[dy] * self.bump[dx];
                    let at = (y0 + dy) * t.width + x0 + dx;
                    self.weight[at] += w;
                    for c in 0..c_n {
                        self.sum[c * plane + at] += w * window[c * s * s + dy * s + dx];
                    }
                }
            }
        }
    }

    fn finish(mut self) -> Planes {
        let plane = self.tiles.width * self.tiles.height;
        for (i, v) in self.sum.iter_mut().enumerate() {
            *v /= self.weight[i % plane];
        }
        Planes {
            width: self.tiles.width,
            height: self.tiles.height,
            channels: self.channels,
            data: self.sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(width: usize, height: usize, channels: usize) -> Planes {
        let data = (0..width * height * channels)
            .map(|i| (i % 97) as f32 / 96.0)
            .collect();
        Planes {
            width,
            height,
            channels,
            data,
        }
    }

    #[test]
    fn windows_cover_every_pixel_and_blend_back_exactly() {
        for (w, h) in [(28, 28), (100, 61), (20, 90), (5, 5)] {
            let image = ramp(w, h, 3);
            let tiles = Tiles::new(w, h, 28);
            assert_eq!(*tiles.xs.last().unwrap(), w.saturating_sub(28));
            // Blending the untouched windows, in any chunking, must give
            // the image back: weights are normalized, every pixel covered.
            let origins: Vec<_> = tiles.origins().collect();
            let mut blend = Blend::new(&tiles, 3);
            for chunk in origins.chunks(3) {
                blend.add(chunk, &tiles.extract(&image, chunk));
            }
            assert!(blend.finish().mse(&image, None) < 1e-10, "{w}x{h}");
        }
    }

    #[test]
    fn planes_round_trip_through_an_image() {
        let image = ramp(7, 5, 3);
        let bytes = Planes::from_image(&image.to_image(), 3);
        assert!(bytes.mse(&image, None) < (0.5f64 / 255.0).powi(2));
        assert_eq!(image.resized(7, 5), image);
        let small = image.resized(3, 2);
        assert_eq!((small.width, small.height, small.data.len()), (3, 2, 18));
    }

    #[test]
    fn masks_must_match_and_mark_something() {
        let mut mask = image::GrayImage::new(4, 3);
        let dynamic = |m: &image::GrayImage| DynamicImage::ImageLuma8(m.clone());
        assert!(matches!(
            mask_from_image(&dynamic(&mask), 3, 4),
            Err(RestoreError::MaskSize { .. })
        ));
        assert!(matches!(
            mask_from_image(&dynamic(&mask), 4, 3),
            Err(RestoreError::MaskEmpty)
        ));
        mask.put_pixel(1, 2, Luma([255]));
        let m = mask_from_image(&dynamic(&mask), 4, 3).unwrap();
        assert_eq!(m.iter().position(|&b| b), Some(2 * 4 + 1));
        let full = image::GrayImage::from_pixel(4, 3, Luma([200]));
        assert!(matches!(
            mask_from_image(&dynamic(&full), 4, 3),
            Err(RestoreError::MaskFull)
        ));
    }
}
