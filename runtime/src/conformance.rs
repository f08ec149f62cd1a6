//! The [`Backend`] conformance suite: end-to-end scenarios that any backend
//! must pass, run through the real [`Worker`] and [`Client`].
//!
//! Every scenario is a `pub async fn` that takes a backend (fresh, or at
//! least not shared with a concurrently running scenario), starts its own
//! [`Worker`] with the orchestrations and activities it needs, drives
//! instances through a [`Client`], checks outputs, statuses and histories
//! precisely, and stops its worker before returning. A scenario returns a
//! [`Failure`] naming itself and what it expected versus what it found; it
//! never panics and never hangs: every backend call and every wait is
//! bounded by [`WAIT`].
//!
//! Run them one by one (one test per scenario, so each passes or fails on
//! its own):
//!
//! ```no_run
//! # use std::sync::Arc;
//! // In a test file, under #[tokio::test(flavor = "multi_thread")], with
//! // `backend` a fresh instance of the backend under test:
//! async fn activities_run_in_sequence(backend: Arc<dyn basalt_runtime::Backend>) {
//!     let result = basalt_runtime::conformance::activities_run_in_sequence(backend).await;
//!     if let Err(failure) = result {
//!         panic!("{failure}");
//!     }
//! }
//! ```
//!
//! or all at once with [`run_all`], which asks a factory for a fresh
//! [`ConformanceTarget`] (a backend plus how to shut it down) per scenario.
//!
//! Instance ids carry a unique per-run prefix, so scenarios do not collide
//! even if a backend is reused. Ids of instances that should live on
//! different partitions end in `!0`, `!1`, ... (Basalt pins such ids to a
//! partition; for other backends they are ordinary ids).
//!
//! Not covered (they need a backend that can be made to misbehave): the
//! worker's retry after backend errors while fetching work, and crashes
//! or restarts in the middle of a step.

#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, Either, join_all, select};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, InstanceQuery};
use crate::client::{Client, ClientError, StartOptions, decode_custom_status, decode_output};
use crate::error::{Error, ErrorKind};
use crate::history::{EventKind, HistoryEvent};
use crate::sdk::{ActivityError, OrchestrationError, Registry, RegistryBuilder, RetryPolicy};
use crate::types::{
    FailureDetails, InstanceId, InstanceState, OrchestrationStatus, ParentInstance,
};
use crate::worker::{Worker, WorkerHandle, WorkerOptions};

/// The longest any single backend call, wait or poll of the suite may take
/// before the scenario fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Pause between two reads when the suite polls for a state.
const POLL: Duration = Duration::from_millis(5);

/// A scenario that did not pass: which one, what it expected and what it
/// found instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The scenario's name (its function's name).
    pub scenario: &'static str,
    /// What the scenario expected.
    pub expected: String,
    /// What it found instead.
    pub found: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance scenario {}: expected {}, found {}",
            self.scenario, self.expected, self.found
        )
    }
}

impl std::error::Error for Failure {}

/// Shuts a backend down; see [`ConformanceTarget::with_shutdown`].
type ShutdownFn = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A backend under test and how to shut it down once a scenario is done.
pub struct ConformanceTarget {
    /// The backend.
    pub backend: Arc<dyn Backend>,
    shutdown: Option<ShutdownFn>,
}

impl fmt::Debug for ConformanceTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConformanceTarget")
            .field("has_shutdown", &self.shutdown.is_some())
            .finish_non_exhaustive()
    }
}

impl ConformanceTarget {
    /// A backend with nothing to shut down. [`run_all`] skips
    /// [`backend_shutdown_stops_the_worker`] for it.
    pub fn new(backend: Arc<dyn Backend>) -> ConformanceTarget {
        ConformanceTarget {
            backend,
            shutdown: None,
        }
    }

    /// A backend and the function that shuts it down. After the shutdown,
    /// the backend's `next_*_work_item` calls must fail with
    /// [`Error::ShutDown`].
    pub fn with_shutdown<F, Fut>(backend: Arc<dyn Backend>, shutdown: F) -> ConformanceTarget
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        ConformanceTarget {
            backend,
            shutdown: Some(Box::new(move || Box::pin(shutdown()))),
        }
    }

    /// Whether the target has a shutdown function.
    pub fn has_shutdown(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Shuts the backend down (a no-op without a shutdown function).
    pub async fn shutdown(self) {
        if let Some(shutdown) = self.shutdown {
            shutdown().await;
        }
    }
}

/// How one scenario of [`run_all`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It was not run, for this reason.
    Skipped(String),
}

/// One scenario's line in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, shutdown of its backend included.
    pub elapsed: Duration,
}

/// What [`run_all`] ran: every scenario, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One line per scenario.
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    /// The scenarios that passed.
    pub fn passed(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.outcome == Outcome::Passed)
            .count()
    }
}

type BackendScenarioFn = fn(Arc<dyn Backend>) -> BoxFuture<'static, Result<(), Failure>>;
type TargetScenarioFn = fn(ConformanceTarget) -> BoxFuture<'static, Result<(), Failure>>;

#[derive(Clone, Copy)]
enum Runner {
    /// Takes the backend; the target is shut down afterwards.
    Backend(BackendScenarioFn),
    /// Takes the whole target (it shuts the backend down itself).
    Target(TargetScenarioFn),
}

/// One scenario of the suite, as [`scenarios`] lists it.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// The scenario's name (its function's name).
    pub name: &'static str,
    runner: Runner,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Whether the scenario needs a target with a shutdown function.
    pub fn needs_shutdown(&self) -> bool {
        matches!(self.runner, Runner::Target(_))
    }

    /// Runs the scenario on `target` and shuts the target down afterwards
    /// (bounded by [`WAIT`]).
    pub async fn run(&self, target: ConformanceTarget) -> Result<(), Failure> {
        match self.runner {
            Runner::Target(scenario) => scenario(target).await,
            Runner::Backend(scenario) => {
                let result = scenario(target.backend.clone()).await;
                let stopped = tokio::time::timeout(WAIT, target.shutdown()).await;
                result?;
                stopped.map_err(|_| Failure {
                    scenario: self.name,
                    expected: format!("the backend to shut down within {WAIT:?}"),
                    found: "no end of its shutdown".into(),
                })
            }
        }
    }
}

macro_rules! scenario_list {
    (backend: [$($backend:ident),* $(,)?], target: [$($target:ident),* $(,)?] $(,)?) => {
        vec![
            $(Scenario {
                name: stringify!($backend),
                runner: Runner::Backend(|backend| Box::pin($backend(backend))),
            },)*
            $(Scenario {
                name: stringify!($target),
                runner: Runner::Target(|target| Box::pin($target(target))),
            },)*
        ]
    };
}

/// Calls `$callback!(backend: [...], target: [...])` with the names of
/// every conformance scenario, in suite order: the one list that
/// [`conformance::scenarios`](crate::conformance::scenarios) and a backend's per-scenario tests (e.g. the engine's
/// `tests/conformance.rs`) are both generated from.
#[macro_export]
macro_rules! with_conformance_scenarios {
    ($callback:ident) => {
        $callback! {
            backend: [
                activities_run_in_sequence,
                fan_out_fan_in_of_1000_activities_sums_every_result,
                durable_timers_delay_the_orchestration,
                external_events_are_delivered_before_and_after_the_wait,
                sub_orchestrations_return_outputs_and_failures_to_the_parent,
                continue_as_new_restarts_with_a_short_history,
                terminate_ends_a_waiting_instance_with_the_reason,
                suspended_instances_process_no_events_until_resumed,
                purge_deletes_only_finished_instances,
                queries_filter_by_status_prefix_and_time_and_page,
                activity_retries_follow_the_retry_policy,
                activity_failures_and_panics_surface_with_their_message,
                rewind_runs_a_failed_instance_again_from_its_failure,
                unknown_activity_fails_with_activity_not_found,
                unknown_orchestration_fails_with_orchestration_not_found,
                non_determinism_fails_the_instance,
                custom_status_is_visible_to_clients,
                explicit_id_conflicts_while_running_and_replaces_when_finished,
                wait_for_start_returns_once_a_worker_ran_the_instance,
                scheduled_start_waits_until_its_time,
                send_event_delivers_between_instances,
                many_instances_with_random_ids_all_complete,
                mixed_orchestration_runs_end_to_end_on_one_cached_executor,
                replay_without_executor_cache_gives_the_same_result,
                worker_shutdown_waits_for_in_flight_activities,
                dropped_worker_handle_stops_taking_work,
            ],
            target: [backend_shutdown_stops_the_worker],
        }
    };
}

/// Every scenario of the suite, in the order [`run_all`] runs them.
pub fn scenarios() -> Vec<Scenario> {
    crate::with_conformance_scenarios!(scenario_list)
}

/// Runs every scenario of [`scenarios`] in order, each on a fresh target
/// from `make_target`, and shuts each target down afterwards. Stops at the
/// first failure (a factory error is a failure of the scenario it was
/// for); run the scenarios one by one to see every result. A scenario that
/// needs a shutdown function is skipped for a target without one.
pub async fn run_all<F, Fut, E>(make_target: F) -> Result<Report, Failure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<ConformanceTarget, E>>,
    E: fmt::Display,
{
    let mut report = Report::default();
    for scenario in scenarios() {
        let began = Instant::now();
        let target = match tokio::time::timeout(WAIT, make_target()).await {
            Ok(Ok(target)) => target,
            Ok(Err(error)) => {
                return Err(Failure {
                    scenario: scenario.name,
                    expected: "a fresh backend from the factory".into(),
                    found: format!("error: {error}"),
                });
            }
            Err(_) => {
                return Err(Failure {
                    scenario: scenario.name,
                    expected: format!("a fresh backend from the factory within {WAIT:?}"),
                    found: "no backend".into(),
                });
            }
        };
        let outcome = if scenario.needs_shutdown() && !target.has_shutdown() {
            Outcome::Skipped("the target has no shutdown function".into())
        } else {
            scenario.run(target).await?;
            Outcome::Passed
        };
        report.scenarios.push(ScenarioReport {
            name: scenario.name,
            outcome,
            elapsed: began.elapsed(),
        });
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// The harness every scenario uses.
// ---------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A number no other call in this process returns, and unlikely to repeat
/// across processes (time-seeded).
fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix64(nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(40))
}

/// SplitMix64: a small, good-enough mixer for ids.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How many events of a history match `pred`.
fn count(history: &[HistoryEvent], pred: impl Fn(&EventKind) -> bool) -> usize {
    history.iter().filter(|e| pred(&e.kind)).count()
}

/// An event as a short text: its kind, the action id it confirms or
/// answers, and a name where it has one.
fn describe_event(event: &HistoryEvent) -> String {
    let id = event.event_id;
    match &event.kind {
        EventKind::ExecutionStarted { .. } => "ExecutionStarted".into(),
        EventKind::ExecutionCompleted { status, .. } => format!("ExecutionCompleted({status})"),
        EventKind::ExecutionTerminated { .. } => "ExecutionTerminated".into(),
        EventKind::ExecutionSuspended { .. } => "ExecutionSuspended".into(),
        EventKind::ExecutionResumed { .. } => "ExecutionResumed".into(),
        EventKind::ExecutionRewound { .. } => "ExecutionRewound".into(),
        EventKind::TaskScheduled { name, .. } => format!("TaskScheduled#{id} {name}"),
        EventKind::TaskCompleted {
            task_scheduled_id, ..
        } => format!("TaskCompleted#{task_scheduled_id}"),
        EventKind::TaskFailed {
            task_scheduled_id, ..
        } => format!("TaskFailed#{task_scheduled_id}"),
        EventKind::SubOrchestrationInstanceCreated { name, .. } => {
            format!("SubOrchestrationInstanceCreated#{id} {name}")
        }
        EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id, ..
        } => format!("SubOrchestrationInstanceCompleted#{task_scheduled_id}"),
        EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id, ..
        } => format!("SubOrchestrationInstanceFailed#{task_scheduled_id}"),
        EventKind::TimerCreated { .. } => format!("TimerCreated#{id}"),
        EventKind::TimerFired { timer_id, .. } => format!("TimerFired#{timer_id}"),
        EventKind::OrchestratorStarted => "OrchestratorStarted".into(),
        EventKind::OrchestratorCompleted => "OrchestratorCompleted".into(),
        EventKind::EventSent { name, .. } => format!("EventSent#{id} {name}"),
        EventKind::EventRaised { name, .. } => format!("EventRaised {name}"),
        EventKind::EntityOperationSignaled { operation, .. } => {
            format!("EntityOperationSignaled#{id} {operation}")
        }
        EventKind::EntityOperationCalled { operation, .. } => {
            format!("EntityOperationCalled#{id} {operation}")
        }
        EventKind::EntityOperationCompleted { request_id, .. } => {
            format!("EntityOperationCompleted#{request_id}")
        }
        EventKind::EntityOperationFailed { request_id, .. } => {
            format!("EntityOperationFailed#{request_id}")
        }
        EventKind::EntityLockRequested { .. } => format!("EntityLockRequested#{id}"),
        EventKind::EntityLockGranted { request_id } => format!("EntityLockGranted#{request_id}"),
        EventKind::EntityUnlockSent { .. } => format!("EntityUnlockSent#{id}"),
    }
}

fn is_scheduled(kind: &EventKind) -> bool {
    matches!(kind, EventKind::TaskScheduled { .. })
}

fn is_started(kind: &EventKind) -> bool {
    matches!(kind, EventKind::ExecutionStarted { .. })
}

/// One scenario's context: its name (for failures), backend, client and
/// instance id prefix.
struct Run {
    scenario: &'static str,
    backend: Arc<dyn Backend>,
    client: Client,
    prefix: String,
}

impl Run {
    fn new(scenario: &'static str, backend: Arc<dyn Backend>) -> Run {
        let tag: String = scenario
            .split('_')
            .filter_map(|word| word.chars().next())
            .collect();
        Run {
            scenario,
            client: Client::new(backend.clone()),
            backend,
            prefix: format!("{tag}-{:012x}-", nonce() >> 16),
        }
    }

    /// An instance id unique to this run.
    fn id(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail(&self, expected: impl fmt::Display, found: impl fmt::Display) -> Failure {
        Failure {
            scenario: self.scenario,
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    fn check(
        &self,
        ok: bool,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) -> Result<(), Failure> {
        if ok {
            Ok(())
        } else {
            Err(self.fail(expected, found))
        }
    }

    fn check_eq<T: PartialEq + fmt::Debug + ?Sized>(
        &self,
        what: &str,
        expected: &T,
        found: &T,
    ) -> Result<(), Failure> {
        self.check(
            expected == found,
            format_args!("{what} = {expected:?}"),
            format_args!("{found:?}"),
        )
    }

    /// Awaits a call, bounded by [`WAIT`]; an error is a failure.
    async fn call<T, E: fmt::Display>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(WAIT, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                Err(self.fail(format!("{what} to succeed"), format!("error: {error}")))
            }
            Err(_) => Err(self.fail(format!("{what} to answer within {WAIT:?}"), "no answer")),
        }
    }

    /// Awaits anything, bounded by [`WAIT`].
    async fn bounded<T>(&self, what: &str, future: impl Future<Output = T>) -> Result<T, Failure> {
        tokio::time::timeout(WAIT, future)
            .await
            .map_err(|_| self.fail(format!("{what} to answer within {WAIT:?}"), "no answer"))
    }

    /// Awaits a call that must be refused with a backend error of `kind`.
    async fn refused<T: fmt::Debug>(
        &self,
        what: &str,
        kind: ErrorKind,
        future: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<Error, Failure> {
        let expected = format!("{what} to be refused with a {kind:?} error");
        match tokio::time::timeout(WAIT, future).await {
            Ok(Err(ClientError::Backend(error))) if error.kind() == kind => Ok(error),
            Ok(Err(other)) => Err(self.fail(expected, format!("error: {other:?}"))),
            Ok(Ok(value)) => Err(self.fail(expected, format!("success: {value:?}"))),
            Err(_) => Err(self.fail(expected, "no answer")),
        }
    }

    fn worker(
        &self,
        registry: RegistryBuilder,
        options: WorkerOptions,
    ) -> Result<WorkerHandle, Failure> {
        let registry = registry
            .build()
            .map_err(|error| self.fail("a valid registry", error))?;
        Ok(Worker::start(
            self.backend.clone(),
            Arc::new(registry),
            options,
        ))
    }

    async fn stop(&self, worker: WorkerHandle) -> Result<(), Failure> {
        tokio::time::timeout(WAIT, worker.shutdown())
            .await
            .map_err(|_| {
                self.fail(
                    format!("the worker to shut down within {WAIT:?}"),
                    "no end of its shutdown",
                )
            })
    }

    /// Runs `body`, then shuts `worker` down whatever the body's result.
    async fn with_worker<T>(
        &self,
        worker: WorkerHandle,
        body: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let result = body.await;
        let stopped = self.stop(worker).await;
        let value = result?;
        stopped?;
        Ok(value)
    }

    /// Starts `name`; with `id`, checks that the backend used it.
    async fn start<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
        id: Option<&str>,
    ) -> Result<InstanceId, Failure> {
        let options = StartOptions {
            instance_id: id.map(str::to_owned),
            ..StartOptions::default()
        };
        self.start_with(name, input, options).await
    }

    async fn start_with<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
        options: StartOptions,
    ) -> Result<InstanceId, Failure> {
        let requested = options.instance_id.clone();
        let what = format!("starting {name:?}");
        let id = self
            .call(&what, self.client.start_with(name, input, options))
            .await?;
        if let Some(requested) = requested {
            self.check_eq("the started instance id", requested.as_str(), id.as_str())?;
        }
        Ok(id)
    }

    /// The instance's state; it must exist.
    async fn state(&self, id: &InstanceId) -> Result<InstanceState, Failure> {
        self.call(&format!("get {id}"), self.client.get(id))
            .await?
            .ok_or_else(|| self.fail(format!("instance {id} to exist"), "get returned None"))
    }

    /// The ids of every instance matching `query`, over all pages.
    async fn query_ids(&self, query: InstanceQuery) -> Result<Vec<String>, Failure> {
        let states = self.call("query", self.client.query_all(&query)).await?;
        Ok(ids_of(&states))
    }

    async fn history(&self, id: &InstanceId) -> Result<Vec<HistoryEvent>, Failure> {
        self.call(&format!("the history of {id}"), self.client.history(id))
            .await
    }

    /// Waits until the instance has finished.
    async fn finished(&self, id: &InstanceId) -> Result<InstanceState, Failure> {
        self.call(
            &format!("waiting for {id} to finish"),
            self.client.wait_for_completion(id, WAIT),
        )
        .await
    }

    /// Waits until the instance has finished and decodes its output; it
    /// must have completed.
    async fn output<T: DeserializeOwned>(&self, id: &InstanceId) -> Result<T, Failure> {
        let state = self.finished(id).await?;
        decode_output(&state).map_err(|error| {
            self.fail(
                format!("{id} to complete with an output"),
                format!(
                    "{error} (status {}, output {:?})",
                    state.status, state.output
                ),
            )
        })
    }

    /// Waits until the instance has finished; it must have failed.
    async fn failure(&self, id: &InstanceId) -> Result<FailureDetails, Failure> {
        let state = self.finished(id).await?;
        match (state.status, state.failure) {
            (OrchestrationStatus::Failed, Some(failure)) => Ok(failure),
            (status, failure) => Err(self.fail(
                format!("{id} to fail with failure details"),
                format!(
                    "status {status}, failure {failure:?}, output {:?}",
                    state.output
                ),
            )),
        }
    }

    /// Reads the instance until `done` holds (bounded by [`WAIT`]).
    async fn poll_state(
        &self,
        id: &InstanceId,
        what: &str,
        done: impl Fn(&InstanceState) -> bool,
    ) -> Result<InstanceState, Failure> {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.state(id).await?;
            if done(&state) {
                return Ok(state);
            }
            if Instant::now() >= deadline {
                return Err(self.fail(
                    format!("{id}: {what} within {WAIT:?}"),
                    format!(
                        "status {}, custom status {:?}",
                        state.status, state.custom_status
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `flag` is set (bounded by [`WAIT`]).
    async fn poll_flag(&self, what: &str, flag: &AtomicBool) -> Result<(), Failure> {
        let deadline = Instant::now() + WAIT;
        while !flag.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return Err(self.fail(format!("{what} within {WAIT:?}"), "it did not happen"));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

fn ids_of(states: &[InstanceState]) -> Vec<String> {
    states.iter().map(|s| s.instance_id.to_string()).collect()
}

/// A custom status as JSON text, the way the SDK writes it.
fn json<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

// ---------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------

/// Ten activities called one after another, each fed the previous output:
/// the output lists every step in order, and the history is exactly eleven
/// steps, each `OrchestratorStarted`, its new events, the events confirming
/// its actions (`TaskScheduled` with `event_id` = action id) and
/// `OrchestratorCompleted`, then `ExecutionCompleted`.
pub async fn activities_run_in_sequence(backend: Arc<dyn Backend>) -> Result<(), Failure> {
    let run = Run::new("activities_run_in_sequence", backend);
    let registry = Registry::builder()
        .register_activity_typed(
            "Append",
            |_, (mut steps, step): (Vec<u32>, u32)| async move {
                steps.push(step);
                Ok::<_, ActivityError>(steps)
            },
        )
        .register_orchestration_typed("Sequence", |ctx, count: u32| async move {
            let mut steps: Vec<u32> = Vec::new();
            for step in 0..count {
                steps = ctx.call_activity("Append", &(steps, step * 10)).await?;
            }
            Ok::<_, OrchestrationError>(steps)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("Sequence", &10_u32, None).await?;
        let steps: Vec<u32> = run.output(&id).await?;
        let expected: Vec<u32> = (0..10).map(|step| step * 10).collect();
        run.check_eq("the output", &expected, &steps)?;
        // History only grows, step by step: each step's new events, then
        // the events confirming its actions, then OrchestratorCompleted.
        let history = run.history(&id).await?;
        let found: Vec<String> = history.iter().map(describe_event).collect();
        let mut expected = vec![
            "OrchestratorStarted".to_owned(),
            "ExecutionStarted".to_owned(),
            "TaskScheduled#0 Append".to_owned(),
            "OrchestratorCompleted".to_owned(),
        ];
        for step in 1..=10 {
            expected.push("OrchestratorStarted".to_owned());
            expected.push(format!("TaskCompleted#{}", step - 1));
            if step < 10 {
                expected.push(format!("TaskScheduled#{step} Append"));
            }
            expected.push("OrchestratorCompleted".to_owned());
        }
        expected.push("ExecutionCompleted(Completed)".to_owned());
        run.check_eq("the history", &expected, &found)?;
        Ok(())
    })
    .await
}

/// One orchestration schedules 1,000 activities at once and sums their
/// results: the sum is exact, each activity ran exactly once, and the
/// history holds 1,000 scheduled and 1,000 completed tasks.
pub async fn fan_out_fan_in_of_1000_activities_sums_every_result(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    const COUNT: u64 = 1000;
    let run = Run::new(
        "fan_out_fan_in_of_1000_activities_sums_every_result",
        backend,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let registry = Registry::builder()
        .register_activity_typed("Square", move |_, n: u64| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ActivityError>(n * n) }
        })
        .register_orchestration_typed("FanOut", |ctx, count: u64| async move {
            let squares = join_all((0..count).map(|n| ctx.call_activity::<_, u64>("Square", &n)))
                .await
                .into_iter()
                .collect::<Result<Vec<u64>, _>>()?;
            Ok::<_, OrchestrationError>(squares.iter().sum::<u64>())
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("FanOut", &COUNT, None).await?;
        let sum: u64 = run.output(&id).await?;
        let expected = (COUNT - 1) * COUNT * (2 * COUNT - 1) / 6;
        run.check_eq("the sum of squares", &expected, &sum)?;
        run.check_eq(
            "activity invocations",
            &(COUNT as usize),
            &calls.load(Ordering::SeqCst),
        )?;
        let history = run.history(&id).await?;
        run.check_eq(
            "TaskScheduled events",
            &(COUNT as usize),
            &count(&history, is_scheduled),
        )?;
        run.check_eq(
            "TaskCompleted events",
            &(COUNT as usize),
            &count(&history, |k| matches!(k, EventKind::TaskCompleted { .. })),
        )?;
        Ok(())
    })
    .await
}

#[derive(Debug, Serialize, Deserialize)]
struct TimerOutput {
    fire_at_ms: u64,
    after_timer_ms: u64,
    timed_out: bool,
    after_race_ms: u64,
}

/// A 150 ms durable timer, then a 50 ms timer racing an event that never
/// comes. The orchestration really waits: its time after the timer (from
/// `current_time`) is at or after the fire time, the instance finishes at
/// or after it, at least 200 ms pass on the wall clock, the race goes to
/// the timer, and the history records the timer with its fire time.
pub async fn durable_timers_delay_the_orchestration(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    const DELAY_MS: u64 = 150;
    const RACE_MS: u64 = 50;
    let run = Run::new("durable_timers_delay_the_orchestration", backend);
    let registry = Registry::builder().register_orchestration_typed(
        "Timers",
        |ctx, delay_ms: u64| async move {
            let fire_at_ms = ctx.current_time() + delay_ms;
            ctx.create_timer(fire_at_ms).await;
            let after_timer_ms = ctx.current_time();
            let timeout = ctx.sleep(Duration::from_millis(RACE_MS));
            let never = ctx.wait_for_external_event::<String>("Never");
            let timed_out = matches!(select(timeout, never).await, Either::Left(_));
            Ok::<_, OrchestrationError>(TimerOutput {
                fire_at_ms,
                after_timer_ms,
                timed_out,
                after_race_ms: ctx.current_time(),
            })
        },
    );
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let began = Instant::now();
        let id = run.start("Timers", &DELAY_MS, None).await?;
        let output: TimerOutput = run.output(&id).await?;
        let elapsed = began.elapsed();
        run.check(
            output.after_timer_ms >= output.fire_at_ms,
            format_args!(
                "the time after the timer to be at or after its fire time {}",
                output.fire_at_ms
            ),
            output.after_timer_ms,
        )?;
        run.check(
            output.timed_out,
            "the 50 ms timer to win the race against an event never raised",
            "the event won",
        )?;
        run.check(
            output.after_race_ms >= output.after_timer_ms + RACE_MS,
            format_args!(
                "the time after the race to be at least {} + {RACE_MS}",
                output.after_timer_ms
            ),
            output.after_race_ms,
        )?;
        // Timestamps are whole milliseconds: allow for their rounding.
        let least = Duration::from_millis(DELAY_MS + RACE_MS - 2);
        run.check(
            elapsed >= least,
            format_args!("at least {least:?} on the wall clock"),
            format_args!("{elapsed:?}"),
        )?;
        let state = run.state(&id).await?;
        run.check(
            state.last_updated_at_ms >= output.fire_at_ms + RACE_MS,
            format_args!(
                "the instance to finish at or after {}",
                output.fire_at_ms + RACE_MS
            ),
            format_args!("last updated at {}", state.last_updated_at_ms),
        )?;
        let history = run.history(&id).await?;
        let created: Vec<(i32, u64)> = history
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::TimerCreated { fire_at_ms } => Some((e.event_id, fire_at_ms)),
                _ => None,
            })
            .collect();
        run.check_eq(
            "the first TimerCreated (event id, fire time)",
            &Some((0, output.fire_at_ms)),
            &created.first().copied(),
        )?;
        run.check_eq("TimerCreated events", &2, &created.len())?;
        let fired: Vec<(i32, u64)> = history
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::TimerFired {
                    timer_id,
                    fire_at_ms,
                } => Some((timer_id, fire_at_ms)),
                _ => None,
            })
            .collect();
        run.check_eq("the TimerFired events", &created, &fired)?;
        Ok(())
    })
    .await
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct EventsOutput {
    go: String,
    early: String,
    items: Vec<u32>,
    late: String,
}

/// Events raised before the orchestration waits for them are buffered
/// (and matched case-insensitively, several of one name in arrival order);
/// an event raised while it waits is delivered. Raising on an unknown
/// instance is `NotFound`.
pub async fn external_events_are_delivered_before_and_after_the_wait(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "external_events_are_delivered_before_and_after_the_wait",
        backend,
    );
    let registry =
        Registry::builder().register_orchestration_typed("Events", |ctx, (): ()| async move {
            let go: String = ctx.wait_for_external_event("Go").await?;
            let early: String = ctx.wait_for_external_event("early").await?;
            let mut items = Vec::new();
            for _ in 0..3 {
                items.push(ctx.wait_for_external_event::<u32>("Item").await?);
            }
            ctx.set_custom_status(&"waiting for Late")?;
            let late: String = ctx.wait_for_external_event("Late").await?;
            Ok::<_, OrchestrationError>(EventsOutput {
                go,
                early,
                items,
                late,
            })
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("Events", &(), None).await?;
        // Raised while the orchestration waits only for "Go".
        run.call("raising Early", run.client.raise_event(&id, "Early", "e"))
            .await?;
        for item in 1..=3_u32 {
            run.call("raising Item", run.client.raise_event(&id, "Item", &item))
                .await?;
        }
        run.call("raising Go", run.client.raise_event(&id, "Go", "g"))
            .await?;
        let waiting = json("waiting for Late");
        let state = run
            .poll_state(&id, "custom status \"waiting for Late\"", |s| {
                s.custom_status == waiting || s.status.is_terminal()
            })
            .await?;
        run.check_eq(
            "the status while waiting for Late",
            &OrchestrationStatus::Running,
            &state.status,
        )?;
        run.call("raising Late", run.client.raise_event(&id, "Late", "l"))
            .await?;
        let output: EventsOutput = run.output(&id).await?;
        let expected = EventsOutput {
            go: "g".into(),
            early: "e".into(),
            items: vec![1, 2, 3],
            late: "l".into(),
        };
        run.check_eq("the output", &expected, &output)?;

        let unknown = InstanceId::new(run.id("nobody")).map_err(|e| run.fail("a valid id", e))?;
        run.refused(
            "raising an event on an unknown instance",
            ErrorKind::NotFound,
            run.client.raise_event(&unknown, "Go", "g"),
        )
        .await?;
        Ok(())
    })
    .await
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ParentOutput {
    default_id_child: i64,
    explicit_id_child: i64,
    caught: String,
}

/// A parent calls a child under a generated id and one under an explicit
/// id (both return their outputs to it), then a failing child whose
/// failure it catches; the children record their parent. A parent that
/// lets a child's failure escape fails with `SubOrchestrationFailed` and
/// the child's failure as `inner`.
pub async fn sub_orchestrations_return_outputs_and_failures_to_the_parent(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "sub_orchestrations_return_outputs_and_failures_to_the_parent",
        backend,
    );
    let registry = Registry::builder()
        .register_activity_typed("Double", |_, n: i64| async move {
            Ok::<_, ActivityError>(n * 2)
        })
        .register_orchestration_typed("Child", |ctx, n: i64| async move {
            let doubled: i64 = ctx.call_activity("Double", &n).await?;
            Ok::<_, OrchestrationError>(doubled)
        })
        .register_orchestration_typed("FailingChild", |_ctx, (): ()| async move {
            Err::<(), _>(OrchestrationError::new("ChildError", "the child gave up"))
        })
        .register_orchestration_typed("Parent", |ctx, (n, child_id): (i64, String)| async move {
            let default_id_child: i64 = ctx.call_sub_orchestration("Child", None, &n).await?;
            let explicit_id_child: i64 = ctx
                .call_sub_orchestration("Child", Some(&child_id), &(n + 1))
                .await?;
            let caught = match ctx
                .call_sub_orchestration::<_, ()>("FailingChild", None, &())
                .await
            {
                Err(OrchestrationError::SubOrchestrationFailed { details, .. }) => {
                    format!("{}: {}", details.error_type, details.message)
                }
                Err(other) => format!("unexpected error: {other}"),
                Ok(()) => "no error".to_owned(),
            };
            Ok::<_, OrchestrationError>(ParentOutput {
                default_id_child,
                explicit_id_child,
                caught,
            })
        })
        .register_orchestration_typed("UncaughtParent", |ctx, (): ()| async move {
            ctx.call_sub_orchestration::<_, ()>("FailingChild", None, &())
                .await?;
            Ok::<_, OrchestrationError>(())
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let parent_id = run.id("parent!0");
        let explicit_child = run.id("explicit-child!1");
        let parent = run
            .start("Parent", &(20_i64, &explicit_child), Some(&parent_id))
            .await?;
        let output: ParentOutput = run.output(&parent).await?;
        let expected = ParentOutput {
            default_id_child: 40,
            explicit_id_child: 42,
            caught: "ChildError: the child gave up".into(),
        };
        run.check_eq("the parent's output", &expected, &output)?;

        for (child, action_id, output) in [
            (format!("{parent_id}:0"), 0, "40"),
            (explicit_child, 1, "42"),
        ] {
            let child = InstanceId::new(child).map_err(|e| run.fail("a valid id", e))?;
            let state = run.state(&child).await?;
            run.check_eq(
                "the child's status",
                &OrchestrationStatus::Completed,
                &state.status,
            )?;
            run.check_eq(
                "the child's output",
                &Some(output),
                &state.output.as_deref(),
            )?;
            let expected_parent = ParentInstance {
                name: "Parent".into(),
                instance_id: parent.clone(),
                task_scheduled_id: action_id,
                // The generation number is the backend's own.
                execution: state.parent.as_ref().map_or(0, |p| p.execution),
            };
            run.check_eq("the child's parent", &Some(expected_parent), &state.parent)?;
        }
        let failing = InstanceId::new(format!("{parent_id}:2")).map_err(|e| run.fail("id", e))?;
        let failure = run.failure(&failing).await?;
        run.check_eq(
            "the failing child's error type",
            "ChildError",
            &failure.error_type,
        )?;

        let uncaught = run.start("UncaughtParent", &(), None).await?;
        let failure = run.failure(&uncaught).await?;
        run.check_eq(
            "the uncaught parent's error type",
            "SubOrchestrationFailed",
            &failure.error_type,
        )?;
        run.check_eq(
            "the uncaught parent's inner failure",
            &Some(("ChildError", "the child gave up")),
            &failure
                .inner
                .as_deref()
                .map(|inner| (inner.error_type.as_str(), inner.message.as_str())),
        )?;
        Ok(())
    })
    .await
}

/// A counter continues as new after each increment until it reaches 10:
/// the output is 10, the input is the last generation's, and the history
/// holds only the last generation (one `ExecutionStarted`, one activity).
/// Events not consumed by one generation carry over to the next, in order.
pub async fn continue_as_new_restarts_with_a_short_history(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    const TARGET: u32 = 10;
    let run = Run::new("continue_as_new_restarts_with_a_short_history", backend);
    let registry = Registry::builder()
        .register_activity_typed("Increment", |_, n: u32| async move {
            Ok::<_, ActivityError>(n + 1)
        })
        .register_orchestration_typed("Counter", |ctx, n: u32| async move {
            let next: u32 = ctx.call_activity("Increment", &n).await?;
            if next < TARGET {
                ctx.continue_as_new(&next)?;
            }
            Ok::<_, OrchestrationError>(next)
        })
        .register_orchestration_typed("Collector", |ctx, mut items: Vec<u32>| async move {
            let item: u32 = ctx.wait_for_external_event("Item").await?;
            items.push(item);
            if items.len() < 3 {
                ctx.continue_as_new(&items)?;
            }
            Ok::<_, OrchestrationError>(items)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("Counter", &0_u32, None).await?;
        let output: u32 = run.output(&id).await?;
        run.check_eq("the counter's output", &TARGET, &output)?;
        let state = run.state(&id).await?;
        let last_input = (TARGET - 1).to_string();
        run.check_eq(
            "the input (the last generation's)",
            &Some(last_input.as_str()),
            &state.input.as_deref(),
        )?;
        let history = run.history(&id).await?;
        run.check_eq(
            "ExecutionStarted events in the final history",
            &1,
            &count(&history, is_started),
        )?;
        run.check_eq(
            "TaskScheduled events in the final history",
            &1,
            &count(&history, is_scheduled),
        )?;
        run.check(
            history.len() <= 12,
            "the final generation's history to be short (at most 12 events)",
            format_args!("{} events: {history:?}", history.len()),
        )?;
        let started_input = history.iter().find_map(|e| match &e.kind {
            EventKind::ExecutionStarted { input, .. } => input.clone(),
            _ => None,
        });
        run.check_eq(
            "the final ExecutionStarted input",
            &Some(last_input),
            &started_input,
        )?;

        let collector = run.start("Collector", &Vec::<u32>::new(), None).await?;
        for item in 1..=3_u32 {
            run.call(
                "raising Item",
                run.client.raise_event(&collector, "Item", &item),
            )
            .await?;
        }
        let items: Vec<u32> = run.output(&collector).await?;
        run.check_eq("the collected items", &vec![1, 2, 3], &items)?;
        Ok(())
    })
    .await
}

/// Terminating an instance that waits for an event ends it as Terminated
/// with the reason as its output (JSON) and a non-empty history;
/// terminating a finished instance changes nothing.
pub async fn terminate_ends_a_waiting_instance_with_the_reason(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new("terminate_ends_a_waiting_instance_with_the_reason", backend);
    let registry = Registry::builder()
        .register_orchestration_typed("WaitForever", |ctx, (): ()| async move {
            ctx.set_custom_status(&"waiting")?;
            let value: String = ctx.wait_for_external_event("Never").await?;
            Ok::<_, OrchestrationError>(value)
        })
        .register_orchestration_typed("Echo", |_ctx, text: String| async move {
            Ok::<_, OrchestrationError>(text)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("WaitForever", &(), None).await?;
        let waiting = json("waiting");
        run.poll_state(&id, "custom status \"waiting\"", |s| {
            s.custom_status == waiting
        })
        .await?;
        run.call("terminate", run.client.terminate(&id, Some("enough")))
            .await?;
        let state = run.finished(&id).await?;
        run.check_eq(
            "the status",
            &OrchestrationStatus::Terminated,
            &state.status,
        )?;
        run.check_eq(
            "the output (the reason)",
            &Some("\"enough\""),
            &state.output.as_deref(),
        )?;
        run.check(
            matches!(
                decode_output::<String>(&state),
                Err(ClientError::NotCompleted {
                    status: OrchestrationStatus::Terminated,
                    ..
                })
            ),
            "decode_output to report NotCompleted(Terminated)",
            format_args!("{:?}", decode_output::<String>(&state)),
        )?;
        run.check(
            !run.history(&id).await?.is_empty(),
            "a non-empty history",
            "an empty one",
        )?;
        // Terminating again changes nothing.
        run.call("terminate again", run.client.terminate(&id, Some("again")))
            .await?;
        let state = run.state(&id).await?;
        run.check_eq(
            "the output after a second terminate",
            &Some("\"enough\""),
            &state.output.as_deref(),
        )?;

        let done = run.start("Echo", "fine", None).await?;
        let output: String = run.output(&done).await?;
        run.check_eq("the output", "fine", &output)?;
        run.call("terminate", run.client.terminate(&done, Some("late")))
            .await?;
        let state = run.state(&done).await?;
        run.check_eq(
            "the status of a completed instance after terminate",
            &OrchestrationStatus::Completed,
            &state.status,
        )?;
        run.check_eq("its output", &Some("\"fine\""), &state.output.as_deref())?;
        Ok(())
    })
    .await
}

/// A suspended instance stays Suspended and does not process an event
/// raised meanwhile (its completion wait times out); once resumed it
/// processes the event and completes with it.
pub async fn suspended_instances_process_no_events_until_resumed(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "suspended_instances_process_no_events_until_resumed",
        backend,
    );
    let registry =
        Registry::builder().register_orchestration_typed("Approval", |ctx, (): ()| async move {
            ctx.set_custom_status(&"waiting")?;
            let answer: String = ctx.wait_for_external_event("Approve").await?;
            ctx.set_custom_status(&"approved")?;
            Ok::<_, OrchestrationError>(answer)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("Approval", &(), None).await?;
        let waiting = json("waiting");
        run.poll_state(&id, "custom status \"waiting\"", |s| {
            s.custom_status == waiting
        })
        .await?;
        run.call("suspend", run.client.suspend(&id, Some("pause")))
            .await?;
        let state = run.state(&id).await?;
        run.check_eq(
            "the status after suspend",
            &OrchestrationStatus::Suspended,
            &state.status,
        )?;
        run.call(
            "raising Approve",
            run.client.raise_event(&id, "Approve", "yes"),
        )
        .await?;
        let waited = run
            .bounded(
                "wait_for_completion",
                run.client
                    .wait_for_completion(&id, Duration::from_millis(300)),
            )
            .await?;
        run.check(
            matches!(&waited, Err(ClientError::Backend(Error::Timeout(_)))),
            "waiting 300 ms for a suspended instance to time out",
            format_args!("{waited:?}"),
        )?;
        let state = run.state(&id).await?;
        run.check_eq(
            "the status while suspended",
            &OrchestrationStatus::Suspended,
            &state.status,
        )?;
        run.check_eq(
            "the custom status while suspended (the event is not processed)",
            &waiting,
            &state.custom_status,
        )?;
        run.call("resume", run.client.resume(&id, Some("go on")))
            .await?;
        let state = run.state(&id).await?;
        run.check(
            state.status == OrchestrationStatus::Running || state.status.is_terminal(),
            "the status after resume to be Running (or finished)",
            state.status,
        )?;
        let answer: String = run.output(&id).await?;
        run.check_eq("the output", "yes", &answer)?;
        Ok(())
    })
    .await
}

/// `WaitForever` (waits for an event that never comes) and `Echo` (returns
/// its input): an instance that stays running and one that finishes.
fn waiting_and_echo() -> RegistryBuilder {
    Registry::builder()
        .register_orchestration_typed("WaitForever", |ctx, (): ()| async move {
            let value: String = ctx.wait_for_external_event("Never").await?;
            Ok::<_, OrchestrationError>(value)
        })
        .register_orchestration_typed("Echo", |_ctx, text: String| async move {
            Ok::<_, OrchestrationError>(text)
        })
}

/// Purging a running instance is a `Conflict` and keeps it; purging a
/// finished one returns true and removes it (`get` is `None`, a second
/// purge returns false); purging an unknown id returns false.
pub async fn purge_deletes_only_finished_instances(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new("purge_deletes_only_finished_instances", backend);
    let registry = waiting_and_echo();
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let running = run.start("WaitForever", &(), None).await?;
        run.call("wait_for_start", run.client.wait_for_start(&running, WAIT))
            .await?;
        run.refused(
            "purging a running instance",
            ErrorKind::Conflict,
            run.client.purge(&running),
        )
        .await?;
        run.state(&running).await?;

        let done = run.start("Echo", "x", None).await?;
        run.output::<String>(&done).await?;
        let purged = run.call("purge", run.client.purge(&done)).await?;
        run.check_eq("purge of a finished instance", &true, &purged)?;
        let state = run.call("get", run.client.get(&done)).await?;
        run.check_eq("get after purge", &None, &state)?;
        let again = run.call("purge", run.client.purge(&done)).await?;
        run.check_eq("a second purge", &false, &again)?;

        let unknown = InstanceId::new(run.id("nobody")).map_err(|e| run.fail("a valid id", e))?;
        let purged = run.call("purge", run.client.purge(&unknown)).await?;
        run.check_eq("purge of an unknown instance", &false, &purged)?;

        run.call("terminate", run.client.terminate(&running, None))
            .await?;
        run.finished(&running).await?;
        let purged = run.call("purge", run.client.purge(&running)).await?;
        run.check_eq("purge of a terminated instance", &true, &purged)?;
        let state = run.call("get", run.client.get(&running)).await?;
        run.check_eq("get after purge", &None, &state)?;
        Ok(())
    })
    .await
}

/// Queries filter by status, by id prefix, by name and by creation time, page
/// through every result with continuations (in id order, no duplicates,
/// no page larger than asked), include inputs and outputs only when asked,
/// and refuse page sizes outside 1..=1000.
pub async fn queries_filter_by_status_prefix_and_time_and_page(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new("queries_filter_by_status_prefix_and_time_and_page", backend);
    let registry = waiting_and_echo();
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        // Batch A: three completed instances.
        let mut batch_a = Vec::new();
        for i in 0..3 {
            let id = run.id(&format!("a-{i}!{i}"));
            batch_a.push(run.start("Echo", &format!("a{i}"), Some(&id)).await?);
        }
        let mut max_a = 0;
        for id in &batch_a {
            run.output::<String>(id).await?;
            max_a = max_a.max(run.state(id).await?.created_at_ms);
        }
        // Let the clock move past batch A's creation times.
        let deadline = Instant::now() + WAIT;
        while now_ms() <= max_a + 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Batch B: two running, two completed.
        let mut running = Vec::new();
        for i in 0..2 {
            let id = run.id(&format!("b-{i}!{i}"));
            running.push(run.start("WaitForever", &(), Some(&id)).await?);
        }
        let mut completed_b = Vec::new();
        for i in 0..2 {
            let id = run.id(&format!("c-{i}!{}", i + 2));
            completed_b.push(run.start("Echo", &format!("c{i}"), Some(&id)).await?);
        }
        for id in &running {
            run.call("wait_for_start", run.client.wait_for_start(id, WAIT))
                .await?;
        }
        let mut min_b = u64::MAX;
        for id in &completed_b {
            run.output::<String>(id).await?;
        }
        for id in running.iter().chain(&completed_b) {
            min_b = min_b.min(run.state(id).await?.created_at_ms);
        }
        run.check(
            min_b > max_a,
            format_args!("batch B to be created after batch A (at {max_a})"),
            format_args!("batch B created from {min_b}"),
        )?;

        let sorted = |ids: &[&InstanceId]| {
            let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            ids.sort();
            ids
        };
        let all: Vec<&InstanceId> = batch_a.iter().chain(&running).chain(&completed_b).collect();
        let completed: Vec<&InstanceId> = batch_a.iter().chain(&completed_b).collect();
        let base = InstanceQuery {
            instance_id_prefix: Some(run.prefix.clone()),
            ..InstanceQuery::default()
        };
        let query_ids = |query: InstanceQuery| run.query_ids(query);

        run.check_eq(
            "all by prefix",
            &sorted(&all),
            &query_ids(base.clone()).await?,
        )?;
        let by_status = |statuses: Vec<OrchestrationStatus>| InstanceQuery {
            statuses,
            ..base.clone()
        };
        run.check_eq(
            "Completed by prefix",
            &sorted(&completed),
            &query_ids(by_status(vec![OrchestrationStatus::Completed])).await?,
        )?;
        run.check_eq(
            "Running by prefix",
            &sorted(&running.iter().collect::<Vec<_>>()),
            &query_ids(by_status(vec![OrchestrationStatus::Running])).await?,
        )?;
        run.check_eq(
            "Completed or Running by prefix",
            &sorted(&all),
            &query_ids(by_status(vec![
                OrchestrationStatus::Running,
                OrchestrationStatus::Completed,
            ]))
            .await?,
        )?;
        run.check_eq(
            "Failed by prefix",
            &Vec::<String>::new(),
            &query_ids(by_status(vec![OrchestrationStatus::Failed])).await?,
        )?;
        let prefix_a = InstanceQuery {
            instance_id_prefix: Some(run.id("a-")),
            ..InstanceQuery::default()
        };
        run.check_eq(
            "by the prefix of batch A",
            &sorted(&batch_a.iter().collect::<Vec<_>>()),
            &query_ids(prefix_a).await?,
        )?;
        let nobody = InstanceQuery {
            instance_id_prefix: Some(run.id("nobody")),
            ..InstanceQuery::default()
        };
        let page = run.call("query", run.client.query(&nobody)).await?;
        run.check(
            page.instances.is_empty() && page.continuation.is_none(),
            "an empty last page for an unknown prefix",
            format_args!("{page:?}"),
        )?;

        // By orchestration name.
        let by_name = |name: &str| InstanceQuery {
            name: Some(name.to_owned()),
            ..base.clone()
        };
        run.check_eq(
            "Echo instances by prefix",
            &sorted(&completed),
            &query_ids(by_name("Echo")).await?,
        )?;
        run.check_eq(
            "WaitForever instances",
            &sorted(&running.iter().collect::<Vec<_>>()),
            &query_ids(InstanceQuery {
                name: Some("WaitForever".to_owned()),
                statuses: vec![OrchestrationStatus::Running],
                ..base.clone()
            })
            .await?,
        )?;
        run.check_eq(
            "instances of an unknown name",
            &Vec::<String>::new(),
            &query_ids(by_name("echo")).await?,
        )?;

        // Paging by hand, two at a time.
        let batch_b = sorted(&running.iter().chain(&completed_b).collect::<Vec<_>>());
        for (query, expected) in [
            (base.clone(), sorted(&all)),
            (
                by_status(vec![OrchestrationStatus::Completed]),
                sorted(&completed),
            ),
            (by_name("Echo"), sorted(&completed)),
            (
                InstanceQuery {
                    created_from_ms: Some(min_b),
                    created_to_ms: Some(now_ms() + 60_000),
                    ..base.clone()
                },
                batch_b.clone(),
            ),
        ] {
            let mut query = InstanceQuery {
                page_size: 2,
                ..query
            };
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let page = run.call("query a page", run.client.query(&query)).await?;
                pages += 1;
                run.check(
                    page.instances.len() <= 2,
                    "at most 2 instances per page",
                    page.instances.len(),
                )?;
                seen.extend(ids_of(&page.instances));
                match page.continuation {
                    Some(next) if pages <= expected.len() => query.continuation = Some(next),
                    Some(next) => {
                        return Err(run.fail(
                            format!("at most {} pages", expected.len()),
                            format!("another continuation {next:?}"),
                        ));
                    }
                    None => break,
                }
            }
            run.check_eq("the ids over all pages", &expected, &seen)?;
            run.check_eq("the pages", &expected.len().div_ceil(2), &pages)?;
        }

        // Creation time.
        let created = |from: Option<u64>, to: Option<u64>| InstanceQuery {
            created_from_ms: from,
            created_to_ms: to,
            ..base.clone()
        };
        run.check_eq(
            "created at or after batch B",
            &sorted(&running.iter().chain(&completed_b).collect::<Vec<_>>()),
            &query_ids(created(Some(min_b), None)).await?,
        )?;
        run.check_eq(
            "created before batch B",
            &sorted(&batch_a.iter().collect::<Vec<_>>()),
            &query_ids(created(None, Some(min_b))).await?,
        )?;
        run.check_eq(
            "created after batch B began",
            &Vec::<String>::new(),
            &query_ids(created(Some(now_ms() + 60_000), None)).await?,
        )?;

        // Inputs and outputs only when asked.
        let with_io = InstanceQuery {
            fetch_inputs_and_outputs: true,
            ..prefix_of(&run, "c-")
        };
        let states = run.call("query", run.client.query_all(&with_io)).await?;
        let io: Vec<(Option<String>, Option<String>)> = states
            .iter()
            .map(|s| (s.input.clone(), s.output.clone()))
            .collect();
        let expected: Vec<(Option<String>, Option<String>)> = (0..2)
            .map(|i| (json(&format!("c{i}")), json(&format!("c{i}"))))
            .collect();
        run.check_eq("inputs and outputs when asked", &expected, &io)?;
        let states = run
            .call("query", run.client.query_all(&prefix_of(&run, "c-")))
            .await?;
        let io: Vec<(Option<String>, Option<String>)> = states
            .iter()
            .map(|s| (s.input.clone(), s.output.clone()))
            .collect();
        run.check_eq(
            "inputs and outputs when not asked",
            &vec![(None, None), (None, None)],
            &io,
        )?;

        for page_size in [0, 1001] {
            let query = InstanceQuery {
                page_size,
                ..base.clone()
            };
            run.refused(
                &format!("a query with page size {page_size}"),
                ErrorKind::InvalidInput,
                run.client.query(&query),
            )
            .await?;
        }
        for id in &running {
            run.call("terminate", run.client.terminate(id, None))
                .await?;
        }
        Ok(())
    })
    .await
}

fn prefix_of(run: &Run, prefix: &str) -> InstanceQuery {
    InstanceQuery {
        instance_id_prefix: Some(run.id(prefix)),
        ..InstanceQuery::default()
    }
}

/// With a retry policy, an activity that fails twice then succeeds is
/// called three times and its output returned (the history shows three
/// attempts and two retry timers); one that always fails is called
/// `max_attempts` times and the instance fails with its message; a
/// non-retriable failure is not retried.
pub async fn activity_retries_follow_the_retry_policy(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new("activity_retries_follow_the_retry_policy", backend);
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let broken_calls = Arc::new(AtomicUsize::new(0));
    let fatal_calls = Arc::new(AtomicUsize::new(0));
    let (flaky, broken, fatal) = (
        flaky_calls.clone(),
        broken_calls.clone(),
        fatal_calls.clone(),
    );
    let registry = Registry::builder()
        .register_activity_typed("Flaky", move |_, (): ()| {
            let attempt = flaky.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt < 3 {
                    Err(ActivityError::new(
                        "Transient",
                        format!("attempt {attempt} failed"),
                    ))
                } else {
                    Ok(attempt)
                }
            }
        })
        .register_activity_typed("Broken", move |_, (): ()| {
            broken.fetch_add(1, Ordering::SeqCst);
            async move { Err::<(), _>(ActivityError::new("DiskOnFire", "the disk is on fire")) }
        })
        .register_activity_typed("Fatal", move |_, (): ()| {
            fatal.fetch_add(1, Ordering::SeqCst);
            async move {
                Err::<(), _>(ActivityError::new("BadRequest", "never retry this").non_retriable())
            }
        })
        .register_orchestration_typed("Retry", |ctx, activity: String| async move {
            let policy = RetryPolicy::new(3, 20).with_backoff(2.0);
            let attempts: Option<usize> =
                ctx.call_activity_with_retry(&activity, &(), policy).await?;
            Ok::<_, OrchestrationError>(attempts)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let flaky = run.start("Retry", "Flaky", None).await?;
        let broken = run.start("Retry", "Broken", None).await?;
        let fatal = run.start("Retry", "Fatal", None).await?;

        let attempts: Option<usize> = run.output(&flaky).await?;
        run.check_eq("the flaky activity's output", &Some(3), &attempts)?;
        run.check_eq(
            "flaky activity calls",
            &3,
            &flaky_calls.load(Ordering::SeqCst),
        )?;
        let history = run.history(&flaky).await?;
        run.check_eq("TaskScheduled events", &3, &count(&history, is_scheduled))?;
        run.check_eq(
            "TaskFailed events",
            &2,
            &count(&history, |k| matches!(k, EventKind::TaskFailed { .. })),
        )?;
        run.check_eq(
            "retry timers",
            &2,
            &count(&history, |k| matches!(k, EventKind::TimerCreated { .. })),
        )?;

        let failure = run.failure(&broken).await?;
        run.check_eq("the error type", "ActivityFailed", &failure.error_type)?;
        run.check(
            failure.message.contains("the disk is on fire"),
            "the failure message to contain the activity's message",
            &failure.message,
        )?;
        run.check_eq(
            "the inner failure",
            &Some(("DiskOnFire", "the disk is on fire")),
            &failure
                .inner
                .as_deref()
                .map(|inner| (inner.error_type.as_str(), inner.message.as_str())),
        )?;
        run.check_eq(
            "always-failing activity calls (max_attempts)",
            &3,
            &broken_calls.load(Ordering::SeqCst),
        )?;

        let failure = run.failure(&fatal).await?;
        run.check_eq(
            "the inner error type",
            &Some("BadRequest"),
            &failure.inner.as_deref().map(|i| i.error_type.as_str()),
        )?;
        run.check_eq(
            "non-retriable activity calls",
            &1,
            &fatal_calls.load(Ordering::SeqCst),
        )?;
        Ok(())
    })
    .await
}

/// An activity's error and an activity's panic fail the instance with
/// `ActivityFailed` and the activity's own failure (type and message) as
/// `inner`, which the client reports as `ClientError::Failed`; an
/// orchestration can also catch them. The worker survives and keeps
/// running orchestrations.
pub async fn activity_failures_and_panics_surface_with_their_message(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "activity_failures_and_panics_surface_with_their_message",
        backend,
    );
    let registry = Registry::builder()
        .register_activity_typed("Fail", |_, (): ()| async move {
            Err::<(), _>(ActivityError::new("Nope", "always fails"))
        })
        .register_activity("Panic", |_, _| async move { panic!("activity exploded") })
        .register_activity_typed("Double", |_, n: i64| async move {
            Ok::<_, ActivityError>(n * 2)
        })
        .register_orchestration_typed("Call", |ctx, activity: String| async move {
            ctx.call_activity::<_, ()>(&activity, &()).await?;
            Ok::<_, OrchestrationError>(())
        })
        .register_orchestration_typed("Catch", |ctx, activity: String| async move {
            match ctx.call_activity::<_, ()>(&activity, &()).await {
                Err(OrchestrationError::ActivityFailed { name, details }) => {
                    Ok::<_, OrchestrationError>(format!(
                        "{name}: {}: {}",
                        details.error_type, details.message
                    ))
                }
                other => Ok(format!("unexpected: {other:?}")),
            }
        })
        .register_orchestration_typed("Healthy", |ctx, n: i64| async move {
            let doubled: i64 = ctx.call_activity("Double", &n).await?;
            Ok::<_, OrchestrationError>(doubled)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        for (activity, error_type, message) in [
            ("Fail", "Nope", "always fails"),
            ("Panic", "Panic", "activity panicked: activity exploded"),
        ] {
            let id = run.start("Call", activity, None).await?;
            let state = run.finished(&id).await?;
            run.check_eq("the status", &OrchestrationStatus::Failed, &state.status)?;
            let failure = state
                .failure
                .clone()
                .ok_or_else(|| run.fail("failure details", "none"))?;
            run.check_eq("the error type", "ActivityFailed", &failure.error_type)?;
            run.check(
                failure.message.contains(message),
                format_args!("the failure message to contain {message:?}"),
                &failure.message,
            )?;
            run.check_eq(
                "the inner failure",
                &Some((error_type, message)),
                &failure
                    .inner
                    .as_deref()
                    .map(|inner| (inner.error_type.as_str(), inner.message.as_str())),
            )?;
            match decode_output::<()>(&state) {
                Err(ClientError::Failed { failure: f, .. }) if f == failure => {}
                other => {
                    return Err(run.fail(
                        "decode_output to report the same failure",
                        format_args!("{other:?}"),
                    ));
                }
            }
            let caught = run.start("Catch", activity, None).await?;
            let output: String = run.output(&caught).await?;
            run.check_eq(
                "the caught failure",
                &format!("{activity}: {error_type}: {message}"),
                &output,
            )?;
        }
        let healthy = run.start("Healthy", &21_i64, None).await?;
        let doubled: i64 = run.output(&healthy).await?;
        run.check_eq("a healthy orchestration's output", &42, &doubled)?;
        Ok(())
    })
    .await
}

/// A failed instance rewound after the cause is fixed runs its failed
/// activity again (and only that one: the one that succeeded before is not
/// repeated), and completes; rewinding a completed instance is a conflict.
pub async fn rewind_runs_a_failed_instance_again_from_its_failure(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "rewind_runs_a_failed_instance_again_from_its_failure",
        backend,
    );
    let fixed = Arc::new(AtomicBool::new(false));
    let first_calls = Arc::new(AtomicUsize::new(0));
    let fixed_in_activity = Arc::clone(&fixed);
    let first_in_activity = Arc::clone(&first_calls);
    let registry = Registry::builder()
        .register_activity_typed("First", move |_, (): ()| {
            let calls = Arc::clone(&first_in_activity);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ActivityError>(1_i64)
            }
        })
        .register_activity_typed("Flaky", move |_, (): ()| {
            let fixed = Arc::clone(&fixed_in_activity);
            async move {
                if fixed.load(Ordering::SeqCst) {
                    Ok::<_, ActivityError>(2_i64)
                } else {
                    Err(ActivityError::new("NotYet", "not fixed yet"))
                }
            }
        })
        .register_orchestration_typed("Rewindable", |ctx, (): ()| async move {
            let a: i64 = ctx.call_activity("First", &()).await?;
            let b: i64 = ctx.call_activity("Flaky", &()).await?;
            Ok::<_, OrchestrationError>(a + b)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("Rewindable", &(), None).await?;
        let state = run.finished(&id).await?;
        run.check_eq(
            "the status before the fix",
            &OrchestrationStatus::Failed,
            &state.status,
        )?;
        fixed.store(true, Ordering::SeqCst);
        let instance = InstanceId::new(id.as_str()).map_err(|e| run.fail("a valid id", e))?;
        run.bounded(
            "rewind",
            run.backend.rewind(&instance, Some("fixed".into())),
        )
        .await?
        .map_err(|e| run.fail("the rewind to be accepted", e))?;
        let sum: i64 = run.output(&id).await?;
        run.check_eq("the output after the rewind", &3, &sum)?;
        run.check_eq(
            "how often the activity that had succeeded ran",
            &1,
            &first_calls.load(Ordering::SeqCst),
        )?;
        let again = run
            .bounded("a second rewind", run.backend.rewind(&id, None))
            .await?;
        match again {
            Err(error) if error.kind() == ErrorKind::Conflict => Ok(()),
            other => Err(run.fail(
                "rewinding a completed instance to be a conflict",
                format_args!("{other:?}"),
            )),
        }
    })
    .await
}

/// Calling an activity no worker registered fails the instance with
/// `ActivityFailed` and a non-retriable `ActivityNotFound` naming it, also
/// under a retry policy (one attempt only).
pub async fn unknown_activity_fails_with_activity_not_found(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new("unknown_activity_fails_with_activity_not_found", backend);
    let registry = Registry::builder()
        .register_orchestration_typed("Call", |ctx, activity: String| async move {
            ctx.call_activity::<_, ()>(&activity, &()).await?;
            Ok::<_, OrchestrationError>(())
        })
        .register_orchestration_typed("CallWithRetry", |ctx, activity: String| async move {
            let policy = RetryPolicy::new(5, 10);
            ctx.call_activity_with_retry::<_, ()>(&activity, &(), policy)
                .await?;
            Ok::<_, OrchestrationError>(())
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        for orchestration in ["Call", "CallWithRetry"] {
            let id = run.start(orchestration, "NoSuchActivity", None).await?;
            let failure = run.failure(&id).await?;
            run.check_eq("the error type", "ActivityFailed", &failure.error_type)?;
            let inner = failure
                .inner
                .as_deref()
                .ok_or_else(|| run.fail("an inner failure", "none"))?;
            run.check_eq(
                "the inner error type",
                "ActivityNotFound",
                &inner.error_type,
            )?;
            run.check(
                inner.message.contains("NoSuchActivity"),
                "the inner message to name the activity",
                &inner.message,
            )?;
            run.check(
                inner.is_non_retriable,
                "the inner failure to be non-retriable",
                "retriable",
            )?;
            let history = run.history(&id).await?;
            run.check_eq(
                "attempts (TaskScheduled events)",
                &1,
                &count(&history, is_scheduled),
            )?;
        }
        Ok(())
    })
    .await
}

/// Starting an orchestration no worker registered fails the instance with
/// a non-retriable `OrchestrationNotFound` naming it.
pub async fn unknown_orchestration_fails_with_orchestration_not_found(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "unknown_orchestration_fails_with_orchestration_not_found",
        backend,
    );
    let registry = Registry::builder()
        .register_orchestration_typed("Known", |_ctx, (): ()| async {
            Ok::<_, OrchestrationError>(())
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("NoSuchOrchestration", &(), None).await?;
        let failure = run.failure(&id).await?;
        run.check_eq(
            "the error type",
            "OrchestrationNotFound",
            &failure.error_type,
        )?;
        run.check(
            failure.message.contains("NoSuchOrchestration"),
            "the message to name the orchestration",
            &failure.message,
        )?;
        run.check(
            failure.is_non_retriable,
            "the failure to be non-retriable",
            "retriable",
        )?;
        Ok(())
    })
    .await
}

/// With the executor cache off, every step replays from scratch; an
/// orchestration whose first action depends on state outside its history
/// (a counter of its invocations) takes a different path on replay, and
/// the instance fails with a non-retriable `NonDeterminismError` naming
/// the recorded and the new action.
pub async fn non_determinism_fails_the_instance(backend: Arc<dyn Backend>) -> Result<(), Failure> {
    let run = Run::new("non_determinism_fails_the_instance", backend);
    let invocations = Arc::new(AtomicUsize::new(0));
    let counter = invocations.clone();
    let registry = Registry::builder()
        .register_activity_typed("PathOne", |_, (): ()| async move {
            Ok::<_, ActivityError>(1_u32)
        })
        .register_activity_typed("PathTwo", |_, (): ()| async move {
            Ok::<_, ActivityError>(2_u32)
        })
        .register_orchestration_typed("Flip", move |ctx, (): ()| {
            // Not deterministic on purpose: the path depends on how often
            // this function ran, which history does not record.
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let activity = if first { "PathOne" } else { "PathTwo" };
                let path: u32 = ctx.call_activity(activity, &()).await?;
                Ok::<_, OrchestrationError>(path)
            }
        });
    let options = WorkerOptions {
        executor_cache_capacity: 0,
        ..WorkerOptions::default()
    };
    let worker = run.worker(registry, options)?;
    run.with_worker(worker, async {
        let id = run.start("Flip", &(), None).await?;
        let failure = run.failure(&id).await?;
        run.check_eq("the error type", "NonDeterminismError", &failure.error_type)?;
        run.check(
            failure.message.contains("\"PathOne\"") && failure.message.contains("\"PathTwo\""),
            "the message to name the recorded (PathOne) and the new (PathTwo) action",
            &failure.message,
        )?;
        run.check(
            failure.is_non_retriable,
            "the failure to be non-retriable",
            "retriable",
        )?;
        run.check(
            invocations.load(Ordering::SeqCst) >= 2,
            "the orchestration to have been replayed",
            invocations.load(Ordering::SeqCst),
        )?;
        Ok(())
    })
    .await
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Progress {
    stage: String,
    done: u32,
}

/// The custom status an orchestration sets is visible through `get` while
/// it runs and after it completes.
pub async fn custom_status_is_visible_to_clients(backend: Arc<dyn Backend>) -> Result<(), Failure> {
    let run = Run::new("custom_status_is_visible_to_clients", backend);
    let registry = Registry::builder()
        .register_activity_typed("Echo", |_, n: u32| async move { Ok::<_, ActivityError>(n) })
        .register_orchestration_typed("Progress", |ctx, (): ()| async move {
            ctx.set_custom_status(&Progress {
                stage: "started".into(),
                done: 0,
            })?;
            let done: u32 = ctx.wait_for_external_event("Continue").await?;
            ctx.set_custom_status(&Progress {
                stage: "finishing".into(),
                done,
            })?;
            let echoed: u32 = ctx.call_activity("Echo", &done).await?;
            Ok::<_, OrchestrationError>(echoed)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id = run.start("Progress", &(), None).await?;
        let started = json(&Progress {
            stage: "started".into(),
            done: 0,
        });
        let state = run
            .poll_state(&id, "the custom status of stage \"started\"", |s| {
                s.custom_status == started
            })
            .await?;
        run.check_eq("the status", &OrchestrationStatus::Running, &state.status)?;
        run.call(
            "raising Continue",
            run.client.raise_event(&id, "Continue", &5_u32),
        )
        .await?;
        let output: u32 = run.output(&id).await?;
        run.check_eq("the output", &5, &output)?;
        let state = run.state(&id).await?;
        let status: Option<Progress> =
            decode_custom_status(&state).map_err(|e| run.fail("a decodable custom status", e))?;
        let expected = Progress {
            stage: "finishing".into(),
            done: 5,
        };
        run.check_eq("the final custom status", &Some(expected), &status)?;
        Ok(())
    })
    .await
}

/// Starting an explicit id that is running is a `Conflict` and leaves the
/// running instance alone; once it finished (completed or terminated), the
/// same start succeeds and replaces it: new name, input, output and a
/// history of the new execution only.
pub async fn explicit_id_conflicts_while_running_and_replaces_when_finished(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "explicit_id_conflicts_while_running_and_replaces_when_finished",
        backend,
    );
    let registry = Registry::builder()
        .register_orchestration_typed("WaitForValue", |ctx, (): ()| async move {
            let value: String = ctx.wait_for_external_event("Value").await?;
            Ok::<_, OrchestrationError>(value)
        })
        .register_orchestration_typed("Echo", |_ctx, text: String| async move {
            Ok::<_, OrchestrationError>(format!("echo {text}"))
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id_text = run.id("fixed");
        let id = run.start("WaitForValue", &(), Some(&id_text)).await?;
        run.call("wait_for_start", run.client.wait_for_start(&id, WAIT))
            .await?;
        let before = run.state(&id).await?;
        run.refused(
            "a second start on a running id",
            ErrorKind::Conflict,
            run.client
                .start_with("Echo", "x", StartOptions::with_instance_id(&id_text)),
        )
        .await?;
        let after = run.state(&id).await?;
        run.check_eq("the running instance's name", &before.name, &after.name)?;
        run.check_eq("the running instance's input", &before.input, &after.input)?;
        run.check_eq(
            "the running instance's creation time",
            &before.created_at_ms,
            &after.created_at_ms,
        )?;
        let waited = run
            .bounded(
                "wait_for_completion",
                run.client
                    .wait_for_completion(&id, Duration::from_millis(50)),
            )
            .await?;
        run.check(
            matches!(&waited, Err(ClientError::Backend(Error::Timeout(_)))),
            "a 50 ms completion wait on a running instance to time out",
            format_args!("{waited:?}"),
        )?;
        run.call("raising Value", run.client.raise_event(&id, "Value", "v1"))
            .await?;
        let first: String = run.output(&id).await?;
        run.check_eq("the first output", "v1", &first)?;

        run.start("Echo", "second", Some(&id_text)).await?;
        let second: String = run.output(&id).await?;
        run.check_eq("the replacing instance's output", "echo second", &second)?;
        let state = run.state(&id).await?;
        run.check_eq("the replacing instance's name", "Echo", &state.name)?;
        run.check_eq(
            "the replacing instance's input",
            &json("second"),
            &state.input,
        )?;
        run.check(
            state.created_at_ms >= before.created_at_ms,
            format_args!("a creation time at or after {}", before.created_at_ms),
            state.created_at_ms,
        )?;
        let history = run.history(&id).await?;
        let started: Vec<String> = history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::ExecutionStarted { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        run.check_eq(
            "the ExecutionStarted events of the replaced history",
            &vec!["Echo".to_owned()],
            &started,
        )?;

        // A terminated instance can be replaced too.
        let doomed_text = run.id("doomed");
        let doomed = run.start("WaitForValue", &(), Some(&doomed_text)).await?;
        run.call("terminate", run.client.terminate(&doomed, Some("stop")))
            .await?;
        run.finished(&doomed).await?;
        run.start("Echo", "third", Some(&doomed_text)).await?;
        let third: String = run.output(&doomed).await?;
        run.check_eq(
            "the output after replacing a terminated instance",
            "echo third",
            &third,
        )?;
        Ok(())
    })
    .await
}

/// `wait_for_start` waits until a worker has run the instance: with no
/// worker it times out and the instance stays Pending; once a worker runs,
/// it returns a state that is no longer Pending (Running for an instance
/// that waits for an event). On an unknown instance it is `NotFound`.
pub async fn wait_for_start_returns_once_a_worker_ran_the_instance(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "wait_for_start_returns_once_a_worker_ran_the_instance",
        backend,
    );
    let registry = Registry::builder().register_orchestration_typed(
        "WaitForValue",
        |ctx, (): ()| async move {
            let value: String = ctx.wait_for_external_event("Value").await?;
            Ok::<_, OrchestrationError>(value)
        },
    );
    // No worker yet.
    let id = run.start("WaitForValue", &(), None).await?;
    let waited = run
        .bounded(
            "wait_for_start",
            run.client.wait_for_start(&id, Duration::from_millis(200)),
        )
        .await?;
    run.check(
        matches!(&waited, Err(ClientError::Backend(Error::Timeout(_)))),
        "wait_for_start to time out while no worker runs",
        format_args!("{waited:?}"),
    )?;
    let state = run.state(&id).await?;
    run.check_eq(
        "the status while no worker runs",
        &OrchestrationStatus::Pending,
        &state.status,
    )?;

    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let state = run
            .call("wait_for_start", run.client.wait_for_start(&id, WAIT))
            .await?;
        run.check_eq(
            "the status wait_for_start returns",
            &OrchestrationStatus::Running,
            &state.status,
        )?;
        run.call("raising Value", run.client.raise_event(&id, "Value", "v"))
            .await?;
        let value: String = run.output(&id).await?;
        run.check_eq("the output", "v", &value)?;
        let unknown = InstanceId::new(run.id("nobody")).map_err(|e| run.fail("a valid id", e))?;
        run.refused(
            "wait_for_start on an unknown instance",
            ErrorKind::NotFound,
            run.client
                .wait_for_start(&unknown, Duration::from_millis(200)),
        )
        .await?;
        Ok(())
    })
    .await
}

/// An instance scheduled 500 ms ahead stays Pending (and `wait_for_start`
/// times out) until then, then runs: its first step's time is at or after
/// the scheduled time. A scheduled time in the past starts at once.
pub async fn scheduled_start_waits_until_its_time(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    const AHEAD_MS: u64 = 500;
    let run = Run::new("scheduled_start_waits_until_its_time", backend);
    let registry = Registry::builder()
        .register_orchestration_typed("Now", |ctx, (): ()| async move {
            Ok::<_, OrchestrationError>(ctx.current_time())
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let at = now_ms() + AHEAD_MS;
        let options = StartOptions {
            scheduled_start_ms: Some(at),
            ..StartOptions::default()
        };
        let id = run.start_with("Now", &(), options).await?;
        let state = run.state(&id).await?;
        run.check_eq("the scheduled start", &Some(at), &state.scheduled_start_ms)?;
        run.check_eq(
            "the status before the scheduled time",
            &OrchestrationStatus::Pending,
            &state.status,
        )?;
        let waited = run
            .bounded(
                "wait_for_start",
                run.client.wait_for_start(&id, Duration::from_millis(200)),
            )
            .await?;
        if now_ms() + 20 < at {
            run.check(
                matches!(&waited, Err(ClientError::Backend(Error::Timeout(_)))),
                "wait_for_start to time out before the scheduled time",
                format_args!("{waited:?} at {} (scheduled {at})", now_ms()),
            )?;
            let state = run.state(&id).await?;
            if now_ms() + 5 < at {
                run.check_eq(
                    "the status before the scheduled time",
                    &OrchestrationStatus::Pending,
                    &state.status,
                )?;
            }
        }
        let ran_at: u64 = run.output(&id).await?;
        run.check(
            ran_at >= at,
            format_args!("the first step at or after the scheduled time {at}"),
            ran_at,
        )?;
        run.check(
            now_ms() >= at,
            format_args!("completion at or after {at}"),
            now_ms(),
        )?;

        let past = now_ms().saturating_sub(60_000);
        let options = StartOptions {
            scheduled_start_ms: Some(past),
            ..StartOptions::default()
        };
        let id = run.start_with("Now", &(), options).await?;
        let ran_at: u64 = run.output(&id).await?;
        run.check(
            ran_at >= past,
            format_args!("a past-scheduled instance to run (at or after {past})"),
            ran_at,
        )?;
        Ok(())
    })
    .await
}

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    reply_to: String,
    n: u32,
}

/// An orchestration sends an event to another instance (on another
/// partition), which answers with an event back: both complete with the
/// data they received. An event sent to an unknown instance is dropped
/// without failing the sender, and the sender's history records what it
/// sent.
pub async fn send_event_delivers_between_instances(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new("send_event_delivers_between_instances", backend);
    let registry = Registry::builder()
        .register_orchestration_typed("Receiver", |ctx, (): ()| async move {
            let ping: Ping = ctx.wait_for_external_event("Ping").await?;
            ctx.send_event(&ping.reply_to, "Pong", &(ping.n + 1))?;
            Ok::<_, OrchestrationError>(ping.n)
        })
        .register_orchestration_typed(
            "Sender",
            |ctx, (receiver, nobody, n): (String, String, u32)| async move {
                let ping = Ping {
                    reply_to: ctx.instance_id().to_string(),
                    n,
                };
                ctx.send_event(&nobody, "Ping", &ping)?;
                ctx.send_event(&receiver, "Ping", &ping)?;
                let pong: u32 = ctx.wait_for_external_event("Pong").await?;
                Ok::<_, OrchestrationError>(pong)
            },
        );
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let receiver_text = run.id("receiver!1");
        let nobody = run.id("nobody!2");
        let receiver = run.start("Receiver", &(), Some(&receiver_text)).await?;
        run.call("wait_for_start", run.client.wait_for_start(&receiver, WAIT))
            .await?;
        let sender_text = run.id("sender!0");
        let sender = run
            .start(
                "Sender",
                &(&receiver_text, &nobody, 41_u32),
                Some(&sender_text),
            )
            .await?;
        let received: u32 = run.output(&receiver).await?;
        run.check_eq("the receiver's output", &41, &received)?;
        let answered: u32 = run.output(&sender).await?;
        run.check_eq("the sender's output", &42, &answered)?;
        let history = run.history(&sender).await?;
        let sent: Vec<(i32, String, String)> = history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::EventSent {
                    instance_id, name, ..
                } => Some((e.event_id, instance_id.clone(), name.clone())),
                _ => None,
            })
            .collect();
        let expected = vec![
            (0, nobody.clone(), "Ping".to_owned()),
            (1, receiver_text.clone(), "Ping".to_owned()),
        ];
        run.check_eq("the sender's EventSent events", &expected, &sent)?;
        let nobody = InstanceId::new(nobody).map_err(|e| run.fail("a valid id", e))?;
        let state = run.call("get", run.client.get(&nobody)).await?;
        run.check_eq("the unknown instance", &None, &state)?;
        Ok(())
    })
    .await
}

/// 200 instances started at once, half with random client-chosen ids and
/// half with backend-generated ids (so they spread over every partition),
/// all complete with their own output; generated ids are distinct.
pub async fn many_instances_with_random_ids_all_complete(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    const EACH: usize = 100;
    let run = Run::new("many_instances_with_random_ids_all_complete", backend);
    let registry = Registry::builder()
        .register_activity_typed("Greet", |_, name: String| async move {
            Ok::<_, ActivityError>(format!("hello {name}"))
        })
        .register_orchestration_typed("Hello", |ctx, name: String| async move {
            let greeting: String = ctx.call_activity("Greet", &name).await?;
            Ok::<_, OrchestrationError>(greeting)
        });
    let worker = run.worker(registry, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let seed = nonce();
        let chosen: Vec<String> = (0..EACH as u64)
            .map(|i| format!("{:016x}", splitmix64(seed ^ i)))
            .collect();
        let names: Vec<String> = (0..EACH).map(|i| format!("generated-{i}")).collect();
        let (chosen_ids, generated_ids) = futures::future::join(
            join_all(chosen.iter().map(|id| run.start("Hello", id, Some(id)))),
            join_all(names.iter().map(|name| run.start("Hello", name, None))),
        )
        .await;
        let ids = chosen_ids
            .into_iter()
            .chain(generated_ids)
            .collect::<Result<Vec<InstanceId>, Failure>>()?;
        let generated: std::collections::BTreeSet<&InstanceId> = ids[EACH..].iter().collect();
        run.check_eq("distinct generated ids", &EACH, &generated.len())?;
        let outputs = join_all(ids.iter().map(|id| run.output::<String>(id)))
            .await
            .into_iter()
            .collect::<Result<Vec<String>, Failure>>()?;
        let expected: Vec<String> = chosen
            .iter()
            .cloned()
            .chain(names.iter().cloned())
            .map(|name| format!("hello {name}"))
            .collect();
        run.check_eq("the outputs", &expected, &outputs)?;
        Ok(())
    })
    .await
}

fn mixed_registry(calls: Arc<AtomicUsize>) -> RegistryBuilder {
    Registry::builder()
        .register_activity_typed("Double", |_, n: i64| async move {
            Ok::<_, ActivityError>(n * 2)
        })
        .register_orchestration_typed("Child", |ctx, n: i64| async move {
            let doubled: i64 = ctx.call_activity("Double", &n).await?;
            Ok::<_, OrchestrationError>(doubled)
        })
        .register_orchestration_typed("Main", move |ctx, n: i64| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let fan: Vec<i64> =
                    join_all((0..n).map(|i| ctx.call_activity::<_, i64>("Double", &i)))
                        .await
                        .into_iter()
                        .collect::<Result<_, _>>()?;
                ctx.set_custom_status(&"fanned out")?;
                let child: i64 = ctx.call_sub_orchestration("Child", None, &100).await?;
                ctx.sleep(Duration::from_millis(20)).await;
                let bonus: i64 = ctx.wait_for_external_event("bonus").await?;
                Ok::<_, OrchestrationError>(fan.iter().sum::<i64>() + child + bonus)
            }
        })
}

/// Fan-out, custom status, a sub-orchestration, a timer and an event
/// raised early, in one orchestration: the output is exact, the child
/// completed, and with the default executor cache the orchestration
/// function ran only once (each step extended the history the cached
/// executor had seen).
pub async fn mixed_orchestration_runs_end_to_end_on_one_cached_executor(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "mixed_orchestration_runs_end_to_end_on_one_cached_executor",
        backend,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = run.worker(mixed_registry(calls.clone()), WorkerOptions::default())?;
    run.with_worker(worker, async {
        let id_text = run.id("main");
        let id = run.start("Main", &50_i64, Some(&id_text)).await?;
        run.call("wait_for_start", run.client.wait_for_start(&id, WAIT))
            .await?;
        // Raised early: buffered until the orchestration waits for it.
        run.call("raising bonus", run.client.raise_event(&id, "bonus", &7))
            .await?;
        let output: i64 = run.output(&id).await?;
        run.check_eq("the output", &(2 * (49 * 50 / 2) + 200 + 7), &output)?;
        let state = run.state(&id).await?;
        let status: Option<String> =
            decode_custom_status(&state).map_err(|e| run.fail("a decodable custom status", e))?;
        run.check_eq("the custom status", &Some("fanned out".to_owned()), &status)?;
        run.check_eq(
            "orchestration function invocations (cached executor)",
            &1,
            &calls.load(Ordering::SeqCst),
        )?;
        let child =
            InstanceId::new(format!("{id_text}:50")).map_err(|e| run.fail("a valid id", e))?;
        let child = run.state(&child).await?;
        run.check_eq(
            "the child's status",
            &OrchestrationStatus::Completed,
            &child.status,
        )?;
        Ok(())
    })
    .await
}

/// With the executor cache off, every step replays the whole history and
/// the orchestration still produces the same output.
pub async fn replay_without_executor_cache_gives_the_same_result(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new(
        "replay_without_executor_cache_gives_the_same_result",
        backend,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let options = WorkerOptions {
        executor_cache_capacity: 0,
        ..WorkerOptions::default()
    };
    let worker = run.worker(mixed_registry(calls.clone()), options)?;
    run.with_worker(worker, async {
        let id = run.start("Main", &3_i64, None).await?;
        run.call("raising bonus", run.client.raise_event(&id, "bonus", &0))
            .await?;
        let output: i64 = run.output(&id).await?;
        run.check_eq("the output", &(6 + 200), &output)?;
        run.check(
            calls.load(Ordering::SeqCst) >= 4,
            "one orchestration function invocation per step (at least 4)",
            calls.load(Ordering::SeqCst),
        )?;
        Ok(())
    })
    .await
}

/// `WorkerHandle::shutdown` returns only after the activity in flight has
/// finished and its completion reached the backend: a second worker (whose
/// copy of the activity must not run) finishes the orchestration with the
/// first worker's result.
pub async fn worker_shutdown_waits_for_in_flight_activities(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    const SLEEP_MS: u64 = 300;
    let run = Run::new("worker_shutdown_waits_for_in_flight_activities", backend);
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let second_calls = Arc::new(AtomicUsize::new(0));
    let orchestration = |ctx: crate::sdk::OrchestrationContext, (): ()| async move {
        let slept: u64 = ctx.call_activity("Slow", &SLEEP_MS).await?;
        Ok::<_, OrchestrationError>(slept)
    };
    let (on_start, on_finish) = (started.clone(), finished.clone());
    let first = Registry::builder()
        .register_activity_typed("Slow", move |_, ms: u64| {
            let (on_start, on_finish) = (on_start.clone(), on_finish.clone());
            async move {
                on_start.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                on_finish.store(true, Ordering::SeqCst);
                Ok::<_, ActivityError>(ms)
            }
        })
        .register_orchestration_typed("SlowOnce", orchestration);
    let counter = second_calls.clone();
    let second = Registry::builder()
        .register_activity_typed("Slow", move |_, _ms: u64| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ActivityError>(0_u64) }
        })
        .register_orchestration_typed("SlowOnce", orchestration);

    let worker = run.worker(first, WorkerOptions::default())?;
    let id = run
        .with_worker(worker, async {
            let id = run.start("SlowOnce", &(), None).await?;
            run.poll_flag("the activity to start", &started).await?;
            Ok(id)
        })
        .await?;
    run.check(
        finished.load(Ordering::SeqCst),
        "shutdown to return only after the in-flight activity finished",
        "it returned before",
    )?;
    let worker = run.worker(second, WorkerOptions::default())?;
    run.with_worker(worker, async {
        let slept: u64 = run.output(&id).await?;
        run.check_eq(
            "the output (from the first worker's activity)",
            &SLEEP_MS,
            &slept,
        )?;
        run.check_eq(
            "activity calls on the second worker",
            &0,
            &second_calls.load(Ordering::SeqCst),
        )?;
        Ok(())
    })
    .await
}

/// Dropping a `WorkerHandle` stops its worker: an instance started
/// afterwards is not run (it stays Pending) until another worker starts.
pub async fn dropped_worker_handle_stops_taking_work(
    backend: Arc<dyn Backend>,
) -> Result<(), Failure> {
    let run = Run::new("dropped_worker_handle_stops_taking_work", backend);
    let ran = Arc::new(AtomicBool::new(false));
    let registry = || {
        let flag = ran.clone();
        Registry::builder().register_orchestration_typed("Flag", move |_ctx, (): ()| {
            flag.store(true, Ordering::SeqCst);
            async move { Ok::<_, OrchestrationError>("ran".to_owned()) }
        })
    };
    let worker = run.worker(registry(), WorkerOptions::default())?;
    drop(worker);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = run.start("Flag", &(), None).await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    run.check(
        !ran.load(Ordering::SeqCst),
        "no orchestration to run after the handle was dropped",
        "it ran",
    )?;
    let state = run.state(&id).await?;
    run.check_eq(
        "the status with no worker",
        &OrchestrationStatus::Pending,
        &state.status,
    )?;
    let worker = run.worker(registry(), WorkerOptions::default())?;
    run.with_worker(worker, async {
        let output: String = run.output(&id).await?;
        run.check_eq("the output once a worker runs", "ran", &output)?;
        Ok(())
    })
    .await
}

/// Shutting the backend down stops a running worker (its dispatchers see
/// `ShutDown` and end), and client calls afterwards fail with `ShutDown`.
/// Takes the whole target, since it shuts the backend down itself.
pub async fn backend_shutdown_stops_the_worker(target: ConformanceTarget) -> Result<(), Failure> {
    let run = Run::new("backend_shutdown_stops_the_worker", target.backend.clone());
    let Some(shutdown) = target.shutdown else {
        return Err(run.fail("a target with a shutdown function", "none"));
    };
    let registry = Registry::builder()
        .register_orchestration_typed("Echo", |_ctx, text: String| async move {
            Ok::<_, OrchestrationError>(text)
        });
    let worker = match run.worker(registry, WorkerOptions::default()) {
        Ok(worker) => worker,
        Err(failure) => {
            run.bounded("the backend's shutdown", shutdown()).await?;
            return Err(failure);
        }
    };
    let before = async {
        let id = run.start("Echo", "before", None).await?;
        let output: String = run.output(&id).await?;
        run.check_eq("the output before shutdown", "before", &output)?;
        run.check(worker.is_running(), "the worker to run", "it stopped")
    }
    .await;
    // Shut down whatever happened before, so the backend never outlives
    // the scenario.
    let shut_down = run.bounded("the backend's shutdown", shutdown()).await;
    let after = async {
        before?;
        shut_down?;
        let deadline = Instant::now() + WAIT;
        while worker.is_running() {
            if Instant::now() >= deadline {
                return Err(run.fail(
                    "the worker to stop after the backend shut down",
                    format!("still running after {WAIT:?}"),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        run.refused(
            "a start after shutdown",
            ErrorKind::ShutDown,
            run.client.start("Echo", "after"),
        )
        .await?;
        Ok(())
    }
    .await;
    let stopped = run.stop(worker).await;
    after?;
    stopped
}
