//! Whole workloads on the real engine with the Rust SDK worker in process:
//! `hello5` (N orchestrations each calling 5 trivial activities in
//! sequence, all started at once) and `sequence` (one orchestration calling
//! a trivial activity N times). Each run opens a fresh task hub, measures
//! from the first start to the last completion, and reports throughput,
//! latency percentiles, storage writes and CPU time per orchestration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::sdk::{ActivityError, OrchestrationError, Registry};
use basalt_runtime::{
    Backend, InstanceId, OrchestrationStatus, StartRequest, Worker, WorkerOptions,
};
use basalt_storage::{LogOptions, Storage};
use serde::Serialize;

/// Where the task hub lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HubStore {
    /// A fresh local directory, fsync on (the embedded default).
    Local,
    /// In memory: the upper bound with storage costs removed.
    Memory,
}

/// One workload run's settings.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Where the hub lives.
    pub store: HubStore,
    /// Group commit on (default) or off (one storage write per event).
    pub group_commit: bool,
    /// Partitions of the hub.
    pub partitions: u32,
    /// Parent folder for local hubs (default: the system temp folder).
    pub dir: Option<PathBuf>,
    /// Orchestration steps run at once by the worker.
    pub orchestration_concurrency: usize,
    /// Activities run at once by the worker.
    pub activity_concurrency: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            store: HubStore::Local,
            group_commit: true,
            partitions: 12,
            dir: None,
            orchestration_concurrency: 64,
            activity_concurrency: 256,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadOutcome {
    /// Orchestrations completed.
    pub orchestrations: u64,
    /// First start to last completion.
    pub elapsed: Duration,
    /// Orchestrations per second.
    pub orchestrations_per_sec: f64,
    /// Latency start -> completion, milliseconds: p50, p90, p99, max.
    pub latency_ms: [f64; 4],
    /// Storage writes (group commits) during the run.
    pub storage_writes: u64,
    /// Events logged during the run.
    pub events: u64,
    /// Process CPU time (user + system) per orchestration, milliseconds;
    /// `None` where `/proc/self/stat` is not available.
    pub cpu_ms_per_orchestration: Option<f64>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The engine could not open.
    #[error("engine: {0}")]
    Open(#[from] basalt_engine::OpenError),
    /// Storage could not be set up.
    #[error("storage: {0}")]
    Storage(#[from] basalt_storage::Error),
    /// The backend refused or failed a request.
    #[error("backend: {0}")]
    Backend(#[from] basalt_runtime::Error),
    /// The workload's registry is invalid.
    #[error("registry: {0}")]
    Registry(#[from] basalt_runtime::sdk::RegistryError),
    /// An orchestration ended otherwise than completed.
    #[error("instance {instance} ended {status}: {detail}")]
    NotCompleted {
        /// The instance.
        instance: String,
        /// How it ended.
        status: OrchestrationStatus,
        /// Its failure, if any.
        detail: String,
    },
    /// A workload invariant does not hold (e.g. stock and receipts disagree).
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// A temporary directory could not be made.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
}

const HELLO5: &str = "hello5";
const SEQUENCE: &str = "sequence";
const HELLO: &str = "hello";

fn registry() -> Result<Registry, WorkloadError> {
    Ok(Registry::builder()
        .register_orchestration_typed::<String, Vec<String>, _, _>(
            HELLO5,
            |ctx, name: String| async move {
                let mut out = Vec::with_capacity(5);
                for i in 0..5 {
                    out.push(
                        ctx.call_activity::<_, String>(HELLO, &format!("{name}{i}"))
                            .await?,
                    );
                }
                Ok::<_, OrchestrationError>(out)
            },
        )
        .register_orchestration_typed::<u64, u64, _, _>(SEQUENCE, |ctx, steps: u64| async move {
            let mut done = 0u64;
            for i in 0..steps {
                let _: String = ctx.call_activity(HELLO, &i.to_string()).await?;
                done += 1;
            }
            Ok::<_, OrchestrationError>(done)
        })
        .register_activity_typed::<String, String, _, _>(HELLO, |_ctx, who: String| async move {
            Ok::<_, ActivityError>(format!("hello {who}"))
        })
        .build()?)
}

struct Running {
    engine: Engine,
    backend: Arc<dyn Backend>,
    worker: basalt_runtime::WorkerHandle,
    _dir: Option<tempfile::TempDir>,
}

async fn start(config: &WorkloadConfig, registry: Registry) -> Result<Running, WorkloadError> {
    let (storage, dir) = match config.store {
        HubStore::Memory => (Storage::in_memory(), None),
        HubStore::Local => {
            let mut builder = tempfile::Builder::new();
            builder.prefix("basalt-workload-");
            let dir = match &config.dir {
                Some(parent) => builder.tempdir_in(parent)?,
                None => builder.tempdir()?,
            };
            (Storage::local(dir.path())?, Some(dir))
        }
    };
    let options = EngineOptions {
        partition_count: config.partitions,
        log: LogOptions {
            group_commit: config.group_commit,
            ..LogOptions::default()
        },
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
        _dir: dir,
    })
}

/// Runs `instances` orchestrations of `name` with `input(i)`, all started
/// at once, and waits for every one to complete.
async fn run_many(
    config: &WorkloadConfig,
    name: &'static str,
    instances: u64,
    input: impl Fn(u64) -> String,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WorkloadOutcome, WorkloadError> {
    let running = start(config, registry()?).await?;
    let (outcome, _) = measure(&running, name, instances, input, progress).await?;
    running.worker.shutdown().await;
    running.engine.shutdown().await;
    Ok(outcome)
}

/// Starts `instances` orchestrations at once on a running engine, waits for
/// all, and returns the measurements and every output.
async fn measure(
    running: &Running,
    name: &'static str,
    instances: u64,
    input: impl Fn(u64) -> String,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(WorkloadOutcome, Vec<Option<String>>), WorkloadError> {
    let before = running.engine.log_stats().await?;
    let cpu_before = cpu_time_ms();
    let started = Instant::now();
    let mut waits = Vec::with_capacity(instances as usize);
    for i in 0..instances {
        let backend = running.backend.clone();
        let request = StartRequest {
            name: name.into(),
            instance_id: Some(format!("{name}-{i}")),
            input: Some(input(i)),
            ..StartRequest::default()
        };
        waits.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let id: InstanceId = backend.start_instance(request).await?;
            let state = backend
                .wait_for_completion(&id, Duration::from_secs(600))
                .await?;
            Ok::<_, basalt_runtime::Error>((state, t0.elapsed()))
        }));
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)
        .map_err(|e| WorkloadError::Backend(basalt_runtime::Error::InvalidInput(e.to_string())))?;
    let mut done = 0;
    let mut outputs = Vec::with_capacity(instances as usize);
    for wait in waits {
        let (state, latency) = wait
            .await
            .map_err(|e| basalt_runtime::Error::Storage(e.to_string()))??;
        if state.status != OrchestrationStatus::Completed {
            return Err(WorkloadError::NotCompleted {
                instance: state.instance_id.to_string(),
                status: state.status,
                detail: state.failure.map(|f| f.to_string()).unwrap_or_default(),
            });
        }
        let _ = latencies.record(latency.as_micros() as u64);
        outputs.push(state.output);
        done += 1;
        progress(done);
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu_time_ms();
    let after = running.engine.log_stats().await?;
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let outcome = WorkloadOutcome {
        orchestrations: instances,
        elapsed,
        orchestrations_per_sec: instances as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: [ms(0.5), ms(0.9), ms(0.99), latencies.max() as f64 / 1000.0],
        storage_writes: after.writes - before.writes,
        events: after.records - before.records,
        cpu_ms_per_orchestration: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) / instances as f64),
    };
    Ok((outcome, outputs))
}

/// What `bank` verified after its run.
#[derive(Clone, Debug, Serialize)]
pub struct BankCheck {
    /// Transfers that moved money (the others found too little).
    pub moved: u64,
    /// Total balance before.
    pub total_before: i64,
    /// Total balance after (must equal `total_before`).
    pub total_after: i64,
}

/// `bank`: `transfers` transfers between `accounts` accounts (each starting
/// with `initial_balance`) pinned to different partitions, each locking
/// both accounts, all started at once; then checks that the total balance
/// is unchanged and no balance is negative (an error if not).
pub async fn bank(
    config: &WorkloadConfig,
    transfers: u64,
    accounts: u64,
    initial_balance: i64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(WorkloadOutcome, BankCheck), WorkloadError> {
    use crate::bank::{self, Transfers};
    use basalt_runtime::EntityOperation;

    let running = start(config, bank::registry()?).await?;
    let entity = |i: u64| bank::account_entity(&bank::account(i, config.partitions));
    for i in 0..accounts {
        let set = EntityOperation {
            name: "set".into(),
            input: Some(initial_balance.to_string()),
        };
        running
            .backend
            .signal_entity(&entity(i)?, set, None)
            .await?;
    }
    for i in 0..accounts {
        let id = entity(i)?;
        let mut tries = 0;
        while running.backend.get_entity(&id).await?.is_none() {
            tries += 1;
            if tries > 10_000 {
                return Err(WorkloadError::Backend(basalt_runtime::Error::Timeout(
                    10_000,
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut generator = Transfers::new(11, accounts, config.partitions);
    let inputs: Vec<String> = (0..transfers)
        .map(|_| serde_json::to_string(&generator.next_transfer()).unwrap_or_default())
        .collect();
    let (outcome, outputs) = measure(
        &running,
        bank::TRANSFER,
        transfers,
        |i| inputs[i as usize].clone(),
        progress,
    )
    .await?;
    let moved = outputs
        .iter()
        .filter(|o| o.as_deref() == Some("true"))
        .count() as u64;
    let mut total_after = 0;
    for i in 0..accounts {
        let balance: i64 = running
            .backend
            .get_entity(&entity(i)?)
            .await?
            .and_then(|s| s.state)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| WorkloadError::Invariant(format!("account {i} has no balance")))?;
        if balance < 0 {
            return Err(WorkloadError::Invariant(format!(
                "account {i} went negative: {balance}"
            )));
        }
        total_after += balance;
    }
    let check = BankCheck {
        moved,
        total_before: initial_balance * accounts as i64,
        total_after,
    };
    if check.total_after != check.total_before {
        return Err(WorkloadError::Invariant(format!(
            "total balance changed from {} to {}",
            check.total_before, check.total_after
        )));
    }
    running.worker.shutdown().await;
    running.engine.shutdown().await;
    Ok((outcome, check))
}

/// What `checkout` verified after its run.
#[derive(Clone, Debug, Serialize)]
pub struct CheckoutCheck {
    /// Checkouts that reserved every line.
    pub fully_reserved: u64,
    /// Lines refused for lack of stock.
    pub refused_lines: u64,
    /// Units reserved in all receipts.
    pub units_reserved: i64,
    /// Units that left the stock (initial - final, summed).
    pub units_taken_from_stock: i64,
}

/// `checkout`: `instances` checkouts of 2 random items from `pool`
/// products stocked with `initial_stock` units each, all started at once;
/// then checks, per product, initial - final stock = reserved units and
/// that no stock went negative (an error if not).
pub async fn checkout(
    config: &WorkloadConfig,
    instances: u64,
    pool: u64,
    initial_stock: i64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(WorkloadOutcome, CheckoutCheck), WorkloadError> {
    use crate::checkout::{self, Receipt, Requests};
    use basalt_runtime::EntityOperation;

    let running = start(config, checkout::registry()?).await?;
    let stock = |p: u64| checkout::stock_entity(&checkout::product(p));
    for p in 0..pool {
        let operation = EntityOperation {
            name: "set".into(),
            input: Some(initial_stock.to_string()),
        };
        running
            .backend
            .signal_entity(&stock(p)?, operation, None)
            .await?;
    }
    // Wait until every product is stocked (by notification-free polling:
    // this is set-up, outside the measured phase).
    for p in 0..pool {
        let id = stock(p)?;
        let mut tries = 0;
        while running.backend.get_entity(&id).await?.is_none() {
            tries += 1;
            if tries > 10_000 {
                return Err(WorkloadError::Backend(basalt_runtime::Error::Timeout(
                    10_000,
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut requests = Requests::new(7, pool);
    let inputs: Vec<String> = (0..instances)
        .map(|_| serde_json::to_string(&requests.next_request()).unwrap_or_default())
        .collect();
    let (outcome, outputs) = measure(
        &running,
        checkout::CHECKOUT,
        instances,
        |i| inputs[i as usize].clone(),
        progress,
    )
    .await?;

    let mut check = CheckoutCheck {
        fully_reserved: 0,
        refused_lines: 0,
        units_reserved: 0,
        units_taken_from_stock: 0,
    };
    let mut reserved_per_product = vec![0i64; pool as usize];
    for output in outputs {
        let receipt: Receipt = serde_json::from_str(output.as_deref().unwrap_or("null"))
            .map_err(|e| WorkloadError::Invariant(format!("a receipt does not decode: {e}")))?;
        if receipt.refused.is_empty() {
            check.fully_reserved += 1;
        }
        check.refused_lines += receipt.refused.len() as u64;
        for item in &receipt.reserved {
            let index: usize = item.product[1..].parse().unwrap_or(usize::MAX);
            if let Some(slot) = reserved_per_product.get_mut(index) {
                *slot += item.quantity;
            }
            check.units_reserved += item.quantity;
        }
    }
    for p in 0..pool {
        let left: i64 = running
            .backend
            .get_entity(&stock(p)?)
            .await?
            .and_then(|s| s.state)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| WorkloadError::Invariant(format!("product {p} has no stock")))?;
        if left < 0 {
            return Err(WorkloadError::Invariant(format!(
                "product {p}: stock went negative ({left})"
            )));
        }
        let taken = initial_stock - left;
        if taken != reserved_per_product[p as usize] {
            return Err(WorkloadError::Invariant(format!(
                "product {p}: {taken} units left the stock but receipts reserved {}",
                reserved_per_product[p as usize]
            )));
        }
        check.units_taken_from_stock += taken;
    }
    running.worker.shutdown().await;
    running.engine.shutdown().await;
    Ok((outcome, check))
}

/// `hello5`: `instances` orchestrations, each calling 5 trivial activities
/// in sequence, all started at once.
pub async fn hello5(
    config: &WorkloadConfig,
    instances: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WorkloadOutcome, WorkloadError> {
    run_many(config, HELLO5, instances, |i| format!("\"h{i}\""), progress).await
}

/// `sequence`: one orchestration calling a trivial activity `steps` times.
pub async fn sequence(
    config: &WorkloadConfig,
    steps: u64,
) -> Result<WorkloadOutcome, WorkloadError> {
    run_many(config, SEQUENCE, 1, |_| steps.to_string(), &|_| {}).await
}

/// User + system CPU time of this process so far, in milliseconds, from
/// `/proc/self/stat` (Linux); `None` elsewhere.
fn cpu_time_ms() -> Option<f64> {
    process_cpu_ms("self")
}

/// User + system CPU time of process `pid` (or `"self"`) so far, in
/// milliseconds, from `/proc/<pid>/stat` (Linux); `None` elsewhere.
pub fn process_cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux.
    Some((utime + stime) * 10.0)
}
