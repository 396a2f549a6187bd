//! The control plane around the sandbox while a plugin misbehaves: admin calls on a group
//! whose plugin fails every call take effect within one call deadline (plus a second), other
//! groups' admin calls keep answering at once, an acknowledged undeploy survives a restart,
//! and SIGTERM stops the engine promptly.

use std::time::{Duration, Instant};

use sluice::cli::client::{Client, PluginAction};
use sluice::log::Record;
use sluice::runtime::{LimitOverrides, PluginDescription, StartFrom};
use sluice::server::api::{DeployRequest, RollbackRequest};

use crate::common::Server;
use crate::common::plugins::*;

/// The deadline of one call of the stuck plugin.
const DEADLINE_MS: u64 = 1_000;
/// What the issue allows for a change to take effect: one call deadline plus a second.
const EFFECT_WITHIN: Duration = Duration::from_millis(DEADLINE_MS + 1_000);
/// How fast another group's admin call must answer meanwhile.
const OTHER_GROUP_ANSWER_WITHIN: Duration = Duration::from_millis(100);

/// A deploy of `misbehave` that loops until its deadline on every record: every call fails.
fn stuck_request(extra: &str) -> DeployRequest {
    let mut stuck = request(
        "misbehave",
        "in",
        &["out"],
        &[("mode", "loop"), ("extra", extra)],
    );
    stuck.spec.limits = LimitOverrides {
        deadline_ms: Some(DEADLINE_MS),
        max_attempts: Some(2),
        retry_backoff_ms: Some(50),
        ..Default::default()
    };
    stuck
}

/// Polls `group` until `done` holds; panics if that took longer than `within` from `since`.
async fn effect_within(
    client: &Client,
    group: &str,
    what: &str,
    since: Instant,
    done: impl Fn(&PluginDescription) -> bool,
) {
    wait_for(client, group, what, done).await;
    let took = since.elapsed();
    eprintln!("{group}: {what} after {took:?}");
    assert!(
        took <= EFFECT_WITHIN,
        "{group}: {what} took {took:?}, more than one deadline plus a second"
    );
}

/// Describes `group` `times` times; the median answer time.
async fn median_describe(client: &Client, group: &str, times: usize) -> Duration {
    let mut took = Vec::with_capacity(times);
    for _ in 0..times {
        let start = Instant::now();
        client.describe_plugin(group).await.unwrap();
        took.push(start.elapsed());
    }
    took.sort();
    took[times / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_failing_every_call_does_not_freeze_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    for topic in ["in", "out", "other-in"] {
        create_topic(&client, topic, 1).await;
    }
    let bad: Vec<Record> = (0..1_000)
        .map(|i| record(&format!("k{i}"), "bad"))
        .collect();
    client.produce("in", Some(0), &bad).await.unwrap();
    client.deploy("stuck", &stuck_request("1")).await.unwrap();
    client
        .deploy("other", &request("identity", "other-in", &[], &[]))
        .await
        .unwrap();
    wait_for(&client, "stuck", "calls failing", |d| d.failed_calls >= 3).await;

    let answer = median_describe(&client, "other", 11).await;
    assert!(
        answer < OTHER_GROUP_ANSWER_WITHIN,
        "another group's describe took {answer:?} (median)"
    );

    let since = Instant::now();
    let body = RollbackRequest::default();
    client
        .plugin_action("stuck", PluginAction::Pause, &body)
        .await
        .unwrap();
    effect_within(&client, "stuck", "paused", since, |d| d.status == "paused").await;
    client
        .plugin_action("stuck", PluginAction::Resume, &body)
        .await
        .unwrap();
    wait_for(&client, "stuck", "failing again", |d| {
        d.status.starts_with("retrying")
    })
    .await;

    let since = Instant::now();
    client.deploy("stuck", &stuck_request("2")).await.unwrap();
    effect_within(&client, "stuck", "version 2 running", since, |d| {
        d.running_version == Some(2)
    })
    .await;
    let since = Instant::now();
    client
        .plugin_action("stuck", PluginAction::Rollback, &body)
        .await
        .unwrap();
    effect_within(&client, "stuck", "version 1 running again", since, |d| {
        d.running_version == Some(1)
    })
    .await;

    // Undeploy while the plugin fails, and ask about the other group meanwhile.
    let undeploying = {
        let client = client.clone();
        tokio::spawn(async move {
            let since = Instant::now();
            client.undeploy("stuck", false).await.unwrap();
            since.elapsed()
        })
    };
    let answer = median_describe(&client, "other", 11).await;
    let undeploy_took = undeploying.await.unwrap();
    assert!(
        undeploy_took <= EFFECT_WITHIN,
        "undeploy took {undeploy_took:?}"
    );
    assert!(
        answer < OTHER_GROUP_ANSWER_WITHIN,
        "another group's describe took {answer:?} (median) during the undeploy"
    );

    // A second stuck group for SIGTERM, which must not wait for the poison search.
    client
        .deploy("stuck-again", &stuck_request("1"))
        .await
        .unwrap();
    wait_for(&client, "stuck-again", "calls failing", |d| {
        d.failed_calls >= 1
    })
    .await;
    let since = Instant::now();
    assert!(server.terminate(), "the engine exits cleanly on SIGTERM");
    let exit_took = since.elapsed();
    assert!(exit_took <= EFFECT_WITHIN, "SIGTERM took {exit_took:?}");

    let server = Server::start(dir.path());
    let client = admin(&server);
    let error = client.describe_plugin("stuck").await.unwrap_err();
    assert_eq!(status_of(&error), 404, "the undeploy survived the restart");
    client.describe_plugin("stuck-again").await.unwrap();
    client.describe_plugin("other").await.unwrap();
}

/// Undeploying a group with a large state answers at once: the state is let go of in one small
/// transaction and deleted in the background, in chunks, while other groups go on; a group
/// deployed again under the name starts with no state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undeploying_a_large_state_answers_at_once_and_drops_it_in_the_background() {
    const KEYS: usize = 100_000;
    const PER_REQUEST: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    for topic in ["in", "counts", "other-in"] {
        create_topic(&client, topic, 1).await;
    }
    let counter = || request("counter", "in", &["counts"], &[("output", "counts")]);
    client.deploy("big", &counter()).await.unwrap();
    for start in (0..KEYS).step_by(PER_REQUEST) {
        let records: Vec<Record> = (start..start + PER_REQUEST)
            .map(|i| record(&format!("user-{i}"), "{}"))
            .collect();
        client.produce("in", Some(0), &records).await.unwrap();
    }
    let done = wait_for(&client, "big", "every key counted", |d| {
        d.total_lag == 0 && d.outbox_pending == 0
    })
    .await;
    assert_eq!(
        done.state_entries,
        KEYS as u64 + 1,
        "a count per key and the total"
    );
    client
        .deploy("other", &request("identity", "other-in", &[], &[]))
        .await
        .unwrap();

    let since = Instant::now();
    client.undeploy("big", false).await.unwrap();
    let took = since.elapsed();
    eprintln!("undeploying {KEYS} keys took {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "undeploying {KEYS} state keys took {took:?}"
    );
    let answer = median_describe(&client, "other", 11).await;
    assert!(
        answer < OTHER_GROUP_ANSWER_WITHIN,
        "another group's describe took {answer:?} (median) while the state is dropped"
    );
    let mut from_the_end = counter();
    from_the_end.spec.from = Some(StartFrom::Latest);
    let again = client.deploy("big", &from_the_end).await.unwrap();
    assert_eq!(
        again.state_entries, 0,
        "deployed again, the group starts with no state"
    );
}

/// The hard open-file limit of this process (the engine inherits it), from /proc.
fn hard_open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let hard = line.split_whitespace().nth(4).unwrap();
    hard.parse().unwrap_or(u64::MAX)
}

/// SIGTERM with tens of thousands of partitions (as many as the open-file limit allows, up to
/// 18,000) exits within seconds: closing skips the fsyncs of partitions with nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_many_partitions_exits_within_seconds() {
    const PARTITIONS_WANTED: u64 = 18_000;
    const EXIT_WITHIN: Duration = Duration::from_secs(5);
    let partitions = PARTITIONS_WANTED.min(hard_open_file_limit().saturating_sub(1_000));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    let mut left = partitions;
    for topic in 0.. {
        if left == 0 {
            break;
        }
        let count = left.min(sluice::log::PARTITIONS_PER_TOPIC_MAX as u64);
        create_topic(&client, &format!("t{topic}"), count as u32).await;
        left -= count;
    }
    client
        .produce("t0", Some(7), &[record("k", "v")])
        .await
        .unwrap();
    let since = Instant::now();
    assert!(server.terminate(), "the engine exits cleanly on SIGTERM");
    let took = since.elapsed();
    eprintln!("SIGTERM with {partitions} partitions: exited after {took:?}");
    assert!(
        took < EXIT_WITHIN,
        "SIGTERM with {partitions} partitions took {took:?}"
    );
}

/// Undeploying and deploying the same group at once, again and again: whichever comes last
/// wins, and a group left deployed runs its component (the undeploy never removes the
/// component of a deploy that raced it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undeploy_and_deploy_of_one_group_at_once_leave_a_working_group_or_none() {
    const ROUNDS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    let deploy = || request("identity", "in", &[], &[]);
    client.deploy("g", &deploy()).await.unwrap();
    for round in 0..ROUNDS {
        let undeploying = {
            let client = client.clone();
            tokio::spawn(async move { client.undeploy("g", false).await })
        };
        let deploying = {
            let (client, request) = (client.clone(), deploy());
            tokio::spawn(async move { client.deploy("g", &request).await })
        };
        let (undeployed, deployed) = (undeploying.await.unwrap(), deploying.await.unwrap());
        // Either may find the other's work done (404 for an undeploy that came second to
        // nothing, say), but neither fails otherwise.
        if let Err(error) = &undeployed {
            assert_eq!(status_of(error), 404, "round {round}: {error:#}");
        }
        deployed.unwrap_or_else(|e| panic!("round {round}: deploy failed: {e:#}"));
        match client.describe_plugin("g").await {
            Ok(_) => {
                wait_for(&client, "g", "the deployed version running", |d| {
                    d.running_version == Some(d.active_version)
                })
                .await;
            }
            Err(error) => assert_eq!(status_of(&error), 404, "round {round}"),
        }
        if client.describe_plugin("g").await.is_err() {
            client.deploy("g", &deploy()).await.unwrap();
        }
    }
}
