//! The runtime's `Backend` conformance suite against the real engine, every
//! scenario as its own test on two storages: in memory, and a local
//! directory with fsync on every write (`Storage::local`); and a third time
//! in memory with no memory for records, so nearly every event loads its
//! records from the state store and every checkpoint evicts them, and with
//! every queue between partitions holding one item, so partitions keep
//! traffic back for full mailboxes and retry it.

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

/// No memory for records: checkpoints after every batch of commands, and
/// every record that is not changing is evicted. Queues of one command and
/// one delivery.
fn tiny_limits() -> EngineOptions {
    EngineOptions {
        memory_budget_bytes: 0,
        checkpoint_interval_events: 1,
        command_queue_max: 1,
        mailbox_max: 1,
        ..options()
    }
}

/// An engine over `storage`, with its shutdown.
async fn target(storage: Storage) -> ConformanceTarget {
    target_with(storage, options()).await
}

/// An engine over `storage` with `options`, with its shutdown.
async fn target_with(storage: Storage, options: EngineOptions) -> ConformanceTarget {
    let engine = Engine::open(storage, options)
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

        mod tiny_limits {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let target = target_with(Storage::in_memory(), tiny_limits()).await;
                    run_on(target, conformance::$scenario).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $whole() {
                    let target = target_with(Storage::in_memory(), tiny_limits()).await;
                    check(conformance::$whole(target).await);
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

basalt_runtime::with_conformance_scenarios!(conformance_tests);

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
