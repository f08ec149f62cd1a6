//! `basalt-runtime`: the durable runtime users program against.
//!
//! It will own the history events, orchestrator actions and instance
//! statuses of the Durable Task model, the `Backend` trait (the seam between
//! the runtime and any storage engine), the Rust SDK (orchestration context
//! with deterministic replay, activities, entities), the worker that runs
//! user code, and the client.
//!
//! Status: empty. It is filled by the issue that builds the partitioned
//! engine and the Rust SDK; nothing here pretends to work yet.
