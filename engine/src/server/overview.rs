//! `GET /v1/overview`: one snapshot of the topics, consumer groups and plugin groups, as the
//! console polls it. Open like the topic and group reads; what a plugin group's deployment
//! says (settings, versions, last error) stays behind the admin token.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::api::{GroupProgress, Overview, PluginSummary};
use super::{ApiError, AppState};
use crate::groups::PartitionLag;

pub(super) async fn overview(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Overview>, ApiError> {
    let overview = tokio::task::spawn_blocking(move || collect(&state))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(overview))
}

fn collect(state: &AppState) -> Overview {
    let topics = state
        .log
        .topics()
        .iter()
        .map(|topic| super::topics::description(topic))
        .collect();
    let mut groups: Vec<GroupProgress> = state
        .groups
        .list()
        .unwrap_or_default()
        .iter()
        .filter_map(|group| state.groups.describe(group).ok())
        .map(|d| GroupProgress {
            group: d.group,
            kind: "consumer".into(),
            total_lag: d.total_lag,
            partitions: d.partitions,
        })
        .collect();
    let mut plugins = Vec::new();
    for d in state.plugins.list() {
        groups.push(GroupProgress {
            group: d.group.clone(),
            kind: "plugin".into(),
            total_lag: d.total_lag,
            partitions: d
                .partitions
                .iter()
                .map(|p| PartitionLag {
                    topic: d.topic.clone(),
                    partition: p.partition,
                    committed: p.committed,
                    high_watermark: p.high_watermark,
                    lag: p.lag,
                    owner: None,
                })
                .collect(),
        });
        plugins.push(PluginSummary {
            group: d.group,
            topic: d.topic,
            dlq_topic: d.dlq_topic,
            status: d.status,
            paused: d.paused,
            active_version: d.active_version,
            running_version: d.running_version,
            processed_records: d.processed_records,
            emitted_records: d.emitted_records,
            dead_letters: d.dead_letters,
            failed_calls: d.failed_calls,
            state_bytes: d.state_bytes,
            instance_memory_bytes: d.instance_memory_bytes,
            total_lag: d.total_lag,
        });
    }
    Overview {
        time_ms: crate::log::now_ms(),
        topics,
        groups,
        plugins,
    }
}
