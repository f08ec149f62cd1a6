//! Behaviour of the partition log on every storage choice: append, group
//! commit, read back, recovery, checkpoints, failures, the one-owner rule and
//! task hub metadata.

mod common;

use std::sync::Arc;
use std::time::Duration;

use basalt_storage::fault::{Fault, FaultyStore};
use basalt_storage::{
    ErrorKind, HubOptions, LogOptions, Lsn, PartitionId, Storage, TaskHub, list_checkpoints,
    list_segments,
};
use common::{ALL_KINDS, Kind, Place, hub_options, payload};
use futures::future::try_join_all;
use object_store::memory::InMemory;
use proptest::prelude::*;

#[tokio::test]
async fn appended_records_read_back_and_recover_on_every_store() {
    for kind in ALL_KINDS {
        let place = Place::new(kind);
        let (log, recovered) = place.open(LogOptions::default()).await.expect("open");
        assert_eq!(
            recovered.next_lsn,
            Lsn(1),
            "{kind:?}: a new log starts at 1"
        );
        assert!(recovered.records.is_empty());
        // 16 concurrent producers, 20 records each.
        let producers = (0..16u64).map(|p| {
            let log = log.clone();
            async move {
                let mut lsns = Vec::new();
                for n in 0..20u64 {
                    let appended = log.append(&payload(p * 100 + n)).await?;
                    lsns.push((appended.lsn(), p * 100 + n));
                    appended.durable().await?;
                }
                Ok::<_, basalt_storage::Error>(lsns)
            }
        });
        let mut written: Vec<(Lsn, u64)> = try_join_all(producers)
            .await
            .expect("appends")
            .into_iter()
            .flatten()
            .collect();
        written.sort();
        assert_eq!(written.len(), 320);
        assert_eq!(log.durable_lsn(), Lsn(320));
        let read = log.read_from(Lsn(1)).await.expect("read");
        assert_eq!(read.len(), 320, "{kind:?}");
        for (record, (lsn, seed)) in read.iter().zip(&written) {
            assert_eq!(record.lsn, *lsn);
            assert_eq!(record.payload.as_ref(), payload(*seed).as_slice());
        }
        let tail = log.read_from(Lsn(300)).await.expect("read tail");
        assert_eq!(tail.first().map(|r| r.lsn), Some(Lsn(300)));
        assert_eq!(tail.len(), 21);
        log.close().await.expect("close");
        drop(log);

        let (log, recovered) = place.open(LogOptions::default()).await.expect("reopen");
        assert_eq!(recovered.next_lsn, Lsn(321), "{kind:?}");
        assert_eq!(
            recovered.records, read,
            "{kind:?}: recovery returns the same records"
        );
        assert!(recovered.torn_tail.is_none());
        let lsn = log
            .append(b"after reopen")
            .await
            .expect("append")
            .durable()
            .await
            .expect("durable");
        assert_eq!(lsn, Lsn(321));
        assert!(recovered.epoch.0 >= 2, "each opening takes a new epoch");
    }
}

#[tokio::test]
async fn group_commit_puts_concurrent_records_in_one_write() {
    // Slow writes make everything submitted during a write wait for the next.
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())).with_key_filter("/log/"));
    faulty.delay_writes(Duration::from_millis(20));
    let storage = Storage::object_store(faulty.clone(), "slow memory");
    let hub = TaskHub::open_or_create(storage, &hub_options())
        .await
        .expect("hub");
    let (log, _) = hub
        .open_partition(PartitionId(1), LogOptions::default())
        .await
        .expect("open");
    let producers = (0..64u64).map(|p| {
        let log = log.clone();
        async move {
            for n in 0..5u64 {
                log.append(&payload(p + n)).await?.durable().await?;
            }
            Ok::<_, basalt_storage::Error>(())
        }
    });
    try_join_all(producers).await.expect("appends");
    let stats = log.stats();
    assert_eq!(stats.records, 320);
    assert!(
        stats.writes * 8 <= stats.records,
        "64 producers should share writes: {stats:?}"
    );
    assert_eq!(faulty.writes(), stats.writes);
}

#[tokio::test]
async fn without_group_commit_every_record_is_its_own_write() {
    let place = Place::new(Kind::Memory);
    let options = LogOptions {
        group_commit: false,
        ..LogOptions::default()
    };
    let (log, _) = place.open(options).await.expect("open");
    let appended = try_join_all((0..50u64).map(|i| {
        let log = log.clone();
        async move { log.append(&payload(i)).await }
    }))
    .await
    .expect("append");
    try_join_all(appended.into_iter().map(|a| a.durable()))
        .await
        .expect("durable");
    assert_eq!(log.stats().writes, 50);
    assert_eq!(
        list_segments(&place.storage(), PartitionId(0))
            .await
            .expect("list")
            .len(),
        50
    );
}

#[tokio::test]
async fn batches_respect_the_byte_cap() {
    let place = Place::new(Kind::Memory);
    let options = LogOptions {
        batch_bytes_max: 1000,
        ..LogOptions::default()
    };
    let (log, _) = place.open(options).await.expect("open");
    // Append 100 records of 100 bytes before any is written: the committer
    // must split them into writes of at most 1000 bytes of frames.
    let appended = try_join_all((0..100u64).map(|_| {
        let log = log.clone();
        async move { log.append(&[7u8; 100]).await }
    }))
    .await
    .expect("append");
    try_join_all(appended.into_iter().map(|a| a.durable()))
        .await
        .expect("durable");
    let frame = 16 + 100;
    let per_write = 1000 / frame;
    let stats = log.stats();
    assert!(
        stats.writes >= (100 / per_write) as u64,
        "no write may exceed the cap: {stats:?}"
    );
    for segment in list_segments(&place.storage(), PartitionId(0))
        .await
        .expect("list")
    {
        assert!(segment.size_bytes <= 32 + 1000, "{segment:?}");
    }
}

#[tokio::test]
async fn oversized_records_are_refused_and_the_log_goes_on() {
    let place = Place::new(Kind::Memory);
    let options = LogOptions {
        record_bytes_max: 1024,
        ..LogOptions::default()
    };
    let (log, _) = place.open(options).await.expect("open");
    let err = log.append(&[0u8; 1025]).await.expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("1025"), "{err}");
    let lsn = log
        .append(&[0u8; 1024])
        .await
        .expect("fits")
        .durable()
        .await
        .expect("durable");
    assert_eq!(lsn, Lsn(1));
}

#[tokio::test]
async fn checkpoint_recovery_returns_snapshot_plus_suffix_and_cleans_up() {
    for kind in ALL_KINDS {
        let place = Place::new(kind);
        let (log, _) = place.open(LogOptions::default()).await.expect("open");
        let mut last = Lsn::ZERO;
        for round in 0..4u64 {
            for i in 0..10u64 {
                last = log
                    .append(&payload(round * 10 + i))
                    .await
                    .expect("append")
                    .durable()
                    .await
                    .expect("durable");
            }
            let snapshot = format!("state up to {last}");
            log.checkpoint(last, snapshot.as_bytes())
                .await
                .expect("checkpoint");
        }
        for i in 40..45u64 {
            last = log
                .append(&payload(i))
                .await
                .expect("append")
                .durable()
                .await
                .expect("durable");
        }
        let err = log
            .checkpoint(Lsn(last.0 + 1), b"future")
            .await
            .expect_err("ahead of durable");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        // Every durable write is counted: 45 records one at a time, 4
        // checkpoints, and (segment files only) the first segment plus one
        // new segment after each checkpoint.
        let stats = log.stats();
        assert_eq!(stats.writes, 45, "{kind:?}");
        assert_eq!(stats.checkpoints, 4, "{kind:?}");
        assert!(stats.checkpoint_bytes > 4 * 14, "{kind:?}: {stats:?}");
        let segments = if matches!(kind, Kind::LocalFile) {
            5
        } else {
            0
        };
        assert_eq!(stats.segments_created, segments, "{kind:?}");
        log.close().await.expect("close");
        drop(log);

        let storage = place.storage();
        let checkpoints = list_checkpoints(&storage, PartitionId(0))
            .await
            .expect("list");
        let lsns: Vec<u64> = checkpoints.iter().map(|c| c.lsn.0).collect();
        assert_eq!(lsns, vec![30, 40], "{kind:?}: two newest checkpoints kept");
        let segments = list_segments(&storage, PartitionId(0)).await.expect("list");
        // Segments wholly below the older kept checkpoint (30) are gone.
        for pair in segments.windows(2) {
            assert!(
                pair[1].first_lsn > Lsn(31),
                "{kind:?}: {:?} should have been deleted",
                pair[0]
            );
        }
        drop(storage);

        let (_log, recovered) = place.open(LogOptions::default()).await.expect("reopen");
        let checkpoint = recovered.checkpoint.expect("checkpoint");
        assert_eq!(checkpoint.lsn, Lsn(40), "{kind:?}");
        assert_eq!(checkpoint.payload.as_ref(), b"state up to 40");
        let lsns: Vec<u64> = recovered.records.iter().map(|r| r.lsn.0).collect();
        assert_eq!(lsns, (41..=45).collect::<Vec<_>>(), "{kind:?}");
        assert_eq!(recovered.next_lsn, Lsn(46));
    }
}

#[tokio::test]
async fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let place = Place::new(Kind::LocalFile);
    let (log, _) = place.open(LogOptions::default()).await.expect("open");
    for i in 1..=20u64 {
        log.append(&payload(i))
            .await
            .expect("append")
            .durable()
            .await
            .expect("durable");
        if i == 10 || i == 20 {
            log.checkpoint(Lsn(i), format!("at {i}").as_bytes())
                .await
                .expect("checkpoint");
        }
    }
    log.close().await.expect("close");
    drop(log);
    let key = "p00/checkpoint/00000000000000000020.snap";
    let mut bytes = place.read(key).await;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    place.write(key, bytes).await;

    let (_log, recovered) = place.open(LogOptions::default()).await.expect("reopen");
    assert_eq!(recovered.checkpoint.map(|c| c.lsn), Some(Lsn(10)));
    assert_eq!(recovered.damaged_checkpoints.len(), 1);
    assert_eq!(recovered.damaged_checkpoints[0].object, key);
    let lsns: Vec<u64> = recovered.records.iter().map(|r| r.lsn.0).collect();
    assert_eq!(lsns, (11..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_write_fails_its_waiters_and_stops_the_log_until_reopened() {
    let memory = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyStore::new(memory.clone()).with_key_filter("/log/"));
    faulty.inject(3, Fault::Fail);
    let storage = Storage::object_store(faulty.clone(), "faulty");
    let hub = TaskHub::open_or_create(storage, &hub_options())
        .await
        .expect("hub");
    let (log, _) = hub
        .open_partition(PartitionId(0), LogOptions::default())
        .await
        .expect("open");
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for i in 0..10u64 {
        match log.append(&payload(i)).await {
            Ok(appended) => match appended.durable().await {
                Ok(lsn) => acknowledged.push(lsn),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            },
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("the third write fails");
    assert_eq!(failure.kind(), ErrorKind::ShutDown);
    assert!(failure.to_string().contains("injected"), "{failure}");
    assert_eq!(acknowledged, vec![Lsn(1), Lsn(2)]);
    let refused = log.append(b"more").await.expect_err("log stopped");
    assert_eq!(refused.kind(), ErrorKind::ShutDown);
    drop(log);
    drop(hub);

    let storage = Storage::object_store(memory, "memory");
    let hub = TaskHub::open_or_create(storage, &hub_options())
        .await
        .expect("hub");
    let (log, recovered) = hub
        .open_partition(PartitionId(0), LogOptions::default())
        .await
        .expect("reopen");
    let lsns: Vec<Lsn> = recovered.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, acknowledged);
    let next = log
        .append(b"x")
        .await
        .expect("append")
        .durable()
        .await
        .expect("durable");
    assert_eq!(next, Lsn(3));
}

/// Seeded tears and failures: whatever the plan, every acknowledged record
/// survives reopening with its exact bytes, and a torn write is trimmed.
#[tokio::test]
async fn seeded_write_faults_never_lose_acknowledged_records() {
    let (mut faulted, mut trimmed) = (0, 0);
    for seed in 0..40u64 {
        let memory = Arc::new(InMemory::new());
        let faulty = Arc::new(FaultyStore::new(memory.clone()).with_key_filter("/log/"));
        let plan = faulty.inject_seeded(seed, 1..12, 400);
        let storage = Storage::object_store(faulty.clone(), "faulty");
        let hub = TaskHub::open_or_create(storage, &hub_options())
            .await
            .expect("hub");
        let (log, _) = hub
            .open_partition(PartitionId(2), LogOptions::default())
            .await
            .expect("open");
        let producers = (0..4u64).map(|p| {
            let log = log.clone();
            async move {
                let mut acked = Vec::new();
                for n in 0..15u64 {
                    let Ok(appended) = log.append(&payload(p * 1000 + n)).await else {
                        break;
                    };
                    match appended.durable().await {
                        Ok(lsn) => acked.push((lsn, p * 1000 + n)),
                        Err(_) => break,
                    }
                }
                acked
            }
        });
        let acked: Vec<(Lsn, u64)> = futures::future::join_all(producers)
            .await
            .into_iter()
            .flatten()
            .collect();
        drop(log);
        drop(hub);

        let storage = Storage::object_store(memory, "memory");
        let hub = TaskHub::open_or_create(storage, &hub_options())
            .await
            .expect("hub");
        let (_log, recovered) = hub
            .open_partition(PartitionId(2), LogOptions::default())
            .await
            .unwrap_or_else(|e| panic!("seed {seed} plan {plan:?}: recovery failed: {e}"));
        for (lsn, seed_of_payload) in &acked {
            let record = recovered
                .records
                .iter()
                .find(|r| r.lsn == *lsn)
                .unwrap_or_else(|| panic!("seed {seed} plan {plan:?}: lost acknowledged {lsn}"));
            assert_eq!(
                record.payload.as_ref(),
                payload(*seed_of_payload).as_slice(),
                "seed {seed}"
            );
        }
        if let Some(torn) = &recovered.torn_tail {
            assert!(
                matches!(plan.1, Fault::Tear { .. }),
                "seed {seed}: only a torn write leaves a torn tail"
            );
            assert!(torn.object.contains("/log/"), "{torn:?}");
            trimmed += 1;
        }
        if faulty.injected() > 0 {
            faulted += 1;
        }
    }
    assert!(faulted >= 30, "most plans must hit a write: {faulted}");
    assert!(
        trimmed >= 5,
        "tears must be trimmed and reported: {trimmed}"
    );
    eprintln!("{faulted} of 40 plans hit a write, {trimmed} torn tails trimmed");
}

#[tokio::test]
async fn a_second_opener_of_a_local_hub_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().expect("dir");
    let first = Storage::local(dir.path()).expect("first opener");
    let err = Storage::local(dir.path()).expect_err("second opener");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let message = err.to_string();
    assert!(message.contains("in use by another process"), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    drop(first);
    Storage::local(dir.path()).expect("free again once the first is dropped");
}

#[tokio::test]
async fn one_partition_opens_once_per_process() {
    let place = Place::new(Kind::Memory);
    let hub = TaskHub::open_or_create(place.storage(), &hub_options())
        .await
        .expect("hub");
    let (log, _) = hub
        .open_partition(PartitionId(0), LogOptions::default())
        .await
        .expect("open");
    let err = hub
        .open_partition(PartitionId(0), LogOptions::default())
        .await
        .expect_err("second open");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = hub
        .open_partition(PartitionId(9), LogOptions::default())
        .await
        .expect_err("no such partition");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // The claim lasts until the committer has stopped.
    log.close().await.expect("close");
    drop(log);
    hub.open_partition(PartitionId(0), LogOptions::default())
        .await
        .expect("open again after close");
}

#[tokio::test]
async fn task_hub_parameters_are_checked_on_open() {
    let place = Place::new(Kind::LocalFile);
    let created = TaskHub::open_or_create(place.storage(), &hub_options())
        .await
        .expect("create");
    assert_eq!(created.meta().partition_count, 4);
    let id = created.meta().id.clone();
    drop(created);

    let reopened = TaskHub::open_existing(place.storage())
        .await
        .expect("reopen");
    assert_eq!(reopened.meta().id, id);
    drop(reopened);

    let wrong = HubOptions {
        partition_count: 8,
        ..hub_options()
    };
    let err = TaskHub::open_or_create(place.storage(), &wrong)
        .await
        .expect_err("mismatch");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let message = err.to_string();
    assert!(
        message.contains("partition count") && message.contains('8') && message.contains('4'),
        "{message}"
    );

    // A hub from a future format version is refused, naming both versions.
    let path = place.path().join("taskhub.json");
    let json = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        json.replace("\"format_version\": 2", "\"format_version\": 7"),
    )
    .expect("write");
    let err = TaskHub::open_or_create(place.storage(), &hub_options())
        .await
        .expect_err("unknown format");
    let message = err.to_string();
    assert!(
        message.contains("format version") && message.contains('7') && message.contains("1..=2"),
        "{message}"
    );

    std::fs::write(&path, b"{ not json").expect("write");
    let err = TaskHub::open_existing(place.storage())
        .await
        .expect_err("garbage");
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.to_string().contains("taskhub.json"), "{err}");

    let empty = tempfile::tempdir().expect("dir");
    let err = TaskHub::open_existing(Storage::local(empty.path()).expect("storage"))
        .await
        .expect_err("no hub");
    assert!(err.to_string().contains("no task hub"), "{err}");

    let bad = HubOptions {
        partition_count: 0,
        ..hub_options()
    };
    let err = TaskHub::open_or_create(Storage::in_memory(), &bad)
        .await
        .expect_err("zero partitions");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Any records, any batch boundaries (groups appended together, random
    /// byte caps), any reopen points: the log reads back exactly.
    #[test]
    fn any_records_and_batches_read_back_identical(
        groups in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..12),
            1..10,
        ),
        batch_bytes_max in 16usize..2048,
        reopen_after in prop::collection::vec(any::<bool>(), 10),
        kind_index in 0usize..3,
    ) {
        let kind = ALL_KINDS[kind_index];
        run(async move {
            let place = Place::new(kind);
            let options = LogOptions { batch_bytes_max, segment_bytes_max: 4096, ..LogOptions::default() };
            let (mut log, _) = place.open(options.clone()).await.expect("open");
            let mut expected: Vec<Vec<u8>> = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                let mut pending = Vec::new();
                for record in group {
                    pending.push(log.append(record).await.expect("append"));
                    expected.push(record.clone());
                }
                for appended in pending {
                    appended.durable().await.expect("durable");
                }
                if reopen_after[g % reopen_after.len()] {
                    log.close().await.expect("close");
                    drop(log);
                    let (reopened, recovered) = place.open(options.clone()).await.expect("reopen");
                    let got: Vec<Vec<u8>> = recovered.records.iter().map(|r| r.payload.to_vec()).collect();
                    assert_eq!(got, expected, "{kind:?}: recovery");
                    log = reopened;
                }
            }
            let read = log.read_from(Lsn(1)).await.expect("read");
            let lsns: Vec<u64> = read.iter().map(|r| r.lsn.0).collect();
            assert_eq!(lsns, (1..=expected.len() as u64).collect::<Vec<_>>());
            let got: Vec<Vec<u8>> = read.iter().map(|r| r.payload.to_vec()).collect();
            assert_eq!(got, expected, "{kind:?}: read_from");
        });
    }
}

#[tokio::test]
async fn waiting_for_an_lsn_that_will_never_be_written_ends_at_close() {
    let place = Place::new(Kind::Memory);
    let (log, _) = place.open(LogOptions::default()).await.expect("open");
    log.append(b"one")
        .await
        .expect("append")
        .durable()
        .await
        .expect("durable");
    log.close().await.expect("close");
    let waited = tokio::time::timeout(Duration::from_secs(10), log.wait_durable(Lsn(5)))
        .await
        .expect("must not hang after close");
    assert_eq!(
        waited.expect_err("never written").kind(),
        ErrorKind::ShutDown
    );
}

#[tokio::test]
async fn appenders_waiting_for_budget_get_the_failure_instead_of_hanging() {
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())).with_key_filter("/log/"));
    faulty.delay_writes(Duration::from_millis(50));
    faulty.inject(1, Fault::Fail);
    let storage = Storage::object_store(faulty, "faulty");
    let hub = TaskHub::open_or_create(storage, &hub_options())
        .await
        .expect("hub");
    let options = LogOptions {
        record_bytes_max: 100,
        pending_bytes_max: 2 * (16 + 100),
        ..LogOptions::default()
    };
    let (log, _) = hub
        .open_partition(PartitionId(0), options)
        .await
        .expect("open");
    let first = log.append(&[1u8; 100]).await.expect("fits");
    let second = log.append(&[2u8; 100]).await.expect("fits");
    // The budget is full: this one waits until the (failing) write ends.
    let third = tokio::time::timeout(Duration::from_secs(10), log.append(&[3u8; 100]))
        .await
        .expect("must not hang");
    assert_eq!(third.expect_err("log failed").kind(), ErrorKind::ShutDown);
    assert!(first.durable().await.is_err());
    assert!(second.durable().await.is_err());
}

#[tokio::test]
async fn a_single_checkpoint_keeps_the_log_behind_it() {
    let place = Place::new(Kind::LocalFile);
    let (log, _) = place.open(LogOptions::default()).await.expect("open");
    for i in 1..=10u64 {
        log.append(&payload(i))
            .await
            .expect("append")
            .durable()
            .await
            .expect("durable");
    }
    let report = log.checkpoint(Lsn(10), b"ten").await.expect("checkpoint");
    assert_eq!(
        report.segments_deleted, 0,
        "with no spare checkpoint the log behind it stays"
    );
    let segments = list_segments(&place.storage_unlocked(), PartitionId(0))
        .await
        .expect("list");
    assert_eq!(segments.first().map(|s| s.first_lsn), Some(Lsn(1)));
    let first = log.append(b"eleven").await.expect("append");
    first.durable().await.expect("durable");
    log.checkpoint(Lsn(11), b"eleven")
        .await
        .expect("checkpoint");
    let err = log
        .checkpoint(Lsn(10), b"backwards")
        .await
        .expect_err("older than the newest");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    log.close().await.expect("close");
}

#[tokio::test]
async fn deferred_records_are_written_when_asked_for_or_at_their_deadline() {
    let hub = TaskHub::open_or_create(Storage::in_memory(), &hub_options())
        .await
        .expect("hub");
    let (log, _) = hub
        .open_partition(
            PartitionId(0),
            LogOptions {
                deferred_commit_micros: 1_000_000,
                ..LogOptions::default()
            },
        )
        .await
        .expect("open");
    // Nobody asks: the records wait (a liveness check with a generous
    // margin, not a speed one).
    let first = log.append_deferred(&payload(1)).await.expect("append");
    let second = log.append_deferred(&payload(2)).await.expect("append");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        log.durable_lsn() < first.lsn(),
        "written before anyone asked"
    );
    assert_eq!(log.stats().writes, 0);
    // Asked for: both go in one write.
    log.request_commit();
    let durable = second.durable().await.expect("durable");
    assert_eq!(durable, Lsn(2));
    assert_eq!(log.stats().writes, 1);
    // An eager append takes the deferred ones along.
    let _third = log.append_deferred(&payload(3)).await.expect("append");
    log.append(&payload(4))
        .await
        .expect("append")
        .durable()
        .await
        .expect("durable");
    assert_eq!(log.stats().writes, 2);
    assert_eq!(log.durable_lsn(), Lsn(4));
    // Left alone, a deferred record is written at its deadline.
    let fifth = log.append_deferred(&payload(5)).await.expect("append");
    tokio::time::timeout(Duration::from_secs(10), fifth.durable())
        .await
        .expect("written by its deadline")
        .expect("durable");
    assert_eq!(log.stats().writes, 3);
    // What was written reads back in order.
    let records = log.read_from(Lsn(1)).await.expect("read");
    assert_eq!(records.len(), 5);
    log.close().await.expect("close");
}

/// Closing a log releases its partition, so the same process can open it
/// again (a partition recovering from a storage error does); a clone of
/// the closed log can no longer truncate what the new opening owns.
#[tokio::test]
async fn a_closed_log_releases_its_partition_and_refuses_truncation() {
    for kind in ALL_KINDS {
        let place = Place::new(kind);
        let hub = TaskHub::open_or_create(place.storage(), &hub_options())
            .await
            .expect("hub");
        let (log, _) = hub
            .open_partition(PartitionId(0), LogOptions::default())
            .await
            .expect("open");
        let stale = log.clone();
        log.append(&payload(1))
            .await
            .expect("append")
            .durable()
            .await
            .expect("durable");
        let busy = hub
            .open_partition(PartitionId(0), LogOptions::default())
            .await
            .expect_err("open twice");
        assert!(
            matches!(busy, basalt_storage::Error::AlreadyOpen(_)),
            "{kind:?}: {busy}"
        );
        log.close().await.expect("close");
        let (reopened, recovered) = hub
            .open_partition(PartitionId(0), LogOptions::default())
            .await
            .expect("open again after close");
        assert_eq!(recovered.records.len(), 1, "{kind:?}");
        let refused = stale
            .truncate_through(Lsn(1), 0)
            .await
            .expect_err("a closed log truncates nothing");
        assert!(
            matches!(refused, basalt_storage::Error::Closed(_)),
            "{kind:?}: {refused}"
        );
        reopened.close().await.expect("close");
    }
}

/// Segment files grow in pre-zeroed chunks; the zeros after the last
/// record read as the segment's clean end after a crash, a write torn
/// inside them is trimmed and reported, and a closed log's segment is cut
/// back to its records.
#[tokio::test]
async fn preallocated_segments_recover_cleanly_and_are_cut_back_at_close() {
    let chunk = 64 << 10;
    let options = LogOptions {
        segment_preallocate_bytes: chunk,
        ..LogOptions::default()
    };
    let place = Place::new(Kind::LocalFile);
    let (log, _) = place.open(options.clone()).await.expect("open");
    for n in 0..50 {
        log.append(&payload(n))
            .await
            .expect("append")
            .durable()
            .await
            .expect("durable");
    }
    let written = 32 + log.stats().bytes;
    let segments = list_segments(&place.storage_unlocked(), PartitionId(0))
        .await
        .expect("list");
    let key = segments.last().expect("a segment").key.clone();
    // What a kill -9 would leave: the records, then zeros to a chunk's end.
    let live = place.read(&key).await;
    assert_eq!(live.len() as u64 % chunk, 0, "grown in whole chunks");
    assert!(live.len() as u64 > written, "zeros ahead of the records");
    assert!(live[written as usize..].iter().all(|b| *b == 0));
    log.close().await.expect("close");
    drop(log);
    let closed = place.read(&key).await;
    assert_eq!(closed.len() as u64, written, "cut back to its records");
    assert_eq!(closed[..], live[..written as usize]);

    // Crashed with the zeros in place: every record, no torn tail.
    place.write(&key, live.clone()).await;
    let (log, recovered) = place.open(options.clone()).await.expect("reopen");
    assert_eq!(recovered.records.len(), 50);
    assert!(recovered.torn_tail.is_none(), "{:?}", recovered.torn_tail);
    log.close().await.expect("close");
    drop(log);

    // A record torn inside the zeros (its header and part of its payload
    // reached the disk): trimmed and reported, the 50 before it kept.
    let segments = list_segments(&place.storage_unlocked(), PartitionId(0))
        .await
        .expect("list");
    for segment in segments.iter().filter(|s| s.key != key) {
        place.remove(&segment.key).await;
    }
    let mut torn = live;
    let frame = {
        let mut out = Vec::new();
        basalt_storage::codec::encode_record(&mut out, Lsn(51), &payload(51));
        out
    };
    let at = written as usize;
    torn[at..at + frame.len() / 2].copy_from_slice(&frame[..frame.len() / 2]);
    place.write(&key, torn).await;
    let (log, recovered) = place.open(options).await.expect("reopen torn");
    assert_eq!(recovered.records.len(), 50);
    let tail = recovered.torn_tail.expect("the torn record is reported");
    assert_eq!(tail.object, key);
    assert_eq!(tail.offset, written);
    log.close().await.expect("close");
    drop(log);
}
