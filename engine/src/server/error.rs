//! How errors become HTTP responses: a status code and a JSON body with a message that says
//! what went wrong and what to do, plus a stable machine-readable code.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api::ErrorBody;
use crate::groups::GroupError;
use crate::log::LogError;
use crate::runtime::DeployError;
use crate::txn::SnapshotError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
                code: self.code.to_string(),
            }),
        )
            .into_response()
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> ApiError {
        let (status, code) = classify(&error);
        ApiError::new(status, code, error.to_string())
    }
}

fn classify(error: &LogError) -> (StatusCode, &'static str) {
    match error {
        LogError::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
        LogError::UnknownPartition { .. } => (StatusCode::NOT_FOUND, "unknown_partition"),
        LogError::TopicExists(_) => (StatusCode::CONFLICT, "topic_exists"),
        LogError::InvalidTopicName(_) => (StatusCode::BAD_REQUEST, "invalid_topic_name"),
        LogError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
        LogError::OpenFileBudget { .. } => (StatusCode::BAD_REQUEST, "too_many_partitions"),
        LogError::OffsetOutOfRange { .. } => {
            (StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range")
        }
        LogError::RecordTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "record_too_large"),
        LogError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
        LogError::SegmentFilesFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "open_file_limit"),
        LogError::PartitionFailed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "partition_failed"),
        LogError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_data"),
        LogError::Missing { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "missing_data"),
        LogError::Archive(_) => (StatusCode::INTERNAL_SERVER_ERROR, "archive_error"),
        LogError::Io { .. } | LogError::Locked(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "io_error")
        }
    }
}

impl From<GroupError> for ApiError {
    fn from(error: GroupError) -> ApiError {
        let (status, code) = match &error {
            GroupError::Log(inner) => classify(inner),
            GroupError::UnknownMember { .. } => (StatusCode::NOT_FOUND, "unknown_member"),
            GroupError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
            GroupError::StaleGeneration { .. } => (StatusCode::CONFLICT, "stale_generation"),
            GroupError::NotAssigned { .. } => (StatusCode::CONFLICT, "not_assigned"),
            GroupError::MemberRequired(_) => (StatusCode::CONFLICT, "member_required"),
            GroupError::BadSessionTimeout { .. } | GroupError::NoTopics(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            GroupError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "offset_store"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<DeployError> for ApiError {
    fn from(error: DeployError) -> ApiError {
        let (status, code) = match &error {
            DeployError::Log(inner) => classify(inner),
            DeployError::InvalidGroupName(_) => (StatusCode::BAD_REQUEST, "invalid_group_name"),
            DeployError::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_group"),
            DeployError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "plugin_too_large"),
            DeployError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_plugin"),
            DeployError::Start(_) => (StatusCode::BAD_REQUEST, "plugin_does_not_start"),
            DeployError::TopicMismatch { .. } => (StatusCode::CONFLICT, "topic_mismatch"),
            DeployError::UnknownOutput(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
            DeployError::UnknownVersion { .. } => (StatusCode::NOT_FOUND, "unknown_version"),
            DeployError::NoPreviousVersion(_) => (StatusCode::CONFLICT, "no_previous_version"),
            DeployError::BadSetting(_) => (StatusCode::BAD_REQUEST, "bad_setting"),
            DeployError::Store(_) | DeployError::State(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "plugin_store")
            }
            DeployError::Snapshot(SnapshotError::Unknown { .. }) => {
                (StatusCode::NOT_FOUND, "unknown_snapshot")
            }
            DeployError::Snapshot(SnapshotError::Exists { .. }) => {
                (StatusCode::CONFLICT, "snapshot_exists")
            }
            DeployError::Snapshot(SnapshotError::Store(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "plugin_store")
            }
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request("bad_query", rejection.body_text())
    }
}

impl From<crate::queues::ShareError> for ApiError {
    fn from(error: crate::queues::ShareError) -> ApiError {
        use crate::queues::ShareError as E;
        let (status, code) = match &error {
            E::Log(inner) => classify(inner),
            E::UnknownGroup(_) => (StatusCode::NOT_FOUND, "unknown_share_group"),
            E::InvalidName(..) => (StatusCode::BAD_REQUEST, "invalid_group_name"),
            E::BadSetting { .. } | E::BadMember { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            E::TooManyGroups { .. } | E::TooManyMembers { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "limit_reached")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "share_group_store"),
        };
        ApiError::new(status, code, error.to_string())
    }
}
