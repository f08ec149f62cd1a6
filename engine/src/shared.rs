//! What every partition task and the engine handle share: the routes to
//! the partitions, the work queues, the timer service and the waiters.

use std::sync::Arc;

use basalt_partitions::Event;
use basalt_runtime::{ActivityWorkItem, EntityWorkItem, InstanceId, OrchestrationWorkItem};
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
    pub steps: WorkQueue<OrchestrationWorkItem>,
    pub activities: WorkQueue<ActivityWorkItem>,
    pub entity_batches: WorkQueue<EntityWorkItem>,
    pub timers: Timers,
    pub waiters: DashMap<InstanceId, Arc<Notify>>,
    /// Changes every time the engine opens; part of every completion token.
    pub incarnation: u64,
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
