//! Entities in the SDK: what an entity operation receives
//! ([`EntityContext`]) and fails with ([`EntityError`]), and how a
//! [`Registry`] runs a batch of operations
//! ([`Registry::run_entity_batch`]).
//!
//! An entity function runs once per operation. Its context holds the
//! entity's state (JSON text) as the previous successful operations of the
//! batch left it; the function reads it ([`EntityContext::state`],
//! [`EntityContext::state_raw`]), replaces it ([`EntityContext::set_state`],
//! [`EntityContext::set_state_raw`]) or removes it
//! ([`EntityContext::delete`]), and may signal other entities
//! ([`EntityContext::signal_entity`]). Those changes take effect only if the
//! operation succeeds: a failed or panicking operation leaves the state as
//! it was before it and sends none of its signals.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::error::SERIALIZATION_ERROR;
use super::registry::{RawResult, Registry, error_details, panic_message};
use crate::entity::{
    EntityBatchResult, EntityId, EntityOperation, EntitySignal, EntityStartedOrchestration,
    EntityWorkItem, OperationResult,
};
use crate::types::{FailureDetails, InstanceId};

/// `error_type` of the operations of an entity no function is registered
/// for (non-retriable).
pub const ENTITY_NOT_FOUND: &str = "EntityNotFound";

/// `error_type` of [`EntityError::unknown_operation`] (non-retriable).
pub const UNKNOWN_OPERATION: &str = "UnknownOperation";

/// `error_type` of an operation that panicked.
const PANIC: &str = "Panic";

/// A registered entity, type-erased.
pub(crate) type EntityFn =
    Arc<dyn Fn(EntityContext, EntityOperation) -> BoxFuture<'static, RawResult> + Send + Sync>;

/// What one entity operation sees and changes: the entity's identity, the
/// operation's name, the entity's state, and the signals it sends.
///
/// A context belongs to one operation. Cloning it is cheap and every clone
/// shares the same state. Once the operation has returned, the context is
/// closed: it reads as having no state and ignores writes and signals (so a
/// task that outlives its operation cannot change the entity).
#[derive(Clone)]
pub struct EntityContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    entity: EntityId,
    operation: String,
    work: Mutex<OperationWork>,
}

/// The mutable part of a context.
#[derive(Default)]
struct OperationWork {
    /// The state before the operation.
    before: Option<String>,
    /// What the operation set the state to, if it set it.
    written: Option<Option<String>>,
    /// The signals it sent, in order.
    signals: Vec<EntitySignal>,
    /// The orchestrations it started, in order.
    orchestrations: Vec<EntityStartedOrchestration>,
    /// Whether the operation is still running.
    open: bool,
}

impl OperationWork {
    fn current(&self) -> Option<&str> {
        match &self.written {
            Some(written) => written.as_deref(),
            None => self.before.as_deref(),
        }
    }
}

impl fmt::Debug for EntityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityContext")
            .field("entity", &self.inner.entity)
            .field("operation", &self.inner.operation)
            .finish_non_exhaustive()
    }
}

impl EntityContext {
    fn new(entity: EntityId, operation: String, state: Option<String>) -> EntityContext {
        EntityContext {
            inner: Arc::new(ContextInner {
                entity,
                operation,
                work: Mutex::new(OperationWork {
                    before: state,
                    open: true,
                    ..OperationWork::default()
                }),
            }),
        }
    }

    /// Closes the context and takes what the operation did.
    fn finish(&self) -> OperationWork {
        std::mem::take(&mut *self.inner.work.lock())
    }

    /// Applies a change unless the operation has ended.
    fn change(&self, what: &str, change: impl FnOnce(&mut OperationWork)) {
        let mut work = self.inner.work.lock();
        if work.open {
            change(&mut work);
        } else {
            debug!(
                entity = %self.inner.entity,
                operation = %self.inner.operation,
                "{what} after the operation ended is ignored"
            );
        }
    }

    /// The entity this operation runs on.
    pub fn entity_id(&self) -> &EntityId {
        &self.inner.entity
    }

    /// The operation's name.
    pub fn operation_name(&self) -> &str {
        &self.inner.operation
    }

    /// The current state as JSON text; `None` if the entity has none.
    pub fn state_raw(&self) -> Option<String> {
        self.inner.work.lock().current().map(str::to_owned)
    }

    /// Whether the entity currently has a state.
    pub fn has_state(&self) -> bool {
        self.inner.work.lock().current().is_some()
    }

    /// The current state as an `S`; `S::default()` if the entity has none.
    /// A state that does not deserialize as `S` is a non-retriable
    /// `SerializationError`.
    pub fn state<S: DeserializeOwned + Default>(&self) -> Result<S, EntityError> {
        let work = self.inner.work.lock();
        match work.current() {
            None => Ok(S::default()),
            Some(text) => serde_json::from_str(text).map_err(|error| {
                EntityError::new(
                    SERIALIZATION_ERROR,
                    format!(
                        "the state of {} is not a {}: {error}",
                        self.inner.entity,
                        std::any::type_name::<S>()
                    ),
                )
                .non_retriable()
            }),
        }
    }

    /// Replaces the state with `state` (as JSON). A value that does not
    /// serialize is a non-retriable `SerializationError` and leaves the
    /// state as it was.
    pub fn set_state<S: Serialize + ?Sized>(&self, state: &S) -> Result<(), EntityError> {
        let text = encode(state)?;
        self.set_state_raw(Some(text));
        Ok(())
    }

    /// Replaces the state with JSON text, or removes it with `None`. The
    /// text is stored as given; it should be valid JSON.
    pub fn set_state_raw(&self, state: Option<String>) {
        self.change("setting the state", |work| work.written = Some(state));
    }

    /// Removes the state: the entity has none after this operation (unless
    /// the operation sets it again), and an entity without state and
    /// without queued operations ceases to exist.
    pub fn delete(&self) {
        self.set_state_raw(None);
    }

    /// Sends `operation` with `input` (as JSON) to `entity`, one-way. The
    /// signal is sent only if this operation succeeds, after the batch
    /// completes. An input that does not serialize is a non-retriable
    /// `SerializationError` and sends nothing.
    pub fn signal_entity<I: Serialize + ?Sized>(
        &self,
        entity: &EntityId,
        operation: impl Into<String>,
        input: &I,
    ) -> Result<(), EntityError> {
        let input = encode(input)?;
        self.signal_entity_raw(entity, operation, Some(input));
        Ok(())
    }

    /// Sends `operation` with a JSON-text input to `entity`, one-way; like
    /// [`EntityContext::signal_entity`].
    pub fn signal_entity_raw(
        &self,
        entity: &EntityId,
        operation: impl Into<String>,
        input: Option<String>,
    ) {
        self.push_signal(entity, operation.into(), input, None);
    }

    /// Sends `operation` to `entity`, delivered not before `at_ms` (ms
    /// since the Unix epoch): a durable timer at the receiver, so an
    /// entity can wake itself (or another) up later. Sent only if the
    /// operation succeeds.
    pub fn signal_entity_at<I: Serialize + ?Sized>(
        &self,
        entity: &EntityId,
        operation: impl Into<String>,
        input: &I,
        at_ms: u64,
    ) -> Result<(), EntityError> {
        let input = encode(input)?;
        self.push_signal(entity, operation.into(), Some(input), Some(at_ms));
        Ok(())
    }

    fn push_signal(
        &self,
        entity: &EntityId,
        operation: String,
        input: Option<String>,
        scheduled_ms: Option<u64>,
    ) {
        let signal = EntitySignal {
            entity: entity.clone(),
            operation: EntityOperation {
                name: operation,
                input,
            },
            scheduled_ms,
        };
        self.change("sending a signal", |work| work.signals.push(signal));
    }

    /// Starts orchestration `name` with `input` as instance `instance_id`,
    /// fire and forget, if the operation succeeds. A start for an id that
    /// is already running is dropped; a finished instance is replaced.
    pub fn start_orchestration<I: Serialize + ?Sized>(
        &self,
        name: impl Into<String>,
        instance_id: &InstanceId,
        input: &I,
    ) -> Result<(), EntityError> {
        let start = EntityStartedOrchestration {
            instance_id: instance_id.clone(),
            name: name.into(),
            version: None,
            input: Some(encode(input)?),
            scheduled_start_ms: None,
        };
        self.change("starting an orchestration", |work| {
            work.orchestrations.push(start)
        });
        Ok(())
    }
}

/// Serializes a value as JSON text, failing with a non-retriable
/// `SerializationError`.
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String, EntityError> {
    serde_json::to_string(value)
        .map_err(|error| EntityError::new(SERIALIZATION_ERROR, error.to_string()).non_retriable())
}

impl EntityOperation {
    /// The operation's input as an `I`. An absent input decodes from
    /// `null`, so `()` and `Option<T>` accept it; an input that does not
    /// deserialize is a non-retriable `SerializationError`.
    pub fn decode_input<I: DeserializeOwned>(&self) -> Result<I, EntityError> {
        serde_json::from_str(self.input.as_deref().unwrap_or("null")).map_err(|error| {
            EntityError::new(
                SERIALIZATION_ERROR,
                format!(
                    "the input of operation {:?} is not a {}: {error}",
                    self.name,
                    std::any::type_name::<I>()
                ),
            )
            .non_retriable()
        })
    }
}

/// The failure of an entity operation registered with
/// [`RegistryBuilder::register_entity_typed`](super::RegistryBuilder::register_entity_typed).
///
/// It converts like [`ActivityError`](super::ActivityError): any
/// `std::error::Error + Send + Sync + 'static` converts into it with `?`
/// (`error_type` is the error's type name without its module path, the
/// message its `Display` and `source()` chain), and so does a
/// [`FailureDetails`]. It deliberately does not implement
/// `std::error::Error` itself (that would conflict with the blanket
/// conversion).
pub struct EntityError(FailureDetails);

impl EntityError {
    /// A failure with a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> EntityError {
        EntityError(FailureDetails::new(error_type, message))
    }

    /// The non-retriable failure of an operation name the entity does not
    /// know (`error_type` [`UNKNOWN_OPERATION`]).
    pub fn unknown_operation(operation: &str) -> EntityError {
        EntityError::new(
            UNKNOWN_OPERATION,
            format!("the entity has no operation {operation:?}"),
        )
        .non_retriable()
    }

    /// Marks the failure as one retrying cannot fix.
    pub fn non_retriable(mut self) -> EntityError {
        self.0.is_non_retriable = true;
        self
    }

    /// The failure details.
    pub fn details(&self) -> &FailureDetails {
        &self.0
    }

    /// The failure details, by value.
    pub fn into_details(self) -> FailureDetails {
        self.0
    }
}

impl fmt::Debug for EntityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EntityError").field(&self.0).finish()
    }
}

impl fmt::Display for EntityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FailureDetails> for EntityError {
    fn from(details: FailureDetails) -> Self {
        EntityError(details)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for EntityError {
    fn from(error: E) -> Self {
        EntityError(error_details(&error))
    }
}

impl From<EntityError> for FailureDetails {
    fn from(error: EntityError) -> Self {
        error.0
    }
}

impl Registry {
    /// Runs a batch of entity operations in order and returns its outcome;
    /// never panics.
    ///
    /// Each operation runs with a fresh [`EntityContext`] holding the state
    /// left by the previous successful operation (the batch's `state` for
    /// the first). An operation that returns `Ok` keeps its state changes
    /// and signals. One that returns `Err`, or panics, has its state changes
    /// and signals discarded; its result is [`OperationResult::Failed`]
    /// with its failure (a panic: `error_type` `"Panic"` and the panic
    /// message), and the next operation starts from the state before it.
    ///
    /// If no entity of the batch's name is registered, every operation
    /// fails with a non-retriable [`ENTITY_NOT_FOUND`] and the state is
    /// returned unchanged.
    ///
    /// The result has the final state, one result per operation in order,
    /// and the signals and orchestration starts of the successful
    /// operations in the order sent.
    pub async fn run_entity_batch(&self, item: &EntityWorkItem) -> EntityBatchResult {
        let Some(f) = self.entity(item.entity.name()) else {
            let failure = FailureDetails {
                is_non_retriable: true,
                ..FailureDetails::new(
                    ENTITY_NOT_FOUND,
                    format!("no entity named {:?} is registered", item.entity.name()),
                )
            };
            return EntityBatchResult {
                state: item.state.clone(),
                results: vec![OperationResult::Failed(failure); item.operations.len()],
                ..EntityBatchResult::default()
            };
        };
        let mut state = item.state.clone();
        let mut results = Vec::with_capacity(item.operations.len());
        let mut signals = Vec::new();
        let mut orchestrations = Vec::new();
        for operation in &item.operations {
            // The state moves into the context and back out: no copy per
            // operation.
            let ctx = EntityContext::new(item.entity.clone(), operation.name.clone(), state);
            let handler_ctx = ctx.clone();
            let operation = operation.clone();
            // Calling `f` inside the async block makes a panic while
            // creating the future as catchable as one while polling it.
            let run = AssertUnwindSafe(async { f(handler_ctx, operation).await }).catch_unwind();
            let outcome = run.await;
            let work = ctx.finish();
            match outcome {
                Ok(Ok(output)) => {
                    state = match work.written {
                        Some(written) => written,
                        None => work.before,
                    };
                    signals.extend(work.signals);
                    orchestrations.extend(work.orchestrations);
                    results.push(OperationResult::Completed(output));
                }
                Ok(Err(failure)) => {
                    state = work.before;
                    results.push(OperationResult::Failed(failure));
                }
                Err(panic) => {
                    state = work.before;
                    results.push(OperationResult::Failed(FailureDetails::new(
                        PANIC,
                        format!(
                            "entity operation {:?} panicked: {}",
                            ctx.operation_name(),
                            panic_message(panic.as_ref())
                        ),
                    )));
                }
            }
        }
        EntityBatchResult {
            state,
            results,
            signals,
            orchestrations,
        }
    }
}
