//! One client connection: length-prefixed request frames, answered one at a time and in the
//! order they came (the protocol's rule, which clients rely on to match answers to requests).
//!
//! A hostile or broken client costs bounded memory and time: a frame's bytes count against
//! the engine's in-flight budget (`[server] max_inflight_bytes`, shared with the HTTP door)
//! as they arrive; a frame that stops arriving, or an answer the client stops reading, closes
//! the connection after `[server] request_body_timeout_ms`; a connection with no request for
//! `[kafka] connections_max_idle_ms` is closed.

use std::net::SocketAddr;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::SemaphorePermit;

use super::KafkaContext;
use super::apis::{self, RequestError};
use super::sasl::Session;
use super::share_groups::{self, ConnectionShares};
use crate::server::inflight_permits;

/// Bytes read from a socket at a time: a frame's buffer grows as its bytes arrive, so a
/// client announcing a large request holds no more memory than it has sent.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of an answer written at a time, each within the request timeout.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

/// Why a connection was closed by the engine.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a request of {length} bytes, past max_frame_bytes ({max})")]
    TooLarge { length: i64, max: u64 },
    #[error(
        "a request of {length} bytes stopped arriving after {received} (nothing for [server] request_body_timeout_ms = {timeout_ms})"
    )]
    Stalled {
        length: usize,
        received: usize,
        timeout_ms: u64,
    },
    #[error(
        "requests in memory are at [server] max_inflight_bytes = {max} and none finished within request_body_timeout_ms = {timeout_ms}"
    )]
    Busy { max: u64, timeout_ms: u64 },
    #[error("no request for [kafka] connections_max_idle_ms = {idle_ms}")]
    Idle { idle_ms: u64 },
    #[error(
        "the client read none of its answer for [server] request_body_timeout_ms = {timeout_ms}"
    )]
    NotReading { timeout_ms: u64 },
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// A request frame, without its length, and the share of the in-flight budget its bytes hold
/// until it is answered.
struct Frame<'a> {
    bytes: Bytes,
    _budget: SemaphorePermit<'a>,
}

/// Serves one client until it closes the connection, sends what cannot be answered, stalls,
/// idles, or the engine shuts down. Why the engine closed it is logged with the client's
/// address.
/// When it ends (but not when the engine stops: locks do not outlive it anyway), the share
/// sessions it carried are closed and their locks released.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, context: &KafkaContext) {
    let _ = stream.set_nodelay(true);
    let mut client = Client {
        peer,
        session: Session::default(),
        shares: context.share_groups.connection(),
    };
    let stopping = serve_requests(stream, &mut client, context).await;
    if !stopping {
        share_groups::connection_closed(client.shares, context).await;
    }
}

/// What the engine keeps of one connection.
struct Client {
    peer: SocketAddr,
    session: Session,
    shares: ConnectionShares,
}

/// Answers requests until the connection ends; true when it ended because the engine stops.
async fn serve_requests(stream: TcpStream, client: &mut Client, context: &KafkaContext) -> bool {
    let (mut reader, mut writer) = stream.into_split();
    let mut shutdown = context.shutdown.clone();
    let peer = client.peer;
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, context) => frame,
            _ = shutdown.wait_for(|stop| *stop) => return true,
        };
        let outcome = match frame {
            Ok(None) => return false, // closed by the client
            Ok(Some(frame)) => answer(frame, client, context, &mut writer).await,
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            match &error {
                ConnectionError::Io(_) | ConnectionError::Idle { .. } => {
                    tracing::debug!(%peer, %error, "kafka: connection ended")
                }
                _ => tracing::warn!(%peer, %error, "kafka: closing the connection"),
            }
            return false;
        }
    }
}

async fn answer(
    frame: Frame<'_>,
    client: &mut Client,
    context: &KafkaContext,
    writer: &mut OwnedWriteHalf,
) -> Result<(), ConnectionError> {
    let api = api_name(&frame.bytes);
    let started = std::time::Instant::now();
    let (peer, session, shares) = (client.peer, &mut client.session, &mut client.shares);
    let answered = apis::answer(frame.bytes, peer, session, shares, context).await?;
    context
        .request_seconds
        .with_label_values(&[api])
        .observe(started.elapsed().as_secs_f64());
    let Some(response) = answered else {
        return Ok(());
    };
    // Written a chunk at a time, each within the timeout, so a client that stops reading
    // is let go instead of holding its answer (up to max_fetch_bytes) forever.
    for chunk in response.chunks(WRITE_CHUNK_BYTES) {
        tokio::time::timeout(context.request_timeout, writer.write_all(chunk))
            .await
            .map_err(|_elapsed| ConnectionError::NotReading {
                timeout_ms: context.request_timeout.as_millis() as u64,
            })??;
    }
    Ok(())
}

/// The next request frame; None when the client closed the connection between requests.
/// Its bytes are counted against `[server] max_inflight_bytes` as they arrive (not by the
/// length announced), so a client that announces much and sends little holds little.
async fn read_frame<'a>(
    reader: &mut OwnedReadHalf,
    context: &'a KafkaContext,
) -> Result<Option<Frame<'a>>, ConnectionError> {
    let idle = Duration::from_millis(context.settings.connections_max_idle_ms);
    let mut length = [0u8; 4];
    match tokio::time::timeout(idle, reader.read_exact(&mut length)).await {
        Err(_elapsed) => {
            return Err(ConnectionError::Idle {
                idle_ms: context.settings.connections_max_idle_ms,
            });
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(error)) => return Err(error.into()),
    }
    let length = i32::from_be_bytes(length);
    let max_frame_bytes = context.settings.max_frame_bytes;
    if length < 0 || length as u64 > max_frame_bytes {
        return Err(ConnectionError::TooLarge {
            length: length.into(),
            max: max_frame_bytes,
        });
    }
    let length = length as usize;
    let capacity = inflight_permits(context.max_inflight_bytes);
    let mut budget = acquire(context, 1).await?;
    let mut frame = BytesMut::with_capacity(length.min(READ_CHUNK_BYTES));
    while frame.len() < length {
        let chunk = (length - frame.len()).min(READ_CHUNK_BYTES);
        let needed = inflight_permits((frame.len() + chunk) as u64).min(capacity);
        let held = budget.num_permits() as u32;
        if needed > held {
            budget.merge(acquire(context, needed - held).await?);
        }
        frame.reserve(chunk);
        let mut limited = reader.take(chunk as u64);
        let read = tokio::time::timeout(context.request_timeout, limited.read_buf(&mut frame))
            .await
            .map_err(|_elapsed| ConnectionError::Stalled {
                length,
                received: frame.len(),
                timeout_ms: context.request_timeout.as_millis() as u64,
            })??;
        if read == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(Frame {
        bytes: frame.freeze(),
        _budget: budget,
    }))
}

/// `count` permits of the in-flight budget, waiting at most the request timeout for them.
async fn acquire(
    context: &KafkaContext,
    count: u32,
) -> Result<SemaphorePermit<'_>, ConnectionError> {
    let busy = || ConnectionError::Busy {
        max: context.max_inflight_bytes,
        timeout_ms: context.request_timeout.as_millis() as u64,
    };
    match tokio::time::timeout(
        context.request_timeout,
        context.inflight.acquire_many(count),
    )
    .await
    {
        Ok(Ok(permits)) => Ok(permits),
        Ok(Err(_)) | Err(_) => Err(busy()),
    }
}

/// The name of the API a frame asks for (`Produce`, `Fetch`, ...), for the latency metric;
/// only frames that were answered are counted, so the API is a known one. The names are
/// made once, not per request.
fn api_name(frame: &[u8]) -> &'static str {
    use kafka_protocol::messages::ApiKey;
    static NAMES: std::sync::OnceLock<std::collections::BTreeMap<i16, String>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ApiKey::iter()
            .map(|api| (api as i16, format!("{api:?}")))
            .collect()
    });
    match frame {
        [high, low, ..] => names
            .get(&i16::from_be_bytes([*high, *low]))
            .map_or("unknown", String::as_str),
        _ => "unknown",
    }
}
