//! End to end through the `imgsearch` binary on real image files.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::common::{assert_ok, bin, data, json_of, run};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn embed_png_and_jpeg_from_an_empty_directory() {
    // Only the two images, nothing else: the weights must come from the binary.
    let dir = tempfile::tempdir().unwrap();
    for f in ["cat.png", "airplane.jpg"] {
        std::fs::copy(samples().join(f), dir.path().join(f)).unwrap();
    }
    let embed = || {
        run(bin()
            .current_dir(dir.path())
            .args(["embed", "cat.png", "airplane.jpg", "--json"]))
    };
    let out = embed();
    assert_ok(&out);
    let v = json_of(&out);
    assert_eq!(v["model"]["name"], "photos");
    let latent = v["model"]["latent"].as_u64().unwrap() as usize;
    let embs = v["embeddings"].as_array().unwrap();
    assert_eq!(embs.len(), 2);
    for e in embs {
        let z = e["latent"].as_array().unwrap();
        assert_eq!(z.len(), latent);
        assert!(z.iter().all(|x| x.as_f64().unwrap().is_finite()));
    }
    assert_ne!(embs[0]["latent"], embs[1]["latent"]);
    // Same input, same output.
    assert_eq!(json_of(&embed())["embeddings"], v["embeddings"]);

    // A grayscale default model on a digit; plain output is one line per image.
    std::fs::copy(samples().join("digit-7.png"), dir.path().join("7.png")).unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["embed", "--model", "digits", "7.png"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (path, values) = text.trim_end().split_once('\t').unwrap();
    assert_eq!(path, "7.png");
    assert_eq!(values.split(' ').count(), 16);
}

#[test]
fn embed_reports_bad_files_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let good = samples().join("ship.png");
    let out = bin()
        .args(["embed", "--json"])
        .arg(&good)
        .arg(&bad)
        .arg(&empty)
        .arg("missing.png")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "partial success exit code");
    let v = json_of(&out);
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 1);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.png")
            && stderr.contains("empty file")
            && stderr.contains("missing.png"),
        "{stderr}"
    );

    let out = bin().args(["embed"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "nothing embedded is a failure");
}

#[test]
fn embed_refuses_a_bad_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.safetensors");
    std::fs::write(&fake, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}        ").unwrap();
    let out = bin()
        .args(["embed", "--model"])
        .arg(&fake)
        .arg(samples().join("cat.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fake.safetensors"), "{stderr}");
    let out = bin()
        .args(["embed", "--model", "nonesuch", "x.png"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model named `nonesuch`"));
}

#[test]
fn train_then_embed_with_the_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(imgs.join("sub")).unwrap();
    for i in 0..36u32 {
        let img = image::RgbImage::from_fn(24 + i % 5, 20, |x, y| {
            image::Rgb([
                (x * 9 + i * 7) as u8,
                (y * 11) as u8,
                if (x / 6 + i) % 2 == 0 { 220 } else { 30 },
            ])
        });
        let name = if i % 2 == 0 {
            format!("sub/{i}.png")
        } else {
            format!("{i}.jpg")
        };
        img.save(imgs.join(name)).unwrap();
    }
    std::fs::write(imgs.join("notes.txt"), "not an image, ignored").unwrap();
    std::fs::write(imgs.join("bad.gif"), "not a gif").unwrap();
    let model = dir.path().join("m.safetensors");
    let out = bin()
        .arg("train")
        .arg(&imgs)
        .arg("--out")
        .arg(&model)
        .args([
            "--size",
            "16",
            "--channels",
            "3",
            "--latent",
            "8",
            "--widths",
            "8,16",
        ])
        .args(["--epochs", "3", "--batch", "8", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "one file skipped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(v["history"].as_array().unwrap().len(), 3);
    assert_eq!(v["model"]["training"]["images"], 36);
    assert!(v["skipped"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("bad.gif"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.gif"));

    let out = bin()
        .args(["embed", "--json", "--model"])
        .arg(&model)
        .arg(imgs.join("1.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        json_of(&out)["embeddings"][0]["latent"]
            .as_array()
            .unwrap()
            .len(),
        8
    );

    // A shape that cannot be built is refused before any work.
    let out = bin()
        .arg("train")
        .arg(&imgs)
        .arg("--out")
        .arg(&model)
        .args(["--size", "30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be halved"));
}

#[test]
fn export_mnist_counts_and_first_pixels() {
    let Some(src) = data("mnist") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["dataset", "export", "mnist"])
        .arg(&src)
        .arg("--out")
        .arg(dir.path())
        .args(["--limit", "300", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let report = json_of(&out);
    assert_eq!(report["images"], 300);

    // Counts per class folder equal the label file's, read here independently.
    let labels = gunzip(&src.join("train-labels-idx1-ubyte.gz"));
    for class in 0..10u8 {
        let want = labels[8..308].iter().filter(|&&l| l == class).count();
        let have = std::fs::read_dir(dir.path().join(class.to_string()))
            .unwrap()
            .count();
        assert_eq!(have, want, "class {class}");
        assert_eq!(report["per_class"][class.to_string()], want);
    }
    // The first image's pixels are the IDX bytes.
    let images = gunzip(&src.join("train-images-idx3-ubyte.gz"));
    let first = dir.path().join(labels[8].to_string()).join("00000.png");
    let png = image::open(&first).unwrap().to_luma8();
    assert_eq!(png.dimensions(), (28, 28));
    assert_eq!(png.as_raw().as_slice(), &images[16..16 + 784]);
}

#[test]
fn export_cifar10_and_fashion_class_folders() {
    if let Some(src) = data("cifar-10") {
        let dir = tempfile::tempdir().unwrap();
        let out = bin()
            .args(["dataset", "export", "cifar10"])
            .arg(&src)
            .arg("--out")
            .arg(dir.path())
            .args(["--split", "test", "--limit", "40"])
            .output()
            .unwrap();
        assert_ok(&out);
        let records = gunzip(&src.join("test_batch.first1000.bin.gz"));
        let classes = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ];
        let total: usize = classes
            .iter()
            .map(|c| std::fs::read_dir(dir.path().join(c)).unwrap().count())
            .sum();
        assert_eq!(total, 40);
        let first = image::open(
            dir.path()
                .join(classes[records[0] as usize])
                .join("00000.png"),
        )
        .unwrap()
        .to_rgb8();
        for (i, px) in first.pixels().enumerate() {
            assert_eq!(
                px.0,
                [records[1 + i], records[1 + 1024 + i], records[1 + 2048 + i]],
                "pixel {i}"
            );
        }
    }
    if let Some(src) = data("fashion-mnist") {
        let dir = tempfile::tempdir().unwrap();
        let out = bin()
            .args(["dataset", "export", "fashion-mnist"])
            .arg(&src)
            .arg("--out")
            .arg(dir.path())
            .args(["--limit", "20", "--split", "test"])
            .output()
            .unwrap();
        assert!(out.status.success());
        for class in ["t-shirt_top", "ankle_boot", "sneaker"] {
            assert!(dir.path().join(class).is_dir(), "{class}");
        }
    }
}

#[test]
fn corrupt_dataset_files_give_clear_errors() {
    let Some(src) = data("mnist") else { return };
    let dir = tempfile::tempdir().unwrap();
    let gz = std::fs::read(src.join("t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte.gz"),
        &gz[..gz.len() / 3],
    )
    .unwrap();
    std::fs::copy(
        src.join("t10k-labels-idx1-ubyte.gz"),
        dir.path().join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let export = || {
        run(bin()
            .args(["dataset", "export", "mnist"])
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("out"))
            .args(["--split", "test"]))
    };
    let out = export();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("t10k-images-idx3-ubyte.gz") && stderr.contains("gzip"),
        "{stderr}"
    );

    // Uncompressed but cut short: the header promises more than is there.
    let raw = gunzip(&src.join("t10k-images-idx3-ubyte.gz"));
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), &raw[..50_000]).unwrap();
    let stderr = String::from_utf8_lossy(&export().stderr).to_string();
    assert!(
        stderr.contains("truncated") && stderr.contains("10000 images"),
        "{stderr}"
    );

    let out = bin()
        .args(["dataset", "export", "cifar10"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no CIFAR-10 training record file"));
}

#[test]
fn models_lists_the_defaults() {
    let out = bin().args(["models", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v = json_of(&out);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "digits",
            "digits-denoise",
            "fashion",
            "photos",
            "photos-cifar32"
        ]
    );
    for m in v.as_array().unwrap() {
        assert_eq!(m["embedded"], true, "{m}");
        assert_eq!(m["info"]["architecture"], "conv-autoencoder-v1");
    }
}

/// `imgsearch query … | head -1` and `imgsearch export | head -1`: the
/// reader closes the pipe after one line, long before the output ends
/// (3,000 paths, far more than a pipe buffers). The program must end
/// quietly with exit 0, not panic ("failed printing to stdout") with 101.
#[test]
fn output_piped_into_head_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (root, index) = (dir.path().join("imgs"), dir.path().join("idx"));
    std::fs::create_dir_all(&root).unwrap();
    for n in 0u32..3000 {
        let img = image::GrayImage::from_fn(8, 8, |x, y| {
            image::Luma([(n.wrapping_mul(2654435761) >> (x + 3 * y)) as u8])
        });
        img.save(root.join(format!("{n:05}.png"))).unwrap();
    }
    crate::common::ingest_digits(&root, &index);
    let exe = env!("CARGO_BIN_EXE_imgsearch");
    let query = root.join("00007.png");
    for command in [
        format!(
            "'{exe}' query '{}' -k 3000 --paths-only --index '{}' | head -1",
            query.display(),
            index.display()
        ),
        format!("'{exe}' export --index '{}' | head -1", index.display()),
    ] {
        // `PIPESTATUS[0]`: imgsearch's own exit code, not head's.
        let out = run(std::process::Command::new("bash")
            .args(["-c", &format!("{command}; exit ${{PIPESTATUS[0]}}")]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
        assert!(
            !stderr.contains("Broken pipe") && !stderr.contains("panicked"),
            "{command}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    }
}
