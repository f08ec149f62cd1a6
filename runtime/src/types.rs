//! Identities, statuses and failure details of the Durable Task model.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest instance id accepted, in bytes.
pub const INSTANCE_ID_BYTES_MAX: usize = 256;

/// The id of an orchestration instance, chosen by the client or generated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId(String);

impl InstanceId {
    /// Checks and wraps an id: 1 to 256 bytes, no control characters.
    pub fn new(id: impl Into<String>) -> Result<InstanceId> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::InvalidInput("instance id must not be empty".into()));
        }
        if id.len() > INSTANCE_ID_BYTES_MAX {
            return Err(Error::InvalidInput(format!(
                "instance id is {} bytes, the maximum is {INSTANCE_ID_BYTES_MAX}",
                id.len()
            )));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!(
                "instance id {id:?} contains a control character"
            )));
        }
        Ok(InstanceId(id))
    }

    /// Wraps text this crate already validated.
    pub(crate) fn trusted(id: String) -> InstanceId {
        InstanceId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runtime status of an orchestration instance (Durable Task's statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrchestrationStatus {
    /// Created, not yet started (e.g. a scheduled start in the future).
    Pending,
    /// Started and not finished.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with a failure.
    Failed,
    /// Stopped by a terminate request.
    Terminated,
    /// Paused by a suspend request; events queue until resumed.
    Suspended,
    /// Restarted itself with a new input (a transient status).
    ContinuedAsNew,
}

impl OrchestrationStatus {
    /// True for Completed, Failed and Terminated: nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrchestrationStatus::Completed
                | OrchestrationStatus::Failed
                | OrchestrationStatus::Terminated
        )
    }
}

impl fmt::Display for OrchestrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why something failed, as Durable Task reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetails {
    /// A type name for the error (e.g. "ActivityFailed", "NonDeterminism").
    pub error_type: String,
    /// The human-readable message.
    pub message: String,
    /// A stack trace or backtrace, when the worker had one.
    pub stack_trace: Option<String>,
    /// The failure that caused this one.
    pub inner: Option<Box<FailureDetails>>,
    /// Retrying cannot help (e.g. an unknown activity name).
    pub is_non_retriable: bool,
}

impl FailureDetails {
    /// A failure with a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> FailureDetails {
        FailureDetails {
            error_type: error_type.into(),
            message: message.into(),
            ..FailureDetails::default()
        }
    }
}

impl fmt::Display for FailureDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)?;
        if let Some(inner) = &self.inner {
            write!(f, " (caused by {inner})")?;
        }
        Ok(())
    }
}

/// The parent of a sub-orchestration, recorded in its `ExecutionStarted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInstance {
    /// The parent's orchestration name.
    pub name: String,
    /// The parent's instance id.
    pub instance_id: InstanceId,
    /// The id of the parent's `CreateSubOrchestration` action.
    pub task_scheduled_id: i32,
    /// The parent's execution (generation) that created the child: a
    /// result is delivered only to that execution, never to a later one
    /// after continue-as-new or a restart of the same id.
    pub execution: u64,
}

/// Everything a client can ask about an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// The instance id.
    pub instance_id: InstanceId,
    /// The orchestration name.
    pub name: String,
    /// The orchestration version it was started (or continued as new)
    /// with, if any.
    pub version: Option<String>,
    /// The current status.
    pub status: OrchestrationStatus,
    /// The input (JSON text), as given at start or continue-as-new.
    pub input: Option<String>,
    /// The output (JSON text) once completed.
    pub output: Option<String>,
    /// The custom status (JSON text) the orchestration last set.
    pub custom_status: Option<String>,
    /// The failure once failed.
    pub failure: Option<FailureDetails>,
    /// When the instance was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When its state last changed (ms since the Unix epoch).
    pub last_updated_at_ms: u64,
    /// A scheduled start time, if one was given.
    pub scheduled_start_ms: Option<u64>,
    /// The parent, for a sub-orchestration.
    pub parent: Option<ParentInstance>,
    /// Tags given when the instance was created (sorted by key): labels
    /// for people and tools, returned with the instance; nothing in the
    /// engine reads them.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}
