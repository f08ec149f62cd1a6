//! [`OrchestrationExecutor`]: deterministic replay of one orchestration
//! instance, step by step.
//!
//! The executor processes history events one at a time, in order. After
//! each event that completed something (which wakes the orchestration's
//! waker) it polls the orchestration future until it stops making
//! progress. Actions the code issues are pending until their confirming
//! event (`TaskScheduled`, `TimerCreated`, `SubOrchestrationInstanceCreated`,
//! `EventSent`, `EntityOperationSignaled`, `EntityOperationCalled`,
//! `EntityLockRequested`, `EntityUnlockSent`, whose `event_id` is the
//! action id) is processed; a confirming event with no matching pending
//! action, or one that matches a different kind, name, entity or entity
//! list, is non-determinism, and so is an action
//! issued while replaying (or in an earlier step) that history never
//! confirms. The step's new actions are the ones issued in this step while
//! processing new events.
//!
//! Between steps the executor keeps the running orchestration and a cursor
//! (how many events it has processed, the last one, and the execution's
//! `ExecutionStarted`). When the next step's `past_events` extend what it
//! has processed, it processes only the unseen events (typically the
//! confirmations of its own last actions, then the new events); otherwise
//! it starts over and replays the whole history. No clock, randomness or
//! I/O is used: the same events always give the same actions.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::context::{ContextState, OrchestrationContext, Outcome};
use super::registry::{RawResult, Registry, panic_message};
use crate::backend::OrchestrationStepResult;
use crate::history::{ActionKind, EventKind, HistoryEvent, OrchestratorAction};
use crate::types::{FailureDetails, InstanceId, OrchestrationStatus};

/// Most polls of the orchestration after one event: a future that keeps
/// waking itself without waiting on anything durable is cut off here.
const POLLS_PER_EVENT_MAX: usize = 10_000;

/// The waker of the orchestration future: records that it was woken.
#[derive(Debug, Default)]
struct RootWaker {
    woken: AtomicBool,
}

impl Wake for RootWaker {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
    }
}

/// How the execution ended, decided but maybe not yet returned.
#[derive(Debug)]
struct Completion {
    id: i32,
    status: OrchestrationStatus,
    result: Option<String>,
    failure: Option<FailureDetails>,
}

/// One execution (generation) of the instance.
struct Run {
    shared: Arc<Mutex<ContextState>>,
    root: Arc<RootWaker>,
    waker: Waker,
    future: Option<BoxFuture<'static, RawResult>>,
    started: bool,
    completion: Option<Completion>,
    /// Non-determinism detected: the step fails the instance with this.
    broken: Option<FailureDetails>,
    /// Nothing more to emit: the completion was returned, or history
    /// records that the execution ended.
    finished: bool,
}

impl Run {
    fn new(instance_id: InstanceId, current_time_ms: u64) -> Run {
        let mut state = ContextState::new(instance_id);
        state.current_time_ms = current_time_ms;
        let root = Arc::new(RootWaker::default());
        Run {
            shared: Arc::new(Mutex::new(state)),
            waker: Waker::from(root.clone()),
            root,
            future: None,
            started: false,
            completion: None,
            broken: None,
            finished: false,
        }
    }

    /// Done with events: completed, failed, or the history says it ended.
    fn is_done(&self) -> bool {
        self.finished || self.broken.is_some()
    }

    /// Decides the execution's end (once) and drops the orchestration future.
    fn complete(
        &mut self,
        status: OrchestrationStatus,
        result: Option<String>,
        failure: Option<FailureDetails>,
    ) {
        // Drop the future first: its tasks lock the shared state on drop.
        self.future = None;
        if self.completion.is_some() {
            return;
        }
        let id = self.shared.lock().take_id();
        self.completion = Some(Completion {
            id,
            status,
            result,
            failure,
        });
    }

    fn fail(&mut self, failure: FailureDetails) {
        self.complete(OrchestrationStatus::Failed, None, Some(failure));
    }

    fn non_determinism(&mut self, message: String) {
        self.future = None;
        if self.broken.is_none() {
            self.broken = Some(FailureDetails {
                is_non_retriable: true,
                ..FailureDetails::new("NonDeterminismError", message)
            });
        }
    }

    /// Polls the orchestration while it has been woken.
    fn poll(&mut self) {
        for _ in 0..POLLS_PER_EVENT_MAX {
            if self.future.is_none() || self.completion.is_some() {
                return;
            }
            if !self.root.woken.swap(false, Ordering::SeqCst) {
                return;
            }
            let Some(future) = self.future.as_mut() else {
                return;
            };
            let mut cx = Context::from_waker(&self.waker);
            let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
            let continued = self.shared.lock().continue_as_new.take();
            if let Some(input) = continued {
                self.complete(OrchestrationStatus::ContinuedAsNew, input, None);
                return;
            }
            match polled {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(Ok(output))) => {
                    self.complete(OrchestrationStatus::Completed, output, None);
                }
                Ok(Poll::Ready(Err(failure))) => self.fail(failure),
                Err(panic) => self.fail(panic_failure(panic.as_ref())),
            }
        }
    }
}

fn panic_failure(panic: &(dyn std::any::Any + Send)) -> FailureDetails {
    FailureDetails::new(
        "Panic",
        format!("orchestration panicked: {}", panic_message(panic)),
    )
}

/// Replays one orchestration instance: turns each step's history into the
/// step's actions. Keep it between steps of the instance to avoid
/// re-running history (see the module docs); any mismatch with what it has
/// seen makes it replay from scratch, so reuse is always safe.
pub struct OrchestrationExecutor {
    registry: Arc<Registry>,
    instance_id: InstanceId,
    run: Run,
    /// Events processed since the last reset.
    processed: usize,
    /// The last event processed.
    last_event: Option<HistoryEvent>,
    /// The first `ExecutionStarted` processed since the last reset.
    execution_started: Option<HistoryEvent>,
    steps: u64,
}

impl fmt::Debug for OrchestrationExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestrationExecutor")
            .field("instance_id", &self.instance_id)
            .field("processed", &self.processed)
            .field("steps", &self.steps)
            .field("finished", &self.run.finished)
            .finish_non_exhaustive()
    }
}

/// What an action is, for matching it with its confirming event: its
/// kind, its name (activity, orchestration, event or entity operation) and,
/// for entity actions, the entity (`@name@key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity<'a> {
    kind: &'static str,
    name: &'a str,
    entity: Option<&'a str>,
    /// For lock and unlock actions: the entities, as `@name@key`.
    entities: Option<&'a [String]>,
}

impl<'a> Identity<'a> {
    fn new(kind: &'static str, name: &'a str) -> Identity<'a> {
        Identity {
            kind,
            name,
            entity: None,
            entities: None,
        }
    }

    fn entities(kind: &'static str, entities: &'a [String]) -> Identity<'a> {
        Identity {
            kind,
            name: "",
            entity: None,
            entities: Some(entities),
        }
    }

    fn entity(kind: &'static str, entity: &'a str, operation: &'a str) -> Identity<'a> {
        Identity {
            kind,
            name: operation,
            entity: Some(entity),
            entities: None,
        }
    }
}

impl fmt::Display for Identity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)?;
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        if let Some(entity) = self.entity {
            write!(f, " on entity {entity:?}")?;
        }
        if let Some(entities) = self.entities {
            write!(f, " on entities {entities:?}")?;
        }
        Ok(())
    }
}

/// The action an event confirms.
fn confirmed_action(kind: &EventKind) -> Option<Identity<'_>> {
    match kind {
        EventKind::TaskScheduled { name, .. } => Some(Identity::new("ScheduleTask", name)),
        EventKind::TimerCreated { .. } => Some(Identity::new("CreateTimer", "")),
        EventKind::SubOrchestrationInstanceCreated { name, .. } => {
            Some(Identity::new("CreateSubOrchestration", name))
        }
        EventKind::EventSent { name, .. } => Some(Identity::new("SendEvent", name)),
        EventKind::EntityOperationSignaled {
            entity, operation, ..
        } => Some(Identity::entity("SignalEntity", entity, operation)),
        EventKind::EntityOperationCalled {
            entity, operation, ..
        } => Some(Identity::entity("CallEntity", entity, operation)),
        EventKind::EntityLockRequested { entities } => {
            Some(Identity::entities("LockEntities", entities))
        }
        EventKind::EntityUnlockSent { entities } => {
            Some(Identity::entities("UnlockEntities", entities))
        }
        _ => None,
    }
}

/// An action's identity.
fn action_identity(kind: &ActionKind) -> Identity<'_> {
    match kind {
        ActionKind::ScheduleTask { name, .. } => Identity::new("ScheduleTask", name),
        ActionKind::CreateTimer { .. } => Identity::new("CreateTimer", ""),
        ActionKind::CreateSubOrchestration { name, .. } => {
            Identity::new("CreateSubOrchestration", name)
        }
        ActionKind::SendEvent { name, .. } => Identity::new("SendEvent", name),
        ActionKind::SignalEntity {
            entity, operation, ..
        } => Identity::entity("SignalEntity", entity, operation),
        ActionKind::CallEntity {
            entity, operation, ..
        } => Identity::entity("CallEntity", entity, operation),
        ActionKind::LockEntities { entities } => Identity::entities("LockEntities", entities),
        ActionKind::UnlockEntities { entities } => Identity::entities("UnlockEntities", entities),
        ActionKind::CompleteOrchestration { .. } => Identity::new("CompleteOrchestration", ""),
    }
}

impl OrchestrationExecutor {
    /// An executor for `instance_id` that has processed nothing yet.
    pub fn new(registry: Arc<Registry>, instance_id: InstanceId) -> OrchestrationExecutor {
        OrchestrationExecutor {
            run: Run::new(instance_id.clone(), 0),
            registry,
            instance_id,
            processed: 0,
            last_event: None,
            execution_started: None,
            steps: 0,
        }
    }

    /// The instance this executor replays.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }

    /// Whether the execution has ended (its completion was returned, or its
    /// history records the end). Such an executor can be dropped.
    pub fn is_finished(&self) -> bool {
        self.run.finished
    }

    /// Runs one step: `past_events` is the execution's history before this
    /// step, `new_events` this step's events (starting with
    /// `OrchestratorStarted`). Returns the step's new actions in issue order
    /// and the current custom status. Once the execution has ended, returns
    /// no actions.
    pub fn execute(
        &mut self,
        past_events: &[HistoryEvent],
        new_events: &[HistoryEvent],
    ) -> OrchestrationStepResult {
        let start = match self.resume_point(past_events) {
            Some(start) => start,
            None => {
                self.reset();
                0
            }
        };
        self.steps += 1;
        {
            let mut state = self.run.shared.lock();
            state.step = self.steps;
            state.replaying = true;
        }
        for event in past_events.get(start..).unwrap_or_default() {
            self.process(event);
        }
        self.run.shared.lock().replaying = false;
        for event in new_events {
            self.process(event);
        }
        self.processed = past_events.len() + new_events.len();
        self.last_event = new_events.last().or(past_events.last()).cloned();
        self.finish_step()
    }

    /// Where to continue in `past_events`, if they extend what was processed.
    fn resume_point(&self, past_events: &[HistoryEvent]) -> Option<usize> {
        if self.processed == 0 || past_events.len() < self.processed {
            return None;
        }
        if past_events.get(self.processed - 1) != self.last_event.as_ref() {
            return None;
        }
        let started = past_events
            .iter()
            .find(|event| matches!(event.kind, EventKind::ExecutionStarted { .. }));
        if started != self.execution_started.as_ref() {
            return None;
        }
        Some(self.processed)
    }

    fn reset(&mut self) {
        self.run = Run::new(self.instance_id.clone(), 0);
        self.processed = 0;
        self.last_event = None;
        self.execution_started = None;
    }

    fn process(&mut self, event: &HistoryEvent) {
        match &event.kind {
            EventKind::OrchestratorStarted => {
                self.run.shared.lock().current_time_ms = event.timestamp_ms;
                return;
            }
            EventKind::ExecutionStarted { name, input, .. } => {
                if self.run.started || self.run.is_done() {
                    // A new execution in the same stream: start it afresh.
                    let now = self.run.shared.lock().current_time_ms;
                    self.run = Run::new(self.instance_id.clone(), now);
                }
                if self.execution_started.is_none() {
                    self.execution_started = Some(event.clone());
                }
                self.start(name, input.clone());
            }
            _ if self.run.is_done() => return,
            EventKind::ExecutionCompleted { .. } => {
                self.run.future = None;
                self.run.completion = None;
                self.run.finished = true;
                return;
            }
            EventKind::ExecutionRewound { .. } => {
                // What replay issued without a confirmation was forgotten
                // by the rewind: it is this step's to issue again.
                let mut state = self.run.shared.lock();
                let (step, replaying) = (state.step, state.replaying);
                for pending in state.pending.values_mut() {
                    pending.step = step;
                    pending.replaying = replaying;
                }
                return;
            }
            EventKind::ExecutionTerminated { .. }
            | EventKind::ExecutionSuspended { .. }
            | EventKind::ExecutionResumed { .. }
            | EventKind::OrchestratorCompleted => return,
            EventKind::TaskScheduled { .. }
            | EventKind::TimerCreated { .. }
            | EventKind::SubOrchestrationInstanceCreated { .. }
            | EventKind::EventSent { .. }
            | EventKind::EntityOperationSignaled { .. }
            | EventKind::EntityOperationCalled { .. }
            | EventKind::EntityLockRequested { .. }
            | EventKind::EntityUnlockSent { .. } => {
                self.confirm(event);
                return;
            }
            EventKind::TaskCompleted {
                task_scheduled_id,
                result,
            }
            | EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id,
                result,
            } => self.complete_task(*task_scheduled_id, Ok(result.clone())),
            EventKind::TaskFailed {
                task_scheduled_id,
                failure,
            }
            | EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id,
                failure,
            } => self.complete_task(*task_scheduled_id, Err(failure.clone())),
            EventKind::EntityOperationCompleted { request_id, output } => {
                self.complete_task(*request_id, Ok(output.clone()))
            }
            EventKind::EntityOperationFailed {
                request_id,
                failure,
            } => self.complete_task(*request_id, Err(failure.clone())),
            EventKind::TimerFired { timer_id, .. } => self.complete_task(*timer_id, Ok(None)),
            EventKind::EntityLockGranted { request_id } => {
                let waker = self.run.shared.lock().grant_lock(*request_id);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            EventKind::EventRaised { name, .. } => {
                let waker = self.run.shared.lock().deliver_event(name, event);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
        self.run.poll();
    }

    fn start(&mut self, name: &str, input: Option<String>) {
        self.run.started = true;
        let Some(f) = self.registry.orchestration(name).cloned() else {
            self.run.fail(FailureDetails {
                is_non_retriable: true,
                ..FailureDetails::new(
                    "OrchestrationNotFound",
                    format!("no orchestration named {name:?} is registered"),
                )
            });
            return;
        };
        let ctx = OrchestrationContext::new(self.run.shared.clone());
        match catch_unwind(AssertUnwindSafe(|| f(ctx, input))) {
            Ok(future) => {
                self.run.future = Some(future);
                self.run.waker.wake_by_ref();
            }
            Err(panic) => self.run.fail(panic_failure(panic.as_ref())),
        }
    }

    fn complete_task(&mut self, id: i32, outcome: Outcome) {
        let waker = self.run.shared.lock().complete_task(id, outcome);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Matches a confirming event with the pending action of its id.
    fn confirm(&mut self, event: &HistoryEvent) {
        let Some(expected) = confirmed_action(&event.kind) else {
            return;
        };
        let id = event.event_id;
        let pending = self.run.shared.lock().pending.remove(&id);
        match pending {
            None => self.run.non_determinism(format!(
                "history has {expected} as action {id}, but the orchestration did not issue \
                 action {id}"
            )),
            Some(pending) => {
                let actual = action_identity(&pending.action.kind);
                if actual != expected {
                    self.run.non_determinism(format!(
                        "history has {expected} as action {id}, but the orchestration issued \
                         {actual}"
                    ));
                }
            }
        }
    }

    fn finish_step(&mut self) -> OrchestrationStepResult {
        if self.run.finished {
            return OrchestrationStepResult::default();
        }
        if !self.run.started && self.run.completion.is_none() && self.run.broken.is_none() {
            self.run.fail(FailureDetails {
                is_non_retriable: true,
                ..FailureDetails::new(
                    "InvalidHistory",
                    "the history has no ExecutionStarted event",
                )
            });
        }
        let step = self.steps;
        let state = self.run.shared.lock();
        let custom_status = state.custom_status.clone();
        let unconfirmed = state
            .pending
            .values()
            .find(|pending| pending.replaying || pending.step != step)
            .map(|pending| {
                let actual = action_identity(&pending.action.kind).to_string();
                (pending.action.id, actual)
            });
        let mut actions: Vec<OrchestratorAction> = state
            .pending
            .values()
            .filter(|pending| !pending.replaying && pending.step == step)
            .map(|pending| pending.action.clone())
            .collect();
        let carryover = match &self.run.completion {
            Some(completion) if completion.status == OrchestrationStatus::ContinuedAsNew => {
                state.carryover_events()
            }
            _ => Vec::new(),
        };
        drop(state);

        if let Some((id, actual)) = unconfirmed {
            self.run.non_determinism(format!(
                "the orchestration issued {actual} as action {id}, but history has no record \
                 of it"
            ));
        }
        self.run.finished = self.run.completion.is_some() || self.run.broken.is_some();
        if let Some(failure) = self.run.broken.take() {
            let id = match &self.run.completion {
                Some(completion) => completion.id,
                None => self.run.shared.lock().take_id(),
            };
            return OrchestrationStepResult {
                actions: vec![OrchestratorAction::new(
                    id,
                    ActionKind::CompleteOrchestration {
                        status: OrchestrationStatus::Failed,
                        result: None,
                        failure: Some(failure),
                        new_version: None,
                        carryover_events: Vec::new(),
                    },
                )],
                custom_status,
            };
        }
        if let Some(completion) = self.run.completion.take() {
            actions.push(OrchestratorAction {
                id: completion.id,
                kind: ActionKind::CompleteOrchestration {
                    status: completion.status,
                    result: completion.result,
                    failure: completion.failure,
                    new_version: None,
                    carryover_events: carryover,
                },
                correlation: None,
            });
        }
        OrchestrationStepResult {
            actions,
            custom_status,
        }
    }
}
