//! The APIs this listener serves, at which versions, and the dispatch of a request frame to
//! its handler. A request for an API or a version not served closes the connection with a
//! log line, as a Kafka broker does; clients ask ApiVersions first and never send one.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeShareGroupOffsetsRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, ShareAcknowledgeRequest, ShareFetchRequest,
    ShareGroupDescribeRequest, ShareGroupHeartbeatRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use tokio::task::block_in_place;

use super::group_apis::{self, Caller};
use super::sasl::{self, Session};
use super::{
    KafkaContext, admin, alter_configs, fetch, list_offsets, metadata, produce, producers,
    share_group_admin, share_groups,
};

/// The APIs served: key, lowest and highest version.
pub(super) const SERVED: [(ApiKey, i16, i16); 30] = [
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::DescribeShareGroupOffsets, 0, 0),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
];

/// Why a request cannot be answered (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("a request too short for its header ({0} bytes)")]
    Short(usize),
    #[error("api key {0}, which Kafka does not define")]
    UnknownApi(i16),
    #[error("{api:?} (api key {key}) is not served")]
    NotServed { api: ApiKey, key: i16 },
    #[error("{api:?} version {version} is not served (versions {min} to {max} are)")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("a {api:?} v{version} request that does not decode: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("{api:?} before authenticating: [kafka] sasl_plain_users requires SASL/PLAIN first")]
    Unauthenticated { api: ApiKey },
    #[error("cannot encode the answer to {api:?} v{version}: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// The answer to one request frame, length-prefixed; None when the request wants none (a
/// Produce with acks=0).
pub(super) async fn answer(
    mut frame: Bytes,
    peer: std::net::SocketAddr,
    session: &mut Session,
    shares: &mut share_groups::ConnectionShares,
    context: &KafkaContext,
) -> Result<Option<BytesMut>, RequestError> {
    if frame.len() < 4 {
        return Err(RequestError::Short(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| RequestError::UnknownApi(key))?;
    let malformed = |error: anyhow::Error| RequestError::Malformed {
        api,
        version,
        reason: format!("{error:#}"),
    };
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(malformed)?;
    let correlation_id = header.correlation_id;
    let caller = Caller {
        client_id: header
            .client_id
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        host: format!("/{}", peer.ip()),
    };
    let Some(&(_, min, max)) = SERVED.iter().find(|(served, _, _)| *served == api) else {
        return Err(RequestError::NotServed { api, key });
    };
    if !(min..=max).contains(&version) {
        // ApiVersions is answered whatever its version (at version 0, with the error and
        // the versions served), so that a newer client can pick one (KIP-511).
        if api == ApiKey::ApiVersions {
            let refused = api_versions(ResponseError::UnsupportedVersion.code());
            return respond(api, 0, correlation_id, &refused).map(Some);
        }
        return Err(RequestError::UnsupportedVersion {
            api,
            version,
            min,
            max,
        });
    }
    let open_to_all = matches!(
        api,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    );
    if !open_to_all && !session.may_proceed(&context.settings.sasl_plain_users) {
        return Err(RequestError::Unauthenticated { api });
    }
    let frame = &mut frame;
    // An arm: the request decoded as its type, answered, the answer encoded. What writes and
    // syncs files (topics, offsets) runs in `block_in_place`, off the async workers' time.
    macro_rules! answer {
        ($request:ty, |$decoded:ident| $answer:expr) => {{
            let $decoded = <$request>::decode(frame, version).map_err(malformed)?;
            respond(api, version, correlation_id, &$answer)
        }};
    }
    match api {
        ApiKey::ApiVersions => respond(api, version, correlation_id, &api_versions(0)),
        ApiKey::Metadata => answer!(MetadataRequest, |r| metadata::answer(r, version, context)),
        ApiKey::Produce => {
            let request = ProduceRequest::decode(frame, version).map_err(malformed)?;
            let wants_answer = request.acks != 0;
            let response = produce::answer(request, context).await;
            if !wants_answer {
                return Ok(None);
            }
            respond(api, version, correlation_id, &response)
        }
        ApiKey::Fetch => answer!(FetchRequest, |r| fetch::answer(r, context).await),
        ApiKey::ListOffsets => answer!(ListOffsetsRequest, |r| list_offsets::answer(r, context)),
        ApiKey::CreateTopics => {
            answer!(CreateTopicsRequest, |r| block_in_place(|| {
                admin::create_topics(r, context)
            }))
        }
        ApiKey::DeleteTopics => {
            answer!(DeleteTopicsRequest, |r| block_in_place(|| {
                admin::delete_topics(r, context)
            }))
        }
        ApiKey::CreatePartitions => answer!(CreatePartitionsRequest, |r| block_in_place(|| {
            admin::create_partitions(r, context)
        })),
        ApiKey::DescribeConfigs => {
            answer!(DescribeConfigsRequest, |r| admin::describe_configs(
                r, context
            ))
        }
        ApiKey::DescribeCluster => respond(
            api,
            version,
            correlation_id,
            &admin::describe_cluster(context),
        ),
        ApiKey::FindCoordinator => answer!(FindCoordinatorRequest, |r| {
            group_apis::find_coordinator(r, version, context)
        }),
        ApiKey::JoinGroup => {
            answer!(JoinGroupRequest, |r| group_apis::join_group(
                r, &caller, context
            )
            .await)
        }
        ApiKey::SyncGroup => answer!(SyncGroupRequest, |r| group_apis::sync_group(r, context)
            .await),
        ApiKey::Heartbeat => answer!(HeartbeatRequest, |r| group_apis::heartbeat(r, context)),
        ApiKey::LeaveGroup => answer!(LeaveGroupRequest, |r| group_apis::leave_group(r, context)),
        ApiKey::OffsetCommit => answer!(OffsetCommitRequest, |r| block_in_place(|| {
            group_apis::offset_commit(r, context)
        })),
        ApiKey::OffsetFetch => {
            answer!(OffsetFetchRequest, |r| group_apis::offset_fetch(
                r, version, context
            ))
        }
        ApiKey::OffsetDelete => answer!(OffsetDeleteRequest, |r| block_in_place(|| {
            group_apis::offset_delete(r, context)
        })),
        ApiKey::InitProducerId => answer!(InitProducerIdRequest, |r| block_in_place(|| {
            producers::init_producer_id(r, &context.producer_ids)
        })),
        ApiKey::SaslHandshake => answer!(SaslHandshakeRequest, |r| sasl::handshake(r, session)),
        ApiKey::SaslAuthenticate => answer!(SaslAuthenticateRequest, |r| {
            sasl::authenticate(r, session, &context.settings.sasl_plain_users)
        }),
        ApiKey::ListGroups => answer!(ListGroupsRequest, |r| group_apis::list_groups(r, context)),
        ApiKey::DescribeGroups => {
            answer!(DescribeGroupsRequest, |r| group_apis::describe_groups(
                r, context
            ))
        }
        ApiKey::DeleteGroups => answer!(DeleteGroupsRequest, |r| block_in_place(|| {
            group_apis::delete_groups(r, context)
        })),
        ApiKey::IncrementalAlterConfigs => answer!(IncrementalAlterConfigsRequest, |r| {
            alter_configs::answer(r, context).await
        }),
        ApiKey::ShareGroupHeartbeat => answer!(ShareGroupHeartbeatRequest, |r| {
            share_groups::heartbeat(r, &caller, context).await
        }),
        ApiKey::ShareFetch => answer!(ShareFetchRequest, |r| {
            share_groups::fetch(r, shares, context).await
        }),
        ApiKey::ShareAcknowledge => answer!(ShareAcknowledgeRequest, |r| {
            share_groups::acknowledge_request(r, shares, context).await
        }),
        ApiKey::ShareGroupDescribe => answer!(ShareGroupDescribeRequest, |r| {
            share_group_admin::describe(r, context)
        }),
        ApiKey::DescribeShareGroupOffsets => answer!(DescribeShareGroupOffsetsRequest, |r| {
            share_group_admin::offsets(r, context)
        }),
        _ => Err(RequestError::NotServed { api, key }),
    }
    .map(Some)
}

/// The ApiVersions answer: every API served with its versions.
fn api_versions(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SERVED
                .iter()
                .map(|(api, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*api as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

/// `response` with its header and length prefix.
fn respond<R: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Result<BytesMut, RequestError> {
    let encode_error = |error: anyhow::Error| RequestError::Encode {
        api,
        version,
        reason: format!("{error:#}"),
    };
    let mut out = BytesMut::new();
    out.put_i32(0); // the length, written below
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, R::header_version(version))
        .map_err(encode_error)?;
    response.encode(&mut out, version).map_err(encode_error)?;
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    Ok(out)
}
