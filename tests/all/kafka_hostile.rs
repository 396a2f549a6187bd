//! Hostile clients at the Kafka door: frames that stall, answers nobody reads, idle
//! connections, a flood past `max_connections`, and a frame in progress holding the in-flight
//! budget it shares with the HTTP door. Each is let go with a log line naming why, and
//! everyone else is served meanwhile.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::common::kafka::request_frame;
use crate::common::plugins::{admin, create_topic, record};
use crate::common::{Server, a_produce_finds_the_budget_held, server_with_budget};

/// A connection to the listener with reads that give up after `within`.
fn connect(addr: &str, within: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    stream
}

/// True when the engine closed `stream` (a read gives EOF or a reset) within its read
/// timeout; false when the timeout passed with the connection still open. Answers that were
/// already on their way are read past.
fn closed_by_engine(stream: &mut TcpStream) -> bool {
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

/// Sends ApiVersions on `stream` and reads its answer: the connection is being served.
fn served(stream: &mut TcpStream) {
    let frame = request_frame(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    stream.write_all(&frame).unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).unwrap();
}

/// A Fetch v4 request for partition 0 of `topic` from offset 0, up to 50 MB.
fn fetch_everything(topic: &str) -> Bytes {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(50 << 20);
    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![partition]),
        ]);
    request_frame(ApiKey::Fetch, 4, &request)
}

/// Frames that stop arriving and answers that are never read are let go after
/// `request_body_timeout_ms`, each with a log line, while another client is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_frames_and_unread_answers_are_let_go_and_others_are_served() {
    const STALLED: usize = 20;
    const TIMEOUT_MS: u64 = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let timeout = TIMEOUT_MS.to_string();
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_SERVER__REQUEST_BODY_TIMEOUT_MS", &timeout)],
    );
    let addr = server.kafka.clone().unwrap();
    let client = admin(&server);
    create_topic(&client, "big", 1).await;
    // About 8 MB to fetch: more than the kernel's socket buffers hold between the two ends.
    let value = "v".repeat(64 * 1024);
    for _ in 0..4 {
        let records: Vec<_> = (0..32).map(|i| record(&format!("k{i}"), &value)).collect();
        client.produce("big", Some(0), &records).await.unwrap();
    }

    let within = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(10);
    // Each announces 50 MB and sends ten bytes of it.
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut stream = connect(&addr, within);
            stream.write_all(&50_000_000i32.to_be_bytes()).unwrap();
            stream.write_all(&[0u8; 10]).unwrap();
            stream
        })
        .collect();
    // This one asks for the topic ten times over and reads none of it.
    let mut not_reading = connect(&addr, within);
    not_reading.set_nonblocking(true).unwrap();
    let fetch = fetch_everything("big");
    for _ in 0..10 {
        let mut sent = 0;
        while sent < fetch.len() {
            match not_reading.write(&fetch[sent..]) {
                Ok(n) => sent += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => panic!("sending fetches: {error}"),
            }
        }
    }
    not_reading.set_nonblocking(false).unwrap();

    // Meanwhile a well-behaved client is served.
    let started = Instant::now();
    let mut good = connect(&addr, Duration::from_secs(5));
    served(&mut good);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "served after {:?}",
        started.elapsed()
    );

    for stream in &mut stalled {
        assert!(closed_by_engine(stream), "a stalled frame was kept open");
    }
    // Reading now would let the engine's write go on, so the log says first that it gave up;
    // the reads then drain what it had written before it closed the connection.
    let deadline = Instant::now() + within;
    while !server.log().contains("read none of its answer") {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closed_by_engine(&mut not_reading),
        "an unread answer was kept:\n{}",
        server.log()
    );
    let log = server.log();
    let stalls = log.matches("stopped arriving after 10").count();
    assert_eq!(stalls, STALLED, "{log}");
    served(&mut good);
}

/// Past `max_connections`, new connections are closed at once and the refusals are logged in
/// brief (a count, at most one line a second); connections idle for
/// `connections_max_idle_ms` are closed, which frees their slots for new clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_max_connections_is_refused_in_brief_and_idle_ones_make_room() {
    const HELD: usize = 20;
    const FLOOD: usize = 300;
    const IDLE_MS: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let (held, idle) = (HELD.to_string(), IDLE_MS.to_string());
    let server = Server::start_with_env(
        dir.path(),
        &[
            ("SLUICE_KAFKA__MAX_CONNECTIONS", &held),
            ("SLUICE_KAFKA__CONNECTIONS_MAX_IDLE_MS", &idle),
        ],
    );
    let addr = server.kafka.clone().unwrap();
    let within = Duration::from_millis(IDLE_MS) + Duration::from_secs(10);
    // Each is answered once, so all are accepted and hold a slot.
    let mut holders: Vec<TcpStream> = (0..HELD)
        .map(|_| {
            let mut stream = connect(&addr, within);
            served(&mut stream);
            stream
        })
        .collect();
    let flood_started = Instant::now();
    for _ in 0..FLOOD {
        let mut stream = connect(&addr, Duration::from_secs(5));
        assert!(
            closed_by_engine(&mut stream),
            "a connection past the limit was kept"
        );
    }
    let flood_secs = flood_started.elapsed().as_secs();
    let log = server.log();
    let lines = log.matches("connections refused").count();
    assert!(
        (1..=flood_secs as usize + 1).contains(&lines),
        "{lines} lines for {FLOOD} refusals over {flood_secs} s:\n{log}"
    );

    for stream in &mut holders {
        assert!(closed_by_engine(stream), "an idle connection was kept");
    }
    let mut after = connect(&addr, Duration::from_secs(5));
    served(&mut after);
}

/// A frame in progress holds its bytes of `[server] max_inflight_bytes`, the budget the HTTP
/// door's request bodies share: while a client trickles a large frame, an HTTP produce that
/// does not fit waits and gets 503; once the frame stalls and its connection is let go, the
/// same produce is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_in_progress_holds_the_budget_it_shares_with_http() {
    const BUDGET_BYTES: usize = 1 << 20;
    const TIMEOUT_MS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_budget(dir.path(), BUDGET_BYTES, TIMEOUT_MS);
    let addr = server.kafka.clone().unwrap();
    let client = admin(&server);
    create_topic(&client, "t", 1).await;

    // Nine tenths of the budget sent, then a byte at a time, well within the timeout.
    let mut frame = connect(&addr, Duration::from_secs(30));
    frame.write_all(&4_000_000i32.to_be_bytes()).unwrap();
    frame.write_all(&vec![0u8; BUDGET_BYTES * 9 / 10]).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let mut trickle = frame.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        while stopped.recv_timeout(Duration::from_millis(200)).is_err() {
            if trickle.write_all(&[0]).is_err() {
                return;
            }
        }
    });
    // The engine counts the frame's bytes as it reads them; /metrics shows when it holds
    // them all. An HTTP produce of a quarter of the budget then finds no room.
    let value = a_produce_finds_the_budget_held(&server, &client, BUDGET_BYTES).await;

    stop.send(()).unwrap();
    trickler.join().unwrap();
    assert!(closed_by_engine(&mut frame), "the stalled frame was kept");
    client
        .produce("t", Some(0), &[record("k", &value)])
        .await
        .unwrap();
    let log = server.log();
    assert!(log.contains("stopped arriving after"), "{log}");
}
