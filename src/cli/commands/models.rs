//! `imgsearch models`: the built-in default models.

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use imgsearch::model::{self, Model, ModelInfo};

use crate::cli::output::{self, Outcome, Table};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct DefaultModel {
    name: &'static str,
    /// Whether this build carries its weights.
    embedded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<ModelInfo>,
}

#[derive(Serialize)]
#[serde(transparent)]
struct DefaultModels(Vec<DefaultModel>);

pub fn run(args: Args) -> Result<Outcome> {
    let mut rows = Vec::new();
    for (name, embedded) in model::default_models() {
        let loaded = if embedded {
            Some(Model::load(name)?)
        } else {
            None
        };
        rows.push(DefaultModel {
            name,
            embedded,
            fingerprint: loaded.as_ref().map(|m| m.fingerprint.clone()),
            info: loaded.map(|m| m.info),
        });
    }
    output::print(&DefaultModels(rows), args.json)?;
    Ok(Outcome::Success)
}

impl Table for DefaultModels {
    fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{:<15} {:<16} {:>6} {:<22} {:>6} {:<22} {:>6} {:>9}  data",
            "name", "input", "latent", "widths", "embeds", "as", "epochs", "val loss"
        )?;
        for m in &self.0 {
            let Some(info) = &m.info else {
                writeln!(out, "{:<15} (not embedded in this build)", m.name)?;
                continue;
            };
            let a = &info.arch;
            let embedding = match &info.embedding {
                Some(head) => format!("pooled blocks {:?}", head.layers),
                None => "latent".to_string(),
            };
            writeln!(
                out,
                "{:<15} {:<16} {:>6} {:<22} {:>6} {:<22} {:>6} {:>9.5}  {}",
                m.name,
                format!(
                    "{}x{}x{} {}",
                    a.input_size,
                    a.input_size,
                    a.channels,
                    info.prep.as_str()
                ),
                a.latent,
                format!("{:?}", a.widths),
                info.embedding_dim(),
                embedding,
                info.training.epochs,
                info.training.validation_loss,
                info.training.data
            )?;
        }
        Ok(())
    }
}
