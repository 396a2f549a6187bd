//! Starts the real `sluice` binary on a free port of 127.0.0.1 and stops or kills it; runs its
//! client commands; picks (and prints) the seeds of randomised tests.

pub mod kafka;
pub mod plugins;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

pub struct Server {
    pub child: Child,
    pub url: String,
    /// The Kafka protocol listener's address (`host:port`), when it listens.
    pub kafka: Option<String>,
    pub dir: PathBuf,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `sluice serve` on `dir` and waits until it listens.
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        Server::launch(dir, extra, &[])
    }

    /// Starts `sluice serve` with extra environment variables (configuration).
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Server {
        Server::launch(dir, &[], env)
    }

    /// Starts `sluice serve` under an open-file limit (soft and hard) of `limit`, with
    /// util-linux's `prlimit`.
    pub fn start_with_open_file_limit(dir: &Path, limit: u64) -> Server {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={limit}:{limit}"))
            .arg("--")
            .arg(BIN)
            .arg("serve");
        Server::launch_command(command, dir, &[], &[])
    }

    /// Starts `sluice worker` (cluster mode) on the Kafka cluster at `bootstrap`, named
    /// `worker_id`, with its data in `dir`, and waits until its admin API listens.
    pub fn worker(dir: &Path, bootstrap: &str, worker_id: &str, env: &[(&str, &str)]) -> Server {
        let extra = ["--bootstrap-servers", bootstrap, "--worker-id", worker_id];
        Server::worker_with(dir, &extra, env)
    }

    /// Starts `sluice worker` with `extra` arguments (`--config`, ...).
    pub fn worker_with(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command.arg("worker");
        Server::launch_command(command, dir, extra, env)
    }

    fn launch(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command.arg("serve");
        Server::launch_command(command, dir, extra, env)
    }

    fn launch_command(
        mut command: Command,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("SLUICE_LOG", "info")
            .env("SLUICE_STORAGE__MIN_FREE_BYTES", "0")
            // Many engines run at once: each Kafka listener on a port of its own.
            .env("SLUICE_KAFKA__LISTEN", "127.0.0.1:0")
            // After the defaults, so that a test can set them.
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (url, kafka) = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("sluice exited before listening:\n{}", log.lock().unwrap()),
            };
            log.lock().unwrap().push_str(&line);
            log.lock().unwrap().push('\n');
            if let Some(rest) = line.split("serving ").nth(1) {
                let url = rest.split_whitespace().next().expect("address").to_string();
                let kafka = rest
                    .split("Kafka clients on ")
                    .nth(1)
                    .and_then(|k| k.split_whitespace().next())
                    .map(str::to_string);
                break (url, kafka);
            }
        };
        remember_token(&url, dir);
        let sink = log.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Server {
            child,
            url,
            kafka,
            dir: dir.to_path_buf(),
            stderr: log,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits until the engine exits by itself; returns its status and everything it logged.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("reap");
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().expect("stderr reader");
        }
        (status, self.log())
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        unsafe_kill(self.child.id(), "TERM");
        self.child.wait().expect("reap").success()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill command");
}

/// The seed of a randomised test's choices: the number in the environment variable `var`
/// when it is set (to replay a failed run's choices), otherwise a new one. Printed either way,
/// to stderr: `--nocapture` shows it, and libtest shows it with the output of a failed test.
/// `var` must be among the engine's `OTHER_VARIABLES` (engine/src/config.rs), as every
/// `SLUICE_*` variable of the tests: the servers they start inherit the environment and refuse
/// `SLUICE_*` variables that are not configuration.
/// The Python with the test suite's modules (pyarrow, DuckDB, moto, kafka-python):
/// $SLUICE_PYTHON, else the repository's .venv that ./scripts/test creates.
pub fn python() -> PathBuf {
    if let Ok(path) = std::env::var("SLUICE_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run ./scripts/test (it installs the modules there) or set SLUICE_PYTHON",
        venv.display()
    );
    venv
}

pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={value}: not a seed (a number, 0 to 2^64-1)")),
        Err(_) => rand::random(),
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    eprintln!("{test}: seed {seed}; {var}={seed} replays its random choices");
    seed
}

/// The admin token of each server started, by URL (every server has its own port), for
/// [`cli`]: the client commands that change topics need it.
static TOKENS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn remember_token(url: &str, dir: &Path) {
    if let Ok(token) = std::fs::read_to_string(dir.join("admin.token")) {
        let mut tokens = TOKENS.lock().unwrap();
        tokens.insert(url.to_string(), token.trim().to_string());
    }
}

/// Runs a `sluice` client command against `url` (with its server's admin token), with `stdin`
/// as input.
pub fn cli(url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let token = TOKENS.lock().unwrap().get(url).cloned();
    let mut command = Command::new(BIN);
    if let Some(token) = token {
        command.env("SLUICE_TOKEN", token);
    }
    let mut child = command
        .args(args)
        .env("SLUICE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// `sluice_inflight_request_bytes` from /metrics.
pub async fn inflight_bytes(server: &Server) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("sluice_inflight_request_bytes "))
        .map(|value| value.parse().unwrap())
        .unwrap_or_else(|| panic!("no sluice_inflight_request_bytes in:\n{text}"))
}

/// Waits until the engine holds nine tenths of `budget_bytes` of request bytes (what a client
/// in the middle of a body or frame sent), then checks that a produce of a quarter of it finds
/// no room: 503 naming `max_inflight_bytes`. Returns that produce's value, to send again once
/// the budget is free.
pub async fn a_produce_finds_the_budget_held(
    server: &Server,
    client: &sluice::cli::client::Client,
    budget_bytes: usize,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while inflight_bytes(server).await < (budget_bytes * 9 / 10) as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the bytes sent were never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let value = "v".repeat(budget_bytes / 4);
    let refused = client
        .produce("t", Some(0), &[plugins::record("k", &value)])
        .await
        .unwrap_err();
    assert_eq!(plugins::status_of(&refused), 503, "{refused}");
    assert!(
        refused.to_string().contains("max_inflight_bytes"),
        "{refused}"
    );
    value
}

/// An engine whose request bodies are at most `budget_bytes` each and all together, and may
/// pause for at most `body_timeout_ms`.
pub fn server_with_budget(dir: &Path, budget_bytes: usize, body_timeout_ms: u64) -> Server {
    let (budget, timeout) = (budget_bytes.to_string(), body_timeout_ms.to_string());
    Server::start_with_env(
        dir,
        &[
            ("SLUICE_SERVER__MAX_REQUEST_BYTES", &budget),
            ("SLUICE_SERVER__MAX_INFLIGHT_BYTES", &budget),
            ("SLUICE_SERVER__REQUEST_BODY_TIMEOUT_MS", &timeout),
        ],
    )
}
