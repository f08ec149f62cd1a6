//! The SDK's entity logic, without a backend: registers entities and runs
//! hand-built `EntityWorkItem`s through `Registry::run_entity_batch`,
//! checking ordering, per-operation rollback (state and signals), panics,
//! delete, unknown names, typed state and name rules.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use basalt_runtime::sdk::{
    ENTITY_NOT_FOUND, EntityContext, EntityError, Registry, RegistryError, UNKNOWN_OPERATION,
};
use basalt_runtime::{
    CompletionToken, EntityBatchResult, EntityId, EntityOperation, EntitySignal, EntityWorkItem,
    FailureDetails, OperationResult,
};
use futures::executor::block_on;
use serde::{Deserialize, Serialize};

fn entity(name: &str, key: &str) -> EntityId {
    EntityId::new(name, key).expect("valid entity id")
}

fn op(name: &str, input: Option<&str>) -> EntityOperation {
    EntityOperation {
        name: name.to_owned(),
        input: input.map(str::to_owned),
    }
}

fn item(id: EntityId, state: Option<&str>, operations: Vec<EntityOperation>) -> EntityWorkItem {
    EntityWorkItem {
        entity: id,
        state: state.map(str::to_owned),
        operations,
        token: CompletionToken("t".into()),
    }
}

fn run(registry: &Registry, item: &EntityWorkItem) -> EntityBatchResult {
    block_on(registry.run_entity_batch(item))
}

fn completed(output: &str) -> OperationResult {
    OperationResult::Completed(Some(output.to_owned()))
}

fn failure(result: &OperationResult) -> &FailureDetails {
    match result {
        OperationResult::Failed(details) => details,
        OperationResult::Completed(output) => panic!("expected a failure, got {output:?}"),
    }
}

/// A counter: `add` (input i64; fails on a negative amount after setting
/// the state, so the rollback is visible), `get`, `delete`, `boom`
/// (panics after setting the state), `notify` (signals `@log@<input>`
/// with the current value), `notify_then_fail`.
fn counter_registry() -> Registry {
    Registry::builder()
        .register_entity_typed("Counter", |ctx: EntityContext, operation| async move {
            let mut value: i64 = ctx.state()?;
            match operation.name.as_str() {
                "add" => {
                    let amount: i64 = operation.decode_input()?;
                    value += amount;
                    ctx.set_state(&value)?;
                    if amount < 0 {
                        return Err(EntityError::new("Negative", "amounts must be positive"));
                    }
                }
                "get" => {}
                "delete" => ctx.delete(),
                "boom" => {
                    ctx.set_state(&-1_000_i64)?;
                    ctx.signal_entity(&entity("log", "x"), "never", &value)?;
                    panic!("boom at {value}");
                }
                "notify" => {
                    let key: String = operation.decode_input()?;
                    ctx.signal_entity(&entity("log", &key), "record", &value)?;
                }
                "notify_then_fail" => {
                    ctx.signal_entity(&entity("log", "dropped"), "record", &value)?;
                    let parsed: i64 = "not a number".parse()?;
                    value = parsed;
                }
                other => return Err(EntityError::unknown_operation(other)),
            }
            Ok(value)
        })
        .build()
        .expect("valid registry")
}

#[test]
fn operations_run_in_order_and_see_each_others_state() {
    let registry = counter_registry();
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            None,
            vec![op("add", Some("1")), op("add", Some("2")), op("get", None)],
        ),
    );
    assert_eq!(
        result.results,
        vec![completed("1"), completed("3"), completed("3")]
    );
    assert_eq!(result.state.as_deref(), Some("3"));
    assert!(result.signals.is_empty());

    // A batch starts from the state it is given.
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            Some("10"),
            vec![op("add", Some("5"))],
        ),
    );
    assert_eq!(result.results, vec![completed("15")]);
    assert_eq!(result.state.as_deref(), Some("15"));

    // An empty batch leaves the state alone.
    let result = run(&registry, &item(entity("counter", "a"), Some("7"), vec![]));
    assert_eq!(
        result,
        EntityBatchResult {
            state: Some("7".into()),
            ..EntityBatchResult::default()
        }
    );
}

#[test]
fn a_failing_operation_is_rolled_back_and_later_ones_continue() {
    let registry = counter_registry();
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            None,
            vec![
                op("add", Some("5")),
                op("add", Some("-100")),
                op("add", Some("1")),
                op("add", Some("\"bad input\"")),
                op("nope", None),
                op("get", None),
            ],
        ),
    );
    assert_eq!(result.results.len(), 6);
    assert_eq!(result.results[0], completed("5"));
    let negative = failure(&result.results[1]);
    assert_eq!(negative.error_type, "Negative");
    assert!(!negative.is_non_retriable);
    // The failed add's -95 was discarded: the next add starts from 5.
    assert_eq!(result.results[2], completed("6"));
    let bad_input = failure(&result.results[3]);
    assert_eq!(bad_input.error_type, "SerializationError");
    assert!(bad_input.is_non_retriable);
    let unknown = failure(&result.results[4]);
    assert_eq!(unknown.error_type, UNKNOWN_OPERATION);
    assert!(unknown.is_non_retriable);
    assert!(unknown.message.contains("nope"));
    assert_eq!(result.results[5], completed("6"));
    assert_eq!(result.state.as_deref(), Some("6"));
}

#[test]
fn a_failure_in_the_last_operation_leaves_the_previous_state() {
    let registry = counter_registry();
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            Some("2"),
            vec![op("add", Some("1")), op("add", Some("-50"))],
        ),
    );
    assert_eq!(result.results[0], completed("3"));
    assert_eq!(failure(&result.results[1]).error_type, "Negative");
    assert_eq!(result.state.as_deref(), Some("3"));
}

#[test]
fn a_panicking_operation_is_rolled_back_and_later_ones_continue() {
    let registry = counter_registry();
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            None,
            vec![op("add", Some("4")), op("boom", None), op("add", Some("1"))],
        ),
    );
    assert_eq!(result.results[0], completed("4"));
    let panic = failure(&result.results[1]);
    assert_eq!(panic.error_type, "Panic");
    assert!(panic.message.contains("boom at 4"), "{}", panic.message);
    assert!(panic.message.contains("\"boom\""), "{}", panic.message);
    assert_eq!(result.results[2], completed("5"));
    assert_eq!(result.state.as_deref(), Some("5"));
    // The panicking operation's signal was dropped.
    assert!(result.signals.is_empty());
}

#[test]
fn a_panic_while_creating_the_future_is_caught() {
    let registry = Registry::builder()
        .register_entity("Eager", |_ctx, operation| {
            assert_ne!(operation.name, "explode", "exploded eagerly");
            async move { Ok(operation.input) }
        })
        .build()
        .expect("valid registry");
    let result = run(
        &registry,
        &item(
            entity("eager", "k"),
            None,
            vec![op("explode", None), op("echo", Some("1"))],
        ),
    );
    let panic = failure(&result.results[0]);
    assert_eq!(panic.error_type, "Panic");
    assert!(
        panic.message.contains("exploded eagerly"),
        "{}",
        panic.message
    );
    assert_eq!(result.results[1], completed("1"));
}

#[test]
fn delete_then_add_starts_from_default() {
    let registry = counter_registry();
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            Some("40"),
            vec![op("delete", None), op("add", Some("2"))],
        ),
    );
    assert_eq!(result.results, vec![completed("40"), completed("2")]);
    assert_eq!(result.state.as_deref(), Some("2"));

    // A batch ending in delete leaves no state.
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            Some("40"),
            vec![op("add", Some("1")), op("delete", None)],
        ),
    );
    assert_eq!(result.state, None);
}

#[test]
fn a_failed_delete_keeps_the_state() {
    let registry = Registry::builder()
        .register_entity("Fragile", |ctx, _operation| async move {
            ctx.delete();
            assert!(!ctx.has_state());
            Err(FailureDetails::new("Nope", "changed my mind"))
        })
        .build()
        .expect("valid registry");
    let result = run(
        &registry,
        &item(
            entity("fragile", "k"),
            Some("{\"a\":1}"),
            vec![op("x", None)],
        ),
    );
    assert_eq!(failure(&result.results[0]).error_type, "Nope");
    assert_eq!(result.state.as_deref(), Some("{\"a\":1}"));
}

#[test]
fn signals_of_failed_operations_are_dropped_and_others_kept_in_order() {
    let registry = counter_registry();
    let result = run(
        &registry,
        &item(
            entity("counter", "a"),
            None,
            vec![
                op("add", Some("1")),
                op("notify", Some("\"first\"")),
                op("notify_then_fail", None),
                op("add", Some("1")),
                op("notify", Some("\"second\"")),
                op("boom", None),
                op("notify", Some("\"third\"")),
            ],
        ),
    );
    let failed = failure(&result.results[2]);
    assert_eq!(failed.error_type, "ParseIntError");
    let record = |key: &str, value: &str| EntitySignal {
        entity: entity("log", key),
        operation: op("record", Some(value)),
        scheduled_ms: None,
    };
    assert_eq!(
        result.signals,
        vec![
            record("first", "1"),
            record("second", "2"),
            record("third", "2")
        ]
    );
    assert_eq!(result.state.as_deref(), Some("2"));
}

#[test]
fn several_signals_of_one_operation_keep_their_order() {
    let registry = Registry::builder()
        .register_entity("Fanout", |ctx, _operation| async move {
            for key in ["b", "a", "c"] {
                ctx.signal_entity_raw(&entity("Target", key), "Ping", Some(format!("\"{key}\"")));
            }
            Ok(None)
        })
        .build()
        .expect("valid registry");
    let result = run(
        &registry,
        &item(entity("fanout", "k"), None, vec![op("go", None)]),
    );
    let keys: Vec<&str> = result.signals.iter().map(|s| s.entity.key()).collect();
    assert_eq!(keys, vec!["b", "a", "c"]);
    assert!(result.signals.iter().all(|s| s.entity.name() == "target"));
    assert!(result.signals.iter().all(|s| s.operation.name == "Ping"));
    assert_eq!(result.results, vec![OperationResult::Completed(None)]);
    // Signals do not create state.
    assert_eq!(result.state, None);
}

#[test]
fn an_unknown_entity_fails_every_operation_and_keeps_the_state() {
    let registry = counter_registry();
    let result = run(
        &registry,
        &item(
            entity("missing", "k"),
            Some("\"kept\""),
            vec![op("a", None), op("b", Some("1"))],
        ),
    );
    assert_eq!(result.results.len(), 2);
    for outcome in &result.results {
        let details = failure(outcome);
        assert_eq!(details.error_type, ENTITY_NOT_FOUND);
        assert!(details.is_non_retriable);
        assert!(details.message.contains("missing"));
    }
    assert_eq!(result.state.as_deref(), Some("\"kept\""));
    assert!(result.signals.is_empty());
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cart {
    items: Vec<String>,
    total_cents: u64,
}

#[derive(Debug, Deserialize, Serialize)]
struct AddItem {
    name: String,
    cents: u64,
}

fn cart_registry() -> Registry {
    Registry::builder()
        .register_entity_typed("Cart", |ctx: EntityContext, operation| async move {
            let mut cart: Cart = ctx.state()?;
            match operation.name.as_str() {
                "add" => {
                    let item: AddItem = operation.decode_input()?;
                    cart.items.push(item.name);
                    cart.total_cents += item.cents;
                    ctx.set_state(&cart)?;
                }
                "get" => {}
                other => return Err(EntityError::unknown_operation(other)),
            }
            Ok(cart)
        })
        .build()
        .expect("valid registry")
}

#[test]
fn typed_state_round_trips() {
    let registry = cart_registry();
    let add = |name: &str, cents: u64| {
        let input = serde_json::to_string(&AddItem {
            name: name.into(),
            cents,
        })
        .expect("serializes");
        EntityOperation {
            name: "add".into(),
            input: Some(input),
        }
    };
    let first = run(
        &registry,
        &item(
            entity("cart", "u1"),
            None,
            vec![add("tea", 350), add("cake", 420)],
        ),
    );
    let state = first.state.clone().expect("has a state");
    let cart: Cart = serde_json::from_str(&state).expect("the state is a Cart");
    assert_eq!(
        cart,
        Cart {
            items: vec!["tea".into(), "cake".into()],
            total_cents: 770,
        }
    );
    // The state written by one batch is read back by the next.
    let second = run(
        &registry,
        &item(entity("cart", "u1"), Some(&state), vec![op("get", None)]),
    );
    let OperationResult::Completed(Some(output)) = &second.results[0] else {
        panic!("get completes with an output: {:?}", second.results[0]);
    };
    let read: Cart = serde_json::from_str(output).expect("the output is a Cart");
    assert_eq!(read, cart);
    assert_eq!(second.state.as_deref(), Some(state.as_str()));
}

#[test]
fn a_state_of_the_wrong_type_fails_the_operation_and_is_kept() {
    let registry = cart_registry();
    let result = run(
        &registry,
        &item(entity("cart", "u1"), Some("[1,2]"), vec![op("get", None)]),
    );
    let details = failure(&result.results[0]);
    assert_eq!(details.error_type, "SerializationError");
    assert!(details.is_non_retriable);
    assert_eq!(result.state.as_deref(), Some("[1,2]"));
}

#[test]
fn the_context_describes_the_operation_and_its_state() {
    let registry = Registry::builder()
        .register_entity("Probe", |ctx, operation| async move {
            assert_eq!(ctx.operation_name(), operation.name);
            let before = ctx.state_raw();
            assert_eq!(ctx.has_state(), before.is_some());
            ctx.set_state_raw(Some(format!("\"{}\"", operation.name)));
            assert_eq!(ctx.state_raw(), Some(format!("\"{}\"", operation.name)));
            let seen = serde_json::json!({
                "entity": ctx.entity_id().to_string(),
                "before": before,
            });
            Ok(Some(seen.to_string()))
        })
        .build()
        .expect("valid registry");
    let result = run(
        &registry,
        &item(
            entity("PROBE", "Key"),
            None,
            vec![op("first", None), op("second", None)],
        ),
    );
    let outputs: Vec<serde_json::Value> = result
        .results
        .iter()
        .map(|r| match r {
            OperationResult::Completed(Some(text)) => {
                serde_json::from_str(text).expect("the output is JSON")
            }
            other => panic!("expected an output, got {other:?}"),
        })
        .collect();
    assert_eq!(outputs[0]["entity"], "@probe@Key");
    assert_eq!(outputs[0]["before"], serde_json::Value::Null);
    assert_eq!(outputs[1]["before"], "\"first\"");
    assert_eq!(result.state.as_deref(), Some("\"second\""));
}

#[test]
fn a_context_that_outlives_its_operation_changes_nothing() {
    let leaked: Arc<parking_lot::Mutex<Option<EntityContext>>> = Arc::default();
    let keep = leaked.clone();
    let registry = Registry::builder()
        .register_entity("Leaky", move |ctx, _operation| {
            let keep = keep.clone();
            async move {
                keep.lock().get_or_insert(ctx);
                Ok(None)
            }
        })
        .build()
        .expect("valid registry");
    let result = run(
        &registry,
        &item(
            entity("leaky", "k"),
            Some("1"),
            vec![op("a", None), op("b", None)],
        ),
    );
    assert_eq!(result.state.as_deref(), Some("1"));
    let ctx = leaked
        .lock()
        .take()
        .expect("the first operation kept its context");
    ctx.set_state_raw(Some("2".into()));
    ctx.signal_entity_raw(&entity("x", "y"), "z", None);
    assert!(!ctx.has_state());
    assert_eq!(ctx.state_raw(), None);
}

#[test]
fn entity_names_are_case_insensitive() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let registry = Registry::builder()
        .register_entity("BankAccount", move |_ctx, _operation| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(None) }
        })
        .build()
        .expect("valid registry");
    assert_eq!(registry.entity_names(), vec!["bankaccount"]);
    assert!(registry.has_entity("BANKACCOUNT"));
    assert!(registry.has_entity("bankaccount"));
    assert!(!registry.has_entity("bank"));
    let result = run(
        &registry,
        &item(
            entity("BankAccount", "alice"),
            None,
            vec![op("deposit", None)],
        ),
    );
    assert_eq!(result.results, vec![OperationResult::Completed(None)]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn duplicate_and_invalid_entity_names_are_errors() {
    let duplicate = Registry::builder()
        .register_entity("Counter", |_, operation| async move { Ok(operation.input) })
        .register_entity("COUNTER", |_, operation| async move { Ok(operation.input) })
        .build();
    assert!(
        matches!(
            &duplicate,
            Err(RegistryError::Duplicate { name, .. }) if name == "counter"
        ),
        "{duplicate:?}"
    );
    let empty = Registry::builder()
        .register_entity("", |_, operation| async move { Ok(operation.input) })
        .build();
    assert!(
        matches!(empty, Err(RegistryError::EmptyName { .. })),
        "{empty:?}"
    );
    let at = Registry::builder()
        .register_entity("a@b", |_, operation| async move { Ok(operation.input) })
        .build();
    assert!(
        matches!(at, Err(RegistryError::InvalidName { .. })),
        "{at:?}"
    );
    // An entity may share its name with an orchestration and an activity.
    let shared = Registry::builder()
        .register_orchestration("Counter", |_, input| async move { Ok(input) })
        .register_activity("Counter", |_, input| async move { Ok(input) })
        .register_entity("Counter", |_, operation| async move { Ok(operation.input) })
        .build()
        .expect("different kinds");
    assert_eq!(shared.entity_names(), vec!["counter"]);
    assert_eq!(shared.activity_names(), vec!["Counter"]);
}

#[test]
fn errors_convert_like_activity_errors() {
    let from_std: EntityError = "x".parse::<u8>().expect_err("not a number").into();
    assert_eq!(from_std.details().error_type, "ParseIntError");
    assert!(!from_std.details().is_non_retriable);
    let from_details: EntityError = FailureDetails::new("Mine", "m").into();
    assert_eq!(from_details.details().error_type, "Mine");
    let back: FailureDetails = EntityError::new("T", "m").non_retriable().into();
    assert!(back.is_non_retriable);
    assert_eq!(EntityError::new("T", "m").to_string(), "T: m");
}

#[test]
fn an_output_that_does_not_serialize_fails_and_rolls_back() {
    let registry = Registry::builder()
        .register_entity_typed("Odd", |ctx: EntityContext, _operation| async move {
            ctx.set_state(&1_i64)?;
            // JSON object keys must be strings.
            let output: std::collections::BTreeMap<(i64, i64), i64> = [((1, 2), 3)].into();
            Ok(output)
        })
        .build()
        .expect("valid registry");
    let result = run(
        &registry,
        &item(entity("odd", "k"), Some("0"), vec![op("x", None)]),
    );
    let details = failure(&result.results[0]);
    assert_eq!(details.error_type, "SerializationError");
    assert!(details.is_non_retriable);
    assert_eq!(result.state.as_deref(), Some("0"));
}

#[test]
fn started_orchestrations_and_scheduled_signals_are_kept_only_for_successful_operations() {
    let registry = Registry::builder()
        .register_entity("Alarm", |ctx, operation| async move {
            let id = basalt_runtime::InstanceId::new(format!(
                "wake-{}",
                operation.input.as_deref().unwrap_or("")
            ))
            .map_err(|e| FailureDetails::new("BadId", e.to_string()))?;
            ctx.start_orchestration("Wake", &id, "up")?;
            ctx.signal_entity_at(ctx.entity_id(), "ring", &1, 5_000)?;
            if operation.name == "arm_then_fail" {
                return Err(FailureDetails::new("Nope", "changed my mind"));
            }
            Ok(None)
        })
        .build()
        .expect("valid registry");
    let result = run(
        &registry,
        &item(
            entity("alarm", "a"),
            None,
            vec![
                op("arm", Some("1")),
                op("arm_then_fail", Some("2")),
                op("arm", Some("3")),
            ],
        ),
    );
    let started: Vec<_> = result
        .orchestrations
        .iter()
        .map(|s| {
            (
                s.instance_id.to_string(),
                s.name.as_str(),
                s.input.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        started,
        vec![
            ("wake-1".to_owned(), "Wake", Some("\"up\"")),
            ("wake-3".to_owned(), "Wake", Some("\"up\"")),
        ]
    );
    assert_eq!(result.signals.len(), 2);
    assert!(
        result
            .signals
            .iter()
            .all(|s| s.scheduled_ms == Some(5_000) && s.operation.name == "ring")
    );
}
