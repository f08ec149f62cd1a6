//! The Durable Task sidecar gRPC service (`TaskHubSidecarService`) over any
//! [`Backend`]: the official SDKs' clients and workers talk to Basalt
//! through it unchanged. Coverage, RPC by RPC, is in
//! `docs/protocol-coverage.md`.
//!
//! Errors: malformed requests get `INVALID_ARGUMENT`, unknown instances
//! `NOT_FOUND`, conflicts `ALREADY_EXISTS` / `FAILED_PRECONDITION`, stale
//! completion tokens `FAILED_PRECONDITION`, a stopping server
//! `UNAVAILABLE`; every message says what was wrong. No request can stop
//! the server.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use basalt_runtime::entity::{EntityBatchResult, OperationResult};
use basalt_runtime::{
    ActivityOutcome, Backend, CompletionToken, EntityId, EntityOperation, EntityQuery,
    Error as RuntimeError, InstanceId, InstanceQuery, OrchestrationStatus, OrchestrationStepResult,
    OrchestratorAction, StartRequest,
};
use futures::Stream;
use parking_lot::Mutex;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::{self, ConvertError, WireConverter};
use crate::dispatch::{Dispatcher, EntityBatchShape, StreamFilters, StreamMessage, Work};
use crate::history_cache::{CACHE_BYTES_DEFAULT, HistoryCache};
use crate::history_wire::PastEvents;
use crate::proto;
use crate::proto::task_hub_sidecar_service_server::TaskHubSidecarService;
use crate::time::now_ms;

/// Which message carries entity batches to workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityFormat {
    /// `WorkItem.entityRequest` (`EntityBatchRequest`), the older format.
    #[default]
    V1,
    /// `WorkItem.entityRequestV2` (`EntityRequest`), operations as events.
    V2,
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// Caps on what one worker stream holds at once (orchestration,
    /// activity, entity), whatever it asks for.
    pub per_stream_max: [usize; 3],
    /// Which entity batch format workers get.
    pub entity_format: EntityFormat,
    /// Past events above this many encoded bytes are streamed to workers
    /// that can stream history (see [`ServeOptions::history_streaming_bytes`]).
    ///
    /// [`ServeOptions::history_streaming_bytes`]: crate::config::ServeOptions::history_streaming_bytes
    pub history_streaming_bytes: usize,
    /// How long a termination waits for a step a worker holds (see
    /// [`ServeOptions::termination_grace`]).
    ///
    /// [`ServeOptions::termination_grace`]: crate::config::ServeOptions::termination_grace
    pub termination_grace: Duration,
}

/// The service; one per server.
pub struct Sidecar {
    backend: Arc<dyn Backend>,
    dispatcher: Arc<Dispatcher>,
    options: SidecarOptions,
    /// Long histories kept encoded between steps.
    histories: HistoryCache,
    /// Steps handed out without their past events, by instance id.
    streamed_steps: Mutex<HashMap<String, StreamedStep>>,
    streamed_serial: AtomicU64,
}

/// A step handed out with `requiresHistoryStreaming`: what
/// `StreamInstanceHistory` with `forWorkItemProcessing` serves for it. The
/// engine's history read is the history and then the events still waiting
/// (among them the step's new events, which the worker has already), so
/// the step's past is the first `past_events` of it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StreamedStep {
    token: String,
    execution: u64,
    past_events: usize,
    /// Hand-out order: the oldest is forgotten first.
    serial: u64,
}

/// Most steps remembered as streamed at once; past it the oldest is
/// forgotten (its worker's read is refused, and the worker abandons the
/// step, which comes again).
const STREAMED_STEPS_MAX: usize = 10_000;

/// Longest a `WaitFor*` call waits when the client set no deadline.
const WAIT_MAX: Duration = Duration::from_secs(24 * 3600);
/// History events per `StreamInstanceHistory` chunk.
const HISTORY_CHUNK_EVENTS: usize = 200;

/// A runtime error as a gRPC status with its message.
pub fn status_of(error: RuntimeError) -> Status {
    let message = error.to_string();
    match error {
        RuntimeError::InvalidInput(_) => Status::invalid_argument(message),
        RuntimeError::NotFound(_) => Status::not_found(message),
        RuntimeError::Conflict(_) => Status::already_exists(message),
        RuntimeError::StaleToken(_) => Status::failed_precondition(message),
        RuntimeError::Timeout(_) => Status::deadline_exceeded(message),
        RuntimeError::ShutDown => Status::unavailable(message),
        RuntimeError::Overloaded { .. } => Status::resource_exhausted(message),
        _ => Status::internal(crate::incident::report(&message)),
    }
}

fn invalid(error: ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

fn instance_id(field: &str, text: &str) -> Result<InstanceId, Status> {
    InstanceId::new(text).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn entity_id(text: &str) -> Result<EntityId, Status> {
    EntityId::parse(text).map_err(|e| Status::invalid_argument(format!("instanceId: {e}")))
}

fn token(text: &str) -> Result<CompletionToken, Status> {
    if text.is_empty() {
        return Err(Status::invalid_argument("completionToken is required"));
    }
    Ok(CompletionToken(text.to_owned()))
}

/// The statuses of a filter; the wire enum as the runtime's.
fn statuses(values: &[i32]) -> Result<Vec<OrchestrationStatus>, Status> {
    values
        .iter()
        .map(|v| convert::status_from_proto(*v).map_err(invalid))
        .collect()
}

/// The deadline a client put on the call, if any (`grpc-timeout`).
fn client_deadline<T>(request: &Request<T>) -> Duration {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|text| {
            let (number, unit) = text.split_at(text.len().checked_sub(1)?);
            let n: u64 = number.parse().ok()?;
            Some(match unit {
                "H" => Duration::from_secs(n * 3600),
                "M" => Duration::from_secs(n * 60),
                "S" => Duration::from_secs(n),
                "m" => Duration::from_millis(n),
                "u" => Duration::from_micros(n),
                "n" => Duration::from_nanos(n),
                _ => return None,
            })
        })
        .unwrap_or(WAIT_MAX)
}

fn limit(asked: i32, cap: usize) -> usize {
    if asked <= 0 {
        cap
    } else {
        (asked as usize).min(cap)
    }
}

fn filters_of(request: &proto::GetWorkItemsRequest) -> StreamFilters {
    let Some(filters) = &request.work_item_filters else {
        return StreamFilters::default();
    };
    if filters.orchestrations.is_empty()
        && filters.activities.is_empty()
        && filters.entities.is_empty()
    {
        return StreamFilters::default();
    }
    StreamFilters {
        orchestrations: Some(
            filters
                .orchestrations
                .iter()
                .map(|f| (f.name.clone(), f.versions.clone()))
                .collect(),
        ),
        activities: Some(
            filters
                .activities
                .iter()
                .map(|f| (f.name.clone(), f.versions.clone()))
                .collect(),
        ),
        entities: Some(filters.entities.iter().map(|f| f.name.clone()).collect()),
    }
}

impl Sidecar {
    /// A service over `backend`, handing work out through `dispatcher`.
    pub fn new(
        backend: Arc<dyn Backend>,
        dispatcher: Arc<Dispatcher>,
        options: SidecarOptions,
    ) -> Sidecar {
        Sidecar {
            backend,
            dispatcher,
            options,
            histories: HistoryCache::new(CACHE_BYTES_DEFAULT),
            streamed_steps: Mutex::new(HashMap::new()),
            streamed_serial: AtomicU64::new(0),
        }
    }

    /// `message` as the worker gets it; `streams_history`: the worker can
    /// read a long history with `StreamInstanceHistory` instead.
    fn work_item(&self, message: StreamMessage, streams_history: bool) -> proto::WorkItem {
        use proto::work_item::Request as R;
        match message {
            StreamMessage::HealthPing => proto::WorkItem {
                request: Some(R::HealthPing(proto::HealthPing {})),
                completion_token: String::new(),
            },
            StreamMessage::Work(Work::Orchestration(item)) => {
                let mut request = self.histories.request(&item);
                if streams_history
                    && request.past_events.encoded_len() > self.options.history_streaming_bytes
                {
                    request.head.requires_history_streaming = true;
                    request.past_events = PastEvents::default();
                    let mut streamed = self.streamed_steps.lock();
                    if streamed.len() >= STREAMED_STEPS_MAX
                        && !streamed.contains_key(item.instance_id.as_str())
                        && let Some(oldest) = streamed
                            .iter()
                            .min_by_key(|(_, step)| step.serial)
                            .map(|(id, _)| id.clone())
                    {
                        streamed.remove(&oldest);
                    }
                    let serial = self.streamed_serial.fetch_add(1, Ordering::Relaxed);
                    streamed.insert(
                        item.instance_id.as_str().to_owned(),
                        StreamedStep {
                            token: item.token.0.clone(),
                            execution: item.execution,
                            past_events: item.past_events.len(),
                            serial,
                        },
                    );
                }
                proto::WorkItem {
                    request: Some(R::OrchestratorRequest(request)),
                    completion_token: item.token.0,
                }
            }
            StreamMessage::Work(Work::Activity(item)) => proto::WorkItem {
                request: Some(R::ActivityRequest(convert::activity_request(&item))),
                completion_token: item.token.0,
            },
            StreamMessage::Work(Work::Entity(item)) => {
                let request = match self.options.entity_format {
                    EntityFormat::V1 => R::EntityRequest(convert::entity_batch_request(&item)),
                    EntityFormat::V2 => {
                        R::EntityRequestV2(convert::entity_request_v2(&item, now_ms()))
                    }
                };
                proto::WorkItem {
                    request: Some(request),
                    completion_token: item.token.0,
                }
            }
        }
    }

    /// Starts an instance, honouring an id-reuse policy if one is given:
    /// an existing instance may be replaced only when its status is listed.
    async fn start(&self, request: proto::CreateInstanceRequest) -> Result<String, Status> {
        if request.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let id = if request.instance_id.is_empty() {
            None
        } else {
            convert::check_new_id("instanceId", &request.instance_id).map_err(invalid)?;
            Some(instance_id("instanceId", &request.instance_id)?)
        };
        if let (Some(id), Some(policy)) = (&id, &request.orchestration_id_reuse_policy)
            && let Some(existing) = self.backend.get_instance(id).await.map_err(status_of)?
        {
            let replaceable = statuses(&policy.replaceable_status)?;
            if !replaceable.contains(&existing.status) {
                return Err(Status::already_exists(format!(
                    "instance {id} already exists with status {}",
                    existing.status
                )));
            }
            if !existing.status.is_terminal() {
                self.backend
                    .terminate(id, Some("\"replaced by a new start\"".into()))
                    .await
                    .map_err(status_of)?;
                self.backend
                    .wait_for_completion(id, Duration::from_secs(30))
                    .await
                    .map_err(status_of)?;
            }
        }
        let started = self
            .backend
            .start_instance(StartRequest {
                name: request.name,
                instance_id: id.map(|i| i.to_string()),
                input: request.input,
                version: request.version,
                // The JavaScript SDK sends the epoch for "now".
                scheduled_start_ms: request
                    .scheduled_start_timestamp
                    .as_ref()
                    .map(convert::millis)
                    .filter(|&ms| ms > 0),
                tags: request.tags.into_iter().collect(),
            })
            .await
            .map_err(status_of)?;
        Ok(started.to_string())
    }

    async fn get(
        &self,
        id: &str,
        with_payloads: bool,
    ) -> Result<proto::GetInstanceResponse, Status> {
        let id = instance_id("instanceId", id)?;
        let state = self.backend.get_instance(&id).await.map_err(status_of)?;
        Ok(instance_response(state.as_ref(), with_payloads))
    }

    async fn wait(
        &self,
        request: Request<proto::GetInstanceRequest>,
        for_completion: bool,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        let deadline = client_deadline(&request);
        let request = request.into_inner();
        let id = instance_id("instanceId", &request.instance_id)?;
        let waited = if for_completion {
            self.backend.wait_for_completion(&id, deadline).await
        } else {
            self.backend.wait_for_start(&id, deadline).await
        };
        match waited {
            Ok(state) => Ok(Response::new(instance_response(
                Some(&state),
                request.get_inputs_and_outputs,
            ))),
            Err(RuntimeError::NotFound(_)) => Ok(Response::new(instance_response(None, false))),
            Err(error) => Err(status_of(error)),
        }
    }

    /// Every finished instance matching a purge filter.
    /// Purges by filter within the filter's `timeout`, if one is given:
    /// (deleted, whether every match was purged).
    async fn purge_matching(
        &self,
        filter: &proto::PurgeInstanceFilter,
    ) -> Result<(i32, bool), Status> {
        let query = InstanceQuery {
            statuses: statuses(&filter.runtime_status)?,
            created_from_ms: filter.created_time_from.as_ref().map(convert::millis),
            created_to_ms: filter.created_time_to.as_ref().map(convert::millis),
            ..InstanceQuery::default()
        };
        let deadline = match &filter.timeout {
            None => None,
            Some(timeout) => {
                let timeout = Duration::try_from(*timeout).map_err(|_| {
                    Status::invalid_argument(format!(
                        "purgeInstanceFilter.timeout must not be negative: {timeout:?}"
                    ))
                })?;
                Some(tokio::time::Instant::now() + timeout)
            }
        };
        let (deleted, complete) = purge_finished(self.backend.as_ref(), query, deadline)
            .await
            .map_err(status_of)?;
        Ok((i32::try_from(deleted).unwrap_or(i32::MAX), complete))
    }

    async fn purge_one(&self, id: &str, recursive: bool) -> Result<i32, Status> {
        let id = instance_id("instanceId", id)?;
        let children = if recursive {
            self.children(&id).await?
        } else {
            Vec::new()
        };
        let mut deleted = match self.backend.purge(&id).await {
            Ok(true) => 1,
            Ok(false) => 0,
            Err(RuntimeError::Conflict(message)) => {
                return Err(Status::failed_precondition(message));
            }
            Err(error) => return Err(status_of(error)),
        };
        // Children that still run (or are gone already) are left as they are.
        for child in children {
            if let Ok(n) = Box::pin(self.purge_one(child.as_str(), true)).await {
                deleted += n;
            }
        }
        Ok(deleted)
    }

    /// The sub-orchestrations the instance's current execution created.
    async fn children(&self, id: &InstanceId) -> Result<Vec<InstanceId>, Status> {
        let history = match self.backend.get_history(id).await {
            Ok(history) => history,
            Err(RuntimeError::NotFound(_)) => return Ok(Vec::new()),
            Err(error) => return Err(status_of(error)),
        };
        let mut children: Vec<InstanceId> = history
            .iter()
            .filter_map(|event| match &event.kind {
                basalt_runtime::EventKind::SubOrchestrationInstanceCreated {
                    instance_id, ..
                } => InstanceId::new(instance_id.as_str()).ok(),
                _ => None,
            })
            .collect();
        children.sort();
        children.dedup();
        Ok(children)
    }

    /// Terminates an instance and, with `recursive`, every unfinished
    /// sub-orchestration below it (each termination is durable on its own;
    /// the parent first, so it does not react to its children ending).
    async fn terminate_tree(
        &self,
        id: &InstanceId,
        reason: Option<String>,
        recursive: bool,
    ) -> Result<(), Status> {
        // A step a worker holds is let finish first (its result counts),
        // as the Scheduler terminates, for up to the grace period; then,
        // or when no step is out, at once.
        if self.dispatcher.step_out(id.as_str()) {
            self.backend
                .terminate_after_step(id, reason.clone())
                .await
                .map_err(status_of)?;
            // The same instance, not one started again under its id since.
            let created = self
                .backend
                .get_instance(id)
                .await
                .map_err(status_of)?
                .map(|state| state.created_at_ms);
            let backend = Arc::clone(&self.backend);
            let (id, reason) = (id.clone(), reason.clone());
            let grace = self.options.termination_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let running = matches!(
                    backend.get_instance(&id).await,
                    Ok(Some(state)) if !state.status.is_terminal()
                        && Some(state.created_at_ms) == created
                );
                if running && let Err(error) = backend.terminate(&id, reason).await {
                    tracing::warn!(instance = %id, %error, "terminating after the grace period");
                }
            });
        } else {
            self.backend
                .terminate(id, reason.clone())
                .await
                .map_err(status_of)?;
        }
        if !recursive {
            return Ok(());
        }
        for child in self.children(id).await? {
            let running = matches!(
                self.backend.get_instance(&child).await,
                Ok(Some(state)) if !state.status.is_terminal()
            );
            if running {
                Box::pin(self.terminate_tree(&child, reason.clone(), true)).await?;
            }
        }
        Ok(())
    }

    async fn complete_orchestration(
        &self,
        response: proto::OrchestratorResponse,
    ) -> Result<(), Status> {
        let token = token(&response.completion_token)?;
        {
            let mut streamed = self.streamed_steps.lock();
            if streamed
                .get(&response.instance_id)
                .is_some_and(|step| step.token == response.completion_token)
            {
                streamed.remove(&response.instance_id);
            }
        }
        let mut refusal = None;
        let converted = convert::step_result_from_proto(&response, &response.instance_id, now_ms());
        let result = match converted {
            Ok(result) => result,
            // A malformed response, or something the protocol allows but
            // Basalt cannot do: the orchestration fails with a message
            // saying so, rather than hanging or doing it wrong.
            Err(error) => {
                let (error_type, message) = match error {
                    ConvertError::Invalid(message) => {
                        refusal = Some(Status::invalid_argument(message.clone()));
                        ("InvalidWorkerResponse", message)
                    }
                    ConvertError::Unsupported(message) => ("UnsupportedAction", message),
                };
                let id = response
                    .actions
                    .iter()
                    .map(|a| a.id)
                    .max()
                    .unwrap_or(0)
                    .saturating_add(1);
                OrchestrationStepResult {
                    actions: vec![OrchestratorAction::new(
                        id,
                        basalt_runtime::ActionKind::CompleteOrchestration {
                            status: OrchestrationStatus::Failed,
                            result: None,
                            failure: Some(basalt_runtime::FailureDetails {
                                error_type: error_type.into(),
                                message,
                                is_non_retriable: true,
                                ..Default::default()
                            }),
                            new_version: None,
                            carryover_events: Vec::new(),
                        },
                    )],
                    custom_status: response.custom_status.clone(),
                }
            }
        };
        let outcome = self
            .backend
            .complete_orchestration_work_item(&token, result)
            .await;
        self.settle(&token, &outcome);
        outcome.map_err(status_of)?;
        match refusal {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Frees the item's slot once the engine has taken the completion (or
    /// found it stale or refused it for good); after any other error (the
    /// engine stopping) the item stays with its stream, and is given back
    /// if the stream ends.
    fn settle(&self, token: &CompletionToken, outcome: &Result<(), RuntimeError>) {
        if matches!(
            outcome,
            Ok(()) | Err(RuntimeError::StaleToken(_)) | Err(RuntimeError::InvalidInput(_))
        ) {
            self.dispatcher.finish(token);
        }
    }

    /// A batch outcome in which every operation failed with `message` and
    /// the state stays as it was.
    fn failed_batch(&self, item: &EntityBatchShape, message: &str) -> EntityBatchResult {
        let failure = basalt_runtime::FailureDetails {
            error_type: "InvalidWorkerResponse".into(),
            message: message.to_owned(),
            is_non_retriable: true,
            ..Default::default()
        };
        EntityBatchResult {
            state: item.state.clone(),
            results: vec![OperationResult::Failed(failure); item.operations],
            ..EntityBatchResult::default()
        }
    }
}

/// Purges every finished instance matching `query` (its paging fields are
/// ignored), page by page, until done or until `deadline`; returns how
/// many were deleted and whether it got to the end. Shared by the gRPC and
/// HTTP APIs.
pub async fn purge_finished(
    backend: &dyn Backend,
    mut query: InstanceQuery,
    deadline: Option<tokio::time::Instant>,
) -> Result<(u64, bool), RuntimeError> {
    query.page_size = 1000;
    query.continuation = None;
    query.fetch_inputs_and_outputs = false;
    let mut deleted = 0;
    let out_of_time = || deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
    loop {
        let page = backend.query_instances(&query).await?;
        for state in page.instances.iter().filter(|s| s.status.is_terminal()) {
            if out_of_time() {
                return Ok((deleted, false));
            }
            if backend.purge(&state.instance_id).await? {
                deleted += 1;
            }
        }
        match page.continuation {
            Some(next) => query.continuation = Some(next),
            None => return Ok((deleted, true)),
        }
    }
}

/// Most instances `SkipGracefulOrchestrationTerminations` takes in one
/// call (the protocol's limit).
const TERMINATIONS_PER_CALL_MAX: usize = 500;

/// Rewinds a failed instance, then the failed sub-orchestrations it was
/// waiting for (parent first, so their new results reach it). Shared by
/// the gRPC and HTTP APIs.
///
/// The whole tree is checked before anything changes, so a rewind never
/// leaves a parent waiting for an answer that cannot come: a child that
/// the parent has no result from (or saw fail) must be running, completed
/// or itself rewindable; a purged one is started again from scratch with
/// the parent's rewind (as the SDKs expect); a terminated one, or a failed
/// one that cannot be rewound (it failed inside a critical section),
/// refuses the rewind with a conflict naming it.
pub async fn rewind_tree(
    backend: &dyn Backend,
    id: &InstanceId,
    reason: Option<String>,
) -> Result<(), RuntimeError> {
    let mut plan = Vec::new();
    plan_rewind(backend, id, &mut plan).await?;
    for (index, (instance, recreate)) in plan.into_iter().enumerate() {
        match backend
            .rewind_recreating(&instance, reason.clone(), recreate)
            .await
        {
            Ok(()) => {}
            // A child that stopped being failed since the check (rewound
            // or purged by someone else) needs nothing from us.
            Err(RuntimeError::Conflict(_) | RuntimeError::NotFound(_)) if index > 0 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Adds `id` (which must be failed and rewindable) with its purged
/// children to start again, and then, depth first, the failed children it
/// waits for, to `plan`.
async fn plan_rewind(
    backend: &dyn Backend,
    id: &InstanceId,
    plan: &mut Vec<(InstanceId, Vec<InstanceId>)>,
) -> Result<(), RuntimeError> {
    use basalt_runtime::EventKind;
    let Some(state) = backend.get_instance(id).await? else {
        return Err(RuntimeError::NotFound(id.to_string()));
    };
    if state.status != basalt_runtime::OrchestrationStatus::Failed {
        return Err(RuntimeError::Conflict(format!(
            "instance {id} is {}; only a failed instance can be rewound",
            state.status
        )));
    }
    let history = backend.get_history(id).await?;
    if let Some(why) = basalt_runtime::rewind_obstacle(&history) {
        return Err(RuntimeError::Conflict(format!(
            "instance {id} cannot be rewound: {why}; restart it instead"
        )));
    }
    let at = plan.len();
    plan.push((id.clone(), Vec::new()));
    for created in &history {
        let EventKind::SubOrchestrationInstanceCreated { instance_id, .. } = &created.kind else {
            continue;
        };
        // Its answer as the parent saw it: completed (nothing to do),
        // failed (the rewind takes it out: the child must answer again),
        // or none yet.
        let completed = history.iter().any(|event| {
            matches!(&event.kind, EventKind::SubOrchestrationInstanceCompleted { task_scheduled_id, .. }
                if *task_scheduled_id == created.event_id)
        });
        if completed {
            continue;
        }
        let Ok(child) = InstanceId::new(instance_id.as_str()) else {
            continue;
        };
        use basalt_runtime::OrchestrationStatus as S;
        match backend.get_instance(&child).await?.map(|s| s.status) {
            Some(S::Failed) => Box::pin(plan_rewind(backend, &child, plan)).await?,
            // Its answer is on its way, or was kept for this rewind.
            Some(S::Pending | S::Running | S::Suspended | S::Completed | S::ContinuedAsNew) => {}
            Some(status @ S::Terminated) => {
                return Err(RuntimeError::Conflict(format!(
                    "instance {id} cannot be rewound: its sub-orchestration {child} is {status} \
                     and cannot answer again"
                )));
            }
            // Purged after it failed: it runs again from scratch with the
            // parent's rewind. Without a failure in the parent's history
            // it may not have started yet (its start still on its way):
            // refused, as before.
            None => {
                let failed = history.iter().any(|event| {
                    matches!(&event.kind, EventKind::SubOrchestrationInstanceFailed { task_scheduled_id, .. }
                        if *task_scheduled_id == created.event_id)
                });
                if !failed {
                    return Err(RuntimeError::Conflict(format!(
                        "instance {id} cannot be rewound: its sub-orchestration {child} is not \
                         there and never answered (purged before it failed, or not started yet)"
                    )));
                }
                if !plan[at].1.contains(&child) {
                    plan[at].1.push(child);
                }
            }
        }
    }
    Ok(())
}

fn instance_response(
    state: Option<&basalt_runtime::InstanceState>,
    with_payloads: bool,
) -> proto::GetInstanceResponse {
    proto::GetInstanceResponse {
        exists: state.is_some(),
        orchestration_state: state.map(|s| convert::instance_state_to_proto(s, with_payloads)),
    }
}

type WorkItemStream = Pin<Box<dyn Stream<Item = Result<proto::WorkItem, Status>> + Send>>;
type HistoryStream = Pin<Box<dyn Stream<Item = Result<proto::HistoryChunk, Status>> + Send>>;

#[tonic::async_trait]
impl TaskHubSidecarService for Arc<Sidecar> {
    async fn hello(&self, _: Request<()>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    async fn start_instance(
        &self,
        request: Request<proto::CreateInstanceRequest>,
    ) -> Result<Response<proto::CreateInstanceResponse>, Status> {
        let instance_id = self.start(request.into_inner()).await?;
        Ok(Response::new(proto::CreateInstanceResponse { instance_id }))
    }

    async fn get_instance(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.get(&request.instance_id, request.get_inputs_and_outputs)
                .await?,
        ))
    }

    async fn rewind_instance(
        &self,
        request: Request<proto::RewindInstanceRequest>,
    ) -> Result<Response<proto::RewindInstanceResponse>, Status> {
        let request = request.into_inner();
        let id = instance_id("instanceId", &request.instance_id)?;
        match rewind_tree(self.backend.as_ref(), &id, request.reason).await {
            Ok(()) => Ok(Response::new(proto::RewindInstanceResponse {})),
            Err(RuntimeError::Conflict(message)) => Err(Status::failed_precondition(message)),
            Err(error) => Err(status_of(error)),
        }
    }

    async fn restart_instance(
        &self,
        request: Request<proto::RestartInstanceRequest>,
    ) -> Result<Response<proto::RestartInstanceResponse>, Status> {
        let request = request.into_inner();
        let id = instance_id("instanceId", &request.instance_id)?;
        let state = self
            .backend
            .get_instance(&id)
            .await
            .map_err(status_of)?
            .ok_or_else(|| Status::not_found(format!("instance {id} not found")))?;
        // Under its own id only a finished instance starts over; under a
        // new id any instance can be started again (the running one goes
        // on), as in the Durable Task Scheduler.
        if !state.status.is_terminal() && !request.restart_with_new_instance_id {
            return Err(Status::failed_precondition(format!(
                "instance {id} is {}; only a finished instance can be restarted under its own id",
                state.status
            )));
        }
        // The version it ran with, so version-filtered workers take it.
        let version = self
            .backend
            .get_history(&id)
            .await
            .map_err(status_of)?
            .iter()
            .find_map(|event| match &event.kind {
                basalt_runtime::EventKind::ExecutionStarted { version, .. } => version.clone(),
                _ => None,
            });
        let started = self
            .backend
            .start_instance(StartRequest {
                name: state.name,
                instance_id: (!request.restart_with_new_instance_id).then(|| id.to_string()),
                input: state.input,
                version,
                scheduled_start_ms: None,
                tags: state.tags,
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::RestartInstanceResponse {
            instance_id: started.to_string(),
        }))
    }

    async fn wait_for_instance_start(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        self.wait(request, false).await
    }

    async fn wait_for_instance_completion(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        self.wait(request, true).await
    }

    async fn raise_event(
        &self,
        request: Request<proto::RaiseEventRequest>,
    ) -> Result<Response<proto::RaiseEventResponse>, Status> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let id = instance_id("instanceId", &request.instance_id)?;
        self.backend
            .raise_event(&id, &request.name, request.input)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::RaiseEventResponse {}))
    }

    async fn terminate_instance(
        &self,
        request: Request<proto::TerminateRequest>,
    ) -> Result<Response<proto::TerminateResponse>, Status> {
        let request = request.into_inner();
        let id = instance_id("instanceId", &request.instance_id)?;
        self.terminate_tree(&id, request.output, request.recursive)
            .await?;
        Ok(Response::new(proto::TerminateResponse {}))
    }

    async fn suspend_instance(
        &self,
        request: Request<proto::SuspendRequest>,
    ) -> Result<Response<proto::SuspendResponse>, Status> {
        let request = request.into_inner();
        let id = instance_id("instanceId", &request.instance_id)?;
        self.backend
            .suspend(&id, request.reason)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::SuspendResponse {}))
    }

    async fn resume_instance(
        &self,
        request: Request<proto::ResumeRequest>,
    ) -> Result<Response<proto::ResumeResponse>, Status> {
        let request = request.into_inner();
        let id = instance_id("instanceId", &request.instance_id)?;
        self.backend
            .resume(&id, request.reason)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::ResumeResponse {}))
    }

    async fn query_instances(
        &self,
        request: Request<proto::QueryInstancesRequest>,
    ) -> Result<Response<proto::QueryInstancesResponse>, Status> {
        let query = request.into_inner().query.unwrap_or_default();
        let page_size = match query.max_instance_count {
            n if n <= 0 => 100,
            n => (n as usize).min(1000),
        };
        let fetch = query.fetch_inputs_and_outputs;
        let page = self
            .backend
            .query_instances(&InstanceQuery {
                statuses: statuses(&query.runtime_status)?,
                created_from_ms: query.created_time_from.as_ref().map(convert::millis),
                created_to_ms: query.created_time_to.as_ref().map(convert::millis),
                instance_id_prefix: query.instance_id_prefix.filter(|p| !p.is_empty()),
                name: None,
                page_size,
                continuation: query.continuation_token.filter(|c| !c.is_empty()),
                fetch_inputs_and_outputs: fetch,
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::QueryInstancesResponse {
            orchestration_state: page
                .instances
                .iter()
                .map(|s| convert::instance_state_to_proto(s, fetch))
                .collect(),
            continuation_token: page.continuation,
        }))
    }

    async fn list_instance_ids(
        &self,
        request: Request<proto::ListInstanceIdsRequest>,
    ) -> Result<Response<proto::ListInstanceIdsResponse>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size {
            n if n <= 0 => 100,
            n => (n as usize).min(1000),
        };
        let from = request.completed_time_from.as_ref().map(convert::millis);
        let to = request.completed_time_to.as_ref().map(convert::millis);
        let page = self
            .backend
            .query_instances(&InstanceQuery {
                statuses: statuses(&request.runtime_status)?,
                page_size,
                continuation: request.last_instance_key.filter(|c| !c.is_empty()),
                ..InstanceQuery::default()
            })
            .await
            .map_err(status_of)?;
        // Completion-time bounds apply to finished instances only.
        let in_range = |s: &basalt_runtime::InstanceState| {
            if from.is_none() && to.is_none() {
                return true;
            }
            s.status.is_terminal()
                && from.is_none_or(|f| s.last_updated_at_ms >= f)
                && to.is_none_or(|t| s.last_updated_at_ms < t)
        };
        Ok(Response::new(proto::ListInstanceIdsResponse {
            instance_ids: page
                .instances
                .iter()
                .filter(|s| in_range(s))
                .map(|s| s.instance_id.to_string())
                .collect(),
            last_instance_key: page.continuation,
        }))
    }

    async fn purge_instances(
        &self,
        request: Request<proto::PurgeInstancesRequest>,
    ) -> Result<Response<proto::PurgeInstancesResponse>, Status> {
        use proto::purge_instances_request::Request as R;
        let request = request.into_inner();
        let recursive = request.recursive;
        let (deleted, complete) = match request.request {
            Some(R::InstanceId(id)) => (self.purge_one(&id, recursive).await?, true),
            Some(R::PurgeInstanceFilter(filter)) => self.purge_matching(&filter).await?,
            Some(R::InstanceBatch(batch)) => {
                let mut deleted = 0;
                for id in &batch.instance_ids {
                    deleted += self.purge_one(id, recursive).await?;
                }
                (deleted, true)
            }
            None => {
                return Err(Status::invalid_argument(
                    "one of instanceId, purgeInstanceFilter or instanceBatch is required",
                ));
            }
        };
        Ok(Response::new(proto::PurgeInstancesResponse {
            deleted_instance_count: deleted,
            is_complete: Some(complete),
        }))
    }

    type GetWorkItemsStream = WorkItemStream;

    async fn get_work_items(
        &self,
        request: Request<proto::GetWorkItemsRequest>,
    ) -> Result<Response<Self::GetWorkItemsStream>, Status> {
        let request = request.into_inner();
        let caps = self.options.per_stream_max;
        let limits = [
            limit(request.max_concurrent_orchestration_work_items, caps[0]),
            limit(request.max_concurrent_activity_work_items, caps[1]),
            limit(request.max_concurrent_entity_work_items, caps[2]),
        ];
        let streams_history = request
            .capabilities
            .contains(&(proto::WorkerCapability::HistoryStreaming as i32));
        let connection = self.dispatcher.connect(filters_of(&request), limits);
        tracing::info!(
            stream = connection.id,
            ?limits,
            streams_history,
            "worker connected"
        );
        let sidecar = Arc::clone(self);
        let stream = UnboundedReceiverStream::new(connection.messages)
            .map(move |message| Ok(sidecar.work_item(message, streams_history)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn complete_activity_task(
        &self,
        request: Request<proto::ActivityResponse>,
    ) -> Result<Response<proto::CompleteTaskResponse>, Status> {
        let response = request.into_inner();
        let token = token(&response.completion_token)?;
        let outcome = self
            .backend
            .complete_activity_work_item(&token, convert::activity_outcome(&response))
            .await;
        let outcome = match outcome {
            // A result the engine refuses (e.g. over the payload limit)
            // fails the activity instead, so the orchestration hears of it.
            Err(RuntimeError::InvalidInput(message)) => {
                let failure = basalt_runtime::FailureDetails {
                    error_type: "ResultRejected".into(),
                    message: message.clone(),
                    is_non_retriable: true,
                    ..Default::default()
                };
                self.backend
                    .complete_activity_work_item(&token, ActivityOutcome::Failed(failure))
                    .await
                    .and(Err(RuntimeError::InvalidInput(message)))
            }
            other => other,
        };
        self.settle(&token, &outcome);
        outcome.map_err(status_of)?;
        Ok(Response::new(proto::CompleteTaskResponse {}))
    }

    async fn complete_orchestrator_task(
        &self,
        request: Request<proto::OrchestratorResponse>,
    ) -> Result<Response<proto::CompleteTaskResponse>, Status> {
        self.complete_orchestration(request.into_inner()).await?;
        Ok(Response::new(proto::CompleteTaskResponse {}))
    }

    async fn complete_entity_task(
        &self,
        request: Request<proto::EntityBatchResult>,
    ) -> Result<Response<proto::CompleteTaskResponse>, Status> {
        let result = request.into_inner();
        let token = token(&result.completion_token)?;
        let Some(item) = self.dispatcher.entity_item(&token) else {
            return Err(Status::failed_precondition(format!(
                "stale completion token {}: the entity batch was already completed or \
                 reassigned",
                token.0
            )));
        };
        let converted = convert::entity_result_from_proto(
            &result,
            item.state.clone(),
            item.operations,
            now_ms(),
        );
        let (batch, refusal) = match converted {
            Ok(batch) => (batch, None),
            Err(error) => (
                self.failed_batch(&item, &error.to_string()),
                Some(invalid(error)),
            ),
        };
        let mut outcome = self.backend.complete_entity_work_item(&token, batch).await;
        if let Err(RuntimeError::InvalidInput(message)) = &outcome {
            // The state or an output is over a limit: every operation
            // fails and the state stays as it was.
            let message = message.clone();
            outcome = self
                .backend
                .complete_entity_work_item(&token, self.failed_batch(&item, &message))
                .await
                .and(Err(RuntimeError::InvalidInput(message)));
        }
        self.settle(&token, &outcome);
        outcome.map_err(status_of)?;
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        Ok(Response::new(proto::CompleteTaskResponse {}))
    }

    type StreamInstanceHistoryStream = HistoryStream;

    async fn stream_instance_history(
        &self,
        request: Request<proto::StreamInstanceHistoryRequest>,
    ) -> Result<Response<Self::StreamInstanceHistoryStream>, Status> {
        let request = request.into_inner();
        let id = instance_id("instanceId", &request.instance_id)?;
        if self
            .backend
            .get_instance(&id)
            .await
            .map_err(status_of)?
            .is_none()
        {
            return Err(Status::not_found(format!("instance {id} not found")));
        }
        // A named generation stamps its ExecutionStarted as the work
        // items of that generation are; an executionId that is not one of
        // this instance's is refused.
        let execution = match request.execution_id.as_deref().filter(|e| !e.is_empty()) {
            None => None,
            Some(wire) => Some(convert::execution_of(id.as_str(), wire).ok_or_else(|| {
                Status::not_found(format!("instance {id} has no execution {wire}"))
            })?),
        };
        let mut converter = match execution {
            Some(execution) => WireConverter::new(id.as_str(), execution),
            None => WireConverter::unstamped(id.as_str()),
        };
        // For a step handed out without its past: exactly that past,
        // stamped with its generation as the inline history would be.
        let past_events = if request.for_work_item_processing {
            let streamed = self.streamed_steps.lock().get(id.as_str()).cloned();
            match streamed {
                Some(step) if execution.is_none_or(|e| e == step.execution) => {
                    converter = WireConverter::new(id.as_str(), step.execution);
                    Some(step.past_events)
                }
                _ => {
                    return Err(Status::failed_precondition(format!(
                        "no step of {id}{} is waiting for its history (abandon the work item; it comes again)",
                        request
                            .execution_id
                            .as_deref()
                            .map(|e| format!(" (execution {e})"))
                            .unwrap_or_default()
                    )));
                }
            }
        } else {
            None
        };
        // Converted a chunk at a time as the client reads: no one huge
        // message, and memory for one chunk of wire events.
        let mut events = self
            .backend
            .get_history(&id)
            .await
            .map_err(status_of)?
            .into_iter()
            .take(past_events.unwrap_or(usize::MAX));
        let chunks = std::iter::from_fn(move || {
            let mut chunk = Vec::with_capacity(HISTORY_CHUNK_EVENTS);
            for event in events.by_ref() {
                chunk.extend(converter.convert(&event));
                if chunk.len() == HISTORY_CHUNK_EVENTS {
                    break;
                }
            }
            // Empty only once every event is out.
            (!chunk.is_empty()).then_some(chunk)
        })
        .map(|events| Ok(proto::HistoryChunk { events }));
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn create_task_hub(
        &self,
        _: Request<proto::CreateTaskHubRequest>,
    ) -> Result<Response<proto::CreateTaskHubResponse>, Status> {
        // The server opened (or created) its task hub when it started.
        Ok(Response::new(proto::CreateTaskHubResponse {}))
    }

    async fn delete_task_hub(
        &self,
        _: Request<proto::DeleteTaskHubRequest>,
    ) -> Result<Response<proto::DeleteTaskHubResponse>, Status> {
        Err(Status::unimplemented(
            "DeleteTaskHub is not offered over the wire; stop the server and remove its data \
             directory",
        ))
    }

    async fn signal_entity(
        &self,
        request: Request<proto::SignalEntityRequest>,
    ) -> Result<Response<proto::SignalEntityResponse>, Status> {
        let request = request.into_inner();
        convert::check_new_id("instanceId", &request.instance_id).map_err(invalid)?;
        let entity = entity_id(&request.instance_id)?;
        if request.name.is_empty() {
            return Err(Status::invalid_argument("name (the operation) is required"));
        }
        self.backend
            .signal_entity(
                &entity,
                EntityOperation {
                    name: request.name,
                    input: request.input,
                },
                request
                    .scheduled_time
                    .as_ref()
                    .map(convert::millis)
                    .filter(|at| *at > now_ms()),
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::SignalEntityResponse {}))
    }

    async fn get_entity(
        &self,
        request: Request<proto::GetEntityRequest>,
    ) -> Result<Response<proto::GetEntityResponse>, Status> {
        let request = request.into_inner();
        let entity = entity_id(&request.instance_id)?;
        let state = self.backend.get_entity(&entity).await.map_err(status_of)?;
        Ok(Response::new(proto::GetEntityResponse {
            exists: state.is_some(),
            entity: state
                .as_ref()
                .map(|s| convert::entity_metadata(s, request.include_state)),
        }))
    }

    async fn query_entities(
        &self,
        request: Request<proto::QueryEntitiesRequest>,
    ) -> Result<Response<proto::QueryEntitiesResponse>, Status> {
        let query = request.into_inner().query.unwrap_or_default();
        let prefix = query.instance_id_starts_with.clone().unwrap_or_default();
        // "@name@keyprefix" narrows by name in the engine; any other prefix
        // is applied here.
        let (name, key_prefix) = match prefix.strip_prefix('@').and_then(|r| r.split_once('@')) {
            Some((name, key)) if !name.is_empty() => (
                Some(name.to_owned()),
                (!key.is_empty()).then(|| key.to_owned()),
            ),
            _ => (None, None),
        };
        let from = query.last_modified_from.as_ref().map(convert::millis);
        let to = query.last_modified_to.as_ref().map(convert::millis);
        let page = self
            .backend
            .query_entities(&EntityQuery {
                name,
                key_prefix,
                include_state: query.include_state,
                page_size: query.page_size.map_or(100, |n| n.clamp(1, 1000) as usize),
                continuation: query.continuation_token.filter(|c| !c.is_empty()),
            })
            .await
            .map_err(status_of)?;
        // Entity names are stored lower-case, keys as given: compare the
        // prefix in that form ("@Counter@K" finds "@counter@K1").
        let normalized = match prefix.strip_prefix('@') {
            Some(rest) => match rest.split_once('@') {
                Some((name, key)) => format!("@{}@{key}", name.to_lowercase()),
                None => format!("@{}", rest.to_lowercase()),
            },
            None => prefix.clone(),
        };
        Ok(Response::new(proto::QueryEntitiesResponse {
            entities: page
                .entities
                .iter()
                .filter(|e| {
                    let id = e.entity.to_string();
                    id.starts_with(&normalized)
                        && from.is_none_or(|f| e.last_modified_ms >= f)
                        && to.is_none_or(|t| e.last_modified_ms < t)
                        && (query.include_transient || e.state.is_some() || !query.include_state)
                })
                .map(|e| convert::entity_metadata(e, query.include_state))
                .collect(),
            continuation_token: page.continuation,
        }))
    }

    async fn clean_entity_storage(
        &self,
        _: Request<proto::CleanEntityStorageRequest>,
    ) -> Result<Response<proto::CleanEntityStorageResponse>, Status> {
        // Nothing to clean: the engine drops an entity when its state is
        // deleted and its queue is empty, and releases a lock when its
        // owner finishes (see docs/entities.md).
        Ok(Response::new(proto::CleanEntityStorageResponse {
            continuation_token: None,
            empty_entities_removed: 0,
            orphaned_locks_released: 0,
        }))
    }

    async fn abandon_task_activity_work_item(
        &self,
        request: Request<proto::AbandonActivityTaskRequest>,
    ) -> Result<Response<proto::AbandonActivityTaskResponse>, Status> {
        let token = token(&request.into_inner().completion_token)?;
        // Forget the item before the engine offers it again (activities
        // keep their token when re-offered).
        self.dispatcher.finish(&token);
        self.backend
            .abandon_activity_work_item(&token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::AbandonActivityTaskResponse {}))
    }

    async fn abandon_task_orchestrator_work_item(
        &self,
        request: Request<proto::AbandonOrchestrationTaskRequest>,
    ) -> Result<Response<proto::AbandonOrchestrationTaskResponse>, Status> {
        let token = token(&request.into_inner().completion_token)?;
        self.dispatcher.finish(&token);
        // A streamed step given back is out no more (abandons are rare:
        // a scan is fine).
        self.streamed_steps
            .lock()
            .retain(|_, step| step.token != token.0);
        self.backend
            .abandon_orchestration_work_item(&token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::AbandonOrchestrationTaskResponse {}))
    }

    async fn abandon_task_entity_work_item(
        &self,
        request: Request<proto::AbandonEntityTaskRequest>,
    ) -> Result<Response<proto::AbandonEntityTaskResponse>, Status> {
        let token = token(&request.into_inner().completion_token)?;
        self.dispatcher.finish(&token);
        self.backend
            .abandon_entity_work_item(&token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(proto::AbandonEntityTaskResponse {}))
    }

    /// Basalt's termination is already immediate (the partition marks the
    /// instance terminated and releases its entity locks in one event), so
    /// this is termination of a batch, reporting the ids it did not end.
    async fn skip_graceful_orchestration_terminations(
        &self,
        request: Request<proto::SkipGracefulOrchestrationTerminationsRequest>,
    ) -> Result<Response<proto::SkipGracefulOrchestrationTerminationsResponse>, Status> {
        let request = request.into_inner();
        let ids = request
            .instance_batch
            .map(|batch| batch.instance_ids)
            .unwrap_or_default();
        if ids.len() > TERMINATIONS_PER_CALL_MAX {
            return Err(Status::invalid_argument(format!(
                "instanceBatch holds {} ids; at most {TERMINATIONS_PER_CALL_MAX} at a time",
                ids.len()
            )));
        }
        let mut unterminated = Vec::new();
        for raw in ids {
            // Not an instance id (or an entity's, which is no
            // orchestration): nothing to terminate.
            let Ok(id) = InstanceId::new(raw.as_str()) else {
                unterminated.push(raw);
                continue;
            };
            let running = matches!(
                self.backend.get_instance(&id).await.map_err(status_of)?,
                Some(state) if !state.status.is_terminal()
            );
            if !running {
                unterminated.push(raw);
                continue;
            }
            match self.backend.terminate(&id, request.reason.clone()).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(error) => return Err(status_of(error)),
            }
            // It may have finished on its own (or been purged) meanwhile.
            let terminated = matches!(
                self.backend.get_instance(&id).await.map_err(status_of)?,
                Some(state) if state.status == basalt_runtime::OrchestrationStatus::Terminated
            );
            if !terminated {
                unterminated.push(raw);
            }
        }
        Ok(Response::new(
            proto::SkipGracefulOrchestrationTerminationsResponse {
                unterminated_instance_ids: unterminated,
            },
        ))
    }
}
