//! The admin API of a cluster worker (`sluice worker`): the plugin endpoints of the engine's
//! API (`/v1/plugins`), with the same requests and answers, so `sluice plugin deploy`,
//! `describe`, `pause`, `resume`, `rollback` and `undeploy` work pointed at any worker. A
//! change made through one worker reaches every worker through the deployments topic.
//! `/v1/worker` tells what this worker runs: its id and, per group, its partitions.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Serialize;

use super::ApiError;
use super::api::{PluginList, RollbackRequest};
use super::auth::check_token;
use crate::cluster::{ClusterError, GroupStatus, Worker};
use crate::runtime::{DeployError, PluginDescription};

/// How long a deploy's body may take to arrive.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

pub struct WorkerState {
    pub worker: Arc<Worker>,
    pub admin_token: String,
    /// Largest deploy request body: the component in base64 and the settings.
    pub deploy_request_bytes_max: usize,
}

#[derive(Serialize)]
pub struct WorkerDescription {
    pub worker_id: String,
    pub groups: std::collections::BTreeMap<String, GroupStatus>,
}

pub fn router(state: Arc<WorkerState>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/v1/worker", get(describe_worker))
        .route("/v1/plugins", get(list))
        .route(
            "/v1/plugins/{group}",
            get(describe).post(deploy).delete(undeploy),
        )
        .route("/v1/plugins/{group}/pause", post(pause))
        .route("/v1/plugins/{group}/resume", post(resume))
        .route("/v1/plugins/{group}/rollback", post(rollback))
        .with_state(state)
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> ApiError {
        match error {
            ClusterError::Deploy(inner) => inner.into(),
            ClusterError::Runtime(inner) => DeployError::from(inner).into(),
            ClusterError::Start(inner) => DeployError::Start(inner).into(),
            ClusterError::UnknownTopic { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_topic", error.to_string())
            }
            ClusterError::Unsupported(_) => ApiError::bad_request("unsupported", error.to_string()),
            other => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                other.to_string(),
            ),
        }
    }
}

/// Runs a blocking operation of the worker off the async threads.
async fn on_worker<T: Send + 'static>(
    state: &WorkerState,
    work: impl FnOnce(&Worker) -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, ApiError> {
    let worker = state.worker.clone();
    tokio::task::spawn_blocking(move || work(&worker))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

async fn describe_worker(
    State(state): State<Arc<WorkerState>>,
    headers: HeaderMap,
) -> Result<Json<WorkerDescription>, ApiError> {
    check_token(&headers, &state.admin_token)?;
    Ok(Json(WorkerDescription {
        worker_id: state.worker.id().to_string(),
        groups: state.worker.statuses(),
    }))
}

async fn list(
    State(state): State<Arc<WorkerState>>,
    headers: HeaderMap,
) -> Result<Json<PluginList>, ApiError> {
    check_token(&headers, &state.admin_token)?;
    let plugins = on_worker(&state, |w| Ok(w.list())).await?;
    Ok(Json(PluginList { plugins }))
}

async fn describe(
    State(state): State<Arc<WorkerState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PluginDescription>, ApiError> {
    check_token(&headers, &state.admin_token)?;
    Ok(Json(on_worker(&state, move |w| w.describe(&group)).await?))
}

/// The token is checked before the body is read; the body is read up to its limit, within
/// [`UPLOAD_TIMEOUT`].
async fn deploy(
    State(state): State<Arc<WorkerState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PluginDescription>), ApiError> {
    check_token(&headers, &state.admin_token)?;
    let limit = state.deploy_request_bytes_max;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "plugin_too_large",
            format!(
                "the deploy request is over the limit of {limit} bytes; raise [plugins] max_upload_bytes"
            ),
        )
    };
    let limited = http_body_util::Limited::new(body, limit);
    let bytes = match tokio::time::timeout(UPLOAD_TIMEOUT, limited.collect()).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the deploy request did not arrive in time",
            ));
        }
        Ok(Err(_)) => return Err(too_large()),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let (spec, wasm) = super::plugins::parse_deploy(&bytes)?;
    let description = on_worker(&state, move |w| w.deploy(&group, spec, &wasm)).await?;
    Ok((StatusCode::CREATED, Json(description)))
}

async fn pause(
    State(state): State<Arc<WorkerState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PluginDescription>, ApiError> {
    check_token(&headers, &state.admin_token)?;
    Ok(Json(on_worker(&state, move |w| w.pause(&group)).await?))
}

async fn resume(
    State(state): State<Arc<WorkerState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PluginDescription>, ApiError> {
    check_token(&headers, &state.admin_token)?;
    Ok(Json(on_worker(&state, move |w| w.resume(&group)).await?))
}

async fn rollback(
    State(state): State<Arc<WorkerState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Option<Json<RollbackRequest>>,
) -> Result<Json<PluginDescription>, ApiError> {
    check_token(&headers, &state.admin_token)?;
    let request = body.map(|Json(r)| r).unwrap_or_default();
    if request.snapshot.is_some() {
        return Err(ApiError::bad_request(
            "unsupported",
            "snapshots are not supported in cluster mode",
        ));
    }
    Ok(Json(
        on_worker(&state, move |w| w.rollback(&group, request.version)).await?,
    ))
}

#[derive(serde::Deserialize)]
struct UndeployParams {
    #[serde(default)]
    keep_state: bool,
}

async fn undeploy(
    State(state): State<Arc<WorkerState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    Query(params): Query<UndeployParams>,
) -> Result<StatusCode, ApiError> {
    check_token(&headers, &state.admin_token)?;
    // The changelog stays on the cluster either way: keep_state changes nothing here.
    let _ = params.keep_state;
    on_worker(&state, move |w| w.undeploy(&group)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A running cluster worker with its admin API.
pub struct RunningWorker {
    pub addr: std::net::SocketAddr,
    pub worker: Arc<Worker>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

/// Why a worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerStartError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot use the data directory {}: {source}", dir.display())]
    DataDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] crate::log::LogError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Starts a cluster worker (it connects to the cluster and starts the deployed groups) and
/// serves its admin API.
pub async fn start(config: crate::config::Config) -> Result<RunningWorker, WorkerStartError> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| WorkerStartError::DataDir {
        dir: dir.clone(),
        source,
    })?;
    let admin_token = super::auth::load_or_create(config.server.admin_token.as_deref(), &dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| WorkerStartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| WorkerStartError::Bind {
            addr: config.listen,
            source,
        })?;
    let deploy_request_bytes_max = super::deploy_request_bytes_max(&config);
    let worker = tokio::task::spawn_blocking(move || Worker::start(&config))
        .await
        .expect("worker start task")?;
    let state = Arc::new(WorkerState {
        worker: worker.clone(),
        admin_token,
        deploy_request_bytes_max,
    });
    let (shutdown, receiver) = tokio::sync::watch::channel(false);
    let server = super::serve(listener, router(state), receiver);
    Ok(RunningWorker {
        addr,
        worker,
        shutdown,
        server,
    })
}

impl RunningWorker {
    /// Stops serving, then stops every group.
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        let _ = self.server.await;
        let worker = self.worker.clone();
        let _ = tokio::task::spawn_blocking(move || worker.stop()).await;
    }
}
