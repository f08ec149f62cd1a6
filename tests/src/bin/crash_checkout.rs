//! Child process of the checkout crash test: the engine and the SDK worker
//! with the `checkout` workload on a local task hub.
//!
//! Usage: crash_checkout <dir> <run> <stock | instances-to-start | finish> [tiny]
//!
//! - `stock`: sets every product's stock, waits until all are stocked, exits.
//! - a number: starts that many checkouts (paced) and prints `started <id>`
//!   once each start is acknowledged, then keeps working until killed.
//! - `finish`: waits until every checkout has finished, prints `finished`.
//!
//! `tiny`: no memory for records, a checkpoint every few events (see
//! `basalt_tests::child_engine_options`).

use std::sync::Arc;
use std::time::Duration;

use basalt_benches::checkout::{self, Requests};
use basalt_engine::Engine;
use basalt_runtime::{Backend, EntityOperation, Worker, WorkerOptions};
use basalt_storage::Storage;
use basalt_tests::checkout_crash::{INITIAL_STOCK, POOL};

fn main() {
    basalt_tests::child_main("crash_checkout", run());
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: crash_checkout <dir> <run> <stock | instances | finish>";
    let dir = args.next().ok_or(usage)?;
    let run: u64 = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("run: {e}"))?;
    let mode = args.next().ok_or(usage)?;
    let memory = args.next();
    let options = basalt_tests::child_engine_options(4, memory.as_deref())?;
    let engine = Engine::open(Storage::local(&dir).map_err(|e| e.to_string())?, options)
        .await
        .map_err(|e| e.to_string())?;
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let registry = Arc::new(checkout::registry().map_err(|e| e.to_string())?);
    let worker = Worker::start(backend.clone(), registry, WorkerOptions::default());
    println!("ready");

    match mode.as_str() {
        "stock" => {
            for p in 0..POOL {
                let id =
                    checkout::stock_entity(&checkout::product(p)).map_err(|e| e.to_string())?;
                let set = EntityOperation {
                    name: "set".into(),
                    input: Some(INITIAL_STOCK.to_string()),
                };
                backend
                    .signal_entity(&id, set, None)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for p in 0..POOL {
                let id =
                    checkout::stock_entity(&checkout::product(p)).map_err(|e| e.to_string())?;
                while backend
                    .get_entity(&id)
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
            let count: u64 = count.parse().map_err(|e| format!("instances: {e}"))?;
            let mut requests = Requests::new(run, POOL);
            let inputs = (0..count)
                .map(|_| serde_json::to_string(&requests.next_request()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let prefix = format!("c-{run}");
            basalt_tests::start_paced_until_killed(backend, checkout::CHECKOUT, &prefix, inputs)
                .await;
        }
    }
    worker.shutdown().await;
    engine.shutdown().await;
    println!("finished");
    Ok(())
}
