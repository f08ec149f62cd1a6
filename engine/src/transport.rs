//! How partitions reach each other. Messages (sub-orchestration starts and
//! results, events between instances) and their acknowledgements cross
//! partitions only through a [`Transport`]; nothing else is shared. Today
//! every partition lives in one process ([`InProcess`]); between nodes a
//! durable message bus (NATS JetStream, as Netherite uses Event Hubs) will
//! implement the same trait. Redelivery is harmless: receivers drop
//! duplicates by origin position (I3), and senders resend their outbox
//! after recovery.

use basalt_partitions::{Envelope, Position};
use tokio::sync::mpsc;

use crate::partition::{Command, ReplyWhen};

/// Delivers partition-to-partition traffic. Sends must not block: the
/// partition task calls them while it owns its state.
pub trait Transport: Send + Sync + 'static {
    /// Delivers `messages` (all for `destination`, in send order).
    fn send_messages(&self, destination: u32, messages: Vec<Envelope>, now_ms: u64);

    /// Tells `origin` that `receiver` durably received its messages up to
    /// `up_to`, so `origin` can drop them from its outbox.
    fn send_ack(&self, origin: u32, receiver: u32, up_to: Position);
}

/// The transport between partitions of one process: their command queues.
pub(crate) struct InProcess {
    pub partitions: Vec<mpsc::UnboundedSender<Command>>,
}

impl InProcess {
    fn deliver(&self, partition: u32, event: basalt_partitions::Event) {
        if let Some(route) = self.partitions.get(partition as usize) {
            // A closed route means the engine is shutting down; the
            // sender's outbox keeps the message for the next run.
            let _ = route.send(Command::Submit {
                event,
                reply: None,
                when: ReplyWhen::Applied,
            });
        }
    }
}

impl Transport for InProcess {
    fn send_messages(&self, destination: u32, messages: Vec<Envelope>, now_ms: u64) {
        self.deliver(
            destination,
            basalt_partitions::Event::Messages { messages, now_ms },
        );
    }

    fn send_ack(&self, origin: u32, receiver: u32, up_to: Position) {
        self.deliver(
            origin,
            basalt_partitions::Event::OutboxAcked {
                destination: receiver,
                up_to,
            },
        );
    }
}
