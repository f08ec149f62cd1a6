//! The HTTP management API with a real HTTP client, and the CLI client
//! commands by running the `basalt` binary, both against an in-process
//! server whose orchestrations, activities and entities run on the Rust
//! SDK's worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_runtime::sdk::{ActivityError, EntityError, OrchestrationError, Registry};
use basalt_runtime::{Backend, Worker, WorkerHandle, WorkerOptions};
use basalt_server::config::{ServeOptions, StorageChoice};
use basalt_server::server::{self, ServerHandle};
use serde_json::{Value, json};

const PREFIX: &str = "/runtime/webhooks/durabletask";

async fn serve() -> (ServerHandle, WorkerHandle) {
    let handle = server::start(ServeOptions {
        storage: StorageChoice::Memory,
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        partitions: 4,
        ..ServeOptions::default()
    })
    .await
    .expect("server starts");
    let registry = Registry::builder()
        .register_orchestration_typed::<String, String, _, _>(
            "greet",
            |ctx, name: String| async move { ctx.call_activity::<_, String>("hello", &name).await },
        )
        .register_orchestration_typed::<Value, Value, _, _>(
            "approve",
            |ctx, _input: Value| async move {
                let approval: Value = ctx.wait_for_external_event("approval").await?;
                Ok::<_, OrchestrationError>(json!({ "approved": approval }))
            },
        )
        .register_activity_typed::<String, String, _, _>("hello", |_ctx, who: String| async move {
            Ok::<_, ActivityError>(format!("Hello {who}"))
        })
        .register_entity_typed("counter", |ctx, operation| async move {
            let mut value: i64 = ctx.state()?;
            match operation.name.as_str() {
                "add" => value += operation.decode_input::<i64>()?,
                "get" => {}
                other => return Err(EntityError::new("UnknownOperation", other.to_owned())),
            }
            ctx.set_state(&value)?;
            Ok::<_, EntityError>(value)
        })
        .build()
        .expect("registry");
    let backend: Arc<dyn Backend> = Arc::new(handle.engine().clone());
    let worker = Worker::start(backend, Arc::new(registry), WorkerOptions::default());
    (handle, worker)
}

fn url(handle: &ServerHandle, path: &str) -> String {
    format!("http://{}{path}", handle.http_addr().expect("http on"))
}

/// GETs until `done` holds for the JSON answer (10 s at most).
async fn poll(http: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = http.get(url).send().await.expect("GET");
        if response.status().is_success() {
            let body: Value = response.json().await.expect("json");
            if done(&body) {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "{url} never reached the state");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn http_api_manages_instances_and_entities() {
    let (handle, worker) = serve().await;
    // Every POST of this API must say it sends JSON (tests/security.rs
    // checks the refusal without it).
    let mut json_headers = reqwest::header::HeaderMap::new();
    json_headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    let http = reqwest::Client::builder()
        .default_headers(json_headers)
        .build()
        .expect("http client");
    let health = http
        .get(url(&handle, "/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    // Start with an id; 202 with management URLs and a Location header.
    let started = http
        .post(url(&handle, &format!("{PREFIX}/orchestrators/greet/h1")))
        .body("\"Ada\"")
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), 202);
    assert!(started.headers().get("location").is_some());
    let body: Value = started.json().await.expect("json");
    assert_eq!(body["id"], "h1");
    let status_url = body["statusQueryGetUri"].as_str().expect("uri").to_owned();
    let done = poll(&http, &status_url, |b| b["runtimeStatus"] == "Completed").await;
    assert_eq!(done["output"], "Hello Ada");
    assert_eq!(done["input"], "Ada");
    let with_history = poll(&http, &format!("{status_url}?showHistory=true"), |_| true).await;
    let kinds: Vec<&str> = with_history["historyEvents"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["EventType"].as_str())
        .collect();
    assert!(
        kinds.contains(&"ExecutionStarted") && kinds.contains(&"TaskCompleted"),
        "{kinds:?}"
    );

    // Without an id one is generated.
    let generated: Value = http
        .post(url(&handle, &format!("{PREFIX}/orchestrators/greet")))
        .body("\"Bo\"")
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    assert!(!generated["id"].as_str().expect("id").is_empty());

    // Bad input: clear JSON errors.
    let bad = http
        .post(url(&handle, &format!("{PREFIX}/orchestrators/greet/h2")))
        .body("{not json")
        .send()
        .await
        .expect("bad start");
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.expect("json error");
    assert!(
        error["error"].as_str().expect("message").contains("JSON"),
        "{error}"
    );
    let missing = http
        .get(url(&handle, &format!("{PREFIX}/instances/nobody")))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);
    let bad_status = http
        .get(url(
            &handle,
            &format!("{PREFIX}/instances?runtimeStatus=Sleeping"),
        ))
        .send()
        .await
        .expect("bad filter");
    assert_eq!(bad_status.status(), 400);

    // Raise an event; suspend, resume and terminate another.
    for id in ["a1", "a2"] {
        let r = http
            .post(url(
                &handle,
                &format!("{PREFIX}/orchestrators/approve/{id}"),
            ))
            .send()
            .await
            .expect("start");
        assert_eq!(r.status(), 202);
    }
    poll(
        &http,
        &url(&handle, &format!("{PREFIX}/instances/a1")),
        |b| b["runtimeStatus"] == "Running",
    )
    .await;
    let raised = http
        .post(url(
            &handle,
            &format!("{PREFIX}/instances/a1/raiseEvent/approval"),
        ))
        .body("true")
        .send()
        .await
        .expect("raise");
    assert_eq!(raised.status(), 202);
    let approved = poll(
        &http,
        &url(&handle, &format!("{PREFIX}/instances/a1")),
        |b| b["runtimeStatus"] == "Completed",
    )
    .await;
    assert_eq!(approved["output"], json!({ "approved": true }));
    poll(
        &http,
        &url(&handle, &format!("{PREFIX}/instances/a2")),
        |b| b["runtimeStatus"] == "Running",
    )
    .await;
    for (verb, wanted) in [
        ("suspend", "Suspended"),
        ("resume", "Running"),
        ("terminate", "Terminated"),
    ] {
        let r = http
            .post(url(
                &handle,
                &format!("{PREFIX}/instances/a2/{verb}?reason=test"),
            ))
            .send()
            .await
            .expect(verb);
        assert_eq!(r.status(), 202, "{verb}");
        poll(
            &http,
            &url(&handle, &format!("{PREFIX}/instances/a2")),
            |b| b["runtimeStatus"] == wanted,
        )
        .await;
    }
    let not_failed = http
        .post(url(&handle, &format!("{PREFIX}/instances/a1/rewind")))
        .send()
        .await
        .expect("rewind a completed instance");
    assert_eq!(
        not_failed.status(),
        409,
        "only failed instances can be rewound"
    );
    let unknown_action = http
        .post(url(&handle, &format!("{PREFIX}/instances/a1/explode")))
        .send()
        .await
        .expect("unknown action");
    assert_eq!(unknown_action.status(), 404);
    let unknown = http
        .post(url(
            &handle,
            &format!("{PREFIX}/instances/nobody/terminate"),
        ))
        .send()
        .await
        .expect("terminate unknown");
    assert_eq!(unknown.status(), 404);

    // An id outside ASCII pages like any other (the token travels as hex).
    let accented = http
        .post(url(
            &handle,
            &format!("{PREFIX}/orchestrators/greet/caf\u{e9}"),
        ))
        .body("\"Zo\"")
        .send()
        .await
        .expect("start");
    assert_eq!(accented.status(), 202);
    poll(
        &http,
        &url(&handle, &format!("{PREFIX}/instances/caf\u{e9}")),
        |b| b["runtimeStatus"] == "Completed",
    )
    .await;
    let bogus = http
        .get(url(&handle, &format!("{PREFIX}/instances")))
        .header("x-ms-continuation-token", "zz")
        .send()
        .await
        .expect("bogus token");
    assert_eq!(bogus.status(), 400);
    // List with paging through the continuation header.
    let mut ids = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut request = http.get(url(
            &handle,
            &format!("{PREFIX}/instances?runtimeStatus=Completed,Terminated&top=1"),
        ));
        if let Some(token) = &continuation {
            request = request.header("x-ms-continuation-token", token);
        }
        let response = request.send().await.expect("list");
        continuation = response
            .headers()
            .get("x-ms-continuation-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let page: Vec<Value> = response.json().await.expect("json");
        assert!(page.len() <= 1);
        ids.extend(
            page.iter()
                .map(|i| i["instanceId"].as_str().unwrap_or_default().to_owned()),
        );
        if continuation.is_none() {
            break;
        }
    }
    for id in ["h1", "a1", "a2", "caf\u{e9}"] {
        assert!(ids.contains(&id.to_owned()), "{id} not in {ids:?}");
    }
    // By orchestration name: the approvals only.
    let approvals: Vec<Value> = http
        .get(url(&handle, &format!("{PREFIX}/instances?name=approve")))
        .send()
        .await
        .expect("list by name")
        .json()
        .await
        .expect("json");
    let mut names: Vec<&str> = approvals
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap_or_default())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["a1", "a2"], "instances named approve");

    // Purge one, then by filter.
    let purged = http
        .delete(url(&handle, &format!("{PREFIX}/instances/h1")))
        .send()
        .await
        .expect("purge");
    assert_eq!(purged.status(), 200);
    let again = http
        .delete(url(&handle, &format!("{PREFIX}/instances/h1")))
        .send()
        .await
        .expect("purge again");
    assert_eq!(again.status(), 404);
    let by_filter: Value = http
        .delete(url(
            &handle,
            &format!("{PREFIX}/instances?runtimeStatus=Terminated"),
        ))
        .send()
        .await
        .expect("purge filter")
        .json()
        .await
        .expect("json");
    assert_eq!(by_filter["instancesDeleted"], 1);

    // Entities: signal, get, list; a signal without an operation is refused.
    let signalled = http
        .post(url(
            &handle,
            &format!("{PREFIX}/entities/counter/k1?op=add"),
        ))
        .body("5")
        .send()
        .await
        .expect("signal");
    assert_eq!(signalled.status(), 202);
    let entity = poll(
        &http,
        &url(&handle, &format!("{PREFIX}/entities/counter/k1")),
        |b| b["state"] == 5,
    )
    .await;
    assert_eq!(entity["entityId"]["key"], "k1");
    let listed: Vec<Value> = http
        .get(url(&handle, &format!("{PREFIX}/entities/counter")))
        .send()
        .await
        .expect("list entities")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 1);
    let no_op = http
        .post(url(&handle, &format!("{PREFIX}/entities/counter/k1")))
        .send()
        .await
        .expect("signal without op");
    assert_eq!(no_op.status(), 400);
    let no_entity = http
        .get(url(&handle, &format!("{PREFIX}/entities/counter/none")))
        .send()
        .await
        .expect("missing entity");
    assert_eq!(no_entity.status(), 404);

    // Metrics in Prometheus text.
    let metrics = http
        .get(url(&handle, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "# TYPE basalt_partition_commits_total counter",
        "basalt_partition_commits_total{partition=\"0\"}",
        "basalt_partition_commit_batch_records{partition=\"3\"}",
        "basalt_partition_commit_latency_seconds{partition=\"1\"}",
        "# TYPE basalt_partition_checkpoints_total counter",
        "basalt_partition_segments_created_total{partition=\"2\"}",
        "basalt_instances{partition=",
        "status=\"Completed\"",
        "basalt_queue_depth{kind=\"activity\",stage=\"engine\"}",
        "basalt_worker_streams 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    worker.shutdown().await;
    handle.stop().await;
}

/// Runs the CLI against the server; returns (exit code, stdout, stderr).
async fn cli(handle: &ServerHandle, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(args)
        .arg("--server")
        .arg(format!("http://{}", handle.grpc_addr()))
        .output()
        .await
        .expect("run basalt");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn cli_ok(handle: &ServerHandle, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(handle, args).await;
    assert_eq!(code, 0, "basalt {args:?}: {stderr}");
    stdout
}

#[tokio::test]
async fn cli_commands_drive_a_running_server() {
    let (handle, worker) = serve().await;
    let out = cli_ok(
        &handle,
        &[
            "start", "greet", "--id", "c1", "--input", "\"Cy\"", "--wait", "--json",
        ],
    )
    .await;
    let state: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(state["runtimeStatus"], "Completed");
    assert_eq!(state["output"], "Hello Cy");
    let table = cli_ok(&handle, &["status", "c1", "--history"]).await;
    assert!(
        table.contains("Completed") && table.contains("TaskCompleted"),
        "{table}"
    );
    let listed: Value = serde_json::from_str(
        cli_ok(&handle, &["list", "--status", "completed", "--json"])
            .await
            .trim(),
    )
    .expect("json");
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .any(|s| s["instanceId"] == "c1")
    );
    let table = cli_ok(&handle, &["list"]).await;
    assert!(
        table.starts_with("INSTANCE") && table.contains("c1"),
        "{table}"
    );

    cli_ok(&handle, &["start", "approve", "--id", "c2"]).await;
    cli_ok(&handle, &["raise", "c2", "approval", "--data", "\"yes\""]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cli_ok(&handle, &["status", "c2", "--json"]).await;
        let state: Value = serde_json::from_str(out.trim()).expect("json");
        if state["runtimeStatus"] == "Completed" {
            assert_eq!(state["output"], json!({ "approved": "yes" }));
            break;
        }
        assert!(Instant::now() < deadline, "c2 never completed: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cli_ok(&handle, &["start", "approve", "--id", "c3"]).await;
    for verb in ["suspend", "resume", "terminate"] {
        cli_ok(&handle, &[verb, "c3", "--reason", "cli test"]).await;
    }
    let out = cli_ok(&handle, &["status", "c3"]).await;
    assert!(out.contains("Terminated"), "{out}");
    assert!(cli_ok(&handle, &["purge", "c3"]).await.contains("purged 1"));
    let (code, _, stderr) = cli(&handle, &["status", "c3"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not found"), "{stderr}");

    cli_ok(&handle, &["signal", "counter", "k2", "add", "--input", "3"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, stdout, _) = cli(&handle, &["entity", "counter", "k2", "--json"]).await;
        if code == 0 {
            let entities: Value = serde_json::from_str(stdout.trim()).expect("json");
            assert_eq!(entities[0]["state"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "the entity never got state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let table = cli_ok(&handle, &["entity", "counter"]).await;
    assert!(table.contains("@counter@k2"), "{table}");

    // Bad input and a refusal are exit 1 with a message.
    let (code, _, stderr) = cli(&handle, &["start", "greet", "--input", "not json"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("JSON"), "{stderr}");
    let (code, _, stderr) = cli(&handle, &["rewind", "c1"]).await;
    assert_eq!(code, 1, "c1 completed: nothing to rewind");
    assert!(stderr.contains("only a failed instance"), "{stderr}");
    let (code, _, stderr) = cli(&handle, &["raise", "nobody", "e"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not found"), "{stderr}");
    let (code, _, stderr) = cli(&handle, &["purge"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("filter"), "{stderr}");
    worker.shutdown().await;
    handle.stop().await;

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["list", "--server", "http://127.0.0.1:1"])
        .output()
        .await
        .expect("run basalt");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("connecting to the server"));
}

/// GETs `url` and decodes its JSON answer, whatever its status.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json")
}

/// The dashboard's page and its `/api/v1/` additions on a server without
/// a token: the counts, the partitions' figures and a timeline agree with
/// what the management API says.
#[tokio::test]
async fn dashboard_page_and_api() {
    let (handle, worker) = serve().await;
    let http = reqwest::Client::new();
    for i in 0..3 {
        let started = http
            .post(url(
                &handle,
                &format!("{PREFIX}/orchestrators/greet/dash-{i}"),
            ))
            .header("content-type", "application/json")
            .body("\"Ada\"")
            .send()
            .await
            .expect("start");
        assert_eq!(started.status(), 202);
    }
    let waiting = http
        .post(url(
            &handle,
            &format!("{PREFIX}/orchestrators/approve/dash-wait"),
        ))
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .expect("start");
    assert_eq!(waiting.status(), 202);

    let overview = poll(&http, &url(&handle, "/api/v1/overview"), |o| {
        o["instancesByStatus"]["Completed"] == 3 && o["instancesByStatus"]["Running"] == 1
    })
    .await;
    assert_eq!(overview["instances"], 4);
    assert_eq!(overview["partitionCount"], 4);
    assert_eq!(overview["partitionsServing"], 4);
    for status in [
        "Pending",
        "Suspended",
        "Failed",
        "Terminated",
        "ContinuedAsNew",
    ] {
        assert_eq!(overview["instancesByStatus"][status], 0, "{status}");
    }

    let partitions = get_json(&http, &url(&handle, "/api/v1/partitions")).await;
    let rows = partitions["partitions"].as_array().expect("rows");
    assert_eq!(rows.len(), 4);
    let instances: u64 = rows
        .iter()
        .map(|p| p["instances"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(instances, 4, "the partitions hold every instance once");
    let commits: u64 = rows
        .iter()
        .map(|p| p["log"]["commits"].as_u64().unwrap_or(0))
        .sum();
    assert!(commits > 0, "the starts were committed");
    for p in rows {
        assert!(
            p["log"]["durableLsn"].as_u64() < p["log"]["nextLsn"].as_u64(),
            "{p}"
        );
        assert_eq!(p["owner"], "this process");
    }

    let timeline = get_json(&http, &url(&handle, "/api/v1/instances/dash-0/timeline")).await;
    assert_eq!(timeline["terminal"], true);
    assert_eq!(timeline["instance"]["output"], "Hello Ada");
    let bars = timeline["timeline"]["bars"].as_array().expect("bars");
    assert_eq!(bars.len(), 1, "{bars:?}");
    assert_eq!(bars[0]["kind"], "activity");
    assert_eq!(bars[0]["name"], "hello");
    assert_eq!(bars[0]["outcome"], "completed");
    assert_eq!(bars[0]["detail"], "\"Hello Ada\"");
    let history = get_json(
        &http,
        &url(
            &handle,
            &format!("{PREFIX}/instances/dash-0?showHistory=true"),
        ),
    )
    .await;
    let events = history["historyEvents"].as_array().expect("events");
    assert_eq!(timeline["timeline"]["eventCount"], events.len());
    let types: Vec<&Value> = timeline["timeline"]["events"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|e| &e["eventType"])
        .collect();
    let expected: Vec<&Value> = events.iter().map(|e| &e["EventType"]).collect();
    assert_eq!(types, expected, "one row per history event, in order");

    let running: Value =
        get_json(&http, &url(&handle, "/api/v1/instances/dash-wait/timeline")).await;
    assert_eq!(running["terminal"], false);
    let missing = http
        .get(url(&handle, "/api/v1/instances/nobody/timeline"))
        .send()
        .await
        .expect("timeline");
    assert_eq!(missing.status(), 404);
    let bad = http
        .get(url(
            &handle,
            "/api/v1/instances/dash-0/timeline?eventsFrom=first",
        ))
        .send()
        .await
        .expect("timeline");
    assert_eq!(bad.status(), 400);

    // The page, from the binary, with its policy; `/` leads to it.
    let page = http.get(url(&handle, "/")).send().await.expect("page");
    assert_eq!(page.url().path(), "/ui");
    assert_eq!(page.status(), 200);
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(page.text().await.expect("html").contains("/ui/app.js"));
    let script = http
        .get(url(&handle, "/ui/app.js"))
        .send()
        .await
        .expect("js");
    assert_eq!(
        script.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/javascript; charset=utf-8"[..])
    );
    worker.shutdown().await;
    handle.stop().await;
}
