//! What every partition task and the engine handle share: the routes to
//! the partitions, the work queues, the timer service and the waiters.

use std::sync::Arc;

use basalt_partitions::Event;
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

/// A step offered by a partition. Its events are read only when a worker
/// takes it, so events that arrive while it waits in the queue (a second
/// entity answer, more fan-in results) join the same step instead of
/// making another one: fewer steps, each replaying the history once.
pub(crate) struct StepTicket {
    pub partition: u32,
    pub instance_id: InstanceId,
    pub seq: u64,
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
