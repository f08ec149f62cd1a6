//! What `basalt inspect` reports of a partition, read the way queries
//! read: the store page by page, overlaid with the log's tail replayed
//! over records loaded on demand. Memory holds the tail's records and one
//! page, never the whole partition, so a hub of millions of instances is
//! inspected in bounded memory.

use std::collections::BTreeMap;

use basalt_partitions::checkpoint::CORE_KEY;
use basalt_partitions::{PartitionState, codec};
use basalt_runtime::OrchestrationStatus;
use basalt_storage::{Lsn, PartitionId, StateReader, Storage};

use crate::engine::OpenError;
use crate::query;
use crate::tiers::{self, RecordSource};

/// The counts `basalt inspect` shows for one partition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionSummary {
    /// The last LSN applied (checkpoint plus the log's tail).
    pub last_lsn: u64,
    /// The LSN of the partition's last checkpoint to its store, if it has
    /// one (recovery replays the log after it).
    pub store_checkpoint_lsn: Option<u64>,
    /// Instances by status (its display name).
    pub instances_by_status: BTreeMap<String, u64>,
    /// Entities that have state.
    pub entities: u64,
    /// The unfinished instance created first: its id and creation time
    /// (milliseconds since the Unix epoch).
    pub oldest_unfinished: Option<(String, u64)>,
}

/// Summarizes `partition` of a hub from its storage alone, read-only
/// (another process may be running it: the figures are as of its last
/// durable write).
pub async fn summarize_partition(
    storage: &Storage,
    partition: u32,
    partition_count: u32,
) -> Result<PartitionSummary, OpenError> {
    let reader = StateReader::open(storage, PartitionId(partition)).await?;
    let result = summarize(storage, reader.as_ref(), partition, partition_count).await;
    if let Some(reader) = reader {
        let _ = reader.close().await;
    }
    result
}

async fn summarize(
    storage: &Storage,
    reader: Option<&StateReader>,
    partition: u32,
    partition_count: u32,
) -> Result<PartitionSummary, OpenError> {
    let core = match reader {
        Some(reader) => reader.get(CORE_KEY).await?,
        None => None,
    };
    let mut store_checkpoint_lsn = None;
    let (state, source): (PartitionState, &dyn RecordSource) = match (reader, core) {
        (Some(reader), Some(bytes)) => {
            let core = codec::decode_core(&bytes).map_err(|e| {
                tiers::decode_error(partition, "state store core", 0, e.to_string())
            })?;
            let lsn = core.last_lsn;
            store_checkpoint_lsn = Some(lsn);
            let mut state = PartitionState::from_core(core, false);
            let (records, _) =
                basalt_storage::read_log_after(storage, PartitionId(partition), Lsn(lsn)).await?;
            tiers::replay(&mut state, reader, partition, &records).await?;
            (state, reader)
        }
        // No store yet (nothing checkpointed to one): the log, from its
        // snapshot if any, is the whole partition and fits in memory.
        _ => (
            tiers::replay_without_store(storage, partition, partition_count).await?,
            &tiers::NoRecords,
        ),
    };
    let mut summary = PartitionSummary {
        last_lsn: state.last_lsn,
        store_checkpoint_lsn,
        ..PartitionSummary::default()
    };
    query::each_instance(&state, source, |meta| {
        *summary
            .instances_by_status
            .entry(meta.status.to_string())
            .or_insert(0) += 1;
        let unfinished = matches!(
            meta.status,
            OrchestrationStatus::Running
                | OrchestrationStatus::Pending
                | OrchestrationStatus::Suspended
        );
        if unfinished
            && summary
                .oldest_unfinished
                .as_ref()
                .is_none_or(|(_, t)| meta.created_at_ms < *t)
        {
            summary.oldest_unfinished = Some((meta.instance_id.to_string(), meta.created_at_ms));
        }
    })
    .await
    .map_err(tiers::open_storage)?;
    summary.entities = query::count_entities_with_state(&state, source)
        .await
        .map_err(tiers::open_storage)?;
    Ok(summary)
}
