//! The `imgsearch` command line: parses, calls the library, prints.
//!
//! Exit codes: 0 success; 1 failure (nothing done); 2 bad usage; 3 partial
//! success (some inputs were skipped, each reported on stderr).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::{self, Index};
use imgsearch::ingest::{self, IngestOptions};
use imgsearch::labels::LabelSource;
use imgsearch::model::{self, ArchConfig, Loss, Model, TrainConfig, TrainEvent, TrainSet};

mod cli;

const EXIT_PARTIAL: u8 = 3;

#[derive(Parser)]
#[command(
    name = "imgsearch",
    version,
    about = "Search, sort and check a pile of images on your own machine, offline",
    long_about = "imgsearch embeds images with a small convolutional autoencoder (trained \
without labels) and works on those embeddings. Four default models are built in: \
`digits` (MNIST), `digits-denoise` (MNIST, trained to remove noise), `fashion` \
(Fashion-MNIST) and `photos` (32x32 natural images).\n\n\
Exit codes: 0 success, 1 failure, 2 bad usage, 3 partial success (some inputs skipped)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk a folder, embed every image, store and index it (incremental, resumable).
    Ingest(IngestArgs),
    /// Find the indexed images most similar to an image (or several).
    Query(QueryArgs),
    /// Predict labels by a vote of the nearest labelled indexed images (kNN).
    Classify(cli::knn::ClassifyArgs),
    /// Measure kNN classification on a labelled test folder: accuracy,
    /// per-class precision/recall, confusion matrix, timings; optionally
    /// beside raw pixels (--baseline raw) and exact search (--exact).
    Eval(cli::knn::EvalArgs),
    /// Indexed images ranked by reconstruction error (what the model finds
    /// unusual); --check scores new images against the index.
    Anomalies(cli::anomalies::AnomaliesArgs),
    /// The autoencoder's rebuild of an image (--sheet: original |
    /// reconstruction | difference).
    Reconstruct(cli::restore::ReconstructArgs),
    /// Remove noise with a model trained as a denoiser (default digits-denoise).
    Denoise(cli::restore::DenoiseArgs),
    /// Fill masked pixels by iterating reconstruction, known pixels kept.
    Inpaint(cli::restore::InpaintArgs),
    /// Write the index's latents with path, label and reconstruction error
    /// (jsonl, csv or npy) for pandas, numpy, sklearn.
    Export(cli::export::ExportArgs),
    /// Serve the index over HTTP: a JSON API (search, classify, ingest jobs,
    /// images, anomalies, duplicates) and a web page at `/`.
    Serve(cli::serve::ServeArgs),
    /// Groups of near-duplicate images in the index (byte-identical ones marked).
    Duplicates {
        #[command(flatten)]
        index: IndexArg,
        /// Latent distance at or below which two images are duplicates
        /// (default: similarity 0.6, i.e. 0.667 * sqrt(latent)).
        #[arg(long)]
        threshold: Option<f32>,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV: group,kind,identical_set,id,path.
        #[arg(long)]
        csv: bool,
    },
    /// Show what an index holds: model, counts, roots, labels, size on disk.
    Status {
        #[command(flatten)]
        index: IndexArg,
        #[arg(long)]
        json: bool,
    },
    /// Re-embed every image of an index with another model (re-ingests its roots).
    Reindex {
        #[command(flatten)]
        index: IndexArg,
        /// The new model: a default name or a model file.
        #[arg(long, short)]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the HNSW graph without the tombstones of removed images.
    Compact {
        #[command(flatten)]
        index: IndexArg,
        #[arg(long)]
        json: bool,
    },
    /// Print the latent vector (embedding) of each image.
    Embed(EmbedArgs),
    /// Train an autoencoder on every image under a folder.
    Train(TrainArgs),
    /// Work with the standard datasets (MNIST, Fashion-MNIST, CIFAR-10).
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// List the built-in default models and what their headers record.
    Models {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct IndexArg {
    /// Index folder (created by the first ingest).
    #[arg(long, env = index::INDEX_ENV, default_value = index::DEFAULT_INDEX)]
    index: PathBuf,
}

#[derive(Args)]
struct IngestArgs {
    /// Folder to ingest (searched recursively; `root/<label>/img.png` gives labels).
    dir: PathBuf,
    #[command(flatten)]
    index: IndexArg,
    /// Model for a new index (default: photos). An existing index keeps its own;
    /// naming a different one is refused.
    #[arg(long, short)]
    model: Option<String>,
    /// Leave out files and folders matching this glob (relative path or name); repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// Take labels from this CSV of `path,label` rows (paths relative to DIR
    /// or absolute; optional header) instead of folder names. Unlisted images
    /// are stored unlabelled; a changed label is updated without re-encoding.
    #[arg(long, value_name = "FILE.csv")]
    labels: Option<PathBuf>,
    /// Refuse images larger than this many megapixels (decompression bombs).
    #[arg(long, default_value_t = imageio::DEFAULT_MAX_MEGAPIXELS)]
    max_megapixels: f64,
    /// Print the full report as JSON (every failure with its reason).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct QueryArgs {
    /// Query images, or folders of them; an indexed path uses its stored embedding.
    #[arg(required_unless_present = "id")]
    images: Vec<PathBuf>,
    /// Query by the stored embedding of this record id instead.
    #[arg(long, conflicts_with = "images")]
    id: Option<u64>,
    #[command(flatten)]
    index: IndexArg,
    /// How many neighbours.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Only images under this folder.
    #[arg(long)]
    under: Option<PathBuf>,
    /// Only images with this label.
    #[arg(long)]
    label: Option<String>,
    /// Exact brute-force search (the default for small indexes and filters).
    #[arg(long)]
    exact: bool,
    /// Use the HNSW graph even where the exact scan would be picked.
    #[arg(long, conflicts_with = "exact")]
    hnsw: bool,
    /// HNSW search candidate list size (larger: better recall, slower).
    #[arg(long)]
    ef: Option<usize>,
    /// Print only the result paths, one per line.
    #[arg(long)]
    paths_only: bool,
    /// Also write a contact sheet (PNG): each query and its neighbours as
    /// thumbnails captioned with rank and distance.
    #[arg(long)]
    sheet: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EmbedArgs {
    /// Image files to embed.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// A default model name (digits, fashion, photos) or a model file path.
    #[arg(long, short, default_value = model::DEFAULT_MODEL, env = "IMGSEARCH_MODEL")]
    model: String,
    /// Refuse images larger than this many megapixels (decompression bombs).
    #[arg(long, default_value_t = imageio::DEFAULT_MAX_MEGAPIXELS)]
    max_megapixels: f64,
    /// Print JSON instead of one line per image.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Folder of training images (searched recursively; any format imgsearch decodes).
    dir: PathBuf,
    /// Where to write the model (safetensors).
    #[arg(long, short)]
    out: PathBuf,
    /// Side of the square model input; images are resized to it.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// 1 (grayscale) or 3 (RGB); images are converted.
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// Latent (embedding) length, 8 to 128 is typical.
    #[arg(long, default_value_t = 32)]
    latent: usize,
    /// Encoder block widths, comma-separated (default: chosen from --size).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, value_enum, default_value_t = Loss::Bce)]
    loss: Loss,
    /// Train as a denoiser: Gaussian noise of this std-dev on inputs, clean targets.
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// Input normalization, recorded in the model file: `unit` (pixel / 255)
    /// or `gain` (also scaled to a fixed mean brightness, so exposure changes
    /// barely move embeddings; used for the `photos` default).
    #[arg(long, value_enum, default_value_t = model::Normalization::Unit)]
    normalize: model::Normalization,
    /// Share of images held out for validation (the best-validation epoch is kept).
    #[arg(long, default_value_t = 0.1)]
    val: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// What to record as the training data in the model header (default: the folder).
    #[arg(long)]
    data_name: Option<String>,
    #[arg(long, default_value_t = imageio::DEFAULT_MAX_MEGAPIXELS)]
    max_megapixels: f64,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Write a dataset as labelled PNG folders: OUT/<class>/<index>.png.
    Export {
        /// Which dataset.
        #[arg(value_enum)]
        name: DatasetName,
        /// Folder holding its files (IDX files, or CIFAR-10 .bin/.bin.gz records).
        src: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Split::Train)]
        split: Split,
        /// Export only the first N images.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(args) => ingest(args),
        Command::Query(args) => query(args),
        Command::Duplicates {
            index,
            threshold,
            json,
            csv,
        } => duplicates(index.index, threshold, json, csv),
        Command::Classify(args) => cli::knn::classify(args),
        Command::Eval(args) => cli::knn::eval(args),
        Command::Anomalies(args) => cli::anomalies::anomalies(args),
        Command::Reconstruct(args) => cli::restore::reconstruct(args),
        Command::Denoise(args) => cli::restore::denoise(args),
        Command::Inpaint(args) => cli::restore::inpaint(args),
        Command::Export(args) => cli::export::export(args),
        Command::Serve(args) => cli::serve::serve(args),
        Command::Status { index, json } => status(index.index, json),
        Command::Compact { index, json } => compact(index.index, json),
        Command::Reindex { index, model, json } => reindex(index.index, model, json),
        Command::Embed(args) => embed(args),
        Command::Train(args) => train(args),
        Command::Dataset(DatasetCommand::Export {
            name,
            src,
            out,
            split,
            limit,
            json,
        }) => export(name, src, out, split, limit, json),
        Command::Models { json } => models(json),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn ingest(args: IngestArgs) -> Result<ExitCode> {
    let idx = Index::open(&args.index.index, args.model.as_deref(), true)
        .with_context(|| format!("opening index {}", args.index.index.display()))?;
    if idx.ann().flat_state.rebuilt && idx.store.live_count()? > 0 {
        eprintln!("note: the flat vector file was missing or unreadable; rewritten from the store");
    }
    let labels = LabelSource::from_file_or_folders(args.labels.as_deref(), &args.dir)?;
    let opts = IngestOptions {
        exclude: args.exclude,
        limits: DecodeLimits {
            max_megapixels: args.max_megapixels,
        },
        labels,
        cancel: None,
        pool: None,
    };
    let bar = progress_bar("files", || {
        ingest::count_files(&args.dir, &opts).unwrap_or(0)
    });
    let report = ingest::ingest(&idx, &args.dir, &opts, &bar)
        .with_context(|| format!("ingesting {}", args.dir.display()))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.failures {
            eprintln!("skipped {}: {}", f.path, f.reason);
        }
        if let (Some(n @ 1..), Some(file)) = (report.labels_unmatched, &args.labels) {
            eprintln!(
                "warning: {n} labelled rows of {} named no image under {}",
                file.display(),
                report.root.display()
            );
        }
        println!(
            "{}: scanned {}, added {}, updated {}, renamed {}, unchanged {}, removed {}, failed {} in {:.1}s ({:.0} images/s encoded)",
            report.root.display(),
            report.scanned,
            report.added,
            report.updated,
            report.renamed,
            report.unchanged,
            report.removed,
            report.failed,
            report.seconds,
            report.images_per_second
        );
    }
    let stored = report.added + report.updated + report.renamed + report.unchanged;
    Ok(if report.failed > 0 && stored == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn query(args: QueryArgs) -> Result<ExitCode> {
    use imgsearch::search::{self, QueryOptions};
    let idx = Index::open(&args.index.index, None, false)?;
    let opts = QueryOptions {
        k: args.k,
        under: args.under.clone(),
        label: args.label.clone(),
        exact: args.exact,
        hnsw: args.hnsw,
        ef: args.ef,
        ..Default::default()
    };
    let mut queries = Vec::new();
    if let Some(id) = args.id {
        queries.push(search::id_latent(&idx, id));
    }
    queries.extend(search::query_latents(&idx, &args.images));
    let vectors: Vec<Vec<f32>> = queries
        .iter()
        .filter_map(|q| q.latent.as_ref().ok().cloned())
        .collect();
    let (answers, method) = search::nearest_many(&idx, &vectors, &opts)?;
    // A graph this process had to build or catch up is kept for next time.
    idx.save()?;
    let mut answers = answers.into_iter();

    let mut groups = Vec::new();
    let mut sheet_rows = Vec::new();
    let mut failed = 0;
    let open_image = |p: &std::path::Path| imageio::decode_file(p, DecodeLimits::default()).ok();
    for q in &queries {
        let name = &q.name;
        match &q.latent {
            Ok(_) => {
                let hits = answers.next().expect("one answer per embedded query");
                if args.sheet.is_some() {
                    let query_image = match q.id {
                        Some(id) => idx
                            .store
                            .record(id)?
                            .and_then(|r| open_image(&r.path_buf())),
                        None => open_image(std::path::Path::new(name)),
                    };
                    sheet_rows.push(imgsearch::sheet::SheetRow {
                        query: query_image,
                        neighbours: hits
                            .iter()
                            .map(|h| {
                                (
                                    format!("#{} d={:.2}", h.rank, h.distance),
                                    open_image(std::path::Path::new(&h.path)),
                                )
                            })
                            .collect(),
                    });
                }
                groups.push(json!({ "query": name, "method": method, "results": hits }));
            }
            Err(e) => {
                failed += 1;
                eprintln!("skipped {name}: {e}");
                groups.push(json!({ "query": name, "error": e }));
            }
        }
    }
    if let Some(out) = &args.sheet {
        imgsearch::sheet::write(&sheet_rows, out)
            .with_context(|| format!("writing contact sheet {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
    } else {
        for g in &groups {
            let Some(results) = g["results"].as_array() else {
                continue;
            };
            if args.paths_only {
                for r in results {
                    println!("{}", r["path"].as_str().unwrap_or_default());
                }
                continue;
            }
            if groups.len() > 1 {
                println!(
                    "# {} ({})",
                    g["query"].as_str().unwrap_or_default(),
                    g["method"].as_str().unwrap_or_default()
                );
            }
            println!(
                "{:>4}  {:>9}  {:>10}  {:<12}  path",
                "rank", "distance", "similarity", "label"
            );
            for r in results {
                println!(
                    "{:>4}  {:>9.4}  {:>10.3}  {:<12}  {}",
                    r["rank"].as_u64().unwrap_or_default(),
                    r["distance"].as_f64().unwrap_or_default(),
                    r["similarity"].as_f64().unwrap_or_default(),
                    r["label"].as_str().unwrap_or("-"),
                    r["path"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(exit_for(queries.len() - failed, failed))
}

fn duplicates(dir: PathBuf, threshold: Option<f32>, json: bool, csv: bool) -> Result<ExitCode> {
    use imgsearch::duplicates;
    let idx = Index::open(&dir, None, false)?;
    let threshold = threshold.unwrap_or_else(|| duplicates::default_threshold(&idx.model));
    let groups = duplicates::duplicates(&idx, threshold, 8)?;
    idx.save()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "threshold": threshold, "groups": groups }))?
        );
    } else if csv {
        println!("group,kind,identical_set,id,path");
        for (g, group) in groups.iter().enumerate() {
            for m in &group.members {
                println!(
                    "{},{},{},{},\"{}\"",
                    g + 1,
                    group.kind,
                    m.identical_set,
                    m.id,
                    m.path.replace('"', "\"\"")
                );
            }
        }
    } else {
        println!("{} groups at distance <= {threshold:.3}", groups.len());
        for (g, group) in groups.iter().enumerate() {
            println!(
                "\n#{} {} ({} images, max distance {:.3})",
                g + 1,
                group.kind,
                group.members.len(),
                group.max_distance
            );
            for m in &group.members {
                println!("  [{}] {}", m.identical_set, m.path);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(dir: PathBuf, json: bool) -> Result<ExitCode> {
    let idx = Index::open(&dir, None, false)?;
    let s = idx.status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("index       {}", s.index.display());
    println!(
        "model       {} ({}, latent {})",
        s.model.name, s.model.fingerprint, s.model.latent
    );
    println!("schema      v{}", s.schema_version);
    println!("images      {}", s.images);
    println!(
        "tombstones  {} (flat file holds {} rows, graph {})",
        s.tombstones,
        s.ann.flat_rows,
        s.ann
            .graph_points
            .map_or("not built yet".into(), |p| format!("{p} points"))
    );
    println!("size        {:.1} MB on disk", s.bytes_on_disk as f64 / 1e6);
    for r in &s.roots {
        println!("root        {}", r.display());
    }
    if !s.labels.is_empty() {
        println!(
            "labels      {} (+{} unlabelled)",
            s.labels.len(),
            s.unlabelled
        );
        for (label, n) in &s.labels {
            println!("  {label:<20} {n:>8}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn reindex(dir: PathBuf, model: String, json: bool) -> Result<ExitCode> {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    let reports = index::reindex(&dir, &model, &IngestOptions::default(), &bar)
        .with_context(|| format!("re-indexing {} with model `{model}`", dir.display()))?;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "model": model, "roots": reports }))?
        );
    } else {
        for r in &reports {
            println!(
                "{}: {} images re-embedded with `{model}`, {} failed",
                r.root.display(),
                r.added,
                r.failed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn compact(dir: PathBuf, json: bool) -> Result<ExitCode> {
    let idx = Index::open(&dir, None, false)?;
    let dropped = idx.store.tombstone_count()?;
    let points = idx.compact()?;
    if json {
        println!(
            "{}",
            json!({ "points": points, "tombstones_dropped": dropped })
        );
    } else {
        println!("rebuilt the graph: {points} points, {dropped} tombstones dropped");
    }
    Ok(ExitCode::SUCCESS)
}

fn embed(args: EmbedArgs) -> Result<ExitCode> {
    let model =
        Model::load(&args.model).with_context(|| format!("loading model `{}`", args.model))?;
    let limits = DecodeLimits {
        max_megapixels: args.max_megapixels,
    };
    let (mut ok_paths, mut pixels, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for path in &args.images {
        match imageio::load_pixels(path, model.input_size(), model.channels(), limits) {
            Ok(px) => {
                ok_paths.push(path);
                pixels.push(px);
            }
            Err(e) => failures.push((path, e.to_string())),
        }
    }
    let latents = model.embed(&pixels)?;
    if args.json {
        let out = json!({
            "model": { "name": model.name, "fingerprint": model.fingerprint, "latent": model.latent_dim() },
            "embeddings": ok_paths.iter().zip(&latents)
                .map(|(p, z)| json!({ "path": p, "latent": z })).collect::<Vec<_>>(),
            "errors": failures.iter().map(|(p, e)| json!({ "path": p, "error": e })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (path, z) in ok_paths.iter().zip(&latents) {
            let values: Vec<String> = z.iter().map(|v| format!("{v:.6}")).collect();
            println!("{}\t{}", path.display(), values.join(" "));
        }
    }
    for (path, err) in &failures {
        eprintln!("skipped {}: {err}", path.display());
    }
    Ok(exit_for(ok_paths.len(), failures.len()))
}

fn exit_for(done: usize, failed: usize) -> ExitCode {
    match (done, failed) {
        (_, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::FAILURE,
        _ => ExitCode::from(EXIT_PARTIAL),
    }
}

fn train(args: TrainArgs) -> Result<ExitCode> {
    let mut arch = ArchConfig::for_input(args.size, args.channels, args.latent);
    if let Some(widths) = args.widths {
        arch.widths = widths;
    }
    if let Err(msg) = arch.validate() {
        bail!("invalid model shape: {msg}");
    }
    let limits = DecodeLimits {
        max_megapixels: args.max_megapixels,
    };
    let spinner = spinner(&format!("reading images under {}", args.dir.display()));
    let (data, failures) = TrainSet::from_folder(&args.dir, args.size, args.channels, limits);
    spinner.finish_and_clear();
    for f in &failures {
        eprintln!("skipped {}: {}", f.path.display(), f.error);
    }
    if data.len() < 2 {
        bail!(
            "found {} usable images under {} (need at least 2)",
            data.len(),
            args.dir.display()
        );
    }
    let cfg = TrainConfig {
        arch,
        epochs: args.epochs,
        batch_size: args.batch,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        loss: args.loss,
        noise: args.noise,
        normalization: args.normalize,
        validation_fraction: args.val,
        seed: args.seed,
    };
    let data_name = args
        .data_name
        .unwrap_or_else(|| args.dir.display().to_string());
    if !args.json {
        eprintln!(
            "training on {} images ({} skipped): {}x{}x{} -> {} latent, widths {:?}, {} epochs",
            data.len(),
            failures.len(),
            cfg.arch.input_size,
            cfg.arch.input_size,
            cfg.arch.channels,
            cfg.arch.latent,
            cfg.arch.widths,
            cfg.epochs
        );
        println!(
            "{:>5}  {:>10}  {:>10}  {:>8}",
            "epoch", "train", "validation", "seconds"
        );
    }
    let bar = ProgressBar::hidden();
    let json = args.json;
    let trained = model::train::train(&cfg, &data, &data_name, |event| match event {
        TrainEvent::EpochStart { epoch, batches } => {
            if std::io::stderr().is_terminal() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.reset();
            bar.set_length(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} batches, loss {msg} ({eta})",
                )
                .expect("valid template"),
            );
            bar.set_prefix(epoch.to_string());
        }
        TrainEvent::Batch { loss } => {
            bar.set_message(format!("{loss:.5}"));
            bar.inc(1);
        }
        TrainEvent::EpochEnd(r) => {
            bar.finish_and_clear();
            if !json {
                let mark = if r.best { " *" } else { "" };
                println!(
                    "{:>5}  {:>10.6}  {:>10.6}  {:>8.1}{mark}",
                    r.epoch, r.train_loss, r.validation_loss, r.seconds
                );
            }
        }
    })?;
    trained
        .save(&args.out)
        .with_context(|| format!("saving {}", args.out.display()))?;
    if json {
        let out = json!({
            "out": args.out,
            "model": trained.info,
            "history": trained.history,
            "skipped": failures,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let t = &trained.info.training;
        println!(
            "saved {} (best epoch {}: train {:.6}, validation {:.6}; {:.1}s)",
            args.out.display(),
            t.best_epoch,
            t.train_loss,
            t.validation_loss,
            t.seconds
        );
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

fn export(
    name: DatasetName,
    src: PathBuf,
    out: PathBuf,
    split: Split,
    limit: Option<usize>,
    json: bool,
) -> Result<ExitCode> {
    let ds = dataset::load(name, &src, split, limit)?;
    let spinner = spinner(&format!("writing {} images to {}", ds.len(), out.display()));
    let report = dataset::export(&ds, &out)?;
    spinner.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "exported {} {} {} images to {}",
            report.images,
            name.as_str(),
            match split {
                Split::Train => "train",
                Split::Test => "test",
            },
            out.display()
        );
        for (class, n) in &report.per_class {
            println!("  {class:<12} {n:>6}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn models(json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for (name, embedded) in model::default_models() {
        let loaded = if embedded {
            Some(Model::load(name)?)
        } else {
            None
        };
        rows.push((name, loaded));
    }
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(name, m)| match m {
                Some(m) => json!({ "name": name, "embedded": true, "fingerprint": m.fingerprint, "info": m.info }),
                None => json!({ "name": name, "embedded": false }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8}  {:<10}  {:>6}  {:<20}  {:>6}  {:>10}  data",
        "name", "input", "latent", "widths", "epochs", "val loss"
    );
    for (name, m) in &rows {
        match m {
            Some(m) => {
                let a = &m.info.arch;
                println!(
                    "{:<8}  {:<10}  {:>6}  {:<20}  {:>6}  {:>10.5}  {}",
                    name,
                    format!("{}x{}x{}", a.input_size, a.input_size, a.channels),
                    a.latent,
                    format!("{:?}", a.widths),
                    m.info.training.epochs,
                    m.info.training.validation_loss,
                    m.info.training.data
                );
            }
            None => println!("{name:<8}  (not embedded in this build)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A bar of `unit`s (count, rate, ETA) on a terminal, hidden when piped;
/// `total` is only worked out when the bar will show.
fn progress_bar(unit: &str, total: impl FnOnce() -> u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total());
    let template = format!("{{bar:30}} {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    bar
}

fn spinner(msg: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
