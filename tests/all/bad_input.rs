//! Bad requests get a clear error with the right status code, and the server keeps serving.

use crate::common::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn expect(response: reqwest::Response, status: StatusCode, code: &str, mention: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(mention),
        "`{message}` should mention `{mention}`"
    );
}

/// A client that sends the server's admin token with every request, as an operator's does:
/// these tests are about bad requests, not about who may make them.
fn with_token(server: &Server) -> reqwest::Client {
    let token = crate::common::plugins::token(server);
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {}", token.trim());
    headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The JSON answer of a GET.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// A request that must fail: method, path, JSON body, raw body with its content type.
struct Bad {
    method: reqwest::Method,
    path: &'static str,
    json: Option<Value>,
    raw: Option<(&'static str, Vec<u8>)>,
    status: StatusCode,
    code: &'static str,
    mention: &'static str,
}

fn bad(
    method: reqwest::Method,
    path: &'static str,
    json: Option<Value>,
    status: StatusCode,
    code: &'static str,
    mention: &'static str,
) -> Bad {
    Bad {
        method,
        path,
        json,
        raw: None,
        status,
        code,
        mention,
    }
}

#[tokio::test]
async fn each_bad_request_gets_its_status_and_the_server_keeps_serving() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = with_token(&server);
    let url = |path: &str| format!("{}/v1/{path}", server.url);
    let created = http
        .post(url("topics"))
        .json(&json!({"name": "t", "partitions": 2, "config": {"max_record_bytes": 1000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let produced = http
        .post(url("topics/t/records"))
        .json(&json!({"records": [{"value": "a"}, {"value": "b"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(produced.status(), StatusCode::OK);

    let one = json!({"records": [{"value": "a"}]});
    let cases = [
        bad(
            Method::POST,
            "topics/nope/records",
            Some(one.clone()),
            StatusCode::NOT_FOUND,
            "unknown_topic",
            "nope",
        ),
        bad(
            Method::GET,
            "topics/nope/partitions/0/records",
            None,
            StatusCode::NOT_FOUND,
            "unknown_topic",
            "sluice topic create",
        ),
        bad(
            Method::GET,
            "topics/t/partitions/7/records",
            None,
            StatusCode::NOT_FOUND,
            "unknown_partition",
            "0 to 1",
        ),
        bad(
            Method::POST,
            "topics/t/records?partition=2",
            Some(one.clone()),
            StatusCode::NOT_FOUND,
            "unknown_partition",
            "partition 2",
        ),
        bad(
            Method::POST,
            "topics/t/records",
            Some(json!({"records": [{"value": "x".repeat(1001)}]})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
            "max_record_bytes",
        ),
        Bad {
            raw: Some(("application/json", b"{not json".to_vec())),
            ..bad(
                Method::POST,
                "topics/t/records",
                None,
                StatusCode::BAD_REQUEST,
                "malformed_body",
                "produce request",
            )
        },
        Bad {
            raw: Some(("application/vnd.sluice.records", vec![0xff; 7])),
            ..bad(
                Method::POST,
                "topics/t/records",
                None,
                StatusCode::BAD_REQUEST,
                "malformed_body",
                "records frame",
            )
        },
        // A negative timestamp is refused (it used to become "now" without a word).
        bad(
            Method::POST,
            "topics/t/records",
            Some(json!({"records": [{"value": "v"}, {"value": "w", "timestamp": -5}]})),
            StatusCode::BAD_REQUEST,
            "bad_timestamp",
            "record 1 has timestamp -5",
        ),
        // A body of the wrong types: 400 naming the field (not the framework's 422).
        bad(
            Method::POST,
            "topics",
            Some(json!({"name": "typed", "partitions": "three"})),
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "partitions",
        ),
        bad(
            Method::POST,
            "groups/g/offsets",
            Some(json!({"offsets": [{"topic": "t", "partition": -1, "offset": 0}]})),
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "partition",
        ),
        bad(
            Method::POST,
            "topics/t/records",
            Some(json!({"records": []})),
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "no records",
        ),
        bad(
            Method::POST,
            "topics/t/records",
            Some(json!({"records": [{"key": "k", "value": "v", "value_base64": "dg=="}]})),
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "not both",
        ),
        bad(
            Method::GET,
            "topics/t/partitions/0/records?offset=-1",
            None,
            StatusCode::BAD_REQUEST,
            "bad_offset",
            "negative",
        ),
        bad(
            Method::GET,
            "topics/t/partitions/0/records?offset=abc",
            None,
            StatusCode::BAD_REQUEST,
            "bad_query",
            "offset",
        ),
        bad(
            Method::GET,
            "topics/t/partitions/0/records?offset=999",
            None,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "offset_out_of_range",
            "999",
        ),
        bad(
            Method::POST,
            "topics",
            Some(json!({"name": "bad/name"})),
            StatusCode::BAD_REQUEST,
            "invalid_topic_name",
            "bad/name",
        ),
        bad(
            Method::POST,
            "topics",
            Some(json!({"name": "t"})),
            StatusCode::CONFLICT,
            "topic_exists",
            "t",
        ),
        bad(
            Method::POST,
            "topics",
            Some(json!({"name": "u", "config": {"retention_msec": 5}})),
            StatusCode::BAD_REQUEST,
            "invalid_config",
            "retention_msec",
        ),
        // Growing a topic has the same cap as creating one, checked before any file is made.
        bad(
            Method::PATCH,
            "topics/t",
            Some(json!({"partitions": 1_000_000})),
            StatusCode::BAD_REQUEST,
            "invalid_config",
            "between 1 and 10000",
        ),
        bad(
            Method::GET,
            "nothing/here",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
            "docs",
        ),
        bad(
            Method::POST,
            "groups/g/heartbeat",
            Some(json!({"member_id": "ghost"})),
            StatusCode::NOT_FOUND,
            "unknown_member",
            "join again",
        ),
    ];
    for case in cases {
        let mut request = http.request(case.method, url(case.path));
        if let Some(body) = &case.json {
            request = request.json(body);
        }
        if let Some((content_type, body)) = case.raw {
            request = request.header("content-type", content_type).body(body);
        }
        expect(
            request.send().await.unwrap(),
            case.status,
            case.code,
            case.mention,
        )
        .await;
    }

    let described: Value = get_json(&http, &url("topics/t")).await;
    assert_eq!(
        described["partitions"].as_array().unwrap().len(),
        2,
        "{described}"
    );

    // Still serving, and nothing acknowledged was lost.
    let mut total = 0;
    for partition in 0..2 {
        let fetched: Value = http
            .get(url(&format!(
                "topics/t/partitions/{partition}/records?offset=0"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        total += fetched["records"].as_array().unwrap().len();
    }
    assert_eq!(total, 2);
}

/// Free bytes of the file system holding `dir`, as `df` reports them.
fn free_bytes(dir: &std::path::Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// `min_free_bytes` holds at every append, not only at the periodic measure: with the periodic
/// measure an hour away, produce is refused (507) once the disk's free space nears the limit.
#[tokio::test]
async fn min_free_bytes_is_checked_at_every_append() {
    const HEADROOM_BYTES: u64 = 96 << 20;
    const REQUEST_BYTES: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let min_free = free_bytes(dir.path())
        .saturating_sub(HEADROOM_BYTES)
        .to_string();
    let server = Server::start_with_env(
        dir.path(),
        &[
            ("SLUICE_STORAGE__MIN_FREE_BYTES", &min_free),
            ("SLUICE_STORAGE__RETENTION_CHECK_INTERVAL_MS", "3600000"),
        ],
    );
    let http = with_token(&server);
    let url = |path: &str| format!("{}/v1/{path}", server.url);
    http.post(url("topics"))
        .json(&json!({"name": "t"}))
        .send()
        .await
        .unwrap();
    let value = "v".repeat(REQUEST_BYTES / 2);
    let body = json!({"records": [{"value": value}, {"value": value}]});
    let mut acknowledged = 0u64;
    let refused = loop {
        let response = http
            .post(url("topics/t/records"))
            .json(&body)
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            break response;
        }
        acknowledged += 1;
        // Other tests write to the same disk, and free space too: allow for it, within bounds.
        assert!(
            acknowledged < 1_000,
            "{acknowledged} MiB written past a limit {HEADROOM_BYTES} bytes away"
        );
    };
    expect(
        refused,
        StatusCode::INSUFFICIENT_STORAGE,
        "disk_full",
        "min_free_bytes",
    )
    .await;
    eprintln!("refused after {acknowledged} requests of {REQUEST_BYTES} bytes");
}

#[tokio::test]
async fn past_the_disk_limit_produce_gets_507_and_acknowledged_data_stays() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[]);
    drop(server);
    std::fs::write(
        dir.path().join("limits.toml"),
        "[storage]\nmax_disk_bytes = 20000\nmin_free_bytes = 0\n",
    )
    .unwrap();
    let config = dir.path().join("limits.toml");
    let server = Server::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let http = with_token(&server);
    let url = |path: &str| format!("{}/v1/{path}", server.url);
    http.post(url("topics"))
        .json(&json!({"name": "t"}))
        .send()
        .await
        .unwrap();
    let value = "v".repeat(1000);
    let mut acknowledged = 0;
    let refused = loop {
        let response = http
            .post(url("topics/t/records"))
            .json(&json!({"records": [{"value": value}]}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            acknowledged += 1;
            assert!(acknowledged < 100, "the disk limit never applied");
            continue;
        }
        break response;
    };
    expect(
        refused,
        StatusCode::INSUFFICIENT_STORAGE,
        "disk_full",
        "max_disk_bytes",
    )
    .await;
    let fetched: Value = http
        .get(url(
            "topics/t/partitions/0/records?offset=0&max_bytes=10000000",
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["records"].as_array().unwrap().len(), acknowledged);
    assert_eq!(
        http.get(url("health")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// Partitions are bounded by the open-file limit (each keeps its segment file open): past the
/// engine's budget, creating or growing a topic is refused before any file is opened, and the
/// engine keeps serving (it used to run out of file descriptors and stop answering).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_past_the_open_file_limit_are_refused_before_any_file_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of 512 - 256 reserved = 256 segment files.
    let server = Server::start_with_open_file_limit(dir.path(), 512);
    let http = with_token(&server);
    let url = |path: &str| format!("{}/v1/{path}", server.url);
    let create = |name: &str, partitions: u32| {
        http.post(url("topics"))
            .json(&json!({"name": name, "partitions": partitions}))
            .send()
    };
    expect(
        create("huge", 300).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "too_many_partitions",
        "ulimit -n",
    )
    .await;
    assert_eq!(
        create("big", 200).await.unwrap().status(),
        StatusCode::CREATED
    );
    let grow = http
        .patch(url("topics/big"))
        .json(&json!({"partitions": 300}))
        .send()
        .await
        .unwrap();
    expect(
        grow,
        StatusCode::BAD_REQUEST,
        "too_many_partitions",
        "budget of 256",
    )
    .await;
    assert_eq!(
        create("small", 50).await.unwrap().status(),
        StatusCode::CREATED
    );
    expect(
        create("one-more", 10).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "too_many_partitions",
        "budget",
    )
    .await;
    // Nothing half-made: the refused topics do not exist, the others are whole.
    let listed: Value = get_json(&http, &url("topics")).await;
    let names: Vec<&str> = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big", "small"], "{listed}");
    assert!(!dir.path().join("topics/huge").exists());
    let big: Value = get_json(&http, &url("topics/big")).await;
    assert_eq!(big["partitions"].as_array().unwrap().len(), 200);
    let health = http.get(url("health")).send().await.unwrap();
    assert!(health.status().is_success());
}

/// Segment rolls count against the open-file budget too: a partition that would open one
/// segment file past it is refused with 507 `open_file_limit` before the file is opened, the
/// engine keeps serving, and every acknowledged record stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_rolls_past_the_open_file_budget_are_refused_before_emfile() {
    const REQUESTS_MAX: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    // A budget of 512 - 256 reserved = 256 segment files.
    let server = Server::start_with_open_file_limit(dir.path(), 512);
    let http = with_token(&server);
    let url = |path: &str| format!("{}/v1/{path}", server.url);
    let created = http
        .post(url("topics"))
        .json(&json!({"name": "rolling", "partitions": 2, "config": {"segment_bytes": 4096}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let value = "v".repeat(3_000);
    let mut acknowledged = 0u64;
    let refused = loop {
        let response = http
            .post(url("topics/rolling/records?partition=0"))
            .json(&json!({"records": [{"value": value}]}))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            break response;
        }
        acknowledged += 1;
        assert!(
            (acknowledged as usize) < REQUESTS_MAX,
            "{acknowledged} segments and still rolling: the budget never applied"
        );
    };
    expect(
        refused,
        StatusCode::INSUFFICIENT_STORAGE,
        "open_file_limit",
        "ulimit -n",
    )
    .await;
    let health = http.get(url("health")).send().await.unwrap();
    assert!(health.status().is_success());
    // The other partition still takes records into its active segment.
    let other = http
        .post(url("topics/rolling/records?partition=1"))
        .json(&json!({"records": [{"value": "small"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    let mut read = 0u64;
    let mut offset = 0u64;
    while read < acknowledged {
        let fetched: Value = get_json(
            &http,
            &url(&format!(
                "topics/rolling/partitions/0/records?offset={offset}&max_bytes=1000000"
            )),
        )
        .await;
        let records = fetched["records"].as_array().unwrap();
        assert!(
            !records.is_empty(),
            "acknowledged records past {offset} are gone"
        );
        read += records.len() as u64;
        offset = fetched["next_offset"].as_u64().unwrap();
    }
    assert_eq!(read, acknowledged);
}
