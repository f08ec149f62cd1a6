//! `basalt serve`: resolves the options (flags, environment, TOML file),
//! sets up logging, runs the server until SIGTERM or SIGINT, then stops it
//! cleanly (streams ended, in-flight commits durable, checkpoints written,
//! ports and directory lock released) and exits 0.

use anyhow::Context;
use basalt_server::config::{ServeFile, parse_entity_format};
use basalt_server::server;
use tracing_subscriber::EnvFilter;

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log.as_deref().unwrap_or("info"), args.log_json)?;
    private_files();
    let file = match &args.config {
        Some(path) => ServeFile::load(path)?,
        None => ServeFile::default(),
    };
    let flags = ServeFile {
        data_dir: args.data_dir,
        storage: args.storage,
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        hub_name: args.hub_name,
        partitions: args.partitions,
        payload_bytes_max: args.payload_bytes_max,
        orchestrations_per_stream_max: args.orchestrations_per_stream_max,
        activities_per_stream_max: args.activities_per_stream_max,
        entities_per_stream_max: args.entities_per_stream_max,
        health_ping_interval_ms: args.health_ping_interval_ms,
        history_streaming_bytes: args.history_streaming_bytes,
        termination_grace_ms: args.termination_grace_ms,
        entity_format: args
            .entity_format
            .as_deref()
            .map(parse_entity_format)
            .transpose()?,
        commit_linger_micros: args.commit_linger_micros,
        memory_budget: args.memory_budget.clone(),
        queued_work_max: args.queued_work_max,
        retention: args.retention.clone(),
        auth_token_file: args.auth_token_file.clone(),
        insecure: args.insecure.then_some(true),
        public_url: args.public_url.clone(),
        allowed_hosts: args.allowed_hosts.clone(),
        allowed_origins: args.allowed_origins.clone(),
        http_connections_max: args.http_connections_max,
        http_header_timeout_ms: args.http_header_timeout_ms,
        http_body_timeout_ms: args.http_body_timeout_ms,
        reopen_backoff_max_ms: args.reopen_backoff_max_ms,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_client_ca: args.tls_client_ca.clone(),
    };
    let options = flags.or(file).into_options()?;
    // The handlers go in before the "serving" line: a supervisor (or a
    // test) may send SIGTERM the moment it reads that line, and a signal
    // arriving before the handler exists would kill the process outright.
    let stop_signal = StopSignal::install()?;
    let handle = server::start(options)
        .await
        .context("starting the server")?;
    // One line on stdout with the real addresses, for scripts and tests
    // that ask for port 0.
    println!(
        "basalt serving grpc={} http={}",
        handle.grpc_addr(),
        handle
            .http_addr()
            .map_or_else(|| "off".to_owned(), |a| a.to_string())
    );
    stop_signal.wait().await;
    tracing::info!("stop signal received; shutting down");
    handle.stop().await;
    Ok(())
}

/// Files and directories the server creates (the task hub: log, state
/// stores, lock) are readable by its own user only (0600 and 0700): they
/// hold every input and output.
fn private_files() {
    // SAFETY: umask only sets the process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// SIGTERM and SIGINT handlers, installed early so no signal is missed.
struct StopSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn init_logging(filter: &str, json: bool) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .with_context(|| format!("log filter {filter:?} is not valid"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}
