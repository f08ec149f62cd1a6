//! The worker: runs the registered orchestrations, activities and entities
//! of a [`Registry`] against any [`Backend`].
//!
//! [`Worker::start`] spawns three dispatcher tasks on the current Tokio
//! runtime, looping on [`Backend::next_orchestration_work_item`],
//! [`Backend::next_activity_work_item`] and
//! [`Backend::next_entity_work_item`]. Each takes a semaphore permit
//! before fetching, so it never holds more work items than its concurrency
//! allows, and runs every item on its own task:
//!
//! - an orchestration step runs its [`OrchestrationExecutor`] on the
//!   task itself (replay is short, deterministic CPU work that must not block) and completes the item with the
//!   step's result. Executors are kept between steps in a bounded
//!   least-recently-used cache keyed by instance id, so a step usually
//!   processes only its new events; an executor leaves the cache when its
//!   instance ends, when the cache is full, or when completing its step
//!   failed (the backend may then offer the step again and the executor
//!   must not be ahead of it).
//! - an activity runs through [`Registry::run_activity`]: failures, panics
//!   and unknown names become [`ActivityOutcome::Failed`]; nothing a user
//!   function does can stop the worker.
//! - an entity batch runs through [`Registry::run_entity_batch`], which
//!   likewise turns failures, panics and unknown names into per-operation
//!   results, and is completed with the batch's result.
//!
//! Backend errors: [`Error::ShutDown`] stops the dispatcher; other errors
//! are logged and the dispatcher retries after
//! [`WorkerOptions::error_backoff`]. A step, activity or entity batch whose
//! completion fails is abandoned (best effort) so it is offered again,
//! unless the backend rejected it as stale ([`Error::StaleToken`]: it was
//! already completed or reassigned) or is shutting down.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, error, warn};

use crate::backend::{ActivityOutcome, ActivityWorkItem, Backend, OrchestrationWorkItem};
use crate::entity::{EntityBatchResult, EntityWorkItem, OperationResult};
use crate::error::Error;
use crate::sdk::{ActivityContext, OrchestrationExecutor, Registry};
use crate::types::{FailureDetails, InstanceId};

/// How a [`Worker`] runs. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Orchestration steps run at once (default 16; 0 counts as 1).
    pub orchestration_concurrency: usize,
    /// Activities run at once (default 64; 0 counts as 1).
    pub activity_concurrency: usize,
    /// Entity batches run at once (default 64; 0 counts as 1). The backend
    /// hands out at most one batch per entity at a time, so this bounds how
    /// many distinct entities run concurrently.
    pub entity_concurrency: usize,
    /// Executors kept in memory between steps (default 1,024; 0 disables
    /// the cache, so every step replays its whole history).
    pub executor_cache_capacity: usize,
    /// Wait after a backend error before asking for work again (default
    /// 200 ms).
    pub error_backoff: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            orchestration_concurrency: 16,
            activity_concurrency: 64,
            entity_concurrency: 64,
            executor_cache_capacity: 1024,
            error_backoff: Duration::from_millis(200),
        }
    }
}

/// Starts workers; see the module docs.
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Starts a worker on the current Tokio runtime (it must be called from
    /// within one). The worker runs until [`WorkerHandle::shutdown`], until
    /// the handle is dropped, or until the backend reports `ShutDown`.
    pub fn start(
        backend: Arc<dyn Backend>,
        registry: Arc<Registry>,
        options: WorkerOptions,
    ) -> WorkerHandle {
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            backend,
            registry,
            cache: Mutex::new(ExecutorCache::new(options.executor_cache_capacity)),
            options,
        });
        let orchestrations = tokio::spawn(dispatch(
            shared.clone(),
            stopped.clone(),
            shared.options.orchestration_concurrency,
            WorkKind::Orchestration,
        ));
        let activities = tokio::spawn(dispatch(
            shared.clone(),
            stopped.clone(),
            shared.options.activity_concurrency,
            WorkKind::Activity,
        ));
        let entities = tokio::spawn(dispatch(
            shared.clone(),
            stopped,
            shared.options.entity_concurrency,
            WorkKind::Entity,
        ));
        WorkerHandle {
            stop,
            dispatchers: vec![orchestrations, activities, entities],
        }
    }
}

/// Controls a running worker. Dropping it stops the worker in the
/// background (in-flight work still finishes); [`WorkerHandle::shutdown`]
/// also waits for that.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    dispatchers: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops taking new work and waits until every step, activity and
    /// entity batch in flight has finished and been completed (or
    /// abandoned) on the backend.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for dispatcher in self.dispatchers {
            if let Err(join_error) = dispatcher.await {
                error!(%join_error, "a worker dispatcher task failed");
            }
        }
    }

    /// Whether all dispatchers are still taking work.
    pub fn is_running(&self) -> bool {
        !*self.stop.borrow() && self.dispatchers.iter().all(|d| !d.is_finished())
    }
}

/// What the tasks of one worker share.
struct Shared {
    backend: Arc<dyn Backend>,
    registry: Arc<Registry>,
    cache: Mutex<ExecutorCache>,
    options: WorkerOptions,
}

#[derive(Clone, Copy, Debug)]
enum WorkKind {
    Orchestration,
    Activity,
    Entity,
}

impl fmt::Display for WorkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkKind::Orchestration => "orchestration",
            WorkKind::Activity => "activity",
            WorkKind::Entity => "entity",
        })
    }
}

/// Waits until a stop is requested or the handle is gone.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender (the handle) was dropped: stop too.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Runs `future` unless a stop is requested first.
async fn unless_stopped<F: Future>(
    stopped: &mut watch::Receiver<bool>,
    future: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = stop_requested(stopped) => None,
        output = future => Some(output),
    }
}

/// One dispatcher: fetches work items of one kind while permits allow, runs
/// each on its own task, and on stop waits for them all.
async fn dispatch(
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    concurrency: usize,
    kind: WorkKind,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    loop {
        while let Some(done) = in_flight.try_join_next() {
            log_task_end(kind, done);
        }
        let Some(Ok(permit)) = unless_stopped(&mut stopped, permits.clone().acquire_owned()).await
        else {
            break;
        };
        let fetched = match kind {
            WorkKind::Orchestration => {
                let next = shared.backend.next_orchestration_work_item();
                unless_stopped(&mut stopped, next)
                    .await
                    .map(|r| r.map(Work::Orchestration))
            }
            WorkKind::Activity => {
                let next = shared.backend.next_activity_work_item();
                unless_stopped(&mut stopped, next)
                    .await
                    .map(|r| r.map(Work::Activity))
            }
            WorkKind::Entity => {
                let next = shared.backend.next_entity_work_item();
                unless_stopped(&mut stopped, next)
                    .await
                    .map(|r| r.map(Work::Entity))
            }
        };
        match fetched {
            None => break,
            Some(Ok(work)) => {
                let shared = shared.clone();
                in_flight.spawn(run_work(shared, work, permit));
            }
            Some(Err(Error::ShutDown)) => {
                debug!(%kind, "the backend shut down; the dispatcher stops");
                break;
            }
            Some(Err(error)) => {
                warn!(%kind, %error, "fetching work failed; retrying after a backoff");
                drop(permit);
                let backoff = tokio::time::sleep(shared.options.error_backoff);
                if unless_stopped(&mut stopped, backoff).await.is_none() {
                    break;
                }
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        log_task_end(kind, done);
    }
}

fn log_task_end(kind: WorkKind, done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(join_error) = done {
        error!(%kind, %join_error, "a work item task failed");
    }
}

enum Work {
    Orchestration(OrchestrationWorkItem),
    Activity(ActivityWorkItem),
    Entity(EntityWorkItem),
}

async fn run_work(shared: Arc<Shared>, work: Work, permit: OwnedSemaphorePermit) {
    match work {
        Work::Orchestration(item) => run_orchestration_step(&shared, item).await,
        Work::Activity(item) => run_activity(&shared, item).await,
        Work::Entity(item) => run_entity_batch(&shared, item).await,
    }
    drop(permit);
}

async fn run_orchestration_step(shared: &Shared, item: OrchestrationWorkItem) {
    let OrchestrationWorkItem {
        instance_id,
        past_events,
        new_events,
        token,
        ..
    } = item;
    let cached = shared.cache.lock().take(&instance_id);
    let mut executor = cached.unwrap_or_else(|| {
        OrchestrationExecutor::new(shared.registry.clone(), instance_id.clone())
    });
    // Orchestration code is deterministic and must not block, and the
    // executor catches its panics: a step runs inline, costing no thread
    // hand-off. The history is released before completing, so the engine
    // can extend it without copying.
    let result = executor.execute(&past_events, &new_events);
    drop(past_events);
    // Cache the executor before completing: a backend may hand out the
    // instance's next step as soon as it has applied the completion, before
    // the call returns, and that step must find the executor. (A step that
    // does not extend what the executor processed makes it replay from
    // scratch, so caching early is always safe.)
    if !executor.is_finished() {
        shared.cache.lock().put(instance_id.clone(), executor);
    }
    match shared
        .backend
        .complete_orchestration_work_item(&token, result)
        .await
    {
        Ok(()) => {}
        Err(error) => {
            warn!(%instance_id, %error, "completing an orchestration step failed");
            shared.cache.lock().take(&instance_id);
            if should_abandon(&error) {
                abandon_orchestration(shared, &instance_id, &token).await;
            }
        }
    }
}

/// Whether a failed completion's work item should be given back.
fn should_abandon(error: &Error) -> bool {
    !matches!(error, Error::StaleToken(_) | Error::ShutDown)
}

async fn abandon_orchestration(
    shared: &Shared,
    instance_id: &InstanceId,
    token: &crate::backend::CompletionToken,
) {
    if let Err(error) = shared.backend.abandon_orchestration_work_item(token).await {
        warn!(%instance_id, %error, "abandoning an orchestration step failed");
    }
}

async fn run_activity(shared: &Shared, item: ActivityWorkItem) {
    let ActivityWorkItem {
        instance_id,
        name,
        input,
        task_id,
        token,
        ..
    } = item;
    let ctx = ActivityContext::new(instance_id.clone(), name.clone(), task_id);
    let outcome = shared.registry.run_activity(ctx, input).await;
    if let ActivityOutcome::Failed(FailureDetails {
        error_type,
        message,
        ..
    }) = &outcome
    {
        debug!(%instance_id, task_id, %name, %error_type, %message, "activity failed");
    }
    if let Err(error) = shared
        .backend
        .complete_activity_work_item(&token, outcome)
        .await
    {
        warn!(%instance_id, task_id, %name, %error, "completing an activity failed");
        if should_abandon(&error)
            && let Err(error) = shared.backend.abandon_activity_work_item(&token).await
        {
            warn!(%instance_id, task_id, %name, %error, "abandoning an activity failed");
        }
    }
}

async fn run_entity_batch(shared: &Shared, item: EntityWorkItem) {
    let result = shared.registry.run_entity_batch(&item).await;
    let EntityWorkItem {
        entity,
        operations,
        token,
        state,
    } = item;
    for (operation, outcome) in operations.iter().zip(&result.results) {
        if let OperationResult::Failed(FailureDetails {
            error_type,
            message,
            ..
        }) = outcome
        {
            let name = &operation.name;
            debug!(%entity, operation = %name, %error_type, %message, "entity operation failed");
        }
    }
    let count = operations.len();
    drop(operations);
    let mut outcome = shared
        .backend
        .complete_entity_work_item(&token, result)
        .await;
    if let Err(Error::InvalidInput(why)) = &outcome {
        // The result breaks a limit (state or payload size, a name): the
        // same batch would give the same result again, so fail it instead
        // of offering it forever; the state stays as it was.
        warn!(%entity, %why, "entity batch result refused; failing the batch");
        let failure = FailureDetails {
            is_non_retriable: true,
            ..FailureDetails::new("InvalidEntityResult", why.clone())
        };
        let failed = EntityBatchResult {
            state,
            results: vec![OperationResult::Failed(failure); count],
            ..EntityBatchResult::default()
        };
        outcome = shared
            .backend
            .complete_entity_work_item(&token, failed)
            .await;
    }
    if let Err(error) = outcome {
        warn!(%entity, %error, "completing an entity batch failed");
        if should_abandon(&error)
            && let Err(error) = shared.backend.abandon_entity_work_item(&token).await
        {
            warn!(%entity, %error, "abandoning an entity batch failed");
        }
    }
}

/// A bounded least-recently-used map of executors by instance id. An
/// executor in use is taken out, so two steps of one instance never share
/// one.
struct ExecutorCache {
    capacity: usize,
    entries: HashMap<InstanceId, (u64, OrchestrationExecutor)>,
    by_age: BTreeMap<u64, InstanceId>,
    clock: u64,
}

impl ExecutorCache {
    fn new(capacity: usize) -> ExecutorCache {
        ExecutorCache {
            capacity,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
        }
    }

    fn take(&mut self, instance_id: &InstanceId) -> Option<OrchestrationExecutor> {
        let (age, executor) = self.entries.remove(instance_id)?;
        self.by_age.remove(&age);
        Some(executor)
    }

    fn put(&mut self, instance_id: InstanceId, executor: OrchestrationExecutor) {
        if self.capacity == 0 {
            return;
        }
        self.take(&instance_id);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.clock += 1;
        self.by_age.insert(self.clock, instance_id.clone());
        self.entries.insert(instance_id, (self.clock, executor));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(registry: &Arc<Registry>, id: &str) -> (InstanceId, OrchestrationExecutor) {
        let id = InstanceId::new(id).expect("valid id");
        (id.clone(), OrchestrationExecutor::new(registry.clone(), id))
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let registry = Arc::new(Registry::builder().build().expect("empty registry"));
        let mut cache = ExecutorCache::new(2);
        let (a, ea) = executor(&registry, "a");
        let (b, eb) = executor(&registry, "b");
        let (c, ec) = executor(&registry, "c");
        cache.put(a.clone(), ea);
        cache.put(b.clone(), eb);
        // Using `a` makes `b` the oldest.
        let ea = cache.take(&a).expect("cached");
        cache.put(a.clone(), ea);
        cache.put(c.clone(), ec);
        assert_eq!(cache.len(), 2);
        assert!(cache.take(&b).is_none());
        assert!(cache.take(&a).is_some());
        assert!(cache.take(&c).is_some());
        assert_eq!(cache.len(), 0);

        let mut disabled = ExecutorCache::new(0);
        let (d, ed) = executor(&registry, "d");
        disabled.put(d.clone(), ed);
        assert!(disabled.take(&d).is_none());
    }
}
