//! Child process of the bank crash test: the engine and the SDK worker
//! with the `bank` workload on a local task hub.
//!
//! Usage: crash_bank <dir> <run> <open | transfers-to-start | finish>
//!
//! - `open`: sets every account's balance, waits until all are set, exits.
//! - a number: starts that many transfers (paced) and prints `started <id>`
//!   once each start is acknowledged, then keeps working until killed.
//! - `finish`: waits until every transfer has finished, prints `finished`.

use std::sync::Arc;
use std::time::Duration;

use basalt_benches::bank::{self, Transfers};
use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::{Backend, EntityOperation, Worker, WorkerOptions};
use basalt_storage::Storage;
use basalt_tests::bank_crash::{ACCOUNTS, INITIAL_BALANCE, PARTITIONS};

fn main() {
    basalt_tests::child_main("crash_bank", run());
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: crash_bank <dir> <run> <open | transfers | finish>";
    let dir = args.next().ok_or(usage)?;
    let run: u64 = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("run: {e}"))?;
    let mode = args.next().ok_or(usage)?;
    let options = EngineOptions {
        partition_count: PARTITIONS,
        checkpoint_interval_events: 500,
        ..EngineOptions::default()
    };
    let engine = Engine::open(Storage::local(&dir).map_err(|e| e.to_string())?, options)
        .await
        .map_err(|e| e.to_string())?;
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let registry = Arc::new(bank::registry().map_err(|e| e.to_string())?);
    let worker = Worker::start(backend.clone(), registry, WorkerOptions::default());
    println!("ready");
    let account =
        |i: u64| bank::account_entity(&bank::account(i, PARTITIONS)).map_err(|e| e.to_string());

    match mode.as_str() {
        "open" => {
            for i in 0..ACCOUNTS {
                let set = EntityOperation {
                    name: "set".into(),
                    input: Some(INITIAL_BALANCE.to_string()),
                };
                backend
                    .signal_entity(&account(i)?, set, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for i in 0..ACCOUNTS {
                while backend
                    .get_entity(&account(i)?)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        "finish" => basalt_tests::wait_until_all_finished(backend.as_ref()).await?,
        count => {
            let count: u64 = count.parse().map_err(|e| format!("transfers: {e}"))?;
            let mut transfers = Transfers::new(run, ACCOUNTS, PARTITIONS);
            let inputs = (0..count)
                .map(|_| serde_json::to_string(&transfers.next_transfer()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let prefix = format!("t-{run}");
            basalt_tests::start_paced_until_killed(backend, bank::TRANSFER, &prefix, inputs).await;
        }
    }
    worker.shutdown().await;
    engine.shutdown().await;
    println!("finished");
    Ok(())
}
