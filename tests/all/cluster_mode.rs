//! Cluster mode against a real three-node Apache Kafka cluster (scripts/kafka-cluster): real
//! `sluice worker` processes share a plugin group through Kafka's consumer group protocol and
//! commit each batch in a Kafka transaction. Checked from outside by a read_committed reader
//! (tests/support/cluster_mode.py): one output per input, each key's counts 1..n once, and the
//! changelog's state equal to the inputs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{Server, cli, python, seed, stdout};
use crate::kafka_cluster::KafkaCluster;

/// Worker settings for quick failover: a dead worker's partitions move after 6 s (the
/// brokers' smallest session timeout), its open transaction is aborted after 10 s.
const WORKER_ENV: [(&str, &str); 3] = [
    ("SLUICE_CLUSTER__SESSION_TIMEOUT_MS", "6000"),
    ("SLUICE_CLUSTER__TRANSACTION_TIMEOUT_MS", "10000"),
    ("SLUICE_PLUGINS__DEFAULTS__COMMIT_INTERVAL_MS", "100"),
];
/// Keys of the input records: the counter keeps a count per key.
const KEYS: u32 = 97;

fn support_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/cluster_mode.py")
}

fn kafka_side(args: &[&str]) -> serde_json::Value {
    let output = Command::new(python())
        .arg(support_script())
        .args(args)
        .output()
        .unwrap();
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// Produces in the background.
fn start_producer(bootstrap: &str, records: u64, seconds: u64) -> Child {
    Command::new(python())
        .arg(support_script())
        .args(["produce", bootstrap, "in"])
        .args([records.to_string(), KEYS.to_string(), seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn counter_wasm() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/counter.wasm")
        .display()
        .to_string()
}

/// `sluice plugin deploy` of the counter through a worker's admin API.
fn deploy_counter(worker: &Server) -> String {
    let wasm = counter_wasm();
    stdout(&cli(
        &worker.url,
        &[
            "plugin",
            "deploy",
            "--group",
            "counts",
            "--topic",
            "in",
            "--output-topic",
            "out",
            "--wasm",
            &wasm,
            "--config",
            "output=out",
            "--config",
            "carry=id",
        ],
        "",
    ))
}

/// The workers of a test, by slot: each restarts with its name and data directory.
struct Workers {
    bootstrap: String,
    root: tempfile::TempDir,
    running: Vec<Option<Server>>,
}

impl Workers {
    fn start(bootstrap: &str, count: usize) -> Workers {
        let mut workers = Workers {
            bootstrap: bootstrap.to_string(),
            root: tempfile::tempdir().unwrap(),
            running: (0..count).map(|_| None).collect(),
        };
        for slot in 0..count {
            workers.restart(slot);
        }
        workers
    }

    fn restart(&mut self, slot: usize) {
        let dir = self.root.path().join(format!("w{slot}"));
        let name = format!("w{slot}");
        self.running[slot] = Some(Server::worker(&dir, &self.bootstrap, &name, &WORKER_ENV));
    }

    fn kill(&mut self, slot: usize) {
        if let Some(worker) = self.running[slot].take() {
            worker.kill();
        }
    }

    fn any(&self) -> &Server {
        self.running.iter().flatten().next().expect("a worker runs")
    }

    /// Whether each worker still runs, and the last lines it logged: what a failed check
    /// prints, so that a worker that stopped reporting can be told from one that exited.
    fn last_words(&mut self) -> String {
        let mut text = String::new();
        for (slot, worker) in self.running.iter_mut().enumerate() {
            let Some(worker) = worker else { continue };
            let state = match worker.child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                _ => "running".to_string(),
            };
            let log = worker.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            text.push_str(&format!(
                "\n--- worker w{slot}: {state}; its last lines:\n{tail}\n"
            ));
        }
        text
    }
}

/// What the reader found; fails the test with all of it unless every check holds.
fn assert_exactly_once(bootstrap: &str, records: u64, versions: &[&str]) -> serde_json::Value {
    let found = kafka_side(&[
        "check",
        bootstrap,
        "in",
        "out",
        "counts",
        &records.to_string(),
        "300",
    ]);
    eprintln!("read back: {found}");
    let none = serde_json::json!([]);
    assert_eq!(found["inputs"], records, "{found}");
    assert_eq!(found["distinct"], records, "an output is missing: {found}");
    assert_eq!(
        found["outputs"], records,
        "an input has two outputs: {found}"
    );
    for list in [
        "duplicates",
        "missing",
        "unexpected",
        "count_errors",
        "state_errors",
    ] {
        assert_eq!(found[list], none, "{list}: {found}");
    }
    let produced_by: Vec<&str> = found["versions"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(produced_by, versions, "{found}");
    found
}

#[test]
fn three_workers_count_exactly_once_through_worker_kills_broker_kills_and_an_upgrade() {
    let seed = seed("SLUICE_CLUSTER_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let records: u64 = std::env::var("SLUICE_CLUSTER_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let cluster = KafkaCluster::start(3);
    kafka_side(&["create", &cluster.bootstrap, "in:6", "out:6"]);
    let mut workers = Workers::start(&cluster.bootstrap, 3);
    let deployed = deploy_counter(workers.any());
    assert!(deployed.contains("deployed version 1"), "{deployed}");

    // About 90 s of input; the faults happen meanwhile, at random moments.
    let seconds = 90;
    let mut producer = start_producer(&cluster.bootstrap, records, seconds);
    let started = Instant::now();
    let mut faults: Vec<(u64, &str)> = (0..10)
        .map(|_| (rng.random_range(2..seconds), "worker"))
        .collect();
    faults.push((rng.random_range(10..30), "broker"));
    faults.push((rng.random_range(50..70), "broker"));
    faults.push((rng.random_range(30..50), "upgrade"));
    faults.sort();
    let mut broker = 0;
    for (at, fault) in faults {
        let due = Duration::from_secs(at);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        match fault {
            "worker" => {
                let slot = rng.random_range(0..3);
                eprintln!("{:?}: kill -9 of worker {slot}", started.elapsed());
                workers.kill(slot);
                std::thread::sleep(Duration::from_millis(rng.random_range(0..3000)));
                workers.restart(slot);
            }
            "broker" => {
                broker += 1;
                eprintln!("{:?}: kill -9 of broker {broker}", started.elapsed());
                cluster.node("kill", broker);
                std::thread::sleep(Duration::from_secs(5));
                cluster.node("restart", broker);
            }
            _ => {
                eprintln!("{:?}: upgrade", started.elapsed());
                let upgraded = deploy_counter(workers.any());
                assert!(upgraded.contains("deployed version 2"), "{upgraded}");
            }
        }
    }
    let produced = producer.wait().unwrap();
    assert!(produced.success(), "the producer failed");
    assert_exactly_once(&cluster.bootstrap, records, &["counts/1", "counts/2"]);
    // `plugin describe` through any worker shows every worker's partitions, none lagging.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let described = get_json(workers.any(), "/v1/plugins/counts").unwrap_or_default();
        let reports = described["workers"].as_array().cloned().unwrap_or_default();
        let mut owned: Vec<u64> = reports
            .iter()
            .flat_map(|w| w["partitions"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["partition"].as_u64())
            .collect();
        owned.sort();
        if reports.len() == 3 && owned == [0, 1, 2, 3, 4, 5] && described["total_lag"] == 0 {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "every worker reports, without lag: not within 120 s; the last description: {described}{}",
                workers.last_words()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let table = stdout(&cli(
        &workers.any().url,
        &["plugin", "describe", "counts"],
        "",
    ));
    for worker in ["w0", "w1", "w2"] {
        assert!(table.contains(&format!("\n  {worker} ")), "{table}");
    }
}

/// What a worker says of itself at `/v1/worker` (its groups' partitions and counters), or
/// `None` while it does not answer.
fn worker_status(worker: &Server) -> Option<serde_json::Value> {
    get_json(worker, "/v1/worker")
}

/// A worker's answer to `GET path` with its admin token, or `None` while it does not answer.
fn get_json(worker: &Server, path: &str) -> Option<serde_json::Value> {
    let token = std::fs::read_to_string(worker.dir.join("admin.token")).ok()?;
    let url = format!("{}{path}", worker.url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token.trim())
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    })
}

/// Polls `condition` every 200 ms for up to `limit`; fails the test with `what` after that.
fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether process `pid` is stopped (state `T` in /proc/<pid>/stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

#[test]
fn a_worker_stalled_past_its_session_commits_nothing_when_it_wakes_up() {
    let records = 3_000;
    let cluster = KafkaCluster::start(3);
    kafka_side(&["create", &cluster.bootstrap, "in:6", "out:6"]);
    let root = tempfile::tempdir().unwrap();
    // The zombie stops itself in its third transaction, with the batch's records produced
    // and its offsets not yet sent: a worker stalled (a long GC pause, a frozen VM) at the
    // worst moment.
    let mut env = WORKER_ENV.to_vec();
    env.push(("SLUICE_STOP_AT", "cluster-records-sent:3"));
    let zombie = Server::worker(
        &root.path().join("zombie"),
        &cluster.bootstrap,
        "zombie",
        &env,
    );
    deploy_counter(&zombie);
    let mut producer = start_producer(&cluster.bootstrap, records, 10);
    wait_until(
        "the zombie stops at its third transaction",
        Duration::from_secs(120),
        || is_stopped(zombie.pid()),
    );
    // Its partitions move to a healthy worker once its session times out; that worker
    // processes everything, the zombie's batch included.
    let healthy = Server::worker(
        &root.path().join("healthy"),
        &cluster.bootstrap,
        "healthy",
        &WORKER_ENV,
    );
    assert!(producer.wait().unwrap().success(), "the producer failed");
    assert_exactly_once(&cluster.bootstrap, records, &["counts/1"]);
    let owned = worker_status(&healthy).unwrap();
    assert_eq!(
        owned["groups"]["counts"]["partitions"]
            .as_array()
            .map(Vec::len),
        Some(6),
        "{owned}"
    );
    // The zombie wakes up and tries to finish its transaction: it is fenced and aborts.
    Command::new("kill")
        .args(["-CONT", &zombie.pid().to_string()])
        .status()
        .unwrap();
    let mut status = serde_json::Value::Null;
    wait_until(
        "the zombie aborts its transaction",
        Duration::from_secs(60),
        || {
            status = worker_status(&zombie).unwrap_or_default();
            // Aborted, and said why.
            let group = &status["groups"]["counts"];
            group["aborted_transactions"].as_u64() >= Some(1) && group["last_error"].is_string()
        },
    );
    eprintln!("the zombie after it woke up: {status}");
    let last_error = status["groups"]["counts"]["last_error"].to_string();
    assert!(
        last_error.contains("transaction"),
        "the zombie's transaction failed for another reason: {status}"
    );
    assert_exactly_once(&cluster.bootstrap, records, &["counts/1"]);
}

/// The counter's outputs as sorted JSON text, to compare.
fn sorted(values: impl IntoIterator<Item = serde_json::Value>) -> Vec<String> {
    let mut values: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    values.sort();
    values
}

#[test]
fn the_same_component_and_commands_give_the_same_outputs_on_the_engine_and_on_a_cluster() {
    let records: u64 = 2_000;
    // The single engine: topics and records through the CLI.
    let engine_dir = tempfile::tempdir().unwrap();
    let engine = Server::start(engine_dir.path());
    for topic in ["in", "out"] {
        stdout(&cli(
            &engine.url,
            &["topic", "create", topic, "--partitions", "6"],
            "",
        ));
    }
    let lines: String = (0..records)
        .map(|i| format!("k{}:{{\"id\": {i}}}\n", i % u64::from(KEYS)))
        .collect();
    stdout(&cli(
        &engine.url,
        &["produce", "in", "--key-separator", ":"],
        &lines,
    ));
    // The cluster: the same records from a Kafka producer.
    let cluster = KafkaCluster::start(3);
    kafka_side(&["create", &cluster.bootstrap, "in:6", "out:6"]);
    let root = tempfile::tempdir().unwrap();
    let worker = Server::worker(&root.path().join("w"), &cluster.bootstrap, "w", &WORKER_ENV);
    assert!(
        start_producer(&cluster.bootstrap, records, 1)
            .wait()
            .unwrap()
            .success()
    );

    // The same commands, the same answers.
    let deployed = [deploy_counter(&engine), deploy_counter(&worker)];
    assert_eq!(deployed[0], deployed[1]);
    assert!(
        deployed[0].contains("deployed version 1"),
        "{}",
        deployed[0]
    );
    let from_engine = stdout(&cli(
        &engine.url,
        &[
            "consume",
            "out",
            "--follow",
            "--max-records",
            &records.to_string(),
        ],
        "",
    ));
    let from_engine = from_engine
        .lines()
        .map(|line| serde_json::from_str(line).unwrap());
    let from_cluster = kafka_side(&["dump", &cluster.bootstrap, "out", &records.to_string()]);
    let from_cluster = from_cluster.as_array().unwrap().iter().cloned();
    assert_eq!(sorted(from_engine), sorted(from_cluster));

    let upgraded = [deploy_counter(&engine), deploy_counter(&worker)];
    assert_eq!(upgraded[0], upgraded[1]);
    assert!(
        upgraded[0].contains("deployed version 2"),
        "{}",
        upgraded[0]
    );
    for command in [
        &["plugin", "rollback", "counts"][..],
        &["plugin", "pause", "counts"],
        &["plugin", "resume", "counts"],
    ] {
        let answers = [&engine, &worker].map(|server| stdout(&cli(&server.url, command, "")));
        assert_eq!(answers[0], answers[1], "{command:?}");
    }
    let described = [&engine, &worker]
        .map(|server| stdout(&cli(&server.url, &["plugin", "describe", "counts"], "")));
    for described in &described {
        assert!(described.contains("active version 1"), "{described}");
    }
}

/// A worker's configuration file for the secure listener: SASL/PLAIN over TLS, trusting the
/// cluster's certificate.
fn secure_config(cluster: &KafkaCluster, dir: &Path, password: &str) -> PathBuf {
    let path = dir.join("secure.toml");
    let config = format!(
        "[cluster]\nbootstrap_servers = \"{}\"\n\n[cluster.client]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"sluice\"\n\"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n",
        cluster.secure_bootstrap(),
        cluster.ca().display()
    );
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn a_worker_runs_over_tls_with_sasl_and_a_wrong_password_is_refused_by_name() {
    let records = 500;
    let cluster = KafkaCluster::start_secure(1);
    kafka_side(&["create", &cluster.bootstrap, "in:2", "out:2"]);
    let root = tempfile::tempdir().unwrap();
    // Only the secure listener is named: the worker's clients all speak SASL_SSL.
    let config = secure_config(&cluster, root.path(), "sluice-secret");
    let config_arg = config.display().to_string();
    let mut env = WORKER_ENV.to_vec();
    env.push(("SLUICE_PLUGINS__MAX_UPLOAD_BYTES", "400000"));
    let worker = Server::worker_with(&root.path().join("w"), &["--config", &config_arg], &env);
    assert_hostile_deploys_are_refused(&worker);
    deploy_counter(&worker);
    assert!(
        start_producer(&cluster.bootstrap, records, 1)
            .wait()
            .unwrap()
            .success()
    );
    let found = kafka_side(&[
        "check",
        &cluster.bootstrap,
        "in",
        "out",
        "counts",
        &records.to_string(),
        "120",
    ]);
    assert_eq!(found["distinct"], records, "{found}");
    assert_eq!(found["outputs"], records, "{found}");

    // A wrong password: the worker does not start, and says why.
    let wrong = root.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    let config = secure_config(&cluster, &wrong, "not-the-password");
    let output = Command::new(crate::common::BIN)
        .args(["worker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(wrong.join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("Authentication failed"), "{stderr}");
}

/// A worker's admin API refuses a deploy without the token (before reading its body) and one
/// larger than its limit (without buffering it whole), and deploys nothing either way.
fn assert_hostile_deploys_are_refused(worker: &Server) {
    let token = std::fs::read_to_string(worker.dir.join("admin.token")).unwrap();
    let url = format!("{}/v1/plugins/hostile", worker.url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = runtime.block_on(async {
        let client = reqwest::Client::new();
        let huge = vec![b'x'; 8 << 20];
        let without_token = client.post(&url).body(huge.clone()).send().await;
        let too_large = client
            .post(&url)
            .bearer_auth(token.trim())
            .body(huge)
            .send()
            .await;
        // A server that answers before reading the whole body may close the connection while
        // the client still sends: then the client sees the error, not the status.
        [without_token, too_large].map(|r| r.map(|r| r.status().as_u16()).ok())
    });
    eprintln!("hostile deploys answered: {statuses:?}");
    assert!(matches!(statuses[0], Some(401) | None), "{statuses:?}");
    assert!(matches!(statuses[1], Some(413) | None), "{statuses:?}");
    let listed = get_json(worker, "/v1/plugins").unwrap();
    assert_eq!(listed["plugins"], serde_json::json!([]), "{listed}");
}
