//! Recovery and read-path tests against real files.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::*;

fn options() -> LogOptions {
    LogOptions {
        topic_defaults: TopicConfig::default(),
        max_disk_bytes: None,
        min_free_bytes: 0,
        cold: None,
    }
}

fn record(i: u64) -> Record {
    Record {
        timestamp: 1_000 + i as i64,
        key: Some(Bytes::from(format!("k{i}"))),
        value: Some(Bytes::from(format!("value-{i}"))),
        headers: vec![Header {
            key: "h".into(),
            value: Some(Bytes::from_static(b"v")),
        }],
    }
}

/// Decodes every record of a partition from its start.
fn read_all(partition: &Partition) -> Vec<(u64, Record)> {
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    while offset < partition.high_watermark() {
        let fetched = partition.read(offset, 1 << 20).unwrap();
        out.extend(batch::decode_all(&Bytes::from(fetched.data), offset).unwrap());
        offset = fetched.next_offset;
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `batches` batches of 3 records to partition 0 of topic `t` and closes the log
/// without writing the active index, as a crash would.
fn write_batches(dir: &Path, batches: u64, overrides: &[(String, String)]) -> Vec<u64> {
    let log = Log::open(dir, options()).unwrap();
    let topic = log.create_topic("t", 1, overrides).unwrap();
    let partition = topic.partition(0).unwrap();
    let mut ends = Vec::new();
    runtime().block_on(async {
        for b in 0..batches {
            let records: Vec<Record> = (b * 3..b * 3 + 3).map(record).collect();
            partition.append_durable(&records).await.unwrap();
            ends.push(
                partition
                    .dir()
                    .join(segment::file_name(0, "log"))
                    .metadata()
                    .unwrap()
                    .len(),
            );
        }
    });
    ends
}

#[test]
fn truncating_the_last_batch_at_every_byte_keeps_exactly_the_batches_before_it() {
    let template = tempfile::tempdir().unwrap();
    let ends = write_batches(template.path(), 4, &[]);
    let log_file = |root: &Path| root.join("topics/t/0").join(segment::file_name(0, "log"));
    let full = std::fs::read(log_file(template.path())).unwrap();
    let last_start = ends[2] as usize;
    for cut in last_start..full.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        std::fs::write(log_file(dir.path()), &full[..cut]).unwrap();
        let log = Log::open(dir.path(), options()).unwrap();
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        assert_eq!(partition.high_watermark(), 9, "cut at {cut}");
        let records = read_all(&partition);
        assert_eq!(records.len(), 9);
        for (o, r) in &records {
            assert_eq!(*r, record(*o));
        }
        assert_eq!(
            std::fs::metadata(log_file(dir.path())).unwrap().len(),
            last_start as u64
        );
        // The log is writable again after the cut, continuing at the right offset.
        let appended = partition.append(&[record(9)]).unwrap();
        assert_eq!(appended.base_offset, 9);
    }
}

#[test]
fn a_corrupt_sealed_segment_fails_reads_with_file_and_position_and_later_segments_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let seg_overrides = [("segment_bytes".to_string(), "1024".to_string())];
    write_batches(dir.path(), 40, &seg_overrides);
    let partition_dir = dir.path().join("topics/t/0");
    let first = partition_dir.join(segment::file_name(0, "log"));
    let mut bytes = std::fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&first, bytes).unwrap();
    // Also lose the second segment's index: it must be rebuilt.
    let second_base = {
        let log = Log::open(dir.path(), options()).unwrap();
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        assert!(partition.segment_count() > 3);
        let error = partition.read(0, 1 << 20).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&first.display().to_string()), "{text}");
        assert!(matches!(error, LogError::Corrupt { .. }), "{text}");
        let hw = partition.high_watermark();
        assert_eq!(hw, 120);
        // Offsets in later segments are still served.
        let tail = partition.read(hw - 3, 1 << 20).unwrap();
        assert!(!tail.data.is_empty());
        let mut bases: Vec<u64> = std::fs::read_dir(&partition_dir)
            .unwrap()
            .filter_map(|e| {
                e.unwrap()
                    .file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        bases.sort();
        bases[1]
    };
    std::fs::remove_file(partition_dir.join(segment::file_name(second_base, "index"))).unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    let fetched = partition.read(second_base, 1 << 20).unwrap();
    assert!(!fetched.data.is_empty());
    assert!(
        partition_dir
            .join(segment::file_name(second_base, "index"))
            .exists(),
        "index rebuilt"
    );
}

/// 150 records in batches of 3, over more than two segments.
fn fifty_batches_in_small_segments(dir: &Path) -> (Log, Arc<Partition>) {
    write_batches(
        dir,
        50,
        &[("segment_bytes".to_string(), "2048".to_string())],
    );
    let log = Log::open(dir, options()).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert!(partition.segment_count() > 2);
    (log, partition)
}

#[test]
fn reads_by_timestamp_and_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, partition) = fifty_batches_in_small_segments(dir.path());
    let all = read_all(&partition);
    assert_eq!(all.len(), 150);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (o, r))| *o == i as u64 && *r == record(i as u64))
    );
    assert_eq!(partition.offset_for_timestamp(0).unwrap(), 0);
    assert_eq!(partition.offset_for_timestamp(1_077).unwrap(), 77);
    assert_eq!(partition.offset_for_timestamp(9_999_999).unwrap(), 150);
}

/// A bounded read stops at the batch holding its last offset, within a segment and across
/// segments, and never reads past the high watermark.
#[test]
fn a_read_through_an_offset_stops_at_the_batch_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, partition) = fifty_batches_in_small_segments(dir.path());
    // Batches hold 3 records: [0, 3), [3, 6), ...
    for (first, last, next) in [
        (4, 4, 6),
        (4, 7, 9),
        (3, 5, 6),
        (0, 100, 102),
        (140, 999, 150),
    ] {
        let fetched = partition.read_through(first, last, 1 << 20).unwrap();
        assert_eq!(
            fetched.next_offset, next,
            "read from {first} through {last}"
        );
        let offsets: Vec<u64> = batch::decode_all(&Bytes::from(fetched.data), first)
            .unwrap()
            .into_iter()
            .map(|(offset, record)| {
                assert_eq!(record, self::record(offset));
                offset
            })
            .collect();
        assert_eq!(offsets, (first..next).collect::<Vec<_>>());
    }
    // max_bytes still ends a read early: at least one batch, then no more than asked for.
    let short = partition.read_through(0, 149, 1).unwrap();
    assert_eq!(short.next_offset, 3);
}

#[test]
fn retention_by_size_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [("segment_bytes".to_string(), "1024".to_string())];
    write_batches(dir.path(), 60, &overrides);
    let log = Log::open(dir.path(), options()).unwrap();
    let topic = log
        .alter_topic(
            "t",
            &[
                ("retention_bytes".to_string(), "3000".to_string()),
                ("retention_ms".to_string(), "none".to_string()),
            ],
            None,
        )
        .unwrap();
    let partition = topic.partition(0).unwrap();
    let before = partition.size_bytes();
    log.enforce_retention(now_ms());
    assert!(partition.size_bytes() < before);
    assert!(partition.size_bytes() >= 3000);
    let start = partition.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        partition.read(0, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&partition).first().unwrap().0, start);
}

#[test]
fn retention_by_time_deletes_sealed_segments_whose_newest_record_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    // Records are stamped 1970-01-01T00:00:01Z plus a few ms: all older than an hour.
    write_batches(
        dir.path(),
        30,
        &[("segment_bytes".to_string(), "1024".to_string())],
    );
    let log = Log::open(dir.path(), options()).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    let segments = partition.segment_count();
    assert!(segments > 2);
    log.alter_topic(
        "t",
        &[("retention_ms".to_string(), "none".to_string())],
        None,
    )
    .unwrap();
    assert_eq!(
        log.enforce_retention(now_ms()),
        0,
        "retention none keeps everything"
    );
    log.alter_topic(
        "t",
        &[("retention_ms".to_string(), "3600000".to_string())],
        None,
    )
    .unwrap();
    assert!(log.enforce_retention(now_ms()) > 0);
    assert_eq!(
        partition.segment_count(),
        1,
        "only the active segment is kept"
    );
    assert_eq!(
        partition.log_start_offset(),
        partition.high_watermark() - read_all(&partition).len() as u64
    );
    // A record stamped now is not expired by the same rule.
    assert_eq!(log.enforce_retention(1_000 + 3_600_000), 0);
}

#[test]
fn a_second_process_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), options()).unwrap();
    let Err(second) = Log::open(dir.path(), options()) else {
        panic!("second open succeeded")
    };
    assert!(matches!(second, LogError::Locked(_)));
}

#[test]
fn concurrent_appenders_share_fsyncs_and_every_record_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), options()).unwrap());
    let topic = log.create_topic("t", 2, &[]).unwrap();
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let topic = topic.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..20u64 {
                    let records = vec![record(w * 1000 + b)];
                    topic.produce(Some((w % 2) as u32), records).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let total: usize = topic.partitions().iter().map(|p| read_all(p).len()).sum();
    assert_eq!(total, 160);
}

#[test]
fn a_failed_fsync_stops_acknowledgements_for_that_partition_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let topic = log.create_topic("t", 2, &[]).unwrap();
    let (broken, healthy) = (topic.partition(0).unwrap(), topic.partition(1).unwrap());
    runtime().block_on(async {
        broken.append_durable(&[record(0)]).await.unwrap();
        broken
            .active_segment()
            .fail_next_sync
            .store(true, Ordering::SeqCst);
        let error = broken.append_durable(&[record(1)]).await.unwrap_err();
        assert!(matches!(error, LogError::PartitionFailed { .. }), "{error}");
        assert!(error.to_string().contains("restart"), "{error}");
        assert_eq!(
            broken.high_watermark(),
            1,
            "the unsynced record never becomes visible"
        );
        assert!(matches!(
            broken.append(&[record(2)]),
            Err(LogError::PartitionFailed { .. })
        ));
        healthy.append_durable(&[record(3)]).await.unwrap();
        assert_eq!(healthy.high_watermark(), 1);
    });
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
