//! Kill -9 crash test of critical sections with the `bank` workload: the
//! child is killed at random instants while transfers lock pairs of
//! accounts on different partitions. In the end the total balance is
//! conserved, no balance is negative, every acknowledged transfer
//! completed, every entity call got one answer, and no lock outlived its
//! owner: fresh transfers touching every account still complete.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use basalt_benches::bank;
use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::{Backend, OrchestrationStatus, StartRequest, Worker, WorkerOptions};
use basalt_storage::Storage;
use basalt_tests::bank_crash::{ACCOUNTS, INITIAL_BALANCE, PARTITIONS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn run_child(dir: &Path, run: u64, mode: &str, kill_after: Option<Duration>) -> Vec<String> {
    let args = [dir.display().to_string(), run.to_string(), mode.to_owned()];
    basalt_tests::run_child(env!("CARGO_BIN_EXE_crash_bank"), &args, kill_after)
}

fn crash_bank(kills: u64, per_run: u64) {
    let seed = basalt_tests::crash_seed();
    eprintln!("bank crash test: {kills} kills, {per_run} transfers per run, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    run_child(dir.path(), 0, "open", None);
    let (acknowledged, run) = basalt_tests::kill_cycles(kills, 0, |run| {
        let after = Duration::from_millis(rng.random_range(5..250u64));
        run_child(dir.path(), run, &per_run.to_string(), Some(after))
    });
    let lines = run_child(dir.path(), run + 1, "finish", None);
    assert!(
        lines.iter().any(|l| l == "finished"),
        "seed {seed}: {lines:?}"
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let engine = Engine::open(
            Storage::local(dir.path()).expect("storage"),
            EngineOptions {
                partition_count: PARTITIONS,
                ..EngineOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        let backend: Arc<dyn Backend> = Arc::new(engine.clone());
        let all = basalt_tests::all_instances(&engine, false).await;
        let ids: BTreeSet<String> = all.iter().map(|s| s.instance_id.to_string()).collect();
        for id in &acknowledged {
            assert!(
                ids.contains(id),
                "seed {seed}: acknowledged transfer {id} is lost"
            );
        }
        for state in &all {
            assert_eq!(
                state.status,
                OrchestrationStatus::Completed,
                "seed {seed}: {} did not complete: {state:?}",
                state.instance_id
            );
            let history = engine
                .get_history(&state.instance_id)
                .await
                .expect("history");
            let (called, answered) = basalt_tests::entity_calls_and_answers(&history);
            assert_eq!(
                called, answered,
                "seed {seed}: {}: one answer per call",
                state.instance_id
            );
        }
        let mut total = 0;
        for i in 0..ACCOUNTS {
            let id = bank::account_entity(&bank::account(i, PARTITIONS)).expect("id");
            let balance: i64 = engine
                .get_entity(&id)
                .await
                .expect("get")
                .and_then(|s| s.state)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("seed {seed}: account {i} has no balance"));
            assert!(balance >= 0, "seed {seed}: account {i} went negative");
            total += balance;
        }
        assert_eq!(
            total,
            INITIAL_BALANCE * ACCOUNTS as i64,
            "seed {seed}: the total balance changed"
        );
        // No lock outlived its owner: transfers touching every account finish.
        let worker = Worker::start(
            backend.clone(),
            Arc::new(bank::registry().expect("registry")),
            WorkerOptions::default(),
        );
        for i in 0..ACCOUNTS {
            let transfer = bank::Transfer {
                from: bank::account(i, PARTITIONS),
                to: bank::account(i + 1, PARTITIONS),
                amount: 0,
            };
            let id = backend
                .start_instance(StartRequest {
                    name: bank::TRANSFER.into(),
                    instance_id: Some(format!("after-{i}")),
                    input: Some(serde_json::to_string(&transfer).expect("json")),
                    ..StartRequest::default()
                })
                .await
                .expect("start");
            let done = backend
                .wait_for_completion(&id, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: account {i} stayed locked: {e}"));
            assert_eq!(done.status, OrchestrationStatus::Completed);
        }
        worker.shutdown().await;
        engine.shutdown().await;
        eprintln!(
            "bank crash test: {} transfers checked ({} acknowledged)",
            all.len(),
            acknowledged.len()
        );
    });
}

#[test]
fn kill9_bank_conserves_the_total_and_leaves_no_lock_behind() {
    crash_bank(8, 120);
}

#[test]
#[ignore = "long variant: cargo test -p basalt-tests -- --ignored"]
fn kill9_bank_long_variant() {
    crash_bank(40, 120);
}
