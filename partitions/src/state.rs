//! The state of one partition and the pure function that changes it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use basalt_runtime::{
    ActionKind, ActivityOutcome, EntityId, EntityOperation, EntityQuery, EntityState, Error,
    EventKind, FailureDetails, HistoryEvent, InstanceId, InstanceQuery, InstanceState,
    OperationResult, OrchestrationStatus, OrchestrationStepResult, ParentInstance,
};
use serde::{Deserialize, Serialize};

use crate::event::{
    ActivityTask, Caller, ControlOp, Effects, EntityBatchTask, Envelope, Event, LockChain, Message,
    Position, QueueItem, QueuedOperation, Reply, SIGNAL_TIMER_ID, START_TIMER_ID, StepOffer,
    StepTask, TimerTask,
};
use crate::hosted::{HostedInstance, WorkerQueue};
use crate::routing::partition_of;
use crate::tier::Tier;

/// Most history events an execution may have: a step that would take it
/// past this fails the instance (`HistoryTooLarge`) instead. Each step
/// carries the whole history to a worker, so a longer one costs every
/// step more; an orchestration that runs for ever continues as new.
pub const HISTORY_EVENTS_MAX: usize = 50_000;

/// One orchestration instance as its partition keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// What clients see.
    pub meta: InstanceState,
    /// Generation: bumped by continue-as-new and by a start that replaces a
    /// finished instance, so completions of an older generation are dropped.
    pub execution: u64,
    /// The current execution's history.
    pub history: Arc<Vec<HistoryEvent>>,
    /// Events that arrived and are not yet in the history. While a step
    /// is out, its first events are the step's (how many is known when a
    /// worker takes it: `StepCompleted::consumed`); the inbox only grows
    /// until the step completes, is abandoned or the instance is reset.
    pub inbox: Vec<HistoryEvent>,
    /// The sequence number of the step offered or handed to a worker.
    pub step: Option<u64>,
    /// Waiting for its scheduled start time (a start timer is armed).
    pub awaiting_start: bool,
    /// Its armed durable timers. Kept with the instance, so ending it drops
    /// them without looking at any other instance's.
    pub timers: std::collections::BTreeSet<TimerTask>,
    /// A lock request not yet granted: (lock action id, entities).
    pub lock_request: Option<(i32, Vec<EntityId>)>,
    /// Entities it holds locked (a granted critical section).
    pub locks_held: Vec<EntityId>,
    /// Activities scheduled and not completed: task id -> task.
    pub activities: BTreeMap<i32, ActivityTask>,
    /// Answers to entity calls and sub-orchestrations that arrived after
    /// the instance failed. Unlike an activity or a timer, such work
    /// cannot be issued again (an operation would run twice), so a rewind
    /// hands these to the rewound execution; anything else drops them.
    pub late_answers: Vec<HistoryEvent>,
}

/// Most operations handed to a worker in one entity batch.
pub const ENTITY_BATCH_OPERATIONS_MAX: usize = 100;

/// A durable entity as its partition keeps it: a value and a queue. It
/// exists (for clients) while it has state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// Its address.
    pub id: EntityId,
    /// Its state (JSON), if it has one.
    pub state: Option<String>,
    /// Operations and lock requests waiting, in arrival order.
    pub queue: std::collections::VecDeque<QueueItem>,
    /// The orchestration execution holding this entity's lock, if any: only
    /// its calls run until it unlocks.
    pub lock: Option<Caller>,
    /// Signals scheduled for later, each with the timer that delivers it.
    pub delayed: BTreeMap<TimerTask, EntityOperation>,
    /// The batch handed to a worker, if any: (seq, its operations).
    pub batch: Option<(u64, Vec<QueuedOperation>)>,
    /// When its state last changed.
    pub last_modified_ms: u64,
}

/// A record the state machine reads or changes: one instance or one entity.
/// Every unit of work inside an event touches exactly one (see
/// [`PartitionState::apply`]), so the engine can load it first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateKey {
    /// An orchestration instance.
    Instance(InstanceId),
    /// An entity, by its instance id (`@name@key`).
    Entity(InstanceId),
    /// A hosted instance (`crate::hosted`).
    Hosted(InstanceId),
    /// The worker items of a hosted instance that belong to no session.
    HostedWork(InstanceId),
    /// A hosted session: its claim and its worker items.
    HostedSession(InstanceId),
}

/// The partition-wide part of the state: small, always in memory, written
/// whole with every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Core {
    /// This partition's number.
    pub partition: u32,
    /// Partitions in the task hub.
    pub partition_count: u32,
    /// LSN of the last applied event.
    pub last_lsn: u64,
    /// Messages sent and not yet acknowledged, by (destination, position).
    pub outbox: BTreeMap<(u32, Position), Envelope>,
    /// Highest position processed per origin partition (I3).
    pub received: BTreeMap<u32, Position>,
    /// Next execution (generation) number. Partition-wide and never reused,
    /// even across purge and restart of an id, so a completion addressed to
    /// an older generation can never match a newer one (I4).
    pub next_execution: u64,
    /// Next step sequence number, partition-wide for the same reason
    /// (entity batches draw from it too).
    pub next_step_seq: u64,
    /// Instances by status, resident or not (for metrics).
    pub instances_by_status: BTreeMap<OrchestrationStatus, u64>,
    /// Entities that exist for clients (those with state), resident or not.
    pub entities_with_state: u64,
}

/// The whole state of a partition: a pure function of its log (I2).
///
/// Instances and entities live in two tiers: the partition's store holds
/// every record as of the last checkpoint, memory ([`Tier`]) holds the
/// records changed since and a bounded cache of the rest. Applying an event
/// never does I/O: it stops with [`Applied::Suspended`] naming the record
/// it needs, and the engine loads it and calls [`PartitionState::resume`].
/// The result is the same whatever was resident (checked by
/// `tests/eviction.rs`).
#[derive(Debug)]
pub struct PartitionState {
    /// This partition's number.
    pub partition: u32,
    /// Partitions in the task hub.
    pub partition_count: u32,
    /// LSN of the last applied event.
    pub last_lsn: u64,
    /// Instances by id.
    pub instances: Tier<Instance>,
    /// Messages sent and not yet acknowledged, by (destination, position).
    pub outbox: BTreeMap<(u32, Position), Envelope>,
    /// Highest position processed per origin partition (I3).
    pub received: BTreeMap<u32, Position>,
    /// Next execution (generation) number (see [`Core::next_execution`]).
    pub next_execution: u64,
    /// Next step sequence number (see [`Core::next_step_seq`]).
    pub next_step_seq: u64,
    /// Entities by their instance id (`@name@key`).
    pub entities: Tier<Entity>,
    /// Instances by status (see [`Core::instances_by_status`]).
    pub instances_by_status: BTreeMap<OrchestrationStatus, u64>,
    /// Entities with state (see [`Core::entities_with_state`]).
    pub entities_with_state: u64,
    /// Every instance in the store is in its status index (see
    /// `checkpoint::STATUS_INDEX_KEY`): true for a partition whose store
    /// was empty, or whose store says so; checkpoints then say so too.
    pub status_indexed: bool,
    /// Every instance in the store is in its time and name indexes (see
    /// `checkpoint::NAME_TIME_INDEX_KEY`), as `status_indexed` is for the
    /// status index.
    pub name_time_indexed: bool,
    /// Hosted instances by id (`crate::hosted`).
    pub hosted: Tier<HostedInstance>,
    /// Hosted worker items of no session, by instance.
    pub hosted_work: Tier<WorkerQueue>,
    /// Hosted sessions with their worker items, by session id.
    pub hosted_sessions: Tier<WorkerQueue>,
    /// The hosted records with something queued, so the fetchers' looks
    /// read those instead of every resident record. Derived (never
    /// encoded), kept from every hosted change and install.
    pub hosted_queued: crate::hosted::HostedQueued,
}

/// One unit of an event's work; each touches at most one record.
#[derive(Debug)]
enum Work {
    /// The event itself (any but `Messages`).
    Event(Event),
    /// One message of a `Messages` event, at that event's time.
    Delivery(Envelope, u64),
    /// A message this event sent to its own partition.
    Local(Message),
}

impl Work {
    fn key(&self) -> Option<StateKey> {
        match self {
            Work::Event(event) => event.key(),
            Work::Delivery(envelope, _) => envelope.message.key(),
            Work::Local(message) => message.key(),
        }
    }
}

/// An event applied part of the way, waiting for the engine to load the
/// record it needs next ([`Suspended::missing`]). Nothing else may be
/// applied to the partition until it is resumed.
#[derive(Debug)]
pub struct Suspended {
    progress: Progress,
    missing: StateKey,
}

/// Where an event's work stands.
#[derive(Debug)]
struct Progress {
    now: Option<u64>,
    work: VecDeque<Work>,
    out: Outgoing,
    fx: Effects,
}

impl Suspended {
    /// The record to load before resuming.
    pub fn missing(&self) -> &StateKey {
        &self.missing
    }
}

/// The outcome of applying (or resuming) an event.
#[derive(Debug)]
#[must_use]
pub enum Applied {
    /// Applied whole: what the engine must do.
    Done(Effects),
    /// Waiting for a record to be loaded.
    Suspended(Suspended),
}

impl Applied {
    /// The effects, if the event was applied whole. A state that is wholly
    /// in memory (never evicted) always applies whole.
    pub fn into_effects(self) -> Option<Effects> {
        match self {
            Applied::Done(fx) => Some(fx),
            Applied::Suspended(_) => None,
        }
    }
}

impl PartitionState {
    /// An empty partition.
    pub fn new(partition: u32, partition_count: u32) -> PartitionState {
        PartitionState::from_core(
            Core {
                partition,
                partition_count,
                next_step_seq: 1,
                ..Core::default()
            },
            true,
        )
    }

    /// A partition whose records are in a store: only `core` in memory.
    /// `complete` says the store is empty (nothing to load, ever).
    pub fn from_core(core: Core, complete: bool) -> PartitionState {
        fn tier<V>(complete: bool) -> Tier<V> {
            if complete {
                Tier::new()
            } else {
                Tier::backed()
            }
        }
        PartitionState {
            partition: core.partition,
            partition_count: core.partition_count,
            last_lsn: core.last_lsn,
            instances: tier(complete),
            outbox: core.outbox,
            received: core.received,
            next_execution: core.next_execution,
            next_step_seq: core.next_step_seq,
            entities: tier(complete),
            instances_by_status: core.instances_by_status,
            entities_with_state: core.entities_with_state,
            status_indexed: complete,
            name_time_indexed: complete,
            hosted: tier(complete),
            hosted_work: tier(complete),
            hosted_sessions: tier(complete),
            hosted_queued: crate::hosted::HostedQueued::default(),
        }
    }

    /// The partition-wide part, for a checkpoint.
    pub fn core(&self) -> Core {
        Core {
            partition: self.partition,
            partition_count: self.partition_count,
            last_lsn: self.last_lsn,
            outbox: self.outbox.clone(),
            received: self.received.clone(),
            next_execution: self.next_execution,
            next_step_seq: self.next_step_seq,
            instances_by_status: self.instances_by_status.clone(),
            entities_with_state: self.entities_with_state,
        }
    }

    /// Whether the state machine may touch `key` now (it is resident or
    /// known not to exist).
    pub fn knows(&self, key: &StateKey) -> bool {
        match key {
            StateKey::Instance(id) => self.instances.knows(id),
            StateKey::Entity(id) => self.entities.knows(id),
            StateKey::Hosted(id) => self.hosted.knows(id),
            StateKey::HostedWork(id) => self.hosted_work.knows(id),
            StateKey::HostedSession(id) => self.hosted_sessions.knows(id),
        }
    }

    /// Marks a record as just used (eviction takes it last).
    pub fn touch(&mut self, key: &StateKey) {
        match key {
            StateKey::Instance(id) => self.instances.touch(id),
            StateKey::Entity(id) => self.entities.touch(id),
            StateKey::Hosted(id) => self.hosted.touch(id),
            StateKey::HostedWork(id) => self.hosted_work.touch(id),
            StateKey::HostedSession(id) => self.hosted_sessions.touch(id),
        }
    }

    /// Touches of records that were not resident, which the key
    /// declarations should have made impossible: non-zero means a bug, and
    /// the engine stops the partition rather than trust its state.
    pub fn undeclared_touches(&self) -> u64 {
        self.instances.undeclared_touches()
            + self.entities.undeclared_touches()
            + self.hosted.undeclared_touches()
            + self.hosted_work.undeclared_touches()
            + self.hosted_sessions.undeclared_touches()
    }

    /// Estimated memory of the resident records.
    pub fn resident_bytes(&self) -> usize {
        self.instances.resident_bytes()
            + self.entities.resident_bytes()
            + self.hosted_resident_bytes()
    }

    /// Estimated memory of the resident hosted records.
    fn hosted_resident_bytes(&self) -> usize {
        self.hosted.resident_bytes()
            + self.hosted_work.resident_bytes()
            + self.hosted_sessions.resident_bytes()
    }

    /// Drops clean records, finished instances first and least recently
    /// used first, until the resident estimate is at most `budget_bytes`;
    /// returns how many were dropped.
    pub fn evict_to(&mut self, budget_bytes: usize) -> usize {
        let entity_share = self.entities.resident_bytes() + self.hosted_resident_bytes();
        let instance_budget = budget_bytes.saturating_sub(entity_share);
        let mut evicted = self.instances.evict_keeping_cold(
            instance_budget,
            |i| i.meta.status.is_terminal(),
            |i| crate::codec::encode_instance(i).ok(),
        );
        let instance_share = self.instances.resident_bytes();
        let hosted_share = self.hosted_resident_bytes();
        evicted += self.entities.evict_keeping_cold(
            budget_bytes.saturating_sub(instance_share + hosted_share),
            |_| false,
            |e| crate::codec::encode_entity(e).ok(),
        );
        // Hosted records with nothing queued or locked are settled; the
        // rest stay (encoded at worst), as running work does.
        let others = self.instances.resident_bytes() + self.entities.resident_bytes();
        let hosted_budget = budget_bytes.saturating_sub(others);
        evicted += self.hosted.evict_keeping_cold(
            hosted_budget,
            |h| h.queue.is_empty() && h.lock.is_none(),
            |h| crate::codec::encode_hosted(h).ok(),
        );
        evicted += self.hosted_work.evict_keeping_cold(
            hosted_budget.saturating_sub(self.hosted.resident_bytes()),
            WorkerQueue::is_empty,
            |q| crate::codec::encode_work(q).ok(),
        );
        evicted += self.hosted_sessions.evict_keeping_cold(
            hosted_budget
                .saturating_sub(self.hosted.resident_bytes() + self.hosted_work.resident_bytes()),
            WorkerQueue::is_empty,
            |q| crate::codec::encode_work(q).ok(),
        );
        evicted
    }

    /// The number of instances with each status, over both tiers.
    fn census(&mut self, key: &StateKey, add: bool) {
        match key {
            StateKey::Instance(id) => {
                let Some(status) = self.instances.get(id).map(|i| i.meta.status) else {
                    return;
                };
                let count = self.instances_by_status.entry(status).or_insert(0);
                if add {
                    *count += 1;
                } else {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.instances_by_status.remove(&status);
                    }
                }
            }
            StateKey::Hosted(_) | StateKey::HostedWork(_) | StateKey::HostedSession(_) => {}
            StateKey::Entity(id) => {
                if self.entities.get(id).is_some_and(|e| e.state.is_some()) {
                    if add {
                        self.entities_with_state += 1;
                    } else {
                        self.entities_with_state = self.entities_with_state.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// Checks a client request against the current state without changing
    /// it. `Err` means the request is refused and need not be logged.
    pub fn check(&self, event: &Event) -> Result<(), Error> {
        match event {
            Event::Start { instance_id, .. } => match self.instances.get(instance_id) {
                Some(instance) if !instance.meta.status.is_terminal() => {
                    Err(Error::Conflict(format!(
                        "instance {instance_id} already exists and is {}",
                        instance.meta.status
                    )))
                }
                _ => Ok(()),
            },
            Event::RewindRecreating {
                instance_id,
                recreate,
                ..
            } => {
                self.check(&Event::Control {
                    instance_id: instance_id.clone(),
                    op: ControlOp::Rewind,
                    reason: None,
                    now_ms: 0,
                })?;
                let history = self
                    .instances
                    .get(instance_id)
                    .map(|i| i.history.as_slice())
                    .unwrap_or_default();
                match recreate
                    .iter()
                    .find(|child| created_child(history, child).is_none())
                {
                    Some(child) => Err(Error::Conflict(format!(
                        "{child} is not a sub-orchestration instance {instance_id} created"
                    ))),
                    None => Ok(()),
                }
            }
            Event::Control {
                instance_id,
                op: ControlOp::Rewind,
                ..
            } => match self.instances.get(instance_id) {
                None => Err(Error::NotFound(instance_id.to_string())),
                Some(instance) if instance.meta.status != OrchestrationStatus::Failed => {
                    Err(Error::Conflict(format!(
                        "instance {instance_id} is {}; only a failed instance can be rewound",
                        instance.meta.status
                    )))
                }
                Some(instance) => match basalt_runtime::rewind_obstacle(&instance.history) {
                    Some(why) => Err(Error::Conflict(format!(
                        "instance {instance_id} cannot be rewound: {why}; restart it instead"
                    ))),
                    None => Ok(()),
                },
            },
            Event::Raise { instance_id, .. } | Event::Control { instance_id, .. } => {
                if self.instances.contains_key(instance_id) {
                    Ok(())
                } else {
                    Err(Error::NotFound(instance_id.to_string()))
                }
            }
            Event::Purge { instance_id } => match self.instances.get(instance_id) {
                Some(instance) if !instance.meta.status.is_terminal() => {
                    Err(Error::Conflict(format!(
                        "instance {instance_id} is {}; only finished instances can be purged",
                        instance.meta.status
                    )))
                }
                _ => Ok(()),
            },
            Event::StepCompleted {
                instance_id,
                seq,
                consumed,
                ..
            } => match self.instances.get(instance_id) {
                // A step holds at least one inbox event, and never more
                // than the inbox has (it only grows while the step is out).
                Some(i)
                    if i.step == Some(*seq)
                        && *consumed >= 1
                        && *consumed as usize <= i.inbox.len() =>
                {
                    Ok(())
                }
                _ => Err(Error::StaleToken(format!("{instance_id}#{seq}"))),
            },
            // A completion for an activity that is not outstanding (done
            // already, from an earlier execution, never scheduled) changes
            // nothing; the worker is told so.
            Event::ActivityCompleted {
                instance_id,
                execution,
                task_id,
                ..
            } => match self.instances.get(instance_id) {
                Some(i) if i.execution == *execution && i.activities.contains_key(task_id) => {
                    Ok(())
                }
                _ => Err(Error::StaleToken(format!(
                    "{instance_id} activity {task_id} of execution {execution}"
                ))),
            },
            Event::StepAbandoned {
                instance_id, seq, ..
            } => match self.instances.get(instance_id) {
                Some(i) if i.step == Some(*seq) => Ok(()),
                _ => Err(Error::StaleToken(format!("{instance_id}#{seq}"))),
            },
            Event::EntityBatchCompleted { entity, seq, .. }
            | Event::EntityBatchAbandoned { entity, seq } => {
                match self
                    .entities
                    .get(&entity.instance_id())
                    .and_then(|e| e.batch.as_ref())
                {
                    Some((current, _)) if current == seq => Ok(()),
                    _ => Err(Error::StaleToken(format!("{entity}#{seq}"))),
                }
            }
            Event::Hosted { event, now_ms } => self.check_hosted(event, *now_ms),
            _ => Ok(()),
        }
    }

    /// Applies one event at `lsn`: the only way partition state changes.
    ///
    /// The event's work is a queue of units, each touching one record: the
    /// event itself, or each message of a `Messages` event, then every
    /// message it sends to this partition, in order (they take effect as
    /// part of this event: its log record makes them durable, so they need
    /// no outbox, ack or dedup). Before a unit runs, its record must be
    /// resident; if it is not, the event stops there ([`Applied::Suspended`])
    /// with everything before it applied, and [`PartitionState::resume`]
    /// continues it once the engine has loaded the record. The units run in
    /// the same order either way, so the result does not depend on what
    /// was resident (I2).
    pub fn apply(&mut self, lsn: u64, event: Event) -> Applied {
        debug_assert!(lsn > self.last_lsn, "LSNs must increase");
        self.last_lsn = lsn;
        self.instances.set_lsn(lsn);
        self.entities.set_lsn(lsn);
        self.hosted.set_lsn(lsn);
        self.hosted_work.set_lsn(lsn);
        self.hosted_sessions.set_lsn(lsn);
        let now = event.now_ms();
        let work = match event {
            Event::Messages { messages, now_ms } => messages
                .into_iter()
                .map(|envelope| Work::Delivery(envelope, now_ms))
                .collect(),
            event => VecDeque::from([Work::Event(event)]),
        };
        self.run(Progress {
            now,
            work,
            out: Outgoing::new(self.partition, lsn),
            fx: Effects::default(),
        })
    }

    /// Continues an event once the record it waited for is loaded.
    pub fn resume(&mut self, suspended: Suspended) -> Applied {
        self.run(suspended.progress)
    }

    fn run(&mut self, mut at: Progress) -> Applied {
        while let Some(next) = at.work.front() {
            let key = next.key();
            if let Some(key) = &key
                && !self.knows(key)
            {
                return Applied::Suspended(Suspended {
                    missing: key.clone(),
                    progress: at,
                });
            }
            let Some(next) = at.work.pop_front() else {
                break;
            };
            if let Some(key) = &key {
                self.census(key, false);
            }
            match next {
                Work::Event(event) => match self.check(&event) {
                    Err(rejection) => at.fx.reply = Some(Reply::Rejected(rejection)),
                    Ok(()) => self.handle(event, &mut at.out, &mut at.fx),
                },
                Work::Delivery(envelope, now_ms) => {
                    self.accept(envelope, now_ms, &mut at.out, &mut at.fx)
                }
                Work::Local(message) => {
                    if let Some(now_ms) = at.now {
                        self.receive(message, now_ms, &mut at.out, &mut at.fx);
                    }
                }
            }
            if let Some(key) = &key {
                self.census(key, true);
            }
            // Messages to this partition take effect at once, in order, as
            // part of this event (events without a time send theirs on).
            if at.now.is_some() {
                let mut index = 0;
                while index < at.out.messages.len() {
                    if at.out.messages[index].destination == self.partition {
                        let envelope = at.out.messages.remove(index);
                        at.work.push_back(Work::Local(envelope.message));
                    } else {
                        index += 1;
                    }
                }
            }
        }
        for envelope in at.out.messages {
            self.outbox
                .insert((envelope.destination, envelope.position), envelope.clone());
            at.fx.messages.push(envelope);
        }
        Applied::Done(at.fx)
    }

    /// Takes one message of a `Messages` event, unless it is a duplicate.
    fn accept(&mut self, envelope: Envelope, now_ms: u64, out: &mut Outgoing, fx: &mut Effects) {
        let seen = self.received.get(&envelope.origin).copied();
        if let Some(seen) = seen
            && envelope.position <= seen
        {
            // A duplicate after a resend (I3): drop it, but ack again,
            // since the first ack may have been lost.
            fx.acks.retain(|(o, _)| *o != envelope.origin);
            fx.acks.push((envelope.origin, seen));
            return;
        }
        self.received.insert(envelope.origin, envelope.position);
        fx.acks.retain(|(o, _)| *o != envelope.origin);
        fx.acks.push((envelope.origin, envelope.position));
        self.receive(envelope.message, now_ms, out, fx);
    }

    /// Applies an event whose record is resident (and which `check` let
    /// through).
    fn handle(&mut self, event: Event, out: &mut Outgoing, fx: &mut Effects) {
        match event {
            Event::Start {
                instance_id,
                name,
                version,
                input,
                scheduled_start_ms,
                tags,
                now_ms,
            } => {
                self.create(
                    instance_id,
                    name,
                    version,
                    input,
                    scheduled_start_ms,
                    None,
                    tags,
                    now_ms,
                    fx,
                );
                fx.reply = Some(Reply::Done);
            }
            Event::Raise {
                instance_id,
                name,
                data,
                now_ms,
            } => {
                self.deliver(
                    &instance_id,
                    EventKind::EventRaised { name, input: data },
                    now_ms,
                    fx,
                );
                fx.reply = Some(Reply::Done);
            }
            Event::Control {
                instance_id,
                op,
                reason,
                now_ms,
            } => {
                self.control(&instance_id, op, reason, now_ms, out, fx);
                fx.reply = Some(Reply::Done);
            }
            Event::RewindRecreating {
                instance_id,
                reason,
                recreate,
                now_ms,
            } => {
                let failed = self
                    .instances
                    .get(&instance_id)
                    .is_some_and(|i| i.meta.status == OrchestrationStatus::Failed);
                self.control(&instance_id, ControlOp::Rewind, reason, now_ms, out, fx);
                if failed {
                    self.recreate_children(&instance_id, &recreate, out);
                }
                fx.reply = Some(Reply::Done);
            }
            Event::Purge { instance_id } => {
                let purged = self.instances.remove(&instance_id).is_some();
                fx.reply = Some(Reply::Purged(purged));
                fx.changed.push(instance_id);
            }
            Event::StepCompleted {
                instance_id,
                consumed,
                started_ms,
                result,
                now_ms,
                ..
            } => self.complete_step(&instance_id, consumed, started_ms, result, now_ms, out, fx),
            Event::StepAbandoned {
                instance_id,
                now_ms,
                ..
            } => {
                // The step's events never left the inbox: offer it again
                // (unless a termination was waiting for it).
                if let Some(instance) = self.instances.get_mut(&instance_id) {
                    instance.step = None;
                }
                if !self.terminate_if_asked(&instance_id, now_ms, out, fx) {
                    self.try_issue_step(&instance_id, fx);
                }
            }
            Event::ActivityCompleted {
                instance_id,
                execution,
                task_id,
                outcome,
                now_ms,
            } => {
                let known = self
                    .instances
                    .get_mut(&instance_id)
                    .filter(|i| i.execution == execution)
                    .and_then(|i| i.activities.remove(&task_id))
                    .is_some();
                // A duplicate or stale completion is dropped (I4).
                if known {
                    let kind = match outcome {
                        ActivityOutcome::Completed(result) => EventKind::TaskCompleted {
                            task_scheduled_id: task_id,
                            result,
                        },
                        ActivityOutcome::Failed(failure) => EventKind::TaskFailed {
                            task_scheduled_id: task_id,
                            failure,
                        },
                    };
                    self.deliver(&instance_id, kind, now_ms, fx);
                }
            }
            Event::TimerFired {
                instance_id,
                execution,
                timer_id,
                fire_at_ms,
                now_ms,
            } => {
                let key = TimerTask {
                    fire_at_ms,
                    instance_id: instance_id.clone(),
                    execution,
                    timer_id,
                };
                let due_signal = (timer_id == SIGNAL_TIMER_ID)
                    .then(|| {
                        self.entities.get_mut(&instance_id).and_then(|e| {
                            e.delayed
                                .remove(&key)
                                .map(|operation| (e.id.clone(), operation))
                        })
                    })
                    .flatten();
                if let Some((entity, operation)) = due_signal {
                    let queued = QueuedOperation {
                        operation,
                        caller: None,
                    };
                    self.enqueue(entity, QueueItem::Operation(queued), now_ms, out, fx);
                }
                let armed = timer_id != SIGNAL_TIMER_ID
                    && self
                        .instances
                        .get_mut(&instance_id)
                        .is_some_and(|i| i.timers.remove(&key));
                if armed {
                    if timer_id == START_TIMER_ID {
                        if let Some(instance) = self.instances.get_mut(&instance_id) {
                            instance.awaiting_start = false;
                        }
                        self.try_issue_step(&instance_id, fx);
                    } else {
                        self.deliver(
                            &instance_id,
                            EventKind::TimerFired {
                                timer_id,
                                fire_at_ms,
                            },
                            now_ms,
                            fx,
                        );
                    }
                }
            }
            Event::Messages { messages, now_ms } => {
                // `apply` splits these into one unit per message.
                for envelope in messages {
                    self.accept(envelope, now_ms, out, fx);
                }
            }
            Event::SignalEntity {
                entity,
                operation,
                scheduled_ms: Some(at),
                now_ms,
            } if at > now_ms => {
                self.delay_signal(entity, operation, at, now_ms, fx);
                fx.reply = Some(Reply::Done);
            }
            Event::SignalEntity {
                entity,
                operation,
                now_ms,
                ..
            } => {
                let queued = QueuedOperation {
                    operation,
                    caller: None,
                };
                self.enqueue(entity, QueueItem::Operation(queued), now_ms, out, fx);
                fx.reply = Some(Reply::Done);
            }
            Event::EntityBatchCompleted {
                entity,
                result,
                now_ms,
                ..
            } => {
                let key = entity.instance_id();
                let mut batch = Vec::new();
                if let Some(e) = self.entities.get_mut(&key) {
                    if let Some((_, operations)) = e.batch.take() {
                        batch = operations;
                    }
                    if e.state != result.state {
                        e.state = result.state;
                        e.last_modified_ms = now_ms;
                    }
                }
                // Results go back to the callers, in operation order.
                let mut results = result.results.into_iter();
                for queued in batch {
                    let outcome = results.next().unwrap_or_else(|| {
                        OperationResult::Failed(FailureDetails::new(
                            "MissingResult",
                            format!(
                                "the worker returned no result for operation {}",
                                queued.operation.name
                            ),
                        ))
                    });
                    if let Some(caller) = queued.caller {
                        out.send(
                            partition_of(caller.instance_id.as_str(), self.partition_count),
                            Message::EntityReply {
                                caller,
                                result: outcome,
                            },
                        );
                    }
                }
                for signal in result.signals {
                    let destination =
                        partition_of(signal.entity.instance_id().as_str(), self.partition_count);
                    out.send(
                        destination,
                        Message::EntityRequest {
                            entity: signal.entity,
                            operation: signal.operation,
                            caller: None,
                            scheduled_ms: signal.scheduled_ms,
                        },
                    );
                }
                for start in result.orchestrations {
                    let destination =
                        partition_of(start.instance_id.as_str(), self.partition_count);
                    out.send(destination, Message::StartOrchestration { start });
                }
                self.try_issue_batch(&key, out, fx);
                self.forget_if_empty(&key);
            }
            Event::EntityBatchAbandoned { entity, .. } => {
                let key = entity.instance_id();
                if let Some(e) = self.entities.get_mut(&key)
                    && let Some((_, operations)) = e.batch.take()
                {
                    for operation in operations.into_iter().rev() {
                        e.queue.push_front(QueueItem::Operation(operation));
                    }
                }
                self.try_issue_batch(&key, out, fx);
            }
            Event::OutboxAcked { destination, up_to } => {
                let acked: Vec<_> = self
                    .outbox
                    .range((destination, Position::default())..=(destination, up_to))
                    .map(|(k, _)| *k)
                    .collect();
                for key in acked {
                    self.outbox.remove(&key);
                }
            }
            Event::Hosted { event, now_ms } => self.handle_hosted(*event, now_ms, out, fx),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        instance_id: InstanceId,
        name: String,
        version: Option<String>,
        input: Option<String>,
        scheduled_start_ms: Option<u64>,
        parent: Option<ParentInstance>,
        tags: BTreeMap<String, String>,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let execution = self.next_execution;
        self.next_execution += 1;
        let started = HistoryEvent::new(
            now_ms,
            EventKind::ExecutionStarted {
                name: name.clone(),
                version: version.clone(),
                input: input.clone(),
                parent: parent.clone(),
                scheduled_start_ms,
            },
        );
        let instance = Instance {
            meta: InstanceState {
                instance_id: instance_id.clone(),
                name,
                version,
                status: OrchestrationStatus::Pending,
                input,
                output: None,
                custom_status: None,
                failure: None,
                created_at_ms: now_ms,
                last_updated_at_ms: now_ms,
                scheduled_start_ms,
                parent,
                tags,
            },
            execution,
            history: Arc::new(Vec::new()),
            inbox: vec![started],
            step: None,
            awaiting_start: false,
            timers: std::collections::BTreeSet::new(),
            lock_request: None,
            locks_held: Vec::new(),
            late_answers: Vec::new(),
            activities: BTreeMap::new(),
        };
        self.instances.insert(instance_id.clone(), instance);
        fx.changed.push(instance_id.clone());
        match scheduled_start_ms {
            Some(at) if at > now_ms => {
                let timer = TimerTask {
                    fire_at_ms: at,
                    instance_id: instance_id.clone(),
                    execution,
                    timer_id: START_TIMER_ID,
                };
                if let Some(created) = self.instances.get_mut(&instance_id) {
                    created.awaiting_start = true;
                    created.timers.insert(timer.clone());
                }
                fx.timers.push(timer);
            }
            _ => self.try_issue_step(&instance_id, fx),
        }
    }

    /// Adds an event to an instance's inbox and runs a step if it can.
    fn deliver(
        &mut self,
        instance_id: &InstanceId,
        kind: EventKind,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return;
        };
        if instance.meta.status == OrchestrationStatus::Failed
            && matches!(
                kind,
                EventKind::EntityOperationCompleted { .. }
                    | EventKind::EntityOperationFailed { .. }
                    | EventKind::SubOrchestrationInstanceCompleted { .. }
            )
        {
            // Kept for a rewind (see `Instance::late_answers`).
            instance.late_answers.push(HistoryEvent::new(now_ms, kind));
            return;
        }
        if instance.meta.status.is_terminal() {
            return; // events for finished instances are dropped, as in Durable Task
        }
        instance.inbox.push(HistoryEvent::new(now_ms, kind));
        if let Some(seq) = instance.step {
            fx.steps_grown.push(StepOffer {
                instance_id: instance_id.clone(),
                seq,
            });
        }
        self.try_issue_step(instance_id, fx);
    }

    /// Offers a step to workers, unless one is already out or the instance
    /// has nothing new, is suspended, finished, or waiting for its start
    /// time. The step's events are read when a worker takes it.
    fn try_issue_step(&mut self, instance_id: &InstanceId, fx: &mut Effects) {
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return;
        };
        let status = instance.meta.status;
        if instance.step.is_some()
            || instance.inbox.is_empty()
            || instance.awaiting_start
            || status.is_terminal()
            || status == OrchestrationStatus::Suspended
        {
            return;
        }
        let seq = self.next_step_seq;
        self.next_step_seq += 1;
        instance.step = Some(seq);
        fx.steps.push(StepOffer {
            instance_id: instance_id.clone(),
            seq,
        });
    }

    /// The step `seq` of an instance as a worker gets it now: its history
    /// and, after an `OrchestratorStarted` at `now_ms`, everything in the
    /// inbox. `None` if that step is no longer offered (completed,
    /// abandoned, the instance reset or gone). Reading only: the
    /// completion says how many events the worker saw and when it started.
    pub fn take_step(&self, instance_id: &InstanceId, seq: u64, now_ms: u64) -> Option<StepTask> {
        let instance = self.instances.get(instance_id)?;
        if instance.step != Some(seq) || instance.inbox.is_empty() {
            return None;
        }
        let mut new_events = Vec::with_capacity(instance.inbox.len() + 1);
        new_events.push(HistoryEvent::new(now_ms, EventKind::OrchestratorStarted));
        new_events.extend(instance.inbox.iter().cloned());
        Some(StepTask {
            instance_id: instance_id.clone(),
            seq,
            execution: instance.execution,
            past_events: Arc::clone(&instance.history),
            new_events,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_step(
        &mut self,
        instance_id: &InstanceId,
        consumed: u32,
        started_ms: u64,
        mut result: OrchestrationStepResult,
        now_ms: u64,
        out: &mut Outgoing,
        fx: &mut Effects,
    ) {
        let partition_count = self.partition_count;
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return;
        };
        if instance.step.take().is_none() {
            return;
        }
        // The worker saw an OrchestratorStarted at `started_ms` and the
        // first `consumed` inbox events (`check` bounds it).
        let consumed = (consumed as usize).min(instance.inbox.len());
        let history = Arc::make_mut(&mut instance.history);
        history.push(HistoryEvent::new(
            started_ms,
            EventKind::OrchestratorStarted,
        ));
        history.extend(instance.inbox.drain(..consumed));
        // Every step hands the whole history to a worker: past
        // HISTORY_EVENTS_MAX the instance fails instead of growing.
        // (Each action adds at least one event; the step ends with an
        // OrchestratorCompleted.)
        let reaching = history.len() + result.actions.len() + 1;
        if reaching > HISTORY_EVENTS_MAX {
            let message = format!(
                "the history would reach {reaching} events; the limit is {HISTORY_EVENTS_MAX} \
                 (continue as new to start a fresh history)"
            );
            result = result.failing("HistoryTooLarge", message);
        }
        // Pending until a worker has run the first step: `wait_for_start`
        // waits for this.
        if instance.meta.status == OrchestrationStatus::Pending {
            instance.meta.status = OrchestrationStatus::Running;
            fx.changed.push(instance_id.clone());
        }
        if result.custom_status.is_some() {
            instance.meta.custom_status = result.custom_status;
        }
        instance.meta.last_updated_at_ms = now_ms;
        // The end, with the id of the action that made it.
        let mut finished: Option<(
            OrchestrationStatus,
            Option<String>,
            Option<FailureDetails>,
            i32,
        )> = None;
        let mut continue_as_new = None;
        for action in result.actions {
            let id = action.id;
            let confirm = |id: i32, now_ms: u64, kind: EventKind| HistoryEvent {
                event_id: id,
                timestamp_ms: now_ms,
                kind,
                correlation: action.correlation.clone(),
            };
            match action.kind {
                ActionKind::ScheduleTask {
                    name,
                    version,
                    input,
                } => {
                    let task = ActivityTask {
                        instance_id: instance_id.clone(),
                        execution: instance.execution,
                        task_id: id,
                        name: name.clone(),
                        version: version.clone(),
                        input: input.clone(),
                    };
                    instance.activities.insert(id, task.clone());
                    fx.activities.push(task);
                    history.push(confirm(
                        id,
                        now_ms,
                        EventKind::TaskScheduled {
                            name,
                            version,
                            input,
                        },
                    ));
                }
                ActionKind::CreateTimer { fire_at_ms } => {
                    let timer = TimerTask {
                        fire_at_ms,
                        instance_id: instance_id.clone(),
                        execution: instance.execution,
                        timer_id: id,
                    };
                    instance.timers.insert(timer.clone());
                    fx.timers.push(timer);
                    history.push(confirm(id, now_ms, EventKind::TimerCreated { fire_at_ms }));
                }
                ActionKind::CreateSubOrchestration {
                    instance_id: child,
                    name,
                    version,
                    input,
                } => {
                    history.push(confirm(
                        id,
                        now_ms,
                        EventKind::SubOrchestrationInstanceCreated {
                            instance_id: child.clone(),
                            name: name.clone(),
                            version: version.clone(),
                            input: input.clone(),
                        },
                    ));
                    match InstanceId::new(child) {
                        Ok(child_id) => out.send(
                            partition_of(child_id.as_str(), partition_count),
                            Message::StartChild {
                                instance_id: child_id,
                                name,
                                version,
                                input,
                                parent: ParentInstance {
                                    name: instance.meta.name.clone(),
                                    instance_id: instance_id.clone(),
                                    task_scheduled_id: id,
                                    execution: instance.execution,
                                },
                            },
                        ),
                        Err(e) => instance.inbox.push(HistoryEvent::new(
                            now_ms,
                            EventKind::SubOrchestrationInstanceFailed {
                                task_scheduled_id: id,
                                failure: FailureDetails::new("InvalidInstanceId", e.to_string()),
                            },
                        )),
                    }
                }
                ActionKind::SendEvent {
                    instance_id: target,
                    name,
                    data,
                } => {
                    history.push(confirm(
                        id,
                        now_ms,
                        EventKind::EventSent {
                            instance_id: target.clone(),
                            name: name.clone(),
                            input: data.clone(),
                        },
                    ));
                    if let Ok(target) = InstanceId::new(target) {
                        out.send(
                            partition_of(target.as_str(), partition_count),
                            Message::RaiseEvent {
                                instance_id: target,
                                name,
                                data,
                            },
                        );
                    }
                }
                ActionKind::SignalEntity {
                    entity,
                    operation,
                    input,
                    scheduled_ms,
                } => {
                    history.push(confirm(
                        id,
                        now_ms,
                        EventKind::EntityOperationSignaled {
                            entity: entity.clone(),
                            operation: operation.clone(),
                            input: input.clone(),
                        },
                    ));
                    // An unparsable id has nowhere to go: the signal is dropped.
                    if let Ok(target) = EntityId::parse(&entity) {
                        out.send(
                            partition_of(target.instance_id().as_str(), partition_count),
                            Message::EntityRequest {
                                entity: target,
                                operation: EntityOperation {
                                    name: operation,
                                    input,
                                },
                                caller: None,
                                scheduled_ms,
                            },
                        );
                    }
                }
                ActionKind::CallEntity {
                    entity,
                    operation,
                    input,
                } => {
                    history.push(confirm(
                        id,
                        now_ms,
                        EventKind::EntityOperationCalled {
                            entity: entity.clone(),
                            operation: operation.clone(),
                            input: input.clone(),
                        },
                    ));
                    match EntityId::parse(&entity) {
                        Ok(target) => out.send(
                            partition_of(target.instance_id().as_str(), partition_count),
                            Message::EntityRequest {
                                entity: target,
                                operation: EntityOperation {
                                    name: operation,
                                    input,
                                },
                                caller: Some(Caller {
                                    instance_id: instance_id.clone(),
                                    execution: instance.execution,
                                    request_id: id,
                                }),
                                scheduled_ms: None,
                            },
                        ),
                        Err(e) => instance.inbox.push(HistoryEvent::new(
                            now_ms,
                            EventKind::EntityOperationFailed {
                                request_id: id,
                                failure: FailureDetails::new("InvalidEntityId", e.to_string()),
                            },
                        )),
                    }
                }
                ActionKind::LockEntities { entities } => {
                    history.push(confirm(
                        id,
                        now_ms,
                        EventKind::EntityLockRequested {
                            entities: entities.clone(),
                        },
                    ));
                    let mut ids: Vec<EntityId> = entities
                        .iter()
                        .filter_map(|e| EntityId::parse(e).ok())
                        .collect();
                    ids.sort_by_key(|e| e.to_string());
                    ids.dedup();
                    if let Some(first) = ids.first() {
                        instance.lock_request = Some((id, ids.clone()));
                        out.send(
                            partition_of(first.instance_id().as_str(), partition_count),
                            Message::LockRequest(LockChain {
                                entities: ids,
                                position: 0,
                                owner: Caller {
                                    instance_id: instance_id.clone(),
                                    execution: instance.execution,
                                    request_id: id,
                                },
                            }),
                        );
                    }
                }
                ActionKind::UnlockEntities { entities } => {
                    history.push(confirm(
                        id,
                        now_ms,
                        EventKind::EntityUnlockSent {
                            entities: entities.clone(),
                        },
                    ));
                    let owner = Caller {
                        instance_id: instance_id.clone(),
                        execution: instance.execution,
                        request_id: id,
                    };
                    for entity in std::mem::take(&mut instance.locks_held) {
                        out.send(
                            partition_of(entity.instance_id().as_str(), partition_count),
                            Message::Unlock {
                                entity,
                                owner: owner.clone(),
                            },
                        );
                    }
                }
                ActionKind::CompleteOrchestration {
                    status,
                    result,
                    failure,
                    new_version,
                    carryover_events,
                } => {
                    if status == OrchestrationStatus::ContinuedAsNew {
                        continue_as_new = Some((result, new_version, carryover_events));
                    } else {
                        let status = if status == OrchestrationStatus::Failed {
                            OrchestrationStatus::Failed
                        } else {
                            OrchestrationStatus::Completed
                        };
                        finished = Some((status, result, failure, id));
                    }
                }
            }
        }
        history.push(HistoryEvent::new(now_ms, EventKind::OrchestratorCompleted));

        if let Some((input, new_version, carryover)) = continue_as_new {
            let name = instance.meta.name.clone();
            // Without a new version the next execution keeps the current
            // one (as in Durable Task).
            let version = new_version.or_else(|| instance.meta.version.clone());
            instance.meta.version = version.clone();
            let parent = instance.meta.parent.clone();
            release_locks(instance_id, instance, partition_count, out);
            if !instance.activities.is_empty() {
                fx.withdrawn.push((instance_id.clone(), instance.execution));
            }
            instance.execution = self.next_execution;
            self.next_execution += 1;
            instance.activities.clear();
            instance.history = Arc::new(Vec::new());
            let mut inbox = vec![HistoryEvent::new(
                now_ms,
                EventKind::ExecutionStarted {
                    name,
                    version,
                    input: input.clone(),
                    parent,
                    scheduled_start_ms: None,
                },
            )];
            inbox.extend(carryover);
            // What arrived after the step was taken: external events,
            // suspend/resume and a termination waiting for the step go on
            // to the new execution; answers to the old
            // execution's work do not (their ids would collide with the
            // new execution's).
            inbox.extend(instance.inbox.drain(..).filter(|e| {
                matches!(
                    e.kind,
                    EventKind::EventRaised { .. }
                        | EventKind::ExecutionSuspended { .. }
                        | EventKind::ExecutionResumed { .. }
                        | EventKind::ExecutionTerminated { .. }
                )
            }));
            instance.inbox = inbox;
            instance.meta.input = input;
            // A suspended instance stays suspended across continue-as-new.
            if instance.meta.status != OrchestrationStatus::Suspended {
                instance.meta.status = OrchestrationStatus::Running;
            }
            instance.timers.clear();
            fx.changed.push(instance_id.clone());
        } else if let Some((status, output, failure, action_id)) = finished {
            self.finish(
                instance_id,
                status,
                action_id,
                output,
                failure,
                now_ms,
                out,
                fx,
            );
            return;
        }
        if !self.terminate_if_asked(instance_id, now_ms, out, fx) {
            self.try_issue_step(instance_id, fx);
        }
    }

    /// Ends `instance_id` as Terminated if a termination waits in its inbox
    /// for the step that was out (`ControlOp::TerminateAfterStep`), now
    /// that no step is out. Returns whether it did.
    fn terminate_if_asked(
        &mut self,
        instance_id: &InstanceId,
        now_ms: u64,
        out: &mut Outgoing,
        fx: &mut Effects,
    ) -> bool {
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return false;
        };
        if instance.step.is_some() || instance.meta.status.is_terminal() {
            return false;
        }
        let Some(at) = instance
            .inbox
            .iter()
            .position(|event| matches!(event.kind, EventKind::ExecutionTerminated { .. }))
        else {
            return false;
        };
        let reason = match instance.inbox.remove(at).kind {
            EventKind::ExecutionTerminated { reason } => reason,
            _ => None,
        };
        self.finish(
            instance_id,
            OrchestrationStatus::Terminated,
            -1,
            reason,
            None,
            now_ms,
            out,
            fx,
        );
        true
    }

    /// Ends an instance: records the outcome, drops its timers and pending
    /// work, and tells its parent. `event_id` numbers the closing event:
    /// the id of the action that completed the orchestration (as the
    /// Durable Task Scheduler records it), or -1.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        instance_id: &InstanceId,
        status: OrchestrationStatus,
        event_id: i32,
        output: Option<String>,
        failure: Option<FailureDetails>,
        now_ms: u64,
        out: &mut Outgoing,
        fx: &mut Effects,
    ) {
        let partition_count = self.partition_count;
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return;
        };
        let event = if status == OrchestrationStatus::Terminated {
            EventKind::ExecutionTerminated {
                reason: output.clone(),
            }
        } else {
            EventKind::ExecutionCompleted {
                status,
                result: output.clone(),
                failure: failure.clone(),
            }
        };
        let mut closing = HistoryEvent::new(now_ms, event);
        closing.event_id = event_id;
        Arc::make_mut(&mut instance.history).push(closing);
        instance.meta.status = status;
        instance.meta.output = output.clone();
        instance.meta.failure = failure.clone();
        instance.meta.last_updated_at_ms = now_ms;
        instance.inbox.clear();
        instance.step = None;
        if !instance.activities.is_empty() {
            fx.withdrawn.push((instance_id.clone(), instance.execution));
        }
        instance.activities.clear();
        release_locks(instance_id, instance, partition_count, out);
        if let Some(parent) = &instance.meta.parent {
            let outcome = match status {
                OrchestrationStatus::Completed => Ok(output),
                OrchestrationStatus::Terminated => Err(FailureDetails::new(
                    "Terminated",
                    format!("sub-orchestration {instance_id} was terminated"),
                )),
                _ => Err(failure.unwrap_or_else(|| {
                    FailureDetails::new("Failed", format!("sub-orchestration {instance_id} failed"))
                })),
            };
            out.send(
                partition_of(parent.instance_id.as_str(), partition_count),
                Message::ChildFinished {
                    parent_id: parent.instance_id.clone(),
                    parent_execution: parent.execution,
                    task_scheduled_id: parent.task_scheduled_id,
                    outcome,
                },
            );
        }
        instance.timers.clear();
        fx.changed.push(instance_id.clone());
    }

    /// Starts `children` of a just rewound instance again from scratch,
    /// as its creation of each recorded them: they were purged, and the
    /// rewound history waits for their answers.
    fn recreate_children(
        &mut self,
        instance_id: &InstanceId,
        children: &[InstanceId],
        out: &mut Outgoing,
    ) {
        let partition_count = self.partition_count;
        let Some(instance) = self.instances.get(instance_id) else {
            return;
        };
        for child in children {
            let Some((task_scheduled_id, name, version, input)) =
                created_child(&instance.history, child)
            else {
                continue;
            };
            // A child that completed while the instance was failed has its
            // answer kept and handed back by the rewind (now in the inbox):
            // it must not run twice.
            let answered = instance.history.iter().chain(&instance.inbox).any(|event| {
                matches!(&event.kind, EventKind::SubOrchestrationInstanceCompleted { task_scheduled_id: id, .. }
                    if *id == task_scheduled_id)
            });
            if answered {
                continue;
            }
            out.send(
                partition_of(child.as_str(), partition_count),
                Message::StartChild {
                    instance_id: child.clone(),
                    name,
                    version,
                    input,
                    parent: ParentInstance {
                        name: instance.meta.name.clone(),
                        instance_id: instance_id.clone(),
                        task_scheduled_id,
                        execution: instance.execution,
                    },
                },
            );
        }
    }

    fn control(
        &mut self,
        instance_id: &InstanceId,
        op: ControlOp,
        reason: Option<String>,
        now_ms: u64,
        out: &mut Outgoing,
        fx: &mut Effects,
    ) {
        let Some(instance) = self.instances.get_mut(instance_id) else {
            return;
        };
        let status = instance.meta.status;
        if op == ControlOp::Rewind && status == OrchestrationStatus::Failed {
            instance.history = Arc::new(rewound_history(&instance.history));
            instance.meta.status = OrchestrationStatus::Running;
            instance.meta.output = None;
            instance.meta.failure = None;
            instance.meta.last_updated_at_ms = now_ms;
            instance.inbox.clear();
            instance.step = None;
            instance.inbox.push(HistoryEvent::new(
                now_ms,
                EventKind::ExecutionRewound { reason },
            ));
            // Answers that came while it was failed: the work they answer
            // stays in the rewound history and will not be issued again.
            instance.inbox.append(&mut instance.late_answers);
            fx.changed.push(instance_id.clone());
            self.try_issue_step(instance_id, fx);
            return;
        }
        if status.is_terminal() {
            return;
        }
        match op {
            // The step out is completed or given back first; the pending
            // termination waits in the inbox (see `terminate_if_asked`).
            ControlOp::TerminateAfterStep if instance.step.is_some() => {
                instance.inbox.push(HistoryEvent::new(
                    now_ms,
                    EventKind::ExecutionTerminated { reason },
                ));
                fx.changed.push(instance_id.clone());
            }
            ControlOp::Terminate | ControlOp::TerminateAfterStep => {
                self.finish(
                    instance_id,
                    OrchestrationStatus::Terminated,
                    -1,
                    reason,
                    None,
                    now_ms,
                    out,
                    fx,
                );
            }
            ControlOp::Suspend => {
                if status != OrchestrationStatus::Suspended {
                    instance.meta.status = OrchestrationStatus::Suspended;
                    instance.meta.last_updated_at_ms = now_ms;
                    instance.inbox.push(HistoryEvent::new(
                        now_ms,
                        EventKind::ExecutionSuspended { reason },
                    ));
                    fx.changed.push(instance_id.clone());
                }
            }
            // Handled above; any other status was refused by `check`.
            ControlOp::Rewind => {}
            ControlOp::Resume => {
                if status == OrchestrationStatus::Suspended {
                    instance.meta.status = if instance.history.is_empty() {
                        OrchestrationStatus::Pending
                    } else {
                        OrchestrationStatus::Running
                    };
                    instance.meta.last_updated_at_ms = now_ms;
                    instance.inbox.push(HistoryEvent::new(
                        now_ms,
                        EventKind::ExecutionResumed { reason },
                    ));
                    fx.changed.push(instance_id.clone());
                    self.try_issue_step(instance_id, fx);
                }
            }
        }
    }

    /// Keeps a signal with its entity until `at`, on a durable timer
    /// (client signals with a time, and orchestrations' scheduled signals).
    fn delay_signal(
        &mut self,
        entity: EntityId,
        operation: EntityOperation,
        at: u64,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let timer = TimerTask {
            fire_at_ms: at,
            instance_id: entity.instance_id(),
            execution: self.next_execution,
            timer_id: SIGNAL_TIMER_ID,
        };
        self.next_execution += 1;
        self.entity_mut(entity, now_ms)
            .delayed
            .insert(timer.clone(), operation);
        fx.timers.push(timer);
    }

    fn receive(&mut self, message: Message, now_ms: u64, out: &mut Outgoing, fx: &mut Effects) {
        match message {
            Message::StartChild {
                instance_id,
                name,
                version,
                input,
                parent,
            } => {
                let running = self
                    .instances
                    .get(&instance_id)
                    .is_some_and(|i| !i.meta.status.is_terminal());
                if running {
                    // The id is taken: fail the parent's call instead.
                    out.send(
                        partition_of(parent.instance_id.as_str(), self.partition_count),
                        Message::ChildFinished {
                            parent_id: parent.instance_id.clone(),
                            parent_execution: parent.execution,
                            task_scheduled_id: parent.task_scheduled_id,
                            outcome: Err(FailureDetails::new(
                                "InstanceExists",
                                format!("instance {instance_id} is already running"),
                            )),
                        },
                    );
                } else {
                    self.create(
                        instance_id,
                        name,
                        version,
                        input,
                        None,
                        Some(parent),
                        BTreeMap::new(),
                        now_ms,
                        fx,
                    );
                }
            }
            Message::StartOrchestration { start } => {
                let running = self
                    .instances
                    .get(&start.instance_id)
                    .is_some_and(|i| !i.meta.status.is_terminal());
                // A running instance keeps its id: the entity gets no
                // answer, so the start is dropped (a client's start would
                // be refused the same way).
                if !running {
                    self.create(
                        start.instance_id,
                        start.name,
                        start.version,
                        start.input,
                        start.scheduled_start_ms,
                        None,
                        BTreeMap::new(),
                        now_ms,
                        fx,
                    );
                }
            }
            Message::ChildFinished {
                parent_id,
                parent_execution,
                task_scheduled_id,
                outcome,
            } => {
                // A result for an earlier generation of the parent (before
                // continue-as-new, or a restart of the id) is dropped: its
                // action id may mean something else now.
                let current = self
                    .instances
                    .get(&parent_id)
                    .is_some_and(|p| p.execution == parent_execution);
                if !current {
                    return;
                }
                let kind = match outcome {
                    Ok(result) => EventKind::SubOrchestrationInstanceCompleted {
                        task_scheduled_id,
                        result,
                    },
                    Err(failure) => EventKind::SubOrchestrationInstanceFailed {
                        task_scheduled_id,
                        failure,
                    },
                };
                self.deliver(&parent_id, kind, now_ms, fx);
            }
            Message::EntityRequest {
                entity,
                operation,
                caller: None,
                scheduled_ms: Some(at),
            } if at > now_ms => self.delay_signal(entity, operation, at, now_ms, fx),
            Message::EntityRequest {
                entity,
                operation,
                caller,
                ..
            } => {
                let item = QueueItem::Operation(QueuedOperation { operation, caller });
                self.enqueue(entity, item, now_ms, out, fx);
            }
            Message::LockRequest(chain) => {
                if let Some(entity) = chain.entities.get(chain.position).cloned() {
                    self.enqueue(entity, QueueItem::Lock(chain), now_ms, out, fx);
                }
            }
            Message::LockGranted { owner, entities } => {
                let waiting = self.instances.get_mut(&owner.instance_id).filter(|i| {
                    i.execution == owner.execution
                        && !i.meta.status.is_terminal()
                        && i.lock_request
                            .as_ref()
                            .is_some_and(|(id, _)| *id == owner.request_id)
                });
                match waiting {
                    Some(instance) => {
                        instance.lock_request = None;
                        instance.locks_held = entities;
                        self.deliver(
                            &owner.instance_id,
                            EventKind::EntityLockGranted {
                                request_id: owner.request_id,
                            },
                            now_ms,
                            fx,
                        );
                    }
                    // Its owner finished (or moved on) while the request
                    // travelled: release the whole set at once.
                    None => {
                        for entity in entities {
                            let destination =
                                partition_of(entity.instance_id().as_str(), self.partition_count);
                            out.send(
                                destination,
                                Message::Unlock {
                                    entity,
                                    owner: owner.clone(),
                                },
                            );
                        }
                    }
                }
            }
            Message::Unlock { entity, owner } => {
                let key = entity.instance_id();
                if let Some(e) = self.entities.get_mut(&key)
                    && e.lock.as_ref().is_some_and(|l| same_owner(l, &owner))
                {
                    e.lock = None;
                }
                self.try_issue_batch(&key, out, fx);
                self.forget_if_empty(&key);
            }
            Message::EntityReply { caller, result } => {
                // Only the generation that called gets the answer.
                let current = self
                    .instances
                    .get(&caller.instance_id)
                    .is_some_and(|i| i.execution == caller.execution);
                if current {
                    let kind = match result {
                        OperationResult::Completed(output) => EventKind::EntityOperationCompleted {
                            request_id: caller.request_id,
                            output,
                        },
                        OperationResult::Failed(failure) => EventKind::EntityOperationFailed {
                            request_id: caller.request_id,
                            failure,
                        },
                    };
                    self.deliver(&caller.instance_id, kind, now_ms, fx);
                }
            }
            Message::RaiseEvent {
                instance_id,
                name,
                data,
            } => self.deliver(
                &instance_id,
                EventKind::EventRaised { name, input: data },
                now_ms,
                fx,
            ),
            Message::Hosted(message) => self.receive_hosted(message, fx),
        }
    }

    /// Queues an operation or lock request on an entity (creating its
    /// queue) and hands out work if it can.
    fn enqueue(
        &mut self,
        entity: EntityId,
        item: QueueItem,
        now_ms: u64,
        out: &mut Outgoing,
        fx: &mut Effects,
    ) {
        let key = entity.instance_id();
        self.entity_mut(entity, now_ms).queue.push_back(item);
        self.try_issue_batch(&key, out, fx);
    }

    /// An entity's record, created (without state) if it has none.
    fn entity_mut(&mut self, entity: EntityId, now_ms: u64) -> &mut Entity {
        self.entities
            .get_or_insert_with(entity.instance_id(), || Entity {
                id: entity,
                state: None,
                queue: std::collections::VecDeque::new(),
                lock: None,
                delayed: BTreeMap::new(),
                batch: None,
                last_modified_ms: now_ms,
            })
    }

    /// Moves an entity's queue forward unless a batch is out: grants a lock
    /// request at the front (forwarding it along its chain), and hands the
    /// worker one batch of the operations that may run now — the next ones
    /// in arrival order, or, while the entity is locked, only its owner's.
    fn try_issue_batch(&mut self, key: &InstanceId, out: &mut Outgoing, fx: &mut Effects) {
        let partition_count = self.partition_count;
        let Some(entity) = self.entities.get_mut(key) else {
            return;
        };
        if entity.batch.is_some() {
            return;
        }
        // Grant lock requests at the front while the entity is free.
        while entity.lock.is_none() {
            let Some(QueueItem::Lock(_)) = entity.queue.front() else {
                break;
            };
            let Some(QueueItem::Lock(chain)) = entity.queue.pop_front() else {
                break;
            };
            entity.lock = Some(chain.owner.clone());
            let next = chain.position + 1;
            if let Some(following) = chain.entities.get(next) {
                out.send(
                    partition_of(following.instance_id().as_str(), partition_count),
                    Message::LockRequest(LockChain {
                        position: next,
                        ..chain
                    }),
                );
            } else {
                out.send(
                    partition_of(chain.owner.instance_id.as_str(), partition_count),
                    Message::LockGranted {
                        owner: chain.owner,
                        entities: chain.entities,
                    },
                );
            }
        }
        let mut queued = Vec::new();
        match &entity.lock {
            // Locked: only the owner's calls run, wherever they wait.
            Some(owner) => {
                let mut index = 0;
                while index < entity.queue.len() && queued.len() < ENTITY_BATCH_OPERATIONS_MAX {
                    let owners = matches!(
                        &entity.queue[index],
                        QueueItem::Operation(QueuedOperation { caller: Some(c), .. })
                            if same_owner(c, owner)
                    );
                    if owners {
                        if let Some(QueueItem::Operation(op)) = entity.queue.remove(index) {
                            queued.push(op);
                        }
                    } else {
                        index += 1;
                    }
                }
            }
            // Free: operations in arrival order, up to the next lock request.
            None => {
                while queued.len() < ENTITY_BATCH_OPERATIONS_MAX {
                    let Some(QueueItem::Operation(_)) = entity.queue.front() else {
                        break;
                    };
                    if let Some(QueueItem::Operation(op)) = entity.queue.pop_front() {
                        queued.push(op);
                    }
                }
            }
        }
        if queued.is_empty() {
            return;
        }
        let seq = self.next_step_seq;
        self.next_step_seq += 1;
        let operations: Vec<EntityOperation> = queued.iter().map(|q| q.operation.clone()).collect();
        entity.batch = Some((seq, queued));
        fx.entity_batches.push(EntityBatchTask {
            entity: entity.id.clone(),
            seq,
            state: entity.state.clone(),
            operations,
        });
    }

    /// An entity with no state, nothing queued and nothing out is gone.
    fn forget_if_empty(&mut self, key: &InstanceId) {
        if self.entities.get(key).is_some_and(|e| {
            e.state.is_none()
                && e.queue.is_empty()
                && e.batch.is_none()
                && e.lock.is_none()
                && e.delayed.is_empty()
        }) {
            self.entities.remove(key);
        }
    }

    /// What a client sees of an entity: `None` unless it has state.
    pub fn entity_state(&self, entity: &EntityId, include_state: bool) -> Option<EntityState> {
        entity_view(self.entities.get(&entity.instance_id())?, include_state)
    }

    /// Everything to hand out again after recovery: steps that were out,
    /// activities not completed, timers armed, messages not acknowledged.
    pub fn pending_work(&self) -> Effects {
        let mut fx = Effects::default();
        let instances = self.instances.resident();
        let entities = self.entities.resident();
        for (id, instance) in &instances {
            if let Some(seq) = instance.step {
                fx.steps.push(StepOffer {
                    instance_id: (*id).clone(),
                    seq,
                });
            }
            fx.activities.extend(instance.activities.values().cloned());
        }
        for entity in entities.values() {
            if let Some((seq, queued)) = &entity.batch {
                fx.entity_batches.push(EntityBatchTask {
                    entity: entity.id.clone(),
                    seq: *seq,
                    state: entity.state.clone(),
                    operations: queued.iter().map(|q| q.operation.clone()).collect(),
                });
            }
        }
        fx.timers = instances
            .values()
            .flat_map(|i| i.timers.iter().cloned())
            .chain(entities.values().flat_map(|e| e.delayed.keys().cloned()))
            .collect();
        fx.messages = self.outbox.values().cloned().collect();
        // Acks may have been lost with the process: send them again.
        fx.acks = self.received.iter().map(|(o, p)| (*o, *p)).collect();
        fx
    }

    /// The LSN of the event that last changed a record, while that change
    /// is not in a durable checkpoint yet (see [`crate::tier::Tier::changed_at`]).
    pub fn changed_at(&self, key: &StateKey) -> Option<u64> {
        match key {
            StateKey::Instance(id) => self.instances.changed_at(id),
            StateKey::Entity(id) => self.entities.changed_at(id),
            StateKey::Hosted(id) => self.hosted.changed_at(id),
            StateKey::HostedWork(id) => self.hosted_work.changed_at(id),
            StateKey::HostedSession(id) => self.hosted_sessions.changed_at(id),
        }
    }

    /// The state of one instance.
    pub fn instance(&self, instance_id: &InstanceId) -> Option<&Instance> {
        self.instances.get(instance_id)
    }
}

/// Whether an instance matches a query's filters (status, creation time,
/// id prefix).
pub fn instance_matches(query: &InstanceQuery, meta: &InstanceState) -> bool {
    (query.statuses.is_empty() || query.statuses.contains(&meta.status))
        && query
            .created_from_ms
            .is_none_or(|t| meta.created_at_ms >= t)
        && query.created_to_ms.is_none_or(|t| meta.created_at_ms < t)
        && query
            .instance_id_prefix
            .as_deref()
            .is_none_or(|p| meta.instance_id.as_str().starts_with(p))
        && query.name.as_deref().is_none_or(|n| meta.name == n)
}

/// What a query returns of an instance: without inputs, outputs and
/// custom status unless it asked for them.
pub fn instance_view(query: &InstanceQuery, meta: &InstanceState) -> InstanceState {
    let mut state = meta.clone();
    if !query.fetch_inputs_and_outputs {
        state.input = None;
        state.output = None;
        state.custom_status = None;
    }
    state
}

/// Whether an entity matches a query's name and key prefix.
pub fn entity_matches(query: &EntityQuery, entity: &Entity) -> bool {
    query
        .name
        .as_deref()
        .is_none_or(|n| entity.id.name() == n.to_lowercase())
        && query
            .key_prefix
            .as_deref()
            .is_none_or(|p| entity.id.key().starts_with(p))
}

/// What a client sees of an entity: `None` unless it has state.
pub fn entity_view(entity: &Entity, include_state: bool) -> Option<EntityState> {
    entity.state.as_ref()?;
    Some(EntityState {
        entity: entity.id.clone(),
        state: if include_state {
            entity.state.clone()
        } else {
            None
        },
        last_modified_ms: entity.last_modified_ms,
        backlog: entity.queue.len() + entity.batch.as_ref().map_or(0, |(_, ops)| ops.len()),
        locked_by: entity.lock.as_ref().map(|owner| owner.instance_id.clone()),
    })
}

/// Messages produced while applying one event, numbered in order.
#[derive(Debug)]
pub(crate) struct Outgoing {
    origin: u32,
    lsn: u64,
    messages: Vec<Envelope>,
    /// The next message's index: unique within the event even when
    /// messages to this partition are taken out of `messages`.
    next_index: u32,
}

impl Outgoing {
    fn new(origin: u32, lsn: u64) -> Outgoing {
        Outgoing {
            origin,
            lsn,
            messages: Vec::new(),
            next_index: 0,
        }
    }

    /// The LSN of the event sending (a hosted lock token).
    pub(crate) fn lsn(&self) -> u64 {
        self.lsn
    }

    pub(crate) fn send(&mut self, destination: u32, message: Message) {
        let index = self.next_index;
        self.next_index += 1;
        self.messages.push(Envelope {
            origin: self.origin,
            position: Position {
                lsn: self.lsn,
                index,
            },
            destination,
            message,
        });
    }
}

/// The last creation of sub-orchestration `child` in `history`: its action
/// id, name, version and input.
fn created_child(
    history: &[HistoryEvent],
    child: &InstanceId,
) -> Option<(i32, String, Option<String>, Option<String>)> {
    history.iter().rev().find_map(|event| match &event.kind {
        EventKind::SubOrchestrationInstanceCreated {
            instance_id,
            name,
            version,
            input,
        } if instance_id == child.as_str() => {
            Some((event.event_id, name.clone(), version.clone(), input.clone()))
        }
        _ => None,
    })
}

/// The history of a failed execution made ready to run again: its end
/// (`ExecutionCompleted`) and every failure of an activity or
/// sub-orchestration are taken out, each failed activity with the
/// `TaskScheduled` it answered, so replay schedules it again. A failed
/// sub-orchestration keeps its `SubOrchestrationInstanceCreated`: the
/// caller rewinds the child, whose new result then arrives as usual.
fn rewound_history(history: &[HistoryEvent]) -> Vec<HistoryEvent> {
    let mut dropped = vec![false; history.len()];
    for (index, event) in history.iter().enumerate() {
        match &event.kind {
            EventKind::TaskFailed {
                task_scheduled_id, ..
            } => {
                dropped[index] = true;
                let scheduled = (0..index).rev().find(|&earlier| {
                    !dropped[earlier]
                        && history[earlier].event_id == *task_scheduled_id
                        && matches!(history[earlier].kind, EventKind::TaskScheduled { .. })
                });
                if let Some(earlier) = scheduled {
                    dropped[earlier] = true;
                }
            }
            EventKind::SubOrchestrationInstanceFailed { .. }
            | EventKind::ExecutionCompleted { .. } => dropped[index] = true,
            _ => {}
        }
    }
    // Work still out when the execution failed was forgotten by `finish`
    // (its answer will not be taken): take it out too, so replay issues it
    // again — activities without an answer and timers that did not fire.
    for (index, event) in history.iter().enumerate() {
        let id = event.event_id;
        let answered = |answer: &dyn Fn(&EventKind) -> bool| {
            history[index + 1..].iter().any(|later| answer(&later.kind))
        };
        let unanswered = match &event.kind {
            EventKind::TaskScheduled { .. } => !answered(&|kind| {
                matches!(kind,
                    EventKind::TaskCompleted { task_scheduled_id, .. }
                    | EventKind::TaskFailed { task_scheduled_id, .. } if *task_scheduled_id == id)
            }),
            EventKind::TimerCreated { .. } => !answered(
                &|kind| matches!(kind, EventKind::TimerFired { timer_id, .. } if *timer_id == id),
            ),
            _ => false,
        };
        if unanswered {
            dropped[index] = true;
        }
    }
    history
        .iter()
        .zip(dropped)
        .filter(|(_, dropped)| !dropped)
        .map(|(event, _)| event.clone())
        .collect()
}

/// Locks belong to an orchestration execution, whichever action took them.
fn same_owner(a: &Caller, b: &Caller) -> bool {
    a.instance_id == b.instance_id && a.execution == b.execution
}

/// Sends `Unlock` for every entity an instance holds. A lock request still
/// travelling is left alone: its grant will find the owner gone and
/// release the whole set.
fn release_locks(
    instance_id: &InstanceId,
    instance: &mut Instance,
    partition_count: u32,
    out: &mut Outgoing,
) {
    let owner = Caller {
        instance_id: instance_id.clone(),
        execution: instance.execution,
        request_id: -1,
    };
    for entity in std::mem::take(&mut instance.locks_held) {
        out.send(
            partition_of(entity.instance_id().as_str(), partition_count),
            Message::Unlock {
                entity,
                owner: owner.clone(),
            },
        );
    }
    instance.lock_request = None;
}
