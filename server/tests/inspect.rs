//! `basalt inspect` run as a binary against a real task hub: it explains a
//! hub that another engine holds open (read-only, no lock), verifies it,
//! and names the object and offset of damage (exit status 1).

use std::process::Command;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::{Backend, InstanceId, StartRequest};
use basalt_storage::{PartitionId, Storage, list_segments};

fn inspect(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("run basalt inspect");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_explains_verifies_and_names_damage() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().to_str().expect("utf-8 path").to_owned();
    let engine = Engine::open(
        Storage::local(dir.path()).expect("storage"),
        EngineOptions {
            partition_count: 3,
            ..EngineOptions::default()
        },
    )
    .await
    .expect("open");
    for i in 0..5 {
        engine
            .start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(format!("i{i}!0")),
                ..StartRequest::default()
            })
            .await
            .expect("start");
    }

    // While the engine runs (and holds the lock).
    let (ok, text) = inspect(&[&path]);
    assert!(ok, "{text}");
    assert!(text.contains("partitions      3"), "{text}");
    assert!(text.contains("Pending 5"), "{text}");
    let (ok, text) = inspect(&[&path, "--verify"]);
    assert!(ok, "{text}");
    assert!(text.contains("no damage"), "{text}");
    let (ok, text) = inspect(&[&path, "--json"]);
    assert!(ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json report");
    assert_eq!(json["partition_count"], 3);
    engine.shutdown().await;
    drop(engine);

    // Damage in the middle of partition 0's segment is named.
    let storage = Storage::local_read_only(dir.path()).expect("storage");
    let segment = list_segments(&storage, PartitionId(0))
        .await
        .expect("list")
        .into_iter()
        .next()
        .expect("a segment");
    let file = dir.path().join(&segment.key);
    let mut bytes = std::fs::read(&file).expect("read");
    let offset = 32 + 20;
    bytes[offset] ^= 0xff;
    std::fs::write(&file, bytes).expect("write");
    let (ok, text) = inspect(&[&path, "--verify"]);
    assert!(!ok, "damage must fail verify: {text}");
    assert!(text.contains(&segment.key), "{text}");
    assert!(
        text.contains("DAMAGE") && text.contains("offset 32"),
        "{text}"
    );
}

/// A hub whose records live in the partitions' stores (evicted from
/// memory, with a tiny budget) and in the log after the last checkpoint:
/// inspect counts both tiers, reading the stores page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_counts_records_in_the_stores_and_the_log() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().to_str().expect("utf-8 path").to_owned();
    let engine = Engine::open(
        Storage::local(dir.path()).expect("storage"),
        EngineOptions {
            partition_count: 1,
            memory_budget_bytes: 0,
            checkpoint_interval_events: 1,
            // No worker runs these: let them all wait.
            queued_work_max: Some(100_000),
            ..EngineOptions::default()
        },
    )
    .await
    .expect("open");
    // More than one page of a store (4,096 records), started 500 at once.
    let checkpointed = 4_500;
    for chunk in (0..checkpointed).collect::<Vec<u64>>().chunks(500) {
        let starts = chunk.iter().map(|i| {
            engine.start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(format!("stored-{i}")),
                ..StartRequest::default()
            })
        });
        for started in futures::future::join_all(starts).await {
            started.expect("start");
        }
    }
    for i in 0..50 {
        engine
            .terminate(
                &InstanceId::new(format!("stored-{i}")).expect("id"),
                Some("done".into()),
            )
            .await
            .expect("terminate");
    }
    engine.checkpoint().await.expect("checkpoint");
    // These live only in the log after the checkpoint (and in memory).
    for i in 0..7 {
        engine
            .start_instance(StartRequest {
                name: "o".into(),
                instance_id: Some(format!("tail-{i}")),
                ..StartRequest::default()
            })
            .await
            .expect("start");
    }

    let (ok, text) = inspect(&[&path, "--json"]);
    assert!(ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json report");
    let count = |status: &str| -> u64 {
        json["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["instances_by_status"][status].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(count("Pending"), checkpointed - 50 + 7, "{text}");
    assert_eq!(count("Terminated"), 50, "{text}");
    for partition in json["partitions"].as_array().expect("partitions") {
        assert!(partition["checkpoint_lsn"].as_u64().is_some(), "{text}");
    }
    engine.shutdown().await;
}

#[test]
fn inspect_of_a_directory_without_a_hub_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let (ok, text) = inspect(&[dir.path().to_str().expect("path")]);
    assert!(!ok);
    assert!(text.contains("no task hub"), "{text}");
}
