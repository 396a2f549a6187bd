//! Bad requests get a clear error with the right status code, and the server keeps serving.

mod common;

use common::Server;
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

#[tokio::test]
async fn each_bad_request_gets_its_status_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = reqwest::Client::new();
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

    expect(
        http.post(url("topics/nope/records"))
            .json(&json!({"records": [{"value": "a"}]}))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_topic",
        "nope",
    )
    .await;
    expect(
        http.get(url("topics/nope/partitions/0/records"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_topic",
        "sluice topic create",
    )
    .await;
    expect(
        http.get(url("topics/t/partitions/7/records"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_partition",
        "0 to 1",
    )
    .await;
    expect(
        http.post(url("topics/t/records?partition=2"))
            .json(&json!({"records": [{"value": "a"}]}))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_partition",
        "partition 2",
    )
    .await;
    let big = "x".repeat(1001);
    expect(
        http.post(url("topics/t/records"))
            .json(&json!({"records": [{"value": big}]}))
            .send()
            .await
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "record_too_large",
        "max_record_bytes",
    )
    .await;
    expect(
        http.post(url("topics/t/records"))
            .body("{not json")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_body",
        "produce request",
    )
    .await;
    expect(
        http.post(url("topics/t/records"))
            .body(vec![0xffu8; 7])
            .header("content-type", "application/vnd.sluice.records")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_body",
        "records frame",
    )
    .await;
    expect(
        http.post(url("topics/t/records"))
            .json(&json!({"records": []}))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "empty_batch",
        "no records",
    )
    .await;
    expect(
        http.post(url("topics/t/records"))
            .json(&json!({"records": [{"key": "k"}]}))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_body",
        "value",
    )
    .await;
    expect(
        http.get(url("topics/t/partitions/0/records?offset=-1"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_offset",
        "negative",
    )
    .await;
    expect(
        http.get(url("topics/t/partitions/0/records?offset=abc"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_query",
        "offset",
    )
    .await;
    expect(
        http.get(url("topics/t/partitions/0/records?offset=999"))
            .send()
            .await
            .unwrap(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "offset_out_of_range",
        "999",
    )
    .await;
    expect(
        http.post(url("topics"))
            .json(&json!({"name": "bad/name"}))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_topic_name",
        "bad/name",
    )
    .await;
    expect(
        http.post(url("topics"))
            .json(&json!({"name": "t"}))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "topic_exists",
        "t",
    )
    .await;
    expect(
        http.post(url("topics"))
            .json(&json!({"name": "u", "config": {"retention_msec": 5}}))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_config",
        "retention_msec",
    )
    .await;
    expect(
        http.get(url("nothing/here")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
        "docs",
    )
    .await;
    expect(
        http.post(url("groups/g/heartbeat"))
            .json(&json!({"member_id": "ghost"}))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "unknown_member",
        "join again",
    )
    .await;

    // Still serving, and nothing acknowledged was lost.
    let fetched: Value = http
        .get(url("topics/t/partitions/0/records?offset=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fetched1: Value = http
        .get(url("topics/t/partitions/1/records?offset=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = fetched["records"].as_array().unwrap().len()
        + fetched1["records"].as_array().unwrap().len();
    assert_eq!(total, 2);
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
    let http = reqwest::Client::new();
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
