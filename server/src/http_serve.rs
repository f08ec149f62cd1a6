//! The HTTP listener: accepts connections up to a limit and serves each
//! with hyper, under timeouts, so that slow or idle clients cannot hold the
//! server's file handles (which the gRPC port needs too).
//!
//! - At most [`HttpLimits::connections_max`] connections at once; past
//!   it, new ones wait in the kernel's accept queue.
//! - Request headers must arrive within [`HttpLimits::header_timeout`],
//!   and a connection that sends nothing, or stays idle between requests,
//!   is closed after the same time (hyper's header read timeout runs
//!   whenever it waits for a request).
//! - A request body must arrive within [`HttpLimits::body_timeout`]
//!   (`tower-http`'s request body timeout: 408).
//!
//! Stopping: the listener stops accepting; connections finish their
//! requests (graceful shutdown) while the server's drain time lasts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tower::ServiceExt as _;

/// Limits on HTTP clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most connections at once. Default: 256.
    pub connections_max: usize,
    /// Longest wait for a request's headers, and for the next request on
    /// an idle connection. Default: 10 s.
    pub header_timeout: Duration,
    /// Longest wait for a request's body. Default: 30 s.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connections_max: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let slots = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: telling HTTP/2 from HTTP/1 means waiting for the
    // first bytes with no timer (hyper-util's auto builder), which let a
    // silent client hold a connection forever; browsers and tools speak
    // HTTP/1.1 to a plain port anyway.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file handles and the like: wait, do not spin.
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone().into_service().map_request(
            |request: axum::http::Request<Incoming>| request.map(axum::body::Body::new),
        ));
        // The TLS handshake runs in the connection's task, under the header
        // timeout, so a silent client holds only its slot.
        let acceptor = tls.clone();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let handshake_max = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let io = match acceptor {
                None => Either::Left(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_max, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => Either::Right(stream),
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
