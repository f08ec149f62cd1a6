//! Incremental checkpoints of the two-tier state: what changed since the
//! last checkpoint, encoded, under the store keys this module defines.
//!
//! A partition's store (an LSM tree, see `basalt-storage`) holds:
//!
//! | key | value |
//! |---|---|
//! | `c` | the [`Core`] as of the checkpoint, with its LSN |
//! | `i/{instance id}` | an [`Instance`] record |
//! | `e/{entity instance id}` | an [`Entity`] record |
//! | `h/{instance id}` | a hosted instance record (`crate::hosted`) |
//! | `w/{instance id}` | a hosted instance's worker items of no session |
//! | `o/{session id}` | a hosted session with its worker items |
//! | `b/i/{id}`, `b/e/{id}`, `b/h/{id}`, `b/w/{id}`, `b/o/{id}` | empty: the record has work to hand out after a restart |
//! | `s/{status tag}/{instance id}` | empty: the instance's status (the status index) |
//! | `t/{creation hour}/{instance id}` | the creation time: the time index |
//! | `n/{name hash}/{instance id}` | empty: the name index |
//! | `x/status-index` | empty: every instance of the store is in the status index |
//! | `x/name-time-index` | empty: every instance of the store is in the time and name indexes |
//!
//! Every key is the prefix and the id's UTF-8 bytes, so a prefix scan lists
//! records in id order.

use basalt_runtime::OrchestrationStatus;

use crate::codec::{self, DecodeError, EncodeError};
use crate::hosted::{HostedInstance, WorkerQueue};
use crate::state::{Entity, Instance, PartitionState, StateKey};
use crate::tier::IndexTag;

/// The store key of the partition-wide record.
pub const CORE_KEY: &[u8] = b"c";
/// Prefix of instance records.
pub const INSTANCE_PREFIX: &[u8] = b"i/";
/// Prefix of entity records.
pub const ENTITY_PREFIX: &[u8] = b"e/";
/// Prefix of hosted instance records.
pub const HOSTED_PREFIX: &[u8] = b"h/";
/// Prefix of hosted worker items of no session, by instance.
pub const HOSTED_WORK_PREFIX: &[u8] = b"w/";
/// Prefix of hosted sessions with their worker items.
pub const HOSTED_SESSION_PREFIX: &[u8] = b"o/";
/// Prefix of the markers of records with work to hand out after a restart.
pub const BUSY_PREFIX: &[u8] = b"b/";
/// Prefix of the status index: `s/`, a status tag byte, `/`, the id.
pub const STATUS_PREFIX: &[u8] = b"s/";
/// Present when every instance of the store is in the status index (the
/// store was empty when its partition first used it); stores written by
/// earlier builds lack it, and their queries scan every instance.
pub const STATUS_INDEX_KEY: &[u8] = b"x/status-index";
/// Prefix of the time index: `t/`, the hour of creation (hours since the
/// Unix epoch, 8 lowercase hex digits), `/`, the id; the value is the
/// creation time in ms, 8 bytes big-endian.
pub const TIME_PREFIX: &[u8] = b"t/";
/// Prefix of the name index: `n/`, the CRC-32C of the name (8 lowercase
/// hex digits), `/`, the id.
pub const NAME_PREFIX: &[u8] = b"n/";
/// Present when every instance of the store is in the time and name
/// indexes (the store was empty when a build that writes them first used
/// it); without it, queries by time or name scan.
pub const NAME_TIME_INDEX_KEY: &[u8] = b"x/name-time-index";
/// Milliseconds per bucket of the time index.
pub const TIME_BUCKET_MS: u64 = 3_600_000;

/// The status index's tag of a status: fixed numbers, part of the store
/// format.
pub fn status_tag(status: OrchestrationStatus) -> u8 {
    match status {
        OrchestrationStatus::Pending => 1,
        OrchestrationStatus::Running => 2,
        OrchestrationStatus::Completed => 3,
        OrchestrationStatus::Failed => 4,
        OrchestrationStatus::Terminated => 5,
        OrchestrationStatus::Suspended => 6,
        OrchestrationStatus::ContinuedAsNew => 7,
        // A status this build does not know is not indexed.
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

/// The prefix of the status index entries with `tag`.
pub fn status_prefix(tag: u8) -> Vec<u8> {
    let mut prefix = STATUS_PREFIX.to_vec();
    prefix.push(tag);
    prefix.push(b'/');
    prefix
}

/// The status index entry of an instance.
pub fn status_key(tag: u8, id: &str) -> Vec<u8> {
    let mut key = status_prefix(tag);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The prefix of the time index entries of one bucket (hour).
pub fn time_prefix(bucket: u64) -> Vec<u8> {
    let mut prefix = TIME_PREFIX.to_vec();
    prefix.extend_from_slice(format!("{bucket:08x}/").as_bytes());
    prefix
}

/// The time index bucket of a creation time.
pub fn time_bucket(created_ms: u64) -> u64 {
    created_ms / TIME_BUCKET_MS
}

/// The name index's hash of an orchestration name.
pub fn name_hash(name: &str) -> u32 {
    crc32c::crc32c(name.as_bytes())
}

/// The prefix of the name index entries of names with `hash`.
pub fn name_prefix(hash: u32) -> Vec<u8> {
    let mut prefix = NAME_PREFIX.to_vec();
    prefix.extend_from_slice(format!("{hash:08x}/").as_bytes());
    prefix
}

impl crate::tier::Indexed for Instance {
    fn index_tag(&self) -> Option<IndexTag> {
        Some(IndexTag {
            status: status_tag(self.meta.status),
            created_ms: self.meta.created_at_ms,
            name_hash: name_hash(&self.meta.name),
        })
    }
}

impl crate::tier::Indexed for Entity {}

impl crate::tier::Indexed for HostedInstance {}

impl crate::tier::Indexed for WorkerQueue {}

fn keyed(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + id.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The store key of a record.
pub fn record_key(key: &StateKey) -> Vec<u8> {
    match key {
        StateKey::Instance(id) => keyed(INSTANCE_PREFIX, id.as_str()),
        StateKey::Entity(id) => keyed(ENTITY_PREFIX, id.as_str()),
        StateKey::Hosted(id) => keyed(HOSTED_PREFIX, id.as_str()),
        StateKey::HostedWork(id) => keyed(HOSTED_WORK_PREFIX, id.as_str()),
        StateKey::HostedSession(id) => keyed(HOSTED_SESSION_PREFIX, id.as_str()),
    }
}

/// The store key of a record's "has work" marker.
pub fn busy_key(key: &StateKey) -> Vec<u8> {
    let mut busy = BUSY_PREFIX.to_vec();
    busy.extend_from_slice(&record_key(key));
    busy
}

/// The record a "has work" marker or a record key names; `None` for any
/// other key.
pub fn parse_key(bytes: &[u8]) -> Option<StateKey> {
    let bytes = bytes.strip_prefix(BUSY_PREFIX).unwrap_or(bytes);
    let id = |rest: &[u8]| {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| basalt_runtime::InstanceId::new(s.to_owned()).ok())
    };
    if let Some(rest) = bytes.strip_prefix(INSTANCE_PREFIX) {
        return id(rest).map(StateKey::Instance);
    }
    if let Some(rest) = bytes.strip_prefix(ENTITY_PREFIX) {
        return id(rest).map(StateKey::Entity);
    }
    if let Some(rest) = bytes.strip_prefix(HOSTED_PREFIX) {
        return id(rest).map(StateKey::Hosted);
    }
    if let Some(rest) = bytes.strip_prefix(HOSTED_WORK_PREFIX) {
        return id(rest).map(StateKey::HostedWork);
    }
    if let Some(rest) = bytes.strip_prefix(HOSTED_SESSION_PREFIX) {
        return id(rest).map(StateKey::HostedSession);
    }
    None
}

/// One key a checkpoint writes: a value, or `None` to delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The store key.
    pub key: Vec<u8>,
    /// The value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// Everything one checkpoint writes, as one atomic batch: every record
/// changed since the previous checkpoint and the core with the LSN it
/// reflects. Made on the partition task, written off it.
#[derive(Clone, Debug)]
pub struct Changes {
    /// The LSN the checkpoint reflects (the last event applied).
    pub lsn: u64,
    /// The writes, core last.
    pub writes: Vec<Write>,
    /// Records changed (not counting markers and the core).
    pub records: usize,
    generations: [u64; 5],
}

impl Instance {
    /// Whether the engine has work to hand out for it after a restart: a
    /// step, activities, timers.
    pub fn is_busy(&self) -> bool {
        self.step.is_some() || !self.activities.is_empty() || !self.timers.is_empty()
    }
}

impl HostedInstance {
    /// Whether the engine has work to hand out for it after a restart:
    /// queued messages or a lock.
    pub fn is_busy(&self) -> bool {
        !self.queue.is_empty() || self.lock.is_some()
    }
}

impl Entity {
    /// Whether the engine has work to hand out for it after a restart: a
    /// batch out, or delayed signals.
    pub fn is_busy(&self) -> bool {
        self.batch.is_some() || !self.delayed.is_empty()
    }
}

/// The index entries (key, value) of instance `id` with `tag`.
fn index_entries(id: &str, tag: Option<IndexTag>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(tag) = tag else {
        return Vec::new();
    };
    let mut entries = Vec::with_capacity(3);
    if tag.status != 0 {
        entries.push((status_key(tag.status, id), Vec::new()));
    }
    entries.push((
        keyed(&time_prefix(time_bucket(tag.created_ms)), id),
        tag.created_ms.to_be_bytes().to_vec(),
    ));
    entries.push((keyed(&name_prefix(tag.name_hash), id), Vec::new()));
    entries
}

/// Moves an instance's index entries from what the store holds (`old`)
/// to what its record says now (`new`): only entries that changed are
/// deleted or written.
fn index_writes(writes: &mut Vec<Write>, id: &str, old: Option<IndexTag>, new: Option<IndexTag>) {
    let (old, new) = (index_entries(id, old), index_entries(id, new));
    for (key, _) in &old {
        if !new.iter().any(|(k, _)| k == key) {
            writes.push(Write {
                key: key.clone(),
                value: None,
            });
        }
    }
    for entry in new {
        if !old.contains(&entry) {
            writes.push(Write {
                key: entry.0,
                value: Some(entry.1),
            });
        }
    }
}

fn record_writes(
    writes: &mut Vec<Write>,
    key: StateKey,
    value: Option<Vec<u8>>,
    busy: bool,
) -> usize {
    let encoded = value.as_ref().map_or(0, Vec::len);
    writes.push(Write {
        key: busy_key(&key),
        value: busy.then(Vec::new),
    });
    writes.push(Write {
        key: record_key(&key),
        value,
    });
    encoded
}

impl PartitionState {
    /// The changes since the previous call, for a checkpoint at the
    /// current LSN. Until [`PartitionState::checkpointed`] is called with
    /// them, the changed records stay in memory (they are not in the store
    /// yet); records changed after this call go into the next checkpoint.
    pub fn take_changes(&mut self) -> Result<Changes, EncodeError> {
        let mut writes = Vec::new();
        let mut records = 0;
        let instances = self.instances.take_changes(|change| {
            records += 1;
            if change.stored_tag != change.tag {
                index_writes(
                    &mut writes,
                    change.key.as_str(),
                    change.stored_tag,
                    change.tag,
                );
            }
            let key = StateKey::Instance(change.key.clone());
            let value = change.value.map(codec::encode_instance).transpose()?;
            let busy = change.value.is_some_and(Instance::is_busy);
            Ok::<_, EncodeError>(record_writes(&mut writes, key, value, busy))
        })?;
        let entities = self.entities.take_changes(|change| {
            records += 1;
            let key = StateKey::Entity(change.key.clone());
            let value = change.value.map(codec::encode_entity).transpose()?;
            let busy = change.value.is_some_and(Entity::is_busy);
            Ok::<_, EncodeError>(record_writes(&mut writes, key, value, busy))
        })?;
        let hosted = self.hosted.take_changes(|change| {
            records += 1;
            let key = StateKey::Hosted(change.key.clone());
            let value = change.value.map(codec::encode_hosted).transpose()?;
            let busy = change.value.is_some_and(HostedInstance::is_busy);
            Ok::<_, EncodeError>(record_writes(&mut writes, key, value, busy))
        })?;
        let hosted_work = self.hosted_work.take_changes(|change| {
            records += 1;
            let key = StateKey::HostedWork(change.key.clone());
            let value = change.value.map(codec::encode_work).transpose()?;
            let busy = change.value.is_some_and(|q| !q.is_empty());
            Ok::<_, EncodeError>(record_writes(&mut writes, key, value, busy))
        })?;
        let hosted_sessions = self.hosted_sessions.take_changes(|change| {
            records += 1;
            let key = StateKey::HostedSession(change.key.clone());
            let value = change.value.map(codec::encode_work).transpose()?;
            let busy = change.value.is_some_and(|q| !q.is_empty());
            Ok::<_, EncodeError>(record_writes(&mut writes, key, value, busy))
        })?;
        for (complete, key) in [
            (self.status_indexed, STATUS_INDEX_KEY),
            (self.name_time_indexed, NAME_TIME_INDEX_KEY),
        ] {
            if complete {
                writes.push(Write {
                    key: key.to_vec(),
                    value: Some(Vec::new()),
                });
            }
        }
        writes.push(Write {
            key: CORE_KEY.to_vec(),
            value: Some(codec::encode_core(&self.core())?),
        });
        Ok(Changes {
            lsn: self.last_lsn,
            writes,
            records,
            generations: [instances, entities, hosted, hosted_work, hosted_sessions],
        })
    }

    /// The checkpoint holding `changes` is durable: the records it carried
    /// (and not changed since) may be evicted now.
    pub fn checkpointed(&mut self, changes: &Changes) {
        let [instances, entities, hosted, hosted_work, hosted_sessions] = changes.generations;
        self.instances.checkpointed(instances);
        self.entities.checkpointed(entities);
        self.hosted.checkpointed(hosted);
        self.hosted_work.checkpointed(hosted_work);
        self.hosted_sessions.checkpointed(hosted_sessions);
    }

    /// The core and a copy of every resident record, marked complete: the
    /// start of a whole state, into which the store's records are then
    /// installed (those memory knows are newer and stay).
    pub fn resident_copy(&self) -> PartitionState {
        let mut copy = PartitionState::from_core(self.core(), true);
        for (key, value, _) in self.instances.resident_entries() {
            copy.instances.install(key.clone(), value.cloned(), 0);
        }
        for (key, value, _) in self.entities.resident_entries() {
            copy.entities.install(key.clone(), value.cloned(), 0);
        }
        for (key, value, _) in self.hosted.resident_entries() {
            copy.hosted.install(key.clone(), value.cloned(), 0);
        }
        for (key, value, _) in self.hosted_work.resident_entries() {
            copy.hosted_work.install(key.clone(), value.cloned(), 0);
        }
        for (key, value, _) in self.hosted_sessions.resident_entries() {
            copy.hosted_sessions.install(key.clone(), value.cloned(), 0);
        }
        copy.hosted_queued = self.hosted_queued.clone();
        copy
    }

    /// Loads a record kept cold in memory (see `Tier`), as if read from
    /// the store; returns whether it was cold. The engine tries this before
    /// reading the store.
    pub fn warm(&mut self, key: &StateKey) -> Result<bool, DecodeError> {
        let cold = match key {
            StateKey::Instance(id) => self.instances.take_cold(id),
            StateKey::Entity(id) => self.entities.take_cold(id),
            StateKey::Hosted(id) => self.hosted.take_cold(id),
            StateKey::HostedWork(id) => self.hosted_work.take_cold(id),
            StateKey::HostedSession(id) => self.hosted_sessions.take_cold(id),
        };
        match cold {
            Some(bytes) => {
                self.install(key.clone(), Some(&bytes))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Puts a record read from the store in memory (`None`: the store has
    /// none). A record memory already knows is left alone: it is newer.
    pub fn install(&mut self, key: StateKey, bytes: Option<&[u8]>) -> Result<(), DecodeError> {
        let encoded = bytes.map_or(0, <[u8]>::len);
        match key {
            StateKey::Instance(id) => {
                let value = bytes.map(codec::decode_instance).transpose()?;
                self.instances.install(id, value, encoded);
            }
            StateKey::Entity(id) => {
                let value = bytes.map(codec::decode_entity).transpose()?;
                self.entities.install(id, value, encoded);
            }
            StateKey::Hosted(id) => {
                let value = bytes.map(codec::decode_hosted).transpose()?;
                self.hosted.install(id.clone(), value, encoded);
                self.reindex_hosted(&StateKey::Hosted(id));
            }
            StateKey::HostedWork(id) => {
                let value = bytes.map(codec::decode_work).transpose()?;
                self.hosted_work.install(id.clone(), value, encoded);
                self.reindex_hosted(&StateKey::HostedWork(id));
            }
            StateKey::HostedSession(id) => {
                let value = bytes.map(codec::decode_work).transpose()?;
                self.hosted_sessions.install(id.clone(), value, encoded);
                self.reindex_hosted(&StateKey::HostedSession(id));
            }
        }
        Ok(())
    }
}
