//! The [`Registry`] of orchestration, activity and entity functions, its
//! builder, and what activities receive ([`ActivityContext`]) and return
//! ([`ActivityError`]). Entities' own types are in [`super::entity`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::OrchestrationContext;
use super::entity::{EntityContext, EntityError, EntityFn};
use super::error::{OrchestrationError, decode_json, encode_json};
use crate::backend::ActivityOutcome;
use crate::entity::EntityOperation;
use crate::types::{FailureDetails, InstanceId};

/// The result of a raw orchestration or activity: JSON text or a failure.
pub(crate) type RawResult = Result<Option<String>, FailureDetails>;

/// A registered orchestration, type-erased.
pub(crate) type OrchestrationFn = Arc<
    dyn Fn(OrchestrationContext, Option<String>) -> BoxFuture<'static, RawResult> + Send + Sync,
>;

/// A registered activity, type-erased.
type ActivityFn =
    Arc<dyn Fn(ActivityContext, Option<String>) -> BoxFuture<'static, RawResult> + Send + Sync>;

/// Which kind of function a name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// An orchestration.
    Orchestration,
    /// An activity.
    Activity,
    /// An entity.
    Entity,
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FunctionKind::Orchestration => "orchestration",
            FunctionKind::Activity => "activity",
            FunctionKind::Entity => "entity",
        })
    }
}

/// Why a [`RegistryBuilder`] could not build.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A function was registered with an empty name.
    #[error("{kind} name must not be empty")]
    EmptyName {
        /// The kind of function.
        kind: FunctionKind,
    },
    /// A name that cannot address a function of its kind (an entity name
    /// containing `@`).
    #[error("{kind} name {name:?} is not valid")]
    InvalidName {
        /// The kind of function.
        kind: FunctionKind,
        /// The name.
        name: String,
    },
    /// Two functions of one kind were registered with the same name (for
    /// entities: the same name ignoring case; `name` is then lower-case).
    #[error("{kind} {name:?} is registered twice")]
    Duplicate {
        /// The kind of function.
        kind: FunctionKind,
        /// The name.
        name: String,
    },
}

/// Builds a [`Registry`]. Registration methods chain; name errors (empty or
/// duplicate names) are reported by [`RegistryBuilder::build`].
///
/// ```
/// use basalt_runtime::sdk::{ActivityError, OrchestrationError, Registry};
///
/// let registry = Registry::builder()
///     .register_activity_typed("Double", |_ctx, n: u64| async move {
///         Ok::<_, ActivityError>(n * 2)
///     })
///     .register_orchestration_typed("Main", |ctx, n: u64| async move {
///         let doubled: u64 = ctx.call_activity("Double", &n).await?;
///         Ok::<_, OrchestrationError>(doubled + 1)
///     })
///     .build()
///     .expect("names are valid");
/// assert!(registry.has_orchestration("Main"));
/// ```
#[must_use = "call build() to get the registry"]
pub struct RegistryBuilder {
    orchestrations: HashMap<String, OrchestrationFn>,
    activities: HashMap<String, ActivityFn>,
    entities: HashMap<String, EntityFn>,
    error: Option<RegistryError>,
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("orchestrations", &sorted_names(&self.orchestrations))
            .field("activities", &sorted_names(&self.activities))
            .field("entities", &sorted_names(&self.entities))
            .field("error", &self.error)
            .finish()
    }
}

impl RegistryBuilder {
    fn check_name<V>(
        &mut self,
        kind: FunctionKind,
        name: &str,
        existing: &HashMap<String, V>,
    ) -> bool {
        let problem = if name.is_empty() {
            Some(RegistryError::EmptyName { kind })
        } else if kind == FunctionKind::Entity && name.contains('@') {
            Some(RegistryError::InvalidName {
                kind,
                name: name.to_owned(),
            })
        } else if existing.contains_key(name) {
            Some(RegistryError::Duplicate {
                kind,
                name: name.to_owned(),
            })
        } else {
            None
        };
        match problem {
            None => true,
            Some(problem) => {
                self.error.get_or_insert(problem);
                false
            }
        }
    }

    /// Registers an orchestration that takes and returns JSON text.
    pub fn register_orchestration<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(OrchestrationContext, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RawResult> + Send + 'static,
    {
        let name = name.into();
        let orchestrations = std::mem::take(&mut self.orchestrations);
        let ok = self.check_name(FunctionKind::Orchestration, &name, &orchestrations);
        self.orchestrations = orchestrations;
        if ok {
            let f: OrchestrationFn = Arc::new(move |ctx, input| f(ctx, input).boxed());
            self.orchestrations.insert(name, f);
        }
        self
    }

    /// Registers an orchestration whose input and output are serde values
    /// (JSON on the wire). An absent input deserializes from `null`, so
    /// `()` and `Option<T>` inputs accept it; an input that does not
    /// deserialize fails the instance with `SerializationError`.
    pub fn register_orchestration_typed<I, O, F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(OrchestrationContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, OrchestrationError>> + Send + 'static,
    {
        self.register_orchestration(name, move |ctx, input| {
            let started = decode_json::<I>(input).map(|input| f(ctx, input));
            async move {
                let output = started?.await?;
                Ok(encode_json(&output)?)
            }
        })
    }

    /// Registers an activity that takes and returns JSON text.
    pub fn register_activity<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(ActivityContext, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RawResult> + Send + 'static,
    {
        let name = name.into();
        let activities = std::mem::take(&mut self.activities);
        let ok = self.check_name(FunctionKind::Activity, &name, &activities);
        self.activities = activities;
        if ok {
            let f: ActivityFn = Arc::new(move |ctx, input| f(ctx, input).boxed());
            self.activities.insert(name, f);
        }
        self
    }

    /// Registers an activity whose input and output are serde values. Its
    /// error is an [`ActivityError`], which any `std::error::Error` converts
    /// into with `?`. An input that does not deserialize fails the activity
    /// with a non-retriable `SerializationError`.
    pub fn register_activity_typed<I, O, F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        self.register_activity(name, move |ctx, input| {
            let started = decode_json::<I>(input)
                .map(|input| f(ctx, input))
                .map_err(|error| FailureDetails {
                    is_non_retriable: true,
                    ..error.to_failure_details()
                });
            async move {
                let output = started?.await.map_err(ActivityError::into_details)?;
                encode_json(&output).map_err(|error| error.to_failure_details())
            }
        })
    }

    /// Registers an entity whose operations take and return JSON text.
    ///
    /// Entity names are case-insensitive: the name is stored lower-case, as
    /// [`EntityId`](crate::EntityId) stores it, and two registrations whose
    /// names differ only in case are a [`RegistryError::Duplicate`]. A name
    /// may not be empty or contain `@`.
    ///
    /// The function runs once per operation, with a fresh
    /// [`EntityContext`] holding the state the previous successful
    /// operations left; see [`Registry::run_entity_batch`] for how a batch
    /// runs and what a failure undoes.
    pub fn register_entity<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(EntityContext, EntityOperation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RawResult> + Send + 'static,
    {
        let name = name.into().to_lowercase();
        let entities = std::mem::take(&mut self.entities);
        let ok = self.check_name(FunctionKind::Entity, &name, &entities);
        self.entities = entities;
        if ok {
            let f: EntityFn = Arc::new(move |ctx, operation| f(ctx, operation).boxed());
            self.entities.insert(name, f);
        }
        self
    }

    /// Registers an entity whose operations return a serde value and fail
    /// with an [`EntityError`] (which any `std::error::Error` converts into
    /// with `?`, as for activities).
    ///
    /// The state is typed at each use: [`EntityContext::state`] reads it as
    /// any `S: DeserializeOwned + Default` (the default when the entity has
    /// no state) and [`EntityContext::set_state`] writes any `Serialize`
    /// value; [`EntityOperation::decode_input`] reads the operation's input.
    /// An output that does not serialize fails the operation (and so undoes
    /// its state changes and signals) with `SerializationError`.
    ///
    /// ```
    /// use basalt_runtime::sdk::{EntityError, Registry};
    ///
    /// let registry = Registry::builder()
    ///     .register_entity_typed("Counter", |ctx, operation| async move {
    ///         let mut value: i64 = ctx.state()?;
    ///         match operation.name.as_str() {
    ///             "add" => {
    ///                 value += operation.decode_input::<i64>()?;
    ///                 ctx.set_state(&value)?;
    ///             }
    ///             "reset" => ctx.delete(),
    ///             "get" => {}
    ///             other => return Err(EntityError::unknown_operation(other)),
    ///         }
    ///         Ok(value)
    ///     })
    ///     .build()
    ///     .expect("names are valid");
    /// assert!(registry.has_entity("counter"));
    /// ```
    pub fn register_entity_typed<O, F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        O: Serialize + Send + 'static,
        F: Fn(EntityContext, EntityOperation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, EntityError>> + Send + 'static,
    {
        self.register_entity(name, move |ctx, operation| {
            let running = f(ctx, operation);
            async move {
                let output = running.await.map_err(EntityError::into_details)?;
                encode_json(&output).map_err(|error| FailureDetails {
                    is_non_retriable: true,
                    ..error.to_failure_details()
                })
            }
        })
    }

    /// The registry, or the first name error of the registrations.
    pub fn build(self) -> Result<Registry, RegistryError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(Registry {
                orchestrations: self.orchestrations,
                activities: self.activities,
                entities: self.entities,
            }),
        }
    }
}

/// The orchestration, activity and entity functions a worker can run, by
/// name. Immutable once built; share it as `Arc<Registry>`.
pub struct Registry {
    orchestrations: HashMap<String, OrchestrationFn>,
    activities: HashMap<String, ActivityFn>,
    entities: HashMap<String, EntityFn>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("orchestrations", &self.orchestration_names())
            .field("activities", &self.activity_names())
            .field("entities", &self.entity_names())
            .finish()
    }
}

fn sorted_names<V>(map: &HashMap<String, V>) -> Vec<&str> {
    let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

impl Registry {
    /// A builder with nothing registered.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            orchestrations: HashMap::new(),
            activities: HashMap::new(),
            entities: HashMap::new(),
            error: None,
        }
    }

    /// Whether an orchestration of this name is registered.
    pub fn has_orchestration(&self, name: &str) -> bool {
        self.orchestrations.contains_key(name)
    }

    /// Whether an activity of this name is registered.
    pub fn has_activity(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }

    /// Whether an entity of this name (ignoring case) is registered.
    pub fn has_entity(&self, name: &str) -> bool {
        self.entities.contains_key(&name.to_lowercase())
    }

    /// The registered orchestration names, sorted.
    pub fn orchestration_names(&self) -> Vec<&str> {
        sorted_names(&self.orchestrations)
    }

    /// The registered activity names, sorted.
    pub fn activity_names(&self) -> Vec<&str> {
        sorted_names(&self.activities)
    }

    /// The registered entity names (lower-case), sorted.
    pub fn entity_names(&self) -> Vec<&str> {
        sorted_names(&self.entities)
    }

    /// The entity function of this name (already lower-case, as in an
    /// [`EntityId`](crate::EntityId)).
    pub(crate) fn entity(&self, name: &str) -> Option<&EntityFn> {
        self.entities.get(name)
    }

    /// The orchestration function of this name.
    pub(crate) fn orchestration(&self, name: &str) -> Option<&OrchestrationFn> {
        self.orchestrations.get(name)
    }

    /// Runs the activity named by `ctx` to its outcome, never panicking: an
    /// unknown name fails with a non-retriable `ActivityNotFound`, a panic
    /// inside the activity fails with `Panic` and the panic message.
    pub async fn run_activity(
        &self,
        ctx: ActivityContext,
        input: Option<String>,
    ) -> ActivityOutcome {
        let Some(f) = self.activities.get(ctx.name()).cloned() else {
            return ActivityOutcome::Failed(FailureDetails {
                is_non_retriable: true,
                ..FailureDetails::new(
                    "ActivityNotFound",
                    format!("no activity named {:?} is registered", ctx.name()),
                )
            });
        };
        // Calling `f` inside the async block makes a panic while creating
        // the future as catchable as one while polling it.
        let run = AssertUnwindSafe(async move { f(ctx, input).await }).catch_unwind();
        match run.await {
            Ok(Ok(output)) => ActivityOutcome::Completed(output),
            Ok(Err(failure)) => ActivityOutcome::Failed(failure),
            Err(panic) => ActivityOutcome::Failed(FailureDetails::new(
                "Panic",
                format!("activity panicked: {}", panic_message(panic.as_ref())),
            )),
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a non-text panic payload)".to_owned()
    }
}

/// What an activity invocation knows about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityContext {
    instance_id: InstanceId,
    name: String,
    task_id: i32,
}

impl ActivityContext {
    /// The context of one invocation of activity `name` for `task_id` (the
    /// `TaskScheduled` event id) of `instance_id`.
    pub fn new(instance_id: InstanceId, name: impl Into<String>, task_id: i32) -> ActivityContext {
        ActivityContext {
            instance_id,
            name: name.into(),
            task_id,
        }
    }

    /// The orchestration instance that scheduled the activity.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }

    /// The activity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of the `TaskScheduled` event this invocation answers; with the
    /// instance id it identifies the invocation (useful for idempotency).
    pub fn task_id(&self) -> i32 {
        self.task_id
    }
}

/// The failure of a typed activity.
///
/// Any `std::error::Error + Send + Sync + 'static` converts into it (so `?`
/// works on I/O, serde and most library errors); the `error_type` is the
/// error's type name without its module path, the message its `Display`
/// followed by its `source()` chain. Like `anyhow::Error`, it deliberately
/// does not implement `std::error::Error` itself (that would conflict with
/// the blanket conversion).
pub struct ActivityError(FailureDetails);

impl ActivityError {
    /// A failure with a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> ActivityError {
        ActivityError(FailureDetails::new(error_type, message))
    }

    /// Marks the failure as one retrying cannot fix (retry policies stop).
    pub fn non_retriable(mut self) -> ActivityError {
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

impl fmt::Debug for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ActivityError").field(&self.0).finish()
    }
}

impl fmt::Display for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FailureDetails> for ActivityError {
    fn from(details: FailureDetails) -> Self {
        ActivityError(details)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ActivityError {
    fn from(error: E) -> Self {
        ActivityError(error_details(&error))
    }
}

/// The failure details of a `std::error::Error`: its type name without the
/// module path as `error_type`, its `Display` and `source()` chain as the
/// message.
pub(crate) fn error_details<E: std::error::Error>(error: &E) -> FailureDetails {
    let full_name = std::any::type_name::<E>();
    let without_generics = full_name.split('<').next().unwrap_or(full_name);
    let short_name = without_generics
        .rsplit("::")
        .next()
        .unwrap_or(without_generics);
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    FailureDetails::new(short_name, message)
}

impl From<ActivityError> for FailureDetails {
    fn from(error: ActivityError) -> Self {
        error.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::error::SERIALIZATION_ERROR;

    #[test]
    fn empty_and_duplicate_names_are_errors() {
        let empty = Registry::builder()
            .register_activity("", |_, input| async move { Ok(input) })
            .build();
        assert_eq!(
            empty.err(),
            Some(RegistryError::EmptyName {
                kind: FunctionKind::Activity
            })
        );
        let duplicate = Registry::builder()
            .register_orchestration("A", |_, input| async move { Ok(input) })
            .register_orchestration("A", |_, input| async move { Ok(input) })
            .build();
        assert_eq!(
            duplicate.err(),
            Some(RegistryError::Duplicate {
                kind: FunctionKind::Orchestration,
                name: "A".into()
            })
        );
        // The same name may be an orchestration and an activity.
        let both = Registry::builder()
            .register_orchestration("A", |_, input| async move { Ok(input) })
            .register_activity("A", |_, input| async move { Ok(input) })
            .build()
            .expect("different kinds");
        assert_eq!(both.orchestration_names(), vec!["A"]);
        assert_eq!(both.activity_names(), vec!["A"]);
    }

    #[test]
    fn activities_fail_softly() {
        let registry = Registry::builder()
            .register_activity_typed("Parse", |_, text: String| async move {
                Ok::<i64, ActivityError>(text.parse::<i64>()?)
            })
            .register_activity("Panics", |_, _| async move { panic!("boom") })
            .build()
            .expect("valid");
        let id = InstanceId::new("i").expect("valid id");
        let run = |name: &str, input: &str| {
            futures::executor::block_on(registry.run_activity(
                ActivityContext::new(id.clone(), name, 0),
                Some(input.to_owned()),
            ))
        };
        assert_eq!(
            run("Parse", "\"42\""),
            ActivityOutcome::Completed(Some("42".into()))
        );
        let ActivityOutcome::Failed(parse) = run("Parse", "\"x\"") else {
            panic!("a parse error fails the activity");
        };
        assert_eq!(parse.error_type, "ParseIntError");
        let ActivityOutcome::Failed(bad_input) = run("Parse", "7") else {
            panic!("a bad input fails the activity");
        };
        assert_eq!(bad_input.error_type, SERIALIZATION_ERROR);
        assert!(bad_input.is_non_retriable);
        let ActivityOutcome::Failed(panic) = run("Panics", "null") else {
            panic!("a panic fails the activity");
        };
        assert_eq!(panic.error_type, "Panic");
        assert!(panic.message.contains("boom"));
        let ActivityOutcome::Failed(missing) = run("Nope", "null") else {
            panic!("an unknown activity fails");
        };
        assert_eq!(missing.error_type, "ActivityNotFound");
        assert!(missing.is_non_retriable);
    }
}
