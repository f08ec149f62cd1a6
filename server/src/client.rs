//! Client commands against a running server (`basalt start`, `status`,
//! `list`, `raise`, `terminate`, `suspend`, `resume`, `rewind`, `purge`,
//! `signal`, `entity`). They speak the same gRPC protocol as the SDKs, print a
//! human-readable table by default and JSON with `--json`, and exit 1 with
//! the server's message when it refuses.

use anyhow::{Context, bail};
use basalt_server::auth::BearerToken;
use basalt_server::convert::{millis, timestamp};
use basalt_server::proto;
use basalt_server::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use basalt_server::time::{format_rfc3339, parse_time};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::cli::{Command, ServerAddr};

type Client = TaskHubSidecarServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, WithToken>,
>;

/// Adds the auth token (if any) to every call.
#[derive(Clone)]
struct WithToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn connect(server: &ServerAddr) -> anyhow::Result<Client> {
    let token = match &server.auth_token_file {
        Some(path) => {
            let token = BearerToken::load(path)?;
            Some(
                token
                    .header_value()
                    .parse()
                    .context("the auth token is not a valid header value")?,
            )
        }
        None => None,
    };
    let mut endpoint = Channel::from_shared(server.server.clone())
        .with_context(|| format!("{:?} is not a server address", server.server))?;
    if server.server.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = &server.tls_ca {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA {}", path.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&server.tls_client_cert, &server.tls_client_key) {
            let cert = std::fs::read(cert)
                .with_context(|| format!("reading the client certificate {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("reading the client key {}", key.display()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("setting up TLS to the server")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to the server at {}", server.server))?;
    Ok(TaskHubSidecarServiceClient::with_interceptor(
        channel,
        WithToken(token),
    ))
}

/// A gRPC status as an error with the server's message.
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the server refused: {} ({:?})",
        status.message(),
        status.code()
    )
}

fn json_arg(name: &str, text: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(text) = &text {
        serde_json::from_str::<Value>(text)
            .with_context(|| format!("--{name} must be JSON, e.g. '\"text\"' or '{{\"a\": 1}}'"))?;
    }
    Ok(text)
}

fn time_arg(name: &str, text: Option<&str>) -> anyhow::Result<Option<prost_types::Timestamp>> {
    text.map(|t| {
        parse_time(t)
            .map(timestamp)
            .map_err(|e| anyhow::anyhow!("--{name}: {e}"))
    })
    .transpose()
}

fn status_name(value: i32) -> &'static str {
    match proto::OrchestrationStatus::try_from(value) {
        Ok(proto::OrchestrationStatus::Running) => "Running",
        Ok(proto::OrchestrationStatus::Completed) => "Completed",
        Ok(proto::OrchestrationStatus::ContinuedAsNew) => "ContinuedAsNew",
        Ok(proto::OrchestrationStatus::Failed) => "Failed",
        Ok(proto::OrchestrationStatus::Canceled) => "Canceled",
        Ok(proto::OrchestrationStatus::Terminated) => "Terminated",
        Ok(proto::OrchestrationStatus::Pending) => "Pending",
        Ok(proto::OrchestrationStatus::Suspended) => "Suspended",
        Err(_) => "Unknown",
    }
}

fn parse_statuses(list: Option<&str>) -> anyhow::Result<Vec<i32>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Ok(match s.trim().to_ascii_lowercase().as_str() {
                "running" => proto::OrchestrationStatus::Running,
                "completed" => proto::OrchestrationStatus::Completed,
                "failed" => proto::OrchestrationStatus::Failed,
                "terminated" => proto::OrchestrationStatus::Terminated,
                "suspended" => proto::OrchestrationStatus::Suspended,
                "pending" => proto::OrchestrationStatus::Pending,
                other => bail!(
                    "unknown status {other:?} (running, completed, failed, terminated, \
                     suspended, pending)"
                ),
            } as i32)
        })
        .collect()
}

fn time_text(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .map(|t| format_rfc3339(millis(t)))
        .unwrap_or_default()
}

fn state_json(state: &proto::OrchestrationState) -> Value {
    let parse = |p: &Option<String>| match p {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        None => Value::Null,
    };
    json!({
        "instanceId": state.instance_id,
        "name": state.name,
        "runtimeStatus": status_name(state.orchestration_status),
        "createdTime": time_text(&state.created_timestamp),
        "lastUpdatedTime": time_text(&state.last_updated_timestamp),
        "input": parse(&state.input),
        "output": parse(&state.output),
        "customStatus": parse(&state.custom_status),
        "failure": state.failure_details.as_ref().map(|f| json!({
            "errorType": f.error_type, "errorMessage": f.error_message,
        })),
    })
}

/// Rows as a left-aligned text table with a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

fn print_state(state: &proto::OrchestrationState, as_json: bool) {
    let value = state_json(state);
    if as_json {
        println!("{value}");
        return;
    }
    let show = |v: &Value| {
        if v.is_null() {
            "-".to_owned()
        } else {
            v.to_string()
        }
    };
    println!("instance:  {}", state.instance_id);
    println!("name:      {}", state.name);
    println!("status:    {}", status_name(state.orchestration_status));
    println!(
        "created:   {}",
        value["createdTime"].as_str().unwrap_or_default()
    );
    println!(
        "updated:   {}",
        value["lastUpdatedTime"].as_str().unwrap_or_default()
    );
    println!("input:     {}", show(&value["input"]));
    println!("output:    {}", show(&value["output"]));
    println!("custom:    {}", show(&value["customStatus"]));
    if let Some(f) = &state.failure_details {
        println!("failure:   {}: {}", f.error_type, f.error_message);
    }
}

/// Runs a client command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Start(args) => {
            let mut client = connect(&args.server).await?;
            let response = client
                .start_instance(proto::CreateInstanceRequest {
                    instance_id: args.id.unwrap_or_default(),
                    name: args.name,
                    input: json_arg("input", args.input)?,
                    scheduled_start_timestamp: time_arg("at", args.at.as_deref())?,
                    ..Default::default()
                })
                .await
                .map_err(refused)?
                .into_inner();
            if !args.wait {
                if args.server.json {
                    println!("{}", json!({ "instanceId": response.instance_id }));
                } else {
                    println!("started {}", response.instance_id);
                }
                return Ok(());
            }
            let done = client
                .wait_for_instance_completion(proto::GetInstanceRequest {
                    instance_id: response.instance_id.clone(),
                    get_inputs_and_outputs: true,
                })
                .await
                .map_err(refused)?
                .into_inner();
            match done.orchestration_state {
                Some(state) => print_state(&state, args.server.json),
                None => bail!("instance {} disappeared", response.instance_id),
            }
        }
        Command::Status(args) => {
            let mut client = connect(&args.server).await?;
            let found = client
                .get_instance(proto::GetInstanceRequest {
                    instance_id: args.id.clone(),
                    get_inputs_and_outputs: true,
                })
                .await
                .map_err(refused)?
                .into_inner();
            let Some(state) = found.orchestration_state.filter(|_| found.exists) else {
                bail!("instance {} not found", args.id);
            };
            print_state(&state, args.server.json);
            if args.history {
                let mut stream = client
                    .stream_instance_history(proto::StreamInstanceHistoryRequest {
                        instance_id: args.id.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                let mut rows = Vec::new();
                while let Some(chunk) = stream.message().await.map_err(refused)? {
                    for event in chunk.events {
                        let kind = event
                            .event_type
                            .as_ref()
                            .map(|t| format!("{t:?}"))
                            .unwrap_or_default();
                        let name = kind.split('(').next().unwrap_or_default().to_owned();
                        rows.push(vec![
                            event.event_id.to_string(),
                            time_text(&event.timestamp),
                            name,
                        ]);
                    }
                }
                if args.server.json {
                    let events: Vec<Value> = rows
                        .iter()
                        .map(|r| json!({"eventId": r[0], "timestamp": r[1], "eventType": r[2]}))
                        .collect();
                    println!("{}", Value::Array(events));
                } else {
                    print!("\n{}", table(&["EVENT ID", "TIMESTAMP", "TYPE"], &rows));
                }
            }
        }
        Command::List(args) => {
            let mut client = connect(&args.server).await?;
            let mut states = Vec::new();
            let mut continuation = None;
            while states.len() < args.top {
                let page = client
                    .query_instances(proto::QueryInstancesRequest {
                        query: Some(proto::InstanceQuery {
                            runtime_status: parse_statuses(args.status.as_deref())?,
                            created_time_from: time_arg(
                                "created-from",
                                args.created_from.as_deref(),
                            )?,
                            created_time_to: time_arg("created-to", args.created_to.as_deref())?,
                            max_instance_count: (args.top - states.len()).min(1000) as i32,
                            continuation_token: continuation.take(),
                            instance_id_prefix: args.prefix.clone(),
                            fetch_inputs_and_outputs: args.server.json,
                            ..Default::default()
                        }),
                    })
                    .await
                    .map_err(refused)?
                    .into_inner();
                states.extend(page.orchestration_state);
                match page.continuation_token {
                    Some(next) => continuation = Some(next),
                    None => break,
                }
            }
            states.truncate(args.top);
            if args.server.json {
                println!("{}", Value::Array(states.iter().map(state_json).collect()));
            } else {
                let rows: Vec<Vec<String>> = states
                    .iter()
                    .map(|s| {
                        vec![
                            s.instance_id.clone(),
                            s.name.clone(),
                            status_name(s.orchestration_status).to_owned(),
                            time_text(&s.created_timestamp),
                            time_text(&s.last_updated_timestamp),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["INSTANCE", "NAME", "STATUS", "CREATED", "UPDATED"], &rows)
                );
            }
        }
        Command::Raise(args) => {
            let mut client = connect(&args.server).await?;
            client
                .raise_event(proto::RaiseEventRequest {
                    instance_id: args.id.clone(),
                    name: args.event.clone(),
                    input: json_arg("data", args.data)?,
                })
                .await
                .map_err(refused)?;
            done(
                &args.server,
                &format!("raised {} on {}", args.event, args.id),
            );
        }
        Command::Terminate(args) => {
            let mut client = connect(&args.server).await?;
            client
                .terminate_instance(proto::TerminateRequest {
                    instance_id: args.id.clone(),
                    output: args.reason.map(|r| Value::String(r).to_string()),
                    recursive: false,
                })
                .await
                .map_err(refused)?;
            done(&args.server, &format!("terminated {}", args.id));
        }
        Command::Suspend(args) => {
            let mut client = connect(&args.server).await?;
            client
                .suspend_instance(proto::SuspendRequest {
                    instance_id: args.id.clone(),
                    reason: args.reason,
                })
                .await
                .map_err(refused)?;
            done(&args.server, &format!("suspended {}", args.id));
        }
        Command::Resume(args) => {
            let mut client = connect(&args.server).await?;
            client
                .resume_instance(proto::ResumeRequest {
                    instance_id: args.id.clone(),
                    reason: args.reason,
                })
                .await
                .map_err(refused)?;
            done(&args.server, &format!("resumed {}", args.id));
        }
        Command::Rewind(args) => {
            let mut client = connect(&args.server).await?;
            client
                .rewind_instance(proto::RewindInstanceRequest {
                    instance_id: args.id.clone(),
                    reason: args.reason,
                })
                .await
                .map_err(refused)?;
            done(&args.server, &format!("rewound {}", args.id));
        }
        Command::Purge(args) => {
            use proto::purge_instances_request::Request as R;
            let mut client = connect(&args.server).await?;
            let request = match &args.id {
                Some(id) => R::InstanceId(id.clone()),
                None => {
                    let statuses = parse_statuses(args.status.as_deref())?;
                    if statuses.is_empty() && args.created_to.is_none() {
                        bail!(
                            "give an instance id, or a filter (--status and/or --created-to); \
                             purging everything needs --status completed,failed,terminated"
                        );
                    }
                    R::PurgeInstanceFilter(proto::PurgeInstanceFilter {
                        runtime_status: statuses,
                        created_time_to: time_arg("created-to", args.created_to.as_deref())?,
                        ..Default::default()
                    })
                }
            };
            let response = client
                .purge_instances(proto::PurgeInstancesRequest {
                    request: Some(request),
                    ..Default::default()
                })
                .await
                .map_err(refused)?
                .into_inner();
            if args.server.json {
                println!(
                    "{}",
                    json!({ "deletedInstanceCount": response.deleted_instance_count })
                );
            } else {
                println!("purged {} instance(s)", response.deleted_instance_count);
            }
            if args.id.is_some() && response.deleted_instance_count == 0 {
                bail!("instance {} not found", args.id.unwrap_or_default());
            }
        }
        Command::Signal(args) => {
            let mut client = connect(&args.server).await?;
            let entity = format!("@{}@{}", args.name.to_lowercase(), args.key);
            client
                .signal_entity(proto::SignalEntityRequest {
                    instance_id: entity.clone(),
                    name: args.operation.clone(),
                    input: json_arg("input", args.input)?,
                    scheduled_time: time_arg("at", args.at.as_deref())?,
                    ..Default::default()
                })
                .await
                .map_err(refused)?;
            done(
                &args.server,
                &format!("signalled {entity} {}", args.operation),
            );
        }
        Command::Entity(args) => {
            let mut client = connect(&args.server).await?;
            match (&args.name, &args.key) {
                (Some(name), Some(key)) => {
                    let entity = format!("@{}@{key}", name.to_lowercase());
                    let found = client
                        .get_entity(proto::GetEntityRequest {
                            instance_id: entity.clone(),
                            include_state: true,
                        })
                        .await
                        .map_err(refused)?
                        .into_inner();
                    let Some(metadata) = found.entity.filter(|_| found.exists) else {
                        bail!("entity {entity} has no state");
                    };
                    print_entities(&[metadata], args.server.json);
                }
                (name, None) => {
                    let mut entities = Vec::new();
                    let mut continuation = None;
                    while entities.len() < args.top {
                        let page = client
                            .query_entities(proto::QueryEntitiesRequest {
                                query: Some(proto::EntityQuery {
                                    instance_id_starts_with: name
                                        .as_ref()
                                        .map(|n| format!("@{}@", n.to_lowercase())),
                                    include_state: true,
                                    page_size: Some((args.top - entities.len()).min(1000) as i32),
                                    continuation_token: continuation.take(),
                                    ..Default::default()
                                }),
                            })
                            .await
                            .map_err(refused)?
                            .into_inner();
                        entities.extend(page.entities);
                        match page.continuation_token {
                            Some(next) => continuation = Some(next),
                            None => break,
                        }
                    }
                    entities.truncate(args.top);
                    print_entities(&entities, args.server.json);
                }
                (None, Some(_)) => bail!("give the entity name before its key"),
            }
        }
        Command::Bench(_) | Command::Inspect(_) | Command::Serve(_) => {
            bail!("not a client command")
        }
    }
    Ok(())
}

fn done(server: &ServerAddr, message: &str) {
    if server.json {
        println!("{}", json!({ "ok": true }));
    } else {
        println!("{message}");
    }
}

fn print_entities(entities: &[proto::EntityMetadata], as_json: bool) {
    if as_json {
        let values: Vec<Value> = entities
            .iter()
            .map(|e| {
                json!({
                    "entityId": e.instance_id,
                    "lastModifiedTime": time_text(&e.last_modified_time),
                    "backlog": e.backlog_queue_size,
                    "state": e.serialized_state.as_ref().map(|s| {
                        serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.clone()))
                    }),
                })
            })
            .collect();
        println!("{}", Value::Array(values));
        return;
    }
    let rows: Vec<Vec<String>> = entities
        .iter()
        .map(|e| {
            vec![
                e.instance_id.clone(),
                e.serialized_state.clone().unwrap_or_else(|| "-".into()),
                e.backlog_queue_size.to_string(),
                time_text(&e.last_modified_time),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ENTITY", "STATE", "BACKLOG", "MODIFIED"], &rows)
    );
}
