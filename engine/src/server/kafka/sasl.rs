//! SASL/PLAIN: when `[kafka] sasl_plain_users` names users, a connection must authenticate as
//! one of them (SaslHandshake v1, then SaslAuthenticate) before anything but ApiVersions is
//! answered; a request before that closes the connection, with a log line. Passwords are
//! compared in constant time.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use subtle::ConstantTimeEq;

const PLAIN: &str = "PLAIN";

/// Where a connection stands.
#[derive(Debug, Default)]
pub(super) struct Session {
    /// The client chose PLAIN in a handshake.
    handshaken: bool,
    /// The user it authenticated as.
    pub user: Option<String>,
}

impl Session {
    /// Whether requests other than ApiVersions and SASL's may be answered.
    pub fn may_proceed(&self, users: &BTreeMap<String, String>) -> bool {
        users.is_empty() || self.user.is_some()
    }
}

pub(super) fn handshake(
    request: SaslHandshakeRequest,
    session: &mut Session,
) -> SaslHandshakeResponse {
    let mechanisms = vec![StrBytes::from_static_str(PLAIN)];
    if request.mechanism.as_str() != PLAIN {
        return SaslHandshakeResponse::default()
            .with_error_code(ResponseError::UnsupportedSaslMechanism.code())
            .with_mechanisms(mechanisms);
    }
    session.handshaken = true;
    SaslHandshakeResponse::default().with_mechanisms(mechanisms)
}

pub(super) fn authenticate(
    request: SaslAuthenticateRequest,
    session: &mut Session,
    users: &BTreeMap<String, String>,
) -> SaslAuthenticateResponse {
    let refused = |code: i16, message: &str| {
        SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message.to_string())))
    };
    if !session.handshaken || session.user.is_some() {
        return refused(
            ResponseError::IllegalSaslState.code(),
            "authenticate once, after a SaslHandshake for PLAIN",
        );
    }
    match plain_user(&request.auth_bytes, users) {
        Some(user) => {
            session.user = Some(user);
            SaslAuthenticateResponse::default()
        }
        None => refused(
            ResponseError::SaslAuthenticationFailed.code(),
            "authentication failed: unknown user or wrong password",
        ),
    }
}

/// The user a PLAIN message (`authzid NUL authcid NUL password`) authenticates, if any.
fn plain_user(message: &Bytes, users: &BTreeMap<String, String>) -> Option<String> {
    let mut parts = message.split(|b| *b == 0);
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let user = std::str::from_utf8(user).ok()?;
    let expected = users.get(user)?;
    bool::from(expected.as_bytes().ct_eq(password)).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_authenticate_only_with_the_right_password() {
        let users = BTreeMap::from([("alice".to_string(), "secret".to_string())]);
        let check = |m: &'static [u8]| plain_user(&Bytes::from_static(m), &users);
        assert_eq!(check(b"\0alice\0secret"), Some("alice".to_string()));
        assert_eq!(check(b"alice\0alice\0secret"), Some("alice".to_string()));
        assert_eq!(check(b"\0alice\0secreT"), None);
        assert_eq!(check(b"\0alice\0secret\0"), None);
        assert_eq!(check(b"\0bob\0secret"), None);
        assert_eq!(check(b"alice"), None);
    }
}
