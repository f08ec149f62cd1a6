//! History events and orchestrator actions, one to one with the Durable
//! Task protocol (`HistoryEvent`, `OrchestratorAction`), so the gRPC sidecar
//! maps onto them without loss. Payloads are JSON text (`Option<String>`),
//! as on the wire.

use serde::{Deserialize, Serialize};

use crate::types::{FailureDetails, OrchestrationStatus, ParentInstance};

/// One event in an orchestration's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// For events that confirm an action (`TaskScheduled`, `TimerCreated`,
    /// `SubOrchestrationInstanceCreated`, `EventSent`): the action's id.
    /// `-1` for all other events.
    pub event_id: i32,
    /// When the event was recorded (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// For an event that confirms an action: the action's
    /// [`OrchestratorAction::correlation`], kept so a worker that matches
    /// answers by its own ids (the Durable Task protocol's entity
    /// `requestId` and `criticalSectionId`) gets them back. `None` otherwise.
    pub correlation: Option<String>,
}

impl HistoryEvent {
    /// An event that confirms no action (`event_id` -1).
    pub fn new(timestamp_ms: u64, kind: EventKind) -> HistoryEvent {
        HistoryEvent {
            event_id: -1,
            timestamp_ms,
            kind,
            correlation: None,
        }
    }
}

/// The kinds of history events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The instance (or a continue-as-new generation of it) started.
    ExecutionStarted {
        /// Orchestration name.
        name: String,
        /// Orchestration version, if any.
        version: Option<String>,
        /// Input (JSON).
        input: Option<String>,
        /// The parent, for a sub-orchestration.
        parent: Option<ParentInstance>,
        /// A scheduled start time, if any (ms since the Unix epoch).
        scheduled_start_ms: Option<u64>,
    },
    /// The orchestration finished (completed, failed or continued as new).
    ExecutionCompleted {
        /// Completed, Failed or ContinuedAsNew.
        status: OrchestrationStatus,
        /// Output (JSON), or the new input for continue-as-new.
        result: Option<String>,
        /// Why it failed.
        failure: Option<FailureDetails>,
    },
    /// A client terminated the instance.
    ExecutionTerminated {
        /// Why (JSON), if given.
        reason: Option<String>,
    },
    /// A client suspended the instance.
    ExecutionSuspended {
        /// Why, if given.
        reason: Option<String>,
    },
    /// A client resumed the instance.
    ExecutionResumed {
        /// Why, if given.
        reason: Option<String>,
    },
    /// A client rewound the failed instance: the failed activities and
    /// sub-orchestrations were taken out of the history, so the actions
    /// that issued them, unconfirmed now, are issued again by this step.
    ExecutionRewound {
        /// Why, if given.
        reason: Option<String>,
    },
    /// An activity was scheduled (confirms a `ScheduleTask` action).
    TaskScheduled {
        /// Activity name.
        name: String,
        /// Activity version, if any.
        version: Option<String>,
        /// Input (JSON).
        input: Option<String>,
    },
    /// An activity returned.
    TaskCompleted {
        /// The `event_id` of its `TaskScheduled`.
        task_scheduled_id: i32,
        /// Output (JSON).
        result: Option<String>,
    },
    /// An activity failed.
    TaskFailed {
        /// The `event_id` of its `TaskScheduled`.
        task_scheduled_id: i32,
        /// Why.
        failure: FailureDetails,
    },
    /// A sub-orchestration was created (confirms `CreateSubOrchestration`).
    SubOrchestrationInstanceCreated {
        /// The child's instance id.
        instance_id: String,
        /// The child's orchestration name.
        name: String,
        /// The child's version, if any.
        version: Option<String>,
        /// The child's input (JSON).
        input: Option<String>,
    },
    /// A sub-orchestration completed.
    SubOrchestrationInstanceCompleted {
        /// The `event_id` of its `SubOrchestrationInstanceCreated`.
        task_scheduled_id: i32,
        /// Its output (JSON).
        result: Option<String>,
    },
    /// A sub-orchestration failed.
    SubOrchestrationInstanceFailed {
        /// The `event_id` of its `SubOrchestrationInstanceCreated`.
        task_scheduled_id: i32,
        /// Why.
        failure: FailureDetails,
    },
    /// A durable timer was created (confirms `CreateTimer`).
    TimerCreated {
        /// When it fires (ms since the Unix epoch).
        fire_at_ms: u64,
    },
    /// A durable timer fired.
    TimerFired {
        /// The `event_id` of its `TimerCreated`.
        timer_id: i32,
        /// When it was due.
        fire_at_ms: u64,
    },
    /// A step of the orchestrator began; its timestamp is the step's
    /// deterministic "current time". Every work item's new events start
    /// with one.
    OrchestratorStarted,
    /// A step of the orchestrator ended.
    OrchestratorCompleted,
    /// The orchestration sent an event to another instance (confirms `SendEvent`).
    EventSent {
        /// The receiving instance.
        instance_id: String,
        /// Event name.
        name: String,
        /// Event data (JSON).
        input: Option<String>,
    },
    /// The orchestration signalled an entity (confirms `SignalEntity`).
    EntityOperationSignaled {
        /// The entity, as `@name@key`.
        entity: String,
        /// The operation.
        operation: String,
        /// Input (JSON).
        input: Option<String>,
    },
    /// The orchestration called an entity (confirms `CallEntity`).
    EntityOperationCalled {
        /// The entity, as `@name@key`.
        entity: String,
        /// The operation.
        operation: String,
        /// Input (JSON).
        input: Option<String>,
    },
    /// An entity call returned.
    EntityOperationCompleted {
        /// The `event_id` of its `EntityOperationCalled`.
        request_id: i32,
        /// Output (JSON).
        output: Option<String>,
    },
    /// An entity call failed; the entity's state is as before the call.
    EntityOperationFailed {
        /// The `event_id` of its `EntityOperationCalled`.
        request_id: i32,
        /// Why.
        failure: FailureDetails,
    },
    /// The orchestration asked to lock entities (confirms `LockEntities`).
    EntityLockRequested {
        /// The entities, as `@name@key`, sorted.
        entities: Vec<String>,
    },
    /// Every entity of a lock request is locked for the orchestration.
    EntityLockGranted {
        /// The `event_id` of its `EntityLockRequested`.
        request_id: i32,
    },
    /// The orchestration released locked entities (confirms `UnlockEntities`).
    EntityUnlockSent {
        /// The entities, as `@name@key`.
        entities: Vec<String>,
    },
    /// An external event arrived.
    EventRaised {
        /// Event name.
        name: String,
        /// Event data (JSON).
        input: Option<String>,
    },
}

/// A decision of one orchestrator step, for the backend to carry out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrchestratorAction {
    /// Sequence number of the action within the orchestration execution
    /// (0, 1, 2, ... in the order the code issued them); the confirming
    /// history event gets it as `event_id`.
    pub id: i32,
    /// What to do.
    pub kind: ActionKind,
    /// An id the worker gave the action itself (the Durable Task protocol's
    /// entity `requestId` / `criticalSectionId`), stored on the confirming
    /// event; the Rust SDK matches by `id` and leaves it `None`.
    pub correlation: Option<String>,
}

impl OrchestratorAction {
    /// An action without a worker-chosen correlation id.
    pub fn new(id: i32, kind: ActionKind) -> OrchestratorAction {
        OrchestratorAction {
            id,
            kind,
            correlation: None,
        }
    }
}

/// The kinds of orchestrator actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// Run an activity.
    ScheduleTask {
        /// Activity name.
        name: String,
        /// Activity version, if any.
        version: Option<String>,
        /// Input (JSON).
        input: Option<String>,
    },
    /// Start a sub-orchestration.
    CreateSubOrchestration {
        /// The child's instance id.
        instance_id: String,
        /// The child's orchestration name.
        name: String,
        /// The child's version, if any.
        version: Option<String>,
        /// The child's input (JSON).
        input: Option<String>,
    },
    /// Start a durable timer.
    CreateTimer {
        /// When it fires (ms since the Unix epoch).
        fire_at_ms: u64,
    },
    /// Raise an event on another instance.
    SendEvent {
        /// The receiving instance.
        instance_id: String,
        /// Event name.
        name: String,
        /// Event data (JSON).
        data: Option<String>,
    },
    /// Queue an operation on an entity, one-way.
    SignalEntity {
        /// The entity, as `@name@key`.
        entity: String,
        /// The operation.
        operation: String,
        /// Input (JSON).
        input: Option<String>,
        /// Deliver it not before this time (ms since the Unix epoch), kept
        /// on a durable timer at the entity; `None` delivers it now.
        scheduled_ms: Option<u64>,
    },
    /// Queue an operation on an entity and wait for its result, delivered
    /// as `EntityOperationCompleted` / `EntityOperationFailed` with
    /// `request_id` = this action's id.
    CallEntity {
        /// The entity, as `@name@key`.
        entity: String,
        /// The operation.
        operation: String,
        /// Input (JSON).
        input: Option<String>,
    },
    /// Lock entities for this orchestration (a critical section): granted
    /// as `EntityLockGranted` with `request_id` = this action's id. The
    /// entities are locked one after the other in sorted order, so two
    /// orchestrations locking overlapping sets cannot deadlock.
    LockEntities {
        /// The entities, as `@name@key`, sorted and without duplicates.
        entities: Vec<String>,
    },
    /// Release entities this orchestration locked.
    UnlockEntities {
        /// The entities, as `@name@key`.
        entities: Vec<String>,
    },
    /// Finish this execution: completed, failed, or continued as new.
    CompleteOrchestration {
        /// Completed, Failed or ContinuedAsNew.
        status: OrchestrationStatus,
        /// Output (JSON), or the new input for ContinuedAsNew.
        result: Option<String>,
        /// Why it failed.
        failure: Option<FailureDetails>,
        /// ContinuedAsNew: a new version, if any.
        new_version: Option<String>,
        /// ContinuedAsNew: unprocessed external events to carry into the
        /// new generation.
        carryover_events: Vec<HistoryEvent>,
    },
}

/// Why a failed history cannot be rewound: it failed inside a critical
/// section (its locks were released when it failed, and replay would
/// believe it still holds them) or while waiting for one. Shared by the
/// partition that refuses such a rewind and the servers that check a
/// whole tree of sub-orchestrations before rewinding any of it.
pub fn rewind_obstacle(history: &[HistoryEvent]) -> Option<&'static str> {
    let mut held: Vec<&str> = Vec::new();
    let mut waiting = Vec::new();
    for event in history {
        match &event.kind {
            EventKind::EntityLockRequested { .. } => waiting.push(event.event_id),
            EventKind::EntityLockGranted { request_id } => {
                waiting.retain(|id| id != request_id);
                if let Some(requested) = history.iter().find(|e| {
                    e.event_id == *request_id
                        && matches!(e.kind, EventKind::EntityLockRequested { .. })
                }) && let EventKind::EntityLockRequested { entities } = &requested.kind
                {
                    held.extend(entities.iter().map(String::as_str));
                }
            }
            EventKind::EntityUnlockSent { entities } => {
                held.retain(|e| !entities.iter().any(|u| u == e));
            }
            _ => {}
        }
    }
    if !held.is_empty() {
        Some("it failed inside a critical section (its entity locks were released)")
    } else if !waiting.is_empty() {
        Some("it failed while waiting for entity locks")
    } else {
        None
    }
}
