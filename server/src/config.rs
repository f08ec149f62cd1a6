//! How `basalt serve` runs: [`ServeOptions`], built from command-line flags,
//! environment variables (`BASALT_*`) and an optional TOML file, in that
//! order of precedence, over documented defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::BearerToken;
pub use crate::http_serve::HttpLimits;
pub use crate::sidecar::EntityFormat;
pub use crate::tls::TlsFiles;

/// Everything `basalt serve` needs, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// Where the task hub lives (the embedded local default).
    pub storage: StorageChoice,
    /// The Durable Task sidecar gRPC address. Default: 127.0.0.1:4001.
    pub grpc_addr: SocketAddr,
    /// The HTTP management API address; `None` turns it off.
    /// Default: 127.0.0.1:8080.
    pub http_addr: Option<SocketAddr>,
    /// Task hub name. Default: "basalt".
    pub hub_name: String,
    /// Partitions, fixed when the hub is created. Default: 12.
    pub partitions: u32,
    /// Largest input, output or event payload in bytes. Default: 16 MiB.
    pub payload_bytes_max: usize,
    /// Most orchestration work items one worker stream holds at once,
    /// whatever it asks for. Default: 100.
    pub orchestrations_per_stream_max: usize,
    /// Most activity work items one worker stream holds at once. Default: 100.
    pub activities_per_stream_max: usize,
    /// Most entity batches one worker stream holds at once. Default: 100.
    pub entities_per_stream_max: usize,
    /// How often an idle work-item stream gets a health ping. Default: 15 s
    /// (the SDKs drop a stream silent for 120 s).
    pub health_ping_interval: Duration,
    /// Which message carries entity batches to workers. Default: v1.
    pub entity_format: EntityFormat,
    /// A step whose past events encode to more than this many bytes goes
    /// to a worker that can stream history (it advertises
    /// `WORKER_CAPABILITY_HISTORY_STREAMING`) without them, with
    /// `requiresHistoryStreaming` set; the worker reads them with
    /// `StreamInstanceHistory`. Other workers always get the history
    /// inline. Default: 1 MiB.
    pub history_streaming_bytes: usize,
    /// How long a termination through the sidecar waits for a step a
    /// worker holds (its result is taken first, as the Durable Task
    /// Scheduler terminates) before it ends the instance anyway.
    /// Default: 5 s.
    pub termination_grace: Duration,
    /// How long a small group commit waits for more records, in
    /// microseconds. Out-of-process workers complete work one item at a
    /// time, so nearly every record gets its own fsync; lingering trades
    /// latency per hop for fewer writes. Default: 0 (measured in
    /// docs/benchmarks.md: it saves writes but not CPU on this machine).
    pub commit_linger_micros: u64,
    /// Memory for partition state in bytes (records cached in memory, the
    /// state stores' block cache and unflushed checkpoints; see
    /// `EngineOptions`). Records beyond
    /// it stay in the partitions' state stores and are read when needed.
    /// Default: 256 MiB.
    pub memory_budget_bytes: u64,
    /// Most work items waiting for workers before new starts, raised events
    /// and signals are refused (`RESOURCE_EXHAUSTED` / HTTP 429). `None`:
    /// one per 4 KiB of the memory budget.
    pub queued_work_max: Option<usize>,
    /// Finished instances (and their history) whose last change is older
    /// than this are purged in the background, in bounded batches.
    /// Default: off.
    pub retention: Option<Duration>,
    /// A partition stopped by a storage error reopens itself, first after
    /// 100 ms, then waiting twice as long after each failed attempt, up to
    /// this. Default: 10 s.
    pub reopen_backoff_max: Duration,
    /// The shared secret every gRPC call and HTTP request (but the health
    /// probes) must carry as `authorization: Bearer <token>`. Default:
    /// none (anyone who can reach the ports may call).
    pub auth_token: Option<BearerToken>,
    /// Listen on addresses other than loopback without a token. Default:
    /// false (such a server refuses to start).
    pub insecure: bool,
    /// The HTTP API's address as clients reach it (`https://host/prefix`),
    /// used in every URI the API returns and accepted as its own origin.
    /// Default: `http://` and the HTTP listening address (`localhost` for
    /// an unspecified one).
    pub public_url: Option<String>,
    /// Host names the HTTP API answers to besides IP addresses,
    /// `localhost` and the public URL's host (DNS rebinding protection).
    /// Default: none.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://dash.example.com`) whose pages may call the HTTP
    /// API besides the server's own. Default: none.
    pub allowed_origins: Vec<String>,
    /// HTTP connections at once, and header and body timeouts.
    pub http_limits: HttpLimits,
    /// TLS on both listeners. Default: none (plain TCP).
    pub tls: Option<TlsFiles>,
}

/// Splits `128MiB` into 128 and `MiB` (the unit trimmed, maybe empty).
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`, `d`),
/// e.g. `7d` or `90m`.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::Invalid(format!(
            "{text:?} is not a duration (use a number with ms, s, m, h or d, e.g. 7d)"
        ))
    };
    let (number, unit) = number_and_unit(text).ok_or_else(bad)?;
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Parses a byte size: a number with an optional unit (`B`, `KiB`, `MiB`,
/// `GiB`, or `KB`, `MB`, `GB` for powers of ten), e.g. `128MiB`.
pub fn parse_bytes(text: &str) -> Result<u64, ConfigError> {
    let bad = || {
        ConfigError::Invalid(format!(
            "{text:?} is not a byte size (use a number with B, KiB, MiB, GiB, KB, MB or GB)"
        ))
    };
    let (number, unit) = number_and_unit(text).ok_or_else(bad)?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// Where the task hub is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageChoice {
    /// A local directory with fsync (the embedded default).
    LocalDir(PathBuf),
    /// In memory: gone when the process ends (tests and demos).
    Memory,
    /// An object store by URL (`s3://bucket/prefix`, `az://container/prefix`,
    /// ...; see `basalt_storage::Storage::from_url`), credentials from the
    /// environment.
    Url(String),
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            storage: StorageChoice::LocalDir(PathBuf::from("basalt-data")),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 4001)),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            hub_name: "basalt".into(),
            partitions: 12,
            payload_bytes_max: 16 << 20,
            orchestrations_per_stream_max: 100,
            activities_per_stream_max: 100,
            entities_per_stream_max: 100,
            health_ping_interval: Duration::from_secs(15),
            entity_format: EntityFormat::V1,
            history_streaming_bytes: 1 << 20,
            termination_grace: Duration::from_secs(5),
            commit_linger_micros: 0,
            memory_budget_bytes: 256 << 20,
            queued_work_max: None,
            retention: None,
            reopen_backoff_max: Duration::from_secs(10),
            auth_token: None,
            insecure: false,
            public_url: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            http_limits: HttpLimits::default(),
            tls: None,
        }
    }
}

/// The optional TOML file: every key may be left out. Keys are the long
/// flag names with `_` for `-`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// See [`ServeOptions::storage`]: a directory.
    pub data_dir: Option<PathBuf>,
    /// `memory` keeps the hub in memory; a URL (`s3://…`, `az://…`) puts
    /// it in an object store.
    pub storage: Option<String>,
    /// See [`ServeOptions::grpc_addr`].
    pub grpc_addr: Option<SocketAddr>,
    /// See [`ServeOptions::http_addr`]; `"off"` turns it off.
    pub http_addr: Option<String>,
    /// See [`ServeOptions::hub_name`].
    pub hub_name: Option<String>,
    /// See [`ServeOptions::partitions`].
    pub partitions: Option<u32>,
    /// See [`ServeOptions::payload_bytes_max`].
    pub payload_bytes_max: Option<usize>,
    /// See [`ServeOptions::orchestrations_per_stream_max`].
    pub orchestrations_per_stream_max: Option<usize>,
    /// See [`ServeOptions::activities_per_stream_max`].
    pub activities_per_stream_max: Option<usize>,
    /// See [`ServeOptions::entities_per_stream_max`].
    pub entities_per_stream_max: Option<usize>,
    /// See [`ServeOptions::health_ping_interval`], in milliseconds.
    pub health_ping_interval_ms: Option<u64>,
    /// See [`ServeOptions::history_streaming_bytes`].
    pub history_streaming_bytes: Option<usize>,
    /// See [`ServeOptions::termination_grace`], in milliseconds.
    pub termination_grace_ms: Option<u64>,
    /// See [`ServeOptions::entity_format`]: `v1` or `v2`.
    pub entity_format: Option<EntityFormat>,
    /// See [`ServeOptions::commit_linger_micros`].
    pub commit_linger_micros: Option<u64>,
    /// See [`ServeOptions::memory_budget_bytes`], as a byte size
    /// (`"256MiB"`).
    pub memory_budget: Option<String>,
    /// See [`ServeOptions::queued_work_max`].
    pub queued_work_max: Option<usize>,
    /// See [`ServeOptions::retention`], as a duration (`"7d"`).
    pub retention: Option<String>,
    /// A file holding [`ServeOptions::auth_token`].
    pub auth_token_file: Option<PathBuf>,
    /// See [`ServeOptions::insecure`].
    pub insecure: Option<bool>,
    /// See [`ServeOptions::public_url`].
    pub public_url: Option<String>,
    /// See [`ServeOptions::allowed_hosts`].
    pub allowed_hosts: Option<Vec<String>>,
    /// See [`ServeOptions::allowed_origins`].
    pub allowed_origins: Option<Vec<String>>,
    /// See [`HttpLimits::connections_max`].
    pub http_connections_max: Option<usize>,
    /// See [`HttpLimits::header_timeout`], in milliseconds.
    pub http_header_timeout_ms: Option<u64>,
    /// See [`HttpLimits::body_timeout`], in milliseconds.
    pub http_body_timeout_ms: Option<u64>,
    /// See [`ServeOptions::reopen_backoff_max`], in milliseconds.
    pub reopen_backoff_max_ms: Option<u64>,
    /// See [`TlsFiles::cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`TlsFiles::key`].
    pub tls_key: Option<PathBuf>,
    /// See [`TlsFiles::client_ca`].
    pub tls_client_ca: Option<PathBuf>,
}

/// Why options could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file does not parse or has an unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{0}")]
    Invalid(String),
}

impl ServeFile {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<ServeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

impl ServeFile {
    /// These settings, with any left out taken from `lower` (flags over
    /// environment over file: clap already merged the first two).
    pub fn or(self, lower: ServeFile) -> ServeFile {
        ServeFile {
            data_dir: self.data_dir.or(lower.data_dir),
            storage: self.storage.or(lower.storage),
            grpc_addr: self.grpc_addr.or(lower.grpc_addr),
            http_addr: self.http_addr.or(lower.http_addr),
            hub_name: self.hub_name.or(lower.hub_name),
            partitions: self.partitions.or(lower.partitions),
            payload_bytes_max: self.payload_bytes_max.or(lower.payload_bytes_max),
            orchestrations_per_stream_max: self
                .orchestrations_per_stream_max
                .or(lower.orchestrations_per_stream_max),
            activities_per_stream_max: self
                .activities_per_stream_max
                .or(lower.activities_per_stream_max),
            entities_per_stream_max: self
                .entities_per_stream_max
                .or(lower.entities_per_stream_max),
            health_ping_interval_ms: self
                .health_ping_interval_ms
                .or(lower.health_ping_interval_ms),
            history_streaming_bytes: self
                .history_streaming_bytes
                .or(lower.history_streaming_bytes),
            termination_grace_ms: self.termination_grace_ms.or(lower.termination_grace_ms),
            entity_format: self.entity_format.or(lower.entity_format),
            commit_linger_micros: self.commit_linger_micros.or(lower.commit_linger_micros),
            memory_budget: self.memory_budget.or(lower.memory_budget),
            queued_work_max: self.queued_work_max.or(lower.queued_work_max),
            retention: self.retention.or(lower.retention),
            auth_token_file: self.auth_token_file.or(lower.auth_token_file),
            insecure: self.insecure.or(lower.insecure),
            public_url: self.public_url.or(lower.public_url),
            allowed_hosts: self.allowed_hosts.or(lower.allowed_hosts),
            allowed_origins: self.allowed_origins.or(lower.allowed_origins),
            http_connections_max: self.http_connections_max.or(lower.http_connections_max),
            http_header_timeout_ms: self.http_header_timeout_ms.or(lower.http_header_timeout_ms),
            http_body_timeout_ms: self.http_body_timeout_ms.or(lower.http_body_timeout_ms),
            reopen_backoff_max_ms: self.reopen_backoff_max_ms.or(lower.reopen_backoff_max_ms),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_client_ca: self.tls_client_ca.or(lower.tls_client_ca),
        }
    }

    /// The settings over the defaults, checked.
    pub fn into_options(self) -> Result<ServeOptions, ConfigError> {
        let defaults = ServeOptions::default();
        if self.data_dir.is_some() && self.storage.as_deref().is_some_and(|s| s != "local") {
            return Err(ConfigError::Invalid(
                "give either a data directory or a storage (memory or a URL), not both".into(),
            ));
        }
        let storage = match (self.data_dir, self.storage.as_deref()) {
            (Some(dir), _) => StorageChoice::LocalDir(dir),
            (None, Some(text)) => parse_storage(text),
            (None, None) => defaults.storage,
        };
        let options = ServeOptions {
            storage,
            grpc_addr: self.grpc_addr.unwrap_or(defaults.grpc_addr),
            http_addr: match self.http_addr {
                Some(text) => parse_http_addr(&text)?,
                None => defaults.http_addr,
            },
            hub_name: self.hub_name.unwrap_or(defaults.hub_name),
            partitions: self.partitions.unwrap_or(defaults.partitions),
            payload_bytes_max: self.payload_bytes_max.unwrap_or(defaults.payload_bytes_max),
            orchestrations_per_stream_max: self
                .orchestrations_per_stream_max
                .unwrap_or(defaults.orchestrations_per_stream_max),
            activities_per_stream_max: self
                .activities_per_stream_max
                .unwrap_or(defaults.activities_per_stream_max),
            entities_per_stream_max: self
                .entities_per_stream_max
                .unwrap_or(defaults.entities_per_stream_max),
            health_ping_interval: self
                .health_ping_interval_ms
                .map_or(defaults.health_ping_interval, Duration::from_millis),
            entity_format: self.entity_format.unwrap_or(defaults.entity_format),
            history_streaming_bytes: self
                .history_streaming_bytes
                .unwrap_or(defaults.history_streaming_bytes),
            termination_grace: self
                .termination_grace_ms
                .map_or(defaults.termination_grace, Duration::from_millis),
            commit_linger_micros: self
                .commit_linger_micros
                .unwrap_or(defaults.commit_linger_micros),
            memory_budget_bytes: match &self.memory_budget {
                Some(text) => parse_bytes(text)?,
                None => defaults.memory_budget_bytes,
            },
            queued_work_max: self.queued_work_max.or(defaults.queued_work_max),
            retention: match &self.retention {
                Some(text) => Some(parse_duration(text)?),
                None => defaults.retention,
            },
            reopen_backoff_max: self
                .reopen_backoff_max_ms
                .map_or(defaults.reopen_backoff_max, Duration::from_millis),
            auth_token: self
                .auth_token_file
                .as_deref()
                .map(BearerToken::load)
                .transpose()?,
            insecure: self.insecure.unwrap_or(defaults.insecure),
            public_url: self
                .public_url
                .map(|u| u.trim().trim_end_matches('/').to_owned()),
            allowed_hosts: self.allowed_hosts.unwrap_or_default(),
            allowed_origins: self.allowed_origins.unwrap_or_default(),
            http_limits: HttpLimits {
                connections_max: self
                    .http_connections_max
                    .unwrap_or(defaults.http_limits.connections_max),
                header_timeout: self
                    .http_header_timeout_ms
                    .map_or(defaults.http_limits.header_timeout, Duration::from_millis),
                body_timeout: self
                    .http_body_timeout_ms
                    .map_or(defaults.http_limits.body_timeout, Duration::from_millis),
            },
            tls: match (self.tls_cert, self.tls_key, self.tls_client_ca) {
                (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                    cert,
                    key,
                    client_ca,
                }),
                (None, None, None) => None,
                (None, None, Some(_)) => {
                    return Err(ConfigError::Invalid(
                        "tls-client-ca needs tls-cert and tls-key".into(),
                    ));
                }
                _ => {
                    return Err(ConfigError::Invalid(
                        "give both tls-cert and tls-key, or neither".into(),
                    ));
                }
            },
        };
        options.validate()?;
        Ok(options)
    }
}

/// Parses an entity format setting: `v1` or `v2`.
pub fn parse_entity_format(text: &str) -> Result<EntityFormat, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "v1" => Ok(EntityFormat::V1),
        "v2" => Ok(EntityFormat::V2),
        other => Err(ConfigError::Invalid(format!(
            "entity format {other:?}: expected v1 or v2"
        ))),
    }
}

/// Parses an HTTP address setting: `off` (or `none`) turns the API off.
pub fn parse_http_addr(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match text.trim() {
        "off" | "none" | "" => Ok(None),
        other => other
            .parse()
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("http address {other:?}: {e}"))),
    }
}

/// Parses a storage setting: `memory`, an object-store URL, or a directory.
pub fn parse_storage(text: &str) -> StorageChoice {
    match text {
        "memory" | "memory:" | "memory://" | "mem" => StorageChoice::Memory,
        dir if dir.starts_with("file://") => {
            StorageChoice::LocalDir(PathBuf::from(dir.trim_start_matches("file://")))
        }
        url if url.contains("://") => StorageChoice::Url(url.to_owned()),
        dir => StorageChoice::LocalDir(PathBuf::from(dir)),
    }
}

impl ServeOptions {
    /// Checks ranges that would otherwise fail later and less clearly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.partitions) {
            return Err(ConfigError::Invalid(format!(
                "partitions must be between 1 and 64, not {}",
                self.partitions
            )));
        }
        if self.payload_bytes_max < 1024 {
            return Err(ConfigError::Invalid(format!(
                "payload-bytes-max must be at least 1024, not {}",
                self.payload_bytes_max
            )));
        }
        for (name, value) in [
            (
                "orchestrations-per-stream-max",
                self.orchestrations_per_stream_max,
            ),
            ("activities-per-stream-max", self.activities_per_stream_max),
            ("entities-per-stream-max", self.entities_per_stream_max),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.health_ping_interval < Duration::from_millis(10) {
            return Err(ConfigError::Invalid(
                "health-ping-interval-ms must be at least 10".into(),
            ));
        }
        if self.termination_grace > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(format!(
                "termination-grace-ms must be at most 3600000 (1 h), not {}",
                self.termination_grace.as_millis()
            )));
        }
        if self.commit_linger_micros > 1_000_000 {
            return Err(ConfigError::Invalid(format!(
                "commit-linger-micros must be at most 1000000 (1 s), not {}",
                self.commit_linger_micros
            )));
        }
        if self.auth_token.is_none() && self.tls.is_none() && !self.insecure {
            let exposed = std::iter::once(self.grpc_addr)
                .chain(self.http_addr)
                .find(|addr| !addr.ip().is_loopback());
            if let Some(addr) = exposed {
                return Err(ConfigError::Invalid(format!(
                    "refusing to listen on {addr} without authentication: anyone who can \
                     reach it could run and read every orchestration. Give \
                     --auth-token-file or --tls-cert/--tls-key (see docs/security.md), bind \
                     a loopback address, or pass --insecure if the network itself is trusted"
                )));
            }
        }
        if self.http_limits.connections_max == 0 {
            return Err(ConfigError::Invalid(
                "http-connections-max must be at least 1".into(),
            ));
        }
        for (name, value) in [
            ("http-header-timeout-ms", self.http_limits.header_timeout),
            ("http-body-timeout-ms", self.http_limits.body_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(ConfigError::Invalid(format!("{name} must be at least 100")));
            }
        }
        if let Some(url) = &self.public_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            let has_host = url
                .split_once("://")
                .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
            if !scheme_ok || !has_host || url.contains(['?', '#', ' ']) {
                return Err(ConfigError::Invalid(format!(
                    "public-url {url:?} must be an http:// or https:// URL with a host and no \
                     query, e.g. https://basalt.example.com"
                )));
            }
        }
        if Some(self.grpc_addr) == self.http_addr && self.grpc_addr.port() != 0 {
            return Err(ConfigError::Invalid(format!(
                "the gRPC and HTTP addresses are both {}",
                self.grpc_addr
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_parse_and_unknown_keys_are_named() {
        let file: ServeFile =
            toml::from_str("grpc_addr = \"127.0.0.1:5000\"\npartitions = 4\nhttp_addr = \"off\"")
                .expect("parses");
        assert_eq!(file.partitions, Some(4));
        assert_eq!(parse_bytes("128MiB").expect("size"), 128 << 20);
        assert_eq!(
            parse_duration("7d").expect("duration"),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("250ms").expect("duration"),
            Duration::from_millis(250)
        );
        assert!(parse_duration("7 weeks").is_err());
        assert!(parse_duration("12").is_err());
        assert_eq!(parse_bytes("2GB").expect("size"), 2_000_000_000);
        assert_eq!(parse_bytes("4096").expect("size"), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12TB").is_err());
        assert_eq!(
            parse_http_addr(file.http_addr.as_deref().unwrap_or_default()).expect("valid"),
            None
        );
        let error = toml::from_str::<ServeFile>("partitons = 4").expect_err("typo");
        assert!(error.to_string().contains("partitons"), "{error}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let flags = ServeFile {
            partitions: Some(3),
            ..ServeFile::default()
        };
        let file = ServeFile {
            partitions: Some(5),
            hub_name: Some("from-file".into()),
            ..ServeFile::default()
        };
        let options = flags.or(file).into_options().expect("valid");
        assert_eq!(options.partitions, 3);
        assert_eq!(options.hub_name, "from-file");
        assert_eq!(options.grpc_addr, ServeOptions::default().grpc_addr);
    }

    #[test]
    fn history_streaming_and_termination_grace_come_from_the_file_or_flags() {
        let file: ServeFile =
            toml::from_str("history_streaming_bytes = 65536\ntermination_grace_ms = 250")
                .expect("parse");
        let options = ServeFile::default().or(file).into_options().expect("valid");
        assert_eq!(options.history_streaming_bytes, 65536);
        assert_eq!(options.termination_grace, Duration::from_millis(250));
        let defaults = ServeFile::default().into_options().expect("valid");
        assert_eq!(defaults.history_streaming_bytes, 1 << 20);
        assert_eq!(defaults.termination_grace, Duration::from_secs(5));
        let file: ServeFile = toml::from_str("termination_grace_ms = 3600001").expect("parse");
        let error = file.into_options().expect_err("over an hour");
        assert!(error.to_string().contains("at most"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let options = ServeOptions {
            partitions: 0,
            ..ServeOptions::default()
        };
        assert!(options.validate().is_err());
        assert!(ServeOptions::default().validate().is_ok());
        assert_eq!(parse_storage("memory"), StorageChoice::Memory);
        assert_eq!(
            parse_storage("s3://bucket/hub"),
            StorageChoice::Url("s3://bucket/hub".into())
        );
        assert_eq!(
            parse_storage("file:///var/basalt"),
            StorageChoice::LocalDir(PathBuf::from("/var/basalt"))
        );
    }
}
