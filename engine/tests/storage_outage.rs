//! A storage outage (every write fails, as on a full disk) stops the
//! partitions that write; once storage works again they reopen by
//! themselves, without a restart, and every start that was acknowledged
//! completes, including orchestrations whose sub-orchestrations live on
//! other partitions (their messages are resent after the reopen).

use std::sync::Arc;
use std::time::Duration;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::sdk::{ActivityError, OrchestrationError, Registry};
use basalt_runtime::{Backend, Client, InstanceId, StartRequest, Worker, WorkerOptions};
use basalt_storage::Storage;
use basalt_storage::fault::FaultyStore;
use object_store::memory::InMemory;

fn registry() -> Registry {
    Registry::builder()
        .register_orchestration_typed::<u32, u32, _, _>("parent", |ctx, n: u32| async move {
            let doubled: u32 = ctx.call_activity("double", &n).await?;
            // The child's id lands on some partition, usually another one.
            let child_id = format!("{}-child", ctx.instance_id());
            let plus_one: u32 = ctx
                .call_sub_orchestration("child", Some(&child_id), &doubled)
                .await?;
            Ok::<_, OrchestrationError>(plus_one)
        })
        .register_orchestration_typed::<u32, u32, _, _>("child", |ctx, n: u32| async move {
            let out: u32 = ctx.call_activity("increment", &n).await?;
            Ok::<_, OrchestrationError>(out)
        })
        .register_activity_typed::<u32, u32, _, _>("double", |_ctx, n: u32| async move {
            Ok::<_, ActivityError>(n * 2)
        })
        .register_activity_typed::<u32, u32, _, _>("increment", |_ctx, n: u32| async move {
            Ok::<_, ActivityError>(n + 1)
        })
        .build()
        .expect("registry")
}

async fn start(engine: &Engine, n: u32) -> Result<String, basalt_runtime::Error> {
    let id = format!("order-{n}");
    engine
        .start_instance(StartRequest {
            name: "parent".into(),
            instance_id: Some(id.as_str().into()),
            input: Some(n.to_string()),
            ..StartRequest::default()
        })
        .await
        .map(|_| id)
}

/// Waits until every partition serves again; panics after `limit`.
async fn wait_ready(engine: &Engine, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let answers = engine.readiness(Duration::from_secs(1)).await;
        if answers.iter().all(|(_, answer)| answer.is_ok()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions did not come back: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_stopped_by_an_outage_reopen_and_acknowledged_work_completes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let storage = Storage::object_store(faulty.clone(), "memory://outage");
    let engine = Engine::open(
        storage,
        EngineOptions {
            partition_count: 4,
            reopen_backoff_max_ms: 200,
            ..EngineOptions::default()
        },
    )
    .await
    .expect("open");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry()),
        WorkerOptions {
            error_backoff: Duration::from_millis(20),
            ..WorkerOptions::default()
        },
    );
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        acknowledged.push((n, start(&engine, n).await.expect("start before the outage")));
    }

    // The outage: every write fails. Starts now fail (their commits do) and
    // stop their partitions; whatever was acknowledged must survive.
    faulty.set_outage(true);
    let mut refused = 0;
    for n in 20..40 {
        match start(&engine, n).await {
            Ok(id) => acknowledged.push((n, id)),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "no start failed during the outage");
    let stopped = engine.readiness(Duration::from_secs(1)).await;
    assert!(
        stopped.iter().any(|(_, answer)| answer.is_err()),
        "a partition must be stopped during the outage: {stopped:?}"
    );
    let during = engine
        .partition_metrics()
        .await
        .expect("metrics during the outage");
    assert!(
        during.iter().any(|p| !p.serving && p.storage_failures > 0),
        "{during:?}"
    );
    // Attempts to reopen fail while the outage lasts; meanwhile the
    // stopped partitions answer at once (with their error).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let still = engine.partition_metrics().await.expect("metrics");
        if still.iter().any(|p| p.reopen_failures > 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed reopen: {still:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 40..45 {
        assert!(
            start(&engine, n).await.is_err(),
            "order-{n} started during the outage"
        );
    }

    faulty.set_outage(false);
    wait_ready(&engine, Duration::from_secs(30)).await;
    let after = engine.partition_metrics().await.expect("metrics after");
    assert!(after.iter().all(|p| p.serving), "{after:?}");
    assert!(after.iter().any(|p| p.reopens > 0), "{after:?}");
    for n in 45..60 {
        acknowledged.push((n, start(&engine, n).await.expect("start after the outage")));
    }

    let client = Client::new(backend);
    for (n, id) in &acknowledged {
        let output: u32 = client
            .wait_for_output(&InstanceId::new(id).expect("id"), Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{id} did not complete: {e}"));
        assert_eq!(output, n * 2 + 1, "{id}");
    }
    worker.shutdown().await;
    engine.shutdown().await;
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes`; `None` where this process may not mount
    /// (not root, no CAP_SYS_ADMIN): the outage test above covers the
    /// same path through a fault-injecting store.
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("dir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills the disk but for about `leave` bytes.
    fn fill(&self, leave: u64) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        // Write until full, then give back `leave` bytes.
        while file.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        let _ = file.set_len(written.saturating_sub(leave));
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The same on a real full disk with the local default storage (segment
/// files, fsync): starts fail with the disk full and stop their
/// partitions; once space is freed the partitions reopen, new work runs,
/// and every acknowledged start completes, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_partitions_and_freed_space_brings_them_back() {
    let Some(disk) = SmallDisk::mount(32 << 20) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); see the outage test");
        return;
    };
    let data = disk.path().join("hub");
    let options = EngineOptions {
        partition_count: 2,
        reopen_backoff_max_ms: 200,
        ..EngineOptions::default()
    };
    let engine = Engine::open(Storage::local(&data).expect("storage"), options.clone())
        .await
        .expect("open");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry()),
        WorkerOptions {
            error_backoff: Duration::from_millis(20),
            ..WorkerOptions::default()
        },
    );
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        acknowledged.push((
            n,
            start(&engine, n)
                .await
                .expect("start before the disk fills"),
        ));
    }
    let filler = disk.fill(0);
    let mut refused = 0;
    let mut n = 10;
    // Starts (with their inputs, the partitions' logs fill up) until the
    // disk refuses them.
    while refused < 5 && n < 10_000 {
        match start(&engine, n).await {
            Ok(id) => acknowledged.push((n, id)),
            Err(_) => refused += 1,
        }
        n += 1;
    }
    assert!(refused >= 5, "the full disk refused no start");
    let during = engine.partition_metrics().await.expect("metrics");
    assert!(during.iter().any(|p| p.storage_failures > 0), "{during:?}");
    assert!(
        during
            .iter()
            .filter_map(|p| p.last_storage_error.as_deref())
            .any(|e| e.contains("No space left")),
        "{during:?}"
    );

    std::fs::remove_file(&filler).expect("free the space");
    wait_ready(&engine, Duration::from_secs(60)).await;
    for m in n..n + 10 {
        acknowledged.push((
            m,
            start(&engine, m)
                .await
                .expect("start after space was freed"),
        ));
    }
    let client = Client::new(backend);
    for (n, id) in &acknowledged {
        let output: u32 = client
            .wait_for_output(&InstanceId::new(id).expect("id"), Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{id} did not complete: {e}"));
        assert_eq!(output, n * 2 + 1, "{id}");
    }
    worker.shutdown().await;
    drop(client);
    engine.shutdown().await;
    drop(engine);

    // Everything acknowledged is on disk: a fresh open finds it complete.
    let engine = Engine::open(Storage::local(&data).expect("storage"), options)
        .await
        .expect("reopen");
    for (_, id) in &acknowledged {
        let state = engine
            .get_instance(&InstanceId::new(id).expect("id"))
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{id} is gone after the restart"));
        assert_eq!(
            state.status,
            basalt_runtime::OrchestrationStatus::Completed,
            "{id}"
        );
    }
    engine.shutdown().await;
}
