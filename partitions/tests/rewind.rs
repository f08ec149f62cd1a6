//! Rewind of a failed instance in the pure state machine: what is taken out
//! of the history, what is refused.

mod common;

use common::ApplyWhole;

use basalt_partitions::{ControlOp, Event, PartitionState, Reply};
use basalt_runtime::{
    ActionKind, ActivityOutcome, EntityBatchResult, ErrorKind, EventKind, FailureDetails,
    InstanceId, OperationResult, OrchestrationStatus, OrchestratorAction,
};

fn id() -> InstanceId {
    InstanceId::new("o").expect("valid id")
}

fn step(
    state: &mut PartitionState,
    lsn: u64,
    seq: u64,
    actions: Vec<OrchestratorAction>,
) -> basalt_partitions::Effects {
    common::run_step(state, &id(), lsn, seq, actions)
}

fn fail(action_id: i32) -> OrchestratorAction {
    OrchestratorAction::new(
        action_id,
        ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::Failed,
            result: None,
            failure: Some(FailureDetails::new("E", "boom")),
            new_version: None,
            carryover_events: Vec::new(),
        },
    )
}

fn rewind(state: &mut PartitionState, lsn: u64) -> basalt_partitions::Effects {
    state.apply_whole(
        lsn,
        Event::Control {
            instance_id: id(),
            op: ControlOp::Rewind,
            reason: Some("fixed".into()),
            now_ms: lsn,
        },
    )
}

fn started(state: &mut PartitionState) -> u64 {
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
    fx.steps[0].seq
}

#[test]
fn failed_and_unfinished_work_leaves_the_history_and_the_step_starts_with_the_marker() {
    let mut state = PartitionState::new(0, 1);
    let seq = started(&mut state);
    let schedule = |id, name: &str| {
        OrchestratorAction::new(
            id,
            ActionKind::ScheduleTask {
                name: name.into(),
                version: None,
                input: None,
            },
        )
    };
    let fx = step(
        &mut state,
        2,
        seq,
        vec![
            schedule(0, "still-running"),
            OrchestratorAction::new(
                1,
                ActionKind::CreateTimer {
                    fire_at_ms: 1_000_000,
                },
            ),
            schedule(2, "fails"),
        ],
    );
    assert_eq!(fx.activities.len(), 2);
    let fx = state.apply_whole(
        3,
        Event::ActivityCompleted {
            instance_id: id(),
            execution: fx.activities[1].execution,
            task_id: 2,
            outcome: ActivityOutcome::Failed(FailureDetails::new("E", "boom")),
            now_ms: 3,
        },
    );
    let seq = fx.steps[0].seq;
    step(&mut state, 4, seq, vec![fail(3)]);
    assert_eq!(
        state.instance(&id()).expect("instance").meta.status,
        OrchestrationStatus::Failed
    );

    let fx = rewind(&mut state, 5);
    assert!(matches!(fx.reply, Some(Reply::Done)), "{:?}", fx.reply);
    let rewound = &state
        .take_step(&id(), fx.steps[0].seq, 5)
        .expect("the rewound step");
    let kinds: Vec<&EventKind> = rewound.past_events.iter().map(|e| &e.kind).collect();
    assert!(
        !kinds.iter().any(|k| matches!(
            k,
            EventKind::TaskScheduled { .. }
                | EventKind::TaskFailed { .. }
                | EventKind::TimerCreated { .. }
                | EventKind::ExecutionCompleted { .. }
        )),
        "{kinds:?}"
    );
    assert!(matches!(
        rewound.new_events.get(1).map(|e| &e.kind),
        Some(EventKind::ExecutionRewound { .. })
    ));
    assert_eq!(
        state.instance(&id()).expect("instance").meta.status,
        OrchestrationStatus::Running
    );
}

#[test]
fn only_a_failed_instance_outside_a_critical_section_can_be_rewound() {
    let mut state = PartitionState::new(0, 1);
    let seq = started(&mut state);
    let refused = rewind(&mut state, 2);
    match refused.reply {
        Some(Reply::Rejected(error)) => assert_eq!(error.kind(), ErrorKind::Conflict),
        other => panic!("a running instance was rewound: {other:?}"),
    }
    // Lock an entity (same partition: granted inside the step), then fail
    // while holding it.
    let fx = step(
        &mut state,
        3,
        seq,
        vec![OrchestratorAction::new(
            0,
            ActionKind::LockEntities {
                entities: vec!["@e@k".into()],
            },
        )],
    );
    let seq = fx.steps[0].seq;
    step(&mut state, 4, seq, vec![fail(1)]);
    match rewind(&mut state, 5).reply {
        Some(Reply::Rejected(error)) => {
            assert_eq!(error.kind(), ErrorKind::Conflict);
            assert!(error.to_string().contains("critical section"), "{error}");
        }
        other => panic!("rewound inside a critical section: {other:?}"),
    }
}

#[test]
fn an_entity_answer_that_came_while_failed_is_handed_to_the_rewound_execution() {
    let mut state = PartitionState::new(0, 1);
    let seq = started(&mut state);
    // Call an entity (same partition: its batch is issued inside the
    // step) and schedule an activity that will fail.
    let fx = step(
        &mut state,
        2,
        seq,
        vec![
            OrchestratorAction::new(
                0,
                ActionKind::CallEntity {
                    entity: "@counter@a".into(),
                    operation: "get".into(),
                    input: None,
                },
            ),
            OrchestratorAction::new(
                1,
                ActionKind::ScheduleTask {
                    name: "fails".into(),
                    version: None,
                    input: None,
                },
            ),
        ],
    );
    let batch = fx.entity_batches[0].clone();
    let activity = fx.activities[0].clone();
    let fx = state.apply_whole(
        3,
        Event::ActivityCompleted {
            instance_id: id(),
            execution: activity.execution,
            task_id: 1,
            outcome: ActivityOutcome::Failed(FailureDetails::new("E", "boom")),
            now_ms: 3,
        },
    );
    let seq = fx.steps[0].seq;
    step(&mut state, 4, seq, vec![fail(2)]);
    assert_eq!(
        state.instance(&id()).expect("instance").meta.status,
        OrchestrationStatus::Failed
    );
    // The entity answers after the failure: no step, the instance stays
    // failed.
    let fx = state.apply_whole(
        5,
        Event::EntityBatchCompleted {
            entity: batch.entity.clone(),
            seq: batch.seq,
            result: EntityBatchResult {
                state: Some("7".into()),
                results: vec![OperationResult::Completed(Some("7".into()))],
                ..EntityBatchResult::default()
            },
            now_ms: 5,
        },
    );
    assert!(fx.steps.is_empty());
    assert_eq!(
        state.instance(&id()).expect("instance").meta.status,
        OrchestrationStatus::Failed
    );

    let fx = rewind(&mut state, 6);
    let rewound = &state
        .take_step(&id(), fx.steps[0].seq, 6)
        .expect("the rewound step");
    // The call stays in the history, and its answer arrives with the
    // rewind: the operation is not run again.
    assert!(
        rewound
            .past_events
            .iter()
            .any(|e| e.event_id == 0 && matches!(e.kind, EventKind::EntityOperationCalled { .. }))
    );
    assert!(fx.entity_batches.is_empty(), "the call is not sent again");
    let new: Vec<&EventKind> = rewound.new_events.iter().map(|e| &e.kind).collect();
    assert!(
        matches!(new[1], EventKind::ExecutionRewound { .. }),
        "{new:?}"
    );
    assert!(
        matches!(
            new[2],
            EventKind::EntityOperationCompleted { request_id: 0, output } if output.as_deref() == Some("7")
        ),
        "{new:?}"
    );
}

/// An id of `prefix` that routes to `partition` of 2.
fn id_on(prefix: &str, partition: u32) -> InstanceId {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|candidate| basalt_partitions::partition_of(candidate, 2) == partition)
        .and_then(|found| InstanceId::new(found).ok())
        .expect("an id on that partition")
}

fn rewind_recreating(
    state: &mut PartitionState,
    lsn: u64,
    parent: &InstanceId,
    recreate: Vec<InstanceId>,
) -> basalt_partitions::Effects {
    state.apply_whole(
        lsn,
        Event::RewindRecreating {
            instance_id: parent.clone(),
            reason: None,
            recreate,
            now_ms: lsn,
        },
    )
}

/// Partition 0 of 2 with a parent (on it) that created `child` (on
/// partition 1) with `version` and `input` and failed in the same step,
/// never hearing from the child. Returns the state, the parent and the
/// child's first start.
fn parent_failed_beside_its_child(
    child: &InstanceId,
    version: Option<&str>,
    input: Option<&str>,
) -> (PartitionState, InstanceId, Vec<basalt_partitions::Envelope>) {
    let parent = id_on("parent", 0);
    let mut state = PartitionState::new(0, 2);
    let fx = common::start(&mut state, &parent, "p", 1);
    let create = OrchestratorAction::new(
        1,
        ActionKind::CreateSubOrchestration {
            instance_id: child.to_string(),
            name: "c".into(),
            version: version.map(str::to_owned),
            input: input.map(str::to_owned),
        },
    );
    let fx = common::run_step(
        &mut state,
        &parent,
        2,
        fx.steps[0].seq,
        vec![create, fail(2)],
    );
    (state, parent, fx.messages)
}

/// A parent whose child was purged: the rewind starts the child again as
/// its creation recorded it, answering the same action of the same
/// execution; a child it never created is refused and changes nothing.
#[test]
fn a_rewind_starts_a_purged_child_again_as_it_was_created() {
    let child = id_on("child", 1);
    let (mut state, parent, first_start) =
        parent_failed_beside_its_child(&child, Some("2"), Some("\"in\""));
    assert_eq!(first_start.len(), 1, "{first_start:?}");

    let stranger = id_on("stranger", 1);
    match rewind_recreating(&mut state, 4, &parent, vec![stranger]).reply {
        Some(Reply::Rejected(error)) => assert_eq!(error.kind(), ErrorKind::Conflict),
        other => panic!("rewound recreating a stranger: {other:?}"),
    }
    let status = |state: &PartitionState| state.instance(&parent).expect("parent").meta.status;
    assert_eq!(status(&state), OrchestrationStatus::Failed);

    let fx = rewind_recreating(&mut state, 5, &parent, vec![child.clone()]);
    assert!(matches!(fx.reply, Some(Reply::Done)), "{:?}", fx.reply);
    assert_eq!(status(&state), OrchestrationStatus::Running);
    assert_eq!(fx.messages.len(), 1, "{:?}", fx.messages);
    let (again, before) = (&fx.messages[0], &first_start[0]);
    assert_eq!(again.destination, 1);
    // The same start as the first time, from a later position.
    assert_eq!(again.message, before.message);
    assert!(again.position > before.position);
    match &again.message {
        basalt_partitions::Message::StartChild {
            instance_id,
            name,
            version,
            input,
            parent: to,
        } => {
            assert_eq!(instance_id, &child);
            assert_eq!((name.as_str(), version.as_deref()), ("c", Some("2")));
            assert_eq!(input.as_deref(), Some("\"in\""));
            assert_eq!((&to.instance_id, to.task_scheduled_id), (&parent, 1));
        }
        other => panic!("not a child start: {other:?}"),
    }
}

/// A child that completed while its parent was failed, and was purged: the
/// rewind hands the kept answer back and does not run the child again.
#[test]
fn a_purged_child_that_already_answered_is_not_run_again() {
    let child = id_on("child", 1);
    let (mut state, parent, _) = parent_failed_beside_its_child(&child, None, None);
    let execution = state.instance(&parent).expect("parent").execution;
    // The child's success arrives while the parent is failed: kept.
    state.apply_whole(
        3,
        Event::Messages {
            messages: vec![basalt_partitions::Envelope {
                origin: 1,
                position: basalt_partitions::Position { lsn: 1, index: 0 },
                destination: 0,
                message: basalt_partitions::Message::ChildFinished {
                    parent_id: parent.clone(),
                    parent_execution: execution,
                    task_scheduled_id: 1,
                    outcome: Ok(Some("\"done\"".into())),
                },
            }],
            now_ms: 3,
        },
    );
    let fx = rewind_recreating(&mut state, 4, &parent, vec![child]);
    assert!(matches!(fx.reply, Some(Reply::Done)), "{:?}", fx.reply);
    assert!(fx.messages.is_empty(), "started again: {:?}", fx.messages);
    let inbox = &state.instance(&parent).expect("parent").inbox;
    assert!(
        inbox.iter().any(|e| matches!(
            &e.kind,
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id: 1,
                ..
            }
        )),
        "{inbox:?}"
    );
}
