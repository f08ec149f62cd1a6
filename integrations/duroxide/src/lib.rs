//! `basalt-duroxide`: Basalt as a [duroxide](https://crates.io/crates/duroxide)
//! provider. duroxide keeps its runtime (replay, retries, sessions, tags,
//! key-value state, management); Basalt's partitions keep the state, each
//! change one event in the owning partition's group-committed log.
//!
//! [`BasaltProvider`] implements `duroxide::providers::Provider` and
//! `ProviderAdmin` over any [`HostedBackend`]; [`BasaltProvider::open`]
//! opens Basalt's engine on a storage for it. Histories and work items
//! are stored as duroxide serializes them (JSON), so they round-trip
//! exactly. The design and what differs from duroxide's SQLite provider
//! are in `docs/duroxide.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use basalt_duroxide::BasaltProvider;
//! let storage = basalt_storage::Storage::local("hub")?;
//! let (provider, _engine) = BasaltProvider::open(storage, Default::default()).await?;
//! let provider: std::sync::Arc<dyn duroxide::providers::Provider> = std::sync::Arc::new(provider);
//! # Ok(()) }
//! ```

mod admin;
mod convert;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_engine::{Engine, EngineOptions, OpenError};
use basalt_runtime::hosted::{HostedBackend, HostedToken, HostedTurn, SessionClaim};
use basalt_runtime::{Error, ErrorKind};
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::{Event, EventKind};

use convert::{
    decode_events, decode_item, instance_id, now_ms, queued, turn, version_ranges, worker_item,
};

/// duroxide's `Provider` over a Basalt [`HostedBackend`] (normally the
/// engine: see [`BasaltProvider::open`]).
#[derive(Clone)]
pub struct BasaltProvider {
    backend: Arc<dyn HostedBackend>,
}

impl std::fmt::Debug for BasaltProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasaltProvider").finish_non_exhaustive()
    }
}

impl BasaltProvider {
    /// A provider over any hosted backend.
    pub fn new(backend: Arc<dyn HostedBackend>) -> BasaltProvider {
        BasaltProvider { backend }
    }

    /// Opens Basalt's engine on `storage` and a provider over it; the
    /// engine is returned too, to shut it down (and for its metrics).
    pub async fn open(
        storage: basalt_storage::Storage,
        options: EngineOptions,
    ) -> Result<(BasaltProvider, Arc<Engine>), OpenError> {
        let engine = Arc::new(Engine::open(storage, options).await?);
        let backend: Arc<dyn HostedBackend> = engine.clone();
        Ok((BasaltProvider::new(backend), engine))
    }
}

/// A Basalt error as duroxide's: refusals (an invalid or expired lock, a
/// missing instance, bad input) are permanent, the rest (storage, a
/// partition reopening, overload) retryable: nothing was applied.
pub(crate) fn provider_error(operation: &str, error: Error) -> ProviderError {
    match error.kind() {
        ErrorKind::Conflict | ErrorKind::NotFound | ErrorKind::InvalidInput => {
            ProviderError::permanent(operation, error.to_string())
        }
        _ => ProviderError::retryable(operation, error.to_string()),
    }
}

fn invalid(operation: &str, why: impl Into<String>) -> ProviderError {
    ProviderError::permanent(operation, why.into())
}

#[async_trait::async_trait]
impl Provider for BasaltProvider {
    fn name(&self) -> &str {
        "basalt"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        let op = "fetch_orchestration_item";
        let ranges = filter.map(version_ranges);
        let Some(batch) = self
            .backend
            .hosted_fetch(lock_timeout, ranges, poll_timeout)
            .await
            .map_err(|e| provider_error(op, e))?
        else {
            return Ok(None);
        };
        let (history, history_error, kv_snapshot) = match decode_events(&batch.history) {
            Ok(history) => (history, None, convert::kv_entries(&batch.kv_snapshot)),
            Err(why) => (Vec::new(), Some(why), HashMap::new()),
        };
        let messages = batch
            .messages
            .iter()
            .filter_map(|bytes| decode_item(bytes).ok())
            .collect();
        let item = OrchestrationItem {
            instance: batch.instance.to_string(),
            orchestration_name: batch.name,
            execution_id: batch.execution_id,
            version: batch.version.unwrap_or_else(|| "unknown".into()),
            history,
            messages,
            history_error,
            kv_snapshot,
        };
        Ok(Some((item, batch.token.0, batch.attempts)))
    }

    async fn ack_orchestration_item(
        &self,
        lock_token: &str,
        execution_id: u64,
        history_delta: Vec<Event>,
        worker_items: Vec<WorkItem>,
        orchestrator_items: Vec<WorkItem>,
        metadata: ExecutionMetadata,
        cancelled_activities: Vec<ScheduledActivityIdentifier>,
    ) -> Result<(), ProviderError> {
        let op = "ack_orchestration_item";
        let turn: HostedTurn = turn(
            execution_id,
            &history_delta,
            worker_items,
            orchestrator_items,
            metadata,
            cancelled_activities,
        )
        .map_err(|why| invalid(op, why))?;
        self.backend
            .hosted_ack(&HostedToken(lock_token.to_owned()), turn)
            .await
            .map_err(|e| provider_error(op, e))
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.backend
            .hosted_abandon(&HostedToken(lock_token.to_owned()), delay, ignore_attempt)
            .await
            .map_err(|e| provider_error("abandon_orchestration_item", e))
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        let latest = self.latest(instance).await?;
        self.read_with_execution(instance, latest).await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        let op = "read";
        let Ok(id) = instance_id(instance) else {
            return Ok(Vec::new());
        };
        let stored = self
            .backend
            .hosted_history(&id, execution_id)
            .await
            .map_err(|e| provider_error(op, e))?;
        decode_events(&stored).map_err(|why| invalid(op, why))
    }

    async fn append_with_execution(
        &self,
        _instance: &str,
        _execution_id: u64,
        _new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        // Basalt appends history only under an instance's lock, with the
        // rest of a turn (one event per ack): an append outside a turn
        // would bypass the lock the contract is built on.
        Err(invalid(
            "append_with_execution",
            "not supported: Basalt appends history only through ack_orchestration_item",
        ))
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        let op = "enqueue_for_worker";
        let item = worker_item(&item).map_err(|why| invalid(op, why))?;
        self.backend
            .hosted_enqueue_work(item)
            .await
            .map_err(|e| provider_error(op, e))
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        let op = "fetch_work_item";
        let claim = session.map(|s| SessionClaim {
            owner: s.owner_id.clone(),
            lock_ms: u64::try_from(s.lock_timeout.as_millis()).unwrap_or(u64::MAX),
        });
        let Some(work) = self
            .backend
            .hosted_fetch_work(
                lock_timeout,
                claim,
                convert::tag_filter(tag_filter),
                poll_timeout,
            )
            .await
            .map_err(|e| provider_error(op, e))?
        else {
            return Ok(None);
        };
        let item = decode_item(&work.item.bytes).map_err(|why| invalid(op, why))?;
        Ok(Some((item, work.token.0, work.attempts)))
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        let op = "ack_work_item";
        let completion = match completion {
            None => None,
            Some(item @ (WorkItem::ActivityCompleted { .. } | WorkItem::ActivityFailed { .. })) => {
                Some(queued(&item, None).map_err(|why| invalid(op, why))?)
            }
            Some(_) => {
                return Err(invalid(
                    op,
                    "a completion must be ActivityCompleted or ActivityFailed",
                ));
            }
        };
        self.backend
            .hosted_ack_work(&HostedToken(token.to_owned()), completion)
            .await
            .map_err(|e| provider_error(op, e))
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.backend
            .hosted_renew_work(&HostedToken(token.to_owned()), extend_for)
            .await
            .map_err(|e| provider_error("renew_work_item_lock", e))
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        let owners: Vec<String> = owner_ids.iter().map(|s| (*s).to_owned()).collect();
        let renewed = self
            .backend
            .hosted_renew_sessions(&owners, extend_for, idle_timeout)
            .await
            .map_err(|e| provider_error("renew_session_lock", e))?;
        Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
    }

    async fn cleanup_orphaned_sessions(
        &self,
        _idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        let cleaned = self
            .backend
            .hosted_cleanup_sessions()
            .await
            .map_err(|e| provider_error("cleanup_orphaned_sessions", e))?;
        Ok(usize::try_from(cleaned).unwrap_or(usize::MAX))
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.backend
            .hosted_abandon_work(&HostedToken(token.to_owned()), delay, ignore_attempt)
            .await
            .map_err(|e| provider_error("abandon_work_item", e))
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.backend
            .hosted_renew(&HostedToken(token.to_owned()), extend_for)
            .await
            .map_err(|e| provider_error("renew_orchestration_item_lock", e))
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let op = "enqueue_for_orchestrator";
        if matches!(item, WorkItem::ActivityExecute { .. }) {
            return Err(invalid(op, "Invalid work item type: ActivityExecute"));
        }
        let visible_ms = delay
            .map(|d| now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        let (target, message) = queued(&item, visible_ms).map_err(|why| invalid(op, why))?;
        self.backend
            .hosted_enqueue(&target, message)
            .await
            .map_err(|e| provider_error(op, e))
    }

    fn as_management_capability(&self) -> Option<&dyn ProviderAdmin> {
        Some(self)
    }

    async fn get_custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        let Some(view) = self.view(instance).await? else {
            return Ok(None);
        };
        let (status, version) = view.custom_status;
        Ok((view.named.is_some() && version > last_seen_version).then_some((status, version)))
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        Ok(self
            .view(instance)
            .await?
            .and_then(|view| view.kv.get(key).map(|entry| entry.value.clone())))
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        Ok(self
            .view(instance)
            .await?
            .map(|view| {
                view.kv
                    .into_iter()
                    .map(|(key, entry)| (key, entry.value))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        let Some(view) = self.view(instance).await? else {
            return Ok(None);
        };
        if view.named.is_none() {
            return Ok(None);
        }
        let current = view
            .executions
            .iter()
            .find(|e| e.execution_id == view.current_execution);
        let history = self
            .read_with_execution(instance, view.current_execution)
            .await
            .unwrap_or_default();
        let carried = history
            .iter()
            .find_map(|event| match &event.kind {
                EventKind::OrchestrationStarted {
                    carry_forward_events,
                    ..
                } if event.event_id == 1 => Some(carry_forward_events.as_ref().map_or(0, Vec::len)),
                _ => None,
            })
            .unwrap_or(0);
        Ok(Some(duroxide::SystemStats {
            history_event_count: current.map_or(0, |e| e.event_count),
            history_size_bytes: current.map_or(0, |e| e.history_bytes),
            queue_pending_count: carried as u64,
            kv_user_key_count: view.kv.len() as u64,
            kv_total_value_bytes: view.kv.values().map(|e| e.value.len() as u64).sum(),
        }))
    }
}

impl BasaltProvider {
    /// An instance's record, if it has one (an id Basalt cannot hold has
    /// none).
    pub(crate) async fn view(
        &self,
        instance: &str,
    ) -> Result<Option<basalt_runtime::hosted::HostedInstanceView>, ProviderError> {
        let Ok(id) = instance_id(instance) else {
            return Ok(None);
        };
        self.backend
            .hosted_instance(&id)
            .await
            .map_err(|e| provider_error("read", e))
    }

    /// The highest execution with a record, or 1.
    pub(crate) async fn latest(&self, instance: &str) -> Result<u64, ProviderError> {
        Ok(self
            .view(instance)
            .await?
            .and_then(|view| view.executions.last().map(|e| e.execution_id))
            .unwrap_or(1))
    }

    pub(crate) fn backend(&self) -> &dyn HostedBackend {
        &*self.backend
    }
}
