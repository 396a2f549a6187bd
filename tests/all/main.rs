//! Black-box tests of the real `sluice` binary: each starts `sluice serve` on a free port of
//! 127.0.0.1 (or runs a `sluice` command) and checks what it does from outside. One test
//! binary for every area, as wasmtime does: wasmtime, arrow and parquet are linked once
//! instead of once per area. One module per area:
//!
//! - `archive`: Parquet archival: pyarrow and DuckDB read the files back exactly, kill -9
//!   during archival never loses or duplicates an offset, replay crosses from the archive
//!   into the log, damaged files are named, typed columns, an S3-compatible store (moto).
//!   Needs pyarrow, DuckDB and moto ($SLUICE_PYTHON, else ./.venv); slow.
//! - `archive_table`: the archive as analysts read it: one schema per topic, versioned as
//!   values change, and the topic's Iceberg table read by pyiceberg, the files by DuckDB.
//! - `bad_input`: bad requests get a clear error with the right status code and the server
//!   keeps serving; past the disk limit, produce gets 507 and acknowledged data stays.
//! - `cli`: the command line end to end: topics, produce with keys, consume by position, in a
//!   group and following, graceful shutdown, restart, fencing, `--help`, and what
//!   `plugin new` and `plugin build` refuse.
//! - `console`: the web console driven in Debian's headless Chromium (tests/console, with
//!   playwright-core): lag shown and falling, pause and resume, a dead letter replayed,
//!   records browsed, the layout at 1280 and 390 px; screenshots in target/console-screenshots.
//! - `control_plane`: admin calls while a plugin fails every call: they take effect within a
//!   call deadline, other groups answer at once, undeploy survives a restart, SIGTERM is prompt.
//! - `crash`: kill -9 while producers wait for acknowledgements; every acknowledged record
//!   survives exactly once, in order. Prints its seed; `SLUICE_CRASH_SEED` replays one.
//! - `data_compat`: a data directory written by an earlier release (tests/fixtures/) opens
//!   and serves unchanged: topics, records, archive, consumer groups, a plugin group's state.
//! - `exactly_once`: exactly-once effects of a plugin group under kill -9 and crash points,
//!   and rollback to a snapshot.
//! - `docs`: the tutorial of docs/plugins.md, run as written against a running engine: a
//!   consumer scaffolded, written, built, tested and deployed in each of the five languages;
//!   and the README's quick start, pasted at the repository root.
//! - `examples`: the example consumers in every language and the `plugin new` templates,
//!   built from source with `sluice plugin build` (which installs each toolchain), deployed
//!   and checked; `SLUICE_EXAMPLES=rust,python` limits the languages. The slowest area.
//! - `groups`: consumer groups: balanced assignment, take-over from committed offsets when a
//!   member leaves or times out.
//! - `hostile_clients`: unauthenticated uploads refused from the headers and never kept,
//!   lengths past the limit refused before the body, stalled bodies holding no budget (408).
//! - `kafka`: the Kafka protocol door: kafka-python produces (every compression) and consumes,
//!   both doors read the same bytes, keys land where Kafka's partitioner puts them, bad frames
//!   close only their connection with a log line.
//! - `kafka_cluster`: the three-node Apache Kafka cluster of the cluster-mode tests
//!   (scripts/kafka-cluster) commits transactions while a node is killed, and the node restarts.
//! - `kafka_hostile`: hostile clients at the Kafka door: stalled frames, unread answers,
//!   idle connections and a flood past `max_connections` let go with a log line, and a frame
//!   in progress holding the in-flight budget it shares with the HTTP door.
//! - `kafka_compat`: the same Java client program against a real Apache Kafka broker (from
//!   Maven Central, started by scripts/kafka-broker) and against Sluice, outputs compared; the
//!   differences allowed are named in tests/kafka/differences.json. Needs Java 17 and Maven.
//! - `metrics`: `GET /metrics`: each counter, gauge, histogram and lag moves by what was
//!   produced, fetched, committed, processed, dead-lettered and archived.
//! - `plugins`: plugin groups: the admin token, bad uploads, deploy while producing, upgrade
//!   and roll back, misbehaving plugins kept apart, dead letters and their replay, `--from`,
//!   delivery modes, deployments surviving a restart, `sluice plugin test`.
//! - `share_groups`: share groups (queues): 8 competing consumers on 2 partitions through a
//!   crash holding locks, nacks, a consumer slower than its lock and a kill -9 of the engine:
//!   every record acknowledged once or dead-lettered; a restart redelivers exactly the
//!   unacknowledged; time-to-live, delayed release, renew, the CLI. `SLUICE_SHARE_SEED`.
//! - `top`: `sluice top` in a pseudo-terminal, its screen read through a VT100 parser: topics,
//!   a plugin group's status, lag and last error refreshed live, `q` restoring the terminal.
//! - `common`: starting, stopping and killing the server, running the CLI, seeds of
//!   randomised tests; `common::plugins`: the first-party plugins, deploy requests, polling a
//!   group, reading topics back.
//!
//! Run one area by filtering on its module path, one test by its full name:
//!
//! ```sh
//! cargo test --test all crash::
//! cargo test --test all -- --exact cli::help_reads_like_a_manual
//! cargo test --test all -- --list
//! ```
//!
//! The `plugins`, `exactly_once` and `archive` areas deploy the first-party plugins: build
//! them first with `cargo build --release --locked --target wasm32-wasip2 --manifest-path
//! plugins/Cargo.toml` (./scripts/test does, and installs what `archive` and `examples` need).
//!
//! Sharing one process: the areas used to be separate binaries that cargo ran one after the
//! other; now tests of different areas run side by side on libtest's threads (as many as
//! cores, as within each binary before, so no more tests at once than before, only other
//! pairs). That is safe because no test keeps state in this process that another could see:
//! each has its own temporary data directory and its own server, which listens on a port the
//! kernel picks (`127.0.0.1:0`); configuration goes to the child processes (`Command::env`,
//! never `std::env::set_var`) and so does a working directory (`Command::current_dir`, never
//! `std::env::set_current_dir`); helper scripts are found from `CARGO_MANIFEST_DIR`, not the
//! working directory. The statics: `exactly_once::OBSERVING` orders observations within
//! that module, as before; `common::TOKENS` keeps each server's admin token by its URL (ports
//! are unique) for the client commands; `examples::BUILDING` makes builds of the in-tree examples (which
//! write into `examples/<name>/target/`) take turns. No test needs the machine to itself, so there is no lock between
//! areas: none counts open descriptors or memory, the crash tests (`crash`, `exactly_once`,
//! `archive`) check what survives a kill whatever the load, and the two thresholds that
//! depend on timing compare two things that load slows alike (orders processed while a
//! component compiles, in `examples`; kills that land while the group works, in
//! `exactly_once`) and ran beside heavy tests of their own binary before.

mod common;

mod archive;
mod archive_table;
mod bad_input;
mod cli;
mod cluster_mode;
mod console;
mod control_plane;
mod crash;
mod data_compat;
mod docs;
mod exactly_once;
mod examples;
mod groups;
mod hostile_clients;
mod kafka;
mod kafka_cluster;
mod kafka_compat;
mod kafka_hostile;
mod metrics;
mod plugins;
mod share_groups;
mod top;
