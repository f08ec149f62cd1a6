//! Every RPC of the sidecar through a tonic client against an in-process
//! server on in-memory storage: the happy paths, bad input, stale tokens,
//! a worker stream dropped mid-work, work-item filters and health pings.

use std::time::Duration;

use basalt_server::config::{EntityFormat, ServeOptions, StorageChoice};
use basalt_server::convert::timestamp;
use basalt_server::proto;
use basalt_server::proto::history_event::EventType;
use basalt_server::proto::orchestrator_action::OrchestratorActionType;
use basalt_server::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use basalt_server::proto::work_item::Request as WorkRequest;
use basalt_server::server::{self, ServerHandle};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

type Client = TaskHubSidecarServiceClient<Channel>;

async fn serve(entity_format: EntityFormat, ping_ms: u64) -> (ServerHandle, Client) {
    serve_with(ServeOptions {
        partitions: 4,
        health_ping_interval: Duration::from_millis(ping_ms),
        entity_format,
        ..ServeOptions::default()
    })
    .await
}

/// A server in memory on a free port with `options`, and a client of it.
async fn serve_with(options: ServeOptions) -> (ServerHandle, Client) {
    let handle = server::start(ServeOptions {
        storage: StorageChoice::Memory,
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: None,
        ..options
    })
    .await
    .expect("server starts");
    let client = TaskHubSidecarServiceClient::connect(format!("http://{}", handle.grpc_addr()))
        .await
        .expect("connect");
    (handle, client)
}

async fn start(client: &mut Client, name: &str, id: &str, input: Option<&str>) -> String {
    client
        .start_instance(proto::CreateInstanceRequest {
            instance_id: id.into(),
            name: name.into(),
            input: input.map(str::to_owned),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .instance_id
}

async fn work_stream(
    client: &mut Client,
    request: proto::GetWorkItemsRequest,
) -> Streaming<proto::WorkItem> {
    client
        .get_work_items(request)
        .await
        .expect("GetWorkItems")
        .into_inner()
}

/// The next item that is not a health ping, within 10 s.
async fn next_work(stream: &mut Streaming<proto::WorkItem>) -> proto::WorkItem {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a work item within 10 s")
            .expect("stream ok")
            .expect("stream open");
        if !matches!(item.request, Some(WorkRequest::HealthPing(_))) {
            return item;
        }
    }
}

fn action(id: i32, kind: OrchestratorActionType) -> proto::OrchestratorAction {
    proto::OrchestratorAction {
        id,
        orchestrator_action_type: Some(kind),
    }
}

fn complete_action(result: &str) -> OrchestratorActionType {
    OrchestratorActionType::CompleteOrchestration(proto::CompleteOrchestrationAction {
        orchestration_status: proto::OrchestrationStatus::Completed as i32,
        result: Some(result.into()),
        ..Default::default()
    })
}

fn schedule(name: &str, input: &str) -> OrchestratorActionType {
    OrchestratorActionType::ScheduleTask(proto::ScheduleTaskAction {
        name: name.into(),
        input: Some(input.into()),
        ..Default::default()
    })
}

async fn respond(
    client: &mut Client,
    item: &proto::WorkItem,
    actions: Vec<proto::OrchestratorAction>,
) -> Result<(), tonic::Status> {
    let Some(WorkRequest::OrchestratorRequest(request)) = &item.request else {
        panic!("not an orchestrator request: {item:?}");
    };
    client
        .complete_orchestrator_task(proto::OrchestratorResponse {
            instance_id: request.head.instance_id.clone(),
            actions,
            completion_token: item.completion_token.clone(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn wait_done(client: &mut Client, id: &str) -> proto::OrchestrationState {
    client
        .wait_for_instance_completion(proto::GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: true,
        })
        .await
        .expect("wait")
        .into_inner()
        .orchestration_state
        .expect("state")
}

fn all_work() -> proto::GetWorkItemsRequest {
    proto::GetWorkItemsRequest {
        max_concurrent_orchestration_work_items: 10,
        max_concurrent_activity_work_items: 10,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_worker_runs_an_orchestration_step_by_step_over_the_stream() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    client.hello(()).await.expect("hello");
    let mut stream = work_stream(&mut client, all_work()).await;
    let id = start(&mut client, "greet", "o1", Some("\"Ada\"")).await;
    assert_eq!(id, "o1");

    let first = next_work(&mut stream).await;
    let Some(WorkRequest::OrchestratorRequest(request)) = &first.request else {
        panic!("{first:?}");
    };
    assert!(request.past_events.is_empty());
    assert!(matches!(
        request.head.new_events[0].event_type,
        Some(EventType::OrchestratorStarted(_))
    ));
    let Some(EventType::ExecutionStarted(started)) = &request.head.new_events[1].event_type else {
        panic!("{:?}", request.head.new_events);
    };
    assert_eq!(started.name, "greet");
    assert_eq!(started.input.as_deref(), Some("\"Ada\""));
    assert_eq!(
        started
            .orchestration_instance
            .as_ref()
            .map(|i| i.instance_id.as_str()),
        Some("o1")
    );
    // The generation's execution id, on the request and its ExecutionStarted.
    let execution_id = request.head.execution_id.clone().expect("an execution id");
    assert_eq!(execution_id.len(), 32, "{execution_id}");
    assert!(execution_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        started
            .orchestration_instance
            .as_ref()
            .and_then(|i| i.execution_id.as_deref()),
        Some(execution_id.as_str())
    );
    respond(
        &mut client,
        &first,
        vec![action(1, schedule("hello", "\"Ada\""))],
    )
    .await
    .expect("complete step 1");
    // The same token again is stale.
    let again = respond(&mut client, &first, vec![])
        .await
        .expect_err("stale");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again}");

    let activity = next_work(&mut stream).await;
    let Some(WorkRequest::ActivityRequest(task)) = &activity.request else {
        panic!("{activity:?}");
    };
    assert_eq!((task.name.as_str(), task.task_id), ("hello", 1));
    client
        .complete_activity_task(proto::ActivityResponse {
            instance_id: "o1".into(),
            task_id: 1,
            result: Some("\"Hello Ada\"".into()),
            completion_token: activity.completion_token.clone(),
            ..Default::default()
        })
        .await
        .expect("complete activity");

    let second = next_work(&mut stream).await;
    let Some(WorkRequest::OrchestratorRequest(request)) = &second.request else {
        panic!("{second:?}");
    };
    // The same generation keeps its execution id.
    assert_eq!(
        request.head.execution_id.as_deref(),
        Some(execution_id.as_str())
    );
    // History so far: the first step's events and the confirmation.
    assert!(request.past_events.decoded().iter().any(|e| e.event_id == 1
        && matches!(&e.event_type, Some(EventType::TaskScheduled(t)) if t.name == "hello")));
    assert!(request.head.new_events.iter().any(|e| matches!(
        &e.event_type,
        Some(EventType::TaskCompleted(c)) if c.task_scheduled_id == 1
            && c.result.as_deref() == Some("\"Hello Ada\"")
    )));
    client
        .complete_orchestrator_task(proto::OrchestratorResponse {
            instance_id: "o1".into(),
            actions: vec![action(2, complete_action("\"done\""))],
            custom_status: Some("\"finishing\"".into()),
            completion_token: second.completion_token.clone(),
            ..Default::default()
        })
        .await
        .expect("complete step 2");
    let state = wait_done(&mut client, "o1").await;
    assert_eq!(
        state.orchestration_status,
        proto::OrchestrationStatus::Completed as i32
    );
    assert_eq!(state.output.as_deref(), Some("\"done\""));
    assert_eq!(state.custom_status.as_deref(), Some("\"finishing\""));
    assert_eq!(state.input.as_deref(), Some("\"Ada\""));

    // StreamInstanceHistory returns the whole history.
    let mut history = client
        .stream_instance_history(proto::StreamInstanceHistoryRequest {
            instance_id: "o1".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let mut events = Vec::new();
    while let Some(chunk) = history.message().await.expect("chunk") {
        events.extend(chunk.events);
    }
    // The Scheduler's sequence: no OrchestratorCompleted markers; the
    // start numbered 0 and the end with the completing action's id.
    let ids: Vec<i32> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [-1, 0, 1, -1, -1, 2]);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match &e.event_type {
            Some(EventType::OrchestratorStarted(_)) => "OrchestratorStarted",
            Some(EventType::ExecutionStarted(_)) => "ExecutionStarted",
            Some(EventType::TaskScheduled(_)) => "TaskScheduled",
            Some(EventType::TaskCompleted(_)) => "TaskCompleted",
            Some(EventType::ExecutionCompleted(_)) => "ExecutionCompleted",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "OrchestratorStarted",
            "ExecutionStarted",
            "TaskScheduled",
            "OrchestratorStarted",
            "TaskCompleted",
            "ExecutionCompleted"
        ]
    );
    handle.stop().await;
}

#[tokio::test]
async fn each_generation_has_its_own_execution_id() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    let mut stream = work_stream(&mut client, all_work()).await;
    let mut seen = Vec::new();
    for id in ["g1", "g2"] {
        start(&mut client, "loop", id, Some("0")).await;
        let first = next_work(&mut stream).await;
        let Some(WorkRequest::OrchestratorRequest(request)) = &first.request else {
            panic!("{first:?}");
        };
        seen.push(request.head.execution_id.clone().expect("execution id"));
        let continued =
            OrchestratorActionType::CompleteOrchestration(proto::CompleteOrchestrationAction {
                orchestration_status: proto::OrchestrationStatus::ContinuedAsNew as i32,
                result: Some("1".into()),
                ..Default::default()
            });
        respond(&mut client, &first, vec![action(0, continued)])
            .await
            .expect("continue as new");
        let second = next_work(&mut stream).await;
        let Some(WorkRequest::OrchestratorRequest(request)) = &second.request else {
            panic!("{second:?}");
        };
        seen.push(request.head.execution_id.clone().expect("execution id"));
        respond(&mut client, &second, vec![action(0, complete_action("1"))])
            .await
            .expect("complete");
    }
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 4, "{seen:?}");
    handle.stop().await;
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_or_not_found_and_the_server_keeps_serving() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    let empty_name = client
        .start_instance(proto::CreateInstanceRequest::default())
        .await
        .expect_err("no name");
    assert_eq!(empty_name.code(), Code::InvalidArgument);
    assert!(
        empty_name.message().contains("name"),
        "{}",
        empty_name.message()
    );
    let long_id = client
        .start_instance(proto::CreateInstanceRequest {
            instance_id: "x".repeat(300),
            name: "o".into(),
            ..Default::default()
        })
        .await
        .expect_err("long id");
    assert_eq!(long_id.code(), Code::InvalidArgument);
    let unknown = client
        .raise_event(proto::RaiseEventRequest {
            instance_id: "nobody".into(),
            name: "e".into(),
            input: None,
        })
        .await
        .expect_err("unknown instance");
    assert_eq!(unknown.code(), Code::NotFound);
    for result in [
        client
            .suspend_instance(proto::SuspendRequest {
                instance_id: "nobody".into(),
                reason: None,
            })
            .await
            .map(|_| ()),
        client
            .terminate_instance(proto::TerminateRequest {
                instance_id: "nobody".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ] {
        assert_eq!(result.expect_err("unknown").code(), Code::NotFound);
    }
    let missing = client
        .get_instance(proto::GetInstanceRequest {
            instance_id: "nobody".into(),
            get_inputs_and_outputs: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!missing.exists);
    let bad_entity = client
        .get_entity(proto::GetEntityRequest {
            instance_id: "not-an-entity".into(),
            include_state: true,
        })
        .await
        .expect_err("bad entity id");
    assert_eq!(bad_entity.code(), Code::InvalidArgument);
    let no_token = client
        .complete_activity_task(proto::ActivityResponse::default())
        .await
        .expect_err("no token");
    assert_eq!(no_token.code(), Code::InvalidArgument);
    let garbage_token = client
        .abandon_task_orchestrator_work_item(proto::AbandonOrchestrationTaskRequest {
            completion_token: "garbage".into(),
        })
        .await
        .expect_err("malformed token");
    assert_eq!(garbage_token.code(), Code::InvalidArgument);
    let purge_nothing = client
        .purge_instances(proto::PurgeInstancesRequest::default())
        .await
        .expect_err("no purge target");
    assert_eq!(purge_nothing.code(), Code::InvalidArgument);
    let rewind = client
        .rewind_instance(proto::RewindInstanceRequest {
            instance_id: "x".into(),
            reason: None,
        })
        .await
        .expect_err("rewind of an unknown instance");
    assert_eq!(rewind.code(), Code::NotFound);
    client.hello(()).await.expect("still serving");

    // A step whose action has no type is refused, and the orchestration
    // fails saying why (rather than waiting forever for a proper answer).
    let mut stream = work_stream(&mut client, all_work()).await;
    start(&mut client, "o", "bad-step", None).await;
    let item = next_work(&mut stream).await;
    let refused = respond(
        &mut client,
        &item,
        vec![proto::OrchestratorAction {
            id: 1,
            orchestrator_action_type: None,
        }],
    )
    .await
    .expect_err("typeless action");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("no type"),
        "{}",
        refused.message()
    );
    let state = wait_done(&mut client, "bad-step").await;
    assert_eq!(
        state.orchestration_status,
        proto::OrchestrationStatus::Failed as i32
    );
    let failure = state.failure_details.expect("failure details");
    assert_eq!(failure.error_type, "InvalidWorkerResponse");
    let late = respond(&mut client, &item, vec![action(1, complete_action("1"))])
        .await
        .expect_err("the item was settled");
    assert_eq!(late.code(), Code::FailedPrecondition);
    // A batch result with the wrong number of results is refused too, and
    // every operation of the batch fails, leaving the state as it was.
    client
        .signal_entity(proto::SignalEntityRequest {
            instance_id: "@counter@bad".into(),
            name: "add".into(),
            input: Some("1".into()),
            ..Default::default()
        })
        .await
        .expect("signal");
    let batch = next_work(&mut stream).await;
    let wrong = client
        .complete_entity_task(proto::EntityBatchResult {
            results: Vec::new(),
            entity_state: Some("99".into()),
            completion_token: batch.completion_token.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no results for one operation");
    assert_eq!(wrong.code(), Code::InvalidArgument);
    let entity = client
        .get_entity(proto::GetEntityRequest {
            instance_id: "@counter@bad".into(),
            include_state: true,
        })
        .await
        .expect("get entity")
        .into_inner();
    assert!(!entity.exists, "the state was not changed: {entity:?}");
    handle.stop().await;
}

#[tokio::test]
async fn work_held_by_a_dropped_stream_is_dispatched_again_and_completes_once() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    let mut first = work_stream(&mut client, all_work()).await;
    start(&mut client, "o", "drop", None).await;
    let step = next_work(&mut first).await;
    respond(&mut client, &step, vec![action(1, schedule("act", "7"))])
        .await
        .expect("step");
    let activity = next_work(&mut first).await;
    assert!(matches!(
        activity.request,
        Some(WorkRequest::ActivityRequest(_))
    ));
    drop(first); // the worker dies holding the activity

    let mut second = work_stream(&mut client, all_work()).await;
    let again = next_work(&mut second).await;
    let Some(WorkRequest::ActivityRequest(task)) = &again.request else {
        panic!("{again:?}");
    };
    assert_eq!(task.task_id, 1, "the same activity, dispatched again");
    for (token, result) in [
        (&again.completion_token, "\"second\""),
        (&activity.completion_token, "\"first\""),
    ] {
        // The dead worker's late completion must not apply twice.
        let _ = client
            .complete_activity_task(proto::ActivityResponse {
                instance_id: "drop".into(),
                task_id: 1,
                result: Some(result.into()),
                completion_token: token.clone(),
                ..Default::default()
            })
            .await;
    }
    let step = next_work(&mut second).await;
    let Some(WorkRequest::OrchestratorRequest(request)) = &step.request else {
        panic!("{step:?}");
    };
    let completions: Vec<_> = request
        .head
        .new_events
        .iter()
        .filter(|e| matches!(e.event_type, Some(EventType::TaskCompleted(_))))
        .collect();
    assert_eq!(completions.len(), 1, "{:?}", request.head.new_events);
    respond(
        &mut client,
        &step,
        vec![action(2, complete_action("\"ok\""))],
    )
    .await
    .expect("final step");
    wait_done(&mut client, "drop").await;
    // No further step: the second completion did not add an event.
    let history = client
        .stream_instance_history(proto::StreamInstanceHistoryRequest {
            instance_id: "drop".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .message()
        .await
        .expect("chunk")
        .expect("one chunk");
    let completed = history
        .events
        .iter()
        .filter(|e| matches!(e.event_type, Some(EventType::TaskCompleted(_))))
        .count();
    assert_eq!(completed, 1);
    handle.stop().await;
}

#[tokio::test]
async fn work_no_connected_worker_accepts_stays_pending_until_one_does() {
    let (handle, mut client) = serve(EntityFormat::V1, 50).await;
    let only_other = proto::GetWorkItemsRequest {
        work_item_filters: Some(proto::WorkItemFilters {
            orchestrations: vec![proto::OrchestrationFilter {
                name: "other".into(),
                versions: vec![],
            }],
            ..Default::default()
        }),
        ..all_work()
    };
    let mut picky = work_stream(&mut client, only_other).await;
    start(&mut client, "mine", "filtered", None).await;
    // Only health pings arrive on the picky stream (50 ms apart).
    for _ in 0..5 {
        let item = tokio::time::timeout(Duration::from_secs(5), picky.message())
            .await
            .expect("a ping")
            .expect("ok")
            .expect("open");
        assert!(
            matches!(item.request, Some(WorkRequest::HealthPing(_))),
            "{item:?}"
        );
    }
    let takes_mine = proto::GetWorkItemsRequest {
        work_item_filters: Some(proto::WorkItemFilters {
            orchestrations: vec![proto::OrchestrationFilter {
                name: "mine".into(),
                versions: vec![],
            }],
            ..Default::default()
        }),
        ..all_work()
    };
    let mut willing = work_stream(&mut client, takes_mine).await;
    let item = next_work(&mut willing).await;
    respond(&mut client, &item, vec![action(1, complete_action("3"))])
        .await
        .expect("complete");
    assert_eq!(
        wait_done(&mut client, "filtered").await.output.as_deref(),
        Some("3")
    );
    handle.stop().await;
}

#[tokio::test]
async fn management_rpcs_query_list_purge_restart_and_suspend() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    let mut stream = work_stream(&mut client, all_work()).await;
    for i in 0..5 {
        start(&mut client, "o", &format!("q-{i}"), Some("1")).await;
    }
    for _ in 0..5 {
        let item = next_work(&mut stream).await;
        respond(&mut client, &item, vec![action(1, complete_action("2"))])
            .await
            .expect("done");
    }
    for i in 0..5 {
        wait_done(&mut client, &format!("q-{i}")).await;
    }
    // Paged query.
    let mut seen = Vec::new();
    let mut continuation = None;
    loop {
        let page = client
            .query_instances(proto::QueryInstancesRequest {
                query: Some(proto::InstanceQuery {
                    max_instance_count: 2,
                    continuation_token: continuation.take(),
                    instance_id_prefix: Some("q-".into()),
                    fetch_inputs_and_outputs: true,
                    ..Default::default()
                }),
            })
            .await
            .expect("query")
            .into_inner();
        assert!(page.orchestration_state.len() <= 2);
        seen.extend(
            page.orchestration_state
                .into_iter()
                .map(|s| (s.instance_id, s.output)),
        );
        match page.continuation_token {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter()
            .all(|(_, output)| output.as_deref() == Some("2"))
    );
    let ids = client
        .list_instance_ids(proto::ListInstanceIdsRequest {
            runtime_status: vec![proto::OrchestrationStatus::Completed as i32],
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list ids")
        .into_inner();
    assert_eq!(ids.instance_ids.len(), 5);

    // Restart a finished instance under the same id and under a new one.
    let same = client
        .restart_instance(proto::RestartInstanceRequest {
            instance_id: "q-0".into(),
            restart_with_new_instance_id: false,
        })
        .await
        .expect("restart")
        .into_inner();
    assert_eq!(same.instance_id, "q-0");
    let item = next_work(&mut stream).await;
    respond(&mut client, &item, vec![action(1, complete_action("3"))])
        .await
        .expect("done");
    assert_eq!(
        wait_done(&mut client, "q-0").await.output.as_deref(),
        Some("3")
    );
    let fresh = client
        .restart_instance(proto::RestartInstanceRequest {
            instance_id: "q-1".into(),
            restart_with_new_instance_id: true,
        })
        .await
        .expect("restart new id")
        .into_inner();
    assert_ne!(fresh.instance_id, "q-1");

    // Suspend / resume / terminate a running one.
    let item = next_work(&mut stream).await; // the fresh restart's first step
    respond(&mut client, &item, vec![]).await.expect("waits");
    let running = fresh.instance_id.clone();
    client
        .suspend_instance(proto::SuspendRequest {
            instance_id: running.clone(),
            reason: Some("pause".into()),
        })
        .await
        .expect("suspend");
    let state = client
        .get_instance(proto::GetInstanceRequest {
            instance_id: running.clone(),
            get_inputs_and_outputs: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        state
            .orchestration_state
            .expect("state")
            .orchestration_status,
        proto::OrchestrationStatus::Suspended as i32
    );
    let restart_running = client
        .restart_instance(proto::RestartInstanceRequest {
            instance_id: running.clone(),
            restart_with_new_instance_id: false,
        })
        .await
        .expect_err("restart of a running instance");
    assert_eq!(restart_running.code(), Code::FailedPrecondition);
    // Under a new id a running instance starts again (as in the Durable
    // Task Scheduler); the running one goes on.
    let again = client
        .restart_instance(proto::RestartInstanceRequest {
            instance_id: running.clone(),
            restart_with_new_instance_id: true,
        })
        .await
        .expect("restart of a running instance under a new id")
        .into_inner()
        .instance_id;
    assert_ne!(again, running);
    client
        .resume_instance(proto::ResumeRequest {
            instance_id: running.clone(),
            reason: None,
        })
        .await
        .expect("resume");
    client
        .terminate_instance(proto::TerminateRequest {
            instance_id: running.clone(),
            output: Some("\"bye\"".into()),
            recursive: false,
        })
        .await
        .expect("terminate");
    let state = wait_done(&mut client, &running).await;
    assert_eq!(
        state.orchestration_status,
        proto::OrchestrationStatus::Terminated as i32
    );

    // Purge: by id, by batch, by filter.
    let by_id = client
        .purge_instances(proto::PurgeInstancesRequest {
            request: Some(proto::purge_instances_request::Request::InstanceId(
                "q-0".into(),
            )),
            ..Default::default()
        })
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(by_id.deleted_instance_count, 1);
    let by_batch = client
        .purge_instances(proto::PurgeInstancesRequest {
            request: Some(proto::purge_instances_request::Request::InstanceBatch(
                proto::InstanceBatch {
                    instance_ids: vec!["q-1".into(), "q-2".into(), "nobody".into()],
                },
            )),
            ..Default::default()
        })
        .await
        .expect("purge batch")
        .into_inner();
    assert_eq!(by_batch.deleted_instance_count, 2);
    let by_filter = client
        .purge_instances(proto::PurgeInstancesRequest {
            request: Some(
                proto::purge_instances_request::Request::PurgeInstanceFilter(
                    proto::PurgeInstanceFilter {
                        runtime_status: vec![
                            proto::OrchestrationStatus::Completed as i32,
                            proto::OrchestrationStatus::Terminated as i32,
                        ],
                        created_time_from: Some(timestamp(0)),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        })
        .await
        .expect("purge filter")
        .into_inner();
    assert_eq!(
        by_filter.deleted_instance_count, 3,
        "q-3, q-4 and the terminated one"
    );
    client
        .create_task_hub(proto::CreateTaskHubRequest::default())
        .await
        .expect("create hub is a no-op");
    assert_eq!(
        client
            .delete_task_hub(proto::DeleteTaskHubRequest {})
            .await
            .expect_err("delete hub")
            .code(),
        Code::Unimplemented
    );
    handle.stop().await;
}

async fn entity_round_trip(format: EntityFormat) {
    let (handle, mut client) = serve(format, 15_000).await;
    let mut stream = work_stream(&mut client, all_work()).await;
    for n in [1, 2] {
        client
            .signal_entity(proto::SignalEntityRequest {
                instance_id: "@counter@k".into(),
                name: "add".into(),
                input: Some(n.to_string()),
                ..Default::default()
            })
            .await
            .expect("signal");
    }
    let mut total = 0;
    let mut state: Option<String> = None;
    while total < 3 {
        let item = next_work(&mut stream).await;
        let operations: Vec<(String, Option<String>)> = match (&item.request, format) {
            (Some(WorkRequest::EntityRequest(batch)), EntityFormat::V1) => {
                assert_eq!(batch.instance_id, "@counter@k");
                assert_eq!(batch.entity_state, state);
                batch
                    .operations
                    .iter()
                    .map(|o| (o.operation.clone(), o.input.clone()))
                    .collect()
            }
            (Some(WorkRequest::EntityRequestV2(batch)), EntityFormat::V2) => {
                assert_eq!(batch.instance_id, "@counter@k");
                batch
                    .operation_requests
                    .iter()
                    .map(|e| match &e.event_type {
                        Some(EventType::EntityOperationSignaled(s)) => {
                            (s.operation.clone(), s.input.clone())
                        }
                        other => panic!("{other:?}"),
                    })
                    .collect()
            }
            other => panic!("unexpected {other:?}"),
        };
        let mut results = Vec::new();
        for (operation, input) in operations {
            assert_eq!(operation, "add");
            total += input
                .as_deref()
                .unwrap_or("0")
                .parse::<i64>()
                .expect("number");
            results.push(proto::OperationResult {
                result_type: Some(proto::operation_result::ResultType::Success(
                    proto::OperationResultSuccess {
                        result: Some(total.to_string()),
                        ..Default::default()
                    },
                )),
            });
        }
        state = Some(total.to_string());
        client
            .complete_entity_task(proto::EntityBatchResult {
                results,
                entity_state: state.clone(),
                completion_token: item.completion_token.clone(),
                ..Default::default()
            })
            .await
            .expect("complete batch");
        let stale = client
            .complete_entity_task(proto::EntityBatchResult {
                completion_token: item.completion_token.clone(),
                ..Default::default()
            })
            .await
            .expect_err("second completion");
        assert_eq!(stale.code(), Code::FailedPrecondition);
    }
    let entity = client
        .get_entity(proto::GetEntityRequest {
            instance_id: "@counter@k".into(),
            include_state: true,
        })
        .await
        .expect("get entity")
        .into_inner();
    assert!(entity.exists);
    assert_eq!(
        entity.entity.expect("metadata").serialized_state.as_deref(),
        Some("3")
    );
    let page = client
        .query_entities(proto::QueryEntitiesRequest {
            query: Some(proto::EntityQuery {
                instance_id_starts_with: Some("@counter@".into()),
                include_state: true,
                ..Default::default()
            }),
        })
        .await
        .expect("query entities")
        .into_inner();
    assert_eq!(page.entities.len(), 1);
    // Names are case-insensitive, keys are not.
    for (prefix, found) in [("@COUNTER@k", 1), ("@Counter@K", 0), ("@coun", 1)] {
        let page = client
            .query_entities(proto::QueryEntitiesRequest {
                query: Some(proto::EntityQuery {
                    instance_id_starts_with: Some(prefix.into()),
                    ..Default::default()
                }),
            })
            .await
            .expect("query entities")
            .into_inner();
        assert_eq!(page.entities.len(), found, "prefix {prefix}");
    }
    let cleaned = client
        .clean_entity_storage(proto::CleanEntityStorageRequest::default())
        .await
        .expect("clean")
        .into_inner();
    assert_eq!(cleaned.empty_entities_removed, 0);
    handle.stop().await;
}

#[tokio::test]
async fn entity_batches_round_trip_in_the_older_format() {
    entity_round_trip(EntityFormat::V1).await;
}

#[tokio::test]
async fn entity_batches_round_trip_in_the_newer_format() {
    entity_round_trip(EntityFormat::V2).await;
}

#[tokio::test]
async fn skip_graceful_terminations_end_running_instances_and_report_the_rest() {
    let (handle, mut client) = serve(EntityFormat::V1, 60_000).await;
    let running = start(&mut client, "Waits", "skip-running", None).await;
    let other = start(&mut client, "Waits", "skip-other", None).await;
    // A terminated one before the call is "already terminal".
    client
        .terminate_instance(proto::TerminateRequest {
            instance_id: other.clone(),
            ..Default::default()
        })
        .await
        .expect("terminate");
    let response = client
        .skip_graceful_orchestration_terminations(
            proto::SkipGracefulOrchestrationTerminationsRequest {
                instance_batch: Some(proto::InstanceBatch {
                    instance_ids: vec![
                        running.clone(),
                        other.clone(),
                        "never-started".into(),
                        "@counter@a".into(),
                    ],
                }),
                reason: Some("\"forced\"".into()),
            },
        )
        .await
        .expect("skip graceful terminations")
        .into_inner();
    assert_eq!(
        response.unterminated_instance_ids,
        vec![other, "never-started".to_owned(), "@counter@a".to_owned()]
    );
    let state = wait_done(&mut client, &running).await;
    assert_eq!(
        state.orchestration_status,
        proto::OrchestrationStatus::Terminated as i32
    );
    assert_eq!(state.output.as_deref(), Some("\"forced\""));
    let too_many = client
        .skip_graceful_orchestration_terminations(
            proto::SkipGracefulOrchestrationTerminationsRequest {
                instance_batch: Some(proto::InstanceBatch {
                    instance_ids: (0..501).map(|i| format!("i{i}")).collect(),
                }),
                reason: None,
            },
        )
        .await
        .expect_err("501 ids");
    assert_eq!(too_many.code(), Code::InvalidArgument);
    handle.stop().await;
}

#[tokio::test]
async fn get_instance_reports_the_version_it_was_started_with() {
    let (handle, mut client) = serve(EntityFormat::V1, 60_000).await;
    client
        .start_instance(proto::CreateInstanceRequest {
            instance_id: "versioned".into(),
            name: "Versioned".into(),
            version: Some("2.1".into()),
            ..Default::default()
        })
        .await
        .expect("start");
    let state = client
        .get_instance(proto::GetInstanceRequest {
            instance_id: "versioned".into(),
            get_inputs_and_outputs: false,
        })
        .await
        .expect("get")
        .into_inner()
        .orchestration_state
        .expect("state");
    assert_eq!(state.version.as_deref(), Some("2.1"));
    handle.stop().await;
}

/// Tags given at creation are kept and returned with the instance (also
/// by a query, and by a restart under a new id); too many or too long tags
/// are refused with INVALID_ARGUMENT.
#[tokio::test]
async fn tags_given_at_creation_are_kept_and_returned() {
    let (handle, mut client) = serve(EntityFormat::V1, 60_000).await;
    let tags: std::collections::HashMap<String, String> = [("team", "blue"), ("ticket", "T-1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    client
        .start_instance(proto::CreateInstanceRequest {
            instance_id: "tagged".into(),
            name: "Tagged".into(),
            tags: tags.clone(),
            ..Default::default()
        })
        .await
        .expect("start");
    let get = |id: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .get_instance(proto::GetInstanceRequest {
                    instance_id: id.into(),
                    get_inputs_and_outputs: false,
                })
                .await
                .expect("get")
                .into_inner()
                .orchestration_state
                .expect("state")
        }
    };
    assert_eq!(get("tagged").await.tags, tags);
    let listed = client
        .query_instances(proto::QueryInstancesRequest {
            query: Some(proto::InstanceQuery {
                instance_id_prefix: Some("tagged".into()),
                max_instance_count: 10,
                ..Default::default()
            }),
        })
        .await
        .expect("query")
        .into_inner()
        .orchestration_state;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tags, tags);
    let restarted = client
        .restart_instance(proto::RestartInstanceRequest {
            instance_id: "tagged".into(),
            restart_with_new_instance_id: true,
        })
        .await
        .expect("restart")
        .into_inner()
        .instance_id;
    let restarted = client
        .get_instance(proto::GetInstanceRequest {
            instance_id: restarted,
            get_inputs_and_outputs: false,
        })
        .await
        .expect("get")
        .into_inner()
        .orchestration_state
        .expect("state");
    assert_eq!(restarted.tags, tags);

    for bad in [
        (0..65).map(|i| (format!("t{i}"), String::new())).collect(),
        [("k".repeat(257), String::new())].into_iter().collect(),
        [("big".to_owned(), "v".repeat(4097))].into_iter().collect(),
    ] {
        let refused = client
            .start_instance(proto::CreateInstanceRequest {
                instance_id: "badly-tagged".into(),
                name: "Tagged".into(),
                tags: bad,
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    handle.stop().await;
}

/// Admission control through both APIs: with no worker connected and room
/// for 3 waiting work items, the 4th start is refused with
/// `RESOURCE_EXHAUSTED` (gRPC) or 429 with `Retry-After` (HTTP); what was
/// accepted runs once a worker connects.
#[tokio::test]
async fn starts_beyond_the_queued_work_limit_are_refused_on_both_apis() {
    let handle = server::start(ServeOptions {
        storage: StorageChoice::Memory,
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        partitions: 4,
        queued_work_max: Some(3),
        ..ServeOptions::default()
    })
    .await
    .expect("server starts");
    let mut client = TaskHubSidecarServiceClient::connect(format!("http://{}", handle.grpc_addr()))
        .await
        .expect("connect");
    for i in 0..3 {
        start(&mut client, "o", &format!("queued-{i}"), None).await;
    }
    let refused = client
        .start_instance(proto::CreateInstanceRequest {
            name: "o".into(),
            instance_id: "queued-3".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("wait for workers"),
        "{refused:?}"
    );

    let http = reqwest::Client::new();
    let response = http
        .post(format!(
            "http://{}/runtime/webhooks/durabletask/orchestrators/o/queued-http",
            handle.http_addr().expect("http on")
        ))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");

    // A worker connects: every accepted instance runs to completion.
    let mut stream = work_stream(&mut client, all_work()).await;
    for _ in 0..3 {
        let item = next_work(&mut stream).await;
        respond(
            &mut client,
            &item,
            vec![action(0, complete_action("\"ok\""))],
        )
        .await
        .expect("completed");
    }
    for i in 0..3 {
        let state = wait_done(&mut client, &format!("queued-{i}")).await;
        assert_eq!(
            state.orchestration_status,
            proto::OrchestrationStatus::Completed as i32
        );
    }
    handle.stop().await;
}

/// Issue 13's limits on what a worker sends: duplicate action ids and
/// completions for activities that are not outstanding are refused; a
/// step with too many actions or an over-long version fails its instance
/// with a clear error instead of scheduling them.
#[tokio::test]
async fn worker_messages_past_the_limits_are_refused_or_fail_the_instance() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    let mut stream = work_stream(&mut client, all_work()).await;

    // Duplicate action ids: refused, the step stays the worker's to finish.
    start(&mut client, "o", "dup-ids", None).await;
    let step = next_work(&mut stream).await;
    let refused = respond(
        &mut client,
        &step,
        vec![action(1, schedule("a", "1")), action(1, schedule("b", "2"))],
    )
    .await
    .expect_err("duplicate ids");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("action id 1"), "{refused}");
    respond(&mut client, &step, vec![action(1, schedule("a", "1"))])
        .await
        .expect("the same step with distinct ids");

    // Completions for activities that are not outstanding.
    let activity = next_work(&mut stream).await;
    let Some(WorkRequest::ActivityRequest(task)) = &activity.request else {
        panic!("{activity:?}");
    };
    let token = activity.completion_token.clone();
    let forged = token.replacen(&format!(":{}:dup-ids", task.task_id), ":7:dup-ids", 1);
    assert_ne!(forged, token, "the token names the task: {token}");
    let complete = |completion_token: String| proto::ActivityResponse {
        instance_id: "dup-ids".into(),
        task_id: task.task_id,
        result: Some("\"done\"".into()),
        completion_token,
        ..Default::default()
    };
    let refused = client
        .complete_activity_task(complete(forged))
        .await
        .expect_err("a task that was never scheduled");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    client
        .complete_activity_task(complete(token.clone()))
        .await
        .expect("the real completion");
    let refused = client
        .complete_activity_task(complete(token))
        .await
        .expect_err("the same completion again");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");

    // Too many actions in one step.
    start(&mut client, "o", "too-many", None).await;
    let mut step = next_work(&mut stream).await;
    while !matches!(&step.request, Some(WorkRequest::OrchestratorRequest(r)) if r.head.instance_id == "too-many")
    {
        step = next_work(&mut stream).await;
    }
    let actions = (0..10_001).map(|i| action(i, schedule("a", "1"))).collect();
    respond(&mut client, &step, actions)
        .await
        .expect("the step is taken, as a failure");
    let state = wait_done(&mut client, "too-many").await;
    assert_eq!(
        state.orchestration_status,
        proto::OrchestrationStatus::Failed as i32
    );
    let failure = state.failure_details.expect("failure details");
    assert_eq!(
        failure.error_type, "TooManyActions",
        "{}",
        failure.error_message
    );

    // An over-long version: a start is refused.
    let refused = client
        .start_instance(proto::CreateInstanceRequest {
            instance_id: "long-version".into(),
            name: "o".into(),
            version: Some("v".repeat(257)),
            ..Default::default()
        })
        .await
        .expect_err("a 257-byte version");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    handle.stop().await;
}

#[tokio::test]
async fn ids_past_the_schedulers_length_limit_are_refused_on_creation() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    let longest = "i".repeat(100);
    assert_eq!(start(&mut client, "any", &longest, None).await, longest);
    let too_long = client
        .start_instance(proto::CreateInstanceRequest {
            instance_id: "i".repeat(101),
            name: "any".into(),
            ..Default::default()
        })
        .await
        .expect_err("101 characters");
    assert_eq!(too_long.code(), Code::InvalidArgument, "{too_long}");
    assert!(too_long.message().contains("100"), "{too_long}");
    // An entity id counts as a whole, `@name@key`.
    let signal = |key: String| proto::SignalEntityRequest {
        instance_id: format!("@counter@{key}"),
        name: "add".into(),
        ..Default::default()
    };
    client
        .signal_entity(signal("k".repeat(91)))
        .await
        .expect("100 characters");
    let too_long = client
        .signal_entity(signal("k".repeat(92)))
        .await
        .expect_err("101 characters");
    assert_eq!(too_long.code(), Code::InvalidArgument, "{too_long}");
    handle.stop().await;
}

#[tokio::test]
async fn a_filter_purge_stops_at_its_timeout_and_says_it_is_incomplete() {
    let (handle, mut client) = serve(EntityFormat::V1, 15_000).await;
    for i in 0..3 {
        let id = start(&mut client, "any", &format!("purge-{i}"), None).await;
        client
            .terminate_instance(proto::TerminateRequest {
                instance_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("terminate");
        wait_done(&mut client, &id).await;
    }
    let purge = |timeout: Option<prost_types::Duration>| proto::PurgeInstancesRequest {
        request: Some(
            proto::purge_instances_request::Request::PurgeInstanceFilter(
                proto::PurgeInstanceFilter {
                    runtime_status: vec![proto::OrchestrationStatus::Terminated as i32],
                    timeout,
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    // A timeout already over: nothing purged, and it says so.
    let none = client
        .purge_instances(purge(Some(prost_types::Duration::default())))
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(
        (none.deleted_instance_count, none.is_complete),
        (0, Some(false))
    );
    let negative = client
        .purge_instances(purge(Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        })))
        .await
        .expect_err("negative timeout");
    assert_eq!(negative.code(), Code::InvalidArgument);
    let all = client
        .purge_instances(purge(Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        })))
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(
        (all.deleted_instance_count, all.is_complete),
        (3, Some(true))
    );
    handle.stop().await;
}

/// Runs `id` ("streamed") to its second step on `stream`: step 1 schedules
/// activity `hello`, which completes. Returns the second step.
async fn second_step(
    client: &mut Client,
    stream: &mut Streaming<proto::WorkItem>,
    id: &str,
) -> proto::WorkItem {
    start(client, "streamed", id, Some("\"Ada\"")).await;
    let first = next_work(stream).await;
    respond(
        client,
        &first,
        vec![action(1, schedule("hello", "\"Ada\""))],
    )
    .await
    .expect("step 1");
    let activity = next_work(stream).await;
    client
        .complete_activity_task(proto::ActivityResponse {
            instance_id: id.into(),
            task_id: 1,
            result: Some("\"Hello Ada\"".into()),
            completion_token: activity.completion_token.clone(),
            ..Default::default()
        })
        .await
        .expect("complete activity");
    next_work(stream).await
}

async fn stream_history(
    client: &mut Client,
    id: &str,
    execution_id: Option<String>,
) -> Result<Vec<proto::HistoryEvent>, tonic::Status> {
    let mut chunks = client
        .stream_instance_history(proto::StreamInstanceHistoryRequest {
            instance_id: id.into(),
            execution_id,
            for_work_item_processing: true,
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(chunk) = chunks.message().await? {
        assert!(!chunk.events.is_empty(), "an empty chunk");
        events.extend(chunk.events);
    }
    Ok(events)
}

/// A worker that advertises history streaming gets a step whose past is
/// over the threshold without it (`requiresHistoryStreaming`), reads it
/// with `StreamInstanceHistory` for its generation, and finds exactly
/// what a worker without the capability gets inline.
#[tokio::test]
async fn a_worker_that_streams_history_reads_the_past_of_a_step_by_stream() {
    let (handle, mut client) = serve_with(ServeOptions {
        partitions: 2,
        history_streaming_bytes: 16,
        ..ServeOptions::default()
    })
    .await;

    // Without the capability: the past comes inline.
    let mut plain = work_stream(&mut client, all_work()).await;
    let inline = second_step(&mut client, &mut plain, "inline").await;
    let Some(WorkRequest::OrchestratorRequest(inline_request)) = &inline.request else {
        panic!("{inline:?}");
    };
    assert!(!inline_request.head.requires_history_streaming);
    let inline_past = inline_request.past_events.decoded().to_vec();
    assert!(inline_past.len() >= 3, "{inline_past:?}");
    respond(
        &mut client,
        &inline,
        vec![action(2, complete_action("\"done\""))],
    )
    .await
    .expect("complete inline");
    drop(plain);

    let mut streaming = work_stream(
        &mut client,
        proto::GetWorkItemsRequest {
            capabilities: vec![proto::WorkerCapability::HistoryStreaming as i32],
            ..all_work()
        },
    )
    .await;
    let step = second_step(&mut client, &mut streaming, "streamed").await;
    let Some(WorkRequest::OrchestratorRequest(request)) = &step.request else {
        panic!("{step:?}");
    };
    assert!(request.head.requires_history_streaming);
    assert!(request.past_events.is_empty());
    assert!(!request.head.new_events.is_empty());
    let execution_id = request.head.execution_id.clone().expect("an execution id");
    let past = stream_history(&mut client, "streamed", Some(execution_id.clone()))
        .await
        .expect("the history streams");
    // The same events as inline (timestamps apart), ExecutionStarted
    // stamped with this generation.
    let shape = |events: &[proto::HistoryEvent]| -> Vec<(i32, String)> {
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.timestamp = None;
                if let Some(EventType::ExecutionStarted(started)) = &mut e.event_type {
                    started.orchestration_instance = None;
                }
                (e.event_id, format!("{:?}", e.event_type))
            })
            .collect()
    };
    assert_eq!(shape(&past), shape(&inline_past));
    let Some(EventType::ExecutionStarted(started)) = &past
        .iter()
        .find(|e| matches!(e.event_type, Some(EventType::ExecutionStarted(_))))
        .and_then(|e| e.event_type.clone())
    else {
        panic!("no ExecutionStarted in {past:?}");
    };
    assert_eq!(
        started
            .orchestration_instance
            .as_ref()
            .and_then(|i| i.execution_id.as_deref()),
        Some(execution_id.as_str())
    );
    // Given back and offered again (with a new token), it streams again.
    client
        .abandon_task_orchestrator_work_item(proto::AbandonOrchestrationTaskRequest {
            completion_token: step.completion_token.clone(),
        })
        .await
        .expect("abandon");
    let previous = step.completion_token.clone();
    let step = next_work(&mut streaming).await;
    assert_ne!(step.completion_token, previous);
    let again = stream_history(&mut client, "streamed", Some(execution_id.clone()))
        .await
        .expect("the step offered again streams");
    assert_eq!(shape(&again), shape(&inline_past));
    respond(
        &mut client,
        &step,
        vec![action(2, complete_action("\"done\""))],
    )
    .await
    .expect("complete the streamed step");
    assert_eq!(
        wait_done(&mut client, "streamed")
            .await
            .orchestration_status,
        proto::OrchestrationStatus::Completed as i32
    );
    // No step waits for its history any more.
    let late = stream_history(&mut client, "streamed", Some(execution_id))
        .await
        .expect_err("no step waits");
    assert_eq!(late.code(), Code::FailedPrecondition, "{late}");
    // An execution id of another instance is not this one's.
    let foreign = stream_history(
        &mut client,
        "streamed",
        Some(basalt_server::convert::execution_id("inline", 1)),
    )
    .await
    .expect_err("another instance's execution");
    assert_eq!(foreign.code(), Code::NotFound, "{foreign}");
    handle.stop().await;
}

/// A termination that arrives while a worker holds a step lets the step
/// finish first, as the Scheduler does: its result is taken, then the
/// instance ends as Terminated. A step given back instead ends it at once.
#[tokio::test]
async fn a_termination_waits_for_the_step_a_worker_holds() {
    let (handle, mut client) = serve_with(ServeOptions {
        partitions: 2,
        termination_grace: Duration::from_millis(300),
        ..ServeOptions::default()
    })
    .await;
    let mut stream = work_stream(&mut client, all_work()).await;
    let status = |state: Option<proto::OrchestrationState>| {
        state.map(|s| s.orchestration_status).unwrap_or(-1)
    };

    start(&mut client, "held", "held", None).await;
    let step = next_work(&mut stream).await;
    client
        .terminate_instance(proto::TerminateRequest {
            instance_id: "held".into(),
            output: Some("\"stop\"".into()),
            ..Default::default()
        })
        .await
        .expect("terminate");
    let during = client
        .get_instance(proto::GetInstanceRequest {
            instance_id: "held".into(),
            get_inputs_and_outputs: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert_ne!(
        status(during.orchestration_state),
        proto::OrchestrationStatus::Terminated as i32,
        "terminated under the worker's step"
    );
    respond(
        &mut client,
        &step,
        vec![action(1, schedule("hello", "\"x\""))],
    )
    .await
    .expect("the held step's result is taken");
    let done = wait_done(&mut client, "held").await;
    assert_eq!(
        done.orchestration_status,
        proto::OrchestrationStatus::Terminated as i32
    );
    assert_eq!(done.output.as_deref(), Some("\"stop\""));
    let history = client
        .stream_instance_history(proto::StreamInstanceHistoryRequest {
            instance_id: "held".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .message()
        .await
        .expect("chunk")
        .expect("a chunk")
        .events;
    assert!(
        history
            .iter()
            .any(|e| matches!(e.event_type, Some(EventType::TaskScheduled(_)))),
        "the step's action was taken: {history:?}"
    );

    // Given back instead: terminated at once.
    start(&mut client, "given-back", "given-back", None).await;
    let step = next_work(&mut stream).await;
    client
        .terminate_instance(proto::TerminateRequest {
            instance_id: "given-back".into(),
            ..Default::default()
        })
        .await
        .expect("terminate");
    client
        .abandon_task_orchestrator_work_item(proto::AbandonOrchestrationTaskRequest {
            completion_token: step.completion_token.clone(),
        })
        .await
        .expect("abandon");
    let done = wait_done(&mut client, "given-back").await;
    assert_eq!(
        done.orchestration_status,
        proto::OrchestrationStatus::Terminated as i32
    );

    // Held and never answered: terminated when the grace period is over,
    // and the late answer is refused.
    start(&mut client, "stuck", "stuck", None).await;
    let step = next_work(&mut stream).await;
    client
        .terminate_instance(proto::TerminateRequest {
            instance_id: "stuck".into(),
            ..Default::default()
        })
        .await
        .expect("terminate");
    let done = wait_done(&mut client, "stuck").await;
    assert_eq!(
        done.orchestration_status,
        proto::OrchestrationStatus::Terminated as i32
    );
    let late = respond(
        &mut client,
        &step,
        vec![action(1, schedule("hello", "\"x\""))],
    )
    .await
    .expect_err("a step answered after the grace period");
    assert_eq!(late.code(), Code::FailedPrecondition, "{late}");

    // No step out: at once.
    start(&mut client, "idle", "idle", None).await;
    let step = next_work(&mut stream).await;
    respond(
        &mut client,
        &step,
        vec![action(1, schedule("hello", "\"x\""))],
    )
    .await
    .expect("step");
    client
        .terminate_instance(proto::TerminateRequest {
            instance_id: "idle".into(),
            ..Default::default()
        })
        .await
        .expect("terminate");
    let now = client
        .get_instance(proto::GetInstanceRequest {
            instance_id: "idle".into(),
            get_inputs_and_outputs: false,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        status(now.orchestration_state),
        proto::OrchestrationStatus::Terminated as i32
    );
    handle.stop().await;
}
