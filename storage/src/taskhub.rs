//! The task hub: `taskhub.json` (created once, checked on every open) and
//! the entry point that opens partition logs.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::PutMode;
use serde::{Deserialize, Serialize};

use crate::backend::Storage;
use crate::codec::{self, HUB_FORMAT_VERSION, HUB_FORMAT_VERSION_MIN, TASKHUB_KEY};
use crate::error::{Damage, Error, Problem, Result};
use crate::log::{Log, LogOptions};
use crate::recovery::Recovery;
use crate::types::PartitionId;

/// Most partitions a task hub may have. Partitions are the unit of
/// parallelism and placement; more than this only costs memory and objects.
pub const PARTITION_COUNT_MAX: u32 = 1024;

/// The contents of `taskhub.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHubMeta {
    /// The hub's name, chosen by its creator.
    pub name: String,
    /// A unique id generated at creation, to tell two hubs of one name apart.
    pub id: String,
    /// Number of partitions, fixed for the life of the hub.
    pub partition_count: u32,
    /// Storage format version the hub was created with.
    pub format_version: u16,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// What a process expects of the task hub it opens (or creates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubOptions {
    /// The hub's name. Default: `"basalt"`.
    pub name: String,
    /// Number of partitions. Default: 12.
    pub partition_count: u32,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            name: "basalt".to_owned(),
            partition_count: 12,
        }
    }
}

/// An open task hub: its storage and its checked metadata.
#[derive(Clone, Debug)]
pub struct TaskHub {
    storage: Storage,
    meta: TaskHubMeta,
}

impl TaskHub {
    /// Opens the hub in `storage`, creating it when there is none. An existing
    /// hub must have the same name, partition count and a known format.
    pub async fn open_or_create(storage: Storage, options: &HubOptions) -> Result<TaskHub> {
        if options.partition_count == 0 || options.partition_count > PARTITION_COUNT_MAX {
            return Err(Error::InvalidInput(format!(
                "partition count must be 1..={PARTITION_COUNT_MAX}, got {}",
                options.partition_count
            )));
        }
        if options.name.is_empty() || options.name.len() > 128 {
            return Err(Error::InvalidInput(format!(
                "task hub name must be 1..=128 bytes, got {} bytes",
                options.name.len()
            )));
        }
        let meta = match read_meta(&storage).await? {
            Some(meta) => meta,
            None => {
                let meta = TaskHubMeta {
                    name: options.name.clone(),
                    id: new_hub_id(&options.name),
                    partition_count: options.partition_count,
                    format_version: HUB_FORMAT_VERSION,
                    created_unix_ms: now_unix_ms(),
                };
                let json = serde_json::to_vec_pretty(&meta)
                    .map_err(|e| Error::InvalidInput(format!("task hub metadata: {e}")))?;
                match storage
                    .put(TASKHUB_KEY, Bytes::from(json).into(), PutMode::Create)
                    .await
                {
                    Ok(()) => meta,
                    // Another process created it first: check theirs instead.
                    Err(Error::Store {
                        source: object_store::Error::AlreadyExists { .. },
                        ..
                    }) => read_meta(&storage)
                        .await?
                        .ok_or_else(|| not_found(&storage))?,
                    Err(e) => return Err(e),
                }
            }
        };
        let mismatch = |field: &'static str, expected: String, found: String| {
            Err(Error::HubMismatch {
                location: storage.location().to_owned(),
                field,
                expected,
                found,
            })
        };
        if meta.partition_count != options.partition_count {
            return mismatch(
                "partition count",
                options.partition_count.to_string(),
                meta.partition_count.to_string(),
            );
        }
        if meta.name != options.name {
            return mismatch("name", options.name.clone(), meta.name.clone());
        }
        TaskHub::checked(storage, meta)
    }

    /// Opens an existing hub, taking its parameters from `taskhub.json`.
    pub async fn open_existing(storage: Storage) -> Result<TaskHub> {
        let meta = read_meta(&storage)
            .await?
            .ok_or_else(|| not_found(&storage))?;
        TaskHub::checked(storage, meta)
    }

    fn checked(storage: Storage, meta: TaskHubMeta) -> Result<TaskHub> {
        if !(HUB_FORMAT_VERSION_MIN..=HUB_FORMAT_VERSION).contains(&meta.format_version) {
            return Err(Error::HubMismatch {
                location: storage.location().to_owned(),
                field: "format version",
                expected: format!("{HUB_FORMAT_VERSION_MIN}..={HUB_FORMAT_VERSION}"),
                found: meta.format_version.to_string(),
            });
        }
        if meta.partition_count == 0 || meta.partition_count > PARTITION_COUNT_MAX {
            return Err(Error::Corrupted(Damage {
                object: TASKHUB_KEY.to_owned(),
                offset: 0,
                problem: Problem::BadMetadata(format!(
                    "partition count {} is outside 1..={PARTITION_COUNT_MAX}",
                    meta.partition_count
                )),
            }));
        }
        Ok(TaskHub { storage, meta })
    }

    /// Marks an older hub as this build's format before anything of the
    /// new format is written into it, so an older build refuses it with a
    /// clear message instead of misreading it. Version 1 hubs keep their
    /// data: their checkpoint files are moved into the partitions' state
    /// stores by the engine's first checkpoint. Returns whether it upgraded.
    pub async fn upgrade(&mut self) -> Result<bool> {
        if self.meta.format_version == HUB_FORMAT_VERSION {
            return Ok(false);
        }
        let mut meta = self.meta.clone();
        meta.format_version = HUB_FORMAT_VERSION;
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::InvalidInput(format!("task hub metadata: {e}")))?;
        self.storage
            .put(TASKHUB_KEY, Bytes::from(json).into(), PutMode::Overwrite)
            .await?;
        tracing::info!(
            location = self.storage.location(),
            from = self.meta.format_version,
            to = HUB_FORMAT_VERSION,
            "task hub format upgraded"
        );
        self.meta = meta;
        Ok(true)
    }

    /// The hub's metadata.
    pub fn meta(&self) -> &TaskHubMeta {
        &self.meta
    }

    /// The hub's storage backend.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Opens one partition's log for writing: recovers it (newest valid
    /// checkpoint, then the log suffix, trimming a torn tail), takes a new
    /// epoch and starts the group committer. One opener per partition per
    /// process; across processes the local directory lock keeps one owner.
    pub async fn open_partition(
        &self,
        partition: PartitionId,
        options: LogOptions,
    ) -> Result<(Log, Recovery)> {
        self.check_partition(partition)?;
        Log::open(
            self.storage.clone(),
            partition,
            options,
            crate::recovery::LogStart::Checkpoint,
        )
        .await
    }

    fn check_partition(&self, partition: PartitionId) -> Result<()> {
        if partition.0 >= self.meta.partition_count {
            return Err(Error::InvalidInput(format!(
                "partition {} does not exist: the hub has {} partitions",
                partition.0, self.meta.partition_count
            )));
        }
        Ok(())
    }

    /// Opens a partition's log for writing after recovering it from `lsn`
    /// on: the partition's state store holds everything up to `lsn`, so
    /// checkpoint files are not read (see [`crate::Log::truncate_through`]).
    pub async fn open_partition_after(
        &self,
        partition: PartitionId,
        options: LogOptions,
        lsn: crate::Lsn,
    ) -> Result<(Log, Recovery)> {
        self.check_partition(partition)?;
        Log::open(
            self.storage.clone(),
            partition,
            options,
            crate::recovery::LogStart::After(lsn),
        )
        .await
    }
}

fn not_found(storage: &Storage) -> Error {
    Error::HubNotFound {
        location: storage.location().to_owned(),
        object: TASKHUB_KEY.to_owned(),
    }
}

async fn read_meta(storage: &Storage) -> Result<Option<TaskHubMeta>> {
    let Some(bytes) = storage.get(codec::TASKHUB_KEY).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::Corrupted(Damage {
            object: TASKHUB_KEY.to_owned(),
            offset: 0,
            problem: Problem::BadMetadata(e.to_string()),
        })
    })
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_hub_id(name: &str) -> String {
    // Unique enough to tell hubs apart: time, pid and name through FNV-1a.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let seed = format!("{nanos}/{}/{name}", std::process::id());
    for byte in seed.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
