//! `basalt-engine`: the running engine.
//!
//! [`Engine::open`] recovers every partition of a task hub (checkpoint +
//! log replay through the pure [`basalt_partitions::PartitionState`]) and
//! runs one task per partition. Each task turns requests into logged
//! events, applies them, releases local effects (the next orchestration
//! step, activity dispatch, timers) at once — pipelining — and holds
//! outward effects (client answers, messages to other partitions, status
//! notifications) until the event's group commit is durable (I1). Messages
//! between partitions carry their origin position and are deduplicated by
//! the receiver (I3); the sender keeps them in its outbox until acked and
//! resends them after recovery.
//!
//! The engine implements [`basalt_runtime::Backend`].

mod engine;
mod hosted;
mod partition;
mod query;
mod queue;
mod shared;
mod summary;
mod tiers;
mod timers;
mod token;
mod transport;

pub use basalt_partitions as partitions;
pub use basalt_storage as storage;
pub use engine::{
    ACTIONS_PER_STEP_MAX, Engine, EngineOptions, LogPosition, OpenError, PartitionMetrics,
    replay_partition,
};
pub use shared::CheckpointWindow;
pub use summary::{PartitionSummary, summarize_partition};
pub use tiers::replay_partition_state;
pub use transport::{Outgoing, Refused, Transport};
