//! Kafka request frames built with the protocol's own codec, for tests that talk to the
//! listener over a raw socket.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// One request as sent on the wire: its length, the request header (correlation id 1), then
/// `request` at `version`.
pub fn request_frame<R: Encodable>(api: ApiKey, version: i16, request: &R) -> Bytes {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut body, api.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut framed = BytesMut::new();
    framed.put_i32(body.len() as i32);
    framed.put(body);
    framed.freeze()
}

/// Sends one request on `stream` and returns the answer's body (after its correlation id).
pub fn exchange<R: Encodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    request: &R,
) -> Bytes {
    stream
        .write_all(&request_frame(api, version, request))
        .unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).unwrap();
    Bytes::from(answer).slice(4..) // the correlation id (response header v0)
}
