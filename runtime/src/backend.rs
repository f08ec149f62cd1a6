//! The pluggable seam: every storage engine implements [`Backend`]; the
//! SDK's worker and client, the gRPC sidecar and the duroxide adapter use
//! nothing else. It is shaped like Durable Task's orchestration service, so
//! the sidecar protocol maps onto it directly.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::entity::{
    EntityBatchResult, EntityId, EntityOperation, EntityPage, EntityQuery, EntityState,
    EntityWorkItem,
};
use crate::error::Result;
use crate::history::{ActionKind, HistoryEvent, OrchestratorAction};
use crate::types::{FailureDetails, InstanceId, InstanceState, OrchestrationStatus};

/// A request to start an orchestration instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The orchestration name (must be registered with some worker).
    pub name: String,
    /// The instance id; generated when absent.
    pub instance_id: Option<String>,
    /// Input (JSON).
    pub input: Option<String>,
    /// Orchestration version, if any.
    pub version: Option<String>,
    /// Do not start before this time (ms since the Unix epoch).
    pub scheduled_start_ms: Option<u64>,
    /// Tags to keep with the instance (see [`InstanceState::tags`]).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Filters and paging of [`Backend::query_instances`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceQuery {
    /// Only these statuses (all when empty).
    pub statuses: Vec<OrchestrationStatus>,
    /// Only instances created at or after this time (ms since the Unix epoch).
    pub created_from_ms: Option<u64>,
    /// Only instances created before this time.
    pub created_to_ms: Option<u64>,
    /// Only instance ids starting with this prefix.
    pub instance_id_prefix: Option<String>,
    /// Only instances of the orchestration with this name (exact match).
    pub name: Option<String>,
    /// Most instances per page (1..=1000).
    pub page_size: usize,
    /// Where the previous page ended (from [`QueryPage::continuation`]).
    pub continuation: Option<String>,
    /// Include inputs, outputs and custom status (they can be large).
    pub fetch_inputs_and_outputs: bool,
}

impl Default for InstanceQuery {
    fn default() -> Self {
        InstanceQuery {
            statuses: Vec::new(),
            created_from_ms: None,
            created_to_ms: None,
            instance_id_prefix: None,
            name: None,
            page_size: 100,
            continuation: None,
            fetch_inputs_and_outputs: false,
        }
    }
}

/// One page of query results, ordered by instance id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPage {
    /// The instances on this page.
    pub instances: Vec<InstanceState>,
    /// Pass back to get the next page; `None` on the last page.
    pub continuation: Option<String>,
}

/// Opaque proof of which work item a completion is for; a stale one (the
/// item was already completed, abandoned, or its partition recovered) is
/// rejected with `Error::StaleToken` instead of being applied twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompletionToken(pub String);

/// One step of work for an orchestration: its history so far and what is new.
#[derive(Clone, Debug)]
pub struct OrchestrationWorkItem {
    /// The instance.
    pub instance_id: InstanceId,
    /// The history before this step (shared, not copied, between steps).
    pub past_events: Arc<Vec<HistoryEvent>>,
    /// The events of this step; the first is always `OrchestratorStarted`.
    pub new_events: Vec<HistoryEvent>,
    /// For the completion.
    pub token: CompletionToken,
    /// The execution (generation) of the instance the step belongs to:
    /// unique per instance id and generation (a continue-as-new or a
    /// restart of the id starts a new one), stable across replays. The
    /// sidecar derives the protocol's `executionId` from it.
    pub execution: u64,
}

/// What one orchestrator step decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchestrationStepResult {
    /// The new actions, in issue order.
    pub actions: Vec<OrchestratorAction>,
    /// The custom status (JSON) the orchestration set, if any.
    pub custom_status: Option<String>,
}

impl OrchestrationStepResult {
    /// The step that fails the instance with `error_type` and `message`
    /// instead of taking this one's actions: what a step past a limit
    /// becomes (refusing it would only make the worker retry it forever).
    pub fn failing(&self, error_type: &str, message: String) -> OrchestrationStepResult {
        OrchestrationStepResult {
            actions: vec![OrchestratorAction::new(
                self.actions.iter().map(|a| a.id + 1).max().unwrap_or(0),
                ActionKind::CompleteOrchestration {
                    status: OrchestrationStatus::Failed,
                    result: None,
                    failure: Some(FailureDetails::new(error_type, message)),
                    new_version: None,
                    carryover_events: Vec::new(),
                },
            )],
            custom_status: None,
        }
    }
}

/// One activity invocation to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityWorkItem {
    /// The orchestration instance that scheduled it.
    pub instance_id: InstanceId,
    /// Activity name.
    pub name: String,
    /// Activity version, if any.
    pub version: Option<String>,
    /// Input (JSON).
    pub input: Option<String>,
    /// The `TaskScheduled` event id it answers.
    pub task_id: i32,
    /// For the completion.
    pub token: CompletionToken,
}

/// How an activity ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityOutcome {
    /// It returned this output (JSON).
    Completed(Option<String>),
    /// It failed.
    Failed(FailureDetails),
}

/// A durable execution backend: stores instances and hands out work.
///
/// Rules every implementation keeps (the SDK's executor cache and its
/// non-determinism checks depend on them; the conformance suite checks them):
///
/// - Within one execution history only grows: the next step's past events
///   are this step's past events, then its new events, then the events
///   confirming its actions (`TaskScheduled`, `TimerCreated`, ... with
///   `event_id` = action id), then `OrchestratorCompleted`. External events
///   and completions arrive only in `new_events`.
/// - `OrchestrationStepResult::custom_status` is the full current value;
///   `None` leaves the stored value as it is.
/// - `next_*_work_item` is cancel-safe: a work item is handed out only when
///   the future returns it, so dropping a waiting call loses nothing.
/// - Client answers reflect only durable state, and a started instance is
///   durable when `start_instance` returns.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Creates an instance and returns its id. A start on an id whose
    /// instance is not terminal is a `Conflict`; a finished one is replaced.
    async fn start_instance(&self, request: StartRequest) -> Result<InstanceId>;

    /// Delivers an external event to an instance.
    async fn raise_event(
        &self,
        instance: &InstanceId,
        name: &str,
        data: Option<String>,
    ) -> Result<()>;

    /// Ends an instance as Terminated (no effect on a finished one).
    async fn terminate(&self, instance: &InstanceId, reason: Option<String>) -> Result<()>;

    /// Terminates `instance` once the step a worker holds now is done: its
    /// result is taken (activities it scheduled, messages it sent) or the
    /// step is given back, and then the instance ends as Terminated, as the
    /// Durable Task Scheduler terminates. The caller knows a step is out
    /// (a worker took it); the default terminates at once.
    async fn terminate_after_step(
        &self,
        instance: &InstanceId,
        reason: Option<String>,
    ) -> Result<()> {
        self.terminate(instance, reason).await
    }

    /// Pauses an instance: new events queue until it is resumed.
    async fn suspend(&self, instance: &InstanceId, reason: Option<String>) -> Result<()>;

    /// Resumes a suspended instance (no effect on one that is not suspended).
    async fn resume(&self, instance: &InstanceId, reason: Option<String>) -> Result<()>;

    /// Runs a Failed instance again from where it failed: its failed
    /// activities and sub-orchestrations are forgotten, so replay issues
    /// them again (the caller rewinds failed children). Rewinding an
    /// instance that is not Failed is a `Conflict`.
    async fn rewind(&self, instance: &InstanceId, reason: Option<String>) -> Result<()>;

    /// [`Backend::rewind`], and in the same step starts again from scratch
    /// the sub-orchestrations in `recreate`: children the instance created
    /// and has no success from that no longer exist (purged), so they can
    /// neither be rewound nor answer. Each starts anew with the name,
    /// version and input its creation recorded, as the instance's child,
    /// and its answer reaches the rewound instance. A backend that cannot
    /// do this refuses a non-empty `recreate` as a `Conflict`.
    async fn rewind_recreating(
        &self,
        instance: &InstanceId,
        reason: Option<String>,
        recreate: Vec<InstanceId>,
    ) -> Result<()> {
        if recreate.is_empty() {
            self.rewind(instance, reason).await
        } else {
            Err(crate::Error::Conflict(format!(
                "instance {instance} cannot be rewound: this backend cannot start its purged \
                 sub-orchestrations again"
            )))
        }
    }

    /// Deletes a finished instance and its history; `false` if there was none.
    /// Purging a running instance is a `Conflict`.
    async fn purge(&self, instance: &InstanceId) -> Result<bool>;

    /// The instance's state, or `None`.
    async fn get_instance(&self, instance: &InstanceId) -> Result<Option<InstanceState>>;

    /// The instance's full history (current execution).
    async fn get_history(&self, instance: &InstanceId) -> Result<Vec<HistoryEvent>>;

    /// Instances matching a query, one page at a time.
    async fn query_instances(&self, query: &InstanceQuery) -> Result<QueryPage>;

    /// Waits (by notification) until the instance has started running.
    async fn wait_for_start(
        &self,
        instance: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceState>;

    /// Waits (by notification) until the instance is Completed, Failed or
    /// Terminated.
    async fn wait_for_completion(
        &self,
        instance: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceState>;

    /// The next orchestration step to run; waits until there is one.
    async fn next_orchestration_work_item(&self) -> Result<OrchestrationWorkItem>;

    /// Applies a step's result. A stale token is rejected.
    async fn complete_orchestration_work_item(
        &self,
        token: &CompletionToken,
        result: OrchestrationStepResult,
    ) -> Result<()>;

    /// Gives a step back (e.g. its worker is stopping); it is offered again.
    async fn abandon_orchestration_work_item(&self, token: &CompletionToken) -> Result<()>;

    /// The next activity to run; waits until there is one.
    async fn next_activity_work_item(&self) -> Result<ActivityWorkItem>;

    /// Records an activity's outcome. A stale token is rejected; a
    /// duplicate completion of an already-applied activity is dropped.
    async fn complete_activity_work_item(
        &self,
        token: &CompletionToken,
        outcome: ActivityOutcome,
    ) -> Result<()>;

    /// Gives an activity back; it is offered again.
    async fn abandon_activity_work_item(&self, token: &CompletionToken) -> Result<()>;

    /// Whether the work item `token` names is known to be of no use any
    /// more (the execution that scheduled it ended, or its partition was
    /// reopened), so that its completion would be refused as stale. A
    /// dispatcher that held an item for a while asks before handing it
    /// out. Cheap and synchronous; `false` when unsure.
    fn is_stale(&self, token: &CompletionToken) -> bool {
        let _ = token;
        false
    }

    /// Queues an operation on an entity, one-way; with `scheduled_start_ms`
    /// not before that time. Creates the entity's queue if needed.
    async fn signal_entity(
        &self,
        entity: &EntityId,
        operation: EntityOperation,
        scheduled_start_ms: Option<u64>,
    ) -> Result<()>;

    /// An entity's state, or `None` if it has none.
    async fn get_entity(&self, entity: &EntityId) -> Result<Option<EntityState>>;

    /// Entities matching a query, one page at a time, in id order.
    async fn query_entities(&self, query: &EntityQuery) -> Result<EntityPage>;

    /// The next batch of entity operations to run; waits until there is one.
    async fn next_entity_work_item(&self) -> Result<EntityWorkItem>;

    /// Applies a batch's outcome. A stale token is rejected.
    async fn complete_entity_work_item(
        &self,
        token: &crate::backend::CompletionToken,
        result: EntityBatchResult,
    ) -> Result<()>;

    /// Gives a batch back; it is offered again.
    async fn abandon_entity_work_item(&self, token: &crate::backend::CompletionToken)
    -> Result<()>;
}
