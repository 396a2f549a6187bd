//! The data plane: produce records to a topic and fetch them from a partition (with long poll).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::api::*;
use super::{ApiError, AppState, blocking, metrics};
use crate::log::{Fetched, Partition, batch, now_ms};

/// Bytes a fetch returns at most when it names no `max_bytes`.
const FETCH_DEFAULT_BYTES: u64 = 1024 * 1024;

#[derive(serde::Deserialize)]
pub(super) struct ProduceParams {
    partition: Option<u32>,
}

/// Whether the request's Accept header names `wanted`.
pub(super) fn accepts(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(wanted))
}

pub(super) fn is_content_type(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(wanted))
        })
}

#[tracing::instrument(skip_all, fields(topic = %topic, partition = ?query.as_ref().ok().and_then(|q| q.partition)))]
pub(super) async fn produce(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    query: Result<Query<ProduceParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ProduceResponse>, ApiError> {
    let Query(params) = query?;
    let topic = state.log.topic(&topic)?;
    let limit = state.config.server.max_request_bytes as usize;
    // Waiting for budget is the backpressure: request bodies in memory stay under the limit.
    let body = super::body::read(&state, &headers, body, limit, || too_large(limit)).await?;
    let bytes = &body.bytes;
    let now = now_ms();
    let mut records = if is_content_type(&headers, RECORDS_FRAME) {
        batch::decode_records_frame(bytes)
            .map_err(|e| ApiError::bad_request("malformed_body", format!("records frame: {e}")))?
    } else {
        let request: ProduceRequest = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request("malformed_body", format!("body is not a produce request: {e}; send {{\"records\": [{{\"value\": \"...\"}}]}} or a {RECORDS_FRAME} body"))
        })?;
        request
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.to_record(now).map_err(|e| {
                    ApiError::bad_request("malformed_body", format!("record {i}: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if records.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the request holds no records",
        ));
    }
    for (i, record) in records.iter_mut().enumerate() {
        if record.timestamp < 0 {
            return Err(ApiError::bad_request(
                "bad_timestamp",
                format!(
                    "record {i} has timestamp {}: timestamps are milliseconds since 1970-01-01, \
                     not negative (0 or none means now)",
                    record.timestamp
                ),
            ));
        }
        if record.timestamp == 0 {
            record.timestamp = now;
        }
    }
    let record_count = records.len() as u64;
    let produced = topic.produce(params.partition, records).await?;
    let counters = &state.counters;
    metrics::Counters::add(&counters.produce_requests, 1);
    metrics::Counters::add(&counters.produced_records, record_count);
    metrics::Counters::add(&counters.produced_bytes, bytes.len() as u64);
    Ok(Json(ProduceResponse {
        partitions: produced
            .into_iter()
            .map(|p| ProducedPartition {
                partition: p.partition,
                base_offset: p.base_offset,
                record_count: p.record_count,
            })
            .collect(),
    }))
}

pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!(
            "request body exceeds max_request_bytes = {limit}; send smaller batches or raise [server] max_request_bytes"
        ),
    )
}

#[tracing::instrument(skip_all, fields(topic = %topic, partition = partition))]
pub(super) async fn fetch(
    State(state): State<Arc<AppState>>,
    Path((topic, partition)): Path<(String, u32)>,
    query: Result<Query<FetchParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) = query?;
    let partition = state.log.topic(&topic)?.partition(partition)?;
    let offset = start_offset(&partition, &params).await?;
    let max_bytes = params
        .max_bytes
        .unwrap_or(FETCH_DEFAULT_BYTES)
        .clamp(1, state.config.server.max_fetch_bytes) as usize;
    let wait = Duration::from_millis(
        params
            .wait_ms
            .unwrap_or(0)
            .min(state.config.server.max_wait_ms),
    );
    if offset == partition.high_watermark() && !wait.is_zero() {
        let mut shutdown = state.shutdown.clone();
        tokio::select! {
            _ = partition.wait_for_records(offset, wait) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }
    let p = partition.clone();
    let mut fetched = blocking(move || p.read(offset, max_bytes)).await?;
    let max_records = params.max_records.unwrap_or(u64::MAX).max(1);
    let wants_batches = accepts(&headers, BATCHES);
    metrics::Counters::add(&state.counters.fetch_requests, 1);
    if wants_batches {
        trim_to_records(&mut fetched, offset, max_records);
    }
    metrics::Counters::add(&state.counters.fetched_bytes, fetched.data.len() as u64);
    let records = batch::count_records_from(&fetched.data, offset).min(max_records);
    partition
        .counters()
        .fetched(records, fetched.data.len() as u64);
    if wants_batches {
        return Ok(batches_response(fetched));
    }
    json_response(fetched, partition.id, offset, max_records)
}

/// Where a fetch starts: the offset asked for, the first at or after the timestamp asked
/// for, or the log start.
async fn start_offset(partition: &Arc<Partition>, params: &FetchParams) -> Result<u64, ApiError> {
    match (params.offset, params.timestamp) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "bad_query",
            "give offset or timestamp, not both",
        )),
        (Some(offset), None) if offset < 0 => Err(ApiError::bad_request(
            "bad_offset",
            format!(
                "offset {offset} is negative; offsets start at 0 (use timestamp=MS to start at a time)"
            ),
        )),
        (Some(offset), None) => Ok(offset as u64),
        (None, Some(timestamp)) => {
            let p = partition.clone();
            blocking(move || p.offset_for_timestamp(timestamp)).await
        }
        (None, None) => Ok(partition.log_start_offset()),
    }
}

/// The stored batches as they are, with the offsets in headers.
fn batches_response(fetched: Fetched) -> Response {
    let mut response = Response::new(Body::from(fetched.data));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(BATCHES));
    h.insert(HEADER_NEXT_OFFSET, HeaderValue::from(fetched.next_offset));
    h.insert(
        HEADER_HIGH_WATERMARK,
        HeaderValue::from(fetched.high_watermark),
    );
    h.insert(
        HEADER_LOG_START,
        HeaderValue::from(fetched.log_start_offset),
    );
    response
}

/// The records decoded into JSON, at most `max_records` from `offset` on.
fn json_response(
    mut fetched: Fetched,
    partition: u32,
    offset: u64,
    max_records: u64,
) -> Result<Response, ApiError> {
    let decoded = batch::decode_all(&Bytes::from(std::mem::take(&mut fetched.data)), offset)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let records: Vec<JsonRecord> = decoded
        .iter()
        .take(max_records.min(usize::MAX as u64) as usize)
        .map(|(record_offset, record)| JsonRecord::from_record(record, partition, *record_offset))
        .collect();
    let next_offset = records
        .last()
        .and_then(|r| r.offset)
        .map_or(offset, |o| o + 1);
    Ok(Json(FetchResponse {
        records,
        next_offset,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
    })
    .into_response())
}

/// Drops whole batches past the first one that reaches `max_records` records at or after
/// `offset`.
pub(super) fn trim_to_records(fetched: &mut Fetched, offset: u64, max_records: u64) {
    let mut position = 0;
    let mut count = 0;
    while let Ok(header) = batch::verify(&fetched.data[position..]) {
        position += header.total_len;
        count += header.next_offset() - offset.max(header.base_offset);
        if count >= max_records {
            fetched.data.truncate(position);
            fetched.next_offset = header.next_offset();
            return;
        }
    }
}
