//! The Rust SDK: what orchestration, activity and entity authors program
//! against, and the replay executor that runs their orchestrations.
//!
//! - [`Registry`] (built with [`RegistryBuilder`]) owns the mapping from
//!   orchestration, activity and entity names to user functions, raw (JSON
//!   text in and out) or typed (serde values in and out).
//! - [`OrchestrationContext`] is the orchestration's handle on the durable
//!   world: activities, timers, external events, sub-orchestrations,
//!   entity signals and calls, critical sections over entities
//!   ([`OrchestrationContext::lock_entities`]), continue-as-new, custom
//!   status, deterministic time and GUIDs. Every
//!   call that schedules something returns a future ([`Task`], [`Timer`],
//!   [`ExternalEvent`], [`LockTask`]) that resolves only once the executor has processed
//!   the history event that completes it, so `join_all`, `select` and
//!   `select_all` are deterministic under replay.
//! - [`OrchestrationExecutor`] owns the replay of one instance: it turns
//!   `(past_events, new_events)` into the step's actions, detects
//!   non-determinism, and keeps its cursor between steps so a step usually
//!   processes only the events it has not seen yet.
//! - [`ActivityContext`] and [`ActivityError`] are what activity functions
//!   receive and return.
//! - [`EntityContext`] and [`EntityError`] are what entity operations
//!   receive and return; [`Registry::run_entity_batch`] runs a batch of
//!   operations with per-operation rollback.
//!
//! # Failures seen by orchestrations
//!
//! A failed activity surfaces as [`OrchestrationError::ActivityFailed`],
//! which carries the activity's own [`FailureDetails`](crate::FailureDetails)
//! unchanged in `details`. If the orchestration lets that error escape
//! (e.g. with `?`), the instance fails with `error_type` `"ActivityFailed"`
//! and the activity's failure as `inner`. Sub-orchestrations behave the same
//! way with `"SubOrchestrationFailed"`, and failed entity calls
//! ([`OrchestrationContext::call_entity`]) surface as
//! [`OrchestrationError::EntityFailed`] and fail an instance they escape
//! with `"EntityOperationFailed"`. Entity signals are one-way: their
//! failures are never reported to the orchestration.
//!
//! # Critical sections
//!
//! [`OrchestrationContext::lock_entities`] locks a set of entities (sorted
//! and deduplicated, so overlapping sets never deadlock) and resolves to a
//! [`LockGuard`] once history records the grant; calls from the holder
//! run, everyone else's operations on those entities wait.
//! [`OrchestrationContext::unlock`] (or [`LockGuard::release`]) releases
//! them; releasing twice is a no-op, and a guard dropped unreleased keeps
//! its locks until the execution ends, when the backend releases them.
//! Locking nothing, or locking again before releasing (critical sections
//! do not nest), fails the lock task with
//! [`OrchestrationError::EntityLock`], which fails an instance it escapes
//! with the non-retriable [`ENTITY_LOCK_ERROR`].
//!
//! # Failure types produced by the executor
//!
//! | `error_type` | when |
//! |---|---|
//! | `NonDeterminismError` | the code issued different actions than its history records |
//! | `OrchestrationNotFound` | no orchestration of that name is registered |
//! | `Panic` | the orchestration function panicked |
//! | `SerializationError` | a typed input or output could not be (de)serialized |
//! | `EntityLockError` | a misused `lock_entities` escaped the orchestration |
//! | `InvalidHistory` | the history has no `ExecutionStarted` |
//!
//! # Failure types of entity operations
//!
//! A failed operation's result is [`OperationResult::Failed`](crate::OperationResult)
//! and its state changes and signals are discarded. Besides the entity's
//! own [`EntityError`]s:
//!
//! | `error_type` | when |
//! |---|---|
//! | `EntityNotFound` | no entity of that name is registered (non-retriable; every operation of the batch) |
//! | `UnknownOperation` | the entity returned [`EntityError::unknown_operation`] (non-retriable) |
//! | `Panic` | the operation panicked |
//! | `SerializationError` | a typed state, input or output could not be (de)serialized (non-retriable) |

#![warn(missing_docs)]

mod context;
mod entity;
mod error;
mod executor;
mod registry;

pub use context::{
    ExternalEvent, LockGuard, LockTask, OrchestrationContext, RetryPolicy, Task, Timer,
};
pub use entity::{ENTITY_NOT_FOUND, EntityContext, EntityError, UNKNOWN_OPERATION};
pub use error::{ENTITY_LOCK_ERROR, OrchestrationError};
pub use executor::OrchestrationExecutor;
pub use registry::{
    ActivityContext, ActivityError, FunctionKind, Registry, RegistryBuilder, RegistryError,
};
