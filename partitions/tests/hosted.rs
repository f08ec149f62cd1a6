//! The rules of hosted instances and the hosted worker queue, as duroxide's
//! provider contract states them (the validation test each case follows is
//! named beside it).

use std::collections::BTreeSet;

use basalt_partitions::hosted::{
    Ack, AckMetadata, AckRefusal, FetchOutcome, HostedInstance, KvOp, MessageKind, QueuedMessage,
    SessionClaim, StoredEvent, TagFilter, VersionRange, WorkRefusal, WorkerItem, WorkerItemId,
    WorkerQueue,
};

const LOCK_MS: u64 = 1_000;

fn message(order: u64, kind: MessageKind) -> QueuedMessage {
    QueuedMessage {
        order,
        visible_ms: 0,
        kind,
        bytes: format!("m{order}").into_bytes(),
        fetched_by: None,
        attempts: 0,
    }
}

fn start(order: u64) -> QueuedMessage {
    message(
        order,
        MessageKind::Start {
            name: "Order".into(),
            version: Some("1.0.0".into()),
        },
    )
}

fn event(id: u64) -> StoredEvent {
    StoredEvent {
        id,
        bytes: format!("e{id}").into_bytes(),
    }
}

fn naming_ack(token: u64, execution_id: u64, events: Vec<StoredEvent>) -> Ack {
    Ack {
        token,
        execution_id,
        events,
        metadata: AckMetadata {
            name: Some("Order".into()),
            version: Some("2.0.0".into()),
            ..AckMetadata::default()
        },
        ..Ack::default()
    }
}

fn batch_orders(instance: &HostedInstance, token: u64) -> Vec<u64> {
    instance.batch(token).map(|m| m.order).collect()
}

/// A started instance holding the lock of fetch `token` at time 0.
fn started(token: u64) -> HostedInstance {
    let mut instance = HostedInstance::new("i");
    instance.enqueue(start(1));
    assert_eq!(
        instance.fetch(token, 0, LOCK_MS, None),
        FetchOutcome::Locked { attempts: 1 }
    );
    instance
}

#[test]
fn enqueue_creates_no_instance_and_the_naming_ack_does() {
    // instance_creation::test_no_instance_creation_on_enqueue, test_instance_creation_via_metadata
    let mut instance = started(10);
    assert!(!instance.exists());
    assert_eq!(
        instance.fetch_name(10),
        Some(("Order".into(), Some("1.0.0".into())))
    );
    assert_eq!(instance.current_execution(), 1);
    let ack = naming_ack(10, 1, vec![event(1), event(2)]);
    assert_eq!(instance.check_ack(&ack, 5), Ok(()));
    instance.ack(ack, 5);
    let meta = instance.meta.as_ref().expect("named");
    assert_eq!(
        (meta.name.as_str(), meta.version.as_str()),
        ("Order", "2.0.0")
    );
    assert_eq!(meta.current_execution, 1);
    assert!(instance.queue.is_empty(), "the batch left with the ack");
    assert!(instance.lock.is_none());
    assert_eq!(instance.executions[&1].events.len(), 2);
    assert_eq!(instance.executions[&1].status, "Running");
}

#[test]
fn droppable_messages_of_a_missing_instance_go_and_others_wait() {
    // queue_semantics::test_orphan_queue_messages_dropped
    let mut orphan = HostedInstance::new("i");
    orphan.enqueue(message(1, MessageKind::DropIfNoInstance));
    orphan.enqueue(message(2, MessageKind::DropIfNoInstance));
    assert_eq!(
        orphan.fetch(7, 0, LOCK_MS, None),
        FetchOutcome::Dropped { count: 2 }
    );
    assert!(orphan.queue.is_empty() && orphan.lock.is_none());
    assert_eq!(orphan.fetch(8, 0, LOCK_MS, None), FetchOutcome::Nothing);

    // An event raised before the start waits for it, unlocked.
    let mut early = HostedInstance::new("i");
    early.enqueue(message(1, MessageKind::Other));
    assert_eq!(early.fetch(7, 0, LOCK_MS, None), FetchOutcome::Nothing);
    assert!(early.lock.is_none() && early.queue[0].attempts == 0);
    // Once the start is there, both are the batch, in enqueue order.
    early.enqueue(start(2));
    assert_eq!(
        early.fetch(8, 0, LOCK_MS, None),
        FetchOutcome::Locked { attempts: 1 }
    );
    assert_eq!(batch_orders(&early, 8), vec![1, 2]);

    // A known instance keeps a droppable message and takes it.
    let mut known = started(1);
    known.ack(naming_ack(1, 1, vec![event(1)]), 1);
    known.enqueue(message(5, MessageKind::DropIfNoInstance));
    assert_eq!(
        known.fetch(2, 2, LOCK_MS, None),
        FetchOutcome::Locked { attempts: 1 }
    );
}

#[test]
fn a_lock_holds_until_it_expires_and_the_next_fetch_takes_the_batch_again() {
    // instance_locking::test_exclusive_instance_lock, lock_expiration::test_lock_expires_after_timeout,
    // instance_locking::test_message_tagging_during_lock
    let mut instance = started(10);
    assert_eq!(instance.fetchable(999, None), None, "locked");
    assert_eq!(
        instance.fetch(11, 999, LOCK_MS, None),
        FetchOutcome::Nothing
    );
    instance.enqueue(message(2, MessageKind::Other));
    assert_eq!(
        batch_orders(&instance, 10),
        vec![1],
        "arrived after the fetch"
    );
    assert_eq!(
        instance.fetchable(1_000, None),
        Some(1),
        "expired at its end"
    );
    assert_eq!(
        instance.fetch(11, 1_000, LOCK_MS, None),
        FetchOutcome::Locked { attempts: 2 }
    );
    assert_eq!(batch_orders(&instance, 11), vec![1, 2]);
    // The old token is gone; the new one acks, and only its batch goes.
    assert_eq!(
        instance.check_ack(&naming_ack(10, 1, vec![]), 1_001),
        Err(AckRefusal::InvalidToken)
    );
    instance.enqueue(message(3, MessageKind::Other));
    instance.ack(naming_ack(11, 1, vec![event(1)]), 1_001);
    assert_eq!(
        instance.queue.iter().map(|m| m.order).collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn a_refused_ack_changes_nothing() {
    // atomicity::test_atomicity_failure_rollback, error_handling::test_duplicate_event_id_rejection,
    // error_handling::test_lock_expiration_during_ack
    let mut instance = started(10);
    instance.ack(naming_ack(10, 1, vec![event(1)]), 1);
    instance.enqueue(message(2, MessageKind::Other));
    assert!(matches!(
        instance.fetch(20, 10, LOCK_MS, None),
        FetchOutcome::Locked { .. }
    ));
    let before = instance.clone();
    for (ack, refusal) in [
        (naming_ack(21, 1, vec![event(2)]), AckRefusal::InvalidToken),
        (naming_ack(20, 1, vec![event(0)]), AckRefusal::ZeroEventId),
        (
            naming_ack(20, 1, vec![event(1)]),
            AckRefusal::DuplicateEventId(1, 1),
        ),
        (
            naming_ack(20, 1, vec![event(7), event(7)]),
            AckRefusal::DuplicateEventId(7, 1),
        ),
    ] {
        assert_eq!(instance.check_ack(&ack, 11), Err(refusal));
    }
    assert_eq!(
        instance.check_ack(&naming_ack(20, 1, vec![event(2)]), 1_010),
        Err(AckRefusal::Expired)
    );
    assert_eq!(instance, before);
    // Ids need not be contiguous; another execution has ids of its own.
    assert_eq!(
        instance.check_ack(&naming_ack(20, 2, vec![event(1), event(9_999)]), 11),
        Ok(())
    );
}

#[test]
fn abandon_touches_only_its_batch() {
    // poison_message::orchestration_delayed_abandon_preserves_unlocked_rows,
    // poison_message::ignore_attempt_never_goes_negative, lock_expiration::test_abandon_releases_lock_immediately
    let mut instance = started(10);
    instance.enqueue(message(2, MessageKind::Other));
    assert_eq!(
        instance.abandon(99, 5, Some(500), false),
        Err(AckRefusal::InvalidToken)
    );
    assert_eq!(instance.abandon(10, 5, Some(500), true), Ok(()));
    assert!(instance.lock.is_none());
    assert_eq!(instance.queue[0].visible_ms, 505);
    assert_eq!(instance.queue[0].attempts, 0);
    assert_eq!(instance.queue[1].visible_ms, 0, "arrived after the fetch");
    // The later message is visible and the start is not: an instance
    // that does not exist is not taken without its start.
    assert_eq!(instance.fetchable(6, None), Some(2));
    assert_eq!(instance.fetch(11, 6, LOCK_MS, None), FetchOutcome::Nothing);
    // Once the start is visible again, both are the batch.
    assert_eq!(
        instance.fetch(11, 505, LOCK_MS, None),
        FetchOutcome::Locked { attempts: 1 }
    );
    assert_eq!(batch_orders(&instance, 11), vec![1, 2]);
    assert_eq!(instance.abandon(11, 506, None, true), Ok(()));
    assert_eq!(
        instance.abandon(11, 506, None, true),
        Err(AckRefusal::InvalidToken)
    );
    assert!(instance.queue.iter().all(|m| m.attempts == 0));
}

#[test]
fn renewal_extends_from_now_and_not_after_expiry() {
    // lock_expiration::test_orchestration_lock_renewal_after_expiration
    let mut instance = started(10);
    assert_eq!(instance.renew(10, 900, LOCK_MS), Ok(()));
    assert_eq!(instance.fetchable(1_500, None), None, "renewed at 900");
    assert_eq!(
        instance.renew(11, 1_000, LOCK_MS),
        Err(AckRefusal::InvalidToken)
    );
    assert_eq!(instance.renew(10, 1_900, LOCK_MS), Err(AckRefusal::Expired));
}

#[test]
fn the_version_filter_looks_at_the_current_execution() {
    // capability_filtering::test_fetch_filter_boundary_versions, test_fetch_filter_null_pinned_version_always_compatible,
    // test_filter_with_empty_supported_versions_returns_nothing, test_fetch_filter_does_not_lock_skipped_instances
    let range = [VersionRange {
        min: (0, 1, 0),
        max: (0, 1, 32),
    }];
    let mut instance = HostedInstance::new("i");
    instance.enqueue(start(1));
    assert_eq!(
        instance.fetchable(0, Some(&range)),
        Some(1),
        "nothing pinned"
    );
    assert_eq!(instance.fetchable(0, Some(&[])), None, "an empty filter");
    assert_eq!(
        instance.fetch(5, 0, LOCK_MS, Some(&range)),
        FetchOutcome::Locked { attempts: 1 }
    );
    let mut ack = naming_ack(5, 1, vec![event(1)]);
    ack.metadata.pinned_version = Some((0, 1, 33));
    instance.ack(ack, 1);
    instance.enqueue(message(2, MessageKind::Other));
    assert_eq!(
        instance.fetch(6, 2, LOCK_MS, Some(&range)),
        FetchOutcome::Nothing
    );
    assert!(
        instance.lock.is_none() && instance.queue[0].attempts == 0,
        "skipped, not locked"
    );
    assert!(matches!(
        instance.fetch(6, 2, LOCK_MS, None),
        FetchOutcome::Locked { .. }
    ));
    let mut ack = naming_ack(6, 1, vec![]);
    ack.metadata.pinned_version = Some((0, 1, 32));
    instance.ack(ack, 3);
    instance.enqueue(message(3, MessageKind::Other));
    assert_eq!(
        instance.fetchable(4, Some(&range)),
        Some(3),
        "inclusive upper bound"
    );
}

#[test]
fn custom_status_counts_each_change() {
    // custom_status::test_custom_status_set, test_custom_status_clear, test_custom_status_none_preserves
    let mut instance = started(1);
    let mut ack = naming_ack(1, 1, vec![event(1)]);
    ack.custom_status = Some(Some("half".into()));
    instance.ack(ack, 1);
    assert_eq!(
        (
            instance.custom_status.as_deref(),
            instance.custom_status_version
        ),
        (Some("half"), 1)
    );
    for (token, change, expected) in [
        (2, None, (Some("half"), 1)),
        (3, Some(None), (None, 2)),
        (4, Some(Some("done".to_owned())), (Some("done"), 3)),
    ] {
        instance.enqueue(message(token, MessageKind::Other));
        assert!(matches!(
            instance.fetch(token, token, LOCK_MS, None),
            FetchOutcome::Locked { .. }
        ));
        let mut ack = naming_ack(token, 1, vec![]);
        ack.custom_status = change;
        instance.ack(ack, token);
        assert_eq!(
            (
                instance.custom_status.as_deref(),
                instance.custom_status_version
            ),
            expected
        );
    }
}

#[test]
fn key_values_stay_in_the_delta_until_the_execution_ends() {
    // kv_store::test_kv_delta_snapshot_excludes_current_execution, test_kv_delta_client_reads_merged,
    // test_kv_delta_tombstone_overrides_store, test_kv_set_after_clear, test_kv_delta_merged_on_can
    let set = |key: &str, value: &str| KvOp::Set {
        key: key.into(),
        value: value.into(),
        updated_ms: 1,
    };
    let mut instance = started(1);
    let mut ack = naming_ack(1, 1, vec![event(1)]);
    ack.kv = vec![set("a", "1"), set("b", "2")];
    ack.metadata.status = Some("ContinuedAsNew".into());
    instance.ack(ack, 1);
    assert_eq!(
        instance.kv.len(),
        2,
        "merged when the execution continued as new"
    );
    assert!(instance.kv_delta.is_empty());

    instance.enqueue(start(2));
    assert!(matches!(
        instance.fetch(2, 2, LOCK_MS, None),
        FetchOutcome::Locked { .. }
    ));
    let mut ack = naming_ack(2, 2, vec![event(1)]);
    ack.kv = vec![KvOp::Clear { key: "a".into() }, set("c", "")];
    instance.ack(ack, 2);
    assert_eq!(
        instance.kv.len(),
        2,
        "the store is as the last execution left it"
    );
    let merged: Vec<(&str, &str)> = instance
        .kv_merged()
        .into_iter()
        .map(|(k, v)| (k, v.value.as_str()))
        .collect();
    assert_eq!(merged, vec![("b", "2"), ("c", "")]);

    instance.enqueue(message(3, MessageKind::Other));
    assert!(matches!(
        instance.fetch(3, 3, LOCK_MS, None),
        FetchOutcome::Locked { .. }
    ));
    let mut ack = naming_ack(3, 2, vec![event(2)]);
    ack.kv = vec![KvOp::ClearAll, set("d", "4")];
    ack.metadata.status = Some("Completed".into());
    instance.ack(ack, 3);
    assert_eq!(instance.kv.keys().collect::<Vec<_>>(), vec!["d"]);
    assert_eq!(instance.executions[&2].completed_ms, Some(3));
}

#[test]
fn prune_keeps_the_current_running_and_newest_executions() {
    // prune::test_prune_safety, test_prune_options_combinations
    let mut instance = started(1);
    instance.ack(naming_ack(1, 1, vec![event(1)]), 1);
    for execution in 1..=4u64 {
        let token = 10 + execution;
        instance.enqueue(message(token, MessageKind::Other));
        assert!(matches!(
            instance.fetch(token, token, LOCK_MS, None),
            FetchOutcome::Locked { .. }
        ));
        let mut ack = naming_ack(
            token,
            execution,
            if execution == 1 {
                vec![]
            } else {
                vec![event(1)]
            },
        );
        if execution < 4 {
            ack.metadata.status = Some("ContinuedAsNew".into());
        }
        instance.ack(ack, 100 * execution);
    }
    assert_eq!(instance.current_execution(), 4);
    // Completed before 250: executions 1 (at 100) and 2 (at 200).
    assert_eq!(instance.prune(0, Some(250)), (2, 2));
    assert_eq!(
        instance.executions.keys().copied().collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(instance.prune(2, None), (0, 0), "keeps the newest two");
    assert_eq!(instance.prune(1, None), (1, 1));
    assert_eq!(instance.prune(0, None), (0, 0), "never the current one");
}

#[test]
fn messages_take_their_place_in_the_enqueue_order() {
    // instance_locking::test_cross_instance_lock_isolation relies on one order for every queue
    let mut instance = HostedInstance::new("i");
    for order in [5, 1, 3] {
        instance.enqueue(start(order));
    }
    assert_eq!(instance.fetchable(0, None), Some(1));
    assert!(matches!(
        instance.fetch(9, 0, LOCK_MS, None),
        FetchOutcome::Locked { .. }
    ));
    assert_eq!(batch_orders(&instance, 9), vec![1, 3, 5]);
    assert_eq!(instance.max_attempts(), 1);
}

fn item(order: u64, activity_id: u64, session: Option<&str>, tag: Option<&str>) -> WorkerItem {
    WorkerItem {
        order,
        id: WorkerItemId {
            instance: "i".into(),
            execution_id: 1,
            activity_id,
        },
        session: session.map(Into::into),
        tag: tag.map(Into::into),
        bytes: vec![1],
        visible_ms: 0,
        lock: None,
        attempts: 0,
    }
}

fn claim(owner: &str) -> SessionClaim {
    SessionClaim {
        owner: owner.into(),
        lock_ms: 500,
    }
}

#[test]
fn worker_items_come_oldest_first_through_the_tag_filter() {
    // queue_semantics::test_worker_queue_fifo_ordering, tag_filtering::test_default_only_fetches_untagged,
    // tag_filtering::test_tags_fetches_only_matching, test_default_and_fetches_untagged_and_matching, test_none_filter_returns_nothing
    let mut queue = WorkerQueue::default();
    queue.enqueue(item(1, 1, None, None));
    queue.enqueue(item(2, 2, None, Some("gpu")));
    queue.enqueue(item(3, 3, None, None));
    let gpu: BTreeSet<String> = ["gpu".to_owned()].into();
    assert_eq!(queue.candidate(0, None, &TagFilter::DefaultOnly), Some(1));
    assert_eq!(
        queue.candidate(0, None, &TagFilter::Tags(gpu.clone())),
        Some(2)
    );
    assert_eq!(queue.candidate(0, None, &TagFilter::None), None);
    assert_eq!(
        queue.fetch(1, 10, 0, LOCK_MS, None, &TagFilter::DefaultOnly),
        Some(1)
    );
    assert_eq!(queue.candidate(0, None, &TagFilter::DefaultOnly), Some(3));
    assert_eq!(
        queue.candidate(0, None, &TagFilter::DefaultAnd(gpu)),
        Some(2)
    );
    assert_eq!(queue.unlocked(), 2);
}

#[test]
fn a_session_belongs_to_its_owner_until_its_claim_runs_out() {
    // sessions::test_session_affinity_blocks_other_worker, test_none_session_skips_session_items,
    // test_shared_worker_id_any_caller_can_fetch_owned_session, test_session_takeover_after_lock_expiry
    let mut queue = WorkerQueue::default();
    queue.enqueue(item(1, 1, Some("s"), None));
    queue.enqueue(item(2, 2, Some("s"), None));
    let any = TagFilter::Any;
    assert_eq!(
        queue.candidate(0, None, &any),
        None,
        "no claim, no session items"
    );
    assert_eq!(
        queue.fetch(1, 10, 0, LOCK_MS, Some(&claim("a")), &any),
        Some(1)
    );
    assert_eq!(
        queue.candidate(100, Some(&claim("b")), &any),
        None,
        "a owns s"
    );
    assert_eq!(
        queue.candidate(100, Some(&claim("a")), &any),
        Some(2),
        "any fetcher of a"
    );
    assert_eq!(
        queue.candidate(500, Some(&claim("b")), &any),
        Some(2),
        "the claim ran out"
    );
    assert_eq!(
        queue.fetch(2, 11, 500, LOCK_MS, Some(&claim("b")), &any),
        Some(1)
    );
    assert_eq!(queue.session("s").map(|s| s.owner.as_str()), Some("b"));
    // a's item lock is independent of the session: its ack still works.
    assert!(queue.ack(10, 600).is_ok());
}

#[test]
fn worker_locks_end_with_ack_expiry_abandon_or_cancellation() {
    // lock_expiration::test_worker_ack_fails_after_lock_expiry, test_worker_lock_renewal_extends_timeout,
    // test_abandon_work_item_with_delay, cancellation::test_ack_work_item_fails_when_entry_deleted,
    // cancellation::test_cancelling_nonexistent_activities_is_idempotent
    let any = TagFilter::Any;
    let mut queue = WorkerQueue::default();
    queue.enqueue(item(1, 1, None, None));
    assert_eq!(queue.fetch(1, 10, 0, LOCK_MS, None, &any), Some(1));
    assert_eq!(queue.renew(10, 600, LOCK_MS), Ok(()));
    assert_eq!(queue.candidate(1_000, None, &any), None, "renewed from 600");
    assert_eq!(queue.ack(10, 1_600), Err(WorkRefusal::Expired));
    assert_eq!(queue.len(), 1, "a refused ack leaves the item");
    assert_eq!(queue.fetch(1, 11, 1_600, LOCK_MS, None, &any), Some(2));
    assert_eq!(queue.ack(10, 1_601), Err(WorkRefusal::InvalidToken));
    assert_eq!(queue.abandon(11, 1_700, Some(300), true), Ok(()));
    assert_eq!(
        queue.candidate(1_999, None, &any),
        None,
        "hidden until 2000"
    );
    assert_eq!(
        queue.fetch(1, 12, 2_000, LOCK_MS, None, &any),
        Some(2),
        "1 taken back"
    );
    let id = WorkerItemId {
        instance: "i".into(),
        execution_id: 1,
        activity_id: 1,
    };
    assert_eq!(queue.cancel(&id), 1, "cancelled while locked");
    assert_eq!(queue.ack(12, 2_001), Err(WorkRefusal::InvalidToken));
    assert_eq!(queue.cancel(&id), 0);
    assert!(queue.is_empty());
}

#[test]
fn idle_and_expired_sessions_are_not_renewed_and_unused_ones_are_cleaned_up() {
    // sessions::test_renew_session_lock_skips_idle, test_renew_session_lock_after_expiry_returns_zero,
    // sessions::test_cleanup_removes_expired_no_items, test_cleanup_keeps_sessions_with_pending_items,
    // sessions::test_ack_updates_session_last_activity
    let any = TagFilter::Any;
    let owners = vec!["a".to_owned()];
    let mut queue = WorkerQueue::default();
    queue.enqueue(item(1, 1, Some("s"), None));
    queue.enqueue(item(2, 2, Some("t"), None));
    assert_eq!(
        queue.fetch(1, 10, 0, LOCK_MS, Some(&claim("a")), &any),
        Some(1)
    );
    assert_eq!(
        queue.fetch(2, 11, 0, LOCK_MS, Some(&claim("a")), &any),
        Some(1)
    );
    assert_eq!(
        queue.renew_sessions(&owners, 100, 500, 0),
        0,
        "idle 0 renews nothing"
    );
    assert!(queue.ack(10, 200).is_ok());
    assert_eq!(queue.session("s").map(|s| s.last_activity_ms), Some(200));
    // s was active at 200, t last at 0: with 150 ms of idleness allowed,
    // only s is renewed at 300.
    assert_eq!(queue.renew_sessions(&owners, 300, 500, 150), 1);
    assert_eq!(
        queue.renew_sessions(&owners, 900, 500, 10_000),
        0,
        "both ran out"
    );
    // s has no items left and is gone; t still has one and stays.
    assert_eq!(queue.cleanup_sessions(900), 1);
    assert!(queue.session("s").is_none() && queue.session("t").is_some());
}

#[test]
fn an_instance_no_ack_named_passes_every_version_filter() {
    // capability_filtering::test_fetch_filter_null_pinned_version_always_compatible
    let mut instance = started(1);
    let ack = Ack {
        token: 1,
        execution_id: 1,
        events: vec![event(1)],
        metadata: AckMetadata {
            pinned_version: Some((9, 9, 9)),
            ..AckMetadata::default()
        },
        ..Ack::default()
    };
    instance.ack(ack, 1);
    assert!(!instance.exists(), "no name, no instance record");
    instance.enqueue(start(2));
    let range = [VersionRange {
        min: (0, 1, 0),
        max: (0, 1, 32),
    }];
    assert_eq!(instance.fetchable(2, Some(&range)), Some(2));
}
