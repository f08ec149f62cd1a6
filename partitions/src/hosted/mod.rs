//! Hosted instances: durable state for a runtime that keeps its own
//! histories (duroxide, through `integrations/duroxide`).
//!
//! Basalt's own orchestrations are interpreted by this crate: it knows
//! what a history event means. A hosted runtime decides everything itself
//! and asks only for storage with the right locking: append-only
//! histories of opaque events per execution, an orchestrator queue per
//! instance fetched as a batch under an instance lock, a worker queue with
//! item locks, tags and sessions, a key-value store and a custom status
//! per instance (`docs/duroxide.md`). The rules here are those of
//! duroxide's provider contract; the bytes are the runtime's.
//!
//! Like the rest of the crate this is pure: time (`now_ms`), lock tokens
//! (the LSN of the fetch that takes a lock) and the hub-wide order of
//! enqueues arrive from the caller, so the state stays a function of the
//! log.

mod apply;
mod event;
mod instance;
mod scan;
mod worker;

pub use apply::HOSTED_QUEUE_MAX;
pub use basalt_runtime::hosted::{
    Ack, AckMetadata, FetchOutcome, KvEntry, KvOp, Lock, MessageKind, QueuedMessage, SessionClaim,
    StoredEvent, TagFilter, VersionRange, WorkerItem, WorkerItemId,
};
pub use event::{HostedEvent, HostedMessage, HostedReply, WorkOwner};
pub use instance::{AckRefusal, Execution, FetchPlan, HostedInstance, InstanceMeta};
pub use scan::{Candidate, HostedQueued, Ready};
pub use worker::{Session, WorkRefusal, WorkerQueue};

/// The execution statuses a hosted runtime reports that end an execution:
/// its key-value changes are merged into the instance's store then.
pub const FINISHED_STATUSES: [&str; 3] = ["Completed", "Failed", "ContinuedAsNew"];

/// The status of an execution no ack has finished yet.
pub const RUNNING_STATUS: &str = "Running";
