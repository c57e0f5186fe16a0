//! Training-time augmentation (`train --augment`): the same photo framed a
//! little differently, mirrored, or lit differently should embed the same.
//!
//! Geometry (a random crop of 75–100% of the side, resized back, and a
//! horizontal flip half the time) moves input and target together, since a
//! decoder cannot know which way an image was flipped. Colour (brightness,
//! contrast and saturation, each within ±[`JITTER`]) goes on the encoder's
//! input only: the decoder rebuilds the un-jittered image, so the network
//! learns to see through lighting instead of copying it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Largest relative change of brightness, contrast and saturation.
pub const JITTER: f32 = 0.2;
/// Smallest crop side, as a share of the image side.
pub const MIN_CROP: f32 = 0.75;

/// One image's random framing and lighting.
pub struct Draw {
    crop: f32,
    left: f32,
    top: f32,
    flip: bool,
    brightness: f32,
    contrast: f32,
    saturation: f32,
}

impl Draw {
    pub fn new(rng: &mut ChaCha8Rng) -> Self {
        let crop = rng.random_range(MIN_CROP..=1.0);
        let mut jitter = || rng.random_range(1.0 - JITTER..=1.0 + JITTER);
        let (brightness, contrast, saturation) = (jitter(), jitter(), jitter());
        Self {
            crop,
            left: rng.random_range(0.0..=1.0 - crop),
            top: rng.random_range(0.0..=1.0 - crop),
            flip: rng.random(),
            brightness,
            contrast,
            saturation,
        }
    }

    /// The reframed image (planar, values in `[0, 1]`): the target.
    pub fn reframe(&self, planar: &[f32], size: usize, channels: usize) -> Vec<f32> {
        let plane = size * size;
        let side = self.crop * size as f32;
        let step = side / size as f32;
        let mut out = vec![0.0; planar.len()];
        for y in 0..size {
            // Bilinear sampling at pixel centres of the crop window.
            let sy = (self.top * size as f32 + (y as f32 + 0.5) * step - 0.5).max(0.0);
            let (y0, fy) = (sy.floor() as usize, sy.fract());
            let y1 = (y0 + 1).min(size - 1);
            for x in 0..size {
                let tx = if self.flip { size - 1 - x } else { x };
                let sx = (self.left * size as f32 + (tx as f32 + 0.5) * step - 0.5).max(0.0);
                let (x0, fx) = (sx.floor() as usize, sx.fract());
                let x1 = (x0 + 1).min(size - 1);
                let (x0, y0) = (x0.min(size - 1), y0.min(size - 1));
                for c in 0..channels {
                    let p = &planar[c * plane..(c + 1) * plane];
                    let top = p[y0 * size + x0] * (1.0 - fx) + p[y0 * size + x1] * fx;
                    let bottom = p[y1 * size + x0] * (1.0 - fx) + p[y1 * size + x1] * fx;
                    out[c * plane + y * size + x] = top * (1.0 - fy) + bottom * fy;
                }
            }
        }
        out
    }

    /// The target with lighting jitter: the encoder's input.
    pub fn relight(&self, target: &[f32], channels: usize) -> Vec<f32> {
        let plane = target.len() / channels;
        let luma = |i: usize| -> f32 {
            if channels == 3 {
                0.299 * target[i] + 0.587 * target[plane + i] + 0.114 * target[2 * plane + i]
            } else {
                target[i]
            }
        };
        let mean = (0..plane).map(luma).sum::<f32>() / plane as f32;
        let mut out = target.to_vec();
        for i in 0..plane {
            let grey = luma(i);
            for c in 0..channels {
                let v = &mut out[c * plane + i];
                let saturated = grey + (*v - grey) * self.saturation;
                let contrasted = mean + (saturated - mean) * self.contrast;
                *v = (contrasted * self.brightness).clamp(0.0, 1.0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn identity_draw_changes_nothing_and_flip_mirrors() {
        let size = 4;
        let planar: Vec<f32> = (0..size * size).map(|i| i as f32 / 16.0).collect();
        let mut draw = Draw {
            crop: 1.0,
            left: 0.0,
            top: 0.0,
            flip: false,
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
        };
        let same = draw.reframe(&planar, size, 1);
        assert!(same.iter().zip(&planar).all(|(a, b)| (a - b).abs() < 1e-6));
        assert_eq!(draw.relight(&same, 1), same);
        draw.flip = true;
        let mirrored = draw.reframe(&planar, size, 1);
        assert!((mirrored[0] - planar[3]).abs() < 1e-6);
        assert!((mirrored[7] - planar[4]).abs() < 1e-6);
    }

    #[test]
    fn draws_stay_in_range_and_follow_the_seed() {
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let planar: Vec<f32> = (0..3 * 64).map(|i| (i % 7) as f32 / 6.0).collect();
        for _ in 0..20 {
            let (da, db) = (Draw::new(&mut a), Draw::new(&mut b));
            let target = da.reframe(&planar, 8, 3);
            let input = da.relight(&target, 3);
            assert_eq!(input, db.relight(&db.reframe(&planar, 8, 3), 3));
            assert!(input.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }
}
