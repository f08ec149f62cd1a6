//! Errors of the runtime and of every `Backend`.

/// Result alias of the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse class of an [`Error`], for callers that decide what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or exceeds a limit.
    InvalidInput,
    /// The instance (or work item) does not exist.
    NotFound,
    /// The request conflicts with the current state (e.g. start on a running id).
    Conflict,
    /// A wait ran out of time.
    Timeout,
    /// Storage failed or is damaged.
    Storage,
    /// The backend is shutting down or stopped.
    ShutDown,
    /// The backend cannot take more work now; retry later.
    Overloaded,
}

/// Errors of the runtime and of every `Backend`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or exceeds a limit.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The instance does not exist.
    #[error("instance {0} not found")]
    NotFound(String),
    /// The request conflicts with the instance's state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A completion came with a token that is no longer valid (the work item
    /// was already completed, abandoned, or its partition recovered since).
    #[error("stale completion token {0}: the work item was already completed or reassigned")]
    StaleToken(String),
    /// A wait ran out of time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// Storage failed or is damaged.
    #[error("storage: {0}")]
    Storage(String),
    /// The backend is shutting down or stopped.
    #[error("the backend is shut down")]
    ShutDown,
    /// The backend cannot take more work now (its queues are full): the
    /// request was not accepted and may be retried after the delay.
    #[error("overloaded: {what}; retry in {retry_after_ms} ms")]
    Overloaded {
        /// What is full.
        what: String,
        /// When a retry may succeed, in milliseconds.
        retry_after_ms: u64,
    },
}

impl Error {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) | Error::StaleToken(_) => ErrorKind::Conflict,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Storage(_) => ErrorKind::Storage,
            Error::ShutDown => ErrorKind::ShutDown,
            Error::Overloaded { .. } => ErrorKind::Overloaded,
        }
    }
}
