//! A multi-consumer work queue: partitions push ready work, any number of
//! workers wait for it. Unbounded by type: it holds only work the
//! partitions' state holds (steps, activities), which admission control
//! (`queued_work_max`) and the actions-per-step limit bound; work of an
//! execution that ended is withdrawn from it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Work waiting for a worker.
pub(crate) struct WorkQueue<T> {
    items: Mutex<VecDeque<T>>,
    ready: Notify,
    closed: AtomicBool,
}

impl<T> WorkQueue<T> {
    pub(crate) fn new() -> WorkQueue<T> {
        WorkQueue {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn push(&self, item: T) {
        self.items.lock().push_back(item);
        self.ready.notify_one();
    }

    /// The next item; `None` once the queue is closed.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let (item, more) = {
                let mut items = self.items.lock();
                let item = items.pop_front();
                (item, !items.is_empty())
            };
            if let Some(item) = item {
                // Pass the wake-up on if more is waiting.
                if more {
                    self.ready.notify_one();
                }
                return Some(item);
            }
            notified.await;
        }
    }

    /// Drops every waiting item `keep` refuses; returns how many.
    pub(crate) fn retain(&self, keep: impl FnMut(&T) -> bool) -> usize {
        let mut items = self.items.lock();
        let before = items.len();
        items.retain(keep);
        before - items.len()
    }

    /// Calls `visit` on each waiting item, under the queue's lock (keep
    /// it short: pushes and pops wait).
    pub(crate) fn for_each(&self, visit: impl FnMut(&T)) {
        self.items.lock().iter().for_each(visit);
    }

    pub(crate) fn len(&self) -> usize {
        self.items.lock().len()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_waiters();
    }
}
