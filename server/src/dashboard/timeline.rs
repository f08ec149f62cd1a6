//! An orchestration's history as a timeline: each activity, timer,
//! sub-orchestration, entity call and lock wait as a bar from the event
//! that started it to the event that ended it, retries numbered, and the
//! instant events (start, end, external events, signals, controls) as
//! marks. Computed here, once, so the page only draws: a 10,000-event
//! history arrives as a few thousand bars and compact rows, payloads cut
//! to [`PREVIEW_CHARS`].

use std::collections::HashMap;

use basalt_runtime::{EventKind, FailureDetails, HistoryEvent};
use serde::Serialize;

/// Characters of a payload or failure shown in a preview; the whole
/// history (`?showHistory=true` on the instance) has the rest.
pub const PREVIEW_CHARS: usize = 200;

/// Most event rows one timeline answer carries; a longer history is read
/// a window at a time (`eventsFrom`).
pub const EVENT_ROWS_MAX: usize = 100_000;

/// Most bars one timeline carries: the first ones drawn, the rest counted.
pub const BARS_MAX: usize = 50_000;

/// What a bar stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BarKind {
    /// An activity, from `TaskScheduled` to its completion or failure.
    Activity,
    /// A sub-orchestration, from its creation to its end.
    SubOrchestration,
    /// A durable timer, from `TimerCreated` to `TimerFired`.
    Timer,
    /// An entity call, from `EntityOperationCalled` to its answer.
    EntityCall,
    /// Waiting for entity locks, from the request to the grant.
    EntityLock,
}

/// How a bar ended, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// No ending event yet.
    Pending,
    /// Completed (a timer fired, a lock was granted).
    Completed,
    /// Failed.
    Failed,
}

/// One bar of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bar {
    /// What it stands for.
    pub kind: BarKind,
    /// The activity, orchestration or operation name (`@entity@key op` for
    /// entity calls, the entities for a lock, `until <due time>` for a
    /// timer).
    pub name: String,
    /// The event id of the event that started it (the action's id).
    pub event_id: i32,
    /// When it started (ms since the Unix epoch).
    pub start_ms: u64,
    /// When it ended, if it did.
    pub end_ms: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// 1 for a first call; n when the last call before it of the same
    /// kind, name and input had failed (a retry sends its input again).
    pub attempt: u32,
    /// Index in the history of the event that started it.
    pub start_index: usize,
    /// Index of the event that ended it.
    pub end_index: Option<usize>,
    /// The result or failure, cut to [`PREVIEW_CHARS`].
    pub detail: Option<String>,
    /// A sub-orchestration's instance id.
    pub child: Option<String>,
    /// A timer's due time.
    pub due_ms: Option<u64>,
}

/// An instant event drawn as a mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    /// The event type (`ExecutionStarted`, `EventRaised`, ...).
    pub event_type: &'static str,
    /// When.
    pub at_ms: u64,
    /// Index in the history.
    pub index: usize,
    /// A short description.
    pub label: String,
}

/// One history event, compact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// The event type.
    pub event_type: &'static str,
    /// The event id (-1 for events that confirm no action).
    pub event_id: i32,
    /// When it was recorded.
    pub timestamp_ms: u64,
    /// What it says, cut to [`PREVIEW_CHARS`].
    pub summary: String,
}

/// A history as bars, marks and rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The first event's time.
    pub start_ms: u64,
    /// The last event's time.
    pub end_ms: u64,
    /// The bars, in the order they started.
    pub bars: Vec<Bar>,
    /// The instant events.
    pub marks: Vec<Mark>,
    /// The events of the window asked for, compact, in history order.
    pub events: Vec<EventRow>,
    /// The history index of `events[0]`.
    pub events_from: usize,
    /// Events in the whole history.
    pub event_count: usize,
    /// Bars left out past [`BARS_MAX`].
    pub bars_left_out: usize,
}

/// The event type's name, as the HTTP API's `EventType`.
pub fn event_type(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::ExecutionStarted { .. } => "ExecutionStarted",
        EventKind::ExecutionCompleted { .. } => "ExecutionCompleted",
        EventKind::ExecutionTerminated { .. } => "ExecutionTerminated",
        EventKind::ExecutionSuspended { .. } => "ExecutionSuspended",
        EventKind::ExecutionResumed { .. } => "ExecutionResumed",
        EventKind::ExecutionRewound { .. } => "ExecutionRewound",
        EventKind::TaskScheduled { .. } => "TaskScheduled",
        EventKind::TaskCompleted { .. } => "TaskCompleted",
        EventKind::TaskFailed { .. } => "TaskFailed",
        EventKind::SubOrchestrationInstanceCreated { .. } => "SubOrchestrationInstanceCreated",
        EventKind::SubOrchestrationInstanceCompleted { .. } => "SubOrchestrationInstanceCompleted",
        EventKind::SubOrchestrationInstanceFailed { .. } => "SubOrchestrationInstanceFailed",
        EventKind::TimerCreated { .. } => "TimerCreated",
        EventKind::TimerFired { .. } => "TimerFired",
        EventKind::OrchestratorStarted => "OrchestratorStarted",
        EventKind::OrchestratorCompleted => "OrchestratorCompleted",
        EventKind::EventSent { .. } => "EventSent",
        EventKind::EntityOperationSignaled { .. } => "EntityOperationSignaled",
        EventKind::EntityOperationCalled { .. } => "EntityOperationCalled",
        EventKind::EntityOperationCompleted { .. } => "EntityOperationCompleted",
        EventKind::EntityOperationFailed { .. } => "EntityOperationFailed",
        EventKind::EntityLockRequested { .. } => "EntityLockRequested",
        EventKind::EntityLockGranted { .. } => "EntityLockGranted",
        EventKind::EntityUnlockSent { .. } => "EntityUnlockSent",
        EventKind::EventRaised { .. } => "EventRaised",
    }
}

/// `text` cut to [`PREVIEW_CHARS`] characters, with `…` when cut.
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn payload(text: &Option<String>) -> String {
    text.as_deref().map(preview).unwrap_or_default()
}

fn failure(details: &FailureDetails) -> String {
    preview(&details.to_string())
}

/// The family of ids a completion refers to: activities and
/// sub-orchestrations, timers and entity requests each answer their own
/// scheduling event.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Task,
    Child,
    Timer,
    Entity,
    Lock,
}

/// The timeline under construction: the bars still open, by what
/// answers them, and the last bar of each call (kind, name and input: a
/// retry sends the same input again). Both are reset at each execution
/// start, where ids restart.
struct Builder {
    out: Timeline,
    open: HashMap<(Family, i32), usize>,
    last_of_call: HashMap<(BarKind, String, u64), usize>,
}

/// A hash of a call's input, to tell retries from other calls of the
/// same name without keeping the inputs.
fn input_hash(input: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hasher);
    hasher.finish()
}

impl Builder {
    fn start(
        &mut self,
        index: usize,
        event: &HistoryEvent,
        family: Family,
        kind: BarKind,
        name: String,
        input: Option<&str>,
    ) -> Option<&mut Bar> {
        if self.out.bars.len() >= BARS_MAX {
            self.out.bars_left_out += 1;
            return None;
        }
        let bars = &mut self.out.bars;
        // Events come in order: a failed bar failed before this call.
        let call = (kind, name.clone(), input_hash(input));
        let attempt = match self.last_of_call.get(&call) {
            Some(&before) if bars[before].outcome == Outcome::Failed => bars[before].attempt + 1,
            _ => 1,
        };
        self.last_of_call.insert(call, bars.len());
        self.open.insert((family, event.event_id), bars.len());
        bars.push(Bar {
            kind,
            name,
            event_id: event.event_id,
            start_ms: event.timestamp_ms,
            end_ms: None,
            outcome: Outcome::Pending,
            attempt,
            start_index: index,
            end_index: None,
            detail: None,
            child: None,
            due_ms: None,
        });
        bars.last_mut()
    }

    fn end(
        &mut self,
        index: usize,
        at_ms: u64,
        family: Family,
        id: i32,
        outcome: Outcome,
        detail: String,
    ) {
        if let Some(bar) = self
            .open
            .remove(&(family, id))
            .map(|i| &mut self.out.bars[i])
        {
            bar.end_ms = Some(at_ms);
            bar.end_index = Some(index);
            bar.outcome = outcome;
            bar.detail = Some(detail).filter(|d| !d.is_empty());
        }
    }
}

/// Builds the timeline of `history` (in order), with the rows of the
/// events from `events_from` on (at most [`EVENT_ROWS_MAX`]).
pub fn timeline(history: &[HistoryEvent], events_from: usize) -> Timeline {
    let rows = events_from..events_from.saturating_add(EVENT_ROWS_MAX);
    let mut b = Builder {
        out: Timeline {
            start_ms: history.first().map_or(0, |e| e.timestamp_ms),
            end_ms: history.iter().map(|e| e.timestamp_ms).max().unwrap_or(0),
            events_from: events_from.min(history.len()),
            event_count: history.len(),
            ..Timeline::default()
        },
        open: HashMap::new(),
        last_of_call: HashMap::new(),
    };
    for (index, event) in history.iter().enumerate() {
        let at = event.timestamp_ms;
        if rows.contains(&index) {
            b.out.events.push(EventRow {
                event_type: event_type(&event.kind),
                event_id: event.event_id,
                timestamp_ms: at,
                summary: summary(&event.kind),
            });
        }
        match &event.kind {
            EventKind::TaskScheduled { name, input, .. } => {
                b.start(
                    index,
                    event,
                    Family::Task,
                    BarKind::Activity,
                    name.clone(),
                    input.as_deref(),
                );
            }
            EventKind::TaskCompleted {
                task_scheduled_id,
                result,
            } => b.end(
                index,
                at,
                Family::Task,
                *task_scheduled_id,
                Outcome::Completed,
                payload(result),
            ),
            EventKind::TaskFailed {
                task_scheduled_id,
                failure: why,
            } => b.end(
                index,
                at,
                Family::Task,
                *task_scheduled_id,
                Outcome::Failed,
                failure(why),
            ),
            EventKind::SubOrchestrationInstanceCreated {
                instance_id,
                name,
                input,
                ..
            } => {
                if let Some(bar) = b.start(
                    index,
                    event,
                    Family::Child,
                    BarKind::SubOrchestration,
                    name.clone(),
                    input.as_deref(),
                ) {
                    bar.child = Some(instance_id.clone());
                }
            }
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id,
                result,
            } => b.end(
                index,
                at,
                Family::Child,
                *task_scheduled_id,
                Outcome::Completed,
                payload(result),
            ),
            EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id,
                failure: why,
            } => b.end(
                index,
                at,
                Family::Child,
                *task_scheduled_id,
                Outcome::Failed,
                failure(why),
            ),
            EventKind::TimerCreated { fire_at_ms } => {
                if let Some(bar) = b.start(
                    index,
                    event,
                    Family::Timer,
                    BarKind::Timer,
                    format!("until {}", crate::time::format_rfc3339(*fire_at_ms)),
                    None,
                ) {
                    bar.due_ms = Some(*fire_at_ms);
                }
            }
            EventKind::TimerFired { timer_id, .. } => b.end(
                index,
                at,
                Family::Timer,
                *timer_id,
                Outcome::Completed,
                String::new(),
            ),
            EventKind::EntityOperationCalled {
                entity,
                operation,
                input,
            } => {
                b.start(
                    index,
                    event,
                    Family::Entity,
                    BarKind::EntityCall,
                    format!("{entity} {operation}"),
                    input.as_deref(),
                );
            }
            EventKind::EntityOperationCompleted { request_id, output } => b.end(
                index,
                at,
                Family::Entity,
                *request_id,
                Outcome::Completed,
                payload(output),
            ),
            EventKind::EntityOperationFailed {
                request_id,
                failure: why,
            } => b.end(
                index,
                at,
                Family::Entity,
                *request_id,
                Outcome::Failed,
                failure(why),
            ),
            EventKind::EntityLockRequested { entities } => {
                b.start(
                    index,
                    event,
                    Family::Lock,
                    BarKind::EntityLock,
                    entities.join(", "),
                    None,
                );
            }
            EventKind::EntityLockGranted { request_id } => b.end(
                index,
                at,
                Family::Lock,
                *request_id,
                Outcome::Completed,
                String::new(),
            ),
            EventKind::OrchestratorStarted | EventKind::OrchestratorCompleted => {}
            other => {
                if matches!(other, EventKind::ExecutionStarted { .. }) {
                    b.open.clear();
                    b.last_of_call.clear();
                }
                b.out.marks.push(Mark {
                    event_type: event_type(other),
                    at_ms: at,
                    index,
                    label: summary(other),
                });
            }
        }
    }
    b.out
}

/// One line on what an event says.
fn summary(kind: &EventKind) -> String {
    let text = match kind {
        EventKind::ExecutionStarted { name, input, .. } => {
            format!("{name}({})", payload(input))
        }
        EventKind::ExecutionCompleted {
            status,
            result,
            failure: why,
        } => match why {
            Some(why) => format!("{status:?}: {why}"),
            None => format!("{status:?}: {}", payload(result)),
        },
        EventKind::ExecutionTerminated { reason }
        | EventKind::ExecutionSuspended { reason }
        | EventKind::ExecutionResumed { reason }
        | EventKind::ExecutionRewound { reason } => payload(reason),
        EventKind::TaskScheduled { name, input, .. } => format!("{name}({})", payload(input)),
        EventKind::TaskCompleted {
            task_scheduled_id,
            result,
        }
        | EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id,
            result,
        } => format!("#{task_scheduled_id} → {}", payload(result)),
        EventKind::TaskFailed {
            task_scheduled_id,
            failure: why,
        }
        | EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id,
            failure: why,
        } => format!("#{task_scheduled_id} failed: {why}"),
        EventKind::SubOrchestrationInstanceCreated {
            instance_id,
            name,
            input,
            ..
        } => format!("{name}({}) as {instance_id}", payload(input)),
        EventKind::TimerCreated { fire_at_ms } => {
            format!("due {}", crate::time::format_rfc3339(*fire_at_ms))
        }
        EventKind::TimerFired { timer_id, .. } => format!("#{timer_id}"),
        EventKind::OrchestratorStarted | EventKind::OrchestratorCompleted => String::new(),
        EventKind::EventSent {
            instance_id,
            name,
            input,
        } => format!("{name}({}) to {instance_id}", payload(input)),
        EventKind::EntityOperationSignaled {
            entity,
            operation,
            input,
        }
        | EventKind::EntityOperationCalled {
            entity,
            operation,
            input,
        } => format!("{entity} {operation}({})", payload(input)),
        EventKind::EntityOperationCompleted { request_id, output } => {
            format!("#{request_id} → {}", payload(output))
        }
        EventKind::EntityOperationFailed {
            request_id,
            failure: why,
        } => format!("#{request_id} failed: {why}"),
        EventKind::EntityLockRequested { entities } | EventKind::EntityUnlockSent { entities } => {
            entities.join(", ")
        }
        EventKind::EntityLockGranted { request_id } => format!("#{request_id}"),
        EventKind::EventRaised { name, input } => format!("{name}({})", payload(input)),
    };
    preview(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_runtime::OrchestrationStatus;

    fn at(ms: u64, id: i32, kind: EventKind) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            timestamp_ms: ms,
            kind,
            correlation: None,
        }
    }

    fn failed(message: &str) -> FailureDetails {
        FailureDetails {
            error_type: "Error".into(),
            message: message.into(),
            stack_trace: None,
            inner: None,
            is_non_retriable: false,
        }
    }

    fn started() -> HistoryEvent {
        at(
            1_000,
            -1,
            EventKind::ExecutionStarted {
                name: "order".into(),
                version: None,
                input: Some("1".into()),
                parent: None,
                scheduled_start_ms: None,
            },
        )
    }

    #[test]
    fn bars_run_from_scheduling_to_answer_and_retries_are_numbered() {
        let history = vec![
            started(),
            at(1_000, -1, EventKind::OrchestratorStarted),
            at(
                1_001,
                0,
                EventKind::TaskScheduled {
                    name: "charge".into(),
                    version: None,
                    input: None,
                },
            ),
            at(
                1_010,
                -1,
                EventKind::TaskFailed {
                    task_scheduled_id: 0,
                    failure: failed("card declined"),
                },
            ),
            at(1_020, 1, EventKind::TimerCreated { fire_at_ms: 1_500 }),
            at(
                1_500,
                -1,
                EventKind::TimerFired {
                    timer_id: 1,
                    fire_at_ms: 1_500,
                },
            ),
            at(
                1_501,
                2,
                EventKind::TaskScheduled {
                    name: "charge".into(),
                    version: None,
                    input: None,
                },
            ),
            at(
                1_600,
                -1,
                EventKind::TaskCompleted {
                    task_scheduled_id: 2,
                    result: Some("\"ok\"".into()),
                },
            ),
            at(
                1_700,
                -1,
                EventKind::ExecutionCompleted {
                    status: OrchestrationStatus::Completed,
                    result: Some("\"ok\"".into()),
                    failure: None,
                },
            ),
        ];
        let t = timeline(&history, 0);
        assert_eq!((t.start_ms, t.end_ms), (1_000, 1_700));
        assert_eq!(t.events.len(), history.len());
        assert_eq!(t.bars.len(), 3);
        let first = &t.bars[0];
        assert_eq!(
            (first.kind, first.outcome, first.attempt, first.end_ms),
            (BarKind::Activity, Outcome::Failed, 1, Some(1_010))
        );
        assert_eq!(first.detail.as_deref(), Some("Error: card declined"));
        let timer = &t.bars[1];
        assert_eq!(
            (timer.kind, timer.due_ms, timer.end_index),
            (BarKind::Timer, Some(1_500), Some(5))
        );
        let retry = &t.bars[2];
        assert_eq!((retry.attempt, retry.outcome), (2, Outcome::Completed));
        assert_eq!(retry.detail.as_deref(), Some("\"ok\""));
        let marks: Vec<_> = t.marks.iter().map(|m| m.event_type).collect();
        assert_eq!(marks, ["ExecutionStarted", "ExecutionCompleted"]);
    }

    fn scheduled(ms: u64, id: i32, name: &str, input: &str) -> HistoryEvent {
        at(
            ms,
            id,
            EventKind::TaskScheduled {
                name: name.into(),
                version: None,
                input: Some(input.into()),
            },
        )
    }

    #[test]
    fn a_retry_is_the_same_call_again_not_the_next_of_its_name() {
        let history = vec![
            started(),
            scheduled(1_001, 0, "double", "1"),
            scheduled(1_001, 1, "double", "2"),
            at(
                1_002,
                -1,
                EventKind::TaskFailed {
                    task_scheduled_id: 0,
                    failure: failed("flaky"),
                },
            ),
            at(
                1_003,
                -1,
                EventKind::TaskCompleted {
                    task_scheduled_id: 1,
                    result: Some("4".into()),
                },
            ),
            // Item 1 again (a retry), then an unrelated call of the name.
            scheduled(1_010, 2, "double", "1"),
            scheduled(1_010, 3, "double", "3"),
        ];
        let t = timeline(&history, 0);
        let attempts: Vec<u32> = t.bars.iter().map(|b| b.attempt).collect();
        assert_eq!(attempts, [1, 1, 2, 1]);
    }

    #[test]
    fn unanswered_calls_stay_pending_and_a_later_success_is_not_a_retry() {
        let history = vec![
            started(),
            at(
                1_001,
                0,
                EventKind::TaskScheduled {
                    name: "a".into(),
                    version: None,
                    input: None,
                },
            ),
            at(
                1_002,
                -1,
                EventKind::TaskCompleted {
                    task_scheduled_id: 0,
                    result: None,
                },
            ),
            at(
                1_003,
                1,
                EventKind::TaskScheduled {
                    name: "a".into(),
                    version: None,
                    input: None,
                },
            ),
            at(
                1_004,
                2,
                EventKind::SubOrchestrationInstanceCreated {
                    instance_id: "child-1".into(),
                    name: "child".into(),
                    version: None,
                    input: None,
                },
            ),
        ];
        let t = timeline(&history, 0);
        assert_eq!(t.bars[1].attempt, 1, "the call before it completed");
        assert_eq!(t.bars[1].outcome, Outcome::Pending);
        assert_eq!(t.bars[1].end_ms, None);
        assert_eq!(t.bars[2].child.as_deref(), Some("child-1"));
        assert_eq!(t.bars[2].kind, BarKind::SubOrchestration);
    }

    #[test]
    fn rows_come_a_window_at_a_time_and_bars_are_capped() {
        let mut history = vec![started()];
        for id in 0..(BARS_MAX as i32 + 10) {
            history.push(at(
                1_001,
                id,
                EventKind::TaskScheduled {
                    name: "a".into(),
                    version: None,
                    input: None,
                },
            ));
        }
        let t = timeline(&history, 0);
        assert_eq!(t.event_count, history.len());
        assert_eq!(t.events.len(), history.len().min(EVENT_ROWS_MAX));
        assert_eq!((t.bars.len(), t.bars_left_out), (BARS_MAX, 10));
        let tail = timeline(&history, history.len() - 3);
        assert_eq!(tail.events.len(), 3);
        assert_eq!(tail.events_from, history.len() - 3);
        assert_eq!(tail.events[2].event_id, BARS_MAX as i32 + 9);
        let past = timeline(&history, history.len() + 5);
        assert!(past.events.is_empty());
        assert_eq!(past.events_from, history.len());
    }

    #[test]
    fn previews_are_cut_on_a_character_boundary() {
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(preview("short"), "short");
    }
}
