//! One partition's task: it owns the partition state and log, turns
//! commands into logged events, applies them, releases local effects at
//! once (pipelining) and outward effects only once durable (I1).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use basalt_partitions::checkpoint::Changes;
use basalt_partitions::{
    Effects, Envelope, Event, PartitionState, Position, Reply, StateKey, codec,
};
use basalt_runtime::{ActivityWorkItem, EntityWorkItem, Error, InstanceId};
use basalt_storage::{DurableWatch, Log, Lsn, StateStore};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::shared::{Shared, StepSlot, StepTicket};
use crate::timers::now_ms;
use crate::token::{ActivityToken, EntityToken};
use crate::transport::{Mail, Outgoing, Refused};

mod reopen;
pub(crate) use reopen::Reopen;
use reopen::reopen_done;

/// When a submitter gets its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyWhen {
    /// Once the event is durable: client requests (I1).
    Durable,
    /// As soon as it is applied: worker completions (a lost completion is
    /// simply redone after recovery).
    Applied,
}

/// A read of partition state whose answer is delivered by the returned
/// function once everything the read saw is durable. A failed partition
/// calls it with the failure instead of its state.
pub(crate) type Read =
    Box<dyn FnOnce(Result<&PartitionState, Error>) -> Box<dyn FnOnce() + Send> + Send>;

/// What a partition task is asked to do.
pub(crate) enum Command {
    /// Check, log and apply an event.
    Submit {
        event: Event,
        reply: Option<oneshot::Sender<Result<Reply, Error>>>,
        when: ReplyWhen,
    },
    /// Read the state, once the record `key` names (if any) is in memory.
    Read(Option<StateKey>, Read),
    /// Read the state as applied, durable or not: only for the engine's
    /// own decisions (whether a wait is over), never for an answer.
    Peek(StateKey, Read),
    /// Read the state as applied without loading any record: the hosted
    /// fetchers' look at what is queued. (Records with queued work are the
    /// last evicted, but under memory pressure they can go cold and are
    /// then not seen until loaded: see `docs/duroxide.md`.)
    PeekAll(Read),
    /// One page of a query over both tiers.
    Query(Query),
    /// Write a checkpoint now (tests, shutdown).
    Checkpoint(oneshot::Sender<Result<(), Error>>),
    /// The encoded state at its last LSN, once durable (replay checks).
    Snapshot(oneshot::Sender<Result<(u64, Vec<u8>), Error>>),
    /// The log's counters.
    LogStats(oneshot::Sender<basalt_storage::LogStats>),
    /// The log's counters and where the log and its checkpoints stand
    /// (metrics and the dashboard's partition page), in one round trip.
    Status(oneshot::Sender<(basalt_storage::LogStats, crate::engine::LogPosition)>),
    /// Flush, checkpoint and stop.
    Shutdown(oneshot::Sender<()>),
}

/// A query of one partition: up to `limit` matches after the query's
/// continuation, and whether there are more.
pub(crate) enum Query {
    Instances(
        basalt_runtime::InstanceQuery,
        usize,
        oneshot::Sender<Result<(Vec<basalt_runtime::InstanceState>, bool), Error>>,
    ),
    Entities(
        basalt_runtime::EntityQuery,
        usize,
        oneshot::Sender<Result<(Vec<basalt_runtime::EntityState>, bool), Error>>,
    ),
    /// Every hosted instance that exists, in memory or only in the store.
    HostedInstances(
        oneshot::Sender<Result<Vec<basalt_runtime::hosted::HostedInstanceView>, Error>>,
    ),
}

/// Something to release once its LSN is durable.
enum Parked {
    Reply(oneshot::Sender<Result<Reply, Error>>, Result<Reply, Error>),
    Deliver(Box<dyn FnOnce() + Send>),
    Snapshot(oneshot::Sender<Result<(u64, Vec<u8>), Error>>, u64, Vec<u8>),
    Messages(Vec<Envelope>),
    Acks(Vec<(u32, Position)>),
    /// Local work held back because pipelining is off.
    Local(Box<Effects>),
}

pub(crate) struct PartitionTask {
    pub partition: u32,
    pub state: PartitionState,
    pub log: Log,
    /// The lower tier: every record as of the last checkpoint.
    pub store: Arc<StateStore>,
    /// Bytes of records kept in memory (see `EngineOptions`).
    pub records_budget: usize,
    /// Checkpoint bytes the store holds in memory before a flush to its
    /// tables (see `EngineOptions`).
    pub store_flush_bytes: u64,
    /// The LSN the store held when the partition opened.
    pub store_lsn: u64,
    pub shared: Arc<Shared>,
    /// Client requests, worker results and fired timers (bounded).
    pub commands: mpsc::Receiver<Command>,
    /// Messages, acks and resync traffic from other partitions (bounded;
    /// see `InProcess`).
    pub mailbox: mpsc::Receiver<Mail>,
    /// Traffic for other partitions whose mailboxes were full, in send
    /// order; retried every [`RETRY_UNDELIVERED`]. Past
    /// [`UNDELIVERED_MAX`] the partition takes no new commands (but keeps
    /// reading its mailbox, so partitions never wait on each other).
    pub undelivered: VecDeque<Outgoing>,
    pub checkpoint_interval_events: u64,
    pub checkpoint_interval_bytes: u64,
    pub checkpoint_idle: Duration,
    /// The slots of the steps offered, by instance: where events that
    /// arrive before a worker takes the step are added.
    pub offered: std::collections::HashMap<InstanceId, Arc<StepSlot>>,
    /// Local work goes out before its event is durable (see
    /// `EngineOptions::pipelining`).
    pub pipelining: bool,
    /// Finished instances older than this are purged (see
    /// `EngineOptions::retention_ms`).
    pub retention: Option<Duration>,
    /// How often the retention sweep takes its next step.
    pub retention_sweep: Duration,
    /// What reopening the partition after a storage error needs.
    pub reopen: Reopen,
}

/// The least a partition may hold in changed records before it stops
/// taking commands to let a checkpoint catch up: with a budget near zero
/// (tests, tiny servers) a partition still batches its work.
const DIRTY_CEILING_MIN: usize = 4 << 20;

/// Deliveries a partition keeps for full mailboxes before it stops taking
/// new commands (it goes on reading its own mailbox).
const UNDELIVERED_MAX: usize = 1024;

/// The longest a checkpoint stays only in the store's memory: the first
/// one after this flushes (see `start_checkpoint`).
const STORE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// How soon undelivered traffic is tried again.
const RETRY_UNDELIVERED: Duration = Duration::from_millis(2);

/// Records the retention sweep examines per step, and most it purges.
const RETENTION_EXAMINE_MAX: usize = 1024;
const RETENTION_PURGE_MAX: usize = 256;

struct Running {
    durable: DurableWatch,
    durable_lsn: u64,
    parked: VecDeque<(u64, Parked)>,
    /// Reads of one record, each waiting only for that record's last
    /// change to be durable (not for the whole partition, as `parked`
    /// does), so they are kept apart from the in-order queue.
    reads: Vec<(u64, Box<dyn FnOnce() + Send>)>,
    events_since_checkpoint: u64,
    bytes_since_checkpoint: u64,
    failed: Option<Error>,
    /// The highest LSN a write was already asked for: an event that parks
    /// several effects (a reply, messages, a status change) asks once.
    commit_requested_lsn: u64,
    /// The checkpoint being written, if any (one at a time).
    checkpoint: Option<InFlight>,
    /// The LSN of the last checkpoint taken (written or in flight).
    checkpoint_lsn: u64,
    /// The LSN and wall-clock time (ms since the Unix epoch) of the last
    /// checkpoint written since this run began, for operators.
    checkpoint_written: Option<(u64, u64)>,
    /// Where the retention sweep goes on (`None`: from the first id).
    retention_cursor: Option<String>,
    /// Bytes of checkpoints written to the store's memory but not yet
    /// flushed to its tables (see `start_checkpoint`).
    unflushed_bytes: u64,
    /// When the store was last flushed.
    last_flush: std::time::Instant,
    /// Origins whose messages are dropped until their resync marker comes
    /// (empty unless this run began with a reopen; see `transport`).
    resync: std::collections::HashSet<u32>,
    /// When a stopped partition next tries to reopen.
    reopen_at: tokio::time::Instant,
    /// The attempt to reopen under way, if any.
    reopening: Option<JoinHandle<Result<crate::tiers::Recovered, crate::OpenError>>>,
}

impl Running {
    /// A run over a just-opened log, whose store holds `store_lsn`.
    fn new(log: &Log, store_lsn: u64) -> Running {
        Running {
            durable: log.watch_durable(),
            durable_lsn: log.durable_lsn().0,
            parked: VecDeque::new(),
            reads: Vec::new(),
            events_since_checkpoint: 0,
            bytes_since_checkpoint: 0,
            failed: None,
            commit_requested_lsn: 0,
            checkpoint: None,
            checkpoint_lsn: store_lsn,
            checkpoint_written: None,
            retention_cursor: None,
            unflushed_bytes: 0,
            last_flush: std::time::Instant::now(),
            resync: std::collections::HashSet::new(),
            reopen_at: tokio::time::Instant::now(),
            reopening: None,
        }
    }
}

/// A checkpoint being written by its own task while the partition goes on.
struct InFlight {
    /// What it carries (its writes moved to the task).
    changes: Changes,
    /// When it began, and how long encoding the changes took.
    started: std::time::Instant,
    stall: std::time::Duration,
    /// Whether the task flushes the store (and truncates the log).
    flushes: bool,
    task: JoinHandle<Result<u64, Error>>,
}

/// Waits for the checkpoint in flight; never resolves if there is none.
async fn checkpoint_done(checkpoint: &mut Option<InFlight>) -> Result<u64, Error> {
    match checkpoint {
        Some(in_flight) => match (&mut in_flight.task).await {
            Ok(result) => result,
            Err(e) => Err(Error::Storage(format!("checkpoint task failed: {e}"))),
        },
        None => std::future::pending().await,
    }
}

impl PartitionTask {
    /// Runs until shut down. First hands out the work recovery found.
    pub(crate) async fn run(mut self) {
        let mut pending = self.state.pending_work();
        self.dispatch_local(&mut pending);
        // Recovered state is durable: its outbox and acks can go at once.
        for (origin, up_to) in pending.acks {
            self.deliver(Outgoing::Ack {
                origin,
                receiver: self.partition,
                up_to,
            });
        }
        self.send_messages(pending.messages);
        let mut run = Running::new(&self.log, self.store_lsn);
        let mut sweep = tokio::time::interval(self.retention_sweep);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // An interval, not a sleep made anew each turn of the loop: a busy
        // partition would never let such a sleep run out.
        let mut retry = tokio::time::interval(RETRY_UNDELIVERED);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Dirty records cannot be evicted: past the ceiling, take no
            // new command until the checkpoint in flight makes them clean.
            let over_ceiling = run.failed.is_none() && self.over_dirty_ceiling(&run);
            let backed_up = self.undelivered.len() >= UNDELIVERED_MAX;
            tokio::select! {
                mail = self.mailbox.recv(), if !over_ceiling => {
                    // The engine holds a sender of every mailbox while it
                    // runs; `None` only after every handle is gone.
                    let Some(mail) = mail else { break };
                    self.receive_mail(mail, &mut run).await;
                    for _ in 0..64 {
                        let Ok(mail) = self.mailbox.try_recv() else { break };
                        self.receive_mail(mail, &mut run).await;
                    }
                    self.after_commands(&mut run);
                }
                _ = tokio::time::sleep_until(run.reopen_at),
                    if run.failed.is_some() && run.reopening.is_none() =>
                {
                    self.start_reopen(&mut run).await;
                }
                attempt = reopen_done(&mut run.reopening), if run.reopening.is_some() => {
                    self.reopened(&mut run, attempt);
                }
                _ = retry.tick(), if !self.undelivered.is_empty() => {
                    self.retry_undelivered();
                }
                command = self.commands.recv(), if !over_ceiling && !backed_up => {
                    let Some(command) = command else { break };
                    if let Some(done) = self.handle(command, &mut run).await {
                        self.shutdown(&mut run).await;
                        let _ = done.send(());
                        return;
                    }
                    // Take whatever else is queued before looking at durability.
                    for _ in 0..256 {
                        let Ok(command) = self.commands.try_recv() else { break };
                        if let Some(done) = self.handle(command, &mut run).await {
                            self.shutdown(&mut run).await;
                            let _ = done.send(());
                            return;
                        }
                    }
                    self.after_commands(&mut run);
                }
                written = checkpoint_done(&mut run.checkpoint), if run.checkpoint.is_some() => {
                    if over_ceiling && let Some(in_flight) = &run.checkpoint {
                        let held = in_flight.started.elapsed().as_secs_f64() * 1e3;
                        self.shared.checkpoints.lock().held_back(held);
                    }
                    self.checkpoint_written(&mut run, written);
                    if self.dirty_bytes() >= self.records_budget / 2 {
                        self.start_checkpoint(&mut run, false);
                    }
                    self.evict(&run);
                }
                durable = run.durable.changed(), if run.failed.is_none() => {
                    match durable {
                        Ok(lsn) => {
                            run.durable_lsn = lsn.0;
                            // Storage works: the next stop starts the
                            // backoff afresh.
                            self.reopen.failures_in_a_row = 0;
                            self.release(&mut run);
                        }
                        Err(e) => self.fail(&mut run, Error::Storage(e.to_string())),
                    }
                }
                _ = tokio::time::sleep(self.checkpoint_idle),
                    if (run.events_since_checkpoint > 0 || run.unflushed_bytes > 0)
                        && run.checkpoint.is_none() =>
                {
                    // Idle: everything goes to the store's tables.
                    self.start_checkpoint(&mut run, true);
                }
                _ = sweep.tick(), if self.retention.is_some() && run.failed.is_none() => {
                    self.sweep_retention(&mut run).await;
                }
            }
        }
        self.shutdown(&mut run).await;
    }

    /// After a batch of commands or mail: a checkpoint if one is due, and
    /// eviction down to the budget.
    fn after_commands(&mut self, run: &mut Running) {
        if run.events_since_checkpoint >= self.checkpoint_interval_events
            || run.bytes_since_checkpoint >= self.checkpoint_interval_bytes
            || self.dirty_bytes() >= self.records_budget / 2
        {
            self.start_checkpoint(run, false);
        }
        self.evict(run);
    }

    /// Handles one command; returns the shutdown acknowledgement if asked to stop.
    async fn handle(&mut self, command: Command, run: &mut Running) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Submit { event, reply, when } => self.submit(event, reply, when, run).await,
            Command::Read(key, read) => {
                if run.failed.is_none()
                    && let Some(key) = &key
                    && let Err(e) = crate::tiers::ensure(&mut self.state, &*self.store, key).await
                {
                    self.fail(run, e);
                }
                match &run.failed {
                    Some(failure) => read(Err(failure.clone()))(),
                    None => {
                        // A read of one record waits for that record's
                        // last change only; any other for everything.
                        let deliver = read(Ok(&self.state));
                        match &key {
                            Some(key) => {
                                let lsn = self.state.changed_at(key).unwrap_or(0);
                                self.wait_durable(run, lsn, deliver);
                            }
                            None => self.park(run, Parked::Deliver(deliver)),
                        }
                    }
                }
            }
            Command::Peek(key, read) => {
                if run.failed.is_none()
                    && let Err(e) = crate::tiers::ensure(&mut self.state, &*self.store, &key).await
                {
                    self.fail(run, e);
                }
                match &run.failed {
                    Some(failure) => read(Err(failure.clone()))(),
                    None => read(Ok(&self.state))(),
                }
            }
            Command::PeekAll(read) => match &run.failed {
                Some(failure) => read(Err(failure.clone()))(),
                None => read(Ok(&self.state))(),
            },
            Command::Query(query) => self.query(query, run).await,
            Command::Checkpoint(done) => {
                self.checkpoint_now(run).await;
                let _ = done.send(match &run.failed {
                    Some(e) => Err(e.clone()),
                    None => Ok(()),
                });
            }
            Command::Snapshot(done) => {
                if let Some(failure) = &run.failed {
                    let _ = done.send(Err(failure.clone()));
                    return None;
                }
                let whole = crate::tiers::whole_state(&self.state, &*self.store).await;
                match whole.and_then(|w| {
                    codec::encode_snapshot(&w).map_err(|e| Error::Storage(e.to_string()))
                }) {
                    Ok(bytes) => {
                        let lsn = self.state.last_lsn;
                        self.park(run, Parked::Snapshot(done, lsn, bytes));
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            }
            Command::LogStats(done) => {
                let _ = done.send(self.log.stats());
            }
            Command::Status(done) => {
                let _ = done.send((
                    self.log.stats(),
                    crate::engine::LogPosition {
                        next_lsn: self.log.next_lsn().0,
                        durable_lsn: self.log.durable_lsn().0,
                        checkpoint_lsn: run.checkpoint_lsn,
                        checkpoint_written: run.checkpoint_written,
                        events_since_checkpoint: run.events_since_checkpoint,
                        bytes_since_checkpoint: run.bytes_since_checkpoint,
                        outbox_messages: self.state.outbox.len() as u64,
                    },
                ));
            }
            Command::Shutdown(done) => return Some(done),
        }
        None
    }

    async fn submit(
        &mut self,
        event: Event,
        reply: Option<oneshot::Sender<Result<Reply, Error>>>,
        when: ReplyWhen,
        run: &mut Running,
    ) {
        let acked = matches!(event, Event::OutboxAcked { .. });
        if let Some(failure) = &run.failed {
            if let Some(reply) = reply {
                let _ = reply.send(Err(failure.clone()));
            }
            return;
        }
        // The records the event names must be in memory before it is
        // checked (a unit it sends on to this partition may ask for more
        // while it is applied).
        if let Err(e) = self.prefetch(&event).await {
            if let Some(reply) = reply {
                let _ = reply.send(Err(e.clone()));
            }
            self.fail(run, e);
            return;
        }
        if let Err(rejection) = self.state.check(&event) {
            // Nothing is logged, but the answer still reflects state that
            // must be durable before anyone sees it.
            match (reply, when) {
                (Some(reply), ReplyWhen::Durable) => {
                    self.park(run, Parked::Reply(reply, Err(rejection)));
                }
                (Some(reply), ReplyWhen::Applied) => {
                    let _ = reply.send(Err(rejection));
                }
                (None, _) => {}
            }
            return;
        }
        let bytes = match codec::encode_event(&event) {
            Ok(bytes) => bytes,
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::InvalidInput(e.to_string())));
                }
                return;
            }
        };
        // Deferred: the record is written once something waits for it (see
        // `park_at`), at the latest after the log's deferred-commit delay.
        let lsn = match self.log.append_deferred(&bytes).await {
            // Durability is followed through the durable watch, not per record.
            Ok(appended) => appended.lsn().0,
            // Too large for one record: refuse this request, keep the log.
            Err(e) if e.kind() == basalt_storage::ErrorKind::InvalidInput => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::InvalidInput(e.to_string())));
                }
                return;
            }
            Err(e) => {
                let error = Error::Storage(e.to_string());
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error.clone()));
                }
                self.fail(run, error);
                return;
            }
        };
        let mut fx =
            match crate::tiers::apply_loading(&mut self.state, &*self.store, lsn, event).await {
                Ok(fx) => fx,
                Err(error) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(error.clone()));
                    }
                    self.fail(run, error);
                    return;
                }
            };
        self.withdraw_stale_steps(&fx.changed);
        run.events_since_checkpoint += 1;
        run.bytes_since_checkpoint += bytes.len() as u64;
        if self.pipelining {
            self.dispatch_local(&mut fx);
        } else {
            let local = Effects {
                steps: std::mem::take(&mut fx.steps),
                steps_grown: std::mem::take(&mut fx.steps_grown),
                activities: std::mem::take(&mut fx.activities),
                entity_batches: std::mem::take(&mut fx.entity_batches),
                timers: std::mem::take(&mut fx.timers),
                ..Effects::default()
            };
            if local != Effects::default() {
                self.park_at(run, lsn, Parked::Local(Box::new(local)));
            }
        }
        if let Some(reply) = reply {
            let answer = match fx.reply.take() {
                Some(Reply::Rejected(e)) => Err(e),
                Some(r) => Ok(r),
                None => Ok(Reply::Done),
            };
            match when {
                ReplyWhen::Durable => self.park_at(run, lsn, Parked::Reply(reply, answer)),
                ReplyWhen::Applied => {
                    let _ = reply.send(answer);
                }
            }
        }
        if !fx.messages.is_empty() {
            self.park_at(run, lsn, Parked::Messages(std::mem::take(&mut fx.messages)));
        }
        if !fx.acks.is_empty() {
            // Acks come only from received messages, and a received
            // hosted message always names its record in `fx.hosted`: its
            // sender waits for the acknowledgement (a hosted ack answers
            // once its items are applied where they go), so the acks must
            // not wait for some later write.
            if !fx.hosted.is_empty() {
                self.ask_for_write(run, lsn);
            }
            self.park_at(run, lsn, Parked::Acks(std::mem::take(&mut fx.acks)));
        }
        // Waiters hear of a change at once: what they read of it waits
        // for that instance's change to be durable (see `wait_durable`),
        // so a change nobody waits for asks for no write.
        for id in fx.changed.drain(..) {
            self.shared.notify_changed(&id);
        }
        if !fx.hosted.is_empty() || acked {
            if let Some(changes) = self.shared.hosted_changes.get(self.partition as usize) {
                for key in fx.hosted.drain(..) {
                    let kind = usize::from(!matches!(key, StateKey::Hosted(_)));
                    changes[kind].fetch_add(1, std::sync::atomic::Ordering::Release);
                }
            }
            fx.hosted.clear();
            self.shared.hosted.notify_waiters();
        }
    }

    /// Delivers a read once the log is durable up to `lsn`, asking for a
    /// write if it is not yet.
    fn wait_durable(&mut self, run: &mut Running, lsn: u64, deliver: Box<dyn FnOnce() + Send>) {
        if lsn <= run.durable_lsn {
            deliver();
            return;
        }
        self.ask_for_write(run, lsn);
        run.reads.push((lsn, deliver));
    }

    /// Asks the log to write everything up to `lsn`, once per LSN.
    fn ask_for_write(&self, run: &mut Running, lsn: u64) {
        if lsn > run.commit_requested_lsn {
            run.commit_requested_lsn = lsn;
            self.log.request_commit();
        }
    }

    /// Answers a query page from both tiers, once what it saw is durable.
    async fn query(&mut self, query: Query, run: &mut Running) {
        let store = &*self.store;
        let deliver: Box<dyn FnOnce() + Send> = match query {
            Query::Instances(query, limit, reply) => {
                let answer = match &run.failed {
                    Some(failure) => Err(failure.clone()),
                    None => crate::query::instances(&self.state, store, &query, limit).await,
                };
                Box::new(move || {
                    let _ = reply.send(answer);
                })
            }
            Query::Entities(query, limit, reply) => {
                let answer = match &run.failed {
                    Some(failure) => Err(failure.clone()),
                    None => crate::query::entities(&self.state, store, &query, limit).await,
                };
                Box::new(move || {
                    let _ = reply.send(answer);
                })
            }
            Query::HostedInstances(reply) => {
                let answer = match &run.failed {
                    Some(failure) => Err(failure.clone()),
                    None => {
                        let mut views = Vec::new();
                        crate::tiers::hosted_records(&self.state, store, |id, record| {
                            if record.exists() {
                                views.push(crate::hosted::view(id, record));
                            }
                        })
                        .await
                        .map(|()| views)
                    }
                };
                Box::new(move || {
                    let _ = reply.send(answer);
                })
            }
        };
        if run.failed.is_some() {
            deliver();
        } else {
            self.park(run, Parked::Deliver(deliver));
        }
    }

    /// One step of the retention sweep: purges finished instances whose
    /// last change is older than the retention, in a bounded batch, each
    /// through a logged `Purge` event (so replicas of the log agree).
    async fn sweep_retention(&mut self, run: &mut Running) {
        let Some(retention) = self.retention else {
            return;
        };
        let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
        let found = crate::query::expired(
            &self.state,
            &*self.store,
            run.retention_cursor.as_deref(),
            cutoff,
            RETENTION_PURGE_MAX,
            RETENTION_EXAMINE_MAX,
        )
        .await;
        let (expired, next) = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "retention sweep");
                return;
            }
        };
        run.retention_cursor = next;
        for instance_id in expired {
            let event = Event::Purge { instance_id };
            self.submit(event, None, ReplyWhen::Applied, run).await;
            if run.failed.is_some() {
                return;
            }
        }
    }

    /// Loads the records an event names (for `Messages`, every message's).
    async fn prefetch(&mut self, event: &Event) -> Result<(), Error> {
        let store = &*self.store;
        match event {
            Event::Messages { messages, .. } => {
                for key in messages.iter().filter_map(|m| m.message.key()) {
                    crate::tiers::ensure(&mut self.state, store, &key).await?;
                }
            }
            other => {
                if let Some(key) = other.key() {
                    crate::tiers::ensure(&mut self.state, store, &key).await?;
                }
            }
        }
        Ok(())
    }

    /// Bytes of records changed since the last checkpoint taken.
    fn dirty_bytes(&self) -> usize {
        self.state.instances.dirty_bytes() + self.state.entities.dirty_bytes()
    }

    /// Back-pressure: a checkpoint is being written and the records
    /// changed since the one before it already fill the partition's
    /// budget (at least `DIRTY_CEILING_MIN`). Commands then wait in the
    /// queue, itself bounded by admission control, instead of growing
    /// memory that eviction cannot give back.
    fn over_dirty_ceiling(&self, run: &Running) -> bool {
        run.checkpoint.is_some() && self.dirty_bytes() >= self.records_budget.max(DIRTY_CEILING_MIN)
    }

    /// Drops clean records beyond the budget. Not while local work that
    /// reads its instance later is parked (pipelining off): that work
    /// needs its records in memory when it is released.
    fn evict(&mut self, run: &Running) {
        if self.state.resident_bytes() <= self.records_budget {
            return;
        }
        if !self.pipelining
            && run
                .parked
                .iter()
                .any(|(_, p)| matches!(p, Parked::Local(_)))
        {
            return;
        }
        let evicted = self.state.evict_to(self.records_budget);
        if evicted > 0 {
            tracing::trace!(partition = self.partition, evicted, "evicted records");
        }
    }

    /// An instance terminated, purged or otherwise reset no longer has the
    /// step it was offered: take it out of its slot so no worker runs it
    /// (its completion would be refused anyway).
    fn withdraw_stale_steps(&mut self, changed: &[InstanceId]) {
        for id in changed {
            let Some(slot) = self.offered.get(id) else {
                continue;
            };
            let current = self.state.instance(id).and_then(|i| i.step);
            if current != Some(slot.seq) {
                *slot.step.lock() = None;
                self.offered.remove(id);
            }
        }
    }

    /// Local effects run at once (pipelining): steps, activities, timers.
    fn dispatch_local(&mut self, fx: &mut Effects) {
        // The effects are not needed afterwards: move, don't copy.
        let shared = &self.shared;
        for offer in std::mem::take(&mut fx.steps) {
            let Some(step) = self
                .state
                .take_step(&offer.instance_id, offer.seq, now_ms())
            else {
                continue;
            };
            let slot = Arc::new(StepSlot {
                seq: offer.seq,
                incarnation: shared.incarnation_of(self.partition),
                step: parking_lot::Mutex::new(Some(step)),
            });
            if let Some(replaced) = self.offered.insert(offer.instance_id, Arc::clone(&slot)) {
                // Its ticket, if still queued, is skipped.
                *replaced.step.lock() = None;
            }
            shared.steps.push(StepTicket {
                partition: self.partition,
                slot,
            });
        }
        for grown in std::mem::take(&mut fx.steps_grown) {
            let Some(slot) = self.offered.get(&grown.instance_id) else {
                continue;
            };
            let mut waiting = slot.step.lock();
            match (waiting.as_mut(), self.state.instance(&grown.instance_id)) {
                (Some(step), Some(instance)) if slot.seq == grown.seq => {
                    // The inbox only grows while a step is offered: add
                    // what the step does not hold yet.
                    let held = step.consumed() as usize;
                    step.new_events
                        .extend(instance.inbox.iter().skip(held).cloned());
                }
                (None, _) => {
                    // Taken already: the slot has no more use.
                    drop(waiting);
                    self.offered.remove(&grown.instance_id);
                }
                _ => {}
            }
        }
        let withdrawn = std::mem::take(&mut fx.withdrawn);
        if !withdrawn.is_empty() {
            // Their executions ended: the state no longer holds these
            // activities, so a worker must not get them (a completion
            // would be refused as stale anyway).
            let ended: std::collections::HashSet<&InstanceId> =
                withdrawn.iter().map(|(id, _)| id).collect();
            let dropped = shared
                .activities
                .retain(|item| !ended.contains(&item.instance_id));
            // Items already taken from the queue (a dispatcher holding them
            // for a worker) ask `Backend::is_stale` before they go out.
            shared.ended.lock().extend(withdrawn);
            if dropped > 0 {
                tracing::debug!(
                    partition = self.partition,
                    dropped,
                    "withdrew activities of ended executions"
                );
            }
        }
        let incarnation = shared.incarnation_of(self.partition);
        for task in std::mem::take(&mut fx.activities) {
            let token = ActivityToken {
                partition: self.partition,
                incarnation,
                execution: task.execution,
                task_id: task.task_id,
                instance_id: task.instance_id.clone(),
            }
            .encode();
            shared.activities.push(ActivityWorkItem {
                instance_id: task.instance_id,
                name: task.name,
                version: task.version,
                input: task.input,
                task_id: task.task_id,
                token,
            });
        }
        for batch in std::mem::take(&mut fx.entity_batches) {
            let token = EntityToken {
                partition: self.partition,
                incarnation,
                seq: batch.seq,
                entity: batch.entity.clone(),
            }
            .encode();
            shared.entity_batches.push(EntityWorkItem {
                entity: batch.entity,
                state: batch.state,
                operations: batch.operations,
                token,
            });
        }
        for timer in std::mem::take(&mut fx.timers) {
            shared.timers.arm(self.partition, timer);
        }
    }

    /// Parks an outward effect behind everything appended so far.
    fn park(&mut self, run: &mut Running, parked: Parked) {
        let lsn = self.state.last_lsn;
        self.park_at(run, lsn, parked);
    }

    /// Records are appended deferred: the log writes them when something
    /// here waits for them. Everything parked is such a wait — a client's
    /// answer, a read, a message or status change leaving — except acks:
    /// a late ack only keeps messages in the sender's outbox a little
    /// longer, so acks ride along with the next write (unless a hosted
    /// sender waits for them: see `submit`).
    fn park_at(&mut self, run: &mut Running, lsn: u64, parked: Parked) {
        if lsn <= run.durable_lsn && run.parked.is_empty() {
            self.release_one(parked);
        } else {
            if !matches!(parked, Parked::Acks(_)) {
                self.ask_for_write(run, lsn);
            }
            run.parked.push_back((lsn, parked));
        }
    }

    /// Releases every parked effect whose LSN is durable, in order, and
    /// every read whose record is durable.
    fn release(&mut self, run: &mut Running) {
        if run.reads.iter().any(|(lsn, _)| *lsn <= run.durable_lsn) {
            let durable = run.durable_lsn;
            let (ready, waiting) = std::mem::take(&mut run.reads)
                .into_iter()
                .partition::<Vec<_>, _>(|(lsn, _)| *lsn <= durable);
            run.reads = waiting;
            for (_, deliver) in ready {
                deliver();
            }
        }
        while let Some((lsn, _)) = run.parked.front() {
            if *lsn > run.durable_lsn {
                break;
            }
            if let Some((_, parked)) = run.parked.pop_front() {
                self.release_one(parked);
            }
        }
    }

    fn release_one(&mut self, parked: Parked) {
        match parked {
            Parked::Reply(reply, answer) => {
                let _ = reply.send(answer);
            }
            Parked::Deliver(deliver) => deliver(),
            Parked::Snapshot(done, lsn, bytes) => {
                let _ = done.send(Ok((lsn, bytes)));
            }
            Parked::Messages(messages) => self.send_messages(messages),
            Parked::Acks(acks) => {
                for (origin, up_to) in acks {
                    self.deliver(Outgoing::Ack {
                        origin,
                        receiver: self.partition,
                        up_to,
                    });
                }
            }
            Parked::Local(mut local) => self.dispatch_local(&mut local),
        }
    }

    /// Sends messages to their partitions, grouped by destination in order.
    fn send_messages(&mut self, messages: Vec<Envelope>) {
        let mut by_destination: Vec<(u32, Vec<Envelope>)> = Vec::new();
        for envelope in messages {
            match by_destination
                .iter_mut()
                .find(|(d, _)| *d == envelope.destination)
            {
                Some((_, batch)) => batch.push(envelope),
                None => by_destination.push((envelope.destination, vec![envelope])),
            }
        }
        for (destination, mut messages) in by_destination {
            messages.sort_by_key(|m| (m.origin, m.position));
            // Keep each Messages event well below the record size limit.
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            for message in messages {
                let bytes = message_bytes(&message);
                if !batch.is_empty() && batch_bytes + bytes > MESSAGES_EVENT_BYTES_MAX {
                    let full = std::mem::take(&mut batch);
                    self.deliver(Outgoing::Messages {
                        destination,
                        messages: full,
                    });
                    batch_bytes = 0;
                }
                batch_bytes += bytes;
                batch.push(message);
            }
            if !batch.is_empty() {
                self.deliver(Outgoing::Messages {
                    destination,
                    messages: batch,
                });
            }
        }
    }

    /// Hands traffic to the transport, behind anything still undelivered
    /// for the same partition (receivers drop what is at or below a
    /// position they have seen, so order matters).
    fn deliver(&mut self, outgoing: Outgoing) {
        let to = outgoing.to();
        if self.undelivered.iter().any(|waiting| waiting.to() == to) {
            self.undelivered.push_back(outgoing);
            return;
        }
        match self.shared.transport.try_send(outgoing, now_ms()) {
            Ok(()) | Err(Refused::Gone) => {}
            Err(Refused::Full(outgoing)) => self.undelivered.push_back(outgoing),
        }
    }

    /// Tries the undelivered traffic again, in order; a partition whose
    /// mailbox is still full keeps the rest of its traffic waiting.
    fn retry_undelivered(&mut self) {
        let mut blocked: Vec<u32> = Vec::new();
        let mut still = VecDeque::new();
        while let Some(outgoing) = self.undelivered.pop_front() {
            let to = outgoing.to();
            if blocked.contains(&to) {
                still.push_back(outgoing);
                continue;
            }
            match self.shared.transport.try_send(outgoing, now_ms()) {
                // A partition that is gone has shut down: the outbox keeps
                // the messages for the next run.
                Ok(()) | Err(Refused::Gone) => {}
                Err(Refused::Full(outgoing)) => {
                    blocked.push(to);
                    still.push_back(outgoing);
                }
            }
        }
        self.undelivered = still;
    }

    /// Starts a checkpoint of what changed since the last one, unless one
    /// is being written or nothing changed. The changes are encoded here
    /// (their cost is proportional to them, not to the hub); waiting for
    /// the log, writing the store and truncating the log happen in the
    /// checkpoint's own task while the partition goes on.
    fn start_checkpoint(&mut self, run: &mut Running, force_flush: bool) {
        if run.failed.is_some() || run.checkpoint.is_some() {
            return;
        }
        run.events_since_checkpoint = 0;
        run.bytes_since_checkpoint = 0;
        // Slots of steps workers took are of no more use.
        self.offered.retain(|_, slot| slot.step.lock().is_some());
        let changed = self.state.last_lsn != run.checkpoint_lsn;
        let unflushed = force_flush && run.unflushed_bytes > 0;
        if !(changed || unflushed) {
            return;
        }
        let started = std::time::Instant::now();
        let mut changes = match self.state.take_changes() {
            Ok(changes) => changes,
            Err(e) => {
                self.fail(run, Error::Storage(e.to_string()));
                return;
            }
        };
        let lsn = changes.lsn;
        run.checkpoint_lsn = lsn;
        let writes: Vec<_> = std::mem::take(&mut changes.writes)
            .into_iter()
            .map(|w| (w.key, w.value))
            .collect();
        let bytes: u64 = writes
            .iter()
            .map(|(k, v): &(Vec<u8>, Option<Vec<u8>>)| {
                (k.len() + v.as_ref().map_or(0, Vec::len)) as u64
            })
            .sum();
        // A checkpoint goes to the store's memory, where reads see it (its
        // records may be evicted once it is written); the store's tables
        // get it with the next flush. Flushing every few checkpoints, not
        // each one, makes fewer and larger tables: less compaction and
        // fewer tables for each read to look at. The log keeps everything
        // after the last flush, so a crash loses nothing.
        let flushes = force_flush
            || run.unflushed_bytes + bytes >= self.store_flush_bytes
            || run.last_flush.elapsed() >= STORE_FLUSH_INTERVAL;
        let truncated_bytes = run.unflushed_bytes + bytes;
        let log = self.log.clone();
        let store = Arc::clone(&self.store);
        let storage = |e: basalt_storage::Error| Error::Storage(e.to_string());
        // The store may never be ahead of the durable log: recovery
        // replays the log after the store's LSN.
        log.request_commit();
        let task = tokio::spawn(async move {
            log.wait_durable(Lsn(lsn)).await.map_err(storage)?;
            store.write_checkpoint(writes).await.map_err(storage)?;
            if flushes {
                store.flush().await.map_err(storage)?;
                log.truncate_through(Lsn(lsn), truncated_bytes)
                    .await
                    .map_err(storage)?;
            }
            Ok(bytes)
        });
        run.checkpoint = Some(InFlight {
            changes,
            started,
            stall: started.elapsed(),
            flushes,
            task,
        });
    }

    /// The checkpoint in flight ended: its records may be evicted now.
    fn checkpoint_written(&mut self, run: &mut Running, written: Result<u64, Error>) {
        let Some(in_flight) = run.checkpoint.take() else {
            return;
        };
        match written {
            Ok(bytes) => {
                if in_flight.flushes {
                    run.unflushed_bytes = 0;
                    run.last_flush = std::time::Instant::now();
                } else {
                    run.unflushed_bytes += bytes;
                }
                self.state.checkpointed(&in_flight.changes);
                run.checkpoint_written = Some((in_flight.changes.lsn, crate::timers::now_ms()));
                self.shared.checkpoints.lock().add(
                    in_flight.changes.records,
                    in_flight.started.elapsed().as_secs_f64() * 1e3,
                    in_flight.stall.as_secs_f64() * 1e3,
                    bytes,
                );
                tracing::debug!(
                    partition = self.partition,
                    lsn = in_flight.changes.lsn,
                    records = in_flight.changes.records,
                    bytes,
                    "checkpoint"
                );
            }
            Err(e) => self.fail(run, e),
        }
        run.durable_lsn = run.durable_lsn.max(self.log.durable_lsn().0);
        self.release(run);
    }

    /// Writes a checkpoint of everything applied so far and waits for it.
    async fn checkpoint_now(&mut self, run: &mut Running) {
        for _ in 0..2 {
            if run.checkpoint.is_some() {
                let written = checkpoint_done(&mut run.checkpoint).await;
                self.checkpoint_written(run, written);
            }
            let flushed = run.unflushed_bytes == 0;
            if (self.state.last_lsn == run.checkpoint_lsn && flushed) || run.failed.is_some() {
                return;
            }
            self.start_checkpoint(run, true);
        }
        if run.checkpoint.is_some() {
            let written = checkpoint_done(&mut run.checkpoint).await;
            self.checkpoint_written(run, written);
        }
    }

    async fn shutdown(&mut self, run: &mut Running) {
        if let Some(attempt) = run.reopening.take() {
            // What it recovered, if anything, is dropped with it.
            attempt.abort();
            let _ = attempt.await;
        }
        if run.failed.is_none() {
            let _ = self.log.wait_durable(Lsn(self.state.last_lsn)).await;
            run.durable_lsn = self.log.durable_lsn().0;
            self.release(run);
            self.checkpoint_now(run).await;
        } else if let Some(in_flight) = run.checkpoint.take() {
            let _ = in_flight.task.await;
        }
        let _ = self.store.close().await;
        let _ = self.log.close().await;
    }

    /// Storage failed: this partition answers errors until it reopens
    /// itself (`reopen`, after a backoff; recovery rebuilds it from what is
    /// durable). What is
    /// already durable is released first; the rest is answered with the
    /// error, or dropped (reads: their callers see the backend shut down).
    fn fail(&mut self, run: &mut Running, error: Error) {
        if run.failed.is_some() {
            return;
        }
        let health = &self.shared.health[self.partition as usize];
        health.failures.fetch_add(1, Ordering::Relaxed);
        health.stopped.store(true, Ordering::Release);
        *health.last_error.lock() = Some(error.to_string());
        let wait = self.reopen.backoff();
        self.reopen.failures_in_a_row = self.reopen.failures_in_a_row.saturating_add(1);
        run.reopen_at = tokio::time::Instant::now() + wait;
        tracing::error!(partition = self.partition, %error, ?wait, "partition stopped; it reopens once storage works");
        // Steps still waiting would only earn refused completions.
        for (_, slot) in self.offered.drain() {
            *slot.step.lock() = None;
        }
        run.durable_lsn = run.durable_lsn.max(self.log.durable_lsn().0);
        self.release(run);
        // Reads still waiting are dropped: their callers see the backend
        // shut down.
        run.reads.clear();
        for (_, parked) in run.parked.drain(..) {
            match parked {
                Parked::Reply(reply, _) => {
                    let _ = reply.send(Err(error.clone()));
                }
                Parked::Snapshot(done, _, _) => {
                    let _ = done.send(Err(error.clone()));
                }
                _ => {}
            }
        }
        run.failed = Some(error);
    }
}

/// Largest estimated size of one `Messages` event; a longer delivery is
/// split. Far below the log's record limit, so a resend after recovery of
/// a large outbox cannot make a receiving partition's event too large.
const MESSAGES_EVENT_BYTES_MAX: usize = 4 << 20;

/// A generous estimate of a message's encoded size.
fn message_bytes(envelope: &Envelope) -> usize {
    use basalt_partitions::Message;
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    256 + match &envelope.message {
        Message::StartChild { name, input, .. } => name.len() + text(input),
        Message::ChildFinished { outcome, .. } => match outcome {
            Ok(output) => text(output),
            Err(failure) => failure.message.len() + failure.error_type.len(),
        },
        Message::RaiseEvent { name, data, .. } => name.len() + text(data),
        Message::StartOrchestration { start } => {
            start.instance_id.as_str().len()
                + start.name.len()
                + text(&start.version)
                + text(&start.input)
        }
        Message::EntityRequest {
            entity, operation, ..
        } => entity.to_string().len() + operation.name.len() + text(&operation.input),
        Message::LockRequest(chain) => chain.entities.len() * 64,
        Message::LockGranted { entities, .. } => entities.len() * 64,
        Message::Unlock { .. } => 64,
        Message::EntityReply { result, .. } => match result {
            basalt_runtime::OperationResult::Completed(output) => text(output),
            basalt_runtime::OperationResult::Failed(failure) => {
                failure.message.len() + failure.error_type.len()
            }
        },
        Message::Hosted(message) => hosted_message_bytes(message),
    }
}

/// A generous estimate of a hosted message's encoded size.
fn hosted_message_bytes(message: &basalt_partitions::hosted::HostedMessage) -> usize {
    use basalt_partitions::hosted::HostedMessage;
    match message {
        HostedMessage::Enqueue { message, .. } => message.bytes.len(),
        HostedMessage::EnqueueWork { item, .. } => item.bytes.len() + item.id.instance.len() + 64,
        HostedMessage::Cancel { id, .. } => id.instance.len(),
        HostedMessage::RemoveWork { instance, .. } => instance.as_str().len(),
    }
}
