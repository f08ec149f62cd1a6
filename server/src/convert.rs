//! The Durable Task wire types ([`crate::proto`]) to and from the runtime's
//! types. The runtime mirrors the protocol, so most of this is field for
//! field; the exceptions are written down where they happen:
//!
//! - Entity calls and locks: the SDKs match answers by their own string ids
//!   (`requestId`, `criticalSectionId`), the engine by action id. The string
//!   travels as the action's `correlation`, is stored on the confirming
//!   history event, and answers (`EntityOperationCompleted { request_id }`,
//!   `EntityLockGranted`) get it back by looking up that event.
//! - Times: the engine keeps milliseconds; a timer's `fireAt` is rounded up
//!   to the next millisecond so it never fires early.

use std::collections::HashMap;

use basalt_runtime::entity::{
    EntityBatchResult, EntitySignal, EntityStartedOrchestration, OperationResult,
};
use basalt_runtime::{
    ActionKind, ActivityOutcome, ActivityWorkItem, EntityId, EntityOperation, EntityState,
    EntityWorkItem, EventKind, FailureDetails, HistoryEvent, InstanceId, InstanceState,
    OrchestrationStatus, OrchestrationStepResult, OrchestrationWorkItem, OrchestratorAction,
};
use prost_types::Timestamp;

use crate::history_wire::{PastEvents, RequestHead};
use crate::proto;
use crate::proto::history_event::EventType;
use crate::proto::orchestrator_action::OrchestratorActionType;
use crate::proto::send_entity_message_action::EntityMessageType;

/// A request the protocol allows but this server cannot carry out, or a
/// malformed one; the message says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// Malformed: a required field is missing or out of range.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but not supported by Basalt (yet).
    #[error("{0}")]
    Unsupported(String),
}

/// Longest instance id (entity ids included, as `@name@key`) a client or
/// worker may create through the sidecar, in characters: the Durable Task
/// Scheduler's limit, which the SDKs' tests expect. The engine itself
/// takes up to [`basalt_runtime::types::INSTANCE_ID_BYTES_MAX`] bytes (the Rust
/// SDK and the HTTP API), and lookups take any id it holds.
pub const NEW_ID_CHARS_MAX: usize = 100;

/// Refuses an id to be created that is longer than [`NEW_ID_CHARS_MAX`].
pub fn check_new_id(field: &str, id: &str) -> Result<(), ConvertError> {
    let chars = id.chars().count();
    if chars > NEW_ID_CHARS_MAX {
        return Err(ConvertError::Invalid(format!(
            "{field} is {chars} characters long, the maximum is {NEW_ID_CHARS_MAX}"
        )));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch as a protobuf timestamp.
pub fn timestamp(ms: u64) -> Timestamp {
    Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as milliseconds since the Unix epoch, rounded up
/// (a timer must never fire early); times before 1970 become 0.
pub fn millis(ts: &Timestamp) -> u64 {
    if ts.seconds < 0 {
        return 0;
    }
    let nanos = ts.nanos.clamp(0, 999_999_999) as u64;
    (ts.seconds as u64)
        .saturating_mul(1000)
        .saturating_add(nanos.div_ceil(1_000_000))
}

/// The runtime's status as the protocol's enum value.
pub fn status_to_proto(status: OrchestrationStatus) -> proto::OrchestrationStatus {
    use proto::OrchestrationStatus as P;
    match status {
        OrchestrationStatus::Pending => P::Pending,
        OrchestrationStatus::Running => P::Running,
        OrchestrationStatus::Completed => P::Completed,
        OrchestrationStatus::Failed => P::Failed,
        OrchestrationStatus::Terminated => P::Terminated,
        OrchestrationStatus::Suspended => P::Suspended,
        OrchestrationStatus::ContinuedAsNew => P::ContinuedAsNew,
    }
}

/// The protocol's status as the runtime's (`CANCELED` is reported as
/// Terminated, which is what it means in Durable Task).
pub fn status_from_proto(value: i32) -> Result<OrchestrationStatus, ConvertError> {
    use proto::OrchestrationStatus as P;
    let status = P::try_from(value)
        .map_err(|_| ConvertError::Invalid(format!("unknown orchestration status {value}")))?;
    Ok(match status {
        P::Running => OrchestrationStatus::Running,
        P::Completed => OrchestrationStatus::Completed,
        P::ContinuedAsNew => OrchestrationStatus::ContinuedAsNew,
        P::Failed => OrchestrationStatus::Failed,
        P::Canceled | P::Terminated => OrchestrationStatus::Terminated,
        P::Pending => OrchestrationStatus::Pending,
        P::Suspended => OrchestrationStatus::Suspended,
    })
}

/// Failure details to the wire.
pub fn failure_to_proto(failure: &FailureDetails) -> proto::TaskFailureDetails {
    proto::TaskFailureDetails {
        error_type: failure.error_type.clone(),
        error_message: failure.message.clone(),
        stack_trace: failure.stack_trace.clone(),
        inner_failure: failure
            .inner
            .as_deref()
            .map(|inner| Box::new(failure_to_proto(inner))),
        is_non_retriable: failure.is_non_retriable,
        properties: HashMap::new(),
    }
}

/// Failure details from the wire.
pub fn failure_from_proto(failure: &proto::TaskFailureDetails) -> FailureDetails {
    FailureDetails {
        error_type: failure.error_type.clone(),
        message: failure.error_message.clone(),
        stack_trace: failure.stack_trace.clone(),
        inner: failure
            .inner_failure
            .as_deref()
            .map(|inner| Box::new(failure_from_proto(inner))),
        is_non_retriable: failure.is_non_retriable,
    }
}

fn instance(id: &str) -> proto::OrchestrationInstance {
    proto::OrchestrationInstance {
        instance_id: id.to_owned(),
        execution_id: None,
    }
}

/// An entity call's or lock request's wire id, by its action id.
fn correlation(event: &HistoryEvent) -> Option<(i32, String)> {
    matches!(
        event.kind,
        EventKind::EntityOperationCalled { .. } | EventKind::EntityLockRequested { .. }
    )
    .then(|| {
        let id = event
            .correlation
            .clone()
            .unwrap_or_else(|| event.event_id.to_string());
        (event.event_id, id)
    })
}

/// One history event to the wire. `instance_id` is the orchestration's;
/// `wire_ids`: the wire ids of the entity calls before it (see
/// [`WireConverter`]).
fn event_to_proto(
    event: &HistoryEvent,
    instance_id: &str,
    wire_ids: &HashMap<i32, String>,
) -> proto::HistoryEvent {
    let wire_id = |request_id: i32| {
        wire_ids
            .get(&request_id)
            .cloned()
            .unwrap_or_else(|| request_id.to_string())
    };
    let correlation = event.correlation.clone().unwrap_or_default();
    let event_type = match &event.kind {
        EventKind::ExecutionStarted {
            name,
            version,
            input,
            parent,
            scheduled_start_ms,
        } => EventType::ExecutionStarted(proto::ExecutionStartedEvent {
            name: name.clone(),
            version: version.clone(),
            input: input.clone(),
            orchestration_instance: Some(instance(instance_id)),
            parent_instance: parent.as_ref().map(|p| proto::ParentInstanceInfo {
                task_scheduled_id: p.task_scheduled_id,
                name: Some(p.name.clone()),
                version: None,
                orchestration_instance: Some(instance(p.instance_id.as_str())),
            }),
            scheduled_start_timestamp: scheduled_start_ms.map(timestamp),
            ..Default::default()
        }),
        EventKind::ExecutionCompleted {
            status,
            result,
            failure,
        } => EventType::ExecutionCompleted(proto::ExecutionCompletedEvent {
            orchestration_status: status_to_proto(*status) as i32,
            result: result.clone(),
            failure_details: failure.as_ref().map(failure_to_proto),
        }),
        EventKind::ExecutionTerminated { reason } => {
            EventType::ExecutionTerminated(proto::ExecutionTerminatedEvent {
                input: reason.clone(),
                recurse: false,
            })
        }
        EventKind::ExecutionSuspended { reason } => {
            EventType::ExecutionSuspended(proto::ExecutionSuspendedEvent {
                input: reason.clone(),
            })
        }
        // The SDKs start their own rewind protocol on an `executionRewound`
        // among the new events; Basalt has already rewritten the history,
        // so workers get a no-op marker and re-issue what is unconfirmed.
        EventKind::ExecutionRewound { reason } => EventType::GenericEvent(proto::GenericEvent {
            data: reason.clone(),
        }),
        EventKind::ExecutionResumed { reason } => {
            EventType::ExecutionResumed(proto::ExecutionResumedEvent {
                input: reason.clone(),
            })
        }
        EventKind::TaskScheduled {
            name,
            version,
            input,
        } => EventType::TaskScheduled(proto::TaskScheduledEvent {
            name: name.clone(),
            version: version.clone(),
            input: input.clone(),
            ..Default::default()
        }),
        EventKind::TaskCompleted {
            task_scheduled_id,
            result,
        } => EventType::TaskCompleted(proto::TaskCompletedEvent {
            task_scheduled_id: *task_scheduled_id,
            result: result.clone(),
        }),
        EventKind::TaskFailed {
            task_scheduled_id,
            failure,
        } => EventType::TaskFailed(proto::TaskFailedEvent {
            task_scheduled_id: *task_scheduled_id,
            failure_details: Some(failure_to_proto(failure)),
        }),
        EventKind::SubOrchestrationInstanceCreated {
            instance_id,
            name,
            version,
            input,
        } => EventType::SubOrchestrationInstanceCreated(
            proto::SubOrchestrationInstanceCreatedEvent {
                instance_id: instance_id.clone(),
                name: name.clone(),
                version: version.clone(),
                input: input.clone(),
                ..Default::default()
            },
        ),
        EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id,
            result,
        } => EventType::SubOrchestrationInstanceCompleted(
            proto::SubOrchestrationInstanceCompletedEvent {
                task_scheduled_id: *task_scheduled_id,
                result: result.clone(),
            },
        ),
        EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id,
            failure,
        } => {
            EventType::SubOrchestrationInstanceFailed(proto::SubOrchestrationInstanceFailedEvent {
                task_scheduled_id: *task_scheduled_id,
                failure_details: Some(failure_to_proto(failure)),
            })
        }
        EventKind::TimerCreated { fire_at_ms } => {
            EventType::TimerCreated(proto::TimerCreatedEvent {
                fire_at: Some(timestamp(*fire_at_ms)),
            })
        }
        EventKind::TimerFired {
            timer_id,
            fire_at_ms,
        } => EventType::TimerFired(proto::TimerFiredEvent {
            fire_at: Some(timestamp(*fire_at_ms)),
            timer_id: *timer_id,
        }),
        EventKind::OrchestratorStarted => {
            EventType::OrchestratorStarted(proto::OrchestratorStartedEvent {})
        }
        EventKind::OrchestratorCompleted => {
            EventType::OrchestratorCompleted(proto::OrchestratorCompletedEvent {})
        }
        EventKind::EventSent {
            instance_id,
            name,
            input,
        } => EventType::EventSent(proto::EventSentEvent {
            instance_id: instance_id.clone(),
            name: name.clone(),
            input: input.clone(),
        }),
        EventKind::EventRaised { name, input } => EventType::EventRaised(proto::EventRaisedEvent {
            name: name.clone(),
            input: input.clone(),
        }),
        EventKind::EntityOperationSignaled {
            entity,
            operation,
            input,
        } => EventType::EntityOperationSignaled(proto::EntityOperationSignaledEvent {
            request_id: correlation,
            operation: operation.clone(),
            scheduled_time: None,
            input: input.clone(),
            target_instance_id: Some(entity.clone()),
        }),
        EventKind::EntityOperationCalled {
            entity,
            operation,
            input,
        } => EventType::EntityOperationCalled(proto::EntityOperationCalledEvent {
            request_id: wire_id(event.event_id),
            operation: operation.clone(),
            input: input.clone(),
            target_instance_id: Some(entity.clone()),
            ..Default::default()
        }),
        EventKind::EntityOperationCompleted { request_id, output } => {
            EventType::EntityOperationCompleted(proto::EntityOperationCompletedEvent {
                request_id: wire_id(*request_id),
                output: output.clone(),
            })
        }
        EventKind::EntityOperationFailed {
            request_id,
            failure,
        } => EventType::EntityOperationFailed(proto::EntityOperationFailedEvent {
            request_id: wire_id(*request_id),
            failure_details: Some(failure_to_proto(failure)),
        }),
        EventKind::EntityLockRequested { entities } => {
            EventType::EntityLockRequested(proto::EntityLockRequestedEvent {
                critical_section_id: wire_id(event.event_id),
                lock_set: entities.clone(),
                position: 0,
                parent_instance_id: None,
            })
        }
        EventKind::EntityLockGranted { request_id } => {
            EventType::EntityLockGranted(proto::EntityLockGrantedEvent {
                critical_section_id: wire_id(*request_id),
            })
        }
        EventKind::EntityUnlockSent { entities } => {
            EventType::EntityUnlockSent(proto::EntityUnlockSentEvent {
                critical_section_id: correlation,
                parent_instance_id: None,
                target_instance_id: entities.first().cloned(),
            })
        }
    };
    // The Scheduler numbers an execution's start 0 (the engine keeps -1
    // for every event that confirms no action).
    let event_id = match event_type {
        EventType::ExecutionStarted(_) => 0,
        _ => event.event_id,
    };
    proto::HistoryEvent {
        event_id,
        timestamp: Some(timestamp(event.timestamp_ms)),
        event_type: Some(event_type),
    }
}

/// Whether an event goes on the wire: the engine keeps an
/// `OrchestratorCompleted` after every step (its own replay marks step
/// boundaries with it), but the Durable Task Scheduler stores none, and
/// the SDKs' tests read histories back expecting its sequence.
fn on_the_wire(event: &HistoryEvent) -> bool {
    !matches!(event.kind, EventKind::OrchestratorCompleted)
}

/// The protocol's `executionId` of an instance's generation: 32 lowercase
/// hex digits (a GUID's "N" form, as the SDKs expect), the engine's
/// execution number and an FNV-1a hash of the instance id. Unique per id
/// and generation (the number is unique within the id's partition), and
/// the same on every replay and across server versions: the SDKs derive
/// sub-orchestration ids from it.
pub fn execution_id(instance_id: &str, execution: u64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in instance_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{execution:016x}{hash:016x}")
}

/// Converts one orchestration's history to the wire event by event, in
/// order: it learns the wire ids of entity calls and lock requests as it
/// passes them (answers always come after their calls), leaves out what
/// does not go on the wire, and puts the generation's `executionId` on
/// `ExecutionStarted`. The history cache keeps one per long history, so a
/// step converts only the events that are new since the last.
#[derive(Clone, Debug)]
pub struct WireConverter {
    instance_id: String,
    execution_id: String,
    /// Whether `ExecutionStarted` gets the `executionId`.
    stamp: bool,
    wire_ids: HashMap<i32, String>,
}

impl WireConverter {
    /// A converter for `instance_id`'s generation `execution`.
    pub fn new(instance_id: &str, execution: u64) -> Self {
        WireConverter {
            instance_id: instance_id.to_owned(),
            execution_id: execution_id(instance_id, execution),
            stamp: true,
            wire_ids: HashMap::new(),
        }
    }

    /// A converter for a history read that named no generation: its
    /// `ExecutionStarted` carries no `executionId`.
    pub fn unstamped(instance_id: &str) -> Self {
        WireConverter {
            stamp: false,
            ..WireConverter::new(instance_id, 0)
        }
    }

    /// The generation's `executionId`.
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// The next event on the wire, or `None` if it does not go there.
    pub fn convert(&mut self, event: &HistoryEvent) -> Option<proto::HistoryEvent> {
        if let Some((id, wire_id)) = correlation(event) {
            self.wire_ids.insert(id, wire_id);
        }
        if !on_the_wire(event) {
            return None;
        }
        let mut wire = event_to_proto(event, &self.instance_id, &self.wire_ids);
        if let Some(EventType::ExecutionStarted(started)) = &mut wire.event_type
            && let Some(instance) = &mut started.orchestration_instance
            && self.stamp
        {
            instance.execution_id = Some(self.execution_id.clone());
        }
        Some(wire)
    }

    /// Memory it holds, roughly, in bytes.
    pub fn footprint(&self) -> usize {
        self.wire_ids
            .values()
            .map(|id| id.len() + 32)
            .sum::<usize>()
            + self.instance_id.len()
            + self.execution_id.len()
    }
}

/// The generation an `executionId` of [`execution_id`] names, if it is
/// one of `instance_id`'s.
pub fn execution_of(instance_id: &str, wire_execution_id: &str) -> Option<u64> {
    let number = wire_execution_id.get(..16)?;
    let execution = u64::from_str_radix(number, 16).ok()?;
    (wire_execution_id.len() == 32 && execution_id(instance_id, execution) == wire_execution_id)
        .then_some(execution)
}

/// An orchestration step as the worker receives it, converted whole, with
/// the generation's `executionId` on the request and on its
/// `ExecutionStarted`. (The sidecar goes through the history cache, which
/// sends the same bytes.)
pub fn orchestrator_request(item: &OrchestrationWorkItem) -> proto::OrchestratorRequest {
    let mut converter = WireConverter::new(item.instance_id.as_str(), item.execution);
    let past_events = item
        .past_events
        .iter()
        .filter_map(|event| converter.convert(event))
        .collect();
    let new_events = item
        .new_events
        .iter()
        .filter_map(|event| converter.convert(event))
        .collect();
    proto::OrchestratorRequest {
        head: RequestHead {
            instance_id: item.instance_id.as_str().to_owned(),
            execution_id: Some(converter.execution_id().to_owned()),
            new_events,
            ..Default::default()
        },
        past_events: PastEvents::Decoded(past_events),
    }
}

/// A history event a worker sent back (continue-as-new carry-over): only
/// external events are meaningful there.
fn carryover_from_proto(event: &proto::HistoryEvent) -> Option<HistoryEvent> {
    match &event.event_type {
        Some(EventType::EventRaised(raised)) => Some(HistoryEvent::new(
            event.timestamp.as_ref().map(millis).unwrap_or(0),
            EventKind::EventRaised {
                name: raised.name.clone(),
                input: raised.input.clone(),
            },
        )),
        _ => None,
    }
}

fn entity_target(field: &str, value: Option<&str>) -> Result<String, ConvertError> {
    let text = value
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ConvertError::Invalid(format!("{field} is required")))?;
    check_new_id(field, text)?;
    EntityId::parse(text)
        .map(|id| id.to_string())
        .map_err(|e| ConvertError::Invalid(format!("{field}: {e}")))
}

/// A worker's orchestrator response as a step result. `now_ms` judges
/// whether a scheduled entity signal is already due.
pub fn step_result_from_proto(
    response: &proto::OrchestratorResponse,
    instance_id: &str,
    now_ms: u64,
) -> Result<OrchestrationStepResult, ConvertError> {
    let mut actions = Vec::with_capacity(response.actions.len());
    for action in &response.actions {
        let id = action.id;
        let mut correlation = None;
        let kind = match &action.orchestrator_action_type {
            None => {
                return Err(ConvertError::Invalid(format!("action {id} has no type")));
            }
            Some(OrchestratorActionType::ScheduleTask(task)) => {
                if task.name.is_empty() {
                    return Err(ConvertError::Invalid(format!(
                        "action {id}: scheduleTask.name is empty"
                    )));
                }
                ActionKind::ScheduleTask {
                    name: task.name.clone(),
                    version: task.version.clone(),
                    input: task.input.clone(),
                }
            }
            Some(OrchestratorActionType::CreateSubOrchestration(sub)) => {
                if sub.name.is_empty() {
                    return Err(ConvertError::Invalid(format!(
                        "action {id}: createSubOrchestration.name is empty"
                    )));
                }
                let child = if sub.instance_id.is_empty() {
                    format!("{instance_id}:{id:04x}")
                } else {
                    check_new_id(
                        &format!("action {id}: createSubOrchestration.instanceId"),
                        &sub.instance_id,
                    )?;
                    sub.instance_id.clone()
                };
                ActionKind::CreateSubOrchestration {
                    instance_id: child,
                    name: sub.name.clone(),
                    version: sub.version.clone(),
                    input: sub.input.clone(),
                }
            }
            Some(OrchestratorActionType::CreateTimer(timer)) => ActionKind::CreateTimer {
                fire_at_ms: timer.fire_at.as_ref().map(millis).ok_or_else(|| {
                    ConvertError::Invalid(format!("action {id}: createTimer.fireAt is required"))
                })?,
            },
            Some(OrchestratorActionType::SendEvent(send)) => ActionKind::SendEvent {
                instance_id: send
                    .instance
                    .as_ref()
                    .map(|i| i.instance_id.clone())
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| {
                        ConvertError::Invalid(format!(
                            "action {id}: sendEvent.instance.instanceId is required"
                        ))
                    })?,
                name: send.name.clone(),
                data: send.data.clone(),
            },
            Some(OrchestratorActionType::CompleteOrchestration(complete)) => {
                let status = status_from_proto(complete.orchestration_status)?;
                if !matches!(
                    status,
                    OrchestrationStatus::Completed
                        | OrchestrationStatus::Failed
                        | OrchestrationStatus::ContinuedAsNew
                        | OrchestrationStatus::Terminated
                ) {
                    return Err(ConvertError::Invalid(format!(
                        "action {id}: completeOrchestration with status {status} (expected \
                         Completed, Failed, ContinuedAsNew or Terminated)"
                    )));
                }
                let failure = complete
                    .failure_details
                    .as_ref()
                    .map(failure_from_proto)
                    .or_else(|| {
                        (status == OrchestrationStatus::Failed).then(|| {
                            FailureDetails::new(
                                "OrchestrationFailed",
                                complete.details.clone().unwrap_or_default(),
                            )
                        })
                    });
                ActionKind::CompleteOrchestration {
                    status,
                    result: complete.result.clone(),
                    failure,
                    new_version: complete.new_version.clone(),
                    carryover_events: complete
                        .carryover_events
                        .iter()
                        .filter_map(carryover_from_proto)
                        .collect(),
                }
            }
            Some(OrchestratorActionType::TerminateOrchestration(_)) => {
                return Err(ConvertError::Unsupported(format!(
                    "action {id}: terminateOrchestration is not supported; terminate the \
                     instance through the client"
                )));
            }
            Some(OrchestratorActionType::RewindOrchestration(_)) => {
                return Err(ConvertError::Unsupported(format!(
                    "action {id}: rewindOrchestration is not supported"
                )));
            }
            Some(OrchestratorActionType::SendEntityMessage(message)) => {
                match &message.entity_message_type {
                    None => {
                        return Err(ConvertError::Invalid(format!(
                            "action {id}: sendEntityMessage has no message"
                        )));
                    }
                    Some(EntityMessageType::EntityOperationSignaled(signal)) => {
                        correlation = Some(signal.request_id.clone());
                        ActionKind::SignalEntity {
                            entity: entity_target(
                                "entityOperationSignaled.targetInstanceId",
                                signal.target_instance_id.as_deref(),
                            )?,
                            operation: signal.operation.clone(),
                            input: signal.input.clone(),
                            scheduled_ms: signal
                                .scheduled_time
                                .as_ref()
                                .map(millis)
                                .filter(|at| *at > now_ms),
                        }
                    }
                    Some(EntityMessageType::EntityOperationCalled(call)) => {
                        correlation = Some(call.request_id.clone());
                        ActionKind::CallEntity {
                            entity: entity_target(
                                "entityOperationCalled.targetInstanceId",
                                call.target_instance_id.as_deref(),
                            )?,
                            operation: call.operation.clone(),
                            input: call.input.clone(),
                        }
                    }
                    Some(EntityMessageType::EntityLockRequested(lock)) => {
                        correlation = Some(lock.critical_section_id.clone());
                        let mut entities = lock
                            .lock_set
                            .iter()
                            .map(|e| entity_target("entityLockRequested.lockSet", Some(e)))
                            .collect::<Result<Vec<_>, _>>()?;
                        if entities.is_empty() {
                            return Err(ConvertError::Invalid(format!(
                                "action {id}: entityLockRequested.lockSet is empty"
                            )));
                        }
                        entities.sort();
                        entities.dedup();
                        ActionKind::LockEntities { entities }
                    }
                    Some(EntityMessageType::EntityUnlockSent(unlock)) => {
                        correlation = Some(unlock.critical_section_id.clone());
                        ActionKind::UnlockEntities {
                            entities: vec![entity_target(
                                "entityUnlockSent.targetInstanceId",
                                unlock.target_instance_id.as_deref(),
                            )?],
                        }
                    }
                }
            }
        };
        actions.push(OrchestratorAction {
            id,
            kind,
            correlation,
        });
    }
    Ok(OrchestrationStepResult {
        actions,
        custom_status: response.custom_status.clone(),
    })
}

/// An activity as the worker receives it.
pub fn activity_request(item: &ActivityWorkItem) -> proto::ActivityRequest {
    proto::ActivityRequest {
        name: item.name.clone(),
        version: item.version.clone(),
        input: item.input.clone(),
        orchestration_instance: Some(instance(item.instance_id.as_str())),
        task_id: item.task_id,
        ..Default::default()
    }
}

/// A worker's activity response as an outcome.
pub fn activity_outcome(response: &proto::ActivityResponse) -> ActivityOutcome {
    match &response.failure_details {
        Some(failure) => ActivityOutcome::Failed(failure_from_proto(failure)),
        None => ActivityOutcome::Completed(response.result.clone()),
    }
}

/// The `requestId` given to operation `index` of a batch: the worker
/// matches results by position, the id only has to be unique in the batch.
fn operation_request_id(index: usize) -> String {
    format!("op-{index}")
}

/// An entity batch in the older format (`EntityBatchRequest`).
pub fn entity_batch_request(item: &EntityWorkItem) -> proto::EntityBatchRequest {
    proto::EntityBatchRequest {
        instance_id: item.entity.to_string(),
        entity_state: item.state.clone(),
        operations: item
            .operations
            .iter()
            .enumerate()
            .map(|(index, op)| proto::OperationRequest {
                operation: op.name.clone(),
                request_id: operation_request_id(index),
                input: op.input.clone(),
                trace_context: None,
            })
            .collect(),
        properties: HashMap::new(),
    }
}

/// An entity batch in the newer format (`EntityRequest`): operations as
/// history events (all as signals: the result goes back through the
/// engine, not through the worker).
pub fn entity_request_v2(item: &EntityWorkItem, now_ms: u64) -> proto::EntityRequest {
    proto::EntityRequest {
        instance_id: item.entity.to_string(),
        execution_id: String::new(),
        entity_state: item.state.clone(),
        operation_requests: item
            .operations
            .iter()
            .enumerate()
            .map(|(index, op)| proto::HistoryEvent {
                event_id: -1,
                timestamp: Some(timestamp(now_ms)),
                event_type: Some(EventType::EntityOperationSignaled(
                    proto::EntityOperationSignaledEvent {
                        request_id: operation_request_id(index),
                        operation: op.name.clone(),
                        input: op.input.clone(),
                        ..Default::default()
                    },
                )),
            })
            .collect(),
    }
}

/// A worker's entity batch result. `operations` is how many operations
/// the batch had. Signals (delayed ones too) and orchestration starts
/// become the result's `signals` and `orchestrations`; a malformed action
/// refuses the whole result (the caller fails the batch).
pub fn entity_result_from_proto(
    result: &proto::EntityBatchResult,
    item_state: Option<String>,
    operations: usize,
    now_ms: u64,
) -> Result<EntityBatchResult, ConvertError> {
    use proto::operation_action::OperationActionType;
    use proto::operation_result::ResultType;

    if let Some(failure) = &result.failure_details {
        let failure = failure_from_proto(failure);
        return Ok(EntityBatchResult {
            state: item_state,
            results: vec![OperationResult::Failed(failure); operations],
            ..EntityBatchResult::default()
        });
    }
    if result.results.len() != operations {
        return Err(ConvertError::Invalid(format!(
            "the batch had {operations} operations but the result has {} results",
            result.results.len()
        )));
    }
    let mut results = Vec::with_capacity(operations);
    for (index, r) in result.results.iter().enumerate() {
        results.push(match &r.result_type {
            Some(ResultType::Success(success)) => {
                OperationResult::Completed(success.result.clone().filter(|s| !s.is_empty()))
            }
            Some(ResultType::Failure(failure)) => OperationResult::Failed(
                failure
                    .failure_details
                    .as_ref()
                    .map(failure_from_proto)
                    .unwrap_or_else(|| FailureDetails::new("OperationFailed", "no details")),
            ),
            None => {
                return Err(ConvertError::Invalid(format!(
                    "result {index} is neither success nor failure"
                )));
            }
        });
    }
    let mut signals = Vec::new();
    let mut orchestrations = Vec::new();
    for action in &result.actions {
        match &action.operation_action_type {
            Some(OperationActionType::SendSignal(signal)) => {
                check_new_id("sendSignal.instanceId", &signal.instance_id)?;
                let entity = EntityId::parse(&signal.instance_id)
                    .map_err(|e| ConvertError::Invalid(format!("sendSignal.instanceId: {e}")))?;
                signals.push(EntitySignal {
                    entity,
                    operation: EntityOperation {
                        name: signal.name.clone(),
                        input: signal.input.clone(),
                    },
                    // A time already past is delivered at once.
                    scheduled_ms: signal
                        .scheduled_time
                        .as_ref()
                        .map(millis)
                        .filter(|&at| at > now_ms),
                });
            }
            Some(OperationActionType::StartNewOrchestration(start)) => {
                check_new_id("startNewOrchestration.instanceId", &start.instance_id)?;
                let instance_id = InstanceId::new(start.instance_id.clone()).map_err(|e| {
                    ConvertError::Invalid(format!("startNewOrchestration.instanceId: {e}"))
                })?;
                if start.name.is_empty() {
                    return Err(ConvertError::Invalid(
                        "startNewOrchestration.name is empty".into(),
                    ));
                }
                orchestrations.push(EntityStartedOrchestration {
                    instance_id,
                    name: start.name.clone(),
                    version: start.version.clone().filter(|v| !v.is_empty()),
                    input: start.input.clone(),
                    scheduled_start_ms: start
                        .scheduled_time
                        .as_ref()
                        .map(millis)
                        .filter(|&at| at > now_ms),
                });
            }
            None => {
                return Err(ConvertError::Invalid(format!(
                    "entity action {} has no type",
                    action.id
                )));
            }
        }
    }
    Ok(EntityBatchResult {
        state: result.entity_state.clone().filter(|s| !s.is_empty()),
        results,
        signals,
        orchestrations,
    })
}

/// An instance's state to the wire; without inputs and outputs unless asked.
pub fn instance_state_to_proto(
    state: &InstanceState,
    with_payloads: bool,
) -> proto::OrchestrationState {
    let payload = |p: &Option<String>| if with_payloads { p.clone() } else { None };
    proto::OrchestrationState {
        instance_id: state.instance_id.to_string(),
        name: state.name.clone(),
        version: state.version.clone(),
        orchestration_status: status_to_proto(state.status) as i32,
        scheduled_start_timestamp: state.scheduled_start_ms.map(timestamp),
        created_timestamp: Some(timestamp(state.created_at_ms)),
        last_updated_timestamp: Some(timestamp(state.last_updated_at_ms)),
        input: payload(&state.input),
        output: payload(&state.output),
        custom_status: payload(&state.custom_status),
        failure_details: state.failure.as_ref().map(failure_to_proto),
        execution_id: None,
        completed_timestamp: state
            .status
            .is_terminal()
            .then(|| timestamp(state.last_updated_at_ms)),
        parent_instance_id: state.parent.as_ref().map(|p| p.instance_id.to_string()),
        tags: state
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// An entity's state to the wire.
pub fn entity_metadata(state: &EntityState, include_state: bool) -> proto::EntityMetadata {
    proto::EntityMetadata {
        instance_id: state.entity.to_string(),
        last_modified_time: Some(timestamp(state.last_modified_ms)),
        backlog_queue_size: i32::try_from(state.backlog).unwrap_or(i32::MAX),
        locked_by: state.locked_by.as_ref().map(ToString::to_string),
        serialized_state: if include_state {
            state.state.clone()
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_round_up() {
        assert_eq!(millis(&timestamp(1_700_000_000_123)), 1_700_000_000_123);
        let ts = Timestamp {
            seconds: 10,
            nanos: 1,
        };
        assert_eq!(millis(&ts), 10_001);
        assert_eq!(
            millis(&Timestamp {
                seconds: -5,
                nanos: 0
            }),
            0
        );
    }

    #[test]
    fn entity_answers_carry_the_workers_request_id() {
        let called = HistoryEvent {
            event_id: 3,
            timestamp_ms: 0,
            kind: EventKind::EntityOperationCalled {
                entity: "@counter@a".into(),
                operation: "add".into(),
                input: None,
            },
            correlation: Some("req-9".into()),
        };
        let answer = HistoryEvent::new(
            1,
            EventKind::EntityOperationCompleted {
                request_id: 3,
                output: Some("1".into()),
            },
        );
        let mut converter = WireConverter::unstamped("o");
        let wire: Vec<_> = [called, answer]
            .iter()
            .filter_map(|event| converter.convert(event))
            .collect();
        match &wire[1].event_type {
            Some(EventType::EntityOperationCompleted(done)) => assert_eq!(done.request_id, "req-9"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_status_values_are_refused() {
        assert!(status_from_proto(99).is_err());
        assert_eq!(
            status_from_proto(proto::OrchestrationStatus::Canceled as i32),
            Ok(OrchestrationStatus::Terminated)
        );
    }
}
