//! The command line end to end against a running server: topics, produce with keys, consume
//! by position and in a group, graceful shutdown, restart, and fencing.

use crate::common::{BIN, Server, cli, stdout};

#[test]
fn produce_consume_and_groups_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    stdout(&cli(
        &url,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "compression=zstd",
        ],
        "",
    ));
    let listed = stdout(&cli(&url, &["topic", "list"], ""));
    assert!(listed.contains("orders"), "{listed}");
    let input: String = (0..30)
        .map(|i| format!("customer-{}:order-{i}\n", i % 5))
        .collect();
    let produced = cli(&url, &["produce", "orders", "--key-separator", ":"], &input);
    assert!(String::from_utf8_lossy(&produced.stderr).contains("produced 30 records"));

    let all = stdout(&cli(&url, &["consume", "orders", "--print-key"], ""));
    let mut lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 30);
    lines.sort();
    for i in 0..30 {
        assert!(lines.contains(&format!("customer-{}\torder-{i}", i % 5).as_str()));
    }
    // Keyed records land where Kafka's partitioner puts them, in order per partition.
    for partition in 0..3u32 {
        let text = stdout(&cli(
            &url,
            &[
                "consume",
                "orders",
                "--partition",
                &partition.to_string(),
                "--format",
                "json",
            ],
            "",
        ));
        let mut last = None;
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = record["key"].as_str().unwrap();
            assert_eq!(
                sluice::log::partitioner::partition_for_key(key.as_bytes(), 3),
                partition
            );
            let n: u32 = record["value"]
                .as_str()
                .unwrap()
                .strip_prefix("order-")
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                last.is_none_or(|l| l < n),
                "order kept within partition {partition}"
            );
            last = Some(n);
        }
    }

    // Lines from a file; settings changed on a live topic.
    let file = dir.path().join("more.txt");
    std::fs::write(&file, "late-1\nlate-2\n").unwrap();
    stdout(&cli(
        &url,
        &[
            "produce",
            "orders",
            "--file",
            file.to_str().unwrap(),
            "--partition",
            "1",
        ],
        "",
    ));
    let altered = stdout(&cli(
        &url,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "retention_ms=none",
            "--partitions",
            "4",
        ],
        "",
    ));
    assert!(altered.contains("retention_ms = null"), "{altered}");
    assert_eq!(
        altered
            .lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        4,
        "{altered}"
    );
    let refused = cli(&url, &["topic", "alter", "orders", "--partitions", "2"], "");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("can grow but not shrink"));
    let tail = stdout(&cli(
        &url,
        &["consume", "orders", "--partition", "1", "--offset", "0"],
        "",
    ));
    assert!(tail.ends_with("late-1\nlate-2\n"), "{tail}");

    // A group resumes where it stopped.
    let first = stdout(&cli(
        &url,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--max-records",
            "12",
        ],
        "",
    ));
    let rest = stdout(&cli(&url, &["consume", "orders", "--group", "billing"], ""));
    assert_eq!(first.lines().count(), 12);
    let mut both: Vec<&str> = first.lines().chain(rest.lines()).collect();
    both.sort();
    both.dedup();
    assert_eq!(
        both.len(),
        32,
        "the second run continues after the first: {rest}"
    );
    let described = stdout(&cli(&url, &["group", "describe", "billing"], ""));
    assert!(described.contains("total lag 0"), "{described}");
    assert!(stdout(&cli(&url, &["group", "list"], "")).contains("billing"));

    // Start by timestamp: everything is newer than the epoch, nothing is from the far future.
    assert_eq!(
        stdout(&cli(
            &url,
            &["consume", "orders", "--timestamp", "1970-01-02T00:00:00Z"],
            ""
        ))
        .lines()
        .count(),
        32
    );
    assert_eq!(
        stdout(&cli(
            &url,
            &["consume", "orders", "--timestamp", "4102444800000"],
            ""
        ))
        .lines()
        .count(),
        0
    );

    // Errors say what to do.
    let missing = cli(&url, &["consume", "nope"], "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("sluice topic create nope"));
    let unreachable = cli("http://127.0.0.1:1", &["topic", "list"], "");
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("is `sluice serve` running"));

    // A second engine on the same directory is refused; SIGTERM stops cleanly; data survives.
    let second = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another sluice process"));
    assert!(server.terminate(), "clean exit on SIGTERM");
    let server = Server::start(dir.path());
    assert_eq!(
        stdout(&cli(&server.url, &["consume", "orders"], ""))
            .lines()
            .count(),
        32
    );
    assert!(
        !server.log().contains("truncating"),
        "a clean shutdown leaves nothing to repair"
    );
    stdout(&cli(&server.url, &["topic", "delete", "orders"], ""));
    assert!(!stdout(&cli(&server.url, &["topic", "list"], "")).contains("orders"));
}

/// `sluice consume t | head -1`: the reader closes the pipe after a line, and the command
/// ends quietly (killed by SIGPIPE, as other tools are), without a panic on stderr.
#[test]
fn output_to_a_pipe_closed_early_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    stdout(&cli(&server.url, &["topic", "create", "many"], ""));
    let input: String = (0..20_000).map(|i| format!("record-{i}\n")).collect();
    stdout(&cli(&server.url, &["produce", "many"], &input));
    let output = std::process::Command::new("bash")
        .args([
            "-c",
            &format!("set -o pipefail; '{BIN}' consume many | head -1"),
        ])
        .env("SLUICE_URL", &server.url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "record-0\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // 141: 128 + SIGPIPE, the status pipefail reports for the consumer.
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}

#[test]
fn follow_prints_records_produced_after_it_started() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    stdout(&cli(&server.url, &["topic", "create", "live"], ""));
    let mut follower = std::process::Command::new(BIN)
        .args(["consume", "live", "--from-end", "--follow"])
        .env("SLUICE_URL", &server.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    // Produce until the follower, which may start after the first produce, prints a line.
    let producer_url = server.url.clone();
    let producer = std::thread::spawn(move || {
        for i in 0..200 {
            let out = cli(&producer_url, &["produce", "live"], &format!("event-{i}\n"));
            if !out.status.success() {
                return;
            }
        }
    });
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("event-"), "{first}");
    let second = lines.next().unwrap().unwrap();
    let n = |line: &str| line.trim_start_matches("event-").parse::<u32>().unwrap();
    assert_eq!(n(&second), n(&first) + 1, "records arrive in order");
    follower.kill().unwrap();
    follower.wait().unwrap();
    producer.join().unwrap();
}

#[test]
fn help_reads_like_a_manual() {
    let help = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    for word in [
        "sluice serve",
        "topic create",
        "consume",
        "group describe",
        "SLUICE_URL",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

/// Every command line quoted in backticks in a `--help` text parses: a help that points to a
/// flag the binary does not have (as `dlq replay --help` once did) fails here. Each is run
/// against an address where nothing listens, so it gets as far as connecting and no further;
/// what must not happen is clap refusing a flag, subcommand or value it does not know.
#[test]
fn command_lines_quoted_in_help_texts_are_accepted_by_the_binary() {
    let helps: &[&[&str]] = &[
        &[],
        &["topic"],
        &["consume"],
        &["group"],
        &["plugin"],
        &["plugin", "deploy"],
        &["plugin", "rollback"],
        &["dlq"],
        &["dlq", "replay"],
        &["state"],
        &["archive"],
        &["archive", "run"],
    ];
    let mut checked = 0;
    for path in helps {
        let output = std::process::Command::new(BIN)
            .args(*path)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        for quoted in text.split('`').skip(1).step_by(2) {
            let Some(rest) = quoted.strip_prefix("sluice ") else {
                continue;
            };
            // Commands that do not talk to an engine (and would start or build things).
            if ["serve", "plugin build", "plugin new", "plugin test"]
                .iter()
                .any(|local| rest.starts_with(local))
            {
                continue;
            }
            let args: Vec<String> = rest
                .split_whitespace()
                .map(|word| word.replace(['<', '>'], ""))
                .collect();
            let run = parse_only(&args);
            let stderr = String::from_utf8_lossy(&run.stderr);
            // A quoted command may name a command without its arguments (`sluice plugin
            // rollback`); what it may not do is use a flag, subcommand or value that the
            // binary does not have.
            let refused = [
                "unexpected argument",
                "unrecognized subcommand",
                "invalid value",
            ]
            .iter()
            .any(|usage| stderr.contains(usage));
            assert!(
                !refused,
                "`sluice {rest}` (quoted in `sluice {} --help`) is not accepted: {stderr}",
                path.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no command line was quoted in the help texts");
}

/// `sluice produce` to a topic or partition that does not exist fails, even when the input is
/// empty (it used to send nothing and exit 0).
#[test]
fn produce_to_a_missing_topic_fails_even_with_no_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let missing = cli(&server.url, &["produce", "nosuch"], "");
    assert!(!missing.status.success());
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(error.contains("topic `nosuch` does not exist"), "{error}");
    stdout(&cli(&server.url, &["topic", "create", "one"], ""));
    let partition = cli(&server.url, &["produce", "one", "--partition", "3"], "");
    assert!(!partition.status.success());
    let error = String::from_utf8_lossy(&partition.stderr);
    assert!(error.contains("partition 3 does not exist"), "{error}");
    let empty = cli(&server.url, &["produce", "one"], "");
    assert!(
        empty.status.success(),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
}

/// Everything the engine writes in its data directory is its user's alone: files 0600 and
/// directories 0700 (they used to be 0644 and 0755), whatever umask it was started with.
#[test]
fn the_data_directory_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    stdout(&cli(
        &server.url,
        &[
            "topic",
            "create",
            "clicks",
            "-c",
            "segment_bytes=4096",
            "-c",
            "archive=true",
        ],
        "",
    ));
    // Separate requests, so that segments roll (a batch is never split across segments) and
    // sealed segments (with their index files) are archived.
    for request in 0..20 {
        let lines: String = (0..50)
            .map(|i| format!("{{\"click\": {}}}\n", request * 50 + i))
            .collect();
        stdout(&cli(&server.url, &["produce", "clicks"], &lines));
    }
    stdout(&cli(
        &server.url,
        &["archive", "run", "--topic", "clicks", "--everything"],
        "",
    ));
    stdout(&cli(
        &server.url,
        &["consume", "clicks", "--group", "g", "-n", "3"],
        "",
    ));
    drop(server);
    let mut seen = Vec::new();
    let mut pending = vec![data.clone()];
    while let Some(path) = pending.pop() {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        if metadata.is_dir() {
            if path != data {
                assert_eq!(mode, 0o700, "{} is {mode:o}", path.display());
            }
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            seen.push(path.display().to_string());
        }
    }
    // Each kind of file the engine writes was among those checked.
    for kind in [
        "admin.token",
        "groups.redb",
        "topic.json",
        ".log",
        ".index",
        ".parquet",
    ] {
        assert!(
            seen.iter().any(|file| file.ends_with(kind)),
            "no {kind} file among {seen:#?}"
        );
    }
}

/// A configuration that would refuse every request or every deploy is refused at start,
/// naming the setting (such an engine used to start and then answer every request with an
/// error).
#[test]
fn a_configuration_that_cannot_work_is_refused_at_start() {
    let cases = [
        ("SLUICE_SERVER__MAX_REQUEST_BYTES", "0", "max_request_bytes"),
        (
            "SLUICE_SERVER__MAX_INFLIGHT_BYTES",
            "1000",
            "max_inflight_bytes",
        ),
        (
            "SLUICE_PLUGINS__DEFAULTS__BATCH_RECORDS",
            "0",
            "batch_records",
        ),
        (
            "SLUICE_TOPIC_DEFAULTS__SEGMENT_BYTES",
            "10",
            "segment_bytes",
        ),
    ];
    for (variable, value, mention) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut serve = std::process::Command::new(BIN);
        serve
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env(variable, value);
        let run = at_most_ten_seconds(serve);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success(),
            "{variable}={value} started: {stderr}"
        );
        assert!(
            stderr.contains(mention) && !stderr.contains("serving"),
            "{variable}={value}: {stderr}"
        );
    }
}

/// A malformed engine address is named as such before any request (it used to be reported
/// as "builder error").
#[test]
fn a_malformed_url_is_named() {
    for url in ["ht!tp://:::", "localhost:7171", "ftp://127.0.0.1"] {
        let run = std::process::Command::new(BIN)
            .args(["topic", "list", "--url", url])
            .output()
            .unwrap();
        assert!(!run.status.success());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains(&format!("invalid --url `{url}`")),
            "{stderr}"
        );
    }
}

/// Runs `sluice args` against an address where nothing listens. Clap refuses bad arguments at
/// once; a command that was accepted and keeps retrying (`--follow`) is stopped after a while.
fn parse_only(args: &[String]) -> std::process::Output {
    let mut command = std::process::Command::new(BIN);
    command
        .args(args)
        .env("SLUICE_URL", "http://127.0.0.1:9")
        .env("SLUICE_TOKEN", "unused");
    at_most_ten_seconds(command)
}

/// Runs `command` with no input, stopping it after ten seconds if it has not ended.
fn at_most_ten_seconds(mut command: std::process::Command) -> std::process::Output {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn plugin_new_and_build_refuse_what_they_cannot_do_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let stderr = |output: &std::process::Output| {
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let bad_name = stderr(&run(&["plugin", "new", "--lang", "c", "My Counter"]));
    assert!(
        bad_name.contains("lowercase letters, digits and dashes"),
        "{bad_name}"
    );

    let created = run(&["plugin", "new", "--lang", "python", "visits"]);
    assert!(created.status.success());
    for file in [
        "app.py",
        "wit/plugin.wit",
        "test/input.jsonl",
        "test/expected.jsonl",
    ] {
        assert!(dir.path().join("visits").join(file).is_file(), "{file}");
    }
    let again = stderr(&run(&["plugin", "new", "--lang", "js", "visits"]));
    assert!(again.contains("exists already"), "{again}");
    // Nothing of the refused JavaScript template was written over the Python one.
    assert!(!dir.path().join("visits/app.js").exists());

    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let unknown = stderr(&run(&["plugin", "build", "empty"]));
    for marker in [
        "Cargo.toml (Rust)",
        "app.py (Python)",
        "package.json (JavaScript)",
        "app.c (C)",
    ] {
        assert!(unknown.contains(marker), "{unknown}");
    }
    assert!(unknown.contains("sluice plugin new"), "{unknown}");
}

/// The client finds the admin token in the engine's data directory from anywhere with
/// `--data-dir`, and a 401 names where it looked.
#[test]
fn the_client_finds_the_token_by_data_dir_and_a_401_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("SLUICE_URL", &server.url)
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_DATA_DIR")
            .current_dir(elsewhere.path())
            .output()
            .unwrap()
    };
    let created = run(&["topic", "create", "t"]);
    assert!(created.status.success(), "{created:?}");
    let refused = run(&["topic", "delete", "t"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("admin token")
            && message.contains("looked in")
            && message.contains("sluice-data/admin.token")
            && message.contains("--data-dir"),
        "{message}"
    );
    let data_dir = dir.path().to_str().unwrap();
    let deleted = run(&["topic", "delete", "t", "--data-dir", data_dir]);
    assert!(deleted.status.success(), "{deleted:?}");
}

/// `--log-format json`: every line the engine writes to stderr is one JSON object, and a
/// plugin's own log line carries its group and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_json_carry_the_group_and_version_of_a_plugins_lines() {
    use crate::common::plugins::{admin, create_topic, record, request, wait_for};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--log-format", "json"]);
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    create_topic(&client, "out", 1).await;
    let deploy = request("misbehave", "in", &["out"], &[("mode", "trap")]);
    client.deploy("g", &deploy).await.unwrap();
    client
        .produce("in", Some(0), &[record("k", "bad")])
        .await
        .unwrap();
    wait_for(&client, "g", "the bad record dead-lettered", |d| {
        d.dead_letters == 1
    })
    .await;
    let log = server.log();
    assert!(server.terminate());
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"]["message"].is_string())
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .unwrap()
            .contains(" serving http://")),
        "{log}"
    );
    let plugin_line = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap()
                .starts_with("panicked at")
        })
        .unwrap_or_else(|| panic!("no line of the plugin's own in:\n{log}"));
    assert_eq!(plugin_line["level"], "ERROR");
    assert_eq!(plugin_line["fields"]["group"], "g");
    assert_eq!(plugin_line["fields"]["version"], "1");
    // The engine's lines about the group are in its span.
    assert!(
        lines.iter().any(|l| l["span"]["group"] == "g"
            && l["fields"]["message"].as_str().unwrap().contains("failed")),
        "{log}"
    );
}
