//! The archive API: archive a topic now (with progress), list its Parquet files, and verify
//! every file against its manifest. Background archival before retention runs in
//! [`super::spawn_chores`]; both go through the same per-partition archives.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::sync::mpsc;

use super::api::{
    ArchiveListing, ArchiveProgress, ArchiveRunRequest, ArchiveVerification,
    PartitionArchiveListing, VerifyParams,
};
use super::json_body::JsonBody;
use super::{ApiError, AppState};
use crate::log::{LogError, now_ms};

/// Lines of progress as a response body, sent as the archival goes.
struct ProgressStream(mpsc::UnboundedReceiver<ArchiveProgress>);

impl futures_core::Stream for ProgressStream {
    type Item = Result<Vec<u8>, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| {
            event.map(|event| {
                let mut line = serde_json::to_vec(&event).expect("progress serialises");
                line.push(b'\n');
                Ok(line)
            })
        })
    }
}

/// Archives the topic's due segments (or every sealed one) and streams progress as
/// newline-delimited JSON: a plan, one line per segment, then done or failed.
#[tracing::instrument(skip_all, fields(topic = %topic))]
pub async fn run(
    _: super::auth::Admin,
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    body: Result<JsonBody<ArchiveRunRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(request) = body?;
    let topic = state.log.topic(&topic)?;
    if request.now {
        let partitions = topic.partitions();
        super::blocking(move || {
            for partition in partitions {
                partition.seal_active(true)?;
            }
            Ok(())
        })
        .await?;
    }
    let now = now_ms();
    let everything = request.everything || request.now;
    let plan: Vec<_> = topic
        .partitions()
        .into_iter()
        .map(|p| {
            let segments = p.segments_to_archive(now, everything);
            (p, segments)
        })
        .collect();
    let (sender, receiver) = mpsc::unbounded_channel();
    let segments = plan.iter().map(|(_, s)| s.len()).sum();
    let bytes = plan.iter().flat_map(|(_, s)| s).map(|s| s.bytes).sum();
    let _ = sender.send(ArchiveProgress::Plan { segments, bytes });
    crate::archive::spawn_low_priority("sluice-archive-run", move || {
        for (partition, due) in &plan {
            let archived = partition.archive(due, &|segment| {
                let _ = sender.send(ArchiveProgress::Segment {
                    partition: partition.id,
                    from: segment.base_offset,
                    to: segment.next_offset,
                    bytes: segment.bytes,
                });
            });
            if let Err(error) = archived {
                let _ = sender.send(ArchiveProgress::Failed {
                    message: error.to_string(),
                });
                return;
            }
        }
        let _ = sender.send(ArchiveProgress::Done { segments, bytes });
    });
    let mut response = Response::new(Body::from_stream(ProgressStream(receiver)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> Result<Json<ArchiveListing>, ApiError> {
    let handle = state.log.topic(&topic)?;
    let archives = state.archives.clone();
    let listing = tokio::task::spawn_blocking(move || {
        let mut partitions = Vec::new();
        for partition in handle.partitions() {
            let files = archives
                .partition(&handle.name, partition.id)
                .files()
                .map_err(LogError::from)?;
            partitions.push(PartitionArchiveListing {
                partition: partition.id,
                files,
            });
        }
        let shared = archives.topic(&handle.name);
        let table = shared.table_metadata().map_err(LogError::from)?;
        Ok::<_, LogError>(ArchiveListing {
            dir: archives.location(&handle.name),
            topic: handle.name.to_string(),
            partitions,
            table: table.map(|path| path.display().to_string()),
            schema_versions: shared.schema_versions().map_err(LogError::from)?,
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(listing))
}

/// Re-reads every archived file (of one topic, or of all) and compares it with its manifest.
pub async fn verify(
    State(state): State<Arc<AppState>>,
    params: Result<Query<VerifyParams>, QueryRejection>,
) -> Result<Json<ArchiveVerification>, ApiError> {
    let Query(params) = params?;
    let topics = match &params.topic {
        Some(name) => vec![state.log.topic(name)?],
        None => state.log.topics(),
    };
    let archives = state.archives.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut verification = ArchiveVerification {
            files_checked: 0,
            problems: Vec::new(),
        };
        for topic in topics {
            for partition in topic.partitions() {
                let archive = archives.partition(&topic.name, partition.id);
                verification.files_checked += archive.files().map_or(0, |f| f.len());
                verification.problems.extend(
                    archive
                        .verify()
                        .into_iter()
                        .map(|p| format!("{}/{}: {p}", topic.name, partition.id)),
                );
            }
        }
        verification
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(result))
}
