//! `imgsearch serve`: the index behind an HTTP API (axum on tokio) and a
//! web page.
//!
//! One [`Index`] is opened, its graph loaded, and shared by every request:
//! searches take the index's read lock side by side; ingest jobs
//! ([`jobs`]) run one at a time on a worker thread in a rayon pool of their
//! own at a lower CPU priority, committing batch by batch, so their images
//! become searchable as they land and searches never queue behind them.
//! CPU work leaves the async workers through `spawn_blocking`.
//!
//! On SIGINT or SIGTERM the server stops accepting, finishes the requests
//! in flight, cancels the running ingest after its current batch, and
//! flushes the store, flat file and graph: the next start (or the next
//! `ingest` of the same folder) carries on from there.

mod api;
mod assets;
mod collection;
mod conn;
mod error;
mod jobs;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::imageio::DecodeLimits;
use crate::index::Index;

pub use error::ApiError;

/// Default listening address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";
/// Default cap on a request body (an uploaded image), in bytes.
pub const DEFAULT_MAX_UPLOAD: usize = 20 << 20;
/// Default time a request may take before it is answered 408.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a connection may sit without traffic before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Folders under which `POST /api/ingest` may ingest (none: refused).
    pub allow_roots: Vec<PathBuf>,
    /// Request body limit (413 above it).
    pub max_upload: usize,
    /// Decoded-pixel limit for uploads (413 above it).
    pub limits: DecodeLimits,
    pub timeout: Duration,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed. Kept longer
    /// than `timeout`, so a request in progress is always answered first.
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.parse().expect("valid address"),
            allow_roots: Vec::new(),
            max_upload: DEFAULT_MAX_UPLOAD,
            limits: DecodeLimits::default(),
            timeout: DEFAULT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--allow-root {path}: {error}")]
    Root {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Ann(#[from] crate::ann::AnnError),
}

/// What every handler shares.
pub(crate) struct App {
    pub index: Index,
    pub opts: ServeOptions,
    pub jobs: jobs::Jobs,
    pub metrics: metrics::Metrics,
    pub started: Instant,
}

/// Serves `index` until SIGINT or SIGTERM, then flushes it. `ready` hears
/// the bound address (useful with port 0) once the server accepts.
pub fn serve(
    index: Index,
    mut opts: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    for root in &mut opts.allow_roots {
        *root = std::fs::canonicalize(&*root).map_err(|error| ServeError::Root {
            path: root.clone(),
            error,
        })?;
    }
    match conn::raise_open_file_limit() {
        Ok(files) => tracing::info!(files, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    opts.idle_timeout = opts.idle_timeout.max(opts.timeout + Duration::from_secs(5));
    let t = Instant::now();
    index.load_graph()?;
    tracing::info!(
        images = index.store.live_count().unwrap_or(0),
        seconds = t.elapsed().as_secs_f64(),
        "index loaded"
    );
    let app = Arc::new(App {
        index,
        opts,
        jobs: jobs::Jobs::default(),
        metrics: metrics::Metrics::default(),
        started: Instant::now(),
    });
    let worker = jobs::start_worker(app.clone())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()?;
    let served = runtime.block_on(async {
        let addr = app.opts.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| ServeError::Bind { addr, error })?;
        let bound = listener.local_addr()?;
        tracing::info!(%bound, "listening");
        ready(bound);
        let listener =
            conn::Limited::new(listener, app.opts.max_connections, app.opts.idle_timeout);
        axum::serve(listener, router(app.clone()))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok::<_, ServeError>(())
    });
    // Stop ingesting after the batch in flight, then flush everything.
    tracing::info!("shutting down");
    app.jobs.cancel_all();
    worker.stop();
    runtime.shutdown_timeout(Duration::from_secs(5));
    app.index.save()?;
    tracing::info!("index flushed");
    served
}

fn router(app: Arc<App>) -> Router {
    let max_upload = app.opts.max_upload;
    let timeout = app.opts.timeout;
    Router::new()
        .route("/", get(assets::page))
        .route("/assets/{name}", get(assets::asset))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(assets::openapi))
        .route("/api/status", get(api::status))
        .route("/api/query", post(api::query))
        .route("/api/classify", post(api::classify))
        .route("/api/images/{id}", get(api::image))
        .route("/api/images/{id}/thumbnail", get(api::thumbnail))
        .route("/api/images/{id}/file", get(api::file))
        .route("/api/anomalies", get(api::anomalies))
        .route("/api/duplicates", get(api::duplicates))
        .route("/api/map", get(collection::map))
        .route("/api/clusters", get(collection::clusters))
        .route("/api/ingest", post(jobs::submit))
        .route("/api/jobs", get(jobs::list))
        .route("/api/jobs/{id}", get(jobs::show).delete(jobs::cancel))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(max_upload))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(error::json_body))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Runs a search-sized piece of CPU work (a query, a classification) in
/// rayon's global pool: one thread per core, jobs taken in arrival order, and
/// the search's own parallel steps run on the same thread instead of being
/// handed between threads. Under many concurrent clients this keeps the
/// cores busy without oversubscribing them, which keeps tail latency close
/// to the median.
pub(crate) async fn compute<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    });
    match rx.await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ApiError::internal("the search panicked")),
        Err(_) => Err(ApiError::internal("the search was dropped")),
    }
}

/// Runs slower or I/O-bound work (files, thumbnails, whole-index passes)
/// off the async workers, on tokio's blocking threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}
