//! Critical sections under contention: hundreds of transfers over a few
//! accounts, so lock sets overlap in every order. Every transfer must
//! finish (no deadlock: locks are taken in one global order) and the total
//! balance must be conserved; `basalt_benches::workloads::bank` checks the
//! balance and fails its check on any difference.

use std::time::Duration;

use basalt_benches::store::BenchStore;
use basalt_benches::workloads::{self, WorkloadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_critical_sections_all_finish_and_conserve_the_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = BenchStore::parse(None, dir.path(), true).expect("local store");
    for store in [BenchStore::Memory, local] {
        let config = WorkloadConfig {
            store: store.clone(),
            partitions: 4,
            ..WorkloadConfig::default()
        };
        let run = workloads::bank(&config, 300, 8, 100, &|_| {});
        let outcome = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("{store:?}: transfers did not finish (deadlock?)"))
            .unwrap_or_else(|e| panic!("{store:?}: {e}"));
        assert_eq!(outcome.run.completed, 300);
        assert!(outcome.check.passed, "{store:?}: {}", outcome.check.detail);
        assert!(
            outcome.run.extra["moved"].as_u64() > Some(0),
            "{store:?}: some transfers must move money"
        );
    }
}
