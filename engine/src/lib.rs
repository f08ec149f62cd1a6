//! `basalt-engine`: the running engine.
//!
//! It will own one task per partition, the group-commit pipeline over
//! [`basalt_storage::Log`], durability listeners that release outbox
//! messages and client answers only after commit (I1), routing, partition
//! queues, activity dispatch, timers, checkpoint scheduling and recovery,
//! and it will implement the runtime's `Backend` trait.
//!
//! Status: only the storage layer below it exists ([`basalt_storage`]);
//! the engine itself is built by the next issue.

pub use basalt_storage as storage;
