//! The documentation's tutorials run as written: the code blocks of a section become one
//! bash script, run in an empty directory against a running engine, with the `sluice` under
//! test first on PATH and the engine's address and token in SLUICE_URL and SLUICE_TOKEN.
//!
//! - a ```sh block is appended to the script as it is;
//! - a block whose info string has `file=PATH` (```python file=dedup-python/app.py) is
//!   written to PATH, at that point of the script;
//! - other blocks (output, WIT, fragments) are not run.
//!
//! The script runs with `set -euo pipefail`: any command that fails fails the test, with the
//! script's output.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;

use crate::common::plugins::{admin, read_all, token, wait_for};
use crate::common::{self, Server};

/// The longest a tutorial may take: the first builds install toolchains.
const TUTORIAL_SECONDS_MAX: u64 = 1_800;

/// The section of `markdown` under the level-2 heading starting with `heading`, up to the next
/// heading of level 1 or 2 (headings inside code blocks do not count).
fn section<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = Vec::new();
    let (mut inside, mut fenced) = (false, false);
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && (line.starts_with("# ") || line.starts_with("## ")) {
            inside = line.starts_with(&format!("## {heading}"));
            continue;
        }
        if inside {
            lines.push(line);
        }
    }
    assert!(!lines.is_empty(), "no section `## {heading}`");
    lines
}

/// The bash script the code blocks of `lines` make.
fn script(lines: &[&str]) -> String {
    let mut script = String::from("set -euo pipefail\n");
    let mut block: Option<(String, Vec<&str>)> = None;
    for line in lines {
        match (&mut block, line.strip_prefix("```")) {
            (None, Some(info)) => block = Some((info.to_string(), Vec::new())),
            (Some(_), Some("")) => {
                let (info, body) = block.take().expect("inside a block");
                script.push_str(&run(&info, &body));
            }
            (Some((_, body)), _) => body.push(line),
            (None, None) => {}
        }
    }
    assert!(block.is_none(), "a code block is not closed");
    script
}

/// What one block adds to the script.
fn run(info: &str, body: &[&str]) -> String {
    let text = body.join("\n");
    if info == "sh" {
        return format!("echo '+ [block]' >&2\n{text}\n");
    }
    let Some(path) = info
        .split_whitespace()
        .find_map(|w| w.strip_prefix("file="))
    else {
        return String::new();
    };
    const END: &str = "SLUICE_DOC_BLOCK_END";
    assert!(!text.contains(END), "a block holds {END}");
    format!("mkdir -p \"$(dirname '{path}')\"\ncat > '{path}' <<'{END}'\n{text}\n{END}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_tutorial_runs_as_written() {
    // It builds a consumer in every language: skipped when the examples are limited to some.
    if std::env::var("SLUICE_EXAMPLES").is_ok_and(|only| only.split(',').count() < 5) {
        eprintln!("skipped: SLUICE_EXAMPLES limits the languages");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let markdown = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let script = script(&section(&markdown, "Tutorial"));
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let work = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    // The Rust consumer's dependencies, built once across runs (as the templates' test does).
    let cargo_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-templates");
    let output = Command::new("timeout")
        .arg(TUTORIAL_SECONDS_MAX.to_string())
        .args(["bash", "-c", &script])
        .current_dir(work.path())
        .env("PATH", path)
        .env("SLUICE_URL", &server.url)
        .env("SLUICE_TOKEN", token(&server))
        .env("CARGO_TARGET_DIR", cargo_target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the tutorial failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- script\n{script}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    // What the tutorial says the commands print.
    for expected in [
        "e1\tsignup ada",
        "e3\tlogin ada",
        "event has no id",
        "skipped a duplicate",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // And what every language's group did, not only the one the tutorial shows.
    let client = admin(&server);
    for language in ["python", "js", "go", "c", "rust"] {
        let group = format!("dedup-{language}");
        wait_for(&client, &group, "every event processed", |d| {
            d.total_lag == 0 && d.outbox_pending == 0
        })
        .await;
        let passed: Vec<(Option<Bytes>, Bytes)> = read_all(&client, &format!("unique-{language}"))
            .await
            .into_iter()
            .map(|r| (r.key, r.value.unwrap_or_default()))
            .collect();
        let event =
            |id: &'static str, what: &'static str| (Some(Bytes::from(id)), Bytes::from(what));
        assert_eq!(
            passed,
            [
                event("e1", "signup ada"),
                event("e2", "signup bob"),
                event("e3", "login ada")
            ],
            "{language}"
        );
        let state = client.plugin_state(&group, "", None, 10).await.unwrap();
        let keys: Vec<_> = state
            .entries
            .iter()
            .map(|e| e.key.clone().unwrap_or_default())
            .collect();
        assert_eq!(keys, ["e1", "e2", "e3"], "{language}");
        let described = client.describe_plugin(&group).await.unwrap();
        assert_eq!(described.dead_letters, 1, "{language}");
    }
}

#[test]
fn a_section_makes_a_script_of_its_blocks() {
    let markdown = "# Title\n## Tutorial\ntext\n```sh\necho hi\n```\n```python file=a/b.py\n# not a heading\nx = 1\n```\n```text\nignored\n```\n## Other\n```sh\nno\n```\n";
    let script = script(&section(markdown, "Tutorial"));
    assert!(script.contains("echo hi\n"));
    assert!(script.contains("cat > 'a/b.py' <<'SLUICE_DOC_BLOCK_END'\n# not a heading\nx = 1\n"));
    assert!(!script.contains("ignored"));
    assert!(!script.contains("no\n"));
}

/// Runs `script` with bash in `dir` against `server` (its address and token in SLUICE_URL and
/// SLUICE_TOKEN), with `first_on_path` before the PATH; returns its stdout, or fails the test
/// (named by `what`) with its output if the script failed.
fn run_against(
    what: &str,
    script: &str,
    dir: &Path,
    server: &Server,
    first_on_path: &[&Path],
) -> String {
    let env = [
        ("SLUICE_URL", server.url.clone()),
        ("SLUICE_TOKEN", token(server)),
    ];
    run_script(what, script, dir, &env, first_on_path)
}

/// Runs `script` with bash in `dir`, with `env` and with `first_on_path` before the PATH;
/// returns its stdout, or fails the test (named by `what`) with its output.
fn run_script(
    what: &str,
    script: &str,
    dir: &Path,
    env: &[(&str, String)],
    first_on_path: &[&Path],
) -> String {
    let mut path: Vec<String> = first_on_path
        .iter()
        .map(|dir| dir.display().to_string())
        .collect();
    path.push(std::env::var("PATH").unwrap());
    let output = Command::new("timeout")
        .arg(TUTORIAL_SECONDS_MAX.to_string())
        .args(["bash", "-c", script])
        .current_dir(dir)
        .env("PATH", path.join(":"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- script\n{script}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The example queries of docs/archive-format.md ("Querying the archive"), run as written in
/// an empty directory against a running engine, with the tests' Python (DuckDB, pyiceberg,
/// pandas: ./scripts/test installs them) first on PATH as `python3`. Each output the section's
/// comments show (`# [...]`, `# {...}`) must be printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_queries_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let markdown = std::fs::read_to_string(root.join("docs/archive-format.md")).unwrap();
    let script = script(&section(&markdown, "Querying the archive"));
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let work = tempfile::tempdir().unwrap();
    let python = common::python();
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let first = [bin_dir, python.parent().unwrap()];
    let stdout = run_against("the queries", &script, work.path(), &server, &first);
    let shown: Vec<&str> = script
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| line.starts_with('[') || line.starts_with('{'))
        .collect();
    assert!(shown.len() >= 5, "{shown:?}");
    for expected in shown {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

/// The README's quick start, pasted into a shell at the repository root as it says, against
/// a running engine. Two things differ from a user's shell, both addresses: the engine under
/// test listens on a port of its own (the block's `127.0.0.1:7171` is replaced by it), and
/// the `sluice` under test is first on PATH (the block's `export PATH=...target/release...`
/// is left out, so a stale release build cannot stand in for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_runs_as_written() {
    const PATH_LINE: &str = "export PATH=\"$PWD/target/release:$PATH\"";
    const DEFAULT_URL: &str = "http://127.0.0.1:7171";
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let markdown = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = script(&section(&markdown, "Quick start"));
    assert!(
        script.contains(PATH_LINE),
        "the quick start no longer sets PATH so"
    );
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let script = script
        .replace(PATH_LINE, "")
        .replace(DEFAULT_URL, &server.url);
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let stdout = run_against("the quick start", &script, &root, &server, &[bin_dir]);
    // What its comments say the commands print.
    for expected in ["alice\t", "{\"click\": 1}", "\"item\": \"tea\""] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

/// docs/cluster.md's "Running it", as written from the repository root: a three-node Kafka
/// cluster, two workers, a deploy through one, records in and counts out with Kafka's own
/// console tools, `plugin describe` through the other. The `sluice` under test is first on
/// PATH, and the block's /tmp directories are a fresh temporary directory's.
#[test]
fn the_cluster_guide_runs_as_written() {
    const PATH_LINE: &str = "export PATH=\"$PWD/target/release:$PATH\"";
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let markdown = std::fs::read_to_string(root.join("docs/cluster.md")).unwrap();
    let script = script(&section(&markdown, "Running it"));
    assert!(
        script.contains(PATH_LINE),
        "the guide no longer sets PATH so"
    );
    let scratch = tempfile::tempdir().unwrap();
    let script = script
        .replace(PATH_LINE, "")
        .replace("/tmp/", &format!("{}/", scratch.path().display()));
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let stdout = run_script("the cluster guide", &script, &root, &[], &[bin_dir]);
    for expected in [r#""count":2"#, "alice", "bob", "WORKER", "-730"] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

/// docs/queues.md's "Trying it", as written in an empty directory against a running engine:
/// two competing `consume --share-group` runs, `group describe`, and a fetch and an
/// acknowledgement with curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_guide_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let markdown = std::fs::read_to_string(root.join("docs/queues.md")).unwrap();
    let script = script(&section(&markdown, "Trying it"));
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let work = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let stdout = run_against("the queue guide", &script, work.path(), &server, &[bin_dir]);
    for expected in [
        "share group work",
        "3 records, delivery counts [1]",
        r#"{"refused":[]}"#,
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    let jobs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("job-")).collect();
    assert_eq!(jobs.len(), 6, "each record printed once:\n{stdout}");
}
