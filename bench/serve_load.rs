//! Load on `imgsearch serve`: 64 keep-alive clients in this process query a
//! server in another process over loopback, first on an idle index, then
//! while the server ingests 10,000 new images in the background.
//!
//! The base index holds 100,000 images (the 60,000 MNIST training digits and
//! the first 40,000 Fashion-MNIST training items, `digits` model), built
//! once through the real ingest and copied fresh for every run. The new
//! images are the 10,000 MNIST test digits. Queries ask for the 10 nearest
//! neighbours of a random indexed image (`{"id": N}`), so they measure the
//! server and the search, not decoding; a last phase uploads PNGs instead.
//!
//! Phases, all against the same server (the baseline is the first rows):
//! - idle, HNSW (the server's plan at 100k);
//! - idle, exact scan (`"exact": true`): brute force beside HNSW;
//! - during ingest, HNSW: the target (0 errors, p99 <= 50 ms);
//! - idle, uploads (multipart PNG, decoded and embedded per request).
//!
//! Closed loop (the default): each client sends its next request as soon as
//! its answer arrives, so latency is about clients / throughput. Open loop
//! (`SERVE_RATE=1000`): requests leave on a fixed schedule of that many per
//! second, spread over the clients, whatever the server does, and each
//! latency counts from the moment its request was due (so a stall delays
//! every request behind it, and shows; no coordinated omission).
//!
//! Run: `cargo bench --bench serve_load`. Settings (environment):
//! `SERVE_WORK` (default target/serve-bench), `SERVE_BASE` (100000),
//! `SERVE_NEW` (10000), `SERVE_CLIENTS` (64), `SERVE_SECONDS` (30; the
//! idle phases run a third of it), `SERVE_RATE` (0: closed loop).

mod common;
#[path = "../tests/e2e/common/http.rs"]
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::json;

use imgsearch::dataset::{self, DatasetName, Split};
use imgsearch::index::Index;
use imgsearch::ingest::{self, IngestOptions};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let Some(data) = dataset::data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))) else {
        println!(
            "serve_load: skipped, no dataset folder (set IMGSEARCH_DATA or provide ../shared/data)"
        );
        return Ok(());
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work =
        std::env::var("SERVE_WORK").map_or(manifest.join("target/serve-bench"), PathBuf::from);
    let (base_n, new_n) = (env_or("SERVE_BASE", 100_000), env_or("SERVE_NEW", 10_000));
    let clients = env_or("SERVE_CLIENTS", 64);
    let seconds = env_or("SERVE_SECONDS", 30) as u64;
    let rate = Some(env_or("SERVE_RATE", 0) as f64).filter(|&r| r > 0.0);

    // The base index, built once.
    let base_index = work.join(format!("base-index-{base_n}"));
    if !base_index.join("db").is_dir()
        || Index::open(&base_index, None, false)?.store.live_count()? as usize != base_n
    {
        let pile = work.join(format!("base-{base_n}"));
        let digits_n = base_n.min(60_000);
        let digits = dataset::load(
            DatasetName::Mnist,
            &data.join("mnist"),
            Split::Train,
            Some(digits_n),
        )?;
        dataset::export(&digits, &pile.join("digits"))?;
        if base_n > digits_n {
            let fashion = dataset::load(
                DatasetName::FashionMnist,
                &data.join("fashion-mnist"),
                Split::Train,
                Some(base_n - digits_n),
            )?;
            dataset::export(&fashion, &pile.join("fashion"))?;
        }
        let _ = std::fs::remove_dir_all(&base_index);
        let index = Index::open(&base_index, Some("digits"), true)?;
        let t = Instant::now();
        let report = ingest::ingest(
            &index,
            &pile,
            &IngestOptions::default(),
            &imgsearch::progress::NoProgress,
        )?;
        println!(
            "base index: {} images ingested in {:.0} s",
            report.added,
            t.elapsed().as_secs_f64()
        );
    }
    let new_dir = work.join(format!("new-{new_n}"));
    if !new_dir.is_dir() {
        let test = dataset::load(
            DatasetName::Mnist,
            &data.join("mnist"),
            Split::Test,
            Some(new_n),
        )?;
        dataset::export(&test, &new_dir)?;
    }
    let run_index = work.join("run-index");
    let _ = std::fs::remove_dir_all(&run_index);
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(&base_index)
        .arg(&run_index)
        .status()?;
    anyhow::ensure!(copied.success(), "copying the base index failed");

    let t = Instant::now();
    let server = http::Server::start(
        Path::new(env!("CARGO_BIN_EXE_imgsearch")),
        &run_index,
        &["--allow-root", work.to_str().expect("UTF-8 path")],
    );
    let addr = server.addr;
    let server_pid = server.child.id();
    println!(
        "server up in {:.1} s (graph reload), pid {}",
        t.elapsed().as_secs_f64(),
        server.child.id()
    );
    let status = http::get(addr, "/api/status").json();
    assert_eq!(status["status"]["images"], base_n);
    let ids = first_id(addr)..first_id(addr) + base_n as u64;
    let upload = std::fs::read(
        walkdir::WalkDir::new(&new_dir)
            .into_iter()
            .flatten()
            .find(|e| e.file_type().is_file())
            .expect("a new image")
            .path(),
    )?;

    let mut rows = Vec::new();
    run_phase(
        server_pid,
        addr,
        (clients, rate),
        Duration::from_secs(2),
        Query::Id { exact: false },
        ids.clone(),
        &upload,
    ); // warm-up
    let idle = seconds / 3;
    rows.push((
        "idle",
        run_phase(
            server_pid,
            addr,
            (clients, rate),
            Duration::from_secs(idle),
            Query::Id { exact: false },
            ids.clone(),
            &upload,
        ),
    ));
    rows.push((
        "idle, exact: true",
        run_phase(
            server_pid,
            addr,
            (clients, rate),
            Duration::from_secs(idle),
            Query::Id { exact: true },
            ids.clone(),
            &upload,
        ),
    ));

    let r = http::post_json(addr, "/api/ingest", &json!({ "dir": new_dir }));
    anyhow::ensure!(r.status == 202, "ingest refused: {}", r.text());
    let job = r.json()["job"]["id"].as_u64().expect("job id");
    let during = run_phase(
        server_pid,
        addr,
        (clients, rate),
        Duration::from_secs(seconds),
        Query::Id { exact: false },
        ids.clone(),
        &upload,
    );
    let at_end = http::get(addr, &format!("/api/jobs/{job}")).json()["job"].clone();
    rows.push(("during ingest", during));
    let done = http::wait_for_job(addr, job, Duration::from_secs(3600));
    let ingest_s = done["seconds"].as_f64().unwrap_or(f64::NAN);
    rows.push((
        "idle, uploads",
        run_phase(
            server_pid,
            addr,
            (clients, rate),
            Duration::from_secs(idle),
            Query::Upload,
            ids.clone(),
            &upload,
        ),
    ));
    let rss = common::peak_rss_mb_of(&server.child.id().to_string());

    let load = rate.map_or("closed loop".to_string(), |r| {
        format!("open loop at {r:.0} req/s")
    });
    println!(
        "\n== {clients} clients, {load}, {base_n} images (+{new_n} ingested during the third phase) =="
    );
    println!(
        "{:<22} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>12} {:>12}",
        "phase",
        "method",
        "seconds",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "server cores",
        "client cores"
    );
    for (name, s) in &rows {
        let method = match s.hnsw {
            0 => "exact",
            n if n == s.latencies_ms.len() => "hnsw",
            _ => "mixed",
        };
        println!(
            "{:<22} {:>7} {:>8.1} {:>10} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>12.2} {:>12.2}",
            name,
            method,
            s.seconds,
            s.latencies_ms.len(),
            s.latencies_ms.len() as f64 / s.seconds,
            s.quantile(0.50),
            s.quantile(0.99),
            s.quantile(1.0),
            s.errors,
            s.server_cores,
            s.client_cores
        );
    }
    println!(
        "\ningest job: {} of {new_n} scanned when the {seconds} s phase ended; {} in {:.1} s ({:.0} images/s, under load until then); index now {} images",
        at_end["scanned"],
        done["state"],
        ingest_s,
        new_n as f64 / ingest_s,
        http::get(addr, "/api/status").json()["status"]["images"]
    );
    println!("server peak RSS: {rss:.0} MB");
    for (_, s) in &rows {
        if let Some(e) = &s.first_error {
            println!("first error: {e}");
        }
    }
    Ok(())
}

fn first_id(addr: SocketAddr) -> u64 {
    (0..10)
        .find(|id| http::get(addr, &format!("/api/images/{id}")).status == 200)
        .expect("an image among the first ids")
}

#[derive(Clone, Copy)]
enum Query {
    Id { exact: bool },
    Upload,
}

struct Stats {
    seconds: f64,
    latencies_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    /// Answers the server found through the graph (the rest: exact scan).
    hnsw: usize,
    /// CPU used, in cores: this process (the 64 clients) and the server.
    client_cores: f64,
    server_cores: f64,
}

/// User + system CPU seconds of a process so far (`self` or a pid).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

impl Stats {
    fn quantile(&self, q: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_ms.len() - 1) as f64 * q).round() as usize;
        self.latencies_ms[i]
    }
}

/// `clients` threads, each on its own keep-alive connection, for `length`:
/// asking as fast as answers come, or, with a `rate`, on a fixed schedule
/// (request `i` of client `c` is due at `(i · clients + c) / rate` seconds),
/// timing each from when it was due.
fn run_phase(
    server: u32,
    addr: SocketAddr,
    (clients, rate): (usize, Option<f64>),
    length: Duration,
    query: Query,
    ids: std::ops::Range<u64>,
    upload: &[u8],
) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let form = http::multipart(&[("image", Some("q.png"), upload), ("k", None, b"10")]);
    let content_type = format!("multipart/form-data; boundary={}", http::BOUNDARY);
    let started = Instant::now();
    let cpu_before = (cpu_seconds("self"), cpu_seconds(&server.to_string()));
    let results: Vec<(Vec<f64>, usize, Option<String>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, ids, form, content_type) = (stop.clone(), ids.clone(), &form, &content_type);
                scope.spawn(move || {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
                    let mut latencies = Vec::new();
                    let (mut errors, mut first_error, mut hnsw) = (0, None, 0);
                    let mut client = http::Client::connect(addr).ok();
                    let mut sent = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let t = match rate {
                            None => Instant::now(),
                            Some(rate) => {
                                let due = started + Duration::from_secs_f64((sent * clients + c) as f64 / rate);
                                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                    std::thread::sleep(wait);
                                }
                                due
                            }
                        };
                        sent += 1;
                        if started.elapsed() >= length {
                            break;
                        }
                        let result = match client.as_mut() {
                            None => Err(std::io::Error::other("not connected")),
                            Some(client) => match query {
                                Query::Id { exact } => {
                                    let body = json!({"id": rng.random_range(ids.clone()), "k": 10, "exact": exact}).to_string();
                                    client.send("POST", "/api/query", &[("Content-Type", "application/json")], body.as_bytes())
                                }
                                Query::Upload => client.send("POST", "/api/query", &[("Content-Type", content_type)], form),
                            },
                        };
                        match result {
                            Ok(r) if r.status == 200 => {
                                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                                // How the server answered (`method` in the body).
                                if r.body.windows(15).any(|w| w == b"\"method\":\"hnsw\"") {
                                    hnsw += 1;
                                }
                            }
                            Ok(r) => {
                                errors += 1;
                                first_error.get_or_insert(format!("status {}: {}", r.status, r.text()));
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e.to_string());
                                client = http::Client::connect(addr).ok();
                            }
                        }
                    }
                    (latencies, errors, first_error, hnsw)
                })
            })
            .collect();
        std::thread::sleep(length);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut stats = Stats {
        seconds,
        client_cores: (cpu_seconds("self") - cpu_before.0) / seconds,
        server_cores: (cpu_seconds(&server.to_string()) - cpu_before.1) / seconds,
        latencies_ms: Vec::new(),
        errors: 0,
        first_error: None,
        hnsw: 0,
    };
    for (latencies, errors, first, hnsw) in results {
        stats.hnsw += hnsw;
        stats.latencies_ms.extend(latencies);
        stats.errors += errors;
        if stats.first_error.is_none() {
            stats.first_error = first;
        }
    }
    stats.latencies_ms.sort_by(f64::total_cmp);
    stats
}
