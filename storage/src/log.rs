//! One partition's commit log with group commit.
//!
//! Producers call [`Log::append`]: the record gets its LSN at once and is
//! framed into the open batch under a short lock. One committer task per
//! log takes the whole open batch, writes it with one storage write, and
//! only then advances the durable LSN that [`Appended::durable`] waits on.
//! Whatever arrives while a write is in flight rides in the next write, so
//! the number of writes per second stays bounded by the device while the
//! records per write grow with the load. A lone record on an idle log is
//! written at once: there is no timer anywhere on this path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use object_store::{PutMode, PutPayload};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::backend::{LogLayout, PartitionClaim, Storage};
use crate::codec::{self, RECORD_PAYLOAD_MAX, SegmentHeader};
use crate::error::{Error, Result};
use crate::recovery::{self, Recovery};
use crate::segment_file::{self, NewSegment, SegmentFile, sync_dir};
use crate::types::{Epoch, Lsn, PartitionId, Record};

/// Tuning of one partition log. Every limit has a documented default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogOptions {
    /// Gather records that arrive while a write is in flight into the next
    /// write. Off means one durable write per record, in order: the
    /// "serial per-record" baseline of the benchmarks. Default: on.
    pub group_commit: bool,
    /// Most bytes of records in one write. Default: 4 MiB.
    pub batch_bytes_max: usize,
    /// Most bytes appended but not yet durable; `append` waits beyond it
    /// (back-pressure). Default: 64 MiB.
    pub pending_bytes_max: usize,
    /// Largest record payload accepted. Default: 32 MiB (at most 64 MiB).
    pub record_bytes_max: usize,
    /// Segment-file layout: start a new file once the current one is this
    /// large. Default: 64 MiB.
    pub segment_bytes_max: u64,
    /// With group commit, how long a small batch (fewer than
    /// [`LINGER_RECORDS_ENOUGH`] records) waits for company before its
    /// write. Under a trickle of appends (e.g. workers completing one step
    /// at a time over the network) each write otherwise carries one
    /// record, and the per-write cost of the storage dominates. Zero
    /// writes at once. Default: zero.
    pub commit_linger_micros: u64,
    /// Longest a record appended with [`Log::append_deferred`] waits for
    /// its write when nobody asks for it ([`Log::request_commit`], an
    /// [`Log::append`], waiting for durability): deferred records ride
    /// along with the next write someone needs, and this bounds how long
    /// they stay volatile otherwise (what a crash loses of them is
    /// internal progress that is redone). Default: 100 ms: with many
    /// partitions on one disk a shorter bound writes each partition's
    /// trickle on its own (10 ms gave 4.8 writes per sidecar checkout
    /// over 12 partitions, 100 ms 2.9).
    pub deferred_commit_micros: u64,
    /// Segment-file layout: extend a segment in chunks of this many bytes
    /// of zeros ahead of its records, so that a group commit overwrites
    /// zeros instead of growing the file, and its `fdatasync` has no file
    /// size to journal. Zero grows the file with each write. Default:
    /// 1 MiB (at most 64 MiB).
    pub segment_preallocate_bytes: u64,
}

/// A batch with at least this many records is written without lingering.
pub const LINGER_RECORDS_ENOUGH: usize = 64;

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            group_commit: true,
            batch_bytes_max: 4 << 20,
            pending_bytes_max: 64 << 20,
            record_bytes_max: 32 << 20,
            segment_bytes_max: 64 << 20,
            commit_linger_micros: 0,
            deferred_commit_micros: 100_000,
            segment_preallocate_bytes: 1 << 20,
        }
    }
}

impl LogOptions {
    fn validate(&self) -> Result<()> {
        if self.record_bytes_max == 0 || self.record_bytes_max > RECORD_PAYLOAD_MAX {
            return Err(Error::InvalidInput(format!(
                "record_bytes_max must be 1..={RECORD_PAYLOAD_MAX}, got {}",
                self.record_bytes_max
            )));
        }
        let largest_frame = codec::record_frame_len(self.record_bytes_max);
        if self.pending_bytes_max < largest_frame {
            return Err(Error::InvalidInput(format!(
                "pending_bytes_max ({}) must hold the largest record frame ({largest_frame})",
                self.pending_bytes_max
            )));
        }
        if self.pending_bytes_max > PENDING_BYTES_LIMIT {
            return Err(Error::InvalidInput(format!(
                "pending_bytes_max ({}) must be at most {PENDING_BYTES_LIMIT}",
                self.pending_bytes_max
            )));
        }
        if self.batch_bytes_max == 0 {
            return Err(Error::InvalidInput("batch_bytes_max must be > 0".into()));
        }
        if self.deferred_commit_micros > 1_000_000 {
            return Err(Error::InvalidInput(format!(
                "deferred_commit_micros must be at most 1,000,000 (1 s), got {}",
                self.deferred_commit_micros
            )));
        }
        if self.segment_preallocate_bytes > SEGMENT_PREALLOCATE_LIMIT {
            return Err(Error::InvalidInput(format!(
                "segment_preallocate_bytes must be at most {SEGMENT_PREALLOCATE_LIMIT}, got {}",
                self.segment_preallocate_bytes
            )));
        }
        if self.commit_linger_micros > 1_000_000 {
            return Err(Error::InvalidInput(format!(
                "commit_linger_micros must be at most 1,000,000 (1 s), got {}",
                self.commit_linger_micros
            )));
        }
        Ok(())
    }
}

/// Largest `segment_preallocate_bytes` accepted (64 MiB).
const SEGMENT_PREALLOCATE_LIMIT: u64 = 64 << 20;

/// Largest `pending_bytes_max` accepted (1 TiB; the budget semaphore's
/// own limit is far above).
const PENDING_BYTES_LIMIT: usize = 1 << 40;

/// Counters of one log, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Storage writes completed (one per group commit).
    pub writes: u64,
    /// Records made durable.
    pub records: u64,
    /// Record bytes (frames, without segment headers) made durable.
    pub bytes: u64,
    /// Time spent in storage writes (write + sync), summed, in
    /// microseconds: divided by `writes`, the mean commit latency.
    pub write_micros: u64,
    /// Segment files created (segment-file layout): each is a durable
    /// write of its own (file, header, fsync, directory fsync) besides the
    /// group commit that needed it.
    pub segments_created: u64,
    /// Checkpoints written (each one durable object put).
    pub checkpoints: u64,
    /// Bytes of the checkpoints written.
    pub checkpoint_bytes: u64,
}

impl LogStats {
    /// Adds another log's counters to these.
    pub fn add(&mut self, other: &LogStats) {
        self.writes += other.writes;
        self.records += other.records;
        self.bytes += other.bytes;
        self.write_micros += other.write_micros;
        self.segments_created += other.segments_created;
        self.checkpoints += other.checkpoints;
        self.checkpoint_bytes += other.checkpoint_bytes;
    }

    /// The counters accumulated since `earlier` (taken from the same logs).
    pub fn since(&self, earlier: &LogStats) -> LogStats {
        LogStats {
            writes: self.writes.saturating_sub(earlier.writes),
            records: self.records.saturating_sub(earlier.records),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            write_micros: self.write_micros.saturating_sub(earlier.write_micros),
            segments_created: self
                .segments_created
                .saturating_sub(earlier.segments_created),
            checkpoints: self.checkpoints.saturating_sub(earlier.checkpoints),
            checkpoint_bytes: self
                .checkpoint_bytes
                .saturating_sub(earlier.checkpoint_bytes),
        }
    }
}

/// What waiters watch: how far the log is durable, or why it stopped.
#[derive(Clone, Debug, Default)]
struct CommitState {
    durable: Lsn,
    failed: Option<Arc<Error>>,
    /// The committer has exited: nothing more becomes durable.
    closed: bool,
}

/// Records framed and waiting for their write.
struct Batch {
    first_lsn: Lsn,
    last_lsn: Lsn,
    frames: Vec<u8>,
    records: usize,
}

struct OpenBatches {
    next_lsn: Lsn,
    batches: VecDeque<Batch>,
    closed: bool,
    failed: Option<Arc<Error>>,
    /// Some pending record is wanted durable now (an eager append, or a
    /// commit was requested): write without waiting.
    urgent: bool,
    /// When the oldest pending record was appended deferred, if any.
    deferred_since: Option<std::time::Instant>,
}

impl OpenBatches {
    fn pending_records(&self) -> usize {
        self.batches.iter().map(|b| b.records).sum()
    }

    /// The pending records must be written now: someone waits, the log
    /// is closing, or a full batch waits behind the open one.
    fn write_now(&self) -> bool {
        self.urgent || self.closed || self.batches.len() > 1
    }
}

struct Shared {
    storage: Storage,
    partition: PartitionId,
    epoch: Epoch,
    options: LogOptions,
    open: Mutex<OpenBatches>,
    work: Notify,
    budget: Semaphore,
    commits: watch::Sender<CommitState>,
    roll_segment: AtomicBool,
    writes: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    write_micros: AtomicU64,
    segments_created: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_bytes: AtomicU64,
    checkpointing: tokio::sync::Mutex<()>,
    /// Held until the committer exits and [`Log::close`] returns (or every
    /// clone is dropped), so the partition cannot be reopened in this
    /// process while a write of this opening may still land. `None` once
    /// closed: checkpoints and truncations of a closed log are refused.
    claim: Mutex<Option<PartitionClaim>>,
}

impl Shared {
    /// Refuses work that writes through a closed log.
    fn still_open(&self) -> Result<()> {
        match self.claim.lock().is_some() {
            true => Ok(()),
            false => Err(Error::Closed(self.partition)),
        }
    }
}

/// A partition's open commit log. Cheap to clone; the committer stops once
/// every clone is dropped or [`Log::close`] is called, after writing what
/// was appended. Dropping lets the committer finish in the background (and
/// only then releases the storage, e.g. the local directory lock); call
/// `close().await` to know when it is done.
#[derive(Clone)]
pub struct Log {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.open.lock().closed = true;
        self.shared.work.notify_one();
    }
}

/// A record accepted by [`Log::append`]: its LSN now, its durability later.
#[must_use = "a record is not durable until `durable()` resolves"]
pub struct Appended {
    lsn: Lsn,
    partition: PartitionId,
    commits: watch::Receiver<CommitState>,
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended")
            .field("partition", &self.partition)
            .field("lsn", &self.lsn)
            .finish()
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("partition", &self.partition())
            .field("epoch", &self.epoch())
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}

impl Appended {
    /// The record's position in the log.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Resolves once the record is durable; an error if its write failed or
    /// the log was shut down before it was written.
    pub async fn durable(mut self) -> Result<Lsn> {
        let lsn = self.lsn;
        let outcome = self
            .commits
            .wait_for(|s| s.durable >= lsn || s.failed.is_some() || s.closed)
            .await
            .map(|s| (s.durable, s.failed.clone()));
        match outcome {
            Ok((durable, _)) if durable >= lsn => Ok(lsn),
            Ok((_, Some(cause))) => Err(Error::LogFailed {
                partition: self.partition,
                cause,
            }),
            _ => Err(Error::Closed(self.partition)),
        }
    }
}

impl Log {
    /// Recovers the partition and starts its committer.
    pub(crate) async fn open(
        storage: Storage,
        partition: PartitionId,
        options: LogOptions,
        start: recovery::LogStart,
    ) -> Result<(Log, Recovery)> {
        options.validate()?;
        let claim = storage.claim_partition(partition)?;
        let recovered = recovery::recover(&storage, partition, start).await?;
        if let Some(root) = storage.local_root()
            && storage.layout() == LogLayout::SegmentFile
        {
            ensure_durable_dir(&root.join(codec::log_prefix(partition)))?;
        }
        let durable = Lsn(recovered.next_lsn.0 - 1);
        let (commits, _) = watch::channel(CommitState {
            durable,
            failed: None,
            closed: false,
        });
        let budget = Semaphore::new(options.pending_bytes_max);
        let shared = Arc::new(Shared {
            storage,
            partition,
            epoch: recovered.epoch,
            open: Mutex::new(OpenBatches {
                next_lsn: recovered.next_lsn,
                batches: VecDeque::new(),
                closed: false,
                failed: None,
                urgent: false,
                deferred_since: None,
            }),
            work: Notify::new(),
            budget,
            commits,
            roll_segment: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
            segments_created: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
            checkpointing: tokio::sync::Mutex::new(()),
            claim: Mutex::new(Some(claim)),
            options,
        });
        let sink = Sink::new(&shared)?;
        let committer = tokio::spawn(run_committer(Arc::clone(&shared), sink));
        let log = Log {
            handle: Arc::new(Handle {
                shared,
                committer: Mutex::new(Some(committer)),
            }),
        };
        Ok((log, recovered))
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The partition this log belongs to.
    pub fn partition(&self) -> PartitionId {
        self.shared().partition
    }

    /// The ownership epoch this log writes in.
    pub fn epoch(&self) -> Epoch {
        self.shared().epoch
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared().commits.borrow().durable
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.shared().open.lock().next_lsn
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> LogStats {
        let s = self.shared();
        LogStats {
            writes: s.writes.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            write_micros: s.write_micros.load(Ordering::Relaxed),
            segments_created: s.segments_created.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            checkpoint_bytes: s.checkpoint_bytes.load(Ordering::Relaxed),
        }
    }

    /// Appends a record: it gets the next LSN now and is written with the
    /// next group commit. Waits only when `pending_bytes_max` is reached.
    pub async fn append(&self, payload: &[u8]) -> Result<Appended> {
        self.append_with(payload, true).await
    }

    /// Appends a record that nobody waits for yet: it is written with the
    /// next write someone needs (an [`Log::append`], a
    /// [`Log::request_commit`], a wait for durability) and at the latest
    /// after `deferred_commit_micros`. For a producer that knows when its
    /// records must be durable (the partition: when an answer or a message
    /// leaves), this turns internal progress into fewer, larger writes.
    pub async fn append_deferred(&self, payload: &[u8]) -> Result<Appended> {
        self.append_with(payload, false).await
    }

    /// Asks for the records appended so far to be written now, without
    /// waiting for them.
    pub fn request_commit(&self) {
        let shared = self.shared();
        {
            let mut open = shared.open.lock();
            if open.batches.is_empty() {
                return;
            }
            open.urgent = true;
        }
        shared.work.notify_one();
    }

    async fn append_with(&self, payload: &[u8], urgent: bool) -> Result<Appended> {
        let shared = self.shared();
        if payload.len() > shared.options.record_bytes_max {
            return Err(Error::InvalidInput(format!(
                "record of {} bytes exceeds record_bytes_max ({})",
                payload.len(),
                shared.options.record_bytes_max
            )));
        }
        let frame_len = codec::record_frame_len(payload.len());
        // `validate` guarantees the frame fits in the budget, so this cannot
        // wait forever: the budget is closed when the log fails or stops.
        let Ok(permit) = shared.budget.acquire_many(frame_len as u32).await else {
            return Err(match &shared.open.lock().failed {
                Some(cause) => Error::LogFailed {
                    partition: shared.partition,
                    cause: Arc::clone(cause),
                },
                None => Error::Closed(shared.partition),
            });
        };
        let (lsn, wake) = {
            let mut open = shared.open.lock();
            if let Some(cause) = &open.failed {
                return Err(Error::LogFailed {
                    partition: shared.partition,
                    cause: Arc::clone(cause),
                });
            }
            if open.closed {
                return Err(Error::Closed(shared.partition));
            }
            let lsn = open.next_lsn;
            open.next_lsn = lsn.next();
            let group = shared.options.group_commit;
            let batch_bytes_max = shared.options.batch_bytes_max;
            let fits = open
                .batches
                .back()
                .is_some_and(|b| group && b.frames.len() + frame_len <= batch_bytes_max);
            if !fits {
                open.batches.push_back(Batch {
                    first_lsn: lsn,
                    last_lsn: lsn,
                    frames: Vec::with_capacity(if group {
                        frame_len.max(BATCH_CAPACITY_INITIAL)
                    } else {
                        frame_len
                    }),
                    records: 0,
                });
            }
            let batch = open
                .batches
                .back_mut()
                .ok_or(Error::Closed(shared.partition))?;
            codec::encode_record(&mut batch.frames, lsn, payload);
            batch.last_lsn = lsn;
            batch.records += 1;
            // The committer needs waking for an urgent record, or for the
            // first deferred one (to start its deadline); not for every
            // deferred append.
            let wake = urgent || open.deferred_since.is_none();
            if urgent {
                open.urgent = true;
            } else if open.deferred_since.is_none() {
                open.deferred_since = Some(std::time::Instant::now());
            }
            (lsn, wake)
        };
        // The bytes are returned to the budget when their write completes.
        permit.forget();
        if wake {
            shared.work.notify_one();
        }
        Ok(Appended {
            lsn,
            partition: shared.partition,
            commits: shared.commits.subscribe(),
        })
    }

    /// A subscription to the durable LSN, for a listener that releases
    /// effects once their record is durable.
    pub fn watch_durable(&self) -> DurableWatch {
        DurableWatch {
            partition: self.partition(),
            commits: self.shared().commits.subscribe(),
        }
    }

    /// Waits until every record up to `lsn` is durable (asking for the
    /// write if it was deferred).
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<Lsn> {
        if lsn > self.durable_lsn() {
            self.request_commit();
        }
        Appended {
            lsn,
            partition: self.partition(),
            commits: self.shared().commits.subscribe(),
        }
        .durable()
        .await
    }

    /// Reads back the durable records from `from` on, in order.
    pub async fn read_from(&self, from: Lsn) -> Result<Vec<Record>> {
        let durable = self.durable_lsn();
        if from > durable {
            return Ok(Vec::new());
        }
        let from = from.max(Lsn(1));
        let scan = recovery::scan(
            &self.shared().storage,
            self.partition(),
            from,
            "the requested start",
            Some(durable),
        )
        .await?;
        // Below the durable LSN nothing may be missing: a "torn" tail there
        // is damage to acknowledged records.
        if let Some((_, _, damage)) = scan.torn {
            return Err(Error::Corrupted(damage));
        }
        if scan.last_lsn < durable {
            return Err(Error::Discontinuous {
                partition: self.partition(),
                after: codec::log_prefix(self.partition()),
                end: scan.last_lsn,
                next: "the durable LSN".into(),
                start: durable,
            });
        }
        Ok(scan.records)
    }

    /// Writes a snapshot taken at `lsn` (it must include every record up to
    /// `lsn`, which must be durable), then deletes what no recovery needs any
    /// more: checkpoints older than the previous one, and segments wholly
    /// below the previous checkpoint (one spare checkpoint is kept so a
    /// damaged newest checkpoint still recovers).
    pub async fn checkpoint(&self, lsn: Lsn, snapshot: &[u8]) -> Result<CheckpointReport> {
        let shared = self.shared();
        let _serial = shared.checkpointing.lock().await;
        shared.still_open()?;
        let durable = self.durable_lsn();
        if lsn > durable {
            return Err(Error::InvalidInput(format!(
                "checkpoint at LSN {lsn} is ahead of the durable LSN {durable}"
            )));
        }
        if snapshot.len() as u64 > codec::CHECKPOINT_PAYLOAD_MAX {
            return Err(Error::InvalidInput(format!(
                "snapshot of {} bytes exceeds the checkpoint limit of {} bytes",
                snapshot.len(),
                codec::CHECKPOINT_PAYLOAD_MAX
            )));
        }
        let existing = recovery::list_checkpoints(&shared.storage, shared.partition).await?;
        if let Some(newest) = existing.last()
            && newest.lsn > lsn
        {
            return Err(Error::InvalidInput(format!(
                "checkpoint at LSN {lsn} is older than the newest checkpoint ({})",
                newest.lsn
            )));
        }
        let key = codec::checkpoint_key(shared.partition, lsn);
        let bytes = codec::encode_checkpoint(shared.partition, lsn, snapshot);
        let checkpoint_bytes = bytes.len() as u64;
        shared
            .storage
            .put(&key, PutPayload::from(bytes), PutMode::Overwrite)
            .await?;
        shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        shared
            .checkpoint_bytes
            .fetch_add(checkpoint_bytes, Ordering::Relaxed);
        // New records go to a fresh segment file, so the current one can be
        // deleted once a later checkpoint covers it.
        shared.roll_segment.store(true, Ordering::Release);

        let checkpoints = recovery::list_checkpoints(&shared.storage, shared.partition).await?;
        let kept: Vec<_> = checkpoints.iter().rev().take(2).collect();
        // With one checkpoint there is no spare: keep the whole log behind it.
        let keep_from = if kept.len() < 2 {
            Lsn::ZERO
        } else {
            kept.last().map_or(Lsn::ZERO, |c| c.lsn)
        };
        let mut report = CheckpointReport {
            key,
            ..CheckpointReport::default()
        };
        for old in checkpoints.iter().filter(|c| c.lsn < keep_from) {
            shared.storage.delete(&old.key).await?;
            report.checkpoints_deleted += 1;
        }
        let segments = recovery::list_segments(&shared.storage, shared.partition).await?;
        for pair in segments.windows(2) {
            // A segment ends right before its successor starts.
            if pair[1].first_lsn <= keep_from.next() {
                shared.storage.delete(&pair[0].key).await?;
                report.segments_deleted += 1;
            }
        }
        Ok(report)
    }

    /// The partition's state store holds everything up to `lsn` (a durable
    /// LSN): deletes what recovery no longer reads — every segment wholly
    /// at or below `lsn` and every whole-snapshot checkpoint file — and
    /// starts a new segment, so the current one can go after the next
    /// checkpoint. Counts the checkpoint (`checkpoint_bytes` written to the
    /// store) in [`LogStats`].
    pub async fn truncate_through(
        &self,
        lsn: Lsn,
        checkpoint_bytes: u64,
    ) -> Result<CheckpointReport> {
        let shared = self.shared();
        let _serial = shared.checkpointing.lock().await;
        shared.still_open()?;
        let durable = self.durable_lsn();
        if lsn > durable {
            return Err(Error::InvalidInput(format!(
                "truncation through LSN {lsn} is ahead of the durable LSN {durable}"
            )));
        }
        shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        shared
            .checkpoint_bytes
            .fetch_add(checkpoint_bytes, Ordering::Relaxed);
        shared.roll_segment.store(true, Ordering::Release);
        let mut report = CheckpointReport::default();
        for old in recovery::list_checkpoints(&shared.storage, shared.partition).await? {
            shared.storage.delete(&old.key).await?;
            report.checkpoints_deleted += 1;
        }
        let segments = recovery::list_segments(&shared.storage, shared.partition).await?;
        for pair in segments.windows(2) {
            // A segment ends right before its successor starts.
            if pair[1].first_lsn <= lsn.next() {
                shared.storage.delete(&pair[0].key).await?;
                report.segments_deleted += 1;
            }
        }
        Ok(report)
    }

    /// Stops taking appends, writes everything already appended, waits
    /// for the committer to finish and releases the partition, so this
    /// process can open it again (a partition recovering from a storage
    /// error does). Checkpoints and truncations through any clone of a
    /// closed log are refused.
    pub async fn close(&self) -> Result<()> {
        let shared = self.shared();
        shared.open.lock().closed = true;
        shared.work.notify_one();
        let committer = self.handle.committer.lock().take();
        if let Some(committer) = committer {
            let _ = committer.await;
        }
        {
            // No checkpoint or truncation is under way past this point.
            let _serial = shared.checkpointing.lock().await;
            shared.claim.lock().take();
        }
        match &shared.commits.borrow().failed {
            Some(cause) => Err(Error::LogFailed {
                partition: shared.partition,
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }
}

/// Follows the durable LSN of one log (see [`Log::watch_durable`]).
pub struct DurableWatch {
    partition: PartitionId,
    commits: watch::Receiver<CommitState>,
}

impl DurableWatch {
    /// Waits for the durable LSN to move and returns it; an error once the
    /// log failed or closed.
    pub async fn changed(&mut self) -> Result<Lsn> {
        if self.commits.changed().await.is_err() {
            return Err(Error::Closed(self.partition));
        }
        let state = self.commits.borrow_and_update();
        match &state.failed {
            Some(cause) => Err(Error::LogFailed {
                partition: self.partition,
                cause: Arc::clone(cause),
            }),
            None => Ok(state.durable),
        }
    }
}

/// What a checkpoint wrote and cleaned up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Key of the checkpoint written.
    pub key: String,
    /// Older checkpoints deleted.
    pub checkpoints_deleted: usize,
    /// Log segments deleted.
    pub segments_deleted: usize,
}

/// First capacity of a batch's frame buffer. Most commits of a busy
/// server hold one or two small records; a buffer sized for a full batch
/// (64 KiB) would be allocated and freed (or shrunk into an object) on
/// every commit. Large batches grow it by doubling.
const BATCH_CAPACITY_INITIAL: usize = 4 << 10;

/// Most times the committer yields to let just-woken producers add their
/// next records before it takes the batch. Yielding is not waiting: with
/// nobody runnable it returns at once, so an idle log still writes a lone
/// record immediately.
const GATHER_YIELDS_MAX: usize = 8;

async fn run_committer(shared: Arc<Shared>, mut sink: Sink) {
    let deferred_max = Duration::from_micros(shared.options.deferred_commit_micros);
    loop {
        let notified = shared.work.notified();
        let (pending, closed, write_now, deferred_since) = {
            let open = shared.open.lock();
            (
                open.pending_records(),
                open.closed,
                open.write_now(),
                open.deferred_since,
            )
        };
        if pending == 0 {
            if closed {
                sink.close().await;
                shared.budget.close();
                shared.commits.send_modify(|s| s.closed = true);
                return;
            }
            notified.await;
            continue;
        }
        if !write_now {
            // Only deferred records: wait for someone to need them, or
            // for their deadline.
            let deadline =
                deferred_since.map_or_else(std::time::Instant::now, |t| t + deferred_max);
            if std::time::Instant::now() < deadline {
                tokio::select! {
                    _ = notified => continue,
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
        if shared.options.group_commit {
            let mut seen = pending;
            for _ in 0..GATHER_YIELDS_MAX {
                tokio::task::yield_now().await;
                let now = shared.open.lock().pending_records();
                if now == seen {
                    break;
                }
                seen = now;
            }
            if shared.options.commit_linger_micros > 0 && seen < LINGER_RECORDS_ENOUGH {
                tokio::time::sleep(Duration::from_micros(shared.options.commit_linger_micros))
                    .await;
            }
        }
        let batch = {
            let mut open = shared.open.lock();
            let batch = open.batches.pop_front();
            if open.batches.is_empty() {
                // Everything pending is in this write.
                open.urgent = false;
                open.deferred_since = None;
            }
            batch
        };
        let Some(batch) = batch else {
            continue;
        };
        let frame_bytes = batch.frames.len();
        let (first_lsn, last_lsn, records) = (batch.first_lsn, batch.last_lsn, batch.records);
        let roll = shared.roll_segment.swap(false, Ordering::AcqRel);
        let started = std::time::Instant::now();
        match sink.write(batch, roll).await {
            Ok(created_segment) => {
                if created_segment {
                    shared.segments_created.fetch_add(1, Ordering::Relaxed);
                }
                shared.write_micros.fetch_add(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                shared.budget.add_permits(frame_bytes);
                shared.writes.fetch_add(1, Ordering::Relaxed);
                shared.records.fetch_add(records as u64, Ordering::Relaxed);
                shared
                    .bytes
                    .fetch_add(frame_bytes as u64, Ordering::Relaxed);
                shared.commits.send_modify(|s| s.durable = last_lsn);
                tracing::trace!(partition = %shared.partition, %first_lsn, %last_lsn, records, "group commit");
            }
            Err(error) => {
                tracing::error!(partition = %shared.partition, %first_lsn, %last_lsn, %error, "log write failed; the log stops");
                let cause = Arc::new(error);
                let mut open = shared.open.lock();
                open.failed = Some(Arc::clone(&cause));
                open.batches.clear();
                drop(open);
                // Wake appenders waiting for budget: they get `LogFailed`.
                shared.budget.close();
                shared.commits.send_modify(|s| {
                    s.failed = Some(cause);
                    s.closed = true;
                });
                return;
            }
        }
    }
}

/// The write path of one layout.
enum Sink {
    Objects {
        storage: Storage,
        partition: PartitionId,
        epoch: Epoch,
    },
    File(FileSink),
}

struct FileSink {
    new_segment: NewSegment,
    segment_bytes_max: u64,
    preallocate: u64,
    current: Option<SegmentFile>,
}

impl Sink {
    fn new(shared: &Shared) -> Result<Sink> {
        match (shared.storage.layout(), shared.storage.local_root()) {
            (LogLayout::SegmentFile, Some(root)) => Ok(Sink::File(FileSink {
                new_segment: NewSegment {
                    dir: root.join(codec::log_prefix(shared.partition)),
                    partition: shared.partition,
                    epoch: shared.epoch,
                },
                segment_bytes_max: shared.options.segment_bytes_max,
                preallocate: shared.options.segment_preallocate_bytes,
                current: None,
            })),
            (LogLayout::SegmentFile, None) => Err(Error::InvalidInput(
                "the segment-file log layout needs a local directory".into(),
            )),
            (LogLayout::ObjectPerCommit, _) => Ok(Sink::Objects {
                storage: shared.storage.clone(),
                partition: shared.partition,
                epoch: shared.epoch,
            }),
        }
    }

    /// Writes a batch durably; `true` if a new segment file had to be
    /// created for it.
    async fn write(&mut self, batch: Batch, roll: bool) -> Result<bool> {
        match self {
            Sink::Objects {
                storage,
                partition,
                epoch,
            } => {
                let key = codec::segment_key(*partition, *epoch, batch.first_lsn);
                let header = SegmentHeader {
                    partition: *partition,
                    epoch: *epoch,
                    first_lsn: batch.first_lsn,
                }
                .encode();
                let payload = PutPayload::from_iter([
                    Bytes::copy_from_slice(&header),
                    Bytes::from(batch.frames),
                ]);
                storage.put(&key, payload, PutMode::Create).await?;
                Ok(false)
            }
            Sink::File(sink) => {
                let mut current = sink.current.take();
                if roll
                    || current
                        .as_ref()
                        .is_some_and(|f| f.len() >= sink.segment_bytes_max)
                {
                    // The old segment keeps its unused zeros (they read
                    // as its end): cutting them off while a reader of the
                    // live hub may be reading it would fail that read.
                    current = None;
                }
                let creates = current.is_none();
                let written = segment_file::write(segment_file::Write {
                    current,
                    new_segment: sink.new_segment.clone(),
                    first_lsn: batch.first_lsn,
                    frames: batch.frames,
                    preallocate: sink.preallocate,
                })
                .await?;
                sink.current = Some(written);
                Ok(creates)
            }
        }
    }

    /// The log is closing: hands its open segment back to the device.
    async fn close(&mut self) {
        if let Sink::File(sink) = self
            && let Some(file) = sink.current.take()
        {
            segment_file::close(file).await;
        }
    }
}

/// Creates a directory and makes its entry durable in every parent up to
/// the first one that already existed.
fn ensure_durable_dir(dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut current = Some(dir);
    while let Some(path) = current {
        sync_dir(path)?;
        current = path.parent();
        if current.is_some_and(|p| p.join(codec::TASKHUB_KEY).exists()) {
            if let Some(root) = current {
                sync_dir(root)?;
            }
            break;
        }
    }
    Ok(())
}
