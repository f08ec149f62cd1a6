//! Durable timers' wake-up: one task keeps the armed timers of all
//! partitions in time order and submits `TimerFired` when one is due. The
//! timers themselves are partition state; after a restart recovery arms
//! them again, so a timer fires after a crash too.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use basalt_partitions::{Event, TimerTask};
use tokio::sync::mpsc;

use crate::shared::Shared;

/// Milliseconds since the Unix epoch: the engine's clock, stamped into
/// events so the partition state machine never reads one.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Arms timers; cheap to clone.
#[derive(Clone)]
pub(crate) struct Timers {
    arm: mpsc::UnboundedSender<(u32, TimerTask)>,
}

impl Timers {
    pub(crate) fn new() -> (Timers, mpsc::UnboundedReceiver<(u32, TimerTask)>) {
        let (arm, armed) = mpsc::unbounded_channel();
        (Timers { arm }, armed)
    }

    pub(crate) fn arm(&self, partition: u32, timer: TimerTask) {
        let _ = self.arm.send((partition, timer));
    }
}

/// Runs until every `Timers` handle is dropped.
pub(crate) async fn run_timers(
    shared: Arc<Shared>,
    mut armed: mpsc::UnboundedReceiver<(u32, TimerTask)>,
) {
    let mut due: BinaryHeap<Reverse<(u64, u32, TimerTask)>> = BinaryHeap::new();
    loop {
        let now = now_ms();
        while let Some(Reverse((at, _, _))) = due.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, partition, timer))) = due.pop() {
                // Waits while the partition's queue is full: a timer
                // fires late rather than growing a queue.
                shared
                    .submit(
                        partition,
                        Event::TimerFired {
                            instance_id: timer.instance_id,
                            execution: timer.execution,
                            timer_id: timer.timer_id,
                            fire_at_ms: timer.fire_at_ms,
                            now_ms: now_ms(),
                        },
                    )
                    .await;
            }
        }
        let sleep = due
            .peek()
            .map_or(Duration::from_secs(3600), |Reverse((at, _, _))| {
                Duration::from_millis(at.saturating_sub(now))
            });
        tokio::select! {
            timer = armed.recv() => match timer {
                Some((partition, timer)) => due.push(Reverse((timer.fire_at_ms, partition, timer))),
                None => return,
            },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}
