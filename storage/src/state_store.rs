//! A partition's store of records: the lower tier of its state, an LSM
//! tree (SlateDB) on the hub's object store under `p{NN}/state/`.
//!
//! Basalt's commit log is the write-ahead log, so SlateDB's own WAL is off:
//! the store changes only by checkpoints ([`StateStore::write_checkpoint`]),
//! each one atomic batch flushed to an L0 table before the call returns.
//! Any crash therefore leaves the store at some checkpoint's boundary, and
//! recovery replays the log after the LSN that checkpoint recorded.
//! Keys and values are opaque bytes here; `basalt-partitions` defines them.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use std::time::Duration;

use slatedb::config::{
    CompactionWorkerOptions, CompactorOptions, ReadOptions, ScanOptions, Settings,
};
use slatedb::db_cache::DbCache;
use slatedb::db_cache::moka::{MokaCache, MokaCacheOptions};
use slatedb::{Db, DbReader, WriteBatch};

use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::types::PartitionId;

/// Key prefix (folder) of one partition's store.
pub fn state_prefix(partition: PartitionId) -> String {
    format!("p{partition}/state")
}

/// A cache of store blocks, indexes and filters, shared by every
/// partition of a process so one budget covers them all.
#[derive(Clone)]
pub struct StateCache {
    cache: Arc<dyn DbCache>,
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache").finish_non_exhaustive()
    }
}

impl StateCache {
    /// A cache holding at most about `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> StateCache {
        StateCache {
            cache: Arc::new(MokaCache::new_with_opts(MokaCacheOptions {
                max_capacity: capacity_bytes.max(1 << 20),
                time_to_live: None,
                time_to_idle: None,
            })),
        }
    }
}

/// How a store is tuned.
#[derive(Clone, Debug)]
pub struct StateStoreOptions {
    /// The block cache (shared between partitions).
    pub cache: StateCache,
    /// Most bytes of checkpoint batches held in memory before they are in
    /// tables; a checkpoint flushes its own batch, so this only bounds a
    /// burst. Default: 64 MiB.
    pub unflushed_bytes_max: usize,
}

impl Default for StateStoreOptions {
    fn default() -> Self {
        StateStoreOptions {
            cache: StateCache::new(32 << 20),
            unflushed_bytes_max: 64 << 20,
        }
    }
}

/// One partition's store, open for writing by this process.
pub struct StateStore {
    db: Db,
    /// `location/p{NN}/state`, for messages.
    name: String,
    /// Point reads so far (records loaded into memory, or found absent).
    gets: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Keys and values read by a scan.
pub type Entries = Vec<(Bytes, Bytes)>;

fn failed(name: &str, operation: &'static str, source: slatedb::Error) -> Error {
    Error::StateStore {
        store: name.to_owned(),
        operation,
        source: Box::new(source),
    }
}

/// Settings for a store whose only writer is the checkpoint.
/// Retries of one failing object store operation before the store reports
/// the error (about 3.5 s).
const OBJECT_STORE_RETRIES_MAX: u32 = 6;

fn settings(options: &StateStoreOptions) -> Settings {
    Settings {
        // Basalt's commit log is the WAL; the store is written by
        // checkpoints, each flushed before it counts.
        wal_enabled: false,
        flush_interval: None,
        max_unflushed_bytes: options.unflushed_bytes_max.max(32 << 20),
        l0_sst_size_bytes: 16 << 20,
        // A checkpoint's table holds a few thousand records: give every
        // table a filter, so looking up an id that does not exist (every
        // new instance once records were evicted) skips it.
        min_filter_keys: 1,
        // One table upload at a time keeps checkpoints in order.
        l0_flush_parallelism: 1,
        // Every checkpoint is one L0 table: compact them soon, and let a
        // burst of checkpoints wait for compaction only well past that. At
        // 32 tables, checkpoints of a busy partition (about one a second
        // with a 128 MiB budget) waited 1-10 s for the compactor on this
        // 2-core machine, stalling the partition behind them
        // (`basalt bench steady`); 128 leaves the compactor room to catch
        // up, and every table has a filter, so point lookups stay cheap.
        l0_max_ssts: 128,
        l0_max_ssts_per_key: 128,
        // SlateDB retries a failing object store forever by default, which
        // hangs a checkpoint (and the partition behind it) for as long as
        // storage is down. Give up after a few seconds instead (100 ms
        // doubling to 1 s): the partition stops with the error and reopens
        // itself once storage works again.
        object_store_max_retries: Some(OBJECT_STORE_RETRIES_MAX),
        compactor_options: Some(CompactorOptions {
            poll_interval: Duration::from_millis(250),
            max_concurrent_compactions: 2,
            worker: Some(compaction_worker()),
            ..CompactorOptions::default()
        }),
        ..Settings::default()
    }
}

/// The compactor that runs inside each store. SlateDB's defaults suit one
/// large database per process (four compactions at once, each split four
/// ways, reading ahead 8 MiB per input table); a hub has a store per
/// partition, each compacting on its own, so those buffers multiplied by
/// the partitions (and grew with the hub as compactions got longer). Two
/// compactions per store (so level-0 tables are merged while a long merge
/// of sorted runs goes on; with one, checkpoints waited seconds for it
/// past 560,000 checkouts in `basalt bench steady`), unsplit, with a short
/// read-ahead keeps the compactors' memory small and flat.
fn compaction_worker() -> CompactionWorkerOptions {
    CompactionWorkerOptions {
        max_concurrent_compactions: 2,
        max_subcompactions: 1,
        max_fetch_tasks: 1,
        bytes_to_fetch: 256 << 10,
        max_sst_size: 32 << 20,
        // As the writer's (SlateDB asks that they match).
        min_filter_keys: 1,
        ..CompactionWorkerOptions::default()
    }
}

impl StateStore {
    /// Opens (creating if needed) the store of `partition`. Opening fences
    /// off any earlier writer of the same store.
    pub async fn open(
        storage: &Storage,
        partition: PartitionId,
        options: &StateStoreOptions,
    ) -> Result<StateStore> {
        let name = format!("{}/{}", storage.location(), state_prefix(partition));
        let db = Db::builder(
            Path::from(state_prefix(partition)),
            Arc::clone(storage.store()),
        )
        .with_settings(settings(options))
        .with_db_cache(Arc::clone(&options.cache.cache), u64::from(partition.0))
        .build()
        .await
        .map_err(|e| failed(&name, "open", e))?;
        Ok(StateStore {
            db,
            name,
            gets: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The store's name in messages (`location/p{NN}/state`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Point reads since the store opened: each costs a look at every
    /// table that may hold the key, so the benchmarks report them.
    pub fn gets(&self) -> u64 {
        self.gets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The value of `key`, if any.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.db
            .get_with_options(key, &ReadOptions::default())
            .await
            .map_err(|e| failed(&self.name, "get", e))
    }

    /// Up to `limit` entries whose key starts with `prefix`, after the key
    /// `after` (or from the first), in key order.
    pub async fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Entries> {
        let range = scan_range(prefix, after);
        let iter = self
            .db
            .scan_with_options(range, &scan_options())
            .await
            .map_err(|e| failed(&self.name, "scan", e))?;
        take(iter, limit, &self.name).await
    }

    /// Writes one checkpoint: every put (`Some`) and delete (`None`) as one
    /// atomic batch, into the store's memory, where reads see it at once;
    /// [`StateStore::flush`] makes it durable.
    pub async fn write_checkpoint(
        &self,
        writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (key, value) in writes {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        self.db
            .write(batch)
            .await
            .map_err(|e| failed(&self.name, "write", e))?;
        Ok(())
    }

    /// Makes every checkpoint written so far durable (a table in the
    /// object store).
    pub async fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .await
            .map_err(|e| failed(&self.name, "flush", e))
    }

    /// Stops the store's background work. Checkpoints already returned
    /// are durable; nothing else is written.
    pub async fn close(&self) -> Result<()> {
        self.db
            .close()
            .await
            .map_err(|e| failed(&self.name, "close", e))
    }
}

/// The first `limit` entries of a scan.
async fn take(mut iter: slatedb::DbIterator, limit: usize, name: &str) -> Result<Entries> {
    let mut entries = Vec::new();
    while entries.len() < limit {
        match iter.next().await.map_err(|e| failed(name, "scan", e))? {
            Some(kv) => entries.push((kv.key, kv.value)),
            None => break,
        }
    }
    Ok(entries)
}

fn scan_options() -> ScanOptions {
    ScanOptions::default()
}

/// The keys after `after` (or from `prefix`) that start with `prefix`.
fn scan_range(
    prefix: &[u8],
    after: Option<&[u8]>,
) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let start = match after {
        Some(after) if after > prefix => Bound::Excluded(after.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    };
    (start, prefix_end(prefix))
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> std::ops::Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return std::ops::Bound::Excluded(end);
        }
    }
    std::ops::Bound::Unbounded
}

/// A store opened for reading only (`basalt inspect`, the replay checks):
/// it follows the newest state and writes nothing, so it can read the
/// store of a hub another process is running.
pub struct StateReader {
    reader: DbReader,
    name: String,
}

impl StateReader {
    /// Opens the store of `partition` for reading; `None` if it has none.
    pub async fn open(storage: &Storage, partition: PartitionId) -> Result<Option<StateReader>> {
        let name = format!("{}/{}", storage.location(), state_prefix(partition));
        let manifests = storage
            .list(&format!("{}/manifest", state_prefix(partition)))
            .await?;
        if manifests.is_empty() {
            return Ok(None);
        }
        let reader = DbReader::builder(
            Path::from(state_prefix(partition)),
            Arc::clone(storage.store()),
        )
        .with_reader_mode(slatedb::DbReaderMode::FollowLatest)
        .build()
        .await
        .map_err(|e| failed(&name, "open for reading", e))?;
        Ok(Some(StateReader { reader, name }))
    }

    /// The value of `key`, if any.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.reader
            .get(key)
            .await
            .map_err(|e| failed(&self.name, "get", e))
    }

    /// Up to `limit` entries whose key starts with `prefix`, after `after`.
    pub async fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Entries> {
        let iter = self
            .reader
            .scan(scan_range(prefix, after))
            .await
            .map_err(|e| failed(&self.name, "scan", e))?;
        take(iter, limit, &self.name).await
    }

    /// Stops the reader.
    pub async fn close(&self) -> Result<()> {
        self.reader
            .close()
            .await
            .map_err(|e| failed(&self.name, "close", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_covers_exactly_the_prefix() {
        assert_eq!(prefix_end(b"i/"), std::ops::Bound::Excluded(b"i0".to_vec()));
        assert_eq!(prefix_end(&[1, 255]), std::ops::Bound::Excluded(vec![2]));
        assert_eq!(prefix_end(&[255]), std::ops::Bound::Unbounded);
    }

    #[tokio::test]
    async fn a_checkpoint_is_read_back_after_reopening() {
        let storage = Storage::in_memory();
        let options = StateStoreOptions::default();
        let store = StateStore::open(&storage, PartitionId(3), &options)
            .await
            .expect("open");
        store
            .write_checkpoint([
                (b"i/a".to_vec(), Some(b"1".to_vec())),
                (b"i/b".to_vec(), Some(b"2".to_vec())),
                (b"i/c".to_vec(), Some(b"3".to_vec())),
                (b"e/x".to_vec(), Some(b"4".to_vec())),
            ])
            .await
            .expect("write");
        // Written, not flushed: reads see it.
        assert_eq!(
            store.get(b"i/c").await.expect("get").as_deref(),
            Some(&b"3"[..])
        );
        store
            .write_checkpoint([(b"i/b".to_vec(), None)])
            .await
            .expect("write");
        assert_eq!(store.get(b"i/b").await.expect("get"), None);
        store.flush().await.expect("flush");
        store.close().await.expect("close");
        let store = StateStore::open(&storage, PartitionId(3), &options)
            .await
            .expect("reopen");
        assert_eq!(
            store.get(b"i/a").await.expect("get").as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(store.get(b"i/b").await.expect("get"), None);
        let keys: Vec<_> = store
            .scan(b"i/", None, 10)
            .await
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![Bytes::from("i/a"), Bytes::from("i/c")]);
        let after: Vec<_> = store
            .scan(b"i/", Some(b"i/a"), 10)
            .await
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(after, vec![Bytes::from("i/c")]);
        let reader = StateReader::open(&storage, PartitionId(3))
            .await
            .expect("read")
            .expect("a store");
        assert_eq!(
            reader.get(b"e/x").await.expect("get").as_deref(),
            Some(&b"4"[..])
        );
        reader.close().await.expect("close reader");
        store.close().await.expect("close");
        assert!(
            StateReader::open(&storage, PartitionId(4))
                .await
                .expect("read")
                .is_none()
        );
    }
}
