//! Entities on the engine, driven through the `Backend` trait by a
//! hand-played worker: operations run one batch at a time in arrival
//! order, state and deletion, signals between entities on different
//! partitions, recovery of a batch that was out, stale tokens, queries.

use std::time::Duration;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::{
    Backend, EntityBatchResult, EntityId, EntityOperation, EntityQuery, EntitySignal, ErrorKind,
    OperationResult,
};
use basalt_storage::Storage;

fn options() -> EngineOptions {
    EngineOptions {
        partition_count: 4,
        ..EngineOptions::default()
    }
}

fn op(name: &str, input: &str) -> EntityOperation {
    EntityOperation {
        name: name.into(),
        input: Some(input.into()),
    }
}

fn done(state: Option<&str>, results: usize) -> EntityBatchResult {
    EntityBatchResult {
        state: state.map(str::to_owned),
        results: vec![OperationResult::Completed(None); results],
        ..EntityBatchResult::default()
    }
}

/// Nothing is offered within a short while (a liveness check, not a speed one).
async fn nothing_offered(engine: &Engine) {
    let next =
        tokio::time::timeout(Duration::from_millis(100), engine.next_entity_work_item()).await;
    assert!(next.is_err(), "no batch may be offered now: {next:?}");
}

#[tokio::test]
async fn operations_run_one_batch_at_a_time_in_arrival_order() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let counter = EntityId::new("Counter", "a").expect("id");
    for i in 1..=3 {
        engine
            .signal_entity(&counter, op("add", &i.to_string()), None)
            .await
            .expect("signal");
    }
    let first = engine.next_entity_work_item().await.expect("batch");
    assert_eq!(first.entity, counter);
    assert_eq!(first.state, None);
    // Depending on timing the first batch holds 1 to 3 operations; together
    // with what follows they are exactly the signals, in order.
    let mut seen: Vec<String> = first
        .operations
        .iter()
        .map(|o| o.input.clone().unwrap_or_default())
        .collect();
    engine
        .signal_entity(&counter, op("add", "4"), None)
        .await
        .expect("signal while a batch is out");
    nothing_offered(&engine).await;
    engine
        .complete_entity_work_item(&first.token, done(Some("6"), first.operations.len()))
        .await
        .expect("complete");
    let err = engine
        .complete_entity_work_item(&first.token, done(Some("0"), 1))
        .await
        .expect_err("a batch token is good once");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    while seen.len() < 4 {
        let next = engine.next_entity_work_item().await.expect("next batch");
        assert!(
            next.state.is_some(),
            "the next batch sees the state left by the last"
        );
        seen.extend(
            next.operations
                .iter()
                .map(|o| o.input.clone().unwrap_or_default()),
        );
        let len = next.operations.len();
        engine
            .complete_entity_work_item(&next.token, done(Some("10"), len))
            .await
            .expect("complete");
    }
    assert_eq!(seen, ["1", "2", "3", "4"]);
    let state = engine
        .get_entity(&counter)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(state.state.as_deref(), Some("10"));
    assert_eq!(state.backlog, 0);

    // Deleting the state makes the entity disappear.
    engine
        .signal_entity(&counter, op("delete", "null"), None)
        .await
        .expect("signal");
    let batch = engine.next_entity_work_item().await.expect("batch");
    engine
        .complete_entity_work_item(&batch.token, done(None, 1))
        .await
        .expect("complete");
    assert_eq!(engine.get_entity(&counter).await.expect("get"), None);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_entity_signals_another_on_a_different_partition() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let from = EntityId::new("Account", "alice!0").expect("id");
    let to = EntityId::new("Account", "bob!1").expect("id");
    engine
        .signal_entity(&from, op("send", "5"), None)
        .await
        .expect("signal");
    let batch = engine.next_entity_work_item().await.expect("batch");
    assert_eq!(batch.entity, from);
    engine
        .complete_entity_work_item(
            &batch.token,
            EntityBatchResult {
                state: Some("95".into()),
                results: vec![OperationResult::Completed(None)],
                signals: vec![EntitySignal {
                    entity: to.clone(),
                    operation: op("receive", "5"),
                    scheduled_ms: None,
                }],
                orchestrations: Vec::new(),
            },
        )
        .await
        .expect("complete");
    let batch = engine
        .next_entity_work_item()
        .await
        .expect("the signal arrives");
    assert_eq!(batch.entity, to);
    assert_eq!(batch.operations, vec![op("receive", "5")]);
    engine
        .complete_entity_work_item(&batch.token, done(Some("105"), 1))
        .await
        .expect("complete");
    let bob = engine.get_entity(&to).await.expect("get").expect("exists");
    assert_eq!(bob.state.as_deref(), Some("105"));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_batch_out_at_shutdown_is_offered_again_after_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    let entity = EntityId::new("Counter", "x").expect("id");
    {
        let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
            .await
            .expect("open");
        engine
            .signal_entity(&entity, op("add", "1"), None)
            .await
            .expect("signal");
        let batch = engine.next_entity_work_item().await.expect("batch");
        engine
            .complete_entity_work_item(&batch.token, done(Some("1"), 1))
            .await
            .expect("complete");
        engine
            .signal_entity(&entity, op("add", "2"), None)
            .await
            .expect("signal");
        let _taken = engine.next_entity_work_item().await.expect("batch out");
        engine.shutdown().await;
    }
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("reopen");
    let batch = engine.next_entity_work_item().await.expect("offered again");
    assert_eq!(batch.state.as_deref(), Some("1"));
    assert_eq!(batch.operations, vec![op("add", "2")]);
    engine
        .complete_entity_work_item(&batch.token, done(Some("3"), 1))
        .await
        .expect("complete");
    let state = engine
        .get_entity(&entity)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(state.state.as_deref(), Some("3"));
    engine.shutdown().await;
}

#[tokio::test]
async fn entities_are_queried_by_name_and_key_prefix_page_by_page() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(EntityId::new("Stock", format!("item-{i}")).expect("id"));
    }
    ids.push(EntityId::new("Account", "item-0").expect("id"));
    for id in &ids {
        engine
            .signal_entity(id, op("set", "1"), None)
            .await
            .expect("signal");
    }
    let mut pending = ids.len();
    while pending > 0 {
        let batch = engine.next_entity_work_item().await.expect("batch");
        pending -= batch.operations.len();
        engine
            .complete_entity_work_item(&batch.token, done(Some("1"), batch.operations.len()))
            .await
            .expect("complete");
    }
    let mut found = Vec::new();
    let mut continuation = None;
    loop {
        let page = engine
            .query_entities(&EntityQuery {
                name: Some("STOCK".into()),
                page_size: 3,
                continuation: continuation.clone(),
                ..EntityQuery::default()
            })
            .await
            .expect("query");
        assert!(page.entities.len() <= 3);
        found.extend(page.entities.iter().map(|e| e.entity.key().to_owned()));
        continuation = page.continuation;
        if continuation.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("item-{i}")).collect();
    assert_eq!(found, expected);
    let prefixed = engine
        .query_entities(&EntityQuery {
            name: Some("stock".into()),
            key_prefix: Some("item-1".into()),
            ..EntityQuery::default()
        })
        .await
        .expect("query");
    assert_eq!(prefixed.entities.len(), 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_worker_runs_a_counter_entity_exactly_in_order() {
    use std::sync::Arc;

    use basalt_runtime::sdk::{EntityError, Registry};
    use basalt_runtime::{Worker, WorkerOptions};

    let registry = Registry::builder()
        .register_entity_typed("Counter", |ctx, operation| async move {
            let mut value: i64 = ctx.state()?;
            match operation.name.as_str() {
                "add" => {
                    let amount: i64 = operation.decode_input()?;
                    value += amount;
                    ctx.set_state(&value)?;
                }
                "fail" => return Err(EntityError::new("Refused", "no")),
                "delete" => {
                    ctx.delete();
                    return Ok(value);
                }
                other => return Err(EntityError::unknown_operation(other)),
            }
            Ok(value)
        })
        .build()
        .expect("registry");
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry),
        WorkerOptions::default(),
    );
    let counter = EntityId::new("counter", "c1").expect("id");
    for i in 1..=100 {
        backend
            .signal_entity(&counter, op("add", &i.to_string()), None)
            .await
            .expect("signal");
        if i == 50 {
            // A failing operation leaves the state as it was.
            backend
                .signal_entity(&counter, op("fail", "null"), None)
                .await
                .expect("signal");
        }
    }
    let mut state = None;
    for _ in 0..500 {
        state = backend.get_entity(&counter).await.expect("get");
        if state
            .as_ref()
            .is_some_and(|s| s.backlog == 0 && s.state.as_deref() == Some("5050"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = state.expect("the counter exists");
    assert_eq!(
        state.state.as_deref(),
        Some("5050"),
        "1 + 2 + ... + 100, the failure changed nothing"
    );
    backend
        .signal_entity(&counter, op("delete", "null"), None)
        .await
        .expect("signal");
    for _ in 0..500 {
        if backend.get_entity(&counter).await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(backend.get_entity(&counter).await.expect("get"), None);
    worker.shutdown().await;
    engine.shutdown().await;
}

#[tokio::test]
async fn an_orchestration_calls_and_signals_entities_on_other_partitions() {
    use basalt_runtime::{
        ActionKind, EventKind, OrchestrationStepResult, OrchestratorAction, StartRequest,
    };
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let stock = EntityId::new("Stock", "apple!2").expect("id");
    let audit = EntityId::new("Audit", "log!3").expect("id");
    engine
        .start_instance(StartRequest {
            name: "checkout".into(),
            instance_id: Some("order!1".into()),
            ..StartRequest::default()
        })
        .await
        .expect("start");
    let step = engine.next_orchestration_work_item().await.expect("step");
    engine
        .complete_orchestration_work_item(
            &step.token,
            OrchestrationStepResult {
                actions: vec![
                    OrchestratorAction {
                        id: 0,
                        kind: ActionKind::CallEntity {
                            entity: stock.to_string(),
                            operation: "reserve".into(),
                            input: Some("2".into()),
                        },
                        correlation: None,
                    },
                    OrchestratorAction {
                        id: 1,
                        kind: ActionKind::SignalEntity {
                            entity: audit.to_string(),
                            operation: "note".into(),
                            input: Some("\"reserving\"".into()),
                            scheduled_ms: None,
                        },
                        correlation: None,
                    },
                ],
                custom_status: None,
            },
        )
        .await
        .expect("complete");
    // Both entities get their operation; answer each.
    for _ in 0..2 {
        let batch = engine.next_entity_work_item().await.expect("batch");
        let output = if batch.entity == stock {
            assert_eq!(batch.operations[0].name, "reserve");
            OperationResult::Completed(Some("8".into()))
        } else {
            assert_eq!(batch.entity, audit);
            OperationResult::Completed(None)
        };
        engine
            .complete_entity_work_item(
                &batch.token,
                EntityBatchResult {
                    state: Some("1".into()),
                    results: vec![output],
                    ..EntityBatchResult::default()
                },
            )
            .await
            .expect("complete batch");
    }
    // The call's result comes back to the orchestration; the signal's does not.
    let step = engine.next_orchestration_work_item().await.expect("step 2");
    let replies: Vec<_> = step
        .new_events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::EntityOperationCompleted { request_id, output } => {
                Some((*request_id, output.clone()))
            }
            EventKind::EntityOperationFailed { .. } => panic!("unexpected failure"),
            _ => None,
        })
        .collect();
    assert_eq!(replies, vec![(0, Some("8".into()))]);
    assert!(
        step.past_events
            .iter()
            .any(|e| e.event_id == 0 && matches!(e.kind, EventKind::EntityOperationCalled { .. }))
    );
    assert!(step.past_events.iter().any(|e| e.event_id == 1
        && matches!(e.kind, EventKind::EntityOperationSignaled { .. })));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_orchestration_calls_entities_and_catches_their_failures() {
    use std::sync::Arc;

    use basalt_runtime::sdk::{EntityError, OrchestrationError, Registry};
    use basalt_runtime::{Client, Worker, WorkerOptions};
    use futures::future::join_all;

    let registry = Registry::builder()
        .register_entity_typed("Stock", |ctx, operation| async move {
            let mut left: i64 = ctx.state()?;
            match operation.name.as_str() {
                "fill" => left = operation.decode_input()?,
                "reserve" => {
                    let want: i64 = operation.decode_input()?;
                    if want > left {
                        return Err(EntityError::new("OutOfStock", format!("{left} left")));
                    }
                    left -= want;
                }
                other => return Err(EntityError::unknown_operation(other)),
            }
            ctx.set_state(&left)?;
            Ok(left)
        })
        .register_orchestration_typed::<Vec<(String, i64)>, Vec<String>, _, _>(
            "checkout",
            |ctx, items: Vec<(String, i64)>| async move {
                let calls: Vec<_> = items
                    .iter()
                    .map(|(item, quantity)| {
                        let id = basalt_runtime::EntityId::new("Stock", item.as_str())
                            .map_err(|e| OrchestrationError::Serialization(e.to_string()));
                        (id, *quantity)
                    })
                    .map(|(id, quantity)| {
                        let ctx = ctx.clone();
                        async move {
                            let id = id?;
                            ctx.call_entity::<_, i64>(&id, "reserve", &quantity).await
                        }
                    })
                    .collect();
                let mut out = Vec::new();
                for result in join_all(calls).await {
                    out.push(match result {
                        Ok(left) => format!("ok, {left} left"),
                        Err(OrchestrationError::EntityFailed { details, .. }) => {
                            format!("refused: {}", details.message)
                        }
                        Err(other) => return Err(other),
                    });
                }
                Ok(out)
            },
        )
        .build()
        .expect("registry");
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry),
        WorkerOptions::default(),
    );
    let client = Client::new(backend.clone());
    for (item, count) in [("apple!1", 5), ("pear!2", 1)] {
        let id = EntityId::new("Stock", item).expect("id");
        client
            .signal_entity(&id, "fill", &count)
            .await
            .expect("fill");
    }
    let id = client
        .start(
            "checkout",
            &vec![("apple!1".to_owned(), 2), ("pear!2".to_owned(), 3)],
        )
        .await
        .expect("start");
    let out: Vec<String> = client
        .wait_for_output(&id, Duration::from_secs(20))
        .await
        .expect("completes");
    assert_eq!(
        out,
        vec!["ok, 3 left".to_owned(), "refused: 1 left".to_owned()]
    );
    let pear: Option<i64> = client
        .get_entity_state(&EntityId::new("Stock", "pear!2").expect("id"))
        .await
        .expect("get");
    assert_eq!(pear, Some(1), "the refused reservation changed nothing");
    worker.shutdown().await;
    engine.shutdown().await;
}

mod critical_sections {
    use super::*;
    use basalt_runtime::{
        ActionKind, CompletionToken, EventKind, OrchestrationStatus, OrchestrationStepResult,
        OrchestratorAction, StartRequest,
    };

    fn action(id: i32, kind: ActionKind) -> OrchestratorAction {
        OrchestratorAction::new(id, kind)
    }

    fn step(actions: Vec<OrchestratorAction>) -> OrchestrationStepResult {
        OrchestrationStepResult {
            actions,
            custom_status: None,
        }
    }

    async fn start(engine: &Engine, id: &str) -> CompletionToken {
        engine
            .start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(id.into()),
                ..StartRequest::default()
            })
            .await
            .expect("start");
        engine
            .next_orchestration_work_item()
            .await
            .expect("step")
            .token
    }

    fn lock(id: i32, entities: &[&EntityId]) -> OrchestratorAction {
        action(
            id,
            ActionKind::LockEntities {
                entities: entities.iter().map(|e| e.to_string()).collect(),
            },
        )
    }

    /// The next step, which must carry the grant of lock action `request_id`.
    async fn granted(engine: &Engine, instance: &str, request_id: i32) -> CompletionToken {
        let item = engine.next_orchestration_work_item().await.expect("step");
        assert_eq!(item.instance_id.as_str(), instance);
        assert!(
            item.new_events
                .iter()
                .any(|e| matches!(e.kind, EventKind::EntityLockGranted { request_id: r } if r == request_id)),
            "{:?}",
            item.new_events
        );
        item.token
    }

    #[tokio::test]
    async fn only_the_holder_runs_on_a_locked_entity_until_it_unlocks() {
        let engine = Engine::open(Storage::in_memory(), options())
            .await
            .expect("open");
        let x = EntityId::new("Account", "x!1").expect("id");
        let y = EntityId::new("Account", "y!2").expect("id");
        let token = start(&engine, "holder!3").await;
        engine
            .complete_orchestration_work_item(&token, step(vec![lock(0, &[&y, &x])]))
            .await
            .expect("lock");
        let token = granted(&engine, "holder!3", 0).await;
        // Someone else's operation waits while x is locked.
        engine
            .signal_entity(&x, op("other", "1"), None)
            .await
            .expect("signal");
        nothing_offered(&engine).await;
        // The holder's call goes through.
        engine
            .complete_orchestration_work_item(
                &token,
                step(vec![action(
                    1,
                    ActionKind::CallEntity {
                        entity: x.to_string(),
                        operation: "mine".into(),
                        input: None,
                    },
                )]),
            )
            .await
            .expect("call");
        let batch = engine.next_entity_work_item().await.expect("holder's call");
        assert_eq!(
            batch.operations,
            vec![EntityOperation {
                name: "mine".into(),
                input: None
            }]
        );
        engine
            .complete_entity_work_item(&batch.token, done(Some("1"), 1))
            .await
            .expect("complete");
        let locked = engine.get_entity(&x).await.expect("get").expect("x exists");
        assert_eq!(
            locked.locked_by.map(|owner| owner.to_string()).as_deref(),
            Some("holder!3"),
            "clients see who holds the lock"
        );
        let token = engine
            .next_orchestration_work_item()
            .await
            .expect("reply")
            .token;
        nothing_offered(&engine).await;
        // Unlocking lets the waiting operation run.
        engine
            .complete_orchestration_work_item(
                &token,
                step(vec![action(
                    2,
                    ActionKind::UnlockEntities {
                        entities: vec![x.to_string(), y.to_string()],
                    },
                )]),
            )
            .await
            .expect("unlock");
        let batch = engine
            .next_entity_work_item()
            .await
            .expect("the waiting operation");
        assert_eq!(batch.operations[0].name, "other");
        let unlocked = engine.get_entity(&x).await.expect("get").expect("x exists");
        assert_eq!(unlocked.locked_by, None);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn overlapping_locks_in_opposite_orders_are_granted_one_after_the_other() {
        let engine = Engine::open(Storage::in_memory(), options())
            .await
            .expect("open");
        let x = EntityId::new("Account", "x!1").expect("id");
        let y = EntityId::new("Account", "y!2").expect("id");
        let a = start(&engine, "a!0").await;
        let b = start(&engine, "b!3").await;
        engine
            .complete_orchestration_work_item(&a, step(vec![lock(0, &[&x, &y])]))
            .await
            .expect("a locks");
        engine
            .complete_orchestration_work_item(&b, step(vec![lock(0, &[&y, &x])]))
            .await
            .expect("b locks");
        // Exactly one of them is granted now.
        let first = engine
            .next_orchestration_work_item()
            .await
            .expect("a grant");
        let (first_id, second_id) = if first.instance_id.as_str() == "a!0" {
            ("a!0", "b!3")
        } else {
            ("b!3", "a!0")
        };
        assert!(
            first
                .new_events
                .iter()
                .any(|e| matches!(e.kind, EventKind::EntityLockGranted { .. }))
        );
        let nothing = tokio::time::timeout(
            Duration::from_millis(100),
            engine.next_orchestration_work_item(),
        )
        .await;
        assert!(nothing.is_err(), "the second must wait for the first");
        // The first finishes without unlocking: its locks are released.
        engine
            .complete_orchestration_work_item(
                &first.token,
                step(vec![action(
                    1,
                    ActionKind::CompleteOrchestration {
                        status: OrchestrationStatus::Completed,
                        result: None,
                        failure: None,
                        new_version: None,
                        carryover_events: Vec::new(),
                    },
                )]),
            )
            .await
            .expect("finish");
        granted(&engine, second_id, 0).await;
        let _ = first_id;
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_delayed_signal_waits_for_its_time_even_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let entity = EntityId::new("Reminder", "r").expect("id");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let due = now() + 400;
    {
        let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
            .await
            .expect("open");
        engine
            .signal_entity(&entity, op("ring", "1"), Some(due))
            .await
            .expect("scheduled signal");
        nothing_offered(&engine).await;
        engine.shutdown().await;
    }
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("reopen");
    let batch = tokio::time::timeout(Duration::from_secs(10), engine.next_entity_work_item())
        .await
        .expect("the signal is delivered after the restart")
        .expect("batch");
    assert!(now() >= due, "delivered before its time");
    assert_eq!(batch.operations, vec![op("ring", "1")]);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_entity_starts_an_orchestration_and_schedules_a_signal_for_later() {
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let alarm = EntityId::new("Alarm", "a").expect("id");
    engine
        .signal_entity(&alarm, op("arm", "1"), None)
        .await
        .expect("signal");
    let batch = engine.next_entity_work_item().await.expect("batch");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let started = basalt_runtime::InstanceId::new("started-by-alarm").expect("id");
    engine
        .complete_entity_work_item(
            &batch.token,
            EntityBatchResult {
                state: Some("\"armed\"".into()),
                results: vec![OperationResult::Completed(None)],
                signals: vec![EntitySignal {
                    entity: alarm.clone(),
                    operation: op("ring", "2"),
                    scheduled_ms: Some(now_ms + 400),
                }],
                orchestrations: vec![basalt_runtime::EntityStartedOrchestration {
                    instance_id: started.clone(),
                    name: "Wake".into(),
                    version: None,
                    input: Some("\"up\"".into()),
                    scheduled_start_ms: None,
                }],
            },
        )
        .await
        .expect("complete");
    // The orchestration starts at once, with the entity's input.
    let step = engine
        .next_orchestration_work_item()
        .await
        .expect("the started orchestration's first step");
    assert_eq!(step.instance_id, started);
    let state = engine
        .get_instance(&started)
        .await
        .expect("get")
        .expect("the instance exists");
    assert_eq!(state.name, "Wake");
    assert_eq!(state.input.as_deref(), Some("\"up\""));
    // The delayed signal waits for its time (a liveness check, not a
    // speed one), then arrives as a batch of its own.
    nothing_offered(&engine).await;
    let ring = tokio::time::timeout(Duration::from_secs(10), engine.next_entity_work_item())
        .await
        .expect("the delayed signal arrives")
        .expect("batch");
    let arrived_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert_eq!(ring.entity, alarm);
    assert_eq!(ring.operations, vec![op("ring", "2")]);
    assert!(arrived_ms >= now_ms + 400, "not before its time");
    engine.shutdown().await;
}

#[tokio::test]
async fn an_entity_start_for_a_running_instance_is_dropped() {
    // One partition: the start message takes effect inside the batch's
    // completion, so what follows sees its outcome without waiting.
    let engine = Engine::open(
        Storage::in_memory(),
        EngineOptions {
            partition_count: 1,
            ..EngineOptions::default()
        },
    )
    .await
    .expect("open");
    let id = basalt_runtime::InstanceId::new("busy").expect("id");
    engine
        .start_instance(basalt_runtime::StartRequest {
            name: "First".into(),
            instance_id: Some(id.to_string()),
            ..basalt_runtime::StartRequest::default()
        })
        .await
        .expect("start");
    let entity = EntityId::new("Starter", "s").expect("id");
    engine
        .signal_entity(&entity, op("go", "1"), None)
        .await
        .expect("signal");
    let batch = engine.next_entity_work_item().await.expect("batch");
    engine
        .complete_entity_work_item(
            &batch.token,
            EntityBatchResult {
                state: None,
                results: vec![OperationResult::Completed(None)],
                orchestrations: vec![basalt_runtime::EntityStartedOrchestration {
                    instance_id: id.clone(),
                    name: "Second".into(),
                    version: None,
                    input: None,
                    scheduled_start_ms: None,
                }],
                ..EntityBatchResult::default()
            },
        )
        .await
        .expect("complete");
    let state = engine
        .get_instance(&id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(state.name, "First", "the running instance is untouched");
    engine.shutdown().await;
}

/// A batch result that breaks a limit (here: an orchestration start with
/// an empty name) is refused; the SDK worker fails the batch instead of
/// offering it again forever, and the entity's state stays as it was.
#[tokio::test]
async fn the_sdk_worker_fails_a_batch_whose_result_is_refused() {
    use std::sync::Arc;

    use basalt_runtime::sdk::Registry;
    use basalt_runtime::{InstanceId, Worker, WorkerOptions};

    let registry = Registry::builder()
        .register_entity("Starter", |ctx, operation| async move {
            ctx.set_state_raw(Some("\"touched\"".into()));
            if operation.name == "bad" {
                let id = InstanceId::new("never").expect("id");
                ctx.start_orchestration("", &id, &1)
                    .map_err(|e| basalt_runtime::FailureDetails::new("E", format!("{e:?}")))?;
            }
            Ok(None)
        })
        .build()
        .expect("registry");
    let engine = Engine::open(Storage::in_memory(), options())
        .await
        .expect("open");
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry),
        WorkerOptions::default(),
    );
    let starter = EntityId::new("starter", "s").expect("id");
    backend
        .signal_entity(&starter, op("good", "1"), None)
        .await
        .expect("signal");
    // The first operation runs alone and sets the state (a liveness wait).
    for _ in 0..500 {
        if backend.get_entity(&starter).await.expect("get").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    backend
        .signal_entity(&starter, op("bad", "1"), None)
        .await
        .expect("signal");
    // Then the second's batch is refused and failed, not offered forever.
    let mut done = false;
    for _ in 0..500 {
        let state = backend.get_entity(&starter).await.expect("get");
        if state.as_ref().is_some_and(|s| s.backlog == 0) {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(done, "the refused batch never finished");
    assert!(
        backend
            .get_instance(&InstanceId::new("never").expect("id"))
            .await
            .expect("get")
            .is_none(),
        "nothing was started"
    );
    worker.shutdown().await;
    engine.shutdown().await;
}
