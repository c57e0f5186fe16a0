//! Ingest jobs started over HTTP: queued, run one at a time on a worker
//! thread, watched through `GET /api/jobs/{id}`.
//!
//! The heavy work (decoding, encoding, graph inserts) runs in a rayon pool
//! of its own at a lower CPU priority (nice 10), so on a busy machine
//! searches are served first and ingest takes what is left. The worker
//! thread itself, which commits batches and takes the index's write lock
//! for a moment per batch, keeps normal priority: a low-priority thread
//! queued for that lock would hold up every search behind it. Each batch commits on its own, so new images are searchable as
//! they land, and a cancelled or interrupted job loses nothing: ingesting
//! the same folder again carries on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApiError, App};
use crate::ingest::{self, IngestOptions};
use crate::labels::LabelSource;
use crate::progress::Counter;

/// Nice value of the ingest threads (0 is normal, 19 the lowest priority).
const INGEST_NICENESS: i32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Jobs by state, and how far the running one is.
pub struct JobCounts {
    pub by_state: [(&'static str, usize); 5],
    pub running_done: u64,
    pub running_total: u64,
}

struct Job {
    dir: PathBuf,
    exclude: Vec<String>,
    state: JobState,
    /// Files found and files done; the worker moves it, `GET` reads it.
    progress: Arc<Counter>,
    cancel: Arc<AtomicBool>,
    started: Option<Instant>,
    seconds: Option<f64>,
    report: Option<Value>,
    error: Option<String>,
}

#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Job>>,
    queue: Mutex<Option<Sender<u64>>>,
}

impl Jobs {
    fn submit(&self, dir: PathBuf, exclude: Vec<String>) -> Result<Value, ApiError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Job {
            dir,
            exclude,
            state: JobState::Queued,
            progress: Arc::default(),
            cancel: Arc::new(AtomicBool::new(false)),
            started: None,
            seconds: None,
            report: None,
            error: None,
        };
        let view = view(id, &job);
        self.jobs.lock().insert(id, job);
        let queue = self.queue.lock();
        let sent = queue.as_ref().is_some_and(|q| q.send(id).is_ok());
        if !sent {
            self.jobs.lock().remove(&id);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        }
        Ok(view)
    }

    fn get(&self, id: u64) -> Option<Value> {
        self.jobs.lock().get(&id).map(|job| view(id, job))
    }

    /// Counts by state, for `/api/status`.
    pub fn summary(&self) -> Value {
        let jobs = self.jobs.lock();
        let count = |s: JobState| jobs.values().filter(|j| j.state == s).count();
        json!({
            "queued": count(JobState::Queued),
            "running": count(JobState::Running),
            "done": count(JobState::Done),
            "failed": count(JobState::Failed),
            "cancelled": count(JobState::Cancelled),
        })
    }

    /// Counts by state and the running job's progress, for `/metrics`.
    pub fn counts(&self) -> JobCounts {
        let jobs = self.jobs.lock();
        let by_state = [
            JobState::Queued,
            JobState::Running,
            JobState::Done,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .map(|s| (s.name(), jobs.values().filter(|j| j.state == s).count()));
        let running = jobs.values().find(|j| j.state == JobState::Running);
        JobCounts {
            by_state,
            running_done: running.map_or(0, |j| j.progress.done()),
            running_total: running.map_or(0, |j| j.progress.total()),
        }
    }

    /// Asks every queued or running job to stop (shutdown).
    pub fn cancel_all(&self) {
        *self.queue.lock() = None;
        for job in self.jobs.lock().values() {
            job.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Job)) {
        if let Some(job) = self.jobs.lock().get_mut(&id) {
            f(job);
        }
    }
}

fn view(id: u64, job: &Job) -> Value {
    let seconds = job
        .seconds
        .or_else(|| job.started.map(|t| t.elapsed().as_secs_f64()));
    json!({
        "id": id,
        "url": format!("/api/jobs/{id}"),
        "dir": job.dir,
        "exclude": job.exclude,
        "state": job.state,
        "scanned": job.progress.done(),
        "total": job.progress.total(),
        "seconds": seconds,
        "report": job.report,
        "error": job.error,
    })
}

/// The thread that runs jobs in order.
pub struct Worker {
    app: Arc<App>,
    handle: JoinHandle<()>,
}

impl Worker {
    /// Stops taking jobs, and waits for the running one (cancelled by
    /// [`Jobs::cancel_all`]) to finish its batch and flush.
    pub fn stop(self) {
        *self.app.jobs.queue.lock() = None;
        if self.handle.join().is_err() {
            tracing::error!("the ingest worker panicked");
        }
    }
}

pub fn start_worker(app: Arc<App>) -> std::io::Result<Worker> {
    let (tx, rx) = channel::<u64>();
    *app.jobs.queue.lock() = Some(tx);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ingest-{i}"))
        .start_handler(|_| lower_priority())
        .build()
        .map_err(std::io::Error::other)?;
    let pool = Arc::new(pool);
    let shared = app.clone();
    let handle = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || {
            for id in rx {
                run(&shared, id, &pool);
            }
        })?;
    Ok(Worker { app, handle })
}

fn run(app: &App, id: u64, pool: &Arc<rayon::ThreadPool>) {
    let mut setup = None;
    app.jobs.update(id, |job| {
        if job.cancel.load(Ordering::Relaxed) {
            job.state = JobState::Cancelled;
        } else {
            job.state = JobState::Running;
            job.started = Some(Instant::now());
            setup = Some((
                job.dir.clone(),
                job.exclude.clone(),
                job.progress.clone(),
                job.cancel.clone(),
            ));
        }
    });
    let Some((dir, exclude, progress, cancel)) = setup else {
        return;
    };
    tracing::info!(job = id, dir = %dir.display(), "ingest started");
    // `dir` was resolved when the job was asked for; a link swapped in for
    // it (or for a folder under it) since is refused, not followed.
    let opts = IngestOptions {
        exclude,
        follow_links: false,
        confine: true,
        limits: app.opts.limits,
        labels: LabelSource::Folders,
        cancel: Some(cancel),
        pool: Some(pool.clone()),
    };
    let result = ingest::ingest(&app.index, &dir, &opts, &*progress);
    app.jobs.update(id, |job| {
        job.seconds = job.started.map(|t| t.elapsed().as_secs_f64());
        match result {
            Ok(report) => {
                job.state = if report.cancelled {
                    JobState::Cancelled
                } else {
                    JobState::Done
                };
                tracing::info!(
                    job = id,
                    added = report.added,
                    failed = report.failed,
                    cancelled = report.cancelled,
                    seconds = report.seconds,
                    "ingest finished"
                );
                job.report = serde_json::to_value(&report).ok();
            }
            Err(e @ ingest::IngestError::Moved { .. }) => {
                tracing::warn!(job = id, error = %e, "refused an ingest whose folder was swapped for a link");
                job.state = JobState::Failed;
                job.error = Some(e.to_string());
            }
            Err(e) => {
                tracing::error!(job = id, error = %e, "ingest failed");
                job.state = JobState::Failed;
                job.error = Some(e.to_string());
            }
        }
    });
}

/// Lowers this thread's CPU priority (Linux nice values are per thread).
fn lower_priority() {
    // SAFETY: setpriority on the calling thread's id has no memory effects.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, INGEST_NICENESS);
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    dir: PathBuf,
    #[serde(default)]
    exclude: Vec<String>,
}

/// `POST /api/ingest`: queues an ingest of a folder under an allowed root.
pub async fn submit(
    State(app): State<Arc<App>>,
    body: Result<Json<IngestRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let roots = &app.opts.allow_roots;
    if roots.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ingest over HTTP is off: start `imgsearch serve` with --allow-root DIR",
        ));
    }
    let refused = |resolved: &str| {
        tracing::warn!(requested = %req.dir.display(), resolved, "refused an ingest outside the allowed roots");
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is not under an allowed root ({})",
                req.dir.display(),
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    // Resolve `..` and links first, then compare whole path components.
    let dir = match std::fs::canonicalize(&req.dir) {
        Ok(dir) => dir,
        Err(e) if roots.iter().any(|r| req.dir.starts_with(r)) && !has_dotdot(&req.dir) => {
            return Err(ApiError::not_found(format!(
                "cannot ingest {}: {e}",
                req.dir.display()
            )))
        }
        Err(_) => return Err(refused("(unresolvable)")),
    };
    if !roots.iter().any(|r| dir.starts_with(r)) {
        return Err(refused(&dir.display().to_string()));
    }
    if !dir.is_dir() {
        return Err(ApiError::bad_request(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    let view = app.jobs.submit(dir, req.exclude)?;
    let url = view["url"].as_str().unwrap_or_default().to_string();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, url)],
        Json(json!({ "job": view })),
    )
        .into_response())
}

fn has_dotdot(path: &std::path::Path) -> bool {
    path.components()
        .any(|c| c == std::path::Component::ParentDir)
}

pub async fn list(State(app): State<Arc<App>>) -> Json<Value> {
    let jobs = app.jobs.jobs.lock();
    let all: Vec<Value> = jobs.iter().map(|(id, job)| view(*id, job)).collect();
    Json(json!({ "jobs": all }))
}

pub async fn show(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    app.jobs
        .get(id)
        .map(|job| Json(json!({ "job": job })))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

fn job_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("`{raw}` is not a job id")))
}

/// `DELETE /api/jobs/{id}`: stops a job after its current batch.
pub async fn cancel(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = job_id(&id)?;
    let mut found = false;
    app.jobs.update(id, |job| {
        found = true;
        job.cancel.store(true, Ordering::Relaxed);
        // A queued job never starts; a running one stops after its batch.
        if job.state == JobState::Queued {
            job.state = JobState::Cancelled;
        }
    });
    if !found {
        return Err(ApiError::not_found(format!("no job {id}")));
    }
    let view = app.jobs.get(id).unwrap_or_default();
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": view }))))
}
