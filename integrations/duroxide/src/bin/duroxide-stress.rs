//! duroxide's own provider stress tests against Basalt and against
//! duroxide's bundled SQLite provider (file), in one run, side by side.
//!
//! `cargo run --release -p basalt-duroxide --features compare-sqlite --bin duroxide-stress -- [SECONDS] [MAX_CONCURRENT] [ACTIVITY_DELAY_MS] [CONCURRENCY] [TASKS]`
//!
//! Two scenarios, each on each provider, on this machine's disk:
//! duroxide's parallel orchestrations (a fan-out of TASKS activities per
//! orchestration, default 5, with the given orchestration and worker
//! concurrency) and its large-payload scenario (10, 50 and 100 KB
//! payloads through 20 activities and 5 sub-orchestrations, its own
//! concurrency). Each prints orchestrations/s, activities/s and the
//! success rate; the run fails if any orchestration did not complete.
//!
//! duroxide's pump starts one orchestration and then sleeps 1 ms, so no
//! provider can go past the pump's own rate, which the run measures first
//! and prints: a provider at that ceiling is waiting for the pump, not
//! the other way round (raise TASKS to give each orchestration more work).

use std::sync::Arc;
use std::time::Duration;

use basalt_duroxide::BasaltProvider;
use basalt_engine::EngineOptions;
use duroxide::provider_stress_tests::large_payload::{
    LargePayloadConfig, run_large_payload_test_with_config,
};
use duroxide::provider_stress_tests::parallel_orchestrations::ProviderStressFactory;
use duroxide::provider_stress_tests::{
    StressTestConfig, StressTestResult, create_default_activities, create_default_orchestrations,
    run_stress_test,
};
use duroxide::providers::Provider;
use duroxide::providers::sqlite::SqliteProvider;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// The engine behind the last Basalt provider made: a run that leaves
/// orchestrations unfinished prints its hosted backlog.
static LAST_ENGINE: std::sync::Mutex<Option<Arc<basalt_engine::Engine>>> =
    std::sync::Mutex::new(None);

async fn basalt(dir: &std::path::Path) -> Arc<dyn Provider> {
    let storage = basalt_storage::Storage::local(dir.join("basalt")).expect("local storage");
    let (provider, engine) = BasaltProvider::open(storage, EngineOptions::default())
        .await
        .expect("open basalt");
    if let Ok(mut last) = LAST_ENGINE.lock() {
        *last = Some(engine);
    }
    Arc::new(provider)
}

/// Prints what waits in the last Basalt engine's hosted queues (to
/// stderr): which orchestrations a stalled run left behind, and why.
async fn print_backlog() {
    let engine = LAST_ENGINE.lock().ok().and_then(|mut last| last.take());
    let Some(engine) = engine else { return };
    match engine.hosted_backlog(40).await {
        Ok(lines) => {
            eprintln!("Basalt's hosted backlog after the run:");
            for line in lines {
                eprintln!("{line}");
            }
        }
        Err(e) => eprintln!("Basalt's hosted backlog could not be read: {e}"),
    }
}

async fn sqlite(dir: &std::path::Path) -> Arc<dyn Provider> {
    let path = dir.join("sqlite.db");
    std::fs::File::create(&path).expect("create the database file");
    let url = format!("sqlite:{}", path.display());
    Arc::new(SqliteProvider::new(&url, None).await.expect("open sqlite"))
}

fn line(name: &str, config: &StressTestConfig, result: &StressTestResult) -> String {
    format!(
        "{name:<8} {:>4} {:>6} {:>5}  {:>6} {:>6} {:>10.1} {:>10.1} {:>9.1} {:>8.1}%",
        config.max_concurrent,
        config.activity_delay_ms,
        format!("{}/{}", config.orch_concurrency, config.worker_concurrency),
        result.launched,
        result.completed,
        result.orch_throughput,
        result.activity_throughput,
        result.avg_latency_ms,
        result.success_rate(),
    )
}

/// Makes a fresh provider of one kind in its own folder.
struct Factory {
    kind: &'static str,
    dir: std::path::PathBuf,
}

#[async_trait::async_trait]
impl ProviderStressFactory for Factory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        match self.kind {
            "basalt" => basalt(&self.dir).await,
            _ => sqlite(&self.dir).await,
        }
    }
}

/// How many times per second duroxide's pump can go round when starting
/// an orchestration costs nothing: its loop sleeps 1 ms after each start.
async fn pump_ceiling() -> f64 {
    let began = std::time::Instant::now();
    let mut rounds = 0u32;
    while began.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        rounds += 1;
    }
    f64::from(rounds) / began.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = arg(1, 10);
    let max_concurrent = arg(2, 20) as usize;
    let delay_ms = arg(3, 10);
    let concurrency = arg(4, 2) as usize;
    let tasks = arg(5, 5) as usize;
    let config = StressTestConfig {
        max_concurrent,
        duration_secs: seconds,
        tasks_per_instance: tasks,
        activity_delay_ms: delay_ms,
        orch_concurrency: concurrency,
        worker_concurrency: concurrency,
        ..StressTestConfig::default()
    };
    let large = LargePayloadConfig {
        base: StressTestConfig {
            duration_secs: seconds,
            ..LargePayloadConfig::default().base
        },
        ..LargePayloadConfig::default()
    };
    println!(
        "duroxide's pump alone: {:.0} starts/s (the most any provider can reach in these scenarios)",
        pump_ceiling().await
    );
    println!("{seconds} s per scenario and provider; local disk");
    println!(
        "scenario  provider  max  delay  o/w   launch   done   orch/s     act/s   ms/orch  success"
    );
    let mut failed = false;
    for (scenario, scenario_config) in [("parallel", &config), ("payload", &large.base)] {
        let mut rates = Vec::new();
        for kind in ["basalt", "sqlite"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let factory = Factory {
                kind,
                dir: dir.path().to_owned(),
            };
            let result = match scenario {
                "parallel" => {
                    run_stress_test(
                        config.clone(),
                        factory.create_provider().await,
                        create_default_activities(config.activity_delay_ms),
                        create_default_orchestrations(),
                    )
                    .await
                }
                _ => run_large_payload_test_with_config(&factory, large.clone()).await,
            }
            .expect("stress run");
            println!("{scenario:<9} {}", line(kind, scenario_config, &result));
            if kind == "basalt" && (result.completed < result.launched || result.failed > 0) {
                print_backlog().await;
            }
            failed |= result.completed < result.launched || result.failed > 0;
            rates.push(result.orch_throughput);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let [basalt, sqlite] = rates[..]
            && sqlite > 0.0
        {
            println!(
                "{scenario:<9} basalt / sqlite: {:.2}x orchestrations/s",
                basalt / sqlite
            );
        }
    }
    if failed {
        eprintln!("check: FAILED — not every launched orchestration completed");
        std::process::exit(1);
    }
    println!("check: passed — every launched orchestration completed on both providers");
}
