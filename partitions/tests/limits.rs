//! Limits the pure state machine enforces on what a worker returns.

mod common;

use common::ApplyWhole;

use basalt_partitions::{Event, HISTORY_EVENTS_MAX, PartitionState};
use basalt_runtime::{ActionKind, InstanceId, OrchestrationStatus, OrchestratorAction};

/// A step that would take the history past `HISTORY_EVENTS_MAX` fails the
/// instance with `HistoryTooLarge` and schedules none of its actions; one
/// just under it is applied.
#[test]
fn a_history_past_its_limit_fails_the_instance() {
    let id = InstanceId::new("long").expect("id");
    let mut state = PartitionState::new(0, 1);
    let fx = state.apply_whole(
        1,
        Event::Start {
            instance_id: id.clone(),
            name: "o".into(),
            version: None,
            input: None,
            scheduled_start_ms: None,
            tags: Default::default(),
            now_ms: 1,
        },
    );
    let timers = |first: i32, count: usize| -> Vec<OrchestratorAction> {
        (0..count)
            .map(|n| {
                OrchestratorAction::new(
                    first + n as i32,
                    ActionKind::CreateTimer {
                        fire_at_ms: 1 << 40,
                    },
                )
            })
            .collect()
    };
    // OrchestratorStarted, ExecutionStarted, the actions and
    // OrchestratorCompleted: the first step may have HISTORY_EVENTS_MAX - 3
    // actions and fills the history exactly.
    let fx = common::run_step(
        &mut state,
        &id,
        2,
        fx.steps[0].seq,
        timers(0, HISTORY_EVENTS_MAX - 3),
    );
    assert!(
        fx.timers.len() == HISTORY_EVENTS_MAX - 3,
        "the first step is applied"
    );
    let instance = state.instance(&id).expect("instance");
    assert_eq!(instance.meta.status, OrchestrationStatus::Running);
    let history_len = instance.history.len();
    assert_eq!(history_len, HISTORY_EVENTS_MAX);

    // One timer fires: the next step's events would go past the limit.
    let fire = &fx.timers[0];
    let fx = state.apply_whole(
        3,
        Event::TimerFired {
            instance_id: id.clone(),
            execution: fire.execution,
            timer_id: fire.timer_id,
            fire_at_ms: fire.fire_at_ms,
            now_ms: 3,
        },
    );
    let fx = common::run_step(&mut state, &id, 4, fx.steps[0].seq, timers(1_000_000, 1));
    assert!(
        fx.timers.is_empty(),
        "nothing of the refused step is scheduled"
    );
    let instance = state.instance(&id).expect("instance");
    assert_eq!(instance.meta.status, OrchestrationStatus::Failed);
    let failure = instance.meta.failure.as_ref().expect("failure");
    assert_eq!(failure.error_type, "HistoryTooLarge", "{}", failure.message);
}
