//! `GET /metrics`: request counts and latency histograms per route, ingest
//! progress and index size, in Prometheus's text exposition format (0.0.4).
//!
//! Every request passes through [`track`], which records it under the
//! route's pattern (`/api/images/{id}`, not the id), so the label set stays
//! small whatever clients ask for. The histogram's buckets are fixed and
//! cumulative, as Prometheus expects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::{blocking, ApiError, App};

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implied).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What one (method, route) pair has seen.
#[derive(Default)]
struct RouteStats {
    /// Responses by status code.
    statuses: BTreeMap<u16, u64>,
    /// Requests that took at most `BUCKETS[i]` seconds (not cumulative here).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    seconds: f64,
}

/// Counts since the server started, keyed by method and route pattern.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<(String, String), RouteStats>>,
}

impl Metrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock();
        let stats = routes
            .entry((method.to_string(), route.to_string()))
            .or_default();
        *stats.statuses.entry(status).or_default() += 1;
        if let Some(bucket) = BUCKETS.iter().position(|&le| seconds <= le) {
            stats.buckets[bucket] += 1;
        }
        stats.count += 1;
        stats.seconds += seconds;
    }

    /// The request families in the exposition format.
    fn render_requests(&self, out: &mut String) {
        let routes = self.routes.lock();
        out.push_str("# HELP imgsearch_http_requests_total HTTP requests answered, by route pattern and status.\n");
        out.push_str("# TYPE imgsearch_http_requests_total counter\n");
        for ((method, route), stats) in routes.iter() {
            for (status, n) in &stats.statuses {
                let _ = writeln!(
                    out,
                    "imgsearch_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP imgsearch_http_request_duration_seconds Time from receiving a request to its response, by route pattern.\n");
        out.push_str("# TYPE imgsearch_http_request_duration_seconds histogram\n");
        for ((method, route), stats) in routes.iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(stats.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "imgsearch_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "imgsearch_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                stats.count
            );
            let _ = writeln!(
                out,
                "imgsearch_http_request_duration_seconds_sum{{{labels}}} {}",
                stats.seconds
            );
            let _ = writeln!(
                out,
                "imgsearch_http_request_duration_seconds_count{{{labels}}} {}",
                stats.count
            );
        }
    }
}

/// A label value with the exposition format's escapes.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware: times every request and counts it under its route pattern.
pub async fn track(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    app.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let text = blocking(move || {
        let mut out = String::new();
        app.metrics.render_requests(&mut out);
        let gauge = |out: &mut String, name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let store = &app.index.store;
        let ann = app.index.ann().status();
        gauge(
            &mut out,
            "imgsearch_index_images",
            "Images in the index (live records).",
            store.live_count()? as f64,
        );
        gauge(
            &mut out,
            "imgsearch_index_tombstones",
            "Removed images still in the graph until compaction.",
            store.tombstone_count()? as f64,
        );
        gauge(
            &mut out,
            "imgsearch_index_graph_points",
            "Points in the HNSW graph, tombstones included.",
            ann.graph_points.unwrap_or(0) as f64,
        );
        gauge(
            &mut out,
            "imgsearch_index_bytes",
            "Bytes the index folder takes on disk.",
            app.index.bytes_on_disk() as f64,
        );
        let jobs = app.jobs.counts();
        out.push_str("# HELP imgsearch_ingest_jobs Ingest jobs since start, by state.\n");
        out.push_str("# TYPE imgsearch_ingest_jobs gauge\n");
        for (state, n) in &jobs.by_state {
            let _ = writeln!(out, "imgsearch_ingest_jobs{{state=\"{state}\"}} {n}");
        }
        gauge(
            &mut out,
            "imgsearch_ingest_files_done",
            "Files the running ingest job has finished (0 when none runs).",
            jobs.running_done as f64,
        );
        gauge(
            &mut out,
            "imgsearch_ingest_files_total",
            "Files the running ingest job has found so far (0 when none runs).",
            jobs.running_total as f64,
        );
        gauge(
            &mut out,
            "imgsearch_uptime_seconds",
            "Seconds since the server started.",
            app.started.elapsed().as_secs_f64(),
        );
        Ok(out)
    })
    .await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_the_count() {
        let metrics = Metrics::default();
        for seconds in [0.0001, 0.003, 0.003, 0.2, 60.0] {
            metrics.record("GET", "/a", 200, seconds);
        }
        metrics.record("GET", "/a", 404, 0.0001);
        let mut out = String::new();
        metrics.render_requests(&mut out);
        let value = |needle: &str| -> f64 {
            let line = out.lines().find(|l| l.starts_with(needle)).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let labels = "method=\"GET\",route=\"/a\"";
        assert_eq!(
            value(&format!(
                "imgsearch_http_requests_total{{{labels},status=\"200\"}}"
            )),
            5.0
        );
        assert_eq!(
            value(&format!(
                "imgsearch_http_requests_total{{{labels},status=\"404\"}}"
            )),
            1.0
        );
        let bucket = |le: &str| {
            value(&format!(
                "imgsearch_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.0005"), 2.0);
        assert_eq!(bucket("0.005"), 4.0);
        assert_eq!(bucket("0.25"), 5.0);
        assert_eq!(bucket("10"), 5.0);
        assert_eq!(bucket("+Inf"), 6.0);
        assert_eq!(
            value(&format!(
                "imgsearch_http_request_duration_seconds_count{{{labels}}}"
            )),
            6.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
