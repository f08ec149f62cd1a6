//! How partitions reach each other. Messages (sub-orchestration starts and
//! results, events between instances) and their acknowledgements cross
//! partitions only through a [`Transport`]; nothing else is shared. Today
//! every partition lives in one process ([`InProcess`]); between nodes a
//! durable message bus (NATS JetStream, as Netherite uses Event Hubs) will
//! implement the same trait. Redelivery is harmless: receivers drop
//! duplicates by origin position (I3), and senders resend their outbox
//! after recovery.
//!
//! A partition that reopens alone (after a storage error) lost what it had
//! received but not yet made durable, while its senders go on. Receivers
//! keep only the highest position seen, so a gap would go unnoticed: the
//! reopened partition drops every origin's messages until that origin's
//! [`Outgoing::Resync`] marker, which each origin sends, followed by its
//! whole outbox for the receiver, when asked ([`Outgoing::ResyncRequest`])
//! or when it reopens itself.

use basalt_partitions::{Envelope, Event, Position};
use tokio::sync::mpsc;

/// Partition-to-partition traffic waiting to be delivered.
#[derive(Debug)]
pub enum Outgoing {
    /// Messages for `destination`, in send order.
    Messages {
        /// The receiving partition.
        destination: u32,
        /// The messages, all for `destination`.
        messages: Vec<Envelope>,
    },
    /// `receiver` durably received `origin`'s messages up to `up_to`, so
    /// `origin` can drop them from its outbox.
    Ack {
        /// The partition whose messages were received.
        origin: u32,
        /// The partition that received them.
        receiver: u32,
        /// The last position received.
        up_to: Position,
    },
    /// `requester` reopened: `to` should send a [`Outgoing::Resync`]
    /// marker and then its whole outbox for `requester`.
    ResyncRequest {
        /// The partition that reopened.
        requester: u32,
        /// The partition asked.
        to: u32,
    },
    /// Everything `origin` has not seen acknowledged by `destination`
    /// follows, in order: `destination` may take `origin`'s messages again.
    Resync {
        /// The sending partition.
        origin: u32,
        /// The receiving partition.
        destination: u32,
    },
}

impl Outgoing {
    /// The partition this goes to.
    pub fn to(&self) -> u32 {
        match self {
            Outgoing::Messages { destination, .. } => *destination,
            Outgoing::Ack { origin, .. } => *origin,
            Outgoing::ResyncRequest { to, .. } => *to,
            Outgoing::Resync { destination, .. } => *destination,
        }
    }
}

/// What a partition's mailbox holds.
#[derive(Debug)]
pub(crate) enum Mail {
    /// Messages or an acknowledgement, logged like any event.
    Event(Event),
    /// See [`Outgoing::ResyncRequest`].
    ResyncRequest {
        /// The partition that reopened.
        requester: u32,
    },
    /// See [`Outgoing::Resync`].
    Resync {
        /// The partition whose messages may be taken again.
        origin: u32,
    },
}

/// Why a transport did not take traffic.
#[derive(Debug)]
pub enum Refused {
    /// The receiver's queue is full: try again later, in the same order
    /// (receivers drop anything at or below a position they have seen).
    Full(Outgoing),
    /// The receiver is gone (shut down): the sender's outbox keeps the
    /// messages for the next run.
    Gone,
}

/// Delivers partition-to-partition traffic. Sends must not block: the
/// partition task calls them while it owns its state. Every queue behind
/// a transport is bounded; a full one refuses, and the sender keeps the
/// traffic and tries again (so two partitions sending to each other can
/// never wait on each other).
pub trait Transport: Send + Sync + 'static {
    /// Delivers `outgoing` now, or gives it back.
    fn try_send(&self, outgoing: Outgoing, now_ms: u64) -> Result<(), Refused>;
}

/// The transport between partitions of one process: a bounded mailbox per
/// partition, which its task drains alongside its command queue.
pub(crate) struct InProcess {
    pub mailboxes: Vec<mpsc::Sender<Mail>>,
}

impl Transport for InProcess {
    fn try_send(&self, outgoing: Outgoing, now_ms: u64) -> Result<(), Refused> {
        let Some(mailbox) = self.mailboxes.get(outgoing.to() as usize) else {
            return Err(Refused::Gone);
        };
        // Reserve first, so a full mailbox gives the traffic back as it was.
        let permit = match mailbox.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => return Err(Refused::Full(outgoing)),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Refused::Gone),
        };
        permit.send(match outgoing {
            Outgoing::Messages { messages, .. } => {
                Mail::Event(Event::Messages { messages, now_ms })
            }
            Outgoing::Ack {
                receiver, up_to, ..
            } => Mail::Event(Event::OutboxAcked {
                destination: receiver,
                up_to,
            }),
            Outgoing::ResyncRequest { requester, .. } => Mail::ResyncRequest { requester },
            Outgoing::Resync { origin, .. } => Mail::Resync { origin },
        });
        Ok(())
    }
}
