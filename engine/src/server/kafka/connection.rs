//! One client connection: length-prefixed request frames, answered one at a time and in the
//! order they came (the protocol's rule, which clients rely on to match answers to requests).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use super::KafkaContext;
use super::apis::{self, RequestError};
use super::sasl::Session;

/// Bytes read from a socket at a time: a frame's buffer grows as its bytes arrive, so a
/// client announcing a large request holds no more memory than it has sent.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a connection was closed by the engine.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("a request of {length} bytes, past max_frame_bytes ({max})")]
    TooLarge { length: i64, max: u64 },
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Serves one client until it closes the connection, sends what cannot be answered, or the
/// engine shuts down. Why the engine closed it is logged with the client's address.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, context: &KafkaContext) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::new(writer);
    let mut shutdown = context.shutdown.clone();
    let mut session = Session::default();
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, context.settings.max_frame_bytes) => frame,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let outcome = match frame {
            Ok(None) => return, // closed by the client
            Ok(Some(frame)) => answer(frame, peer, &mut session, context, &mut writer).await,
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            match &error {
                ConnectionError::Io(_) => tracing::debug!(%peer, %error, "kafka: connection ended"),
                _ => tracing::warn!(%peer, %error, "kafka: closing the connection"),
            }
            return;
        }
    }
}

async fn answer(
    frame: Bytes,
    peer: SocketAddr,
    session: &mut Session,
    context: &KafkaContext,
    writer: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
) -> Result<(), ConnectionError> {
    if let Some(response) = apis::answer(frame, peer, session, context).await? {
        writer.write_all(&response).await?;
        writer.flush().await?;
    }
    Ok(())
}

/// The next request frame, without its length; None when the client closed the connection
/// between requests.
async fn read_frame(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    max_frame_bytes: u64,
) -> Result<Option<Bytes>, ConnectionError> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let length = i32::from_be_bytes(length);
    if length < 0 || length as u64 > max_frame_bytes {
        return Err(ConnectionError::TooLarge {
            length: length.into(),
            max: max_frame_bytes,
        });
    }
    let length = length as usize;
    let mut frame = BytesMut::with_capacity(length.min(READ_CHUNK_BYTES));
    while frame.len() < length {
        frame.reserve((length - frame.len()).min(READ_CHUNK_BYTES));
        let wanted = (length - frame.len()) as u64;
        let read = (&mut *reader).take(wanted).read_buf(&mut frame).await?;
        if read == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(frame.freeze()))
}
