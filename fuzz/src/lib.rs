//! The fuzz targets: each takes arbitrary bytes to one of imgsearch's
//! readers of files it did not write itself, through the same calls the
//! commands make. Any panic, abort, hang or runaway allocation is a bug.
//!
//! | target | what the bytes are | the call |
//! |---|---|---|
//! | `decode` | an image file | `prepare::decode` (codecs, limits, orientation, crop) |
//! | `flat` | `vectors.flat` and its `.sum` | `FlatVectors::open` on a real index |
//! | `catalogue` | `records.cat` and `records.str` (and `records.sum` for them) | `Catalogue::open` (every reader call), then `CatalogueWriter::open` on a real index |
//! | `graph` | `graph.hnsw` | `Graph::open` on a real index, then a search |
//! | `model` | a model file | `Model::from_bytes` (safetensors, header, weights) |
//!
//! `flat`, `catalogue` and `graph` run against a small index built once per process
//! by [`Fixture`]; [`seeds`] writes a starting corpus for every target.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imgsearch::ann::{flat, hnsw, FlatVectors, Graph, HnswParams};
use imgsearch::catalogue::{self, Catalogue, CatalogueWriter};
use imgsearch::checksum::Pieces;
use imgsearch::imageio::{DecodeLimits, Prep};
use imgsearch::prepare::{self, InputShape};
use imgsearch::store::Store;

pub const TARGETS: [&str; 5] = ["decode", "flat", "catalogue", "graph", "model"];

/// Runs one target on one input.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "decode" => decode(data),
        "flat" => flat_file(data),
        "catalogue" => catalogue_files(data),
        "graph" => graph_file(data),
        "model" => model(data),
        other => panic!("unknown target {other}"),
    }
}

pub fn decode(data: &[u8]) {
    let shape = InputShape {
        size: 64,
        channels: 3,
        prep: Prep::Crop,
    };
    // A small pixel cap, so a header claiming a huge image is refused
    // quickly instead of the fuzzer spending its time decoding it.
    let limits = DecodeLimits {
        max_megapixels: 4.0,
        // Both the strict path and the one that keeps partial images.
        allow_truncated: data.len() % 2 == 0,
    };
    let _ = prepare::decode(data, Path::new("fuzzed"), shape, limits);
}

/// `data` is a 2-byte little-endian length `n`, then `n` bytes of
/// `vectors.flat`, then its `vectors.flat.sum`.
pub fn flat_file(data: &[u8]) {
    let fixture = Fixture::get();
    let (flat_bytes, sums) = split(data);
    let path = fixture.dir.join(flat::FILE_NAME);
    std::fs::write(&path, flat_bytes).unwrap();
    std::fs::write(flat::Sums::path(&path), sums).unwrap();
    let (vectors, _) = FlatVectors::open(&fixture.dir, &fixture.store, fixture.dim)
        .expect("a damaged flat file is rebuilt, never an error");
    assert_eq!(vectors.live(), fixture.points, "rebuilt from the store");
}

/// `data` is a flag byte, a 2-byte little-endian length `n`, then `n`
/// bytes of `records.cat`, then `records.str`. With the flag's bit 0 the
/// header's two checksums are recomputed over what follows, so the fuzzer
/// gets past them to the rows and the strings they point into; with bit 1
/// as well, `records.sum` is written for them, so the reader checks pieces
/// as it reads them instead of both files on open.
pub fn catalogue_files(data: &[u8]) {
    let fixture = Fixture::get();
    let Some((&flag, data)) = data.split_first() else {
        return;
    };
    let (rows, strings) = split(data);
    let mut rows = rows.to_vec();
    let sums_path = fixture.dir.join(catalogue::SUMS_NAME);
    let _ = std::fs::remove_file(&sums_path);
    const HEADER: usize = 80;
    if flag & 1 == 1 && rows.len() >= HEADER {
        let count = u64::from_le_bytes(rows[16..24].try_into().unwrap()) as usize;
        let end = count.saturating_mul(32).saturating_add(HEADER).min(rows.len());
        let strings_len = u64::from_le_bytes(rows[40..48].try_into().unwrap()) as usize;
        let strings = &strings[..strings_len.min(strings.len())];
        let (row_pieces, string_pieces) = (Pieces::of(&rows[HEADER..end]), Pieces::of(strings));
        let crcs = [row_pieces.checksum(), string_pieces.checksum()].map(Option::unwrap);
        rows[48..52].copy_from_slice(&crcs[0].to_le_bytes());
        rows[52..56].copy_from_slice(&crcs[1].to_le_bytes());
        if flag & 2 == 2 {
            let sums = catalogue::encode_sums(&row_pieces, &string_pieces);
            std::fs::write(&sums_path, sums).unwrap();
        }
    }
    std::fs::write(fixture.dir.join(catalogue::FILE_NAME), &rows).unwrap();
    std::fs::write(fixture.dir.join(catalogue::STRINGS_NAME), strings).unwrap();
    if let Ok(reader) = Catalogue::open(&fixture.dir) {
        let _ = reader.meta();
        for id in 0..fixture.points as u64 + 2 {
            let _ = reader.find(id);
        }
        for row in reader.iter() {
            let _ = reader.find(row.id);
        }
        let _ = (reader.removed_ids(), reader.id_for_path(b"/nowhere"));
        let _ = reader.damage();
    }
    let (mut vectors, _) =
        FlatVectors::open(&fixture.dir, &fixture.store, fixture.dim).expect("the flat file opens");
    let stamp = fixture.store.model_stamp().unwrap().expect("stamped");
    CatalogueWriter::open(&fixture.dir, &fixture.store, &mut vectors, &stamp)
        .expect("a damaged catalogue is rebuilt, never an error");
    let rebuilt = Catalogue::open(&fixture.dir).expect("the rebuilt catalogue is trusted");
    assert!(rebuilt.describes(&vectors));
    assert_eq!(
        rebuilt.live(),
        fixture.points as u64,
        "rebuilt from the store"
    );
}

/// CRC32C, as the catalogue's header keeps it.
fn crc32c(bytes: &[u8]) -> u32 {
    imgsearch::catalogue::checksum(bytes)
}

/// `data` is a flag byte, then `graph.hnsw`. With the flag odd the
/// checksums are recomputed over what follows, so the fuzzer gets past
/// them to the arrays: links, levels and the entry point.
pub fn graph_file(data: &[u8]) {
    let fixture = Fixture::get();
    let Some((&flag, graph)) = data.split_first() else {
        return;
    };
    let mut graph = graph.to_vec();
    if flag & 1 == 1 {
        seal_graph(&mut graph);
    }
    std::fs::write(fixture.dir.join(hnsw::FILE_NAME), &graph).unwrap();
    let (graph, _) = Graph::open(
        &fixture.dir,
        &fixture.store,
        fixture.dim,
        HnswParams::default(),
    )
    .expect("a damaged graph is rebuilt, never an error");
    assert_eq!(
        graph.live_points(),
        fixture.points,
        "caught up from the store"
    );
    let hits = graph.search(&vec![0.5; fixture.dim], 3, 16);
    assert_eq!(hits.len(), 3.min(fixture.points));
}

/// Recomputes a graph file's body and header checksums, following the
/// layout in `src/ann/hnsw/file.rs` (as far as the bytes allow).
fn seal_graph(bytes: &mut [u8]) {
    if bytes.len() < 64 {
        return;
    }
    let u32_at =
        |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let (dim, m, n, upper) = (
        u32_at(bytes, 12),
        u32_at(bytes, 16),
        u64_at(bytes, 24),
        u64_at(bytes, 32),
    );
    let lens = [
        n.saturating_mul(8),
        n.saturating_mul(dim).saturating_mul(4),
        n.saturating_mul(m).saturating_mul(8),
        upper.saturating_mul(4),
        n,
    ];
    let mut at: usize = 64;
    let mut sums = Vec::new();
    for len in lens {
        let end = at.saturating_add(len).min(bytes.len());
        sums.push(imgsearch::checksum::chunked(&bytes[at..end]));
        at = end;
    }
    let body = imgsearch::checksum::of_chunks(&sums);
    bytes[44..48].copy_from_slice(&body.to_le_bytes());
    let head = crc32c(&bytes[0..48]);
    bytes[48..52].copy_from_slice(&head.to_le_bytes());
}

pub fn model(data: &[u8]) {
    let _ = imgsearch::model::Model::from_bytes(data.to_vec(), "fuzzed");
}

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return (data, &[]);
    };
    rest.split_at((u16::from_le_bytes(*len) as usize).min(rest.len()))
}

/// A small real index (the `digits` model, a few generated images), built
/// once per process in a temporary folder, its store held open.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub store: Store,
    pub dim: usize,
    pub points: usize,
}

impl Fixture {
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Fixture::build)
    }

    fn build() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let points = 6;
        for i in 0..points as u32 {
            image::GrayImage::from_fn(28, 28, |x, y| {
                image::Luma([((x * (i + 2) + y * 5) % 251) as u8])
            })
            .save(images.join(format!("{i}.png")))
            .unwrap();
        }
        let dir = tmp.path().join("index");
        let dim = {
            let index = imgsearch::index::Index::open(&dir, Some("digits"), true).unwrap();
            let opts = imgsearch::ingest::IngestOptions::default();
            imgsearch::ingest::ingest(&index, &images, &opts, &imgsearch::progress::NoProgress)
                .unwrap();
            index.model.embedding_dim()
        };
        let store = Store::open(&dir.join("db")).unwrap();
        Fixture {
            _tmp: tmp,
            dir,
            store,
            dim,
            points,
        }
    }
}

/// Writes a starting corpus for every target under `out/<target>/`: small
/// images in each format, the fixture's own flat file, catalogue and graph, and a
/// tiny trained model file.
pub fn seeds(out: &Path) -> std::io::Result<()> {
    use image::ImageFormat;
    let dir = out.join("decode");
    std::fs::create_dir_all(&dir)?;
    let picture = image::RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, 128])
    });
    for (format, ext) in [
        (ImageFormat::Png, "png"),
        (ImageFormat::Jpeg, "jpg"),
        (ImageFormat::Gif, "gif"),
        (ImageFormat::WebP, "webp"),
        (ImageFormat::Bmp, "bmp"),
        (ImageFormat::Tiff, "tiff"),
    ] {
        image::DynamicImage::ImageRgb8(picture.clone())
            .save_with_format(dir.join(format!("seed.{ext}")), format)
            .map_err(std::io::Error::other)?;
    }

    let fixture = Fixture::get();
    let flat_path = fixture.dir.join(flat::FILE_NAME);
    let flat_bytes = std::fs::read(&flat_path)?;
    let mut seed = (flat_bytes.len() as u16).to_le_bytes().to_vec();
    seed.extend(&flat_bytes);
    seed.extend(std::fs::read(flat::Sums::path(&flat_path))?);
    std::fs::create_dir_all(out.join("flat"))?;
    std::fs::write(out.join("flat/seed.bin"), seed)?;

    let mut seed = vec![0u8];
    let rows = std::fs::read(fixture.dir.join(catalogue::FILE_NAME))?;
    seed.extend((rows.len() as u16).to_le_bytes());
    seed.extend(&rows);
    seed.extend(std::fs::read(fixture.dir.join(catalogue::STRINGS_NAME))?);
    std::fs::create_dir_all(out.join("catalogue"))?;
    std::fs::write(out.join("catalogue/seed.bin"), seed)?;

    let mut seed = vec![1u8];
    seed.extend(std::fs::read(fixture.dir.join(hnsw::FILE_NAME))?);
    std::fs::create_dir_all(out.join("graph"))?;
    std::fs::write(out.join("graph/seed.bin"), seed)?;

    std::fs::create_dir_all(out.join("model"))?;
    std::fs::write(out.join("model/seed.safetensors"), tiny_model())?;
    Ok(())
}

/// The smallest model `train` makes: 8×8 grey images, widths 2-2, latent 2.
fn tiny_model() -> Vec<u8> {
    use imgsearch::model::{self, ArchConfig, TrainConfig, TrainSet};
    let mut set = TrainSet::new(8, 1);
    for i in 0..8u8 {
        let planar: Vec<u8> = (0..64u8).map(|p| p.wrapping_mul(i + 1)).collect();
        set.push(&planar);
    }
    let cfg = TrainConfig {
        arch: ArchConfig {
            input_size: 8,
            channels: 1,
            latent: 2,
            widths: vec![2, 2],
        },
        epochs: 1,
        batch_size: 4,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        loss: model::Loss::Bce,
        noise: 0.0,
        normalization: model::Normalization::Unit,
        prep: Prep::Squash,
        augment: false,
        contrastive: 0.0,
        head: None,
        validation_fraction: 0.0,
        seed: 1,
    };
    model::train::train(
        &cfg,
        &set,
        "fuzz seed",
        &imgsearch::progress::NoProgress,
        |_| {},
    )
    .unwrap()
    .to_bytes()
    .unwrap()
}
