//! The doors' request counters, the HTTP request-latency histogram (per route, method and
//! status) and the middleware that fills it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::super::AppState;

/// Request counters, bumped by the handlers.
#[derive(Default)]
pub struct Counters {
    pub produce_requests: AtomicU64,
    pub produced_records: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub fetched_bytes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub(super) fn totals(&self) -> [(&'static str, &'static str, u64); 5] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "sluice_produce_requests_total",
                "HTTP produce requests answered successfully.",
                get(&self.produce_requests),
            ),
            (
                "sluice_produced_records_total",
                "Records acknowledged to HTTP producers.",
                get(&self.produced_records),
            ),
            (
                "sluice_produced_bytes_total",
                "Request body bytes of acknowledged HTTP produce requests.",
                get(&self.produced_bytes),
            ),
            (
                "sluice_fetch_requests_total",
                "HTTP fetch requests answered successfully.",
                get(&self.fetch_requests),
            ),
            (
                "sluice_fetched_bytes_total",
                "Batch bytes returned by HTTP fetches.",
                get(&self.fetched_bytes),
            ),
        ]
    }
}

/// Upper bounds of the request-latency buckets: 100 µs doubling to about 26 s (long polls
/// wait up to `max_wait_ms`).
fn request_buckets_seconds() -> Vec<f64> {
    prometheus::exponential_buckets(100e-6, 2.0, 19).expect("valid bucket parameters")
}

/// `sluice_http_request_duration_seconds{route, method, status}`.
pub fn request_histogram() -> prometheus::HistogramVec {
    let opts = prometheus::HistogramOpts::new(
        "sluice_http_request_duration_seconds",
        "Time from a request's arrival to its answer's head, by route (as written in the router), method and status.",
    )
    .buckets(request_buckets_seconds());
    prometheus::HistogramVec::new(opts, &["route", "method", "status"])
        .expect("a valid histogram definition")
}

/// `sluice_kafka_request_duration_seconds{api}`: the Kafka door's requests, by API.
pub fn kafka_request_histogram() -> prometheus::HistogramVec {
    let opts = prometheus::HistogramOpts::new(
        "sluice_kafka_request_duration_seconds",
        "Time from a Kafka request's last byte to its answer, by API (Produce, Fetch, ...); requests that close their connection are not counted.",
    )
    .buckets(request_buckets_seconds());
    prometheus::HistogramVec::new(opts, &["api"]).expect("a valid histogram definition")
}

/// Middleware: times each request and files it under its route's pattern (not its path,
/// so topic names do not multiply the series), method and status.
pub async fn track_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
