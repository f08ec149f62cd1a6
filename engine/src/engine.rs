//! The engine: opens (recovers) every partition of a task hub, runs one
//! task per partition plus the timer task, and implements the runtime's
//! `Backend` by routing each call to the partition that owns the instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use basalt_partitions::{ControlOp, Event, PartitionState, Reply, StateKey, codec, partition_of};
use basalt_runtime::{
    ActivityOutcome, ActivityWorkItem, Backend, CompletionToken, EntityBatchResult, EntityId,
    EntityOperation, EntityPage, EntityQuery, EntityState, EntityWorkItem, Error, HistoryEvent,
    InstanceId, InstanceQuery, InstanceState, OrchestrationStepResult, OrchestrationWorkItem,
    QueryPage, StartRequest,
};
use basalt_storage::{HubOptions, LogOptions, Storage, TaskHub};
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::partition::{Command, PartitionTask, Query, Read, ReplyWhen};
use crate::queue::WorkQueue;
use crate::shared::Shared;
use crate::timers::{Timers, now_ms, run_timers};
use crate::token::{ActivityToken, EntityToken, StepToken};
use crate::transport::InProcess;

/// Engine settings, each with a documented default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineOptions {
    /// Task hub name. Default: "basalt".
    pub hub_name: String,
    /// Partitions, fixed when the hub is created. Default: 12.
    pub partition_count: u32,
    /// Largest input, output or event payload, in bytes. Default: 16 MiB.
    pub payload_bytes_max: usize,
    /// Checkpoint a partition after this many events. Default: 10,000.
    pub checkpoint_interval_events: u64,
    /// Checkpoint a partition after this many bytes of events. Default: 64 MiB.
    pub checkpoint_interval_bytes: u64,
    /// Checkpoint a partition that has been idle this long with new
    /// events, in milliseconds. Default: 2,000.
    pub checkpoint_idle_ms: u64,
    /// The commit log's options (group commit, batch limits).
    pub log: LogOptions,
    /// Hand out local work (orchestration steps, activities, entity
    /// batches, timers) as soon as the event that made it is applied,
    /// before that event is durable (safe: a lost step is redone after
    /// recovery). Off holds local work, like outward effects, until its
    /// event is durable: the "no pipelining" baseline of the benchmarks,
    /// not a way to run. Default: on.
    pub pipelining: bool,
    /// Memory for partition state, in bytes, for the whole engine: about
    /// half holds records (split evenly over the partitions), an eighth
    /// caches the state stores' blocks, an eighth holds checkpoints not yet
    /// flushed to the stores' tables, the rest is headroom for queues and
    /// checkpoints in flight. Records not in memory are read from the
    /// partition's state store when an event needs them. Default: 256 MiB.
    pub memory_budget_bytes: u64,
    /// Most work items (orchestration steps, activities, entity batches)
    /// waiting for workers; beyond it, new starts, raised events and
    /// signals are refused with `Error::Overloaded` (work already accepted
    /// goes on). `None`: one per 4 KiB of the memory budget (65,536 at the
    /// default 256 MiB), at least 1,024, so work nobody takes cannot outgrow
    /// the budget.
    pub queued_work_max: Option<usize>,
    /// Most client requests (starts, raised events, signals) in flight at
    /// once; beyond it they are refused with `Error::Overloaded`.
    /// Default: 16,384.
    pub client_requests_max: usize,
    /// Checkpoint bytes each partition's store holds in memory before it
    /// flushes them to a table. `None`: an eighth of the memory budget,
    /// split over the partitions, at least 1 MiB.
    pub store_flush_bytes_max: Option<u64>,
    /// Commands (client requests, worker results, fired timers) each
    /// partition's queue holds; a sender waits for room. Default: 1,024.
    pub command_queue_max: usize,
    /// Deliveries (message batches, acks) from other partitions each
    /// partition's mailbox holds; a sender whose receiver is full keeps
    /// them and retries, and past 1,024 kept takes no new commands.
    /// Default: 256.
    pub mailbox_max: usize,
    /// Purge finished instances (and their history) whose last change is
    /// older than this many milliseconds, in the background, in bounded
    /// batches. Default: off (`None`), as in the Durable Task Scheduler,
    /// where retention is a policy one sets.
    pub retention_ms: Option<u64>,
    /// How often each partition takes a step of the retention sweep (at
    /// most 1,024 records examined, 256 purged), in milliseconds.
    /// Default: 1,000.
    pub retention_sweep_ms: u64,
    /// A partition stopped by a storage error (disk full, a revoked
    /// permission, an object store outage) reopens itself from storage,
    /// first after 100 ms, then waiting twice as long after each failed
    /// attempt, up to this many milliseconds. Default: 10,000.
    pub reopen_backoff_max_ms: u64,
}

impl EngineOptions {
    /// The limit of work waiting for workers (see `queued_work_max`).
    pub fn queued_work_limit(&self) -> usize {
        match self.queued_work_max {
            Some(max) => max.max(1),
            None => ((self.memory_budget_bytes / 4096) as usize).max(1024),
        }
    }

    /// Bytes of records each partition keeps in memory.
    pub fn partition_records_budget(&self) -> usize {
        (self.memory_budget_bytes / 2 / u64::from(self.partition_count.max(1))) as usize
    }

    /// Checkpoint bytes each partition's store holds in memory before it
    /// flushes them to a table (see `store_flush_bytes_max`).
    pub fn partition_store_flush_bytes(&self) -> u64 {
        self.store_flush_bytes_max.unwrap_or_else(|| {
            (self.memory_budget_bytes / 8 / u64::from(self.partition_count.max(1))).max(1 << 20)
        })
    }

    /// Bytes of the state stores' shared block cache.
    pub fn store_cache_bytes(&self) -> u64 {
        self.memory_budget_bytes / 8
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            hub_name: "basalt".into(),
            partition_count: 12,
            payload_bytes_max: 16 << 20,
            checkpoint_interval_events: 10_000,
            checkpoint_interval_bytes: 64 << 20,
            checkpoint_idle_ms: 2_000,
            log: LogOptions::default(),
            pipelining: true,
            memory_budget_bytes: 256 << 20,
            queued_work_max: None,
            client_requests_max: 16_384,
            store_flush_bytes_max: None,
            command_queue_max: 1_024,
            mailbox_max: 256,
            retention_ms: None,
            retention_sweep_ms: 1_000,
            reopen_backoff_max_ms: 10_000,
        }
    }
}

/// One partition's figures for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMetrics {
    /// The partition.
    pub partition: u32,
    /// Its log's counters since the engine opened.
    pub log: basalt_storage::LogStats,
    /// Instances it holds, by status.
    pub instances_by_status: std::collections::BTreeMap<basalt_runtime::OrchestrationStatus, u64>,
    /// Entities it holds.
    pub entities: u64,
    /// Records (instances, entities, known absences) in memory.
    pub records_resident: u64,
    /// Estimated bytes of the records in memory (what the budget limits).
    pub records_resident_bytes: u64,
    /// Whether it serves; `false` while a storage error has it stopped
    /// (its state figures are zero then).
    pub serving: bool,
    /// Times a storage error stopped it since the engine opened.
    pub storage_failures: u64,
    /// Times it reopened itself after such a stop.
    pub reopens: u64,
    /// Attempts to reopen it that failed (storage still broken).
    pub reopen_failures: u64,
    /// The last storage error, if any.
    pub last_storage_error: Option<String>,
    /// Where its log and checkpoints stand.
    pub position: LogPosition,
    /// Orchestration steps of its instances waiting for a worker.
    pub queued_steps: u64,
    /// Activities of its instances waiting for a worker.
    pub queued_activities: u64,
}

/// Where a partition's log and checkpoints stand: what an operator reads
/// to see how much a restart would replay and whether checkpoints keep up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPosition {
    /// The LSN the next event gets.
    pub next_lsn: u64,
    /// Every event up to this LSN is durable.
    pub durable_lsn: u64,
    /// The LSN the last checkpoint taken covers (written or in flight).
    pub checkpoint_lsn: u64,
    /// The LSN and wall-clock time (ms since the Unix epoch) of the last
    /// checkpoint written since the partition (re)opened.
    pub checkpoint_written: Option<(u64, u64)>,
    /// Events logged since the last checkpoint: what a restart replays.
    pub events_since_checkpoint: u64,
    /// Bytes of those events.
    pub bytes_since_checkpoint: u64,
    /// Messages sent to other partitions and not yet acknowledged by them.
    pub outbox_messages: u64,
}

/// Why an engine could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The storage layer failed (damage, lock, mismatch, I/O).
    #[error(transparent)]
    Storage(#[from] basalt_storage::Error),
    /// A partition's state store could not be read while recovering.
    #[error("{0}")]
    State(String),
    /// A logged event or snapshot does not decode.
    #[error("partition {partition}: {what} at LSN {lsn} does not decode: {message}")]
    Decode {
        /// The partition.
        partition: u32,
        /// Event or snapshot.
        what: &'static str,
        /// Where.
        lsn: u64,
        /// What the decoder said.
        message: String,
    },
}

/// A running engine over one task hub. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// One permit per client request in flight (admission control).
    requests: Arc<tokio::sync::Semaphore>,
    options: EngineOptions,
    hub: TaskHub,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Opens (creating if needed) the task hub in `storage`, recovers every
    /// partition from its checkpoint and log, and starts them.
    pub async fn open(storage: Storage, options: EngineOptions) -> Result<Engine, OpenError> {
        let mut hub = TaskHub::open_or_create(
            storage,
            &HubOptions {
                name: options.hub_name.clone(),
                partition_count: options.partition_count,
            },
        )
        .await?;
        hub.upgrade().await?;
        let count = options.partition_count;
        let mut routes = Vec::new();
        let mut mailboxes = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..count {
            let (tx, rx) = mpsc::channel(options.command_queue_max.max(1));
            let (mail_tx, mail_rx) = mpsc::channel(options.mailbox_max.max(1));
            routes.push(tx);
            mailboxes.push(mail_tx);
            receivers.push((rx, mail_rx));
        }
        // Recover every partition before starting any, so a failure leaves
        // nothing running.
        let store_options = basalt_storage::StateStoreOptions {
            cache: basalt_storage::StateCache::new(options.store_cache_bytes()),
            ..basalt_storage::StateStoreOptions::default()
        };
        let mut opened = Vec::new();
        for partition in 0..count {
            let recovered = crate::tiers::recover_partition(
                &hub,
                partition,
                count,
                options.log.clone(),
                &store_options,
            )
            .await?;
            if let Some(torn) = &recovered.torn_tail {
                tracing::warn!(partition, ?torn, "recovered with a trimmed torn tail");
            }
            opened.push((partition, recovered));
        }
        let mut tasks = Vec::new();
        let stores = opened
            .iter()
            .map(|(_, recovered)| Mutex::new(Arc::clone(&recovered.store)))
            .collect();
        let (timers, armed) = Timers::new();
        let transport = Box::new(InProcess { mailboxes });
        let shared = Arc::new(Shared {
            partitions: routes,
            transport,
            steps: WorkQueue::new(),
            activities: WorkQueue::new(),
            entity_batches: WorkQueue::new(),
            timers,
            waiters: DashMap::new(),
            incarnation: rand::random::<u32>() as u64,
            health: (0..count).map(|_| Default::default()).collect(),
            ended: Default::default(),
            stores,
            checkpoints: parking_lot::Mutex::new(crate::shared::CheckpointWindow::default()),
            hosted: tokio::sync::Notify::new(),
            hosted_changes: (0..count).map(|_| Default::default()).collect(),
        });
        for ((partition, recovered), (commands, mailbox)) in opened.into_iter().zip(receivers) {
            let task = PartitionTask {
                partition,
                state: recovered.state,
                log: recovered.log,
                store: recovered.store,
                store_lsn: recovered.store_lsn,
                records_budget: options.partition_records_budget(),
                store_flush_bytes: options.partition_store_flush_bytes(),
                shared: Arc::clone(&shared),
                commands,
                mailbox,
                undelivered: std::collections::VecDeque::new(),
                checkpoint_interval_events: options.checkpoint_interval_events.max(1),
                checkpoint_interval_bytes: options.checkpoint_interval_bytes.max(1),
                checkpoint_idle: Duration::from_millis(options.checkpoint_idle_ms.max(1)),
                offered: std::collections::HashMap::new(),
                pipelining: options.pipelining,
                retention: options.retention_ms.map(Duration::from_millis),
                retention_sweep: Duration::from_millis(options.retention_sweep_ms.max(1)),
                reopen: crate::partition::Reopen {
                    hub: hub.clone(),
                    partition_count: count,
                    log_options: options.log.clone(),
                    store_options: store_options.clone(),
                    backoff_max: Duration::from_millis(options.reopen_backoff_max_ms.max(1)),
                    failures_in_a_row: 0,
                },
            };
            tasks.push(tokio::spawn(task.run()));
        }
        tasks.push(tokio::spawn(run_timers(Arc::clone(&shared), armed)));
        Ok(Engine {
            inner: Arc::new(Inner {
                requests: Arc::new(tokio::sync::Semaphore::new(
                    options.client_requests_max.max(1),
                )),
                shared,
                options,
                hub,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// The task hub it runs.
    pub fn hub(&self) -> &TaskHub {
        &self.inner.hub
    }

    /// The checkpoints written since the previous call (or the open), and
    /// starts a new window.
    pub fn take_checkpoint_window(&self) -> crate::shared::CheckpointWindow {
        std::mem::take(&mut *self.inner.shared.checkpoints.lock())
    }

    /// Admission control: refuses a new start, raised event or signal when
    /// the engine cannot take more (too much work waits for workers, or
    /// too many requests are in flight), so nothing grows without bound
    /// and what was accepted is not slowed down. The permit is held until
    /// the request is answered.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        let shared = &self.inner.shared;
        let queued = shared.steps.len() + shared.activities.len() + shared.entity_batches.len();
        let limit = self.inner.options.queued_work_limit();
        if queued >= limit {
            return Err(Error::Overloaded {
                what: format!("{queued} work items wait for workers (the limit is {limit})"),
                retry_after_ms: 1_000,
            });
        }
        Arc::clone(&self.inner.requests)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded {
                what: format!(
                    "{} client requests are in flight (the limit)",
                    self.inner.options.client_requests_max
                ),
                retry_after_ms: 100,
            })
    }

    /// Point reads of the partitions' stores since the engine opened
    /// (records loaded into memory, or looked up and found absent).
    pub fn store_reads(&self) -> u64 {
        self.inner
            .shared
            .stores
            .iter()
            .map(|store| store.lock().gets())
            .sum()
    }

    /// Orchestration steps and activities waiting for a worker.
    pub fn queued_work(&self) -> (usize, usize) {
        (
            self.inner.shared.steps.len(),
            self.inner.shared.activities.len(),
        )
    }

    /// Storage writes, records and bytes of every partition log since the
    /// engine opened, summed.
    pub async fn log_stats(&self) -> Result<basalt_storage::LogStats, Error> {
        let mut total = basalt_storage::LogStats::default();
        for partition in 0..self.partition_count() {
            let (tx, rx) = oneshot::channel();
            self.command(partition, Command::LogStats(tx)).await?;
            let stats = rx.await.map_err(|_| Error::ShutDown)?;
            total.add(&stats);
        }
        Ok(total)
    }

    /// Whether each partition serves: it answers a read within `wait`
    /// (a partition stopped by a storage error answers with that error; a
    /// stuck or overloaded one does not answer in time). For readiness
    /// probes.
    pub async fn readiness(&self, wait: std::time::Duration) -> Vec<(u32, Result<(), Error>)> {
        let mut probes = tokio::task::JoinSet::new();
        for partition in 0..self.partition_count() {
            let engine = self.clone();
            probes.spawn(async move {
                let probe = engine.read(partition, None, |_| ());
                let answer = match tokio::time::timeout(wait, probe).await {
                    Ok(answer) => answer,
                    Err(_) => Err(Error::Timeout(wait.as_millis() as u64)),
                };
                (partition, answer)
            });
        }
        let mut answers = probes.join_all().await;
        answers.sort_by_key(|(partition, _)| *partition);
        answers
    }

    /// Per partition, its log counters and how many instances it holds by
    /// status (for `/metrics`). The counts reflect durable state.
    pub async fn partition_metrics(&self) -> Result<Vec<PartitionMetrics>, Error> {
        let mut all = Vec::new();
        let count = self.partition_count();
        let mut queued_steps = vec![0u64; count as usize];
        let mut queued_activities = vec![0u64; count as usize];
        self.inner.shared.steps.for_each(|step| {
            if let Some(n) = queued_steps.get_mut(step.partition as usize) {
                *n += 1;
            }
        });
        self.inner.shared.activities.for_each(|activity| {
            let partition = partition_of(activity.instance_id.as_str(), count);
            if let Some(n) = queued_activities.get_mut(partition as usize) {
                *n += 1;
            }
        });
        for partition in 0..count {
            let (tx, rx) = oneshot::channel();
            self.command(partition, Command::Status(tx)).await?;
            let (log, position) = rx.await.map_err(|_| Error::ShutDown)?;
            let figures = self
                .read(partition, None, |state| {
                    (
                        state.instances_by_status.clone(),
                        state.entities_with_state,
                        (state.instances.resident_len() + state.entities.resident_len()) as u64,
                        state.resident_bytes() as u64,
                    )
                })
                .await;
            let health = &self.inner.shared.health[partition as usize];
            // A stopped partition answers reads with its error: the
            // figures say so instead of failing the whole report.
            let (serving, (instances_by_status, entities, resident, resident_bytes)) = match figures
            {
                Ok(figures) => (true, figures),
                Err(_) if health.stopped.load(Ordering::Acquire) => (false, Default::default()),
                Err(e) => return Err(e),
            };
            all.push(PartitionMetrics {
                partition,
                log,
                instances_by_status,
                entities,
                records_resident: resident,
                records_resident_bytes: resident_bytes,
                serving,
                storage_failures: health.failures.load(Ordering::Relaxed),
                reopens: health.reopens.load(Ordering::Relaxed),
                reopen_failures: health.reopen_failures.load(Ordering::Relaxed),
                last_storage_error: health.last_error.lock().clone(),
                position,
                queued_steps: queued_steps[partition as usize],
                queued_activities: queued_activities[partition as usize],
            });
        }
        Ok(all)
    }

    pub(crate) fn partition_count(&self) -> u32 {
        self.inner.options.partition_count
    }

    /// Queues a command for a partition, waiting while its queue is full.
    pub(crate) async fn command(&self, partition: u32, command: Command) -> Result<(), Error> {
        self.inner
            .shared
            .partitions
            .get(partition as usize)
            .ok_or_else(|| Error::InvalidInput(format!("no partition {partition}")))?
            .send(command)
            .await
            .map_err(|_| Error::ShutDown)
    }

    pub(crate) async fn submit(
        &self,
        partition: u32,
        event: Event,
        when: ReplyWhen,
    ) -> Result<Reply, Error> {
        let (tx, rx) = oneshot::channel();
        self.command(
            partition,
            Command::Submit {
                event,
                reply: Some(tx),
                when,
            },
        )
        .await?;
        rx.await.map_err(|_| Error::ShutDown)?
    }

    async fn submit_for(&self, instance: &InstanceId, event: Event) -> Result<Reply, Error> {
        let partition = partition_of(instance.as_str(), self.partition_count());
        self.submit(partition, event, ReplyWhen::Durable).await
    }

    /// Runs `read` on a partition's state; the answer comes once everything
    /// it saw is durable (I1): for a `key`, that record's last change
    /// (see `Command::Read`). `key` names the record the read needs in
    /// memory, if any.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        partition: u32,
        key: Option<StateKey>,
        read: impl FnOnce(&PartitionState) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.ask(partition, read, |read| Command::Read(key, read))
            .await
    }

    /// Reads a partition's state as applied, without waiting for it to be
    /// durable: for the engine's own decisions only (see `Command::Peek`).
    pub(crate) async fn peek<T: Send + 'static>(
        &self,
        partition: u32,
        key: StateKey,
        read: impl FnOnce(&PartitionState) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.ask(partition, read, |read| Command::Peek(key, read))
            .await
    }

    /// Reads a partition's state as applied without loading any record
    /// (see `Command::PeekAll`): the hosted fetchers' look.
    pub(crate) async fn peek_all<T: Send + 'static>(
        &self,
        partition: u32,
        read: impl FnOnce(&PartitionState) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.ask(partition, read, Command::PeekAll).await
    }

    /// What the engine's parts share.
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Sends `read` to a partition in the command `command` makes of it
    /// and waits for the answer.
    async fn ask<T: Send + 'static>(
        &self,
        partition: u32,
        read: impl FnOnce(&PartitionState) -> T + Send + 'static,
        command: impl FnOnce(Read) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let read: Read = Box::new(move |state: Result<&PartitionState, Error>| {
            let answer = state.map(read);
            Box::new(move || {
                let _ = tx.send(answer);
            })
        });
        self.command(partition, command(read)).await?;
        rx.await.map_err(|_| Error::ShutDown)?
    }

    fn check_payload(&self, what: &str, payload: &Option<String>) -> Result<(), Error> {
        let max = self.inner.options.payload_bytes_max;
        match payload {
            Some(p) if p.len() > max => Err(Error::InvalidInput(format!(
                "{what} is {} bytes, the limit is {max} bytes",
                p.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Writes a checkpoint of every partition now.
    pub async fn checkpoint(&self) -> Result<(), Error> {
        for partition in 0..self.partition_count() {
            let (tx, rx) = oneshot::channel();
            self.command(partition, Command::Checkpoint(tx)).await?;
            rx.await.map_err(|_| Error::ShutDown)??;
        }
        Ok(())
    }

    /// The encoded state of a partition and the LSN it reflects, once that
    /// LSN is durable: what recovery must reproduce byte for byte (I2).
    pub async fn partition_snapshot(&self, partition: u32) -> Result<(u64, Vec<u8>), Error> {
        let (tx, rx) = oneshot::channel();
        self.command(partition, Command::Snapshot(tx)).await?;
        rx.await.map_err(|_| Error::ShutDown)?
    }

    /// Stops taking work, makes everything appended durable, checkpoints
    /// every partition and stops its tasks.
    pub async fn shutdown(&self) {
        self.inner.shared.steps.close();
        self.inner.shared.activities.close();
        self.inner.shared.entity_batches.close();
        for partition in 0..self.partition_count() {
            let (tx, rx) = oneshot::channel();
            if self.command(partition, Command::Shutdown(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
        let tasks: Vec<_> = self.inner.tasks.lock().drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Rebuilds a partition's state read-only from storage and encodes it: the
/// replay check compares it byte for byte with a live engine's (I2).
pub async fn replay_partition(
    storage: &Storage,
    partition: u32,
    partition_count: u32,
) -> Result<(u64, Vec<u8>), OpenError> {
    let state = crate::tiers::replay_partition_state(storage, partition, partition_count).await?;
    let bytes = codec::encode_snapshot(&state).map_err(|e| OpenError::Decode {
        partition,
        what: "snapshot",
        lsn: state.last_lsn,
        message: e.to_string(),
    })?;
    Ok((state.last_lsn, bytes))
}

fn new_instance_id() -> String {
    let a: u64 = rand::random();
    let b: u64 = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Longest orchestration, activity or event name, in bytes.
const NAME_BYTES_MAX: usize = 1024;
/// Longest orchestration or activity version, in bytes.
pub const VERSION_BYTES_MAX: usize = 256;
/// Most actions one orchestration step may return: a step past it fails
/// its instance (`TooManyActions`) instead of scheduling them.
pub const ACTIONS_PER_STEP_MAX: usize = 10_000;

/// Most tags one instance may carry.
pub const TAGS_MAX: usize = 64;
/// Longest tag name, in bytes.
pub const TAG_NAME_BYTES_MAX: usize = 256;
/// Longest tag value, in bytes.
pub const TAG_VALUE_BYTES_MAX: usize = 4096;

/// Tags are labels kept with the instance: bounded in number and size.
fn check_tags(tags: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > TAGS_MAX {
        return Err(format!(
            "{} tags given; at most {TAGS_MAX} are kept",
            tags.len()
        ));
    }
    for (name, value) in tags {
        if name.is_empty() || name.len() > TAG_NAME_BYTES_MAX {
            return Err(format!(
                "tag name of {} bytes; tag names are 1 to {TAG_NAME_BYTES_MAX} bytes",
                name.len()
            ));
        }
        if value.len() > TAG_VALUE_BYTES_MAX {
            return Err(format!(
                "tag {name:?} has a value of {} bytes; the limit is {TAG_VALUE_BYTES_MAX}",
                value.len()
            ));
        }
    }
    Ok(())
}

fn check_version(what: &str, version: Option<&str>) -> Result<(), String> {
    match version {
        Some(v) if v.len() > VERSION_BYTES_MAX => Err(format!(
            "{what} has a version of {} bytes; the limit is {VERSION_BYTES_MAX}",
            v.len()
        )),
        _ => Ok(()),
    }
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(Error::InvalidInput(format!(
            "{what} must be 1..={NAME_BYTES_MAX} bytes, got {} bytes",
            name.len()
        )));
    }
    Ok(())
}

fn reply_done(reply: Reply) -> Result<(), Error> {
    match reply {
        Reply::Rejected(e) => Err(e),
        _ => Ok(()),
    }
}

#[async_trait]
impl Backend for Engine {
    fn is_stale(&self, token: &CompletionToken) -> bool {
        let shared = &self.inner.shared;
        let current = |partition: u32, incarnation: u64| {
            partition < self.partition_count() && incarnation == shared.incarnation_of(partition)
        };
        match token.0.get(..2) {
            Some("a:") => ActivityToken::parse(token).is_ok_and(|t| {
                !current(t.partition, t.incarnation)
                    || shared.ended.lock().contains(&t.instance_id, t.execution)
            }),
            Some("s:") => {
                StepToken::parse(token).is_ok_and(|t| !current(t.partition, t.incarnation))
            }
            Some("e:") => {
                EntityToken::parse(token).is_ok_and(|t| !current(t.partition, t.incarnation))
            }
            _ => false,
        }
    }

    async fn start_instance(&self, request: StartRequest) -> Result<InstanceId, Error> {
        check_name("orchestration name", &request.name)?;
        check_version("the orchestration", request.version.as_deref())
            .map_err(Error::InvalidInput)?;
        self.check_payload("input", &request.input)?;
        check_tags(&request.tags).map_err(Error::InvalidInput)?;
        let instance_id = InstanceId::new(request.instance_id.unwrap_or_else(new_instance_id))?;
        let _permit = self.admit()?;
        let event = Event::Start {
            instance_id: instance_id.clone(),
            name: request.name,
            version: request.version,
            input: request.input,
            scheduled_start_ms: request.scheduled_start_ms,
            tags: request.tags,
            now_ms: now_ms(),
        };
        reply_done(self.submit_for(&instance_id, event).await?)?;
        Ok(instance_id)
    }

    async fn raise_event(
        &self,
        instance: &InstanceId,
        name: &str,
        data: Option<String>,
    ) -> Result<(), Error> {
        check_name("event name", name)?;
        self.check_payload("event data", &data)?;
        let _permit = self.admit()?;
        let event = Event::Raise {
            instance_id: instance.clone(),
            name: name.to_owned(),
            data,
            now_ms: now_ms(),
        };
        reply_done(self.submit_for(instance, event).await?)
    }

    async fn terminate(&self, instance: &InstanceId, reason: Option<String>) -> Result<(), Error> {
        self.control(instance, ControlOp::Terminate, reason).await
    }

    async fn terminate_after_step(
        &self,
        instance: &InstanceId,
        reason: Option<String>,
    ) -> Result<(), Error> {
        self.control(instance, ControlOp::TerminateAfterStep, reason)
            .await
    }

    async fn suspend(&self, instance: &InstanceId, reason: Option<String>) -> Result<(), Error> {
        self.control(instance, ControlOp::Suspend, reason).await
    }

    async fn resume(&self, instance: &InstanceId, reason: Option<String>) -> Result<(), Error> {
        self.control(instance, ControlOp::Resume, reason).await
    }

    async fn rewind(&self, instance: &InstanceId, reason: Option<String>) -> Result<(), Error> {
        self.control(instance, ControlOp::Rewind, reason).await
    }

    async fn rewind_recreating(
        &self,
        instance: &InstanceId,
        reason: Option<String>,
        recreate: Vec<InstanceId>,
    ) -> Result<(), Error> {
        if recreate.is_empty() {
            return self.rewind(instance, reason).await;
        }
        // Not refused under load (as no control is): a refusal in the
        // middle of a rewound tree would leave a parent waiting.
        self.check_payload("reason", &reason)?;
        let event = Event::RewindRecreating {
            instance_id: instance.clone(),
            reason,
            recreate,
            now_ms: now_ms(),
        };
        reply_done(self.submit_for(instance, event).await?)
    }

    async fn purge(&self, instance: &InstanceId) -> Result<bool, Error> {
        let event = Event::Purge {
            instance_id: instance.clone(),
        };
        match self.submit_for(instance, event).await? {
            Reply::Purged(purged) => Ok(purged),
            Reply::Rejected(e) => Err(e),
            Reply::Done | Reply::Hosted(..) => Ok(true),
        }
    }

    async fn get_instance(&self, instance: &InstanceId) -> Result<Option<InstanceState>, Error> {
        let id = instance.clone();
        let partition = partition_of(instance.as_str(), self.partition_count());
        let key = Some(StateKey::Instance(id.clone()));
        self.read(partition, key, move |state| {
            state.instance(&id).map(|i| i.meta.clone())
        })
        .await
    }

    async fn get_history(&self, instance: &InstanceId) -> Result<Vec<HistoryEvent>, Error> {
        let id = instance.clone();
        let partition = partition_of(instance.as_str(), self.partition_count());
        let key = Some(StateKey::Instance(id.clone()));
        self.read(partition, key, move |state| {
            state.instance(&id).map(|i| {
                let mut history = (*i.history).clone();
                history.extend(i.inbox.iter().cloned());
                history
            })
        })
        .await?
        .ok_or_else(|| Error::NotFound(instance.to_string()))
    }

    async fn query_instances(&self, query: &InstanceQuery) -> Result<QueryPage, Error> {
        let (instances, continuation) = self
            .query_partitions(
                query.page_size,
                |limit, reply| Query::Instances(query.clone(), limit, reply),
                |s: &InstanceState| s.instance_id.to_string(),
            )
            .await?;
        Ok(QueryPage {
            instances,
            continuation,
        })
    }

    async fn wait_for_start(
        &self,
        instance: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceState, Error> {
        self.wait_until(instance, timeout, |s| {
            s.status != basalt_runtime::OrchestrationStatus::Pending
        })
        .await
    }

    async fn wait_for_completion(
        &self,
        instance: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceState, Error> {
        self.wait_until(instance, timeout, |s| s.status.is_terminal())
            .await
    }

    async fn next_orchestration_work_item(&self) -> Result<OrchestrationWorkItem, Error> {
        let shared = &self.inner.shared;
        loop {
            let ticket = shared.steps.pop().await.ok_or(Error::ShutDown)?;
            // `None`: replaced by a newer step of the instance.
            let Some(mut step) = ticket.slot.step.lock().take() else {
                continue;
            };
            // The step starts now, when a worker takes it.
            if let Some(started) = step.new_events.first_mut() {
                started.timestamp_ms = now_ms();
            }
            let token = StepToken {
                partition: ticket.partition,
                incarnation: ticket.slot.incarnation,
                seq: step.seq,
                consumed: step.consumed(),
                started_ms: step.started_ms(),
                instance_id: step.instance_id.clone(),
            }
            .encode();
            return Ok(OrchestrationWorkItem {
                execution: step.execution,
                instance_id: step.instance_id,
                past_events: step.past_events,
                new_events: step.new_events,
                token,
            });
        }
    }

    async fn complete_orchestration_work_item(
        &self,
        token: &CompletionToken,
        result: OrchestrationStepResult,
    ) -> Result<(), Error> {
        let token = self.step_token(token)?;
        // Each action id answers one history event: two actions with one id
        // would make the replay ambiguous.
        let mut ids: Vec<i32> = result.actions.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::InvalidInput(format!(
                "action id {} appears more than once in the step",
                pair[0]
            )));
        }
        let result = self.bound_step_result(result);
        let event = Event::StepCompleted {
            instance_id: token.instance_id,
            seq: token.seq,
            consumed: token.consumed,
            started_ms: token.started_ms,
            result,
            now_ms: now_ms(),
        };
        reply_done(
            self.submit(token.partition, event, ReplyWhen::Applied)
                .await?,
        )
    }

    async fn abandon_orchestration_work_item(&self, token: &CompletionToken) -> Result<(), Error> {
        let token = self.step_token(token)?;
        let event = Event::StepAbandoned {
            instance_id: token.instance_id,
            seq: token.seq,
            now_ms: now_ms(),
        };
        reply_done(
            self.submit(token.partition, event, ReplyWhen::Applied)
                .await?,
        )
    }

    async fn next_activity_work_item(&self) -> Result<ActivityWorkItem, Error> {
        self.inner
            .shared
            .activities
            .pop()
            .await
            .ok_or(Error::ShutDown)
    }

    async fn complete_activity_work_item(
        &self,
        token: &CompletionToken,
        outcome: ActivityOutcome,
    ) -> Result<(), Error> {
        let token = self.activity_token(token)?;
        if let ActivityOutcome::Completed(output) = &outcome {
            self.check_payload("activity output", output)?;
        }
        let event = Event::ActivityCompleted {
            instance_id: token.instance_id,
            execution: token.execution,
            task_id: token.task_id,
            outcome,
            now_ms: now_ms(),
        };
        reply_done(
            self.submit(token.partition, event, ReplyWhen::Applied)
                .await?,
        )
    }

    async fn signal_entity(
        &self,
        entity: &EntityId,
        operation: EntityOperation,
        scheduled_start_ms: Option<u64>,
    ) -> Result<(), Error> {
        check_name("operation name", &operation.name)?;
        self.check_payload("operation input", &operation.input)?;
        let _permit = self.admit()?;
        let event = Event::SignalEntity {
            entity: entity.clone(),
            operation,
            scheduled_ms: scheduled_start_ms,
            now_ms: now_ms(),
        };
        reply_done(self.submit_for(&entity.instance_id(), event).await?)
    }

    async fn get_entity(&self, entity: &EntityId) -> Result<Option<EntityState>, Error> {
        let id = entity.clone();
        let partition = partition_of(entity.instance_id().as_str(), self.partition_count());
        let key = Some(StateKey::Entity(id.instance_id()));
        self.read(partition, key, move |state| state.entity_state(&id, true))
            .await
    }

    async fn query_entities(&self, query: &EntityQuery) -> Result<EntityPage, Error> {
        let (entities, continuation) = self
            .query_partitions(
                query.page_size,
                |limit, reply| Query::Entities(query.clone(), limit, reply),
                |e: &EntityState| e.entity.to_string(),
            )
            .await?;
        Ok(EntityPage {
            entities,
            continuation,
        })
    }

    async fn next_entity_work_item(&self) -> Result<EntityWorkItem, Error> {
        self.inner
            .shared
            .entity_batches
            .pop()
            .await
            .ok_or(Error::ShutDown)
    }

    async fn complete_entity_work_item(
        &self,
        token: &CompletionToken,
        result: EntityBatchResult,
    ) -> Result<(), Error> {
        let token = self.entity_token(token)?;
        self.check_payload("entity state", &result.state)?;
        for signal in &result.signals {
            self.check_payload("a signal's input", &signal.operation.input)?;
        }
        for start in &result.orchestrations {
            check_name("the name of an orchestration an entity starts", &start.name)?;
            self.check_payload(
                "the input of an orchestration an entity starts",
                &start.input,
            )?;
        }
        let event = Event::EntityBatchCompleted {
            entity: token.entity,
            seq: token.seq,
            result,
            now_ms: now_ms(),
        };
        reply_done(
            self.submit(token.partition, event, ReplyWhen::Applied)
                .await?,
        )
    }

    async fn abandon_entity_work_item(&self, token: &CompletionToken) -> Result<(), Error> {
        let token = self.entity_token(token)?;
        let event = Event::EntityBatchAbandoned {
            entity: token.entity,
            seq: token.seq,
        };
        reply_done(
            self.submit(token.partition, event, ReplyWhen::Applied)
                .await?,
        )
    }

    async fn abandon_activity_work_item(&self, token: &CompletionToken) -> Result<(), Error> {
        let encoded = token.clone();
        let token = self.activity_token(token)?;
        let (id, execution, task_id) = (token.instance_id, token.execution, token.task_id);
        let key = Some(StateKey::Instance(id.clone()));
        let task = self
            .read(token.partition, key, move |state| {
                state
                    .instance(&id)
                    .filter(|i| i.execution == execution)
                    .and_then(|i| i.activities.get(&task_id).cloned())
            })
            .await?;
        match task {
            Some(task) => {
                self.inner.shared.activities.push(ActivityWorkItem {
                    instance_id: task.instance_id,
                    name: task.name,
                    version: task.version,
                    input: task.input,
                    task_id: task.task_id,
                    token: encoded,
                });
                Ok(())
            }
            None => Err(Error::StaleToken(encoded.0)),
        }
    }
}

impl Engine {
    async fn control(
        &self,
        instance: &InstanceId,
        op: ControlOp,
        reason: Option<String>,
    ) -> Result<(), Error> {
        self.check_payload("reason", &reason)?;
        let event = Event::Control {
            instance_id: instance.clone(),
            op,
            reason,
            now_ms: now_ms(),
        };
        reply_done(self.submit_for(instance, event).await?)
    }

    /// A step result past a limit (too many actions, an over-long version
    /// or name, a payload too large, each or all together) becomes a
    /// failure of the instance with a clear message: rejecting it would
    /// only make the worker retry the same step forever.
    fn bound_step_result(&self, result: OrchestrationStepResult) -> OrchestrationStepResult {
        match self.step_problem(&result) {
            None => result,
            Some((error_type, message)) => result.failing(error_type, message),
        }
    }

    /// The first limit `result` breaks, as (error type, message).
    fn step_problem(&self, result: &OrchestrationStepResult) -> Option<(&'static str, String)> {
        use basalt_runtime::ActionKind;
        if result.actions.len() > ACTIONS_PER_STEP_MAX {
            return Some((
                "TooManyActions",
                format!(
                    "the step returned {} actions; the limit is {ACTIONS_PER_STEP_MAX}",
                    result.actions.len()
                ),
            ));
        }
        let max = self.inner.options.payload_bytes_max;
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let mut total = text(&result.custom_status);
        for action in &result.actions {
            let version = match &action.kind {
                ActionKind::ScheduleTask { version, .. }
                | ActionKind::CreateSubOrchestration { version, .. } => version.as_deref(),
                ActionKind::CompleteOrchestration { new_version, .. } => new_version.as_deref(),
                _ => None,
            };
            if let Err(message) = check_version(&format!("action {}", action.id), version) {
                return Some(("VersionTooLong", message));
            }
            let (name, payload) = match &action.kind {
                ActionKind::ScheduleTask { name, input, .. }
                | ActionKind::CreateSubOrchestration { name, input, .. } => (name.as_str(), input),
                ActionKind::SendEvent { name, data, .. } => (name.as_str(), data),
                ActionKind::SignalEntity {
                    operation, input, ..
                }
                | ActionKind::CallEntity {
                    operation, input, ..
                } => (operation.as_str(), input),
                ActionKind::CompleteOrchestration { result, .. } => ("", result),
                ActionKind::CreateTimer { .. }
                | ActionKind::LockEntities { .. }
                | ActionKind::UnlockEntities { .. } => ("", &None),
            };
            if text(payload) > max {
                return Some((
                    "PayloadTooLarge",
                    format!(
                        "action {} has a payload of {} bytes; the limit is {max} bytes",
                        action.id,
                        text(payload)
                    ),
                ));
            }
            if name.len() > NAME_BYTES_MAX {
                return Some((
                    "PayloadTooLarge",
                    format!(
                        "action {} has a name of {} bytes; the limit is {NAME_BYTES_MAX}",
                        action.id,
                        name.len()
                    ),
                ));
            }
            total += name.len() + text(payload);
        }
        (total > max).then(|| {
            (
                "PayloadTooLarge",
                format!("the step's payloads add up to {total} bytes; the limit is {max} bytes"),
            )
        })
    }

    fn step_token(&self, token: &CompletionToken) -> Result<StepToken, Error> {
        let parsed = StepToken::parse(token)?;
        self.current(token, parsed.partition, parsed.incarnation)?;
        Ok(parsed)
    }

    /// One page of a query over every partition: each partition returns up
    /// to `page_size` matches after the continuation (and whether it had
    /// more); the merge keeps the first `page_size` in key order. Another
    /// page exists if the merge overflowed or any partition had more.
    async fn query_partitions<T: Send + 'static>(
        &self,
        page_size: usize,
        query: impl Fn(usize, oneshot::Sender<Result<(Vec<T>, bool), Error>>) -> Query,
        key: impl Fn(&T) -> String,
    ) -> Result<(Vec<T>, Option<String>), Error> {
        if page_size == 0 || page_size > 1000 {
            return Err(Error::InvalidInput(format!(
                "page size must be 1..=1000, got {page_size}"
            )));
        }
        let mut all = Vec::new();
        let mut more = false;
        for partition in 0..self.partition_count() {
            let (tx, rx) = oneshot::channel();
            self.command(partition, Command::Query(query(page_size, tx)))
                .await?;
            let (items, has_more) = rx.await.map_err(|_| Error::ShutDown)??;
            more |= has_more;
            all.extend(items);
        }
        all.sort_by_key(|item| key(item));
        let continuation = if all.len() > page_size || more {
            all.truncate(page_size);
            all.last().map(key)
        } else {
            None
        };
        Ok((all, continuation))
    }

    fn entity_token(&self, token: &CompletionToken) -> Result<EntityToken, Error> {
        let parsed = EntityToken::parse(token)?;
        self.current(token, parsed.partition, parsed.incarnation)?;
        Ok(parsed)
    }

    fn activity_token(&self, token: &CompletionToken) -> Result<ActivityToken, Error> {
        let parsed = ActivityToken::parse(token)?;
        self.current(token, parsed.partition, parsed.incarnation)?;
        Ok(parsed)
    }

    /// A token handed out by another incarnation of the engine (before a
    /// restart) or of its partition (before it reopened after a storage
    /// error), or naming a partition this hub does not have, is stale.
    fn current(
        &self,
        token: &CompletionToken,
        partition: u32,
        incarnation: u64,
    ) -> Result<(), Error> {
        if partition >= self.partition_count()
            || incarnation != self.inner.shared.incarnation_of(partition)
        {
            return Err(Error::StaleToken(token.0.clone()));
        }
        Ok(())
    }

    async fn wait_until(
        &self,
        instance: &InstanceId,
        timeout: Duration,
        done: impl Fn(&InstanceState) -> bool,
    ) -> Result<InstanceState, Error> {
        let guard = WaiterGuard {
            shared: &self.inner.shared,
            instance,
            notify: Some(self.inner.shared.waiter(instance)),
        };
        let notify = guard
            .notify
            .as_ref()
            .map(Arc::clone)
            .ok_or(Error::ShutDown)?;
        self.wait_loop(instance, timeout, &notify, done).await
    }

    async fn wait_loop(
        &self,
        instance: &InstanceId,
        timeout: Duration,
        notify: &tokio::sync::Notify,
        done: impl Fn(&InstanceState) -> bool,
    ) -> Result<InstanceState, Error> {
        let now = tokio::time::Instant::now();
        // A huge timeout means "no timeout", not an overflow.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let partition = partition_of(instance.as_str(), self.partition_count());
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Whether the wait is over is judged on the state as applied,
            // so a change that does not end it asks for no write; the
            // answer is then read once that instance's change is durable.
            let id = instance.clone();
            let applied = self
                .peek(partition, StateKey::Instance(id.clone()), move |state| {
                    state.instance(&id).map(|i| i.meta.clone())
                })
                .await?;
            // An instance not there as applied is answered by the read too
            // (once its purge is durable, as not found).
            if applied.as_ref().is_none_or(&done) {
                let state = self
                    .get_instance(instance)
                    .await?
                    .ok_or_else(|| Error::NotFound(instance.to_string()))?;
                if done(&state) {
                    return Ok(state);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::Timeout(timeout.as_millis() as u64));
            }
        }
    }
}

/// Removes an instance's notifier from the map once its last waiter is
/// gone, including when a wait is cancelled (its future dropped).
struct WaiterGuard<'a> {
    shared: &'a Shared,
    instance: &'a InstanceId,
    notify: Option<Arc<tokio::sync::Notify>>,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        drop(self.notify.take());
        // The map holds one reference; any other means someone still waits.
        self.shared
            .waiters
            .remove_if(self.instance, |_, n| Arc::strong_count(n) <= 1);
    }
}
