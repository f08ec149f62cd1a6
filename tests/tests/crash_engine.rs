//! Kill -9 crash test of the engine (I1-I4) with the `hello5` workload.
//!
//! A child process runs the engine and the SDK worker on a local hub,
//! starts instances and prints each start once it is acknowledged. The
//! test kills it with SIGKILL at random instants several times, restarting
//! it on the same directory; a last run finishes everything and exits. In
//! the end: every acknowledged start exists and completed with the right
//! output, and no activity result was applied twice (every scheduled task
//! has exactly one completion in the history). The seed is printed; set
//! `BASALT_CRASH_SEED` to replay.

use std::path::Path;
use std::time::Duration;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::{Backend, EventKind, InstanceId, OrchestrationStatus};
use basalt_storage::Storage;
use basalt_tests::hello5;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs the hello5 child (see `basalt_tests::run_child`).
fn run_child(
    dir: &Path,
    run: u64,
    mode: &str,
    kill_after: Option<Duration>,
    memory: Option<&str>,
) -> Vec<String> {
    let mut args = vec![dir.display().to_string(), run.to_string(), mode.to_owned()];
    args.extend(memory.map(str::to_owned));
    basalt_tests::run_child(env!("CARGO_BIN_EXE_crash_hello5"), &args, kill_after)
}

fn crash_hello5(kills: u64, per_run: u64, memory: Option<&str>) {
    let seed = basalt_tests::crash_seed();
    eprintln!("engine crash test: {kills} kills, {per_run} starts per run, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let (acknowledged, run) = basalt_tests::kill_cycles(kills, per_run, |run| {
        let after = Duration::from_millis(rng.random_range(5..250u64));
        run_child(dir.path(), run, &per_run.to_string(), Some(after), memory)
    });
    let lines = run_child(dir.path(), run + 1, "finish", None, memory);
    assert!(
        lines.iter().any(|l| l == "finished"),
        "seed {seed}: the last run did not finish: {lines:?}"
    );
    assert!(
        acknowledged.len() as u64 >= per_run,
        "seed {seed}: too few starts were acknowledged ({}) for the test to mean much",
        acknowledged.len()
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let engine = Engine::open(
            Storage::local(dir.path()).expect("storage"),
            EngineOptions {
                partition_count: 4,
                ..EngineOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        for id in &acknowledged {
            let instance = InstanceId::new(id.clone()).expect("id");
            let state = engine
                .get_instance(&instance)
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("seed {seed}: acknowledged start {id} is lost"));
            assert_eq!(
                state.status,
                OrchestrationStatus::Completed,
                "seed {seed}: {id} did not complete: {state:?}"
            );
            let output: Vec<String> =
                serde_json::from_str(state.output.as_deref().unwrap_or("null"))
                    .unwrap_or_else(|e| panic!("seed {seed}: {id} output: {e}"));
            assert_eq!(output, hello5::expected_output(id), "seed {seed}: {id}");
            let history = engine.get_history(&instance).await.expect("history");
            let mut scheduled = Vec::new();
            let mut completed = Vec::new();
            for event in &history {
                match &event.kind {
                    EventKind::TaskScheduled { .. } => scheduled.push(event.event_id),
                    EventKind::TaskCompleted {
                        task_scheduled_id, ..
                    } => completed.push(*task_scheduled_id),
                    _ => {}
                }
            }
            assert_eq!(scheduled, vec![0, 1, 2, 3, 4], "seed {seed}: {id}");
            assert_eq!(
                completed, scheduled,
                "seed {seed}: {id}: every activity result applied exactly once"
            );
        }
        engine.shutdown().await;
    });
    eprintln!(
        "engine crash test: {} acknowledged instances checked",
        acknowledged.len()
    );
}

#[test]
fn kill9_hello5_every_acknowledged_instance_completes_once() {
    crash_hello5(10, 200, None);
}

#[test]
#[ignore = "long variant: cargo test -p basalt-tests -- --ignored"]
fn kill9_hello5_long_variant() {
    crash_hello5(40, 100, None);
}

/// The same with no memory for records and a checkpoint every few events,
/// so kills land during checkpoints (see `crash_checkout.rs`).
#[test]
fn kill9_hello5_during_checkpoints_with_no_memory_for_records() {
    crash_hello5(10, 200, Some("tiny"));
}
