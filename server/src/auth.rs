//! Who may call the server: with `--auth-token-file`, every gRPC call
//! (metadata `authorization: Bearer <token>`, as the Durable Task SDKs pass
//! metadata unchanged) and every HTTP request but the health probes must
//! carry the shared secret. The comparison takes the same time whatever
//! the token sent, so it cannot be guessed a byte at a time.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// Shortest token accepted: a guessable secret protects nothing.
pub const TOKEN_LEN_MIN: usize = 16;

/// A shared secret. Its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Arc<str>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// A token from text: surrounding whitespace trimmed, at least
    /// [`TOKEN_LEN_MIN`] visible ASCII characters (it travels in a header).
    pub fn new(text: &str) -> Result<BearerToken, ConfigError> {
        let token = text.trim();
        if token.len() < TOKEN_LEN_MIN {
            return Err(ConfigError::Invalid(format!(
                "the auth token must be at least {TOKEN_LEN_MIN} characters, not {}",
                token.len()
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(
                "the auth token may hold only visible ASCII characters (no spaces)".into(),
            ));
        }
        Ok(BearerToken(token.into()))
    }

    /// The token in a file (`--auth-token-file`).
    pub fn load(path: &Path) -> Result<BearerToken, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        BearerToken::new(&text).map_err(|e| match e {
            ConfigError::Invalid(why) => ConfigError::Invalid(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    /// The `authorization` value a client sends: `Bearer <token>`.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `authorization` value carries this token, in time that
    /// does not depend on how much of it matches.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(sent) = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value[7..].trim_ascii())
        else {
            return false;
        };
        bool::from(sent.ct_eq(self.0.as_bytes()))
    }
}

/// The gRPC check: every call must carry the token (when one is set).
#[derive(Clone, Debug, Default)]
pub struct GrpcAuth(pub Option<BearerToken>);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match &self.0 {
            None => Ok(request),
            Some(token) => {
                let sent = request
                    .metadata()
                    .get("authorization")
                    .map(|v| v.as_bytes());
                if token.accepts(sent) {
                    Ok(request)
                } else {
                    Err(tonic::Status::unauthenticated(
                        "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
                    ))
                }
            }
        }
    }
}

/// The HTTP check, as axum middleware: 401 with `WWW-Authenticate:
/// Bearer` unless the request carries the token (when one is set).
pub async fn require_token(
    State(token): State<Option<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &token {
        let sent = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !token.accepts(sent) {
            let body = axum::Json(serde_json::json!({
                "error": "missing or wrong bearer token (header `Authorization: Bearer <token>`)"
            }));
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                body,
            )
                .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_token() {
        let token = BearerToken::new("  s3cret-s3cret-s3cret\n").expect("token");
        assert!(token.accepts(Some(b"Bearer s3cret-s3cret-s3cret")));
        assert!(token.accepts(Some(b"bearer s3cret-s3cret-s3cret")));
        assert!(!token.accepts(Some(b"Bearer s3cret-s3cret-s3cre")));
        assert!(!token.accepts(Some(b"Bearer s3cret-s3cret-s3cret-")));
        assert!(!token.accepts(Some(b"Basic s3cret-s3cret-s3cret")));
        assert!(!token.accepts(Some(b"s3cret-s3cret-s3cret")));
        assert!(!token.accepts(Some(b"Bearer ")));
        assert!(!token.accepts(None));
    }

    #[test]
    fn refuses_short_or_unprintable_tokens_and_hides_them() {
        assert!(BearerToken::new("short").is_err());
        assert!(BearerToken::new("has a space in the middle").is_err());
        let token = BearerToken::new("0123456789abcdef").expect("16 characters");
        assert!(!format!("{token:?}").contains("0123"));
    }
}
