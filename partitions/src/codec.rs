//! Byte encoding of log events and partition snapshots: bincode 2 (serde),
//! behind a one-byte format version so a later encoding can be read side
//! by side. Nothing else in Basalt depends on these bytes.

use std::collections::BTreeMap;

use basalt_runtime::InstanceId;
use serde::{Deserialize, Serialize};

use crate::event::{Envelope, Event, Position};
use crate::hosted::{HostedInstance, WorkerQueue};
use crate::state::{Core, Entity, Instance, PartitionState};
use crate::tier::Tier;

/// Version byte in front of every encoded event and snapshot. 3: history
/// events and orchestrator actions carry a `correlation` id (the Durable
/// Task protocol's entity request ids), scheduled orchestration signals,
/// rewind, and messages to the same partition take effect inside the event
/// that sends them (a log that delivered them in later events must not be
/// replayed by this rule). 4: entity batch results carry scheduled signals
/// and orchestration starts (`Message::StartOrchestration`); steps are cut
/// when a worker takes them (`StepCompleted` records `consumed` and
/// `started_ms`, `Instance::step` is the offered sequence number);
/// instances keep late answers for rewind; `InstanceState::version`,
/// `EntityState::locked_by`. 5: instances keep the tags they were
/// started with (`Event::Start::tags`, `InstanceState::tags`). 6: the
/// `Event::RewindRecreating` and `ControlOp::TerminateAfterStep` variants,
/// each appended after every other, so version 5 bytes decode unchanged
/// and are read too
/// ([`OLDEST_READABLE_VERSION`]). 7: hosted instances (`crate::hosted`:
/// the `Event::Hosted` and `Message::Hosted` variants, appended, and their
/// records); a whole-state snapshot of version 7 carries the hosted
/// records after everything else, one of an earlier version has none.
/// Payloads of other versions are refused with a message naming both
/// versions; no released hub holds them.
pub const ENCODING_VERSION: u8 = 7;

/// The oldest version this build still reads: versions 6 and 7 only added
/// enum variants at the end, which leaves every version-5 encoding valid
/// (snapshots excepted, which are read by their version).
pub const OLDEST_READABLE_VERSION: u8 = 5;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The version byte is not one this build reads.
    #[error(
        "unknown encoding version {found} (this build reads {OLDEST_READABLE_VERSION} to {ENCODING_VERSION})"
    )]
    UnknownVersion {
        /// The version found.
        found: u8,
    },
    /// There were no bytes at all.
    #[error("empty payload")]
    Empty,
    /// bincode could not decode the rest.
    #[error("undecodable {what}: {message}")]
    Bincode {
        /// Event or snapshot.
        what: &'static str,
        /// What bincode said.
        message: String,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {what}: {message}")]
pub struct EncodeError {
    what: &'static str,
    message: String,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode<T: serde::Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![ENCODING_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| EncodeError {
        what,
        message: e.to_string(),
    })?;
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if !(OLDEST_READABLE_VERSION..=ENCODING_VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion { found: version });
    }
    let (value, _) =
        bincode::serde::decode_from_slice(rest, config()).map_err(|e| DecodeError::Bincode {
            what,
            message: e.to_string(),
        })?;
    Ok(value)
}

/// Encodes a log event.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, EncodeError> {
    encode(event, "event")
}

/// Decodes a log event.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    decode(bytes, "event")
}

/// A whole partition in one value: the checkpoint format of hubs before
/// the two-tier state (read to upgrade them), and what the replay checks
/// compare. Field order is the encoding: do not reorder.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    partition: u32,
    partition_count: u32,
    last_lsn: u64,
    instances: BTreeMap<&'a InstanceId, &'a Instance>,
    outbox: &'a BTreeMap<(u32, Position), Envelope>,
    received: &'a BTreeMap<u32, Position>,
    next_execution: u64,
    next_step_seq: u64,
    entities: BTreeMap<&'a InstanceId, &'a Entity>,
    // Version 7 on: the hosted records.
    hosted: BTreeMap<&'a InstanceId, &'a HostedInstance>,
    hosted_work: BTreeMap<&'a InstanceId, &'a WorkerQueue>,
    hosted_sessions: BTreeMap<&'a InstanceId, &'a WorkerQueue>,
}

/// The hosted records a version-7 snapshot carries after the rest.
#[derive(Default, Deserialize)]
struct HostedSnapshot {
    hosted: BTreeMap<InstanceId, HostedInstance>,
    hosted_work: BTreeMap<InstanceId, WorkerQueue>,
    hosted_sessions: BTreeMap<InstanceId, WorkerQueue>,
}

/// The owned twin of [`SnapshotRef`], for decoding.
#[derive(Deserialize)]
struct Snapshot {
    partition: u32,
    partition_count: u32,
    last_lsn: u64,
    instances: BTreeMap<InstanceId, Instance>,
    outbox: BTreeMap<(u32, Position), Envelope>,
    received: BTreeMap<u32, Position>,
    next_execution: u64,
    next_step_seq: u64,
    entities: BTreeMap<InstanceId, Entity>,
}

/// Encodes a whole partition state. Equal states give equal bytes. Only a
/// state wholly in memory can be encoded this way (the replay checks and
/// tests; the engine loads every record first).
pub fn encode_snapshot(state: &PartitionState) -> Result<Vec<u8>, EncodeError> {
    if !state.instances.is_complete()
        || !state.entities.is_complete()
        || !state.hosted.is_complete()
        || !state.hosted_work.is_complete()
        || !state.hosted_sessions.is_complete()
    {
        return Err(EncodeError {
            what: "snapshot",
            message: "the partition's records are not all in memory".into(),
        });
    }
    encode(
        &SnapshotRef {
            partition: state.partition,
            partition_count: state.partition_count,
            last_lsn: state.last_lsn,
            instances: state.instances.resident(),
            outbox: &state.outbox,
            received: &state.received,
            next_execution: state.next_execution,
            next_step_seq: state.next_step_seq,
            entities: state.entities.resident(),
            hosted: state.hosted.resident(),
            hosted_work: state.hosted_work.resident(),
            hosted_sessions: state.hosted_sessions.resident(),
        },
        "snapshot",
    )
}

/// Decodes a whole partition state: every record resident and not yet in
/// any store (a first checkpoint writes them all).
pub fn decode_snapshot(bytes: &[u8]) -> Result<PartitionState, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if !(OLDEST_READABLE_VERSION..=ENCODING_VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion { found: version });
    }
    let undecodable = |e: bincode::error::DecodeError| DecodeError::Bincode {
        what: "snapshot",
        message: e.to_string(),
    };
    let (snapshot, read): (Snapshot, usize) =
        bincode::serde::decode_from_slice(rest, config()).map_err(undecodable)?;
    let hosted: HostedSnapshot = if version >= 7 {
        bincode::serde::decode_from_slice(&rest[read..], config())
            .map_err(undecodable)?
            .0
    } else {
        HostedSnapshot::default()
    };
    let mut instances_by_status = BTreeMap::new();
    for instance in snapshot.instances.values() {
        *instances_by_status.entry(instance.meta.status).or_insert(0) += 1;
    }
    let entities_with_state = snapshot
        .entities
        .values()
        .filter(|e| e.state.is_some())
        .count() as u64;
    let mut state = PartitionState::from_core(
        Core {
            partition: snapshot.partition,
            partition_count: snapshot.partition_count,
            last_lsn: snapshot.last_lsn,
            outbox: snapshot.outbox,
            received: snapshot.received,
            next_execution: snapshot.next_execution,
            next_step_seq: snapshot.next_step_seq,
            instances_by_status,
            entities_with_state,
        },
        true,
    );
    state.instances = Tier::from_map(snapshot.instances);
    state.entities = Tier::from_map(snapshot.entities);
    state.hosted = Tier::from_map(hosted.hosted);
    state.hosted_work = Tier::from_map(hosted.hosted_work);
    state.hosted_sessions = Tier::from_map(hosted.hosted_sessions);
    state.rebuild_hosted_index();
    Ok(state)
}

/// Encodes the partition-wide part of a checkpoint.
pub fn encode_core(core: &Core) -> Result<Vec<u8>, EncodeError> {
    encode(core, "partition core")
}

/// Decodes the partition-wide part of a checkpoint.
pub fn decode_core(bytes: &[u8]) -> Result<Core, DecodeError> {
    decode(bytes, "partition core")
}

/// Encodes one instance record.
pub fn encode_instance(instance: &Instance) -> Result<Vec<u8>, EncodeError> {
    encode(instance, "instance")
}

/// Decodes one instance record.
pub fn decode_instance(bytes: &[u8]) -> Result<Instance, DecodeError> {
    decode(bytes, "instance")
}

/// Decodes only what clients see of an instance record (its first field),
/// without its history: for queries.
pub fn decode_instance_meta(bytes: &[u8]) -> Result<basalt_runtime::InstanceState, DecodeError> {
    decode(bytes, "instance")
}

/// Encodes one entity record.
pub fn encode_entity(entity: &Entity) -> Result<Vec<u8>, EncodeError> {
    encode(entity, "entity")
}

/// Decodes one entity record.
pub fn decode_entity(bytes: &[u8]) -> Result<Entity, DecodeError> {
    decode(bytes, "entity")
}

/// Encodes one hosted instance record.
pub fn encode_hosted(instance: &HostedInstance) -> Result<Vec<u8>, EncodeError> {
    encode(instance, "hosted instance")
}

/// Decodes one hosted instance record.
pub fn decode_hosted(bytes: &[u8]) -> Result<HostedInstance, DecodeError> {
    decode(bytes, "hosted instance")
}

/// Encodes one hosted worker-item record (of an instance or a session).
pub fn encode_work(queue: &WorkerQueue) -> Result<Vec<u8>, EncodeError> {
    encode(queue, "hosted work")
}

/// Decodes one hosted worker-item record.
pub fn decode_work(bytes: &[u8]) -> Result<WorkerQueue, DecodeError> {
    decode(bytes, "hosted work")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_event() -> Event {
        Event::Purge {
            instance_id: InstanceId::new("i").expect("id"),
        }
    }

    #[test]
    fn version_5_bytes_are_read_and_other_versions_refused() {
        let mut bytes = encode_event(&purge_event()).expect("encodes");
        assert_eq!(bytes[0], ENCODING_VERSION);
        bytes[0] = OLDEST_READABLE_VERSION;
        assert_eq!(
            decode_event(&bytes).expect("version 5 decodes"),
            purge_event()
        );
        for version in [OLDEST_READABLE_VERSION - 1, ENCODING_VERSION + 1] {
            bytes[0] = version;
            let error = decode_event(&bytes).expect_err("refused");
            assert!(error.to_string().contains("5 to 7"), "{error}");
        }
    }
}
