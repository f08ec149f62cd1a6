//! The client: starts, queries, signals and manages orchestration instances
//! through any [`Backend`], with serde helpers for inputs, event data and
//! outputs (JSON on the wire).

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, InstanceQuery, QueryPage, StartRequest};
use crate::entity::{EntityId, EntityOperation, EntityPage, EntityQuery, EntityState};
use crate::error::Error;
use crate::history::HistoryEvent;
use crate::types::{FailureDetails, InstanceId, InstanceState, OrchestrationStatus};

/// Errors of the [`Client`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The backend refused or failed the request.
    #[error(transparent)]
    Backend(#[from] Error),
    /// An input or event payload could not be serialized, or an output
    /// could not be deserialized into the requested type.
    #[error("serialization: {0}")]
    Serialization(String),
    /// The instance failed (when its output was asked for).
    #[error("instance {instance_id} failed: {failure}")]
    Failed {
        /// The instance.
        instance_id: InstanceId,
        /// Why it failed.
        failure: FailureDetails,
    },
    /// The instance did not complete (terminated, or not finished yet) when
    /// its output was asked for.
    #[error("instance {instance_id} has status {status}, not Completed")]
    NotCompleted {
        /// The instance.
        instance_id: InstanceId,
        /// Its status.
        status: OrchestrationStatus,
    },
}

/// Result alias of the client.
pub type ClientResult<T> = std::result::Result<T, ClientError>;

fn to_json<T: Serialize + ?Sized>(value: &T) -> ClientResult<Option<String>> {
    serde_json::to_string(value)
        .map(Some)
        .map_err(|error| ClientError::Serialization(error.to_string()))
}

/// Options of [`Client::start_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// The instance id; the backend generates one when absent.
    pub instance_id: Option<String>,
    /// Do not start before this time (ms since the Unix epoch).
    pub scheduled_start_ms: Option<u64>,
    /// The orchestration version, if any.
    pub version: Option<String>,
    /// Tags kept with the instance (see `InstanceState::tags`).
    pub tags: std::collections::BTreeMap<String, String>,
}

impl StartOptions {
    /// Options with a chosen instance id.
    pub fn with_instance_id(instance_id: impl Into<String>) -> StartOptions {
        StartOptions {
            instance_id: Some(instance_id.into()),
            ..StartOptions::default()
        }
    }
}

/// Decodes a completed instance's output into `T`; a failed or otherwise
/// unfinished instance is an error ([`ClientError::Failed`],
/// [`ClientError::NotCompleted`]). An absent output decodes from `null`.
pub fn decode_output<T: DeserializeOwned>(state: &InstanceState) -> ClientResult<T> {
    match state.status {
        OrchestrationStatus::Completed => {
            serde_json::from_str(state.output.as_deref().unwrap_or("null"))
                .map_err(|error| ClientError::Serialization(error.to_string()))
        }
        OrchestrationStatus::Failed => Err(ClientError::Failed {
            instance_id: state.instance_id.clone(),
            failure: state.failure.clone().unwrap_or_default(),
        }),
        status => Err(ClientError::NotCompleted {
            instance_id: state.instance_id.clone(),
            status,
        }),
    }
}

/// Decodes an instance's custom status into `T`; `None` when it has none.
pub fn decode_custom_status<T: DeserializeOwned>(state: &InstanceState) -> ClientResult<Option<T>> {
    state
        .custom_status
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|error| ClientError::Serialization(error.to_string()))
}

/// Starts and manages orchestration instances. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Client {
        Client { backend }
    }

    /// The backend this client talks to.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Starts orchestration `name` with a serde input under a generated id.
    pub async fn start<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
    ) -> ClientResult<InstanceId> {
        self.start_with(name, input, StartOptions::default()).await
    }

    /// Starts orchestration `name` with a serde input and options.
    pub async fn start_with<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
        options: StartOptions,
    ) -> ClientResult<InstanceId> {
        let input = to_json(input)?;
        self.start_raw(name, input, options).await
    }

    /// Starts orchestration `name` with JSON text as input.
    pub async fn start_raw(
        &self,
        name: &str,
        input: Option<String>,
        options: StartOptions,
    ) -> ClientResult<InstanceId> {
        let request = StartRequest {
            name: name.to_owned(),
            instance_id: options.instance_id,
            input,
            version: options.version,
            scheduled_start_ms: options.scheduled_start_ms,
            tags: options.tags,
        };
        Ok(self.backend.start_instance(request).await?)
    }

    /// The instance's state, or `None` if there is no such instance.
    pub async fn get(&self, instance_id: &InstanceId) -> ClientResult<Option<InstanceState>> {
        Ok(self.backend.get_instance(instance_id).await?)
    }

    /// The instance's history (current execution).
    pub async fn history(&self, instance_id: &InstanceId) -> ClientResult<Vec<HistoryEvent>> {
        Ok(self.backend.get_history(instance_id).await?)
    }

    /// Waits until the instance has started running (or `timeout`, an
    /// `Error::Timeout`).
    pub async fn wait_for_start(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
    ) -> ClientResult<InstanceState> {
        Ok(self.backend.wait_for_start(instance_id, timeout).await?)
    }

    /// Waits until the instance is Completed, Failed or Terminated (or
    /// `timeout`, an `Error::Timeout`); decode its output with
    /// [`decode_output`].
    pub async fn wait_for_completion(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
    ) -> ClientResult<InstanceState> {
        Ok(self
            .backend
            .wait_for_completion(instance_id, timeout)
            .await?)
    }

    /// Waits for the instance to finish and decodes its output into `T`.
    pub async fn wait_for_output<T: DeserializeOwned>(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
    ) -> ClientResult<T> {
        let state = self.wait_for_completion(instance_id, timeout).await?;
        decode_output(&state)
    }

    /// Raises external event `name` with serde `data` on the instance.
    pub async fn raise_event<D: Serialize + ?Sized>(
        &self,
        instance_id: &InstanceId,
        name: &str,
        data: &D,
    ) -> ClientResult<()> {
        let data = to_json(data)?;
        self.raise_event_raw(instance_id, name, data).await
    }

    /// Raises external event `name` with JSON text on the instance.
    pub async fn raise_event_raw(
        &self,
        instance_id: &InstanceId,
        name: &str,
        data: Option<String>,
    ) -> ClientResult<()> {
        Ok(self.backend.raise_event(instance_id, name, data).await?)
    }

    /// Terminates the instance with an optional reason (no effect on a
    /// finished one).
    pub async fn terminate(
        &self,
        instance_id: &InstanceId,
        reason: Option<&str>,
    ) -> ClientResult<()> {
        let reason = reason.map(to_json).transpose()?.flatten();
        Ok(self.backend.terminate(instance_id, reason).await?)
    }

    /// Suspends the instance: events queue until it is resumed.
    pub async fn suspend(
        &self,
        instance_id: &InstanceId,
        reason: Option<&str>,
    ) -> ClientResult<()> {
        Ok(self
            .backend
            .suspend(instance_id, reason.map(str::to_owned))
            .await?)
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, instance_id: &InstanceId, reason: Option<&str>) -> ClientResult<()> {
        Ok(self
            .backend
            .resume(instance_id, reason.map(str::to_owned))
            .await?)
    }

    /// Deletes a finished instance and its history; `false` if there was
    /// none.
    pub async fn purge(&self, instance_id: &InstanceId) -> ClientResult<bool> {
        Ok(self.backend.purge(instance_id).await?)
    }

    /// One page of instances matching `query`.
    pub async fn query(&self, query: &InstanceQuery) -> ClientResult<QueryPage> {
        Ok(self.backend.query_instances(query).await?)
    }

    /// Every instance matching `query`, following continuations from its
    /// first page.
    pub async fn query_all(&self, query: &InstanceQuery) -> ClientResult<Vec<InstanceState>> {
        let mut query = query.clone();
        let mut instances = Vec::new();
        loop {
            let page = self.backend.query_instances(&query).await?;
            instances.extend(page.instances);
            match page.continuation {
                Some(next) => query.continuation = Some(next),
                None => return Ok(instances),
            }
        }
    }

    /// Queues an operation on an entity, one-way (fire and forget).
    pub async fn signal_entity<I: Serialize + ?Sized>(
        &self,
        entity: &EntityId,
        operation: &str,
        input: &I,
    ) -> ClientResult<()> {
        let operation = EntityOperation {
            name: operation.to_owned(),
            input: to_json(input)?,
        };
        Ok(self.backend.signal_entity(entity, operation, None).await?)
    }

    /// Queues an operation on an entity to run at (not before) `at_ms`
    /// (ms since the Unix epoch). The signal is durable like any other and
    /// survives restarts.
    pub async fn signal_entity_at<I: Serialize + ?Sized>(
        &self,
        entity: &EntityId,
        operation: &str,
        input: &I,
        at_ms: u64,
    ) -> ClientResult<()> {
        let operation = EntityOperation {
            name: operation.to_owned(),
            input: to_json(input)?,
        };
        Ok(self
            .backend
            .signal_entity(entity, operation, Some(at_ms))
            .await?)
    }

    /// An entity's state and bookkeeping, or `None` if it has no state.
    pub async fn get_entity(&self, entity: &EntityId) -> ClientResult<Option<EntityState>> {
        Ok(self.backend.get_entity(entity).await?)
    }

    /// An entity's state decoded into `S`, or `None` if it has none.
    pub async fn get_entity_state<S: DeserializeOwned>(
        &self,
        entity: &EntityId,
    ) -> ClientResult<Option<S>> {
        match self.backend.get_entity(entity).await? {
            Some(EntityState {
                state: Some(json), ..
            }) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| ClientError::Serialization(e.to_string())),
            _ => Ok(None),
        }
    }

    /// One page of entities matching `query`.
    pub async fn query_entities(&self, query: &EntityQuery) -> ClientResult<EntityPage> {
        Ok(self.backend.query_entities(query).await?)
    }
}
