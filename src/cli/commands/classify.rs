//! `imgsearch classify IMAGE...`: labels by a vote of the nearest labelled images.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use imgsearch::classify::{self, ClassifyOptions, Prediction};
use imgsearch::eval::NO_VOTE;
use imgsearch::index::Index;
use imgsearch::search::{self, Method};

use crate::cli::args::{IndexArg, VoteArgs};
use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    /// Images (or folders of them) to classify. An indexed image uses its
    /// stored embedding; no image votes for itself (nor do stored copies of
    /// the same bytes).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    index: IndexArg,
    #[command(flatten)]
    vote: VoteArgs,
    /// Exact brute-force search (the default for small indexes).
    #[arg(long)]
    exact: bool,
    /// Print JSON: label, confidence, votes and voters per image.
    #[arg(long)]
    json: bool,
}

/// One image's prediction, or why it has none.
#[derive(Serialize)]
struct Classified {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Method>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prediction: Option<Prediction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(transparent)]
struct Predictions {
    images: Vec<Classified>,
    /// Votes are weights (shown with decimals), not counts.
    #[serde(skip)]
    weighted: bool,
}

pub fn run(args: Args) -> Result<Outcome> {
    let index = Index::open(&args.index.index, None, false)?;
    let queries = search::query_latents(&index, &args.images);
    let (mut latents, mut exclude) = (Vec::new(), Vec::new());
    for q in &queries {
        if let Ok(z) = &q.latent {
            latents.push(z.clone());
            exclude.push(classify::copies_of(&index, q));
        }
    }
    let opts = ClassifyOptions {
        exact: args.exact,
        ..args.vote.options()
    };
    let (predictions, method) = classify::classify(&index, &latents, &exclude, &opts)?;
    index.save()?;
    super::report_repairs(&index);
    let mut predictions = predictions.into_iter();
    let images: Vec<Classified> = queries
        .iter()
        .map(|q| match &q.latent {
            Ok(_) => Classified {
                image: q.name.clone(),
                method: Some(method),
                prediction: predictions.next(),
                error: None,
            },
            Err(e) => {
                eprintln!("skipped {}: {e}", q.name);
                Classified {
                    image: q.name.clone(),
                    method: None,
                    prediction: None,
                    error: Some(e.clone()),
                }
            }
        })
        .collect();
    let failed = images.iter().filter(|c| c.error.is_some()).count();
    let report = Predictions {
        images,
        weighted: args.vote.weighted,
    };
    output::print(&report, args.json)?;
    Ok(Outcome::of(queries.len() - failed, failed))
}

impl Table for Predictions {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{:<12} {:>10}  {:<40}  image",
            "label", "confidence", "votes"
        )?;
        for c in &self.images {
            let Some(p) = &c.prediction else {
                continue;
            };
            let votes: Vec<String> = p
                .votes
                .iter()
                .map(|t| {
                    if self.weighted {
                        format!("{}:{:.3}", t.label, t.weight)
                    } else {
                        format!("{}:{}", t.label, t.votes)
                    }
                })
                .collect();
            writeln!(
                out,
                "{:<12} {:>9.1}%  {:<40}  {}",
                p.label.as_deref().unwrap_or(NO_VOTE),
                100.0 * p.confidence,
                votes.join(" "),
                c.image
            )?;
        }
        Ok(())
    }
}
