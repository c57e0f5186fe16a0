//! What only an autoencoder can draw: images the decoder makes from points
//! of its latent space that no input gave. Interpolation walks the straight
//! line between two images' latents, so the frames show how the model's
//! space connects them (a search index can only show what it holds).

use crate::imageio::Pixels;
use crate::model::{Model, ModelError};

/// One decoded point of the line from `a` (`t = 0`) to `b` (`t = 1`).
pub struct Frame {
    pub t: f32,
    pub pixels: Pixels,
}

/// `steps + 2` frames, both ends included: the decoder's image of the
/// latent `(1 - t) · z(a) + t · z(b)` at evenly spaced `t`. The ends are
/// the model's reconstructions of `a` and `b` (not the images themselves),
/// so every frame is drawn the same way.
pub fn interpolate(
    model: &Model,
    a: &Pixels,
    b: &Pixels,
    steps: usize,
) -> Result<Vec<Frame>, ModelError> {
    let ends = model.latents(&[a.clone(), b.clone()])?;
    let (za, zb) = (&ends[0], &ends[1]);
    let ts: Vec<f32> = (0..steps + 2)
        .map(|i| i as f32 / (steps + 1) as f32)
        .collect();
    let points: Vec<Vec<f32>> = ts
        .iter()
        .map(|&t| {
            za.iter()
                .zip(zb)
                .map(|(x, y)| (1.0 - t) * x + t * y)
                .collect()
        })
        .collect();
    Ok(ts
        .into_iter()
        .zip(model.decode(&points)?)
        .map(|(t, pixels)| Frame { t, pixels })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digit(f: impl Fn(usize, usize) -> bool) -> Pixels {
        Pixels {
            size: 28,
            channels: 1,
            data: (0..28 * 28)
                .map(|i| if f(i % 28, i / 28) { 255 } else { 0 })
                .collect(),
        }
    }

    fn distance(a: &Pixels, b: &Pixels) -> f64 {
        a.data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn the_ends_are_reconstructions_and_the_frames_move_from_one_to_the_other() {
        let model = Model::load("digits").unwrap();
        let bar = digit(|x, y| (12..16).contains(&x) && (4..24).contains(&y));
        let ring = digit(|x, y| {
            let r = ((x as f64 - 13.5).powi(2) + (y as f64 - 13.5).powi(2)).sqrt();
            (6.0..9.0).contains(&r)
        });
        let frames = interpolate(&model, &bar, &ring, 6).unwrap();
        assert_eq!(frames.len(), 8);
        assert_eq!((frames[0].t, frames[7].t), (0.0, 1.0));
        let recon = model.reconstruct(&[bar, ring]).unwrap();
        assert_eq!(frames[0].pixels.data, recon[0].0.data);
        assert_eq!(frames[7].pixels.data, recon[1].0.data);
        // Farther from the first end, frame by frame (the decoder is smooth
        // along a line at this spacing), and never a copy of either end.
        let from_a: Vec<f64> = frames
            .iter()
            .map(|f| distance(&f.pixels, &frames[0].pixels))
            .collect();
        assert!(from_a.windows(2).all(|w| w[1] >= w[0] - 1.0), "{from_a:?}");
        let mid = &frames[4].pixels;
        assert!(distance(mid, &frames[0].pixels) > 0.0 && distance(mid, &frames[7].pixels) > 0.0);
    }
}
