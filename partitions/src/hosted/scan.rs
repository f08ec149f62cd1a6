//! What a hosted fetcher looks for in a partition: the oldest message or
//! worker item it may take, and when the next one that is hidden or
//! locked becomes takeable. Reads only; the fetch itself is an event.

use std::collections::BTreeSet;

use basalt_runtime::InstanceId;

use super::{
    FetchPlan, HostedInstance, SessionClaim, TagFilter, VersionRange, WorkOwner, WorkerQueue,
};
use crate::state::{PartitionState, StateKey};
use crate::tier::Tier;

/// The hosted records that may have something queued: instances with
/// orchestrator messages, and instances' and sessions' worker queues with
/// items. A superset: a key is added when a change or an install leaves
/// its record with something queued and taken out when a change or an
/// install leaves it empty or gone; a record that went cold stays listed
/// (and is skipped while it is not resident, as the scans always did).
/// Completed instances, which are most of a busy hub, are never in it, so
/// a fetcher's look costs what is queued, not what is resident.
#[derive(Clone, Debug, Default)]
pub struct HostedQueued {
    instances: BTreeSet<InstanceId>,
    work: BTreeSet<InstanceId>,
    sessions: BTreeSet<InstanceId>,
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

fn mark(set: &mut BTreeSet<InstanceId>, id: &InstanceId, queued: bool) {
    if queued {
        if !set.contains(id) {
            set.insert(id.clone());
        }
    } else {
        set.remove(id);
    }
}

/// The resident records of `tier` that `keys` lists.
fn listed<'a, V>(
    keys: &'a BTreeSet<InstanceId>,
    tier: &'a Tier<V>,
) -> impl Iterator<Item = (&'a InstanceId, &'a V)> {
    keys.iter()
        .filter_map(move |id| Some((id, tier.peek_resident(id)?)))
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
                let queued = self
                    .hosted
                    .peek_resident(id)
                    .is_some_and(|r: &HostedInstance| !r.queue.is_empty());
                mark(&mut self.hosted_queued.instances, id, queued);
            }
            StateKey::HostedWork(id) => {
                let queued = self
                    .hosted_work
                    .peek_resident(id)
                    .is_some_and(|q| !q.is_empty());
                mark(&mut self.hosted_queued.work, id, queued);
            }
            StateKey::HostedSession(id) => {
                let queued = self
                    .hosted_sessions
                    .peek_resident(id)
                    .is_some_and(|q| !q.is_empty());
                mark(&mut self.hosted_queued.sessions, id, queued);
            }
            StateKey::Instance(_) | StateKey::Entity(_) => {}
        }
    }

    /// Builds [`HostedQueued`] again from every resident hosted record
    /// (after the tiers were set whole, as a decoded snapshot does).
    pub fn rebuild_hosted_index(&mut self) {
        let mut index = HostedQueued::default();
        for (id, record) in self.hosted.resident_iter() {
            mark(&mut index.instances, id, !record.queue.is_empty());
        }
        for (id, queue) in self.hosted_work.resident_iter() {
            mark(&mut index.work, id, !queue.is_empty());
        }
        for (id, queue) in self.hosted_sessions.resident_iter() {
            mark(&mut index.sessions, id, !queue.is_empty());
        }
        self.hosted_queued = index;
    }

    /// Resident hosted records with something queued that
    /// [`HostedQueued`] does not list: empty unless a change escaped the
    /// index (a check for tests).
    pub fn hosted_unlisted(&self) -> Vec<StateKey> {
        let mut missing = Vec::new();
        for (id, record) in self.hosted.resident_iter() {
            if !record.queue.is_empty() && !self.hosted_queued.instances.contains(id) {
                missing.push(StateKey::Hosted(id.clone()));
            }
        }
        for (id, queue) in self.hosted_work.resident_iter() {
            if !queue.is_empty() && !self.hosted_queued.work.contains(id) {
                missing.push(StateKey::HostedWork(id.clone()));
            }
        }
        for (id, queue) in self.hosted_sessions.resident_iter() {
            if !queue.is_empty() && !self.hosted_queued.sessions.contains(id) {
                missing.push(StateKey::HostedSession(id.clone()));
            }
        }
        missing
    }

    /// The resident hosted instance a fetch at `now_ms` would lock (or
    /// whose droppable messages it would drop) with the oldest message.
    pub fn hosted_candidate(
        &self,
        now_ms: u64,
        filter: Option<&[VersionRange]>,
    ) -> Option<Candidate<InstanceId>> {
        // `fetchable` first: it answers at once for the many records with
        // nothing queued; the plan is asked of the few that have something.
        listed(&self.hosted_queued.instances, &self.hosted)
            .filter_map(|(id, record)| Some((id, record, record.fetchable(now_ms, filter)?)))
            .filter(|(_, record, _)| record.fetch_plan(now_ms, filter) != FetchPlan::Nothing)
            .map(|(id, _, order)| Candidate {
                order,
                key: id.clone(),
            })
            .min_by_key(|c| c.order)
    }

    /// The resident worker item a fetch at `now_ms` with `claim` and
    /// `tags` may take, oldest first.
    pub fn hosted_work_candidate(
        &self,
        now_ms: u64,
        claim: Option<&SessionClaim>,
        tags: &TagFilter,
    ) -> Option<Candidate<(WorkOwner, u64)>> {
        let pick = |owner: fn(InstanceId) -> WorkOwner,
                    keys: &BTreeSet<InstanceId>,
                    tier: &Tier<WorkerQueue>| {
            listed(keys, tier)
                .filter_map(|(id, queue)| {
                    queue.candidate(now_ms, claim, tags).map(|order| Candidate {
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

    /// The earliest time after `now_ms` at which a hidden message or item
    /// becomes visible or a lock runs out here (when a waiting fetcher
    /// should look again even if nothing else changes).
    pub fn hosted_next_due(&self, now_ms: u64) -> Option<u64> {
        [
            self.hosted_next_instance_due(now_ms),
            self.hosted_next_work_due(now_ms),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// [`hosted_next_due`](Self::hosted_next_due) of the orchestrator
    /// queues only: what an orchestration fetcher waits for.
    pub fn hosted_next_instance_due(&self, now_ms: u64) -> Option<u64> {
        listed(&self.hosted_queued.instances, &self.hosted)
            .map(|(_, v)| v)
            .flat_map(|record| {
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
                lock.into_iter().chain(hidden)
            })
            .min()
    }

    /// [`hosted_next_due`](Self::hosted_next_due) of the worker queues
    /// only: what a work fetcher waits for.
    pub fn hosted_next_work_due(&self, now_ms: u64) -> Option<u64> {
        listed(&self.hosted_queued.work, &self.hosted_work)
            .chain(listed(&self.hosted_queued.sessions, &self.hosted_sessions))
            .map(|(_, v)| v)
            .flat_map(|queue| {
                queue
                    .items()
                    .filter_map(move |item| match item.lock.filter(|l| l.held(now_ms)) {
                        Some(lock) => Some(lock.until_ms),
                        None => (item.visible_ms > now_ms).then_some(item.visible_ms),
                    })
            })
            .min()
    }

    /// Orchestrator messages and worker items here that no fetch holds
    /// (a queue depth).
    pub fn hosted_queue_depths(&self) -> (u64, u64) {
        let messages = listed(&self.hosted_queued.instances, &self.hosted)
            .map(|(_, r)| r.queue.iter().filter(|m| m.fetched_by.is_none()).count() as u64)
            .sum();
        let items = listed(&self.hosted_queued.work, &self.hosted_work)
            .chain(listed(&self.hosted_queued.sessions, &self.hosted_sessions))
            .map(|(_, q)| q.unlocked() as u64)
            .sum();
        (messages, items)
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
