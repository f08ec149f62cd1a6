//! Playing a worker against the pure state machine: take an offered step,
//! complete it with actions.

#![allow(dead_code)]

pub mod workload;

use basalt_partitions::{Effects, Event, PartitionState, StepTask};

/// Applying to a state that is wholly in memory, as these tests keep it:
/// the event is applied whole.
pub trait ApplyWhole {
    /// Applies `event` at `lsn`; panics if a record was not resident.
    fn apply_whole(&mut self, lsn: u64, event: Event) -> Effects;
}

impl ApplyWhole for PartitionState {
    fn apply_whole(&mut self, lsn: u64, event: Event) -> Effects {
        self.apply(lsn, event)
            .into_effects()
            .expect("a state wholly in memory applies events whole")
    }
}
use basalt_runtime::{InstanceId, OrchestrationStepResult, OrchestratorAction};

/// Starts orchestration `name` as `instance` at `lsn` (no input, version,
/// schedule or tags).
pub fn start(state: &mut PartitionState, instance: &InstanceId, name: &str, lsn: u64) -> Effects {
    state.apply_whole(
        lsn,
        Event::Start {
            instance_id: instance.clone(),
            name: name.into(),
            version: None,
            input: None,
            scheduled_start_ms: None,
            tags: Default::default(),
            now_ms: lsn,
        },
    )
}

/// Completes a step a worker took, with `actions`, as event `lsn`.
pub fn complete(
    state: &mut PartitionState,
    taken: &StepTask,
    lsn: u64,
    actions: Vec<OrchestratorAction>,
) -> Effects {
    state.apply_whole(
        lsn,
        Event::StepCompleted {
            instance_id: taken.instance_id.clone(),
            seq: taken.seq,
            consumed: taken.consumed(),
            started_ms: taken.started_ms(),
            result: OrchestrationStepResult {
                actions,
                custom_status: None,
            },
            now_ms: lsn,
        },
    )
}

/// Takes the offered step `seq` of `instance` and completes it at once.
pub fn run_step(
    state: &mut PartitionState,
    instance: &InstanceId,
    lsn: u64,
    seq: u64,
    actions: Vec<OrchestratorAction>,
) -> Effects {
    let taken = state
        .take_step(instance, seq, lsn)
        .expect("the step is offered");
    complete(state, &taken, lsn, actions)
}
