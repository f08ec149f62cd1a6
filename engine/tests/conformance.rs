//! The runtime's `Backend` conformance suite against the real engine, every
//! scenario as its own test on two storages: in memory, and a local
//! directory with fsync on every write (`Storage::local`).

use std::sync::Arc;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::Backend;
use basalt_runtime::conformance::{self, ConformanceTarget, Failure};
use basalt_storage::Storage;

fn options() -> EngineOptions {
    EngineOptions {
        partition_count: 4,
        ..EngineOptions::default()
    }
}

/// An engine over `storage`, with its shutdown.
async fn target(storage: Storage) -> ConformanceTarget {
    let engine = Engine::open(storage, options())
        .await
        .expect("the engine opens");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    ConformanceTarget::with_shutdown(backend, move || async move { engine.shutdown().await })
}

fn check(result: Result<(), Failure>) {
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Runs a scenario that takes a backend, then shuts the engine down.
async fn run_on<F, Fut>(target: ConformanceTarget, scenario: F)
where
    F: FnOnce(Arc<dyn Backend>) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let result = scenario(target.backend.clone()).await;
    target.shutdown().await;
    check(result);
}

/// One test per scenario and storage: `in_memory::<scenario>` and
/// `local_fsync::<scenario>`.
macro_rules! conformance_tests {
    (backend: [$($scenario:ident),* $(,)?], target: [$($whole:ident),* $(,)?] $(,)?) => {
        mod in_memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    run_on(target(Storage::in_memory()).await, conformance::$scenario).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $whole() {
                    check(conformance::$whole(target(Storage::in_memory()).await).await);
                }
            )*
        }

        mod local_fsync {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let dir = tempfile::tempdir().expect("a temporary directory");
                    let storage = Storage::local(dir.path()).expect("local storage");
                    run_on(target(storage).await, conformance::$scenario).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $whole() {
                    let dir = tempfile::tempdir().expect("a temporary directory");
                    let storage = Storage::local(dir.path()).expect("local storage");
                    check(conformance::$whole(target(storage).await).await);
                }
            )*
        }

        /// The list above and the suite's own list must not drift apart.
        #[test]
        fn every_scenario_of_the_suite_has_a_test() {
            let mut tested = vec![$(stringify!($scenario),)* $(stringify!($whole),)*];
            let mut suite: Vec<&str> = conformance::scenarios().iter().map(|s| s.name).collect();
            tested.sort_unstable();
            suite.sort_unstable();
            assert_eq!(tested, suite);
        }
    };
}

conformance_tests!(
    backend: [
        activities_run_in_sequence,
        fan_out_fan_in_of_1000_activities_sums_every_result,
        durable_timers_delay_the_orchestration,
        external_events_are_delivered_before_and_after_the_wait,
        sub_orchestrations_return_outputs_and_failures_to_the_parent,
        continue_as_new_restarts_with_a_short_history,
        terminate_ends_a_waiting_instance_with_the_reason,
        suspended_instances_process_no_events_until_resumed,
        purge_deletes_only_finished_instances,
        queries_filter_by_status_prefix_and_time_and_page,
        activity_retries_follow_the_retry_policy,
        activity_failures_and_panics_surface_with_their_message,
        rewind_runs_a_failed_instance_again_from_its_failure,
        unknown_activity_fails_with_activity_not_found,
        unknown_orchestration_fails_with_orchestration_not_found,
        non_determinism_fails_the_instance,
        custom_status_is_visible_to_clients,
        explicit_id_conflicts_while_running_and_replaces_when_finished,
        wait_for_start_returns_once_a_worker_ran_the_instance,
        scheduled_start_waits_until_its_time,
        send_event_delivers_between_instances,
        many_instances_with_random_ids_all_complete,
        mixed_orchestration_runs_end_to_end_on_one_cached_executor,
        replay_without_executor_cache_gives_the_same_result,
        worker_shutdown_waits_for_in_flight_activities,
        dropped_worker_handle_stops_taking_work,
    ],
    target: [backend_shutdown_stops_the_worker],
);

/// `run_all` runs the whole suite through a factory of fresh engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_every_scenario_on_in_memory_storage() {
    let report = conformance::run_all(|| async {
        let engine = Engine::open(Storage::in_memory(), options()).await?;
        let backend: Arc<dyn Backend> = Arc::new(engine.clone());
        Ok::<_, basalt_engine::OpenError>(ConformanceTarget::with_shutdown(
            backend,
            move || async move { engine.shutdown().await },
        ))
    })
    .await;
    match report {
        Ok(report) => assert_eq!(report.passed(), conformance::scenarios().len()),
        Err(failure) => panic!("{failure}"),
    }
}
