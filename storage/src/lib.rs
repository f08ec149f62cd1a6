//! `basalt-storage`: the durable log of a Basalt task hub.
//!
//! It owns, per partition, a **commit log** with group commit (many producers,
//! one storage write per batch, a durability future per record),
//! **checkpoints** (snapshots at an LSN, with cleanup of the log below), and
//! **recovery** (newest valid checkpoint + log suffix, torn tail trimmed and
//! reported). It also owns `taskhub.json` and the one-owner rule (I5) on
//! local disk.
//!
//! All bytes go through `object_store` (local directory, memory, S3, Azure),
//! except the local default's log, which appends to segment files with
//! `fdatasync` (see `docs/decisions/0001-local-log-layout.md`). The byte
//! layout lives in [`codec`] alone and is specified in
//! `docs/storage-format.md`.
//!
//! This crate never interprets record or snapshot payloads: they are opaque
//! bytes of the partition state machine.
//!
//! ```no_run
//! # async fn demo() -> basalt_storage::Result<()> {
//! use basalt_storage::{HubOptions, LogOptions, PartitionId, Storage, TaskHub};
//! let hub = TaskHub::open_or_create(Storage::local("data")?, &HubOptions::default()).await?;
//! let (log, recovered) = hub.open_partition(PartitionId(0), LogOptions::default()).await?;
//! let lsn = log.append(b"event").await?.durable().await?;
//! assert!(lsn >= recovered.next_lsn);
//! # Ok(()) }
//! ```

mod backend;
pub mod codec;
mod error;
pub mod fault;
mod log;
mod recovery;
mod segment_file;
mod state_store;
mod taskhub;
mod types;

pub use backend::{LogLayout, Storage};
pub use error::{Damage, Error, ErrorKind, Problem, Result};
pub use log::{Appended, CheckpointReport, DurableWatch, Log, LogOptions, LogStats};
pub use recovery::{
    Checkpoint, CheckpointInfo, Finding, LogStart, Recovery, SegmentInfo, TornTail,
    list_checkpoints, list_segments, newest_valid_checkpoint, read_checkpoint, read_log_after,
    read_partition, verify_partition,
};
pub use state_store::{
    Entries, StateCache, StateReader, StateStore, StateStoreOptions, state_prefix,
};
pub use taskhub::{HubOptions, PARTITION_COUNT_MAX, TaskHub, TaskHubMeta};
pub use types::{Epoch, Lsn, PartitionId, Record};
