//! Whole workloads on the real engine with the Rust SDK worker in the
//! same process: `checkout`, `hello5`, `sequence`, `fanout`, `bank` and
//! `latency`. Each run opens a fresh task hub on the configured store,
//! measures from the first start to the last completion, checks every
//! output (a wrong one fails the run's check, it is not just counted),
//! and reports in the one [`Run`] format: throughput, client-side latency,
//! every durable write, CPU (user and system) and memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::sdk::{ActivityError, OrchestrationError, Registry};
use basalt_runtime::{
    Backend, EntityId, EntityOperation, InstanceId, InstanceState, OrchestrationStatus,
    StartRequest, Worker, WorkerOptions,
};
use basalt_storage::{LogOptions, LogStats};
use futures::future::join_all;

use crate::report::{Check, Run};
use crate::resources::{self, CpuTime};
use crate::store::{BenchStore, FreshHub, StoreError};

/// One configuration of the engine a workload runs on.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// The configuration's name in reports (`group-commit`, `per-event`,
    /// `no-pipelining`, `memory`).
    pub name: String,
    /// Where the hub lives.
    pub store: BenchStore,
    /// Group commit on (default) or off (one storage write per event).
    pub group_commit: bool,
    /// Local work before durability (default) or after it.
    pub pipelining: bool,
    /// Partitions of the hub.
    pub partitions: u32,
    /// Orchestration steps run at once by the worker.
    pub orchestration_concurrency: usize,
    /// Activities run at once by the worker.
    pub activity_concurrency: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            name: "group-commit".into(),
            store: BenchStore::Memory,
            group_commit: true,
            pipelining: true,
            partitions: 12,
            orchestration_concurrency: 64,
            activity_concurrency: 256,
        }
    }
}

/// What one run of a workload gives: its figures and its check.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The figures.
    pub run: Run,
    /// The run's consistency check.
    pub check: Check,
}

/// Why a run could not be made (a run that ran but whose check failed is
/// an [`Outcome`] with `check.passed == false`, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The engine could not open.
    #[error("engine: {0}")]
    Open(#[from] basalt_engine::OpenError),
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backend refused or failed a request.
    #[error("backend: {0}")]
    Backend(#[from] basalt_runtime::Error),
    /// The workload's registry is invalid.
    #[error("registry: {0}")]
    Registry(#[from] basalt_runtime::sdk::RegistryError),
    /// The workload's settings cannot be run.
    #[error("invalid settings: {0}")]
    Invalid(String),
}

const HELLO5: &str = "hello5";
const HELLO3: &str = "hello3";
const SEQUENCE: &str = "sequence";
const FANOUT: &str = "fanout";
const HELLO: &str = "hello";
const ADD: &str = "add";

fn registry() -> Result<Registry, WorkloadError> {
    fn hellos(
        count: usize,
    ) -> impl Fn(basalt_runtime::sdk::OrchestrationContext, String) -> HelloFuture + Send + Sync + 'static
    {
        move |ctx, name: String| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(count);
                for i in 0..count {
                    out.push(
                        ctx.call_activity::<_, String>(HELLO, &format!("{name}{i}"))
                            .await?,
                    );
                }
                Ok::<_, OrchestrationError>(out)
            })
        }
    }
    Ok(Registry::builder()
        .register_orchestration_typed::<String, Vec<String>, _, _>(HELLO5, hellos(5))
        .register_orchestration_typed::<String, Vec<String>, _, _>(HELLO3, hellos(3))
        .register_orchestration_typed::<u64, u64, _, _>(SEQUENCE, |ctx, steps: u64| async move {
            let mut done = 0u64;
            for i in 0..steps {
                let echoed: String = ctx.call_activity(HELLO, &i.to_string()).await?;
                if echoed == format!("hello {i}") {
                    done += 1;
                }
            }
            Ok::<_, OrchestrationError>(done)
        })
        .register_orchestration_typed::<(u64, u64), u64, _, _>(
            FANOUT,
            |ctx, (base, width): (u64, u64)| async move {
                let calls: Vec<_> = (0..width)
                    .map(|j| ctx.call_activity::<_, u64>(ADD, &(base, j)))
                    .collect();
                let mut sum = 0u64;
                for result in join_all(calls).await {
                    sum += result?;
                }
                Ok::<_, OrchestrationError>(sum)
            },
        )
        .register_activity_typed::<String, String, _, _>(HELLO, |_ctx, who: String| async move {
            Ok::<_, ActivityError>(format!("hello {who}"))
        })
        .register_activity_typed::<(u64, u64), u64, _, _>(
            ADD,
            |_ctx, (a, b): (u64, u64)| async move { Ok::<_, ActivityError>(a + b) },
        )
        .build()?)
}

type HelloFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<String>, OrchestrationError>> + Send>,
>;

/// The output `hello5`/`hello3` instance `name` must complete with.
fn hellos_expected(name: &str, count: usize) -> String {
    let out: Vec<String> = (0..count).map(|i| format!("hello {name}{i}")).collect();
    serde_json::to_string(&out).unwrap_or_default()
}

/// The sum a `fanout` instance with `base` and `width` must return.
fn fanout_expected(base: u64, width: u64) -> u64 {
    base * width + width * width.saturating_sub(1) / 2
}

/// An engine and worker on a fresh hub, with the memory it started from.
struct Running {
    engine: Engine,
    backend: Arc<dyn Backend>,
    worker: basalt_runtime::WorkerHandle,
    /// Resident memory before the engine opened.
    rss_base: Option<u64>,
    _hub: FreshHub,
}

async fn start(config: &WorkloadConfig, registry: Registry) -> Result<Running, WorkloadError> {
    if config.partitions == 0 {
        return Err(WorkloadError::Invalid(
            "partitions must be at least 1".into(),
        ));
    }
    // Memory left by an earlier run goes back first, so this run's peak
    // and growth are its own.
    resources::reset_peak_rss();
    let rss_base = resources::rss_bytes();
    let (storage, hub) = config.store.fresh()?;
    let options = EngineOptions {
        partition_count: config.partitions,
        log: LogOptions {
            group_commit: config.group_commit,
            ..LogOptions::default()
        },
        pipelining: config.pipelining,
        ..EngineOptions::default()
    };
    let engine = Engine::open(storage, options).await?;
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry),
        WorkerOptions {
            orchestration_concurrency: config.orchestration_concurrency,
            activity_concurrency: config.activity_concurrency,
            ..WorkerOptions::default()
        },
    );
    Ok(Running {
        engine,
        backend,
        worker,
        rss_base,
        _hub: hub,
    })
}

impl Running {
    async fn stop(self) {
        self.worker.shutdown().await;
        self.engine.shutdown().await;
    }
}

/// Fewest completed instances for which RSS per 1,000 retained is given.
const RETAINED_FOR_MEMORY_FIGURE: u64 = 100;

/// The counters at the start of the measured phase.
struct Meter {
    log: LogStats,
    cpu: Option<CpuTime>,
    started: Instant,
}

impl Meter {
    async fn start(running: &Running) -> Result<Meter, WorkloadError> {
        Ok(Meter {
            log: running.engine.log_stats().await?,
            cpu: resources::own_cpu(),
            started: Instant::now(),
        })
    }

    /// The run's figures, read while the engine still holds every
    /// finished instance (so the memory they retain is counted).
    async fn finish(
        self,
        running: &Running,
        config: &str,
        driven: &Driven,
    ) -> Result<Run, WorkloadError> {
        let elapsed = self.started.elapsed();
        let cpu = resources::own_cpu();
        let log = running.engine.log_stats().await?;
        let mut run = Run::new(config, driven.completed, driven.failed, elapsed);
        run.latency_ms = crate::report::Latency::from_micros(&driven.latency_us);
        run.set_writes(log.since(&self.log).into());
        if let (Some(before), Some(after)) = (self.cpu, cpu) {
            run.set_cpu(after.since(&before));
        }
        run.peak_rss_bytes = resources::peak_rss_bytes();
        // Per 1,000 retained instances means little for a handful.
        if let (Some(base), Some(now)) = (running.rss_base, resources::rss_bytes())
            && driven.completed >= RETAINED_FOR_MEMORY_FIGURE
        {
            run.rss_bytes_per_1000_retained =
                Some(now.saturating_sub(base) as f64 * 1000.0 / driven.completed as f64);
        }
        Ok(run)
    }
}

/// What driving a set of instances to completion found.
struct Driven {
    completed: u64,
    failed: u64,
    /// Outputs that completed but were wrong.
    wrong: u64,
    /// The first failure or wrong output, for the check's detail.
    first_problem: Option<String>,
    latency_us: hdrhistogram::Histogram<u64>,
}

impl Driven {
    fn new() -> Result<Driven, WorkloadError> {
        Ok(Driven {
            completed: 0,
            failed: 0,
            wrong: 0,
            first_problem: None,
            latency_us: hdrhistogram::Histogram::new(3)
                .map_err(|e| WorkloadError::Invalid(e.to_string()))?,
        })
    }

    fn record(
        &mut self,
        state: &InstanceState,
        latency: Duration,
        check: &mut dyn FnMut(&InstanceState) -> Result<(), String>,
    ) {
        let _ = self
            .latency_us
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        if state.status != OrchestrationStatus::Completed {
            self.failed += 1;
            self.first_problem.get_or_insert_with(|| {
                format!(
                    "instance {} ended {}: {}",
                    state.instance_id,
                    state.status,
                    state
                        .failure
                        .as_ref()
                        .map(|f| f.to_string())
                        .unwrap_or_default()
                )
            });
            return;
        }
        self.completed += 1;
        if let Err(problem) = check(state) {
            self.wrong += 1;
            self.first_problem
                .get_or_insert_with(|| format!("instance {}: {problem}", state.instance_id));
        }
    }

    /// The check of this run: every instance completed with the right
    /// output, and whatever `more` (the workload's own invariant) says.
    fn check(&self, what: &str, more: Result<String, String>) -> Check {
        let problems = self.failed + self.wrong;
        match (problems, more) {
            (0, Ok(detail)) => Check {
                passed: true,
                detail: format!(
                    "{} {what} completed with the expected output; {detail}",
                    self.completed
                ),
            },
            (0, Err(problem)) => Check {
                passed: false,
                detail: problem,
            },
            (_, more) => Check {
                passed: false,
                detail: format!(
                    "{} failed, {} wrong output(s) of {} {what}: {}{}",
                    self.failed,
                    self.wrong,
                    self.completed + self.failed,
                    self.first_problem.clone().unwrap_or_default(),
                    more.err().map(|e| format!("; {e}")).unwrap_or_default()
                ),
            },
        }
    }
}

/// Starts an instance as a client should under load: a start refused as
/// overloaded is retried after the delay the engine names (at most 100 ms
/// at a time), so a burst larger than the engine's queue limit still runs.
pub(crate) async fn start_retrying(
    backend: &dyn Backend,
    request: StartRequest,
) -> Result<InstanceId, basalt_runtime::Error> {
    loop {
        match backend.start_instance(request.clone()).await {
            Err(basalt_runtime::Error::Overloaded { retry_after_ms, .. }) => {
                tokio::time::sleep(Duration::from_millis(retry_after_ms.min(100))).await;
            }
            other => return other,
        }
    }
}

async fn start_and_wait(
    backend: Arc<dyn Backend>,
    request: StartRequest,
    since: Instant,
) -> Result<(InstanceState, Duration), basalt_runtime::Error> {
    let id = start_retrying(backend.as_ref(), request).await?;
    let state = backend
        .wait_for_completion(&id, Duration::from_secs(600))
        .await?;
    Ok((state, since.elapsed()))
}

/// Starts `instances` orchestrations of `name` at once, with `input(i)`
/// as instance `i`'s input, and waits for each (by notification),
/// checking its output with `check`. Latency is the client's: from just
/// before its start request to the moment it sees the completion.
async fn drive_burst(
    running: &Running,
    name: &str,
    instances: u64,
    input: impl Fn(u64) -> String,
    progress: &(dyn Fn(u64) + Sync),
    check: &mut dyn FnMut(&InstanceState) -> Result<(), String>,
) -> Result<Driven, WorkloadError> {
    if instances == 0 {
        return Err(WorkloadError::Invalid("nothing to run: 0 instances".into()));
    }
    let mut waits = Vec::with_capacity(instances as usize);
    for i in 0..instances {
        let request = StartRequest {
            name: name.into(),
            instance_id: Some(format!("{name}-{i}")),
            input: Some(input(i)),
            ..StartRequest::default()
        };
        waits.push(tokio::spawn(start_and_wait(
            running.backend.clone(),
            request,
            Instant::now(),
        )));
    }
    collect(waits, progress, check).await
}

/// A spawned start-and-wait of one instance.
type Waiter = tokio::task::JoinHandle<Result<(InstanceState, Duration), basalt_runtime::Error>>;

/// Waits for every waiter in order, recording each outcome (and counting
/// it into `progress`).
async fn collect(
    waits: Vec<Waiter>,
    progress: &(dyn Fn(u64) + Sync),
    check: &mut dyn FnMut(&InstanceState) -> Result<(), String>,
) -> Result<Driven, WorkloadError> {
    let mut driven = Driven::new()?;
    for (done, wait) in waits.into_iter().enumerate() {
        let (state, latency) = wait
            .await
            .map_err(|e| basalt_runtime::Error::Storage(format!("a waiter failed: {e}")))??;
        driven.record(&state, latency, check);
        progress(done as u64 + 1);
    }
    Ok(driven)
}

/// Index `i` of an instance id `name-i`.
fn index_of(id: &InstanceId) -> Option<u64> {
    id.as_str().rsplit_once('-')?.1.parse().ok()
}

/// Sends `operation` with `input` to every entity of `ids` and waits until
/// each exists (set-up, outside the measured phase).
async fn set_entities(
    running: &Running,
    ids: &[EntityId],
    operation: &str,
    input: &str,
) -> Result<(), WorkloadError> {
    for id in ids {
        let set = EntityOperation {
            name: operation.into(),
            input: Some(input.into()),
        };
        running.backend.signal_entity(id, set, None).await?;
    }
    for id in ids {
        let mut tries = 0;
        while running.backend.get_entity(id).await?.is_none() {
            tries += 1;
            if tries > 10_000 {
                return Err(WorkloadError::Backend(basalt_runtime::Error::Timeout(
                    10_000,
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}

/// The integer state of an entity.
async fn entity_number(running: &Running, id: &EntityId) -> Result<Option<i64>, WorkloadError> {
    Ok(running
        .backend
        .get_entity(id)
        .await?
        .and_then(|s| s.state)
        .and_then(|s| s.parse().ok()))
}

/// `checkout`: `instances` checkouts of 2 random items from `pool`
/// products stocked with `initial_stock` units each, all started at once.
/// Checked: every checkout completed with a receipt, and per product the
/// stock read back equals initial stock minus the units the receipts say
/// were reserved, never negative.
pub async fn checkout(
    config: &WorkloadConfig,
    instances: u64,
    pool: u64,
    initial_stock: i64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, WorkloadError> {
    use crate::checkout::{self, Receipt, Requests};

    if pool == 0 {
        return Err(WorkloadError::Invalid(
            "the pool needs at least 1 product".into(),
        ));
    }
    let running = start(config, checkout::registry()?).await?;
    let stocks: Vec<EntityId> = (0..pool)
        .map(|p| checkout::stock_entity(&checkout::product(p)))
        .collect::<Result<_, _>>()?;
    set_entities(&running, &stocks, "set", &initial_stock.to_string()).await?;
    let mut requests = Requests::new(7, pool);
    let inputs: Vec<String> = (0..instances)
        .map(|_| serde_json::to_string(&requests.next_request()).unwrap_or_default())
        .collect();

    let mut reserved = vec![0i64; pool as usize];
    // Per product, the smallest quantity refused for lack of stock: stock
    // only goes down, so the final stock must be below it.
    let mut smallest_refused: Vec<Option<i64>> = vec![None; pool as usize];
    let mut refused_lines = 0u64;
    let product_index = |item: &checkout::Item| {
        item.product
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < pool as usize)
            .ok_or_else(|| format!("the receipt names an unknown product {}", item.product))
    };
    let mut check_receipt = |state: &InstanceState| {
        let receipt: Receipt = serde_json::from_str(state.output.as_deref().unwrap_or("null"))
            .map_err(|e| format!("the receipt does not decode: {e}"))?;
        let order: Vec<checkout::Item> =
            serde_json::from_str(state.input.as_deref().unwrap_or("null"))
                .map_err(|e| format!("the order does not decode: {e}"))?;
        // Every line of the order is either reserved or refused, once.
        let mut lines: Vec<&checkout::Item> =
            receipt.reserved.iter().chain(&receipt.refused).collect();
        let mut ordered: Vec<&checkout::Item> = order.iter().collect();
        let key = |i: &&checkout::Item| (i.product.clone(), i.quantity);
        lines.sort_by_key(key);
        ordered.sort_by_key(key);
        if lines != ordered {
            return Err("the receipt's lines are not the order's lines".into());
        }
        refused_lines += receipt.refused.len() as u64;
        for item in &receipt.refused {
            let slot = &mut smallest_refused[product_index(item)?];
            *slot = Some(slot.map_or(item.quantity, |q| q.min(item.quantity)));
        }
        for item in &receipt.reserved {
            reserved[product_index(item)?] += item.quantity;
        }
        Ok(())
    };
    let meter = Meter::start(&running).await?;
    let driven = drive_burst(
        &running,
        checkout::CHECKOUT,
        instances,
        |i| inputs[i as usize].clone(),
        progress,
        &mut check_receipt,
    )
    .await?;
    let mut run = meter.finish(&running, &config.name, &driven).await?;

    let mut stock_problem = None;
    let mut units_reserved = 0;
    for (p, id) in stocks.iter().enumerate() {
        units_reserved += reserved[p];
        let problem = match entity_number(&running, id).await? {
            None => Some(format!("product p{p} has no stock left to read")),
            Some(left) if left < 0 => Some(format!("product p{p}: stock went negative ({left})")),
            Some(left) if initial_stock - left != reserved[p] => Some(format!(
                "product p{p}: {} units left the stock but the receipts reserved {}",
                initial_stock - left,
                reserved[p]
            )),
            Some(left) if smallest_refused[p].is_some_and(|q| left >= q) => Some(format!(
                "product p{p}: a line of {} was refused, but {left} units are left",
                smallest_refused[p].unwrap_or_default()
            )),
            Some(_) => None,
        };
        if stock_problem.is_none() {
            stock_problem = problem;
        }
    }
    run.extra
        .insert("refused_lines".into(), refused_lines.into());
    run.extra
        .insert("units_reserved".into(), units_reserved.into());
    let check = driven.check(
        "checkouts",
        match stock_problem {
            None => Ok(format!(
                "stock read back from {pool} products matches the receipts ({units_reserved} units reserved, {refused_lines} lines refused)"
            )),
            Some(problem) => Err(problem),
        },
    );
    running.stop().await;
    Ok(Outcome { run, check })
}

/// `hello5`: `instances` orchestrations, each calling 5 trivial activities
/// in sequence, all started at once; every output is checked.
pub async fn hello5(
    config: &WorkloadConfig,
    instances: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, WorkloadError> {
    let running = start(config, registry()?).await?;
    let meter = Meter::start(&running).await?;
    let mut check = |state: &InstanceState| {
        let i = index_of(&state.instance_id).ok_or("unexpected instance id")?;
        let want = hellos_expected(&format!("h{i}"), 5);
        match state.output.as_deref() {
            Some(got) if got == want => Ok(()),
            got => Err(format!("output {got:?}, expected {want}")),
        }
    };
    let driven = drive_burst(
        &running,
        HELLO5,
        instances,
        |i| format!("\"h{i}\""),
        progress,
        &mut check,
    )
    .await?;
    let run = meter.finish(&running, &config.name, &driven).await?;
    let check = driven.check("orchestrations", Ok("5 activity results each".into()));
    running.stop().await;
    Ok(Outcome { run, check })
}

/// `sequence`: one orchestration calling a trivial activity `steps` times
/// in sequence; its output must count every step answered correctly.
pub async fn sequence(config: &WorkloadConfig, steps: u64) -> Result<Outcome, WorkloadError> {
    if steps == 0 {
        return Err(WorkloadError::Invalid(
            "a sequence needs at least 1 step".into(),
        ));
    }
    let running = start(config, registry()?).await?;
    let meter = Meter::start(&running).await?;
    let mut check = |state: &InstanceState| match state.output.as_deref() {
        Some(got) if got == steps.to_string() => Ok(()),
        got => Err(format!("{got:?} of {steps} steps answered correctly")),
    };
    let driven = drive_burst(
        &running,
        SEQUENCE,
        1,
        |_| steps.to_string(),
        &|_| {},
        &mut check,
    )
    .await?;
    let mut run = meter.finish(&running, &config.name, &driven).await?;
    run.extra.insert("steps".into(), steps.into());
    run.extra.insert(
        "ms_per_step".into(),
        (run.elapsed_s * 1000.0 / steps.max(1) as f64).into(),
    );
    let check = driven.check(
        "orchestration",
        Ok(format!("{steps} steps answered in order")),
    );
    running.stop().await;
    Ok(Outcome { run, check })
}

/// `fanout`: `instances` orchestrations, each calling `width` activities
/// at once and summing their results (fan-out, fan-in); all started at
/// once; every sum is checked.
pub async fn fanout(
    config: &WorkloadConfig,
    instances: u64,
    width: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, WorkloadError> {
    let running = start(config, registry()?).await?;
    let meter = Meter::start(&running).await?;
    let mut check = |state: &InstanceState| {
        let i = index_of(&state.instance_id).ok_or("unexpected instance id")?;
        let want = fanout_expected(i * 1000, width);
        match state.output.as_deref() {
            Some(got) if got == want.to_string() => Ok(()),
            got => Err(format!("sum {got:?}, expected {want}")),
        }
    };
    let driven = drive_burst(
        &running,
        FANOUT,
        instances,
        |i| format!("[{},{width}]", i * 1000),
        progress,
        &mut check,
    )
    .await?;
    let mut run = meter.finish(&running, &config.name, &driven).await?;
    run.extra.insert("width".into(), width.into());
    let check = driven.check(
        "orchestrations",
        Ok(format!("each summed {width} activity results")),
    );
    running.stop().await;
    Ok(Outcome { run, check })
}

/// `bank`: `transfers` transfers between `accounts` accounts (each
/// starting with `initial_balance`) pinned to different partitions, each
/// locking both accounts, all started at once. Checked: every transfer
/// completed, no balance is negative and the total is unchanged.
pub async fn bank(
    config: &WorkloadConfig,
    transfers: u64,
    accounts: u64,
    initial_balance: i64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, WorkloadError> {
    use crate::bank::{self, Transfers};

    if accounts < 2 {
        return Err(WorkloadError::Invalid(
            "bank needs at least 2 accounts".into(),
        ));
    }
    if config.partitions < 2 {
        return Err(WorkloadError::Invalid(
            "bank needs at least 2 partitions: its transfers cross partitions".into(),
        ));
    }
    let running = start(config, bank::registry()?).await?;
    let ids: Vec<EntityId> = (0..accounts)
        .map(|i| bank::account_entity(&bank::account(i, config.partitions)))
        .collect::<Result<_, _>>()?;
    set_entities(&running, &ids, "set", &initial_balance.to_string()).await?;
    let mut generator = Transfers::new(11, accounts, config.partitions);
    let inputs: Vec<String> = (0..transfers)
        .map(|_| serde_json::to_string(&generator.next_transfer()).unwrap_or_default())
        .collect();
    let mut moved = 0u64;
    let mut check = |state: &InstanceState| match state.output.as_deref() {
        Some("true") => {
            moved += 1;
            Ok(())
        }
        Some("false") => Ok(()),
        got => Err(format!("output {got:?}, expected true or false")),
    };
    let meter = Meter::start(&running).await?;
    let driven = drive_burst(
        &running,
        bank::TRANSFER,
        transfers,
        |i| inputs[i as usize].clone(),
        progress,
        &mut check,
    )
    .await?;
    let mut run = meter.finish(&running, &config.name, &driven).await?;
    let mut total_after = 0i64;
    let mut problem = None;
    for (i, id) in ids.iter().enumerate() {
        match entity_number(&running, id).await? {
            Some(balance) if balance >= 0 => total_after += balance,
            Some(balance) => {
                problem.get_or_insert(format!("account {i} went negative: {balance}"));
                total_after += balance;
            }
            None => {
                problem.get_or_insert(format!("account {i} has no balance"));
            }
        }
    }
    let total_before = initial_balance * accounts as i64;
    if problem.is_none() && total_after != total_before {
        problem = Some(format!(
            "total balance changed from {total_before} to {total_after}"
        ));
    }
    // Transfers move 1-100 from balances that start at `initial_balance`:
    // if none moved money, the accounts did not answer as they should.
    if problem.is_none() && moved == 0 && driven.completed > 0 && initial_balance >= 100 {
        problem = Some(format!(
            "none of {} transfers moved money, though every account started with {initial_balance}",
            driven.completed
        ));
    }
    run.extra.insert("moved".into(), moved.into());
    let check = driven.check(
        "transfers",
        match problem {
            None => Ok(format!(
                "total balance conserved ({total_before}); {moved} transfers moved money"
            )),
            Some(problem) => Err(problem),
        },
    );
    running.stop().await;
    Ok(Outcome { run, check })
}

/// `latency`: `hello3` orchestrations (3 activities in sequence) started
/// at a fixed rate of `rate_per_s` for `duration` — an open loop, as
/// requests arrive at a service. Each latency runs from the instance's
/// scheduled arrival (so a late start counts against it) to the moment
/// the client sees it complete. Every output is checked.
pub async fn latency(
    config: &WorkloadConfig,
    rate_per_s: f64,
    duration: Duration,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, WorkloadError> {
    if !(rate_per_s > 0.0 && rate_per_s <= 100_000.0) {
        return Err(WorkloadError::Invalid(format!(
            "rate must be in (0, 100000] per second, got {rate_per_s}"
        )));
    }
    let instances = (rate_per_s * duration.as_secs_f64()).round().max(1.0) as u64;
    let period = Duration::from_secs_f64(1.0 / rate_per_s);
    let running = start(config, registry()?).await?;
    let meter = Meter::start(&running).await?;
    let origin = tokio::time::Instant::now();
    let mut waits = Vec::with_capacity(instances as usize);
    for i in 0..instances {
        let arrival = origin + period.mul_f64(i as f64);
        tokio::time::sleep_until(arrival).await;
        let request = StartRequest {
            name: HELLO3.into(),
            instance_id: Some(format!("{HELLO3}-{i}")),
            input: Some(format!("\"l{i}\"")),
            ..StartRequest::default()
        };
        waits.push(tokio::spawn(start_and_wait(
            running.backend.clone(),
            request,
            arrival.into_std(),
        )));
        progress(i + 1);
    }
    let mut check = |state: &InstanceState| {
        let i = index_of(&state.instance_id).ok_or("unexpected instance id")?;
        let want = hellos_expected(&format!("l{i}"), 3);
        match state.output.as_deref() {
            Some(got) if got == want => Ok(()),
            got => Err(format!("output {got:?}, expected {want}")),
        }
    };
    let driven = collect(waits, &|_| {}, &mut check).await?;
    let mut run = meter.finish(&running, &config.name, &driven).await?;
    run.extra.insert("rate_per_s".into(), rate_per_s.into());
    let check = driven.check(
        "orchestrations",
        Ok(format!(
            "3 activity results each, started at {rate_per_s}/s"
        )),
    );
    running.stop().await;
    Ok(Outcome { run, check })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> WorkloadConfig {
        WorkloadConfig {
            partitions: 4,
            ..WorkloadConfig::default()
        }
    }

    #[test]
    fn expected_outputs() {
        assert_eq!(fanout_expected(1000, 4), 4006);
        assert_eq!(hellos_expected("h1", 2), r#"["hello h10","hello h11"]"#);
        assert_eq!(
            index_of(&InstanceId::new("hello5-42").expect("id")),
            Some(42)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workload_passes_its_check_in_memory() {
        let config = memory();
        let outcome = hello5(&config, 50, &|_| {}).await.expect("hello5");
        assert!(outcome.check.passed, "{}", outcome.check.detail);
        assert_eq!(outcome.run.completed, 50);
        let outcome = sequence(&config, 20).await.expect("sequence");
        assert!(outcome.check.passed, "{}", outcome.check.detail);
        let outcome = fanout(&config, 20, 5, &|_| {}).await.expect("fanout");
        assert!(outcome.check.passed, "{}", outcome.check.detail);
        let outcome = checkout(&config, 100, 5, 20, &|_| {})
            .await
            .expect("checkout");
        assert!(outcome.check.passed, "{}", outcome.check.detail);
        // 100 checkouts of 2-6 units over 5 x 20 units: some are refused.
        assert!(outcome.run.extra["refused_lines"].as_u64() > Some(0));
        let outcome = latency(&config, 200.0, Duration::from_millis(100), &|_| {})
            .await
            .expect("latency");
        assert!(outcome.check.passed, "{}", outcome.check.detail);
        assert_eq!(outcome.run.completed, 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_pipelining_and_per_event_configurations_run() {
        for config in [
            WorkloadConfig {
                pipelining: false,
                ..memory()
            },
            WorkloadConfig {
                group_commit: false,
                ..memory()
            },
        ] {
            let outcome = hello5(&config, 30, &|_| {}).await.expect("hello5");
            assert!(outcome.check.passed, "{}", outcome.check.detail);
            assert!(outcome.run.storage_writes_per_instance > Some(0.0));
        }
    }

    #[test]
    fn a_wrong_output_fails_the_check() {
        let mut driven = Driven::new().expect("histogram");
        let state = InstanceState {
            instance_id: InstanceId::new("x-1").expect("id"),
            name: "x".into(),
            version: None,
            status: OrchestrationStatus::Completed,
            input: None,
            output: Some("41".into()),
            custom_status: None,
            failure: None,
            created_at_ms: 0,
            last_updated_at_ms: 0,
            scheduled_start_ms: None,
            parent: None,
            tags: Default::default(),
        };
        driven.record(&state, Duration::from_millis(1), &mut |s| {
            if s.output.as_deref() == Some("42") {
                Ok(())
            } else {
                Err("not 42".into())
            }
        });
        let check = driven.check("things", Ok("fine".into()));
        assert!(!check.passed);
        assert!(check.detail.contains("not 42"), "{}", check.detail);
    }
}
