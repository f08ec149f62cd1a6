//! Hands work from the engine to connected worker streams.
//!
//! One puller per kind of work (orchestration steps, activities, entity
//! batches) takes items from the [`Backend`] while some connected stream
//! could take that kind, and the dispatcher gives each item to the
//! least-loaded stream whose filters accept it and that is under its limit.
//! An item no stream accepts (filters, versions, all streams full) waits
//! here, bounded, until one can: it is never dropped. Every item handed to
//! a stream is remembered by its completion token; when a stream goes away,
//! its unfinished items are abandoned to the backend, which offers them
//! again — so a worker that dies mid-work delays the work, never loses it,
//! and the backend's token checks keep it from completing twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use basalt_runtime::{
    ActivityWorkItem, Backend, CompletionToken, EntityWorkItem, Error as RuntimeError, EventKind,
    OrchestrationWorkItem,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};

/// Items held here for connected streams that accept them but have no
/// room yet, per kind; the puller stops taking more from the backend above
/// this. Items no connected stream accepts do not count (see
/// `State::unclaimed`).
const HELD_ITEMS_MAX: usize = 10_000;

/// The three kinds of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An orchestration step.
    Orchestration = 0,
    /// An activity.
    Activity = 1,
    /// A batch of entity operations.
    Entity = 2,
}

const KINDS: [Kind; 3] = [Kind::Orchestration, Kind::Activity, Kind::Entity];

/// One item of work on its way to a worker.
#[derive(Clone, Debug)]
pub enum Work {
    /// An orchestration step.
    Orchestration(OrchestrationWorkItem),
    /// An activity.
    Activity(ActivityWorkItem),
    /// A batch of entity operations.
    Entity(EntityWorkItem),
}

impl Work {
    fn kind(&self) -> Kind {
        match self {
            Work::Orchestration(_) => Kind::Orchestration,
            Work::Activity(_) => Kind::Activity,
            Work::Entity(_) => Kind::Entity,
        }
    }

    fn token(&self) -> &CompletionToken {
        match self {
            Work::Orchestration(item) => &item.token,
            Work::Activity(item) => &item.token,
            Work::Entity(item) => &item.token,
        }
    }

    /// The orchestration, activity or entity name and version the item is
    /// for, as work-item filters match them.
    fn name_and_version(&self) -> (&str, Option<&str>) {
        match self {
            Work::Orchestration(item) => item
                .past_events
                .iter()
                .chain(item.new_events.iter())
                .find_map(|event| match &event.kind {
                    EventKind::ExecutionStarted { name, version, .. } => {
                        Some((name.as_str(), version.as_deref()))
                    }
                    _ => None,
                })
                .unwrap_or(("", None)),
            Work::Activity(item) => (item.name.as_str(), item.version.as_deref()),
            Work::Entity(item) => (item.entity.name(), None),
        }
    }
}

/// What one stream accepts, from its `GetWorkItemsRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamFilters {
    /// `None`: every orchestration. Otherwise (name, versions; empty = any).
    pub orchestrations: Option<Vec<(String, Vec<String>)>>,
    /// `None`: every activity. Otherwise (name, versions; empty = any).
    pub activities: Option<Vec<(String, Vec<String>)>>,
    /// `None`: every entity. Otherwise entity names (case-insensitive).
    pub entities: Option<Vec<String>>,
}

impl StreamFilters {
    fn accepts(&self, work: &Work) -> bool {
        let (name, version) = work.name_and_version();
        // `unversioned`: what an item without a version does against a
        // filter that lists versions.
        let by_name_and_version =
            |filters: &Option<Vec<(String, Vec<String>)>>, unversioned: bool| match filters {
                None => true,
                Some(list) => list.iter().any(|(n, versions)| {
                    n == name
                        && (versions.is_empty()
                            || version.map_or(unversioned, |v| versions.iter().any(|x| x == v)))
                }),
            };
        match work.kind() {
            Kind::Orchestration => by_name_and_version(&self.orchestrations, false),
            // The SDKs schedule activities without a version unless one is
            // named, while a versioned worker's filters list its version
            // for activities too: such an activity is taken by name, as
            // the Scheduler does (otherwise it would wait forever).
            Kind::Activity => by_name_and_version(&self.activities, true),
            Kind::Entity => match &self.entities {
                None => true,
                Some(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            },
        }
    }

    fn takes_kind(&self, kind: Kind) -> bool {
        match kind {
            Kind::Orchestration => self.orchestrations.as_ref().is_none_or(|l| !l.is_empty()),
            Kind::Activity => self.activities.as_ref().is_none_or(|l| !l.is_empty()),
            Kind::Entity => self.entities.as_ref().is_none_or(|l| !l.is_empty()),
        }
    }
}

/// A message on a worker stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// Work to do.
    Work(Work),
    /// Nothing to do; the stream is alive.
    HealthPing,
}

struct Stream {
    sender: mpsc::UnboundedSender<StreamMessage>,
    filters: StreamFilters,
    limits: [usize; 3],
    in_flight: [usize; 3],
}

#[derive(Default)]
struct State {
    streams: HashMap<u64, Stream>,
    next_stream: u64,
    /// Items some connected stream accepts, waiting for room, oldest first.
    held: [VecDeque<Work>; 3],
    /// Items no connected stream accepts (their worker is away), oldest
    /// first. They are kept without a cap, so they cannot stop the puller
    /// from reaching work a connected stream wants; their memory is the
    /// engine's anyway (a step's history is shared with the partition
    /// state). A stream that connects and accepts them takes them over.
    unclaimed: [VecDeque<Work>; 3],
    /// Every item a stream holds, by token.
    outstanding: HashMap<CompletionToken, Outstanding>,
    /// Items handed to streams since start, per kind.
    dispatched: [u64; 3],
    /// Items dropped instead of handed out, per kind: the backend knew
    /// them stale (their execution ended while they waited here).
    dropped_stale: [u64; 3],
}

/// An item a stream holds.
struct Outstanding {
    stream: u64,
    kind: Kind,
    /// For an entity batch: its state before and its operation count,
    /// which the completion is checked and rolled back against.
    entity: Option<EntityBatchShape>,
    /// For an orchestration step: its instance.
    instance: Option<String>,
}

/// What the completion of an entity batch needs to know of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityBatchShape {
    /// The entity's state before the batch.
    pub state: Option<String>,
    /// How many operations the batch has.
    pub operations: usize,
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Worker streams connected.
    pub streams: usize,
    /// Items waiting here, per kind: for room in a stream that accepts
    /// them, or for a stream that accepts them to connect.
    pub held: [usize; 3],
    /// Items a stream holds, per kind.
    pub in_flight: [usize; 3],
    /// Items handed to streams since the server started, per kind.
    pub dispatched: [u64; 3],
    /// Items dropped before they went out because they were stale (their
    /// execution ended while they waited), per kind.
    pub dropped_stale: [u64; 3],
}

/// The dispatcher; cheap to share.
pub struct Dispatcher {
    backend: Arc<dyn Backend>,
    /// [`HELD_ITEMS_MAX`], smaller in tests.
    held_items_max: usize,
    state: Mutex<State>,
    /// Wakes the puller of a kind when a stream or room appears.
    room: [Notify; 3],
    /// Becomes true on [`Dispatcher::close`].
    shutdown: watch::Sender<bool>,
    health_ping_interval: Duration,
}

/// A connected stream's side: messages to forward, and its id for
/// [`Dispatcher::disconnect`].
pub struct Connection {
    /// The stream's id.
    pub id: u64,
    /// Work and pings for this stream, in order.
    pub messages: mpsc::UnboundedReceiver<StreamMessage>,
}

impl Dispatcher {
    /// Starts the pullers; they run until [`Dispatcher::close`].
    pub fn start(backend: Arc<dyn Backend>, health_ping_interval: Duration) -> Arc<Dispatcher> {
        Self::start_holding(backend, health_ping_interval, HELD_ITEMS_MAX)
    }

    fn start_holding(
        backend: Arc<dyn Backend>,
        health_ping_interval: Duration,
        held_items_max: usize,
    ) -> Arc<Dispatcher> {
        let dispatcher = Arc::new(Dispatcher {
            backend,
            held_items_max,
            state: Mutex::new(State::default()),
            room: [Notify::new(), Notify::new(), Notify::new()],
            shutdown: watch::Sender::new(false),
            health_ping_interval,
        });
        for kind in KINDS {
            tokio::spawn(Arc::clone(&dispatcher).pull(kind));
        }
        dispatcher
    }

    /// Registers a worker stream. `limits` are the most items of each kind
    /// (orchestration, activity, entity) it may hold at once.
    pub fn connect(self: &Arc<Self>, filters: StreamFilters, limits: [usize; 3]) -> Connection {
        let (sender, messages) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.state.lock();
            let id = state.next_stream;
            state.next_stream += 1;
            state.streams.insert(
                id,
                Stream {
                    sender: sender.clone(),
                    filters,
                    limits: limits.map(|l| l.max(1)),
                    in_flight: [0; 3],
                },
            );
            for kind in KINDS {
                claim_for_new_stream(&mut state, kind, id);
                self.assign_held(&mut state, kind);
            }
            id
        };
        for notify in &self.room {
            notify.notify_one();
        }
        // Health pings, and the end of the stream noticed even when it is idle.
        let dispatcher = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(dispatcher.health_ping_interval);
            ticker.tick().await;
            let mut shutdown = dispatcher.shutdown.subscribe();
            loop {
                tokio::select! {
                    _ = sender.closed() => break,
                    _ = shutdown.wait_for(|closed| *closed) => break,
                    _ = ticker.tick() => {
                        if sender.send(StreamMessage::HealthPing).is_err() {
                            break;
                        }
                    }
                }
            }
            dispatcher.disconnect(id).await;
        });
        if self.is_closed() {
            self.state.lock().streams.remove(&id);
        }
        Connection { id, messages }
    }

    /// Forgets a stream and gives its unfinished items back to the backend
    /// to be offered again. Idempotent.
    pub async fn disconnect(&self, id: u64) {
        let unfinished: Vec<(CompletionToken, Kind)> = {
            let mut state = self.state.lock();
            if state.streams.remove(&id).is_none() {
                return;
            }
            let tokens: Vec<_> = state
                .outstanding
                .iter()
                .filter(|(_, item)| item.stream == id)
                .map(|(token, item)| (token.clone(), item.kind))
                .collect();
            for (token, _) in &tokens {
                state.outstanding.remove(token);
            }
            tokens
        };
        if !unfinished.is_empty() {
            tracing::info!(
                stream = id,
                items = unfinished.len(),
                "worker stream ended with unfinished work; giving it back"
            );
        }
        for (token, kind) in unfinished {
            let result = match kind {
                Kind::Orchestration => self.backend.abandon_orchestration_work_item(&token).await,
                Kind::Activity => self.backend.abandon_activity_work_item(&token).await,
                Kind::Entity => self.backend.abandon_entity_work_item(&token).await,
            };
            if let Err(error) = result {
                // Stale already (completed meanwhile) or shutting down.
                tracing::debug!(%error, token = %token.0, "abandon after stream end");
            }
        }
    }

    /// Whether a worker holds a step of `instance` now (handed out, not
    /// yet completed or abandoned). A scan: only a termination asks.
    pub fn step_out(&self, instance: &str) -> bool {
        self.state
            .lock()
            .outstanding
            .values()
            .any(|item| item.instance.as_deref() == Some(instance))
    }

    /// Marks an item finished (completed or abandoned by its worker): frees
    /// its stream's slot. Unknown tokens are ignored (the backend judges
    /// staleness).
    pub fn finish(&self, token: &CompletionToken) {
        let mut state = self.state.lock();
        if let Some(Outstanding { stream, kind, .. }) = state.outstanding.remove(token) {
            if let Some(s) = state.streams.get_mut(&stream) {
                s.in_flight[kind as usize] = s.in_flight[kind as usize].saturating_sub(1);
            }
            self.assign_held(&mut state, kind);
            self.room[kind as usize].notify_one();
        }
    }

    /// The shape of an entity batch a stream holds, or `None` if no stream
    /// holds `token` (completed, or given back when its stream ended).
    pub fn entity_item(&self, token: &CompletionToken) -> Option<EntityBatchShape> {
        self.state
            .lock()
            .outstanding
            .get(token)
            .and_then(|item| item.entity.clone())
    }

    /// Ends every stream and stops the pullers.
    pub fn close(&self) {
        self.shutdown.send_replace(true);
        self.state.lock().streams.clear();
        for notify in &self.room {
            notify.notify_one();
        }
    }

    fn is_closed(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> DispatchStats {
        let state = self.state.lock();
        let mut stats = DispatchStats {
            streams: state.streams.len(),
            dispatched: state.dispatched,
            dropped_stale: state.dropped_stale,
            ..DispatchStats::default()
        };
        for kind in KINDS {
            stats.held[kind as usize] =
                state.held[kind as usize].len() + state.unclaimed[kind as usize].len();
        }
        for item in state.outstanding.values() {
            stats.in_flight[item.kind as usize] += 1;
        }
        stats
    }

    async fn pull(self: Arc<Self>, kind: Kind) {
        loop {
            // Wait until a stream that takes this kind has room (and there
            // is room here). Taking work only then matters for steps: the
            // engine reads a step's events when it is taken, so a step
            // that waits in the engine gathers what arrives meanwhile.
            loop {
                let room = self.room[kind as usize].notified();
                if self.is_closed() {
                    return;
                }
                {
                    let state = self.state.lock();
                    let wanted = state.streams.values().any(|s| {
                        s.filters.takes_kind(kind)
                            && s.in_flight[kind as usize] < s.limits[kind as usize]
                    });
                    if wanted && state.held[kind as usize].len() < self.held_items_max {
                        break;
                    }
                }
                room.await;
            }
            let mut shutdown = self.shutdown.subscribe();
            let next = async {
                match kind {
                    Kind::Orchestration => self
                        .backend
                        .next_orchestration_work_item()
                        .await
                        .map(Work::Orchestration),
                    Kind::Activity => self
                        .backend
                        .next_activity_work_item()
                        .await
                        .map(Work::Activity),
                    Kind::Entity => self.backend.next_entity_work_item().await.map(Work::Entity),
                }
            };
            let work = tokio::select! {
                work = next => work,
                _ = shutdown.wait_for(|closed| *closed) => return,
            };
            match work {
                Ok(work) => {
                    let mut state = self.state.lock();
                    if state.streams.values().any(|s| s.filters.accepts(&work)) {
                        state.held[kind as usize].push_back(work);
                        self.assign_held(&mut state, kind);
                    } else {
                        let unclaimed = &mut state.unclaimed[kind as usize];
                        unclaimed.push_back(work);
                        // Unclaimed items wait for a worker that may never
                        // come: now and then drop those that went stale.
                        if unclaimed.len().is_power_of_two() && unclaimed.len() >= 1024 {
                            let before = unclaimed.len();
                            unclaimed.retain(|work| !self.backend.is_stale(work.token()));
                            let dropped = (before - unclaimed.len()) as u64;
                            state.dropped_stale[kind as usize] += dropped;
                        }
                    }
                }
                Err(RuntimeError::ShutDown) => return,
                Err(error) => {
                    tracing::warn!(%error, ?kind, "taking work from the engine failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Gives held items of `kind`, oldest first, to streams that accept
    /// them and have room; items that must wait for room stay, in order,
    /// and items no connected stream accepts any more (their stream
    /// ended) move to the unclaimed ones.
    fn assign_held(&self, state: &mut State, kind: Kind) {
        let has_room = |state: &State| {
            state
                .streams
                .values()
                .any(|s| s.in_flight[kind as usize] < s.limits[kind as usize])
        };
        // Usually every stream is full and the held items wait: no scan.
        if state.held[kind as usize].is_empty() || !has_room(state) {
            return;
        }
        let mut held = std::mem::take(&mut state.held[kind as usize]);
        let mut kept = VecDeque::new();
        while let Some(work) = held.pop_front() {
            if !has_room(state) {
                // Nobody can take more: the rest keeps its order.
                kept.push_back(work);
                kept.append(&mut held);
                break;
            }
            let target = state
                .streams
                .iter()
                .filter(|(_, s)| {
                    s.in_flight[kind as usize] < s.limits[kind as usize] && s.filters.accepts(&work)
                })
                .min_by_key(|(id, s)| (s.in_flight[kind as usize], **id))
                .map(|(id, _)| *id);
            if target.is_some() && self.backend.is_stale(work.token()) {
                // Its execution ended while it waited here: a worker would
                // run it for nothing (its completion is refused).
                state.dropped_stale[kind as usize] += 1;
                continue;
            }
            let Some(id) = target else {
                if state.streams.values().any(|s| s.filters.accepts(&work)) {
                    kept.push_back(work);
                } else {
                    state.unclaimed[kind as usize].push_back(work);
                }
                continue;
            };
            let token = work.token().clone();
            let entity = match &work {
                Work::Entity(item) => Some(EntityBatchShape {
                    state: item.state.clone(),
                    operations: item.operations.len(),
                }),
                _ => None,
            };
            let instance = match &work {
                Work::Orchestration(item) => Some(item.instance_id.as_str().to_owned()),
                _ => None,
            };
            let Some(stream) = state.streams.get_mut(&id) else {
                kept.push_back(work);
                continue;
            };
            match stream.sender.send(StreamMessage::Work(work)) {
                Ok(()) => {
                    stream.in_flight[kind as usize] += 1;
                    state.dispatched[kind as usize] += 1;
                    state.outstanding.insert(
                        token,
                        Outstanding {
                            stream: id,
                            kind,
                            entity,
                            instance,
                        },
                    );
                }
                Err(mpsc::error::SendError(message)) => {
                    // The stream just ended; its watcher will clean up.
                    stream.limits = [0; 3];
                    if let StreamMessage::Work(work) = message {
                        kept.push_back(work);
                    }
                }
            }
        }
        state.held[kind as usize] = kept;
    }
}

/// Moves the unclaimed items of `kind` that the new stream `id` accepts to
/// the held ones (oldest first), so they are offered to it.
fn claim_for_new_stream(state: &mut State, kind: Kind, id: u64) {
    let Some(stream) = state.streams.get(&id) else {
        return;
    };
    if state.unclaimed[kind as usize].is_empty() || !stream.filters.takes_kind(kind) {
        return;
    }
    let unclaimed = std::mem::take(&mut state.unclaimed[kind as usize]);
    let (claimed, still): (VecDeque<Work>, VecDeque<Work>) = unclaimed
        .into_iter()
        .partition(|work| stream.filters.accepts(work));
    state.unclaimed[kind as usize] = still;
    state.held[kind as usize].extend(claimed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_engine::{Engine, EngineOptions};
    use basalt_runtime::{EntityId, EntityOperation};
    use basalt_storage::Storage;

    fn entities_only(names: &[&str]) -> StreamFilters {
        StreamFilters {
            orchestrations: Some(Vec::new()),
            activities: Some(Vec::new()),
            entities: Some(names.iter().map(|n| (*n).to_owned()).collect()),
        }
    }

    async fn next_entity_name(connection: &mut Connection) -> String {
        let message = tokio::time::timeout(Duration::from_secs(10), connection.messages.recv())
            .await
            .expect("work arrives (a liveness check, not a speed one)")
            .expect("the stream is open");
        match message {
            StreamMessage::Work(Work::Entity(item)) => item.entity.name().to_owned(),
            other => panic!("expected an entity batch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn work_no_stream_accepts_does_not_hold_up_work_a_stream_wants() {
        let engine = Engine::open(Storage::in_memory(), EngineOptions::default())
            .await
            .expect("open");
        let backend: Arc<dyn Backend> = Arc::new(engine.clone());
        // Room for 3 held items: more "ghost" batches than that arrive
        // before the one batch the connected stream wants.
        let dispatcher = Dispatcher::start_holding(backend, Duration::from_secs(60), 3);
        let mut real = dispatcher.connect(entities_only(&["real"]), [10, 10, 10]);
        let operation = EntityOperation {
            name: "poke".into(),
            input: None,
        };
        for key in 0..6 {
            let ghost = EntityId::new("ghost", key.to_string()).expect("id");
            engine
                .signal_entity(&ghost, operation.clone(), None)
                .await
                .expect("signal");
        }
        let wanted = EntityId::new("real", "r").expect("id");
        engine
            .signal_entity(&wanted, operation, None)
            .await
            .expect("signal");
        assert_eq!(next_entity_name(&mut real).await, "real");
        // The ghosts wait for their worker, and a stream that takes them
        // gets every one.
        let mut ghosts = dispatcher.connect(entities_only(&["ghost"]), [10, 10, 10]);
        let mut names = Vec::new();
        for _ in 0..6 {
            names.push(next_entity_name(&mut ghosts).await);
        }
        assert!(names.iter().all(|n| n == "ghost"), "{names:?}");
        assert_eq!(dispatcher.stats().held, [0, 0, 0]);
        dispatcher.close();
        engine.shutdown().await;
    }

    fn activities_only(names: &[&str]) -> StreamFilters {
        StreamFilters {
            orchestrations: Some(Vec::new()),
            activities: Some(
                names
                    .iter()
                    .map(|n| ((*n).to_owned(), Vec::new()))
                    .collect(),
            ),
            entities: Some(Vec::new()),
        }
    }

    /// Activities held here for a worker that is not connected are
    /// dropped, not handed out, once their execution is terminated: a
    /// worker that connects later gets none of them (it got all five
    /// before the check), and the drops are counted.
    #[tokio::test]
    async fn held_activities_of_a_terminated_instance_are_not_handed_out() {
        use basalt_runtime::{
            ActionKind, OrchestrationStepResult, OrchestratorAction, StartRequest,
        };
        let engine = Engine::open(Storage::in_memory(), EngineOptions::default())
            .await
            .expect("open");
        let backend: Arc<dyn Backend> = Arc::new(engine.clone());
        let dispatcher = Dispatcher::start(backend, Duration::from_secs(60));
        // A stream for other activities: the puller takes the slow ones,
        // which wait here, unclaimed, for a worker that accepts them.
        let _other = dispatcher.connect(activities_only(&["other"]), [10, 10, 10]);
        let id = engine
            .start_instance(StartRequest {
                name: "fan".into(),
                instance_id: Some("fan-1".into()),
                ..StartRequest::default()
            })
            .await
            .expect("start");
        let step = engine.next_orchestration_work_item().await.expect("step");
        let actions = (0..5)
            .map(|n| OrchestratorAction {
                id: n,
                kind: ActionKind::ScheduleTask {
                    name: "slow".into(),
                    version: None,
                    input: None,
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while dispatcher.stats().held[Kind::Activity as usize] < 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                dispatcher.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.terminate(&id, None).await.expect("terminate");

        let mut slow = dispatcher.connect(activities_only(&["slow"]), [10, 10, 10]);
        let got = tokio::time::timeout(Duration::from_millis(300), slow.messages.recv()).await;
        assert!(got.is_err(), "a dead activity went out: {got:?}");
        let stats = dispatcher.stats();
        assert_eq!(stats.dropped_stale[Kind::Activity as usize], 5, "{stats:?}");
        assert_eq!(stats.held[Kind::Activity as usize], 0, "{stats:?}");
        dispatcher.close();
        engine.shutdown().await;
    }
}
