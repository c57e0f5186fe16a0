//! What only an autoencoder can draw: images the decoder makes from points
//! of its latent space that no input gave. Interpolation walks the straight
//! line between two images' latents, so the frames show how the model's
//! space connects them (a search index can only show what it holds);
//! [`near`] draws variations of an image from the spread of its neighbours.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

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

/// `n` latents drawn around `centre` from the local spread of
/// `neighbours` (latents of the images nearest it), decoded.
///
/// Each sample is `centre + scale · Σⱼ εⱼ (nⱼ − n̄) / √k` with `εⱼ` standard
/// normal: a Gaussian whose covariance is the neighbours' own (up to
/// `(k − 1) / k`), so samples vary the way nearby images vary, in the
/// directions the collection actually spreads in, and never along ones it
/// does not. Returns the latents and their decoded images.
pub fn near(
    model: &Model,
    centre: &[f32],
    neighbours: &[Vec<f32>],
    n: usize,
    scale: f32,
    seed: u64,
) -> Result<Vec<(Vec<f32>, Pixels)>, ModelError> {
    let k = neighbours.len().max(1) as f32;
    let mean: Vec<f32> = (0..centre.len())
        .map(|d| neighbours.iter().map(|v| v[d]).sum::<f32>() / k)
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let latents: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            let mut z = centre.to_vec();
            for v in neighbours {
                let e: f32 = StandardNormal.sample(&mut rng);
                for ((z, x), m) in z.iter_mut().zip(v).zip(&mean) {
                    *z += scale * e * (x - m) / k.sqrt();
                }
            }
            z
        })
        .collect();
    let images = model.decode(&latents)?;
    Ok(latents.into_iter().zip(images).collect())
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

    #[test]
    fn samples_near_an_image_stay_in_its_neighbours_spread() {
        let model = Model::load("digits").unwrap();
        let centre = vec![0.5f32; 16];
        // Neighbours spread along the first two axes only.
        let neighbours: Vec<Vec<f32>> = (0..12)
            .map(|i| {
                let mut v = centre.clone();
                v[0] += ((i as f32) * 0.9).sin();
                v[1] += ((i as f32) * 1.7).cos() * 0.5;
                v
            })
            .collect();
        let samples = near(&model, &centre, &neighbours, 200, 1.0, 9).unwrap();
        assert_eq!(samples.len(), 200);
        assert_eq!(samples[0].1.size, 28);
        let var = |d: usize| {
            samples
                .iter()
                .map(|(z, _)| (z[d] - centre[d]).powi(2))
                .sum::<f32>()
                / 200.0
        };
        assert!(var(0) > 0.2 && var(1) > 0.02, "{} {}", var(0), var(1));
        assert!(
            (2..16).all(|d| var(d) < 1e-10),
            "no spread where the neighbours have none"
        );
        let again = near(&model, &centre, &neighbours, 200, 1.0, 9).unwrap();
        assert_eq!(samples[7].0, again[7].0, "same seed, same samples");
    }
}
