//! Denoising and inpainting with the autoencoder, beside classical
//! baselines in the same run, on the MNIST test split.
//!
//! - Denoise: Gaussian noise of σ = 0.3 and 0.5 on clean digits (clamped
//!   to [0, 1] and rounded to bytes, as a saved PNG would be). PSNR against
//!   the clean image (mean over images) of the noisy input, a 3×3 median
//!   filter, and `restore::denoise` with the model.
//! - Inpaint: a random 25% of each image's pixels masked. RMSE on the
//!   masked pixels of mean-fill (the image's mean known value), nearest-
//!   neighbour fill (the spatially nearest known pixel) and
//!   `restore::inpaint` after 1, 5, 10 and 30 iterations.
//!
//! Run: `cargo bench --bench restore`. Environment: `BENCH_MODELS`
//! (default `digits-denoise,digits`), `BENCH_TEST_LIMIT` (images for
//! denoising, default all 10,000), `BENCH_INPAINT_LIMIT` (default 1,000).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::model::Model;
use imgsearch::restore::{self, Fit, Planes};

fn main() -> anyhow::Result<()> {
    let Some(root) = dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!(
            "restore: skipped, no dataset folder (set IMGSEARCH_DATA or provide ../shared/data)"
        );
        return Ok(());
    };
    let limit = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let names = std::env::var("BENCH_MODELS").unwrap_or_else(|_| "digits-denoise,digits".into());
    let models = names
        .split(',')
        .map(|n| Ok((n.to_string(), Model::load(n)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let test = dataset::load(
        DatasetName::Mnist,
        &root.join("mnist"),
        Split::Test,
        Some(limit("BENCH_TEST_LIMIT", 10_000)),
    )?;
    let clean: Vec<Planes> = (0..test.len())
        .map(|i| planes(test.image(i).iter().map(|&b| b as f32 / 255.0).collect()))
        .collect();
    println!("{} MNIST test images\n", clean.len());

    println!("## Denoising: PSNR against the clean image (dB, mean over images)\n");
    println!("| σ | noisy input | median 3×3 | model (trained σ) | autoencoder | AE − median | AE time / image |");
    println!("|---|---|---|---|---|---|---|");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for sigma in [0.3f32, 0.5] {
        let noisy: Vec<Planes> = clean
            .iter()
            .map(|c| add_noise(c, sigma, &mut rng))
            .collect();
        let median: Vec<Planes> = noisy.iter().map(median3).collect();
        let (p_noisy, p_median) = (mean_psnr(&clean, &noisy), mean_psnr(&clean, &median));
        for (name, model) in &models {
            let start = Instant::now();
            let denoised = noisy
                .iter()
                .map(|n| restore::denoise(model, n, Fit::Tiles))
                .collect::<Result<Vec<_>, _>>()?;
            let per_image = start.elapsed().as_secs_f64() / clean.len() as f64;
            let p_ae = mean_psnr(&clean, &denoised);
            println!(
                "| {sigma} | {p_noisy:.2} | {p_median:.2} | {name} ({}) | {p_ae:.2} | {:+.2} | {:.2} ms |",
                model.info.training.noise,
                p_ae - p_median,
                per_image * 1e3
            );
        }
    }

    let n = limit("BENCH_INPAINT_LIMIT", 1_000).min(clean.len());
    println!("\n## Inpainting: 25% of pixels masked at random, {n} images\n");
    println!("| method | RMSE on masked pixels | PSNR on masked pixels (dB) | time / image |");
    println!("|---|---|---|---|");
    let masks: Vec<Vec<bool>> = (0..n)
        .map(|_| (0..28 * 28).map(|_| rng.random::<f32>() < 0.25).collect())
        .collect();
    let report = |name: &str, filled: &[Planes], secs: f64| {
        let mse: f64 = clean[..n]
            .iter()
            .zip(filled)
            .zip(&masks)
            .map(|((c, f), m)| f.mse(c, Some(m)))
            .sum::<f64>()
            / n as f64;
        println!(
            "| {name} | {:.4} | {:.2} | {:.2} ms |",
            mse.sqrt(),
            restore::psnr(mse),
            secs * 1e3 / n as f64
        );
    };
    let timed = |f: &dyn Fn(&Planes, &[bool]) -> Planes| {
        let start = Instant::now();
        let out: Vec<Planes> = clean[..n]
            .iter()
            .zip(&masks)
            .map(|(c, m)| f(c, m))
            .collect();
        (out, start.elapsed().as_secs_f64())
    };
    let (mean_fill, secs) = timed(&|c, m| {
        restore::inpaint(
            &models[0].1,
            c,
            m,
            Fit::Tiles,
            0,
            &imgsearch::progress::NoProgress,
        )
        .expect("no model pass")
        .0
    });
    report("mean fill", &mean_fill, secs);
    let (nn_fill, secs) = timed(&nearest_fill);
    report("nearest-neighbour fill", &nn_fill, secs);
    for (name, model) in &models {
        for iterations in [1, 5, restore::INPAINT_ITERATIONS] {
            let (filled, secs) = timed(&|c, m| {
                restore::inpaint(
                    model,
                    c,
                    m,
                    Fit::Tiles,
                    iterations,
                    &imgsearch::progress::NoProgress,
                )
                .expect("inpaint")
                .0
            });
            report(&format!("{name}, {iterations} iterations"), &filled, secs);
        }
    }
    Ok(())
}

fn planes(data: Vec<f32>) -> Planes {
    Planes {
        width: 28,
        height: 28,
        channels: 1,
        data,
    }
}

fn add_noise(clean: &Planes, sigma: f32, rng: &mut ChaCha8Rng) -> Planes {
    let data = clean
        .data
        .iter()
        .map(|&v| {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let g = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * rng.random::<f32>()).cos();
            ((v + sigma * g).clamp(0.0, 1.0) * 255.0).round() / 255.0
        })
        .collect();
    planes(data)
}

/// 3×3 median, edges replicated.
fn median3(img: &Planes) -> Planes {
    let (w, h) = (img.width as i64, img.height as i64);
    let at = |x: i64, y: i64| img.data[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize];
    let mut data = Vec::with_capacity(img.data.len());
    for y in 0..h {
        for x in 0..w {
            let mut v = [0.0f32; 9];
            for (i, (dx, dy)) in (-1..=1)
                .flat_map(|dy| (-1..=1).map(move |dx| (dx, dy)))
                .enumerate()
            {
                v[i] = at(x + dx, y + dy);
            }
            v.sort_by(f32::total_cmp);
            data.push(v[4]);
        }
    }
    planes(data)
}

/// Each masked pixel takes the value of the nearest known pixel (Euclidean;
/// ties: first in row order).
fn nearest_fill(img: &Planes, missing: &[bool]) -> Planes {
    let w = img.width as i64;
    let known: Vec<(i64, i64, f32)> = (0..img.data.len())
        .filter(|&i| !missing[i])
        .map(|i| (i as i64 % w, i as i64 / w, img.data[i]))
        .collect();
    let data = (0..img.data.len())
        .map(|i| {
            if !missing[i] {
                return img.data[i];
            }
            let (x, y) = (i as i64 % w, i as i64 / w);
            known
                .iter()
                .min_by_key(|(kx, ky, _)| (kx - x).pow(2) + (ky - y).pow(2))
                .map_or(0.0, |k| k.2)
        })
        .collect();
    planes(data)
}

fn mean_psnr(clean: &[Planes], out: &[Planes]) -> f64 {
    clean
        .iter()
        .zip(out)
        .map(|(c, o)| restore::psnr(o.mse(c, None)))
        .sum::<f64>()
        / clean.len() as f64
}
