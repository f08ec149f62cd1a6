//! A partition stopped by a storage error reopens itself: after a
//! backoff it recovers from storage in a task of its own (as the engine's
//! open does), takes the recovered state over, hands out its work again
//! and resynchronises its messages with the other partitions (see
//! `transport`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use basalt_partitions::Event;
use basalt_runtime::Error;
use tokio::task::JoinHandle;

use super::{PartitionTask, ReplyWhen, Running};
use crate::token::{ActivityToken, EntityToken};
use crate::transport::{Mail, Outgoing};

/// What a partition stopped by a storage error needs to recover itself
/// from storage, as the engine's open did, once storage works again.
pub(crate) struct Reopen {
    pub hub: basalt_storage::TaskHub,
    pub partition_count: u32,
    pub log_options: basalt_storage::LogOptions,
    pub store_options: basalt_storage::StateStoreOptions,
    /// The longest wait between two attempts (they start at
    /// [`REOPEN_BACKOFF_MIN`] and double).
    pub backoff_max: Duration,
    /// Stops in a row without durable progress in between: the next
    /// attempt waits longer.
    pub failures_in_a_row: u32,
}

impl Reopen {
    /// How long to wait before the next attempt.
    pub(super) fn backoff(&self) -> Duration {
        let doublings = self.failures_in_a_row.min(16);
        REOPEN_BACKOFF_MIN
            .saturating_mul(1 << doublings)
            .min(self.backoff_max.max(REOPEN_BACKOFF_MIN))
    }
}

/// The longest a stopped partition waits for its old store to close.
pub(super) const CLOSE_WAIT_MAX: Duration = Duration::from_secs(10);

/// The first wait before a stopped partition tries to reopen.
pub(super) const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Waits for the attempt to reopen under way; never resolves if there is
/// none.
pub(super) async fn reopen_done(
    reopening: &mut Option<JoinHandle<Result<crate::tiers::Recovered, crate::OpenError>>>,
) -> Result<crate::tiers::Recovered, Error> {
    match reopening {
        Some(task) => match task.await {
            Ok(Ok(recovered)) => Ok(recovered),
            Ok(Err(e)) => Err(Error::Storage(e.to_string())),
            Err(e) => Err(Error::Storage(format!("reopen task failed: {e}"))),
        },
        None => std::future::pending().await,
    }
}

impl PartitionTask {
    /// Takes one delivery from the mailbox.
    pub(super) async fn receive_mail(&mut self, mail: Mail, run: &mut Running) {
        match mail {
            Mail::Event(event) => {
                if let Event::Messages { messages, .. } = &event
                    && messages
                        .first()
                        .is_some_and(|m| run.resync.contains(&m.origin))
                {
                    // Sent before its origin's resync marker: the resend
                    // after the marker brings it again, in order.
                    return;
                }
                self.submit(event, None, ReplyWhen::Applied, run).await;
            }
            // A stopped partition sends markers to everyone when it reopens.
            Mail::ResyncRequest { requester } if run.failed.is_none() => {
                self.resync_to(requester, run.durable_lsn);
            }
            Mail::ResyncRequest { .. } => {}
            Mail::Resync { origin } => {
                run.resync.remove(&origin);
            }
        }
    }

    /// Sends `destination` a resync marker and then every message of the
    /// outbox for it that is durable (later ones leave when they are, I1).
    fn resync_to(&mut self, destination: u32, durable_lsn: u64) {
        self.deliver(Outgoing::Resync {
            origin: self.partition,
            destination,
        });
        let last = basalt_partitions::Position {
            lsn: u64::MAX,
            index: u32::MAX,
        };
        let messages = self
            .state
            .outbox
            .range((destination, basalt_partitions::Position::default())..=(destination, last))
            .filter(|(_, envelope)| envelope.position.lsn <= durable_lsn)
            .map(|(_, envelope)| envelope.clone())
            .collect();
        self.send_messages(messages);
    }

    /// A partition stopped by a storage error tries to recover itself from
    /// storage, as the engine's open does: what is durable comes back,
    /// what was applied but not yet durable is gone (nobody saw it: I1).
    /// The attempt runs in its own task, so the partition goes on
    /// answering (with its error) meanwhile; see `reopened`.
    pub(super) async fn start_reopen(&mut self, run: &mut Running) {
        // The checkpoint in flight belongs to the state being dropped.
        if let Some(in_flight) = run.checkpoint.take() {
            in_flight.task.abort();
            let _ = in_flight.task.await;
        }
        let log = self.log.clone();
        let store = Arc::clone(&self.store);
        let hub = self.reopen.hub.clone();
        let partition = self.partition;
        let count = self.reopen.partition_count;
        let log_options = self.reopen.log_options.clone();
        let store_options = self.reopen.store_options.clone();
        run.reopening = Some(tokio::spawn(async move {
            // Their errors are the failure already reported; a store that
            // does not even answer is left behind (its writer is fenced
            // when the partition opens it again). Closing the log releases
            // the partition for the new opening.
            let _ = log.close().await;
            let _ = tokio::time::timeout(CLOSE_WAIT_MAX, store.close()).await;
            crate::tiers::recover_partition(&hub, partition, count, log_options, &store_options)
                .await
        }));
    }

    /// The attempt to reopen ended: on success the recovered state takes
    /// over; on failure the next attempt waits longer.
    pub(super) fn reopened(
        &mut self,
        run: &mut Running,
        attempt: Result<crate::tiers::Recovered, Error>,
    ) {
        run.reopening = None;
        let health = &self.shared.health[self.partition as usize];
        let recovered = match attempt {
            Ok(recovered) => recovered,
            Err(error) => {
                health.reopen_failures.fetch_add(1, Ordering::Relaxed);
                *health.last_error.lock() = Some(error.to_string());
                self.reopen.failures_in_a_row = self.reopen.failures_in_a_row.saturating_add(1);
                let wait = self.reopen.backoff();
                tracing::warn!(partition = self.partition, %error, ?wait, "partition could not reopen; trying again");
                run.reopen_at = tokio::time::Instant::now() + wait;
                return;
            }
        };
        // Work the old state handed out is stale from here on: its tokens
        // name the old incarnation, and what still waits is withdrawn.
        health.reopens.fetch_add(1, Ordering::AcqRel);
        self.withdraw_all_work();
        self.offered.clear();
        self.state = recovered.state;
        self.log = recovered.log;
        self.store = recovered.store;
        self.store_lsn = recovered.store_lsn;
        *self.shared.stores[self.partition as usize].lock() = Arc::clone(&self.store);
        *run = Running::new(&self.log, self.store_lsn);
        let count = self.reopen.partition_count;
        run.resync = (0..count).collect();
        health.stopped.store(false, Ordering::Release);
        // As after an open: hand out the recovered work, then tell every
        // partition (this one too) that the outbox follows, and ask every
        // other one for its outbox.
        let mut pending = self.state.pending_work();
        self.dispatch_local(&mut pending);
        for destination in 0..count {
            self.deliver(Outgoing::Resync {
                origin: self.partition,
                destination,
            });
        }
        for (origin, up_to) in pending.acks {
            self.deliver(Outgoing::Ack {
                origin,
                receiver: self.partition,
                up_to,
            });
        }
        self.send_messages(pending.messages);
        let me = self.partition;
        for to in (0..count).filter(|p| *p != me) {
            self.deliver(Outgoing::ResyncRequest { requester: me, to });
        }
        tracing::info!(
            partition = self.partition,
            lsn = self.state.last_lsn,
            "partition reopened after a storage error"
        );
    }

    /// Withdraws every step, activity and entity batch of this partition
    /// still waiting for a worker (it reopened: its work is handed out
    /// again from the recovered state).
    fn withdraw_all_work(&self) {
        let partition = self.partition;
        let shared = &self.shared;
        shared.steps.retain(|ticket| ticket.partition != partition);
        shared.activities.retain(|item| {
            ActivityToken::parse(&item.token).map_or(true, |t| t.partition != partition)
        });
        shared.entity_batches.retain(|item| {
            EntityToken::parse(&item.token).map_or(true, |t| t.partition != partition)
        });
    }
}
