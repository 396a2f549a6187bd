//! The plugin admin API (`/v1/plugins`): deploy, upgrade, pause, resume, roll back and
//! undeploy plugin consumer groups, read their logs and replay their dead letters. Every
//! endpoint requires the admin token.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::api::{
    DeployRequest, PluginList, PluginLogs, RollbackRequest, SnapshotList, SnapshotRequest,
    StateEntry, StateScan,
};
use super::auth::{self, Admin};
use super::body;
use super::json_body::JsonBody;
use super::{ApiError, AppState};
use crate::runtime::{DeployError, PluginDescription, PluginHost};

/// Log lines a logs request returns when it names no limit.
const LOG_LINES_DEFAULT: usize = 100;
/// Entries a state request returns when it names no limit.
const STATE_ENTRIES_DEFAULT: usize = 100;
/// Most entries one state request returns.
const STATE_ENTRIES_MAX: usize = 10_000;

/// Runs a blocking change of the deployments off the async workers.
async fn on_host<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&PluginHost) -> Result<T, DeployError> + Send + 'static,
) -> Result<T, ApiError> {
    let host = state.plugins.clone();
    tokio::task::spawn_blocking(move || work(&host))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// The token is checked from the headers, before the upload is read; a refused upload is
/// discarded as it arrives (never kept), so the client reads the 401 instead of a reset. The
/// upload counts against the in-flight budget as it arrives.
#[tracing::instrument(skip_all, fields(group = %group))]
pub async fn deploy(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PluginDescription>), ApiError> {
    let limit = super::deploy_request_bytes_max(&state.config);
    if let Err(refused) = auth::check(&headers, &state) {
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        // A client waiting for 100 Continue has sent nothing: it reads the 401 as is.
        if !expects_continue {
            body::discard(body, limit);
        }
        return Err(refused);
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "plugin_too_large",
            format!(
                "the upload is over the limit of {} bytes; raise [plugins] max_upload_bytes or make the component smaller (build with --release, strip debug info)",
                state.config.plugins.max_upload_bytes
            ),
        )
    };
    let body = body::read(&state, &headers, body, limit, too_large).await?;
    let (spec, wasm) = parse_deploy(&body.bytes)?;
    drop(body);
    let description = on_host(&state, move |host| host.deploy(&group, spec, &wasm)).await?;
    Ok((StatusCode::CREATED, Json(description)))
}

/// A deploy request's settings and component.
pub(super) fn parse_deploy(
    bytes: &[u8],
) -> Result<(crate::runtime::DeploySpec, Vec<u8>), ApiError> {
    let request: DeployRequest = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_body",
            format!("body is not a deploy request: {e}; see docs/http-api.md"),
        )
    })?;
    let wasm = BASE64.decode(request.wasm_base64.as_bytes()).map_err(|e| {
        ApiError::bad_request(
            "malformed_body",
            format!("wasm_base64 is not standard base64: {e}"),
        )
    })?;
    Ok((request.spec, wasm))
}

pub async fn list(
    _: Admin,
    State(state): State<Arc<AppState>>,
) -> Result<Json<PluginList>, ApiError> {
    let plugins = on_host(&state, |host| Ok(host.list())).await?;
    Ok(Json(PluginList { plugins }))
}

pub async fn describe(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<PluginDescription>, ApiError> {
    Ok(Json(
        on_host(&state, move |host| host.describe(&group)).await?,
    ))
}

pub async fn pause(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<PluginDescription>, ApiError> {
    Ok(Json(on_host(&state, move |host| host.pause(&group)).await?))
}

pub async fn resume(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<PluginDescription>, ApiError> {
    Ok(Json(
        on_host(&state, move |host| host.resume(&group)).await?,
    ))
}

pub async fn rollback(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Option<Json<RollbackRequest>>,
) -> Result<Json<PluginDescription>, ApiError> {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    Ok(Json(
        on_host(&state, move |host| match &request.snapshot {
            Some(snapshot) => host.rollback_to_snapshot(&group, snapshot, request.version),
            None => host.rollback(&group, request.version),
        })
        .await?,
    ))
}

pub async fn take_snapshot(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    JsonBody(request): JsonBody<SnapshotRequest>,
) -> Result<Json<crate::txn::SnapshotInfo>, ApiError> {
    Ok(Json(
        on_host(&state, move |host| host.snapshot(&group, &request.name)).await?,
    ))
}

pub async fn snapshots(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<SnapshotList>, ApiError> {
    let snapshots = on_host(&state, move |host| host.snapshots(&group)).await?;
    Ok(Json(SnapshotList { snapshots }))
}

pub async fn replay_dead_letters(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<PluginDescription>, ApiError> {
    Ok(Json(
        on_host(&state, move |host| host.replay_dead_letters(&group)).await?,
    ))
}

#[derive(serde::Deserialize)]
pub struct UndeployParams {
    #[serde(default)]
    keep_state: bool,
}

pub async fn undeploy(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    query: Result<Query<UndeployParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(params) = query?;
    on_host(&state, move |host| host.undeploy(&group, params.keep_state)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub struct LogParams {
    limit: Option<usize>,
}

pub async fn logs(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    query: Result<Query<LogParams>, QueryRejection>,
) -> Result<Json<PluginLogs>, ApiError> {
    let Query(params) = query?;
    let limit = params.limit.unwrap_or(LOG_LINES_DEFAULT);
    let lines = on_host(&state, move |host| host.logs(&group, limit)).await?;
    Ok(Json(PluginLogs { lines }))
}

#[derive(serde::Deserialize)]
pub struct StateParams {
    #[serde(default)]
    prefix: String,
    start_after: Option<String>,
    limit: Option<usize>,
}

pub async fn state(
    _: Admin,
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    query: Result<Query<StateParams>, QueryRejection>,
) -> Result<Json<StateScan>, ApiError> {
    let Query(params) = query?;
    let limit = params
        .limit
        .unwrap_or(STATE_ENTRIES_DEFAULT)
        .clamp(1, STATE_ENTRIES_MAX);
    let entries = on_host(&state, move |host| {
        host.state(
            &group,
            params.prefix.as_bytes(),
            params.start_after.as_deref().map(str::as_bytes),
            limit,
        )
    })
    .await?;
    Ok(Json(StateScan {
        entries: entries.iter().map(|(k, v)| StateEntry::new(k, v)).collect(),
    }))
}
