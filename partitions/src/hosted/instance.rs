//! One hosted instance: its executions and histories, its orchestrator
//! queue and lock, its key-value store and custom status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Ack, FINISHED_STATUSES, FetchOutcome, KvEntry, KvOp, Lock, MessageKind, QueuedMessage,
    RUNNING_STATUS, StoredEvent, VersionRange,
};

/// Everything a partition keeps of one hosted instance id. A record can
/// exist before the instance does: messages sent to an instance that has
/// not started wait here, and an ack without orchestration metadata writes
/// executions without making the instance known (`meta` stays `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedInstance {
    /// The instance id.
    pub id: String,
    /// Set by the first ack that names the orchestration and its version:
    /// from then on the instance exists for clients and management.
    pub meta: Option<InstanceMeta>,
    /// Executions by id (one per continue-as-new), each with its history.
    pub executions: BTreeMap<u64, Execution>,
    /// The runtime's custom status, if set.
    pub custom_status: Option<String>,
    /// Goes up by one with every ack that sets or clears the custom status,
    /// so a client can poll for changes.
    pub custom_status_version: u64,
    /// Key-value pairs as of the last finished execution.
    pub kv: BTreeMap<String, KvEntry>,
    /// The current execution's key-value changes; `None` removes the key
    /// when the execution finishes (and hides it until then).
    pub kv_delta: BTreeMap<String, Option<KvEntry>>,
    /// Orchestrator messages, in hub-wide enqueue order.
    pub queue: Vec<QueuedMessage>,
    /// The lock a fetch took, if any (it may have expired).
    pub lock: Option<Lock>,
    /// The sessions its activities were queued in (they live with their
    /// session, maybe on another partition): deleting the instance
    /// removes its items there too.
    pub work_sessions: std::collections::BTreeSet<String>,
}

/// What the first naming ack recorded about an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMeta {
    /// Orchestration name (the latest ack that named it).
    pub name: String,
    /// Orchestration version (the latest ack that named it).
    pub version: String,
    /// The parent instance of a sub-orchestration; never changes.
    pub parent: Option<String>,
    /// When the instance was created.
    pub created_ms: u64,
    /// When an ack last changed it.
    pub updated_ms: u64,
    /// The execution fetches report: the highest an ack has named.
    pub current_execution: u64,
}

/// One execution of a hosted instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// `Running`, or the status its last ack gave (`Completed`, `Failed`,
    /// `ContinuedAsNew`, ...).
    pub status: String,
    /// The output its last status-setting ack gave.
    pub output: Option<String>,
    /// When its first ack arrived.
    pub started_ms: u64,
    /// When an ack last set its status.
    pub completed_ms: Option<u64>,
    /// The runtime version its replay is pinned to (major, minor, patch).
    pub pinned_version: Option<(u64, u64, u64)>,
    /// Name and version of the orchestration its history starts, when an
    /// ack said so (a fetch falls back to it for an instance with no
    /// metadata).
    pub started_as: Option<(String, Option<String>)>,
    /// The history, in append order (event ids ascending as the runtime
    /// assigns them, not necessarily contiguous).
    pub events: Vec<StoredEvent>,
}

/// What a fetch would do to an instance (see [`HostedInstance::fetch_plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchPlan {
    /// Lock it and take its visible messages.
    Lock,
    /// Drop its visible messages: it does not exist and they are all
    /// droppable.
    DropOrphans,
    /// Nothing to do.
    Nothing,
}

/// Why an ack is refused (nothing of it is applied, the lock stays).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckRefusal {
    /// No lock with this token (never taken, released, or taken over).
    #[error("Invalid lock token: the instance holds no lock with it")]
    InvalidToken,
    /// The lock expired before the ack arrived.
    #[error("Instance lock expired before the ack")]
    Expired,
    /// An event id of 0.
    #[error("event id 0 is not valid (ids start at 1)")]
    ZeroEventId,
    /// An event id already in the execution's history (or twice in the delta).
    #[error("duplicate event id {0} in execution {1}")]
    DuplicateEventId(u64, u64),
}

impl HostedInstance {
    /// An empty record for `id`.
    pub fn new(id: impl Into<String>) -> HostedInstance {
        HostedInstance {
            id: id.into(),
            ..HostedInstance::default()
        }
    }

    /// The instance exists for clients: an ack has named it.
    pub fn exists(&self) -> bool {
        self.meta.is_some()
    }

    /// The execution fetches report: the metadata's current one, else 1.
    pub fn current_execution(&self) -> u64 {
        self.meta.as_ref().map_or(1, |m| m.current_execution)
    }

    /// The highest execution with a record (what reads return), else 1.
    pub fn latest_execution(&self) -> u64 {
        self.executions.keys().next_back().copied().unwrap_or(1)
    }

    /// Adds an orchestrator message in its place in the enqueue order.
    pub fn enqueue(&mut self, message: QueuedMessage) {
        let at = self.queue.partition_point(|m| m.order <= message.order);
        self.queue.insert(at, message);
    }

    /// The enqueue order of the message a fetch at `now_ms` would start
    /// its batch with, if the instance can be fetched: not locked, a
    /// message visible, and its current execution's pinned version within
    /// `filter` (when given; an empty filter accepts nothing, an execution
    /// with no pinned version is always accepted).
    pub fn fetchable(&self, now_ms: u64, filter: Option<&[VersionRange]>) -> Option<u64> {
        if self.lock.is_some_and(|l| l.held(now_ms)) {
            return None;
        }
        if let Some(ranges) = filter {
            let first = ranges.first()?;
            // An instance no ack has named has no pinned version yet.
            let pinned = self
                .meta
                .as_ref()
                .and_then(|m| self.executions.get(&m.current_execution))
                .and_then(|e| e.pinned_version);
            if pinned.is_some_and(|v| v < first.min || v > first.max) {
                return None;
            }
        }
        self.queue
            .iter()
            .find(|m| m.visible_ms <= now_ms)
            .map(|m| m.order)
    }

    /// What a fetch at `now_ms` would do, without doing it: lock the
    /// instance, drop the droppable messages of an instance that does not
    /// exist, or nothing. An instance that does not exist is only locked
    /// if a visible message names its orchestration or its history does.
    pub fn fetch_plan(&self, now_ms: u64, filter: Option<&[VersionRange]>) -> FetchPlan {
        if self.fetchable(now_ms, filter).is_none() {
            return FetchPlan::Nothing;
        }
        let mut visible = self.queue.iter().filter(|m| m.visible_ms <= now_ms);
        if self.name_with(visible.clone()).is_some() {
            FetchPlan::Lock
        } else if visible.all(|m| m.kind == MessageKind::DropIfNoInstance) {
            FetchPlan::DropOrphans
        } else {
            FetchPlan::Nothing
        }
    }

    /// Does what [`fetch_plan`](Self::fetch_plan) says: locks the instance
    /// with `token` until `now_ms + lock_ms` and makes every visible
    /// message the batch (whatever fetch had it before), counting an
    /// attempt on each; or drops the droppable messages.
    pub fn fetch(
        &mut self,
        token: u64,
        now_ms: u64,
        lock_ms: u64,
        filter: Option<&[VersionRange]>,
    ) -> FetchOutcome {
        match self.fetch_plan(now_ms, filter) {
            FetchPlan::Nothing => FetchOutcome::Nothing,
            FetchPlan::DropOrphans => {
                let before = self.queue.len();
                self.queue
                    .retain(|m| m.visible_ms > now_ms || m.kind != MessageKind::DropIfNoInstance);
                FetchOutcome::Dropped {
                    count: before - self.queue.len(),
                }
            }
            FetchPlan::Lock => {
                let mut attempts = 0;
                for message in self.queue.iter_mut().filter(|m| m.visible_ms <= now_ms) {
                    message.fetched_by = Some(token);
                    message.attempts = message.attempts.saturating_add(1);
                    attempts = attempts.max(message.attempts);
                }
                self.lock = Some(Lock {
                    token,
                    until_ms: now_ms.saturating_add(lock_ms),
                });
                FetchOutcome::Locked { attempts }
            }
        }
    }

    /// Name and version the fetch holding `token` reports: the
    /// metadata's, else the history's start, else a start in its batch.
    pub fn fetch_name(&self, token: u64) -> Option<(String, Option<String>)> {
        self.name_with(self.batch(token))
    }

    fn name_with<'a>(
        &'a self,
        mut batch: impl Iterator<Item = &'a QueuedMessage>,
    ) -> Option<(String, Option<String>)> {
        if let Some(meta) = &self.meta {
            return Some((meta.name.clone(), Some(meta.version.clone())));
        }
        if let Some(started) = self
            .executions
            .get(&self.latest_execution())
            .and_then(|e| e.started_as.clone())
        {
            return Some(started);
        }
        batch.find_map(|m| match &m.kind {
            MessageKind::Start { name, version } => Some((name.clone(), version.clone())),
            _ => None,
        })
    }

    /// The batch of the fetch holding `token`, in enqueue order.
    pub fn batch(&self, token: u64) -> impl Iterator<Item = &QueuedMessage> {
        self.queue
            .iter()
            .filter(move |m| m.fetched_by == Some(token))
    }

    /// Checks an ack against the lock and the history; a refused ack
    /// changes nothing.
    pub fn check_ack(&self, ack: &Ack, now_ms: u64) -> Result<(), AckRefusal> {
        match self.lock {
            Some(lock) if lock.token == ack.token => {
                if !lock.held(now_ms) {
                    return Err(AckRefusal::Expired);
                }
            }
            _ => return Err(AckRefusal::InvalidToken),
        }
        let existing = self.executions.get(&ack.execution_id);
        let mut seen = std::collections::BTreeSet::new();
        for event in &ack.events {
            if event.id == 0 {
                return Err(AckRefusal::ZeroEventId);
            }
            let present = existing.is_some_and(|e| e.events.iter().any(|x| x.id == event.id));
            if present || !seen.insert(event.id) {
                return Err(AckRefusal::DuplicateEventId(event.id, ack.execution_id));
            }
        }
        Ok(())
    }

    /// Applies a checked ack: the batch leaves the queue, the instance and
    /// execution records are created or updated, the history grows, custom
    /// status and key-value changes are recorded (merged into the store
    /// when the execution finishes), and the lock is released.
    pub fn ack(&mut self, ack: Ack, now_ms: u64) {
        let token = ack.token;
        self.queue.retain(|m| m.fetched_by != Some(token));
        if let (Some(name), Some(version)) = (&ack.metadata.name, &ack.metadata.version) {
            let meta = self.meta.get_or_insert_with(|| InstanceMeta {
                name: name.clone(),
                version: version.clone(),
                parent: ack.metadata.parent.clone(),
                created_ms: now_ms,
                updated_ms: now_ms,
                current_execution: ack.execution_id,
            });
            meta.name = name.clone();
            meta.version = version.clone();
        }
        let execution = self
            .executions
            .entry(ack.execution_id)
            .or_insert_with(|| Execution {
                status: RUNNING_STATUS.to_owned(),
                started_ms: now_ms,
                ..Execution::default()
            });
        if let Some(pinned) = ack.metadata.pinned_version {
            execution.pinned_version = Some(pinned);
        }
        if ack.started_as.is_some() {
            execution.started_as = ack.started_as;
        }
        execution.events.extend(ack.events);
        let finished = match ack.metadata.status {
            Some(status) => {
                let finished = FINISHED_STATUSES.contains(&status.as_str());
                execution.status = status;
                execution.output = ack.metadata.output;
                execution.completed_ms = Some(now_ms);
                finished
            }
            None => false,
        };
        if let Some(meta) = &mut self.meta {
            meta.current_execution = meta.current_execution.max(ack.execution_id);
            meta.updated_ms = now_ms;
            if let Some(status) = ack.custom_status {
                self.custom_status = status;
                self.custom_status_version += 1;
            }
        }
        for op in ack.kv {
            match op {
                KvOp::Set {
                    key,
                    value,
                    updated_ms,
                } => {
                    self.kv_delta
                        .insert(key, Some(KvEntry { value, updated_ms }));
                }
                KvOp::Clear { key } => {
                    self.kv_delta.insert(key, None);
                }
                KvOp::ClearAll => {
                    let keys: Vec<String> = self
                        .kv
                        .keys()
                        .chain(self.kv_delta.keys())
                        .cloned()
                        .collect();
                    for key in keys {
                        self.kv_delta.insert(key, None);
                    }
                }
            }
        }
        if finished {
            for (key, change) in std::mem::take(&mut self.kv_delta) {
                match change {
                    Some(entry) => {
                        self.kv.insert(key, entry);
                    }
                    None => {
                        self.kv.remove(&key);
                    }
                }
            }
        }
        self.lock = None;
    }

    /// Checks that `token` names this instance's lock (held or expired),
    /// as an abandon needs.
    pub fn check_abandon(&self, token: u64) -> Result<(), AckRefusal> {
        match self.lock {
            Some(lock) if lock.token == token => Ok(()),
            _ => Err(AckRefusal::InvalidToken),
        }
    }

    /// Checks that `token` names this instance's lock and that it is still
    /// held, as a renewal needs.
    pub fn check_renew(&self, token: u64, now_ms: u64) -> Result<(), AckRefusal> {
        match self.lock {
            Some(lock) if lock.token == token && lock.held(now_ms) => Ok(()),
            Some(lock) if lock.token == token => Err(AckRefusal::Expired),
            _ => Err(AckRefusal::InvalidToken),
        }
    }

    /// Releases the lock of the fetch holding `token`. `delay_ms` hides
    /// that fetch's batch until then; `ignore_attempt` takes back the
    /// attempt it counted. Messages that arrived since are untouched.
    pub fn abandon(
        &mut self,
        token: u64,
        now_ms: u64,
        delay_ms: Option<u64>,
        ignore_attempt: bool,
    ) -> Result<(), AckRefusal> {
        if self.lock.is_none_or(|l| l.token != token) {
            return Err(AckRefusal::InvalidToken);
        }
        self.lock = None;
        for message in self
            .queue
            .iter_mut()
            .filter(|m| m.fetched_by == Some(token))
        {
            if ignore_attempt {
                message.attempts = message.attempts.saturating_sub(1);
            }
            if let Some(delay) = delay_ms {
                message.visible_ms = now_ms.saturating_add(delay);
            }
        }
        Ok(())
    }

    /// Extends the lock held with `token` to `now_ms + extend_ms`.
    pub fn renew(&mut self, token: u64, now_ms: u64, extend_ms: u64) -> Result<(), AckRefusal> {
        match &mut self.lock {
            Some(lock) if lock.token == token => {
                if !lock.held(now_ms) {
                    return Err(AckRefusal::Expired);
                }
                lock.until_ms = now_ms.saturating_add(extend_ms);
                Ok(())
            }
            _ => Err(AckRefusal::InvalidToken),
        }
    }

    /// Key-value pairs as a client reads them: the store with the current
    /// execution's changes over it.
    pub fn kv_merged(&self) -> BTreeMap<&str, &KvEntry> {
        let mut merged: BTreeMap<&str, &KvEntry> =
            self.kv.iter().map(|(k, v)| (k.as_str(), v)).collect();
        for (key, change) in &self.kv_delta {
            match change {
                Some(entry) => {
                    merged.insert(key, entry);
                }
                None => {
                    merged.remove(key.as_str());
                }
            }
        }
        merged
    }

    /// Removes old executions: not the current one, not a running one, not
    /// the newest `keep_last`, and (if given) only those finished before
    /// `completed_before_ms`. Returns (executions, events) removed. The
    /// key-value store is the instance's and stays.
    pub fn prune(&mut self, keep_last: u32, completed_before_ms: Option<u64>) -> (u64, u64) {
        let current = self.current_execution();
        let keep: Vec<u64> = self
            .executions
            .keys()
            .rev()
            .take(keep_last.max(1) as usize)
            .copied()
            .collect();
        let doomed: Vec<u64> = self
            .executions
            .iter()
            .filter(|(id, e)| {
                **id != current
                    && e.status != RUNNING_STATUS
                    && !keep.contains(id)
                    && completed_before_ms
                        .is_none_or(|cut| e.completed_ms.is_some_and(|done| done < cut))
            })
            .map(|(id, _)| *id)
            .collect();
        let mut events = 0;
        for id in &doomed {
            if let Some(execution) = self.executions.remove(id) {
                events += execution.events.len() as u64;
            }
        }
        (doomed.len() as u64, events)
    }

    /// The highest attempt count among the queued messages.
    pub fn max_attempts(&self) -> u32 {
        self.queue.iter().map(|m| m.attempts).max().unwrap_or(0)
    }
}
