//! `basalt-partitions`: the partition state machine.
//!
//! A partition owns a set of orchestration instances (those whose id hashes
//! to it, see [`partition_of`]). Its state — instances and their histories,
//! scheduled activities, armed timers, the outbox of messages to other
//! partitions and the highest position received from each — changes only
//! through [`PartitionState::apply`], one logged [`Event`] at a time, which
//! returns the [`Effects`] the engine must carry out.
//!
//! This crate never does I/O, never reads a clock, never spawns a thread
//! and never draws a random number: time and ids arrive inside events, so
//! the state is a pure function of the log (I2), and a snapshot encodes to
//! the same bytes whenever the state is the same.

pub mod checkpoint;
pub mod codec;
mod event;
pub mod evicted;
pub mod hosted;
mod routing;
mod state;
mod tier;

pub use event::{
    ActivityTask, Caller, ControlOp, Effects, EntityBatchTask, Envelope, Event, LockChain, Message,
    Position, QueueItem, QueuedOperation, Reply, SIGNAL_TIMER_ID, START_TIMER_ID, StepOffer,
    StepTask, TimerTask,
};
pub use routing::partition_of;
pub use state::{
    Applied, Core, ENTITY_BATCH_OPERATIONS_MAX, Entity, HISTORY_EVENTS_MAX, Instance,
    PartitionState, StateKey, Suspended, entity_matches, entity_view, instance_matches,
    instance_view,
};
pub use tier::{Change, IndexTag, Indexed, Tier};
