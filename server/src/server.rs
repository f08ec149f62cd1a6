//! Starting and stopping the server: the engine on its storage, the
//! dispatcher, the gRPC sidecar and the HTTP API, behind one
//! [`ServerHandle`].
//!
//! Stopping (`ServerHandle::stop`, or SIGTERM/SIGINT in `basalt serve`):
//! worker streams are ended and the listeners stop accepting, in-flight
//! calls finish, then the engine makes everything appended durable,
//! checkpoints every partition and releases the directory lock. The
//! listening sockets are closed, so a new server can bind the same ports
//! at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::Backend;
use basalt_storage::Storage;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::auth::GrpcAuth;
use crate::browser::BrowserGuard;
use crate::config::{ServeOptions, StorageChoice};
use crate::dispatch::Dispatcher;
use crate::http;
use crate::proto::task_hub_sidecar_service_server::TaskHubSidecarServiceServer;
use crate::sidecar::{Sidecar, SidecarOptions};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The options are inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The storage could not be opened (e.g. another server holds the
    /// directory: the message names its pid).
    #[error("opening the task hub: {0}")]
    Storage(#[from] basalt_storage::Error),
    /// The engine could not recover the task hub.
    #[error("recovering the task hub: {0}")]
    Open(#[from] basalt_engine::OpenError),
    /// The TLS certificate, key or client CA could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A listening address could not be bound.
    #[error("binding the {what} address {addr}: {source}")]
    Bind {
        /// gRPC or HTTP.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server. Dropping it does not stop it; call [`stop`](Self::stop).
pub struct ServerHandle {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    engine: Engine,
    dispatcher: Arc<Dispatcher>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Longest the listeners get to finish in-flight calls when stopping.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Bytes a gRPC message may have beyond its largest payload (history, ids).
const MESSAGE_OVERHEAD_BYTES: usize = 16 << 20;

/// Starts the server; returns once it is listening.
pub async fn start(options: ServeOptions) -> Result<ServerHandle, ServeError> {
    options.validate()?;
    let storage = match &options.storage {
        StorageChoice::LocalDir(dir) => Storage::local(dir)?,
        StorageChoice::Memory => Storage::in_memory(),
        StorageChoice::Url(url) => Storage::from_url(url)?,
    };
    start_on(options, storage).await
}

/// Starts the server on `storage` instead of the one `options` names (for
/// embedding, and for tests with a fault-injecting store).
pub async fn start_on(options: ServeOptions, storage: Storage) -> Result<ServerHandle, ServeError> {
    options.validate()?;
    let tls = options.tls.as_ref().map(crate::tls::load).transpose()?;
    let engine = Engine::open(
        storage,
        EngineOptions {
            hub_name: options.hub_name.clone(),
            partition_count: options.partitions,
            payload_bytes_max: options.payload_bytes_max,
            log: basalt_storage::LogOptions {
                commit_linger_micros: options.commit_linger_micros,
                ..basalt_storage::LogOptions::default()
            },
            memory_budget_bytes: options.memory_budget_bytes,
            queued_work_max: options.queued_work_max,
            retention_ms: options.retention.map(|r| r.as_millis() as u64),
            reopen_backoff_max_ms: options.reopen_backoff_max.as_millis() as u64,
            ..EngineOptions::default()
        },
    )
    .await?;
    let grpc_listener = bind("gRPC", options.grpc_addr).await;
    let http_listener = match options.http_addr {
        Some(addr) => Some(bind("HTTP", addr).await),
        None => None,
    };
    let (grpc_listener, http_listener) = match (grpc_listener, http_listener.transpose()) {
        (Ok(g), Ok(h)) => (g, h),
        (Err(e), _) | (_, Err(e)) => {
            engine.shutdown().await;
            return Err(e);
        }
    };
    let grpc_addr = local_addr(&grpc_listener, options.grpc_addr);
    let http_addr = http_listener
        .as_ref()
        .map(|l| local_addr(l, options.http_addr.unwrap_or(options.grpc_addr)));

    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let dispatcher = Dispatcher::start(Arc::clone(&backend), options.health_ping_interval);
    let sidecar = Arc::new(Sidecar::new(
        Arc::clone(&backend),
        Arc::clone(&dispatcher),
        SidecarOptions {
            per_stream_max: [
                options.orchestrations_per_stream_max,
                options.activities_per_stream_max,
                options.entities_per_stream_max,
            ],
            entity_format: options.entity_format,
            history_streaming_bytes: options.history_streaming_bytes,
            termination_grace: options.termination_grace,
        },
    ));
    let (shutdown, _) = watch::channel(false);
    let mut tasks = Vec::new();

    let message_max = options
        .payload_bytes_max
        .saturating_add(MESSAGE_OVERHEAD_BYTES);
    let service = tonic::service::interceptor::InterceptedService::new(
        TaskHubSidecarServiceServer::new(sidecar)
            .max_decoding_message_size(message_max)
            .max_encoding_message_size(usize::MAX),
        GrpcAuth(options.auth_token.clone()),
    );
    // Small messages go out at once: without TCP_NODELAY, Nagle's
    // algorithm and delayed acks hold each completion reply back (tonic
    // ignores its own nodelay setting for an incoming stream).
    let incoming = TcpListenerStream::new(grpc_listener).map(|stream| {
        if let Ok(stream) = &stream
            && let Err(error) = stream.set_nodelay(true)
        {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        stream
    });
    let mut stop_grpc = shutdown.subscribe();
    let mut grpc_server =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = &tls {
        grpc_server = match grpc_server.tls_config(tls.grpc.clone()) {
            Ok(server) => server,
            Err(error) => {
                engine.shutdown().await;
                return Err(ServeError::Tls(crate::tls::TlsError::from_display(&error)));
            }
        };
    }
    tasks.push(tokio::spawn(async move {
        let served = grpc_server
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_grpc.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "gRPC server stopped with an error");
        }
    }));

    if let (Some(listener), Some(addr)) = (http_listener, http_addr) {
        let public_url = options
            .public_url
            .clone()
            .unwrap_or_else(|| default_public_url(addr, tls.is_some()));
        let guard = BrowserGuard::new(
            &public_url,
            &options.allowed_hosts,
            &options.allowed_origins,
        );
        let app = http::router(
            http::HttpState {
                backend: Arc::clone(&backend),
                engine: engine.clone(),
                dispatcher: Arc::clone(&dispatcher),
                public_url: public_url.into(),
            },
            options.auth_token.clone(),
            guard,
            options.payload_bytes_max,
        );
        let stop_http = shutdown.subscribe();
        let limits = options.http_limits;
        let acceptor = tls.as_ref().map(|t| t.http.clone());
        tasks.push(tokio::spawn(async move {
            crate::http_serve::serve(listener, app, acceptor, limits, stop_http).await;
        }));
    }
    tracing::info!(%grpc_addr, http_addr = ?http_addr, partitions = options.partitions, "basalt is serving");
    Ok(ServerHandle {
        grpc_addr,
        http_addr,
        engine,
        dispatcher,
        shutdown,
        tasks,
    })
}

/// `http://` and the listening address; `localhost` for an unspecified
/// one (0.0.0.0, ::), where `--public-url` should say how clients reach it.
fn default_public_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(asked)
}

impl ServerHandle {
    /// The address the gRPC sidecar listens on (the real port when 0 was asked).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address the HTTP API listens on, if it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The dispatcher's counters: worker streams, work held, out, handed out.
    pub fn dispatch_stats(&self) -> crate::dispatch::DispatchStats {
        self.dispatcher.stats()
    }

    /// The engine behind the server (for tests and embedding).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops the server: ends worker streams, stops accepting, lets
    /// in-flight calls finish (at most a few seconds), then shuts the
    /// engine down durably (flush, checkpoint, unlock).
    pub async fn stop(self) {
        self.dispatcher.close();
        self.shutdown.send_replace(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN_MAX, task).await.is_err() {
                tracing::warn!("a listener did not drain in time; closing it");
                abort.abort();
            }
        }
        self.engine.shutdown().await;
        tracing::info!("basalt stopped");
    }
}
