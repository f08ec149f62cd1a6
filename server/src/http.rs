//! The HTTP management API, on the paths of the Durable Functions
//! instance-management API (`/runtime/webhooks/durabletask/...`) so
//! existing habits and tools carry over, plus `/healthz` and `/metrics`
//! (Prometheus text). Every endpoint and its answers are listed in
//! `docs/server.md`. Errors are JSON `{"error": "..."}` with a status code
//! that says what kind of failure it was.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_engine::Engine;
use basalt_runtime::{
    Backend, EntityId, EntityOperation, EntityQuery, EntityState, Error as RuntimeError,
    HistoryEvent, InstanceId, InstanceQuery, InstanceState, OrchestrationStatus, StartRequest,
};
use serde_json::{Value, json};

use crate::auth::BearerToken;
use crate::browser::BrowserGuard;
use crate::dispatch::Dispatcher;
use crate::time::{format_rfc3339, parse_time};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The engine, as a backend.
    pub backend: Arc<dyn Backend>,
    /// The engine itself, for metrics.
    pub engine: Engine,
    /// The work dispatcher, for metrics.
    pub dispatcher: Arc<Dispatcher>,
    /// The API's URL as clients reach it (no trailing `/`): the base of
    /// every URI it returns, never taken from a request.
    pub public_url: Arc<str>,
}

/// The Durable Functions webhook prefix every management path starts with.
pub const PREFIX: &str = "/runtime/webhooks/durabletask";
/// Request and response header carrying a list's continuation.
pub const CONTINUATION_HEADER: &str = "x-ms-continuation-token";

/// The API's routes.
/// Bytes an HTTP body may have beyond the largest payload (JSON quoting
/// and escapes of a string input).
pub const BODY_OVERHEAD_BYTES: usize = 1 << 20;

/// The API's routes, behind the browser checks and (with a token) the
/// bearer check; bodies up to `payload_bytes_max` plus
/// [`BODY_OVERHEAD_BYTES`].
pub fn router(
    state: HttpState,
    auth_token: Option<BearerToken>,
    guard: BrowserGuard,
    payload_bytes_max: usize,
) -> Router {
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    Router::new()
        .route("/metrics", get(metrics))
        .route(&format!("{PREFIX}/orchestrators/{{name}}"), post(start))
        .route(
            &format!("{PREFIX}/orchestrators/{{name}}/{{id}}"),
            post(start_with_id),
        )
        .route(
            &format!("{PREFIX}/instances"),
            get(list_instances).delete(purge_matching),
        )
        .route(
            &format!("{PREFIX}/instances/{{id}}"),
            get(get_instance).delete(purge_instance),
        )
        .route(
            &format!("{PREFIX}/instances/{{id}}/raiseEvent/{{event}}"),
            post(raise_event),
        )
        .route(
            &format!("{PREFIX}/instances/{{id}}/{{action}}"),
            post(control),
        )
        .merge(crate::dashboard::api::routes())
        .route(&format!("{PREFIX}/entities"), get(list_entities))
        .route(
            &format!("{PREFIX}/entities/{{name}}"),
            get(list_entities_named),
        )
        .route(
            &format!("{PREFIX}/entities/{{name}}/{{key}}"),
            get(get_entity).post(signal_entity),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            auth_token,
            crate::auth::require_token,
        ))
        .merge(health)
        .merge(crate::dashboard::assets())
        .layer(axum::extract::DefaultBodyLimit::max(
            payload_bytes_max.saturating_add(BODY_OVERHEAD_BYTES),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard),
            crate::browser::browser_guard,
        ))
        .with_state(state)
}

/// An API error: a status code and a message, as JSON, and for a refusal
/// under load the seconds for `Retry-After`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, Option<u64>);

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into(), None)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, message.into(), None)
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    fn overloaded(retry_after_ms: u64, message: String) -> ApiError {
        ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            message,
            Some(retry_after_ms.div_ceil(1000).max(1)),
        )
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> ApiError {
        if let RuntimeError::Overloaded { retry_after_ms, .. } = &error {
            return ApiError::overloaded(*retry_after_ms, error.to_string());
        }
        let code = match &error {
            RuntimeError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            RuntimeError::NotFound(_) => StatusCode::NOT_FOUND,
            RuntimeError::Conflict(_) | RuntimeError::StaleToken(_) => StatusCode::CONFLICT,
            RuntimeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            RuntimeError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => {
                let message = crate::incident::report(&error);
                return ApiError(StatusCode::INTERNAL_SERVER_ERROR, message, None);
            }
        };
        ApiError(code, error.to_string(), None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if let Some(seconds) = self.2
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

pub(crate) fn instance_id(text: &str) -> Result<InstanceId, ApiError> {
    InstanceId::new(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn entity_id(name: &str, key: &str) -> Result<EntityId, ApiError> {
    EntityId::new(name, key).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A request body as a JSON payload: empty means none; anything else must
/// be valid JSON (the payloads of Durable Task are JSON text).
fn payload(body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))?;
    serde_json::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    Ok(Some(text.to_owned()))
}

/// A stored JSON payload as a JSON value (text that is not JSON stays a string).
fn json_value(payload: &Option<String>) -> Value {
    match payload {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
    }
}

pub(crate) fn status_name(status: OrchestrationStatus) -> &'static str {
    match status {
        OrchestrationStatus::Pending => "Pending",
        OrchestrationStatus::Running => "Running",
        OrchestrationStatus::Completed => "Completed",
        OrchestrationStatus::Failed => "Failed",
        OrchestrationStatus::Terminated => "Terminated",
        OrchestrationStatus::Suspended => "Suspended",
        OrchestrationStatus::ContinuedAsNew => "ContinuedAsNew",
    }
}

fn parse_status(text: &str) -> Result<OrchestrationStatus, ApiError> {
    Ok(match text.trim().to_ascii_lowercase().as_str() {
        "pending" => OrchestrationStatus::Pending,
        "running" => OrchestrationStatus::Running,
        "completed" => OrchestrationStatus::Completed,
        "failed" => OrchestrationStatus::Failed,
        "terminated" | "canceled" => OrchestrationStatus::Terminated,
        "suspended" => OrchestrationStatus::Suspended,
        "continuedasnew" => OrchestrationStatus::ContinuedAsNew,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown runtimeStatus {other:?} (Pending, Running, Completed, Failed, \
                 Terminated, Suspended)"
            )));
        }
    })
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// An instance as Durable Functions reports it.
pub(crate) fn instance_json(state: &InstanceState, show_input: bool) -> Value {
    let mut body = json!({
        "name": state.name,
        "instanceId": state.instance_id.as_str(),
        "runtimeStatus": status_name(state.status),
        "customStatus": json_value(&state.custom_status),
        "output": json_value(&state.output),
        "createdTime": format_rfc3339(state.created_at_ms),
        "lastUpdatedTime": format_rfc3339(state.last_updated_at_ms),
    });
    if show_input {
        body["input"] = json_value(&state.input);
    }
    if let Some(failure) = &state.failure {
        body["failureDetails"] = json!({
            "errorType": failure.error_type,
            "errorMessage": failure.message,
            "stackTrace": failure.stack_trace,
        });
        if state.output.is_none() {
            body["output"] = Value::String(failure.to_string());
        }
    }
    if let Some(parent) = &state.parent {
        body["parentInstanceId"] = Value::String(parent.instance_id.to_string());
    }
    if !state.tags.is_empty() {
        body["tags"] = json!(state.tags);
    }
    body
}

/// A history event as `{"EventType": ..., "EventId": ..., "Timestamp": ..., fields}`.
fn event_json(event: &HistoryEvent) -> Value {
    let kind = serde_json::to_value(&event.kind).unwrap_or(Value::Null);
    let (name, mut fields) = match kind {
        Value::String(name) => (name, serde_json::Map::new()),
        Value::Object(map) => match map.into_iter().next() {
            Some((name, Value::Object(fields))) => (name, fields),
            Some((name, _)) => (name, serde_json::Map::new()),
            None => (String::new(), serde_json::Map::new()),
        },
        _ => (String::new(), serde_json::Map::new()),
    };
    fields.insert("EventType".into(), Value::String(name));
    fields.insert("EventId".into(), json!(event.event_id));
    fields.insert(
        "Timestamp".into(),
        Value::String(format_rfc3339(event.timestamp_ms)),
    );
    Value::Object(fields)
}

/// Everything but unreserved characters (RFC 3986) is escaped in a path
/// segment: an id may hold `?`, `#`, `/` or `%`.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The Durable Functions management URIs of an instance, under the
/// configured public URL, its id escaped.
fn management_urls(public_url: &str, id: &str) -> Value {
    let escaped = percent_encoding::utf8_percent_encode(id, PATH_SEGMENT);
    let base = format!("{public_url}{PREFIX}/instances/{escaped}");
    json!({
        "id": id,
        "statusQueryGetUri": base,
        "sendEventPostUri": format!("{base}/raiseEvent/{{eventName}}"),
        "terminatePostUri": format!("{base}/terminate?reason={{text}}"),
        "suspendPostUri": format!("{base}/suspend?reason={{text}}"),
        "resumePostUri": format!("{base}/resume?reason={{text}}"),
        "purgeHistoryDeleteUri": base,
    })
}

/// How long `/readyz` waits for each partition's answer.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: 200 when every partition answers, 503 naming the ones that
/// do not (stopped by a storage error, stuck, or stopping). The errors
/// themselves are in the server's log, not here: the probe needs no
/// token.
async fn readyz(State(state): State<HttpState>) -> Response {
    let mut problems = Vec::new();
    let results = state.engine.readiness(READY_WAIT).await;
    let partitions = results.len();
    for (partition, answer) in results {
        let Err(error) = answer else { continue };
        let problem = match error {
            RuntimeError::Timeout(_) => {
                format!(
                    "no answer within {} s (stuck or overloaded)",
                    READY_WAIT.as_secs()
                )
            }
            RuntimeError::ShutDown => "stopping".to_owned(),
            _ => "stopped after a storage error; it reopens itself once storage works (the server's log has the error)".to_owned(),
        };
        problems.push(json!({ "partition": partition, "problem": problem }));
    }
    if problems.is_empty() {
        let body = json!({ "status": "ready", "partitions": partitions });
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let body = json!({ "status": "not ready", "partitions": partitions, "problems": problems });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// A storage error's kind for `/metrics`, from its text (the text itself
/// names files and stays in the server's log).
fn storage_error_kind(error: &str) -> &'static str {
    let error = error.to_ascii_lowercase();
    if error.contains("no space left") || error.contains("storage full") || error.contains("quota")
    {
        "disk_full"
    } else if error.contains("permission denied") || error.contains("read-only") {
        "permission"
    } else if error.contains("object store") {
        "object_store"
    } else {
        "other"
    }
}

/// Liveness: the process serves HTTP (it says nothing about storage; see
/// `/readyz`).
async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

async fn start(State(state): State<HttpState>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    start_instance(state, name, None, body).await
}

async fn start_with_id(
    State(state): State<HttpState>,
    Path((name, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    start_instance(state, name, Some(id), body).await
}

async fn start_instance(
    state: HttpState,
    name: String,
    id: Option<String>,
    body: Bytes,
) -> ApiResult {
    if let Some(id) = &id {
        instance_id(id)?;
    }
    let input = payload(&body)?;
    let started = state
        .backend
        .start_instance(StartRequest {
            name,
            instance_id: id,
            input,
            ..StartRequest::default()
        })
        .await?;
    let urls = management_urls(&state.public_url, started.as_str());
    let location = urls["statusQueryGetUri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut response = (StatusCode::ACCEPTED, axum::Json(urls)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert("location", value);
    }
    Ok(response)
}

async fn get_instance(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = instance_id(&id)?;
    let Some(instance) = state.backend.get_instance(&id).await? else {
        return Err(ApiError::not_found(format!("instance {id} not found")));
    };
    let show_input = params.get("showInput").is_none_or(|v| v != "false");
    let mut body = instance_json(&instance, show_input);
    if flag(&params, "showHistory") {
        let history = state.backend.get_history(&id).await?;
        body["historyEvents"] = Value::Array(history.iter().map(event_json).collect());
    }
    // Durable Functions answers 202 while the instance is still going.
    let code = if instance.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, axum::Json(body)).into_response())
}

fn instance_query(
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<InstanceQuery, ApiError> {
    let statuses = params
        .get("runtimeStatus")
        .map(|list| {
            list.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(parse_status)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let time = |name: &str| {
        params
            .get(name)
            .map(|t| parse_time(t).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
            .transpose()
    };
    let page_size = page_size(params)?;
    Ok(InstanceQuery {
        statuses,
        created_from_ms: time("createdTimeFrom")?,
        created_to_ms: time("createdTimeTo")?,
        instance_id_prefix: params.get("instanceIdPrefix").cloned(),
        name: params.get("name").filter(|n| !n.is_empty()).cloned(),
        page_size,
        continuation: continuation(headers, params)?,
        fetch_inputs_and_outputs: params.get("showInput").is_none_or(|v| v != "false"),
    })
}

async fn list_instances(
    State(state): State<HttpState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    let query = instance_query(&params, &headers)?;
    let page = state.backend.query_instances(&query).await?;
    let body: Vec<Value> = page
        .instances
        .iter()
        .map(|i| instance_json(i, query.fetch_inputs_and_outputs))
        .collect();
    Ok(with_continuation(
        axum::Json(body).into_response(),
        page.continuation,
    ))
}

/// Adds the next page's continuation. The engine's tokens are instance or
/// entity ids, which may hold any printable character, so on the wire they
/// are hex (always a valid header value).
fn with_continuation(mut response: Response, continuation: Option<String>) -> Response {
    if let Some(token) = continuation {
        let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
        if let Ok(value) = HeaderValue::from_str(&hex) {
            response.headers_mut().insert(CONTINUATION_HEADER, value);
        }
    }
    response
}

/// The continuation a list request carries (header, or `continuationToken`
/// in the query string), decoded from hex.
fn continuation(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Option<String>, ApiError> {
    let text = headers
        .get(CONTINUATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get("continuationToken").cloned());
    let Some(text) = text else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(format!(
            "the continuation token {text:?} is not one this API handed out"
        ))
    };
    if text.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map(Some).map_err(|_| bad())
}

async fn purge_instance(State(state): State<HttpState>, Path(id): Path<String>) -> ApiResult {
    let id = instance_id(&id)?;
    if state.backend.purge(&id).await? {
        Ok(axum::Json(json!({ "instancesDeleted": 1 })).into_response())
    } else {
        Err(ApiError::not_found(format!("instance {id} not found")))
    }
}

async fn purge_matching(
    State(state): State<HttpState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    let query = instance_query(&params, &headers)?;
    let (deleted, _) = crate::sidecar::purge_finished(state.backend.as_ref(), query, None).await?;
    Ok(axum::Json(json!({ "instancesDeleted": deleted })).into_response())
}

async fn raise_event(
    State(state): State<HttpState>,
    Path((id, event)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let id = instance_id(&id)?;
    state
        .backend
        .raise_event(&id, &event, payload(&body)?)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `reason` from the query string, as JSON text.
fn reason(params: &HashMap<String, String>) -> Option<String> {
    params
        .get("reason")
        .map(|r| Value::String(r.clone()).to_string())
}

/// The instance controls (`terminate`, `suspend`, `resume`, `rewind`),
/// each with an optional `?reason=`.
async fn control(
    State(state): State<HttpState>,
    Path((id, action)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = instance_id(&id)?;
    require_instance(&state, &id).await?;
    let backend = state.backend.as_ref();
    match action.as_str() {
        "terminate" => backend.terminate(&id, reason(&params)).await?,
        "suspend" => backend.suspend(&id, reason(&params)).await?,
        "resume" => backend.resume(&id, reason(&params)).await?,
        "rewind" => {
            crate::sidecar::rewind_tree(backend, &id, params.get("reason").cloned()).await?
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no instance action {other:?} (terminate, suspend, resume, rewind)"
            )));
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn require_instance(state: &HttpState, id: &InstanceId) -> Result<(), ApiError> {
    match state.backend.get_instance(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("instance {id} not found"))),
    }
}

fn entity_json(entity: &EntityState, with_state: bool) -> Value {
    let mut body = json!({
        "entityId": { "name": entity.entity.name(), "key": entity.entity.key() },
        "lastModifiedTime": format_rfc3339(entity.last_modified_ms),
        "backlog": entity.backlog,
        "lockedBy": entity.locked_by.as_ref().map(|id| id.as_str()),
    });
    if with_state {
        body["state"] = json_value(&entity.state);
    }
    body
}

async fn get_entity(
    State(state): State<HttpState>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult {
    let entity = entity_id(&name, &key)?;
    match state.backend.get_entity(&entity).await? {
        Some(found) => Ok(axum::Json(entity_json(&found, true)).into_response()),
        None => Err(ApiError::not_found(format!("entity {entity} has no state"))),
    }
}

async fn signal_entity(
    State(state): State<HttpState>,
    Path((name, key)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let entity = entity_id(&name, &key)?;
    let operation = params
        .get("op")
        .filter(|op| !op.is_empty())
        .ok_or_else(|| ApiError::bad_request("the operation is required: ?op=<name>"))?;
    state
        .backend
        .signal_entity(
            &entity,
            EntityOperation {
                name: operation.clone(),
                input: payload(&body)?,
            },
            None,
        )
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn list_entities(
    State(state): State<HttpState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    query_entities(state, None, params, headers).await
}

async fn list_entities_named(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    query_entities(state, Some(name), params, headers).await
}

/// The `top` query parameter: a page size of 1 to 1,000, 100 when absent.
fn page_size(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("top") {
        Some(top) => top
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("top must be 1..=1000, not {top:?}"))),
        None => Ok(100),
    }
}

async fn query_entities(
    state: HttpState,
    name: Option<String>,
    params: HashMap<String, String>,
    headers: HeaderMap,
) -> ApiResult {
    let page_size = page_size(&params)?;
    let with_state = params.get("fetchState").is_none_or(|v| v != "false");
    let page = state
        .backend
        .query_entities(&EntityQuery {
            name,
            key_prefix: params.get("keyPrefix").cloned(),
            include_state: with_state,
            page_size,
            continuation: continuation(&headers, &params)?,
        })
        .await?;
    let body: Vec<Value> = page
        .entities
        .iter()
        .map(|e| entity_json(e, with_state))
        .collect();
    Ok(with_continuation(
        axum::Json(body).into_response(),
        page.continuation,
    ))
}

async fn metrics(State(state): State<HttpState>) -> ApiResult {
    let partitions = state.engine.partition_metrics().await?;
    let (steps_queued, activities_queued) = state.engine.queued_work();
    let dispatch = state.dispatcher.stats();
    let mut text = String::new();
    let per_partition: [MetricFamily; 15] = [
        (
            "basalt_partition_up",
            "gauge",
            "1 while a partition serves, 0 while a storage error has it stopped (it reopens itself once storage works).",
            |p| f64::from(u8::from(p.serving)),
        ),
        (
            "basalt_partition_storage_failures_total",
            "counter",
            "Times a storage error (disk full, permission, object store outage) stopped a partition since the server started.",
            |p| p.storage_failures as f64,
        ),
        (
            "basalt_partition_reopens_total",
            "counter",
            "Times a stopped partition reopened itself from storage since the server started.",
            |p| p.reopens as f64,
        ),
        (
            "basalt_partition_reopen_failures_total",
            "counter",
            "Attempts to reopen a stopped partition that failed (storage still broken); they are retried with backoff.",
            |p| p.reopen_failures as f64,
        ),
        (
            "basalt_partition_commits_total",
            "counter",
            "Storage writes (group commits) of a partition's log since the server started.",
            |p| p.log.writes as f64,
        ),
        (
            "basalt_partition_records_total",
            "counter",
            "Events made durable in a partition's log since the server started.",
            |p| p.log.records as f64,
        ),
        (
            "basalt_partition_commit_batch_records",
            "gauge",
            "Mean events per group commit of a partition since the server started.",
            |p| ratio(p.log.records as f64, p.log.writes),
        ),
        (
            "basalt_partition_commit_seconds_total",
            "counter",
            "Time spent in a partition's storage writes (write + sync); divided by commits, the mean commit latency.",
            |p| p.log.write_micros as f64 / 1e6,
        ),
        (
            "basalt_partition_commit_latency_seconds",
            "gauge",
            "Mean commit latency of a partition since the server started.",
            |p| ratio(p.log.write_micros as f64 / 1e6, p.log.writes),
        ),
        (
            "basalt_partition_checkpoints_total",
            "counter",
            "Checkpoints a partition wrote since the server started (each a durable write).",
            |p| p.log.checkpoints as f64,
        ),
        (
            "basalt_partition_checkpoint_bytes_total",
            "counter",
            "Bytes of the checkpoints a partition wrote since the server started.",
            |p| p.log.checkpoint_bytes as f64,
        ),
        (
            "basalt_partition_segments_created_total",
            "counter",
            "Log segment files a partition created since the server started (each a durable write: file, header, fsync, directory fsync).",
            |p| p.log.segments_created as f64,
        ),
        (
            "basalt_partition_entities",
            "gauge",
            "Entities with state held by a partition (in memory or in its state store).",
            |p| p.entities as f64,
        ),
        (
            "basalt_partition_records_resident",
            "gauge",
            "Instances and entities a partition holds in memory (the rest are in its state store).",
            |p| p.records_resident as f64,
        ),
        (
            "basalt_partition_records_resident_bytes",
            "gauge",
            "Estimated bytes of the records a partition holds in memory (what --memory-budget limits).",
            |p| p.records_resident_bytes as f64,
        ),
    ];
    for (name, kind, help, value) in per_partition {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &partitions {
            let _ = writeln!(text, "{name}{{partition=\"{}\"}} {}", p.partition, value(p));
        }
    }
    let _ = writeln!(
        text,
        "# HELP basalt_partition_last_storage_error The kind of the last storage error of a partition (disk_full, permission, object_store, other); the server's log has the error itself.\n# TYPE basalt_partition_last_storage_error gauge"
    );
    for p in &partitions {
        if let Some(error) = &p.last_storage_error {
            let _ = writeln!(
                text,
                "basalt_partition_last_storage_error{{partition=\"{}\",kind=\"{}\"}} 1",
                p.partition,
                storage_error_kind(error)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP basalt_instances Orchestration instances by status and partition.\n# TYPE basalt_instances gauge"
    );
    for p in &partitions {
        for (status, count) in &p.instances_by_status {
            let _ = writeln!(
                text,
                "basalt_instances{{partition=\"{}\",status=\"{}\"}} {count}",
                p.partition,
                status_name(*status)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP basalt_queue_depth Work waiting: in the engine for the dispatcher (engine), held for a worker that accepts it (held), or out at workers (in_flight).\n# TYPE basalt_queue_depth gauge"
    );
    let kinds = ["orchestration", "activity", "entity"];
    let _ = writeln!(
        text,
        "basalt_queue_depth{{kind=\"orchestration\",stage=\"engine\"}} {steps_queued}"
    );
    let _ = writeln!(
        text,
        "basalt_queue_depth{{kind=\"activity\",stage=\"engine\"}} {activities_queued}"
    );
    for (index, kind) in kinds.iter().enumerate() {
        let _ = writeln!(
            text,
            "basalt_queue_depth{{kind=\"{kind}\",stage=\"held\"}} {}",
            dispatch.held[index]
        );
        let _ = writeln!(
            text,
            "basalt_queue_depth{{kind=\"{kind}\",stage=\"in_flight\"}} {}",
            dispatch.in_flight[index]
        );
    }
    let _ = writeln!(
        text,
        "# HELP basalt_dispatch_dropped_stale_total Work items dropped instead of handed to a worker: their execution ended (terminated, finished, continued as new) or their partition reopened while they waited.\n# TYPE basalt_dispatch_dropped_stale_total counter"
    );
    for (index, kind) in kinds.iter().enumerate() {
        let _ = writeln!(
            text,
            "basalt_dispatch_dropped_stale_total{{kind=\"{kind}\"}} {}",
            dispatch.dropped_stale[index]
        );
    }
    let _ = writeln!(
        text,
        "# HELP basalt_worker_streams Connected worker streams (GetWorkItems).\n# TYPE basalt_worker_streams gauge\nbasalt_worker_streams {}",
        dispatch.streams
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

/// A per-partition metric: name, Prometheus type, help, and its value.
type MetricFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&basalt_engine::PartitionMetrics) -> f64,
);

fn ratio(numerator: f64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator / denominator as f64
    }
}
