//! The worker's Kafka clients (librdkafka through `rdkafka`), configured from `[cluster]`:
//! the group consumer, the transactional producer, plain readers of whole partitions, and the
//! admin operations the worker needs (topic creation, partition counts).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::ClusterError;
use crate::config::ClusterSettings;

/// How long a metadata or admin request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one attempt of [`Clients::check_connection`] waits.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(2);

/// A client context that keeps the last error librdkafka reported (and logs it, as the
/// default context does).
#[derive(Default)]
struct Noting {
    last: parking_lot::Mutex<Option<(Option<RDKafkaErrorCode>, String)>>,
}

impl rdkafka::ClientContext for Noting {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka client");
        *self.last.lock() = Some((error.rdkafka_error_code(), reason.to_string()));
    }
}

impl rdkafka::consumer::ConsumerContext for Noting {}

/// Makes the worker's clients, all with the same servers and security settings.
#[derive(Clone)]
pub(crate) struct Clients {
    settings: ClusterSettings,
}

impl Clients {
    pub(crate) fn new(settings: &ClusterSettings) -> Result<Clients, ClusterError> {
        if settings.bootstrap_servers.trim().is_empty() {
            return Err(ClusterError::NoBootstrapServers);
        }
        Ok(Clients {
            settings: settings.clone(),
        })
    }

    pub(crate) fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// The settings every client shares; `[cluster.client]` last, so it can change any.
    pub(crate) fn base(&self) -> ClientConfig {
        self.base_with(&[])
    }

    /// [`Clients::base`] with `defaults` set before `[cluster.client]`, which may change them.
    pub(crate) fn base_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.settings.bootstrap_servers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        // librdkafka's own log lines go through its default logger (stderr) only when they
        // are warnings or worse.
        config.set("log_level", "4");
        for (key, value) in &self.settings.client {
            config.set(key, value);
        }
        config
    }

    /// A reader of whole partitions by assignment (no group, no commits), of committed
    /// transactions only.
    pub(crate) fn reader(&self) -> Result<BaseConsumer, ClusterError> {
        let mut config = self.base();
        config
            .set("group.id", "sluice.reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        // Overridden after `[cluster.client]`: these make the reader what it is.
        config.set("auto.offset.reset", "earliest");
        config
            .create()
            .map_err(ClusterError::kafka("creating a partition reader"))
    }

    /// A [`Clients::reader`] of one partition from its start.
    pub(crate) fn reader_of(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<BaseConsumer, ClusterError> {
        let reader = self.reader()?;
        let what = || ClusterError::kafka(format!("assigning `{topic}` partition {partition}"));
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .map_err(what())?;
        reader.assign(&assignment).map_err(what())?;
        Ok(reader)
    }

    /// Waits until the cluster answers a metadata request, up to [`REQUEST_TIMEOUT`]; fails
    /// at once on an authentication or TLS failure, naming what the cluster (or the TLS
    /// handshake) said, since retrying would not help.
    pub(crate) fn check_connection(&self) -> Result<(), ClusterError> {
        let context = Noting::default();
        let consumer: BaseConsumer<Noting> = self
            .base()
            .create_with_context(context)
            .map_err(ClusterError::kafka("creating a client"))?;
        let started = std::time::Instant::now();
        loop {
            let error = match consumer.fetch_metadata(None, CONNECT_ATTEMPT) {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            // Errors reach the context only through a poll.
            let _ = consumer.poll(Duration::from_millis(100));
            let noted = consumer.context().last.lock().clone();
            let fatal = noted.as_ref().is_some_and(|(code, _)| {
                matches!(
                    code,
                    Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
                )
            });
            if fatal || started.elapsed() > REQUEST_TIMEOUT {
                return Err(ClusterError::Unreachable {
                    servers: self.settings.bootstrap_servers.clone(),
                    reason: noted.map_or_else(|| error.to_string(), |(_, reason)| reason),
                });
            }
        }
    }

    /// How many partitions `topic` has.
    pub(crate) fn partition_count(&self, topic: &str) -> Result<u32, ClusterError> {
        let consumer = self.reader()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(ClusterError::kafka(format!("metadata of topic `{topic}`")))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty());
        match found {
            Some(t) => Ok(t.partitions().len() as u32),
            None => Err(ClusterError::UnknownTopic {
                topic: topic.to_string(),
            }),
        }
    }

    /// Creates `topic` unless it exists; `compact` makes it a compacted topic.
    pub(crate) fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
        compact: bool,
    ) -> Result<(), ClusterError> {
        let admin: AdminClient<DefaultClientContext> = self
            .base()
            .create()
            .map_err(ClusterError::kafka("creating an admin client"))?;
        let replication = match self.settings.replication_factor {
            Some(factor) => TopicReplication::Fixed(i32::from(factor)),
            None => TopicReplication::Fixed(-1),
        };
        let mut new_topic = NewTopic::new(topic, partitions as i32, replication);
        if compact {
            new_topic = new_topic.set("cleanup.policy", "compact");
        }
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = futures::executor::block_on(admin.create_topics([&new_topic], &options))
            .map_err(ClusterError::kafka(format!("creating topic `{topic}`")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(ClusterError::CreateTopic {
                        topic: topic.to_string(),
                        reason: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
