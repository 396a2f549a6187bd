//! The HTTP API (axum): produce, fetch, topic administration and consumer groups, plus the
//! engine's background chores (retention and archival, free-space checks, group session expiry) and
//! graceful shutdown. Endpoints are listed in `docs/http-api.md`.

pub mod api;
mod archive;
mod auth;
mod error;
mod metrics;
mod plugins;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::sync::{Semaphore, watch};

use crate::archive::Archives;
use crate::config::Config;
use crate::groups::{Coordinator, GroupError, SessionLimits};
use crate::log::{Log, LogError, LogOptions, batch, now_ms};
use crate::runtime::{DeployError, PluginHost};
use api::*;
pub use auth::TOKEN_FILE;
pub use error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Groups(#[from] GroupError),
    #[error(transparent)]
    Plugins(#[from] DeployError),
    #[error("archive object store: {0}")]
    Archive(#[from] crate::archive::StoreError),
    #[error(
        "cannot listen on {addr}: {source}; is another server running there? Choose another address with --listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct AppState {
    log: Arc<Log>,
    archives: Arc<Archives>,
    groups: Arc<Coordinator>,
    plugins: Arc<PluginHost>,
    admin_token: String,
    config: Config,
    /// Request body bytes in memory, in KiB permits.
    inflight: Semaphore,
    counters: metrics::Counters,
    shutdown: watch::Receiver<bool>,
}

/// A server running in this process.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    log: Arc<Log>,
    plugins: Arc<PluginHost>,
}

impl Running {
    /// Stops accepting requests, lets in-flight ones finish, stops the plugin workers after
    /// their current batch, and closes the log cleanly.
    pub async fn stop(self) -> Result<(), LogError> {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let plugins = self.plugins.clone();
        let _ = tokio::task::spawn_blocking(move || plugins.stop()).await;
        self.log.close()
    }
}

/// Opens the data directory and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| LogError::io(&config.data_dir, e))?;
    let dir = config.data_dir.clone();
    let remote = match &config.storage.archive_url {
        Some(url) => Some(crate::archive::RemoteStore::open(url)?),
        None => None,
    };
    let archives = Archives::new(
        config
            .storage
            .archive_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("archive")),
        remote,
        Some(config.storage.archive_max_bytes_per_second),
    );
    let options = LogOptions {
        topic_defaults: config.topic_defaults.clone(),
        max_disk_bytes: config.storage.max_disk_bytes,
        min_free_bytes: config.storage.min_free_bytes,
        cold: Some(archives.opener()),
    };
    let log = Arc::new(
        tokio::task::spawn_blocking(move || Log::open(&dir, options))
            .await
            .expect("open task")?,
    );
    let limits = SessionLimits {
        min: Duration::from_millis(config.groups.min_session_timeout_ms),
        max: Duration::from_millis(config.groups.max_session_timeout_ms),
    };
    let groups = Arc::new(Coordinator::open(
        &config.data_dir.join("groups.redb"),
        log.clone(),
        limits,
    )?);
    let admin_token = auth::load_or_create(config.server.admin_token.as_deref(), &config.data_dir)?;
    let plugins = {
        let (dir, log, settings) = (config.data_dir.clone(), log.clone(), config.plugins.clone());
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            PluginHost::open(
                &dir,
                log,
                settings.defaults,
                settings.max_upload_bytes,
                handle,
            )
        })
        .await
        .expect("plugin host task")?
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let permits = (config.server.max_inflight_bytes / 1024).clamp(1, u32::MAX as u64 >> 4) as usize;
    let state = Arc::new(AppState {
        log: log.clone(),
        archives,
        groups,
        plugins: plugins.clone(),
        admin_token,
        inflight: Semaphore::new(permits),
        counters: metrics::Counters::default(),
        shutdown: shutdown_rx.clone(),
        config,
    });
    spawn_chores(state.clone());
    let app = router(state);
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        let graceful = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
        {
            tracing::error!(%error, "server stopped with an error");
        }
    });
    tracing::info!(%addr, "listening");
    Ok(Running {
        addr,
        shutdown,
        task,
        log,
        plugins,
    })
}

fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.server.max_request_bytes as usize;
    // Base64 makes an upload a third bigger; the rest of the request is small.
    let deploy_limit = (state.config.plugins.max_upload_bytes as usize)
        .saturating_mul(4)
        .div_ceil(3)
        .saturating_add(1 << 20);
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/metrics", get(render_metrics))
        .route("/v1/topics", get(list_topics).post(create_topic))
        .route(
            "/v1/topics/{topic}",
            get(describe_topic).patch(alter_topic).delete(delete_topic),
        )
        .route("/v1/topics/{topic}/records", post(produce))
        .route(
            "/v1/topics/{topic}/archive",
            get(archive::list).post(archive::run),
        )
        .route("/v1/archive/verify", post(archive::verify))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/records",
            get(fetch),
        )
        .route("/v1/groups", get(list_groups))
        .route("/v1/groups/{group}", get(describe_group))
        .route("/v1/groups/{group}/join", post(join_group))
        .route("/v1/groups/{group}/heartbeat", post(heartbeat))
        .route("/v1/groups/{group}/leave", post(leave_group))
        .route(
            "/v1/groups/{group}/offsets",
            get(committed_offsets).post(commit_offsets),
        )
        .route("/v1/plugins", get(plugins::list))
        .route(
            "/v1/plugins/{group}",
            get(plugins::describe)
                .post(plugins::deploy)
                .delete(plugins::undeploy)
                .layer(DefaultBodyLimit::max(deploy_limit)),
        )
        .route("/v1/plugins/{group}/pause", post(plugins::pause))
        .route("/v1/plugins/{group}/resume", post(plugins::resume))
        .route("/v1/plugins/{group}/rollback", post(plugins::rollback))
        .route(
            "/v1/plugins/{group}/snapshots",
            get(plugins::snapshots).post(plugins::take_snapshot),
        )
        .route("/v1/plugins/{group}/logs", get(plugins::logs))
        .route("/v1/plugins/{group}/state", get(plugins::state))
        .route(
            "/v1/plugins/{group}/dlq/replay",
            post(plugins::replay_dead_letters),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/http-api.md",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn spawn_chores(state: Arc<AppState>) {
    let retention = state.clone();
    tokio::spawn(async move {
        let period = Duration::from_millis(
            retention
                .config
                .storage
                .retention_check_interval_ms
                .max(100),
        );
        let mut ticks = tokio::time::interval(period);
        let mut shutdown = retention.shutdown.clone();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Retention archives first what its topic archives: that runs at low priority.
            let log = retention.log.clone();
            let (done, finished) = tokio::sync::oneshot::channel();
            crate::archive::spawn_low_priority("sluice-retention", move || {
                log.disk().refresh_free_space();
                log.enforce_retention(now_ms());
                let _ = done.send(());
            });
            let _ = finished.await;
        }
    });
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        let mut shutdown = state.shutdown.clone();
        let mut round = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            state.groups.expire_members();
            round += 1;
            if round.is_multiple_of(20) {
                state.groups.refresh_assignments();
            }
        }
    });
}

/// Runs blocking log work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = metrics::render(&state.log, &state.groups, &state.counters);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn list_topics(State(state): State<Arc<AppState>>) -> Json<TopicList> {
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

async fn create_topic(
    State(state): State<Arc<AppState>>,
    body: Result<Json<CreateTopic>, JsonRejection>,
) -> Result<(StatusCode, Json<TopicDescription>), ApiError> {
    let Json(request) = body?;
    let overrides = config_overrides(&request.config);
    let log = state.log.clone();
    let topic =
        blocking(move || log.create_topic(&request.name, request.partitions, &overrides)).await?;
    Ok((StatusCode::CREATED, Json(describe(&topic))))
}

fn describe(topic: &crate::log::Topic) -> TopicDescription {
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

async fn describe_topic(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> Result<Json<TopicDescription>, ApiError> {
    let topic = state.log.topic(&topic)?;
    Ok(Json(describe(&topic)))
}

#[tracing::instrument(skip_all, fields(topic = %topic))]
async fn alter_topic(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    body: Result<Json<AlterTopic>, JsonRejection>,
) -> Result<Json<TopicDescription>, ApiError> {
    let Json(request) = body?;
    let overrides = config_overrides(&request.config);
    let log = state.log.clone();
    let topic = blocking(move || log.alter_topic(&topic, &overrides, request.partitions)).await?;
    Ok(Json(describe(&topic)))
}

#[tracing::instrument(skip_all, fields(topic = %topic))]
async fn delete_topic(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    let log = state.log.clone();
    blocking(move || log.delete_topic(&topic)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct ProduceParams {
    partition: Option<u32>,
}

fn is_content_type(headers: &HeaderMap, wanted: &str) -> bool {
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
async fn produce(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    query: Result<Query<ProduceParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ProduceResponse>, ApiError> {
    let Query(params) = query?;
    let topic = state.log.topic(&topic)?;
    let limit = state.config.server.max_request_bytes as usize;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(limit);
    if declared > limit {
        return Err(too_large(limit));
    }
    // Waiting here is the backpressure: request bodies in memory stay under the limit.
    let permits = declared.div_ceil(1024).clamp(1, state.inflight_capacity()) as u32;
    let _permit = state
        .inflight
        .acquire_many(permits)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))?;
    let now = now_ms();
    let mut records = if is_content_type(&headers, RECORDS_FRAME) {
        batch::decode_records_frame(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_body", format!("records frame: {e}")))?
    } else {
        let request: ProduceRequest = serde_json::from_slice(&bytes).map_err(|e| {
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
    for record in &mut records {
        if record.timestamp <= 0 {
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

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!(
            "request body exceeds max_request_bytes = {limit}; send smaller batches or raise [server] max_request_bytes"
        ),
    )
}

impl AppState {
    fn inflight_capacity(&self) -> usize {
        (self.config.server.max_inflight_bytes / 1024).clamp(1, u32::MAX as u64 >> 4) as usize
    }
}

#[tracing::instrument(skip_all, fields(topic = %topic, partition = partition))]
async fn fetch(
    State(state): State<Arc<AppState>>,
    Path((topic, partition)): Path<(String, u32)>,
    query: Result<Query<FetchParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) = query?;
    let partition = state.log.topic(&topic)?.partition(partition)?;
    let offset = match (params.offset, params.timestamp) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "give offset or timestamp, not both",
            ));
        }
        (Some(offset), None) if offset < 0 => {
            return Err(ApiError::bad_request(
                "bad_offset",
                format!(
                    "offset {offset} is negative; offsets start at 0 (use timestamp=MS to start at a time)"
                ),
            ));
        }
        (Some(offset), None) => offset as u64,
        (None, Some(timestamp)) => {
            let p = partition.clone();
            blocking(move || p.offset_for_timestamp(timestamp)).await?
        }
        (None, None) => partition.log_start_offset(),
    };
    let max_bytes = params
        .max_bytes
        .unwrap_or(1024 * 1024)
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
    let wants_batches = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(BATCHES));
    metrics::Counters::add(&state.counters.fetch_requests, 1);
    if wants_batches {
        trim_to_records(&mut fetched, offset, max_records);
        metrics::Counters::add(&state.counters.fetched_bytes, fetched.data.len() as u64);
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
        return Ok(response);
    }
    metrics::Counters::add(&state.counters.fetched_bytes, fetched.data.len() as u64);
    let decoded = batch::decode_all(&Bytes::from(std::mem::take(&mut fetched.data)), offset)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let records: Vec<JsonRecord> = decoded
        .iter()
        .take(max_records.min(usize::MAX as u64) as usize)
        .map(|(record_offset, record)| {
            JsonRecord::from_record(record, partition.id, *record_offset)
        })
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
fn trim_to_records(fetched: &mut crate::log::Fetched, offset: u64, max_records: u64) {
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

async fn list_groups(State(state): State<Arc<AppState>>) -> Result<Json<GroupList>, ApiError> {
    Ok(Json(GroupList {
        groups: state.groups.list()?,
    }))
}

async fn describe_group(
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
async fn join_group(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<crate::groups::Membership>, ApiError> {
    let Json(request) = body?;
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
async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<Json<MemberRequest>, JsonRejection>,
) -> Result<Json<crate::groups::Membership>, ApiError> {
    let Json(request) = body?;
    Ok(Json(state.groups.heartbeat(&group, &request.member_id)?))
}

#[tracing::instrument(skip_all, fields(group = %group))]
async fn leave_group(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<Json<MemberRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = body?;
    state.groups.leave(&group, &request.member_id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn committed_offsets(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<OffsetsResponse>, ApiError> {
    Ok(Json(OffsetsResponse {
        offsets: state.groups.committed(&group)?,
    }))
}

#[tracing::instrument(skip_all, fields(group = %group))]
async fn commit_offsets(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Result<Json<CommitRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(request) = body?;
    let member = match (&request.member_id, request.generation) {
        (Some(id), Some(generation)) => Some((id.clone(), generation)),
        (None, None) => None,
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
