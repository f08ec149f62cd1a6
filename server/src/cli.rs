//! The command line of `basalt`, declared with clap's derive API.
//!
//! Only the shape of the arguments lives here; what a command does lives in
//! the command's own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::bench_cli::BenchCommand;

/// Basalt, a durable execution engine.
#[derive(Debug, Parser)]
#[command(name = "basalt", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a benchmark workload and print a report.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Explain a task hub on disk (read-only; works while it is running):
    /// parameters, per-partition log and checkpoint, instances by status,
    /// and with --verify every checksum.
    Inspect(InspectArgs),
    /// Run the server: the engine on a data directory, the Durable Task
    /// sidecar gRPC service and the HTTP management API. Stops cleanly on
    /// SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Start an orchestration on a running server.
    Start(StartArgs),
    /// Show an orchestration instance.
    Status(StatusArgs),
    /// List orchestration instances.
    List(ListArgs),
    /// Raise an external event on an instance.
    Raise(RaiseArgs),
    /// Terminate an instance.
    Terminate(ReasonArgs),
    /// Suspend an instance.
    Suspend(ReasonArgs),
    /// Resume a suspended instance.
    Resume(ReasonArgs),
    /// Run a failed instance again from where it failed.
    Rewind(ReasonArgs),
    /// Delete finished instances and their history: one by id, or all
    /// matching a filter.
    Purge(PurgeArgs),
    /// Send a one-way operation to an entity.
    Signal(SignalArgs),
    /// Show one entity, or list entities.
    Entity(EntityArgs),
}

/// Options of `basalt serve`. Each may also come from the environment
/// (`BASALT_...`) or the TOML file given with `--config`; flags win over
/// the environment, which wins over the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (keys use `_`).
    #[arg(long, env = "BASALT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The task hub's data directory (local disk with fsync, the embedded
    /// default). Default: ./basalt-data.
    #[arg(long, env = "BASALT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `memory` keeps the hub in memory (lost on exit; for tests and
    /// demos); `s3://bucket/prefix` or `az://container/prefix` puts it in
    /// an object store (credentials, region and endpoint from the usual
    /// AWS_* / AZURE_* environment variables).
    #[arg(long, env = "BASALT_STORAGE")]
    pub storage: Option<String>,
    /// The Durable Task sidecar gRPC address. Default: 127.0.0.1:4001.
    #[arg(long, env = "BASALT_GRPC_ADDR")]
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// The HTTP API address, or `off`. Default: 127.0.0.1:8080.
    #[arg(long, env = "BASALT_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Task hub name. Default: basalt.
    #[arg(long, env = "BASALT_HUB_NAME")]
    pub hub_name: Option<String>,
    /// Partitions (fixed when the hub is created). Default: 12.
    #[arg(long, env = "BASALT_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Largest input, output or event payload in bytes. Default: 16 MiB.
    #[arg(long, env = "BASALT_PAYLOAD_BYTES_MAX")]
    pub payload_bytes_max: Option<usize>,
    /// Most orchestration steps one worker stream holds at once. Default: 100.
    #[arg(long, env = "BASALT_ORCHESTRATIONS_PER_STREAM_MAX")]
    pub orchestrations_per_stream_max: Option<usize>,
    /// Most activities one worker stream holds at once. Default: 100.
    #[arg(long, env = "BASALT_ACTIVITIES_PER_STREAM_MAX")]
    pub activities_per_stream_max: Option<usize>,
    /// Most entity batches one worker stream holds at once. Default: 100.
    #[arg(long, env = "BASALT_ENTITIES_PER_STREAM_MAX")]
    pub entities_per_stream_max: Option<usize>,
    /// Health ping interval on idle worker streams, ms. Default: 15000.
    #[arg(long, env = "BASALT_HEALTH_PING_INTERVAL_MS")]
    pub health_ping_interval_ms: Option<u64>,
    /// Past events of a step, in bytes, beyond which a worker that can
    /// stream history reads them with StreamInstanceHistory instead of
    /// getting them inline. Default: 1048576 (1 MiB).
    #[arg(long, env = "BASALT_HISTORY_STREAMING_BYTES")]
    pub history_streaming_bytes: Option<usize>,
    /// How long a termination waits for a step a worker holds before it
    /// ends the instance anyway, ms. Default: 5000.
    #[arg(long, env = "BASALT_TERMINATION_GRACE_MS")]
    pub termination_grace_ms: Option<u64>,
    /// Entity work item format sent to workers: v1 or v2. Default: v1.
    #[arg(long, env = "BASALT_ENTITY_FORMAT")]
    pub entity_format: Option<String>,
    /// How long a small group commit waits for more records, in
    /// microseconds (0 = write at once). Default: 0.
    #[arg(long, env = "BASALT_COMMIT_LINGER_MICROS")]
    pub commit_linger_micros: Option<u64>,
    /// Memory for partition state (cached records, the state stores'
    /// block cache and their unflushed checkpoints), e.g. 256MiB; records beyond it stay in the state
    /// stores. Default: 256MiB.
    #[arg(long, env = "BASALT_MEMORY_BUDGET")]
    pub memory_budget: Option<String>,
    /// Most work items waiting for workers before new starts, raised
    /// events and signals are refused (RESOURCE_EXHAUSTED / HTTP 429).
    /// Default: one per 4 KiB of the memory budget.
    #[arg(long, env = "BASALT_QUEUED_WORK_MAX")]
    pub queued_work_max: Option<usize>,
    /// Purge finished instances (and their history) older than this, e.g.
    /// 7d, in the background. Default: off.
    #[arg(long, env = "BASALT_RETENTION")]
    pub retention: Option<String>,
    /// A file holding the shared secret (at least 16 visible ASCII
    /// characters) that every gRPC call and HTTP request must carry as
    /// `authorization: Bearer <token>`. Default: none.
    #[arg(long, env = "BASALT_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// Listen on a non-loopback address without --auth-token-file (only on
    /// a network you trust). Default: refuse.
    #[arg(long, env = "BASALT_INSECURE")]
    pub insecure: bool,
    /// The HTTP API's URL as clients reach it, for the URIs it returns
    /// (e.g. https://basalt.example.com). Default: http:// and the HTTP
    /// address.
    #[arg(long, env = "BASALT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Host names the HTTP API answers to besides IP addresses, localhost
    /// and the public URL's host, comma-separated. Default: none.
    #[arg(long, env = "BASALT_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins whose web pages may call the HTTP API, comma-separated
    /// (e.g. https://dash.example.com). Default: none.
    #[arg(long, env = "BASALT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Most HTTP connections at once. Default: 256.
    #[arg(long, env = "BASALT_HTTP_CONNECTIONS_MAX")]
    pub http_connections_max: Option<usize>,
    /// Longest wait for an HTTP request's headers, and for the next
    /// request on an idle connection, in ms. Default: 10000.
    #[arg(long, env = "BASALT_HTTP_HEADER_TIMEOUT_MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// Longest wait for an HTTP request's body, in ms. Default: 30000.
    #[arg(long, env = "BASALT_HTTP_BODY_TIMEOUT_MS")]
    pub http_body_timeout_ms: Option<u64>,
    /// A partition stopped by a storage error (disk full, permissions, an
    /// object store outage) reopens itself: first after 100 ms, then
    /// waiting twice as long after each failed attempt, up to this many
    /// ms. Default: 10000.
    #[arg(long, env = "BASALT_REOPEN_BACKOFF_MAX_MS")]
    pub reopen_backoff_max_ms: Option<u64>,
    /// TLS on both listeners: the server's certificate chain (PEM).
    #[arg(long, env = "BASALT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "BASALT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by a CA in this PEM file.
    #[arg(long, env = "BASALT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Log filter (tracing's env-filter syntax). Default: info.
    #[arg(long, env = "BASALT_LOG")]
    pub log: Option<String>,
    /// Logs as JSON lines instead of text.
    #[arg(long, env = "BASALT_LOG_JSON")]
    pub log_json: bool,
}

/// Where a client command finds the server.
#[derive(Debug, Args)]
pub struct ServerAddr {
    /// The server's gRPC address.
    #[arg(
        long,
        env = "BASALT_SERVER",
        default_value = "http://127.0.0.1:4001",
        global = true
    )]
    pub server: String,
    /// A file holding the server's auth token (see `basalt serve
    /// --auth-token-file`).
    #[arg(long, env = "BASALT_AUTH_TOKEN_FILE", global = true)]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// For a server with TLS (an https:// address): the CA that signed its
    /// certificate (PEM). Default: the system's roots.
    #[arg(long, env = "BASALT_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a server that requires one.
    #[arg(
        long,
        env = "BASALT_TLS_CLIENT_CERT",
        global = true,
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "BASALT_TLS_CLIENT_KEY",
        global = true,
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Options of `basalt start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The orchestration name.
    pub name: String,
    /// The instance id (generated when left out).
    #[arg(long)]
    pub id: Option<String>,
    /// Input, as JSON.
    #[arg(long)]
    pub input: Option<String>,
    /// Do not start before this time (RFC 3339, UTC).
    #[arg(long)]
    pub at: Option<String>,
    /// Wait for the instance to finish and print its result.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The instance id.
    pub id: String,
    /// Also print the history.
    #[arg(long)]
    pub history: bool,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses, comma-separated (running, completed, failed,
    /// terminated, suspended, pending).
    #[arg(long)]
    pub status: Option<String>,
    /// Only ids starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only instances created at or after this time (RFC 3339).
    #[arg(long)]
    pub created_from: Option<String>,
    /// Only instances created before this time (RFC 3339).
    #[arg(long)]
    pub created_to: Option<String>,
    /// Most instances to print.
    #[arg(long, default_value_t = 100)]
    pub top: usize,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt raise`.
#[derive(Debug, Args)]
pub struct RaiseArgs {
    /// The instance id.
    pub id: String,
    /// The event name.
    pub event: String,
    /// Event data, as JSON.
    #[arg(long)]
    pub data: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt terminate`, `suspend` and `resume`.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// The instance id.
    pub id: String,
    /// Why (recorded in the history).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The instance id; leave out to purge by filter.
    pub id: Option<String>,
    /// With no id: only these statuses (completed, failed, terminated).
    #[arg(long)]
    pub status: Option<String>,
    /// With no id: only instances created before this time (RFC 3339).
    #[arg(long)]
    pub created_to: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt signal`.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The entity name.
    pub name: String,
    /// The entity key.
    pub key: String,
    /// The operation.
    pub operation: String,
    /// Input, as JSON.
    #[arg(long)]
    pub input: Option<String>,
    /// Deliver at this time (RFC 3339, UTC) instead of now.
    #[arg(long)]
    pub at: Option<String>,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt entity`.
#[derive(Debug, Args)]
pub struct EntityArgs {
    /// The entity name; with no key, lists entities of this name.
    pub name: Option<String>,
    /// The entity key.
    pub key: Option<String>,
    /// Most entities to list.
    #[arg(long, default_value_t = 100)]
    pub top: usize,
    #[command(flatten)]
    pub server: ServerAddr,
}

/// Options of `basalt inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The task hub's data directory.
    pub dir: PathBuf,
    /// Check every checkpoint and segment byte by byte; exit with status 1
    /// if any damage is found.
    #[arg(long)]
    pub verify: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
