//! A partition's share of the hosted worker queue: activity items with
//! their locks, tags and sessions.
//!
//! An item of a session lives on the partition of its session, so that
//! claiming the session and locking the item are one partition's change
//! (`docs/duroxide.md`); an item without one lives on its instance's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Lock, SessionClaim, TagFilter, WorkerItem, WorkerItemId};

/// Which worker owns a session, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The owner (a worker process's identity; many fetchers may share it).
    pub owner: String,
    /// Owned while the time is before this.
    pub until_ms: u64,
    /// When an item of the session was last fetched, acked or renewed.
    pub last_activity_ms: u64,
}

/// Why a worker's call about an item is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkRefusal {
    /// No item holds this token (acked, cancelled, deleted, or taken over).
    #[error("Invalid lock token: no work item is locked with it")]
    InvalidToken,
    /// The item's lock expired.
    #[error("Work item lock expired")]
    Expired,
}

/// The worker items and sessions of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerQueue {
    /// Items by enqueue order.
    items: BTreeMap<u64, WorkerItem>,
    /// Items by the token of the fetch that locked them.
    by_token: BTreeMap<u64, u64>,
    /// Items by activity (the same activity may be queued more than once).
    by_id: BTreeSet<(WorkerItemId, u64)>,
    /// Sessions by id.
    sessions: BTreeMap<String, Session>,
}

impl WorkerQueue {
    /// Items queued (locked or not).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No items queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items no fetch holds a token of (what a queue depth counts).
    pub fn unlocked(&self) -> usize {
        self.items.values().filter(|i| i.lock.is_none()).count()
    }

    /// The items, in enqueue order.
    pub fn items(&self) -> impl Iterator<Item = &WorkerItem> {
        self.items.values()
    }

    /// A session by id.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Adds an item (unlocked, no attempts yet).
    pub fn enqueue(&mut self, item: WorkerItem) {
        self.by_id.insert((item.id.clone(), item.order));
        if let Some(old) = self.items.insert(item.order, item) {
            // The same order twice: the caller's orders are unique, so this
            // only replaces a copy of the same enqueue.
            self.by_id.remove(&(old.id, old.order));
            if let Some(lock) = old.lock {
                self.by_token.remove(&lock.token);
            }
        }
    }

    /// The oldest item a fetch at `now_ms` with `claim` and `tags` may take.
    pub fn candidate(
        &self,
        now_ms: u64,
        claim: Option<&SessionClaim>,
        tags: &TagFilter,
    ) -> Option<u64> {
        if *tags == TagFilter::None {
            return None;
        }
        self.items
            .values()
            .find(|item| self.eligible(item, now_ms, claim, tags))
            .map(|item| item.order)
    }

    fn eligible(
        &self,
        item: &WorkerItem,
        now_ms: u64,
        claim: Option<&SessionClaim>,
        tags: &TagFilter,
    ) -> bool {
        if item.visible_ms > now_ms || item.lock.is_some_and(|l| l.held(now_ms)) {
            return false;
        }
        if !tags.matches(item.tag.as_deref()) {
            return false;
        }
        match (&item.session, claim) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(session), Some(claim)) => self
                .sessions
                .get(session)
                .is_none_or(|s| s.until_ms <= now_ms || s.owner == claim.owner),
        }
    }

    /// Whether a fetch at `now_ms` with `claim` and `tags` may take the
    /// item at `order`.
    pub fn can_fetch(
        &self,
        order: u64,
        now_ms: u64,
        claim: Option<&SessionClaim>,
        tags: &TagFilter,
    ) -> bool {
        self.items
            .get(&order)
            .is_some_and(|item| self.eligible(item, now_ms, claim, tags))
    }

    /// Checks that `token` names a lock still held at `now_ms` (what an ack
    /// or a renewal needs).
    pub fn check_held(&self, token: u64, now_ms: u64) -> Result<(), WorkRefusal> {
        self.held(token, now_ms).map(|_| ())
    }

    /// Checks that `token` names an item's lock, held or not (what an
    /// abandon needs).
    pub fn check_abandon(&self, token: u64) -> Result<(), WorkRefusal> {
        match self.by_token.contains_key(&token) {
            true => Ok(()),
            false => Err(WorkRefusal::InvalidToken),
        }
    }

    /// Whether nothing here needs keeping: no items and no session (a
    /// session, even one whose claim ran out, goes only by
    /// [`cleanup_sessions`](Self::cleanup_sessions), which counts it).
    pub fn is_idle(&self) -> bool {
        self.items.is_empty() && self.sessions.is_empty()
    }

    /// Locks the item at `order` with `token` until `now_ms + lock_ms` if
    /// it is still eligible, claiming its session for `claim`'s owner;
    /// returns its attempt count, now one more.
    pub fn fetch(
        &mut self,
        order: u64,
        token: u64,
        now_ms: u64,
        lock_ms: u64,
        claim: Option<&SessionClaim>,
        tags: &TagFilter,
    ) -> Option<u32> {
        let item = self.items.get(&order)?;
        if !self.eligible(item, now_ms, claim, tags) {
            return None;
        }
        if let (Some(session), Some(claim)) = (item.session.clone(), claim) {
            self.sessions.insert(
                session,
                Session {
                    owner: claim.owner.clone(),
                    until_ms: now_ms.saturating_add(claim.lock_ms),
                    last_activity_ms: now_ms,
                },
            );
        }
        let item = self.items.get_mut(&order)?;
        if let Some(old) = item.lock.replace(Lock {
            token,
            until_ms: now_ms.saturating_add(lock_ms),
        }) {
            self.by_token.remove(&old.token);
        }
        item.attempts = item.attempts.saturating_add(1);
        self.by_token.insert(token, order);
        Some(item.attempts)
    }

    /// The item a held lock names, if the lock is still held.
    fn held(&self, token: u64, now_ms: u64) -> Result<u64, WorkRefusal> {
        let order = *self.by_token.get(&token).ok_or(WorkRefusal::InvalidToken)?;
        let item = self.items.get(&order).ok_or(WorkRefusal::InvalidToken)?;
        match item.lock {
            Some(lock) if lock.token == token && lock.held(now_ms) => Ok(order),
            Some(lock) if lock.token == token => Err(WorkRefusal::Expired),
            _ => Err(WorkRefusal::InvalidToken),
        }
    }

    /// Marks activity on an item's session if the session is still owned.
    fn touch_session(&mut self, session: Option<&str>, now_ms: u64) {
        if let Some(session) = session.and_then(|s| self.sessions.get_mut(s))
            && session.until_ms > now_ms
        {
            session.last_activity_ms = now_ms;
        }
    }

    /// Removes the item locked with `token` (its activity finished).
    pub fn ack(&mut self, token: u64, now_ms: u64) -> Result<WorkerItem, WorkRefusal> {
        let order = self.held(token, now_ms)?;
        let item = self.remove(order).ok_or(WorkRefusal::InvalidToken)?;
        self.touch_session(item.session.as_deref(), now_ms);
        Ok(item)
    }

    /// Extends the lock held with `token` to `now_ms + extend_ms`.
    pub fn renew(&mut self, token: u64, now_ms: u64, extend_ms: u64) -> Result<(), WorkRefusal> {
        let order = self.held(token, now_ms)?;
        let session = match self.items.get_mut(&order) {
            Some(item) => {
                if let Some(lock) = &mut item.lock {
                    lock.until_ms = now_ms.saturating_add(extend_ms);
                }
                item.session.clone()
            }
            None => return Err(WorkRefusal::InvalidToken),
        };
        self.touch_session(session.as_deref(), now_ms);
        Ok(())
    }

    /// Gives the item locked with `token` back, visible after `delay_ms`
    /// (at once without), its attempt taken back if `ignore_attempt`.
    pub fn abandon(
        &mut self,
        token: u64,
        now_ms: u64,
        delay_ms: Option<u64>,
        ignore_attempt: bool,
    ) -> Result<(), WorkRefusal> {
        let order = self
            .by_token
            .remove(&token)
            .ok_or(WorkRefusal::InvalidToken)?;
        let item = self
            .items
            .get_mut(&order)
            .ok_or(WorkRefusal::InvalidToken)?;
        item.lock = None;
        item.visible_ms = now_ms.saturating_add(delay_ms.unwrap_or(0));
        if ignore_attempt {
            item.attempts = item.attempts.saturating_sub(1);
        }
        Ok(())
    }

    /// Removes every queued copy of an activity, locked or not; returns how
    /// many (none is fine: cancelling twice is harmless).
    pub fn cancel(&mut self, id: &WorkerItemId) -> usize {
        let orders: Vec<u64> = self
            .by_id
            .range((id.clone(), 0)..=(id.clone(), u64::MAX))
            .map(|(_, order)| *order)
            .collect();
        self.remove_all(orders)
    }

    /// Removes every item an instance scheduled; returns how many.
    pub fn remove_instance(&mut self, instance: &str) -> usize {
        let orders: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(id, _)| id.instance == instance)
            .map(|(_, order)| *order)
            .collect();
        self.remove_all(orders)
    }

    /// Removes the items at `orders`; returns how many there were.
    fn remove_all(&mut self, orders: Vec<u64>) -> usize {
        orders
            .into_iter()
            .filter(|order| self.remove(*order).is_some())
            .count()
    }

    fn remove(&mut self, order: u64) -> Option<WorkerItem> {
        let item = self.items.remove(&order)?;
        self.by_id.remove(&(item.id.clone(), order));
        if let Some(lock) = item.lock {
            self.by_token.remove(&lock.token);
        }
        Some(item)
    }

    /// Extends the sessions `owners` hold that are still owned and were
    /// active within `idle_ms`, to `now_ms + extend_ms`; returns how many.
    pub fn renew_sessions(
        &mut self,
        owners: &[String],
        now_ms: u64,
        extend_ms: u64,
        idle_ms: u64,
    ) -> usize {
        let mut renewed = 0;
        for session in self.sessions.values_mut() {
            if owners.contains(&session.owner)
                && session.until_ms > now_ms
                && session.last_activity_ms > now_ms.saturating_sub(idle_ms)
            {
                session.until_ms = now_ms.saturating_add(extend_ms);
                renewed += 1;
            }
        }
        renewed
    }

    /// Forgets sessions whose claim ran out and that no queued item
    /// belongs to; returns how many.
    pub fn cleanup_sessions(&mut self, now_ms: u64) -> usize {
        let referenced: BTreeSet<&str> = self
            .items
            .values()
            .filter_map(|i| i.session.as_deref())
            .collect();
        let doomed: Vec<String> = self
            .sessions
            .iter()
            .filter(|(id, s)| s.until_ms < now_ms && !referenced.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &doomed {
            self.sessions.remove(id);
        }
        doomed.len()
    }
}
