//! The engine as storage for a hosted runtime (duroxide): the
//! [`HostedBackend`] implementation (`docs/duroxide.md`).
//!
//! Every change is one event on the partition owning its record. Client
//! enqueues and turn commits are answered once durable; a commit that
//! sent items to other partitions is answered once those are applied
//! there too, so the next fetch finds them. Fetches, renewals and abandons
//! are answered when applied: a crash that loses one only makes the item
//! fetchable again. A fetch looks at every partition's state as applied
//! for the oldest candidate, then submits the fetch to that partition; it
//! waits for hosted changes (or the next hidden item's time) when there
//! is none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use basalt_partitions::hosted::{
    Candidate, FetchOutcome, HostedEvent, HostedInstance, HostedReply, WorkOwner,
};
use basalt_partitions::{Event, PartitionState, Reply, StateKey, partition_of};
use basalt_runtime::hosted::{
    HostedBackend, HostedBatch, HostedExecutionView, HostedInstanceView, HostedRemoved,
    HostedToken, HostedTurn, HostedWork, QueuedMessage, SessionClaim, StoredEvent, TagFilter,
    VersionRange, WorkerItem,
};
use basalt_runtime::{Error, InstanceId};

use crate::engine::Engine;
use crate::partition::{Command, Query, ReplyWhen};
use crate::timers::now_ms;
use tokio::sync::oneshot;

/// The last enqueue order handed out in this process.
static LAST_ORDER: AtomicU64 = AtomicU64::new(0);

/// The next enqueue order: microseconds of the wall clock, never equal to
/// or below one handed out before (so orders follow enqueue order within
/// the process, and later processes continue above them as the clock
/// does).
fn next_order() -> u64 {
    let now = now_ms().saturating_mul(1_000);
    let mut last = LAST_ORDER.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_ORDER.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// What a lock token names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// An instance lock: `h{partition}.{lsn}.{instance}`.
    Instance {
        partition: u32,
        lsn: u64,
        instance: InstanceId,
    },
    /// A worker item lock: `wi{partition}.{lsn}.{instance}` or
    /// `ws{partition}.{lsn}.{session}`.
    Work {
        partition: u32,
        lsn: u64,
        owner: WorkOwner,
    },
}

impl Token {
    fn format(&self) -> HostedToken {
        HostedToken(match self {
            Token::Instance {
                partition,
                lsn,
                instance,
            } => format!("h{partition}.{lsn}.{instance}"),
            Token::Work {
                partition,
                lsn,
                owner: WorkOwner::Instance(id),
            } => format!("wi{partition}.{lsn}.{id}"),
            Token::Work {
                partition,
                lsn,
                owner: WorkOwner::Session(id),
            } => format!("ws{partition}.{lsn}.{id}"),
        })
    }

    fn parse(token: &HostedToken) -> Result<Token, Error> {
        let invalid = || Error::Conflict(format!("Invalid lock token {token}"));
        let text = token.0.as_str();
        let (kind, rest) = if let Some(rest) = text.strip_prefix("wi") {
            ("wi", rest)
        } else if let Some(rest) = text.strip_prefix("ws") {
            ("ws", rest)
        } else if let Some(rest) = text.strip_prefix('h') {
            ("h", rest)
        } else {
            return Err(invalid());
        };
        let (partition, rest) = rest.split_once('.').ok_or_else(invalid)?;
        let (lsn, id) = rest.split_once('.').ok_or_else(invalid)?;
        let partition = partition.parse().map_err(|_| invalid())?;
        let lsn = lsn.parse().map_err(|_| invalid())?;
        let id = InstanceId::new(id).map_err(|_| invalid())?;
        Ok(match kind {
            "h" => Token::Instance {
                partition,
                lsn,
                instance: id,
            },
            "wi" => Token::Work {
                partition,
                lsn,
                owner: WorkOwner::Instance(id),
            },
            _ => Token::Work {
                partition,
                lsn,
                owner: WorkOwner::Session(id),
            },
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where a worker item lives: with its session, or with its instance.
fn owner_of(item: &WorkerItem) -> Result<WorkOwner, Error> {
    match &item.session {
        Some(session) => InstanceId::new(session.clone()).map(WorkOwner::Session),
        None => InstanceId::new(item.id.instance.clone()).map(WorkOwner::Instance),
    }
}

pub(crate) fn view(id: &InstanceId, record: &HostedInstance) -> HostedInstanceView {
    HostedInstanceView {
        instance: id.clone(),
        named: record
            .meta
            .as_ref()
            .map(|m| (m.name.clone(), m.version.clone())),
        parent: record
            .meta
            .as_ref()
            .and_then(|m| m.parent.clone())
            .and_then(|p| InstanceId::new(p).ok()),
        created_ms: record.meta.as_ref().map_or(0, |m| m.created_ms),
        updated_ms: record.meta.as_ref().map_or(0, |m| m.updated_ms),
        current_execution: record.current_execution(),
        executions: record
            .executions
            .iter()
            .map(|(execution_id, e)| HostedExecutionView {
                execution_id: *execution_id,
                status: e.status.clone(),
                output: e.output.clone(),
                started_ms: e.started_ms,
                completed_ms: e.completed_ms,
                event_count: e.events.len() as u64,
                history_bytes: e.events.iter().map(|x| x.bytes.len() as u64).sum(),
            })
            .collect(),
        custom_status: (record.custom_status.clone(), record.custom_status_version),
        kv: record
            .kv_merged()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect(),
        queued: record.queue.len() as u64,
    }
}

/// The history of one execution, by event id.
fn history(record: &HostedInstance, execution_id: u64) -> Vec<StoredEvent> {
    let mut events = record
        .executions
        .get(&execution_id)
        .map(|e| e.events.clone())
        .unwrap_or_default();
    events.sort_by_key(|e| e.id);
    events
}

/// What one fetcher last saw of each partition: its best candidate, when
/// something there next comes due, and the partition's change count then.
/// A look is repeated only where the count moved or the due time passed,
/// so a wake-up costs a look at the partitions that changed, not at all.
struct Looks<T> {
    /// `0`: hosted instances; `1`: worker items (see `Shared::hosted_changes`).
    kind: usize,
    seen: Vec<Option<Look<T>>>,
}

struct Look<T> {
    changes: u64,
    candidate: Option<Candidate<T>>,
    due_ms: Option<u64>,
}

impl<T: Clone> Looks<T> {
    fn new(kind: usize, partitions: u32) -> Looks<T> {
        Looks {
            kind,
            seen: (0..partitions).map(|_| None).collect(),
        }
    }

    /// Forgets what was seen of a partition (its candidate was taken).
    fn forget(&mut self, partition: u32) {
        if let Some(seen) = self.seen.get_mut(partition as usize) {
            *seen = None;
        }
    }

    /// The candidates seen, oldest first, with their partitions.
    fn candidates(&self) -> Vec<(Candidate<T>, u32)> {
        let mut all: Vec<_> = self
            .seen
            .iter()
            .enumerate()
            .filter_map(|(p, look)| {
                let candidate = look.as_ref()?.candidate.clone()?;
                Some((candidate, p as u32))
            })
            .collect();
        all.sort_by_key(|(c, _)| c.order);
        all
    }

    /// The earliest due time seen.
    fn next_due(&self) -> Option<u64> {
        self.seen
            .iter()
            .filter_map(|look| look.as_ref()?.due_ms)
            .min()
    }
}

/// The partition's next due time, needed only when it offers nothing now:
/// a fetcher never waits while it holds a candidate (it tries each, and
/// one it loses or that yields nothing is forgotten and looked at again),
/// and under load, when most partitions offer something, the due time is
/// the dearer half of a look (every queued item's lock and visibility).
/// Each kind of fetcher takes the due times of its own kind of queue.
fn due_unless_candidate<T>(
    candidate: &Option<Candidate<T>>,
    next_due: impl FnOnce() -> Option<u64>,
) -> Option<u64> {
    match candidate {
        Some(_) => None,
        None => next_due(),
    }
}

impl Engine {
    /// Looks again at the partitions that changed since `looks` last saw
    /// them (or whose due time passed).
    async fn hosted_refresh<T: Clone + Send + 'static>(
        &self,
        looks: &mut Looks<T>,
        now: u64,
        look: impl Fn(&PartitionState) -> (Option<Candidate<T>>, Option<u64>)
        + Send
        + Sync
        + Clone
        + 'static,
    ) -> Result<(), Error> {
        for partition in 0..self.partition_count() {
            let changes = self
                .shared()
                .hosted_changes
                .get(partition as usize)
                .map_or(0, |c| c[looks.kind].load(Ordering::Acquire));
            let fresh = looks.seen[partition as usize].as_ref().is_some_and(|seen| {
                seen.changes == changes && seen.due_ms.is_none_or(|due| due > now)
            });
            if fresh {
                continue;
            }
            let look = look.clone();
            let (candidate, due_ms) = self.peek_all(partition, move |state| look(state)).await?;
            looks.seen[partition as usize] = Some(Look {
                changes,
                candidate,
                due_ms,
            });
        }
        Ok(())
    }

    /// Submits a hosted event to a partition; its answer, and the LSN it
    /// was logged at.
    async fn hosted_submit(
        &self,
        partition: u32,
        event: HostedEvent,
        when: ReplyWhen,
    ) -> Result<(HostedReply, u64), Error> {
        let event = Event::Hosted {
            event: Box::new(event),
            now_ms: now_ms(),
        };
        match self.submit(partition, event, when).await? {
            Reply::Hosted(reply, lsn) => Ok((reply, lsn)),
            Reply::Rejected(e) => Err(e),
            other => Err(Error::Storage(format!(
                "a hosted event was answered with {other:?}"
            ))),
        }
    }

    /// Waits until the messages partition `partition` sent at `lsn` are
    /// acknowledged by their receivers (applied there).
    async fn hosted_delivered(&self, partition: u32, lsn: u64) -> Result<(), Error> {
        loop {
            let notified = self.shared().hosted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pending = self
                .peek_all(partition, move |state| {
                    state.outbox.keys().any(|(_, position)| position.lsn == lsn)
                })
                .await?;
            if !pending {
                return Ok(());
            }
            // Acks also travel on a timer of their own: look again now and
            // then even without a wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Runs `look` on every partition as applied.
    async fn hosted_look<T: Send + 'static>(
        &self,
        look: impl Fn(&PartitionState) -> T + Send + Sync + Clone + 'static,
    ) -> Result<Vec<T>, Error> {
        let mut all = Vec::with_capacity(self.partition_count() as usize);
        for partition in 0..self.partition_count() {
            let look = look.clone();
            all.push(self.peek_all(partition, move |state| look(state)).await?);
        }
        Ok(all)
    }

    /// Waits for a hosted change, the next due time any partition named, or
    /// the deadline, whichever is first; `false` once the deadline passed.
    async fn hosted_wait(
        &self,
        notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        deadline: tokio::time::Instant,
        next_due_ms: Option<u64>,
    ) -> bool {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        let until = match next_due_ms {
            Some(due) => {
                let wait = Duration::from_millis(due.saturating_sub(now_ms()).max(1));
                deadline.min(now + wait)
            }
            None => deadline,
        };
        let _ = tokio::time::timeout_at(until, notified).await;
        true
    }

    /// What is waiting in every partition's hosted queues, one line per
    /// record, at most `per_partition` lines each: orchestrations with
    /// messages or a lock (not terminal, or with something queued) and
    /// worker queues with items, with times relative to now. For stall
    /// reports (a stress run whose orchestrations did not all finish
    /// prints it), not for programs: the format may change.
    pub async fn hosted_backlog(&self, per_partition: usize) -> Result<Vec<String>, Error> {
        let now = now_ms();
        let rel = move |at: u64| at as i64 - now as i64;
        let pages = self
            .hosted_look(move |state| {
                let mut lines = Vec::new();
                for (id, record) in state.hosted.resident_iter() {
                    if record.queue.is_empty() && record.lock.is_none() {
                        continue;
                    }
                    let status = record
                        .meta
                        .as_ref()
                        .and_then(|m| record.executions.get(&m.current_execution))
                        .map_or("-", |e| e.status.as_str());
                    let queue: Vec<String> = record
                        .queue
                        .iter()
                        .map(|m| {
                            format!(
                                "#{} {:?} visible {:+} ms, fetched by {:?}, attempts {}",
                                m.order,
                                m.kind,
                                rel(m.visible_ms),
                                m.fetched_by,
                                m.attempts
                            )
                        })
                        .collect();
                    lines.push(format!(
                        "orchestration {id} ({status}); lock {:?}; listed {}; queue [{}]",
                        record.lock.map(|l| (l.token, rel(l.until_ms))),
                        state.hosted_listed(&StateKey::Hosted(id.clone())),
                        queue.join("; ")
                    ));
                }
                let work = state
                    .hosted_work
                    .resident_iter()
                    .map(|(id, q)| (StateKey::HostedWork(id.clone()), q))
                    .chain(
                        state
                            .hosted_sessions
                            .resident_iter()
                            .map(|(id, q)| (StateKey::HostedSession(id.clone()), q)),
                    );
                for (key, queue) in work {
                    if queue.is_empty() {
                        continue;
                    }
                    let items: Vec<String> = queue
                        .items()
                        .map(|i| {
                            format!(
                                "#{} activity {} visible {:+} ms, lock {:?}, attempts {}",
                                i.order,
                                i.id.activity_id,
                                rel(i.visible_ms),
                                i.lock.map(|l| (l.token, rel(l.until_ms))),
                                i.attempts
                            )
                        })
                        .collect();
                    lines.push(format!(
                        "work {key:?}; listed {}; items [{}]",
                        state.hosted_listed(&key),
                        items.join("; ")
                    ));
                }
                for (key, ready) in state.hosted_cold_listed() {
                    lines.push(format!(
                        "cold (not in memory) {key:?}: ready {:+} ms, order {}",
                        rel(ready.at_ms),
                        ready.order
                    ));
                }
                let listed = state.hosted_queued.len();
                lines.truncate(per_partition);
                (lines, listed, state.last_lsn)
            })
            .await?;
        let mut all = Vec::new();
        for (partition, (lines, listed, lsn)) in pages.into_iter().enumerate() {
            let changes = self
                .shared()
                .hosted_changes
                .get(partition)
                .map(|c| [c[0].load(Ordering::Acquire), c[1].load(Ordering::Acquire)]);
            all.push(format!(
                "partition {partition}: applied through LSN {lsn}, {listed} records listed as queued, hosted changes {changes:?}"
            ));
            all.extend(lines.into_iter().map(|l| format!("  {l}")));
        }
        Ok(all)
    }

    /// Test hook of the duroxide validation suite: makes every stored
    /// event of a hosted instance undecodable.
    pub async fn hosted_corrupt_history(&self, instance: &InstanceId) -> Result<(), Error> {
        let partition = partition_of(instance.as_str(), self.partition_count());
        self.hosted_submit(
            partition,
            HostedEvent::CorruptHistory {
                instance: instance.clone(),
            },
            ReplyWhen::Durable,
        )
        .await
        .map(|_| ())
    }

    /// Test hook of the duroxide validation suite: the highest attempt
    /// count among a hosted instance's queued messages.
    pub async fn hosted_max_attempts(&self, instance: &InstanceId) -> Result<u32, Error> {
        let partition = partition_of(instance.as_str(), self.partition_count());
        let id = instance.clone();
        self.peek(partition, StateKey::Hosted(id.clone()), move |state| {
            state
                .hosted
                .get(&id)
                .map_or(0, HostedInstance::max_attempts)
        })
        .await
    }
}

#[async_trait]
impl HostedBackend for Engine {
    async fn hosted_enqueue(
        &self,
        instance: &InstanceId,
        mut message: QueuedMessage,
    ) -> Result<(), Error> {
        message.order = next_order();
        message.fetched_by = None;
        message.attempts = 0;
        let partition = partition_of(instance.as_str(), self.partition_count());
        let event = HostedEvent::Enqueue {
            instance: instance.clone(),
            message,
        };
        self.hosted_submit(partition, event, ReplyWhen::Durable)
            .await
            .map(|_| ())
    }

    async fn hosted_enqueue_work(&self, mut item: WorkerItem) -> Result<(), Error> {
        item.order = next_order();
        item.lock = None;
        item.attempts = 0;
        let owner = owner_of(&item)?;
        let partition = partition_of(owner.routing_id(), self.partition_count());
        let event = HostedEvent::EnqueueWork { owner, item };
        self.hosted_submit(partition, event, ReplyWhen::Durable)
            .await
            .map(|_| ())
    }

    async fn hosted_fetch(
        &self,
        lock: Duration,
        filter: Option<Vec<VersionRange>>,
        poll: Duration,
    ) -> Result<Option<HostedBatch>, Error> {
        let deadline = tokio::time::Instant::now() + poll;
        let mut looks = Looks::new(0, self.partition_count());
        loop {
            let notified = self.shared().hosted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = now_ms();
            let wanted = filter.clone();
            self.hosted_refresh(&mut looks, now, move |state| {
                let candidate = state.hosted_candidate(now, wanted.as_deref());
                let due = due_unless_candidate(&candidate, || state.hosted_next_instance_due(now));
                (candidate, due)
            })
            .await?;
            let next_due = looks.next_due();
            let candidates = looks.candidates();
            let mut changed = false;
            for (candidate, partition) in candidates {
                let event = HostedEvent::Fetch {
                    instance: candidate.key.clone(),
                    lock_ms: millis(lock),
                    filter: filter.clone(),
                };
                let (reply, _) = match self
                    .hosted_submit(partition, event, ReplyWhen::Applied)
                    .await
                {
                    Ok(answer) => answer,
                    // Taken by another fetcher since the look: the next one.
                    Err(Error::Conflict(_)) => {
                        looks.forget(partition);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                looks.forget(partition);
                match reply {
                    HostedReply::Fetched {
                        token,
                        outcome: FetchOutcome::Locked { attempts },
                    } => {
                        let instance = candidate.key.clone();
                        let id = instance.clone();
                        let batch = self
                            .peek(partition, StateKey::Hosted(id.clone()), move |state| {
                                let record = state.hosted.get(&id)?;
                                let (name, version) = record.fetch_name(token)?;
                                let execution_id = record.current_execution();
                                Some(HostedBatch {
                                    instance: id.clone(),
                                    name,
                                    version,
                                    execution_id,
                                    history: history(record, execution_id),
                                    messages: record
                                        .batch(token)
                                        .map(|m| m.bytes.clone())
                                        .collect(),
                                    kv_snapshot: record.kv.clone(),
                                    token: Token::Instance {
                                        partition,
                                        lsn: token,
                                        instance: id.clone(),
                                    }
                                    .format(),
                                    attempts,
                                })
                            })
                            .await?;
                        match batch {
                            Some(batch) => return Ok(Some(batch)),
                            None => changed = true,
                        }
                    }
                    // Orphans dropped, or nothing after all: look again.
                    _ => changed = true,
                }
                break;
            }
            if changed {
                continue;
            }
            if !self.hosted_wait(notified, deadline, next_due).await {
                return Ok(None);
            }
        }
    }

    async fn hosted_ack(&self, token: &HostedToken, turn: HostedTurn) -> Result<(), Error> {
        let Token::Instance {
            partition,
            lsn,
            instance,
        } = Token::parse(token)?
        else {
            return Err(Error::Conflict(format!("Invalid lock token {token}")));
        };
        if partition >= self.partition_count() {
            return Err(Error::Conflict(format!("Invalid lock token {token}")));
        }
        let mut ack = turn.ack;
        ack.token = lsn;
        let worker_items = turn
            .worker_items
            .into_iter()
            .map(|mut item| {
                item.order = next_order();
                owner_of(&item).map(|owner| (owner, item))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let orchestrator_items = turn
            .orchestrator_items
            .into_iter()
            .map(|(target, mut message)| {
                message.order = next_order();
                (target, message)
            })
            .collect();
        let event = HostedEvent::Ack {
            instance,
            ack,
            worker_items,
            orchestrator_items,
            cancelled: turn.cancelled,
        };
        let (_, at) = self
            .hosted_submit(partition, event, ReplyWhen::Durable)
            .await?;
        self.hosted_delivered(partition, at).await
    }

    async fn hosted_abandon(
        &self,
        token: &HostedToken,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), Error> {
        let Token::Instance {
            partition,
            lsn,
            instance,
        } = Token::parse(token)?
        else {
            return Err(Error::Conflict(format!("Invalid lock token {token}")));
        };
        let event = HostedEvent::Abandon {
            instance,
            token: lsn,
            delay_ms: delay.map(millis),
            ignore_attempt,
        };
        self.hosted_submit(partition, event, ReplyWhen::Applied)
            .await
            .map(|_| ())
    }

    async fn hosted_renew(&self, token: &HostedToken, extend: Duration) -> Result<(), Error> {
        let Token::Instance {
            partition,
            lsn,
            instance,
        } = Token::parse(token)?
        else {
            return Err(Error::Conflict(format!("Invalid lock token {token}")));
        };
        let event = HostedEvent::Renew {
            instance,
            token: lsn,
            extend_ms: millis(extend),
        };
        self.hosted_submit(partition, event, ReplyWhen::Applied)
            .await
            .map(|_| ())
    }

    async fn hosted_fetch_work(
        &self,
        lock: Duration,
        claim: Option<SessionClaim>,
        tags: TagFilter,
        poll: Duration,
    ) -> Result<Option<HostedWork>, Error> {
        if tags == TagFilter::None {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + poll;
        let mut looks = Looks::new(1, self.partition_count());
        loop {
            let notified = self.shared().hosted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = now_ms();
            let (wanted_claim, wanted_tags) = (claim.clone(), tags.clone());
            self.hosted_refresh(&mut looks, now, move |state| {
                let candidate =
                    state.hosted_work_candidate(now, wanted_claim.as_ref(), &wanted_tags);
                let due = due_unless_candidate(&candidate, || state.hosted_next_work_due(now));
                (candidate, due)
            })
            .await?;
            let next_due = looks.next_due();
            let candidates = looks.candidates();
            let mut changed = false;
            for (candidate, partition) in candidates {
                let (owner, order) = candidate.key;
                let event = HostedEvent::FetchWork {
                    owner: owner.clone(),
                    order,
                    lock_ms: millis(lock),
                    claim: claim.clone(),
                    tags: tags.clone(),
                };
                let (reply, _) = match self
                    .hosted_submit(partition, event, ReplyWhen::Applied)
                    .await
                {
                    Ok(answer) => answer,
                    Err(Error::Conflict(_)) => {
                        looks.forget(partition);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                looks.forget(partition);
                let HostedReply::WorkFetched { token, attempts } = reply else {
                    changed = true;
                    break;
                };
                let key = owner.clone();
                let item = self
                    .peek(partition, owner.key(), move |state| {
                        let queue = match &key {
                            WorkOwner::Instance(id) => state.hosted_work.get(id),
                            WorkOwner::Session(id) => state.hosted_sessions.get(id),
                        };
                        queue.and_then(|q| q.items().find(|i| i.order == order).cloned())
                    })
                    .await?;
                match item {
                    Some(item) => {
                        return Ok(Some(HostedWork {
                            item,
                            token: Token::Work {
                                partition,
                                lsn: token,
                                owner,
                            }
                            .format(),
                            attempts,
                        }));
                    }
                    None => {
                        changed = true;
                        break;
                    }
                }
            }
            if changed {
                continue;
            }
            if !self.hosted_wait(notified, deadline, next_due).await {
                return Ok(None);
            }
        }
    }

    async fn hosted_ack_work(
        &self,
        token: &HostedToken,
        completion: Option<(InstanceId, QueuedMessage)>,
    ) -> Result<(), Error> {
        let (partition, lsn, owner) = work_token(token)?;
        let completion = completion.map(|(target, mut message)| {
            message.order = next_order();
            (target, message)
        });
        let event = HostedEvent::AckWork {
            owner,
            token: lsn,
            completion,
        };
        let (_, at) = self
            .hosted_submit(partition, event, ReplyWhen::Durable)
            .await?;
        self.hosted_delivered(partition, at).await
    }

    async fn hosted_abandon_work(
        &self,
        token: &HostedToken,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), Error> {
        let (partition, lsn, owner) = work_token(token)?;
        let event = HostedEvent::AbandonWork {
            owner,
            token: lsn,
            delay_ms: delay.map(millis),
            ignore_attempt,
        };
        self.hosted_submit(partition, event, ReplyWhen::Applied)
            .await
            .map(|_| ())
    }

    async fn hosted_renew_work(&self, token: &HostedToken, extend: Duration) -> Result<(), Error> {
        let (partition, lsn, owner) = work_token(token)?;
        let event = HostedEvent::RenewWork {
            owner,
            token: lsn,
            extend_ms: millis(extend),
        };
        self.hosted_submit(partition, event, ReplyWhen::Applied)
            .await
            .map(|_| ())
    }

    async fn hosted_renew_sessions(
        &self,
        owners: &[String],
        extend: Duration,
        idle: Duration,
    ) -> Result<u64, Error> {
        if owners.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let wanted = owners.to_vec();
        let looks = self
            .hosted_look(move |state| state.hosted_sessions_of(&wanted, now).0)
            .await?;
        let mut renewed = 0;
        for (partition, sessions) in looks.into_iter().enumerate() {
            for session in sessions {
                let event = HostedEvent::RenewSession {
                    session,
                    owners: owners.to_vec(),
                    extend_ms: millis(extend),
                    idle_ms: millis(idle),
                };
                match self
                    .hosted_submit(partition as u32, event, ReplyWhen::Applied)
                    .await
                {
                    Ok((HostedReply::Count(n), _)) => renewed += n,
                    Ok(_) | Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(renewed)
    }

    async fn hosted_cleanup_sessions(&self) -> Result<u64, Error> {
        let now = now_ms();
        let looks = self
            .hosted_look(move |state| state.hosted_sessions_of(&[], now).1)
            .await?;
        let mut cleaned = 0;
        for (partition, sessions) in looks.into_iter().enumerate() {
            for session in sessions {
                let event = HostedEvent::CleanupSession { session };
                match self
                    .hosted_submit(partition as u32, event, ReplyWhen::Durable)
                    .await
                {
                    Ok((HostedReply::Count(n), _)) => cleaned += n,
                    Ok(_) | Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(cleaned)
    }

    async fn hosted_instance(
        &self,
        instance: &InstanceId,
    ) -> Result<Option<HostedInstanceView>, Error> {
        let partition = partition_of(instance.as_str(), self.partition_count());
        let id = instance.clone();
        self.read(
            partition,
            Some(StateKey::Hosted(id.clone())),
            move |state| state.hosted.get(&id).map(|record| view(&id, record)),
        )
        .await
    }

    async fn hosted_history(
        &self,
        instance: &InstanceId,
        execution_id: u64,
    ) -> Result<Vec<StoredEvent>, Error> {
        let partition = partition_of(instance.as_str(), self.partition_count());
        let id = instance.clone();
        self.read(
            partition,
            Some(StateKey::Hosted(id.clone())),
            move |state| {
                state
                    .hosted
                    .get(&id)
                    .map(|record| history(record, execution_id))
                    .unwrap_or_default()
            },
        )
        .await
    }

    async fn hosted_instances(&self) -> Result<Vec<HostedInstanceView>, Error> {
        let mut all = Vec::new();
        for partition in 0..self.partition_count() {
            let (reply, answer) = oneshot::channel();
            self.command(partition, Command::Query(Query::HostedInstances(reply)))
                .await?;
            all.extend(answer.await.map_err(|_| Error::ShutDown)??);
        }
        all.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(all)
    }

    async fn hosted_delete(&self, instance: &InstanceId) -> Result<HostedRemoved, Error> {
        let partition = partition_of(instance.as_str(), self.partition_count());
        let event = HostedEvent::Delete {
            instance: instance.clone(),
        };
        let (reply, at) = self
            .hosted_submit(partition, event, ReplyWhen::Durable)
            .await?;
        self.hosted_delivered(partition, at).await?;
        Ok(removed(reply))
    }

    async fn hosted_prune(
        &self,
        instance: &InstanceId,
        keep_last: u32,
        completed_before_ms: Option<u64>,
    ) -> Result<HostedRemoved, Error> {
        let partition = partition_of(instance.as_str(), self.partition_count());
        let event = HostedEvent::Prune {
            instance: instance.clone(),
            keep_last,
            completed_before_ms,
        };
        let (reply, _) = self
            .hosted_submit(partition, event, ReplyWhen::Durable)
            .await?;
        Ok(removed(reply))
    }

    async fn hosted_queue_depths(&self) -> Result<(u64, u64), Error> {
        let looks = self
            .hosted_look(|state| state.hosted_queue_depths())
            .await?;
        Ok(looks
            .into_iter()
            .fold((0, 0), |(m, w), (dm, dw)| (m + dm, w + dw)))
    }
}

fn removed(reply: HostedReply) -> HostedRemoved {
    match reply {
        HostedReply::Removed {
            executions,
            events,
            messages,
        } => HostedRemoved {
            executions,
            events,
            messages,
        },
        _ => HostedRemoved::default(),
    }
}

fn work_token(token: &HostedToken) -> Result<(u32, u64, WorkOwner), Error> {
    match Token::parse(token)? {
        Token::Work {
            partition,
            lsn,
            owner,
        } => Ok((partition, lsn, owner)),
        Token::Instance { .. } => Err(Error::Conflict(format!("Invalid lock token {token}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_partition_fetch_and_record() {
        let id = InstanceId::new("order.42/x").expect("id");
        for token in [
            Token::Instance {
                partition: 3,
                lsn: 17,
                instance: id.clone(),
            },
            Token::Work {
                partition: 0,
                lsn: 9,
                owner: WorkOwner::Instance(id.clone()),
            },
            Token::Work {
                partition: 11,
                lsn: 1,
                owner: WorkOwner::Session(id.clone()),
            },
        ] {
            assert_eq!(Token::parse(&token.format()).expect("parses"), token);
        }
        for bad in ["", "h", "h1", "h1.2", "hx.2.i", "q1.2.i", "h1.2."] {
            let error = Token::parse(&HostedToken(bad.into())).expect_err(bad);
            assert!(error.to_string().contains("Invalid lock token"), "{error}");
        }
    }

    #[test]
    fn orders_only_go_up() {
        let mut last = next_order();
        for _ in 0..1_000 {
            let next = next_order();
            assert!(next > last);
            last = next;
        }
    }
}
