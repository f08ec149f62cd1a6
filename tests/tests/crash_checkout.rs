//! Kill -9 crash test of entities (I1-I4) with the `checkout` workload.
//!
//! The child stocks a small pool of products (a run that is not killed),
//! then is killed at random instants while it starts paced checkouts that
//! reserve stock on `Stock` entities; a last run finishes everything. In
//! the end, over every checkout in the hub (acknowledged or not):
//! initial - final stock = the units the receipts reserved, per product
//! (an entity operation applied twice or lost breaks it), no stock is
//! negative, every acknowledged checkout completed, and every entity call
//! got exactly one answer. The seed is printed; `BASALT_CRASH_SEED` replays.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use basalt_benches::checkout::{self, Receipt};
use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::{Backend, InstanceId, OrchestrationStatus};
use basalt_storage::Storage;
use basalt_tests::checkout_crash::{INITIAL_STOCK, POOL};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn run_child(
    dir: &Path,
    run: u64,
    mode: &str,
    kill_after: Option<Duration>,
    memory: Option<&str>,
) -> Vec<String> {
    let mut args = vec![dir.display().to_string(), run.to_string(), mode.to_owned()];
    args.extend(memory.map(str::to_owned));
    basalt_tests::run_child(env!("CARGO_BIN_EXE_crash_checkout"), &args, kill_after)
}

fn crash_checkout(kills: u64, per_run: u64, memory: Option<&str>) {
    let seed = basalt_tests::crash_seed();
    eprintln!("checkout crash test: {kills} kills, {per_run} checkouts per run, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    run_child(dir.path(), 0, "stock", None, memory);
    let (acknowledged, run) = basalt_tests::kill_cycles(kills, per_run, |run| {
        let after = Duration::from_millis(rng.random_range(5..250u64));
        run_child(dir.path(), run, &per_run.to_string(), Some(after), memory)
    });
    let lines = run_child(dir.path(), run + 1, "finish", None, memory);
    assert!(
        lines.iter().any(|l| l == "finished"),
        "seed {seed}: {lines:?}"
    );
    assert!(
        acknowledged.len() as u64 >= per_run,
        "seed {seed}: too few acknowledged checkouts ({})",
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
        let all = basalt_tests::all_instances(&engine, true).await;
        let ids: BTreeSet<String> = all.iter().map(|s| s.instance_id.to_string()).collect();
        for id in &acknowledged {
            assert!(ids.contains(id), "seed {seed}: acknowledged checkout {id} is lost");
        }
        let mut reserved: BTreeMap<String, i64> = BTreeMap::new();
        let mut refused = 0;
        for state in &all {
            let id = &state.instance_id;
            assert_eq!(
                state.status,
                OrchestrationStatus::Completed,
                "seed {seed}: {id} did not complete: {state:?}"
            );
            let receipt: Receipt =
                serde_json::from_str(state.output.as_deref().unwrap_or("null"))
                    .unwrap_or_else(|e| panic!("seed {seed}: {id} receipt: {e}"));
            refused += receipt.refused.len();
            for item in receipt.reserved {
                *reserved.entry(item.product).or_default() += item.quantity;
            }
            // Every entity call was answered exactly once.
            let history = engine
                .get_history(&InstanceId::new(id.to_string()).expect("id"))
                .await
                .expect("history");
            let (called, answered) = basalt_tests::entity_calls_and_answers(&history);
            assert_eq!(called.len(), 2, "seed {seed}: {id}");
            assert_eq!(called, answered, "seed {seed}: {id}: one answer per call");
        }
        for p in 0..POOL {
            let product = checkout::product(p);
            let left: i64 = engine
                .get_entity(&checkout::stock_entity(&product).expect("id"))
                .await
                .expect("get")
                .and_then(|s| s.state)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("seed {seed}: {product} has no stock"));
            assert!(left >= 0, "seed {seed}: {product} went negative: {left}");
            let taken = INITIAL_STOCK - left;
            assert_eq!(
                taken,
                reserved.get(&product).copied().unwrap_or(0),
                "seed {seed}: {product}: stock and receipts disagree (an operation applied twice or lost)"
            );
        }
        eprintln!(
            "checkout crash test: {} checkouts checked ({} acknowledged), {refused} lines refused",
            all.len(),
            acknowledged.len()
        );
        engine.shutdown().await;
    });
}

#[test]
fn kill9_checkout_stock_and_receipts_agree_and_every_call_is_answered_once() {
    crash_checkout(8, 150, None);
}

#[test]
#[ignore = "long variant: cargo test -p basalt-tests -- --ignored"]
fn kill9_checkout_long_variant() {
    crash_checkout(40, 150, None);
}

/// The same with no memory for records and a checkpoint every few events:
/// most kills land while a checkpoint is being written, and nearly every
/// event reads its records from the state store. Nothing acknowledged is
/// lost, and the store and the log agree after recovery (the stock
/// invariant and one answer per call hold).
#[test]
fn kill9_checkout_during_checkpoints_with_no_memory_for_records() {
    crash_checkout(8, 150, Some("tiny"));
}
