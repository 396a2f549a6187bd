//! Sluice: a durable partitioned log with WebAssembly consumer plugins.
//!
//! # Layout
//!
//! From the top floor down; each module imports only from the floors below it (the arrows
//! point down), so a module can be read knowing only what is under it.
//!
//! | floor | module | owns |
//! |---|---|---|
//! | 7 | [`cli`] | the `sluice` command line: `serve`, `worker`, and the commands that talk to a running engine over HTTP ([`cli::client`]); `plugin build/new/test` |
//! | 6 | [`server`] | the doors: the HTTP API (axum) and the Kafka protocol listener (`server/kafka/`); the composition root ([`server::start`]), topics, records, consumer groups, plugins, archive and metrics routes, the background chores, graceful shutdown; a cluster worker's admin API (`server/worker_api.rs`) |
//! | 5 | [`cluster`] | cluster mode: plugin groups on a Kafka cluster (rdkafka), each a Kafka consumer group whose batches commit in Kafka transactions, state per input partition in a changelog, deployments shared through compacted topics |
//! | 4 | [`config`] | the configuration file and its defaults |
//! | 3 | [`runtime`] | the plugin host: WebAssembly sandboxes (wasmtime), the deployment data model, the control plane ([`runtime::PluginHost`]) and one worker thread per plugin group |
//! | 2 | [`txn`] | the plugin store (`plugins.redb`): state, offsets and outbox committed in one transaction; the state-store contract a sandbox reads through |
//! | 2 | [`groups`] | consumer groups of clients: membership, assignment, committed offsets (`groups.redb`) |
//! | 2 | [`queues`] | share groups (queues): records locked per member, acknowledged one by one, delivered again when a lock ends, dead-lettered past `max_deliveries`; their windows in `share-groups.journal` |
//! | 2 | [`archive`] | Parquet archival of sealed segments (to a directory or an object store), and replay of archived offsets |
//! | 1 | [`log`] | topics of partitions of segments of CRC-checked record batches: append with group-committed fsync, read, retention, recovery; the cold-tier interface the archive implements |
//! | 0 | [`crash_point`] | named crash points for the kill -9 tests |
//!
//! The log knows nothing of HTTP, consumer groups, plugins or Parquet: the archive plugs in
//! below it through [`log::ColdTier`] (a dependency inversion), so the log's recovery and tests
//! stand alone. Within a module the same rule holds; the one import cycle left is the
//! flusher <-> partition group-commit handshake in `log/` (a partition queues itself on the
//! flusher, the flusher calls back to sync it).
//!
//! Benchmarks live in their own crate (`bench/`, the `sluice-bench` binary) over this library.

pub mod archive;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crash_point;
pub mod groups;
pub mod log;
pub mod queues;
pub mod runtime;
#[cfg(test)]
mod sdk_vectors;
pub mod server;
pub mod txn;
