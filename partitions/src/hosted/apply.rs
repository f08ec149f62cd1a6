//! How a partition checks and applies hosted events and messages.

use basalt_runtime::{Error, InstanceId};

use super::event::{HostedEvent, HostedMessage, HostedReply, WorkOwner};
use super::{FetchPlan, HostedInstance, WorkerQueue};
use crate::event::{Effects, Message, Reply};
use crate::state::{Outgoing, PartitionState};

/// Most orchestrator messages queued for one hosted instance, and most
/// worker items in one record: beyond it an enqueue is refused (retryable)
/// instead of growing without bound.
pub const HOSTED_QUEUE_MAX: usize = 10_000;

/// How long a refused enqueue should wait before its retry.
const RETRY_AFTER_MS: u64 = 100;

fn refused(what: impl std::fmt::Display) -> Error {
    Error::Conflict(what.to_string())
}

fn full(what: &str) -> Error {
    Error::Overloaded {
        what: format!("{what} holds {HOSTED_QUEUE_MAX} queued items"),
        retry_after_ms: RETRY_AFTER_MS,
    }
}

impl PartitionState {
    fn work_queue(&self, owner: &WorkOwner) -> Option<&WorkerQueue> {
        match owner {
            WorkOwner::Instance(id) => self.hosted_work.get(id),
            WorkOwner::Session(id) => self.hosted_sessions.get(id),
        }
    }

    fn work_queue_mut(&mut self, owner: &WorkOwner) -> &mut WorkerQueue {
        match owner {
            WorkOwner::Instance(id) => self
                .hosted_work
                .get_or_insert_with(id.clone(), WorkerQueue::default),
            WorkOwner::Session(id) => self
                .hosted_sessions
                .get_or_insert_with(id.clone(), WorkerQueue::default),
        }
    }

    /// Drops a work record that holds nothing worth keeping.
    fn settle_work(&mut self, owner: &WorkOwner) {
        if self.work_queue(owner).is_some_and(WorkerQueue::is_idle) {
            match owner {
                WorkOwner::Instance(id) => self.hosted_work.remove(id),
                WorkOwner::Session(id) => self.hosted_sessions.remove(id),
            };
        }
    }

    /// Checks a hosted event against the state; `Err` means it changes
    /// nothing and need not be logged.
    pub(crate) fn check_hosted(&self, event: &HostedEvent, now_ms: u64) -> Result<(), Error> {
        let instance = |id: &InstanceId| self.hosted.get(id);
        match event {
            HostedEvent::Enqueue { instance: id, .. } => {
                if instance(id).is_some_and(|i| i.queue.len() >= HOSTED_QUEUE_MAX) {
                    return Err(full(&format!("instance {id}")));
                }
                Ok(())
            }
            HostedEvent::EnqueueWork { owner, .. } => {
                if self
                    .work_queue(owner)
                    .is_some_and(|q| q.len() >= HOSTED_QUEUE_MAX)
                {
                    return Err(full("the worker queue"));
                }
                Ok(())
            }
            HostedEvent::Fetch {
                instance: id,
                filter,
                ..
            } => match instance(id).map(|i| i.fetch_plan(now_ms, filter.as_deref())) {
                Some(FetchPlan::Lock | FetchPlan::DropOrphans) => Ok(()),
                _ => Err(refused("nothing to fetch")),
            },
            HostedEvent::Ack {
                instance: id, ack, ..
            } => match instance(id) {
                Some(record) => record.check_ack(ack, now_ms).map_err(refused),
                None => Err(refused(super::AckRefusal::InvalidToken)),
            },
            HostedEvent::Abandon {
                instance: id,
                token,
                ..
            } => match instance(id) {
                Some(record) => record.check_abandon(*token).map_err(refused),
                None => Err(refused(super::AckRefusal::InvalidToken)),
            },
            HostedEvent::Renew {
                instance: id,
                token,
                ..
            } => match instance(id) {
                Some(record) => record.check_renew(*token, now_ms).map_err(refused),
                None => Err(refused(super::AckRefusal::InvalidToken)),
            },
            HostedEvent::FetchWork {
                owner,
                order,
                claim,
                tags,
                ..
            } => match self.work_queue(owner) {
                Some(queue) if queue.can_fetch(*order, now_ms, claim.as_ref(), tags) => Ok(()),
                _ => Err(refused("nothing to fetch")),
            },
            HostedEvent::AckWork { owner, token, .. }
            | HostedEvent::RenewWork { owner, token, .. } => match self.work_queue(owner) {
                Some(queue) => queue.check_held(*token, now_ms).map_err(refused),
                None => Err(refused(super::WorkRefusal::InvalidToken)),
            },
            HostedEvent::AbandonWork { owner, token, .. } => match self.work_queue(owner) {
                Some(queue) => queue.check_abandon(*token).map_err(refused),
                None => Err(refused(super::WorkRefusal::InvalidToken)),
            },
            HostedEvent::RenewSession {
                session,
                owners,
                idle_ms,
                ..
            } => {
                let renews = self
                    .hosted_sessions
                    .get(session)
                    .and_then(|q| q.session(session.as_str()))
                    .is_some_and(|s| {
                        owners.contains(&s.owner)
                            && s.until_ms > now_ms
                            && s.last_activity_ms > now_ms.saturating_sub(*idle_ms)
                    });
                match renews {
                    true => Ok(()),
                    false => Err(refused("no session to renew")),
                }
            }
            HostedEvent::CleanupSession { session } => {
                let expired = self.hosted_sessions.get(session).is_some_and(|q| {
                    q.is_empty()
                        && q.session(session.as_str())
                            .is_some_and(|s| s.until_ms < now_ms)
                });
                match expired {
                    true => Ok(()),
                    false => Err(refused("no session to clean up")),
                }
            }
            HostedEvent::Delete { instance: id } | HostedEvent::CorruptHistory { instance: id } => {
                match instance(id) {
                    Some(_) => Ok(()),
                    None => Err(Error::NotFound(id.to_string())),
                }
            }
            HostedEvent::Prune { instance: id, .. } => match instance(id) {
                Some(record) if record.exists() => Ok(()),
                _ => Err(Error::NotFound(id.to_string())),
            },
        }
    }

    /// Applies a checked hosted event.
    pub(crate) fn handle_hosted(
        &mut self,
        event: HostedEvent,
        now_ms: u64,
        out: &mut Outgoing,
        fx: &mut Effects,
    ) {
        let key = event.key();
        let reply = match event {
            HostedEvent::Enqueue { instance, message } => {
                self.hosted_record(instance).enqueue(message);
                HostedReply::Done
            }
            HostedEvent::EnqueueWork { owner, item } => {
                self.work_queue_mut(&owner).enqueue(item);
                HostedReply::Done
            }
            HostedEvent::Fetch {
                instance,
                lock_ms,
                filter,
            } => {
                let token = out.lsn();
                let outcome =
                    self.hosted_record(instance)
                        .fetch(token, now_ms, lock_ms, filter.as_deref());
                HostedReply::Fetched { token, outcome }
            }
            HostedEvent::Ack {
                instance,
                ack,
                worker_items,
                orchestrator_items,
                cancelled,
            } => {
                let record = self.hosted_record(instance.clone());
                record.ack(ack, now_ms);
                for (owner, _) in &worker_items {
                    if let WorkOwner::Session(session) = owner {
                        record.work_sessions.insert(session.to_string());
                    }
                }
                let owners: Vec<WorkOwner> = if cancelled.is_empty() {
                    Vec::new()
                } else {
                    std::iter::once(WorkOwner::Instance(instance))
                        .chain(
                            record
                                .work_sessions
                                .iter()
                                .filter_map(|s| InstanceId::new(s.clone()).ok())
                                .map(WorkOwner::Session),
                        )
                        .collect()
                };
                for (owner, item) in worker_items {
                    self.send_hosted(out, HostedMessage::EnqueueWork { owner, item });
                }
                for id in cancelled {
                    for owner in &owners {
                        let owner = owner.clone();
                        let id = id.clone();
                        self.send_hosted(out, HostedMessage::Cancel { owner, id });
                    }
                }
                for (instance, message) in orchestrator_items {
                    self.send_hosted(out, HostedMessage::Enqueue { instance, message });
                }
                HostedReply::Done
            }
            HostedEvent::Abandon {
                instance,
                token,
                delay_ms,
                ignore_attempt,
            } => {
                // Checked: the token names the lock.
                let _ =
                    self.hosted_record(instance)
                        .abandon(token, now_ms, delay_ms, ignore_attempt);
                HostedReply::Done
            }
            HostedEvent::Renew {
                instance,
                token,
                extend_ms,
            } => {
                let _ = self.hosted_record(instance).renew(token, now_ms, extend_ms);
                HostedReply::Done
            }
            HostedEvent::FetchWork {
                owner,
                order,
                lock_ms,
                claim,
                tags,
            } => {
                let token = out.lsn();
                let attempts = self
                    .work_queue_mut(&owner)
                    .fetch(order, token, now_ms, lock_ms, claim.as_ref(), &tags)
                    .unwrap_or(0);
                HostedReply::WorkFetched { token, attempts }
            }
            HostedEvent::AckWork {
                owner,
                token,
                completion,
            } => {
                let _ = self.work_queue_mut(&owner).ack(token, now_ms);
                self.settle_work(&owner);
                if let Some((instance, message)) = completion {
                    self.send_hosted(out, HostedMessage::Enqueue { instance, message });
                }
                HostedReply::Done
            }
            HostedEvent::AbandonWork {
                owner,
                token,
                delay_ms,
                ignore_attempt,
            } => {
                let _ =
                    self.work_queue_mut(&owner)
                        .abandon(token, now_ms, delay_ms, ignore_attempt);
                HostedReply::Done
            }
            HostedEvent::RenewWork {
                owner,
                token,
                extend_ms,
            } => {
                let _ = self.work_queue_mut(&owner).renew(token, now_ms, extend_ms);
                HostedReply::Done
            }
            HostedEvent::RenewSession {
                session,
                owners,
                extend_ms,
                idle_ms,
            } => {
                let owner = WorkOwner::Session(session);
                let renewed = self
                    .work_queue_mut(&owner)
                    .renew_sessions(&owners, now_ms, extend_ms, idle_ms);
                HostedReply::Count(renewed as u64)
            }
            HostedEvent::CleanupSession { session } => {
                let owner = WorkOwner::Session(session);
                let cleaned = self.work_queue_mut(&owner).cleanup_sessions(now_ms);
                self.settle_work(&owner);
                HostedReply::Count(cleaned as u64)
            }
            HostedEvent::Delete { instance } => {
                let removed = self.hosted.remove(&instance).unwrap_or_default();
                let executions = removed.executions.len() as u64;
                let events = removed
                    .executions
                    .values()
                    .map(|e| e.events.len() as u64)
                    .sum();
                let owners = std::iter::once(WorkOwner::Instance(instance.clone())).chain(
                    removed
                        .work_sessions
                        .iter()
                        .filter_map(|s| InstanceId::new(s.clone()).ok())
                        .map(WorkOwner::Session),
                );
                for owner in owners.collect::<Vec<_>>() {
                    self.send_hosted(
                        out,
                        HostedMessage::RemoveWork {
                            owner,
                            instance: instance.clone(),
                        },
                    );
                }
                HostedReply::Removed {
                    executions,
                    events,
                    messages: removed.queue.len() as u64,
                }
            }
            HostedEvent::Prune {
                instance,
                keep_last,
                completed_before_ms,
            } => {
                let (executions, events) = self
                    .hosted_record(instance)
                    .prune(keep_last, completed_before_ms);
                HostedReply::Removed {
                    executions,
                    events,
                    messages: 0,
                }
            }
            HostedEvent::CorruptHistory { instance } => {
                for execution in self.hosted_record(instance).executions.values_mut() {
                    for event in &mut execution.events {
                        event.bytes = b"NOT_VALID_JSON{{{".to_vec();
                    }
                }
                HostedReply::Done
            }
        };
        self.reindex_hosted(&key);
        debug_assert_eq!(self.hosted_unlisted(), [], "hosted index after {key:?}");
        fx.hosted.push(key);
        fx.reply = Some(Reply::Hosted(reply, out.lsn()));
    }

    /// Applies a hosted message from this partition or another.
    pub(crate) fn receive_hosted(&mut self, message: HostedMessage, fx: &mut Effects) {
        let key = message.key();
        match message {
            HostedMessage::Enqueue { instance, message } => {
                // Over the bound the message is still taken: refusing it
                // would lose a turn's committed output.
                self.hosted_record(instance).enqueue(message);
            }
            HostedMessage::EnqueueWork { owner, item } => {
                self.work_queue_mut(&owner).enqueue(item);
            }
            HostedMessage::Cancel { owner, id } => {
                if self.work_queue(&owner).is_some() {
                    self.work_queue_mut(&owner).cancel(&id);
                    self.settle_work(&owner);
                }
            }
            HostedMessage::RemoveWork { owner, instance } => {
                if self.work_queue(&owner).is_some() {
                    let removed = self
                        .work_queue_mut(&owner)
                        .remove_instance(instance.as_str());
                    self.settle_work(&owner);
                    // On the deleted instance's own partition this runs in
                    // the deletion's event: its count joins the reply.
                    if let Some(Reply::Hosted(HostedReply::Removed { messages, .. }, _)) =
                        &mut fx.reply
                    {
                        *messages += removed as u64;
                    }
                }
            }
        }
        self.reindex_hosted(&key);
        debug_assert_eq!(self.hosted_unlisted(), [], "hosted index after {key:?}");
        fx.hosted.push(key);
    }

    /// The hosted record of `id`, made if there is none.
    fn hosted_record(&mut self, id: InstanceId) -> &mut HostedInstance {
        let name = id.to_string();
        self.hosted
            .get_or_insert_with(id, || HostedInstance::new(name))
    }

    fn send_hosted(&self, out: &mut Outgoing, message: HostedMessage) {
        let destination = crate::partition_of(message.routing_id(), self.partition_count);
        out.send(destination, Message::Hosted(message));
    }
}
