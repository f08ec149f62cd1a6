//! [`OrchestrationContext`], the state it shares with the executor
//! ([`ContextState`]), and the durable futures it hands out.
//!
//! Every scheduling call issues an action with the next sequence id at the
//! moment it is called (not when first polled) and records it as pending
//! until the backend's confirming event is replayed. Completions are put in
//! per-action slots by the executor, one history event at a time, and the
//! futures read their slot when polled, so a future resolves only after the
//! executor has processed its completion event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::FusedFuture;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{OrchestrationError, decode_json, decode_raw, encode_json};
use crate::entity::EntityId;
use crate::history::{ActionKind, EventKind, HistoryEvent, OrchestratorAction};
use crate::types::{FailureDetails, InstanceId};

/// The outcome of an activity, timer, sub-orchestration or entity call.
pub(crate) type Outcome = Result<Option<String>, FailureDetails>;

/// An action issued by the code and not yet confirmed by history.
#[derive(Debug)]
pub(crate) struct PendingAction {
    /// The action.
    pub(crate) action: OrchestratorAction,
    /// Issued while replaying past events.
    pub(crate) replaying: bool,
    /// The executor step it was issued in.
    pub(crate) step: u64,
}

/// Where an activity, timer or sub-orchestration result waits for its future.
#[derive(Debug, Default)]
struct TaskSlot {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

/// The completion of action `id` once the executor has delivered it;
/// until then registers `cx`'s waker on the action's slot. Shared by every
/// future that waits on an action (calls, timers' tasks, lock requests).
fn take_completion(shared: &Shared, id: i32, cx: &Context<'_>) -> Poll<Outcome> {
    let mut state = shared.lock();
    let Some(slot) = state.slots.get_mut(&id) else {
        return Poll::Pending;
    };
    match slot.outcome.take() {
        Some(outcome) => {
            state.slots.remove(&id);
            Poll::Ready(outcome)
        }
        None => {
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Where an external event waits for its future.
#[derive(Debug)]
struct EventSlot {
    key: String,
    delivered: Option<(u64, HistoryEvent)>,
    waker: Option<Waker>,
}

/// The state an orchestration shares with its executor.
#[derive(Debug)]
pub(crate) struct ContextState {
    instance_id: InstanceId,
    /// Replaying past events (true) or processing new ones.
    pub(crate) replaying: bool,
    /// Timestamp of the latest processed `OrchestratorStarted`.
    pub(crate) current_time_ms: u64,
    /// The next action id.
    next_id: i32,
    guid_counter: u64,
    /// The executor step being processed.
    pub(crate) step: u64,
    /// Issued, unconfirmed actions by id (= issue order).
    pub(crate) pending: BTreeMap<i32, PendingAction>,
    slots: HashMap<i32, TaskSlot>,
    /// Waiting external-event futures per folded event name, oldest first.
    waiters: HashMap<String, VecDeque<u64>>,
    event_slots: HashMap<u64, EventSlot>,
    next_waiter: u64,
    /// Unconsumed external events per folded name: (arrival number, event).
    buffered: HashMap<String, VecDeque<(u64, HistoryEvent)>>,
    arrivals: u64,
    /// The custom status last set.
    pub(crate) custom_status: Option<String>,
    /// Set by `continue_as_new`: the new input.
    pub(crate) continue_as_new: Option<Option<String>>,
    /// The critical section: the lock requested (granted or not) and not
    /// yet released.
    lock: Option<HeldLock>,
}

/// A lock request of the orchestration that has not been released.
#[derive(Debug)]
struct HeldLock {
    /// The `LockEntities` action id.
    id: i32,
    /// Whether `EntityLockGranted` has been processed.
    granted: bool,
}

/// External event names match case-insensitively, as in Durable Task.
fn event_key(name: &str) -> String {
    name.to_lowercase()
}

impl ContextState {
    /// Fresh state for one execution of `instance_id`.
    pub(crate) fn new(instance_id: InstanceId) -> ContextState {
        ContextState {
            instance_id,
            replaying: true,
            current_time_ms: 0,
            next_id: 0,
            guid_counter: 0,
            step: 0,
            pending: BTreeMap::new(),
            slots: HashMap::new(),
            waiters: HashMap::new(),
            event_slots: HashMap::new(),
            next_waiter: 0,
            buffered: HashMap::new(),
            arrivals: 0,
            custom_status: None,
            continue_as_new: None,
            lock: None,
        }
    }

    /// Takes the next action id.
    pub(crate) fn take_id(&mut self) -> i32 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    /// Issues an action and returns its id.
    fn issue(&mut self, kind: ActionKind, with_slot: bool) -> i32 {
        let id = self.take_id();
        self.pending.insert(
            id,
            PendingAction {
                action: OrchestratorAction::new(id, kind),
                replaying: self.replaying,
                step: self.step,
            },
        );
        if with_slot {
            self.slots.insert(id, TaskSlot::default());
        }
        id
    }

    /// Records the outcome of action `id`; returns the waker to wake. An
    /// unknown id (its future was dropped, or a stray event) or a second
    /// outcome is ignored.
    pub(crate) fn complete_task(&mut self, id: i32, outcome: Outcome) -> Option<Waker> {
        let slot = self.slots.get_mut(&id)?;
        if slot.outcome.is_some() {
            return None;
        }
        slot.outcome = Some(outcome);
        slot.waker.take()
    }

    /// Processes `EntityLockGranted` for lock request `id`: the lock is
    /// held from now on (even if its [`LockTask`] was dropped); returns the
    /// waker to wake. A grant for another id is a stray event and ignored.
    pub(crate) fn grant_lock(&mut self, id: i32) -> Option<Waker> {
        match &mut self.lock {
            Some(lock) if lock.id == id && !lock.granted => lock.granted = true,
            _ => return None,
        }
        self.complete_task(id, Ok(None))
    }

    /// Delivers an `EventRaised` to the oldest waiter for its name, or
    /// buffers it; returns the waker to wake.
    pub(crate) fn deliver_event(&mut self, name: &str, event: &HistoryEvent) -> Option<Waker> {
        let key = event_key(name);
        let arrival = self.arrivals;
        self.arrivals += 1;
        let waiter = self.waiters.get_mut(&key).and_then(VecDeque::pop_front);
        match waiter.and_then(|waiter| self.event_slots.get_mut(&waiter)) {
            Some(slot) => {
                slot.delivered = Some((arrival, event.clone()));
                slot.waker.take()
            }
            None => {
                self.buffered
                    .entry(key)
                    .or_default()
                    .push_back((arrival, event.clone()));
                None
            }
        }
    }

    /// Registers a wait for an event; a buffered one is delivered at once.
    fn wait_event(&mut self, name: &str) -> u64 {
        let key = event_key(name);
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        let delivered = self.buffered.get_mut(&key).and_then(VecDeque::pop_front);
        if delivered.is_none() {
            self.waiters
                .entry(key.clone())
                .or_default()
                .push_back(waiter);
        }
        self.event_slots.insert(
            waiter,
            EventSlot {
                key,
                delivered,
                waker: None,
            },
        );
        waiter
    }

    /// Forgets a dropped event future: a delivered but unread event goes
    /// back to the buffer (in arrival order), an undelivered wait is removed.
    fn forget_waiter(&mut self, waiter: u64) {
        let Some(slot) = self.event_slots.remove(&waiter) else {
            return;
        };
        match slot.delivered {
            Some((arrival, event)) => {
                let queue = self.buffered.entry(slot.key).or_default();
                let at = queue.partition_point(|(other, _)| *other < arrival);
                queue.insert(at, (arrival, event));
            }
            None => {
                if let Some(queue) = self.waiters.get_mut(&slot.key) {
                    queue.retain(|other| *other != waiter);
                }
            }
        }
    }

    /// The unconsumed external events, in arrival order.
    pub(crate) fn carryover_events(&self) -> Vec<HistoryEvent> {
        let mut events: Vec<&(u64, HistoryEvent)> = self.buffered.values().flatten().collect();
        events.sort_unstable_by_key(|(arrival, _)| *arrival);
        events.into_iter().map(|(_, event)| event.clone()).collect()
    }
}

type Shared = Arc<Mutex<ContextState>>;

/// Retry policy of [`OrchestrationContext::call_activity_with_retry`]:
/// attempt `n + 1` starts `first_retry_interval_ms * backoff_coefficient^(n-1)`
/// ms (capped at `max_retry_interval_ms`) after attempt `n` failed, on a
/// durable timer. Failures marked `is_non_retriable` are not retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (0 counts as 1).
    pub max_attempts: u32,
    /// Delay before the first retry, in ms.
    pub first_retry_interval_ms: u64,
    /// Factor applied to the delay after each retry (values below 1, and
    /// NaN, count as 1).
    pub backoff_coefficient: f64,
    /// Upper bound of the delay, in ms.
    pub max_retry_interval_ms: Option<u64>,
}

impl RetryPolicy {
    /// `max_attempts` attempts, `first_retry_interval_ms` apart, no backoff.
    pub fn new(max_attempts: u32, first_retry_interval_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            first_retry_interval_ms,
            backoff_coefficient: 1.0,
            max_retry_interval_ms: None,
        }
    }

    /// The same policy with an exponential backoff coefficient.
    pub fn with_backoff(mut self, coefficient: f64) -> RetryPolicy {
        self.backoff_coefficient = coefficient;
        self
    }

    /// The same policy with a cap on the delay.
    pub fn with_max_interval_ms(mut self, max_retry_interval_ms: u64) -> RetryPolicy {
        self.max_retry_interval_ms = Some(max_retry_interval_ms);
        self
    }

    /// The delay before attempt `failed_attempts + 1`, in ms.
    pub fn delay_ms(&self, failed_attempts: u32) -> u64 {
        let coefficient = if self.backoff_coefficient >= 1.0 {
            self.backoff_coefficient
        } else {
            1.0
        };
        let exponent = i32::try_from(failed_attempts.saturating_sub(1)).unwrap_or(i32::MAX);
        let delay = self.first_retry_interval_ms as f64 * coefficient.powi(exponent);
        // `as` saturates (and maps NaN to 0), which is what we want here.
        let delay = delay as u64;
        match self.max_retry_interval_ms {
            Some(cap) => delay.min(cap),
            None => delay,
        }
    }
}

/// An orchestration's handle on the durable world. Cheap to clone; all
/// clones share one state.
///
/// Orchestration code must be deterministic: the same history must make it
/// issue the same calls in the same order. Use [`current_time`] and
/// [`new_guid`] instead of the clock and random numbers, and do I/O in
/// activities. The futures it returns are driven by the executor only: do
/// not spawn them onto a runtime.
///
/// [`current_time`]: OrchestrationContext::current_time
/// [`new_guid`]: OrchestrationContext::new_guid
#[derive(Clone)]
pub struct OrchestrationContext {
    shared: Shared,
}

impl fmt::Debug for OrchestrationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("OrchestrationContext")
            .field("instance_id", &state.instance_id)
            .field("is_replaying", &state.replaying)
            .field("current_time_ms", &state.current_time_ms)
            .finish_non_exhaustive()
    }
}

impl OrchestrationContext {
    pub(crate) fn new(shared: Shared) -> OrchestrationContext {
        OrchestrationContext { shared }
    }

    /// The instance id.
    pub fn instance_id(&self) -> InstanceId {
        self.shared.lock().instance_id.clone()
    }

    /// True while the executor replays history the code already acted on
    /// (e.g. to skip logging duplicates); false for new events.
    pub fn is_replaying(&self) -> bool {
        self.shared.lock().replaying
    }

    /// The deterministic current time, in ms since the Unix epoch: the
    /// timestamp of the step being processed (its `OrchestratorStarted`).
    pub fn current_time(&self) -> u64 {
        self.shared.lock().current_time_ms
    }

    /// A deterministic, UUID-shaped id (RFC 9562 version 8, "custom"): a
    /// 128-bit FNV-1a hash of the instance id, the current time and a
    /// per-execution counter. Replays produce the same sequence.
    pub fn new_guid(&self) -> String {
        let mut state = self.shared.lock();
        let counter = state.guid_counter;
        state.guid_counter += 1;
        let name = format!(
            "{}\u{1f}{}\u{1f}{counter}",
            state.instance_id, state.current_time_ms
        );
        drop(state);
        format_uuid_v8(fnv1a_128(name.as_bytes()))
    }

    /// Schedules activity `name` with a serde input; the task resolves to its
    /// decoded output, or [`OrchestrationError::ActivityFailed`].
    pub fn call_activity<I, O>(&self, name: &str, input: &I) -> Task<O>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        match encode_json(input) {
            Ok(input) => self.schedule_activity(name, input, decode_json::<O>),
            Err(error) => Task::ready(Err(error)),
        }
    }

    /// Schedules activity `name` with JSON text; the task resolves to its
    /// JSON output.
    pub fn call_activity_raw(&self, name: &str, input: Option<String>) -> Task<Option<String>> {
        self.schedule_activity(name, input, decode_raw)
    }

    fn schedule_activity<T>(
        &self,
        name: &str,
        input: Option<String>,
        decode: Decoder<T>,
    ) -> Task<T> {
        let kind = ActionKind::ScheduleTask {
            name: name.to_owned(),
            version: None,
            input,
        };
        let id = self.shared.lock().issue(kind, true);
        Task::waiting(
            self.shared.clone(),
            id,
            TaskOrigin::Activity(name.to_owned()),
            decode,
        )
    }

    /// Calls activity `name`, retrying failed attempts after durable timers
    /// as `policy` says. Deterministic: each attempt is an ordinary activity
    /// call and each wait an ordinary timer, all recorded in history.
    pub fn call_activity_with_retry<I, O>(
        &self,
        name: &str,
        input: &I,
        policy: RetryPolicy,
    ) -> impl Future<Output = Result<O, OrchestrationError>> + Send + 'static
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned + Send + 'static,
    {
        let encoded = encode_json(input);
        let retried = encoded.map(|input| self.call_activity_with_retry_raw(name, input, policy));
        async move { decode_json(retried?.await?) }
    }

    /// [`call_activity_with_retry`](Self::call_activity_with_retry) with JSON
    /// text in and out.
    pub fn call_activity_with_retry_raw(
        &self,
        name: &str,
        input: Option<String>,
        policy: RetryPolicy,
    ) -> impl Future<Output = Result<Option<String>, OrchestrationError>> + Send + 'static {
        let ctx = self.clone();
        let name = name.to_owned();
        async move {
            let mut failed_attempts: u32 = 0;
            loop {
                let error = match ctx.call_activity_raw(&name, input.clone()).await {
                    Ok(output) => return Ok(output),
                    Err(error) => error,
                };
                failed_attempts = failed_attempts.saturating_add(1);
                let retriable = error.details().is_none_or(|d| !d.is_non_retriable);
                if !retriable || failed_attempts >= policy.max_attempts.max(1) {
                    return Err(error);
                }
                let delay = policy.delay_ms(failed_attempts);
                ctx.sleep(Duration::from_millis(delay)).await;
            }
        }
    }

    /// Starts a durable timer that fires at `fire_at_ms` (ms since the Unix
    /// epoch).
    pub fn create_timer(&self, fire_at_ms: u64) -> Timer {
        let id = self
            .shared
            .lock()
            .issue(ActionKind::CreateTimer { fire_at_ms }, true);
        Timer {
            shared: self.shared.clone(),
            id,
            done: false,
        }
    }

    /// A durable timer that fires `duration` after [`current_time`](Self::current_time).
    pub fn sleep(&self, duration: Duration) -> Timer {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let fire_at_ms = self.current_time().saturating_add(millis);
        self.create_timer(fire_at_ms)
    }

    /// Waits for the next external event called `name` (case-insensitive)
    /// and decodes its data. Events of one name are consumed in arrival
    /// order, one per wait; events that arrive while nobody waits are
    /// buffered. Dropping the future before reading it returns its event,
    /// if any, to the buffer.
    pub fn wait_for_external_event<T: DeserializeOwned>(&self, name: &str) -> ExternalEvent<T> {
        let waiter = self.shared.lock().wait_event(name);
        ExternalEvent {
            shared: self.shared.clone(),
            waiter,
            decode: decode_json::<T>,
            done: false,
            _output: PhantomData,
        }
    }

    /// [`wait_for_external_event`](Self::wait_for_external_event) yielding the
    /// data as JSON text.
    pub fn wait_for_external_event_raw(&self, name: &str) -> ExternalEvent<Option<String>> {
        let waiter = self.shared.lock().wait_event(name);
        ExternalEvent {
            shared: self.shared.clone(),
            waiter,
            decode: decode_raw,
            done: false,
            _output: PhantomData,
        }
    }

    /// Starts orchestration `name` as a child. Without an `instance_id` the
    /// child's id is `"{parent id}:{action id}"`, deterministic under replay.
    /// The task resolves to the child's decoded output, or
    /// [`OrchestrationError::SubOrchestrationFailed`].
    pub fn call_sub_orchestration<I, O>(
        &self,
        name: &str,
        instance_id: Option<&str>,
        input: &I,
    ) -> Task<O>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        match encode_json(input) {
            Ok(input) => {
                self.schedule_sub_orchestration(name, instance_id, input, decode_json::<O>)
            }
            Err(error) => Task::ready(Err(error)),
        }
    }

    /// [`call_sub_orchestration`](Self::call_sub_orchestration) with JSON text
    /// in and out.
    pub fn call_sub_orchestration_raw(
        &self,
        name: &str,
        instance_id: Option<&str>,
        input: Option<String>,
    ) -> Task<Option<String>> {
        self.schedule_sub_orchestration(name, instance_id, input, decode_raw)
    }

    fn schedule_sub_orchestration<T>(
        &self,
        name: &str,
        instance_id: Option<&str>,
        input: Option<String>,
        decode: Decoder<T>,
    ) -> Task<T> {
        let mut state = self.shared.lock();
        let child_id = match instance_id {
            Some(id) => id.to_owned(),
            None => format!("{}:{}", state.instance_id, state.next_id),
        };
        let kind = ActionKind::CreateSubOrchestration {
            instance_id: child_id.clone(),
            name: name.to_owned(),
            version: None,
            input,
        };
        let id = state.issue(kind, true);
        drop(state);
        Task::waiting(
            self.shared.clone(),
            id,
            TaskOrigin::SubOrchestration {
                name: name.to_owned(),
                instance_id: child_id,
            },
            decode,
        )
    }

    /// Ends this execution and starts a new one of the same instance with
    /// `input`: the instance status becomes ContinuedAsNew and external
    /// events not consumed yet are carried into the new execution. The
    /// execution ends as soon as the orchestration future yields or returns;
    /// whatever it returns afterwards is ignored.
    pub fn continue_as_new<I: Serialize + ?Sized>(
        &self,
        input: &I,
    ) -> Result<(), OrchestrationError> {
        let input = encode_json(input)?;
        self.continue_as_new_raw(input);
        Ok(())
    }

    /// [`continue_as_new`](Self::continue_as_new) with JSON text.
    pub fn continue_as_new_raw(&self, input: Option<String>) {
        self.shared.lock().continue_as_new = Some(input);
    }

    /// Sets the custom status clients see (a serde value).
    pub fn set_custom_status<S: Serialize + ?Sized>(
        &self,
        status: &S,
    ) -> Result<(), OrchestrationError> {
        let status = encode_json(status)?;
        self.set_custom_status_raw(status);
        Ok(())
    }

    /// Sets (or with `None` clears) the custom status as JSON text.
    pub fn set_custom_status_raw(&self, status: Option<String>) {
        self.shared.lock().custom_status = status;
    }

    /// Raises event `name` with serde `data` on another instance
    /// (fire-and-forget).
    pub fn send_event<D: Serialize + ?Sized>(
        &self,
        instance_id: &str,
        name: &str,
        data: &D,
    ) -> Result<(), OrchestrationError> {
        let data = encode_json(data)?;
        self.send_event_raw(instance_id, name, data);
        Ok(())
    }

    /// [`send_event`](Self::send_event) with JSON text.
    pub fn send_event_raw(&self, instance_id: &str, name: &str, data: Option<String>) {
        let kind = ActionKind::SendEvent {
            instance_id: instance_id.to_owned(),
            name: name.to_owned(),
            data,
        };
        self.shared.lock().issue(kind, false);
    }

    /// Queues operation `operation` with a serde `input` on entity `entity`,
    /// one-way: nothing waits for it, and its result or failure is not
    /// reported back. Issues a `SignalEntity` action, which history confirms
    /// with `EntityOperationSignaled`.
    pub fn signal_entity<I: Serialize + ?Sized>(
        &self,
        entity: &EntityId,
        operation: &str,
        input: &I,
    ) -> Result<(), OrchestrationError> {
        let input = encode_json(input)?;
        self.signal_entity_raw(entity, operation, input);
        Ok(())
    }

    /// [`signal_entity`](Self::signal_entity) with JSON text (or no input).
    pub fn signal_entity_raw(&self, entity: &EntityId, operation: &str, input: Option<String>) {
        let kind = ActionKind::SignalEntity {
            entity: entity.to_string(),
            operation: operation.to_owned(),
            input,
            scheduled_ms: None,
        };
        self.shared.lock().issue(kind, false);
    }

    /// Calls operation `operation` with a serde `input` on entity `entity`.
    /// The task resolves to the operation's decoded output once history
    /// records `EntityOperationCompleted`, or to
    /// [`OrchestrationError::EntityFailed`] on `EntityOperationFailed`.
    /// Like activity tasks, entity tasks can be combined with `join_all`
    /// and `select`.
    pub fn call_entity<I, O>(&self, entity: &EntityId, operation: &str, input: &I) -> Task<O>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        match encode_json(input) {
            Ok(input) => self.schedule_entity_call(entity, operation, input, decode_json::<O>),
            Err(error) => Task::ready(Err(error)),
        }
    }

    /// [`call_entity`](Self::call_entity) with JSON text in and out.
    pub fn call_entity_raw(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Option<String>,
    ) -> Task<Option<String>> {
        self.schedule_entity_call(entity, operation, input, decode_raw)
    }

    fn schedule_entity_call<T>(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Option<String>,
        decode: Decoder<T>,
    ) -> Task<T> {
        let entity = entity.to_string();
        let kind = ActionKind::CallEntity {
            entity: entity.clone(),
            operation: operation.to_owned(),
            input,
        };
        let id = self.shared.lock().issue(kind, true);
        Task::waiting(
            self.shared.clone(),
            id,
            TaskOrigin::Entity {
                entity,
                operation: operation.to_owned(),
            },
            decode,
        )
    }
}

impl OrchestrationContext {
    /// Enters a critical section: locks `entities` for this orchestration.
    ///
    /// The ids are sorted and deduplicated (by their `@name@key` form, the
    /// global order that keeps two orchestrations locking overlapping sets
    /// from deadlocking) and issued at once as a `LockEntities` action,
    /// which history confirms with `EntityLockRequested` (the entity list
    /// must match, else the replay fails with `NonDeterminismError`). The
    /// task resolves to a [`LockGuard`] once the executor processes the
    /// backend's `EntityLockGranted`; like other tasks it works with
    /// `join_all` and `select`.
    ///
    /// While the locks are held, the backend runs only this orchestration's
    /// operations on those entities: [`call_entity`](Self::call_entity)
    /// works unchanged, everyone else's operations wait.
    ///
    /// The task resolves at once (issuing nothing) to
    /// [`OrchestrationError::EntityLock`] if `entities` is empty, or if
    /// this orchestration already has a lock request that it has not
    /// released: critical sections do not nest. That includes a request
    /// whose task was dropped before it was granted (e.g. the losing side
    /// of a `select`): the backend still grants it, and the entities stay
    /// locked, with no guard to release them, until the execution ends.
    pub fn lock_entities(&self, entities: &[EntityId]) -> LockTask {
        let mut names: Vec<String> = entities.iter().map(ToString::to_string).collect();
        names.sort_unstable();
        names.dedup();
        let mut state = self.shared.lock();
        if names.is_empty() {
            return LockTask::ready(Err(OrchestrationError::EntityLock(
                "lock_entities needs at least one entity".to_owned(),
            )));
        }
        if let Some(held) = &state.lock {
            return LockTask::ready(Err(OrchestrationError::EntityLock(format!(
                "critical sections do not nest: the lock requested as action {} is not \
                 released",
                held.id
            ))));
        }
        let kind = ActionKind::LockEntities {
            entities: names.clone(),
        };
        let id = state.issue(kind, true);
        state.lock = Some(HeldLock { id, granted: false });
        drop(state);
        LockTask {
            state: LockTaskState::Waiting {
                shared: self.shared.clone(),
                id,
                entities: names,
            },
        }
    }

    /// Leaves the critical section of `guard`: issues an `UnlockEntities`
    /// action for its entities (confirmed by `EntityUnlockSent`) and lets
    /// this orchestration lock again. There is no future to await: the
    /// backend releases the entities in order with this orchestration's
    /// earlier operations on them.
    ///
    /// Releasing a guard a second time does nothing, and so does releasing
    /// a guard of another execution. A guard dropped without being released
    /// does nothing either: the entities stay locked until the execution
    /// ends (completes, fails, continues as new or is terminated), when the
    /// backend releases every lock it holds.
    pub fn unlock(&self, guard: &mut LockGuard) {
        if guard.released {
            return;
        }
        guard.released = true;
        if !Arc::ptr_eq(&self.shared, &guard.shared) {
            return;
        }
        let mut state = self.shared.lock();
        if state.lock.as_ref().is_none_or(|held| held.id != guard.id) {
            return;
        }
        state.lock = None;
        let kind = ActionKind::UnlockEntities {
            entities: guard.entities.clone(),
        };
        state.issue(kind, false);
    }

    /// Whether this orchestration is in a critical section: it holds
    /// granted entity locks that it has not released.
    pub fn is_in_critical_section(&self) -> bool {
        self.shared
            .lock()
            .lock
            .as_ref()
            .is_some_and(|held| held.granted)
    }
}

/// The entities an orchestration holds locked (a critical section), from
/// [`OrchestrationContext::lock_entities`]. Release it with
/// [`OrchestrationContext::unlock`] or [`LockGuard::release`]; dropping it
/// does not release anything (the backend releases all locks when the
/// execution ends).
#[must_use = "dropping a lock guard does not release the locks; call unlock"]
pub struct LockGuard {
    shared: Shared,
    id: i32,
    entities: Vec<String>,
    released: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("action_id", &self.id)
            .field("entities", &self.entities)
            .field("released", &self.released)
            .finish()
    }
}

impl LockGuard {
    /// The locked entities, as `@name@key`, sorted and without duplicates.
    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// The id of the `LockEntities` action that took the locks.
    pub fn action_id(&self) -> i32 {
        self.id
    }

    /// Whether the guard was released.
    pub fn is_released(&self) -> bool {
        self.released
    }

    /// Same as [`OrchestrationContext::unlock`]`(self)`.
    pub fn release(&mut self, ctx: &OrchestrationContext) {
        ctx.unlock(self);
    }
}

enum LockTaskState {
    Ready(Option<Result<LockGuard, OrchestrationError>>),
    Waiting {
        shared: Shared,
        id: i32,
        entities: Vec<String>,
    },
    Done,
}

/// A lock request from [`OrchestrationContext::lock_entities`]: resolves to
/// a [`LockGuard`] once the executor processes the request's
/// `EntityLockGranted`. `Unpin`, `Send`, and fused, like [`Task`].
#[must_use = "a lock request does nothing observable unless awaited"]
pub struct LockTask {
    state: LockTaskState,
}

impl fmt::Debug for LockTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            LockTaskState::Ready(_) => f.write_str("LockTask(ready)"),
            LockTaskState::Waiting { id, entities, .. } => {
                write!(f, "LockTask(action {id}, {entities:?})")
            }
            LockTaskState::Done => f.write_str("LockTask(done)"),
        }
    }
}

impl LockTask {
    fn ready(result: Result<LockGuard, OrchestrationError>) -> LockTask {
        LockTask {
            state: LockTaskState::Ready(Some(result)),
        }
    }

    /// The id of the `LockEntities` action (`None` if the request was
    /// refused before issuing anything).
    pub fn action_id(&self) -> Option<i32> {
        match &self.state {
            LockTaskState::Waiting { id, .. } => Some(*id),
            LockTaskState::Ready(_) | LockTaskState::Done => None,
        }
    }
}

impl Future for LockTask {
    type Output = Result<LockGuard, OrchestrationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match &mut this.state {
            LockTaskState::Ready(result) => {
                let result = result.take();
                this.state = LockTaskState::Done;
                return match result {
                    Some(result) => Poll::Ready(result),
                    None => Poll::Pending,
                };
            }
            LockTaskState::Done => return Poll::Pending,
            LockTaskState::Waiting { shared, id, .. } => match take_completion(shared, *id, cx) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => return Poll::Pending,
            },
        };
        let LockTaskState::Waiting {
            shared,
            id,
            entities,
        } = std::mem::replace(&mut this.state, LockTaskState::Done)
        else {
            return Poll::Pending;
        };
        Poll::Ready(match outcome {
            Ok(_) => Ok(LockGuard {
                shared,
                id,
                entities,
                released: false,
            }),
            Err(details) => Err(OrchestrationError::EntityLock(details.message)),
        })
    }
}

impl FusedFuture for LockTask {
    fn is_terminated(&self) -> bool {
        matches!(self.state, LockTaskState::Done)
    }
}

impl Drop for LockTask {
    fn drop(&mut self) {
        if let LockTaskState::Waiting { shared, id, .. } = &self.state {
            shared.lock().slots.remove(id);
        }
    }
}

/// 128-bit FNV-1a.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Formats 128 bits as a version-8, RFC-variant UUID string.
fn format_uuid_v8(bits: u128) -> String {
    let bits = (bits & !(0xf << 76)) | (0x8 << 76);
    let bits = (bits & !(0b11 << 62)) | (0b10 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Turns a JSON payload into a task's output.
type Decoder<T> = fn(Option<String>) -> Result<T, OrchestrationError>;

/// What a [`Task`] waits for, to name it in errors.
#[derive(Debug)]
enum TaskOrigin {
    Activity(String),
    SubOrchestration { name: String, instance_id: String },
    Entity { entity: String, operation: String },
}

#[derive(Debug)]
enum TaskState<T> {
    Ready(Option<Result<T, OrchestrationError>>),
    Waiting {
        shared: Shared,
        id: i32,
        origin: TaskOrigin,
        decode: Decoder<T>,
    },
    Done,
}

/// The result of an activity, sub-orchestration or entity call: a future that
/// resolves once the executor processes the call's completion event.
/// `Unpin`, `Send`, and fused, so it works with `join_all`, `select`,
/// `select_all` and `futures::select!`.
#[must_use = "a task does nothing observable unless awaited"]
pub struct Task<T> {
    state: TaskState<T>,
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            TaskState::Ready(_) => f.write_str("Task(ready)"),
            TaskState::Waiting { id, origin, .. } => {
                write!(f, "Task(action {id}, {origin:?})")
            }
            TaskState::Done => f.write_str("Task(done)"),
        }
    }
}

impl<T> Task<T> {
    fn ready(result: Result<T, OrchestrationError>) -> Task<T> {
        Task {
            state: TaskState::Ready(Some(result)),
        }
    }

    fn waiting(shared: Shared, id: i32, origin: TaskOrigin, decode: Decoder<T>) -> Task<T> {
        Task {
            state: TaskState::Waiting {
                shared,
                id,
                origin,
                decode,
            },
        }
    }

    /// The id of the action this task waits for (`None` if it failed before
    /// scheduling anything, e.g. on an unserializable input).
    pub fn action_id(&self) -> Option<i32> {
        match &self.state {
            TaskState::Waiting { id, .. } => Some(*id),
            TaskState::Ready(_) | TaskState::Done => None,
        }
    }
}

// The output is never pinned: it is moved out whole.
impl<T> Unpin for Task<T> {}

impl<T> Future for Task<T> {
    type Output = Result<T, OrchestrationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match &mut this.state {
            TaskState::Ready(result) => {
                let result = result.take();
                this.state = TaskState::Done;
                return match result {
                    Some(result) => Poll::Ready(result),
                    None => Poll::Pending,
                };
            }
            TaskState::Done => return Poll::Pending,
            TaskState::Waiting { shared, id, .. } => match take_completion(shared, *id, cx) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => return Poll::Pending,
            },
        };
        let TaskState::Waiting { origin, decode, .. } =
            std::mem::replace(&mut this.state, TaskState::Done)
        else {
            return Poll::Pending;
        };
        Poll::Ready(match outcome {
            Ok(output) => decode(output),
            Err(details) => Err(match origin {
                TaskOrigin::Activity(name) => OrchestrationError::ActivityFailed {
                    name,
                    details: Box::new(details),
                },
                TaskOrigin::SubOrchestration { name, instance_id } => {
                    OrchestrationError::SubOrchestrationFailed {
                        name,
                        instance_id,
                        details: Box::new(details),
                    }
                }
                TaskOrigin::Entity { entity, operation } => OrchestrationError::EntityFailed {
                    entity,
                    operation,
                    details: Box::new(details),
                },
            }),
        })
    }
}

impl<T> FusedFuture for Task<T> {
    fn is_terminated(&self) -> bool {
        matches!(self.state, TaskState::Done)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let TaskState::Waiting { shared, id, .. } = &self.state {
            shared.lock().slots.remove(id);
        }
    }
}

/// A durable timer: resolves once the executor processes its `TimerFired`.
#[must_use = "a timer does nothing observable unless awaited"]
pub struct Timer {
    shared: Shared,
    id: i32,
    done: bool,
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timer(action {}, done: {})", self.id, self.done)
    }
}

impl Timer {
    /// The id of the timer's `CreateTimer` action.
    pub fn action_id(&self) -> i32 {
        self.id
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Pending;
        }
        let mut state = this.shared.lock();
        let Some(slot) = state.slots.get_mut(&this.id) else {
            return Poll::Pending;
        };
        if slot.outcome.take().is_some() {
            state.slots.remove(&this.id);
            this.done = true;
            Poll::Ready(())
        } else {
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl FusedFuture for Timer {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().slots.remove(&self.id);
        }
    }
}

/// An external event wait: resolves to the event's decoded data once the
/// executor has processed (or had buffered) a matching `EventRaised`.
#[must_use = "an event wait does nothing observable unless awaited"]
pub struct ExternalEvent<T> {
    shared: Shared,
    waiter: u64,
    decode: Decoder<T>,
    done: bool,
    _output: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for ExternalEvent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ExternalEvent(waiter {}, done: {})",
            self.waiter, self.done
        )
    }
}

impl<T> Future for ExternalEvent<T> {
    type Output = Result<T, OrchestrationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Pending;
        }
        let mut state = this.shared.lock();
        let Some(slot) = state.event_slots.get_mut(&this.waiter) else {
            return Poll::Pending;
        };
        match slot.delivered.take() {
            Some((_, event)) => {
                state.event_slots.remove(&this.waiter);
                drop(state);
                this.done = true;
                let data = match event.kind {
                    EventKind::EventRaised { input, .. } => input,
                    _ => None,
                };
                Poll::Ready((this.decode)(data))
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> FusedFuture for ExternalEvent<T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> Drop for ExternalEvent<T> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().forget_waiter(self.waiter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_uuid_shaped_and_deterministic() {
        let a = format_uuid_v8(fnv1a_128(b"x"));
        assert_eq!(a, format_uuid_v8(fnv1a_128(b"x")));
        assert_ne!(a, format_uuid_v8(fnv1a_128(b"y")));
        assert_eq!(a.len(), 36);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('8'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    }

    #[test]
    fn retry_delays_back_off_and_cap() {
        let policy = RetryPolicy::new(5, 100)
            .with_backoff(2.0)
            .with_max_interval_ms(350);
        let delays: Vec<u64> = (1..=4).map(|n| policy.delay_ms(n)).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        let no_backoff = RetryPolicy::new(3, 10).with_backoff(0.5);
        assert_eq!(no_backoff.delay_ms(3), 10);
        let nan = RetryPolicy::new(3, 10).with_backoff(f64::NAN);
        assert_eq!(nan.delay_ms(3), 10);
    }
}
