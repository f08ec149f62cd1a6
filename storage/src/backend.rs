//! Where a task hub's bytes live: a local directory (the embedded default),
//! memory (tests), or any `object_store::ObjectStore` (S3, Azure Blob, ...).
//!
//! Reads always go through `object_store`, so recovery and inspection are
//! one code path for every backend. Only the log's write path differs, by
//! [`LogLayout`]; see `docs/decisions/0001-local-log-layout.md` for why the
//! local default appends to segment files.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::PartitionId;

/// How a partition's log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLayout {
    /// One append-only segment file per ownership epoch (rolled by size and
    /// after checkpoints), each group commit one `write` + `fdatasync`.
    /// Local directories only; the embedded default.
    SegmentFile,
    /// One immutable object per group commit, written with
    /// `PutMode::Create`. Works on every object store.
    ObjectPerCommit,
}

/// A task hub's storage backend. Cheap to clone; the local directory lock
/// is released when the last clone is dropped (or the process dies).
#[derive(Clone, Debug)]
pub struct Storage {
    inner: Arc<StorageInner>,
}

#[derive(Debug)]
struct StorageInner {
    store: Arc<dyn ObjectStore>,
    location: String,
    layout: LogLayout,
    local_root: Option<PathBuf>,
    _lock: Option<DirLock>,
    open_partitions: Mutex<HashSet<PartitionId>>,
    read_only: bool,
}

impl Storage {
    /// The embedded default: a local directory with fsync on every write,
    /// locked for this process (I5). Creates the directory if needed.
    pub fn local(dir: impl AsRef<FsPath>) -> Result<Storage> {
        Storage::local_with_layout(dir, LogLayout::SegmentFile)
    }

    /// A local directory with an explicit log layout (benchmarks compare both).
    pub fn local_with_layout(dir: impl AsRef<FsPath>, layout: LogLayout) -> Result<Storage> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let root = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let lock = DirLock::acquire(&root)?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::store(root.display().to_string(), e))?
            .with_fsync(true);
        Ok(Storage::build(
            Arc::new(store),
            root.display().to_string(),
            layout,
            Some(root),
            Some(lock),
        ))
    }

    /// A local task hub opened for reading only — no lock, so it works on a
    /// hub another process is running (`basalt inspect`). Partitions
    /// cannot be opened for writing through it.
    pub fn local_read_only(dir: impl AsRef<FsPath>) -> Result<Storage> {
        let dir = dir.as_ref();
        let root = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::store(root.display().to_string(), e))?;
        let mut storage = Storage::build(
            Arc::new(store),
            root.display().to_string(),
            LogLayout::SegmentFile,
            Some(root),
            None,
        );
        if let Some(inner) = Arc::get_mut(&mut storage.inner) {
            inner.read_only = true;
        }
        Ok(storage)
    }

    /// A fresh in-memory store: fast, gone with the process. For tests.
    pub fn in_memory() -> Storage {
        Storage::object_store(Arc::new(InMemory::new()), "memory")
    }

    /// The task hub at a storage URL: `s3://bucket[/prefix]` (Amazon S3 or
    /// an S3-compatible store), `az://container[/prefix]` or
    /// `https://ACCOUNT.blob.core.windows.net/container[/prefix]` (Azure
    /// Blob), `memory://`, or `file:///dir` (the local layout). Credentials,
    /// region and endpoint come from the environment the way the cloud
    /// tools read them (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP`, ...; `AZURE_STORAGE_ACCOUNT_NAME`,
    /// `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_USE_EMULATOR`, ...).
    pub fn from_url(url: &str) -> Result<Storage> {
        use object_store::ObjectStoreScheme;
        let bad = |why: String| Error::InvalidInput(format!("storage URL {url:?}: {why}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                return Storage::local(dir);
            }
            ObjectStoreScheme::Memory => return Ok(Storage::in_memory()),
            ObjectStoreScheme::AmazonS3 => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "{other:?} is not supported (use s3://, az://, memory:// or a directory)"
                )));
            }
        };
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            store
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        Ok(Storage::object_store(store, url))
    }

    /// Any object store (S3, Azure Blob, a fault-injecting wrapper, ...),
    /// with the object-per-commit log layout. `location` names it in errors.
    pub fn object_store(store: Arc<dyn ObjectStore>, location: impl Into<String>) -> Storage {
        Storage::build(
            store,
            location.into(),
            LogLayout::ObjectPerCommit,
            None,
            None,
        )
    }

    fn build(
        store: Arc<dyn ObjectStore>,
        location: String,
        layout: LogLayout,
        local_root: Option<PathBuf>,
        lock: Option<DirLock>,
    ) -> Storage {
        Storage {
            inner: Arc::new(StorageInner {
                store,
                location,
                layout,
                local_root,
                _lock: lock,
                open_partitions: Mutex::new(HashSet::new()),
                read_only: false,
            }),
        }
    }

    /// The underlying object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// Human-readable location (directory path, bucket URL, "memory").
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// How logs are written on this backend.
    pub fn layout(&self) -> LogLayout {
        self.inner.layout
    }

    /// The local directory, for the segment-file writer.
    pub(crate) fn local_root(&self) -> Option<&FsPath> {
        self.inner.local_root.as_deref()
    }

    /// Marks a partition open in this process; refuses a second opener.
    pub(crate) fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim> {
        if self.inner.read_only {
            return Err(Error::InvalidInput(format!(
                "{} was opened read-only; partition {partition} cannot be opened for writing",
                self.inner.location
            )));
        }
        if !self.inner.open_partitions.lock().insert(partition) {
            return Err(Error::AlreadyOpen(partition));
        }
        Ok(PartitionClaim {
            storage: self.clone(),
            partition,
        })
    }

    /// Reads an object; `Ok(None)` when it does not exist.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = Path::from(key);
        match self.inner.store.get(&path).await {
            Ok(result) => Ok(Some(
                result.bytes().await.map_err(|e| Error::store(key, e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(key, e)),
        }
    }

    /// Writes an object with the given mode.
    pub(crate) async fn put(&self, key: &str, payload: PutPayload, mode: PutMode) -> Result<()> {
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.inner
            .store
            .put_opts(&Path::from(key), payload, opts)
            .await
            .map(|_| ())
            .map_err(|e| Error::store(key, e))
    }

    /// Deletes an object; a missing object is not an error.
    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(key, e)),
        }
    }

    /// Lists (key, size) of the objects under a folder, in no set order.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let path = Path::from(prefix);
        let metas: Vec<_> = self
            .inner
            .store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect())
    }
}

/// Proof that this process has a partition open; released on drop.
#[derive(Debug)]
pub(crate) struct PartitionClaim {
    storage: Storage,
    partition: PartitionId,
}

impl Drop for PartitionClaim {
    fn drop(&mut self) {
        self.storage
            .inner
            .open_partitions
            .lock()
            .remove(&self.partition);
    }
}

/// An exclusive OS lock on a task hub directory (I5 on local disk). The OS
/// releases it when the file is closed, including when the process dies.
#[derive(Debug)]
struct DirLock {
    _file: File,
}

impl DirLock {
    const FILE_NAME: &'static str = "LOCK";

    fn acquire(dir: &FsPath) -> Result<DirLock> {
        let path = dir.join(Self::FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    lock: path,
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(", held by pid {holder}")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // Best effort: the pid only makes the "locked" message friendlier.
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        Ok(DirLock { _file: file })
    }
}
