//! Consumer groups of clients: list, describe, join, heartbeat, leave, and committed offsets.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::api::*;
use super::json_body::JsonBody;
use super::{ApiError, AppState};

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<GroupList>, ApiError> {
    Ok(Json(GroupList {
        groups: state.groups.list()?,
    }))
}

pub(super) async fn describe(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<crate::groups::GroupDescription>, ApiError> {
    match state.groups.describe(&group) {
        Err(crate::groups::GroupError::UnknownGroup(_)) if state.plugins.is_deployed(&group) => {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_group",
                format!(
                    "`{group}` is a plugin group, not a consumer group of clients: `sluice plugin describe {group}` shows its progress and state size"
                ),
            ))
        }
        described => Ok(Json(described?)),
    }
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn join(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<JsonBody<JoinRequest>, ApiError>,
) -> Result<Json<crate::groups::Membership>, ApiError> {
    let JsonBody(request) = body?;
    let membership = state.groups.join(
        &group,
        request.member_id.as_deref(),
        request.client.as_deref().unwrap_or("client"),
        &request.topics,
        request.session_timeout_ms.unwrap_or(30_000),
    )?;
    Ok(Json(membership))
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<JsonBody<MemberRequest>, ApiError>,
) -> Result<Json<crate::groups::Membership>, ApiError> {
    let JsonBody(request) = body?;
    Ok(Json(state.groups.heartbeat(&group, &request.member_id)?))
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn leave(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<JsonBody<MemberRequest>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let JsonBody(request) = body?;
    state.groups.leave(&group, &request.member_id)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn committed_offsets(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<OffsetsResponse>, ApiError> {
    Ok(Json(OffsetsResponse {
        offsets: state.groups.committed(&group)?,
    }))
}

#[tracing::instrument(skip_all, fields(group = %group))]
pub(super) async fn commit_offsets(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Result<JsonBody<CommitRequest>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let JsonBody(request) = body?;
    let member = match (&request.member_id, request.generation) {
        (Some(id), Some(generation)) => Some((id.clone(), generation)),
        // Setting a group's offsets from outside it (a reset) needs the admin token.
        (None, None) => {
            super::auth::check(&headers, &state)?;
            None
        }
        _ => {
            return Err(ApiError::bad_request(
                "bad_commit",
                "give both member_id and generation, or neither",
            ));
        }
    };
    let groups = state.groups.clone();
    tokio::task::spawn_blocking(move || {
        groups.commit(
            &group,
            member.as_ref().map(|(id, g)| (id.as_str(), *g)),
            &request.offsets,
        )
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}
