//! Damage is named (I6): flip every byte and cut at every offset of a small
//! segment and of a checkpoint. Recovery always ends in a clear error naming
//! the object and offset, or in a clean trimmed tail that is reported; never
//! a panic, never a wrong record.

mod common;

use basalt_storage::codec::{self, SegmentHeader};
use basalt_storage::{
    Epoch, ErrorKind, LogOptions, Lsn, PartitionId, Recovery, Storage, TaskHub, list_checkpoints,
    read_checkpoint,
};
use common::{ALL_KINDS, Kind, Place, hub_options};

const PARTITION: PartitionId = PartitionId(0);

fn payloads() -> Vec<Vec<u8>> {
    (0..5u8)
        .map(|i| (0..(3 + i * 4)).map(|j| i * 31 + j).collect())
        .collect()
}

/// A segment of `partition` holding `payloads` from `first_lsn` on.
fn segment(epoch: u64, first_lsn: u64, payloads: &[Vec<u8>]) -> (String, Vec<u8>) {
    let header = SegmentHeader {
        partition: PARTITION,
        epoch: Epoch(epoch),
        first_lsn: Lsn(first_lsn),
    };
    let mut bytes = header.encode().to_vec();
    for (i, p) in payloads.iter().enumerate() {
        codec::encode_record(&mut bytes, Lsn(first_lsn + i as u64), p);
    }
    (
        codec::segment_key(PARTITION, Epoch(epoch), Lsn(first_lsn)),
        bytes,
    )
}

async fn fresh_hub(place: &Place) {
    TaskHub::open_or_create(place.storage(), &hub_options())
        .await
        .expect("hub");
}

async fn recover(place: &Place) -> basalt_storage::Result<Recovery> {
    let (log, recovered) = place.open(LogOptions::default()).await?;
    log.close().await?;
    Ok(recovered)
}

fn assert_named(err: &basalt_storage::Error, object: &str, context: &str) {
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{context}: {err}");
    let message = err.to_string();
    assert!(
        message.contains(object) && (message.contains("offset") || message.contains("LSN")),
        "{context}: the error must name the object and where: {message}"
    );
}

/// The records recovered are exactly a prefix of what was written.
fn assert_prefix(recovered: &Recovery, written: &[Vec<u8>], context: &str) {
    assert!(recovered.records.len() <= written.len(), "{context}");
    for (i, record) in recovered.records.iter().enumerate() {
        assert_eq!(record.lsn, Lsn(i as u64 + 1), "{context}");
        assert_eq!(record.payload.as_ref(), written[i].as_slice(), "{context}");
    }
}

#[tokio::test]
async fn i6_every_flipped_byte_of_the_newest_segment_is_an_error_or_a_reported_trim() {
    let written = payloads();
    let (key, original) = segment(1, 1, &written);
    for kind in ALL_KINDS {
        for offset in 0..original.len() {
            let place = Place::new(kind);
            fresh_hub(&place).await;
            let mut damaged = original.clone();
            damaged[offset] ^= 0xff;
            place.write(&key, damaged).await;
            let context = format!("{kind:?}, byte {offset} flipped");
            match recover(&place).await {
                Ok(recovered) => {
                    assert_prefix(&recovered, &written, &context);
                    assert!(
                        recovered.records.len() < written.len(),
                        "{context}: damage went unnoticed"
                    );
                    let torn = recovered.torn_tail.as_ref().expect("trim is reported");
                    assert_eq!(torn.object, key, "{context}");
                    // The trim is durable: a second recovery finds a clean log.
                    let again = recover(&place).await.expect("second recovery");
                    assert!(again.torn_tail.is_none(), "{context}");
                    assert_eq!(again.records, recovered.records, "{context}");
                }
                Err(err) => assert_named(&err, &key, &context),
            }
        }
    }
}

#[tokio::test]
async fn i6_every_cut_of_the_newest_segment_trims_to_a_clean_prefix() {
    let written = payloads();
    let (key, original) = segment(1, 1, &written);
    for kind in ALL_KINDS {
        for cut in 0..original.len() {
            let place = Place::new(kind);
            fresh_hub(&place).await;
            place.write(&key, original[..cut].to_vec()).await;
            let context = format!("{kind:?}, cut at {cut}");
            let recovered = recover(&place)
                .await
                .unwrap_or_else(|e| panic!("{context}: a cut tail is trimmed, not fatal: {e}"));
            assert_prefix(&recovered, &written, &context);
            assert!(recovered.records.len() < written.len(), "{context}");
            // Appending after the trim continues right after the prefix.
            let (log, recovered) = place.open(LogOptions::default()).await.expect("reopen");
            let lsn = log
                .append(b"next")
                .await
                .expect("append")
                .durable()
                .await
                .expect("durable");
            assert_eq!(lsn, recovered.next_lsn, "{context}");
            assert_eq!(lsn.0, recovered.records.len() as u64 + 1, "{context}");
            log.close().await.expect("close");
        }
    }
}

#[tokio::test]
async fn i6_damage_in_an_older_segment_is_always_an_error() {
    let written = payloads();
    let (old_key, old) = segment(1, 1, &written[..3]);
    let (new_key, new) = segment(2, 4, &written[3..]);
    for offset in 0..old.len() {
        let place = Place::new(Kind::Memory);
        fresh_hub(&place).await;
        place.write(&new_key, new.clone()).await;
        let mut damaged = old.clone();
        damaged[offset] ^= 0xff;
        place.write(&old_key, damaged).await;
        let err = recover(&place)
            .await
            .err()
            .unwrap_or_else(|| panic!("byte {offset} of an older segment flipped: must fail"));
        assert_named(&err, &old_key, &format!("flip {offset}"));
    }
    for cut in 0..old.len() {
        let place = Place::new(Kind::Memory);
        fresh_hub(&place).await;
        place.write(&new_key, new.clone()).await;
        place.write(&old_key, old[..cut].to_vec()).await;
        let err = recover(&place)
            .await
            .err()
            .unwrap_or_else(|| panic!("older segment cut at {cut}: must fail"));
        assert_eq!(err.kind(), ErrorKind::Corrupted, "cut {cut}: {err}");
        assert!(err.to_string().contains(&old_key), "cut {cut}: {err}");
    }
}

#[tokio::test]
async fn i6_every_flip_and_cut_of_a_checkpoint_is_detected() {
    let written = payloads();
    let place = Place::new(Kind::LocalFile);
    {
        let (log, _) = place.open(LogOptions::default()).await.expect("open");
        for p in &written {
            log.append(p)
                .await
                .expect("append")
                .durable()
                .await
                .expect("durable");
        }
        log.checkpoint(Lsn(5), b"snapshot of five records")
            .await
            .expect("checkpoint");
        log.close().await.expect("close");
    }
    let key = codec::checkpoint_key(PARTITION, Lsn(5));
    let original = place.read(&key).await;
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for offset in 0..original.len() {
        let mut damaged = original.clone();
        damaged[offset] ^= 0xff;
        variants.push((format!("byte {offset} flipped"), damaged));
    }
    for cut in 0..original.len() {
        variants.push((format!("cut at {cut}"), original[..cut].to_vec()));
    }
    let mut extended = original.clone();
    extended.push(0);
    variants.push(("one byte appended".into(), extended));
    for (context, damaged) in variants {
        place.write(&key, damaged).await;
        let storage = place.storage();
        let infos = list_checkpoints(&storage, PARTITION).await.expect("list");
        let err = read_checkpoint(&storage, PARTITION, &infos[0])
            .await
            .err()
            .unwrap_or_else(|| panic!("{context}: damage went unnoticed"));
        assert_named(&err, &key, &context);
        drop(storage);
        // Recovery skips it, says so, and rebuilds from the log instead.
        let recovered = recover(&place).await.expect("recover without it");
        assert!(recovered.checkpoint.is_none(), "{context}");
        assert_eq!(recovered.damaged_checkpoints.len(), 1, "{context}");
        assert_eq!(recovered.damaged_checkpoints[0].object, key);
        assert_prefix(&recovered, &written, &context);
        assert_eq!(recovered.records.len(), written.len(), "{context}");
    }
}

#[tokio::test]
async fn i6_each_kind_of_damage_has_its_own_message() {
    let written = payloads();
    type Case = (&'static str, Vec<(String, Vec<u8>)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "gap between segments",
            vec![segment(1, 1, &written[..2]), segment(1, 4, &written[3..])],
            "log is not contiguous: p00/log/00000001-00000000000000000001.seg ends at LSN 2, but p00/log/00000001-00000000000000000004.seg starts at LSN 4",
        ),
        (
            "overlapping segments",
            vec![segment(1, 1, &written[..3]), segment(2, 3, &written[3..])],
            "ends at LSN 3, but p00/log/00000002-00000000000000000003.seg starts at LSN 3",
        ),
        (
            "log starts late",
            vec![segment(1, 2, &written[..3])],
            "the start of the log ends at LSN 0, but p00/log/00000001-00000000000000000002.seg starts at LSN 2",
        ),
    ];
    for (name, segments, expected) in cases {
        let place = Place::new(Kind::Memory);
        fresh_hub(&place).await;
        for (key, bytes) in segments {
            place.write(&key, bytes).await;
        }
        let err = recover(&place).await.expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{name}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
    }

    // A segment of partition 1 stored under partition 0's name.
    let place = Place::new(Kind::Memory);
    fresh_hub(&place).await;
    let mut foreign = SegmentHeader {
        partition: PartitionId(1),
        epoch: Epoch(1),
        first_lsn: Lsn(1),
    }
    .encode()
    .to_vec();
    codec::encode_record(&mut foreign, Lsn(1), b"x");
    let key = codec::segment_key(PARTITION, Epoch(1), Lsn(1));
    place.write(&key, foreign.clone()).await;
    place
        .write(
            &codec::segment_key(PARTITION, Epoch(1), Lsn(2)),
            segment(1, 2, &written[..1]).1,
        )
        .await;
    let err = recover(&place).await.expect_err("wrong partition");
    assert_eq!(
        err.to_string(),
        format!("corrupted {key}: wrong partition (expected 0, found 1) at offset 0")
    );

    // A record whose LSN repeats inside a segment.
    let place = Place::new(Kind::Memory);
    fresh_hub(&place).await;
    let (key, mut bytes) = segment(1, 1, &written[..1]);
    let repeat_at = bytes.len();
    codec::encode_record(&mut bytes, Lsn(1), b"again");
    codec::encode_record(&mut bytes, Lsn(2), b"later");
    place.write(&key, bytes).await;
    let err = recover(&place).await.expect_err("repeat");
    assert_eq!(
        err.to_string(),
        format!("corrupted {key}: LSN repeat (expected LSN 2, found 1) at offset {repeat_at}")
    );

    // A checksum mismatch in the middle of the newest segment is not a tail.
    let place = Place::new(Kind::Memory);
    fresh_hub(&place).await;
    let (key, mut bytes) = segment(1, 1, &written);
    let second = 32 + 16 + written[0].len();
    bytes[second + 16] ^= 0x01;
    place.write(&key, bytes).await;
    let err = recover(&place).await.expect_err("checksum");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("corrupted {key}: checksum mismatch (expected 0x"))
            && message.ends_with(&format!("at offset {second}")),
        "{message}"
    );

    // A newer format version.
    let place = Place::new(Kind::Memory);
    fresh_hub(&place).await;
    let (key, mut bytes) = segment(1, 1, &written);
    bytes[4] = 2;
    place.write(&key, bytes).await;
    let err = recover(&place).await.expect_err("version");
    assert_eq!(
        err.to_string(),
        format!("corrupted {key}: unsupported format version (expected 1, found 2) at offset 0")
    );
}

#[tokio::test]
async fn unrelated_objects_in_the_log_folder_are_ignored() {
    let place = Place::new(Kind::Memory);
    fresh_hub(&place).await;
    let (key, bytes) = segment(1, 1, &payloads());
    place.write(&key, bytes).await;
    place.write("p00/log/README.txt", b"notes".to_vec()).await;
    let recovered = recover(&place).await.expect("recover");
    assert_eq!(recovered.records.len(), 5);
    let _ = Storage::in_memory();
}

#[tokio::test]
async fn i6_a_flipped_length_bit_mid_segment_is_damage_not_a_torn_tail() {
    let written = payloads();
    let (key, mut bytes) = segment(1, 1, &written);
    // Record 2's length field: bit 20 makes it ~1 MiB, past the end of the
    // object, which alone would look like an interrupted write.
    let second = 32 + 16 + written[0].len();
    bytes[second + 2] ^= 0x10;
    let place = Place::new(Kind::Memory);
    fresh_hub(&place).await;
    place.write(&key, bytes).await;
    let err = recover(&place)
        .await
        .expect_err("later valid frames prove this is not a torn write");
    assert_named(&err, &key, "length flip");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[tokio::test]
async fn read_from_refuses_to_return_less_than_is_durable() {
    let place = Place::new(Kind::LocalFile);
    let (log, _) = place.open(LogOptions::default()).await.expect("open");
    for p in payloads() {
        log.append(&p)
            .await
            .expect("append")
            .durable()
            .await
            .expect("durable");
    }
    // Damage the last (acknowledged) record of the live segment.
    let segments = basalt_storage::list_segments(&place.storage_unlocked(), PARTITION)
        .await
        .expect("list");
    let key = &segments.last().expect("a segment").key;
    let mut bytes = place.read(key).await;
    // The last byte of the last record: the preallocated zeros follow it.
    let last = bytes.iter().rposition(|b| *b != 0).expect("records");
    bytes[last] ^= 0xff;
    place.write(key, bytes).await;
    let err = log
        .read_from(Lsn(1))
        .await
        .expect_err("damage below durable");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    log.close().await.expect("close");
}

#[tokio::test]
async fn an_epoch_at_its_limit_is_refused_not_wrapped() {
    let place = Place::new(Kind::Memory);
    fresh_hub(&place).await;
    place
        .write(
            "p00/lease",
            br#"{"epoch":99999999,"owner":"test","acquired_unix_ms":0}"#.to_vec(),
        )
        .await;
    let err = recover(&place).await.expect_err("epoch overflow");
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    assert!(err.to_string().contains("p00/lease"), "{err}");
}
