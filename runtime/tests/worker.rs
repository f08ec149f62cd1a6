//! The worker and the client end to end, over `TestBackend`: a minimal,
//! single-process stand-in that implements the `Backend` contract just far
//! enough to exercise the worker (it polls instead of notifying and keeps
//! everything in one mutex). It is a test double, not a product backend.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use basalt_runtime::client::{ClientError, decode_custom_status, decode_output};
use basalt_runtime::sdk::{ActivityError, OrchestrationError, Registry};
use basalt_runtime::{
    ActionKind, ActivityOutcome, ActivityWorkItem, Backend, Client, CompletionToken, Error,
    EventKind, HistoryEvent, InstanceId, InstanceQuery, InstanceState, OrchestrationStatus,
    OrchestrationStepResult, OrchestrationWorkItem, ParentInstance, QueryPage, Result,
    StartOptions, StartRequest, Worker, WorkerOptions,
};
use futures::future::join_all;
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(2);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

struct Instance {
    state: InstanceState,
    history: Vec<HistoryEvent>,
    inbox: Vec<HistoryEvent>,
    locked: bool,
}

#[derive(Default)]
struct Inner {
    instances: HashMap<InstanceId, Instance>,
    activities: VecDeque<ActivityWorkItem>,
    steps: HashMap<String, (InstanceId, Vec<HistoryEvent>)>,
    running_activities: HashMap<String, ActivityWorkItem>,
    timers: Vec<(u64, InstanceId, i32)>,
    next_token: u64,
    generated_ids: u64,
    /// Fail this many `next_*` calls with a storage error.
    failures_to_inject: usize,
    shut_down: bool,
    completed_activities: usize,
}

#[derive(Default)]
struct TestBackend {
    inner: Mutex<Inner>,
}

impl Inner {
    fn token(&mut self) -> CompletionToken {
        self.next_token += 1;
        CompletionToken(format!("t{}", self.next_token))
    }

    fn deliver(&mut self, instance_id: &InstanceId, kind: EventKind) {
        if let Some(instance) = self.instances.get_mut(instance_id)
            && !instance.state.status.is_terminal()
        {
            instance.inbox.push(HistoryEvent::new(now_ms(), kind));
        }
    }

    fn create(
        &mut self,
        request: StartRequest,
        parent: Option<ParentInstance>,
    ) -> Result<InstanceId> {
        let id = match request.instance_id {
            Some(id) => InstanceId::new(id)?,
            None => {
                self.generated_ids += 1;
                InstanceId::new(format!("generated-{}", self.generated_ids))?
            }
        };
        if let Some(existing) = self.instances.get(&id)
            && !existing.state.status.is_terminal()
        {
            return Err(Error::Conflict(format!("{id} is running")));
        }
        let now = now_ms();
        let started = HistoryEvent::new(
            now,
            EventKind::ExecutionStarted {
                name: request.name.clone(),
                version: request.version,
                input: request.input.clone(),
                parent: parent.clone(),
                scheduled_start_ms: request.scheduled_start_ms,
            },
        );
        self.instances.insert(
            id.clone(),
            Instance {
                state: InstanceState {
                    instance_id: id.clone(),
                    name: request.name,
                    status: OrchestrationStatus::Pending,
                    input: request.input,
                    output: None,
                    custom_status: None,
                    failure: None,
                    created_at_ms: now,
                    last_updated_at_ms: now,
                    scheduled_start_ms: request.scheduled_start_ms,
                    parent,
                },
                history: Vec::new(),
                inbox: vec![started],
                locked: false,
            },
        );
        Ok(id)
    }

    fn fire_due_timers(&mut self) {
        let now = now_ms();
        let (due, later): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(at, ..)| *at <= now);
        self.timers = later;
        for (fire_at_ms, instance_id, timer_id) in due {
            self.deliver(
                &instance_id,
                EventKind::TimerFired {
                    timer_id,
                    fire_at_ms,
                },
            );
        }
    }

    fn inject_failure(&mut self) -> Result<()> {
        if self.shut_down {
            return Err(Error::ShutDown);
        }
        if self.failures_to_inject > 0 {
            self.failures_to_inject -= 1;
            return Err(Error::Storage("injected".into()));
        }
        Ok(())
    }

    fn next_step(&mut self) -> Option<OrchestrationWorkItem> {
        self.fire_due_timers();
        let id = self
            .instances
            .iter()
            .filter(|(_, i)| {
                !i.locked
                    && !i.inbox.is_empty()
                    && !i.state.status.is_terminal()
                    && i.state.status != OrchestrationStatus::Suspended
            })
            .map(|(id, _)| id.clone())
            .min()?;
        let token = self.token();
        let instance = self.instances.get_mut(&id)?;
        instance.locked = true;
        let mut new_events = vec![HistoryEvent::new(now_ms(), EventKind::OrchestratorStarted)];
        new_events.append(&mut instance.inbox);
        let item = OrchestrationWorkItem {
            instance_id: id.clone(),
            past_events: Arc::new(instance.history.clone()),
            new_events: new_events.clone(),
            token: token.clone(),
        };
        self.steps.insert(token.0, (id, new_events));
        Some(item)
    }

    fn apply(
        &mut self,
        id: &InstanceId,
        new_events: Vec<HistoryEvent>,
        result: OrchestrationStepResult,
    ) {
        let now = now_ms();
        let mut follow_ups: Vec<(InstanceId, EventKind)> = Vec::new();
        let mut children = Vec::new();
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        instance.locked = false;
        if instance.state.status.is_terminal() {
            return;
        }
        instance.history.extend(new_events);
        if instance.state.status == OrchestrationStatus::Pending {
            instance.state.status = OrchestrationStatus::Running;
        }
        instance.state.custom_status = result.custom_status;
        instance.state.last_updated_at_ms = now;
        for action in result.actions {
            let confirm = |kind| HistoryEvent {
                event_id: action.id,
                timestamp_ms: now,
                kind,
            };
            match action.kind {
                ActionKind::ScheduleTask {
                    name,
                    version,
                    input,
                } => {
                    instance.history.push(confirm(EventKind::TaskScheduled {
                        name: name.clone(),
                        version: version.clone(),
                        input: input.clone(),
                    }));
                    self.next_token += 1;
                    self.activities.push_back(ActivityWorkItem {
                        instance_id: id.clone(),
                        name,
                        version,
                        input,
                        task_id: action.id,
                        token: CompletionToken(format!("t{}", self.next_token)),
                    });
                }
                ActionKind::CreateTimer { fire_at_ms } => {
                    instance
                        .history
                        .push(confirm(EventKind::TimerCreated { fire_at_ms }));
                    self.timers.push((fire_at_ms, id.clone(), action.id));
                }
                ActionKind::CreateSubOrchestration {
                    instance_id,
                    name,
                    version,
                    input,
                } => {
                    instance
                        .history
                        .push(confirm(EventKind::SubOrchestrationInstanceCreated {
                            instance_id: instance_id.clone(),
                            name: name.clone(),
                            version: version.clone(),
                            input: input.clone(),
                        }));
                    let parent = ParentInstance {
                        name: instance.state.name.clone(),
                        instance_id: id.clone(),
                        task_scheduled_id: action.id,
                    };
                    children.push((
                        StartRequest {
                            name,
                            instance_id: Some(instance_id),
                            input,
                            version,
                            scheduled_start_ms: None,
                        },
                        parent,
                    ));
                }
                ActionKind::SendEvent {
                    instance_id,
                    name,
                    data,
                } => {
                    instance.history.push(confirm(EventKind::EventSent {
                        instance_id: instance_id.clone(),
                        name: name.clone(),
                        input: data.clone(),
                    }));
                    if let Ok(target) = InstanceId::new(instance_id) {
                        follow_ups.push((target, EventKind::EventRaised { name, input: data }));
                    }
                }
                ActionKind::CompleteOrchestration {
                    status,
                    result,
                    failure,
                    carryover_events,
                    ..
                } => {
                    if status == OrchestrationStatus::ContinuedAsNew {
                        instance.history.clear();
                        let mut inbox = vec![HistoryEvent::new(
                            now,
                            EventKind::ExecutionStarted {
                                name: instance.state.name.clone(),
                                version: None,
                                input: result.clone(),
                                parent: instance.state.parent.clone(),
                                scheduled_start_ms: None,
                            },
                        )];
                        inbox.extend(carryover_events);
                        inbox.append(&mut instance.inbox);
                        instance.inbox = inbox;
                        instance.state.input = result;
                        break;
                    }
                    instance.history.push(HistoryEvent::new(
                        now,
                        EventKind::ExecutionCompleted {
                            status,
                            result: result.clone(),
                            failure: failure.clone(),
                        },
                    ));
                    instance.state.status = status;
                    instance.state.output = result.clone();
                    instance.state.failure = failure.clone();
                    if let Some(parent) = &instance.state.parent {
                        let kind = match failure {
                            Some(failure) => EventKind::SubOrchestrationInstanceFailed {
                                task_scheduled_id: parent.task_scheduled_id,
                                failure,
                            },
                            None => EventKind::SubOrchestrationInstanceCompleted {
                                task_scheduled_id: parent.task_scheduled_id,
                                result,
                            },
                        };
                        follow_ups.push((parent.instance_id.clone(), kind));
                    }
                }
            }
        }
        for (request, parent) in children {
            let _ = self.create(request, Some(parent));
        }
        for (target, kind) in follow_ups {
            self.deliver(&target, kind);
        }
    }
}

impl TestBackend {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock())
    }

    fn state(&self, id: &InstanceId) -> Result<InstanceState> {
        self.with(|inner| inner.instances.get(id).map(|i| i.state.clone()))
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    async fn wait_until(
        &self,
        id: &InstanceId,
        timeout: Duration,
        done: impl Fn(&InstanceState) -> bool,
    ) -> Result<InstanceState> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.state(id)?;
            if done(&state) {
                return Ok(state);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(timeout.as_millis() as u64));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl Backend for TestBackend {
    async fn start_instance(&self, request: StartRequest) -> Result<InstanceId> {
        self.with(|inner| inner.create(request, None))
    }

    async fn raise_event(
        &self,
        instance: &InstanceId,
        name: &str,
        data: Option<String>,
    ) -> Result<()> {
        self.state(instance)?;
        self.with(|inner| {
            inner.deliver(
                instance,
                EventKind::EventRaised {
                    name: name.to_owned(),
                    input: data,
                },
            )
        });
        Ok(())
    }

    async fn terminate(&self, instance: &InstanceId, reason: Option<String>) -> Result<()> {
        self.with(|inner| {
            let instance = inner
                .instances
                .get_mut(instance)
                .ok_or_else(|| Error::NotFound(instance.to_string()))?;
            if !instance.state.status.is_terminal() {
                instance.state.status = OrchestrationStatus::Terminated;
                instance.state.output = reason;
                instance.inbox.clear();
            }
            Ok(())
        })
    }

    async fn suspend(&self, instance: &InstanceId, _reason: Option<String>) -> Result<()> {
        self.with(|inner| {
            let instance = inner
                .instances
                .get_mut(instance)
                .ok_or_else(|| Error::NotFound(instance.to_string()))?;
            if instance.state.status == OrchestrationStatus::Running {
                instance.state.status = OrchestrationStatus::Suspended;
            }
            Ok(())
        })
    }

    async fn resume(&self, instance: &InstanceId, _reason: Option<String>) -> Result<()> {
        self.with(|inner| {
            let instance = inner
                .instances
                .get_mut(instance)
                .ok_or_else(|| Error::NotFound(instance.to_string()))?;
            if instance.state.status == OrchestrationStatus::Suspended {
                instance.state.status = OrchestrationStatus::Running;
            }
            Ok(())
        })
    }

    async fn purge(&self, instance: &InstanceId) -> Result<bool> {
        self.with(|inner| match inner.instances.get(instance) {
            None => Ok(false),
            Some(i) if !i.state.status.is_terminal() => {
                Err(Error::Conflict(format!("{instance} is running")))
            }
            Some(_) => Ok(inner.instances.remove(instance).is_some()),
        })
    }

    async fn get_instance(&self, instance: &InstanceId) -> Result<Option<InstanceState>> {
        Ok(self.with(|inner| inner.instances.get(instance).map(|i| i.state.clone())))
    }

    async fn get_history(&self, instance: &InstanceId) -> Result<Vec<HistoryEvent>> {
        self.with(|inner| inner.instances.get(instance).map(|i| i.history.clone()))
            .ok_or_else(|| Error::NotFound(instance.to_string()))
    }

    async fn query_instances(&self, query: &InstanceQuery) -> Result<QueryPage> {
        let mut instances: Vec<InstanceState> = self.with(|inner| {
            inner
                .instances
                .values()
                .map(|i| i.state.clone())
                .filter(|s| query.statuses.is_empty() || query.statuses.contains(&s.status))
                .filter(|s| {
                    query
                        .instance_id_prefix
                        .as_deref()
                        .is_none_or(|p| s.instance_id.as_str().starts_with(p))
                })
                .collect()
        });
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let skip: usize = query
            .continuation
            .as_deref()
            .map_or(Ok(0), str::parse)
            .map_err(|_| Error::InvalidInput("bad continuation".into()))?;
        let page: Vec<InstanceState> = instances
            .iter()
            .skip(skip)
            .take(query.page_size)
            .cloned()
            .collect();
        let end = skip + page.len();
        Ok(QueryPage {
            continuation: (end < instances.len()).then(|| end.to_string()),
            instances: page,
        })
    }

    async fn wait_for_start(
        &self,
        instance: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceState> {
        self.wait_until(instance, timeout, |s| {
            s.status != OrchestrationStatus::Pending
        })
        .await
    }

    async fn wait_for_completion(
        &self,
        instance: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceState> {
        self.wait_until(instance, timeout, |s| s.status.is_terminal())
            .await
    }

    async fn next_orchestration_work_item(&self) -> Result<OrchestrationWorkItem> {
        loop {
            if let Some(item) = self.with(|inner| {
                inner.inject_failure()?;
                Ok::<_, Error>(inner.next_step())
            })? {
                return Ok(item);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn complete_orchestration_work_item(
        &self,
        token: &CompletionToken,
        result: OrchestrationStepResult,
    ) -> Result<()> {
        self.with(|inner| {
            let (id, new_events) = inner
                .steps
                .remove(&token.0)
                .ok_or_else(|| Error::StaleToken(token.0.clone()))?;
            inner.apply(&id, new_events, result);
            Ok(())
        })
    }

    async fn abandon_orchestration_work_item(&self, token: &CompletionToken) -> Result<()> {
        self.with(|inner| {
            let (id, mut new_events) = inner
                .steps
                .remove(&token.0)
                .ok_or_else(|| Error::StaleToken(token.0.clone()))?;
            if let Some(instance) = inner.instances.get_mut(&id) {
                instance.locked = false;
                new_events.remove(0);
                new_events.append(&mut instance.inbox);
                instance.inbox = new_events;
            }
            Ok(())
        })
    }

    async fn next_activity_work_item(&self) -> Result<ActivityWorkItem> {
        loop {
            if let Some(item) = self.with(|inner| {
                inner.inject_failure()?;
                let item = inner.activities.pop_front();
                if let Some(item) = &item {
                    inner
                        .running_activities
                        .insert(item.token.0.clone(), item.clone());
                }
                Ok::<_, Error>(item)
            })? {
                return Ok(item);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn complete_activity_work_item(
        &self,
        token: &CompletionToken,
        outcome: ActivityOutcome,
    ) -> Result<()> {
        self.with(|inner| {
            let item = inner
                .running_activities
                .remove(&token.0)
                .ok_or_else(|| Error::StaleToken(token.0.clone()))?;
            inner.completed_activities += 1;
            let kind = match outcome {
                ActivityOutcome::Completed(result) => EventKind::TaskCompleted {
                    task_scheduled_id: item.task_id,
                    result,
                },
                ActivityOutcome::Failed(failure) => EventKind::TaskFailed {
                    task_scheduled_id: item.task_id,
                    failure,
                },
            };
            inner.deliver(&item.instance_id, kind);
            Ok(())
        })
    }

    async fn abandon_activity_work_item(&self, token: &CompletionToken) -> Result<()> {
        self.with(|inner| {
            let item = inner
                .running_activities
                .remove(&token.0)
                .ok_or_else(|| Error::StaleToken(token.0.clone()))?;
            inner.activities.push_back(item);
            Ok(())
        })
    }
}

fn registry(calls: Arc<AtomicUsize>) -> Arc<Registry> {
    let registry = Registry::builder()
        .register_activity_typed("Double", |_, n: i64| async move {
            Ok::<_, ActivityError>(n * 2)
        })
        .register_activity_typed("Fail", |_, (): ()| async move {
            Err::<(), _>(ActivityError::new("Nope", "always fails"))
        })
        .register_activity("Panic", |_, _| async move { panic!("activity exploded") })
        .register_orchestration_typed("Child", |ctx, n: i64| async move {
            let d: i64 = ctx.call_activity("Double", &n).await?;
            Ok::<_, OrchestrationError>(d)
        })
        .register_orchestration_typed("Main", move |ctx, n: i64| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let fan: Vec<i64> =
                    join_all((0..n).map(|i| ctx.call_activity::<_, i64>("Double", &i)))
                        .await
                        .into_iter()
                        .collect::<std::result::Result<_, _>>()?;
                ctx.set_custom_status(&"fanned out")?;
                let child: i64 = ctx.call_sub_orchestration("Child", None, &100).await?;
                ctx.sleep(Duration::from_millis(20)).await;
                let bonus: i64 = ctx.wait_for_external_event("bonus").await?;
                Ok::<_, OrchestrationError>(fan.iter().sum::<i64>() + child + bonus)
            }
        })
        .register_orchestration_typed("Failing", |ctx, what: String| async move {
            ctx.call_activity::<_, ()>(&what, &()).await?;
            Ok::<_, OrchestrationError>(())
        })
        .register_orchestration_typed("Slow", |ctx, (): ()| async move {
            let _: u64 = ctx.call_activity("Sleep", &150_u64).await?;
            Ok::<_, OrchestrationError>(())
        })
        .register_activity_typed("Sleep", |_, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, ActivityError>(ms)
        })
        .register_orchestration_typed("Waits", |ctx, (): ()| async move {
            let n: i64 = ctx.wait_for_external_event("go").await?;
            Ok::<_, OrchestrationError>(n)
        })
        .build()
        .expect("valid registry");
    Arc::new(registry)
}

fn id(text: &str) -> InstanceId {
    InstanceId::new(text).expect("valid id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_orchestrations_end_to_end() {
    let backend = Arc::new(TestBackend::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = Worker::start(
        backend.clone(),
        registry(calls.clone()),
        WorkerOptions::default(),
    );
    let client = Client::new(backend.clone());

    let instance = client
        .start_with("Main", &50, StartOptions::with_instance_id("main-1"))
        .await
        .expect("started");
    assert_eq!(instance, id("main-1"));
    client
        .wait_for_start(&instance, WAIT)
        .await
        .expect("started running");
    // Raised early: buffered until the orchestration waits for it.
    client
        .raise_event(&instance, "bonus", &7)
        .await
        .expect("raised");
    let output: i64 = client
        .wait_for_output(&instance, WAIT)
        .await
        .expect("completed");
    assert_eq!(output, 2 * (49 * 50 / 2) + 200 + 7);
    let state = client.get(&instance).await.expect("get").expect("exists");
    assert_eq!(
        decode_custom_status::<String>(&state).expect("decodable"),
        Some("fanned out".to_owned())
    );
    // The executor cache kept the orchestration running between steps.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let child = client
        .get(&id("main-1:50"))
        .await
        .expect("get")
        .expect("the child exists");
    assert_eq!(child.status, OrchestrationStatus::Completed);

    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cache_every_step_replays() {
    let backend = Arc::new(TestBackend::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let options = WorkerOptions {
        executor_cache_capacity: 0,
        ..WorkerOptions::default()
    };
    let worker = Worker::start(backend.clone(), registry(calls.clone()), options);
    let client = Client::new(backend.clone());
    let instance = client.start("Main", &3).await.expect("started");
    client
        .raise_event(&instance, "bonus", &0)
        .await
        .expect("raised");
    let output: i64 = client
        .wait_for_output(&instance, WAIT)
        .await
        .expect("completed");
    assert_eq!(output, 6 + 200);
    assert!(calls.load(Ordering::SeqCst) >= 4, "one call per step");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_panicking_and_unknown_activities_fail_softly() {
    let backend = Arc::new(TestBackend::default());
    let worker = Worker::start(
        backend.clone(),
        registry(Arc::default()),
        WorkerOptions::default(),
    );
    let client = Client::new(backend.clone());
    for (what, error_type) in [
        ("Fail", "Nope"),
        ("Panic", "Panic"),
        ("Missing", "ActivityNotFound"),
    ] {
        let instance = client.start("Failing", what).await.expect("started");
        let state = client
            .wait_for_completion(&instance, WAIT)
            .await
            .expect("ended");
        assert_eq!(state.status, OrchestrationStatus::Failed);
        let failure = state.failure.clone().expect("failure");
        assert_eq!(failure.error_type, "ActivityFailed");
        assert_eq!(
            failure.inner.as_ref().map(|i| i.error_type.as_str()),
            Some(error_type)
        );
        match decode_output::<()>(&state) {
            Err(ClientError::Failed { failure: f, .. }) => assert_eq!(f, failure),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    // The worker is still healthy.
    let instance = client.start("Child", &1).await.expect("started");
    let output: i64 = client
        .wait_for_output(&instance, WAIT)
        .await
        .expect("completed");
    assert_eq!(output, 2);
    let unknown = client
        .start("NoSuchOrchestration", &())
        .await
        .expect("started");
    let state = client
        .wait_for_completion(&unknown, WAIT)
        .await
        .expect("ended");
    assert_eq!(
        state.failure.map(|f| f.error_type),
        Some("OrchestrationNotFound".to_owned())
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_are_retried_and_shutdown_stops() {
    let backend = Arc::new(TestBackend::default());
    backend.with(|inner| inner.failures_to_inject = 6);
    let options = WorkerOptions {
        error_backoff: Duration::from_millis(5),
        ..WorkerOptions::default()
    };
    let worker = Worker::start(backend.clone(), registry(Arc::default()), options);
    let client = Client::new(backend.clone());
    let instance = client.start("Child", &21).await.expect("started");
    let output: i64 = client
        .wait_for_output(&instance, WAIT)
        .await
        .expect("completed despite errors");
    assert_eq!(output, 42);
    assert_eq!(backend.with(|inner| inner.failures_to_inject), 0);

    // The backend shutting down stops both dispatchers.
    backend.with(|inner| inner.shut_down = true);
    let deadline = tokio::time::Instant::now() + WAIT;
    while worker.is_running() {
        assert!(tokio::time::Instant::now() < deadline, "the worker stops");
        tokio::time::sleep(POLL).await;
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_in_flight_activities() {
    let backend = Arc::new(TestBackend::default());
    let worker = Worker::start(
        backend.clone(),
        registry(Arc::default()),
        WorkerOptions::default(),
    );
    let client = Client::new(backend.clone());
    client.start("Slow", &()).await.expect("started");
    // Wait until the activity has been taken.
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend.with(|inner| inner.running_activities.is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the activity starts"
        );
        tokio::time::sleep(POLL).await;
    }
    worker.shutdown().await;
    // Shutdown returned only after the activity finished and was completed.
    assert_eq!(backend.with(|inner| inner.completed_activities), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_manages_instances() {
    let backend = Arc::new(TestBackend::default());
    let worker = Worker::start(
        backend.clone(),
        registry(Arc::default()),
        WorkerOptions::default(),
    );
    let client = Client::new(backend.clone());

    let waiting = client
        .start_with("Waits", &(), StartOptions::with_instance_id("q-waiting"))
        .await
        .expect("started");
    client
        .wait_for_start(&waiting, WAIT)
        .await
        .expect("running");
    // A second start on a running id is a conflict.
    let conflict = client
        .start_with("Waits", &(), StartOptions::with_instance_id("q-waiting"))
        .await;
    assert!(matches!(
        conflict,
        Err(ClientError::Backend(Error::Conflict(_)))
    ));
    // Not finished yet: a short wait times out, and purge is refused.
    assert!(matches!(
        client
            .wait_for_completion(&waiting, Duration::from_millis(20))
            .await,
        Err(ClientError::Backend(Error::Timeout(_)))
    ));
    assert!(client.purge(&waiting).await.is_err());

    client
        .suspend(&waiting, Some("pause"))
        .await
        .expect("suspended");
    assert_eq!(
        client.get(&waiting).await.expect("get").map(|s| s.status),
        Some(OrchestrationStatus::Suspended)
    );
    client.resume(&waiting, None).await.expect("resumed");
    client
        .raise_event(&waiting, "go", &5)
        .await
        .expect("raised");
    let five: i64 = client
        .wait_for_output(&waiting, WAIT)
        .await
        .expect("completed");
    assert_eq!(five, 5);

    let doomed = client
        .start_with("Waits", &(), StartOptions::with_instance_id("q-doomed"))
        .await
        .expect("started");
    client.wait_for_start(&doomed, WAIT).await.expect("running");
    client
        .terminate(&doomed, Some("enough"))
        .await
        .expect("terminated");
    let state = client
        .wait_for_completion(&doomed, WAIT)
        .await
        .expect("ended");
    assert_eq!(state.status, OrchestrationStatus::Terminated);
    assert!(matches!(
        decode_output::<i64>(&state),
        Err(ClientError::NotCompleted {
            status: OrchestrationStatus::Terminated,
            ..
        })
    ));

    let query = InstanceQuery {
        instance_id_prefix: Some("q-".into()),
        page_size: 1,
        ..InstanceQuery::default()
    };
    let first_page = client.query(&query).await.expect("queried");
    assert_eq!(first_page.instances.len(), 1);
    assert!(first_page.continuation.is_some());
    let all = client.query_all(&query).await.expect("queried");
    let ids: Vec<&str> = all.iter().map(|s| s.instance_id.as_str()).collect();
    assert_eq!(ids, ["q-doomed", "q-waiting"]);

    assert!(client.purge(&waiting).await.expect("purged"));
    assert!(!client.purge(&waiting).await.expect("already gone"));
    assert_eq!(client.get(&waiting).await.expect("get"), None);
    assert!(!client.history(&doomed).await.expect("history").is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_worker() {
    let backend = Arc::new(TestBackend::default());
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let registry = Registry::builder()
        .register_orchestration_typed("Flag", move |_ctx, (): ()| {
            flag.store(true, Ordering::SeqCst);
            async move { Ok::<_, OrchestrationError>(()) }
        })
        .build()
        .expect("valid");
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry),
        WorkerOptions::default(),
    );
    drop(worker);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let client = Client::new(backend.clone());
    let instance = client.start("Flag", &()).await.expect("started");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        client.get(&instance).await.expect("get").map(|s| s.status),
        Some(OrchestrationStatus::Pending)
    );
}
