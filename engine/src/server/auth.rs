//! The admin token: loaded from the configuration or `<data_dir>/admin.token`, generated there
//! at first start, and checked in constant time on every admin request.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::log::LogError;

/// Name of the token file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The configured token, else the one in the data directory, else a new one (saved, mode
/// 0600, and printed once).
pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<String, LogError> {
    if let Some(token) = configured.filter(|t| !t.is_empty()) {
        return Ok(token.to_string());
    }
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(LogError::io(&path, error)),
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(token.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|e| LogError::io(&path, e))?;
    super::announce(&format!(
        "generated the admin token (kept in {}; the sluice client reads it from there): {token}",
        path.display()
    ));
    Ok(token)
}

/// Compares two tokens in time independent of where they differ (and of their lengths, by
/// comparing digests).
fn same_token(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.ct_eq(&expected).into()
}

/// An extractor that admits a request only with `Authorization: Bearer <admin token>`.
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Admin, ApiError> {
        check(&parts.headers, state)
    }
}

/// With `[server] require_token_for_all`, refuses every request without the admin token
/// but the health check (a middleware before every route).
pub async fn require_token_for_all(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if state.config.server.require_token_for_all
        && request.uri().path() != "/v1/health"
        && !super::console::is_asset(request.uri().path())
        && let Err(refused) = check(request.headers(), &state)
    {
        return refused.into_response();
    }
    next.run(request).await
}

/// Warns, at start, when anyone who reaches `addr` can read and write every topic.
pub fn warn_if_open_beyond_loopback(addr: std::net::SocketAddr, require_token_for_all: bool) {
    if !addr.ip().is_loopback() && !require_token_for_all {
        tracing::warn!(
            %addr,
            "LISTENING BEYOND LOOPBACK WITHOUT A TOKEN FOR DATA: anyone who reaches {addr} can produce, fetch and join consumer groups on every topic (topic changes, offset resets and plugins still need the admin token); set [server] require_token_for_all = true, or listen on 127.0.0.1"
        );
    }
}

/// Admits a request only with `Authorization: Bearer <admin token>`.
pub fn check(headers: &HeaderMap, state: &AppState) -> Result<Admin, ApiError> {
    check_token(headers, &state.admin_token)
}

/// Admits a request only with `Authorization: Bearer <expected>`.
pub fn check_token(headers: &HeaderMap, expected: &str) -> Result<Admin, ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if same_token(token, expected) => Ok(Admin),
        Some(_) => Err(unauthorized(
            "wrong admin token; use the one in <data_dir>/admin.token or [server] admin_token",
        )),
        None => Err(unauthorized(
            "this endpoint needs the admin token: send `Authorization: Bearer <token>` (the token is in <data_dir>/admin.token, or set [server] admin_token; the sluice client takes --token or SLUICE_TOKEN)",
        )),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "abc"));
    }

    #[test]
    fn a_generated_token_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(None, dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create(None, dir.path()).unwrap(), first);
        assert_eq!(load_or_create(Some("set"), dir.path()).unwrap(), "set");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
