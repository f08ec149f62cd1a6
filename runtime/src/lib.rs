//! `basalt-runtime`: the durable runtime users program against.
//!
//! It owns the Durable Task model — history events, orchestrator actions,
//! instance statuses ([`history`], [`types`]) — and the [`Backend`] trait,
//! the one seam between the runtime and any storage engine. The Rust SDK
//! (orchestration context with deterministic replay, activities), the worker
//! that runs user code against any `Backend`, the client and the `Backend`
//! conformance suite are built on these.
//!
//! It never touches storage itself: everything durable goes through a
//! `Backend`.

mod backend;
pub mod client;
pub mod conformance;
pub mod entity;
mod error;
pub mod history;
pub mod hosted;
pub mod sdk;
pub mod types;
pub mod worker;

pub use backend::{
    ActivityOutcome, ActivityWorkItem, Backend, CompletionToken, InstanceQuery,
    OrchestrationStepResult, OrchestrationWorkItem, QueryPage, StartRequest,
};
pub use client::{Client, ClientError, StartOptions};
pub use entity::{
    EntityBatchResult, EntityId, EntityOperation, EntityPage, EntityQuery, EntitySignal,
    EntityStartedOrchestration, EntityState, EntityWorkItem, OperationResult,
};
pub use error::{Error, ErrorKind, Result};
pub use history::{ActionKind, EventKind, HistoryEvent, OrchestratorAction, rewind_obstacle};
pub use types::{FailureDetails, InstanceId, InstanceState, OrchestrationStatus, ParentInstance};
pub use worker::{Worker, WorkerHandle, WorkerOptions};
