//! Reading a partition back: list its segments and checkpoints, decode them,
//! check that LSNs run without gap or repeat across objects, and on recovery
//! trim a torn tail of the newest segment (reported, never silent).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{LogLayout, Storage};
use crate::codec::{self, ExpectedSegment, SEGMENT_HEADER_LEN};
use crate::error::{Damage, Error, Result};
use crate::types::{Epoch, Lsn, PartitionId, Record};

/// One log segment object, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Object key.
    pub key: String,
    /// Epoch from the name.
    pub epoch: Epoch,
    /// First LSN from the name.
    pub first_lsn: Lsn,
    /// Object size in bytes.
    pub size_bytes: u64,
}

/// One checkpoint object, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Object key.
    pub key: String,
    /// The LSN the snapshot includes everything up to.
    pub lsn: Lsn,
    /// Object size in bytes.
    pub size_bytes: u64,
}

/// A snapshot read back from storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every record up to and including this LSN is in the snapshot.
    pub lsn: Lsn,
    /// The snapshot bytes, exactly as written.
    pub payload: Bytes,
}

/// A damaged end of the newest segment that was cut off during recovery:
/// the bytes of a write that never finished, hence never acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    /// The segment object.
    pub object: String,
    /// Where the valid prefix ends.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_trimmed: u64,
    /// What the first bad frame looked like.
    pub reason: String,
}

/// What recovery found: where to resume, and what was repaired.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The newest valid checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Every durable record after the checkpoint, in LSN order.
    pub records: Vec<Record>,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// The epoch this opening writes in.
    pub epoch: Epoch,
    /// A torn tail that was trimmed, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Newer checkpoints that were damaged and skipped.
    pub damaged_checkpoints: Vec<Damage>,
}

/// Lists a partition's segments, ordered by (first LSN, epoch).
pub async fn list_segments(storage: &Storage, partition: PartitionId) -> Result<Vec<SegmentInfo>> {
    let mut segments: Vec<SegmentInfo> = storage
        .list(&codec::log_prefix(partition))
        .await?
        .into_iter()
        .filter_map(|(key, size_bytes)| {
            let name = key.rsplit('/').next()?;
            match codec::parse_segment_name(name) {
                Some((epoch, first_lsn)) => Some(SegmentInfo {
                    key,
                    epoch,
                    first_lsn,
                    size_bytes,
                }),
                None => {
                    tracing::warn!(object = %key, "ignoring an object that is not a log segment");
                    None
                }
            }
        })
        .collect();
    segments.sort_by_key(|s| (s.first_lsn, s.epoch));
    Ok(segments)
}

/// Lists a partition's checkpoints, oldest first.
pub async fn list_checkpoints(
    storage: &Storage,
    partition: PartitionId,
) -> Result<Vec<CheckpointInfo>> {
    let mut checkpoints: Vec<CheckpointInfo> = storage
        .list(&codec::checkpoint_prefix(partition))
        .await?
        .into_iter()
        .filter_map(|(key, size_bytes)| {
            let Some(lsn) = codec::parse_checkpoint_name(key.rsplit('/').next()?) else {
                tracing::warn!(object = %key, "ignoring an object that is not a checkpoint");
                return None;
            };
            Some(CheckpointInfo {
                key,
                lsn,
                size_bytes,
            })
        })
        .collect();
    checkpoints.sort_by_key(|c| c.lsn);
    Ok(checkpoints)
}

/// Reads and checks one checkpoint.
pub async fn read_checkpoint(
    storage: &Storage,
    partition: PartitionId,
    info: &CheckpointInfo,
) -> Result<Checkpoint> {
    let bytes = storage
        .get(&info.key)
        .await?
        .ok_or_else(|| Error::store(&info.key, not_found(&info.key)))?;
    let payload = codec::decode_checkpoint(&info.key, bytes, partition, info.lsn)?;
    Ok(Checkpoint {
        lsn: info.lsn,
        payload,
    })
}

fn not_found(key: &str) -> object_store::Error {
    object_store::Error::NotFound {
        path: key.to_owned(),
        source: "listed but gone when read".into(),
    }
}

/// The newest checkpoint that decodes cleanly, plus the damage of newer ones.
pub async fn newest_valid_checkpoint(
    storage: &Storage,
    partition: PartitionId,
) -> Result<(Option<Checkpoint>, Vec<Damage>)> {
    let mut damaged = Vec::new();
    for info in list_checkpoints(storage, partition).await?.iter().rev() {
        match read_checkpoint(storage, partition, info).await {
            Ok(checkpoint) => return Ok((Some(checkpoint), damaged)),
            Err(Error::Corrupted(damage)) => {
                tracing::warn!(%damage, "skipping a damaged checkpoint");
                damaged.push(damage);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((None, damaged))
}

/// The result of reading a log range.
pub(crate) struct Scan {
    pub records: Vec<Record>,
    /// Last LSN seen in the log (may be below `from` if the log ends there).
    pub last_lsn: Lsn,
    /// The newest segment's bad tail, when it looks like an interrupted write.
    pub torn: Option<(SegmentInfo, u64, Damage)>,
}

/// Reads the records of `partition` from `from` on, checking every object.
///
/// `after` names what precedes `from` (a checkpoint key, or the log start)
/// for error messages. With `up_to`, reading stops at that LSN and damage
/// beyond it is ignored (an open log's unfinished tail).
pub(crate) async fn scan(
    storage: &Storage,
    partition: PartitionId,
    from: Lsn,
    after: &str,
    up_to: Option<Lsn>,
) -> Result<Scan> {
    let segments = list_segments(storage, partition).await?;
    // Skip segments wholly before `from`: their successor starts at or below it.
    let start = segments
        .iter()
        .enumerate()
        .position(|(i, _)| segments.get(i + 1).is_none_or(|next| next.first_lsn > from))
        .unwrap_or(segments.len());
    let mut records = Vec::new();
    let mut prev_key = after.to_owned();
    let mut last_lsn = Lsn(from.0.saturating_sub(1));
    let mut torn = None;
    for (index, segment) in segments.iter().enumerate().skip(start) {
        if up_to.is_some_and(|limit| segment.first_lsn > limit) {
            break;
        }
        let contiguous = if index == start {
            segment.first_lsn <= from
        } else {
            segment.first_lsn == last_lsn.next()
        };
        if !contiguous {
            return Err(Error::Discontinuous {
                partition,
                after: prev_key,
                end: last_lsn,
                next: segment.key.clone(),
                start: segment.first_lsn,
            });
        }
        let bytes = storage
            .get(&segment.key)
            .await?
            .ok_or_else(|| Error::store(&segment.key, not_found(&segment.key)))?;
        let contents = codec::decode_segment(
            &segment.key,
            bytes,
            ExpectedSegment {
                partition,
                epoch: segment.epoch,
                first_lsn: segment.first_lsn,
            },
        );
        let segment_last = contents.last_lsn(segment.first_lsn);
        for record in contents.records {
            if record.lsn >= from && up_to.is_none_or(|limit| record.lsn <= limit) {
                records.push(record);
            }
        }
        last_lsn = segment_last;
        prev_key = segment.key.clone();
        if let Some(bad) = contents.bad_tail {
            let beyond_limit = up_to.is_some_and(|limit| segment_last >= limit);
            let is_newest = index + 1 == segments.len();
            if beyond_limit {
                break;
            } else if is_newest && bad.torn_candidate {
                torn = Some((segment.clone(), contents.valid_len, bad.damage));
            } else {
                return Err(Error::Corrupted(bad.damage));
            }
        }
        if up_to.is_some_and(|limit| last_lsn >= limit) {
            break;
        }
    }
    Ok(Scan {
        records,
        last_lsn,
        torn,
    })
}

/// Reads a partition read-only, as recovery would but without trimming,
/// taking an epoch or opening it for writing: the newest valid checkpoint
/// and every record after it. For replay checks and inspection; a torn tail
/// of the newest segment is left out (and reported).
pub async fn read_partition(
    storage: &Storage,
    partition: PartitionId,
) -> Result<(Option<Checkpoint>, Vec<Record>, Option<TornTail>)> {
    let (checkpoint, _) = newest_valid_checkpoint(storage, partition).await?;
    let (from, after) = match &checkpoint {
        Some(c) => (c.lsn.next(), codec::checkpoint_key(partition, c.lsn)),
        None => (Lsn(1), "the start of the log".to_owned()),
    };
    let scan = scan(storage, partition, from, &after, None).await?;
    let torn = scan.torn.map(|(segment, valid_len, damage)| TornTail {
        object: segment.key,
        offset: valid_len,
        bytes_trimmed: segment.size_bytes.saturating_sub(valid_len),
        reason: damage.problem.to_string(),
    });
    Ok((checkpoint, scan.records, torn))
}

/// Reads a partition's records after `lsn` (the LSN its state store
/// holds), without changing anything; a torn tail is left out and
/// reported.
pub async fn read_log_after(
    storage: &Storage,
    partition: PartitionId,
    lsn: Lsn,
) -> Result<(Vec<Record>, Option<TornTail>)> {
    let after = format!(
        "the state store {} at LSN {lsn}",
        crate::state_prefix(partition)
    );
    let scan = scan(storage, partition, lsn.next(), &after, None).await?;
    let torn = scan.torn.map(|(segment, valid_len, damage)| TornTail {
        object: segment.key,
        offset: valid_len,
        bytes_trimmed: segment.size_bytes.saturating_sub(valid_len),
        reason: damage.problem.to_string(),
    });
    Ok((scan.records, torn))
}

/// Where recovery starts reading a partition's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStart {
    /// After the newest valid checkpoint file (`p{NN}/checkpoint/`), or
    /// from the start: the whole-snapshot checkpoints of hubs written
    /// before the state store.
    Checkpoint,
    /// After an LSN the partition's state store already holds.
    After(Lsn),
}

/// Recovers a partition for a new owner: the log after `start`, a trimmed
/// torn tail, and the next epoch.
pub(crate) async fn recover(
    storage: &Storage,
    partition: PartitionId,
    start: LogStart,
) -> Result<Recovery> {
    let (checkpoint, damaged_checkpoints) = match start {
        LogStart::Checkpoint => newest_valid_checkpoint(storage, partition).await?,
        LogStart::After(_) => (None, Vec::new()),
    };
    let base = match (start, &checkpoint) {
        (LogStart::After(lsn), _) => Some((
            lsn,
            format!(
                "the state store {} at LSN {lsn}",
                crate::state_prefix(partition)
            ),
        )),
        (LogStart::Checkpoint, Some(c)) => Some((c.lsn, codec::checkpoint_key(partition, c.lsn))),
        (LogStart::Checkpoint, None) => None,
    };
    let (from, after) = match &base {
        Some((lsn, name)) => (lsn.next(), name.clone()),
        None => (Lsn(1), "the start of the log".to_owned()),
    };
    let scan = scan(storage, partition, from, &after, None).await?;
    if let Some((lsn, _)) = &base
        && scan.last_lsn < *lsn
    {
        return Err(Error::Discontinuous {
            partition,
            after: format!("the log of partition {partition}"),
            end: scan.last_lsn,
            next: after,
            start: *lsn,
        });
    }
    // Take the new epoch before changing anything.
    let segments = list_segments(storage, partition).await?;
    let newest_epoch = segments.iter().map(|s| s.epoch).max().unwrap_or_default();
    let lease_epoch = read_lease_epoch(storage, partition).await?;
    let epoch = newest_epoch
        .max(lease_epoch)
        .0
        .checked_add(1)
        .filter(|e| *e <= EPOCH_MAX)
        .map(Epoch)
        .ok_or_else(|| {
            Error::Corrupted(Damage {
                object: codec::lease_key(partition),
                offset: 0,
                problem: crate::error::Problem::LengthTooLarge {
                    max: EPOCH_MAX,
                    found: newest_epoch.max(lease_epoch).0,
                },
            })
        })?;
    write_lease(storage, partition, epoch).await?;
    let torn_tail = match scan.torn {
        Some((segment, valid_len, damage)) => {
            Some(trim_torn_tail(storage, &segment, valid_len, &damage).await?)
        }
        None => None,
    };
    // What recovery read may have been written but never synced by a
    // process that died: make it durable before anything is built on it.
    sync_local_log(storage, partition)?;
    Ok(Recovery {
        checkpoint,
        records: scan.records,
        next_lsn: scan.last_lsn.next(),
        epoch,
        torn_tail,
        damaged_checkpoints,
    })
}

/// Largest epoch: segment names give it 8 decimal digits.
const EPOCH_MAX: u64 = 99_999_999;

/// On a local directory, fsyncs every segment file and the log folder (and
/// its parents up to the hub root), so records and trims recovery saw are
/// durable before new records that depend on them are acknowledged.
fn sync_local_log(storage: &Storage, partition: PartitionId) -> Result<()> {
    let Some(root) = storage.local_root() else {
        return Ok(());
    };
    let dir = root.join(codec::log_prefix(partition));
    if !dir.is_dir() {
        return Ok(());
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        if path.extension().is_some_and(|x| x == "seg") {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    for folder in [dir.as_path(), dir.parent().unwrap_or(root), root] {
        std::fs::File::open(folder)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(folder, e))?;
    }
    Ok(())
}

async fn trim_torn_tail(
    storage: &Storage,
    segment: &SegmentInfo,
    valid_len: u64,
    damage: &Damage,
) -> Result<TornTail> {
    let tail = TornTail {
        object: segment.key.clone(),
        offset: valid_len,
        bytes_trimmed: segment.size_bytes.saturating_sub(valid_len),
        reason: damage.problem.to_string(),
    };
    tracing::warn!(
        object = %tail.object,
        offset = tail.offset,
        bytes_trimmed = tail.bytes_trimmed,
        reason = %tail.reason,
        "trimming the unacknowledged torn tail of the newest log segment"
    );
    let keeps_records = valid_len > SEGMENT_HEADER_LEN as u64;
    match (storage.layout(), storage.local_root(), keeps_records) {
        (_, _, false) => storage.delete(&segment.key).await?,
        (LogLayout::SegmentFile, Some(root), true) => {
            let path = root.join(&segment.key);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            file.set_len(valid_len).map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        _ => {
            let bytes = storage
                .get(&segment.key)
                .await?
                .ok_or_else(|| Error::store(&segment.key, not_found(&segment.key)))?;
            let prefix = bytes.slice(..(valid_len as usize).min(bytes.len()));
            storage
                .put(
                    &segment.key,
                    prefix.into(),
                    object_store::PutMode::Overwrite,
                )
                .await?;
        }
    }
    Ok(tail)
}

/// The ownership lease of a partition. On a local directory the OS lock is
/// what keeps one owner; the lease records the epoch counter. Expiry and
/// compare-and-swap takeover arrive with multi-node ownership.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    epoch: u64,
    owner: String,
    acquired_unix_ms: u64,
}

async fn read_lease_epoch(storage: &Storage, partition: PartitionId) -> Result<Epoch> {
    let key = codec::lease_key(partition);
    let Some(bytes) = storage.get(&key).await? else {
        return Ok(Epoch(0));
    };
    let lease: Lease = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Corrupted(Damage {
            object: key.clone(),
            offset: 0,
            problem: crate::error::Problem::BadMetadata(e.to_string()),
        })
    })?;
    Ok(Epoch(lease.epoch))
}

async fn write_lease(storage: &Storage, partition: PartitionId, epoch: Epoch) -> Result<()> {
    let lease = Lease {
        epoch: epoch.0,
        owner: format!("pid {}", std::process::id()),
        acquired_unix_ms: crate::taskhub::now_unix_ms(),
    };
    let json = serde_json::to_vec(&lease)
        .map_err(|e| Error::InvalidInput(format!("lease encoding: {e}")))?;
    storage
        .put(
            &codec::lease_key(partition),
            Bytes::from(json).into(),
            object_store::PutMode::Overwrite,
        )
        .await
}

/// One problem `verify_partition` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The object (segment or checkpoint key).
    pub object: String,
    /// Byte offset in it, where it applies.
    pub offset: u64,
    /// What is wrong.
    pub problem: String,
    /// True for the tail of the newest segment that looks like an
    /// interrupted, never-acknowledged write (recovery would trim it).
    pub torn_tail: bool,
}

/// Checks every byte a partition has stored: every checkpoint, every
/// segment (header, checksums, LSN order) and the continuity between
/// segments. Read-only; returns what it found (empty when all is well).
pub async fn verify_partition(storage: &Storage, partition: PartitionId) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for info in list_checkpoints(storage, partition).await? {
        if let Err(Error::Corrupted(damage)) = read_checkpoint(storage, partition, &info).await {
            findings.push(Finding {
                object: damage.object,
                offset: damage.offset,
                problem: damage.problem.to_string(),
                torn_tail: false,
            });
        }
    }
    let segments = list_segments(storage, partition).await?;
    let mut previous: Option<(String, Lsn)> = None;
    for (index, segment) in segments.iter().enumerate() {
        let Some(bytes) = storage.get(&segment.key).await? else {
            continue;
        };
        let contents = codec::decode_segment(
            &segment.key,
            bytes,
            ExpectedSegment {
                partition,
                epoch: segment.epoch,
                first_lsn: segment.first_lsn,
            },
        );
        if let Some((key, last)) = &previous
            && segment.first_lsn != last.next()
            && !(segment.first_lsn <= *last && contents.records.is_empty())
        {
            findings.push(Finding {
                object: segment.key.clone(),
                offset: 0,
                problem: format!(
                    "log is not contiguous: {key} ends at LSN {last}, this segment starts at LSN {}",
                    segment.first_lsn
                ),
                torn_tail: false,
            });
        }
        let last = contents.last_lsn(segment.first_lsn);
        if let Some(bad) = contents.bad_tail {
            findings.push(Finding {
                object: bad.damage.object,
                offset: bad.damage.offset,
                problem: bad.damage.problem.to_string(),
                torn_tail: bad.torn_candidate && index + 1 == segments.len(),
            });
        }
        if previous.as_ref().is_none_or(|(_, l)| last >= *l) {
            previous = Some((segment.key.clone(), last));
        }
    }
    Ok(findings)
}
