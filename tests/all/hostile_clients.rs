//! Hostile clients: unauthenticated uploads are refused from their headers and never kept in
//! memory, announced lengths past the limit are refused before the body is read, and bodies
//! that stall neither hold the in-flight budget nor live forever.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::plugins::*;
use crate::common::{Server, a_produce_finds_the_budget_held, server_with_budget};

/// Kibibytes of a process's memory from /proc: `field` is VmRSS (now) or VmHWM (peak).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The `host:port` of a server URL like `http://127.0.0.1:1234`.
fn address(server: &Server) -> String {
    server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Sends a request head (and `body_start`) on a new connection, and leaves it open.
async fn send_head(server: &Server, head: &str, body_start: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address(server)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_start).await.unwrap();
    stream
}

/// The status line of the answer on `stream`, waiting at most `within`.
async fn status_line(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the connection closed without an answer");
            answer.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"));
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_uploads_are_refused_from_the_headers_and_never_kept() {
    const UPLOADS: usize = 8;
    const UPLOAD_BYTES: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let pid = server.child.id();
    let before_kib = memory_kib(pid, "VmRSS");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/plugins/intruder", server.url);
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        let (http, url) = (http.clone(), url.clone());
        uploads.push(tokio::spawn(async move {
            let response = http
                .post(&url)
                .header("content-type", "application/json")
                .body(vec![b'x'; UPLOAD_BYTES])
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }));
    }
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), 401);
    }
    let peak_kib = memory_kib(pid, "VmHWM");
    let grew_mib = peak_kib.saturating_sub(before_kib) >> 10;
    eprintln!("{UPLOADS} refused uploads of {UPLOAD_BYTES} bytes: peak memory grew {grew_mib} MiB");
    assert!(
        grew_mib < (UPLOAD_BYTES >> 20) as u64,
        "the engine's peak memory grew {grew_mib} MiB: refused uploads were kept"
    );

    // With the token, an announced length past the limit is refused before the body.
    let head = format!(
        "POST /v1/plugins/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n",
        token(&server)
    );
    let mut stream = send_head(&server, &head, b"{").await;
    let status = status_line(&mut stream, Duration::from_secs(5)).await;
    assert!(status.contains("413"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_bodies_neither_starve_producers_nor_live_forever() {
    const STALLED: usize = 20;
    const PRODUCES: usize = 100;
    const BODY_TIMEOUT_MS: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let timeout = BODY_TIMEOUT_MS.to_string();
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_SERVER__REQUEST_BODY_TIMEOUT_MS", &timeout)],
    );
    let client = admin(&server);
    create_topic(&client, "t", 1).await;
    let head = "POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000000\r\n\r\n";
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(send_head(&server, head, b"{\"records\": [").await);
    }
    let since = Instant::now();

    let mut took = Vec::new();
    for i in 0..PRODUCES {
        let start = Instant::now();
        let records = [record(&format!("k{i}"), "v")];
        let produce = client.produce("t", Some(0), &records);
        tokio::time::timeout(Duration::from_secs(5), produce)
            .await
            .expect("a produce waited 5 s behind stalled bodies")
            .unwrap();
        took.push(start.elapsed());
    }
    took.sort();
    let p99 = took[PRODUCES * 99 / 100 - 1];
    eprintln!("produce p99 {p99:?} beside {STALLED} stalled bodies");
    assert!(p99 < Duration::from_secs(1), "produce p99 {p99:?}");

    let within = Duration::from_millis(BODY_TIMEOUT_MS) + Duration::from_secs(5);
    for stream in &mut stalled {
        let status = status_line(stream, within.saturating_sub(since.elapsed())).await;
        assert!(status.contains("408"), "a stalled body got {status}");
    }
}

/// JSON bodies are read as produce batches are. Announced past `max_request_bytes`, every JSON
/// call is refused from its headers. While one (a share-group acknowledgement) trickles in, it
/// holds its bytes of `max_inflight_bytes`: a produce that does not fit waits and gets 503.
/// Once it stalls it gets 408, and the same produce is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_are_read_within_the_limit_and_the_budget() {
    const BUDGET_BYTES: usize = 1 << 20;
    const TIMEOUT_MS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_budget(dir.path(), BUDGET_BYTES, TIMEOUT_MS);
    let client = admin(&server);
    create_topic(&client, "t", 1).await;

    for path in [
        "share-groups/g/ack",
        "share-groups/g/fetch",
        "groups/g/join",
        "groups/g/offsets",
        "topics",
    ] {
        let head = format!(
            "POST /v1/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        );
        let mut stream = send_head(&server, &head, b"{").await;
        // 413, not the 408 the body timeout would give.
        let status = status_line(&mut stream, Duration::from_secs(10)).await;
        assert!(status.contains("413"), "{path}: {status}");
    }

    // Nine tenths of the budget (JSON whitespace), then a byte at a time within the timeout.
    let head = format!(
        "POST /v1/share-groups/g/ack HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {BUDGET_BYTES}\r\n\r\n"
    );
    let mut body = br#"{"member_id": "m", "acks": ["#.to_vec();
    body.resize(BUDGET_BYTES * 9 / 10, b' ');
    let (mut reader, mut writer) = send_head(&server, &head, &body).await.into_split();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let trickler = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return writer,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    writer.write_all(b" ").await.unwrap();
                }
            }
        }
    });
    let value = a_produce_finds_the_budget_held(&server, &client, BUDGET_BYTES).await;

    stop.send(()).unwrap();
    let _writer = trickler.await.unwrap();
    let within = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(10);
    let status = status_line(&mut reader, within).await;
    assert!(status.contains("408"), "a stalled JSON body got {status}");
    client
        .produce("t", Some(0), &[record("k", &value)])
        .await
        .unwrap();
}

/// Who needs the admin token: changing or deleting a topic, running the archive and setting a
/// group's offsets from outside it, by default; produce, fetch and consumer groups stay open on
/// loopback. With `require_token_for_all` everything but the health check needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_calls_need_the_token_and_everything_can() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let with_token = admin(&server);
    create_topic(&with_token, "t", 1).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}/v1/{path}", server.url);
    let refused = [
        http.delete(url("topics/t")),
        http.patch(url("topics/t"))
            .json(&serde_json::json!({"partitions": 2})),
        http.post(url("topics/t/archive"))
            .json(&serde_json::json!({})),
        http.post(url("groups/g/offsets"))
            .json(&serde_json::json!({"offsets": [{"topic": "t", "partition": 0, "offset": 0}]})),
    ];
    for request in refused {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("admin token"), "{body}");
    }
    let anonymous = sluice::cli::client::Client::new(&server.url);
    anonymous
        .produce("t", Some(0), &[record("k", "v")])
        .await
        .unwrap();
    let fetched = anonymous
        .fetch("t", 0, sluice::cli::client::Position::Offset(0), 1 << 20, 0)
        .await
        .unwrap();
    assert_eq!(fetched.records.len(), 1);
    with_token.delete_topic("t").await.unwrap();
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_SERVER__REQUIRE_TOKEN_FOR_ALL", "true")],
    );
    let with_token = admin(&server);
    create_topic(&with_token, "t", 1).await;
    let anonymous = sluice::cli::client::Client::new(&server.url);
    let error = anonymous
        .produce("t", Some(0), &[record("k", "v")])
        .await
        .unwrap_err();
    assert_eq!(status_of(&error), 401);
    with_token
        .produce("t", Some(0), &[record("k", "v")])
        .await
        .unwrap();
    let health = http
        .get(format!("{}/v1/health", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "the health check stays open");
}

/// Listening beyond loopback with produce and fetch open, the engine says so loudly at start.
#[test]
fn listening_beyond_loopback_without_a_token_for_data_warns_at_start() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::common::BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("SLUICE_STORAGE__MIN_FREE_BYTES", "0")
        .env("SLUICE_KAFKA__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut logged = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        logged.push_str(&line);
        logged.push('\n');
        if line.contains("serving ") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        logged.contains("LISTENING BEYOND LOOPBACK") && logged.contains("require_token_for_all"),
        "{logged}"
    );
}
