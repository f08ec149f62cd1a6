//! What every partition task and the engine handle share: the routes to
//! the partitions, the work queues, the timer service and the waiters.

use std::sync::Arc;

use basalt_partitions::{Event, StepTask};
use basalt_runtime::{ActivityWorkItem, EntityWorkItem, InstanceId};
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};

use crate::partition::{Command, ReplyWhen};
use crate::queue::WorkQueue;
use crate::timers::Timers;
use crate::transport::Transport;

pub(crate) struct Shared {
    /// Command queues of this process's partitions (clients, workers, timers).
    pub partitions: Vec<mpsc::UnboundedSender<Command>>,
    /// Partition-to-partition traffic.
    pub transport: Box<dyn Transport>,
    /// Steps offered by the partitions; a worker that takes one reads its
    /// events from the partition then (see [`StepTicket`]).
    pub steps: WorkQueue<StepTicket>,
    pub activities: WorkQueue<ActivityWorkItem>,
    pub entity_batches: WorkQueue<EntityWorkItem>,
    pub timers: Timers,
    pub waiters: DashMap<InstanceId, Arc<Notify>>,
    /// Changes every time the engine opens; part of every completion token.
    pub incarnation: u64,
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
    pub step: parking_lot::Mutex<Option<StepTask>>,
}

impl Shared {
    /// Submits an event to a local partition with no one waiting for the
    /// answer (timers).
    pub fn submit(&self, partition: u32, event: Event) {
        if let Some(route) = self.partitions.get(partition as usize) {
            let _ = route.send(Command::Submit {
                event,
                reply: None,
                when: ReplyWhen::Applied,
            });
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
