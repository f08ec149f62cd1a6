//! duroxide's types to and from Basalt's hosted seam. Events and work
//! items are stored as duroxide serializes them (JSON); what Basalt needs
//! to know of them without decoding (an execution's start, a message that
//! may be dropped, an activity's identity, session and tag, key-value and
//! custom status changes) is read here, once, when they arrive.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use basalt_runtime::InstanceId;
use basalt_runtime::hosted::{
    Ack, AckMetadata, HostedTurn, KvEntry, KvOp, MessageKind, QueuedMessage, StoredEvent,
    TagFilter, VersionRange, WorkerItem, WorkerItemId,
};
use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, ScheduledActivityIdentifier, WorkItem,
};
use duroxide::{Event, EventKind};

/// The wall clock in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An instance (or session) id as Basalt holds it.
pub(crate) fn instance_id(id: &str) -> Result<InstanceId, String> {
    InstanceId::new(id).map_err(|e| e.to_string())
}

fn triple(version: &semver::Version) -> (u64, u64, u64) {
    (version.major, version.minor, version.patch)
}

/// The runtime versions a dispatcher replays.
pub(crate) fn version_ranges(filter: &DispatcherCapabilityFilter) -> Vec<VersionRange> {
    filter
        .supported_duroxide_versions
        .iter()
        .map(|range| VersionRange {
            min: triple(&range.min),
            max: triple(&range.max),
        })
        .collect()
}

/// Which tags a worker takes.
pub(crate) fn tag_filter(filter: &duroxide::providers::TagFilter) -> TagFilter {
    use duroxide::providers::TagFilter as Theirs;
    match filter {
        Theirs::DefaultOnly => TagFilter::DefaultOnly,
        Theirs::Tags(tags) => TagFilter::Tags(tags.iter().cloned().collect()),
        Theirs::DefaultAnd(tags) => TagFilter::DefaultAnd(tags.iter().cloned().collect()),
        Theirs::Any => TagFilter::Any,
        Theirs::None => TagFilter::None,
    }
}

/// Stored events back to duroxide's, or why one does not decode (the
/// history is then reported as unreadable, never cut short).
pub(crate) fn decode_events(stored: &[StoredEvent]) -> Result<Vec<Event>, String> {
    stored
        .iter()
        .map(|event| {
            serde_json::from_slice(&event.bytes)
                .map_err(|e| format!("history event {} does not decode: {e}", event.id))
        })
        .collect()
}

/// A stored work item back to duroxide's.
pub(crate) fn decode_item(bytes: &[u8]) -> Result<WorkItem, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("a work item does not decode: {e}"))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("cannot encode: {e}"))
}

/// Key-value pairs as duroxide sees them.
pub(crate) fn kv_entries(
    kv: &BTreeMap<String, KvEntry>,
) -> HashMap<String, duroxide::providers::KvEntry> {
    kv.iter()
        .map(|(key, entry)| {
            (
                key.clone(),
                duroxide::providers::KvEntry {
                    value: entry.value.clone(),
                    last_updated_at_ms: entry.updated_ms,
                },
            )
        })
        .collect()
}

/// An activity for the worker queue.
pub(crate) fn worker_item(item: &WorkItem) -> Result<WorkerItem, String> {
    let WorkItem::ActivityExecute {
        instance,
        execution_id,
        id,
        session_id,
        tag,
        ..
    } = item
    else {
        return Err("Invalid work item type: only ActivityExecute goes to workers".into());
    };
    Ok(WorkerItem {
        order: 0,
        id: WorkerItemId {
            instance: instance.clone(),
            execution_id: *execution_id,
            activity_id: *id,
        },
        session: session_id.clone(),
        tag: tag.clone(),
        bytes: encode(item)?,
        visible_ms: 0,
        lock: None,
        attempts: 0,
    })
}

/// A message for an orchestrator: the instance it goes to and how it is
/// queued, visible from `visible_ms` (0: at once).
pub(crate) fn queued(
    item: &WorkItem,
    visible_ms: Option<u64>,
) -> Result<(InstanceId, QueuedMessage), String> {
    let (target, kind) = match item {
        WorkItem::StartOrchestration {
            instance,
            orchestration,
            version,
            ..
        }
        | WorkItem::ContinueAsNew {
            instance,
            orchestration,
            version,
            ..
        } => (
            instance,
            MessageKind::Start {
                name: orchestration.clone(),
                version: version.clone(),
            },
        ),
        WorkItem::QueueMessage { instance, .. } => (instance, MessageKind::DropIfNoInstance),
        WorkItem::ActivityCompleted { instance, .. }
        | WorkItem::ActivityFailed { instance, .. }
        | WorkItem::TimerFired { instance, .. }
        | WorkItem::ExternalRaised { instance, .. }
        | WorkItem::CancelInstance { instance, .. } => (instance, MessageKind::Other),
        WorkItem::SubOrchCompleted {
            parent_instance, ..
        }
        | WorkItem::SubOrchFailed {
            parent_instance, ..
        } => (parent_instance, MessageKind::Other),
        WorkItem::ActivityExecute { .. } => {
            return Err("Invalid work item type: ActivityExecute goes to workers".into());
        }
    };
    Ok((
        instance_id(target)?,
        QueuedMessage {
            order: 0,
            visible_ms: visible_ms.unwrap_or(0),
            kind,
            bytes: encode(item)?,
            fetched_by: None,
            attempts: 0,
        },
    ))
}

/// An orchestration turn as one hosted commit: the history delta as
/// stored events, the metadata, what the delta says about the start,
/// custom status and key-value pairs, and the items it sends.
pub(crate) fn turn(
    execution_id: u64,
    delta: &[Event],
    worker_items: Vec<WorkItem>,
    orchestrator_items: Vec<WorkItem>,
    metadata: ExecutionMetadata,
    cancelled: Vec<ScheduledActivityIdentifier>,
) -> Result<HostedTurn, String> {
    let mut started_as = None;
    let mut custom_status = None;
    let mut kv = Vec::new();
    let mut events = Vec::with_capacity(delta.len());
    for event in delta {
        match &event.kind {
            EventKind::OrchestrationStarted { name, version, .. } => {
                started_as = Some((name.clone(), Some(version.clone())));
            }
            EventKind::CustomStatusUpdated { status } => custom_status = Some(status.clone()),
            EventKind::KeyValueSet {
                key,
                value,
                last_updated_at_ms,
            } => kv.push(KvOp::Set {
                key: key.clone(),
                value: value.clone(),
                updated_ms: *last_updated_at_ms,
            }),
            EventKind::KeyValueCleared { key } => kv.push(KvOp::Clear { key: key.clone() }),
            EventKind::KeyValuesCleared => kv.push(KvOp::ClearAll),
            _ => {}
        }
        events.push(StoredEvent {
            id: event.event_id,
            bytes: encode(event)?,
        });
    }
    let ack = Ack {
        token: 0,
        execution_id,
        events,
        metadata: AckMetadata {
            status: metadata.status,
            output: metadata.output,
            name: metadata.orchestration_name,
            version: metadata.orchestration_version,
            parent: metadata.parent_instance_id,
            pinned_version: metadata.pinned_duroxide_version.as_ref().map(triple),
        },
        started_as,
        custom_status,
        kv,
    };
    let worker_items = worker_items
        .iter()
        .map(worker_item)
        .collect::<Result<Vec<_>, _>>()?;
    let orchestrator_items = orchestrator_items
        .iter()
        // duroxide's own provider skips activities here too.
        .filter(|item| !matches!(item, WorkItem::ActivityExecute { .. }))
        .map(|item| {
            let visible = match item {
                WorkItem::TimerFired { fire_at_ms, .. } => Some(*fire_at_ms),
                _ => None,
            };
            queued(item, visible)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HostedTurn {
        ack,
        worker_items,
        orchestrator_items,
        cancelled: cancelled
            .into_iter()
            .map(|c| WorkerItemId {
                instance: c.instance,
                execution_id: c.execution_id,
                activity_id: c.activity_id,
            })
            .collect(),
    })
}
