//! Where a benchmark's task hubs live: a local folder (the embedded
//! default, fsync on), memory, or any storage URL `basalt serve` takes.
//! Every run gets a fresh hub of its own, removed afterwards.

use std::path::{Path, PathBuf};

use basalt_storage::Storage;

use crate::environment::{self, FileSystem};

/// The storage a workload runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchStore {
    /// Fresh temporary folders under `parent`, fsync on.
    Local {
        /// Parent folder of the hubs.
        parent: PathBuf,
        /// Its file system: on a volatile one, "fsync" is not durable.
        fs: String,
        /// The file system does not make fsync durable (tmpfs, ramfs);
        /// allowed only with `--allow-volatile`, and then labelled so.
        volatile: bool,
    },
    /// In memory: no I/O at all, the bound without storage costs.
    Memory,
    /// An object store URL (`s3://bucket/prefix`, `az://container/prefix`,
    /// `file:///dir`); each run uses a fresh prefix below it.
    Url(String),
}

/// Why a store cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The benchmark folder is on a file system where fsync does nothing.
    #[error(
        "{} is on {fs}, where fsync does not reach stable storage: a \"local fsync\" \
         figure from there would be a lie. Use --dir on a disk, or --allow-volatile \
         to run anyway with the runs labelled volatile",
        dir.display()
    )]
    Volatile {
        /// The folder.
        dir: PathBuf,
        /// Its file system.
        fs: String,
    },
    /// The folder or URL is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Opening the store failed.
    #[error(transparent)]
    Storage(#[from] basalt_storage::Error),
    /// A temporary folder could not be made.
    #[error("benchmark folder {}: {source}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl BenchStore {
    /// The store a `--storage` value names (`None`: local under `dir`).
    /// A local folder is created if missing and its file system checked:
    /// a volatile one is refused unless `allow_volatile`.
    pub fn parse(
        storage: Option<&str>,
        dir: &Path,
        allow_volatile: bool,
    ) -> Result<BenchStore, StoreError> {
        match storage {
            None | Some("local") => BenchStore::local(dir, allow_volatile),
            Some(memory) if memory == "memory" || memory.starts_with("memory:") => {
                Ok(BenchStore::Memory)
            }
            Some(url) if url.starts_with("file://") => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| StoreError::Invalid(format!("storage URL {url:?}: {e}")))?;
                let path = parsed
                    .to_file_path()
                    .map_err(|()| StoreError::Invalid(format!("{url:?} is not a local path")))?;
                BenchStore::local(&path, allow_volatile)
            }
            Some(url) if url.contains("://") => {
                // Checked now, so a typo fails before any run.
                Storage::from_url(url)?;
                Ok(BenchStore::Url(url.trim_end_matches('/').to_owned()))
            }
            Some(other) => Err(StoreError::Invalid(format!(
                "--storage {other:?}: expected local, memory://, s3://..., az://... or file:///..."
            ))),
        }
    }

    fn local(dir: &Path, allow_volatile: bool) -> Result<BenchStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let parent = dir.canonicalize().map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let FileSystem { name, volatile } =
            environment::file_system(&parent).map_err(|source| StoreError::Io {
                path: parent.clone(),
                source,
            })?;
        if volatile && !allow_volatile {
            return Err(StoreError::Volatile {
                dir: parent,
                fs: name,
            });
        }
        Ok(BenchStore::Local {
            parent,
            fs: name,
            volatile,
        })
    }

    /// How run labels name this store: "local fsync", "local volatile
    /// (tmpfs)", "in-memory", or the URL's scheme.
    pub fn label(&self) -> String {
        match self {
            BenchStore::Local {
                volatile: false, ..
            } => "local fsync".into(),
            BenchStore::Local { fs, .. } => format!("local volatile ({fs}, fsync does nothing)"),
            BenchStore::Memory => "in-memory".into(),
            BenchStore::Url(url) => url.split("://").next().unwrap_or("url").to_owned(),
        }
    }

    /// Where hubs go, for the report.
    pub fn location(&self) -> String {
        match self {
            BenchStore::Local { parent, .. } => parent.display().to_string(),
            BenchStore::Memory => "memory://".into(),
            BenchStore::Url(url) => url.clone(),
        }
    }

    /// The file system (local) or the kind of store, for the report.
    pub fn file_system(&self) -> String {
        match self {
            BenchStore::Local { fs, .. } => fs.clone(),
            BenchStore::Memory => "memory".into(),
            BenchStore::Url(url) => format!(
                "object store ({})",
                url.split("://").next().unwrap_or("url")
            ),
        }
    }

    /// Whether an acknowledged write here survives a power loss.
    pub fn durable(&self) -> bool {
        match self {
            BenchStore::Local { volatile, .. } => !volatile,
            BenchStore::Memory => false,
            BenchStore::Url(_) => true,
        }
    }

    /// A fresh, empty task hub location for one run. Keep the returned
    /// guard until the engine is closed: dropping it removes a local hub.
    pub fn fresh(&self) -> Result<(Storage, FreshHub), StoreError> {
        match self {
            BenchStore::Local { parent, .. } => {
                let dir = tempfile::Builder::new()
                    .prefix("basalt-bench-")
                    .tempdir_in(parent)
                    .map_err(|source| StoreError::Io {
                        path: parent.clone(),
                        source,
                    })?;
                Ok((Storage::local(dir.path())?, FreshHub(Some(dir))))
            }
            BenchStore::Memory => Ok((Storage::in_memory(), FreshHub(None))),
            BenchStore::Url(url) => Ok((Storage::from_url(&fresh_prefix(url))?, FreshHub(None))),
        }
    }
}

/// A prefix under `url` that no earlier run used: the time in nanoseconds,
/// this process and a counter (hubs on object stores are left in place, so
/// a later run must never reopen one).
pub fn fresh_prefix(url: &str) -> String {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}/basalt-bench-{nanos}-{}-{}",
        url.trim_end_matches('/'),
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Keeps a run's local hub folder until dropped (then removes it).
/// Object-store hubs are left in place: the bucket's owner decides.
pub struct FreshHub(Option<tempfile::TempDir>);

impl FreshHub {
    /// The hub's local folder, if it has one.
    pub fn path(&self) -> Option<&Path> {
        self.0.as_ref().map(tempfile::TempDir::path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_is_refused_unless_allowed() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let err = BenchStore::parse(None, shm, false).expect_err("tmpfs must be refused");
        let text = err.to_string();
        assert!(
            text.contains("tmpfs") && text.contains("--allow-volatile"),
            "{text}"
        );
        let store = BenchStore::parse(None, shm, true).expect("allowed");
        assert!(store.label().contains("volatile"), "{}", store.label());
        assert!(!store.durable());
    }

    #[test]
    fn urls_and_memory_parse() {
        let here = Path::new(".");
        assert_eq!(
            BenchStore::parse(Some("memory://"), here, false).expect("memory"),
            BenchStore::Memory
        );
        assert_eq!(
            BenchStore::parse(Some("memory://anything"), here, false).expect("memory"),
            BenchStore::Memory
        );
        assert!(BenchStore::parse(Some("gs://bucket"), here, false).is_err());
        assert!(BenchStore::parse(Some("nonsense"), here, false).is_err());
    }

    #[test]
    fn a_disk_folder_is_fsync() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let store = BenchStore::parse(None, dir.path(), false).expect("disk");
        if store.durable() {
            assert_eq!(store.label(), "local fsync");
        }
        let (_storage, hub) = store.fresh().expect("fresh hub");
        assert!(hub.path().is_some_and(Path::is_dir));
    }
}
