//! Hosting a runtime that keeps its own histories (duroxide): the data that
//! crosses the seam, and [`HostedBackend`], the trait a storage engine
//! implements for it.
//!
//! Basalt's own orchestrations are interpreted by the engine (the
//! [`crate::Backend`] trait speaks Durable Task's history model). A hosted
//! runtime decides everything itself and asks only for storage with the
//! right locking: append-only histories of opaque events per execution, an
//! orchestrator queue per instance fetched as a batch under an instance
//! lock, a worker queue with item locks, tags and sessions, a key-value
//! store and a custom status per instance. The vocabulary here is general;
//! `integrations/duroxide` maps duroxide's `Provider` onto it, and nothing
//! but that crate names duroxide's types (`docs/duroxide.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::types::InstanceId;

/// A history event as the runtime encoded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The runtime's event id: at least 1, unique within an execution.
    pub id: u64,
    /// The runtime's encoding.
    pub bytes: Vec<u8>,
}

/// A key-value pair's value and when the runtime set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The value.
    pub value: String,
    /// When it was set, as the runtime says (or the ack's time for a
    /// removal).
    pub updated_ms: u64,
}

/// A key-value change an ack carries, in history order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// When the runtime set it.
        updated_ms: u64,
    },
    /// Remove a key.
    Clear {
        /// The key.
        key: String,
    },
    /// Remove every key.
    ClearAll,
}

/// An orchestrator message waiting for its instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Its place in the hub-wide order of enqueues (fetches take the
    /// oldest first).
    pub order: u64,
    /// Not fetched before this time.
    pub visible_ms: u64,
    /// What a fetch needs to know of it without decoding it.
    pub kind: MessageKind,
    /// The runtime's encoding.
    pub bytes: Vec<u8>,
    /// The fetch (its token) whose batch it is in, until an ack removes
    /// it; a later fetch after that lock is gone takes it again.
    pub fetched_by: Option<u64>,
    /// How many fetches have taken it (poison detection).
    pub attempts: u32,
}

/// The kinds of orchestrator message a fetch treats differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// Starts an execution (a start or a continue-as-new): names the
    /// orchestration of an instance that has no metadata yet.
    Start {
        /// Orchestration name.
        name: String,
        /// Orchestration version.
        version: Option<String>,
    },
    /// Dropped when fetched for an instance that does not exist (a queued
    /// event nobody will read).
    DropIfNoInstance,
    /// Anything else.
    Other,
}

/// A lock held by a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The fetch's token.
    pub token: u64,
    /// Held while the time is before this.
    pub until_ms: u64,
}

impl Lock {
    /// Held at `now_ms`.
    pub fn held(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }
}

/// Inclusive range of runtime versions (major, minor, patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    /// Lowest version accepted.
    pub min: (u64, u64, u64),
    /// Highest version accepted.
    pub max: (u64, u64, u64),
}

/// What a fetch did to an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The instance is locked with the token and its visible messages are
    /// the batch; `attempts` is the highest attempt count among them.
    Locked {
        /// Highest attempt count in the batch.
        attempts: u32,
    },
    /// The instance does not exist and its visible messages were all
    /// droppable: they are gone, and nothing is locked.
    Dropped {
        /// Messages removed.
        count: usize,
    },
    /// Nothing to take (locked, nothing visible, not compatible, or the
    /// instance does not exist and cannot be started by its messages).
    Nothing,
}

/// Metadata an ack gives for the execution it names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMetadata {
    /// New status of the execution, with `output`.
    pub status: Option<String>,
    /// Output stored with the status.
    pub output: Option<String>,
    /// Orchestration name: with `version`, creates or renames the instance.
    pub name: Option<String>,
    /// Orchestration version.
    pub version: Option<String>,
    /// Parent of a sub-orchestration (kept from the instance's creation).
    pub parent: Option<String>,
    /// Runtime version the execution is pinned to, overwriting any before.
    pub pinned_version: Option<(u64, u64, u64)>,
}

/// The part of an orchestration turn's ack that concerns its own instance.
/// (Work items and messages for other instances are the caller's.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The token of the fetch whose lock the ack ends.
    pub token: u64,
    /// The execution the history delta belongs to.
    pub execution_id: u64,
    /// New history events, appended as given.
    pub events: Vec<StoredEvent>,
    /// Execution metadata.
    pub metadata: AckMetadata,
    /// Name and version of the orchestration, when the delta holds the
    /// event that starts the execution.
    pub started_as: Option<(String, Option<String>)>,
    /// The last custom status change in the delta: `Some(None)` clears it.
    pub custom_status: Option<Option<String>>,
    /// Key-value changes in the delta, in order.
    pub kv: Vec<KvOp>,
}

/// Which activity an item runs: cancellations name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerItemId {
    /// The instance that scheduled it.
    pub instance: String,
    /// The execution that scheduled it.
    pub execution_id: u64,
    /// The scheduling event's id.
    pub activity_id: u64,
}

/// An activity waiting for (or held by) a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerItem {
    /// Its place in the hub-wide order of enqueues.
    pub order: u64,
    /// Which activity it is.
    pub id: WorkerItemId,
    /// The session it belongs to, if any.
    pub session: Option<String>,
    /// The tag workers filter on, if any.
    pub tag: Option<String>,
    /// The runtime's encoding.
    pub bytes: Vec<u8>,
    /// Not fetched before this time.
    pub visible_ms: u64,
    /// The lock of the fetch that took it (it may have expired).
    pub lock: Option<Lock>,
    /// How many fetches have taken it.
    pub attempts: u32,
}

/// A fetcher that takes session items: who it is, and how long a session
/// it claims stays its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaim {
    /// The owner identity.
    pub owner: String,
    /// How long a claim lasts, in milliseconds.
    pub lock_ms: u64,
}

/// Which tags a fetcher takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagFilter {
    /// Untagged items only.
    DefaultOnly,
    /// Items with one of these tags.
    Tags(BTreeSet<String>),
    /// Untagged items and items with one of these tags.
    DefaultAnd(BTreeSet<String>),
    /// Every item.
    Any,
    /// No item.
    None,
}

impl TagFilter {
    /// Whether an item with `tag` passes.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::Any => true,
            TagFilter::None => false,
            TagFilter::DefaultOnly => tag.is_none(),
            TagFilter::Tags(tags) => tag.is_some_and(|t| tags.contains(t)),
            TagFilter::DefaultAnd(tags) => tag.is_none_or(|t| tags.contains(t)),
        }
    }
}

/// A lock token as the engine hands it out: it names the partition, the
/// fetch and the record, so an ack, abandon or renewal needs nothing else.
/// Opaque to the runtime.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostedToken(pub String);

impl std::fmt::Display for HostedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fetched orchestration turn: the instance, its current execution's
/// history and the batch of messages, locked under `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedBatch {
    /// The instance.
    pub instance: InstanceId,
    /// Orchestration name (from the instance, its history's start, or a
    /// start in the batch).
    pub name: String,
    /// Orchestration version, if known.
    pub version: Option<String>,
    /// The current execution.
    pub execution_id: u64,
    /// Its history, in append order.
    pub history: Vec<StoredEvent>,
    /// The batch's messages, in enqueue order.
    pub messages: Vec<Vec<u8>>,
    /// Key-value pairs as of the last finished execution.
    pub kv_snapshot: BTreeMap<String, KvEntry>,
    /// The lock.
    pub token: HostedToken,
    /// The highest attempt count in the batch, this fetch included.
    pub attempts: u32,
}

/// A fetched worker item, locked under `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedWork {
    /// The item.
    pub item: WorkerItem,
    /// The lock.
    pub token: HostedToken,
    /// Its attempt count, this fetch included.
    pub attempts: u32,
}

/// Everything an orchestration turn commits, as one change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostedTurn {
    /// The instance's part.
    pub ack: Ack,
    /// Activities to queue (each with its session, if any).
    pub worker_items: Vec<WorkerItem>,
    /// Messages for orchestrators: this instance, a child, a parent.
    pub orchestrator_items: Vec<(InstanceId, QueuedMessage)>,
    /// Queued activities of this instance no longer wanted (removed after
    /// `worker_items` are queued).
    pub cancelled: Vec<WorkerItemId>,
}

/// One execution as management sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedExecutionView {
    /// The execution id.
    pub execution_id: u64,
    /// `Running` or the status its last ack gave.
    pub status: String,
    /// The output its last status-setting ack gave.
    pub output: Option<String>,
    /// When its first ack arrived.
    pub started_ms: u64,
    /// When an ack last set its status.
    pub completed_ms: Option<u64>,
    /// History events.
    pub event_count: u64,
    /// Bytes of its history events.
    pub history_bytes: u64,
}

/// A hosted instance as clients and management see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedInstanceView {
    /// The instance.
    pub instance: InstanceId,
    /// Orchestration name and version, once an ack named them (`None`:
    /// the instance does not exist for clients yet).
    pub named: Option<(String, String)>,
    /// Its parent, for a sub-orchestration.
    pub parent: Option<InstanceId>,
    /// When it was created and last changed.
    pub created_ms: u64,
    /// When an ack last changed it.
    pub updated_ms: u64,
    /// The current execution.
    pub current_execution: u64,
    /// Every execution with a record, in id order.
    pub executions: Vec<HostedExecutionView>,
    /// The custom status and its version.
    pub custom_status: (Option<String>, u64),
    /// Key-value pairs with the current execution's changes over them.
    pub kv: BTreeMap<String, KvEntry>,
    /// Orchestrator messages queued (locked or not).
    pub queued: u64,
}

/// What a deletion or a prune removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostedRemoved {
    /// Executions.
    pub executions: u64,
    /// History events.
    pub events: u64,
    /// Queued orchestrator messages.
    pub messages: u64,
}

/// Storage for a hosted runtime. Every change is one logged event on the
/// partition that owns its record; answers reflect durable state, and a
/// change that sends items to other records returns once those are
/// applied there too (`docs/duroxide.md`). Lock expiry is decided against
/// the engine's clock at the change.
#[async_trait]
pub trait HostedBackend: Send + Sync + 'static {
    /// Queues a message for an instance's orchestrator (it does not create
    /// the instance).
    async fn hosted_enqueue(&self, instance: &InstanceId, message: QueuedMessage) -> Result<()>;

    /// Queues an activity for workers.
    async fn hosted_enqueue_work(&self, item: WorkerItem) -> Result<()>;

    /// Takes the instance with the oldest visible message that is not
    /// locked (and whose pinned version `filter` accepts), waiting up to
    /// `poll` for one.
    async fn hosted_fetch(
        &self,
        lock: Duration,
        filter: Option<Vec<VersionRange>>,
        poll: Duration,
    ) -> Result<Option<HostedBatch>>;

    /// Commits a turn under the lock `token` holds; refused (nothing
    /// changed, the lock kept) if the lock is not held.
    async fn hosted_ack(&self, token: &HostedToken, turn: HostedTurn) -> Result<()>;

    /// Gives a fetched instance back.
    async fn hosted_abandon(
        &self,
        token: &HostedToken,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<()>;

    /// Extends an instance's lock from now.
    async fn hosted_renew(&self, token: &HostedToken, extend: Duration) -> Result<()>;

    /// Takes the oldest worker item `claim` and `tags` allow, waiting up to
    /// `poll` for one.
    async fn hosted_fetch_work(
        &self,
        lock: Duration,
        claim: Option<SessionClaim>,
        tags: TagFilter,
        poll: Duration,
    ) -> Result<Option<HostedWork>>;

    /// An activity finished: removes its item and queues its completion.
    async fn hosted_ack_work(
        &self,
        token: &HostedToken,
        completion: Option<(InstanceId, QueuedMessage)>,
    ) -> Result<()>;

    /// Gives a worker item back.
    async fn hosted_abandon_work(
        &self,
        token: &HostedToken,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<()>;

    /// Extends a worker item's lock from now.
    async fn hosted_renew_work(&self, token: &HostedToken, extend: Duration) -> Result<()>;

    /// Extends the sessions `owners` hold that were active within `idle`;
    /// returns how many.
    async fn hosted_renew_sessions(
        &self,
        owners: &[String],
        extend: Duration,
        idle: Duration,
    ) -> Result<u64>;

    /// Forgets sessions whose claim ran out and that have no items;
    /// returns how many.
    async fn hosted_cleanup_sessions(&self) -> Result<u64>;

    /// An instance's record, if it has one.
    async fn hosted_instance(&self, instance: &InstanceId) -> Result<Option<HostedInstanceView>>;

    /// The history of one execution (empty if there is none).
    async fn hosted_history(
        &self,
        instance: &InstanceId,
        execution_id: u64,
    ) -> Result<Vec<StoredEvent>>;

    /// Every instance that exists for clients, in id order.
    async fn hosted_instances(&self) -> Result<Vec<HostedInstanceView>>;

    /// Deletes an instance with its histories, messages, lock, key-value
    /// pairs and queued activities.
    async fn hosted_delete(&self, instance: &InstanceId) -> Result<HostedRemoved>;

    /// Removes old executions of an instance: not the current one, not a
    /// running one, not the newest `keep_last`, only those finished before
    /// `completed_before_ms` if given.
    async fn hosted_prune(
        &self,
        instance: &InstanceId,
        keep_last: u32,
        completed_before_ms: Option<u64>,
    ) -> Result<HostedRemoved>;

    /// Orchestrator messages and worker items no fetch holds.
    async fn hosted_queue_depths(&self) -> Result<(u64, u64)>;
}
