//! Domain newtypes shared by the storage API, so a log position can never be
//! mixed up with a partition number or an epoch.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Log sequence number: the position of a record in one partition's log.
///
/// LSNs start at 1 and grow by exactly 1 per record; `Lsn::ZERO` means
/// "nothing yet" (an empty log, or a checkpoint taken before any record).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The position before the first record.
    pub const ZERO: Lsn = Lsn(0);

    /// The position right after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Index of a partition inside a task hub (`0..partition_count`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.0)
    }
}

/// Ownership generation of a partition: bumped every time a process opens
/// the partition's log, and carried in every segment name and header, so the
/// writes of one ownership are told apart from those of the next (I5).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One record read back from a log: its position and its payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position of the record in its partition's log.
    pub lsn: Lsn,
    /// The bytes that were appended, exactly.
    pub payload: bytes::Bytes,
}
