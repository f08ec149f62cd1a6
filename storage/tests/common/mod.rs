//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use basalt_storage::{
    HubOptions, Log, LogLayout, LogOptions, PartitionId, Recovery, Storage, TaskHub,
};
use object_store::ObjectStore;
use object_store::memory::InMemory;

/// The storage choices every behaviour is checked on.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Memory,
    LocalFile,
    LocalObject,
}

pub const ALL_KINDS: [Kind; 3] = [Kind::Memory, Kind::LocalFile, Kind::LocalObject];

/// A place a hub lives, reopenable as a fresh `Storage` (as after a restart).
pub struct Place {
    pub kind: Kind,
    pub memory: Arc<dyn ObjectStore>,
    pub dir: tempfile::TempDir,
}

impl Place {
    pub fn new(kind: Kind) -> Place {
        Place {
            kind,
            memory: Arc::new(InMemory::new()),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn storage(&self) -> Storage {
        match self.kind {
            Kind::Memory => Storage::object_store(Arc::clone(&self.memory), "memory"),
            Kind::LocalFile => {
                Storage::local_with_layout(self.dir.path(), LogLayout::SegmentFile).expect("open")
            }
            Kind::LocalObject => {
                Storage::local_with_layout(self.dir.path(), LogLayout::ObjectPerCommit)
                    .expect("open")
            }
        }
    }

    /// A read-only view for listing while a log is open: the same objects
    /// without taking the directory lock.
    pub fn storage_unlocked(&self) -> Storage {
        match self.kind {
            Kind::Memory => Storage::object_store(Arc::clone(&self.memory), "memory"),
            _ => Storage::object_store(
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(self.dir.path())
                        .expect("local store"),
                ),
                "local",
            ),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub async fn open(&self, options: LogOptions) -> basalt_storage::Result<(Log, Recovery)> {
        let hub = TaskHub::open_or_create(self.storage(), &hub_options()).await?;
        hub.open_partition(PartitionId(0), options).await
    }

    /// Reads an object's bytes, whatever the backend.
    pub async fn read(&self, key: &str) -> Vec<u8> {
        match self.kind {
            Kind::Memory => {
                use object_store::ObjectStoreExt;
                let got = self
                    .memory
                    .get(&object_store::path::Path::from(key))
                    .await
                    .expect("get");
                got.bytes().await.expect("bytes").to_vec()
            }
            _ => std::fs::read(self.dir.path().join(key)).expect("read"),
        }
    }

    /// Replaces an object's bytes, whatever the backend.
    pub async fn write(&self, key: &str, bytes: Vec<u8>) {
        match self.kind {
            Kind::Memory => {
                use object_store::ObjectStoreExt;
                self.memory
                    .put(&object_store::path::Path::from(key), bytes.into())
                    .await
                    .expect("put");
            }
            _ => {
                let path = self.dir.path().join(key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("mkdir");
                }
                std::fs::write(path, bytes).expect("write")
            }
        }
    }

    /// Deletes an object, whatever the backend.
    pub async fn remove(&self, key: &str) {
        match self.kind {
            Kind::Memory => {
                use object_store::ObjectStoreExt;
                self.memory
                    .delete(&object_store::path::Path::from(key))
                    .await
                    .expect("delete");
            }
            _ => std::fs::remove_file(self.dir.path().join(key)).expect("remove"),
        }
    }
}

pub fn hub_options() -> HubOptions {
    HubOptions {
        name: "test".into(),
        partition_count: 4,
    }
}

/// A deterministic payload for record `i`, of varying length.
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 7 % 23) as usize;
    (0..len).map(|j| (i as u8).wrapping_add(j as u8)).collect()
}
