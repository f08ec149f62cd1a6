//! A random but valid-looking workload played against a live partition:
//! the log the I2 tests replay.

use std::collections::HashMap;

use basalt_partitions::{
    ActivityTask, ControlOp, EntityBatchTask, Envelope, Event, PartitionState, StepOffer, StepTask,
    TimerTask,
};
use basalt_runtime::{
    ActionKind, ActivityOutcome, EntityBatchResult, EntityId, EntityOperation, EntitySignal,
    EntityStartedOrchestration, FailureDetails, InstanceId, OperationResult, OrchestrationStatus,
    OrchestrationStepResult, OrchestratorAction,
};

use super::ApplyWhole;

/// Small deterministic generator: a seed is a whole scenario.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

pub fn id(n: usize) -> InstanceId {
    InstanceId::new(format!("i{n}")).expect("valid id")
}

/// Plays a random but valid-looking workload; returns the log.
///
/// The live partition is partition 0 of 2. Messages it sends to itself take
/// effect inside the event that sends them; those for partition 1 are
/// played back to it by a mirroring peer (origin 1), with resends, and acked,
/// so the message, dedup and ack paths are exercised too.
pub fn generate(seed: u64, length: usize) -> (Vec<Event>, PartitionState) {
    let mut rng = Rng(seed);
    let mut live = PartitionState::new(0, 2);
    let mut log = Vec::new();
    // Steps offered, and steps a worker took (their events were read
    // then; more may arrive before the completion).
    let mut offers: Vec<StepOffer> = Vec::new();
    let mut steps: Vec<StepTask> = Vec::new();
    let mut activities: Vec<ActivityTask> = Vec::new();
    let mut completed_activities: Vec<ActivityTask> = Vec::new();
    let mut timers: Vec<TimerTask> = Vec::new();
    let mut messages: Vec<Envelope> = Vec::new();
    let mut delivered: Vec<Envelope> = Vec::new();
    let mut next_action: HashMap<InstanceId, i32> = HashMap::new();
    let mut batches: Vec<EntityBatchTask> = Vec::new();
    let entity = |n: usize| EntityId::new("e", format!("k{n}")).expect("entity id");
    let mut now = 1_000u64;
    while log.len() < length {
        now += 1 + rng.below(50) as u64;
        // Now and then an hour passes (instances land in several buckets
        // of the time index).
        if rng.below(60) == 0 {
            now += 3_600_000;
        }
        let event = match rng.below(14) {
            12 => Event::SignalEntity {
                entity: entity(rng.below(4)),
                operation: EntityOperation {
                    name: "op".into(),
                    input: Some(rng.below(9).to_string()),
                },
                scheduled_ms: (rng.below(4) == 0).then_some(now + 50),
                now_ms: now,
            },
            13 if !batches.is_empty() => {
                let batch = batches.remove(rng.below(batches.len()));
                let seq = if rng.below(10) == 0 {
                    batch.seq + 3
                } else {
                    batch.seq
                };
                Event::EntityBatchCompleted {
                    entity: batch.entity,
                    seq,
                    result: EntityBatchResult {
                        state: (rng.below(4) != 0).then(|| rng.below(100).to_string()),
                        results: vec![OperationResult::Completed(None); batch.operations.len()],
                        signals: if rng.below(3) == 0 {
                            vec![EntitySignal {
                                entity: entity(rng.below(4)),
                                operation: EntityOperation {
                                    name: "ping".into(),
                                    input: None,
                                },
                                // Some signals are delayed: a durable timer
                                // at the receiver.
                                scheduled_ms: (rng.below(2) == 0)
                                    .then(|| now + rng.below(50) as u64),
                            }]
                        } else {
                            Vec::new()
                        },
                        orchestrations: if rng.below(8) == 0 {
                            vec![EntityStartedOrchestration {
                                instance_id: id(rng.below(6)),
                                name: "o".into(),
                                version: None,
                                input: Some("\"from an entity\"".into()),
                                scheduled_start_ms: (rng.below(2) == 0).then(|| now + 20),
                            }]
                        } else {
                            Vec::new()
                        },
                    },
                    now_ms: now,
                }
            }
            0 | 1 => Event::Start {
                instance_id: id(rng.below(6)),
                name: if rng.below(3) == 0 { "o2" } else { "o" }.into(),
                version: None,
                input: Some(rng.below(100).to_string()),
                scheduled_start_ms: (rng.below(5) == 0).then_some(now + 100),
                tags: Default::default(),
                now_ms: now,
            },
            2 => Event::Raise {
                instance_id: id(rng.below(8)),
                name: format!("e{}", rng.below(2)),
                data: None,
                now_ms: now,
            },
            // Now and then a rewind that also starts a (purged) child again.
            3 if rng.below(8) == 0 => Event::RewindRecreating {
                instance_id: id(rng.below(8)),
                reason: None,
                recreate: vec![InstanceId::new(format!("c{}", rng.below(4))).expect("valid id")],
                now_ms: now,
            },
            3 => Event::Control {
                instance_id: id(rng.below(8)),
                op: [
                    ControlOp::Terminate,
                    ControlOp::Suspend,
                    ControlOp::Resume,
                    ControlOp::Rewind,
                    ControlOp::TerminateAfterStep,
                ][rng.below(5)],
                reason: None,
                now_ms: now,
            },
            4 => Event::Purge {
                instance_id: id(rng.below(8)),
            },
            5 if !offers.is_empty() => {
                // A worker takes a step: no event, only a read.
                let offer = offers.remove(rng.below(offers.len()));
                if let Some(task) = live.take_step(&offer.instance_id, offer.seq, now) {
                    steps.push(task);
                }
                continue;
            }
            6 | 7 if !steps.is_empty() => {
                let step = steps.remove(rng.below(steps.len()));
                let counter = next_action.entry(step.instance_id.clone()).or_insert(0);
                let mut actions = Vec::new();
                for _ in 0..rng.below(3) {
                    let kind = match rng.below(8) {
                        6 => ActionKind::LockEntities {
                            entities: vec![
                                format!("@e@k{}", rng.below(2)),
                                format!("@e@k{}", 2 + rng.below(2)),
                            ],
                        },
                        7 => ActionKind::UnlockEntities {
                            entities: vec![format!("@e@k{}", rng.below(4))],
                        },
                        4 => ActionKind::SignalEntity {
                            entity: format!("@e@k{}", rng.below(4)),
                            operation: "op".into(),
                            input: None,
                            // Some are delayed: kept at the entity on a timer.
                            scheduled_ms: (rng.below(3) == 0).then_some(now + 50),
                        },
                        5 => ActionKind::CallEntity {
                            entity: format!("@e@k{}", rng.below(4)),
                            operation: "op".into(),
                            input: None,
                        },
                        0 => ActionKind::ScheduleTask {
                            name: "a".into(),
                            version: None,
                            input: None,
                        },
                        1 => ActionKind::CreateTimer {
                            fire_at_ms: now + rng.below(100) as u64,
                        },
                        2 => ActionKind::SendEvent {
                            instance_id: format!("i{}", rng.below(6)),
                            name: "e0".into(),
                            data: None,
                        },
                        _ => ActionKind::CreateSubOrchestration {
                            instance_id: format!("c{}", rng.below(4)),
                            name: "o".into(),
                            version: None,
                            input: None,
                        },
                    };
                    actions.push(OrchestratorAction::new(*counter, kind));
                    *counter += 1;
                }
                if rng.below(4) == 0 {
                    let status = [
                        OrchestrationStatus::Completed,
                        OrchestrationStatus::Failed,
                        OrchestrationStatus::ContinuedAsNew,
                    ][rng.below(3)];
                    actions.push(OrchestratorAction {
                        id: *counter,
                        kind: ActionKind::CompleteOrchestration {
                            status,
                            result: Some("1".into()),
                            failure: (status == OrchestrationStatus::Failed)
                                .then(|| FailureDetails::new("E", "m")),
                            new_version: None,
                            carryover_events: Vec::new(),
                        },
                        correlation: None,
                    });
                    *counter = 0;
                }
                // Sometimes the completion carries a stale sequence number:
                // it is refused and the step stays out.
                let seq = if rng.below(10) == 0 {
                    step.seq + 7
                } else {
                    step.seq
                };
                Event::StepCompleted {
                    consumed: step.consumed(),
                    started_ms: step.started_ms(),
                    instance_id: step.instance_id,
                    seq,
                    result: OrchestrationStepResult {
                        actions,
                        custom_status: Some(format!("{}", rng.below(3))),
                    },
                    now_ms: now,
                }
            }
            8 if !activities.is_empty() || !completed_activities.is_empty() => {
                // Mostly a first completion; sometimes a duplicate (I4).
                let task = if rng.below(5) == 0 && !completed_activities.is_empty() {
                    completed_activities[rng.below(completed_activities.len())].clone()
                } else if !activities.is_empty() {
                    let task = activities.remove(rng.below(activities.len()));
                    completed_activities.push(task.clone());
                    task
                } else {
                    continue;
                };
                Event::ActivityCompleted {
                    instance_id: task.instance_id,
                    execution: task.execution,
                    task_id: task.task_id,
                    outcome: if rng.below(4) == 0 {
                        ActivityOutcome::Failed(FailureDetails::new("E", "boom"))
                    } else {
                        ActivityOutcome::Completed(Some("2".into()))
                    },
                    now_ms: now,
                }
            }
            9 if !timers.is_empty() => {
                let timer = timers.remove(rng.below(timers.len()));
                Event::TimerFired {
                    instance_id: timer.instance_id,
                    execution: timer.execution,
                    timer_id: timer.timer_id,
                    fire_at_ms: timer.fire_at_ms,
                    now_ms: now.max(timer.fire_at_ms),
                }
            }
            10 if !messages.is_empty() || !delivered.is_empty() => {
                // Deliver a prefix in order, sometimes resending old ones (I3).
                let mut batch: Vec<Envelope> = Vec::new();
                if rng.below(4) == 0 && !delivered.is_empty() {
                    let from = rng.below(delivered.len());
                    batch.extend(delivered[from..].iter().cloned());
                }
                let take = 1 + rng.below(messages.len().max(1));
                let fresh: Vec<Envelope> = messages.drain(..take.min(messages.len())).collect();
                delivered.extend(fresh.iter().cloned());
                batch.extend(fresh);
                Event::Messages {
                    messages: batch,
                    now_ms: now,
                }
            }
            11 if !delivered.is_empty() => Event::OutboxAcked {
                destination: 1,
                up_to: delivered[rng.below(delivered.len())].position,
            },
            _ => continue,
        };
        let lsn = log.len() as u64 + 1;
        let fx = live.apply_whole(lsn, event.clone());
        log.push(event);
        offers.extend(fx.steps);
        activities.extend(fx.activities);
        batches.extend(fx.entity_batches);
        timers.extend(fx.timers);
        // The peer plays our messages for partition 1 back to us.
        messages.extend(fx.messages.into_iter().map(|mut envelope| {
            envelope.origin = 1;
            envelope.destination = 0;
            envelope
        }));
    }
    (log, live)
}
