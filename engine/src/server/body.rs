//! Reading request bodies that may be large (produce batches, plugin uploads) within the
//! in-flight budget (`[server] max_inflight_bytes`).
//!
//! Budget is taken for bytes as they arrive, not for the length a request announces: a client
//! that announces 60 MB and stalls holds nothing, so it cannot starve other producers. A body
//! that sends nothing for `[server] request_body_timeout_ms` gets 408 (every route's bodies go
//! through tower-http's `RequestBodyTimeout`), one announced or grown past its limit gets 413
//! before more is read, and a wait for budget longer than the same timeout gets 503.
//! A request refused before its body was read has the body discarded as it arrives (never
//! kept), so the client, still writing, reads the answer instead of a reset connection.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::SemaphorePermit;

use super::{ApiError, AppState, inflight_permits};

/// Bytes of a body kept before the first part arrives, whatever its announced length.
const FIRST_CAPACITY_BYTES: usize = 64 * 1024;

/// A body read whole, with the budget it holds until dropped.
pub(super) struct Budgeted<'a> {
    pub bytes: Bytes,
    _permits: SemaphorePermit<'a>,
}

/// The length a request announces, if it announces one.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// Reads `body` (at most `limit` bytes; `too_large` is the answer past it) within the
/// in-flight budget.
pub(super) async fn read<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<Budgeted<'a>, ApiError> {
    if declared_length(headers).is_some_and(|length| length > limit as u64) {
        discard(body, limit);
        return Err(too_large());
    }
    let capacity = inflight_permits(state.config.server.max_inflight_bytes);
    let wait = Duration::from_millis(state.config.server.request_body_timeout_ms);
    let mut permits = acquire(state, 1, wait).await?;
    let mut bytes = BytesMut::with_capacity(FIRST_CAPACITY_BYTES.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| body_error(&error))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if bytes.len() + data.len() > limit {
            discard(body, limit);
            return Err(too_large());
        }
        let needed = inflight_permits((bytes.len() + data.len()) as u64).min(capacity);
        let held = permits.num_permits() as u32;
        if needed > held {
            permits.merge(acquire(state, needed - held, wait).await?);
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Budgeted {
        bytes: bytes.freeze(),
        _permits: permits,
    })
}

/// `count` permits of the budget, waiting at most `wait` for them.
async fn acquire(
    state: &AppState,
    count: u32,
    wait: Duration,
) -> Result<SemaphorePermit<'_>, ApiError> {
    match tokio::time::timeout(wait, state.inflight.acquire_many(count)).await {
        Ok(Ok(permits)) => Ok(permits),
        Ok(Err(closed)) => Err(ApiError::internal(closed.to_string())),
        Err(_elapsed) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            format!(
                "request bodies in memory are at max_inflight_bytes = {} and none finished within {} ms; retry later, or raise [server] max_inflight_bytes",
                state.config.server.max_inflight_bytes, state.config.server.request_body_timeout_ms
            ),
        )),
    }
}

/// Reads and drops up to `limit` bytes of a body nobody will use, in the background, so the
/// client can finish writing and read the answer. Nothing is kept.
pub(super) fn discard(body: Body, limit: usize) {
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                break;
            }
        }
    });
}

/// The answer for a body that could not be read: 408 when it stopped arriving.
pub(super) fn body_error(error: &(dyn std::error::Error + 'static)) -> ApiError {
    if is_timeout(error) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body stopped arriving (nothing for [server] request_body_timeout_ms); send it at once, or in a new request",
        );
    }
    ApiError::bad_request(
        "malformed_body",
        format!("the request body could not be read: {error}"),
    )
}

/// Whether `error` or one of its causes is the body timeout.
pub(super) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}
