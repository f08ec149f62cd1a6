//! duroxide's own provider stress test against Basalt and against
//! duroxide's bundled SQLite provider (file), in one run, side by side.
//!
//! `cargo run --release -p basalt-duroxide --features compare-sqlite --bin duroxide-stress -- [SECONDS] [MAX_CONCURRENT] [ACTIVITY_DELAY_MS] [CONCURRENCY]`
//!
//! Each configuration runs duroxide's parallel-orchestrations scenario
//! (fan-out of activities per orchestration, duroxide's runtime with the
//! given orchestration and worker concurrency) on each provider, on this
//! machine's disk, and prints orchestrations/s, activities/s, mean latency
//! and the success rate; the run fails if any orchestration did not
//! complete.

use std::sync::Arc;
use std::time::Duration;

use basalt_duroxide::BasaltProvider;
use basalt_engine::EngineOptions;
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

async fn basalt(dir: &std::path::Path) -> Arc<dyn Provider> {
    let storage = basalt_storage::Storage::local(dir.join("basalt")).expect("local storage");
    let (provider, _engine) = BasaltProvider::open(storage, EngineOptions::default())
        .await
        .expect("open basalt");
    Arc::new(provider)
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = arg(1, 10);
    let max_concurrent = arg(2, 20) as usize;
    let delay_ms = arg(3, 10);
    let concurrency = arg(4, 2) as usize;
    let config = StressTestConfig {
        max_concurrent,
        duration_secs: seconds,
        tasks_per_instance: 5,
        activity_delay_ms: delay_ms,
        orch_concurrency: concurrency,
        worker_concurrency: concurrency,
        ..StressTestConfig::default()
    };
    println!(
        "duroxide parallel orchestrations, {seconds} s per provider, {} activities each; local disk",
        config.tasks_per_instance
    );
    println!("provider  max  delay  o/w   launch   done   orch/s     act/s    mean ms  success");
    let mut failed = false;
    let mut rates = Vec::new();
    for name in ["basalt", "sqlite"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let provider = match name {
            "basalt" => basalt(dir.path()).await,
            _ => sqlite(dir.path()).await,
        };
        let result = run_stress_test(
            config.clone(),
            provider,
            create_default_activities(config.activity_delay_ms),
            create_default_orchestrations(),
        )
        .await
        .expect("stress run");
        println!("{}", line(name, &config, &result));
        failed |= result.completed < result.launched || result.failed > 0;
        rates.push(result.orch_throughput);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let [basalt, sqlite] = rates[..]
        && sqlite > 0.0
    {
        println!("basalt / sqlite: {:.2}x orchestrations/s", basalt / sqlite);
    }
    if failed {
        eprintln!("check: FAILED — not every launched orchestration completed");
        std::process::exit(1);
    }
    println!("check: passed — every launched orchestration completed on both providers");
}
