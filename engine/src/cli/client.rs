//! The HTTP client behind the `sluice` commands that talk to a running engine.

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::groups::{CommittedOffset, GroupDescription, Membership};
use crate::log::{Record, batch};
use crate::server::api::*;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// Sent to the admin endpoints.
    token: Option<String>,
}

/// Records decoded from a binary fetch.
pub struct Fetch {
    /// (offset, record), only those at or after the requested offset.
    pub records: Vec<(u64, Record)>,
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Where a fetch starts.
#[derive(Debug, Clone, Copy)]
pub enum Position {
    Offset(u64),
    Timestamp(i64),
}

/// Why a request to the engine did not give the answer expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(
        "cannot reach sluice at {url}: is `sluice serve` running there? (set --url or SLUICE_URL)"
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("invalid --url `{url}` (or SLUICE_URL): give one like http://127.0.0.1:7171")]
    BadUrl {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("the server's answer is not the JSON expected")]
    UnexpectedJson(#[source] reqwest::Error),
    #[error("the server sent a damaged batch")]
    DamagedBatch(#[source] batch::BatchError),
    #[error("the server's fetch answer lacks the {0} header")]
    MissingHeader(&'static str),
    #[error("the server's binary share fetch does not decode: {0}")]
    BadShareFetch(String),
}

impl ClientError {
    /// The server's answer, when the request got one with an error status.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            ClientError::Server(error) => Some(error),
            _ => None,
        }
    }
}

/// The result of a request to the engine.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A state-changing action on a plugin group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginAction {
    Pause,
    Resume,
    Rollback,
    ReplayDeadLetters,
}

impl PluginAction {
    /// The endpoint under `/v1/plugins/{group}/`.
    fn path(self) -> &'static str {
        match self {
            PluginAction::Pause => "pause",
            PluginAction::Resume => "resume",
            PluginAction::Rollback => "rollback",
            PluginAction::ReplayDeadLetters => "dlq/replay",
        }
    }
}

/// An error the server answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status}, {code})")]
pub struct ServerError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl Client {
    pub fn new(url: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: url.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// A client that authenticates admin requests with `token`.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, &format!("plugins{path}"))
    }

    pub async fn deploy(
        &self,
        group: &str,
        request: &DeployRequest,
    ) -> Result<crate::runtime::PluginDescription> {
        self.json(self.admin(Method::POST, &format!("/{group}")).json(request))
            .await
    }

    pub async fn list_plugins(&self) -> Result<PluginList> {
        self.json(self.admin(Method::GET, "")).await
    }

    pub async fn describe_plugin(&self, group: &str) -> Result<crate::runtime::PluginDescription> {
        self.json(self.admin(Method::GET, &format!("/{group}")))
            .await
    }

    pub async fn plugin_action(
        &self,
        group: &str,
        action: PluginAction,
        body: &RollbackRequest,
    ) -> Result<crate::runtime::PluginDescription> {
        self.json(
            self.admin(Method::POST, &format!("/{group}/{}", action.path()))
                .json(body),
        )
        .await
    }

    pub async fn take_snapshot(&self, group: &str, name: &str) -> Result<crate::txn::SnapshotInfo> {
        let body = SnapshotRequest {
            name: name.to_string(),
        };
        self.json(
            self.admin(Method::POST, &format!("/{group}/snapshots"))
                .json(&body),
        )
        .await
    }

    pub async fn snapshots(&self, group: &str) -> Result<SnapshotList> {
        self.json(self.admin(Method::GET, &format!("/{group}/snapshots")))
            .await
    }

    pub async fn undeploy(&self, group: &str, keep_state: bool) -> Result<()> {
        self.send(
            self.admin(Method::DELETE, &format!("/{group}"))
                .query(&[("keep_state", keep_state)]),
        )
        .await?;
        Ok(())
    }

    pub async fn plugin_state(
        &self,
        group: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<StateScan> {
        let mut request = self
            .admin(Method::GET, &format!("/{group}/state"))
            .query(&[("prefix", prefix)])
            .query(&[("limit", limit)]);
        if let Some(after) = start_after {
            request = request.query(&[("start_after", after)]);
        }
        self.json(request).await
    }

    pub async fn plugin_logs(&self, group: &str, limit: usize) -> Result<PluginLogs> {
        self.json(
            self.admin(Method::GET, &format!("/{group}/logs"))
                .query(&[("limit", limit)]),
        )
        .await
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// A request with the token, when the client has one: the admin endpoints need it, and
    /// so does everything with `[server] require_token_for_all`.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}/v1/{}", self.base, path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.map_err(|source| {
            let url = self.base.clone();
            if source.is_connect() {
                ClientError::Unreachable { url, source }
            } else if source.is_builder() {
                ClientError::BadUrl { url, source }
            } else {
                ClientError::Request { url, source }
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.code, body.error),
            Err(_) => ("unknown".to_string(), text),
        };
        Err(ServerError {
            status,
            code,
            message,
        }
        .into())
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        response.json().await.map_err(ClientError::UnexpectedJson)
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    pub async fn create_topic(&self, request: &CreateTopic) -> Result<TopicDescription> {
        self.post_json("topics", request).await
    }

    /// Starts archiving a topic; the response streams [`ArchiveProgress`] lines.
    pub async fn archive_run(
        &self,
        topic: &str,
        request: &ArchiveRunRequest,
    ) -> Result<reqwest::Response> {
        self.send(
            self.request(Method::POST, &format!("topics/{topic}/archive"))
                .json(request),
        )
        .await
    }

    pub async fn archive_list(&self, topic: &str) -> Result<ArchiveListing> {
        self.json(self.request(Method::GET, &format!("topics/{topic}/archive")))
            .await
    }

    pub async fn archive_verify(&self, params: &VerifyParams) -> Result<ArchiveVerification> {
        self.json(self.request(Method::POST, "archive/verify").query(params))
            .await
    }

    /// Topics, groups and plugin groups at one moment (`GET /v1/overview`).
    pub async fn overview(&self) -> Result<Overview> {
        self.json(self.request(Method::GET, "overview")).await
    }

    pub async fn list_topics(&self) -> Result<TopicList> {
        self.json(self.request(Method::GET, "topics")).await
    }

    pub async fn describe_topic(&self, topic: &str) -> Result<TopicDescription> {
        self.json(self.request(Method::GET, &format!("topics/{topic}")))
            .await
    }

    pub async fn alter_topic(&self, topic: &str, request: &AlterTopic) -> Result<TopicDescription> {
        self.json(
            self.request(Method::PATCH, &format!("topics/{topic}"))
                .json(request),
        )
        .await
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &format!("topics/{topic}")))
            .await
            .map(drop)
    }

    /// Produces records in one binary request.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: &[Record],
    ) -> Result<ProduceResponse> {
        self.produce_frame(
            topic,
            partition,
            Bytes::from(batch::encode_records_frame(records)),
        )
        .await
    }

    /// Produces an already encoded records frame.
    pub async fn produce_frame(
        &self,
        topic: &str,
        partition: Option<u32>,
        frame: Bytes,
    ) -> Result<ProduceResponse> {
        let mut request = self
            .request(Method::POST, &format!("topics/{topic}/records"))
            .header(reqwest::header::CONTENT_TYPE, RECORDS_FRAME)
            .body(frame);
        if let Some(partition) = partition {
            request = request.query(&[("partition", partition)]);
        }
        self.json(request).await
    }

    /// Fetches raw batches (the fast path) and decodes them.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: Position,
        max_bytes: u64,
        wait_ms: u64,
    ) -> Result<Fetch> {
        let (data, next_offset, high_watermark, log_start_offset) = self
            .fetch_raw(topic, partition, from, max_bytes, wait_ms)
            .await?;
        let first_wanted = match from {
            Position::Offset(offset) => offset,
            Position::Timestamp(_) => 0,
        };
        let mut records =
            batch::decode_all(&data, first_wanted).map_err(ClientError::DamagedBatch)?;
        if let Position::Timestamp(ts) = from {
            let first = records
                .iter()
                .position(|(_, r)| r.timestamp >= ts)
                .unwrap_or(records.len());
            records.drain(..first);
        }
        Ok(Fetch {
            records,
            next_offset,
            high_watermark,
            log_start_offset,
        })
    }

    /// Fetches raw batches without decoding them: (bytes, next offset, high watermark, log
    /// start).
    pub async fn fetch_raw(
        &self,
        topic: &str,
        partition: u32,
        from: Position,
        max_bytes: u64,
        wait_ms: u64,
    ) -> Result<(Bytes, u64, u64, u64)> {
        let position = match from {
            Position::Offset(offset) => ("offset", offset as i64),
            Position::Timestamp(ts) => ("timestamp", ts),
        };
        let request = self
            .request(
                Method::GET,
                &format!("topics/{topic}/partitions/{partition}/records"),
            )
            .header(reqwest::header::ACCEPT, BATCHES)
            .query(&[
                position,
                ("max_bytes", max_bytes as i64),
                ("wait_ms", wait_ms as i64),
            ]);
        let response = self.send(request).await?;
        let number = |name: &'static str| -> Result<u64> {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .ok_or(ClientError::MissingHeader(name))
        };
        let next = number(HEADER_NEXT_OFFSET)?;
        let high_watermark = number(HEADER_HIGH_WATERMARK)?;
        let start = number(HEADER_LOG_START)?;
        let body = response
            .bytes()
            .await
            .map_err(|source| ClientError::Request {
                url: self.base.clone(),
                source,
            })?;
        Ok((body, next, high_watermark, start))
    }

    pub async fn join(&self, group: &str, request: &JoinRequest) -> Result<Membership> {
        self.post_json(&format!("groups/{group}/join"), request)
            .await
    }

    pub async fn heartbeat(&self, group: &str, member_id: &str) -> Result<Membership> {
        self.post_json(
            &format!("groups/{group}/heartbeat"),
            &MemberRequest {
                member_id: member_id.to_string(),
            },
        )
        .await
    }

    pub async fn leave(&self, group: &str, member_id: &str) -> Result<()> {
        let request = self
            .request(Method::POST, &format!("groups/{group}/leave"))
            .json(&MemberRequest {
                member_id: member_id.to_string(),
            });
        self.send(request).await.map(drop)
    }

    pub async fn commit(&self, group: &str, request: &CommitRequest) -> Result<()> {
        self.send(
            self.request(Method::POST, &format!("groups/{group}/offsets"))
                .json(request),
        )
        .await
        .map(drop)
    }

    pub async fn committed(&self, group: &str) -> Result<Vec<CommittedOffset>> {
        let response: OffsetsResponse = self
            .json(self.request(Method::GET, &format!("groups/{group}/offsets")))
            .await?;
        Ok(response.offsets)
    }

    pub async fn list_groups(&self) -> Result<GroupList> {
        self.json(self.request(Method::GET, "groups")).await
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.json(self.request(Method::GET, &format!("groups/{group}")))
            .await
    }

    pub async fn share_fetch(
        &self,
        group: &str,
        request: &ShareFetchRequest,
    ) -> Result<ShareFetchResponse> {
        self.post_json(&format!("share-groups/{group}/fetch"), request)
            .await
    }

    /// A share fetch answered in binary ([`SHARE_BATCHES`]): the acquired records decoded
    /// from the stored batches, each with its partition, offset and delivery count, and the
    /// request's acknowledgements that were refused.
    pub async fn share_fetch_batches(
        &self,
        group: &str,
        request: &ShareFetchRequest,
    ) -> Result<SharedFetch> {
        let response = self
            .send(
                self.request(Method::POST, &format!("share-groups/{group}/fetch"))
                    .header(reqwest::header::ACCEPT, SHARE_BATCHES)
                    .json(request),
            )
            .await?;
        let body = response
            .bytes()
            .await
            .map_err(|source| ClientError::Request {
                url: self.base.clone(),
                source,
            })?;
        let decoded = ShareFetchBody::decode(&body).map_err(ClientError::BadShareFetch)?;
        Ok(SharedFetch {
            refused: decoded.refused,
            batches: decoded
                .sections
                .into_iter()
                .map(SharedBatch::decode)
                .collect::<Result<_>>()?,
        })
    }

    pub async fn share_ack(
        &self,
        group: &str,
        request: &ShareAckRequest,
    ) -> Result<ShareAckResponse> {
        self.post_json(&format!("share-groups/{group}/ack"), request)
            .await
    }

    pub async fn share_leave(&self, group: &str, member_id: &str) -> Result<()> {
        let body = ShareLeaveRequest {
            member_id: member_id.to_string(),
        };
        self.send(
            self.request(Method::POST, &format!("share-groups/{group}/leave"))
                .json(&body),
        )
        .await
        .map(drop)
    }

    pub async fn describe_share_group(
        &self,
        group: &str,
    ) -> Result<crate::queues::ShareGroupDescription> {
        self.json(self.request(Method::GET, &format!("share-groups/{group}")))
            .await
    }

    pub async fn list_share_groups(&self) -> Result<ShareGroupList> {
        self.json(self.request(Method::GET, "share-groups")).await
    }

    pub async fn configure_share_group(
        &self,
        group: &str,
        settings: &crate::queues::GroupSettings,
    ) -> Result<crate::queues::ShareGroupDescription> {
        self.json(
            self.request(Method::PUT, &format!("share-groups/{group}"))
                .json(settings),
        )
        .await
    }

    pub async fn delete_share_group(&self, group: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &format!("share-groups/{group}")))
            .await
            .map(drop)
    }
}

/// A binary share fetch's answer.
pub struct SharedFetch {
    pub refused: Vec<crate::queues::Refused>,
    pub batches: Vec<SharedBatch>,
}

/// The acquired records of one partition from a binary share fetch.
pub struct SharedBatch {
    pub topic: String,
    pub partition: u32,
    /// (offset, delivery count, record), in offset order.
    pub records: Vec<(u64, u16, Record)>,
}

impl SharedBatch {
    fn decode(section: ShareBatches) -> Result<SharedBatch> {
        let from = section.ranges.first().map_or(0, |r| r.0);
        let decoded =
            batch::decode_all(&section.batches, from).map_err(ClientError::DamagedBatch)?;
        let ranges = &section.ranges;
        let records = decoded
            .into_iter()
            .filter_map(|(offset, record)| {
                let i = ranges.partition_point(|r| r.1 < offset);
                let (first, _, count) = ranges.get(i)?;
                (offset >= *first).then_some((offset, *count, record))
            })
            .collect();
        Ok(SharedBatch {
            topic: section.topic,
            partition: section.partition,
            records,
        })
    }
}
