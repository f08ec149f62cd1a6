//! The HTTP API against web pages in an operator's browser. A page from
//! any site can send requests to `127.0.0.1:8080`: "simple" cross-site
//! POSTs (`text/plain`, forms) go out without asking, and DNS rebinding
//! (the attacker's name re-pointed at 127.0.0.1) lets its scripts read the
//! answers as if same-origin. Three checks stop both, on every request:
//!
//! - **Host** must be one of the server's names: an IP literal (rebinding
//!   needs a name), `localhost`, the public URL's host, or a name given
//!   with `--allowed-hosts`; otherwise 403.
//! - **Origin**, when a browser sends one, must be the server itself (the
//!   request's own host, or the public URL) or one given with
//!   `--allowed-origins`; otherwise 403.
//! - **Content-Type** of a POST must be `application/json`, which a page
//!   cannot send cross-site without a CORS preflight (which this server
//!   never grants); otherwise 415.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The names and origins the HTTP API answers to.
#[derive(Clone, Debug, Default)]
pub struct BrowserGuard {
    /// Host names accepted besides IP literals and `localhost`, lowercase,
    /// without ports.
    pub hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) accepted besides the server's own,
    /// lowercase.
    pub origins: Vec<String>,
    /// The public URL's origin (`scheme://host[:port]`), lowercase.
    pub public_origin: Option<String>,
}

impl BrowserGuard {
    /// A guard for these settings: `public_url` (its host and origin are
    /// the server's own), and extra hosts and origins.
    pub fn new(public_url: &str, hosts: &[String], origins: &[String]) -> BrowserGuard {
        let public_origin = origin_of(public_url);
        let mut hosts: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        if let Some(host) = public_origin
            .as_deref()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| host_of(authority).to_owned())
        {
            hosts.push(host);
        }
        BrowserGuard {
            hosts,
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            public_origin,
        }
    }

    /// Whether `host` (a Host header: a name or address, maybe a port)
    /// is one of this server's names.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_of(host).to_ascii_lowercase();
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        literal.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || self.hosts.contains(&name)
    }

    /// Whether a request to `host` may come from `origin`.
    pub fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        origin == format!("http://{host}")
            || origin == format!("https://{host}")
            || self.public_origin.as_deref() == Some(origin.as_str())
            || self.origins.contains(&origin)
    }
}

/// `host[:port]` of an authority, without the port (`[::1]:80` gives
/// `[::1]`).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _port)| host)
}

/// `scheme://authority` of a URL, lowercase.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The checks above, as axum middleware.
pub async fn browser_guard(
    State(guard): State<Arc<BrowserGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    let Some(host) = host else {
        return refuse(StatusCode::BAD_REQUEST, "the request has no Host".into());
    };
    if !guard.host_allowed(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} is not one of this server's names (an IP address, localhost, \
                 the --public-url host, or one given with --allowed-hosts)"
            ),
        );
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("<not text>");
        if !guard.origin_allowed(origin, &host) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request from {origin:?} refused (allow it with --allowed-origins)"
                ),
            );
        }
    }
    if request.method() == Method::POST {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a POST must have Content-Type: application/json (even with no body)".into(),
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let guard = BrowserGuard::new(
            "https://basalt.example.com/api",
            &["Basalt.Internal".to_owned()],
            &["https://dash.example.com/".to_owned()],
        );
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "10.1.2.3:80",
            "localhost:8080",
            "LOCALHOST",
            "basalt.internal:8080",
            "basalt.example.com",
        ] {
            assert!(guard.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!guard.host_allowed(bad), "{bad}");
        }
        assert!(guard.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(guard.origin_allowed("https://basalt.example.com", "10.0.0.1"));
        assert!(guard.origin_allowed("https://dash.example.com", "127.0.0.1:8080"));
        assert!(!guard.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080"));
        assert!(!guard.origin_allowed("https://evil.example", "127.0.0.1:8080"));
        assert!(!guard.origin_allowed("null", "127.0.0.1:8080"));
    }
}
