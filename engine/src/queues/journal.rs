//! The share-group journal (`share-groups.journal` in the data directory): every durable
//! change of every share group's windows and settings, appended and fsynced before the member
//! that caused it is answered, replayed at start, and rewritten as a snapshot when it grows.
//!
//! # Format, version 2 (all integers little-endian)
//!
//! ```text
//! file   = magic "SLQJ" (4 bytes) · version u32 = 2 · entry*
//! entry  = length u32 (of payload) · crc32c u32 (of payload) · payload
//! payload, by its first byte:
//!   1 settings: group str16 · settings JSON (u32 length · bytes)
//!   2 window:   group str16 · topic str16 · partition u32 · start u64 · count u32 ·
//!               count × (offset u64 · state u8 · deliveries u16)
//!   3 forget:   group str16                       (the group was deleted)
//!   4 delay:    group str16 · topic str16 · partition u32 · count u32 ·
//!               count × (offset u64 · not_before_ms u64)
//! str16  = length u16 · UTF-8 bytes
//! state  = 0 available · 1 acquired · 2 acknowledged · 3 archived (dead-lettered or dropped)
//! ```
//!
//! A window entry sets the listed records' states, then moves the window's start to `start`
//! (forgetting what is before it). A delay entry says that the listed records, released with a
//! delay, are not delivered again before `not_before_ms` (wall-clock milliseconds since the
//! Unix epoch: a delay outlives a restart, and moves with the system clock); a later window
//! entry for a record ends its delay. Replaying every entry in order rebuilds each window.
//!
//! Version 1 had no delay entries: a release's delay ended with the process. A version 1
//! journal is read, then rewritten at once as version 2 (see the rewrite below), so that a
//! binary that knows only version 1 refuses the file instead of stopping at its first delay
//! entry.
//!
//! # Crash analysis
//!
//! The disk is assumed to keep what `fdatasync` returned for, and may tear or drop anything
//! written after the last one (a power loss), in any order within that unsynced tail.
//! - **Torn or missing tail.** Replay stops at the first entry whose length runs past the file
//!   or whose CRC does not match, and truncates the file there. Nothing in that tail was
//!   answered: a fetch returns its records, and an acknowledgement its result, only after the
//!   entry is synced ([`Journal::sync_to`]). A lost acquisition is a delivery no member saw;
//!   a lost acknowledgement was never confirmed, so the record is delivered again.
//! - **Crash during a rewrite.** The snapshot is written to `share-groups.journal.new`,
//!   fsynced, renamed over the journal, and the directory fsynced. Before the rename the old
//!   journal is whole; after it the snapshot is. A leftover `.new` file is deleted at start.
//! - **Between a dead letter and its entry.** A record is appended (durably) to the dead-letter
//!   topic before the entry that archives it is written. A crash between the two leaves the
//!   record available with its delivery count: it is dead-lettered (or delivered) again, so a
//!   dead letter may appear twice but is never lost; its headers name its origin offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::error::ShareError;
use super::window::{Change, Durable};

const MAGIC: &[u8; 4] = b"SLQJ";
const VERSION: u32 = 2;
/// The version before delay entries, read and then rewritten as [`VERSION`].
const VERSION_WITHOUT_DELAYS: u32 = 1;
const HEADER_BYTES: usize = 8;
/// The largest entry replay accepts: a window entry of a million records is 11 MB.
const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

const KIND_SETTINGS: u8 = 1;
const KIND_WINDOW: u8 = 2;
const KIND_FORGET: u8 = 3;
const KIND_DELAY: u8 = 4;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Settings {
        group: String,
        json: Vec<u8>,
    },
    Window {
        group: String,
        topic: String,
        partition: u32,
        start: u64,
        changes: Vec<Change>,
    },
    Forget {
        group: String,
    },
    Delay {
        group: String,
        topic: String,
        partition: u32,
        /// (offset, not before: wall-clock milliseconds).
        delays: Vec<(u64, u64)>,
    },
}

impl Entry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 8]);
        match self {
            Entry::Settings { group, json } => {
                out.push(KIND_SETTINGS);
                put_str(out, group);
                out.extend_from_slice(&(json.len() as u32).to_le_bytes());
                out.extend_from_slice(json);
            }
            Entry::Window {
                group,
                topic,
                partition,
                start,
                changes,
            } => {
                out.push(KIND_WINDOW);
                put_str(out, group);
                put_str(out, topic);
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
                for change in changes {
                    out.extend_from_slice(&change.offset.to_le_bytes());
                    out.push(change.state as u8);
                    out.extend_from_slice(&change.deliveries.to_le_bytes());
                }
            }
            Entry::Forget { group } => {
                out.push(KIND_FORGET);
                put_str(out, group);
            }
            Entry::Delay {
                group,
                topic,
                partition,
                delays,
            } => {
                out.push(KIND_DELAY);
                put_str(out, group);
                put_str(out, topic);
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&(delays.len() as u32).to_le_bytes());
                for (offset, not_before_ms) in delays {
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&not_before_ms.to_le_bytes());
                }
            }
        }
        let payload_len = (out.len() - at - 8) as u32;
        let crc = crc32c::crc32c(&out[at + 8..]);
        out[at..at + 4].copy_from_slice(&payload_len.to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes one payload (its CRC already checked).
    pub fn decode(payload: &[u8]) -> Result<Entry, String> {
        let mut reader = Reader { bytes: payload };
        let entry = match reader.u8()? {
            KIND_SETTINGS => {
                let group = reader.str16()?;
                let len = reader.u32()? as usize;
                Entry::Settings {
                    group,
                    json: reader.take(len)?.to_vec(),
                }
            }
            KIND_WINDOW => {
                let group = reader.str16()?;
                let topic = reader.str16()?;
                let partition = reader.u32()?;
                let start = reader.u64()?;
                let count = reader.u32()? as usize;
                if count > reader.bytes.len() / 11 {
                    return Err(format!("{count} changes do not fit in the entry"));
                }
                let mut changes = Vec::with_capacity(count);
                for _ in 0..count {
                    let offset = reader.u64()?;
                    let state = reader.u8()?;
                    let state = Durable::from_byte(state)
                        .ok_or_else(|| format!("unknown record state {state}"))?;
                    let deliveries = u16::from_le_bytes(reader.array()?);
                    changes.push(Change {
                        offset,
                        state,
                        deliveries,
                    });
                }
                Entry::Window {
                    group,
                    topic,
                    partition,
                    start,
                    changes,
                }
            }
            KIND_FORGET => Entry::Forget {
                group: reader.str16()?,
            },
            KIND_DELAY => {
                let group = reader.str16()?;
                let topic = reader.str16()?;
                let partition = reader.u32()?;
                let count = reader.u32()? as usize;
                if count > reader.bytes.len() / 16 {
                    return Err(format!("{count} delays do not fit in the entry"));
                }
                let mut delays = Vec::with_capacity(count);
                for _ in 0..count {
                    delays.push((reader.u64()?, reader.u64()?));
                }
                Entry::Delay {
                    group,
                    topic,
                    partition,
                    delays,
                }
            }
            other => return Err(format!("unknown entry kind {other}")),
        };
        if !reader.bytes.is_empty() {
            return Err(format!("{} bytes after the entry", reader.bytes.len()));
        }
        Ok(entry)
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // Group and topic names are validated to be short (log::validate_name).
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("entry ends {n} bytes early"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn str16(&mut self) -> Result<String, String> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }
}

/// Splits `bytes` (after the file header) into entries; stops at the first torn or corrupt
/// one. Returns the entries and how many bytes they take.
pub fn decode_entries(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut position = 0;
    while bytes.len() - position >= 8 {
        let head = &bytes[position..position + 8];
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > MAX_ENTRY_BYTES || bytes.len() - position - 8 < len {
            break;
        }
        let payload = &bytes[position + 8..position + 8 + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        match Entry::decode(payload) {
            Ok(entry) => entries.push(entry),
            Err(why) => {
                tracing::warn!(%why, position, "share-group journal: an entry does not decode");
                break;
            }
        }
        position += 8 + len;
    }
    (entries, position)
}

struct Writer {
    file: File,
    /// Bytes in the current file.
    file_bytes: u64,
}

/// The journal file: appends under one lock, syncs shared by every caller that waits.
pub struct Journal {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Bytes appended since the journal was opened (across rewrites): a position to sync to.
    written: AtomicU64,
    /// (a handle to the current file, position synced so far).
    synced: Mutex<(File, u64)>,
    /// The position synced so far, read without the lock: a caller whose entries a sync
    /// already covered need not wait for it.
    synced_to: AtomicU64,
    failed: AtomicBool,
}

impl Journal {
    /// Opens (or creates) the journal and returns the entries it holds. A torn tail is
    /// truncated away.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Entry>), ShareError> {
        let path = dir.join("share-groups.journal");
        let staged = path.with_extension("journal.new");
        if staged.exists() {
            std::fs::remove_file(&staged).map_err(|e| ShareError::io("remove", &staged, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ShareError::io("open", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| ShareError::io("read", &path, e))?;
        let mut version = VERSION;
        let entries = if bytes.len() < HEADER_BYTES {
            // New, or torn before its header was synced: start it again.
            file.set_len(0)
                .map_err(|e| ShareError::io("truncate", &path, e))?;
            file.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| ShareError::io("seek", &path, e))?;
            file.write_all(&header())
                .map_err(|e| ShareError::io("write", &path, e))?;
            file.sync_all()
                .map_err(|e| ShareError::io("fsync", &path, e))?;
            sync_dir(dir)?;
            Vec::new()
        } else {
            version = check_header(&bytes, &path)?;
            let (entries, used) = decode_entries(&bytes[HEADER_BYTES..]);
            let good = (HEADER_BYTES + used) as u64;
            if good < bytes.len() as u64 {
                tracing::warn!(
                    path = %path.display(),
                    dropped_bytes = bytes.len() as u64 - good,
                    "share-group journal: dropping a torn tail (never acknowledged to a client)"
                );
                file.set_len(good)
                    .map_err(|e| ShareError::io("truncate", &path, e))?;
                file.sync_all()
                    .map_err(|e| ShareError::io("fsync", &path, e))?;
            }
            entries
        };
        let file_bytes = file
            .metadata()
            .map_err(|e| ShareError::io("stat", &path, e))?
            .len();
        let sync_handle = file
            .try_clone()
            .map_err(|e| ShareError::io("open", &path, e))?;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| ShareError::io("seek", &path, e))?;
        let journal = Journal {
            path,
            writer: Mutex::new(Writer { file, file_bytes }),
            written: AtomicU64::new(0),
            synced: Mutex::new((sync_handle, 0)),
            synced_to: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        };
        if version != VERSION {
            // The same entries under the new header, before anything new is written.
            journal.rewrite(&entries)?;
        }
        Ok((journal, entries))
    }

    fn check_failed(&self) -> Result<(), ShareError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(ShareError::JournalFailed(self.path.clone()));
        }
        Ok(())
    }

    /// Appends entries (not yet durable); returns the position to [`Journal::sync_to`].
    pub fn append(&self, entries: &[Entry]) -> Result<u64, ShareError> {
        self.check_failed()?;
        let mut bytes = Vec::new();
        for entry in entries {
            entry.encode(&mut bytes);
        }
        let mut writer = self.writer.lock();
        if let Err(e) = writer.file.write_all(&bytes) {
            // What reached the file is unknown: nothing more is written (see Journal::sync_to).
            self.failed.store(true, Ordering::Release);
            return Err(ShareError::io("write", &self.path, e));
        }
        writer.file_bytes += bytes.len() as u64;
        Ok(self.written.fetch_add(bytes.len() as u64, Ordering::AcqRel) + bytes.len() as u64)
    }

    /// Returns once everything up to `position` is on disk. Callers that wait together share
    /// one fdatasync (group commit).
    pub fn sync_to(&self, position: u64) -> Result<(), ShareError> {
        let mut synced = self.synced.lock();
        self.check_failed()?;
        if synced.1 >= position {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        if let Err(e) = synced.0.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing after
            // this point can be trusted, so the journal stops (as the log does).
            self.failed.store(true, Ordering::Release);
            return Err(ShareError::io("fsync", &self.path, e));
        }
        synced.1 = target;
        self.synced_to.store(target, Ordering::Release);
        Ok(())
    }

    /// Whether everything up to `position` is on disk already (no wait, no lock).
    pub fn is_synced(&self, position: u64) -> bool {
        self.synced_to.load(Ordering::Acquire) >= position && !self.failed.load(Ordering::Acquire)
    }

    /// Bytes in the journal file.
    pub fn file_bytes(&self) -> u64 {
        self.writer.lock().file_bytes
    }

    /// Replaces the journal with `entries` (a snapshot of every window and setting). The
    /// caller holds every group still, so nothing is appended meanwhile.
    pub fn rewrite(&self, entries: &[Entry]) -> Result<(), ShareError> {
        self.check_failed()?;
        let mut bytes = header().to_vec();
        for entry in entries {
            entry.encode(&mut bytes);
        }
        let staged = self.path.with_extension("journal.new");
        let mut writer = self.writer.lock();
        let mut file = File::create(&staged).map_err(|e| ShareError::io("create", &staged, e))?;
        file.write_all(&bytes)
            .map_err(|e| ShareError::io("write", &staged, e))?;
        file.sync_all()
            .map_err(|e| ShareError::io("fsync", &staged, e))?;
        std::fs::rename(&staged, &self.path)
            .map_err(|e| ShareError::io("rename", &self.path, e))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        let sync_handle = file
            .try_clone()
            .map_err(|e| ShareError::io("open", &self.path, e))?;
        let mut synced = self.synced.lock();
        *synced = (sync_handle, self.written.load(Ordering::Acquire));
        self.synced_to.store(synced.1, Ordering::Release);
        writer.file = file;
        writer.file_bytes = bytes.len() as u64;
        Ok(())
    }
}

fn header() -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[..4].copy_from_slice(MAGIC);
    header[4..].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// The file's version, if this code reads it.
fn check_header(bytes: &[u8], path: &Path) -> Result<u32, ShareError> {
    if &bytes[..4] != MAGIC {
        return Err(ShareError::NotAJournal(path.to_path_buf()));
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if version != VERSION && version != VERSION_WITHOUT_DELAYS {
        return Err(ShareError::JournalVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(version)
}

fn sync_dir(dir: &Path) -> Result<(), ShareError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ShareError::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change() -> impl Strategy<Value = Change> {
        (any::<u64>(), 0u8..4, any::<u16>()).prop_map(|(offset, state, deliveries)| Change {
            offset,
            state: Durable::from_byte(state).expect("0..4"),
            deliveries,
        })
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (
                "[a-z.]{1,20}",
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(group, json)| Entry::Settings { group, json }),
            (
                "[a-z.]{1,20}",
                "[a-z-]{1,20}",
                any::<u32>(),
                any::<u64>(),
                proptest::collection::vec(change(), 0..50)
            )
                .prop_map(|(group, topic, partition, start, changes)| Entry::Window {
                    group,
                    topic,
                    partition,
                    start,
                    changes
                }),
            "[a-z]{1,8}".prop_map(|group| Entry::Forget { group }),
            (
                "[a-z.]{1,20}",
                "[a-z-]{1,20}",
                any::<u32>(),
                proptest::collection::vec((any::<u64>(), any::<u64>()), 0..50)
            )
                .prop_map(|(group, topic, partition, delays)| Entry::Delay {
                    group,
                    topic,
                    partition,
                    delays
                }),
        ]
    }

    proptest! {
        #[test]
        fn entries_round_trip_and_a_torn_tail_is_dropped(
            entries in proptest::collection::vec(entry(), 1..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            for entry in &entries {
                entry.encode(&mut bytes);
            }
            let (decoded, used) = decode_entries(&bytes);
            prop_assert_eq!(&decoded, &entries);
            prop_assert_eq!(used, bytes.len());
            // Cut anywhere: what decodes is a prefix of the entries, never garbage.
            let cut = cut.index(bytes.len());
            let (prefix, used) = decode_entries(&bytes[..cut]);
            prop_assert!(used <= cut);
            prop_assert_eq!(&prefix[..], &entries[..prefix.len()]);
        }

        #[test]
        fn a_flipped_bit_ends_replay_at_that_entry(
            entries in proptest::collection::vec(entry(), 1..10),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            for entry in &entries {
                entry.encode(&mut bytes);
            }
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            let (decoded, _) = decode_entries(&bytes);
            prop_assert!(decoded.len() < entries.len());
            prop_assert_eq!(&decoded[..], &entries[..decoded.len()]);
        }
    }

    #[test]
    fn a_journal_reopens_with_what_was_synced_and_after_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let window = |start| Entry::Window {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
            start,
            changes: vec![Change {
                offset: start,
                state: Durable::Acquired,
                deliveries: 2,
            }],
        };
        {
            let (journal, entries) = Journal::open(dir.path()).unwrap();
            assert!(entries.is_empty());
            let position = journal.append(&[window(1), window(2)]).unwrap();
            journal.sync_to(position).unwrap();
        }
        let path = dir.path().join("share-groups.journal");
        // A torn entry at the end, as a power loss can leave it.
        let mut torn = Vec::new();
        window(3).encode(&mut torn);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&torn[..torn.len() - 3]).unwrap();
        drop(file);
        {
            let (journal, entries) = Journal::open(dir.path()).unwrap();
            assert_eq!(entries, vec![window(1), window(2)]);
            journal.rewrite(&[window(7)]).unwrap();
            let position = journal.append(&[window(8)]).unwrap();
            journal.sync_to(position).unwrap();
        }
        let (_, entries) = Journal::open(dir.path()).unwrap();
        assert_eq!(entries, vec![window(7), window(8)]);
    }

    /// A window entry further past its window's start than any window holds is damage, named
    /// as such, not a reason to fill memory up to it; a start moved far ahead (retention)
    /// costs nothing.
    #[test]
    fn a_replayed_window_is_bounded() {
        let window = |start, offset| Entry::Window {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            start,
            changes: vec![Change {
                offset,
                state: Durable::Acked,
                deliveries: 1,
            }],
        };
        let mut bytes = Vec::new();
        window(0, 5).encode(&mut bytes);
        window(1 << 40, (1 << 40) + 3).encode(&mut bytes);
        assert_eq!(
            super::super::replay_journal_entries(&bytes).unwrap(),
            vec!["g"]
        );
        let far = (1 << 40) + (super::super::MAX_WINDOW_RECORDS_CAP << 8);
        window(1 << 40, far).encode(&mut bytes);
        let error = super::super::replay_journal_entries(&bytes).unwrap_err();
        assert!(
            matches!(error, ShareError::BadJournalOffset { .. }),
            "{error}"
        );
    }

    /// A version 1 journal (written before delay entries) is read whole and rewritten as
    /// version 2; an unknown version is refused, not truncated.
    #[test]
    fn a_version_1_journal_is_read_and_rewritten_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("share-groups.journal");
        let forget = Entry::Forget { group: "g".into() };
        let mut bytes = b"SLQJ".to_vec();
        bytes.extend_from_slice(&VERSION_WITHOUT_DELAYS.to_le_bytes());
        forget.encode(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let (journal, entries) = Journal::open(dir.path()).unwrap();
        assert_eq!(entries, vec![forget.clone()]);
        drop(journal);
        let rewritten = std::fs::read(&path).unwrap();
        assert_eq!(&rewritten[..HEADER_BYTES], &header());
        assert_eq!(&rewritten[HEADER_BYTES..], &bytes[HEADER_BYTES..]);

        let mut newer = rewritten.clone();
        newer[4..8].copy_from_slice(&(VERSION + 1).to_le_bytes());
        std::fs::write(&path, &newer).unwrap();
        assert!(matches!(
            Journal::open(dir.path()),
            Err(ShareError::JournalVersion { version, .. }) if version == VERSION + 1
        ));
        assert_eq!(std::fs::read(&path).unwrap(), newer);
    }
}
