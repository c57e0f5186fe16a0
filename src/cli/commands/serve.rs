//! `imgsearch serve`: arguments, logging, and the call into
//! [`imgsearch::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use imgsearch::index::Index;
use imgsearch::serve::{self, ServeOptions};

use crate::cli::args::{DecodeArgs, IndexArg};
use crate::cli::output::Outcome;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    index: IndexArg,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = serve::DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Folder under which `POST /api/ingest` may ingest (repeatable). Without
    /// one, ingest over HTTP is refused.
    #[arg(long = "allow-root", value_name = "DIR")]
    allow_roots: Vec<PathBuf>,
    /// Model for a new index (an existing index keeps its own).
    #[arg(long)]
    model: Option<String>,
    /// Largest request body (an uploaded image) in MiB; larger gets 413.
    #[arg(long, default_value_t = 20)]
    max_upload_mb: usize,
    /// Largest uploaded image in megapixels; larger gets 413.
    #[command(flatten)]
    decode: DecodeArgs,
    /// Seconds a request may take before it is answered 408.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Connections served at once; further clients wait until one closes.
    #[arg(long, default_value_t = serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds a connection may sit without traffic (a client that sends
    /// nothing, or half a request, or an idle keep-alive) before it is
    /// closed; at least --timeout + 5.
    #[arg(long, default_value_t = serve::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout: u64,
}

pub fn run(args: Args) -> Result<Outcome> {
    // Structured logs on stderr; IMGSEARCH_LOG takes a tracing filter
    // (e.g. `debug`, or `imgsearch=info,tower_http=debug`).
    let filter =
        EnvFilter::try_from_env("IMGSEARCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let dir = &args.index.index;
    let index = Index::open(dir, args.model.as_deref(), true)
        .with_context(|| format!("opening index {}", dir.display()))?;
    let opts = ServeOptions {
        addr: args.addr,
        allow_roots: args.allow_roots,
        max_upload: args.max_upload_mb << 20,
        limits: args.decode.limits(),
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        max_connections: args.max_connections,
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
    };
    serve::serve(index, opts, |addr| {
        eprintln!("listening on http://{addr}");
    })
    .with_context(|| format!("serving {}", dir.display()))?;
    Ok(Outcome::Success)
}
