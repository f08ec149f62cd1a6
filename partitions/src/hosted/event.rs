//! The logged events, partition messages and replies of hosted instances.

use basalt_runtime::InstanceId;
use serde::{Deserialize, Serialize};

use super::{
    Ack, FetchOutcome, QueuedMessage, SessionClaim, TagFilter, VersionRange, WorkerItem,
    WorkerItemId,
};
use crate::state::StateKey;

/// Where a worker item lives: with its session (so that claiming the
/// session and locking the item are one record's change), or with its
/// instance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkOwner {
    /// Items of no session, by the instance that scheduled them.
    Instance(InstanceId),
    /// Items of a session, by the session's id.
    Session(InstanceId),
}

impl WorkOwner {
    /// The record holding the items.
    pub fn key(&self) -> StateKey {
        match self {
            WorkOwner::Instance(id) => StateKey::HostedWork(id.clone()),
            WorkOwner::Session(id) => StateKey::HostedSession(id.clone()),
        }
    }

    /// The id that routes the record to its partition.
    pub fn routing_id(&self) -> &str {
        match self {
            WorkOwner::Instance(id) | WorkOwner::Session(id) => id.as_str(),
        }
    }
}

/// A change a hosted runtime asks for; one logged event each. Lock tokens
/// are the LSN of the fetch that took the lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostedEvent {
    /// Queue a message for an instance's orchestrator (it does not create
    /// the instance).
    Enqueue {
        /// The instance.
        instance: InstanceId,
        /// The message.
        message: QueuedMessage,
    },
    /// Queue an activity for workers.
    EnqueueWork {
        /// Where it lives.
        owner: WorkOwner,
        /// The item.
        item: WorkerItem,
    },
    /// Take an instance with its visible messages (see
    /// [`super::HostedInstance::fetch`]).
    Fetch {
        /// The instance.
        instance: InstanceId,
        /// How long the lock lasts.
        lock_ms: u64,
        /// Runtime versions the fetcher replays (`None`: any).
        filter: Option<Vec<VersionRange>>,
    },
    /// Commit an orchestration turn: the instance's part, and the items it
    /// queues and cancels (sent on as messages, to this partition or
    /// others, after this instance's change).
    Ack {
        /// The instance.
        instance: InstanceId,
        /// The instance's part.
        ack: Ack,
        /// Activities to queue.
        worker_items: Vec<(WorkOwner, WorkerItem)>,
        /// Messages for orchestrators (this instance, a child, a parent).
        orchestrator_items: Vec<(InstanceId, QueuedMessage)>,
        /// Queued activities of this instance no longer wanted (after
        /// `worker_items`): cancelled wherever its items may live, with the
        /// instance or in a session it queued work in.
        cancelled: Vec<WorkerItemId>,
    },
    /// Give a fetched instance back.
    Abandon {
        /// The instance.
        instance: InstanceId,
        /// The fetch's token.
        token: u64,
        /// Hide the batch for this long.
        delay_ms: Option<u64>,
        /// Take back the attempt the fetch counted.
        ignore_attempt: bool,
    },
    /// Extend an instance's lock.
    Renew {
        /// The instance.
        instance: InstanceId,
        /// The fetch's token.
        token: u64,
        /// From now, for this long.
        extend_ms: u64,
    },
    /// Take a worker item (the fetcher chose it by reading the queues).
    FetchWork {
        /// Where it lives.
        owner: WorkOwner,
        /// Its enqueue order.
        order: u64,
        /// How long the lock lasts.
        lock_ms: u64,
        /// The fetcher's session identity, if it takes session items.
        claim: Option<SessionClaim>,
        /// The tags it takes.
        tags: TagFilter,
    },
    /// An activity finished: remove its item and queue its completion.
    AckWork {
        /// Where the item lives.
        owner: WorkOwner,
        /// The fetch's token.
        token: u64,
        /// The completion for the instance's orchestrator.
        completion: Option<(InstanceId, QueuedMessage)>,
    },
    /// Give a worker item back.
    AbandonWork {
        /// Where it lives.
        owner: WorkOwner,
        /// The fetch's token.
        token: u64,
        /// Hide it for this long.
        delay_ms: Option<u64>,
        /// Take back the attempt the fetch counted.
        ignore_attempt: bool,
    },
    /// Extend a worker item's lock.
    RenewWork {
        /// Where it lives.
        owner: WorkOwner,
        /// The fetch's token.
        token: u64,
        /// From now, for this long.
        extend_ms: u64,
    },
    /// Extend a session's claim if one of `owners` holds it and it was
    /// active within `idle_ms`.
    RenewSession {
        /// The session.
        session: InstanceId,
        /// The owners asking.
        owners: Vec<String>,
        /// From now, for this long.
        extend_ms: u64,
        /// Longest inactivity that still renews.
        idle_ms: u64,
    },
    /// Forget a session whose claim ran out and that has no items.
    CleanupSession {
        /// The session.
        session: InstanceId,
    },
    /// Delete an instance with its histories, messages, lock and key-value
    /// pairs, and (by message) its queued activities.
    Delete {
        /// The instance.
        instance: InstanceId,
    },
    /// Remove old executions of an instance.
    Prune {
        /// The instance.
        instance: InstanceId,
        /// Keep at least this many of the newest.
        keep_last: u32,
        /// Only those finished before this time.
        completed_before_ms: Option<u64>,
    },
    /// Test hook of the provider validation suite: replace every stored
    /// event of an instance with bytes no runtime decodes.
    CorruptHistory {
        /// The instance.
        instance: InstanceId,
    },
}

impl HostedEvent {
    /// The record the event touches.
    pub fn key(&self) -> StateKey {
        match self {
            HostedEvent::Enqueue { instance, .. }
            | HostedEvent::Fetch { instance, .. }
            | HostedEvent::Ack { instance, .. }
            | HostedEvent::Abandon { instance, .. }
            | HostedEvent::Renew { instance, .. }
            | HostedEvent::Delete { instance }
            | HostedEvent::Prune { instance, .. }
            | HostedEvent::CorruptHistory { instance } => StateKey::Hosted(instance.clone()),
            HostedEvent::EnqueueWork { owner, .. }
            | HostedEvent::FetchWork { owner, .. }
            | HostedEvent::AckWork { owner, .. }
            | HostedEvent::AbandonWork { owner, .. }
            | HostedEvent::RenewWork { owner, .. } => owner.key(),
            HostedEvent::RenewSession { session, .. } | HostedEvent::CleanupSession { session } => {
                StateKey::HostedSession(session.clone())
            }
        }
    }
}

/// What a hosted event sends to the partition of another record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostedMessage {
    /// Queue a message for an instance's orchestrator.
    Enqueue {
        /// The instance.
        instance: InstanceId,
        /// The message.
        message: QueuedMessage,
    },
    /// Queue an activity.
    EnqueueWork {
        /// Where it lives.
        owner: WorkOwner,
        /// The item.
        item: WorkerItem,
    },
    /// Remove a queued activity.
    Cancel {
        /// Where it lives.
        owner: WorkOwner,
        /// Which.
        id: WorkerItemId,
    },
    /// Remove every queued activity of a deleted instance.
    RemoveWork {
        /// Where they live.
        owner: WorkOwner,
        /// The deleted instance.
        instance: InstanceId,
    },
}

impl HostedMessage {
    /// The record receiving the message touches.
    pub fn key(&self) -> StateKey {
        match self {
            HostedMessage::Enqueue { instance, .. } => StateKey::Hosted(instance.clone()),
            HostedMessage::EnqueueWork { owner, .. }
            | HostedMessage::Cancel { owner, .. }
            | HostedMessage::RemoveWork { owner, .. } => owner.key(),
        }
    }

    /// The id that routes the message to its partition.
    pub fn routing_id(&self) -> &str {
        match self {
            HostedMessage::Enqueue { instance, .. } => instance.as_str(),
            HostedMessage::EnqueueWork { owner, .. }
            | HostedMessage::Cancel { owner, .. }
            | HostedMessage::RemoveWork { owner, .. } => owner.routing_id(),
        }
    }
}

/// The answer to a hosted event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostedReply {
    /// Done, nothing to report.
    Done,
    /// What a fetch did; `token` is its LSN.
    Fetched {
        /// The lock token, if it locked.
        token: u64,
        /// What it did.
        outcome: FetchOutcome,
    },
    /// A worker item was locked with `token` (its LSN).
    WorkFetched {
        /// The lock token.
        token: u64,
        /// The item's attempt count, this fetch included.
        attempts: u32,
    },
    /// How many records or items the event changed (sessions renewed or
    /// cleaned up).
    Count(u64),
    /// What a deletion or a prune removed.
    Removed {
        /// Executions.
        executions: u64,
        /// History events.
        events: u64,
        /// Queued orchestrator messages (worker items go by message).
        messages: u64,
    },
}
