//! The program of `docs/sdk.md`: an orchestration calling an activity five
//! times, run by the engine on a local task hub.
//!
//! `cargo run --release -p basalt-engine --example quickstart [DATA_DIR]`

use std::sync::Arc;
use std::time::Duration;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::sdk::{ActivityError, OrchestrationError, Registry};
use basalt_runtime::{Backend, Client, Worker, WorkerOptions};
use basalt_storage::Storage;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let registry = Registry::builder()
        .register_orchestration_typed::<String, Vec<String>, _, _>(
            "hello5",
            |ctx, name: String| async move {
                let mut out = Vec::new();
                for i in 0..5 {
                    out.push(
                        ctx.call_activity::<_, String>("hello", &format!("{name}{i}"))
                            .await?,
                    );
                }
                Ok::<_, OrchestrationError>(out)
            },
        )
        .register_activity_typed::<String, String, _, _>("hello", |_ctx, who: String| async move {
            Ok::<_, ActivityError>(format!("hello {who}"))
        })
        .build()?;

    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "basalt-quickstart-data".into());
    let engine = Engine::open(Storage::local(&dir)?, EngineOptions::default()).await?;
    let backend: Arc<dyn Backend> = Arc::new(engine.clone());
    let worker = Worker::start(
        backend.clone(),
        Arc::new(registry),
        WorkerOptions::default(),
    );

    let client = Client::new(backend);
    let id = client.start("hello5", "world").await?;
    let greetings: Vec<String> = client.wait_for_output(&id, Duration::from_secs(30)).await?;
    println!("{id}: {greetings:?}");

    worker.shutdown().await;
    engine.shutdown().await;
    Ok(())
}
