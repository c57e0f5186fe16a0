//! `imgsearch query IMAGE...`: the nearest indexed images.

use std::cell::OnceCell;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use imgsearch::cold::ColdIndex;
use imgsearch::imageio::{self, DecodeLimits};
use imgsearch::index::Index;
use imgsearch::search::{self, Hit, Method, QueryLatent, QueryOptions, SearchError, Searchable};
use imgsearch::sheet::{self, SheetRow};

use crate::cli::args::{FilterArgs, IndexArg};
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    filter: FilterArgs,
    /// Exact brute-force search (the default for small indexes and filters).
    #[arg(long)]
    exact: bool,
    /// Use the HNSW graph even where the exact scan would be picked.
    #[arg(long, conflicts_with = "exact")]
    hnsw: bool,
    /// HNSW search candidate list size (larger: better recall, slower).
    /// Default: 64, or 128 from 300,000 images.
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

/// One query's answer, or why it has none.
#[derive(Serialize)]
struct Answer {
    query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Method>,
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<Hit>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Every query's answer; prints as JSON (an array), a table, or paths.
#[derive(Serialize)]
#[serde(transparent)]
struct Answers {
    answers: Vec<Answer>,
    #[serde(skip)]
    paths_only: bool,
}

pub fn run(args: Args) -> Result<Outcome> {
    let dir = &args.index.index;
    let opts = QueryOptions {
        k: args.k,
        filter: args.filter.filter(),
        exact: args.exact,
        hnsw: args.hnsw,
        ef: args.ef,
    };
    // A one-shot query reads the derived files (flat vectors, record
    // catalogue, and the graph when the plan wants it) when they are
    // current, and never opens the store; when they are not, or a piece it
    // read turns out damaged, it opens the index, which repairs them.
    let cold = ColdIndex::open(dir)?.ok();
    let full: OnceCell<Index> = OnceCell::new();
    let open_full = || -> Result<&Index> {
        if full.get().is_none() {
            let _ = full.set(Index::open(dir, None, false)?);
        }
        Ok(full.get().expect("set above"))
    };
    let latents = |reader: &dyn Searchable| {
        let mut queries = Vec::new();
        if let Some(id) = args.id {
            queries.push(search::id_latent(reader, id));
        }
        queries.extend(search::query_latents(reader, &args.images));
        queries
    };
    let search = |reader: &dyn Searchable, queries: &[QueryLatent]| {
        let vectors: Vec<Vec<f32>> = queries
            .iter()
            .filter_map(|q| q.latent.as_ref().ok().cloned())
            .collect();
        search::nearest_many(reader, &vectors, &opts)
    };
    let cold_answer = cold.as_ref().map(|cold| {
        cold.answer(|cold| {
            let queries = latents(cold);
            let found = search(cold, &queries);
            (queries, found)
        })
    });
    let (reader, queries, (found, method)): (&dyn Searchable, _, _) = match cold_answer {
        Some(Ok((queries, Ok(found)))) => (cold.as_ref().expect("answered"), queries, found),
        // The plan wants the graph and the saved one is behind: the
        // queries stand, the store's open catches the graph up.
        Some(Ok((queries, Err(SearchError::NeedsGraph)))) => {
            let found = search(open_full()?, &queries)?;
            (open_full()?, queries, found)
        }
        Some(Ok((_, Err(e)))) => return Err(e.into()),
        // Damaged, or not current: nothing read there is kept.
        Some(Err(_)) | None => {
            let queries = latents(open_full()?);
            let found = search(open_full()?, &queries)?;
            (open_full()?, queries, found)
        }
    };
    if let Some(index) = full.get() {
        // A graph this process had to build or catch up is kept for next time.
        index.save()?;
        super::report_repairs(index);
    }

    let mut found = found.into_iter();
    let answers: Vec<Answer> = queries
        .iter()
        .map(|q| match &q.latent {
            Ok(_) => Answer {
                query: q.name.clone(),
                method: Some(method),
                results: Some(found.next().expect("one answer per embedded query")),
                error: None,
            },
            Err(e) => {
                eprintln!("skipped {}: {e}", q.name);
                Answer {
                    query: q.name.clone(),
                    method: None,
                    results: None,
                    error: Some(e.clone()),
                }
            }
        })
        .collect();
    if let Some(out) = &args.sheet {
        write_sheet(reader, &queries, &answers, out)?;
    }
    let failed = answers.iter().filter(|a| a.error.is_some()).count();
    let report = Answers {
        answers,
        paths_only: args.paths_only,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::of(queries.len() - failed, failed))
}

/// One row per answered query: the query image, then its neighbours.
fn write_sheet(
    index: &dyn Searchable,
    queries: &[QueryLatent],
    answers: &[Answer],
    out: &Path,
) -> Result<()> {
    let open = |p: &Path| imageio::decode_file(p, DecodeLimits::default()).ok();
    let (mut rows, mut missing) = (Vec::new(), 0);
    for (q, answer) in queries.iter().zip(answers) {
        let Some(hits) = &answer.results else {
            continue;
        };
        let query = match (q.id, &q.path) {
            (Some(id), _) => index.path_and_label(id)?.and_then(|(path, _)| open(&path)),
            (None, Some(path)) => open(path),
            (None, None) => None,
        };
        let neighbours = hits
            .iter()
            .map(|h| {
                let caption = format!("#{} d={:.2}", h.rank, h.distance);
                match h.path.exists() {
                    true => (caption, open(&h.path)),
                    false => {
                        missing += 1;
                        (caption + " (missing)", None)
                    }
                }
            })
            .collect();
        rows.push(SheetRow { query, neighbours });
    }
    if missing > 0 {
        // Records imported from shards keep the paths of the machine that
        // embedded them.
        eprintln!(
            "note: {missing} hits are not on this machine (imported from a shard made elsewhere, or removed since): their tiles in {} are empty",
            out.display()
        );
    }
    sheet::write(&rows, out).with_context(|| format!("writing contact sheet {}", out.display()))
}

impl Table for Answers {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        for answer in &self.answers {
            let (Some(results), Some(method)) = (&answer.results, answer.method) else {
                continue;
            };
            if self.paths_only {
                for hit in results {
                    writeln!(out, "{}", hit.path.display())?;
                }
                continue;
            }
            if self.answers.len() > 1 {
                writeln!(out, "# {} ({})", answer.query, method.as_str())?;
            }
            writeln!(
                out,
                "{:>4}  {:>9}  {:>10}  {:<12}  path",
                "rank", "distance", "similarity", "label"
            )?;
            for hit in results {
                writeln!(
                    out,
                    "{:>4}  {:>9.4}  {:>10.3}  {:<12}  {}",
                    hit.rank,
                    hit.distance,
                    hit.similarity,
                    hit.label.as_deref().unwrap_or("-"),
                    hit.path.display()
                )?;
            }
        }
        Ok(())
    }
}
