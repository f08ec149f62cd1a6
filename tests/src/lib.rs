//! `basalt-tests`: tests that cross crate or process boundaries.
//!
//! The library holds what both a test and its child processes need; the
//! binaries in `src/bin` are the children that tests kill with SIGKILL.

pub mod bank_crash;
pub mod checkout_crash;
pub mod crash_log;
pub mod hello5;

/// Runs killed children, `run_killed(run)` for runs 1, 2, ..., until
/// `kills` runs are done and at least `wanted` starts were acknowledged
/// (lines `started ID`), at most twice `kills` runs: on a slow or busy
/// machine a child killed early acknowledges little, and the test would
/// then check little. Returns the acknowledged ids and the last run's
/// number.
pub fn kill_cycles(
    kills: u64,
    wanted: u64,
    mut run_killed: impl FnMut(u64) -> Vec<String>,
) -> (std::collections::BTreeSet<String>, u64) {
    let mut acknowledged = std::collections::BTreeSet::new();
    let mut run = 0;
    while run < kills || ((acknowledged.len() as u64) < wanted && run < 2 * kills) {
        run += 1;
        for line in run_killed(run) {
            if let Some(id) = line.strip_prefix("started ") {
                acknowledged.insert(id.to_owned());
            }
        }
    }
    (acknowledged, run)
}

/// The seed of a randomized crash test: `BASALT_CRASH_SEED` when set (to
/// replay a failure), else the clock. Tests print it.
pub fn crash_seed() -> u64 {
    std::env::var("BASALT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}

/// Runs a child process with `args` and returns its stdout lines. With
/// `kill_after`, kills it with SIGKILL that long after it printed `ready`;
/// without, waits for it and fails the test unless it exits successfully.
pub fn run_child(
    program: &str,
    args: &[String],
    kill_after: Option<std::time::Duration>,
) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    match kill_after {
        Some(after) => {
            let _ = ready_rx.recv_timeout(std::time::Duration::from_secs(60));
            std::thread::sleep(after);
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
        }
        None => {
            // A child that never finishes (e.g. work stuck behind a lost
            // lock) fails the test instead of hanging it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{program} {args:?} did not finish within 120 s");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            assert!(status.success(), "{program} {args:?} failed: {status}");
        }
    }
    reader.join().expect("reader")
}

/// The engine options of a crash child. `memory` is the child's optional
/// last argument: `tiny` leaves no memory for records and checkpoints
/// after every few events, so kills land during checkpoints and nearly
/// every event loads its records from the state store.
pub fn child_engine_options(
    partition_count: u32,
    memory: Option<&str>,
) -> Result<basalt_engine::EngineOptions, String> {
    let base = basalt_engine::EngineOptions {
        partition_count,
        checkpoint_interval_events: 500,
        ..basalt_engine::EngineOptions::default()
    };
    match memory {
        None => Ok(base),
        Some("tiny") => Ok(basalt_engine::EngineOptions {
            memory_budget_bytes: 0,
            checkpoint_interval_events: 5,
            // Flush the stores every few checkpoints, so kills land between
            // flushes, during them, and with checkpoints only in a store's
            // memory (records evicted and read back from there).
            store_flush_bytes_max: Some(16 << 10),
            ..base
        }),
        Some(other) => Err(format!("unknown memory setting {other:?} (use tiny)")),
    }
}

/// The `main` of a child process: runs `run` on a 2-thread tokio runtime
/// and exits with status 1 and the error on stderr if it fails.
pub fn child_main<F>(name: &str, run: F)
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(run));
    if let Err(e) = outcome {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// Waits until no instance of the hub is pending or running.
pub async fn wait_until_all_finished(backend: &dyn basalt_runtime::Backend) -> Result<(), String> {
    use basalt_runtime::{InstanceQuery, OrchestrationStatus};
    loop {
        let open = InstanceQuery {
            statuses: vec![OrchestrationStatus::Pending, OrchestrationStatus::Running],
            page_size: 1000,
            ..InstanceQuery::default()
        };
        let page = backend
            .query_instances(&open)
            .await
            .map_err(|e| e.to_string())?;
        if page.instances.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every instance of the hub, following query pages.
pub async fn all_instances(
    backend: &dyn basalt_runtime::Backend,
    with_outputs: bool,
) -> Vec<basalt_runtime::InstanceState> {
    use basalt_runtime::InstanceQuery;
    let mut query = InstanceQuery {
        page_size: 1000,
        fetch_inputs_and_outputs: with_outputs,
        ..InstanceQuery::default()
    };
    let mut all = Vec::new();
    loop {
        let page = backend.query_instances(&query).await.expect("query");
        all.extend(page.instances);
        match page.continuation {
            Some(next) => query.continuation = Some(next),
            None => return all,
        }
    }
}

/// The action ids of an instance's entity calls, and the request ids of the
/// answers it received (sorted): equal when every call got exactly one.
pub fn entity_calls_and_answers(history: &[basalt_runtime::HistoryEvent]) -> (Vec<i32>, Vec<i32>) {
    use basalt_runtime::EventKind;
    let mut called = Vec::new();
    let mut answered = Vec::new();
    for event in history {
        match &event.kind {
            EventKind::EntityOperationCalled { .. } => called.push(event.event_id),
            EventKind::EntityOperationCompleted { request_id, .. }
            | EventKind::EntityOperationFailed { request_id, .. } => answered.push(*request_id),
            _ => {}
        }
    }
    answered.sort_unstable();
    (called, answered)
}

/// Starts `inputs.len()` instances of `name` with ids `{prefix}-{i}`, one
/// per millisecond (so a kill usually lands while starts are in flight),
/// prints `started <id>` once each start is acknowledged, then keeps the
/// process working until it is killed.
pub async fn start_paced_until_killed(
    backend: std::sync::Arc<dyn basalt_runtime::Backend>,
    name: &str,
    prefix: &str,
    inputs: Vec<String>,
) {
    let mut starts = Vec::new();
    for (i, input) in inputs.into_iter().enumerate() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let backend = backend.clone();
        let request = basalt_runtime::StartRequest {
            name: name.to_owned(),
            instance_id: Some(format!("{prefix}-{i}")),
            input: Some(input),
            ..basalt_runtime::StartRequest::default()
        };
        starts.push(tokio::spawn(async move {
            let id = request.instance_id.clone().unwrap_or_default();
            if backend.start_instance(request).await.is_ok() {
                println!("started {id}");
            }
        }));
    }
    for start in starts {
        let _ = start.await;
    }
    std::future::pending::<()>().await;
}
