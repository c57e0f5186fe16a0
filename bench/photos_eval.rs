//! Search quality on real photographs: every embedding side by side, on the
//! same images, in one process.
//!
//! Rows (methods): the `photos` model, the model it replaced
//! (`photos-cifar32`), raw 32×32 pixels, an HSV colour histogram (8 hue × 4
//! saturation × 4 value bins of a 64×64 copy, normalised to sum 1,
//! square-rooted), and PCA of raw 64×64 pixels at the new embedding's length.
//! Models named in `PHOTOS_MODELS` (comma-separated names or files) replace
//! the two defaults, and `PHOTOS_HEADS` (`layers:dim:whitening;…`, e.g.
//! `2,3,4:128:0.25`, with an optional `:grid`) adds rows for heads fitted here, on the index set, to
//! the first model's pooled features: the head shapes that lost.
//!
//! Columns: kNN accuracy (k = 7, majority vote, exact L2) of queries against
//! an index, on
//! - Imagenette: val (3,925) against train (9,469);
//! - Intel scenes (`intel-scenes/test`): the first 70% of each class by
//!   file name as the index, the rest as queries;
//! - CIFAR-10: 10k test against 30k train (`cifar-10-jpeg/`);
//! - near-duplicates: the worst top-1 over the transforms of
//!   `bench/near_duplicates.rs`, 1,000 CIFAR-10 test images among 10,000.
//!
//! Run: `cargo bench --bench photos_eval`; `PHOTOS_SETS=imagenette,intel`
//! picks columns.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::DynamicImage;
use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::imageio::{self, DecodeLimits, Pixels, Prep};
use imgsearch::knn::{exact_knn, vote, Vectors, Weighting};
use imgsearch::model::head::{Head, HeadConfig};
use imgsearch::model::pca::Pca;
use imgsearch::model::Model;
use rayon::prelude::*;

#[path = "transforms.rs"]
mod transforms;

const K: usize = 7;

/// Images with class labels.
#[derive(Default)]
struct Labelled {
    images: Vec<DynamicImage>,
    labels: Vec<u16>,
}

/// An index set and the queries classified against it.
struct Task {
    name: &'static str,
    index: Labelled,
    queries: Labelled,
}

/// How a method turns images into vectors: `fit` sees the index images
/// first (for methods that learn from them), `embed` is then called on both.
trait Method<'a> {
    fn name(&self) -> String;
    fn fit(&mut self, _index: &[DynamicImage]) -> anyhow::Result<()> {
        Ok(())
    }
    fn embed(&self, images: &[DynamicImage]) -> anyhow::Result<(usize, Vec<f32>)>;
}

fn main() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(root) = dataset::data_root(manifest) else {
        println!("photos_eval: skipped, no dataset folder (set IMGSEARCH_DATA)");
        return Ok(());
    };
    let sets = std::env::var("PHOTOS_SETS")
        .unwrap_or_else(|_| "imagenette,intel,cifar10,near-duplicates".into());
    let sets: Vec<&str> = sets.split(',').collect();
    let models = std::env::var("PHOTOS_MODELS").unwrap_or_else(|_| "photos,photos-cifar32".into());
    let models: Vec<Model> = models
        .split(',')
        .map(Model::load)
        .collect::<Result<_, _>>()?;
    let dim = models[0].embedding_dim();
    encoder_speed(&models)?;

    let mut methods: Vec<Box<dyn Method<'_> + '_>> = Vec::new();
    for m in &models {
        methods.push(Box::new(Embedder(m)));
    }
    if let Ok(heads) = std::env::var("PHOTOS_HEADS") {
        for spec in heads.split(';').filter(|s| !s.is_empty()) {
            methods.push(Box::new(FittedHead::parse(&models[0], spec)?));
        }
    }
    methods.push(Box::new(RawPixels));
    methods.push(Box::new(HsvHistogram));
    methods.push(Box::new(PixelPca { dim, pca: None }));

    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for set in &sets {
        let t = Instant::now();
        let scores = match *set {
            "near-duplicates" => {
                let cifar = root.join("cifar-10-jpeg");
                let test = cifar_split(&cifar, Split::Test)?;
                near_duplicates(&mut methods, &test.images)?
            }
            name => {
                let task = load_task(&root, name)?;
                println!(
                    "{}: {} index images, {} queries (loaded in {:.0} s)",
                    task.name,
                    task.index.images.len(),
                    task.queries.images.len(),
                    t.elapsed().as_secs_f64()
                );
                let mut scores = Vec::new();
                for method in methods.iter_mut() {
                    let t = Instant::now();
                    let accuracy = knn_accuracy(method.as_mut(), &task)?;
                    println!(
                        "  {:<40} {:>6.2}%  ({:.0} s)",
                        method.name(),
                        100.0 * accuracy,
                        t.elapsed().as_secs_f64()
                    );
                    scores.push(accuracy);
                }
                scores
            }
        };
        columns.push((set.to_string(), scores));
    }

    println!("\n| method | {} |", sets.join(" | "));
    println!("|---|{}", "---:|".repeat(sets.len()));
    for (i, method) in methods.iter().enumerate() {
        let cells: Vec<String> = columns
            .iter()
            .map(|(set, s)| {
                if set == "near-duplicates" {
                    format!("{:.3}", s[i])
                } else {
                    format!("{:.1}%", 100.0 * s[i])
                }
            })
            .collect();
        println!("| {} | {} |", method.name(), cells.join(" | "));
    }
    Ok(())
}

/// Images per second through each model's `embed` (already prepared
/// pixels, batches of 256, all cores), best of three runs of 4,096 images.
fn encoder_speed(models: &[Model]) -> anyhow::Result<()> {
    println!("| model | input | embedding | images/s (embed only) |");
    println!("|---|---|---:|---:|");
    for model in models {
        let shape = model.input_shape();
        let px: Vec<Pixels> = (0..4096)
            .map(|i| Pixels {
                size: shape.size,
                channels: shape.channels,
                data: (0..shape.size * shape.size * shape.channels)
                    .map(|j| ((i * 31 + j * 17) % 251) as u8)
                    .collect(),
            })
            .collect();
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            model.embed(&px)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "| `{}` | {}x{}x{}, {} | {} | {:.0} |",
            model.name,
            shape.size,
            shape.size,
            shape.channels,
            shape.prep.as_str(),
            model.embedding_dim(),
            px.len() as f64 / best
        );
    }
    println!();
    Ok(())
}

/// The `k` nearest index vectors to each query (exact L2).
fn nearest(
    dim: usize,
    index: &[f32],
    queries: &[f32],
    k: usize,
) -> anyhow::Result<Vec<Vec<(usize, f32)>>> {
    let (index, queries) = (Vectors { dim, data: index }, Vectors { dim, data: queries });
    Ok(exact_knn(&index, &queries, k)?)
}

/// Share of queries whose k nearest index images vote for their class.
fn knn_accuracy(method: &mut dyn Method<'_>, task: &Task) -> anyhow::Result<f64> {
    method.fit(&task.index.images)?;
    let (dim, index) = method.embed(&task.index.images)?;
    let (_, queries) = method.embed(&task.queries.images)?;
    let found = nearest(dim, &index, &queries, K)?;
    let right = found
        .iter()
        .zip(&task.queries.labels)
        .filter(|(hits, &label)| {
            let ballot = vote(
                hits.iter().map(|&(i, d)| (task.index.labels[i], d)),
                Weighting::Majority,
            );
            ballot.is_some_and(|b| *b.winner() == label)
        })
        .count();
    Ok(right as f64 / task.queries.labels.len() as f64)
}

/// The worst top-1 over the near-duplicate transforms: the first 1,000
/// images transformed, each searching all of `images` for its original.
fn near_duplicates<'a>(
    methods: &mut [Box<dyn Method<'a> + 'a>],
    images: &[DynamicImage],
) -> anyhow::Result<Vec<f64>> {
    let targets = 1000.min(images.len());
    let mut worst = vec![1.0f64; methods.len()];
    let copies: Vec<Vec<DynamicImage>> = transforms::TRANSFORMS
        .iter()
        .map(|(_, t)| images[..targets].par_iter().map(t).collect())
        .collect();
    for (m, method) in methods.iter_mut().enumerate() {
        method.fit(images)?;
        let (dim, index) = method.embed(images)?;
        for ((name, _), copies) in transforms::TRANSFORMS.iter().zip(&copies) {
            let (_, queries) = method.embed(copies)?;
            let found = nearest(dim, &index, &queries, 1)?;
            let hits = found
                .iter()
                .enumerate()
                .filter(|(i, f)| f.first().is_some_and(|h| h.0 == *i))
                .count();
            let top1 = hits as f64 / targets as f64;
            println!(
                "  near-duplicates {:<40} {name:<22} top-1 {top1:.3}",
                method.name()
            );
            worst[m] = worst[m].min(top1);
        }
    }
    Ok(worst)
}

fn load_task(root: &Path, name: &str) -> anyhow::Result<Task> {
    Ok(match name {
        "imagenette" => Task {
            name: "imagenette",
            index: folder_classes(&root.join("imagenette/train"), |_, _| true)?,
            queries: folder_classes(&root.join("imagenette/val"), |_, _| true)?,
        },
        "intel" => {
            // Per class, files sorted by name: the first 70% are the index.
            let dir = root.join("intel-scenes/test");
            let in_index = |i: usize, n: usize| i < n * 7 / 10;
            Task {
                name: "intel",
                index: folder_classes(&dir, in_index)?,
                queries: folder_classes(&dir, |i, n| !in_index(i, n))?,
            }
        }
        "cifar10" => {
            let dir = root.join("cifar-10-jpeg");
            Task {
                name: "cifar10",
                index: cifar_split(&dir, Split::Train)?,
                queries: cifar_split(&dir, Split::Test)?,
            }
        }
        other => {
            anyhow::bail!("unknown set `{other}` (imagenette, intel, cifar10, near-duplicates)")
        }
    })
}

/// Images in class folders (`dir/CLASS/*`), classes in name order; `keep`
/// sees each file's position among its class's sorted names and their count.
fn folder_classes(dir: &Path, keep: impl Fn(usize, usize) -> bool) -> anyhow::Result<Labelled> {
    let sorted_entries = |dir: &Path| -> std::io::Result<Vec<PathBuf>> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        Ok(entries)
    };
    let mut classes = sorted_entries(dir)?;
    classes.retain(|p| p.is_dir());
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let names = sorted_entries(class)?;
        let n = names.len();
        files.extend(
            names
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep(*i, n))
                .map(|(_, p)| (p, label as u16)),
        );
    }
    let images = files
        .par_iter()
        .map(|(p, _)| imageio::decode_file(p, DecodeLimits::default()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Labelled {
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
    })
}

fn cifar_split(dir: &Path, split: Split) -> anyhow::Result<Labelled> {
    let ds = dataset::load(DatasetName::Cifar10, dir, split, None)?;
    Ok(Labelled {
        images: (0..ds.len())
            .map(|i| imageio::planar_to_image(ds.image(i), ds.size, ds.channels))
            .collect(),
        labels: ds.labels.iter().map(|&l| l as u16).collect(),
    })
}

/// Images to pixels of one shape, in parallel.
fn prepare(images: &[DynamicImage], size: usize, prep: Prep) -> anyhow::Result<Vec<Pixels>> {
    Ok(images
        .par_iter()
        .map(|im| imageio::to_pixels_with(im, size, 3, prep, Path::new("image")))
        .collect::<Result<_, _>>()?)
}

/// A model's own embeddings, prepared the way its header says.
struct Embedder<'a>(&'a Model);

impl<'a> Method<'a> for Embedder<'a> {
    fn name(&self) -> String {
        format!(
            "model `{}` ({} floats)",
            self.0.name,
            self.0.embedding_dim()
        )
    }

    fn embed(&self, images: &[DynamicImage]) -> anyhow::Result<(usize, Vec<f32>)> {
        let shape = self.0.input_shape();
        let px = prepare(images, shape.size, shape.prep)?;
        let z = self.0.embed(&px)?.into_iter().flatten().collect();
        Ok((self.0.embedding_dim(), z))
    }
}

/// A head of another shape fitted here on the index images' pooled features.
struct FittedHead<'a> {
    model: &'a Model,
    cfg: HeadConfig,
    head: Option<Head>,
}

impl<'a> FittedHead<'a> {
    fn parse(model: &'a Model, spec: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = spec.split(':').collect();
        anyhow::ensure!(
            (3..=5).contains(&parts.len()),
            "head `{spec}` is not layers:dim:whitening[:grid[:gram layers]]"
        );
        let cfg = HeadConfig {
            layers: parts[0]
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()?,
            dim: parts[1].parse()?,
            whitening: parts[2].parse()?,
            grid: parts.get(3).map_or(Ok(1), |g| g.parse())?,
            gram: parts.get(4).map_or(Ok(Vec::new()), |g| {
                g.split(',').map(str::parse).collect::<Result<_, _>>()
            })?,
        };
        cfg.validate(&model.info.arch.widths)
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            model,
            cfg,
            head: None,
        })
    }

    fn pooled(&self, images: &[DynamicImage]) -> anyhow::Result<Vec<f32>> {
        let shape = self.model.input_shape();
        let px = prepare(images, shape.size, shape.prep)?;
        Ok(self.model.pooled(&px, &self.cfg)?)
    }
}

impl<'a> Method<'a> for FittedHead<'a> {
    fn name(&self) -> String {
        format!(
            "`{}` head: blocks {:?}, grid {}, Gram {:?}, {} floats, whitening {}",
            self.model.name,
            self.cfg.layers,
            self.cfg.grid,
            self.cfg.gram,
            self.cfg.dim,
            self.cfg.whitening
        )
    }

    fn fit(&mut self, index: &[DynamicImage]) -> anyhow::Result<()> {
        let features = self.cfg.features(&self.model.info.arch.widths);
        self.head = Some(Head::fitted(&self.cfg, &self.pooled(index)?, features)?);
        Ok(())
    }

    fn embed(&self, images: &[DynamicImage]) -> anyhow::Result<(usize, Vec<f32>)> {
        let pooled = self.pooled(images)?;
        let features = self.cfg.features(&self.model.info.arch.widths);
        let t = candle_core::Tensor::from_vec(
            pooled,
            (images.len(), features),
            &candle_core::Device::Cpu,
        )?;
        let head = self.head.as_ref().expect("fitted first");
        Ok((self.cfg.dim, head.project(&t)?.flatten_all()?.to_vec1()?))
    }
}

/// Raw 32×32 RGB pixels in `[0, 1]`.
struct RawPixels;

impl Method<'_> for RawPixels {
    fn name(&self) -> String {
        "raw pixels 32x32 (3072 floats)".into()
    }

    fn embed(&self, images: &[DynamicImage]) -> anyhow::Result<(usize, Vec<f32>)> {
        let px = prepare(images, 32, Prep::Squash)?;
        Ok((3072, px.iter().flat_map(|p| p.to_unit_f32()).collect()))
    }
}

/// PCA of raw 64×64 pixels, fitted on the index images.
struct PixelPca {
    dim: usize,
    pca: Option<Pca>,
}

impl PixelPca {
    fn raw(images: &[DynamicImage]) -> anyhow::Result<Vec<f32>> {
        let px = prepare(images, 64, Prep::Crop)?;
        Ok(px.iter().flat_map(|p| p.to_unit_f32()).collect())
    }
}

impl Method<'_> for PixelPca {
    fn name(&self) -> String {
        format!("PCA of raw pixels 64x64 ({} floats)", self.dim)
    }

    fn fit(&mut self, index: &[DynamicImage]) -> anyhow::Result<()> {
        // 10,000 images are plenty for the leading axes.
        let sample = &index[..index.len().min(10_000)];
        self.pca = Some(Pca::fit(&Self::raw(sample)?, 64 * 64 * 3, self.dim)?);
        Ok(())
    }

    fn embed(&self, images: &[DynamicImage]) -> anyhow::Result<(usize, Vec<f32>)> {
        let pca = self.pca.as_ref().expect("fitted first");
        Ok((self.dim, pca.project(&Self::raw(images)?)?))
    }
}

/// HSV histogram of a 64×64 copy: 8 hue × 4 saturation × 4 value bins,
/// normalised to sum 1, square-rooted.
struct HsvHistogram;

impl Method<'_> for HsvHistogram {
    fn name(&self) -> String {
        "HSV colour histogram (128 bins)".into()
    }

    fn embed(&self, images: &[DynamicImage]) -> anyhow::Result<(usize, Vec<f32>)> {
        let px = prepare(images, 64, Prep::Squash)?;
        Ok((
            128,
            px.par_iter()
                .flat_map_iter(|p| hsv_histogram(&p.data))
                .collect(),
        ))
    }
}

fn hsv_histogram(planar: &[u8]) -> Vec<f32> {
    let plane = planar.len() / 3;
    let mut bins = vec![0f32; 128];
    for i in 0..plane {
        let (r, g, b) = (
            planar[i] as f32 / 255.0,
            planar[plane + i] as f32 / 255.0,
            planar[2 * plane + i] as f32 / 255.0,
        );
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        let hue = if delta == 0.0 {
            0.0
        } else if max == r {
            ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        } / 6.0;
        let saturation = if max == 0.0 { 0.0 } else { delta / max };
        let bin = |v: f32, n: usize| ((v * n as f32) as usize).min(n - 1);
        bins[bin(hue, 8) * 16 + bin(saturation, 4) * 4 + bin(max, 4)] += 1.0;
    }
    bins.iter().map(|c| (c / plane as f32).sqrt()).collect()
}
