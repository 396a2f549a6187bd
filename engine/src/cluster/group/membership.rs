//! Whether this worker is still a member of its consumer group, as the group's coordinator
//! sees it.
//!
//! Why it is asked: after the coordinator moved (its broker killed), a worker's librdkafka
//! consumer was seen to keep its assignment, polling, while the coordinator had removed it
//! from the group (it did not rejoin the rebalance other workers started, and was dropped at
//! the rebalance timeout). Busy, such a worker finds out: its transactions' offsets are
//! refused, and six aborts in a row end its session. Idle, it never did: it went on
//! reporting partitions that now belonged to another worker. So an idle session holding
//! partitions asks the coordinator now and then (DescribeGroups); missing from a stable
//! group twice in a row, the session ends, and the next one joins again.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

use crate::cluster::ClusterError;

/// How long the coordinator has to answer whether this worker is a member.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers in a row that must miss this worker before its session ends: a single one may
/// come from between a rebalance's end and the member's first heartbeat.
const MISSES_TO_REJOIN: u32 = 2;

pub(super) struct Membership {
    /// The consumer group, `sluice.<group>`.
    group: String,
    /// The consumer's `client.id`, by which the coordinator's member list names it.
    client_id: String,
    interval: Duration,
    checked: Instant,
    misses: u32,
}

impl Membership {
    /// Asks at most once every `interval`.
    pub(super) fn new(group: String, client_id: String, interval: Duration) -> Membership {
        Membership {
            group,
            client_id,
            interval,
            checked: Instant::now(),
            misses: 0,
        }
    }

    /// Asks the coordinator if it is time to; an error when this worker has been missing
    /// from the stable group [`MISSES_TO_REJOIN`] times in a row. An unanswered question
    /// counts for nothing.
    pub(super) fn check<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), ClusterError> {
        if self.checked.elapsed() < self.interval {
            return Ok(());
        }
        self.checked = Instant::now();
        let list = match consumer.fetch_group_list(Some(&self.group), DESCRIBE_TIMEOUT) {
            Ok(list) => list,
            Err(error) => {
                tracing::debug!(%error, "the group's coordinator did not say who its members are");
                return Ok(());
            }
        };
        let Some(described) = list.groups().iter().find(|g| g.name() == self.group) else {
            tracing::debug!("the group's coordinator did not describe it");
            return Ok(());
        };
        let members: Vec<&str> = described.members().iter().map(|m| m.client_id()).collect();
        tracing::debug!(state = described.state(), ?members, "the group's members");
        if !missing(described.state(), &members, &self.client_id) {
            self.misses = 0;
            return Ok(());
        }
        self.misses += 1;
        tracing::warn!(
            group = %self.group,
            client_id = %self.client_id,
            misses = self.misses,
            ?members,
            "the group's coordinator does not list this worker as a member"
        );
        if self.misses < MISSES_TO_REJOIN {
            return Ok(());
        }
        Err(ClusterError::NotAMember {
            group: self.group.clone(),
            client_id: self.client_id.clone(),
        })
    }
}

/// Whether a group in `state` with members of these client ids lacks `me`. Only a stable
/// (or empty) group says so: while it rebalances, its member list is being made.
fn missing(state: &str, members: &[&str], me: &str) -> bool {
    matches!(state, "Stable" | "Empty") && !members.contains(&me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stable_group_without_this_client_says_it_is_missing() {
        let me = "sluice.counts.w1";
        assert!(missing(
            "Stable",
            &["sluice.counts.w0", "sluice.counts.w2"],
            me
        ));
        assert!(missing("Stable", &[], me));
        assert!(missing("Empty", &[], me));
        assert!(!missing("Stable", &["sluice.counts.w0", me], me));
        for rebalancing in ["PreparingRebalance", "CompletingRebalance", "Dead", ""] {
            assert!(
                !missing(rebalancing, &["sluice.counts.w0"], me),
                "{rebalancing}"
            );
        }
    }
}
