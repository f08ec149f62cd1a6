//! The version an instance reports: the one it was started with, kept
//! across continue-as-new unless the orchestration names a new one.

mod common;

use common::ApplyWhole;

use basalt_partitions::{Event, PartitionState};
use basalt_runtime::{ActionKind, EventKind, InstanceId, OrchestrationStatus, OrchestratorAction};

fn id() -> InstanceId {
    InstanceId::new("v").expect("valid id")
}

fn continue_as_new(
    state: &mut PartitionState,
    lsn: u64,
    seq: u64,
    new_version: Option<&str>,
) -> u64 {
    let fx = common::run_step(
        state,
        &id(),
        lsn,
        seq,
        vec![OrchestratorAction::new(
            0,
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::ContinuedAsNew,
                result: None,
                failure: None,
                new_version: new_version.map(str::to_owned),
                carryover_events: Vec::new(),
            },
        )],
    );
    fx.steps[0].seq
}

fn version(state: &PartitionState) -> Option<String> {
    state
        .instance(&id())
        .expect("instance")
        .meta
        .version
        .clone()
}

#[test]
fn the_version_is_kept_across_continue_as_new_unless_a_new_one_is_named() {
    let mut state = PartitionState::new(0, 1);
    let fx = state.apply_whole(
        1,
        Event::Start {
            instance_id: id(),
            name: "o".into(),
            version: Some("1".into()),
            input: None,
            scheduled_start_ms: None,
            tags: Default::default(),
            now_ms: 1,
        },
    );
    assert_eq!(version(&state).as_deref(), Some("1"));
    let seq = continue_as_new(&mut state, 2, fx.steps[0].seq, None);
    assert_eq!(version(&state).as_deref(), Some("1"), "kept");
    continue_as_new(&mut state, 3, seq, Some("2"));
    assert_eq!(version(&state).as_deref(), Some("2"), "the new one");
    // The next execution's history starts with that version too.
    let started = state
        .instance(&id())
        .expect("instance")
        .inbox
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ExecutionStarted { version, .. } => Some(version.clone()),
            _ => None,
        });
    assert_eq!(started, Some(Some("2".to_owned())));
}

/// Continue-as-new while a step is out: events raised meanwhile go on to
/// the new execution, answers to the old execution's work do not (their
/// ids would collide with the new execution's).
#[test]
fn continue_as_new_carries_raised_events_but_not_old_answers() {
    let mut state = PartitionState::new(0, 1);
    let fx = state.apply_whole(
        1,
        Event::Start {
            instance_id: id(),
            name: "o".into(),
            version: None,
            input: None,
            scheduled_start_ms: None,
            tags: Default::default(),
            now_ms: 1,
        },
    );
    let schedule = |task: i32| {
        OrchestratorAction::new(
            task,
            ActionKind::ScheduleTask {
                name: "a".into(),
                version: None,
                input: None,
            },
        )
    };
    let fx = common::run_step(
        &mut state,
        &id(),
        2,
        fx.steps[0].seq,
        vec![schedule(0), schedule(1)],
    );
    let execution = fx.activities[0].execution;
    let done = |task_id: i32, lsn: u64| Event::ActivityCompleted {
        instance_id: id(),
        execution,
        task_id,
        outcome: basalt_runtime::ActivityOutcome::Completed(None),
        now_ms: lsn,
    };
    let fx = state.apply_whole(3, done(0, 3));
    let step = state.take_step(&id(), fx.steps[0].seq, 3).expect("offered");
    // After the take: an answer to the old execution and a raised event.
    state.apply_whole(4, done(1, 4));
    state.apply_whole(
        5,
        Event::Raise {
            instance_id: id(),
            name: "go".into(),
            data: None,
            now_ms: 5,
        },
    );
    common::complete(
        &mut state,
        &step,
        6,
        vec![OrchestratorAction::new(
            2,
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::ContinuedAsNew,
                result: None,
                failure: None,
                new_version: None,
                carryover_events: Vec::new(),
            },
        )],
    );
    let kinds: Vec<&EventKind> = state
        .instance(&id())
        .expect("instance")
        .inbox
        .iter()
        .map(|e| &e.kind)
        .collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                EventKind::ExecutionStarted { .. },
                EventKind::EventRaised { .. }
            ]
        ),
        "{kinds:?}"
    );
}
