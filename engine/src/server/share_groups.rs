//! Share groups (queues) over HTTP: fetch with locks, acknowledge a batch, leave, and the
//! admin calls (configure, delete, describe, list). The rules live in [`crate::queues`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::api::*;
use super::json_body::JsonBody;
use super::{ApiError, AppState};
use crate::log::Log;
use crate::queues::{
    AckKind, Acknowledgement, Delivery, FetchRequest, GroupSettings, Refused, ShareGroupDescription,
};

/// Records one fetch returns by default, and at most.
const DEFAULT_FETCH_RECORDS: usize = 500;
const MAX_FETCH_RECORDS: usize = 10_000;
/// Acknowledgements one call carries at most.
const MAX_ACKS_PER_CALL: usize = 100_000;
/// The longest delay a release may ask for (a day).
const MAX_RELEASE_DELAY_MS: u64 = 86_400_000;

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Json<ShareGroupList> {
    Json(ShareGroupList {
        groups: state.shares.list(),
    })
}

pub(super) async fn describe(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<ShareGroupDescription>, ApiError> {
    Ok(Json(state.shares.describe(&group)?))
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn configure(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody<GroupSettings>, ApiError>,
) -> Result<Json<ShareGroupDescription>, ApiError> {
    super::auth::check(&headers, &state)?;
    let JsonBody(settings) = body?;
    state.shares.configure(&group, settings).await?;
    Ok(Json(state.shares.describe(&group)?))
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    super::auth::check(&headers, &state)?;
    state.shares.delete(&group).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn fetch(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody<ShareFetchRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(request) = body?;
    let wants_batches = super::records::accepts(&headers, SHARE_BATCHES);
    let max_records = request.max_records.unwrap_or(DEFAULT_FETCH_RECORDS);
    if !(1..=MAX_FETCH_RECORDS).contains(&max_records) {
        return Err(ApiError::bad_request(
            "bad_max_records",
            format!("max_records must be between 1 and {MAX_FETCH_RECORDS}"),
        ));
    }
    let wait_ms = request
        .wait_ms
        .unwrap_or(0)
        .min(state.config.server.max_wait_ms);
    let acknowledgements = acknowledgements(request.acks)?;
    let had_acks = !acknowledgements.is_empty();
    let fetch = FetchRequest {
        member: request.member_id,
        topic: request.topic,
        partitions: request.partitions,
        max_records,
        lock: request.lock_ms.map(Duration::from_millis),
        wait: Duration::from_millis(wait_ms),
        decode: !wants_batches,
    };
    let mut shutdown = state.shutdown.clone();
    let (refused, deliveries) = tokio::select! {
        fetched = state.shares.acknowledge_and_fetch(&group, acknowledgements, fetch) => fetched?,
        // Locks taken by a fetch cut short here simply run out: the records come back. Its
        // acknowledgements may not be on disk: the caller must not take them as done.
        _ = shutdown.wait_for(|s| *s) => {
            if had_acks {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the engine is stopping: acknowledge these records again after it restarts",
                ));
            }
            (Vec::new(), Vec::new())
        }
    };
    if wants_batches {
        let log = state.log.clone();
        let body = tokio::task::spawn_blocking(move || batches_body(&log, refused, deliveries))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        let mut response = Response::new(Body::from(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(SHARE_BATCHES),
        );
        return Ok(response);
    }
    let records = deliveries
        .into_iter()
        .filter_map(|d| {
            Some(SharedRecord {
                record: JsonRecord::from_record(d.record.as_ref()?, d.partition, d.offset),
                topic: d.topic,
                delivery_count: d.deliveries,
            })
        })
        .collect();
    Ok(Json(ShareFetchResponse { records, refused }).into_response())
}

/// The binary answer: per partition, the acquired ranges and the stored batches holding them.
fn batches_body(
    log: &Log,
    refused: Vec<Refused>,
    deliveries: Vec<Delivery>,
) -> Result<Vec<u8>, ApiError> {
    let mut by_partition: BTreeMap<(String, u32), Vec<(u64, u16)>> = BTreeMap::new();
    for d in deliveries {
        by_partition
            .entry((d.topic, d.partition))
            .or_default()
            .push((d.offset, d.deliveries));
    }
    let mut body = ShareFetchBody {
        refused,
        sections: Vec::new(),
    };
    for ((topic, partition), mut taken) in by_partition {
        taken.sort_unstable();
        let ranges = crate::queues::acquired_ranges(taken);
        let (first, last) = (ranges[0].0, ranges[ranges.len() - 1].1);
        let log_partition = log.topic(&topic)?.partition(partition)?;
        let batches = crate::queues::read_batches(&log_partition, first, last)?;
        body.sections.push(ShareBatches {
            topic,
            partition,
            ranges,
            batches: Bytes::from(batches),
        });
    }
    Ok(body.encode())
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn acknowledge(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<JsonBody<ShareAckRequest>, ApiError>,
) -> Result<Json<ShareAckResponse>, ApiError> {
    let JsonBody(request) = body?;
    let acknowledgements = acknowledgements(request.acks)?;
    let refused = state
        .shares
        .acknowledge(&group, &request.member_id, acknowledgements)
        .await?;
    Ok(Json(ShareAckResponse { refused }))
}

/// The acknowledgements a call names, checked: at most [`MAX_ACKS_PER_CALL`] records in all.
fn acknowledgements(acks: Vec<ShareAck>) -> Result<Vec<Acknowledgement>, ApiError> {
    let too_many = || {
        ApiError::bad_request(
            "too_many_acks",
            format!("one call acknowledges at most {MAX_ACKS_PER_CALL} records"),
        )
    };
    let mut out = Vec::new();
    // Records the runs so far cover.
    let mut counted = 0usize;
    for ack in acks {
        let last = ack.last_offset.unwrap_or(ack.offset);
        let Some(span) = last.checked_sub(ack.offset) else {
            return Err(ApiError::bad_request(
                "bad_range",
                format!("last_offset {last} is before offset {}", ack.offset),
            ));
        };
        if span >= MAX_ACKS_PER_CALL as u64 || counted + span as usize >= MAX_ACKS_PER_CALL {
            return Err(too_many());
        }
        counted += span as usize + 1;
        out.push(Acknowledgement {
            kind: kind_of(&ack)?,
            topic: ack.topic,
            partition: ack.partition,
            first: ack.offset,
            last,
        });
    }
    Ok(out)
}

fn kind_of(ack: &ShareAck) -> Result<AckKind, ApiError> {
    if ack.delay_ms > MAX_RELEASE_DELAY_MS {
        return Err(ApiError::bad_request(
            "bad_delay",
            format!("delay_ms is at most {MAX_RELEASE_DELAY_MS} (a day)"),
        ));
    }
    Ok(match ack.action {
        AckAction::Accept => AckKind::Accept,
        AckAction::Release => AckKind::Release {
            delay: Duration::from_millis(ack.delay_ms),
        },
        AckAction::Reject => AckKind::Reject {
            reason: ack
                .reason
                .clone()
                .unwrap_or_else(|| "no reason given".into()),
        },
        AckAction::Renew => AckKind::Renew,
    })
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn leave(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<JsonBody<ShareLeaveRequest>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let JsonBody(request) = body?;
    state.shares.leave(&group, &request.member_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
