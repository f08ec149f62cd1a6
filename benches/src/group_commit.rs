//! The group-commit workload: `producers` tasks share one partition and
//! append small records until a shared total is reached. Each producer
//! waits for its record to be durable before it submits the next one, as a
//! workflow step does before it acknowledges its caller.
//!
//! Three ways of making the records durable are compared ([`Mode`]):
//!
//! - **group commit**: the partition [`Log`] with its default options;
//!   whatever arrives while a write is in flight rides in the next write.
//! - **serial per-record**: the same log with `group_commit: false`, so
//!   one durable write per record, in order.
//! - **concurrent per-record**: no log at all; every record is its own
//!   object `put` through the store, issued concurrently by the producers,
//!   as a table-per-event backend does.
//!
//! Only the producing phase is timed: opening the hub and partition before
//! it, and closing the log and deleting the temporary directory after it,
//! are not. [`run`] gives the whole [`Outcome`]; [`elapsed_for_iters`] gives
//! just the elapsed time, for criterion's `iter_custom`.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use basalt_storage::{HubOptions, Log, LogLayout, LogOptions, PartitionId, Storage, TaskHub};
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tempfile::TempDir;

/// Default size of one record's payload, in bytes: about one workflow event.
pub const RECORD_BYTES_DEFAULT: usize = 200;

/// Folder the concurrent per-record mode writes its one-object-per-record
/// rows into, inside the store.
const ROWS_PREFIX: &str = "p00/rows";

/// How the records are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The partition log with group commit (its default options).
    GroupCommit,
    /// The partition log with `group_commit: false`: one durable write per
    /// record, in order.
    SerialPerRecord,
    /// No log: every record is its own object `put`, issued concurrently.
    ConcurrentPerRecord,
}

impl Mode {
    /// Every mode, in the order reports list them.
    pub const ALL: [Mode; 3] = [
        Mode::GroupCommit,
        Mode::SerialPerRecord,
        Mode::ConcurrentPerRecord,
    ];

    /// A short machine-friendly name (benchmark ids, JSON, CLI values).
    pub fn slug(self) -> &'static str {
        match self {
            Mode::GroupCommit => "group-commit",
            Mode::SerialPerRecord => "serial-per-record",
            Mode::ConcurrentPerRecord => "concurrent-per-record",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::GroupCommit => "group commit",
            Mode::SerialPerRecord => "serial per-record",
            Mode::ConcurrentPerRecord => "concurrent per-record",
        })
    }
}

/// Where the records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// A local directory with fsync, log in segment files (the embedded
    /// default).
    LocalSegmentFile,
    /// A local directory with fsync, log as one object per group commit
    /// (the layout every object store uses).
    LocalObjectPerCommit,
    /// An in-memory object store: no I/O, so it measures the CPU cost.
    Memory,
    /// The object store at [`Config::url`] (`s3://...`, `az://...`), one
    /// object per group commit; each run under a fresh prefix.
    Url,
}

impl Store {
    /// Every store of this machine, in the order reports list them.
    pub const ALL: [Store; 3] = [
        Store::LocalSegmentFile,
        Store::LocalObjectPerCommit,
        Store::Memory,
    ];

    /// A short machine-friendly name (benchmark ids, JSON, CLI values).
    pub fn slug(self) -> &'static str {
        match self {
            Store::LocalSegmentFile => "local-file",
            Store::LocalObjectPerCommit => "local-object",
            Store::Memory => "memory",
            Store::Url => "url",
        }
    }

    /// Whether the store writes to a local directory.
    pub fn is_local(self) -> bool {
        matches!(self, Store::LocalSegmentFile | Store::LocalObjectPerCommit)
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Store::LocalSegmentFile => "local fsync, segment file",
            Store::LocalObjectPerCommit => "local fsync, object per commit",
            Store::Memory => "in-memory",
            Store::Url => "object store",
        })
    }
}

/// One run of the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How records are made durable.
    pub mode: Mode,
    /// Where records go.
    pub store: Store,
    /// Concurrent producers; each waits for its record before the next.
    pub producers: usize,
    /// Records to make durable in total, across all producers.
    pub records: u64,
    /// Payload bytes of each record. Default: [`RECORD_BYTES_DEFAULT`].
    pub record_bytes: usize,
    /// Parent of the run's fresh temporary directory (local stores only).
    /// Default: the system temporary directory.
    pub dir: Option<PathBuf>,
    /// The storage URL of [`Store::Url`] (a fresh prefix below it per run).
    pub url: Option<String>,
}

impl Config {
    /// A run with the default record size in the system temporary directory.
    pub fn new(mode: Mode, store: Store, producers: usize, records: u64) -> Config {
        Config {
            mode,
            store,
            producers,
            records,
            record_bytes: RECORD_BYTES_DEFAULT,
            dir: None,
            url: None,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.producers == 0 {
            return Err(Error::InvalidConfig("producers must be at least 1".into()));
        }
        if self.record_bytes < STAMP_BYTES {
            return Err(Error::InvalidConfig(format!(
                "records must hold at least {STAMP_BYTES} bytes (their stamp), got {}",
                self.record_bytes
            )));
        }
        if (self.store == Store::Url) != self.url.is_some() {
            return Err(Error::InvalidConfig(
                "a storage URL goes with the url store, and only with it".into(),
            ));
        }
        Ok(())
    }
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Records made durable.
    pub records: u64,
    /// Time of the producing phase: first append to last durability.
    pub elapsed: Duration,
    /// Durable storage writes issued: group commits of the log, or object
    /// puts in the concurrent per-record mode.
    pub storage_writes: u64,
    /// `records / elapsed`.
    pub records_per_sec: f64,
    /// Records found in the store after the run, read back (a run whose
    /// count differs from `records` lost or duplicated records).
    pub read_back: u64,
    /// The log's counters (every durable write by kind); `None` for the
    /// concurrent per-record mode, which has no log.
    pub log_stats: Option<basalt_storage::LogStats>,
    /// Each record's time from append to durable, microseconds.
    pub latency_us: hdrhistogram::Histogram<u64>,
    /// CPU time of the producing phase alone (this process).
    pub cpu: Option<crate::resources::CpuTime>,
    /// Peak RSS at the end of the producing phase, since the caller's
    /// last [`crate::resources::reset_peak_rss`].
    pub peak_rss_bytes: Option<u64>,
}

impl Outcome {
    /// Average records carried by one storage write.
    pub fn records_per_write(&self) -> f64 {
        if self.storage_writes == 0 {
            0.0
        } else {
            self.records as f64 / self.storage_writes as f64
        }
    }
}

/// A live count of records made durable, for progress display while a run
/// is under way. Cheap to clone; clones share the count, which keeps
/// growing across the runs it is passed to.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
}

impl Progress {
    /// A count starting at zero.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Records made durable so far, by every run given this counter.
    pub fn records_done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn record_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be run.
    #[error("invalid benchmark configuration: {0}")]
    InvalidConfig(String),
    /// The task hub or its log failed.
    #[error(transparent)]
    Storage(#[from] basalt_storage::Error),
    /// An object put of the concurrent per-record mode failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Creating or removing the run's temporary directory failed.
    #[error("benchmark directory {}: {source}", path.display())]
    Io {
        /// The directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A producer task panicked or was cancelled.
    #[error("a producer task failed: {0}")]
    Producer(#[from] tokio::task::JoinError),
    /// A latency histogram could not be made.
    #[error("latency histogram: {0}")]
    Histogram(String),
}

/// Runs the workload once, in a fresh task hub.
pub async fn run(cfg: &Config) -> Result<Outcome, Error> {
    run_with_progress(cfg, &Progress::new()).await
}

/// Runs the workload once, in a fresh task hub, counting durable records
/// into `progress` as they complete.
pub async fn run_with_progress(cfg: &Config, progress: &Progress) -> Result<Outcome, Error> {
    cfg.validate()?;
    let workdir = if cfg.store.is_local() {
        Some(fresh_dir(cfg.dir.as_deref())?)
    } else {
        None
    };
    let root = workdir.as_ref().map(TempDir::path);
    let target = open_target(cfg, root).await?;

    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = crate::resources::own_cpu();
    let start = Instant::now();
    let producers: Vec<_> = (0..cfg.producers)
        .map(|producer| {
            tokio::spawn(produce(
                target.clone(),
                producer,
                Arc::clone(&next),
                cfg.records,
                cfg.record_bytes,
                progress.clone(),
            ))
        })
        .collect();
    let mut records = 0;
    let mut failure = None;
    let mut latency_us =
        hdrhistogram::Histogram::<u64>::new(3).map_err(|e| Error::Histogram(e.to_string()))?;
    for producer in producers {
        match producer.await {
            Ok(Ok((done, latencies))) => {
                records += done;
                latency_us
                    .add(&latencies)
                    .map_err(|e| Error::Histogram(e.to_string()))?;
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(Error::Producer(e));
            }
        }
    }
    let elapsed = start.elapsed();
    let cpu = crate::resources::own_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.since(&before));
    let peak_rss_bytes = crate::resources::peak_rss_bytes();

    let (storage_writes, read_back, log_stats) = match &target {
        Target::Log(log) => {
            let stats = log.stats();
            // Distinct stamps (producer, sequence): a record lost and
            // another written twice would not pass for the right count.
            let read_back = match &failure {
                None => {
                    let records = log.read_from(basalt_storage::Lsn(1)).await?;
                    let stamps: std::collections::HashSet<&[u8]> = records
                        .iter()
                        .map(|r| &r.payload[..r.payload.len().min(STAMP_BYTES)])
                        .collect();
                    stamps.len() as u64
                }
                Some(_) => 0,
            };
            let closed = log.close().await;
            if let Some(e) = failure {
                return Err(e);
            }
            closed?;
            (stats.writes, read_back, Some(stats))
        }
        Target::Objects(store) => match failure {
            Some(e) => return Err(e),
            None => {
                use futures::TryStreamExt;
                let rows = Path::from(ROWS_PREFIX);
                let listed: Vec<_> = store.list(Some(&rows)).try_collect().await?;
                (records, listed.len() as u64, None)
            }
        },
    };
    // The log, hub and directory lock go before the directory does.
    drop(target);
    if let Some(dir) = workdir {
        let path = dir.path().to_path_buf();
        dir.close().map_err(|source| Error::Io { path, source })?;
    }
    let secs = elapsed.as_secs_f64();
    Ok(Outcome {
        records,
        elapsed,
        storage_writes,
        records_per_sec: if secs > 0.0 {
            records as f64 / secs
        } else {
            0.0
        },
        read_back,
        log_stats,
        latency_us,
        cpu,
        peak_rss_bytes,
    })
}

/// Runs `iters` records with the default record size in the system
/// temporary directory and returns only the producing time: the shape
/// criterion's `iter_custom` wants.
pub async fn elapsed_for_iters(
    mode: Mode,
    store: Store,
    producers: usize,
    iters: u64,
) -> Result<Duration, Error> {
    run(&Config::new(mode, store, producers, iters))
        .await
        .map(|outcome| outcome.elapsed)
}

/// What the producers write through.
#[derive(Clone)]
enum Target {
    Log(Log),
    Objects(Arc<dyn ObjectStore>),
}

fn fresh_dir(parent: Option<&FsPath>) -> Result<TempDir, Error> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("basalt-bench-");
    match parent {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
            builder.tempdir_in(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })
        }
        None => builder.tempdir().map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        }),
    }
}

/// A fresh prefix under the configured URL, one per run.
fn fresh_url_storage(cfg: &Config) -> Result<Storage, Error> {
    let url = cfg
        .url
        .as_deref()
        .ok_or_else(|| Error::InvalidConfig("the url store needs a URL".into()))?;
    Ok(Storage::from_url(&crate::store::fresh_prefix(url))?)
}

async fn open_target(cfg: &Config, root: Option<&FsPath>) -> Result<Target, Error> {
    let local_root =
        || root.ok_or_else(|| Error::InvalidConfig(format!("{} needs a directory", cfg.store)));
    match cfg.mode {
        Mode::GroupCommit | Mode::SerialPerRecord => {
            let storage = match cfg.store {
                Store::LocalSegmentFile => {
                    Storage::local_with_layout(local_root()?, LogLayout::SegmentFile)?
                }
                Store::LocalObjectPerCommit => {
                    Storage::local_with_layout(local_root()?, LogLayout::ObjectPerCommit)?
                }
                Store::Memory => Storage::in_memory(),
                Store::Url => fresh_url_storage(cfg)?,
            };
            let hub = TaskHub::open_or_create(
                storage,
                &HubOptions {
                    name: "basalt-bench".to_owned(),
                    ..HubOptions::default()
                },
            )
            .await?;
            let options = LogOptions {
                group_commit: cfg.mode == Mode::GroupCommit,
                ..LogOptions::default()
            };
            let (log, _recovered) = hub.open_partition(PartitionId(0), options).await?;
            Ok(Target::Log(log))
        }
        Mode::ConcurrentPerRecord => {
            let store: Arc<dyn ObjectStore> = match cfg.store {
                Store::LocalSegmentFile | Store::LocalObjectPerCommit => {
                    let root = local_root()?;
                    // The "table" exists before the run, as it would in a database.
                    let rows = root.join(ROWS_PREFIX);
                    std::fs::create_dir_all(&rows)
                        .map_err(|source| Error::Io { path: rows, source })?;
                    Arc::new(LocalFileSystem::new_with_prefix(root)?.with_fsync(true))
                }
                Store::Memory => Arc::new(InMemory::new()),
                Store::Url => fresh_url_storage(cfg)?.store().clone(),
            };
            Ok(Target::Objects(store))
        }
    }
}

/// One producer: takes record numbers from `next` until `total` is reached,
/// making each record durable before taking the next. Returns its count.
async fn produce(
    target: Target,
    producer: usize,
    next: Arc<AtomicU64>,
    total: u64,
    record_bytes: usize,
    progress: Progress,
) -> Result<(u64, hdrhistogram::Histogram<u64>), Error> {
    let mut payload = vec![b'.'; record_bytes];
    let mut written = 0u64;
    let mut latency_us =
        hdrhistogram::Histogram::<u64>::new(3).map_err(|e| Error::Histogram(e.to_string()))?;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        stamp(&mut payload, producer, written);
        let started = Instant::now();
        let done = match &target {
            Target::Log(log) => match log.append(&payload).await {
                Ok(appended) => appended.durable().await.map(|_| ()).map_err(Error::from),
                Err(e) => Err(e.into()),
            },
            Target::Objects(store) => {
                let key = Path::from(format!("{ROWS_PREFIX}/{producer}-{written}"));
                let bytes = PutPayload::from(Bytes::copy_from_slice(&payload));
                store
                    .put(&key, bytes)
                    .await
                    .map(|_| ())
                    .map_err(Error::from)
            }
        };
        if let Err(e) = done {
            // Stop the other producers too: the run has failed.
            next.store(total, Ordering::Relaxed);
            return Err(e);
        }
        let _ = latency_us.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        written += 1;
        progress.record_done();
    }
    Ok((written, latency_us))
}

/// Makes every record distinct: producer id and sequence number up front,
/// the rest filler.
/// Bytes of a record's stamp (producer, sequence number).
const STAMP_BYTES: usize = 16;

fn stamp(payload: &mut [u8], producer: usize, seq: u64) {
    let mut head = [0u8; STAMP_BYTES];
    head[..8].copy_from_slice(&(producer as u64).to_le_bytes());
    head[8..].copy_from_slice(&seq.to_le_bytes());
    let n = head.len().min(payload.len());
    payload[..n].copy_from_slice(&head[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_mode_runs_in_memory() {
        for mode in Mode::ALL {
            let outcome = run(&Config::new(mode, Store::Memory, 4, 100))
                .await
                .expect("in-memory run");
            assert_eq!(outcome.records, 100, "{mode}");
            assert_eq!(outcome.read_back, 100, "{mode}");
            assert_eq!(outcome.latency_us.len(), 100, "{mode}");
            assert!(outcome.storage_writes >= 1, "{mode}");
            if mode != Mode::GroupCommit {
                assert_eq!(outcome.storage_writes, 100, "{mode}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_mode_runs_on_local_disk() {
        let parent = tempfile::tempdir().expect("temp dir");
        for store in [Store::LocalSegmentFile, Store::LocalObjectPerCommit] {
            for mode in Mode::ALL {
                let cfg = Config {
                    dir: Some(parent.path().to_path_buf()),
                    ..Config::new(mode, store, 3, 20)
                };
                let outcome = run(&cfg).await.expect("local run");
                assert_eq!(outcome.records, 20, "{store} {mode}");
                assert_eq!(outcome.read_back, 20, "{store} {mode}");
            }
        }
        // Every run removed its own directory.
        let left = std::fs::read_dir(parent.path()).expect("read dir").count();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn zero_producers_is_refused() {
        let err = run(&Config::new(Mode::GroupCommit, Store::Memory, 0, 10)).await;
        assert!(matches!(err, Err(Error::InvalidConfig(_))));
    }
}
