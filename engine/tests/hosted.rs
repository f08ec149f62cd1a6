//! The engine driven through `HostedBackend` as a hosted runtime drives it:
//! a turn that schedules an activity and starts a child on another
//! partition, the activity's completion, the child found right after the
//! ack, long polls that time out, stale tokens, deletion, and everything
//! still there after a restart.

use std::time::Duration;

use basalt_engine::{Engine, EngineOptions};
use basalt_runtime::hosted::{
    Ack, AckMetadata, HostedBackend, HostedToken, HostedTurn, MessageKind, QueuedMessage,
    StoredEvent, TagFilter, WorkerItem, WorkerItemId,
};
use basalt_runtime::{ErrorKind, InstanceId};
use basalt_storage::Storage;

const LOCK: Duration = Duration::from_secs(5);
const NO_WAIT: Duration = Duration::ZERO;

fn options() -> EngineOptions {
    EngineOptions {
        partition_count: 4,
        ..EngineOptions::default()
    }
}

fn id(text: &str) -> InstanceId {
    InstanceId::new(text).expect("id")
}

fn message(kind: MessageKind, bytes: &str) -> QueuedMessage {
    QueuedMessage {
        order: 0,
        visible_ms: 0,
        kind,
        bytes: bytes.as_bytes().to_vec(),
        fetched_by: None,
        attempts: 0,
    }
}

fn start(name: &str) -> QueuedMessage {
    message(
        MessageKind::Start {
            name: name.into(),
            version: Some("1.0.0".into()),
        },
        &format!("start {name}"),
    )
}

fn named_ack(name: &str, events: &[u64]) -> Ack {
    Ack {
        execution_id: 1,
        events: events
            .iter()
            .map(|id| StoredEvent {
                id: *id,
                bytes: format!("event {id}").into_bytes(),
            })
            .collect(),
        metadata: AckMetadata {
            name: Some(name.into()),
            version: Some("1.0.0".into()),
            ..AckMetadata::default()
        },
        ..Ack::default()
    }
}

#[tokio::test]
async fn a_turn_its_activity_and_its_child_go_round_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("open");
    let parent = id("parent!0");
    let child = id("child!3");
    engine
        .hosted_enqueue(&parent, start("Parent"))
        .await
        .expect("enqueue");

    let batch = engine
        .hosted_fetch(LOCK, None, NO_WAIT)
        .await
        .expect("fetch")
        .expect("the start");
    assert_eq!(batch.instance, parent);
    assert_eq!(batch.name, "Parent");
    assert_eq!(batch.execution_id, 1);
    assert_eq!(batch.messages, vec![b"start Parent".to_vec()]);
    assert_eq!(batch.attempts, 1);
    assert!(
        engine
            .hosted_fetch(LOCK, None, NO_WAIT)
            .await
            .expect("fetch")
            .is_none(),
        "locked"
    );

    let activity = WorkerItem {
        order: 0,
        id: WorkerItemId {
            instance: parent.to_string(),
            execution_id: 1,
            activity_id: 2,
        },
        session: None,
        tag: None,
        bytes: b"charge".to_vec(),
        visible_ms: 0,
        lock: None,
        attempts: 0,
    };
    engine
        .hosted_ack(
            &batch.token,
            HostedTurn {
                ack: named_ack("Parent", &[1, 2]),
                worker_items: vec![activity],
                orchestrator_items: vec![(child.clone(), start("Child"))],
                cancelled: Vec::new(),
            },
        )
        .await
        .expect("ack");
    // The child's start, sent to another partition, is there at once.
    let child_batch = engine
        .hosted_fetch(LOCK, None, NO_WAIT)
        .await
        .expect("fetch")
        .expect("the child's start");
    assert_eq!(child_batch.instance, child);
    engine
        .hosted_abandon(&child_batch.token, None, false)
        .await
        .expect("give the child back");
    let refused = engine
        .hosted_ack(&batch.token, HostedTurn::default())
        .await
        .expect_err("the parent's lock is gone");
    assert!(
        refused.to_string().contains("Invalid lock token"),
        "{refused}"
    );

    let work = engine
        .hosted_fetch_work(LOCK, None, TagFilter::DefaultOnly, NO_WAIT)
        .await
        .expect("fetch work")
        .expect("the activity");
    assert_eq!(work.item.bytes, b"charge".to_vec());
    assert_eq!(work.attempts, 1);
    engine
        .hosted_ack_work(
            &work.token,
            Some((parent.clone(), message(MessageKind::Other, "charged"))),
        )
        .await
        .expect("ack work");
    let refused = engine
        .hosted_ack_work(&work.token, None)
        .await
        .expect_err("acked once");
    assert_eq!(refused.kind(), ErrorKind::Conflict);

    // A long poll with nothing to take ends empty at its timeout.
    assert!(
        engine
            .hosted_fetch_work(LOCK, None, TagFilter::Any, Duration::from_millis(100))
            .await
            .expect("poll")
            .is_none()
    );

    let view = engine
        .hosted_instance(&parent)
        .await
        .expect("read")
        .expect("parent");
    assert_eq!(view.named, Some(("Parent".into(), "1.0.0".into())));
    assert_eq!(view.queued, 1, "the completion waits");
    assert_eq!(
        engine
            .hosted_history(&parent, 1)
            .await
            .expect("history")
            .len(),
        2
    );
    engine.shutdown().await;
    drop(engine);

    // After a restart the completion is still queued, and fetched.
    let engine = Engine::open(Storage::local(dir.path()).expect("storage"), options())
        .await
        .expect("reopen");
    let mut seen = Vec::new();
    while let Some(batch) = engine
        .hosted_fetch(LOCK, None, NO_WAIT)
        .await
        .expect("fetch")
    {
        seen.push((batch.instance.clone(), batch.messages.clone()));
        engine
            .hosted_abandon(&batch.token, Some(Duration::from_secs(60)), false)
            .await
            .expect("abandon");
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (child.clone(), vec![b"start Child".to_vec()]),
            (parent.clone(), vec![b"charged".to_vec()]),
        ]
    );
    let removed = engine.hosted_delete(&parent).await.expect("delete");
    assert_eq!((removed.executions, removed.events), (1, 2));
    assert!(
        engine
            .hosted_instance(&parent)
            .await
            .expect("read")
            .is_none()
    );
    let stale = engine
        .hosted_renew(&HostedToken("h0.1.parent!0".into()), LOCK)
        .await
        .expect_err("no such lock");
    assert!(stale.to_string().contains("Invalid lock token"), "{stale}");
    engine.shutdown().await;
}
