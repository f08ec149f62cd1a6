//! `basalt bench sidecar-sequence`: one orchestration calling a trivial
//! activity N times in sequence through the gRPC sidecar, to show how the
//! server's cost per step grows with the history. Every step's work item
//! carries the whole history (the SDKs ask for it), so a server that
//! rebuilds and re-encodes it each time costs quadratic time.
//!
//! `basalt serve` runs as a child process, so its CPU is measured alone
//! (the sum of its threads' run time, `/proc/PID/task/*/schedstat`, in
//! nanoseconds); the worker is a minimal gRPC worker in this process: it
//! decodes every work item as an SDK does but does not replay, so the run
//! is bound by the server. The figure is the server's CPU per step early
//! (steps 1 to W) and late (the last W steps), and their ratio. The check
//! reads the history back through `StreamInstanceHistory` and wants every
//! activity completed once, in order, and the orchestration's output.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use basalt_benches::report::{Check, Run};
use basalt_server::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use basalt_server::proto::{
    self, history_event::EventType, orchestrator_action::OrchestratorActionType,
    work_item::Request as WorkRequest,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::output::{Finished, Outcome, progress_bar};
use super::workloads::environment;
use crate::bench_cli::SidecarSequenceArgs;

const ORCHESTRATION: &str = "sequence";
const ACTIVITY: &str = "step";
/// Largest message either side takes (a long history is several MB).
const MESSAGE_BYTES_MAX: usize = 256 << 20;
/// Longest the worker waits for its next work item.
const STEP_WAIT_MAX: Duration = Duration::from_secs(60);
/// The client's HTTP/2 flow-control windows.
const WINDOW_BYTES: u32 = 8 << 20;

/// The CPU time of every live thread of `pid`, in nanoseconds.
fn threads_cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry?.path().join("schedstat");
        // A thread that exits between the listing and the read is skipped.
        if let Ok(text) = std::fs::read_to_string(&path) {
            let ran: u64 = text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("{} does not parse: {text:?}", path.display()))?;
            total += ran;
        }
    }
    Ok(total)
}

/// `basalt serve` in a child process on a fresh folder.
struct ServerChild {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl ServerChild {
    async fn start(parent: &std::path::Path, partitions: u32) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("basalt-bench-")
            .tempdir_in(parent)
            .with_context(|| format!("a hub folder under {}", parent.display()))?;
        let exe = std::env::current_exe().context("this program's path")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("hub"))
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
            .args(["--partitions", &partitions.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting basalt serve")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let addr = line
            .trim()
            .strip_prefix("basalt serving ")
            .and_then(|rest| {
                rest.split_whitespace()
                    .find_map(|p| p.strip_prefix("grpc="))
            })
            .with_context(|| format!("basalt serve did not start: {line:?}"))?
            .to_owned();
        Ok(ServerChild {
            child,
            addr,
            _dir: dir,
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server has exited")
    }
}

/// How far the orchestration has got (activities scheduled, completed),
/// from a work item's history, which must be exactly what this worker
/// did: activity k scheduled as action k with input k-1 and completed
/// with its input, in order. A server that sent a wrong history (a bad
/// encoding cache, say) fails the run here.
fn progress(request: &proto::OrchestratorRequest) -> anyhow::Result<(u64, u64)> {
    let (mut scheduled, mut completed) = (0u64, 0u64);
    for event in request
        .past_events
        .decoded()
        .iter()
        .chain(&request.head.new_events)
    {
        match &event.event_type {
            Some(EventType::TaskScheduled(task)) => {
                if i64::from(event.event_id) != scheduled as i64 + 1
                    || task.input.as_deref() != Some(scheduled.to_string().as_str())
                {
                    bail!(
                        "step history is wrong: activity {} scheduled as event {} with input {:?}",
                        scheduled + 1,
                        event.event_id,
                        task.input
                    );
                }
                scheduled += 1;
            }
            Some(EventType::TaskCompleted(task)) => {
                if i64::from(task.task_scheduled_id) != completed as i64 + 1
                    || task.result.as_deref() != Some(completed.to_string().as_str())
                {
                    bail!(
                        "step history is wrong: completion {} answers {} with {:?}",
                        completed + 1,
                        task.task_scheduled_id,
                        task.result
                    );
                }
                completed += 1;
            }
            _ => {}
        }
    }
    Ok((scheduled, completed))
}

/// The worker's answer to one step: the next activity, or the end.
fn decide(
    (scheduled, completed): (u64, u64),
    request: &proto::OrchestratorRequest,
    steps: u64,
    token: String,
) -> proto::OrchestratorResponse {
    let action = if scheduled > completed {
        None
    } else if scheduled < steps {
        Some(proto::OrchestratorAction {
            id: scheduled as i32 + 1,
            orchestrator_action_type: Some(OrchestratorActionType::ScheduleTask(
                proto::ScheduleTaskAction {
                    name: ACTIVITY.into(),
                    input: Some(scheduled.to_string()),
                    ..Default::default()
                },
            )),
        })
    } else {
        Some(proto::OrchestratorAction {
            id: scheduled as i32 + 1,
            orchestrator_action_type: Some(OrchestratorActionType::CompleteOrchestration(
                proto::CompleteOrchestrationAction {
                    orchestration_status: proto::OrchestrationStatus::Completed as i32,
                    result: Some(completed.to_string()),
                    ..Default::default()
                },
            )),
        })
    };
    proto::OrchestratorResponse {
        instance_id: request.head.instance_id.clone(),
        actions: action.into_iter().collect(),
        completion_token: token,
        ..Default::default()
    }
}

/// One run's figures.
struct SequenceRun {
    elapsed: Duration,
    /// (steps completed, server CPU ns) after each step.
    samples: Vec<(u64, u64)>,
    history_events: usize,
    /// The encoded size of the last step's request.
    last_step_bytes: usize,
    check: Check,
}

async fn run_once(
    client: &mut TaskHubSidecarServiceClient<Channel>,
    pid: u32,
    steps: u64,
    instance: &str,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<SequenceRun> {
    let mut work = client
        .get_work_items(proto::GetWorkItemsRequest::default())
        .await?
        .into_inner();
    client
        .start_instance(proto::CreateInstanceRequest {
            instance_id: instance.into(),
            name: ORCHESTRATION.into(),
            input: Some(steps.to_string()),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut samples = vec![(0, threads_cpu_ns(pid)?)];
    let mut done = false;
    let mut last_step_bytes = 0;
    while !done {
        // A wrong history could leave the worker with nothing to do: the
        // run fails instead of waiting for ever.
        let item = tokio::time::timeout(STEP_WAIT_MAX, work.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no work item for {} s after step {} of {steps}",
                    STEP_WAIT_MAX.as_secs(),
                    samples.last().map_or(0, |s| s.0)
                )
            })?
            .context("the server closed the work-item stream")??;
        match item.request {
            Some(WorkRequest::OrchestratorRequest(request)) => {
                let (scheduled, completed) = progress(&request)?;
                last_step_bytes = prost::Message::encoded_len(&request);
                if completed > samples.last().map_or(0, |s| s.0) {
                    samples.push((completed, threads_cpu_ns(pid)?));
                    bar.set_position(completed);
                }
                let response = decide(
                    (scheduled, completed),
                    &request,
                    steps,
                    item.completion_token,
                );
                done = response.actions.iter().any(|a| {
                    matches!(
                        a.orchestrator_action_type,
                        Some(OrchestratorActionType::CompleteOrchestration(_))
                    )
                });
                client.complete_orchestrator_task(response).await?;
            }
            Some(WorkRequest::ActivityRequest(request)) => {
                client
                    .complete_activity_task(proto::ActivityResponse {
                        instance_id: request
                            .orchestration_instance
                            .map(|i| i.instance_id)
                            .unwrap_or_default(),
                        task_id: request.task_id,
                        result: request.input,
                        completion_token: item.completion_token,
                        ..Default::default()
                    })
                    .await?;
            }
            Some(WorkRequest::HealthPing(_)) | None => {}
            Some(other) => bail!("unexpected work item: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let state = client
        .wait_for_instance_completion(proto::GetInstanceRequest {
            instance_id: instance.into(),
            get_inputs_and_outputs: true,
        })
        .await?
        .into_inner();
    let mut history = client
        .stream_instance_history(proto::StreamInstanceHistoryRequest {
            instance_id: instance.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(chunk) = history.next().await {
        events.extend(chunk?.events);
    }
    Ok(SequenceRun {
        elapsed,
        samples,
        history_events: events.len(),
        last_step_bytes,
        check: check_history(&state, &events, steps),
    })
}

/// Every activity scheduled and completed once, in order, with its own
/// input as its result, and the orchestration completed with the count.
fn check_history(
    state: &proto::GetInstanceResponse,
    events: &[proto::HistoryEvent],
    steps: u64,
) -> Check {
    let fail = |detail: String| Check {
        passed: false,
        detail,
    };
    let Some(orchestration) = state.orchestration_state.as_ref() else {
        return fail("the instance is gone".into());
    };
    if orchestration.orchestration_status != proto::OrchestrationStatus::Completed as i32 {
        return fail(format!(
            "status {} instead of completed",
            orchestration.orchestration_status
        ));
    }
    let want = steps.to_string();
    if orchestration.output.as_deref() != Some(want.as_str()) {
        return fail(format!(
            "output {:?}, expected {want}",
            orchestration.output
        ));
    }
    let mut next = 0u64;
    for event in events {
        if let Some(EventType::TaskCompleted(completed)) = &event.event_type {
            let expected = next.to_string();
            if completed.result.as_deref() != Some(expected.as_str()) {
                return fail(format!(
                    "activity {next} completed with {:?}",
                    completed.result
                ));
            }
            next += 1;
        }
    }
    if next != steps {
        return fail(format!("{next} activities completed of {steps}"));
    }
    Check {
        passed: true,
        detail: format!(
            "the orchestration completed with {steps}; its history ({} events) read back through StreamInstanceHistory has every activity completed once, in order",
            events.len()
        ),
    }
}

/// Server CPU-ms per step over steps `from..=to` (completed counts).
fn ms_per_step(samples: &[(u64, u64)], from: u64, to: u64) -> Option<f64> {
    let at = |n: u64| samples.iter().find(|s| s.0 >= n).copied();
    let (a, b) = (at(from.saturating_sub(1))?, at(to)?);
    (b.0 > a.0).then(|| (b.1 - a.1) as f64 / 1e6 / (b.0 - a.0) as f64)
}

/// Runs `basalt bench sidecar-sequence`.
pub async fn run(args: &SidecarSequenceArgs) -> anyhow::Result<()> {
    if args.steps < 10 {
        bail!("--steps must be at least 10");
    }
    if args.common.storage.is_some() {
        bail!("sidecar-sequence runs basalt serve on a local folder: leave out --storage");
    }
    let store = super::workloads::store(&args.common)?;
    let parent: PathBuf = match &store {
        basalt_benches::store::BenchStore::Local { parent, .. } => parent.clone(),
        _ => bail!("sidecar-sequence needs a local folder (--dir)"),
    };
    let environment = environment(&store);
    let window = args.window.clamp(1, args.steps / 2);
    let mut finished = Vec::new();
    let mut notes = Vec::new();
    for round in 1..=args.common.repeat.max(1) {
        let server = ServerChild::start(&parent, args.common.partitions).await?;
        // Flow-control windows of megabytes, as the SDKs' gRPC libraries
        // grow theirs (gRPC core probes the bandwidth-delay product),
        // rather than HTTP/2's 64 KiB default: a step of a long history
        // is megabytes.
        let channel = Channel::from_shared(format!("http://{}", server.addr))?
            .initial_stream_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES)
            .connect()
            .await
            .with_context(|| format!("connecting to basalt serve at {}", server.addr))?;
        let mut client = TaskHubSidecarServiceClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        let bar = progress_bar(args.steps, &format!("sidecar-sequence run {round}"));
        let outcome = run_once(
            &mut client,
            server.pid()?,
            args.steps,
            &format!("sequence-{round}"),
            &bar,
        )
        .await;
        bar.finish_and_clear();
        drop(server);
        let outcome = outcome?;
        let mut run = Run::new("basalt", args.steps, 0, outcome.elapsed);
        let early = ms_per_step(&outcome.samples, 1, window);
        let late = ms_per_step(&outcome.samples, args.steps - window + 1, args.steps);
        let whole = ms_per_step(&outcome.samples, 1, args.steps);
        run.repeat = round;
        run.server_cpu_ms_per_instance = whole;
        run.extra.insert("unit".into(), "step".into());
        run.extra
            .insert("history_events".into(), outcome.history_events.into());
        run.extra
            .insert("last_step_bytes".into(), outcome.last_step_bytes.into());
        run.extra.insert(
            "server_cpu_ms_per_step_early".into(),
            serde_json::json!({"steps": [1, window], "ms": early}),
        );
        run.extra.insert(
            "server_cpu_ms_per_step_late".into(),
            serde_json::json!({"steps": [args.steps - window + 1, args.steps], "ms": late}),
        );
        let ratio = early.zip(late).map(|(e, l)| l / e.max(1e-9));
        run.extra.insert("late_over_early".into(), ratio.into());
        let tenth = (args.steps / 10).max(1);
        let curve: Vec<serde_json::Value> = (1..=10)
            .filter_map(|k| {
                let to = k * tenth;
                ms_per_step(&outcome.samples, to - tenth + 1, to)
                    .map(|ms| serde_json::json!({"steps_to": to, "ms": ms}))
            })
            .collect();
        run.extra
            .insert("server_cpu_ms_per_step_by_tenth".into(), curve.into());
        notes.push(format!(
            "run {round}: server CPU per step {} ms over steps 1-{window}, {} ms over steps {}-{} ({} events, the last step {} KiB): {} late / early",
            early.map_or("-".into(), |v| format!("{v:.3}")),
            late.map_or("-".into(), |v| format!("{v:.3}")),
            args.steps - window + 1,
            args.steps,
            outcome.history_events,
            outcome.last_step_bytes / 1024,
            ratio.map_or("-".into(), |v| format!("{v:.2}x")),
        ));
        finished.push(Finished {
            check: outcome.check,
            run,
        });
    }
    Outcome {
        workload: "sidecar-sequence",
        title: format!(
            "sidecar-sequence: one orchestration calling a trivial activity {} times in sequence through basalt serve (a child process; every step's work item carries the whole history), driven by a minimal gRPC worker that does not replay; cpu = the server's; per s = steps; {}",
            args.steps,
            store.label()
        ),
        settings: args,
        common: &args.common,
        environment,
        finished,
        notes,
    }
    .report()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_step_is_taken_between_samples() {
        let samples = [(0, 0), (1, 1_000_000), (2, 3_000_000), (4, 7_000_000)];
        assert_eq!(ms_per_step(&samples, 1, 2), Some(1.5));
        assert_eq!(ms_per_step(&samples, 3, 4), Some(2.0));
        assert_eq!(ms_per_step(&samples, 1, 9), None);
    }
}
