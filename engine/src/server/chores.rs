//! The engine's background chores, each a task that ends at shutdown: retention and archival
//! with the free-space check, and the expiry of consumer-group members.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::log::now_ms;

/// Retention runs at most this often, whatever the configuration says.
const RETENTION_PERIOD_MIN_MS: u64 = 100;
/// How often expired group members are removed.
const SESSION_CHECK_PERIOD: Duration = Duration::from_millis(250);
/// Assignments are refreshed (for partitions added since) every this many session checks.
const ASSIGNMENT_REFRESH_CHECKS: u64 = 20;

/// Starts the engine's background chores: retention (which archives first, at low priority)
/// with the free-space check, and group session expiry with assignment refresh.
pub(super) fn spawn(state: Arc<AppState>) {
    let retention = state.clone();
    tokio::spawn(async move {
        let period = Duration::from_millis(
            retention
                .config
                .storage
                .retention_check_interval_ms
                .max(RETENTION_PERIOD_MIN_MS),
        );
        let mut ticks = tokio::time::interval(period);
        let mut shutdown = retention.shutdown.clone();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Retention archives first what its topic archives: that runs at low priority.
            let log = retention.log.clone();
            let (done, finished) = tokio::sync::oneshot::channel();
            crate::archive::spawn_low_priority("sluice-retention", move || {
                log.disk().refresh_free_space();
                log.enforce_retention(now_ms());
                let _ = done.send(());
            });
            let _ = finished.await;
        }
    });
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SESSION_CHECK_PERIOD);
        let mut shutdown = state.shutdown.clone();
        let mut round = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            state.groups.expire_members();
            round += 1;
            if round.is_multiple_of(ASSIGNMENT_REFRESH_CHECKS) {
                state.groups.refresh_assignments();
            }
        }
    });
}
