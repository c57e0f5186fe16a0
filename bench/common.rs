//! Helpers shared by the benchmarks.
#![allow(dead_code)] // each benchmark uses a different subset

/// A comma-separated list of numbers from the environment variable `key`
/// (`BENCH_SIZES=100000,1000000`), or `default`.
pub fn env_list(key: &str, default: &str) -> Vec<usize> {
    std::env::var(key)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// The release CLI the benches run as a user would, built beforehand.
pub fn release_binary() -> anyhow::Result<std::path::PathBuf> {
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/imgsearch");
    anyhow::ensure!(
        binary.is_file(),
        "build the CLI first: cargo build --release"
    );
    Ok(binary)
}

/// Runs `imgsearch query IMAGE -k 10 --json --index DIR EXTRA...` as a fresh
/// process `runs` times (the OS file cache warm): each run's wall time in
/// milliseconds, and the method the last answer says it used.
pub fn cold_queries(
    binary: &std::path::Path,
    image: &std::path::Path,
    dir: &std::path::Path,
    extra: &[&str],
    runs: usize,
) -> anyhow::Result<(Vec<f64>, String)> {
    let (mut times, mut method) = (Vec::with_capacity(runs), String::new());
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let out = std::process::Command::new(binary)
            .arg("query")
            .arg(image)
            .args(["-k", "10", "--json", "--index"])
            .arg(dir)
            .args(extra)
            .output()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            out.status.success(),
            "query failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        method = answer[0]["method"].as_str().unwrap_or_default().to_string();
    }
    Ok((times, method))
}

/// Resident memory of this process now, in MB.
pub fn rss_mb() -> f64 {
    status_mb("self", "VmRSS:")
}

/// Peak resident memory of this process so far, in MB.
pub fn peak_rss_mb() -> f64 {
    peak_rss_mb_of("self")
}

/// Peak resident memory of a process (`self` or a pid) so far, in MB.
pub fn peak_rss_mb_of(pid: &str) -> f64 {
    status_mb(pid, "VmHWM:")
}

/// A memory line (`key`, in kB) of `/proc/PID/status`, in MB.
fn status_mb(pid: &str, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The value at quantile `p` of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 and p99 of samples (sorts them).
pub fn p50_p99(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (percentile(samples, 0.5), percentile(samples, 0.99))
}

/// Real latents at scale: the `digits` model's embeddings of the 60,000
/// MNIST training images, replicated with Gaussian noise to any size, and
/// of the MNIST test images as queries (never in the index).
pub mod latents {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use imgsearch::dataset::{self, DatasetName, Split};
    use imgsearch::index::Index;
    use imgsearch::model::Model;
    use imgsearch::store::{Change, Record};
    use rand::{Rng, SeedableRng};

    pub struct Latents {
        pub train: dataset::Dataset,
        pub test: dataset::Dataset,
        /// One per training image.
        pub base: Vec<Vec<f32>>,
        pub queries: Vec<Vec<f32>>,
        /// Each dimension's standard deviation over `base`.
        pub std: Vec<f32>,
    }

    impl Latents {
        pub fn load(root: &Path, n_queries: usize) -> anyhow::Result<Self> {
            let model = Model::load("digits")?;
            let mnist = root.join("mnist");
            let train = dataset::load(DatasetName::Mnist, &mnist, Split::Train, None)?;
            let test = dataset::load(DatasetName::Mnist, &mnist, Split::Test, Some(n_queries))?;
            let t = Instant::now();
            let embed = |ds: &dataset::Dataset| -> anyhow::Result<Vec<Vec<f32>>> {
                let mut out = Vec::with_capacity(ds.len());
                for start in (0..ds.len()).step_by(1024) {
                    let px: Vec<_> = (start..(start + 1024).min(ds.len()))
                        .map(|i| ds.pixels(i))
                        .collect();
                    out.extend(model.embed(&px)?);
                }
                Ok(out)
            };
            let base = embed(&train)?;
            let queries = embed(&test)?;
            println!(
                "embedded {} train and {} test images in {:.1} s",
                base.len(),
                queries.len(),
                t.elapsed().as_secs_f64()
            );
            let dim = base[0].len();
            let n = base.len() as f32;
            let mean: Vec<f32> = (0..dim)
                .map(|d| base.iter().map(|v| v[d]).sum::<f32>() / n)
                .collect();
            let std = (0..dim)
                .map(|d| (base.iter().map(|v| (v[d] - mean[d]).powi(2)).sum::<f32>() / n).sqrt())
                .collect();
            Ok(Self {
                train,
                test,
                base,
                queries,
                std,
            })
        }

        /// The first `size` vectors of the replicated set: the base
        /// latents, then copies with noise of σ = 0.05 × each dimension's
        /// standard deviation (the same vectors for the same size).
        pub fn replicated(&self, size: usize) -> impl Iterator<Item = Vec<f32>> + '_ {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(size as u64);
            // Box–Muller: a standard normal sample from two uniforms.
            let mut gauss = move || {
                let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            };
            (0..size).map(move |j| {
                let (src, rep) = (j % self.base.len(), j / self.base.len());
                let mut v = self.base[src].clone();
                if rep > 0 {
                    for (x, s) in v.iter_mut().zip(&self.std) {
                        *x += 0.05 * s * gauss();
                    }
                }
                v
            })
        }

        /// Writes (or reuses) a real index of `size` replicated vectors:
        /// sled store, flat file and HNSW graph through the library, with
        /// virtual paths. Returns what happened and the seconds spent in
        /// graph and flat inserts (`None` when reused).
        pub fn build_index(
            &self,
            dir: &Path,
            size: usize,
        ) -> anyhow::Result<(String, Option<f64>)> {
            // The folder the virtual paths lie under, recorded as ingest and
            // import record theirs (a cold query skips the path lookup for a
            // query file outside it).
            let virtual_root = PathBuf::from("/bench/mnist");
            if let Ok(index) = Index::open(dir, None, false) {
                if index.store.live_count()? as usize == size {
                    index.add_root(&virtual_root)?;
                    // A graph saved with other parameters is rebuilt (and saved) here.
                    let t = Instant::now();
                    index.load_graph()?;
                    index.save()?;
                    let s = t.elapsed().as_secs_f64();
                    return Ok((format!("reused, graph ready in {s:.0} s"), None));
                }
            }
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            let t = Instant::now();
            let index = Index::open(dir, Some("digits"), true)?;
            index.add_root(&virtual_root)?;
            let batch = 20_000;
            let mut vectors = self.replicated(size);
            let (mut i, mut insert_s) = (0, 0.0);
            while i < size {
                let mut changes = Vec::with_capacity(batch);
                for (j, v) in (i..(i + batch).min(size)).zip(&mut vectors) {
                    let (src, rep) = (j % self.base.len(), j / self.base.len());
                    let label = self.train.class_name(src).to_string();
                    let path = virtual_root.join(format!("r{rep}/{label}/{src:05}.png"));
                    changes.push(Change::Add {
                        record: Record {
                            path: imgsearch::store::path_to_bytes(&path),
                            size: 300,
                            mtime_ns: 1,
                            hash: *blake3::hash(path.as_os_str().as_encoded_bytes()).as_bytes(),
                            label: Some(label),
                            width: 28,
                            height: 28,
                            recon_error: 0.0,
                            ingested_at: 0,
                        },
                        vector: v,
                    });
                }
                // The one write path: store, flat file, graph, catalogue.
                let count = changes.len();
                insert_s += index.commit(changes, None)?.index_seconds;
                i += count;
                eprint!("\rbuilding {size}: {i}");
            }
            index.save()?;
            eprintln!();
            let what = format!(
                "built in {:.0} s ({insert_s:.0} s of graph and flat inserts), {:.0} MB on disk",
                t.elapsed().as_secs_f64(),
                index.status()?.bytes_on_disk as f64 / 1e6
            );
            Ok((what, Some(insert_s)))
        }
    }
}

/// Runs a command to the end, polling its peak resident memory. Returns
/// wall seconds, peak MB and its output (stdout captured, stderr inherited).
pub fn run_measured(
    cmd: &mut std::process::Command,
) -> anyhow::Result<(f64, f64, std::process::Output)> {
    let t = std::time::Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let pid = child.id().to_string();
    let mut peak = 0f64;
    while child.try_wait()?.is_none() {
        peak = peak.max(peak_rss_mb_of(&pid));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    let wall = t.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "{:?} failed: {:?}", cmd, out.status);
    Ok((wall, peak, out))
}
