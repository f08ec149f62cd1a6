//! `steady`: a hub that fills up and is never purged. Checkouts run in
//! waves on one engine with a fixed memory budget; each wave reports its
//! throughput, the process's memory and the checkpoints written during it,
//! so a reader sees whether any of them grows with the number of retained
//! instances. [`fill`] runs the waves (in a child process that the
//! benchmark kills with SIGKILL after the last one, mid-work); [`recover`]
//! then opens the hub, times how long it takes to serve again and checks
//! that every acknowledged checkout is there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::{
    Backend, EntityId, EntityOperation, InstanceId, InstanceState, OrchestrationStatus,
    StartRequest, Worker, WorkerOptions,
};
use basalt_storage::Storage;

use crate::checkout::{self, Item, Receipt, Requests};
use crate::report::{Check, Wave};
use crate::resources;
use crate::workloads::WorkloadError;

/// What the steady workload runs.
#[derive(Clone, Debug)]
pub struct SteadySettings {
    /// Checkouts in all.
    pub instances: u64,
    /// Checkouts per wave.
    pub wave: u64,
    /// Products in the pool.
    pub pool: u64,
    /// Most checkouts running at once (at most `wave`).
    pub in_flight: u64,
    /// The engine's memory budget for partition state, in bytes.
    pub memory_budget_bytes: u64,
    /// Partitions of the hub.
    pub partitions: u32,
}

impl SteadySettings {
    /// Waves in all (the last may be short).
    pub fn waves(&self) -> u64 {
        self.instances.div_ceil(self.wave.max(1))
    }

    /// The engine options of every phase.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            partition_count: self.partitions,
            memory_budget_bytes: self.memory_budget_bytes,
            ..EngineOptions::default()
        }
    }
}

/// Stock no wave can exhaust: `steady` measures the state, not refusals
/// (the `checkout` workload checks those).
const ENDLESS_STOCK: i64 = 1 << 50;

/// The id of checkout `i` of wave `wave`.
pub fn checkout_id(wave: u64, i: u64) -> String {
    format!("steady-{wave}-{i}")
}

/// An engine and worker on the hub being filled.
struct Filling {
    engine: Engine,
    backend: Arc<dyn Backend>,
    worker: basalt_runtime::WorkerHandle,
    stocks: Vec<EntityId>,
    requests: Requests,
    /// Most checkouts running at once.
    in_flight: u64,
}

async fn stock_of(backend: &Arc<dyn Backend>, id: &EntityId) -> Result<i64, WorkloadError> {
    backend
        .get_entity(id)
        .await?
        .and_then(|s| s.state)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| WorkloadError::Invalid(format!("{id} has no stock to read")))
}

async fn open_filling(
    storage: Storage,
    settings: &SteadySettings,
) -> Result<Filling, WorkloadError> {
    if settings.wave == 0 || settings.instances == 0 || settings.pool == 0 {
        return Err(WorkloadError::Invalid(
            "instances, wave and pool must be at least 1".into(),
        ));
    }
    let engine = Engine::open(storage, settings.engine_options()).await?;
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(checkout::registry()?),
        WorkerOptions {
            orchestration_concurrency: 64,
            activity_concurrency: 256,
            ..WorkerOptions::default()
        },
    );
    let stocks: Vec<EntityId> = (0..settings.pool)
        .map(|p| checkout::stock_entity(&checkout::product(p)))
        .collect::<Result<_, _>>()?;
    for id in &stocks {
        let set = EntityOperation {
            name: "set".into(),
            input: Some(ENDLESS_STOCK.to_string()),
        };
        backend.signal_entity(id, set, None).await?;
    }
    for id in &stocks {
        let deadline = Instant::now() + Duration::from_secs(60);
        while backend.get_entity(id).await?.is_none() {
            if Instant::now() > deadline {
                return Err(WorkloadError::Invalid(format!("{id} was never set")));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(Filling {
        engine,
        backend,
        worker,
        stocks,
        requests: Requests::new(11, settings.pool),
        in_flight: settings.in_flight,
    })
}

/// Runs one wave: starts `count` checkouts at once, waits for each and
/// checks every receipt against its order and the stock taken against
/// the receipts. Returns the wave's figures, or what was wrong.
async fn run_wave(
    filling: &mut Filling,
    index: u64,
    count: u64,
) -> Result<Result<Wave, String>, WorkloadError> {
    let mut before = Vec::with_capacity(filling.stocks.len());
    for id in &filling.stocks {
        before.push(stock_of(&filling.backend, id).await?);
    }
    let orders: Vec<Vec<Item>> = (0..count)
        .map(|_| filling.requests.next_request())
        .collect();
    let _ = filling.engine.take_checkpoint_window();
    let reads_before = filling.engine.store_reads();
    let started = Instant::now();
    let mut waits = Vec::with_capacity(count as usize);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(filling.in_flight.max(1)).unwrap_or(usize::MAX),
    ));
    for (i, order) in orders.iter().enumerate() {
        let backend = filling.backend.clone();
        let in_flight = in_flight.clone();
        let request = StartRequest {
            name: checkout::CHECKOUT.into(),
            instance_id: Some(checkout_id(index, i as u64)),
            input: Some(serde_json::to_string(order).unwrap_or_default()),
            ..StartRequest::default()
        };
        waits.push(tokio::spawn(async move {
            // Held until this checkout is done (the semaphore is never
            // closed).
            let _slot = in_flight.acquire_owned().await;
            let id = crate::workloads::start_retrying(backend.as_ref(), request).await?;
            backend
                .wait_for_completion(&id, Duration::from_secs(600))
                .await
        }));
    }
    let mut reserved: BTreeMap<String, i64> = BTreeMap::new();
    let mut problem = None;
    for (wait, order) in waits.into_iter().zip(&orders) {
        let state = wait
            .await
            .map_err(|e| basalt_runtime::Error::Storage(format!("a waiter failed: {e}")))??;
        if let Err(p) = check_receipt(&state, order, &mut reserved) {
            problem.get_or_insert(p);
        }
    }
    let elapsed = started.elapsed();
    let window = filling.engine.take_checkpoint_window();
    let store_reads = filling.engine.store_reads() - reads_before;
    for (p, id) in filling.stocks.iter().enumerate() {
        let taken = before[p] - stock_of(&filling.backend, id).await?;
        let want = reserved
            .get(&checkout::product(p as u64))
            .copied()
            .unwrap_or(0);
        if taken != want {
            problem.get_or_insert(format!(
                "wave {index}: {taken} units left product p{p}, the receipts reserved {want}"
            ));
        }
    }
    if let Some(problem) = problem {
        return Ok(Err(problem));
    }
    let (mut resident, mut resident_bytes) = (0, 0);
    for partition in filling.engine.partition_metrics().await? {
        resident += partition.records_resident;
        resident_bytes += partition.records_resident_bytes;
    }
    Ok(Ok(Wave {
        index,
        completed: count,
        throughput_per_s: count as f64 / elapsed.as_secs_f64().max(1e-9),
        rss_bytes: resources::rss_bytes(),
        checkpoints: window.count,
        checkpoint_ms_max: window.max_ms,
        checkpoint_bytes_max: window.max_bytes,
        checkpoint_stall_ms_max: window.max_stall_ms,
        records_resident: resident,
        records_resident_bytes: resident_bytes,
        held_back: window.held_back,
        store_reads,
    }))
}

/// A completed checkout's receipt must hold exactly its order's lines,
/// all reserved (the stock is endless); adds them to `reserved`.
fn check_receipt(
    state: &InstanceState,
    order: &[Item],
    reserved: &mut BTreeMap<String, i64>,
) -> Result<(), String> {
    if state.status != OrchestrationStatus::Completed {
        return Err(format!("{} ended {}", state.instance_id, state.status));
    }
    let receipt: Receipt = serde_json::from_str(state.output.as_deref().unwrap_or("null"))
        .map_err(|e| format!("{}: the receipt does not decode: {e}", state.instance_id))?;
    let sorted = |items: &[Item]| {
        let mut items = items.to_vec();
        items.sort_by(|a, b| (&a.product, a.quantity).cmp(&(&b.product, b.quantity)));
        items
    };
    if !receipt.refused.is_empty() || sorted(&receipt.reserved) != sorted(order) {
        return Err(format!(
            "{}: the receipt does not reserve the order's lines",
            state.instance_id
        ));
    }
    for item in &receipt.reserved {
        *reserved.entry(item.product.clone()).or_insert(0) += item.quantity;
    }
    Ok(())
}

/// Fills the hub in `storage`: every wave in turn, `on_wave` called after
/// each with its figures (or what its check found wrong, which stops the
/// fill). With `keep_going`, it then goes on starting checkouts until the
/// process is killed (the benchmark kills it mid-work); without, it shuts
/// the engine down and returns.
pub async fn fill(
    storage: Storage,
    settings: &SteadySettings,
    keep_going: bool,
    mut on_wave: impl FnMut(Result<&Wave, &str>),
) -> Result<(), WorkloadError> {
    let mut filling = open_filling(storage, settings).await?;
    let waves = settings.waves();
    for index in 0..waves {
        let count = settings
            .wave
            .min(settings.instances - index * settings.wave);
        match run_wave(&mut filling, index, count).await? {
            Ok(wave) => on_wave(Ok(&wave)),
            Err(problem) => {
                on_wave(Err(&problem));
                return Err(WorkloadError::Invalid(problem));
            }
        }
    }
    if keep_going {
        // More waves, never reported: whatever they leave half done when
        // the kill comes is what recovery must cope with.
        let mut index = waves;
        loop {
            let _ = run_wave(&mut filling, index, settings.wave).await?;
            index += 1;
        }
    }
    filling.worker.shutdown().await;
    filling.engine.shutdown().await;
    Ok(())
}

/// What recovery found.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// Seconds from opening the hub to the engine serving (every partition
    /// recovered).
    pub recovery_s: f64,
    /// Instances in the hub by status after recovery.
    pub by_status: BTreeMap<String, u64>,
    /// Whether every reported checkout is there, completed, with a
    /// receipt.
    pub check: Check,
}

/// Opens the hub after the kill, timing it, and checks that every
/// checkout of the reported waves is there: the count of completed
/// instances is at least the reported total, and a sample of them (the
/// first and last of every wave) reads back completed with a receipt.
pub async fn recover(
    storage: Storage,
    settings: &SteadySettings,
    waves_reported: u64,
) -> Result<Recovered, WorkloadError> {
    let started = Instant::now();
    let engine = Engine::open(storage, settings.engine_options()).await?;
    let recovery_s = started.elapsed().as_secs_f64();
    let mut by_status = BTreeMap::new();
    for partition in engine.partition_metrics().await? {
        for (status, count) in partition.instances_by_status {
            *by_status.entry(status.to_string()).or_insert(0) += count;
        }
    }
    let reported = (0..waves_reported)
        .map(|w| settings.wave.min(settings.instances - w * settings.wave))
        .sum::<u64>();
    let completed = by_status.get("Completed").copied().unwrap_or(0);
    let mut problem = (completed < reported).then(|| {
        format!("{reported} checkouts were acknowledged, but only {completed} are completed")
    });
    for wave in 0..waves_reported {
        let last = settings.wave.min(settings.instances - wave * settings.wave) - 1;
        for i in [0, last] {
            let id = InstanceId::new(checkout_id(wave, i))?;
            let state = engine.get_instance(&id).await?;
            let fine = state.as_ref().is_some_and(|s| {
                s.status == OrchestrationStatus::Completed
                    && s.output.as_deref().is_some_and(|o| o.contains("reserved"))
            });
            if !fine && problem.is_none() {
                problem = Some(format!("{id} is not completed with a receipt: {state:?}"));
            }
        }
    }
    engine.shutdown().await;
    let check = match problem {
        None => Check {
            passed: true,
            detail: format!(
                "all {reported} acknowledged checkouts are completed after recovery ({completed} in the hub); the first and last of each wave read back with their receipts"
            ),
        },
        Some(problem) => Check {
            passed: false,
            detail: problem,
        },
    };
    Ok(Recovered {
        recovery_s,
        by_status,
        check,
    })
}
