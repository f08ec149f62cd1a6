//! Critical sections under contention: hundreds of transfers over a few
//! accounts, so lock sets overlap in every order. Every transfer must
//! finish (no deadlock: locks are taken in one global order) and the total
//! balance must be conserved; `basalt_benches::workloads::bank` checks the
//! balance and fails on any difference.

use std::time::Duration;

use basalt_benches::workloads::{self, HubStore, WorkloadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_critical_sections_all_finish_and_conserve_the_total() {
    for store in [HubStore::Memory, HubStore::Local] {
        let config = WorkloadConfig {
            store,
            partitions: 4,
            ..WorkloadConfig::default()
        };
        let run = workloads::bank(&config, 300, 8, 100, &|_| {});
        let (outcome, check) = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("{store:?}: transfers did not finish (deadlock?)"))
            .unwrap_or_else(|e| panic!("{store:?}: {e}"));
        assert_eq!(outcome.orchestrations, 300);
        assert_eq!(check.total_before, check.total_after);
        assert!(check.moved > 0, "{store:?}: some transfers must move money");
    }
}
