//! Long histories kept encoded between steps, so a step costs the server
//! the events that are new since the last one, not the whole history.
//!
//! Every step hands the worker the whole history. For a history of at
//! least [`CACHED_EVENTS_MIN`] events the sidecar keeps what it sent last
//! time: the encoded `pastEvents` fields and the converter's state (the
//! entity wire ids seen so far). The next step of the same generation
//! converts and encodes only the events past that point and sends the
//! rest as the same bytes (see [`crate::history_wire`]).
//!
//! A history only grows within a generation, with one exception: a rewind
//! rewrites it, and puts an `ExecutionRewound` among the next step's new
//! events. So the kept bytes are used only when the step is of the same
//! generation, the history is at least as long, its event at the kept
//! length is the one kept, and no `ExecutionRewound` is among the new
//! events; otherwise they are dropped and rebuilt. Memory is bounded: the
//! least recently used histories are dropped past the budget.

use std::collections::{BTreeMap, HashMap};

use basalt_runtime::{EventKind, HistoryEvent, InstanceId, OrchestrationWorkItem};
use parking_lot::Mutex;
use prost::bytes::Bytes;

use crate::convert::{self, WireConverter};
use crate::history_wire::{EncodedEvents, PastEvents, RequestHead};
use crate::proto;

/// Histories shorter than this are converted whole on every step: cheap,
/// and most orchestrations never reach it.
pub const CACHED_EVENTS_MIN: usize = 64;

/// The default memory budget of the cache.
pub const CACHE_BYTES_DEFAULT: usize = 64 << 20;

/// A history's bytes are merged into one piece when they are in more than
/// this many (each step adds one).
const PIECES_MAX: usize = 32;

/// One history's kept encoding.
struct Kept {
    execution: u64,
    /// How many of the engine's events (on the wire or not) it covers.
    events: usize,
    /// The last covered event, to recognise the same history.
    last: HistoryEvent,
    encoded: EncodedEvents,
    converter: WireConverter,
    /// Its place in the least-recently-used order.
    used: u64,
}

impl Kept {
    fn bytes(&self) -> usize {
        self.encoded.len() + self.converter.footprint() + 256
    }
}

#[derive(Default)]
struct Inner {
    kept: HashMap<InstanceId, Kept>,
    /// `used` -> instance, oldest first.
    order: BTreeMap<u64, InstanceId>,
    clock: u64,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, id: &InstanceId) -> Option<Kept> {
        let kept = self.kept.remove(id)?;
        self.order.remove(&kept.used);
        self.bytes -= kept.bytes();
        Some(kept)
    }

    fn insert(&mut self, id: InstanceId, mut kept: Kept, budget: usize) {
        // Two builds of one instance's history can meet (a stale step and
        // its successor): the later replaces the earlier.
        self.remove(&id);
        self.clock += 1;
        kept.used = self.clock;
        self.bytes += kept.bytes();
        self.order.insert(kept.used, id.clone());
        self.kept.insert(id, kept);
        while self.bytes > budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(kept) = self.kept.remove(&oldest) {
                self.bytes -= kept.bytes();
            }
        }
    }
}

/// What the cache holds (for tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Histories kept now.
    pub histories: usize,
    /// Their memory, roughly, in bytes.
    pub bytes: usize,
}

/// The sidecar's cache of encoded histories.
pub struct HistoryCache {
    inner: Mutex<Inner>,
    budget: usize,
}

impl HistoryCache {
    /// A cache that keeps at most about `budget` bytes.
    pub fn new(budget: usize) -> Self {
        HistoryCache {
            inner: Mutex::new(Inner::default()),
            budget,
        }
    }

    /// What it holds.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock();
        CacheStats {
            histories: inner.kept.len(),
            bytes: inner.bytes,
        }
    }

    /// The step as the worker receives it: the same message
    /// [`convert::orchestrator_request`] builds, with a long history's
    /// past events sent from the kept bytes.
    pub fn request(&self, item: &OrchestrationWorkItem) -> proto::OrchestratorRequest {
        let past = item.past_events.as_slice();
        let rewound = item
            .new_events
            .iter()
            .any(|event| matches!(event.kind, EventKind::ExecutionRewound { .. }));
        if past.len() < CACHED_EVENTS_MIN || self.budget == 0 {
            // A history a rewind made short leaves nothing kept behind (a
            // new generation's is told apart by its execution). Other
            // short steps, the common case, take no lock.
            if rewound {
                self.inner.lock().remove(&item.instance_id);
            }
            return convert::orchestrator_request(item);
        }
        // Taken out while it is extended (one step of an instance is out at
        // a time), so other instances' steps do not wait on this one's
        // encoding.
        let taken = self.inner.lock().remove(&item.instance_id);
        let reusable = taken.filter(|kept| {
            !rewound
                && kept.execution == item.execution
                && kept.events <= past.len()
                && kept.events > 0
                && past[kept.events - 1] == kept.last
        });
        let mut kept = reusable.unwrap_or_else(|| Kept {
            execution: item.execution,
            events: 0,
            last: past[0].clone(),
            encoded: EncodedEvents::default(),
            converter: WireConverter::new(item.instance_id.as_str(), item.execution),
            used: 0,
        });
        let mut piece = Vec::new();
        let mut count = 0;
        for event in &past[kept.events..] {
            if let Some(wire) = kept.converter.convert(event) {
                EncodedEvents::encode_event(&wire, &mut piece);
                count += 1;
            }
        }
        kept.encoded.push(Bytes::from(piece), count);
        if kept.encoded.pieces() > PIECES_MAX {
            kept.encoded = kept.encoded.compacted();
        }
        kept.events = past.len();
        if let Some(last) = past.last() {
            kept.last = last.clone();
        }
        // The new events become past events of the next step and are
        // converted again then; what the converter learns from them now
        // (entity wire ids) is the same then.
        let new_events = item
            .new_events
            .iter()
            .filter_map(|event| kept.converter.convert(event))
            .collect();
        let request = proto::OrchestratorRequest {
            head: RequestHead {
                instance_id: item.instance_id.as_str().to_owned(),
                execution_id: Some(kept.converter.execution_id().to_owned()),
                new_events,
                ..Default::default()
            },
            past_events: PastEvents::Encoded(kept.encoded.clone()),
        };
        if kept.bytes() <= self.budget / 4 {
            self.inner
                .lock()
                .insert(item.instance_id.clone(), kept, self.budget);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use basalt_runtime::{CompletionToken, EventKind, HistoryEvent, InstanceId};
    use prost::Message;

    use super::*;

    fn event(id: i32, ms: u64, kind: EventKind) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            timestamp_ms: ms,
            kind,
            correlation: None,
        }
    }

    /// A step `n` of a long orchestration: the history has ExecutionStarted
    /// and, per earlier step, a task and an entity call with their answers.
    fn history(steps: usize, execution: u64) -> Vec<HistoryEvent> {
        let mut events = vec![
            HistoryEvent::new(1, EventKind::OrchestratorStarted),
            HistoryEvent::new(
                1,
                EventKind::ExecutionStarted {
                    name: "long".into(),
                    version: None,
                    input: Some(execution.to_string()),
                    parent: None,
                    scheduled_start_ms: None,
                },
            ),
        ];
        for n in 0..steps as i32 {
            let ms = 10 + n as u64;
            let mut call = event(
                2 * n + 1,
                ms,
                EventKind::EntityOperationCalled {
                    entity: "@counter@a".into(),
                    operation: "add".into(),
                    input: Some(n.to_string()),
                },
            );
            call.correlation = Some(format!("request-{n}"));
            events.extend([
                event(
                    2 * n,
                    ms,
                    EventKind::TaskScheduled {
                        name: "step".into(),
                        version: None,
                        input: Some(n.to_string()),
                    },
                ),
                call,
                HistoryEvent::new(ms, EventKind::OrchestratorCompleted),
                HistoryEvent::new(ms + 1, EventKind::OrchestratorStarted),
                HistoryEvent::new(
                    ms + 1,
                    EventKind::TaskCompleted {
                        task_scheduled_id: 2 * n,
                        result: Some(n.to_string()),
                    },
                ),
                HistoryEvent::new(
                    ms + 1,
                    EventKind::EntityOperationCompleted {
                        request_id: 2 * n + 1,
                        output: Some(n.to_string()),
                    },
                ),
            ]);
        }
        events
    }

    fn item(
        past: Vec<HistoryEvent>,
        new: Vec<HistoryEvent>,
        execution: u64,
    ) -> OrchestrationWorkItem {
        OrchestrationWorkItem {
            instance_id: InstanceId::new("long-one").expect("id"),
            past_events: Arc::new(past),
            new_events: new,
            token: CompletionToken("t".into()),
            execution,
        }
    }

    fn step_events(ms: u64) -> Vec<HistoryEvent> {
        vec![HistoryEvent::new(ms, EventKind::OrchestratorStarted)]
    }

    /// The cache's bytes are exactly what converting the whole step gives.
    fn same_as_uncached(cache: &HistoryCache, item: &OrchestrationWorkItem) {
        let cached = cache.request(item);
        let whole = convert::orchestrator_request(item);
        assert_eq!(cached.encode_to_vec(), whole.encode_to_vec());
    }

    #[test]
    fn a_growing_history_is_sent_as_converting_it_whole_would() {
        let cache = HistoryCache::new(CACHE_BYTES_DEFAULT);
        for steps in [20, 21, 25, 40, 80] {
            let item = item(history(steps, 1), step_events(9_000), 1);
            same_as_uncached(&cache, &item);
            assert_eq!(cache.stats().histories, 1, "kept after {steps} steps");
        }
        // Short histories are not kept.
        let short = OrchestrationWorkItem {
            instance_id: InstanceId::new("short").expect("id"),
            ..item(history(2, 1), step_events(9_000), 1)
        };
        same_as_uncached(&cache, &short);
        assert_eq!(cache.stats().histories, 1);
    }

    #[test]
    fn a_rewound_or_new_generation_history_is_rebuilt() {
        let cache = HistoryCache::new(CACHE_BYTES_DEFAULT);
        same_as_uncached(&cache, &item(history(40, 1), step_events(9_000), 1));
        // A rewind rewrote the history (here: dropped answers in the
        // middle) to the same length, and the step brings ExecutionRewound.
        let mut rewritten = history(40, 1);
        rewritten.remove(30);
        rewritten.push(HistoryEvent::new(9_100, EventKind::OrchestratorStarted));
        let last = rewritten.len() - 1;
        rewritten[last] = history(40, 1)[last].clone();
        let mut new = step_events(9_200);
        new.push(HistoryEvent::new(
            9_200,
            EventKind::ExecutionRewound { reason: None },
        ));
        same_as_uncached(&cache, &item(rewritten, new, 1));
        // A new generation (continue-as-new) with a history as long.
        same_as_uncached(&cache, &item(history(40, 2), step_events(9_300), 2));
        // The same generation's history, grown by the step before.
        same_as_uncached(&cache, &item(history(41, 2), step_events(9_400), 2));
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let one = {
            let cache = HistoryCache::new(CACHE_BYTES_DEFAULT);
            cache.request(&item(history(40, 1), step_events(9_000), 1));
            cache.stats().bytes
        };
        let cache = HistoryCache::new(one * 4 + one / 2);
        for n in 0..10 {
            let long = OrchestrationWorkItem {
                instance_id: InstanceId::new(format!("long-{n}")).expect("id"),
                ..item(history(40, 1), step_events(9_000), 1)
            };
            same_as_uncached(&cache, &long);
            let stats = cache.stats();
            assert!(stats.bytes <= one * 4 + one / 2, "{stats:?}");
        }
        assert_eq!(cache.stats().histories, 4);
        // A history past a quarter of the budget is not kept at all.
        let small = HistoryCache::new(one * 2);
        small.request(&item(history(40, 1), step_events(9_000), 1));
        assert_eq!(small.stats().histories, 0);
    }

    #[test]
    fn a_second_build_of_one_history_replaces_the_first() {
        let kept = || Kept {
            execution: 1,
            events: 1,
            last: HistoryEvent::new(1, EventKind::OrchestratorStarted),
            encoded: EncodedEvents::default(),
            converter: WireConverter::new("one", 1),
            used: 0,
        };
        let id = InstanceId::new("one").expect("id");
        let mut inner = Inner::default();
        inner.insert(id.clone(), kept(), usize::MAX);
        let once = inner.bytes;
        inner.insert(id.clone(), kept(), usize::MAX);
        assert_eq!(
            (inner.bytes, inner.kept.len(), inner.order.len()),
            (once, 1, 1)
        );
        assert!(inner.remove(&id).is_some());
        assert_eq!((inner.bytes, inner.order.len()), (0, 0));
    }
}
