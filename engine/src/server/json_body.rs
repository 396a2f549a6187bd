//! JSON request bodies (topic and group administration, commits, share-group fetches and
//! acknowledgements), read like produce batches and plugin uploads ([`super::body`]): an
//! announced length past `[server] max_request_bytes` is refused from the headers, the bytes
//! are held within the in-flight budget as they arrive, and a body that stalls gets 408.
//!
//! axum's `Json` reads the whole body first and checks its size as it grows: a client that
//! announces a gigabyte is read until the body timeout, outside the budget every other
//! large body is counted in.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};

/// A JSON body of type `T`, read within the budget; its rejection is the API's error
/// (`malformed_body` naming the field, 413, 408 or 503).
pub(super) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        if !is_json(&parts.headers) {
            super::body::discard(body, 0);
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "malformed_body",
                "this call takes a JSON body: send Content-Type: application/json",
            ));
        }
        let limit = state.config.server.max_request_bytes as usize;
        let read = super::body::read(state, &parts.headers, body, limit, || {
            super::records::too_large(limit)
        })
        .await?;
        parse(&read.bytes)
            .map(JsonBody)
            .map_err(|message| ApiError::bad_request("malformed_body", message))
    }
}

/// `application/json`, or a `+json` type, as axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses `bytes`; the error says what is wrong and names the field at fault.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let wrong = |what: String| format!("the body is not the JSON this call takes: {what}");
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            wrong(inner.to_string())
        } else {
            wrong(format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|e| wrong(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Commit {
        offsets: Vec<Offset>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Offset {
        partition: u32,
    }

    fn message(bytes: &[u8]) -> String {
        parse::<Commit>(bytes).unwrap_err()
    }

    #[test]
    fn errors_name_the_field_and_trailing_bytes_are_refused() {
        assert!(parse::<Commit>(br#"{"offsets": [{"partition": 1}]}"#).is_ok());
        let wrong = message(br#"{"offsets": [{"partition": -1}]}"#);
        assert!(wrong.contains("offsets[0].partition"), "{wrong}");
        assert!(message(b"{not json").contains("key must be a string"));
        assert!(message(br#"{"offsets": []} x"#).contains("trailing"));
        assert!(message(b"").contains("EOF"));
    }
}
