//! The JSON the dashboard needs beyond the Durable Functions management
//! API, under `/api/v1/` and behind the same token check:
//!
//! - `GET /api/v1/overview`: instances by status and entities, summed
//!   over the partitions from their counters (no scan), the work queues
//!   and the connected workers;
//! - `GET /api/v1/partitions`: per partition, its instances, queues,
//!   log counters, LSNs and last checkpoint (the page takes two readings
//!   to show commits per second);
//! - `GET /api/v1/instances/{id}/timeline`: the instance and its history
//!   as a timeline ([`super::timeline`]).
//!
//! Every field is listed in `docs/server.md`.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use basalt_runtime::OrchestrationStatus;
use serde_json::{Value, json};

use super::timeline::timeline;
use crate::http::{ApiError, ApiResult, HttpState, instance_id, instance_json, status_name};
use crate::time::{format_rfc3339, now_ms};

/// The dashboard's data routes (token check added by the caller).
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/partitions", get(partitions))
        .route("/api/v1/instances/{id}/timeline", get(instance_timeline))
}

/// Counts by status with every status present (zeros included), so the
/// page shows the same chips whatever the hub holds.
fn by_status(counts: &BTreeMap<OrchestrationStatus, u64>) -> Value {
    let mut out = serde_json::Map::new();
    for status in [
        OrchestrationStatus::Pending,
        OrchestrationStatus::Running,
        OrchestrationStatus::Suspended,
        OrchestrationStatus::Completed,
        OrchestrationStatus::Failed,
        OrchestrationStatus::Terminated,
        OrchestrationStatus::ContinuedAsNew,
    ] {
        out.insert(
            status_name(status).to_owned(),
            json!(counts.get(&status).copied().unwrap_or(0)),
        );
    }
    Value::Object(out)
}

/// The work queues: in the engine, held by the dispatcher, out at workers.
fn queues(state: &HttpState) -> Value {
    let (steps, activities) = state.engine.queued_work();
    let dispatch = state.dispatcher.stats();
    let kinds = ["orchestration", "activity", "entity"];
    let per_kind = |values: [usize; 3]| {
        let mut map = serde_json::Map::new();
        for (kind, value) in kinds.iter().zip(values) {
            map.insert((*kind).to_owned(), json!(value));
        }
        Value::Object(map)
    };
    json!({
        "engine": { "orchestration": steps, "activity": activities },
        "held": per_kind(dispatch.held),
        "inFlight": per_kind(dispatch.in_flight),
        "workerStreams": dispatch.streams,
    })
}

async fn overview(State(state): State<HttpState>) -> ApiResult {
    let partitions = state.engine.partition_metrics().await?;
    let mut counts = BTreeMap::new();
    let mut entities = 0;
    for p in &partitions {
        for (status, n) in &p.instances_by_status {
            *counts.entry(*status).or_insert(0) += n;
        }
        entities += p.entities;
    }
    Ok(axum::Json(json!({
        "serverTimeMs": now_ms(),
        "partitionCount": partitions.len(),
        "partitionsServing": partitions.iter().filter(|p| p.serving).count(),
        "instancesByStatus": by_status(&counts),
        "instances": counts.values().sum::<u64>(),
        "entities": entities,
        "queues": queues(&state),
    }))
    .into_response())
}

async fn partitions(State(state): State<HttpState>) -> ApiResult {
    let partitions = state.engine.partition_metrics().await?;
    let rows: Vec<Value> = partitions
        .iter()
        .map(|p| {
            let position = &p.position;
            json!({
                "partition": p.partition,
                "serving": p.serving,
                "owner": "this process",
                "instances": p.instances_by_status.values().sum::<u64>(),
                "instancesByStatus": by_status(&p.instances_by_status),
                "entities": p.entities,
                "recordsResident": p.records_resident,
                "recordsResidentBytes": p.records_resident_bytes,
                "queued": {
                    "orchestration": p.queued_steps,
                    "activity": p.queued_activities,
                    "outbox": position.outbox_messages,
                },
                "log": {
                    "commits": p.log.writes,
                    "events": p.log.records,
                    "bytes": p.log.bytes,
                    "commitMicros": p.log.write_micros,
                    "segmentsCreated": p.log.segments_created,
                    "checkpoints": p.log.checkpoints,
                    "checkpointBytes": p.log.checkpoint_bytes,
                    "nextLsn": position.next_lsn,
                    "durableLsn": position.durable_lsn,
                    "eventsSinceCheckpoint": position.events_since_checkpoint,
                    "bytesSinceCheckpoint": position.bytes_since_checkpoint,
                },
                "checkpoint": {
                    "lsn": position.checkpoint_lsn,
                    "writtenLsn": position.checkpoint_written.map(|(lsn, _)| lsn),
                    "writtenTime": position.checkpoint_written.map(|(_, at)| format_rfc3339(at)),
                    "writtenTimeMs": position.checkpoint_written.map(|(_, at)| at),
                },
                "storageFailures": p.storage_failures,
                "reopens": p.reopens,
                "lastStorageError": p.last_storage_error,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "serverTimeMs": now_ms(),
        "partitions": rows,
        "queues": queues(&state),
    }))
    .into_response())
}

/// An instance and its history as of one moment: the instance is read
/// again after the history and the pair kept only if it did not change in
/// between (a few tries; an instance that changes that fast is running,
/// and the page reads it again in 2 s anyway). Without this a completion
/// between the two reads could pair a finished status with a history
/// that misses its end, and the page would stop refreshing.
async fn consistent_read(
    state: &HttpState,
    id: &basalt_runtime::InstanceId,
) -> Result<
    (
        basalt_runtime::InstanceState,
        Vec<basalt_runtime::HistoryEvent>,
    ),
    ApiError,
> {
    let not_found = || ApiError::not_found(format!("instance {id} not found"));
    let mut before = state
        .backend
        .get_instance(id)
        .await?
        .ok_or_else(not_found)?;
    for _ in 0..3 {
        let history = state.backend.get_history(id).await?;
        let after = state
            .backend
            .get_instance(id)
            .await?
            .ok_or_else(not_found)?;
        let unchanged =
            after.status == before.status && after.last_updated_at_ms == before.last_updated_at_ms;
        if unchanged || !after.status.is_terminal() {
            return Ok((after, history));
        }
        before = after;
    }
    let history = state.backend.get_history(id).await?;
    Ok((before, history))
}

async fn instance_timeline(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = instance_id(&id)?;
    let events_from = match params.get("eventsFrom") {
        Some(text) => text.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("eventsFrom must be a history index, not {text:?}"))
        })?,
        None => 0,
    };
    let (instance, history) = consistent_read(&state, &id).await?;
    Ok(axum::Json(json!({
        "instance": instance_json(&instance, true),
        "terminal": instance.status.is_terminal(),
        "serverTimeMs": now_ms(),
        "timeline": timeline(&history, events_from),
    }))
    .into_response())
}
