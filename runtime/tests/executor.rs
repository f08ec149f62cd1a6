//! Drives `OrchestrationExecutor` with histories built exactly as a backend
//! would build them, through a small deterministic harness (`Harness`) that
//! plays the backend's part: it turns actions into confirming events, runs
//! activities by calling the registered functions, runs entity operations
//! (signals and calls) against the registered entities one at a time,
//! grants entity lock requests on request (a step after confirming them)
//! and confirms unlocks, fires timers on request, runs sub-orchestrations to completion, and
//! starts new generations on continue-as-new. On every step it also runs a fresh
//! executor over the same history and checks that the cached executor
//! produced the same result, so every test also checks cursor caching.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use basalt_runtime::sdk::{
    ActivityContext, ActivityError, EntityContext, EntityError, OrchestrationContext,
    OrchestrationError, OrchestrationExecutor, Registry, RetryPolicy,
};
use basalt_runtime::{
    ActionKind, ActivityOutcome, CompletionToken, EntityId, EntityOperation, EntityWorkItem,
    EventKind, FailureDetails, HistoryEvent, InstanceId, OperationResult, OrchestrationStatus,
    OrchestrationStepResult, OrchestratorAction,
};
use futures::future::{Either, join_all, select, select_all};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

const T0: u64 = 1_700_000_000_000;

fn id(text: &str) -> InstanceId {
    InstanceId::new(text).expect("valid instance id")
}

fn event(timestamp_ms: u64, kind: EventKind) -> HistoryEvent {
    HistoryEvent::new(timestamp_ms, kind)
}

fn confirming(event_id: i32, timestamp_ms: u64, kind: EventKind) -> HistoryEvent {
    HistoryEvent {
        event_id,
        timestamp_ms,
        kind,
        correlation: None,
    }
}

fn started(name: &str, input: Option<String>) -> EventKind {
    EventKind::ExecutionStarted {
        name: name.to_owned(),
        version: None,
        input,
        parent: None,
        scheduled_start_ms: None,
    }
}

fn json<T: Serialize>(value: &T) -> Option<String> {
    Some(serde_json::to_string(value).expect("serializable"))
}

fn entity(name: &str, key: &str) -> EntityId {
    EntityId::new(name, key).expect("valid entity id")
}

/// A signalled or called entity operation the harness has not run yet.
#[derive(Clone, Debug)]
struct EntityRequest {
    /// The `CallEntity` action id; `None` for a signal.
    request_id: Option<i32>,
    entity: String,
    operation: String,
    input: Option<String>,
}

/// How an execution ended, as the harness recorded it.
#[derive(Clone, Debug, PartialEq)]
struct Ended {
    status: OrchestrationStatus,
    output: Option<String>,
    failure: Option<FailureDetails>,
}

/// Plays the backend for one instance, deterministically.
struct Harness {
    registry: Arc<Registry>,
    instance: InstanceId,
    name: String,
    executor: OrchestrationExecutor,
    /// The current execution's history (the next step's past events).
    history: Vec<HistoryEvent>,
    /// Events for the next step, after its `OrchestratorStarted`.
    inbox: Vec<HistoryEvent>,
    now: u64,
    /// Scheduled activities not yet run: (task id, name, input).
    activities: VecDeque<(i32, String, Option<String>)>,
    /// Created timers not yet fired: (timer id, fire at).
    timers: Vec<(i32, u64)>,
    /// Created sub-orchestrations not yet run: (id, child id, name, input).
    subs: Vec<(i32, String, String, Option<String>)>,
    /// SendEvent actions: (target, name, data).
    sent: Vec<(String, String, Option<String>)>,
    /// Entity signals and calls not yet run, in issue order.
    entity_requests: VecDeque<EntityRequest>,
    /// SignalEntity actions: (entity, operation, input).
    signaled: Vec<(String, String, Option<String>)>,
    /// Entity states by `@name@key`.
    entity_states: BTreeMap<String, Option<String>>,
    /// Confirmed lock requests not yet granted: (action id, entities).
    lock_requests: Vec<(i32, Vec<String>)>,
    /// Every lock request confirmed: (action id, entities).
    locked: Vec<(i32, Vec<String>)>,
    /// Every unlock confirmed: (action id, entities).
    unlocked: Vec<(i32, Vec<String>)>,
    /// Every step's result, in order.
    steps: Vec<OrchestrationStepResult>,
    /// Continue-as-new actions seen: (new input, carryover).
    continued: Vec<(Option<String>, Vec<HistoryEvent>)>,
    ended: Option<Ended>,
    /// Compare every step with a fresh executor replaying from scratch.
    check_full_replay: bool,
}

impl Harness {
    fn new(registry: Arc<Registry>, instance: &str) -> Harness {
        let instance = id(instance);
        Harness {
            executor: OrchestrationExecutor::new(registry.clone(), instance.clone()),
            registry,
            instance,
            name: String::new(),
            history: Vec::new(),
            inbox: Vec::new(),
            now: T0,
            activities: VecDeque::new(),
            timers: Vec::new(),
            subs: Vec::new(),
            sent: Vec::new(),
            entity_requests: VecDeque::new(),
            signaled: Vec::new(),
            entity_states: BTreeMap::new(),
            lock_requests: Vec::new(),
            locked: Vec::new(),
            unlocked: Vec::new(),
            steps: Vec::new(),
            continued: Vec::new(),
            ended: None,
            check_full_replay: true,
        }
    }

    fn start(&mut self, name: &str, input: Option<String>) {
        self.name = name.to_owned();
        self.inbox.push(event(self.now, started(name, input)));
    }

    fn raise(&mut self, name: &str, data: Option<String>) {
        self.inbox.push(event(
            self.now,
            EventKind::EventRaised {
                name: name.to_owned(),
                input: data,
            },
        ));
    }

    /// Runs one orchestrator step with the inbox as its new events.
    fn step(&mut self) -> OrchestrationStepResult {
        self.now += 10;
        let mut new_events = vec![event(self.now, EventKind::OrchestratorStarted)];
        new_events.append(&mut self.inbox);
        let result = self.executor.execute(&self.history, &new_events);
        if self.check_full_replay {
            let mut fresh =
                OrchestrationExecutor::new(self.registry.clone(), self.instance.clone());
            let replayed = fresh.execute(&self.history, &new_events);
            assert_eq!(
                result,
                replayed,
                "cached executor and full replay disagree at step {}",
                self.steps.len()
            );
        }
        self.history.extend(new_events);
        self.apply(&result);
        self.steps.push(result.clone());
        result
    }

    /// Records what a backend records for the step's actions.
    fn apply(&mut self, result: &OrchestrationStepResult) {
        let now = self.now;
        for action in &result.actions {
            let OrchestratorAction { id, kind, .. } = action;
            match kind {
                ActionKind::ScheduleTask { name, input, .. } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::TaskScheduled {
                            name: name.clone(),
                            version: None,
                            input: input.clone(),
                        },
                    ));
                    self.activities
                        .push_back((*id, name.clone(), input.clone()));
                }
                ActionKind::CreateTimer { fire_at_ms } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::TimerCreated {
                            fire_at_ms: *fire_at_ms,
                        },
                    ));
                    self.timers.push((*id, *fire_at_ms));
                }
                ActionKind::CreateSubOrchestration {
                    instance_id,
                    name,
                    input,
                    ..
                } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::SubOrchestrationInstanceCreated {
                            instance_id: instance_id.clone(),
                            name: name.clone(),
                            version: None,
                            input: input.clone(),
                        },
                    ));
                    self.subs
                        .push((*id, instance_id.clone(), name.clone(), input.clone()));
                }
                ActionKind::SendEvent {
                    instance_id,
                    name,
                    data,
                } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::EventSent {
                            instance_id: instance_id.clone(),
                            name: name.clone(),
                            input: data.clone(),
                        },
                    ));
                    self.sent
                        .push((instance_id.clone(), name.clone(), data.clone()));
                }
                ActionKind::SignalEntity {
                    entity,
                    operation,
                    input,
                    ..
                } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::EntityOperationSignaled {
                            entity: entity.clone(),
                            operation: operation.clone(),
                            input: input.clone(),
                        },
                    ));
                    self.signaled
                        .push((entity.clone(), operation.clone(), input.clone()));
                    self.entity_requests.push_back(EntityRequest {
                        request_id: None,
                        entity: entity.clone(),
                        operation: operation.clone(),
                        input: input.clone(),
                    });
                }
                ActionKind::CallEntity {
                    entity,
                    operation,
                    input,
                } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::EntityOperationCalled {
                            entity: entity.clone(),
                            operation: operation.clone(),
                            input: input.clone(),
                        },
                    ));
                    self.entity_requests.push_back(EntityRequest {
                        request_id: Some(*id),
                        entity: entity.clone(),
                        operation: operation.clone(),
                        input: input.clone(),
                    });
                }
                ActionKind::LockEntities { entities } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::EntityLockRequested {
                            entities: entities.clone(),
                        },
                    ));
                    self.lock_requests.push((*id, entities.clone()));
                    self.locked.push((*id, entities.clone()));
                }
                ActionKind::UnlockEntities { entities } => {
                    self.history.push(confirming(
                        *id,
                        now,
                        EventKind::EntityUnlockSent {
                            entities: entities.clone(),
                        },
                    ));
                    self.unlocked.push((*id, entities.clone()));
                }
                ActionKind::CompleteOrchestration {
                    status,
                    result,
                    failure,
                    carryover_events,
                    ..
                } => {
                    if *status == OrchestrationStatus::ContinuedAsNew {
                        self.continued
                            .push((result.clone(), carryover_events.clone()));
                        // A new generation: fresh history, outstanding work dropped.
                        self.history.clear();
                        self.activities.clear();
                        self.timers.clear();
                        self.subs.clear();
                        // Signals were sent; replies to calls would not
                        // reach the new generation.
                        self.entity_requests
                            .retain(|request| request.request_id.is_none());
                        // The backend releases the generation's locks.
                        self.lock_requests.clear();
                        let name = self.name.clone();
                        self.inbox.clear();
                        self.inbox.push(event(now, started(&name, result.clone())));
                        self.inbox.extend(carryover_events.iter().cloned());
                        return;
                    }
                    self.history.push(event(
                        now,
                        EventKind::ExecutionCompleted {
                            status: *status,
                            result: result.clone(),
                            failure: failure.clone(),
                        },
                    ));
                    self.ended = Some(Ended {
                        status: *status,
                        output: result.clone(),
                        failure: failure.clone(),
                    });
                }
            }
        }
        self.history
            .push(event(now, EventKind::OrchestratorCompleted));
    }

    /// Runs every scheduled activity (in schedule order) and queues results.
    fn run_activities(&mut self) {
        let scheduled: Vec<_> = self.activities.drain(..).collect();
        for (task_id, name, input) in scheduled {
            self.complete_activity(task_id, &name, input);
        }
    }

    /// Runs every scheduled activity, queueing results in reverse order.
    fn run_activities_reversed(&mut self) {
        let scheduled: Vec<_> = self.activities.drain(..).rev().collect();
        for (task_id, name, input) in scheduled {
            self.complete_activity(task_id, &name, input);
        }
    }

    fn complete_activity(&mut self, task_id: i32, name: &str, input: Option<String>) {
        let ctx = ActivityContext::new(self.instance.clone(), name, task_id);
        let outcome = futures::executor::block_on(self.registry.run_activity(ctx, input));
        let kind = match outcome {
            ActivityOutcome::Completed(result) => EventKind::TaskCompleted {
                task_scheduled_id: task_id,
                result,
            },
            ActivityOutcome::Failed(failure) => EventKind::TaskFailed {
                task_scheduled_id: task_id,
                failure,
            },
        };
        self.inbox.push(event(self.now, kind));
    }

    /// Runs every pending entity operation in issue order, each as a batch
    /// of one, and queues the calls' results.
    fn run_entity_requests(&mut self) {
        let requests: Vec<_> = self.entity_requests.drain(..).collect();
        for request in requests {
            self.run_entity_request(request);
        }
    }

    /// Runs every pending entity operation, last issued first.
    fn run_entity_requests_reversed(&mut self) {
        let requests: Vec<_> = self.entity_requests.drain(..).rev().collect();
        for request in requests {
            self.run_entity_request(request);
        }
    }

    fn run_entity_request(&mut self, request: EntityRequest) {
        let id = EntityId::parse(&request.entity).expect("the SDK sends valid entity ids");
        let item = EntityWorkItem {
            entity: id,
            state: self.entity_states.get(&request.entity).cloned().flatten(),
            operations: vec![EntityOperation {
                name: request.operation,
                input: request.input,
            }],
            token: CompletionToken("harness".into()),
        };
        let batch = futures::executor::block_on(self.registry.run_entity_batch(&item));
        self.entity_states.insert(request.entity, batch.state);
        let Some(request_id) = request.request_id else {
            return;
        };
        let kind = match batch.results.into_iter().next() {
            Some(OperationResult::Completed(output)) => {
                EventKind::EntityOperationCompleted { request_id, output }
            }
            Some(OperationResult::Failed(failure)) => EventKind::EntityOperationFailed {
                request_id,
                failure,
            },
            None => panic!("a batch of one operation returned no result"),
        };
        self.inbox.push(event(self.now, kind));
    }

    /// Grants every confirmed lock request (in request order): queues its
    /// `EntityLockGranted` for the next step.
    fn grant_locks(&mut self) {
        for (request_id, _) in std::mem::take(&mut self.lock_requests) {
            self.inbox
                .push(event(self.now, EventKind::EntityLockGranted { request_id }));
        }
    }

    /// Advances the clock to the earliest timer and fires all that are due.
    fn fire_next_timer(&mut self) -> bool {
        let Some(earliest) = self.timers.iter().map(|(_, at)| *at).min() else {
            return false;
        };
        self.now = self.now.max(earliest);
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = self.timers.iter().partition(|(_, at)| *at <= now);
        self.timers = later;
        for (timer_id, fire_at_ms) in due {
            self.inbox.push(event(
                now,
                EventKind::TimerFired {
                    timer_id,
                    fire_at_ms,
                },
            ));
        }
        true
    }

    /// Runs every created sub-orchestration to its end in its own harness.
    fn run_subs(&mut self) {
        for (task_id, child_id, name, input) in std::mem::take(&mut self.subs) {
            let mut child = Harness::new(self.registry.clone(), &child_id);
            child.start(&name, input);
            let ended = child.run().cloned();
            let kind = match ended {
                Some(Ended {
                    status: OrchestrationStatus::Completed,
                    output,
                    ..
                }) => EventKind::SubOrchestrationInstanceCompleted {
                    task_scheduled_id: task_id,
                    result: output,
                },
                Some(Ended {
                    failure: Some(failure),
                    ..
                }) => EventKind::SubOrchestrationInstanceFailed {
                    task_scheduled_id: task_id,
                    failure,
                },
                other => panic!("child {child_id} did not end: {other:?}"),
            };
            self.inbox.push(event(self.now, kind));
        }
    }

    /// Steps until the instance ends or waits for something only the test
    /// can provide (an external event).
    fn run(&mut self) -> Option<&Ended> {
        for _ in 0..10_000 {
            self.step();
            if self.ended.is_some() {
                break;
            }
            // Entity operations run first; signals queue no event.
            self.run_entity_requests();
            if !self.lock_requests.is_empty() {
                self.grant_locks();
            } else if !self.activities.is_empty() {
                self.run_activities();
            } else if !self.subs.is_empty() {
                self.run_subs();
            } else if !self.inbox.is_empty() {
                // A new generation after continue-as-new.
            } else if !self.fire_next_timer() {
                break;
            }
        }
        self.ended.as_ref()
    }

    fn output<T: serde::de::DeserializeOwned>(&self) -> T {
        let ended = self.ended.as_ref().expect("the instance ended");
        assert_eq!(
            ended.status,
            OrchestrationStatus::Completed,
            "failure: {:?}",
            ended.failure
        );
        serde_json::from_str(ended.output.as_deref().unwrap_or("null")).expect("decodable output")
    }

    fn failure(&self) -> FailureDetails {
        let ended = self.ended.as_ref().expect("the instance ended");
        assert_eq!(ended.status, OrchestrationStatus::Failed);
        ended.failure.clone().expect("failure details")
    }
}

fn single_failure(result: &OrchestrationStepResult) -> FailureDetails {
    assert_eq!(result.actions.len(), 1, "{:?}", result.actions);
    match &result.actions[0].kind {
        ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::Failed,
            failure: Some(failure),
            ..
        } => failure.clone(),
        other => panic!("expected a failed completion, got {other:?}"),
    }
}

fn action_names(result: &OrchestrationStepResult) -> Vec<String> {
    result
        .actions
        .iter()
        .map(|action| match &action.kind {
            ActionKind::ScheduleTask { name, .. } => format!("task:{name}"),
            ActionKind::CreateTimer { fire_at_ms } => format!("timer:{fire_at_ms}"),
            ActionKind::CreateSubOrchestration {
                name, instance_id, ..
            } => format!("sub:{name}:{instance_id}"),
            ActionKind::SendEvent { name, .. } => format!("send:{name}"),
            ActionKind::SignalEntity {
                entity, operation, ..
            } => format!("signal:{entity}:{operation}"),
            ActionKind::CallEntity {
                entity, operation, ..
            } => format!("call:{entity}:{operation}"),
            ActionKind::LockEntities { entities } => format!("lock:{}", entities.join(",")),
            ActionKind::UnlockEntities { entities } => format!("unlock:{}", entities.join(",")),
            ActionKind::CompleteOrchestration { status, .. } => format!("complete:{status}"),
        })
        .collect()
}

/// Arithmetic activities and a `Counter` entity shared by several tests.
/// The counter's operations: `add` (input i64; fails with `Negative` on a
/// negative amount, leaving the state unchanged) and `get`; both return
/// the value.
fn math() -> basalt_runtime::sdk::RegistryBuilder {
    Registry::builder()
        .register_entity_typed("Counter", |ctx: EntityContext, operation| async move {
            let mut value: i64 = ctx.state()?;
            match operation.name.as_str() {
                "add" => {
                    let amount: i64 = operation.decode_input()?;
                    if amount < 0 {
                        return Err(EntityError::new("Negative", "amounts must be positive"));
                    }
                    value += amount;
                    ctx.set_state(&value)?;
                }
                "get" => {}
                other => return Err(EntityError::unknown_operation(other)),
            }
            Ok(value)
        })
        .register_activity_typed("Add", |_, (a, b): (i64, i64)| async move {
            Ok::<_, ActivityError>(a + b)
        })
        .register_activity_typed("Double", |_, n: i64| async move {
            Ok::<_, ActivityError>(n * 2)
        })
        .register_activity_typed("Echo", |_, text: String| async move {
            Ok::<_, ActivityError>(text)
        })
        .register_activity_typed("Fail", |_, message: String| async move {
            Err::<(), _>(ActivityError::new("Boom", message))
        })
}

#[test]
fn sequence_of_activities() {
    let registry = math()
        .register_orchestration_typed("Sequence", |ctx, start: i64| async move {
            let a: i64 = ctx.call_activity("Add", &(start, 1)).await?;
            let b: i64 = ctx.call_activity("Double", &a).await?;
            let text: String = ctx.call_activity("Echo", &format!("{a},{b}")).await?;
            Ok::<_, OrchestrationError>(text)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "seq");
    h.start("Sequence", json(&4));
    h.run();
    assert_eq!(h.output::<String>(), "5,10");
    let per_step: Vec<Vec<String>> = h.steps.iter().map(action_names).collect();
    assert_eq!(
        per_step,
        vec![
            vec!["task:Add".to_owned()],
            vec!["task:Double".to_owned()],
            vec!["task:Echo".to_owned()],
            vec!["complete:Completed".to_owned()],
        ]
    );
    let ids: Vec<i32> = h
        .steps
        .iter()
        .flat_map(|s| &s.actions)
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, [0, 1, 2, 3]);
}

#[test]
fn fan_out_fan_in_of_1000_activities() {
    let registry = math()
        .register_orchestration_typed("FanOut", |ctx, n: i64| async move {
            let calls = (0..n).map(|i| ctx.call_activity::<_, i64>("Double", &i));
            let results = join_all(calls).await;
            let doubled: Vec<i64> = results.into_iter().collect::<Result<_, _>>()?;
            // Results come back in call order, whatever the completion order.
            let in_order = doubled.iter().enumerate().all(|(i, d)| *d == 2 * i as i64);
            Ok::<_, OrchestrationError>((doubled.iter().sum::<i64>(), in_order))
        })
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);
    for reversed in [false, true] {
        let mut h = Harness::new(registry.clone(), "fan");
        h.start("FanOut", json(&1000));
        let first = h.step();
        assert_eq!(first.actions.len(), 1000);
        assert!(
            first
                .actions
                .iter()
                .enumerate()
                .all(|(i, a)| a.id == i as i32)
        );
        if reversed {
            h.run_activities_reversed();
        } else {
            h.run_activities();
        }
        let second = h.step();
        assert_eq!(action_names(&second), ["complete:Completed"]);
        assert_eq!(second.actions[0].id, 1000);
        assert_eq!(h.output::<(i64, bool)>(), (999 * 1000, true));
    }
}

fn approval_registry() -> Arc<Registry> {
    let registry = Registry::builder()
        .register_orchestration_typed("Approval", |ctx, (): ()| async move {
            let timeout = ctx.sleep(Duration::from_secs(3600));
            let approval = ctx.wait_for_external_event::<String>("Approval");
            match select(timeout, approval).await {
                Either::Left(((), _)) => Ok::<_, OrchestrationError>("timed out".to_owned()),
                Either::Right((answer, _)) => answer,
            }
        })
        .build()
        .expect("valid registry");
    Arc::new(registry)
}

#[test]
fn select_between_timer_and_external_event() {
    let registry = approval_registry();

    // The event wins.
    let mut h = Harness::new(registry.clone(), "approve");
    h.start("Approval", None);
    let first = h.step();
    assert_eq!(
        action_names(&first),
        [format!("timer:{}", T0 + 10 + 3_600_000)]
    );
    h.raise("approval", json(&"yes")); // names match case-insensitively
    h.run();
    assert_eq!(h.output::<String>(), "yes");

    // The timer wins.
    let mut h = Harness::new(registry.clone(), "timeout");
    h.start("Approval", None);
    h.run();
    assert_eq!(h.output::<String>(), "timed out");

    // Both in one step: history order decides, on every replay.
    for event_first in [true, false] {
        let mut h = Harness::new(registry.clone(), "both");
        h.start("Approval", None);
        h.step();
        if event_first {
            h.raise("Approval", json(&"yes"));
            h.fire_next_timer();
        } else {
            h.fire_next_timer();
            h.raise("Approval", json(&"yes"));
        }
        h.step();
        let expected = if event_first { "yes" } else { "timed out" };
        assert_eq!(h.output::<String>(), expected);
    }
}

#[test]
fn external_events_raised_before_the_wait_are_buffered() {
    let registry = math()
        .register_orchestration_typed("Later", |ctx, (): ()| async move {
            let a: i64 = ctx.call_activity("Add", &(1, 1)).await?;
            let first: i64 = ctx.wait_for_external_event("Go").await?;
            let second: i64 = ctx.wait_for_external_event("go").await?;
            let third: i64 = ctx.wait_for_external_event("GO").await?;
            Ok::<_, OrchestrationError>(vec![a, first, second, third])
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "early");
    h.start("Later", None);
    h.step(); // schedules Add
    h.raise("go", json(&10)); // nobody waits yet
    h.raise("Other", json(&99));
    h.raise("Go", json(&20));
    assert!(h.step().actions.is_empty());
    h.run_activities();
    assert!(h.step().actions.is_empty(), "waits for the third event");
    h.raise("gO", json(&30));
    h.step();
    assert_eq!(h.output::<Vec<i64>>(), [2, 10, 20, 30]);
}

#[test]
fn dropped_event_wait_returns_its_event_to_the_buffer() {
    let registry = Registry::builder()
        .register_orchestration_typed("Peek", |ctx, (): ()| async move {
            // Both events are already buffered; the first wait is dropped
            // unread, so the next wait gets the same (first) event.
            let unread = ctx.wait_for_external_event::<i64>("E");
            drop(unread);
            let first: i64 = ctx.wait_for_external_event("E").await?;
            let second: i64 = ctx.wait_for_external_event("E").await?;
            Ok::<_, OrchestrationError>((first, second))
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "peek");
    h.start("Peek", None);
    h.raise("E", json(&1));
    h.raise("E", json(&2));
    h.step();
    assert_eq!(h.output::<(i64, i64)>(), (1, 2));
}

#[test]
fn sub_orchestrations() {
    let registry = math()
        .register_orchestration_typed("Child", |ctx, n: i64| async move {
            if n < 0 {
                return Err(OrchestrationError::new("Negative", format!("{n} < 0")));
            }
            let doubled: i64 = ctx.call_activity("Double", &n).await?;
            Ok(doubled)
        })
        .register_orchestration_typed("Parent", |ctx, (): ()| async move {
            let auto: i64 = ctx.call_sub_orchestration("Child", None, &5).await?;
            let named: i64 = ctx
                .call_sub_orchestration("Child", Some("my-child"), &6)
                .await?;
            let failed = ctx
                .call_sub_orchestration::<_, i64>("Child", None, &-1)
                .await;
            let failure = match failed {
                Err(OrchestrationError::SubOrchestrationFailed {
                    name,
                    instance_id,
                    details,
                }) => format!("{name}/{instance_id}/{}", details.error_type),
                other => format!("unexpected: {other:?}"),
            };
            Ok::<_, OrchestrationError>((auto, named, failure))
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "parent");
    h.start("Parent", None);
    h.run();
    assert_eq!(
        h.output::<(i64, i64, String)>(),
        (10, 12, "Child/parent:2/Negative".to_owned())
    );
    let subs: Vec<String> = h.steps.iter().flat_map(action_names).collect();
    assert_eq!(
        subs,
        [
            "sub:Child:parent:0",
            "sub:Child:my-child",
            "sub:Child:parent:2",
            "complete:Completed"
        ]
    );
}

#[test]
fn continue_as_new_carries_unconsumed_events_over() {
    let registry = Registry::builder()
        .register_orchestration_typed("Ticker", |ctx, count: u32| async move {
            let tick: String = ctx.wait_for_external_event("tick").await?;
            ctx.set_custom_status(&format!("{count}:{tick}"))?;
            if count + 1 < 3 {
                ctx.send_event("observer", "progress", &count)?;
                ctx.continue_as_new(&(count + 1))?;
                // Ignored: the execution has already ended.
                return Ok::<_, OrchestrationError>(u32::MAX);
            }
            Ok(count + 1)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "ticker");
    h.start("Ticker", json(&0));
    for tick in ["a", "b", "c", "d"] {
        h.raise("tick", json(&tick));
    }
    h.run();
    assert_eq!(h.output::<u32>(), 3);
    let carried: Vec<(Option<String>, usize)> = h
        .continued
        .iter()
        .map(|(input, carryover)| (input.clone(), carryover.len()))
        .collect();
    assert_eq!(carried, [(json(&1), 3), (json(&2), 2)]);
    // The carried events are the unconsumed ones, in arrival order.
    let second_carryover: Vec<Option<String>> = h.continued[1]
        .1
        .iter()
        .map(|e| match &e.kind {
            EventKind::EventRaised { input, .. } => input.clone(),
            other => panic!("not an event: {other:?}"),
        })
        .collect();
    assert_eq!(second_carryover, [json(&"c"), json(&"d")]);
    // Actions issued before continue-as-new are kept.
    assert_eq!(h.sent.len(), 2);
    assert_eq!(
        h.steps.last().and_then(|s| s.custom_status.clone()),
        json(&"2:c")
    );
    let first = &h.steps[0];
    assert_eq!(
        action_names(first),
        ["send:progress", "complete:ContinuedAsNew"]
    );
}

#[test]
fn custom_status_is_reported_each_step() {
    let registry = math()
        .register_orchestration_typed("Status", |ctx, (): ()| async move {
            ctx.set_custom_status(&"starting")?;
            let _: i64 = ctx.call_activity("Add", &(1, 2)).await?;
            ctx.set_custom_status(&serde_json::json!({"progress": 50}))?;
            let _: i64 = ctx.call_activity("Add", &(3, 4)).await?;
            ctx.set_custom_status_raw(None);
            Ok::<_, OrchestrationError>(())
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "status");
    h.start("Status", None);
    h.run();
    let statuses: Vec<Option<String>> = h.steps.iter().map(|s| s.custom_status.clone()).collect();
    assert_eq!(
        statuses,
        [
            json(&"starting"),
            Some(r#"{"progress":50}"#.to_owned()),
            None
        ]
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Observed {
    time: u64,
    guid: String,
}

#[test]
fn current_time_and_new_guid_are_deterministic() {
    let registry = Registry::builder()
        .register_activity_typed("Record", |_, observed: Observed| async move {
            Ok::<_, ActivityError>(observed)
        })
        .register_orchestration_typed("Clock", |ctx, (): ()| async move {
            let first = Observed {
                time: ctx.current_time(),
                guid: ctx.new_guid(),
            };
            let recorded: Observed = ctx.call_activity("Record", &first).await?;
            ctx.sleep(Duration::from_secs(60)).await;
            let second = Observed {
                time: ctx.current_time(),
                guid: ctx.new_guid(),
            };
            let another = ctx.new_guid();
            Ok::<_, OrchestrationError>((first, recorded, second, another))
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "clock");
    h.start("Clock", None);
    h.run();
    let (first, recorded, second, another) = h.output::<(Observed, Observed, Observed, String)>();
    // What the code saw in step 1 (recorded in history) is what replays saw.
    assert_eq!(first, recorded);
    assert_eq!(first.time, T0 + 10);
    // The timer step's time is the time of that step's OrchestratorStarted.
    let fired_step_time = h
        .history
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::OrchestratorStarted)
        .map(|e| e.timestamp_ms)
        .expect("steps");
    assert_eq!(second.time, fired_step_time);
    assert!(second.time >= first.time + 60_000);
    assert_ne!(first.guid, second.guid);
    assert_ne!(second.guid, another);
    assert_eq!(first.guid.len(), 36);
    // Another instance gets other guids.
    let mut other = Harness::new(h.registry.clone(), "clock-2");
    other.start("Clock", None);
    other.run();
    let (other_first, ..) = other.output::<(Observed, Observed, Observed, String)>();
    assert_eq!(other_first.time, first.time);
    assert_ne!(other_first.guid, first.guid);
}

#[test]
fn is_replaying_is_false_only_for_new_events() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let registry = math()
        .register_orchestration("Logged", move |ctx: OrchestrationContext, _| {
            let log = seen.clone();
            async move {
                for i in 0..3_i64 {
                    let _: i64 = ctx.call_activity("Double", &i).await?;
                    if !ctx.is_replaying() {
                        log.lock().push(i);
                    }
                }
                Ok(None)
            }
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "logged");
    h.check_full_replay = false; // a fresh replay would not log anyway
    h.start("Logged", None);
    h.run();
    assert_eq!(*log.lock(), [0, 1, 2]);

    // The same holds without the cache: every step replays from scratch.
    log.lock().clear();
    let mut h = Harness::new(h.registry.clone(), "logged-2");
    h.check_full_replay = false;
    h.start("Logged", None);
    for _ in 0..10 {
        h.executor = OrchestrationExecutor::new(h.registry.clone(), h.instance.clone());
        h.step();
        if h.ended.is_some() {
            break;
        }
        h.run_activities();
    }
    assert!(h.ended.is_some());
    assert_eq!(*log.lock(), [0, 1, 2]);
}

#[test]
fn retry_policy_retries_on_durable_timers() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let registry = Registry::builder()
        .register_activity_typed("Flaky", move |_, fail_times: usize| {
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt <= fail_times {
                    Err(ActivityError::new("Flaky", format!("attempt {attempt}")))
                } else {
                    Ok(attempt)
                }
            }
        })
        .register_orchestration_typed("Retry", |ctx, (fail_times, max): (usize, u32)| async move {
            let policy = RetryPolicy::new(max, 1_000).with_backoff(2.0);
            let attempt: usize = ctx
                .call_activity_with_retry("Flaky", &fail_times, policy)
                .await?;
            Ok::<_, OrchestrationError>(attempt)
        })
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);

    let mut h = Harness::new(registry.clone(), "retry");
    h.start("Retry", json(&(2, 3)));
    h.run();
    assert_eq!(h.output::<usize>(), 3);
    let kinds: Vec<String> = h
        .steps
        .iter()
        .flat_map(action_names)
        .map(|name| name.split(':').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["task", "timer", "task", "timer", "task", "complete"]
    );
    // Backoff: the second timer waits twice as long as the first.
    let timer_delays: Vec<u64> = h
        .steps
        .iter()
        .flat_map(|step| &step.actions)
        .filter_map(|a| match a.kind {
            ActionKind::CreateTimer { fire_at_ms } => Some(fire_at_ms),
            _ => None,
        })
        .collect();
    assert_eq!(timer_delays.len(), 2);
    assert!(timer_delays[1] - timer_delays[0] >= 2_000);

    // Out of attempts: the last failure surfaces.
    attempts.store(0, Ordering::SeqCst);
    let mut h = Harness::new(registry, "retry-out");
    h.start("Retry", json(&(5, 2)));
    h.run();
    let failure = h.failure();
    assert_eq!(failure.error_type, "ActivityFailed");
    let inner = failure.inner.expect("the activity failure");
    assert_eq!(inner.error_type, "Flaky");
    assert_eq!(inner.message, "attempt 2");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_policy_stops_on_non_retriable_failures() {
    let registry = Registry::builder()
        .register_orchestration_typed("RetryMissing", |ctx, (): ()| async move {
            let result: Result<(), _> = ctx
                .call_activity_with_retry("Missing", &(), RetryPolicy::new(5, 10))
                .await;
            match result {
                Err(OrchestrationError::ActivityFailed { details, .. }) => {
                    Ok::<_, OrchestrationError>(details.error_type)
                }
                other => Ok(format!("unexpected: {other:?}")),
            }
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "retry-missing");
    h.start("RetryMissing", None);
    h.run();
    assert_eq!(h.output::<String>(), "ActivityNotFound");
    assert_eq!(h.steps.iter().flat_map(|s| &s.actions).count(), 2);
}

#[test]
fn activity_failures_surface_to_the_orchestration() {
    let registry = math()
        .register_orchestration_typed("Catches", |ctx, (): ()| async move {
            match ctx.call_activity::<_, ()>("Fail", &"bad input").await {
                Err(OrchestrationError::ActivityFailed { name, details }) => {
                    Ok::<_, OrchestrationError>(format!(
                        "{name}: {}: {}",
                        details.error_type, details.message
                    ))
                }
                other => Ok(format!("unexpected: {other:?}")),
            }
        })
        .register_orchestration_typed("Propagates", |ctx, (): ()| async move {
            ctx.call_activity::<_, ()>("Fail", &"bad input").await?;
            Ok::<_, OrchestrationError>(())
        })
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);
    let mut h = Harness::new(registry.clone(), "catches");
    h.start("Catches", None);
    h.run();
    assert_eq!(h.output::<String>(), "Fail: Boom: bad input");

    let mut h = Harness::new(registry, "propagates");
    h.start("Propagates", None);
    h.run();
    let failure = h.failure();
    assert_eq!(failure.error_type, "ActivityFailed");
    assert!(failure.message.contains("Fail"), "{failure}");
    let inner = failure.inner.expect("inner failure");
    assert_eq!(
        (inner.error_type.as_str(), inner.message.as_str()),
        ("Boom", "bad input")
    );
}

/// Runs `v1` for `steps_before` steps, then continues the same history with
/// a fresh executor over `v2` and returns that step's result.
fn run_then_change(
    v1: Registry,
    v2: Registry,
    steps_before: usize,
) -> (OrchestrationStepResult, Harness) {
    let mut h = Harness::new(Arc::new(v1), "changed");
    h.start("Flow", None);
    for _ in 0..steps_before {
        h.step();
        h.run_entity_requests();
        h.grant_locks();
        h.run_activities();
        h.fire_next_timer();
    }
    h.registry = Arc::new(v2);
    h.executor = OrchestrationExecutor::new(h.registry.clone(), h.instance.clone());
    let result = h.step();
    (result, h)
}

fn flow(
    body: fn(
        OrchestrationContext,
    ) -> futures::future::BoxFuture<'static, Result<(), OrchestrationError>>,
) -> Registry {
    math()
        .register_orchestration_typed("Flow", move |ctx, (): ()| body(ctx))
        .build()
        .expect("valid registry")
}

#[test]
fn non_determinism_is_detected() {
    use futures::FutureExt;

    let v1 = || {
        flow(|ctx| {
            async move {
                let _: i64 = ctx.call_activity("Add", &(1, 2)).await?;
                let _: i64 = ctx.call_activity("Double", &3).await?;
                Ok(())
            }
            .boxed()
        })
    };

    // Another activity name for action 0.
    let renamed = flow(|ctx| {
        async move {
            let _: i64 = ctx.call_activity("Double", &1).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), renamed, 1);
    let failure = single_failure(&result);
    assert_eq!(failure.error_type, "NonDeterminismError");
    assert!(
        failure.message.contains("ScheduleTask \"Add\"")
            && failure.message.contains("ScheduleTask \"Double\""),
        "{}",
        failure.message
    );

    // Another action kind.
    let timer = flow(|ctx| {
        async move {
            ctx.sleep(Duration::from_secs(1)).await;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), timer, 1);
    let failure = single_failure(&result);
    assert_eq!(failure.error_type, "NonDeterminismError");
    assert!(
        failure.message.contains("ScheduleTask \"Add\"") && failure.message.contains("CreateTimer"),
        "{}",
        failure.message
    );

    // An extra action that history never confirms.
    let extra = flow(|ctx| {
        async move {
            let first = ctx.call_activity::<_, i64>("Add", &(1, 2));
            let extra = ctx.call_activity::<_, i64>("Echo", &"extra");
            let _ = first.await?;
            let _ = extra.await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), extra, 1);
    let failure = single_failure(&result);
    assert_eq!(failure.error_type, "NonDeterminismError");
    assert!(
        failure.message.contains("ScheduleTask \"Echo\""),
        "{}",
        failure.message
    );

    // A missing action: history has one the code no longer issues.
    let missing = flow(|_ctx| async move { Ok(()) }.boxed());
    let (result, _) = run_then_change(v1(), missing, 1);
    let failure = single_failure(&result);
    assert_eq!(failure.error_type, "NonDeterminismError");
    assert!(
        failure.message.contains("ScheduleTask \"Add\"")
            && failure.message.contains("did not issue"),
        "{}",
        failure.message
    );

    // The same code replays without complaint, and an ended executor stays quiet.
    let (result, mut h) = run_then_change(v1(), v1(), 1);
    assert_eq!(action_names(&result), ["task:Double"]);
    h.run_activities();
    let done = h.step();
    assert_eq!(action_names(&done), ["complete:Completed"]);
    let again = h
        .executor
        .execute(&h.history, &[event(h.now, EventKind::OrchestratorStarted)]);
    assert!(again.actions.is_empty());
}

#[test]
fn non_deterministic_executor_stays_failed() {
    let v1 = math()
        .register_orchestration_typed("Flow", |ctx, (): ()| async move {
            let _: i64 = ctx.call_activity("Add", &(1, 2)).await?;
            Ok::<_, OrchestrationError>(())
        })
        .build()
        .expect("valid");
    let v2 = math()
        .register_orchestration_typed("Flow", |ctx, (): ()| async move {
            let _: i64 = ctx.call_activity("Double", &2).await?;
            Ok::<_, OrchestrationError>(())
        })
        .build()
        .expect("valid");
    let (result, mut h) = run_then_change(v1, v2, 1);
    assert_eq!(single_failure(&result).error_type, "NonDeterminismError");
    // Its failure was returned; a further step on the cached executor emits nothing.
    h.check_full_replay = false;
    assert!(h.step().actions.is_empty());
}

#[test]
fn unknown_orchestration_fails() {
    let mut h = Harness::new(Arc::new(math().build().expect("valid")), "unknown");
    h.start("Nope", None);
    let result = h.step();
    let failure = single_failure(&result);
    assert_eq!(failure.error_type, "OrchestrationNotFound");
    assert!(failure.message.contains("Nope"));
    assert_eq!(result.actions[0].id, 0);
}

#[test]
fn missing_execution_started_fails() {
    let registry = Arc::new(math().build().expect("valid"));
    let mut executor = OrchestrationExecutor::new(registry, id("no-start"));
    let result = executor.execute(&[], &[event(T0, EventKind::OrchestratorStarted)]);
    assert_eq!(single_failure(&result).error_type, "InvalidHistory");
}

#[test]
fn panicking_orchestrations_fail() {
    let registry = math()
        .register_orchestration_typed("PanicsAtOnce", |_ctx, (): ()| async move {
            if true {
                panic!("at once");
            }
            Ok::<_, OrchestrationError>(())
        })
        .register_orchestration_typed("PanicsLater", |ctx, (): ()| async move {
            let n: i64 = ctx.call_activity("Double", &21).await?;
            assert_eq!(n, 0, "later");
            Ok::<_, OrchestrationError>(())
        })
        .register_orchestration(
            "PanicsWhenCalled",
            |_ctx, _input| -> futures::future::Ready<_> { panic!("when called") },
        )
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);
    for (name, needle) in [
        ("PanicsAtOnce", "at once"),
        ("PanicsLater", "later"),
        ("PanicsWhenCalled", "when called"),
    ] {
        let mut h = Harness::new(registry.clone(), name);
        h.start(name, None);
        h.run();
        let failure = h.failure();
        assert_eq!(failure.error_type, "Panic", "{name}");
        assert!(
            failure.message.contains(needle),
            "{name}: {}",
            failure.message
        );
    }
}

#[test]
fn invalid_typed_input_fails_with_serialization_error() {
    let registry = math()
        .register_orchestration_typed("Typed", |_ctx, n: u32| async move {
            Ok::<_, OrchestrationError>(n)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "typed");
    h.start("Typed", Some("\"not a number\"".into()));
    h.run();
    assert_eq!(h.failure().error_type, "SerializationError");
}

#[test]
fn raw_orchestrations_pass_json_through() {
    let registry = Registry::builder()
        .register_activity(
            "Upper",
            |_ctx: ActivityContext, input: Option<String>| async move {
                Ok(input.map(|text| text.to_uppercase()))
            },
        )
        .register_orchestration(
            "Raw",
            |ctx: OrchestrationContext, input: Option<String>| async move {
                let upper = ctx.call_activity_raw("Upper", input).await?;
                Ok(upper)
            },
        )
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "raw");
    h.start("Raw", Some(r#"{"a":"b"}"#.into()));
    h.run();
    assert_eq!(
        h.ended.as_ref().and_then(|e| e.output.clone()),
        Some(r#"{"A":"B"}"#.to_owned())
    );
}

#[test]
fn select_all_resolves_in_history_order() {
    let registry = math()
        .register_orchestration_typed("Race", |ctx, (): ()| async move {
            let calls: Vec<_> = (0..5_i64)
                .map(|i| ctx.call_activity::<_, i64>("Double", &i))
                .collect();
            let (first, index, rest) = select_all(calls).await;
            let (second, second_index, _) = select_all(rest).await;
            Ok::<_, OrchestrationError>((first?, index, second?, second_index))
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "race");
    h.start("Race", None);
    h.step();
    // Completions arrive last-scheduled first: the winner is task 4.
    h.run_activities_reversed();
    h.step();
    assert_eq!(h.output::<(i64, usize, i64, usize)>(), (8, 4, 6, 3));
}

#[test]
fn cached_executor_does_not_rerun_history() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let registry = math()
        .register_orchestration_typed("Counted", move |ctx, (): ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut total = 0_i64;
                for i in 0..5_i64 {
                    total += ctx.call_activity::<_, i64>("Double", &i).await?;
                    ctx.sleep(Duration::from_millis(100)).await;
                }
                Ok::<_, OrchestrationError>(total)
            }
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "counted");
    h.check_full_replay = false;
    h.start("Counted", None);
    h.run();
    assert_eq!(h.output::<i64>(), 20);
    assert_eq!(h.steps.len(), 11);
    // One call of the orchestration function for all 11 steps.
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Giving the cached executor a history it has not seen (here: a step
    // re-delivered) makes it replay from scratch and give the same answer.
    calls.store(0, Ordering::SeqCst);
    let mut h = Harness::new(h.registry.clone(), "redelivered");
    h.check_full_replay = false;
    h.start("Counted", None);
    h.step();
    h.run_activities();
    let past = h.history.clone();
    let new_events = {
        let mut events = vec![event(h.now + 10, EventKind::OrchestratorStarted)];
        events.extend(h.inbox.clone());
        events
    };
    let first = h.executor.execute(&past, &new_events);
    let redelivered = h.executor.execute(&past, &new_events);
    assert_eq!(first, redelivered);
    assert_eq!(
        action_names(&first),
        [format!("timer:{}", h.now + 10 + 100)]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn caching_matches_full_replay_on_a_mixed_workflow() {
    // Everything at once; the harness compares each step with a full replay.
    let registry = math()
        .register_orchestration_typed("Child", |ctx, n: i64| async move {
            let d: i64 = ctx.call_activity("Double", &n).await?;
            Ok::<_, OrchestrationError>(d)
        })
        .register_orchestration_typed("Mixed", |ctx, rounds: u32| async move {
            let mut log = Vec::new();
            let fan: Vec<i64> =
                join_all((0..20_i64).map(|i| ctx.call_activity::<_, i64>("Add", &(i, i))))
                    .await
                    .into_iter()
                    .collect::<Result<_, _>>()?;
            log.push(fan.iter().sum::<i64>());
            let child: i64 = ctx.call_sub_orchestration("Child", None, &7).await?;
            log.push(child);
            ctx.set_custom_status(&ctx.new_guid())?;
            let timer = ctx.sleep(Duration::from_secs(5));
            let poke = ctx.wait_for_external_event::<i64>("poke");
            match select(timer, poke).await {
                Either::Left(_) => log.push(-1),
                Either::Right((value, _)) => log.push(value?),
            }
            ctx.send_event("elsewhere", "done", &log)?;
            if rounds > 1 {
                ctx.continue_as_new(&(rounds - 1))?;
            }
            Ok::<_, OrchestrationError>(log)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "mixed");
    h.start("Mixed", json(&2));
    h.raise("poke", json(&42));
    h.run();
    assert_eq!(h.output::<Vec<i64>>(), [380, 14, -1]);
    assert_eq!(h.continued.len(), 1);
    assert_eq!(h.sent.len(), 2);
}

#[test]
fn durable_futures_work_with_the_select_macro() {
    let registry = math()
        .register_orchestration_typed("Macro", |ctx, (): ()| async move {
            let mut timer = ctx.sleep(Duration::from_secs(10));
            let mut sum = ctx.call_activity::<_, i64>("Add", &(2, 3));
            let mut seen = Vec::new();
            // Loop until both are done; fused futures are skipped once done.
            loop {
                futures::select! {
                    () = timer => seen.push("timer".to_owned()),
                    n = sum => seen.push(format!("sum {}", n?)),
                    complete => break,
                }
            }
            Ok::<_, OrchestrationError>(seen)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "macro");
    h.start("Macro", None);
    h.run();
    assert_eq!(h.output::<Vec<String>>(), ["sum 5", "timer"]);
}

#[test]
fn a_recorded_end_stops_the_executor() {
    let registry = Arc::new(math().build().expect("valid"));
    let mut executor = OrchestrationExecutor::new(registry, id("ended"));
    let past = vec![
        event(T0, EventKind::OrchestratorStarted),
        event(T0, started("Gone", None)),
        event(
            T0,
            EventKind::ExecutionCompleted {
                status: OrchestrationStatus::Completed,
                result: None,
                failure: None,
            },
        ),
    ];
    let late = [
        event(T0 + 1, EventKind::OrchestratorStarted),
        event(
            T0 + 1,
            EventKind::EventRaised {
                name: "late".into(),
                input: None,
            },
        ),
    ];
    assert_eq!(
        executor.execute(&past, &late),
        OrchestrationStepResult::default()
    );
    assert!(executor.is_finished());
}

#[test]
fn entity_signals_are_emitted_once_and_confirmed_across_replay() {
    let registry = math()
        .register_orchestration_typed("Signals", |ctx, (): ()| async move {
            let counter = entity("Counter", "a");
            ctx.signal_entity(&counter, "add", &5_i64)?;
            let doubled: i64 = ctx.call_activity("Double", &1).await?;
            ctx.signal_entity_raw(&counter, "add", json(&doubled));
            let value: i64 = ctx.call_entity(&counter, "get", &()).await?;
            Ok::<_, OrchestrationError>(value)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "signals");
    h.start("Signals", None);
    h.run();
    // Each signal is a new action exactly once; replays only confirm it.
    let names: Vec<Vec<String>> = h.steps.iter().map(action_names).collect();
    assert_eq!(
        names,
        [
            vec!["signal:@counter@a:add", "task:Double"],
            vec!["signal:@counter@a:add", "call:@counter@a:get"],
            vec!["complete:Completed"],
        ]
    );
    assert_eq!(
        h.signaled,
        [
            ("@counter@a".to_owned(), "add".to_owned(), json(&5)),
            ("@counter@a".to_owned(), "add".to_owned(), json(&2)),
        ]
    );
    assert_eq!(h.output::<i64>(), 7);
    // The history confirms both signals with the action ids.
    let confirmed: Vec<i32> = h
        .history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::EntityOperationSignaled { .. }))
        .map(|e| e.event_id)
        .collect();
    assert_eq!(confirmed, [0, 2]);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Totals {
    first: i64,
    second: i64,
    raw: Option<String>,
}

#[test]
fn entity_calls_return_typed_values() {
    let registry = math()
        .register_orchestration_typed("Calls", |ctx, (): ()| async move {
            let counter = entity("Counter", "b");
            let first: i64 = ctx.call_entity(&counter, "add", &3_i64).await?;
            let second: i64 = ctx.call_entity(&counter, "add", &first).await?;
            let raw = ctx.call_entity_raw(&counter, "get", None).await?;
            Ok::<_, OrchestrationError>(Totals { first, second, raw })
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "calls");
    h.start("Calls", None);
    h.run();
    assert_eq!(
        h.output::<Totals>(),
        Totals {
            first: 3,
            second: 6,
            raw: Some("6".to_owned()),
        }
    );
    assert_eq!(
        h.entity_states.get("@counter@b"),
        Some(&Some("6".to_owned()))
    );
    assert_eq!(h.steps.len(), 4);
}

#[test]
fn failing_entity_calls_surface_and_can_be_caught() {
    let registry = math()
        .register_orchestration_typed("CatchesEntity", |ctx, (): ()| async move {
            let counter = entity("Counter", "c");
            let _: i64 = ctx.call_entity(&counter, "add", &10_i64).await?;
            let caught = match ctx.call_entity::<_, i64>(&counter, "add", &-4_i64).await {
                Err(OrchestrationError::EntityFailed {
                    entity,
                    operation,
                    details,
                }) => format!(
                    "{entity} {operation}: {}: {}",
                    details.error_type, details.message
                ),
                other => format!("unexpected: {other:?}"),
            };
            // The failed operation left the state as it was.
            let value: i64 = ctx.call_entity(&counter, "get", &()).await?;
            Ok::<_, OrchestrationError>((caught, value))
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "catches-entity");
    h.start("CatchesEntity", None);
    h.run();
    assert_eq!(
        h.output::<(String, i64)>(),
        (
            "@counter@c add: Negative: amounts must be positive".to_owned(),
            10
        )
    );
}

#[test]
fn escaping_entity_failures_fail_the_instance() {
    let registry = math()
        .register_orchestration_typed("PropagatesEntity", |ctx, (): ()| async move {
            let counter = entity("Counter", "d");
            ctx.call_entity::<_, i64>(&counter, "add", &-1_i64).await?;
            Ok::<_, OrchestrationError>(())
        })
        .register_orchestration_typed("UnknownOperation", |ctx, (): ()| async move {
            ctx.call_entity::<_, i64>(&entity("Counter", "d"), "nope", &())
                .await?;
            Ok::<_, OrchestrationError>(())
        })
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);
    let mut h = Harness::new(registry.clone(), "propagates-entity");
    h.start("PropagatesEntity", None);
    h.run();
    let failure = h.failure();
    assert_eq!(failure.error_type, "EntityOperationFailed");
    assert!(
        failure.message.contains("@counter@d") && failure.message.contains("\"add\""),
        "{failure}"
    );
    let inner = failure.inner.expect("inner failure");
    assert_eq!(
        (inner.error_type.as_str(), inner.message.as_str()),
        ("Negative", "amounts must be positive")
    );

    let mut h = Harness::new(registry, "unknown-operation");
    h.start("UnknownOperation", None);
    h.run();
    let failure = h.failure();
    assert_eq!(failure.error_type, "EntityOperationFailed");
    let inner = failure.inner.expect("inner failure");
    assert_eq!(inner.error_type, basalt_runtime::sdk::UNKNOWN_OPERATION);
    assert!(inner.is_non_retriable);
}

#[test]
fn fan_out_of_entity_calls_resolves_in_history_order() {
    let registry = math()
        .register_orchestration_typed("EntityFanOut", |ctx, (): ()| async move {
            let calls: Vec<_> = (0..10_i64)
                .map(|i| ctx.call_entity::<_, i64>(&entity("Counter", &i.to_string()), "add", &i))
                .collect();
            let values: Vec<i64> = join_all(calls)
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            // A second fan-out: the first completion in history wins.
            let calls: Vec<_> = (0..10_i64)
                .map(|i| ctx.call_entity::<_, i64>(&entity("Counter", &i.to_string()), "add", &1))
                .collect();
            let (first, index, rest) = select_all(calls).await;
            let (second, second_index, _) = select_all(rest).await;
            Ok::<_, OrchestrationError>((values, first?, index, second?, second_index))
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "entity-fan-out");
    h.start("EntityFanOut", None);
    let first = h.step();
    assert_eq!(first.actions.len(), 10);
    assert!(
        first
            .actions
            .iter()
            .enumerate()
            .all(|(i, a)| a.id == i as i32 && matches!(a.kind, ActionKind::CallEntity { .. }))
    );
    // Completions arrive last-issued first; join_all still yields call order.
    h.run_entity_requests_reversed();
    let second = h.step();
    assert_eq!(second.actions.len(), 10);
    h.run_entity_requests_reversed();
    h.step();
    let (values, first, index, second, second_index) =
        h.output::<(Vec<i64>, i64, usize, i64, usize)>();
    assert_eq!(values, (0..10).collect::<Vec<i64>>());
    // Last issued (key 9, value 9 + 1) completes first, then key 8.
    assert_eq!((first, index, second, second_index), (10, 9, 9, 8));
}

#[test]
fn entity_non_determinism_is_detected() {
    use futures::FutureExt;

    let v1 = || {
        flow(|ctx| {
            async move {
                ctx.signal_entity(&entity("Counter", "a"), "add", &1_i64)?;
                let _: i64 = ctx
                    .call_entity(&entity("Counter", "a"), "add", &2_i64)
                    .await?;
                let _: i64 = ctx.call_activity("Double", &3).await?;
                Ok(())
            }
            .boxed()
        })
    };
    let assert_nd = |result: &OrchestrationStepResult, parts: &[&str]| {
        let failure = single_failure(result);
        assert_eq!(failure.error_type, "NonDeterminismError");
        for part in parts {
            assert!(
                failure.message.contains(part),
                "{part}: {}",
                failure.message
            );
        }
    };

    // Another entity key for the call.
    let other_key = flow(|ctx| {
        async move {
            ctx.signal_entity(&entity("Counter", "a"), "add", &1_i64)?;
            let _: i64 = ctx
                .call_entity(&entity("Counter", "z"), "add", &2_i64)
                .await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), other_key, 1);
    assert_nd(
        &result,
        &[
            "CallEntity \"add\" on entity \"@counter@a\"",
            "CallEntity \"add\" on entity \"@counter@z\"",
        ],
    );

    // Another entity name for the signal.
    let other_name = flow(|ctx| {
        async move {
            ctx.signal_entity(&entity("Tally", "a"), "add", &1_i64)?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), other_name, 1);
    assert_nd(
        &result,
        &[
            "SignalEntity \"add\" on entity \"@counter@a\"",
            "SignalEntity \"add\" on entity \"@tally@a\"",
        ],
    );

    // Another operation name.
    let other_operation = flow(|ctx| {
        async move {
            ctx.signal_entity(&entity("Counter", "a"), "add", &1_i64)?;
            let _: i64 = ctx.call_entity(&entity("Counter", "a"), "get", &()).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), other_operation, 1);
    assert_nd(&result, &["CallEntity \"add\"", "CallEntity \"get\""]);

    // A call where history has a signal, and an activity where it has a call.
    let call_not_signal = flow(|ctx| {
        async move {
            let _: i64 = ctx
                .call_entity(&entity("Counter", "a"), "add", &1_i64)
                .await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), call_not_signal, 1);
    assert_nd(&result, &["SignalEntity \"add\"", "CallEntity \"add\""]);
    let activity_not_call = flow(|ctx| {
        async move {
            ctx.signal_entity(&entity("Counter", "a"), "add", &1_i64)?;
            let _: i64 = ctx.call_activity("Add", &(1, 2)).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), activity_not_call, 1);
    assert_nd(&result, &["CallEntity \"add\"", "ScheduleTask \"Add\""]);

    // A confirmed signal the code no longer issues.
    let missing = flow(|ctx| {
        async move {
            let _: i64 = ctx.call_activity("Double", &3).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), missing, 1);
    assert_nd(
        &result,
        &["SignalEntity \"add\"", "ScheduleTask \"Double\""],
    );
    let none = flow(|_ctx| async move { Ok(()) }.boxed());
    let (result, _) = run_then_change(v1(), none, 1);
    assert_nd(&result, &["SignalEntity \"add\"", "did not issue"]);

    // An extra signal, issued while replaying, that history never confirms.
    let extra = flow(|ctx| {
        async move {
            ctx.signal_entity(&entity("Counter", "a"), "add", &1_i64)?;
            let call = ctx.call_entity::<_, i64>(&entity("Counter", "a"), "add", &2_i64);
            ctx.signal_entity(&entity("Counter", "x"), "add", &1_i64)?;
            let _ = call.await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), extra, 1);
    assert_nd(
        &result,
        &["SignalEntity \"add\" on entity \"@counter@x\"", "no record"],
    );

    // The same code replays without complaint after the call completed.
    let (result, mut h) = run_then_change(v1(), v1(), 1);
    assert_eq!(action_names(&result), ["task:Double"]);
    h.run_activities();
    assert_eq!(action_names(&h.step()), ["complete:Completed"]);
}

#[test]
fn caching_matches_full_replay_with_activities_and_entities() {
    let registry = math()
        .register_orchestration_typed("EntityMixed", |ctx, rounds: u32| async move {
            let counter = entity("Counter", "mixed");
            let mut log = Vec::new();
            // Activities and entity calls in one fan-out.
            let activities =
                join_all((0..5_i64).map(|i| ctx.call_activity::<_, i64>("Double", &i)));
            let calls = join_all((0..5_i64).map(|i| {
                ctx.call_entity::<_, i64>(&entity("Counter", &format!("k{i}")), "add", &i)
            }));
            let (doubled, added) = futures::future::join(activities, calls).await;
            log.push(doubled.into_iter().sum::<Result<i64, _>>()?);
            log.push(added.into_iter().sum::<Result<i64, _>>()?);
            ctx.signal_entity(&counter, "add", &100_i64)?;
            let sum: i64 = ctx.call_activity("Add", &(log[0], log[1])).await?;
            let total: i64 = ctx.call_entity(&counter, "add", &sum).await?;
            log.push(total);
            // Race an entity call against a timer.
            let timer = ctx.sleep(Duration::from_secs(5));
            let get = ctx.call_entity::<_, i64>(&counter, "get", &());
            match select(timer, get).await {
                Either::Left(_) => log.push(-1),
                Either::Right((value, _)) => log.push(value?),
            }
            if let Err(error) = ctx.call_entity::<_, i64>(&counter, "add", &-1_i64).await {
                log.push(i64::from(matches!(
                    error,
                    OrchestrationError::EntityFailed { .. }
                )));
            }
            ctx.set_custom_status(&ctx.new_guid())?;
            if rounds > 1 {
                ctx.continue_as_new(&(rounds - 1))?;
            }
            Ok::<_, OrchestrationError>(log)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "entity-mixed");
    h.start("EntityMixed", json(&2));
    h.run();
    // Entity state outlives the generation: the first leaves k0..k4 at
    // 0..4 and the counter at 100 + 30 = 130; the second adds i again
    // (sum 20) and brings the counter to 130 + 100 + 40 = 270.
    assert_eq!(h.output::<Vec<i64>>(), [20, 20, 270, 270, 1]);
    assert_eq!(h.continued.len(), 1);
    assert_eq!(h.signaled.len(), 2);
    assert_eq!(
        h.entity_states.get("@counter@k4"),
        Some(&Some("8".to_owned()))
    );
}

/// The `EntityLockRequested` and `EntityUnlockSent` events of the history:
/// (kind, event id, entities).
fn lock_events(history: &[HistoryEvent]) -> Vec<(&'static str, i32, Vec<String>)> {
    history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::EntityLockRequested { entities } => {
                Some(("lock", e.event_id, entities.clone()))
            }
            EventKind::EntityUnlockSent { entities } => {
                Some(("unlock", e.event_id, entities.clone()))
            }
            _ => None,
        })
        .collect()
}

fn entity_names(entities: &[&str]) -> Vec<String> {
    entities.iter().map(|e| (*e).to_owned()).collect()
}

#[test]
fn critical_section_locks_calls_and_unlocks_across_replay() {
    let registry = math()
        .register_orchestration_typed("Transfer", |ctx, amount: i64| async move {
            let from = entity("Counter", "from");
            let to = entity("Counter", "to");
            let outside = ctx.is_in_critical_section();
            let mut guard = ctx
                .lock_entities(&[to.clone(), from.clone(), to.clone()])
                .await?;
            let inside = ctx.is_in_critical_section();
            let a: i64 = ctx.call_entity(&from, "add", &amount).await?;
            let b: i64 = ctx.call_entity(&to, "add", &(amount * 2)).await?;
            let locked = guard.entities().to_vec();
            ctx.unlock(&mut guard);
            let after = ctx.is_in_critical_section();
            Ok::<_, OrchestrationError>((locked, [outside, inside, after], a, b))
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "transfer");
    h.start("Transfer", json(&5_i64));
    let section = entity_names(&["@counter@from", "@counter@to"]);

    // The lock request, sorted and deduplicated, is the first action.
    let first = h.step();
    assert_eq!(action_names(&first), ["lock:@counter@from,@counter@to"]);
    assert_eq!(first.actions[0].id, 0);
    // Confirmed but not granted: the orchestration waits, whatever else
    // arrives in the meantime.
    h.raise("noise", None);
    assert!(h.step().actions.is_empty());
    assert!(h.entity_requests.is_empty());

    // Granted: the calls run one after the other, then the unlock.
    h.grant_locks();
    assert_eq!(action_names(&h.step()), ["call:@counter@from:add"]);
    h.run_entity_requests();
    assert_eq!(action_names(&h.step()), ["call:@counter@to:add"]);
    h.run_entity_requests();
    let last = h.step();
    assert_eq!(
        action_names(&last),
        ["unlock:@counter@from,@counter@to", "complete:Completed"]
    );
    assert_eq!(last.actions[0].id, 3);

    assert_eq!(
        h.output::<(Vec<String>, [bool; 3], i64, i64)>(),
        (section.clone(), [false, true, false], 5, 10)
    );
    // History confirms the lock and the unlock with their action ids; the
    // replays of later steps issued each exactly once.
    assert_eq!(
        lock_events(&h.history),
        [("lock", 0, section.clone()), ("unlock", 3, section.clone())]
    );
    assert_eq!(h.locked, [(0, section.clone())]);
    assert_eq!(h.unlocked, [(3, section)]);
    assert!(
        h.history
            .iter()
            .any(|e| e.kind == EventKind::EntityLockGranted { request_id: 0 })
    );
}

#[test]
fn lock_requests_are_sorted_and_deduplicated() {
    let registry = math()
        .register_orchestration_typed("Sorted", |ctx, (): ()| async move {
            let ids = [
                entity("Tally", "a"),
                entity("Counter", "z"),
                entity("Counter", "a"),
                entity("Tally", "a"),
                entity("counter", "a"),
                entity("Counter", "B"),
            ];
            let mut guard = ctx.lock_entities(&ids).await?;
            let locked = guard.entities().to_vec();
            guard.release(&ctx);
            Ok::<_, OrchestrationError>(locked)
        })
        .build()
        .expect("valid registry");
    let mut h = Harness::new(Arc::new(registry), "sorted");
    h.start("Sorted", None);
    h.run();
    let expected = entity_names(&["@counter@B", "@counter@a", "@counter@z", "@tally@a"]);
    assert_eq!(h.output::<Vec<String>>(), expected);
    assert_eq!(h.locked, [(0, expected.clone())]);
    assert_eq!(h.unlocked, [(1, expected)]);
}

#[test]
fn lock_tasks_resolve_only_on_their_grant_and_work_with_select() {
    let registry = math()
        .register_orchestration_typed("Race", |ctx, (): ()| async move {
            let counter = entity("Counter", "race");
            let lock = ctx.lock_entities(std::slice::from_ref(&counter));
            let timer = ctx.sleep(Duration::from_secs(10));
            let mut guard = match select(lock, timer).await {
                Either::Left((guard, _)) => guard?,
                Either::Right(((), _lock)) => {
                    // The request is still out: once granted, the locks are
                    // held with no guard, and locking again is refused.
                    ctx.wait_for_external_event::<()>("go").await?;
                    let held = ctx.is_in_critical_section();
                    let nested = ctx.lock_entities(&[counter]).await;
                    return Ok::<_, OrchestrationError>(format!(
                        "timer; held: {held}; {}",
                        nested.expect_err("nested lock")
                    ));
                }
            };
            let value: i64 = ctx.call_entity(&counter, "add", &1_i64).await?;
            ctx.unlock(&mut guard);
            Ok(format!("locked; value: {value}"))
        })
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);

    // Granted before the timer fires: the lock wins.
    let mut h = Harness::new(registry.clone(), "race-lock");
    h.start("Race", None);
    assert_eq!(
        action_names(&h.step()),
        [
            "lock:@counter@race",
            format!("timer:{}", T0 + 10 + 10_000).as_str()
        ]
    );
    h.grant_locks();
    assert_eq!(action_names(&h.step()), ["call:@counter@race:add"]);
    h.run();
    assert_eq!(h.output::<String>(), "locked; value: 1");
    assert_eq!(h.unlocked.len(), 1);

    // The timer fires first: the lock task is dropped before its grant.
    let mut h = Harness::new(registry, "race-timer");
    h.start("Race", None);
    h.step();
    assert!(h.fire_next_timer());
    assert!(h.step().actions.is_empty());
    h.grant_locks();
    h.raise("go", None);
    let last = h.step();
    assert_eq!(action_names(&last), ["complete:Completed"]);
    let output = h.output::<String>();
    assert!(
        output.starts_with("timer; held: true; entity lock: critical sections do not nest"),
        "{output}"
    );
    assert!(h.unlocked.is_empty());
}

#[test]
fn misused_locks_fail_the_lock_task_and_release_is_idempotent() {
    let registry = math()
        .register_orchestration_typed("Misuse", |ctx, (): ()| async move {
            let a = entity("Counter", "a");
            let b = entity("Counter", "b");
            let empty = ctx.lock_entities(&[]).await.expect_err("empty lock");
            let mut guard = ctx.lock_entities(std::slice::from_ref(&a)).await?;
            let nested = ctx
                .lock_entities(std::slice::from_ref(&b))
                .await
                .expect_err("nested");
            ctx.unlock(&mut guard);
            ctx.unlock(&mut guard);
            guard.release(&ctx);
            let released = guard.is_released();
            // A second, sequential critical section is fine; dropping its
            // guard issues nothing.
            let second = ctx.lock_entities(&[b]).await?;
            drop(second);
            Ok::<_, OrchestrationError>((empty.to_string(), nested.to_string(), released))
        })
        .register_orchestration_typed("Escapes", |ctx, (): ()| async move {
            let _guard = ctx.lock_entities(&[]).await?;
            Ok::<_, OrchestrationError>(())
        })
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);
    let mut h = Harness::new(registry.clone(), "misuse");
    h.start("Misuse", None);
    h.run();
    let names: Vec<Vec<String>> = h.steps.iter().map(action_names).collect();
    assert_eq!(
        names,
        [
            vec!["lock:@counter@a"],
            vec!["unlock:@counter@a", "lock:@counter@b"],
            vec!["complete:Completed"],
        ]
    );
    let (empty, nested, released) = h.output::<(String, String, bool)>();
    assert!(empty.contains("at least one entity"), "{empty}");
    assert!(
        nested.contains("do not nest") && nested.contains("action 0"),
        "{nested}"
    );
    assert!(released);
    assert_eq!(h.unlocked, [(1, entity_names(&["@counter@a"]))]);

    let mut h = Harness::new(registry, "escapes");
    h.start("Escapes", None);
    h.run();
    let failure = h.failure();
    assert_eq!(failure.error_type, basalt_runtime::sdk::ENTITY_LOCK_ERROR);
    assert!(failure.is_non_retriable);
    assert!(h.locked.is_empty());
}

#[test]
fn lock_non_determinism_is_detected() {
    use futures::FutureExt;

    let v1 = || {
        flow(|ctx| {
            async move {
                let a = entity("Counter", "a");
                let mut guard = ctx
                    .lock_entities(&[a.clone(), entity("Counter", "b")])
                    .await?;
                let _: i64 = ctx.call_entity(&a, "add", &1_i64).await?;
                ctx.unlock(&mut guard);
                let _: i64 = ctx.call_activity("Double", &3).await?;
                Ok(())
            }
            .boxed()
        })
    };
    let assert_nd = |result: &OrchestrationStepResult, parts: &[&str]| {
        let failure = single_failure(result);
        assert_eq!(failure.error_type, "NonDeterminismError");
        for part in parts {
            assert!(
                failure.message.contains(part),
                "{part}: {}",
                failure.message
            );
        }
    };

    // Another locked set.
    let other_set = flow(|ctx| {
        async move {
            let a = entity("Counter", "a");
            let _guard = ctx.lock_entities(&[a, entity("Counter", "c")]).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), other_set, 1);
    assert_nd(
        &result,
        &[
            "LockEntities on entities [\"@counter@a\", \"@counter@b\"]",
            "LockEntities on entities [\"@counter@a\", \"@counter@c\"]",
        ],
    );

    // A subset of the set.
    let subset = flow(|ctx| {
        async move {
            let _guard = ctx.lock_entities(&[entity("Counter", "a")]).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), subset, 2);
    assert_nd(&result, &["[\"@counter@a\"]", "LockEntities"]);

    // A call where history has the lock.
    let call_not_lock = flow(|ctx| {
        async move {
            let _: i64 = ctx
                .call_entity(&entity("Counter", "a"), "add", &1_i64)
                .await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), call_not_lock, 1);
    assert_nd(&result, &["LockEntities", "CallEntity \"add\""]);

    // No unlock where history has one, and an unlock where it has none.
    let no_unlock = flow(|ctx| {
        async move {
            let a = entity("Counter", "a");
            let _guard = ctx
                .lock_entities(&[a.clone(), entity("Counter", "b")])
                .await?;
            let _: i64 = ctx.call_entity(&a, "add", &1_i64).await?;
            let _: i64 = ctx.call_activity("Double", &3).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), no_unlock, 3);
    assert_nd(&result, &["UnlockEntities", "ScheduleTask \"Double\""]);
    let early_unlock = flow(|ctx| {
        async move {
            let a = entity("Counter", "a");
            let mut guard = ctx
                .lock_entities(&[a.clone(), entity("Counter", "b")])
                .await?;
            ctx.unlock(&mut guard);
            let _: i64 = ctx.call_entity(&a, "add", &1_i64).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), early_unlock, 2);
    assert_nd(&result, &["CallEntity \"add\"", "UnlockEntities"]);

    // The same set given in another order, with duplicates, replays fine.
    let reordered = flow(|ctx| {
        async move {
            let a = entity("Counter", "a");
            let b = entity("Counter", "b");
            let mut guard = ctx.lock_entities(&[b.clone(), a.clone(), b]).await?;
            let _: i64 = ctx.call_entity(&a, "add", &1_i64).await?;
            ctx.unlock(&mut guard);
            let _: i64 = ctx.call_activity("Double", &3).await?;
            Ok(())
        }
        .boxed()
    });
    let (result, _) = run_then_change(v1(), reordered, 3);
    assert_eq!(action_names(&result), ["complete:Completed"]);
}

#[test]
fn caching_matches_full_replay_with_critical_sections() {
    let registry = math()
        .register_orchestration_typed("LockedMixed", |ctx, rounds: u32| async move {
            let x = entity("Counter", "x");
            let y = entity("Counter", "y");
            // A lock request raced with an activity.
            let lock = ctx.lock_entities(&[y.clone(), x.clone()]);
            let doubled = ctx.call_activity::<_, i64>("Double", &i64::from(rounds));
            let (guard, doubled) = futures::future::join(lock, doubled).await;
            let mut guard = guard?;
            // A fan-out of calls inside the critical section.
            let sums = join_all([
                ctx.call_entity::<_, i64>(&x, "add", &doubled?),
                ctx.call_entity::<_, i64>(&y, "add", &1_i64),
            ])
            .await;
            let sum = sums.into_iter().sum::<Result<i64, _>>()?;
            ctx.unlock(&mut guard);
            ctx.sleep(Duration::from_secs(1)).await;
            // A second critical section, released through the guard.
            let mut second = ctx.lock_entities(std::slice::from_ref(&x)).await?;
            let value: i64 = ctx.call_entity(&x, "get", &()).await?;
            second.release(&ctx);
            ctx.set_custom_status(&ctx.new_guid())?;
            if rounds > 1 {
                ctx.continue_as_new(&(rounds - 1))?;
            }
            Ok::<_, OrchestrationError>((sum, value))
        })
        .build()
        .expect("valid registry");
    let registry = Arc::new(registry);

    // `run` grants locks before running activities, and every step is
    // compared with a fresh executor replaying from scratch.
    let mut h = Harness::new(registry.clone(), "locked-mixed");
    h.start("LockedMixed", json(&2_u32));
    h.run();
    // Generation 1: x = 4, y = 1; generation 2: x = 4 + 2, y = 2.
    assert_eq!(h.output::<(i64, i64)>(), (8, 6));
    assert_eq!(h.continued.len(), 1);
    assert_eq!(h.locked.len(), 4);
    assert_eq!(h.unlocked.len(), 4);

    // The grant and the activity result in one step, in either order.
    for grant_first in [true, false] {
        let mut h = Harness::new(registry.clone(), "locked-mixed-one-step");
        h.start("LockedMixed", json(&1_u32));
        h.step();
        if grant_first {
            h.grant_locks();
            h.run_activities();
        } else {
            h.run_activities();
            h.grant_locks();
        }
        assert_eq!(
            action_names(&h.step()),
            ["call:@counter@x:add", "call:@counter@y:add"]
        );
        h.run_entity_requests_reversed();
        let unlock = h.step();
        assert_eq!(
            action_names(&unlock),
            [
                "unlock:@counter@x,@counter@y",
                format!("timer:{}", h.now + 1_000).as_str()
            ]
        );
        h.run();
        assert_eq!(h.output::<(i64, i64)>(), (3, 2));
        assert_eq!(
            lock_events(&h.history)
                .iter()
                .map(|(kind, id, _)| (*kind, *id))
                .collect::<Vec<_>>(),
            [("lock", 0), ("unlock", 4), ("lock", 6), ("unlock", 8)]
        );
    }
}
