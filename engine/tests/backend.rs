//! The engine driven through the `Backend` trait by a hand-played worker:
//! the smallest end-to-end path (start, step, activity, step, complete),
//! restart in the middle, stale tokens and bad input.

use std::sync::Arc;
use std::time::Duration;

use basalt_engine::{Engine, EngineOptions, replay_partition};
use basalt_runtime::{
    ActionKind, ActivityOutcome, Backend, ErrorKind, EventKind, InstanceId, OrchestrationStatus,
    OrchestrationStepResult, OrchestratorAction, StartRequest,
};
use basalt_storage::Storage;
use object_store::memory::InMemory;

fn options() -> EngineOptions {
    EngineOptions {
        partition_count: 4,
        ..EngineOptions::default()
    }
}

fn schedule(id: i32, name: &str, input: &str) -> OrchestrationStepResult {
    OrchestrationStepResult {
        actions: vec![OrchestratorAction {
            id,
            kind: ActionKind::ScheduleTask {
                name: name.into(),
                version: None,
                input: Some(input.into()),
            },
            correlation: None,
        }],
        custom_status: None,
    }
}

fn complete(output: &str) -> OrchestrationStepResult {
    OrchestrationStepResult {
        actions: vec![OrchestratorAction {
            id: 1,
            kind: ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::Completed,
                result: Some(output.into()),
                failure: None,
                new_version: None,
                carryover_events: Vec::new(),
            },
            correlation: None,
        }],
        custom_status: Some("\"done\"".into()),
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn one_activity_orchestration_end_to_end_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("open");
    let id = engine
        .start_instance(StartRequest {
            name: "hello".into(),
            instance_id: Some("order-1".into()),
            input: Some("\"world\"".into()),
            ..StartRequest::default()
        })
        .await
        .expect("start");
    assert_eq!(id.as_str(), "order-1");
    let err = engine
        .start_instance(StartRequest {
            name: "hello".into(),
            instance_id: Some("order-1".into()),
            ..StartRequest::default()
        })
        .await
        .expect_err("already running");
    assert_eq!(err.kind(), ErrorKind::Conflict);

    let step = engine.next_orchestration_work_item().await.expect("step 1");
    assert!(step.past_events.is_empty());
    assert!(matches!(
        step.new_events[0].kind,
        EventKind::OrchestratorStarted
    ));
    assert!(matches!(
        step.new_events[1].kind,
        EventKind::ExecutionStarted { .. }
    ));
    engine
        .complete_orchestration_work_item(&step.token, schedule(0, "greet", "\"world\""))
        .await
        .expect("complete step 1");
    let stale = engine
        .complete_orchestration_work_item(&step.token, schedule(0, "greet", "\"world\""))
        .await
        .expect_err("a token is good once");
    assert_eq!(stale.kind(), ErrorKind::Conflict);

    let activity = engine.next_activity_work_item().await.expect("activity");
    assert_eq!(activity.name, "greet");
    assert_eq!(activity.input.as_deref(), Some("\"world\""));
    let running = engine
        .get_instance(&id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(running.status, OrchestrationStatus::Running);

    // Restart before the activity reports: the work is handed out again.
    engine.shutdown().await;
    drop(engine);
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("reopen");
    let old = engine
        .complete_activity_work_item(&activity.token, ActivityOutcome::Completed(None))
        .await
        .expect_err("a token from before the restart is stale");
    assert_eq!(old.kind(), ErrorKind::Conflict);
    let activity = engine
        .next_activity_work_item()
        .await
        .expect("activity again");
    engine
        .complete_activity_work_item(
            &activity.token,
            ActivityOutcome::Completed(Some("\"hello world\"".into())),
        )
        .await
        .expect("activity done");
    // A duplicate completion is not applied twice (I4): it is refused as
    // stale, since the activity is no longer outstanding.
    let duplicate = engine
        .complete_activity_work_item(
            &activity.token,
            ActivityOutcome::Completed(Some("\"twice\"".into())),
        )
        .await
        .expect_err("a duplicate is refused");
    assert_eq!(duplicate.kind(), ErrorKind::Conflict);

    let step = engine.next_orchestration_work_item().await.expect("step 2");
    let completed: Vec<_> = step
        .new_events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TaskCompleted { .. }))
        .collect();
    assert_eq!(completed.len(), 1, "{:?}", step.new_events);
    engine
        .complete_orchestration_work_item(&step.token, complete("\"hello world\""))
        .await
        .expect("complete step 2");
    let done = engine.wait_for_completion(&id, WAIT).await.expect("done");
    assert_eq!(done.status, OrchestrationStatus::Completed);
    assert_eq!(done.output.as_deref(), Some("\"hello world\""));
    assert_eq!(done.custom_status.as_deref(), Some("\"done\""));

    let history = engine.get_history(&id).await.expect("history");
    let scheduled = history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TaskScheduled { .. }))
        .count();
    assert_eq!(scheduled, 1);
    assert!(matches!(
        history.last().map(|e| &e.kind),
        Some(EventKind::ExecutionCompleted { .. })
    ));
    engine.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let too_long = "x".repeat(300);
    let err = engine
        .start_instance(StartRequest {
            name: "n".into(),
            instance_id: Some(too_long),
            ..StartRequest::default()
        })
        .await
        .expect_err("id too long");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = engine
        .start_instance(StartRequest {
            name: "n".into(),
            instance_id: Some(String::new()),
            ..StartRequest::default()
        })
        .await
        .expect_err("empty id");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let small = Engine::open(
        Storage::in_memory(),
        EngineOptions {
            payload_bytes_max: 10,
            ..options()
        },
    )
    .await
    .expect("open");
    let err = small
        .start_instance(StartRequest {
            name: "n".into(),
            input: Some("\"this is more than ten bytes\"".into()),
            ..StartRequest::default()
        })
        .await
        .expect_err("payload too large");
    assert!(err.to_string().contains("limit is 10 bytes"), "{err}");
    let missing = InstanceId::new("nobody").expect("id");
    let err = engine
        .raise_event(&missing, "e", None)
        .await
        .expect_err("no such instance");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(engine.get_instance(&missing).await.expect("get"), None);
    let err = engine
        .wait_for_completion(&missing, Duration::from_millis(50))
        .await
        .expect_err("not found");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    engine.shutdown().await;
    small.shutdown().await;
}

#[tokio::test]
async fn i2_recovered_state_equals_live_state_byte_for_byte() {
    let memory = Arc::new(InMemory::new());
    let engine = Engine::open(
        Storage::object_store(memory.clone(), "memory"),
        EngineOptions {
            checkpoint_interval_events: 7,
            ..options()
        },
    )
    .await
    .expect("open");
    for i in 0..20 {
        engine
            .start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(format!("i{i}")),
                ..StartRequest::default()
            })
            .await
            .expect("start");
    }
    for _ in 0..20 {
        let step = engine.next_orchestration_work_item().await.expect("step");
        engine
            .complete_orchestration_work_item(&step.token, schedule(0, "a", "1"))
            .await
            .expect("complete");
    }
    for _ in 0..10 {
        let activity = engine.next_activity_work_item().await.expect("activity");
        engine
            .complete_activity_work_item(&activity.token, ActivityOutcome::Completed(None))
            .await
            .expect("complete");
    }
    for partition in 0..4 {
        let (live_lsn, live) = engine
            .partition_snapshot(partition)
            .await
            .expect("live snapshot");
        let (replayed_lsn, replayed) = replay_partition(
            &Storage::object_store(memory.clone(), "memory"),
            partition,
            4,
        )
        .await
        .expect("replay");
        assert_eq!(replayed_lsn, live_lsn, "partition {partition}");
        assert!(
            replayed == live,
            "partition {partition}: state differs after replay"
        );
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_timer_fires_after_a_restart() {
    use basalt_runtime::sdk::{OrchestrationError, Registry};
    use basalt_runtime::{Worker, WorkerOptions};

    let registry = Arc::new(
        Registry::builder()
            .register_orchestration_typed::<u64, u64, _, _>("nap", |ctx, ms: u64| async move {
                let due = ctx.current_time() + ms;
                ctx.create_timer(due).await;
                Ok::<_, OrchestrationError>(ctx.current_time())
            })
            .build()
            .expect("registry"),
    );
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("open");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(backend.clone(), registry.clone(), WorkerOptions::default());
    let id = backend
        .start_instance(StartRequest {
            name: "nap".into(),
            instance_id: Some("sleeper".into()),
            input: Some("400".into()),
            ..StartRequest::default()
        })
        .await
        .expect("start");
    // Wait until the timer is armed (the first step is done), then stop
    // everything before it fires.
    for _ in 0..200 {
        let history = backend.get_history(&id).await.expect("history");
        if history
            .iter()
            .any(|e| matches!(e.kind, EventKind::TimerCreated { .. }))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown().await;
    engine.shutdown().await;
    drop(backend);
    drop(engine);

    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("reopen");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(backend.clone(), registry, WorkerOptions::default());
    let done = backend
        .wait_for_completion(&id, WAIT)
        .await
        .expect("completes");
    assert_eq!(done.status, OrchestrationStatus::Completed);
    let history = backend.get_history(&id).await.expect("history");
    let fired = history
        .iter()
        .find_map(|e| match e.kind {
            EventKind::TimerFired { fire_at_ms, .. } => Some((e.timestamp_ms, fire_at_ms)),
            _ => None,
        })
        .expect("the timer fired");
    assert!(
        fired.0 >= fired.1,
        "fired at {} before due {}",
        fired.0,
        fired.1
    );
    worker.shutdown().await;
    engine.shutdown().await;
}

#[tokio::test]
async fn checkpoints_are_taken_by_bytes_logged_as_well_as_by_events() {
    let memory = Arc::new(InMemory::new());
    let engine = Engine::open(
        Storage::object_store(memory.clone(), "memory"),
        EngineOptions {
            partition_count: 1,
            checkpoint_interval_events: u64::MAX,
            checkpoint_interval_bytes: 2_000,
            checkpoint_idle_ms: 3_600_000,
            ..options()
        },
    )
    .await
    .expect("open");
    let big = format!("\"{}\"", "x".repeat(500));
    for i in 0..10 {
        engine
            .start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(format!("b{i}")),
                input: Some(big.clone()),
                ..StartRequest::default()
            })
            .await
            .expect("start");
    }
    // The checkpoint is written by its own task: wait for it (a generous
    // deadline, not a speed check).
    // (Checkpoints go to the store's memory; the log counts flushes to
    // its tables, which come later: count the checkpoints themselves.)
    let mut checkpoints = 0;
    for _ in 0..200 {
        checkpoints += engine.take_checkpoint_window().count;
        if checkpoints > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = memory;
    assert!(
        checkpoints > 0,
        "5 KB of events with a 2 KB threshold must have checkpointed"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn i4_a_step_token_of_an_earlier_run_of_the_same_id_is_stale() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let start = || StartRequest {
        name: "o".into(),
        instance_id: Some("again".into()),
        ..StartRequest::default()
    };
    let id = engine.start_instance(start()).await.expect("start");
    let old = engine.next_orchestration_work_item().await.expect("step");
    engine.terminate(&id, None).await.expect("terminate");
    engine.purge(&id).await.expect("purge");
    engine.start_instance(start()).await.expect("start again");
    let new = engine.next_orchestration_work_item().await.expect("step");
    let err = engine
        .complete_orchestration_work_item(&old.token, schedule(0, "a", "1"))
        .await
        .expect_err("the old run's step must not complete the new run");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    engine
        .complete_orchestration_work_item(&new.token, complete("\"ok\""))
        .await
        .expect("the new step completes");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_query_page_that_ends_exactly_at_the_limit_still_continues() {
    let engine = Engine::open(
        Storage::in_memory(),
        EngineOptions {
            partition_count: 2,
            ..options()
        },
    )
    .await
    .expect("open");
    // All on partition 0: it alone has more than a page.
    for i in 0..4 {
        engine
            .start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(format!("q{i}!0")),
                ..StartRequest::default()
            })
            .await
            .expect("start");
    }
    let first = engine
        .query_instances(&basalt_runtime::InstanceQuery {
            page_size: 3,
            ..basalt_runtime::InstanceQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(first.instances.len(), 3);
    let continuation = first.continuation.expect("a fourth instance remains");
    let second = engine
        .query_instances(&basalt_runtime::InstanceQuery {
            page_size: 3,
            continuation: Some(continuation),
            ..basalt_runtime::InstanceQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(second.instances.len(), 1);
    assert_eq!(second.continuation, None);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_oversized_step_result_fails_the_instance_and_nothing_else() {
    let engine = Engine::open(
        Storage::in_memory(),
        EngineOptions {
            payload_bytes_max: 100,
            ..options()
        },
    )
    .await
    .expect("open");
    let id = engine
        .start_instance(StartRequest {
            name: "o".into(),
            instance_id: Some("big".into()),
            ..StartRequest::default()
        })
        .await
        .expect("start");
    let step = engine.next_orchestration_work_item().await.expect("step");
    let mut result = schedule(0, "a", &"x".repeat(60));
    result.actions.push(OrchestratorAction {
        id: 1,
        kind: ActionKind::ScheduleTask {
            name: "a".into(),
            version: None,
            input: Some("y".repeat(60)),
        },
        correlation: None,
    });
    engine
        .complete_orchestration_work_item(&step.token, result)
        .await
        .expect("accepted as a failure");
    let state = engine.wait_for_completion(&id, WAIT).await.expect("done");
    assert_eq!(state.status, OrchestrationStatus::Failed);
    let failure = state.failure.expect("failure");
    assert_eq!(failure.error_type, "PayloadTooLarge");
    assert!(failure.message.contains("limit is 100 bytes"), "{failure}");
    // The partition goes on.
    engine
        .start_instance(StartRequest {
            name: "o".into(),
            instance_id: Some("small".into()),
            ..StartRequest::default()
        })
        .await
        .expect("the partition still works");
    engine.shutdown().await;
}

/// A step is cut when a worker takes it: answers that arrive while it
/// waits join it (one step for a fan-in), answers after the take wait for
/// the next step, and the history records exactly what each step held.
#[tokio::test]
async fn answers_arriving_before_a_step_is_taken_join_it() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let id = InstanceId::new("fan-in").expect("id");
    engine
        .start_instance(StartRequest {
            name: "o".into(),
            instance_id: Some(id.to_string()),
            ..StartRequest::default()
        })
        .await
        .expect("start");
    let first = engine.next_orchestration_work_item().await.expect("step 1");
    let fan_out = OrchestrationStepResult {
        actions: (0..3)
            .map(|i| {
                OrchestratorAction::new(
                    i,
                    ActionKind::ScheduleTask {
                        name: "part".into(),
                        version: None,
                        input: Some(i.to_string()),
                    },
                )
            })
            .collect(),
        custom_status: None,
    };
    engine
        .complete_orchestration_work_item(&first.token, fan_out)
        .await
        .expect("fan out");
    let mut activities = Vec::new();
    for _ in 0..3 {
        activities.push(engine.next_activity_work_item().await.expect("activity"));
    }
    // Two results arrive before any worker takes the next step...
    for activity in &activities[..2] {
        engine
            .complete_activity_work_item(&activity.token, ActivityOutcome::Completed(None))
            .await
            .expect("activity done");
    }
    let second = engine.next_orchestration_work_item().await.expect("step 2");
    let completed = |events: &[basalt_runtime::HistoryEvent]| {
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TaskCompleted { .. }))
            .count()
    };
    assert_eq!(completed(&second.new_events), 2, "both results in one step");
    assert!(matches!(
        second.new_events[0].kind,
        EventKind::OrchestratorStarted
    ));
    // ...the third arrives after the take: it waits for the next step.
    engine
        .complete_activity_work_item(&activities[2].token, ActivityOutcome::Completed(None))
        .await
        .expect("activity done");
    engine
        .complete_orchestration_work_item(
            &second.token,
            OrchestrationStepResult {
                actions: Vec::new(),
                custom_status: None,
            },
        )
        .await
        .expect("step 2 done");
    let third = engine.next_orchestration_work_item().await.expect("step 3");
    assert_eq!(completed(&third.new_events), 1);
    assert_eq!(
        completed(&third.past_events),
        2,
        "step 2's events are history"
    );
    engine
        .complete_orchestration_work_item(&third.token, complete("\"done\""))
        .await
        .expect("complete");
    // The history holds each step's OrchestratorStarted and every result once.
    let history = engine.get_history(&id).await.expect("history");
    assert_eq!(completed(&history), 3);
    assert_eq!(
        history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::OrchestratorStarted))
            .count(),
        3
    );
    engine.shutdown().await;
}

/// A hub of format version 1 (whole-snapshot checkpoint files, no state
/// store) as the previous build left it: `count` started instances, a
/// checkpoint after the first half, the rest only in the log.
async fn write_version_1_hub(dir: &std::path::Path, count: usize) {
    use basalt_engine::partitions::{Event, PartitionState, codec};
    use basalt_storage::{HubOptions, LogOptions, PartitionId, TaskHub};
    let storage = Storage::local(dir).expect("storage");
    let hub = TaskHub::open_or_create(
        storage.clone(),
        &HubOptions {
            name: "basalt".into(),
            partition_count: 1,
        },
    )
    .await
    .expect("hub");
    let (log, _) = hub
        .open_partition(PartitionId(0), LogOptions::default())
        .await
        .expect("log");
    let mut state = PartitionState::new(0, 1);
    for i in 0..count {
        let event = Event::Start {
            instance_id: InstanceId::new(format!("old-{i}")).expect("id"),
            name: "o".into(),
            version: None,
            input: Some(format!("{i}")),
            scheduled_start_ms: None,
            tags: Default::default(),
            now_ms: 1_000 + i as u64,
        };
        let bytes = codec::encode_event(&event).expect("encode");
        let lsn = log
            .append(&bytes)
            .await
            .expect("append")
            .durable()
            .await
            .expect("durable");
        let _ = state.apply(lsn.0, event);
        if i + 1 == count / 2 {
            let snapshot = codec::encode_snapshot(&state).expect("snapshot");
            log.checkpoint(lsn, &snapshot).await.expect("checkpoint");
        }
    }
    log.close().await.expect("close");
    // What the previous build wrote into taskhub.json.
    let meta = dir.join("taskhub.json");
    let json = std::fs::read_to_string(&meta).expect("read meta");
    std::fs::write(
        &meta,
        json.replace("\"format_version\": 2", "\"format_version\": 1"),
    )
    .expect("write meta");
}

#[tokio::test]
async fn a_version_1_hub_is_upgraded_in_place_and_keeps_every_instance() {
    let dir = tempfile::tempdir().expect("dir");
    write_version_1_hub(dir.path(), 10).await;
    let one_partition = EngineOptions {
        partition_count: 1,
        ..options()
    };
    let engine = Engine::open(
        Storage::local(dir.path()).expect("storage"),
        one_partition.clone(),
    )
    .await
    .expect("open");
    assert_eq!(engine.hub().meta().format_version, 2);
    for i in 0..10 {
        let id = InstanceId::new(format!("old-{i}")).expect("id");
        let state = engine.get_instance(&id).await.expect("get");
        assert_eq!(
            state.map(|s| s.input),
            Some(Some(format!("{i}"))),
            "old-{i} after the upgrade"
        );
    }
    engine.checkpoint().await.expect("checkpoint");
    let storage = engine.hub().storage().clone();
    let files = basalt_storage::list_checkpoints(&storage, basalt_storage::PartitionId(0))
        .await
        .expect("list");
    assert!(files.is_empty(), "the state store replaced {files:?}");
    engine.shutdown().await;
    drop(storage);
    drop(engine);

    // Reopened: everything comes from the state store now.
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), one_partition)
        .await
        .expect("reopen");
    let page = engine
        .query_instances(&basalt_runtime::InstanceQuery::default())
        .await
        .expect("query");
    assert_eq!(page.instances.len(), 10);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_hub_of_an_unknown_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("open");
    engine.shutdown().await;
    drop(engine);
    let meta = dir.path().join("taskhub.json");
    let json = std::fs::read_to_string(&meta).expect("read meta");
    std::fs::write(
        &meta,
        json.replace("\"format_version\": 2", "\"format_version\": 3"),
    )
    .expect("write meta");
    let refused = Engine::open(Storage::local(dir.path()).expect("storage"), options()).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("format version") && message.contains('3') && message.contains("1..=2"),
        "{message}"
    );
}

/// Admission control: with nobody taking work, starts beyond the limit of
/// queued work are refused as overloaded (nothing queued grows without
/// bound); every accepted instance completes once a worker comes, and then
/// starts are accepted again.
#[tokio::test]
async fn starts_beyond_the_queued_work_limit_are_refused_and_accepted_ones_complete() {
    let engine = Engine::open(
        Storage::in_memory(),
        EngineOptions {
            queued_work_max: Some(20),
            ..options()
        },
    )
    .await
    .expect("open");
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        let request = StartRequest {
            name: "o".into(),
            instance_id: Some(format!("flood-{i}")),
            ..StartRequest::default()
        };
        match engine.start_instance(request).await {
            Ok(id) => accepted.push(id),
            Err(e) if e.kind() == ErrorKind::Overloaded => {
                assert!(e.to_string().contains("retry in"), "{e}");
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(accepted.len(), 20, "the limit of queued work");
    assert_eq!(refused, 80);

    // A worker arrives and completes every step it is given.
    let mut done = 0;
    while done < accepted.len() {
        let item = tokio::time::timeout(WAIT, engine.next_orchestration_work_item())
            .await
            .expect("a step for every accepted start")
            .expect("work item");
        engine
            .complete_orchestration_work_item(&item.token, complete("\"ok\""))
            .await
            .expect("complete");
        done += 1;
    }
    for id in &accepted {
        let state = engine.wait_for_completion(id, WAIT).await.expect("wait");
        assert_eq!(state.status, OrchestrationStatus::Completed, "{id}");
    }
    // With the queue drained, starts are accepted again.
    engine
        .start_instance(StartRequest {
            name: "o".into(),
            instance_id: Some("after-the-flood".into()),
            ..StartRequest::default()
        })
        .await
        .expect("accepted again");
    engine.shutdown().await;
}

/// Retention: finished instances older than the retention are purged in
/// the background, from memory and from the state store alike; a running
/// instance stays.
#[tokio::test]
async fn retention_purges_finished_instances_and_keeps_running_ones() {
    let engine = Engine::open(
        Storage::in_memory(),
        EngineOptions {
            retention_ms: Some(0),
            retention_sweep_ms: 20,
            // Some records go to the store and leave memory.
            memory_budget_bytes: 0,
            checkpoint_interval_events: 3,
            ..options()
        },
    )
    .await
    .expect("open");
    let ids: Vec<InstanceId> = (0..6)
        .map(|i| InstanceId::new(format!("kept-{i}")).expect("id"))
        .collect();
    for id in &ids {
        engine
            .start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(id.to_string()),
                ..StartRequest::default()
            })
            .await
            .expect("start");
    }
    // Complete all but the last; the last keeps its step out (running).
    let mut running = None;
    for _ in 0..ids.len() {
        let item = tokio::time::timeout(WAIT, engine.next_orchestration_work_item())
            .await
            .expect("a step")
            .expect("work item");
        if item.instance_id == ids[5] {
            running = Some(item);
            continue;
        }
        engine
            .complete_orchestration_work_item(&item.token, complete("\"ok\""))
            .await
            .expect("complete");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut left = 0;
        for id in &ids[..5] {
            if engine.get_instance(id).await.expect("get").is_some() {
                left += 1;
            }
        }
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} finished instances were not purged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept = engine.get_instance(&ids[5]).await.expect("get");
    assert_eq!(
        kept.map(|s| s.status),
        Some(OrchestrationStatus::Pending),
        "a running instance stays"
    );
    assert!(running.is_some());
    let page = engine
        .query_instances(&basalt_runtime::InstanceQuery::default())
        .await
        .expect("query");
    assert_eq!(page.instances.len(), 1, "{page:?}");
    engine.shutdown().await;
}

/// Back-pressure: records changed since the last checkpoint cannot be
/// evicted, so a partition whose changes fill its budget while a
/// checkpoint is being written takes no more work until it lands. A burst
/// of 4,000 starts of 8 KiB each (about 64 MiB of changed records) on a
/// partition with no memory for records is held back, so no checkpoint
/// carries much more than the 4 MiB ceiling plus one batch of commands
/// (without back-pressure the last one carried nearly all of them); every
/// start is accepted and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_changes_fill_its_budget_waits_for_its_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let one_partition = EngineOptions {
        partition_count: 1,
        memory_budget_bytes: 0,
        ..EngineOptions::default()
    };
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), one_partition)
        .await
        .expect("open");
    let input = format!("\"{}\"", "x".repeat(8 << 10));
    let starts: Vec<_> = (0..4000)
        .map(|i| {
            let engine = engine.clone();
            let request = StartRequest {
                name: "o".into(),
                instance_id: Some(format!("large-{i}")),
                input: Some(input.clone()),
                ..StartRequest::default()
            };
            tokio::spawn(async move { engine.start_instance(request).await })
        })
        .collect();
    for start in starts {
        start.await.expect("join").expect("every start is accepted");
    }
    engine.checkpoint().await.expect("checkpoint");
    let window = engine.take_checkpoint_window();
    assert!(window.held_back > 0, "never held back: {window:?}");
    assert!(
        window.max_bytes < 24 << 20,
        "a checkpoint carried far more than the ceiling: {window:?}"
    );
    let mut query = basalt_runtime::InstanceQuery::default();
    let mut found = 0;
    loop {
        let page = engine.query_instances(&query).await.expect("query");
        found += page.instances.len();
        match page.continuation {
            Some(next) => query.continuation = Some(next),
            None => break,
        }
    }
    assert_eq!(found, 4000);
    engine.shutdown().await;
}

/// Dead work stays dead: terminating an instance withdraws its activities
/// that are still waiting for a worker, and a completion for one already
/// handed out is refused as stale; purging leaves nothing behind.
#[tokio::test]
async fn terminate_withdraws_queued_activities() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let id = engine
        .start_instance(StartRequest {
            name: "fan".into(),
            instance_id: Some("fan-1".into()),
            ..StartRequest::default()
        })
        .await
        .expect("start");
    let step = engine.next_orchestration_work_item().await.expect("step");
    let actions = (0..500)
        .map(|n| OrchestratorAction {
            id: n,
            kind: ActionKind::ScheduleTask {
                name: "work".into(),
                version: None,
                input: Some(n.to_string()),
            },
            correlation: None,
        })
        .collect();
    engine
        .complete_orchestration_work_item(
            &step.token,
            OrchestrationStepResult {
                actions,
                custom_status: None,
            },
        )
        .await
        .expect("fan out");
    let taken = engine
        .next_activity_work_item()
        .await
        .expect("one activity");
    assert_eq!(engine.queued_work().1, 499);

    engine.terminate(&id, None).await.expect("terminate");
    let done = engine
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .expect("terminated");
    assert_eq!(done.status, OrchestrationStatus::Terminated);
    assert_eq!(
        engine.queued_work().1,
        0,
        "the waiting activities are withdrawn"
    );
    let late = engine
        .complete_activity_work_item(&taken.token, ActivityOutcome::Completed(None))
        .await
        .expect_err("the activity handed out before is dead");
    assert_eq!(late.kind(), ErrorKind::Conflict);
    assert!(engine.purge(&id).await.expect("purge"), "purged");
    let nothing =
        tokio::time::timeout(Duration::from_millis(200), engine.next_activity_work_item()).await;
    assert!(
        nothing.is_err(),
        "no activity of the purged instance is handed out"
    );
    engine.shutdown().await;
}
