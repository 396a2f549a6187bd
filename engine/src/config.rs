//! The engine's configuration: one typed struct, read from a TOML file, then `SLUICE_*`
//! environment variables, then command-line flags (each overriding the one before).
//! `sluice.toml` at the repository root documents every option.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::log::{LogError, TopicConfig};
use crate::runtime::{DeployError, PluginLimits};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(transparent)]
    Parse(#[from] Box<figment::Error>),
    #[error("{setting} {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
    #[error("[plugins.defaults]: {0}")]
    PluginDefaults(#[source] DeployError),
    #[error("[topic_defaults]: {0}")]
    TopicDefaults(#[source] LogError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where topics, offsets and the lock file live; created on first start.
    pub data_dir: PathBuf,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub groups: GroupSettings,
    /// Share groups (queues): their limits and the settings new groups start with.
    pub share_groups: crate::queues::Limits,
    pub plugins: PluginSettings,
    pub kafka: KafkaSettings,
    /// Cluster mode: `sluice worker` runs the plugin groups on a Kafka cluster.
    pub cluster: ClusterSettings,
    /// Settings new topics start with.
    pub topic_defaults: TopicConfig,
}

/// The Kafka protocol listener (server/kafka/).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Serve the Kafka protocol beside the HTTP API.
    pub enabled: bool,
    /// Address of the Kafka listener.
    pub listen: SocketAddr,
    /// Host announced to clients in Metadata (default: the listen address's host).
    pub advertised_host: Option<String>,
    /// Port announced to clients in Metadata (default: the port listened on).
    pub advertised_port: Option<u16>,
    /// Largest request a client may send; a longer one closes its connection before any of
    /// it is buffered.
    pub max_frame_bytes: u64,
    /// Client connections served at once; past it, new ones are closed at once.
    pub max_connections: u32,
    /// A connection that sends no request for this long is closed, as Kafka's
    /// `connections.max.idle.ms` does (clients reconnect when they need to).
    pub connections_max_idle_ms: u64,
    /// Users and their passwords for SASL/PLAIN; when any is given, every connection must
    /// authenticate as one of them before it is served.
    pub sasl_plain_users: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: None,
            advertised_port: None,
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            connections_max_idle_ms: 600_000,
            sasl_plain_users: Default::default(),
        }
    }
}

/// Cluster mode (docs/cluster.md): where `sluice worker` finds its Kafka cluster, and how its
/// clients behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// `host:port` of one or more of the cluster's brokers, comma-separated.
    pub bootstrap_servers: String,
    /// This worker's name, stable across its restarts (its transactional ids derive from it,
    /// so a restarted worker fences its previous incarnation). Two live workers must not
    /// share it. Default: the host name and the admin API's port.
    pub worker_id: Option<String>,
    /// Further librdkafka settings for every client of the worker: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, ...
    pub client: std::collections::BTreeMap<String, String>,
    /// Replication factor of the topics the worker creates (changelogs, dead letters,
    /// deployments). None: the cluster's `default.replication.factor`.
    pub replication_factor: Option<u16>,
    /// A worker that sends no heartbeat for this long leaves its group: its partitions move.
    pub session_timeout_ms: u64,
    /// A transaction left open this long (its worker died) is aborted by the cluster; until
    /// then, the partitions it wrote to wait.
    pub transaction_timeout_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            bootstrap_servers: String::new(),
            worker_id: None,
            client: Default::default(),
            replication_factor: None,
            session_timeout_ms: 10_000,
            transaction_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    /// Largest component a deploy accepts.
    pub max_upload_bytes: u64,
    /// Limits every plugin group starts with; a deploy can change them per group.
    pub defaults: PluginLimits,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            max_upload_bytes: 128 * 1024 * 1024,
            defaults: PluginLimits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Largest request body accepted (a produce batch).
    pub max_request_bytes: u64,
    /// Request bodies held in memory at once; further producers wait (backpressure).
    pub max_inflight_bytes: u64,
    /// Cap on the bytes one fetch returns.
    pub max_fetch_bytes: u64,
    /// Cap on how long a fetch may wait for new records.
    pub max_wait_ms: u64,
    /// Longest a request body may send nothing (408 after that); also the longest a body
    /// waits for room in `max_inflight_bytes` (503 after that).
    pub request_body_timeout_ms: u64,
    /// Token the plugin admin API requires. None: generated at first start and kept in
    /// `<data_dir>/admin.token`.
    pub admin_token: Option<String>,
    /// Require the admin token on every endpoint but `/v1/health`, produce, fetch and
    /// consumer groups included. Off: those stay open, as suits loopback.
    pub require_token_for_all: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Refuse produce once segment files hold this many bytes. None: no limit.
    pub max_disk_bytes: Option<u64>,
    /// Refuse produce while the disk has less free space than this.
    pub min_free_bytes: u64,
    /// How often retention and free space are checked.
    pub retention_check_interval_ms: u64,
    /// Where topics with `archive = true` keep their Parquet files: `<archive_dir>/<topic>/
    /// <partition>/`. Default: `<data_dir>/archive`.
    pub archive_dir: Option<PathBuf>,
    /// An object store archived files move to once written and verified locally:
    /// `s3://bucket/prefix` (credentials, region and endpoint from the AWS_* variables; an
    /// S3-compatible server via AWS_ENDPOINT) or `file:///absolute/path`. None: files stay in
    /// `archive_dir`.
    pub archive_url: Option<String>,
    /// Segment bytes read for archiving per second, for the whole engine; 0: no limit.
    pub archive_max_bytes_per_second: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    pub min_session_timeout_ms: u64,
    pub max_session_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("sluice-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7171)),
            server: ServerSettings::default(),
            storage: StorageSettings::default(),
            groups: GroupSettings::default(),
            share_groups: crate::queues::Limits::default(),
            plugins: PluginSettings::default(),
            kafka: KafkaSettings::default(),
            cluster: ClusterSettings::default(),
            topic_defaults: TopicConfig::default(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_request_bytes: 64 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_fetch_bytes: 64 * 1024 * 1024,
            max_wait_ms: 30_000,
            request_body_timeout_ms: 10_000,
            admin_token: None,
            require_token_for_all: false,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            max_disk_bytes: None,
            min_free_bytes: 256 * 1024 * 1024,
            retention_check_interval_ms: 30_000,
            archive_dir: None,
            archive_url: None,
            archive_max_bytes_per_second: 64 * 1024 * 1024,
        }
    }
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
        }
    }
}

/// `SLUICE_*` variables that are not engine configuration: the command-line client's, the
/// log filter, profiling and crash-point switches, and the sizes and seeds of the crash tests.
const OTHER_VARIABLES: [&str; 23] = [
    "url",
    "log",
    "config",
    "token",
    "wasm_perfmap",
    "crash_at",
    "stop_at",
    "cluster_seed",
    "cluster_records",
    "share_seed",
    "share_records",
    "crash_rounds",
    "eo_records",
    "archive_kills",
    "crash_seed",
    "eo_seed",
    "archive_seed",
    "log_power_seed",
    "log_power_points",
    "python",
    "examples",
    "cache",
    "memory_records",
];

impl Config {
    /// Loads defaults, then the TOML file (if given, or `sluice.toml` if present), then
    /// `SLUICE_*` variables (`__` separates sections: `SLUICE_TOPIC_DEFAULTS__RETENTION_MS`),
    /// then `overrides` (from flags).
    /// The result is validated: a setting that would make the engine refuse every request
    /// (or every deploy) is refused here, at start, naming the setting.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("sluice.toml").exists() => {
                figment = figment.merge(Toml::file_exact("sluice.toml"))
            }
            None => {}
        }
        figment
            .merge(
                Env::prefixed("SLUICE_")
                    .split("__")
                    .ignore(&OTHER_VARIABLES),
            )
            .merge(overrides)
            .extract::<Config>()
            .map_err(Box::new)?
            .validated()
    }

    /// The configuration, if every setting can work; else the first that cannot.
    pub fn validated(self) -> Result<Config, ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        let server = &self.server;
        if server.max_request_bytes == 0 {
            return invalid("[server] max_request_bytes", "must be at least 1".into());
        }
        if server.max_inflight_bytes < server.max_request_bytes {
            return invalid(
                "[server] max_inflight_bytes",
                format!(
                    "must be at least max_request_bytes ({}), or a request of that size never fits",
                    server.max_request_bytes
                ),
            );
        }
        if server.request_body_timeout_ms == 0 {
            return invalid(
                "[server] request_body_timeout_ms",
                "must be at least 1".into(),
            );
        }
        if server.max_fetch_bytes < server.max_request_bytes {
            return invalid(
                "[server] max_fetch_bytes",
                format!(
                    "must be at least max_request_bytes ({}): a batch stored from one request is fetched whole",
                    server.max_request_bytes
                ),
            );
        }
        if self.kafka.connections_max_idle_ms == 0 {
            return invalid(
                "[kafka] connections_max_idle_ms",
                "must be at least 1".into(),
            );
        }
        if self.plugins.max_upload_bytes == 0 {
            return invalid("[plugins] max_upload_bytes", "must be at least 1".into());
        }
        if self.groups.min_session_timeout_ms > self.groups.max_session_timeout_ms {
            return invalid(
                "[groups] min_session_timeout_ms",
                format!(
                    "must not be above max_session_timeout_ms ({})",
                    self.groups.max_session_timeout_ms
                ),
            );
        }
        let shares = &self.share_groups;
        if shares.min_record_lock_ms == 0 || shares.min_record_lock_ms > shares.max_record_lock_ms {
            return invalid(
                "[share_groups] min_record_lock_ms",
                format!(
                    "must be at least 1 and not above max_record_lock_ms ({})",
                    shares.max_record_lock_ms
                ),
            );
        }
        if shares.max_window_records > crate::queues::MAX_WINDOW_RECORDS_CAP {
            return invalid(
                "[share_groups] max_window_records",
                format!("must be at most {}", crate::queues::MAX_WINDOW_RECORDS_CAP),
            );
        }
        if shares.max_window_records == 0 || shares.max_members == 0 || shares.max_groups == 0 {
            return invalid(
                "[share_groups]",
                "max_window_records, max_members and max_groups must be at least 1".into(),
            );
        }
        if let Err(e) = shares.defaults.check(shares) {
            return invalid("[share_groups.defaults]", e.to_string());
        }
        self.plugins
            .defaults
            .validate()
            .map_err(ConfigError::PluginDefaults)?;
        self.topic_defaults
            .validate()
            .map_err(ConfigError::TopicDefaults)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sluice.toml");
        let parsed: Config = Figment::from(Toml::file_exact(example)).extract().unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let error = Figment::from(Toml::string("[storage]\nmax_disk_byte = 5\n"))
            .extract::<Config>()
            .unwrap_err();
        assert!(error.to_string().contains("max_disk_byte"), "{error}");
    }
}
