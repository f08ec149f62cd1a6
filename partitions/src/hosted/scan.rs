//! What a hosted fetcher looks for in a partition: the oldest message or
//! worker item it may take, and when the next one that is hidden or
//! locked becomes takeable. Reads only; the fetch itself is an event.

use basalt_runtime::InstanceId;

use super::{FetchPlan, SessionClaim, TagFilter, VersionRange, WorkOwner, WorkerQueue};
use crate::state::PartitionState;

/// The oldest thing a fetcher may take here, by enqueue order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    /// Its enqueue order (compared across partitions).
    pub order: u64,
    /// Where it is.
    pub key: K,
}

impl PartitionState {
    /// The resident hosted instance a fetch at `now_ms` would lock (or
    /// whose droppable messages it would drop) with the oldest message.
    pub fn hosted_candidate(
        &self,
        now_ms: u64,
        filter: Option<&[VersionRange]>,
    ) -> Option<Candidate<InstanceId>> {
        // `fetchable` first: it answers at once for the many records with
        // nothing queued; the plan is asked of the few that have something.
        self.hosted
            .resident_iter()
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
        let pick = |owner: fn(InstanceId) -> WorkOwner, tier: &crate::tier::Tier<WorkerQueue>| {
            tier.resident_iter()
                .filter_map(|(id, queue)| {
                    queue.candidate(now_ms, claim, tags).map(|order| Candidate {
                        order,
                        key: (owner(id.clone()), order),
                    })
                })
                .min_by_key(|c| c.order)
        };
        let own = pick(WorkOwner::Instance, &self.hosted_work);
        let sessions = pick(WorkOwner::Session, &self.hosted_sessions);
        match (own, sessions) {
            (Some(a), Some(b)) => Some(if a.order <= b.order { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The earliest time after `now_ms` at which a hidden message or item
    /// becomes visible or a lock runs out here (when a waiting fetcher
    /// should look again even if nothing else changes).
    pub fn hosted_next_due(&self, now_ms: u64) -> Option<u64> {
        let instances = self
            .hosted
            .resident_iter()
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
            });
        let work = self
            .hosted_work
            .resident_iter()
            .map(|(_, v)| v)
            .chain(self.hosted_sessions.resident_iter().map(|(_, v)| v))
            .flat_map(|queue| {
                queue
                    .items()
                    .filter_map(move |item| match item.lock.filter(|l| l.held(now_ms)) {
                        Some(lock) => Some(lock.until_ms),
                        None => (item.visible_ms > now_ms).then_some(item.visible_ms),
                    })
            });
        instances.chain(work).min()
    }

    /// Orchestrator messages and worker items here that no fetch holds
    /// (a queue depth).
    pub fn hosted_queue_depths(&self) -> (u64, u64) {
        let messages = self
            .hosted
            .resident_iter()
            .map(|(_, v)| v)
            .map(|r| r.queue.iter().filter(|m| m.fetched_by.is_none()).count() as u64)
            .sum();
        let items = self
            .hosted_work
            .resident_iter()
            .map(|(_, v)| v)
            .chain(self.hosted_sessions.resident_iter().map(|(_, v)| v))
            .map(|q| q.unlocked() as u64)
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
