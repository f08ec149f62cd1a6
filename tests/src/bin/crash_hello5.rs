//! Child process of the engine crash test: opens the engine on a local
//! task hub, runs the SDK worker with the `hello5` workload, starts
//! instances and prints `started <id>` once each start is acknowledged
//! (durable). With `finish` it starts nothing, waits until every instance
//! has finished, prints `finished` and exits cleanly.
//!
//! Usage: crash_hello5 <dir> <run> <instances-to-start | finish> [tiny]
//!
//! `tiny`: no memory for records, a checkpoint every few events (see
//! `basalt_tests::child_engine_options`).

use std::sync::Arc;

use basalt_engine::Engine;
use basalt_runtime::{Backend, Worker, WorkerOptions};
use basalt_storage::Storage;
use basalt_tests::hello5;

fn main() {
    basalt_tests::child_main("crash_hello5", run());
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: crash_hello5 <dir> <run> <instances | finish>";
    let dir = args.next().ok_or(usage)?;
    let run: u64 = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("run: {e}"))?;
    let mode = args.next().ok_or(usage)?;
    let memory = args.next();
    let options = basalt_tests::child_engine_options(4, memory.as_deref())?;
    let storage = Storage::local(&dir).map_err(|e| e.to_string())?;
    let engine = Engine::open(storage, options)
        .await
        .map_err(|e| e.to_string())?;
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let registry = Arc::new(hello5::registry().map_err(|e| e.to_string())?);
    let worker = Worker::start(backend.clone(), registry, WorkerOptions::default());
    println!("ready");

    if mode == "finish" {
        basalt_tests::wait_until_all_finished(backend.as_ref()).await?;
        worker.shutdown().await;
        engine.shutdown().await;
        println!("finished");
        return Ok(());
    }

    let count: u64 = mode.parse().map_err(|e| format!("instances: {e}"))?;
    let inputs = (0..count).map(|i| format!("\"h-{run}-{i}\"")).collect();
    let prefix = format!("h-{run}");
    basalt_tests::start_paced_until_killed(backend, hello5::ORCHESTRATION, &prefix, inputs).await;
    Ok(())
}
