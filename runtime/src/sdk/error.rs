//! [`OrchestrationError`]: what orchestration code sees when something it
//! awaited failed, and what it returns to fail its instance.

use crate::types::FailureDetails;

/// `error_type` of failures caused by JSON (de)serialization.
pub(crate) const SERIALIZATION_ERROR: &str = "SerializationError";

/// `error_type` of an [`OrchestrationError::EntityLock`] that escapes its
/// orchestration (non-retriable: the code is at fault).
pub const ENTITY_LOCK_ERROR: &str = "EntityLockError";

/// An error inside an orchestration: an awaited activity,
/// sub-orchestration or entity call failed, a payload could not be (de)serialized, or the
/// orchestration's own failure.
///
/// Returning it from an orchestration fails the instance with
/// [`OrchestrationError::to_failure_details`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestrationError {
    /// An activity failed (after all retries, for a retried call).
    #[error("activity {name:?} failed: {details}")]
    ActivityFailed {
        /// The activity name.
        name: String,
        /// The activity's failure, as it reported it (boxed to keep the
        /// error small).
        details: Box<FailureDetails>,
    },
    /// A sub-orchestration failed.
    #[error("sub-orchestration {name:?} ({instance_id}) failed: {details}")]
    SubOrchestrationFailed {
        /// The child's orchestration name.
        name: String,
        /// The child's instance id.
        instance_id: String,
        /// The child's failure (boxed to keep the error small).
        details: Box<FailureDetails>,
    },
    /// An entity operation called with
    /// [`call_entity`](super::OrchestrationContext::call_entity) failed; the
    /// entity's state is as it was before the operation.
    #[error("operation {operation:?} on entity {entity} failed: {details}")]
    EntityFailed {
        /// The entity, as `@name@key`.
        entity: String,
        /// The operation.
        operation: String,
        /// The operation's failure, as the entity reported it (boxed to
        /// keep the error small).
        details: Box<FailureDetails>,
    },
    /// [`lock_entities`](super::OrchestrationContext::lock_entities) was
    /// misused: no entities, or a lock while this orchestration already
    /// has one (critical sections do not nest).
    #[error("entity lock: {0}")]
    EntityLock(String),
    /// A payload could not be serialized to or deserialized from JSON.
    #[error("serialization: {0}")]
    Serialization(String),
    /// The orchestration's own failure.
    #[error("{0}")]
    Failed(FailureDetails),
}

impl OrchestrationError {
    /// The orchestration's own failure with a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> OrchestrationError {
        OrchestrationError::Failed(FailureDetails::new(error_type, message))
    }

    /// The failure details an instance fails with when this error escapes
    /// its orchestration: `ActivityFailed` / `SubOrchestrationFailed` /
    /// `EntityOperationFailed` (for [`EntityFailed`](Self::EntityFailed))
    /// wrap the underlying failure as `inner`; `Serialization` becomes
    /// `SerializationError`; `EntityLock` becomes a non-retriable
    /// [`ENTITY_LOCK_ERROR`]; `Failed` is passed through unchanged.
    pub fn to_failure_details(&self) -> FailureDetails {
        match self {
            OrchestrationError::ActivityFailed { details, .. } => FailureDetails {
                error_type: "ActivityFailed".into(),
                message: self.to_string(),
                stack_trace: None,
                inner: Some(details.clone()),
                is_non_retriable: false,
            },
            OrchestrationError::SubOrchestrationFailed { details, .. } => FailureDetails {
                error_type: "SubOrchestrationFailed".into(),
                message: self.to_string(),
                stack_trace: None,
                inner: Some(details.clone()),
                is_non_retriable: false,
            },
            OrchestrationError::EntityFailed { details, .. } => FailureDetails {
                error_type: "EntityOperationFailed".into(),
                message: self.to_string(),
                stack_trace: None,
                inner: Some(details.clone()),
                is_non_retriable: false,
            },
            OrchestrationError::EntityLock(message) => FailureDetails {
                is_non_retriable: true,
                ..FailureDetails::new(ENTITY_LOCK_ERROR, message.clone())
            },
            OrchestrationError::Serialization(message) => {
                FailureDetails::new(SERIALIZATION_ERROR, message.clone())
            }
            OrchestrationError::Failed(details) => details.clone(),
        }
    }

    /// The failure reported by the activity, sub-orchestration or entity, or the
    /// orchestration's own failure; `None` for a serialization or entity
    /// lock error.
    pub fn details(&self) -> Option<&FailureDetails> {
        match self {
            OrchestrationError::ActivityFailed { details, .. }
            | OrchestrationError::SubOrchestrationFailed { details, .. }
            | OrchestrationError::EntityFailed { details, .. } => Some(details),
            OrchestrationError::Failed(details) => Some(details),
            OrchestrationError::Serialization(_) | OrchestrationError::EntityLock(_) => None,
        }
    }
}

impl From<FailureDetails> for OrchestrationError {
    fn from(details: FailureDetails) -> Self {
        OrchestrationError::Failed(details)
    }
}

impl From<serde_json::Error> for OrchestrationError {
    fn from(error: serde_json::Error) -> Self {
        OrchestrationError::Serialization(error.to_string())
    }
}

impl From<OrchestrationError> for FailureDetails {
    fn from(error: OrchestrationError) -> Self {
        match error {
            OrchestrationError::Failed(details) => details,
            other => other.to_failure_details(),
        }
    }
}

/// Decodes an optional JSON payload; an absent payload decodes as `null`.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    payload: Option<String>,
) -> Result<T, OrchestrationError> {
    serde_json::from_str(payload.as_deref().unwrap_or("null")).map_err(OrchestrationError::from)
}

/// Passes a raw JSON payload through unchanged.
pub(crate) fn decode_raw(payload: Option<String>) -> Result<Option<String>, OrchestrationError> {
    Ok(payload)
}

/// Encodes a value as JSON text.
pub(crate) fn encode_json<T: serde::Serialize + ?Sized>(
    value: &T,
) -> Result<Option<String>, OrchestrationError> {
    serde_json::to_string(value)
        .map(Some)
        .map_err(OrchestrationError::from)
}
