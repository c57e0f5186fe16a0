//! The autoencoder through the library: training, determinism, the model
//! file's round trip and its refusals.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use imgsearch::imageio::{Pixels, Prep};
use imgsearch::model::autoencoder::Autoencoder;
use imgsearch::model::head::HeadConfig;
use imgsearch::model::{self, file, ArchConfig, Loss, Model, TrainConfig, TrainSet};

const SIZE: usize = 16;

/// Small structured images: bright rectangles at varying places on a dark
/// gradient, so there is something to learn.
fn synthetic_images(n: usize) -> Vec<Pixels> {
    (0..n)
        .map(|i| {
            let (x0, y0) = ((i * 5) % 10, (i * 3) % 9);
            let (w, h) = (3 + i % 4, 3 + (i / 4) % 4);
            let mut data = vec![0u8; SIZE * SIZE];
            for y in 0..SIZE {
                for x in 0..SIZE {
                    let inside = (x0..x0 + w).contains(&x) && (y0..y0 + h).contains(&y);
                    data[y * SIZE + x] = if inside {
                        230
                    } else {
                        (x * 4 + (i % 7) * 3) as u8
                    };
                }
            }
            Pixels {
                size: SIZE,
                channels: 1,
                data,
            }
        })
        .collect()
}

fn train_set(images: &[Pixels]) -> TrainSet {
    let mut set = TrainSet::new(SIZE, 1);
    for px in images {
        set.push(&px.data);
    }
    set
}

fn config(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        arch: ArchConfig {
            input_size: SIZE,
            channels: 1,
            latent: 8,
            widths: vec![8, 16],
        },
        epochs,
        batch_size: 16,
        learning_rate: 3e-3,
        weight_decay: 1e-4,
        loss: Loss::Bce,
        noise: 0.0,
        normalization: model::Normalization::Unit,
        prep: Prep::Squash,
        augment: false,
        contrastive: 0.0,
        head: None,
        validation_fraction: 0.25,
        seed,
    }
}

#[test]
fn training_lowers_validation_loss_and_keeps_best() {
    let set = train_set(&synthetic_images(128));
    let trained = train_quietly(&config(6, 7), &set, "synthetic").unwrap();
    let h = &trained.history;
    assert_eq!(h.len(), 6);
    let first = h[0].validation_loss;
    let best = h
        .iter()
        .map(|r| r.validation_loss)
        .fold(f64::INFINITY, f64::min);
    assert!(
        best < first * 0.9,
        "validation loss {first} -> {best}: did not learn"
    );
    let t = &trained.info.training;
    assert_eq!(
        t.validation_loss, best,
        "the header must record the kept (best) epoch"
    );
    assert!(h[t.best_epoch - 1].best);
}

#[test]
fn denoising_training_runs_on_noisy_inputs() {
    let set = train_set(&synthetic_images(64));
    let mut cfg = config(2, 3);
    cfg.noise = 0.2;
    cfg.loss = Loss::Mse;
    let trained = train_quietly(&cfg, &set, "synthetic").unwrap();
    assert_eq!(trained.info.training.noise, 0.2);
    assert_eq!(trained.info.loss, "mse");
    assert!(trained
        .history
        .iter()
        .all(|r| r.validation_loss.is_finite()));
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let set = train_set(&synthetic_images(48));
    let a = train_quietly(&config(2, 11), &set, "s").unwrap();
    let b = train_quietly(&config(2, 11), &set, "s").unwrap();
    let c = train_quietly(&config(2, 12), &set, "s").unwrap();
    let same = |x: &HashMap<String, Tensor>, y: &HashMap<String, Tensor>| {
        x.iter().all(|(k, t)| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == y[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
    };
    assert!(
        same(&a.tensors, &b.tensors),
        "same seed gave different weights"
    );
    assert!(
        !same(&a.tensors, &c.tensors),
        "different seeds gave the same weights"
    );
}

#[test]
fn save_then_load_gives_bit_identical_outputs() {
    let images = synthetic_images(40);
    let trained = train_quietly(&config(1, 5), &train_set(&images), "s").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    trained.save(&path).unwrap();

    // The network as it was in memory after training.
    let vb = VarBuilder::from_tensors(trained.tensors.clone(), DType::F32, &Device::Cpu);
    let net = Autoencoder::new(&trained.info.arch, vb).unwrap();
    let input: Vec<f32> = images.iter().flat_map(|p| p.to_unit_f32()).collect();
    let xs = Tensor::from_vec(input, (images.len(), 1, SIZE, SIZE), &Device::Cpu).unwrap();
    let before = net.encoder.forward(&xs).unwrap().to_vec2::<f32>().unwrap();

    let loaded = Model::load(path.to_str().unwrap()).unwrap();
    assert_eq!(loaded.info, trained.info);
    let after = loaded.embed(&images).unwrap();
    assert_eq!(before, after, "latents changed across save/load");

    let recon = loaded.reconstruct(&images[..3]).unwrap();
    assert_eq!(recon.len(), 3);
    assert!(recon
        .iter()
        .all(|(p, e)| p.data.len() == SIZE * SIZE && e.is_finite() && *e >= 0.0));
}

#[test]
fn refuses_corrupt_and_mismatched_model_files() {
    let trained = train_quietly(&config(1, 5), &train_set(&synthetic_images(8)), "s").unwrap();
    let err = |bytes: Vec<u8>| {
        Model::from_bytes(bytes, "test.safetensors")
            .err()
            .expect("must be refused")
            .to_string()
    };

    assert!(err(b"definitely not a model".to_vec()).contains("not a safetensors file"));

    // Valid safetensors, no imgsearch header.
    let no_header = safetensors::tensor::serialize(
        trained.tensors.iter().map(|(k, t)| {
            let bytes: Vec<u8> = t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (k.clone(), OwnedView(t.dims().to_vec(), bytes))
        }),
        None,
    )
    .unwrap();
    assert!(err(no_header).contains("no imgsearch header"));

    // Header claims a different shape than the weights have.
    let mut info = trained.info.clone();
    info.arch.latent = 16;
    let mismatched = file::serialize(&trained.tensors, &info).unwrap();
    let msg = err(mismatched);
    assert!(msg.contains("weights do not match"), "{msg}");

    // Unknown format version.
    let mut bytes = trained.to_bytes().unwrap();
    let key = b"\"format_version\":\"2\"";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("version in header");
    bytes[at + key.len() - 2] = b'9';
    assert!(err(bytes).contains("format version 9"));

    // Truncated file.
    let bytes = trained.to_bytes().unwrap();
    assert!(err(bytes[..bytes.len() / 2].to_vec()).contains("test.safetensors"));
}

/// Minimal owned tensor view for writing a header-less safetensors file.
struct OwnedView(Vec<usize>, Vec<u8>);

impl safetensors::View for OwnedView {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.1)
    }
    fn data_len(&self) -> usize {
        self.1.len()
    }
}

#[test]
fn embedded_defaults_load_and_describe_themselves() {
    for (name, embedded) in model::default_models() {
        assert!(
            embedded,
            "default model `{name}` is not embedded; run scripts/train-default-models.sh"
        );
        let m = Model::load(name).unwrap();
        assert_eq!(m.info.architecture, file::ARCHITECTURE);
        assert!(m.info.training.epochs > 0 && m.info.training.validation_loss.is_finite());
    }
    let err = Model::load("no-such-model").err().unwrap().to_string();
    assert!(
        err.contains("digits, digits-denoise, fashion, photos, photos-cifar32"),
        "{err}"
    );
}

#[test]
fn augmented_training_lowers_validation_loss() {
    let set = train_set(&synthetic_images(128));
    let mut cfg = config(6, 7);
    cfg.augment = true;
    let trained = train_quietly(&cfg, &set, "synthetic").unwrap();
    let h = &trained.history;
    let best = h
        .iter()
        .map(|r| r.validation_loss)
        .fold(f64::INFINITY, f64::min);
    assert!(
        best < h[0].validation_loss * 0.9,
        "augmented validation loss {} -> {best}: did not learn",
        h[0].validation_loss
    );
    assert!(trained.info.training.augment);
}

#[test]
fn contrastive_training_records_its_weight_and_saves_no_projector() {
    let set = train_set(&synthetic_images(64));
    let mut cfg = config(2, 3);
    cfg.contrastive = 0.5;
    // The contrast term compares augmented views, so it needs augmentation.
    let err = train_quietly(&cfg, &set, "s").err().expect("refused");
    assert!(err.to_string().contains("augmentation"), "{err}");
    cfg.augment = true;
    let trained = train_quietly(&cfg, &set, "s").unwrap();
    assert_eq!(trained.info.training.contrastive, 0.5);
    // Only the autoencoder's tensors are kept: the projector is training-only.
    assert!(
        trained
            .tensors
            .keys()
            .all(|name| name.starts_with("encoder.") || name.starts_with("decoder.")),
        "{:?}",
        trained.tensors.keys().collect::<Vec<_>>()
    );
    // Its training loss adds the contrast term to the reconstruction, which
    // the validation loss measures alone.
    let h = &trained.history;
    assert!(h.iter().all(|r| r.train_loss > r.validation_loss), "{h:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    trained.save(&path).unwrap();
    let loaded = Model::load(path.to_str().unwrap()).unwrap();
    assert_eq!(loaded.info.training.contrastive, 0.5);
}

#[test]
fn head_is_fitted_saved_and_embeds_unit_vectors() {
    let images = synthetic_images(64);
    let mut cfg = config(1, 5);
    cfg.prep = Prep::Crop;
    cfg.head = Some(HeadConfig {
        layers: vec![1, 2],
        dim: 12,
        whitening: 0.25,
        grid: 2,
        gram: vec![1],
    });
    let trained = train_quietly(&cfg, &train_set(&images), "s").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    trained.save(&path).unwrap();
    let loaded = Model::load(path.to_str().unwrap()).unwrap();
    assert_eq!(loaded.info.prep, Prep::Crop);
    assert_eq!(loaded.input_shape().prep, Prep::Crop);
    assert_eq!((loaded.embedding_dim(), loaded.latent_dim()), (12, 8));
    let z = loaded.embed(&images).unwrap();
    for v in &z {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(v.len() == 12 && (norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // Scoring embeds the same way, and keeps reconstructing from the latent.
    let scored = loaded.embed_and_score(&images[..4]).unwrap();
    assert_eq!(scored[0].0, z[0]);
    assert_eq!(loaded.latents(&images[..1]).unwrap()[0].len(), 8);
    // Different images get different embeddings.
    assert!(z[0] != z[1]);

    // A head whose tensors are missing is refused.
    let mut tensors = trained.tensors.clone();
    tensors.remove("head.projection");
    let bytes = file::serialize(&tensors, &trained.info).unwrap();
    let msg = Model::from_bytes(bytes, "t").err().unwrap().to_string();
    assert!(msg.contains("weights do not match"), "{msg}");
}

#[test]
fn version_one_files_without_preparation_load_as_before() {
    let images = synthetic_images(16);
    let trained = train_quietly(&config(1, 5), &train_set(&images), "s").unwrap();
    // The header as version 1 wrote it: no `prep`, no `embedding`, no `augment`.
    let mut json = serde_json::to_value(&trained.info).unwrap();
    json.as_object_mut().unwrap().remove("prep");
    json["training"].as_object_mut().unwrap().remove("augment");
    let bytes = trained.to_bytes().unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut header = meta.metadata().clone().unwrap();
    header.insert("format_version".into(), "1".into());
    assert!(header.remove("weights_blake3").is_some());
    header.insert("model".into(), json.to_string());
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v1 = safetensors::tensor::serialize(tensors.tensors(), Some(header)).unwrap();

    let old = Model::from_bytes(v1, "v1.safetensors").unwrap();
    assert_eq!(old.info.prep, Prep::Squash);
    assert!(old.info.embedding.is_none() && !old.info.training.augment);
    assert_eq!(
        old.embed(&images).unwrap(),
        trained_embeddings(&trained, &images)
    );
    // The shipped CIFAR model is such a file.
    let cifar = Model::load("photos-cifar32").unwrap();
    assert_eq!((cifar.info.prep, cifar.embedding_dim()), (Prep::Squash, 64));
}

#[test]
fn a_model_file_with_flipped_weights_is_refused_as_damaged() {
    let trained = train_quietly(&config(1, 5), &train_set(&synthetic_images(16)), "s").unwrap();
    let bytes = trained.to_bytes().unwrap();
    assert!(Model::from_bytes(bytes.clone(), "good").is_ok());
    // One bit of one weight: still a valid safetensors file of the right
    // shapes, which only the checksum can tell apart.
    for at in [bytes.len() - 1, bytes.len() / 2 + bytes.len() / 4] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        let msg = Model::from_bytes(damaged, "m.safetensors")
            .err()
            .expect("refused")
            .to_string();
        assert!(
            msg.contains("m.safetensors") && msg.contains("damaged"),
            "{msg}"
        );
    }
    // A header claiming a huge network is compared with the tensors by
    // name and shape before anything is built: refused at once, where
    // building it first would try to allocate terabytes.
    let mut info = trained.info.clone();
    info.arch.input_size = 1 << 15;
    info.arch.widths = vec![1024];
    info.arch.latent = 1024;
    let huge = file::serialize(&trained.tensors, &info).unwrap();
    let msg = Model::from_bytes(huge, "huge")
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("weights do not match"), "{msg}");
    // The shipped defaults predate the checksum and load unchecked.
    assert!(Model::load("photos-cifar32").is_ok());
}

fn trained_embeddings(trained: &model::TrainedModel, images: &[Pixels]) -> Vec<Vec<f32>> {
    let bytes = trained.to_bytes().unwrap();
    Model::from_bytes(bytes, "new")
        .unwrap()
        .embed(images)
        .unwrap()
}

/// Trains with no progress reporting and no per-epoch hook.
fn train_quietly(
    cfg: &model::TrainConfig,
    set: &model::TrainSet,
    data_name: &str,
) -> Result<model::TrainedModel, model::train::TrainError> {
    model::train::train(
        cfg,
        set,
        data_name,
        &imgsearch::progress::NoProgress,
        |_| {},
    )
}
