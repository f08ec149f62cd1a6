//! Durable entities: small stateful actors addressed by (name, key), whose
//! operations run one at a time in arrival order (the Durable Functions
//! model; design in `docs/decisions/0002-entities.md`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::backend::CompletionToken;
use crate::error::{Error, Result};
use crate::types::{FailureDetails, InstanceId};

/// The address of an entity: a name (its type, case-insensitive) and a key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId {
    name: String,
    key: String,
}

impl EntityId {
    /// Checks and builds an id. The name is stored lower-case; neither part
    /// may be empty, and the name may not contain `@`.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Result<EntityId> {
        let name = name.into().to_lowercase();
        let key = key.into();
        if name.is_empty() || name.contains('@') {
            return Err(Error::InvalidInput(format!(
                "entity name {name:?} must be non-empty and free of '@'"
            )));
        }
        if key.is_empty() {
            return Err(Error::InvalidInput("entity key must not be empty".into()));
        }
        let id = EntityId { name, key };
        // Also checks the combined length and characters.
        InstanceId::new(id.to_string())?;
        Ok(id)
    }

    /// The entity's name (its type).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entity's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The instance id the entity is stored and placed under: `@name@key`.
    pub fn instance_id(&self) -> InstanceId {
        // `new` checked that this is a valid instance id.
        InstanceId::trusted(self.to_string())
    }

    /// Parses `@name@key`.
    pub fn parse(text: &str) -> Result<EntityId> {
        let rest = text.strip_prefix('@').ok_or_else(|| {
            Error::InvalidInput(format!("entity id {text:?} must look like @name@key"))
        })?;
        let (name, key) = rest.split_once('@').ok_or_else(|| {
            Error::InvalidInput(format!("entity id {text:?} must look like @name@key"))
        })?;
        EntityId::new(name, key)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}@{}", self.name, self.key)
    }
}

/// One operation for an entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityOperation {
    /// Operation name.
    pub name: String,
    /// Input (JSON).
    pub input: Option<String>,
}

/// A batch of operations for one entity: everything queued when it was
/// handed out, to run in order against `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityWorkItem {
    /// The entity.
    pub entity: EntityId,
    /// Its state (JSON) before the batch; `None` if it has none.
    pub state: Option<String>,
    /// The operations, in arrival order.
    pub operations: Vec<EntityOperation>,
    /// For the completion.
    pub token: CompletionToken,
}

/// How one operation of a batch ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationResult {
    /// It returned this output (JSON).
    Completed(Option<String>),
    /// It failed; the state is as it was before this operation.
    Failed(FailureDetails),
}

/// A signal an entity sends while running an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitySignal {
    /// The receiving entity.
    pub entity: EntityId,
    /// The operation.
    pub operation: EntityOperation,
    /// Deliver it not before this time (ms since the Unix epoch), e.g. an
    /// entity waking itself later; `None` delivers it at once.
    pub scheduled_ms: Option<u64>,
}

/// An orchestration an entity operation starts, fire and forget: the
/// entity learns nothing of how it ends. If an instance with the id is
/// already running the start is dropped (as a client's start would be
/// refused); a finished one is replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityStartedOrchestration {
    /// The new instance's id, chosen by the entity.
    pub instance_id: InstanceId,
    /// The orchestration's name.
    pub name: String,
    /// Its version, if the worker asks for one.
    pub version: Option<String>,
    /// Its input (JSON).
    pub input: Option<String>,
    /// Start not before this time (ms since the Unix epoch), if given.
    pub scheduled_start_ms: Option<u64>,
}

/// The outcome of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityBatchResult {
    /// The state (JSON) after the batch; `None` deletes the entity's state.
    pub state: Option<String>,
    /// One result per operation, in order.
    pub results: Vec<OperationResult>,
    /// Signals the operations sent, in order.
    pub signals: Vec<EntitySignal>,
    /// Orchestrations the operations started, in order.
    pub orchestrations: Vec<EntityStartedOrchestration>,
}

/// What a client can read about an entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityState {
    /// The entity.
    pub entity: EntityId,
    /// Its state (JSON).
    pub state: Option<String>,
    /// When its state last changed (ms since the Unix epoch).
    pub last_modified_ms: u64,
    /// Operations waiting to run.
    pub backlog: usize,
    /// The orchestration holding its lock (a critical section), if any.
    pub locked_by: Option<InstanceId>,
}

/// Filters and paging of `Backend::query_entities`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityQuery {
    /// Only entities of this name (case-insensitive).
    pub name: Option<String>,
    /// Only keys starting with this prefix (with `name`).
    pub key_prefix: Option<String>,
    /// Include states (they can be large).
    pub include_state: bool,
    /// Most entities per page (1..=1000).
    pub page_size: usize,
    /// Where the previous page ended.
    pub continuation: Option<String>,
}

impl Default for EntityQuery {
    fn default() -> Self {
        EntityQuery {
            name: None,
            key_prefix: None,
            include_state: true,
            page_size: 100,
            continuation: None,
        }
    }
}

/// One page of entities, ordered by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityPage {
    /// The entities on this page.
    pub entities: Vec<EntityState>,
    /// Pass back for the next page; `None` on the last.
    pub continuation: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_fold_case() {
        let id = EntityId::new("Counter", "a!3").expect("valid");
        assert_eq!(id.to_string(), "@counter@a!3");
        assert_eq!(EntityId::parse("@COUNTER@a!3").expect("parses"), id);
        assert_eq!(id.instance_id().as_str(), "@counter@a!3");
        assert!(EntityId::new("", "k").is_err());
        assert!(EntityId::new("a@b", "k").is_err());
        assert!(EntityId::new("n", "").is_err());
        assert!(EntityId::parse("counter@k").is_err());
    }
}
