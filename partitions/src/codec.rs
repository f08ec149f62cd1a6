//! Byte encoding of log events and partition snapshots: bincode 2 (serde),
//! behind a one-byte format version so a later encoding can be read side
//! by side. Nothing else in Basalt depends on these bytes.

use crate::event::Event;
use crate::state::PartitionState;

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
/// `EntityState::locked_by`. Payloads of
/// other versions are refused with a message naming both versions; no
/// released hub holds them.
pub const ENCODING_VERSION: u8 = 4;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The version byte is not one this build reads.
    #[error("unknown encoding version {found} (this build reads {ENCODING_VERSION})")]
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
    if version != ENCODING_VERSION {
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

/// Encodes a whole partition state (a checkpoint). Equal states give equal
/// bytes: the state holds ordered maps only.
pub fn encode_snapshot(state: &PartitionState) -> Result<Vec<u8>, EncodeError> {
    encode(state, "snapshot")
}

/// Decodes a partition state.
pub fn decode_snapshot(bytes: &[u8]) -> Result<PartitionState, DecodeError> {
    decode(bytes, "snapshot")
}
