//! duroxide's runtime on Basalt, end to end: an orchestration with an
//! activity, a durable timer, an external event, a custom status and a
//! sub-orchestration; and a kill -9 of a process running many of them,
//! after which every started instance completes exactly once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use basalt_duroxide::BasaltProvider;
use basalt_engine::{Engine, EngineOptions};
use duroxide::providers::Provider;
use duroxide::runtime::Runtime;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::{
    ActivityContext, Client, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};

async fn open(dir: &Path) -> (Arc<dyn Provider>, Arc<Engine>) {
    let storage = basalt_storage::Storage::local(dir).expect("local storage");
    let options = EngineOptions {
        partition_count: 4,
        ..EngineOptions::default()
    };
    let (provider, engine) = BasaltProvider::open(storage, options)
        .await
        .expect("open the hub");
    (Arc::new(provider), engine)
}

fn activities() -> ActivityRegistry {
    ActivityRegistry::builder()
        .register(
            "Reserve",
            |_ctx: ActivityContext, item: String| async move { Ok(format!("reserved:{item}")) },
        )
        .register("Charge", |_ctx: ActivityContext, item: String| async move {
            Ok(format!("charged:{item}"))
        })
        .build()
}

/// `Order` reserves, sleeps on a durable timer, waits for `Approve`
/// (saying so in its custom status), then charges in a sub-orchestration.
/// `Quick` is the same without the wait (for the crash test).
fn orchestrations() -> OrchestrationRegistry {
    OrchestrationRegistry::builder()
        .register(
            "Charging",
            |ctx: OrchestrationContext, item: String| async move {
                ctx.schedule_activity("Charge", item).await
            },
        )
        .register(
            "Order",
            |ctx: OrchestrationContext, item: String| async move {
                let reserved = ctx.schedule_activity("Reserve", item.clone()).await?;
                ctx.schedule_timer(Duration::from_millis(100)).await;
                ctx.set_custom_status("waiting for approval");
                let approval = ctx.schedule_wait("Approve").await;
                let charged = ctx.schedule_sub_orchestration("Charging", item).await?;
                Ok(format!("{reserved}|{approval}|{charged}"))
            },
        )
        .register(
            "Quick",
            |ctx: OrchestrationContext, item: String| async move {
                let reserved = ctx.schedule_activity("Reserve", item.clone()).await?;
                ctx.schedule_timer(Duration::from_millis(10)).await;
                let charged = ctx.schedule_sub_orchestration("Charging", item).await?;
                Ok(format!("{reserved}|{charged}"))
            },
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_with_an_activity_a_timer_an_event_and_a_child_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, engine) = open(dir.path()).await;
    let rt = Runtime::start_with_store(provider.clone(), activities(), orchestrations()).await;
    let client = Client::new(provider.clone());
    client
        .start_orchestration("order-1", "Order", "42")
        .await
        .expect("start");
    // Raise the approval once the orchestration says it waits for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .get_orchestration_status("order-1")
            .await
            .expect("status");
        if let OrchestrationStatus::Running {
            custom_status: Some(status),
            ..
        } = &status
            && status == "waiting for approval"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never waited: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .raise_event("order-1", "Approve", "yes")
        .await
        .expect("raise");
    let status = client
        .wait_for_orchestration("order-1", Duration::from_secs(30))
        .await
        .expect("wait");
    match status {
        OrchestrationStatus::Completed { output, .. } => {
            assert_eq!(output, "reserved:42|yes|charged:42");
        }
        other => panic!("not completed: {other:?}"),
    }
    // The child is an instance of its own, with the parent recorded.
    let admin = provider.as_management_capability().expect("admin");
    let children = admin.list_children("order-1").await.expect("children");
    assert_eq!(children.len(), 1, "{children:?}");
    rt.shutdown(None).await;
    engine.shutdown().await;
}

const PRESSED_INSTANCES: usize = 40;

/// Orchestrations whose records memory pressure evicts while they wait on
/// a durable timer still complete: fetchers find queued work in records
/// that are not in memory (a stress run once left orchestrations waiting
/// for their client's timeout because they did not); and listings find
/// the evicted instances in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrations_evicted_while_waiting_on_timers_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = basalt_storage::Storage::local(dir.path()).expect("local storage");
    // 32 KiB of records per partition, against 40 histories of about
    // 16 KiB each; checkpoints soon after the turns, so records are clean
    // and evictable while their timers wait.
    let options = EngineOptions {
        partition_count: 2,
        memory_budget_bytes: 128 << 10,
        checkpoint_idle_ms: 50,
        ..EngineOptions::default()
    };
    let (provider, engine) = BasaltProvider::open(storage, options)
        .await
        .expect("open the hub");
    let provider: Arc<dyn Provider> = Arc::new(provider);
    let activities = ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, text: String| async move {
            Ok(text)
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Sleeper",
            |ctx: OrchestrationContext, text: String| async move {
                let echoed = ctx.schedule_activity("Echo", text).await?;
                ctx.schedule_timer(Duration::from_secs(6)).await;
                Ok(echoed.len().to_string())
            },
        )
        .register(
            "Quick",
            |_ctx: OrchestrationContext, text: String| async move { Ok(text.len().to_string()) },
        )
        .build();
    let rt = Runtime::start_with_store(provider.clone(), activities, orchestrations).await;
    let client = Client::new(provider.clone());
    let text = "x".repeat(8 << 10);
    for n in 0..PRESSED_INSTANCES {
        client
            .start_orchestration(&format!("sleeper-{n}"), "Sleeper", text.clone())
            .await
            .expect("start");
    }
    // While the timers wait (6 s), some of the waiting records leave
    // memory (the test is only worth its name if they do).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut cold = 0;
    while cold == 0 && std::time::Instant::now() < deadline {
        let backlog = engine.hosted_backlog(usize::MAX).await.expect("backlog");
        cold = backlog
            .iter()
            .filter(|line| line.contains("cold (not in memory) Hosted"))
            .count();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cold > 0,
        "no waiting record was evicted: the budget is not tight enough"
    );
    for n in 0..PRESSED_INSTANCES {
        let id = format!("sleeper-{n}");
        let status = match client
            .wait_for_orchestration(&id, Duration::from_secs(20))
            .await
        {
            Ok(status) => status,
            Err(e) => panic!("{id}: {e:?}\n{}", backlog(&engine).await),
        };
        match status {
            OrchestrationStatus::Completed { output, .. } => {
                assert_eq!(output, (8 << 10).to_string(), "{id}");
            }
            other => panic!("{id} not completed: {other:?}"),
        }
    }
    // Later work (after the checkpoint that made the finished records
    // clean) evicts them; listings read the store too, and find them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..PRESSED_INSTANCES {
        let id = format!("quick-{n}");
        client
            .start_orchestration(&id, "Quick", text.clone())
            .await
            .expect("start");
        client
            .wait_for_orchestration(&id, Duration::from_secs(20))
            .await
            .expect("quick completes");
    }
    let admin = provider.as_management_capability().expect("admin");
    let mut listed = admin.list_instances().await.expect("list");
    listed.sort();
    let mut expected: Vec<String> = (0..PRESSED_INSTANCES)
        .flat_map(|n| [format!("sleeper-{n}"), format!("quick-{n}")])
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    let completed = admin
        .list_instances_by_status("Completed")
        .await
        .expect("list by status");
    assert_eq!(completed.len(), 2 * PRESSED_INSTANCES);
    rt.shutdown(None).await;
    engine.shutdown().await;
}

/// The engine's hosted backlog, for a failure message.
async fn backlog(engine: &Engine) -> String {
    match engine.hosted_backlog(20).await {
        Ok(lines) => lines.join("\n"),
        Err(e) => format!("(backlog not read: {e})"),
    }
}

const CRASH_INSTANCES: usize = 40;

/// Short locks, so that what the killed process held is taken again soon
/// after recovery (a lock outlives its holder until it expires).
fn crash_options() -> duroxide::runtime::RuntimeOptions {
    duroxide::runtime::RuntimeOptions {
        orchestrator_lock_timeout: Duration::from_secs(2),
        worker_lock_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}
const CHILD_ENV: &str = "BASALT_DUROXIDE_CRASH_CHILD_DIR";

/// The process that is killed: starts the instances (writing each
/// acknowledged start to a file) and runs them until it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by kill9_every_started_instance_completes_once as its child process"]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let (provider, _engine) = open(&dir.join("hub")).await;
    let _rt = Runtime::start_with_options(
        provider.clone(),
        activities(),
        orchestrations(),
        crash_options(),
    )
    .await;
    let client = Client::new(provider);
    let mut started = String::new();
    for n in 0..CRASH_INSTANCES {
        let id = format!("quick-{n}");
        client
            .start_orchestration(&id, "Quick", n.to_string())
            .await
            .expect("start");
        started.push_str(&id);
        started.push('\n');
        // Whole lines only, whenever the kill lands: write, then rename.
        std::fs::write(dir.join("started.tmp"), &started).expect("write the acknowledged starts");
        std::fs::rename(dir.join("started.tmp"), dir.join("started")).expect("publish them");
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_every_started_instance_completes_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child");
    // Kill it while it works: once some starts are acknowledged and
    // before all of them are.
    let started_file = dir.path().join("started");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let started = std::fs::read_to_string(&started_file).unwrap_or_default();
        if started.lines().count() >= CRASH_INSTANCES / 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started enough"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let started: Vec<String> = std::fs::read_to_string(&started_file)
        .expect("starts")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!started.is_empty());

    let (provider, engine) = open(&dir.path().join("hub")).await;
    let rt = Runtime::start_with_options(
        provider.clone(),
        activities(),
        orchestrations(),
        crash_options(),
    )
    .await;
    let client = Client::new(provider.clone());
    for id in &started {
        let n: usize = id.trim_start_matches("quick-").parse().expect("number");
        match client
            .wait_for_orchestration(id, Duration::from_secs(60))
            .await
            .expect("wait")
        {
            OrchestrationStatus::Completed { output, .. } => {
                assert_eq!(output, format!("reserved:{n}|charged:{n}"), "{id}");
            }
            other => panic!("{id} after recovery: {other:?}"),
        }
        let history = provider.read(id).await.expect("history");
        let completions = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::OrchestrationCompleted { .. }))
            .count();
        assert_eq!(completions, 1, "{id} completed {completions} times");
    }
    rt.shutdown(None).await;
    engine.shutdown().await;
}
