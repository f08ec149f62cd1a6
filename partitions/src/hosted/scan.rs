//! What a hosted fetcher looks for in a partition: the oldest message or
//! worker item it may take, and when the next one that is hidden or
//! locked becomes takeable. Reads only; the fetch itself is an event.

use std::collections::BTreeMap;

use basalt_runtime::InstanceId;

use super::{
    FetchPlan, HostedInstance, SessionClaim, TagFilter, VersionRange, WorkOwner, WorkerQueue,
};
use crate::state::{PartitionState, StateKey};
use crate::tier::Tier;

/// The hosted records that may have something queued: instances with
/// orchestrator messages, and instances' and sessions' worker queues with
/// items, each with when something there may next be taken ([`Ready`]).
/// A key is added when a change or an install leaves its record with
/// something queued and taken out when a change or an install leaves it
/// empty or gone. A record that memory pressure made cold (or dropped) is
/// not resident but stays listed with its summary, which cannot go stale:
/// the record changes only once loaded, and every change reindexes it. So
/// a fetcher still sees it: a ready cold record is offered as a
/// candidate, and the fetch event loads it. Completed instances, which
/// are most of a busy hub, are never listed, so a fetcher's look costs
/// what is queued, not what is resident.
#[derive(Clone, Debug, Default)]
pub struct HostedQueued {
    instances: BTreeMap<InstanceId, Ready>,
    work: BTreeMap<InstanceId, Ready>,
    sessions: BTreeMap<InstanceId, Ready>,
}

impl HostedQueued {
    /// Keys listed, of all three kinds (for tests and figures).
    pub fn len(&self) -> usize {
        self.instances.len() + self.work.len() + self.sessions.len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When something in a queued record may next be taken, ignoring version
/// filters, tags and session claims (a fetch checks those once the record
/// is loaded): the earliest time a lock has run out and a message or item
/// is visible, and that message's or item's enqueue order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// From this time on (milliseconds since the epoch).
    pub at_ms: u64,
    /// The enqueue order of what comes ready then.
    pub order: u64,
    /// Messages or items that no fetch holds (a queue depth).
    pub waiting: u32,
}

impl HostedInstance {
    /// [`Ready`] for this instance's orchestrator queue; `None` when it is
    /// empty.
    pub fn ready(&self) -> Option<Ready> {
        let visible = self.queue.iter().map(|m| m.visible_ms).min()?;
        let at_ms = visible.max(self.lock.map_or(0, |l| l.until_ms));
        let order = self
            .queue
            .iter()
            .find(|m| m.visible_ms <= at_ms)
            .map_or(0, |m| m.order);
        let waiting = self.queue.iter().filter(|m| m.fetched_by.is_none()).count();
        Some(Ready {
            at_ms,
            order,
            waiting: u32::try_from(waiting).unwrap_or(u32::MAX),
        })
    }
}

impl WorkerQueue {
    /// [`Ready`] for this worker queue: the item that comes takeable
    /// first; `None` when it is empty.
    pub fn ready(&self) -> Option<Ready> {
        let waiting = u32::try_from(self.unlocked()).unwrap_or(u32::MAX);
        self.items()
            .map(|item| Ready {
                at_ms: item.visible_ms.max(item.lock.map_or(0, |l| l.until_ms)),
                order: item.order,
                waiting,
            })
            .min_by_key(|r| (r.at_ms, r.order))
    }
}

fn mark(map: &mut BTreeMap<InstanceId, Ready>, id: &InstanceId, ready: Option<Ready>) {
    match ready {
        Some(ready) => match map.get_mut(id) {
            Some(known) => *known = ready,
            None => {
                map.insert(id.clone(), ready);
            }
        },
        None => {
            map.remove(id);
        }
    }
}

/// A listed record as a look finds it: in memory, or not (cold or
/// dropped), known then by its summary alone.
enum Listed<'a, V> {
    Resident(&'a V),
    Cold(Ready),
}

/// Every record of `tier` that `keys` lists, each looked up once.
fn listed<'a, V>(
    keys: &'a BTreeMap<InstanceId, Ready>,
    tier: &'a Tier<V>,
) -> impl Iterator<Item = (&'a InstanceId, Listed<'a, V>)> {
    keys.iter().map(move |(id, ready)| {
        let found = match tier.peek_resident(id) {
            Some(record) => Listed::Resident(record),
            None => Listed::Cold(*ready),
        };
        (id, found)
    })
}

/// A cold record's enqueue order if it is ready at `now_ms`: it is then
/// offered, and the fetch loads it and checks what the summary leaves out
/// (version filters, tags, session claims).
fn cold_candidate(ready: Ready, now_ms: u64) -> Option<u64> {
    (ready.at_ms <= now_ms).then_some(ready.order)
}

/// A cold record's ready time if it is still ahead of `now_ms`.
fn cold_due(ready: Ready, now_ms: u64) -> Option<u64> {
    (ready.at_ms > now_ms).then_some(ready.at_ms)
}

/// The oldest thing a fetcher may take here, by enqueue order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    /// Its enqueue order (compared across partitions).
    pub order: u64,
    /// Where it is.
    pub key: K,
}

impl PartitionState {
    /// Brings [`HostedQueued`] up to date for the record `key` names,
    /// after it changed or was installed.
    pub(crate) fn reindex_hosted(&mut self, key: &StateKey) {
        match key {
            StateKey::Hosted(id) => {
                let ready = self
                    .hosted
                    .peek_resident(id)
                    .and_then(HostedInstance::ready);
                mark(&mut self.hosted_queued.instances, id, ready);
            }
            StateKey::HostedWork(id) => {
                let ready = self
                    .hosted_work
                    .peek_resident(id)
                    .and_then(WorkerQueue::ready);
                mark(&mut self.hosted_queued.work, id, ready);
            }
            StateKey::HostedSession(id) => {
                let ready = self
                    .hosted_sessions
                    .peek_resident(id)
                    .and_then(WorkerQueue::ready);
                mark(&mut self.hosted_queued.sessions, id, ready);
            }
            StateKey::Instance(_) | StateKey::Entity(_) => {}
        }
    }

    /// Whether [`HostedQueued`] lists the record `key` names (for stall
    /// reports).
    pub fn hosted_listed(&self, key: &StateKey) -> bool {
        match key {
            StateKey::Hosted(id) => self.hosted_queued.instances.contains_key(id),
            StateKey::HostedWork(id) => self.hosted_queued.work.contains_key(id),
            StateKey::HostedSession(id) => self.hosted_queued.sessions.contains_key(id),
            StateKey::Instance(_) | StateKey::Entity(_) => false,
        }
    }

    /// The listed records that are not resident, with their summaries
    /// (for stall reports).
    pub fn hosted_cold_listed(&self) -> Vec<(StateKey, Ready)> {
        fn cold<V>(
            keys: &BTreeMap<InstanceId, Ready>,
            tier: &Tier<V>,
            key: fn(InstanceId) -> StateKey,
        ) -> Vec<(StateKey, Ready)> {
            listed(keys, tier)
                .filter_map(|(id, found)| match found {
                    Listed::Cold(ready) => Some((key(id.clone()), ready)),
                    Listed::Resident(_) => None,
                })
                .collect()
        }
        let q = &self.hosted_queued;
        let mut all = cold(&q.instances, &self.hosted, StateKey::Hosted);
        all.extend(cold(&q.work, &self.hosted_work, StateKey::HostedWork));
        all.extend(cold(
            &q.sessions,
            &self.hosted_sessions,
            StateKey::HostedSession,
        ));
        all
    }

    /// Builds [`HostedQueued`] again from every resident hosted record
    /// (after the tiers were set whole, as a decoded snapshot does).
    pub fn rebuild_hosted_index(&mut self) {
        let mut index = HostedQueued::default();
        for (id, record) in self.hosted.resident_iter() {
            mark(&mut index.instances, id, record.ready());
        }
        for (id, queue) in self.hosted_work.resident_iter() {
            mark(&mut index.work, id, queue.ready());
        }
        for (id, queue) in self.hosted_sessions.resident_iter() {
            mark(&mut index.sessions, id, queue.ready());
        }
        self.hosted_queued = index;
    }

    /// Resident hosted records whose entry in [`HostedQueued`] is not
    /// what the record says (missing, or a stale [`Ready`]): empty unless
    /// a change escaped the index (a check for tests).
    pub fn hosted_unlisted(&self) -> Vec<StateKey> {
        let mut missing = Vec::new();
        for (id, record) in self.hosted.resident_iter() {
            if self.hosted_queued.instances.get(id).copied() != record.ready() {
                missing.push(StateKey::Hosted(id.clone()));
            }
        }
        for (id, queue) in self.hosted_work.resident_iter() {
            if self.hosted_queued.work.get(id).copied() != queue.ready() {
                missing.push(StateKey::HostedWork(id.clone()));
            }
        }
        for (id, queue) in self.hosted_sessions.resident_iter() {
            if self.hosted_queued.sessions.get(id).copied() != queue.ready() {
                missing.push(StateKey::HostedSession(id.clone()));
            }
        }
        missing
    }

    /// The hosted instance a fetch at `now_ms` would lock (or whose
    /// droppable messages it would drop) with the oldest message: resident
    /// and checked, or cold and ready by its summary.
    pub fn hosted_candidate(
        &self,
        now_ms: u64,
        filter: Option<&[VersionRange]>,
    ) -> Option<Candidate<InstanceId>> {
        // `fetchable` first: it answers at once for the many records with
        // nothing queued; the plan is asked of the few that have something.
        listed(&self.hosted_queued.instances, &self.hosted)
            .filter_map(|(id, found)| {
                let order = match found {
                    Listed::Resident(record) => {
                        let order = record.fetchable(now_ms, filter)?;
                        (record.fetch_plan(now_ms, filter) != FetchPlan::Nothing)
                            .then_some(order)?
                    }
                    Listed::Cold(ready) => cold_candidate(ready, now_ms)?,
                };
                Some(Candidate {
                    order,
                    key: id.clone(),
                })
            })
            .min_by_key(|c| c.order)
    }

    /// The worker item a fetch at `now_ms` with `claim` and `tags` may
    /// take, oldest first: resident and checked, or the first ready item
    /// of a cold queue by its summary.
    pub fn hosted_work_candidate(
        &self,
        now_ms: u64,
        claim: Option<&SessionClaim>,
        tags: &TagFilter,
    ) -> Option<Candidate<(WorkOwner, u64)>> {
        if *tags == TagFilter::None {
            return None;
        }
        let pick = |owner: fn(InstanceId) -> WorkOwner,
                    keys: &BTreeMap<InstanceId, Ready>,
                    tier: &Tier<WorkerQueue>| {
            listed(keys, tier)
                .filter_map(|(id, found)| {
                    let order = match found {
                        Listed::Resident(queue) => queue.candidate(now_ms, claim, tags)?,
                        Listed::Cold(ready) => cold_candidate(ready, now_ms)?,
                    };
                    Some(Candidate {
                        order,
                        key: (owner(id.clone()), order),
                    })
                })
                .min_by_key(|c| c.order)
        };
        let own = pick(
            WorkOwner::Instance,
            &self.hosted_queued.work,
            &self.hosted_work,
        );
        let sessions = pick(
            WorkOwner::Session,
            &self.hosted_queued.sessions,
            &self.hosted_sessions,
        );
        match (own, sessions) {
            (Some(a), Some(b)) => Some(if a.order <= b.order { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The earliest time after `now_ms` at which a hidden orchestrator
    /// message becomes visible or an instance's lock runs out here, cold
    /// records included: when a waiting orchestration fetcher should look
    /// again even if nothing else changes.
    pub fn hosted_next_instance_due(&self, now_ms: u64) -> Option<u64> {
        listed(&self.hosted_queued.instances, &self.hosted)
            .filter_map(|(_, found)| match found {
                Listed::Resident(record) => {
                    let lock = record
                        .lock
                        .filter(|l| l.held(now_ms) && !record.queue.is_empty())
                        .map(|l| l.until_ms);
                    let hidden = record
                        .queue
                        .iter()
                        .map(|m| m.visible_ms)
                        .filter(|at| *at > now_ms)
                        .min();
                    lock.into_iter().chain(hidden).min()
                }
                Listed::Cold(ready) => cold_due(ready, now_ms),
            })
            .min()
    }

    /// The same for worker items (hidden ones, and runs out of locks):
    /// what a waiting work fetcher waits for.
    pub fn hosted_next_work_due(&self, now_ms: u64) -> Option<u64> {
        listed(&self.hosted_queued.work, &self.hosted_work)
            .chain(listed(&self.hosted_queued.sessions, &self.hosted_sessions))
            .filter_map(|(_, found)| match found {
                Listed::Resident(queue) => queue
                    .items()
                    .filter_map(|item| match item.lock.filter(|l| l.held(now_ms)) {
                        Some(lock) => Some(lock.until_ms),
                        None => (item.visible_ms > now_ms).then_some(item.visible_ms),
                    })
                    .min(),
                Listed::Cold(ready) => cold_due(ready, now_ms),
            })
            .min()
    }

    /// Orchestrator messages and worker items here that no fetch holds
    /// (a queue depth), in memory or not: the index's summaries hold the
    /// counts (kept exact for resident records too), so no record is read.
    pub fn hosted_queue_depths(&self) -> (u64, u64) {
        let waiting = |keys: &BTreeMap<InstanceId, Ready>| -> u64 {
            keys.values().map(|r| u64::from(r.waiting)).sum()
        };
        let q = &self.hosted_queued;
        (
            waiting(&q.instances),
            waiting(&q.work) + waiting(&q.sessions),
        )
    }

    /// Sessions here that one of `owners` holds, and sessions whose claim
    /// ran out with no items left, at `now_ms`: (renewable, cleanable).
    pub fn hosted_sessions_of(
        &self,
        owners: &[String],
        now_ms: u64,
    ) -> (Vec<InstanceId>, Vec<InstanceId>) {
        let mut renewable = Vec::new();
        let mut cleanable = Vec::new();
        for (id, queue) in self.hosted_sessions.resident_iter() {
            if let Some(session) = queue.session(id.as_str()) {
                if owners.contains(&session.owner) && session.until_ms > now_ms {
                    renewable.push(id.clone());
                }
                if queue.is_empty() && session.until_ms < now_ms {
                    cleanable.push(id.clone());
                }
            }
        }
        (renewable, cleanable)
    }
}
