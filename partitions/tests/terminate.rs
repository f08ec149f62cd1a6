//! A termination that lets the step a worker holds finish first
//! (`ControlOp::TerminateAfterStep`), in the pure state machine.

mod common;

use common::ApplyWhole;

use basalt_partitions::{ControlOp, Event, PartitionState};
use basalt_runtime::{ActionKind, EventKind, InstanceId, OrchestrationStatus, OrchestratorAction};

fn id() -> InstanceId {
    InstanceId::new("t").expect("valid id")
}

/// Starts the instance and has a worker take its first step.
fn held_step(state: &mut PartitionState) -> basalt_partitions::StepTask {
    let fx = common::start(state, &id(), "o", 1);
    state
        .take_step(&id(), fx.steps[0].seq, 2)
        .expect("the step is offered")
}

fn terminate_after_step(state: &mut PartitionState, lsn: u64) {
    state.apply_whole(
        lsn,
        Event::Control {
            instance_id: id(),
            op: ControlOp::TerminateAfterStep,
            reason: Some("\"stop\"".into()),
            now_ms: lsn,
        },
    );
}

fn status(state: &PartitionState) -> OrchestrationStatus {
    state.instance(&id()).expect("instance").meta.status
}

#[test]
fn the_held_steps_result_is_taken_and_then_the_instance_is_terminated() {
    let mut state = PartitionState::new(0, 1);
    let taken = held_step(&mut state);
    terminate_after_step(&mut state, 3);
    assert_ne!(status(&state), OrchestrationStatus::Terminated);
    let schedule = OrchestratorAction::new(
        1,
        ActionKind::ScheduleTask {
            name: "a".into(),
            version: None,
            input: None,
        },
    );
    let fx = common::complete(&mut state, &taken, 4, vec![schedule]);
    assert_eq!(status(&state), OrchestrationStatus::Terminated);
    let instance = state.instance(&id()).expect("instance");
    assert_eq!(instance.meta.output.as_deref(), Some("\"stop\""));
    assert!(
        instance
            .history
            .iter()
            .any(|e| matches!(e.kind, EventKind::TaskScheduled { .. })),
        "the step's action is in the history"
    );
    assert!(instance.inbox.is_empty(), "{:?}", instance.inbox);
    assert!(fx.steps.is_empty(), "no step after the termination");
}

#[test]
fn a_continue_as_new_carries_the_termination_to_the_next_execution() {
    let mut state = PartitionState::new(0, 1);
    let taken = held_step(&mut state);
    terminate_after_step(&mut state, 3);
    let again = OrchestratorAction::new(
        1,
        ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::ContinuedAsNew,
            result: None,
            failure: None,
            new_version: None,
            carryover_events: Vec::new(),
        },
    );
    let fx = common::complete(&mut state, &taken, 4, vec![again]);
    assert_eq!(status(&state), OrchestrationStatus::Terminated);
    assert!(fx.steps.is_empty(), "no step of the next execution");
}

#[test]
fn with_no_step_out_it_terminates_at_once() {
    let mut state = PartitionState::new(0, 1);
    let taken = held_step(&mut state);
    common::complete(
        &mut state,
        &taken,
        3,
        vec![OrchestratorAction::new(
            1,
            ActionKind::CreateTimer {
                fire_at_ms: 1_000_000,
            },
        )],
    );
    terminate_after_step(&mut state, 4);
    assert_eq!(status(&state), OrchestrationStatus::Terminated);
}
