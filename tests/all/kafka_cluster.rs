//! The Apache Kafka cluster the cluster-mode tests run on (scripts/kafka-cluster: three KRaft
//! nodes on loopback from Maven Central, replication factor 3, `min.insync.replicas=2`): it
//! starts, replicates, commits transactions while a node is killed with kill -9, and the node
//! restarts. Needs Java 17 and Maven (scripts/kafka-broker installs the jars) and
//! confluent-kafka ($SLUICE_PYTHON, else ./.venv).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{python, stdout};

fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-cluster")
}

/// Runs scripts/kafka-cluster with `args`; returns what it printed (trimmed), or fails the
/// test with its output.
fn run(args: &[&str]) -> String {
    let output = Command::new(cluster_script()).args(args).output().unwrap();
    stdout(&output).trim().to_string()
}

/// A running Apache Kafka cluster, stopped when dropped (also when a test fails).
pub struct KafkaCluster {
    pub dir: tempfile::TempDir,
    pub bootstrap: String,
}

impl KafkaCluster {
    /// Starts `nodes` nodes.
    pub fn start(nodes: u32) -> KafkaCluster {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = run(&[
            "start",
            &dir.path().display().to_string(),
            &nodes.to_string(),
        ]);
        KafkaCluster { dir, bootstrap }
    }

    /// Starts `nodes` nodes that also serve SASL_SSL (`KAFKA_CLUSTER_SECURE=1`): their
    /// bootstrap list is [`KafkaCluster::secure_bootstrap`], the certificate to trust
    /// [`KafkaCluster::ca`], the user `sluice` with password `sluice-secret`.
    pub fn start_secure(nodes: u32) -> KafkaCluster {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(cluster_script())
            .args([
                "start",
                &dir.path().display().to_string(),
                &nodes.to_string(),
            ])
            .env("KAFKA_CLUSTER_SECURE", "1")
            .output()
            .unwrap();
        let bootstrap = stdout(&output).trim().to_string();
        KafkaCluster { dir, bootstrap }
    }

    pub fn secure_bootstrap(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("secure-bootstrap"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// The command that runs `action` (kill, restart) on node `id`.
    pub fn command(&self, action: &str, id: u32) -> String {
        format!(
            "{} {action} {} {id}",
            cluster_script().display(),
            self.dir.path().display()
        )
    }

    /// Runs `action` (kill, restart) on node `id`.
    pub fn node(&self, action: &str, id: u32) {
        run(&[
            action,
            &self.dir.path().display().to_string(),
            &id.to_string(),
        ]);
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let _ = Command::new(cluster_script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

#[test]
fn the_cluster_commits_transactions_while_a_node_is_killed_and_the_node_comes_back() {
    let cluster = KafkaCluster::start(3);
    assert_eq!(
        cluster.bootstrap.split(',').count(),
        3,
        "{}",
        cluster.bootstrap
    );
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/cluster_transactions.py");
    let output = Command::new(python())
        .arg(script)
        .arg(&cluster.bootstrap)
        .arg(cluster.command("kill", 2))
        .output()
        .unwrap();
    let read: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        read["replicas"],
        serde_json::json!([3, 3, 3, 3, 3, 3]),
        "{read}"
    );
    assert_eq!(read["isr"], serde_json::json!([3, 3, 3, 3, 3, 3]), "{read}");
    assert_eq!(
        (read["read"].as_u64(), read["distinct"].as_u64()),
        (Some(2000), Some(2000))
    );
    cluster.node("restart", 2);
    let status = Command::new(cluster_script())
        .arg("status")
        .arg(cluster.dir.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "not every node runs after the restart"
    );
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        cluster.bootstrap
    );
}
