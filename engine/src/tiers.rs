//! The partition state's two tiers as the engine drives them: records are
//! loaded from the partition's store before an event touches them (the
//! state machine itself never does I/O), a partition is recovered from its
//! store and the log after the store's LSN, and the whole state can be read
//! back for the replay checks.

use std::sync::Arc;

use async_trait::async_trait;
use basalt_partitions::checkpoint::{
    BUSY_PREFIX, CORE_KEY, ENTITY_PREFIX, HOSTED_PREFIX, HOSTED_SESSION_PREFIX, HOSTED_WORK_PREFIX,
    INSTANCE_PREFIX, NAME_TIME_INDEX_KEY, STATUS_INDEX_KEY, parse_key, record_key,
};
use basalt_partitions::{Applied, Effects, Event, PartitionState, StateKey, codec};
use basalt_runtime::Error;
use basalt_storage::{
    Entries, Log, LogOptions, Lsn, PartitionId, Record, StateReader, StateStore, StateStoreOptions,
    Storage, TaskHub, TornTail,
};

use crate::engine::OpenError;

/// Entries read per page when a whole prefix is walked.
const SCAN_PAGE: usize = 4096;

/// Something records can be read from: the writable store of a running
/// partition, or a read-only view of a hub another process may own.
#[async_trait]
pub(crate) trait RecordSource: Send + Sync {
    async fn get(&self, key: &[u8]) -> basalt_storage::Result<Option<bytes::Bytes>>;
    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> basalt_storage::Result<Entries>;
}

#[async_trait]
impl RecordSource for StateStore {
    async fn get(&self, key: &[u8]) -> basalt_storage::Result<Option<bytes::Bytes>> {
        StateStore::get(self, key).await
    }
    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> basalt_storage::Result<Entries> {
        StateStore::scan(self, prefix, after, limit).await
    }
}

#[async_trait]
impl RecordSource for StateReader {
    async fn get(&self, key: &[u8]) -> basalt_storage::Result<Option<bytes::Bytes>> {
        StateReader::get(self, key).await
    }
    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> basalt_storage::Result<Entries> {
        StateReader::scan(self, prefix, after, limit).await
    }
}

fn storage_error(e: basalt_storage::Error) -> Error {
    Error::Storage(e.to_string())
}

/// Reads one record from the store into memory.
pub(crate) async fn load(
    state: &mut PartitionState,
    store: &dyn RecordSource,
    key: &StateKey,
) -> Result<(), Error> {
    // A record kept cold in memory needs no store read.
    if state
        .warm(key)
        .map_err(|e| Error::Storage(format!("record {key:?} kept in memory: {e}")))?
    {
        return Ok(());
    }
    let bytes = store.get(&record_key(key)).await.map_err(storage_error)?;
    state
        .install(key.clone(), bytes.as_deref())
        .map_err(|e| Error::Storage(format!("record {key:?} in the state store: {e}")))
}

/// Makes `key` resident (loading it if needed) and marks it used.
pub(crate) async fn ensure(
    state: &mut PartitionState,
    store: &dyn RecordSource,
    key: &StateKey,
) -> Result<(), Error> {
    if !state.knows(key) {
        load(state, store, key).await?;
    }
    state.touch(key);
    Ok(())
}

/// Applies an event, loading every record it asks for. An error leaves the
/// event half applied: the caller must stop the partition (recovery
/// rebuilds it from the log).
pub(crate) async fn apply_loading(
    state: &mut PartitionState,
    store: &dyn RecordSource,
    lsn: u64,
    event: Event,
) -> Result<Effects, Error> {
    let mut applied = state.apply(lsn, event);
    loop {
        match applied {
            Applied::Done(fx) => {
                let undeclared = state.undeclared_touches();
                if undeclared > 0 {
                    return Err(Error::Storage(format!(
                        "partition {}: event {lsn} touched {undeclared} records it did not \
                         declare; the partition stops rather than act on a guess",
                        state.partition
                    )));
                }
                return Ok(fx);
            }
            Applied::Suspended(suspended) => {
                load(state, store, suspended.missing()).await?;
                applied = state.resume(suspended);
            }
        }
    }
}

/// Calls `each` for every entry whose key starts with `prefix`, page by page.
async fn walk(
    store: &dyn RecordSource,
    prefix: &[u8],
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(prefix, after.as_deref(), SCAN_PAGE)
            .await
            .map_err(storage_error)?;
        for (key, value) in &page {
            each(key, value)?;
        }
        match page.last() {
            Some((key, _)) if page.len() == SCAN_PAGE => after = Some(key.to_vec()),
            _ => return Ok(()),
        }
    }
}

/// Makes every record with work to hand out after a restart resident.
async fn load_busy(state: &mut PartitionState, store: &dyn RecordSource) -> Result<(), Error> {
    let mut busy = Vec::new();
    walk(store, BUSY_PREFIX, |key, _| {
        busy.extend(parse_key(key));
        Ok(())
    })
    .await?;
    for key in busy {
        ensure(state, store, &key).await?;
    }
    Ok(())
}

/// Calls `each` for every hosted instance record, in memory or only in
/// the store (memory pressure evicts records, and listings must not lose
/// them): the resident ones first, then those memory does not know,
/// decoded from the store. Records memory knows to be gone are skipped.
pub(crate) async fn hosted_records(
    state: &PartitionState,
    store: &dyn RecordSource,
    mut each: impl FnMut(&basalt_runtime::InstanceId, &basalt_partitions::hosted::HostedInstance),
) -> Result<(), Error> {
    for (id, record) in state.hosted.resident_iter() {
        each(id, record);
    }
    if state.hosted.is_complete() {
        return Ok(());
    }
    walk(store, HOSTED_PREFIX, |key, value| {
        let Some(StateKey::Hosted(id)) = parse_key(key) else {
            return Ok(());
        };
        if state.hosted.knows(&id) {
            return Ok(());
        }
        let record = codec::decode_hosted(value).map_err(|e| {
            Error::Storage(format!(
                "hosted record {id} in partition {}'s state store: {e}",
                state.partition
            ))
        })?;
        each(&id, &record);
        Ok(())
    })
    .await
}

/// The whole logical state: memory (newer) over the store. Loads every
/// record, so only for checks and tools.
pub(crate) async fn whole_state(
    state: &PartitionState,
    store: &dyn RecordSource,
) -> Result<PartitionState, Error> {
    let mut whole = state.resident_copy();
    for prefix in [
        INSTANCE_PREFIX,
        ENTITY_PREFIX,
        HOSTED_PREFIX,
        HOSTED_WORK_PREFIX,
        HOSTED_SESSION_PREFIX,
    ] {
        let mut found = Vec::new();
        walk(store, prefix, |key, value| {
            if let Some(record) = parse_key(key) {
                found.push((record, value.to_vec()));
            }
            Ok(())
        })
        .await?;
        for (record, value) in found {
            whole
                .install(record, Some(&value))
                .map_err(|e| Error::Storage(e.to_string()))?;
        }
    }
    Ok(whole)
}

pub(crate) fn decode_error(
    partition: u32,
    what: &'static str,
    lsn: u64,
    message: String,
) -> OpenError {
    OpenError::Decode {
        partition,
        what,
        lsn,
        message,
    }
}

pub(crate) fn open_storage(e: Error) -> OpenError {
    OpenError::State(e.to_string())
}

/// A recovered partition, ready to run.
pub(crate) struct Recovered {
    pub state: PartitionState,
    pub log: Log,
    pub store: Arc<StateStore>,
    /// The LSN the store holds (0: nothing yet).
    pub store_lsn: u64,
    pub torn_tail: Option<TornTail>,
}

/// Recovers one partition: opens its store, reads the core (the LSN of the
/// last checkpoint), opens the log after it, loads the records with work
/// to hand out and replays the log. A hub written before the state store
/// has a whole-snapshot checkpoint instead: it is decoded whole, and the
/// first checkpoint moves it into the store (then the old file is deleted).
pub(crate) async fn recover_partition(
    hub: &TaskHub,
    partition: u32,
    partition_count: u32,
    log_options: LogOptions,
    store_options: &StateStoreOptions,
) -> Result<Recovered, OpenError> {
    let store = StateStore::open(hub.storage(), PartitionId(partition), store_options).await?;
    let core = store.get(CORE_KEY).await?;
    let mut store_lsn = 0;
    let (mut state, log, recovery) = match core {
        Some(bytes) => {
            let core = codec::decode_core(&bytes)
                .map_err(|e| decode_error(partition, "state store core", 0, e.to_string()))?;
            let lsn = core.last_lsn;
            store_lsn = lsn;
            let (log, recovery) = hub
                .open_partition_after(PartitionId(partition), log_options, Lsn(lsn))
                .await?;
            let mut state = PartitionState::from_core(core, false);
            state.status_indexed = store.get(STATUS_INDEX_KEY).await?.is_some();
            state.name_time_indexed = store.get(NAME_TIME_INDEX_KEY).await?.is_some();
            load_busy(&mut state, &store).await.map_err(open_storage)?;
            (state, log, recovery)
        }
        None => {
            // Nothing in the store yet: a new partition, or one written
            // before the state store (its checkpoint file holds it whole).
            let (log, recovery) = hub
                .open_partition(PartitionId(partition), log_options)
                .await?;
            let state = match &recovery.checkpoint {
                Some(c) => codec::decode_snapshot(&c.payload)
                    .map_err(|e| decode_error(partition, "snapshot", c.lsn.0, e.to_string()))?,
                None => PartitionState::new(partition, partition_count),
            };
            (state, log, recovery)
        }
    };
    replay(&mut state, &store, partition, &recovery.records).await?;
    Ok(Recovered {
        state,
        log,
        store: Arc::new(store),
        store_lsn,
        torn_tail: recovery.torn_tail,
    })
}

pub(crate) async fn replay(
    state: &mut PartitionState,
    store: &dyn RecordSource,
    partition: u32,
    records: &[Record],
) -> Result<(), OpenError> {
    for record in records {
        let event = codec::decode_event(&record.payload)
            .map_err(|e| decode_error(partition, "event", record.lsn.0, e.to_string()))?;
        apply_loading(state, store, record.lsn.0, event)
            .await
            .map_err(open_storage)?;
    }
    Ok(())
}

/// Rebuilds a partition that has nothing in its store yet from its log
/// (after its whole-snapshot checkpoint file, if an older build wrote one).
pub(crate) async fn replay_without_store(
    storage: &Storage,
    partition: u32,
    partition_count: u32,
) -> Result<PartitionState, OpenError> {
    let (checkpoint, records, _) =
        basalt_storage::read_partition(storage, PartitionId(partition)).await?;
    let mut state = match &checkpoint {
        Some(c) => codec::decode_snapshot(&c.payload)
            .map_err(|e| decode_error(partition, "snapshot", c.lsn.0, e.to_string()))?,
        None => PartitionState::new(partition, partition_count),
    };
    replay(&mut state, &NoRecords, partition, &records).await?;
    Ok(state)
}

/// Rebuilds a partition's whole state read-only from storage, as recovery
/// would (for `basalt inspect` and the replay checks); a torn tail is left
/// out. Reads every record of the store into memory.
pub async fn replay_partition_state(
    storage: &Storage,
    partition: u32,
    partition_count: u32,
) -> Result<PartitionState, OpenError> {
    let reader = StateReader::open(storage, PartitionId(partition)).await?;
    let core = match &reader {
        Some(reader) => reader.get(CORE_KEY).await?,
        None => None,
    };
    let result = match (&reader, core) {
        (Some(reader), Some(bytes)) => {
            let core = codec::decode_core(&bytes)
                .map_err(|e| decode_error(partition, "state store core", 0, e.to_string()))?;
            let lsn = core.last_lsn;
            let empty = PartitionState::from_core(core, false);
            let mut state = whole_state(&empty, reader).await.map_err(open_storage)?;
            let (records, _) =
                basalt_storage::read_log_after(storage, PartitionId(partition), Lsn(lsn)).await?;
            replay(&mut state, reader, partition, &records).await?;
            Ok(state)
        }
        _ => replay_without_store(storage, partition, partition_count).await,
    };
    if let Some(reader) = reader {
        let _ = reader.close().await;
    }
    result
}

/// A store with nothing in it (a partition without one).
pub(crate) struct NoRecords;

#[async_trait]
impl RecordSource for NoRecords {
    async fn get(&self, _key: &[u8]) -> basalt_storage::Result<Option<bytes::Bytes>> {
        Ok(None)
    }
    async fn scan(
        &self,
        _prefix: &[u8],
        _after: Option<&[u8]>,
        _limit: usize,
    ) -> basalt_storage::Result<Entries> {
        Ok(Vec::new())
    }
}
