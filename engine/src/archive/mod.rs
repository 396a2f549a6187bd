//! Parquet archival: a partition's records, a contiguous offset range at a time, written to a
//! Parquet file that DuckDB, pyarrow or Spark can read, and recorded in the partition's
//! archive manifest only once the file is complete, durable and verified.
//!
//! One noun for each thing:
//! - an **archived file** ([`ArchivedFile`]): one Parquet file, a contiguous offset range of
//!   one partition (`parquet/`: its format; `columns.rs`: its fixed columns; `typed.rs`: the
//!   typed columns of schema-aware topics);
//! - the **manifest** (`manifest.rs`): the list of a partition's archived files, in its
//!   directory;
//! - a **partition archive** ([`PartitionArchive`], `partition.rs`): one partition's archived
//!   files, their manifest, and the object store they move to; the partition's cold tier. The
//!   steps of archiving a range, and why a crash at any point is harmless, are there;
//! - the **archives** ([`Archives`], this file): every partition's archive under one root,
//!   the registry the log and the server ask for a partition's archive.
//!
//! Beside them: the object store (`remote.rs`), the archival rate limit (`pace.rs`), the low
//! priority archival threads run at (`priority.rs`), and the errors (`error.rs`).

mod columns;
mod error;
pub mod iceberg;
mod manifest;
mod pace;
pub mod parquet;
mod partition;
mod priority;
pub mod remote;
mod topic;
pub mod typed;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::log::{ColdTier, ColdTierOpener};
pub use error::ArchiveError;
pub use manifest::ArchivedFile;
use pace::Pace;
pub use partition::PartitionArchive;
pub use priority::spawn_low_priority;
use remote::RemoteDir;
pub use remote::{RemoteStore, StoreError};
pub use topic::{SchemaVersion, TopicArchive, TypedField};

/// Every partition's archive, under one root: `<root>/<topic>/<partition>/`.
pub struct Archives {
    root: PathBuf,
    remote: Option<Arc<RemoteStore>>,
    pace: Arc<Pace>,
    partitions: Mutex<HashMap<(String, u32), Arc<PartitionArchive>>>,
    topics: Mutex<HashMap<String, Arc<TopicArchive>>>,
}

impl Archives {
    /// Archives under `root`, moving files to `remote` once archived if given, reading
    /// segments for archiving at most `max_bytes_per_second` (None or 0: no limit).
    pub fn new(
        root: PathBuf,
        remote: Option<RemoteStore>,
        max_bytes_per_second: Option<u64>,
    ) -> Arc<Archives> {
        Arc::new(Archives {
            root,
            remote: remote.map(Arc::new),
            pace: Arc::new(Pace::new(max_bytes_per_second)),
            partitions: Mutex::new(HashMap::new()),
            topics: Mutex::new(HashMap::new()),
        })
    }

    /// Where a topic's files are, for people: the object store's URL or the local directory.
    pub fn location(&self, topic: &str) -> String {
        match &self.remote {
            Some(remote) => remote.describe(topic),
            None => self.root.join(topic).display().to_string(),
        }
    }

    /// The opener the log calls as each partition opens.
    pub fn opener(self: &Arc<Self>) -> ColdTierOpener {
        let archives = self.clone();
        Arc::new(move |topic: &str, partition: u32| {
            archives.partition(topic, partition) as Arc<dyn ColdTier>
        })
    }

    /// What the partitions of a topic's archive share.
    pub fn topic(&self, topic: &str) -> Arc<TopicArchive> {
        let mut topics = self.topics.lock().expect("archives lock");
        topics
            .entry(topic.to_string())
            .or_insert_with(|| {
                let table_store = self
                    .remote
                    .as_ref()
                    .map(|store| RemoteDir::folder(store.clone(), topic));
                Arc::new(TopicArchive::new(topic, self.root.join(topic), table_store))
            })
            .clone()
    }

    /// The archive of a partition (the same one the log uses).
    pub fn partition(&self, topic: &str, partition: u32) -> Arc<PartitionArchive> {
        let shared = self.topic(topic);
        let mut partitions = self.partitions.lock().expect("archives lock");
        partitions
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                Arc::new(PartitionArchive::new(
                    topic,
                    partition,
                    self.root.join(topic).join(partition.to_string()),
                    self.remote
                        .as_ref()
                        .map(|store| RemoteDir::new(store.clone(), topic, partition)),
                    self.pace.clone(),
                    shared,
                ))
            })
            .clone()
    }
}
