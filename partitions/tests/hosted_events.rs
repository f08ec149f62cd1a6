//! Hosted events through the partition state machine: locks and tokens
//! from LSNs, an ack's items leaving for their partitions as messages (or
//! taking effect in the same event on this one), worker items and their
//! completions, deletion reaching the items, and the encodings (log
//! event, snapshot, checkpoint records).

mod common;

use basalt_partitions::hosted::{
    Ack, AckMetadata, FetchOutcome, HostedEvent, HostedMessage, HostedReply, MessageKind,
    QueuedMessage, StoredEvent, TagFilter, WorkOwner, WorkerItem, WorkerItemId,
};
use basalt_partitions::{Effects, Event, Message, PartitionState, Reply, codec, partition_of};
use basalt_runtime::{Error, InstanceId};
use common::ApplyWhole;

const PARTITIONS: u32 = 4;
const LOCK_MS: u64 = 5_000;

fn id(text: &str) -> InstanceId {
    InstanceId::new(text).expect("id")
}

/// An id of `prefix` on `partition` (ids ending in `!n` are pinned there).
fn on(prefix: &str, partition: u32) -> InstanceId {
    let candidate = id(&format!("{prefix}!{partition}"));
    assert_eq!(partition_of(candidate.as_str(), PARTITIONS), partition);
    candidate
}

fn hosted(event: HostedEvent, now_ms: u64) -> Event {
    Event::Hosted {
        event: Box::new(event),
        now_ms,
    }
}

fn start_message(order: u64) -> QueuedMessage {
    QueuedMessage {
        order,
        visible_ms: 0,
        kind: MessageKind::Start {
            name: "Parent".into(),
            version: None,
        },
        bytes: b"start".to_vec(),
        fetched_by: None,
        attempts: 0,
    }
}

fn other_message(order: u64) -> QueuedMessage {
    QueuedMessage {
        kind: MessageKind::Other,
        bytes: b"completion".to_vec(),
        ..start_message(order)
    }
}

fn reply(fx: &Effects) -> &HostedReply {
    match &fx.reply {
        Some(Reply::Hosted(reply, _)) => reply,
        other => panic!("expected a hosted reply, got {other:?}"),
    }
}

/// `instance` on `state`, fetched at `lsn`: returns the lock token.
fn enqueue_and_fetch(state: &mut PartitionState, instance: &InstanceId, lsn: u64) -> u64 {
    state.apply_whole(
        lsn,
        hosted(
            HostedEvent::Enqueue {
                instance: instance.clone(),
                message: start_message(lsn),
            },
            lsn,
        ),
    );
    let fx = state.apply_whole(
        lsn + 1,
        hosted(
            HostedEvent::Fetch {
                instance: instance.clone(),
                lock_ms: LOCK_MS,
                filter: None,
            },
            lsn + 1,
        ),
    );
    match reply(&fx) {
        HostedReply::Fetched {
            token,
            outcome: FetchOutcome::Locked { attempts: 1 },
        } => {
            assert_eq!(*token, lsn + 1, "the token is the fetch's LSN");
            *token
        }
        other => panic!("not locked: {other:?}"),
    }
}

fn ack(instance: &InstanceId, token: u64) -> HostedEvent {
    HostedEvent::Ack {
        instance: instance.clone(),
        ack: Ack {
            token,
            execution_id: 1,
            events: vec![StoredEvent {
                id: 1,
                bytes: b"started".to_vec(),
            }],
            metadata: AckMetadata {
                name: Some("Parent".into()),
                version: Some("1.0.0".into()),
                ..AckMetadata::default()
            },
            ..Ack::default()
        },
        worker_items: Vec::new(),
        orchestrator_items: Vec::new(),
        cancelled: Vec::new(),
    }
}

fn activity(instance: &InstanceId, order: u64, activity_id: u64) -> WorkerItem {
    WorkerItem {
        order,
        id: WorkerItemId {
            instance: instance.to_string(),
            execution_id: 1,
            activity_id,
        },
        session: None,
        tag: None,
        bytes: b"activity".to_vec(),
        visible_ms: 0,
        lock: None,
        attempts: 0,
    }
}

#[test]
fn an_acks_items_leave_for_their_partitions_and_take_effect_at_once_on_this_one() {
    let parent = on("parent", 0);
    let child = on("child", 2);
    let sibling = on("sibling", 0);
    let mut state = PartitionState::new(0, PARTITIONS);
    let token = enqueue_and_fetch(&mut state, &parent, 1);
    let HostedEvent::Ack {
        instance,
        ack: turn,
        ..
    } = ack(&parent, token)
    else {
        unreachable!()
    };
    let fx = state.apply_whole(
        3,
        hosted(
            HostedEvent::Ack {
                instance,
                ack: turn,
                worker_items: vec![(
                    WorkOwner::Instance(parent.clone()),
                    activity(&parent, 10, 2),
                )],
                orchestrator_items: vec![
                    (child.clone(), start_message(11)),
                    (sibling.clone(), other_message(12)),
                ],
                cancelled: Vec::new(),
            },
            3,
        ),
    );
    assert_eq!(reply(&fx), &HostedReply::Done);
    // The child's start leaves for partition 2 through the outbox.
    assert_eq!(fx.messages.len(), 1);
    assert_eq!(fx.messages[0].destination, 2);
    assert!(matches!(
        &fx.messages[0].message,
        Message::Hosted(HostedMessage::Enqueue { instance, .. }) if *instance == child
    ));
    assert_eq!(state.outbox.len(), 1);
    // The activity and the sibling's message took effect in this event.
    assert_eq!(state.hosted_work.get(&parent).map(|q| q.len()), Some(1));
    assert_eq!(state.hosted.get(&sibling).map(|i| i.queue.len()), Some(1));
    let record = state.hosted.get(&parent).expect("parent");
    assert!(record.exists() && record.lock.is_none() && record.queue.is_empty());

    // Partition 2 receives the start: the child waits for a fetch.
    let mut other = PartitionState::new(2, PARTITIONS);
    let fx = other.apply_whole(
        1,
        Event::Messages {
            messages: fx.messages.clone(),
            now_ms: 4,
        },
    );
    assert_eq!(
        fx.acks,
        vec![(0, state.outbox.keys().next().expect("sent").1)]
    );
    let child_record = other.hosted.get(&child).expect("child record");
    assert!(
        !child_record.exists(),
        "a start does not create the instance"
    );
    assert_eq!(child_record.queue.len(), 1);
}

#[test]
fn a_refused_ack_is_answered_and_changes_nothing() {
    let instance = on("i", 1);
    let mut state = PartitionState::new(1, PARTITIONS);
    let token = enqueue_and_fetch(&mut state, &instance, 1);
    let before = state.hosted.get(&instance).cloned();
    let event = hosted(ack(&instance, token + 100), 3);
    let refusal = state.check(&event).expect_err("not its token");
    assert!(
        refusal.to_string().contains("Invalid lock token"),
        "{refusal}"
    );
    let fx = state.apply_whole(3, event);
    assert!(matches!(
        fx.reply,
        Some(Reply::Rejected(Error::Conflict(_)))
    ));
    assert_eq!(state.hosted.get(&instance).cloned(), before);
    // A fetch while it is locked is refused too: nothing to log.
    let fetch = hosted(
        HostedEvent::Fetch {
            instance: instance.clone(),
            lock_ms: LOCK_MS,
            filter: None,
        },
        4,
    );
    assert!(state.check(&fetch).is_err());
}

#[test]
fn a_worker_item_is_fetched_by_token_and_its_completion_reaches_the_instance() {
    let instance = on("i", 3);
    let mut state = PartitionState::new(3, PARTITIONS);
    let owner = WorkOwner::Instance(instance.clone());
    state.apply_whole(
        1,
        hosted(
            HostedEvent::EnqueueWork {
                owner: owner.clone(),
                item: activity(&instance, 1, 7),
            },
            1,
        ),
    );
    let fetch = |order| {
        hosted(
            HostedEvent::FetchWork {
                owner: owner.clone(),
                order,
                lock_ms: LOCK_MS,
                claim: None,
                tags: TagFilter::DefaultOnly,
            },
            2,
        )
    };
    assert!(state.check(&fetch(99)).is_err(), "no such item");
    let fx = state.apply_whole(2, fetch(1));
    assert_eq!(
        reply(&fx),
        &HostedReply::WorkFetched {
            token: 2,
            attempts: 1
        }
    );
    assert!(state.check(&fetch(1)).is_err(), "locked");
    let done = hosted(
        HostedEvent::AckWork {
            owner: owner.clone(),
            token: 2,
            completion: Some((instance.clone(), other_message(3))),
        },
        3,
    );
    state.apply_whole(3, done.clone());
    assert!(
        state.hosted_work.get(&instance).is_none(),
        "an empty record goes"
    );
    assert_eq!(state.hosted.get(&instance).map(|i| i.queue.len()), Some(1));
    let again = state.check(&done).expect_err("acked once");
    assert!(again.to_string().contains("Invalid lock token"), "{again}");
}

#[test]
fn deleting_an_instance_removes_its_items_in_their_sessions() {
    let instance = on("i", 0);
    let session = on("s", 1);
    let mut state = PartitionState::new(0, PARTITIONS);
    let token = enqueue_and_fetch(&mut state, &instance, 1);
    let HostedEvent::Ack { ack: turn, .. } = ack(&instance, token) else {
        unreachable!()
    };
    let mut item = activity(&instance, 5, 2);
    item.session = Some(session.to_string());
    let fx = state.apply_whole(
        3,
        hosted(
            HostedEvent::Ack {
                instance: instance.clone(),
                ack: turn,
                worker_items: vec![(WorkOwner::Session(session.clone()), item)],
                orchestrator_items: Vec::new(),
                cancelled: Vec::new(),
            },
            3,
        ),
    );
    let mut sessions = PartitionState::new(1, PARTITIONS);
    sessions.apply_whole(
        1,
        Event::Messages {
            messages: fx.messages,
            now_ms: 3,
        },
    );
    assert_eq!(
        sessions.hosted_sessions.get(&session).map(|q| q.len()),
        Some(1)
    );

    let fx = state.apply_whole(
        4,
        hosted(
            HostedEvent::Delete {
                instance: instance.clone(),
            },
            4,
        ),
    );
    assert_eq!(
        reply(&fx),
        &HostedReply::Removed {
            executions: 1,
            events: 1,
            messages: 0
        }
    );
    assert!(state.hosted.get(&instance).is_none());
    sessions.apply_whole(
        2,
        Event::Messages {
            messages: fx.messages,
            now_ms: 4,
        },
    );
    assert!(
        sessions.hosted_sessions.get(&session).is_none(),
        "the session's item went with the instance"
    );
}

#[test]
fn hosted_records_survive_the_log_snapshots_and_checkpoints() {
    let instance = on("i", 0);
    let mut state = PartitionState::new(0, PARTITIONS);
    let token = enqueue_and_fetch(&mut state, &instance, 1);
    let event = hosted(ack(&instance, token), 3);
    let bytes = codec::encode_event(&event).expect("encodes");
    assert_eq!(codec::decode_event(&bytes).expect("decodes"), event);
    state.apply_whole(3, event);
    state.apply_whole(
        4,
        hosted(
            HostedEvent::EnqueueWork {
                owner: WorkOwner::Instance(instance.clone()),
                item: activity(&instance, 9, 4),
            },
            4,
        ),
    );
    let snapshot = codec::encode_snapshot(&state).expect("snapshot");
    let decoded = codec::decode_snapshot(&snapshot).expect("decodes");
    assert_eq!(codec::encode_snapshot(&decoded).expect("again"), snapshot);
    assert_eq!(decoded.hosted.get(&instance), state.hosted.get(&instance));
    // The index of queued records is derived: a decoded snapshot lists the
    // worker queue with its item.
    assert_eq!(decoded.hosted_unlisted(), []);
    assert_eq!(
        decoded.hosted_queued.len(),
        1,
        "{:?}",
        decoded.hosted_queued
    );

    // A checkpoint writes both records and marks the one with work busy;
    // installing what it wrote gives the same records back.
    let changes = state.take_changes().expect("changes");
    let keys: Vec<String> = changes
        .writes
        .iter()
        .filter(|w| w.value.is_some())
        .map(|w| String::from_utf8_lossy(&w.key).into_owned())
        .collect();
    for expected in [
        format!("h/{instance}"),
        format!("w/{instance}"),
        format!("b/w/{instance}"),
    ] {
        assert!(keys.contains(&expected), "{expected} in {keys:?}");
    }
    let mut restored = PartitionState::from_core(
        codec::decode_core(&codec::encode_core(&state.core()).expect("core")).expect("core"),
        false,
    );
    for write in &changes.writes {
        if let Some(key) = basalt_partitions::checkpoint::parse_key(&write.key)
            && !write.key.starts_with(b"b/")
        {
            restored
                .install(key, write.value.as_deref())
                .expect("installs");
        }
    }
    assert_eq!(restored.hosted.get(&instance), state.hosted.get(&instance));
    assert_eq!(
        restored.hosted_work.get(&instance),
        state.hosted_work.get(&instance)
    );
    assert_eq!(restored.hosted_unlisted(), []);
    assert_eq!(restored.hosted_queued.len(), 1, "installs are indexed");
}

#[test]
fn only_records_with_something_queued_are_looked_at() {
    let mut state = PartitionState::new(0, PARTITIONS);
    let mut lsn = 1;
    let mut instances = Vec::new();
    for n in 0..20 {
        let instance = on(&format!("i{n}"), 0);
        let token = enqueue_and_fetch(&mut state, &instance, lsn);
        state.apply_whole(lsn + 2, hosted(ack(&instance, token), lsn + 2));
        lsn += 3;
        instances.push(instance);
    }
    // Twenty instances whose turns were taken: nothing queued, nothing
    // listed, no candidate.
    assert_eq!(state.hosted.resident_iter().count(), 20);
    assert!(state.hosted_queued.is_empty(), "{:?}", state.hosted_queued);
    assert_eq!(state.hosted_candidate(lsn, None), None);
    // A message for one of them lists it and makes it the candidate.
    state.apply_whole(
        lsn,
        hosted(
            HostedEvent::Enqueue {
                instance: instances[7].clone(),
                message: other_message(lsn),
            },
            lsn,
        ),
    );
    assert_eq!(state.hosted_queued.len(), 1);
    let candidate = state.hosted_candidate(lsn, None).expect("a candidate");
    assert_eq!(candidate.key, instances[7]);
    assert_eq!(state.hosted_unlisted(), []);
}

#[test]
fn a_deletion_counts_the_instances_own_worker_items() {
    // deletion::test_delete_cleans_queues_and_locks: the only queued row is an activity
    let instance = on("i", 0);
    let mut state = PartitionState::new(0, PARTITIONS);
    state.apply_whole(
        1,
        hosted(
            HostedEvent::EnqueueWork {
                owner: WorkOwner::Instance(instance.clone()),
                item: activity(&instance, 1, 3),
            },
            1,
        ),
    );
    let token = enqueue_and_fetch(&mut state, &instance, 2);
    state.apply_whole(4, hosted(ack(&instance, token), 4));
    let fx = state.apply_whole(
        5,
        hosted(
            HostedEvent::Delete {
                instance: instance.clone(),
            },
            5,
        ),
    );
    assert_eq!(
        reply(&fx),
        &HostedReply::Removed {
            executions: 1,
            events: 1,
            messages: 1
        }
    );
    assert!(state.hosted_work.get(&instance).is_none());
    assert!(fx.messages.is_empty(), "its own items are on its partition");
}

#[test]
fn a_session_stays_until_cleanup_counts_it_even_after_its_claim_ran_out() {
    // sessions::test_cleanup_removes_expired_no_items (an ack after the claim ran out)
    let instance = on("i", 1);
    let session = on("s", 1);
    let owner = WorkOwner::Session(session.clone());
    let mut item = activity(&instance, 1, 2);
    item.session = Some(session.to_string());
    let mut state = PartitionState::new(1, PARTITIONS);
    state.apply_whole(
        1,
        hosted(
            HostedEvent::EnqueueWork {
                owner: owner.clone(),
                item,
            },
            1,
        ),
    );
    let claim = basalt_partitions::hosted::SessionClaim {
        owner: "worker".into(),
        lock_ms: 50,
    };
    state.apply_whole(
        2,
        hosted(
            HostedEvent::FetchWork {
                owner: owner.clone(),
                order: 1,
                lock_ms: LOCK_MS,
                claim: Some(claim),
                tags: TagFilter::Any,
            },
            0,
        ),
    );
    state.apply_whole(
        3,
        hosted(
            HostedEvent::AckWork {
                owner: owner.clone(),
                token: 2,
                completion: None,
            },
            100,
        ),
    );
    assert!(
        state.hosted_sessions.get(&session).is_some(),
        "the expired claim waits for cleanup"
    );
    let cleanup = hosted(
        HostedEvent::CleanupSession {
            session: session.clone(),
        },
        200,
    );
    let fx = state.apply_whole(4, cleanup.clone());
    assert_eq!(reply(&fx), &HostedReply::Count(1));
    assert!(state.hosted_sessions.get(&session).is_none());
    assert!(state.check(&cleanup).is_err(), "nothing left to clean up");
}

#[test]
fn queued_records_that_memory_pressure_evicts_are_still_offered() {
    // A stress run left orchestrations waiting for their client's timeout:
    // their records, messages queued, had been evicted, and fetchers look
    // at resident records only. The index keeps when each comes ready.
    let ready = on("ready", 0);
    let hidden = on("hidden", 0);
    let locked = on("locked", 0);
    let mut state = PartitionState::new(0, PARTITIONS);
    let now = 100;
    state.apply_whole(
        1,
        hosted(
            HostedEvent::Enqueue {
                instance: ready.clone(),
                message: start_message(11),
            },
            now,
        ),
    );
    state.apply_whole(
        2,
        hosted(
            HostedEvent::Enqueue {
                instance: hidden.clone(),
                message: QueuedMessage {
                    visible_ms: now + 60_000,
                    ..other_message(5)
                },
            },
            now,
        ),
    );
    let token = enqueue_and_fetch(&mut state, &locked, 3);
    state.apply_whole(
        6,
        hosted(
            HostedEvent::EnqueueWork {
                owner: WorkOwner::Instance(ready.clone()),
                item: activity(&ready, 12, 1),
            },
            now,
        ),
    );
    // Checkpointed, then evicted with no memory to spare: nothing resident.
    let changes = state.take_changes().expect("changes");
    state.checkpointed(&changes);
    state.evict_to(0);
    assert_eq!(state.hosted.resident_iter().count(), 0);
    assert_eq!(state.hosted_work.resident_iter().count(), 0);
    assert_eq!(state.hosted_queued.len(), 4, "{:?}", state.hosted_queued);

    // The ready instance and its worker item are still offered; the hidden
    // message and the lock still give the next due times.
    let candidate = state
        .hosted_candidate(now, None)
        .expect("cold, still offered");
    assert_eq!(candidate.key, ready);
    assert_eq!(candidate.order, 11);
    let work = state
        .hosted_work_candidate(now, None, &TagFilter::DefaultOnly)
        .expect("cold work, still offered");
    assert_eq!(work.key, (WorkOwner::Instance(ready.clone()), 12));
    assert_eq!(
        state.hosted_next_instance_due(now),
        Some(4 + LOCK_MS),
        "the lock runs out first (taken at 4 for {LOCK_MS} ms)"
    );
    assert_eq!(state.hosted_next_work_due(now), None);
    assert_eq!(
        state.hosted_queue_depths(),
        (2, 1),
        "the ready and hidden messages wait (the locked one's is held); the item waits"
    );
    assert_eq!(
        state.hosted_candidate(4 + LOCK_MS, None).map(|c| c.order),
        Some(3),
        "the locked instance's start (order 3) is older once its lock ran out"
    );

    // Loading the records again (as the fetch event does) gives the same
    // summaries the index kept.
    for write in &changes.writes {
        if let Some(key) = basalt_partitions::checkpoint::parse_key(&write.key)
            && !write.key.starts_with(b"b/")
        {
            state
                .install(key, write.value.as_deref())
                .expect("installs");
        }
    }
    assert_eq!(state.hosted.resident_iter().count(), 3);
    assert_eq!(state.hosted_unlisted(), []);
    let _ = token;
}
