//! What every partition task and the engine handle share: the routes to
//! the partitions, the work queues, the timer service and the waiters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use basalt_partitions::{Event, StepTask};
use basalt_runtime::{ActivityWorkItem, EntityWorkItem, InstanceId};
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};

use crate::partition::{Command, ReplyWhen};
use crate::queue::WorkQueue;
use crate::timers::Timers;
use crate::transport::Transport;

pub(crate) struct Shared {
    /// Command queues of this process's partitions (clients, workers,
    /// timers), each bounded (`EngineOptions::command_queue_max`): a sender
    /// waits for room (clients are refused earlier, at admission).
    pub partitions: Vec<mpsc::Sender<Command>>,
    /// Partition-to-partition traffic.
    pub transport: Box<dyn Transport>,
    /// Steps offered by the partitions; a worker that takes one reads its
    /// events from the partition then (see [`StepTicket`]).
    pub steps: WorkQueue<StepTicket>,
    pub activities: WorkQueue<ActivityWorkItem>,
    pub entity_batches: WorkQueue<EntityWorkItem>,
    pub timers: Timers,
    pub waiters: DashMap<InstanceId, Arc<Notify>>,
    /// Changes every time the engine opens; with the partition's reopen
    /// count, part of every completion token (see [`Shared::incarnation_of`]).
    pub incarnation: u64,
    /// Per partition: whether it serves, its storage failures and reopens.
    pub health: Vec<PartitionHealth>,
    /// Executions that ended with activities outstanding, recently (see
    /// `Backend::is_stale`).
    pub ended: parking_lot::Mutex<EndedExecutions>,
    /// Per partition: its state store (replaced when the partition reopens).
    pub stores: Vec<parking_lot::Mutex<Arc<basalt_storage::StateStore>>>,
    /// Checkpoints written since the window was last taken.
    pub checkpoints: parking_lot::Mutex<CheckpointWindow>,
    /// Woken when a hosted record changed (a message or worker item
    /// queued, a lock taken or released) or a partition's sent messages
    /// were acknowledged: hosted fetchers and acks wait on it.
    pub hosted: Notify,
    /// Per partition, how many events changed its hosted instances (`[0]`)
    /// and its hosted worker items (`[1]`): a fetcher looks again only at
    /// the partitions whose count moved since its last look.
    pub hosted_changes: Vec<[std::sync::atomic::AtomicU64; 2]>,
}

/// The checkpoints written in a window of time, across partitions: how
/// many, and the largest of each figure (the steady benchmark's per-wave
/// report: they must not grow with the number of retained instances).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CheckpointWindow {
    /// Checkpoints written.
    pub count: u64,
    /// Records (instances and entities) they carried, in total.
    pub records: u64,
    /// Longest checkpoint, from taking the changes to the store's flush
    /// and the log's truncation, in milliseconds.
    pub max_ms: f64,
    /// Longest time a partition spent encoding changes (the only part of a
    /// checkpoint on the partition task), in milliseconds.
    pub max_stall_ms: f64,
    /// Most bytes one checkpoint wrote to its store.
    pub max_bytes: u64,
    /// Times a partition stopped taking commands because its changed
    /// records reached its budget while a checkpoint was written.
    pub held_back: u64,
    /// Longest of those checkpoints, in milliseconds (from its start: an
    /// upper bound on how long the partition was held back).
    pub max_held_back_ms: f64,
}

impl CheckpointWindow {
    /// Adds one checkpoint.
    pub(crate) fn add(&mut self, records: usize, ms: f64, stall_ms: f64, bytes: u64) {
        self.count += 1;
        self.records += records as u64;
        self.max_ms = self.max_ms.max(ms);
        self.max_stall_ms = self.max_stall_ms.max(stall_ms);
        self.max_bytes = self.max_bytes.max(bytes);
    }

    /// Counts a partition held back until a checkpoint landed.
    pub(crate) fn held_back(&mut self, ms: f64) {
        self.held_back += 1;
        self.max_held_back_ms = self.max_held_back_ms.max(ms);
    }
}

/// A step offered by a partition, in the work queue. Events that arrive
/// for the instance while the step waits (a second entity answer, more
/// fan-in results) are added to it by the partition task, so they join
/// this step instead of making another: fewer steps, each replaying the
/// history once. A worker takes the step out of its slot.
pub(crate) struct StepTicket {
    pub partition: u32,
    pub slot: Arc<StepSlot>,
}

/// Where an offered step waits: the partition task keeps it current, the
/// worker that takes it leaves `None`. Also `None` once a newer step of
/// the instance replaced it.
pub(crate) struct StepSlot {
    pub seq: u64,
    /// The partition's incarnation when it offered the step.
    pub incarnation: u64,
    pub step: parking_lot::Mutex<Option<StepTask>>,
}

/// The most recent executions that ended with activities outstanding, as
/// (instance, execution), at most [`EndedExecutions::CAPACITY`]: an
/// activity of one of them that a dispatcher still holds is dropped
/// instead of handed to a worker. Forgetting the oldest costs only a
/// wasted activity run (its completion is refused as stale).
#[derive(Debug, Default)]
pub(crate) struct EndedExecutions {
    set: std::collections::HashSet<(InstanceId, u64)>,
    order: std::collections::VecDeque<(InstanceId, u64)>,
}

impl EndedExecutions {
    /// Executions remembered.
    pub const CAPACITY: usize = 65_536;

    pub fn extend(&mut self, ended: impl IntoIterator<Item = (InstanceId, u64)>) {
        for execution in ended {
            if self.set.insert(execution.clone()) {
                self.order.push_back(execution);
            }
            while self.order.len() > Self::CAPACITY {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
    }

    pub fn contains(&self, instance: &InstanceId, execution: u64) -> bool {
        self.set.contains(&(instance.clone(), execution))
    }
}

/// How a partition fares against its storage: the engine reads it for
/// `/metrics` and readiness without asking the partition task.
#[derive(Debug, Default)]
pub(crate) struct PartitionHealth {
    /// Set while the partition is stopped by a storage error.
    pub stopped: AtomicBool,
    /// Times a storage error stopped it.
    pub failures: AtomicU64,
    /// Times it was reopened (recovered from storage) after one.
    pub reopens: AtomicU64,
    /// Failed attempts to reopen it.
    pub reopen_failures: AtomicU64,
    /// The last storage error, for the server's log and `/metrics`.
    pub last_error: parking_lot::Mutex<Option<String>>,
}

impl Shared {
    /// The incarnation in tokens of `partition`'s work: the engine's,
    /// changed again every time the partition reopens after a storage
    /// error (its work handed out before is stale then: the reopened
    /// partition may offer different steps under the same numbers).
    pub fn incarnation_of(&self, partition: u32) -> u64 {
        let reopens = self
            .health
            .get(partition as usize)
            .map_or(0, |h| h.reopens.load(Ordering::Acquire));
        self.incarnation.wrapping_add(reopens << 32)
    }

    /// Submits an event to a local partition with no one waiting for the
    /// answer (timers), once its command queue has room.
    pub async fn submit(&self, partition: u32, event: Event) {
        if let Some(route) = self.partitions.get(partition as usize) {
            let _ = route
                .send(Command::Submit {
                    event,
                    reply: None,
                    when: ReplyWhen::Applied,
                })
                .await;
        }
    }

    /// Wakes whoever waits on an instance's status.
    pub fn notify_changed(&self, instance: &InstanceId) {
        if let Some(notify) = self.waiters.get(instance) {
            notify.notify_waiters();
        }
    }

    /// The notifier of an instance, created on first use.
    pub fn waiter(&self, instance: &InstanceId) -> Arc<Notify> {
        Arc::clone(
            self.waiters
                .entry(instance.clone())
                .or_insert_with(|| Arc::new(Notify::new()))
                .value(),
        )
    }
}
