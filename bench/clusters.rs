//! Clusters against class labels: k-means (k = 10, seed 0) purity and NMI
//! for every representation of the same images, in one process, with the
//! seconds each clustering took.
//!
//! Rows: the model's embedding clustered in the 8-D neighbour space (the
//! `clusters` default) and as it is; raw pixels at the model's input size;
//! PCA of those pixels to the embedding's length, as it is and in the
//! neighbour space (so the layout's gain and the embedding's are told
//! apart). Sets: MNIST test (10,000, `digits`), Fashion-MNIST test (10,000,
//! `fashion`), Imagenette val (3,925, `photos`, prepared as the model
//! prepares its input).
//!
//! Run: `cargo bench --bench clusters`; `CLUSTER_SETS=mnist,fashion` picks
//! sets.

use std::path::{Path, PathBuf};
use std::time::Instant;

use imgsearch::clusters::{self, Space};
use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::imageio::{DecodeLimits, Pixels};
use imgsearch::model::pca::Pca;
use imgsearch::model::Model;
use imgsearch::prepare;
use rayon::prelude::*;

const K: usize = 10;

struct Set {
    name: &'static str,
    model: Model,
    pixels: Vec<Pixels>,
    labels: Vec<Option<String>>,
}

fn idx_set(
    name: &'static str,
    dataset: DatasetName,
    dir: &Path,
    model: &str,
) -> anyhow::Result<Set> {
    let ds = dataset::load(dataset, dir, Split::Test, None)?;
    Ok(Set {
        name,
        model: Model::load(model)?,
        pixels: (0..ds.len()).map(|i| ds.pixels(i)).collect(),
        labels: (0..ds.len())
            .map(|i| Some(ds.class_name(i).to_string()))
            .collect(),
    })
}

/// Every image under `dir/<class>/`, prepared for `model` as ingest does.
fn folder_set(name: &'static str, dir: &Path, model: &str) -> anyhow::Result<Set> {
    let model = Model::load(model)?;
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for class in std::fs::read_dir(dir)? {
        let class = class?.path();
        if class.is_dir() {
            let label = class
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            for file in std::fs::read_dir(&class)? {
                files.push((file?.path(), label.clone()));
            }
        }
    }
    files.sort();
    let shape = model.input_shape();
    let pixels = files
        .par_iter()
        .map(|(p, _)| prepare::file(p, shape, DecodeLimits::default()).map(|(_, img)| img.pixels))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Set {
        name,
        model,
        pixels,
        labels: files.into_iter().map(|(_, l)| Some(l)).collect(),
    })
}

fn main() -> anyhow::Result<()> {
    let root = dataset::data_root(Path::new(env!("CARGO_MANIFEST_DIR"))).ok_or_else(|| {
        anyhow::anyhow!("no dataset folder: set IMGSEARCH_DATA or provide ../shared/data")
    })?;
    let wanted =
        std::env::var("CLUSTER_SETS").unwrap_or_else(|_| "mnist,fashion,imagenette".into());
    println!("| set | images | representation | floats | purity | NMI | seconds |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for name in wanted.split(',') {
        let set = match name {
            "mnist" => idx_set(
                "MNIST test",
                DatasetName::Mnist,
                &root.join("mnist"),
                "digits",
            )?,
            "fashion" => idx_set(
                "Fashion-MNIST test",
                DatasetName::FashionMnist,
                &root.join("fashion-mnist"),
                "fashion",
            )?,
            "imagenette" => folder_set("Imagenette val", &root.join("imagenette/val"), "photos")?,
            other => anyhow::bail!("unknown set `{other}` (mnist, fashion, imagenette)"),
        };
        let started = Instant::now();
        let embedding = set.model.embed(&set.pixels)?;
        let embed_seconds = started.elapsed().as_secs_f64();
        let raw: Vec<Vec<f32>> = set
            .pixels
            .iter()
            .map(|p| p.to_unit_f32().collect())
            .collect();
        let dim = embedding[0].len();
        let flat: Vec<f32> = raw.iter().flatten().copied().collect();
        let pca = Pca::fit(&flat, raw[0].len(), dim)?;
        let reduced: Vec<Vec<f32>> = pca
            .project(&flat)?
            .chunks(dim)
            .map(|c| c.to_vec())
            .collect();
        let rows: [(String, &[Vec<f32>], Space); 5] = [
            (
                format!("`{}` embedding, neighbour space", set.model.name),
                &embedding,
                Space::Neighbours,
            ),
            (
                format!("`{}` embedding", set.model.name),
                &embedding,
                Space::Embedding,
            ),
            ("raw pixels".into(), &raw, Space::Embedding),
            (
                format!("PCA of raw pixels to {dim}"),
                &reduced,
                Space::Embedding,
            ),
            (
                format!("PCA of raw pixels to {dim}, neighbour space"),
                &reduced,
                Space::Neighbours,
            ),
        ];
        for (what, points, space) in rows {
            let started = Instant::now();
            let (clustering, _) =
                clusters::cluster(points, Some(K), space.default_restarts(), 0, space)?;
            let seconds = started.elapsed().as_secs_f64();
            let (purity, nmi) = clusters::agreement(&clustering.assignment, &set.labels)
                .ok_or_else(|| anyhow::anyhow!("{}: no labels", set.name))?;
            println!(
                "| {} | {} | {what} | {} | {purity:.3} | {nmi:.3} | {seconds:.1} |",
                set.name,
                points.len(),
                points[0].len()
            );
        }
        eprintln!(
            "{}: embedding {} images took {embed_seconds:.1}s",
            set.name,
            set.pixels.len()
        );
    }
    Ok(())
}
