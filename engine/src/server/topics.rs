//! Topic administration: list, create, describe, alter and delete topics.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::api::*;
use super::auth::Admin;
use super::json_body::JsonBody;
use super::{ApiError, AppState, blocking};

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Json<TopicList> {
    let topics = state
        .log
        .topics()
        .iter()
        .map(|t| TopicSummary {
            name: t.name.to_string(),
            partitions: t.partition_count(),
            size_bytes: t.partitions().iter().map(|p| p.size_bytes()).sum(),
        })
        .collect();
    Json(TopicList { topics })
}

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    body: Result<JsonBody<CreateTopic>, ApiError>,
) -> Result<(StatusCode, Json<TopicDescription>), ApiError> {
    let JsonBody(request) = body?;
    let overrides = config_overrides(&request.config);
    let log = state.log.clone();
    let topic =
        blocking(move || log.create_topic(&request.name, request.partitions, &overrides)).await?;
    Ok((StatusCode::CREATED, Json(description(&topic))))
}

pub(super) fn description(topic: &crate::log::Topic) -> TopicDescription {
    TopicDescription {
        name: topic.name.to_string(),
        config: topic.config(),
        partitions: topic
            .partitions()
            .iter()
            .map(|p| PartitionDescription {
                partition: p.id,
                log_start_offset: p.log_start_offset(),
                high_watermark: p.high_watermark(),
                size_bytes: p.size_bytes(),
                segments: p.segment_count(),
                archive_start_offset: p.archive_range().map(|(first, _)| first),
            })
            .collect(),
    }
}

pub(super) async fn describe(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> Result<Json<TopicDescription>, ApiError> {
    let topic = state.log.topic(&topic)?;
    Ok(Json(description(&topic)))
}

#[tracing::instrument(skip_all, fields(topic = %topic))]
pub(super) async fn alter(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    body: Result<JsonBody<AlterTopic>, ApiError>,
) -> Result<Json<TopicDescription>, ApiError> {
    let JsonBody(request) = body?;
    let overrides = config_overrides(&request.config);
    let log = state.log.clone();
    let topic = blocking(move || log.alter_topic(&topic, &overrides, request.partitions)).await?;
    Ok(Json(description(&topic)))
}

#[tracing::instrument(skip_all, fields(topic = %topic))]
pub(super) async fn delete(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    let log = state.log.clone();
    blocking(move || log.delete_topic(&topic)).await?;
    Ok(StatusCode::NO_CONTENT)
}
