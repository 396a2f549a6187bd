//! The HTTP API (axum): produce, fetch, topic administration and consumer groups, plus the
//! engine's background chores (retention and archival, free-space checks, group session expiry) and
//! graceful shutdown. Endpoints are listed in `docs/http-api.md`.

pub mod api;
mod archive;
mod auth;
mod body;
mod chores;
mod console;
mod error;
mod groups;
mod json_body;
#[doc(hidden)]
pub mod kafka;
mod metrics;
mod overview;
mod plugins;
mod records;
mod share_groups;
mod topics;
pub mod worker_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Semaphore, watch};

use crate::archive::Archives;
use crate::config::Config;
use crate::groups::{Coordinator, GroupError, SessionLimits};
use crate::log::{Log, LogError, LogOptions};
use crate::queues::ShareGroups;
use crate::runtime::{DeployError, PluginHost};
pub use auth::TOKEN_FILE;
pub use error::ApiError;

/// The in-flight request budget is counted in permits of this many bytes.
const INFLIGHT_PERMIT_BYTES: u64 = 1024;
/// Most permits the budget holds (tokio's semaphore takes up to `usize::MAX >> 3`).
const INFLIGHT_PERMITS_MAX: u64 = u32::MAX as u64 >> 4;
/// Room beside the base64 component in a deploy request, for its other JSON fields.
const DEPLOY_FIELDS_BYTES: usize = 1 << 20;

/// Largest deploy request: base64 makes an upload a third bigger; the rest is small.
pub(crate) fn deploy_request_bytes_max(config: &Config) -> usize {
    (config.plugins.max_upload_bytes as usize)
        .saturating_mul(4)
        .div_ceil(3)
        .saturating_add(DEPLOY_FIELDS_BYTES)
}

/// Whether the process logs JSON (`--log-format json`): then the lines `serve` says to the
/// person who started it are log events too, so every line of stderr is JSON.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that logs are JSON; set by the binary before it starts anything.
pub fn set_json_logs(json: bool) {
    JSON_LOGS.store(json, std::sync::atomic::Ordering::Relaxed);
}

/// A line for the person who started the engine: on stderr as it is, or as an info event
/// when logs are JSON.
pub fn announce(text: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "sluice", "{text}");
    } else {
        eprintln!("{text}");
    }
}

/// Permits of the in-flight budget for `bytes` of request bodies (at least one).
fn inflight_permits(bytes: u64) -> u32 {
    bytes
        .div_ceil(INFLIGHT_PERMIT_BYTES)
        .clamp(1, INFLIGHT_PERMITS_MAX) as u32
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Groups(#[from] GroupError),
    #[error(transparent)]
    Plugins(#[from] DeployError),
    #[error(transparent)]
    ShareGroups(#[from] crate::queues::ShareError),
    #[error("archive object store: {0}")]
    Archive(#[from] crate::archive::StoreError),
    #[error(
        "cannot listen on {addr}: {source}; is another server running there? Choose another address with --listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen for Kafka clients on {addr}: {source}; is a Kafka broker running there? Choose another address with [kafka] listen (SLUICE_KAFKA__LISTEN), or switch it off with [kafka] enabled = false"
    )]
    KafkaBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct AppState {
    log: Arc<Log>,
    archives: Arc<Archives>,
    groups: Arc<Coordinator>,
    shares: Arc<ShareGroups>,
    plugins: Arc<PluginHost>,
    admin_token: String,
    config: Config,
    /// Request body bytes in memory, in KiB permits.
    inflight: Arc<Semaphore>,
    counters: metrics::Counters,
    /// HTTP request latency by route, method and status.
    requests: prometheus::HistogramVec,
    /// Kafka request latency by API (the Kafka door observes, /metrics reads).
    kafka_requests: prometheus::HistogramVec,
    /// The standard `process_*` metrics (from /proc).
    process: prometheus::process_collector::ProcessCollector,
    shutdown: watch::Receiver<bool>,
}

/// A server running in this process.
pub struct Running {
    pub addr: SocketAddr,
    /// Where the Kafka protocol listener listens, when enabled.
    pub kafka: Option<SocketAddr>,
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
    let archives = open_archives(&config)?;
    let log = open_log(&config, &archives).await?;
    match crate::log::open_files::raise_open_file_limit() {
        Some(limit) => log.set_segment_budget(crate::log::open_files::segment_budget(limit)),
        None => tracing::warn!("cannot read the open-file limit; partitions are not bounded by it"),
    }
    let limits = SessionLimits {
        min: Duration::from_millis(config.groups.min_session_timeout_ms),
        max: Duration::from_millis(config.groups.max_session_timeout_ms),
    };
    let groups = Arc::new(Coordinator::open(
        &config.data_dir.join("groups.redb"),
        log.clone(),
        limits,
    )?);
    let shares = Arc::new(ShareGroups::open(
        &config.data_dir,
        log.clone(),
        config.share_groups.clone(),
    )?);
    let admin_token = auth::load_or_create(config.server.admin_token.as_deref(), &config.data_dir)?;
    let plugins = open_plugins(&config, &log).await?;
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
    let state_requires_token = config.server.require_token_for_all;
    let permits = inflight_permits(config.server.max_inflight_bytes) as usize;
    let state = Arc::new(AppState {
        log: log.clone(),
        archives,
        groups,
        shares,
        plugins: plugins.clone(),
        admin_token,
        inflight: Arc::new(Semaphore::new(permits)),
        counters: metrics::Counters::default(),
        requests: metrics::request_histogram(),
        kafka_requests: metrics::kafka_request_histogram(),
        process: prometheus::process_collector::ProcessCollector::for_self(),
        shutdown: shutdown_rx.clone(),
        config,
    });
    chores::spawn(state.clone());
    let kafka = start_kafka(&state, shutdown_rx.clone()).await?;
    let task = serve(listener, router(state), shutdown_rx);
    tracing::info!(%addr, "listening");
    auth::warn_if_open_beyond_loopback(addr, state_requires_token);
    Ok(Running {
        addr,
        kafka,
        shutdown,
        task,
        log,
        plugins,
    })
}

/// Starts the Kafka protocol listener when enabled; its address.
async fn start_kafka(
    state: &Arc<AppState>,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<SocketAddr>, StartError> {
    let settings = state.config.kafka.clone();
    if !settings.enabled {
        return Ok(None);
    }
    let (listener, addr) =
        kafka::bind(&settings)
            .await
            .map_err(|source| StartError::KafkaBind {
                addr: settings.listen,
                source,
            })?;
    let host = settings
        .advertised_host
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    let port = settings.advertised_port.unwrap_or(addr.port());
    let context = Arc::new(kafka::KafkaContext {
        log: state.log.clone(),
        offsets: state.groups.clone(),
        kafka_groups: Default::default(),
        shares: state.shares.clone(),
        share_groups: Default::default(),
        producer_ids: kafka::ProducerIds::open(&state.config.data_dir)?,
        producers: Default::default(),
        advertised: (host, i32::from(port)),
        cluster_id: kafka::cluster_id(&state.config.data_dir)?,
        max_fetch_bytes: state.config.server.max_fetch_bytes,
        max_wait_ms: state.config.server.max_wait_ms,
        inflight: state.inflight.clone(),
        request_seconds: state.kafka_requests.clone(),
        max_inflight_bytes: state.config.server.max_inflight_bytes,
        request_timeout: Duration::from_millis(state.config.server.request_body_timeout_ms),
        settings,
        shutdown,
    });
    if !addr.ip().is_loopback() && context.settings.sasl_plain_users.is_empty() {
        tracing::warn!(
            %addr,
            "the Kafka listener is reachable beyond this machine and asks no authentication: anyone who reaches it can produce, consume, and create and delete topics. Name users in [kafka] sasl_plain_users, or listen on 127.0.0.1"
        );
    }
    kafka::serve(listener, context);
    tracing::info!(%addr, "kafka protocol listening");
    Ok(Some(addr))
}

/// The archive of every topic: in the configured directory, files also in the object store
/// when one is configured.
fn open_archives(config: &Config) -> Result<Arc<Archives>, StartError> {
    let remote = match &config.storage.archive_url {
        Some(url) => Some(crate::archive::RemoteStore::open(url)?),
        None => None,
    };
    let dir = config
        .storage
        .archive_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("archive"));
    Ok(Archives::new(
        dir,
        remote,
        Some(config.storage.archive_max_bytes_per_second),
    ))
}

/// Opens (and recovers) the log, off the async workers.
async fn open_log(config: &Config, archives: &Arc<Archives>) -> Result<Arc<Log>, StartError> {
    let dir = config.data_dir.clone();
    let options = LogOptions {
        topic_defaults: config.topic_defaults.clone(),
        max_disk_bytes: config.storage.max_disk_bytes,
        min_free_bytes: config.storage.min_free_bytes,
        cold: Some(archives.opener()),
    };
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, options))
        .await
        .expect("open task")?;
    Ok(Arc::new(log))
}

/// Opens the plugin host, which starts every deployed group.
async fn open_plugins(config: &Config, log: &Arc<Log>) -> Result<Arc<PluginHost>, StartError> {
    let (dir, log, settings) = (config.data_dir.clone(), log.clone(), config.plugins.clone());
    let handle = tokio::runtime::Handle::current();
    let host = tokio::task::spawn_blocking(move || {
        PluginHost::open(
            &dir,
            log,
            settings.defaults,
            settings.max_upload_bytes,
            handle,
        )
    })
    .await
    .expect("plugin host task")?;
    Ok(host)
}

/// Serves `app` until `shutdown` turns true, then lets in-flight requests finish.
fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let graceful = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
        {
            tracing::error!(%error, "server stopped with an error");
        }
    })
}

fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.server.max_request_bytes as usize;
    let body_timeout = Duration::from_millis(state.config.server.request_body_timeout_ms);
    Router::new()
        .route("/", get(console::index))
        .route("/console/app.js", get(console::script))
        .route("/console/app.css", get(console::style))
        .route("/v1/overview", get(overview::overview))
        .route("/v1/health", get(|| async { "ok" }))
        .route("/metrics", get(render_metrics))
        .route("/v1/topics", get(topics::list).post(topics::create))
        .route(
            "/v1/topics/{topic}",
            get(topics::describe)
                .patch(topics::alter)
                .delete(topics::delete),
        )
        .route("/v1/topics/{topic}/records", post(records::produce))
        .route(
            "/v1/topics/{topic}/archive",
            get(archive::list).post(archive::run),
        )
        .route("/v1/archive/verify", post(archive::verify))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/records",
            get(records::fetch),
        )
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{group}", get(groups::describe))
        .route("/v1/groups/{group}/join", post(groups::join))
        .route("/v1/groups/{group}/heartbeat", post(groups::heartbeat))
        .route("/v1/groups/{group}/leave", post(groups::leave))
        .route(
            "/v1/groups/{group}/offsets",
            get(groups::committed_offsets).post(groups::commit_offsets),
        )
        .route("/v1/share-groups", get(share_groups::list))
        .route(
            "/v1/share-groups/{group}",
            get(share_groups::describe)
                .put(share_groups::configure)
                .delete(share_groups::delete),
        )
        .route("/v1/share-groups/{group}/fetch", post(share_groups::fetch))
        .route(
            "/v1/share-groups/{group}/ack",
            post(share_groups::acknowledge),
        )
        .route("/v1/share-groups/{group}/leave", post(share_groups::leave))
        .route("/v1/plugins", get(plugins::list))
        .route(
            "/v1/plugins/{group}",
            get(plugins::describe)
                .post(plugins::deploy)
                .delete(plugins::undeploy),
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track_requests,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token_for_all,
        ))
        .with_state(state)
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

async fn render_metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || metrics::render(&state))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response())
}
