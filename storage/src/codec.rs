//! The byte layout of everything the storage crate writes: object key names,
//! log segments, records and checkpoints. Nothing outside this module knows
//! an offset or a magic number; `docs/storage-format.md` specifies the same
//! layout for humans, and a change to one is a change to the other.
//!
//! All integers are little-endian. Checksums are CRC-32C (Castagnoli).

use bytes::{Buf, Bytes};

use crate::error::{Damage, Problem};
use crate::types::{Epoch, Lsn, PartitionId, Record};

/// The version of the segment and checkpoint-file layouts this build
/// writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// The task hub's format version (`taskhub.json`): 2 added the per-partition
/// state store (`p{NN}/state/`) and makes checkpoint files a thing of the
/// past. A version 1 hub is upgraded in place when an engine opens it.
pub const HUB_FORMAT_VERSION: u16 = 2;

/// The oldest hub format version this build opens (and upgrades).
pub const HUB_FORMAT_VERSION_MIN: u16 = 1;

/// Largest record payload the format allows. A length field above it is
/// damage, not a torn write, so a flipped high bit in a length is caught.
pub const RECORD_PAYLOAD_MAX: usize = 64 << 20;

/// Largest checkpoint payload the format allows (4 GiB).
pub const CHECKPOINT_PAYLOAD_MAX: u64 = 4 << 30;

const SEGMENT_MAGIC: [u8; 4] = *b"BSEG";
const CHECKPOINT_MAGIC: [u8; 4] = *b"BSNP";

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes of a record header (before its payload).
pub const RECORD_HEADER_LEN: usize = 16;
/// Bytes of a checkpoint header (before its payload).
pub const CHECKPOINT_HEADER_LEN: usize = 40;

// ---------------------------------------------------------------------------
// Object keys
// ---------------------------------------------------------------------------

/// Key of the task hub's metadata document.
pub const TASKHUB_KEY: &str = "taskhub.json";

/// Key prefix (folder) of one partition's log segments.
pub fn log_prefix(partition: PartitionId) -> String {
    format!("p{partition}/log")
}

/// Key prefix (folder) of one partition's checkpoints.
pub fn checkpoint_prefix(partition: PartitionId) -> String {
    format!("p{partition}/checkpoint")
}

/// Key of a partition's ownership lease.
pub fn lease_key(partition: PartitionId) -> String {
    format!("p{partition}/lease")
}

/// Key of the segment of `partition` written in `epoch` starting at `first_lsn`.
pub fn segment_key(partition: PartitionId, epoch: Epoch, first_lsn: Lsn) -> String {
    format!("p{partition}/log/{:08}-{:020}.seg", epoch.0, first_lsn.0)
}

/// Key of the checkpoint of `partition` at `lsn`.
pub fn checkpoint_key(partition: PartitionId, lsn: Lsn) -> String {
    format!("p{partition}/checkpoint/{:020}.snap", lsn.0)
}

/// Parses the file name part of a segment key into (epoch, first LSN).
pub fn parse_segment_name(file_name: &str) -> Option<(Epoch, Lsn)> {
    let stem = file_name.strip_suffix(".seg")?;
    let (epoch, lsn) = stem.split_once('-')?;
    if epoch.len() != 8 || lsn.len() != 20 {
        return None;
    }
    Some((Epoch(epoch.parse().ok()?), Lsn(lsn.parse().ok()?)))
}

/// Parses the file name part of a checkpoint key into its LSN.
pub fn parse_checkpoint_name(file_name: &str) -> Option<Lsn> {
    let stem = file_name.strip_suffix(".snap")?;
    if stem.len() != 20 {
        return None;
    }
    Some(Lsn(stem.parse().ok()?))
}

// ---------------------------------------------------------------------------
// Segments and records
// ---------------------------------------------------------------------------

/// The fixed header at the start of every log segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The partition whose log this is.
    pub partition: PartitionId,
    /// The ownership epoch that wrote the segment.
    pub epoch: Epoch,
    /// LSN of the first record in the segment (the next LSN if it has none).
    pub first_lsn: Lsn,
}

impl SegmentHeader {
    /// Encodes the header:
    /// `magic[4] version u16 flags u16 partition u32 header_crc u32 epoch u64 first_lsn u64`.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..4].copy_from_slice(&SEGMENT_MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 6..8: flags, zero in version 1.
        out[8..12].copy_from_slice(&self.partition.0.to_le_bytes());
        // 12..16: header crc, computed with this field zeroed.
        out[16..24].copy_from_slice(&self.epoch.0.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// Appends one record frame to `out`:
/// `len u32, crc u32 = crc32c(len ‖ lsn ‖ payload), lsn u64, payload`.
pub fn encode_record(out: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    debug_assert!(payload.len() <= RECORD_PAYLOAD_MAX);
    let len = (payload.len() as u32).to_le_bytes();
    let lsn_bytes = lsn.0.to_le_bytes();
    let crc = record_crc(len, lsn_bytes, payload);
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn_bytes);
    out.extend_from_slice(payload);
}

/// Bytes a record with `payload_len` payload bytes takes in a segment.
pub fn record_frame_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

fn record_crc(len: [u8; 4], lsn: [u8; 8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len);
    let crc = crc32c::crc32c_append(crc, &lsn);
    crc32c::crc32c_append(crc, payload)
}

/// What the caller expects a segment to be, from its key.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedSegment {
    /// The partition whose folder it is in.
    pub partition: PartitionId,
    /// The epoch in its name.
    pub epoch: Epoch,
    /// The first LSN in its name.
    pub first_lsn: Lsn,
}

/// Where decoding of a segment stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadTail {
    /// What is wrong, where.
    pub damage: Damage,
    /// True when the damage looks like an interrupted write rather than
    /// corruption at rest: the bad frame runs past the end of the object,
    /// ends exactly at it with a bad checksum, or is followed only by zero
    /// bytes. Only in the newest segment may such a tail be trimmed.
    pub torn_candidate: bool,
}

/// The decoded contents of one segment object.
#[derive(Clone, Debug)]
pub struct SegmentContents {
    /// The valid records, in order (payloads share the object's buffer).
    pub records: Vec<Record>,
    /// Length of the valid prefix of the object (header + whole records).
    pub valid_len: u64,
    /// Set when the object has bytes past the valid prefix that do not decode.
    pub bad_tail: Option<BadTail>,
}

impl SegmentContents {
    /// LSN of the last valid record, or `first_lsn - 1` when there is none.
    pub fn last_lsn(&self, first_lsn: Lsn) -> Lsn {
        self.records
            .last()
            .map_or(Lsn(first_lsn.0.saturating_sub(1)), |r| r.lsn)
    }
}

/// Decodes a segment object. Header damage and record damage both come back
/// as a [`BadTail`] at the offset where decoding stopped, together with the
/// records before it, so the caller decides between trimming and failing.
pub fn decode_segment(object: &str, bytes: Bytes, expected: ExpectedSegment) -> SegmentContents {
    let total = bytes.len();
    let damage = |offset: usize, problem: Problem| Damage {
        object: object.to_owned(),
        offset: offset as u64,
        problem,
    };
    let all_zero_from = |offset: usize| bytes[offset..].iter().all(|b| *b == 0);

    if let Err(problem) = check_segment_header(&bytes, expected) {
        let torn_candidate = matches!(problem, Problem::Truncated { .. }) || all_zero_from(0);
        return SegmentContents {
            records: Vec::new(),
            valid_len: 0,
            bad_tail: Some(BadTail {
                damage: damage(0, problem),
                torn_candidate,
            }),
        };
    }

    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    let mut next_lsn = expected.first_lsn.0;
    let mut bad_tail = None;
    let mut zeroed_tail = false;
    while offset < total {
        // Preallocated space: zeros from a frame boundary to the end are
        // the segment's clean end. No frame is all zeros (its checksum
        // covers its length and LSN), so this is never a record.
        if bytes[offset] == 0 && all_zero_from(offset) {
            zeroed_tail = true;
            break;
        }
        let available = total - offset;
        if available < RECORD_HEADER_LEN {
            bad_tail = Some(BadTail {
                damage: damage(
                    offset,
                    Problem::Truncated {
                        what: "record header",
                        needed: RECORD_HEADER_LEN as u64,
                        available: available as u64,
                    },
                ),
                torn_candidate: true,
            });
            break;
        }
        let mut header = &bytes[offset..offset + RECORD_HEADER_LEN];
        let len_bytes: [u8; 4] = [header[0], header[1], header[2], header[3]];
        let len = header.get_u32_le() as usize;
        let stored_crc = header.get_u32_le();
        let lsn = header.get_u64_le();
        if len > RECORD_PAYLOAD_MAX {
            bad_tail = Some(BadTail {
                damage: damage(
                    offset,
                    Problem::LengthTooLarge {
                        max: RECORD_PAYLOAD_MAX as u64,
                        found: len as u64,
                    },
                ),
                torn_candidate: false,
            });
            break;
        }
        let frame_end = offset + RECORD_HEADER_LEN + len;
        if frame_end > total {
            // A write cut short leaves nothing valid after it; a damaged
            // length field does (the frames that follow it).
            let later = valid_frame_after(&bytes, offset + 1, next_lsn + 1);
            bad_tail = Some(BadTail {
                damage: damage(
                    offset,
                    Problem::Truncated {
                        what: "record payload",
                        needed: (RECORD_HEADER_LEN + len) as u64,
                        available: available as u64,
                    },
                ),
                torn_candidate: !later,
            });
            break;
        }
        let payload = &bytes[offset + RECORD_HEADER_LEN..frame_end];
        let computed = record_crc(len_bytes, lsn.to_le_bytes(), payload);
        if computed != stored_crc {
            bad_tail = Some(BadTail {
                damage: damage(
                    offset,
                    Problem::ChecksumMismatch {
                        expected: stored_crc,
                        found: computed,
                    },
                ),
                torn_candidate: all_zero_from(frame_end),
            });
            break;
        }
        if lsn != next_lsn {
            let problem = if lsn > next_lsn {
                Problem::LsnGap {
                    expected: next_lsn,
                    found: lsn,
                }
            } else {
                Problem::LsnRepeat {
                    expected: next_lsn,
                    found: lsn,
                }
            };
            bad_tail = Some(BadTail {
                damage: damage(offset, problem),
                torn_candidate: false,
            });
            break;
        }
        records.push(Record {
            lsn: Lsn(lsn),
            payload: bytes.slice(offset + RECORD_HEADER_LEN..frame_end),
        });
        next_lsn += 1;
        offset = frame_end;
    }
    SegmentContents {
        records,
        valid_len: if bad_tail.is_some() || zeroed_tail {
            offset as u64
        } else {
            total as u64
        },
        bad_tail,
    }
}

/// True if a whole, checksum-valid frame with LSN `lsn` starts anywhere at
/// or after `from`. Only offsets whose LSN field matches are checksummed,
/// so the scan costs little more than reading the bytes.
fn valid_frame_after(bytes: &[u8], from: usize, lsn: u64) -> bool {
    let wanted = lsn.to_le_bytes();
    let mut offset = from;
    while offset + RECORD_HEADER_LEN <= bytes.len() {
        if bytes[offset + 8..offset + 16] == wanted {
            let len_bytes = [
                bytes[offset],
                bytes[offset + 1],
                bytes[offset + 2],
                bytes[offset + 3],
            ];
            let len = u32::from_le_bytes(len_bytes) as usize;
            let stored = u32::from_le_bytes([
                bytes[offset + 4],
                bytes[offset + 5],
                bytes[offset + 6],
                bytes[offset + 7],
            ]);
            let end = offset + RECORD_HEADER_LEN + len;
            if len <= RECORD_PAYLOAD_MAX
                && end <= bytes.len()
                && record_crc(len_bytes, wanted, &bytes[offset + RECORD_HEADER_LEN..end]) == stored
            {
                return true;
            }
        }
        offset += 1;
    }
    false
}

fn check_segment_header(bytes: &[u8], expected: ExpectedSegment) -> Result<(), Problem> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(Problem::Truncated {
            what: "segment header",
            needed: SEGMENT_HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    let mut h = &bytes[..SEGMENT_HEADER_LEN];
    let magic = [h[0], h[1], h[2], h[3]];
    h.advance(4);
    if magic != SEGMENT_MAGIC {
        return Err(Problem::BadMagic {
            expected: SEGMENT_MAGIC,
            found: magic,
        });
    }
    let version = h.get_u16_le();
    if version != FORMAT_VERSION {
        return Err(Problem::UnsupportedVersion {
            expected: FORMAT_VERSION,
            found: version,
        });
    }
    let _flags = h.get_u16_le();
    let partition = h.get_u32_le();
    let stored_crc = h.get_u32_le();
    let epoch = h.get_u64_le();
    let first_lsn = h.get_u64_le();
    let mut zeroed = [0u8; SEGMENT_HEADER_LEN];
    zeroed.copy_from_slice(&bytes[..SEGMENT_HEADER_LEN]);
    zeroed[12..16].fill(0);
    let computed = crc32c::crc32c(&zeroed);
    if computed != stored_crc {
        return Err(Problem::ChecksumMismatch {
            expected: stored_crc,
            found: computed,
        });
    }
    if partition != expected.partition.0 {
        return Err(Problem::WrongPartition {
            expected: expected.partition.0,
            found: partition,
        });
    }
    if epoch != expected.epoch.0 {
        return Err(Problem::NameMismatch {
            field: "epoch",
            expected: expected.epoch.0,
            found: epoch,
        });
    }
    if first_lsn != expected.first_lsn.0 {
        return Err(Problem::NameMismatch {
            field: "first LSN",
            expected: expected.first_lsn.0,
            found: first_lsn,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------

/// Encodes a checkpoint object:
/// `magic[4] version u16 flags u16 partition u32 header_crc u32 lsn u64
/// payload_len u64 payload_crc u32 reserved u32`, then the payload.
pub fn encode_checkpoint(partition: PartitionId, lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN + payload.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&partition.0.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[..CHECKPOINT_HEADER_LEN]);
    out[12..16].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a checkpoint object, checking it belongs to `partition` at `lsn`
/// (both from its key). Returns the payload, sharing the object's buffer.
pub fn decode_checkpoint(
    object: &str,
    bytes: Bytes,
    partition: PartitionId,
    lsn: Lsn,
) -> Result<Bytes, Damage> {
    let damage = |offset: u64, problem: Problem| Damage {
        object: object.to_owned(),
        offset,
        problem,
    };
    if bytes.len() < CHECKPOINT_HEADER_LEN {
        return Err(damage(
            0,
            Problem::Truncated {
                what: "checkpoint header",
                needed: CHECKPOINT_HEADER_LEN as u64,
                available: bytes.len() as u64,
            },
        ));
    }
    let mut h = &bytes[..CHECKPOINT_HEADER_LEN];
    let magic = [h[0], h[1], h[2], h[3]];
    h.advance(4);
    if magic != CHECKPOINT_MAGIC {
        return Err(damage(
            0,
            Problem::BadMagic {
                expected: CHECKPOINT_MAGIC,
                found: magic,
            },
        ));
    }
    let version = h.get_u16_le();
    if version != FORMAT_VERSION {
        return Err(damage(
            4,
            Problem::UnsupportedVersion {
                expected: FORMAT_VERSION,
                found: version,
            },
        ));
    }
    let _flags = h.get_u16_le();
    let found_partition = h.get_u32_le();
    let stored_header_crc = h.get_u32_le();
    let found_lsn = h.get_u64_le();
    let payload_len = h.get_u64_le();
    let stored_payload_crc = h.get_u32_le();
    let mut zeroed = [0u8; CHECKPOINT_HEADER_LEN];
    zeroed.copy_from_slice(&bytes[..CHECKPOINT_HEADER_LEN]);
    zeroed[12..16].fill(0);
    let computed = crc32c::crc32c(&zeroed);
    if computed != stored_header_crc {
        return Err(damage(
            0,
            Problem::ChecksumMismatch {
                expected: stored_header_crc,
                found: computed,
            },
        ));
    }
    if found_partition != partition.0 {
        return Err(damage(
            8,
            Problem::WrongPartition {
                expected: partition.0,
                found: found_partition,
            },
        ));
    }
    if found_lsn != lsn.0 {
        return Err(damage(
            16,
            Problem::NameMismatch {
                field: "checkpoint LSN",
                expected: lsn.0,
                found: found_lsn,
            },
        ));
    }
    if payload_len > CHECKPOINT_PAYLOAD_MAX {
        return Err(damage(
            24,
            Problem::LengthTooLarge {
                max: CHECKPOINT_PAYLOAD_MAX,
                found: payload_len,
            },
        ));
    }
    let available = (bytes.len() - CHECKPOINT_HEADER_LEN) as u64;
    if available != payload_len {
        return Err(damage(
            CHECKPOINT_HEADER_LEN as u64,
            Problem::Truncated {
                what: "checkpoint payload",
                needed: payload_len,
                available,
            },
        ));
    }
    let payload = bytes.slice(CHECKPOINT_HEADER_LEN..);
    let computed = crc32c::crc32c(&payload);
    if computed != stored_payload_crc {
        return Err(damage(
            CHECKPOINT_HEADER_LEN as u64,
            Problem::ChecksumMismatch {
                expected: stored_payload_crc,
                found: computed,
            },
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(first: u64) -> ExpectedSegment {
        ExpectedSegment {
            partition: PartitionId(3),
            epoch: Epoch(2),
            first_lsn: Lsn(first),
        }
    }

    fn segment(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = SegmentHeader {
            partition: PartitionId(3),
            epoch: Epoch(2),
            first_lsn: Lsn(first),
        }
        .encode()
        .to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut out, Lsn(first + i as u64), p);
        }
        out
    }

    #[test]
    fn segment_round_trip() {
        let bytes = segment(7, &[b"a", b"", b"hello"]);
        let got = decode_segment("s", Bytes::from(bytes.clone()), expected(7));
        assert!(got.bad_tail.is_none());
        assert_eq!(got.valid_len, bytes.len() as u64);
        let lsns: Vec<u64> = got.records.iter().map(|r| r.lsn.0).collect();
        assert_eq!(lsns, vec![7, 8, 9]);
        assert_eq!(&got.records[2].payload[..], b"hello");
        assert_eq!(got.last_lsn(Lsn(7)), Lsn(9));
    }

    #[test]
    fn header_fields_must_match_the_name() {
        let bytes = Bytes::from(segment(7, &[b"a"]));
        let mut other = expected(7);
        other.partition = PartitionId(4);
        let got = decode_segment("s", bytes.clone(), other);
        let tail = got.bad_tail.expect("wrong partition is damage");
        assert_eq!(
            tail.damage.problem,
            Problem::WrongPartition {
                expected: 4,
                found: 3
            }
        );
        assert!(!tail.torn_candidate);
        let got = decode_segment("s", bytes, expected(8));
        assert!(matches!(
            got.bad_tail.map(|t| t.damage.problem),
            Some(Problem::NameMismatch {
                field: "first LSN",
                ..
            })
        ));
    }

    #[test]
    fn unknown_version_is_named() {
        let mut bytes = segment(1, &[b"a"]);
        bytes[4] = 9;
        let got = decode_segment("p03/log/x.seg", Bytes::from(bytes), expected(1));
        let tail = got.bad_tail.expect("damage");
        assert_eq!(
            tail.damage.problem,
            Problem::UnsupportedVersion {
                expected: FORMAT_VERSION,
                found: 9
            }
        );
        assert_eq!(
            tail.damage.to_string(),
            "p03/log/x.seg: unsupported format version (expected 1, found 9) at offset 0"
        );
    }

    #[test]
    fn lsn_gap_inside_a_segment_is_damage() {
        let mut out = SegmentHeader {
            partition: PartitionId(3),
            epoch: Epoch(2),
            first_lsn: Lsn(1),
        }
        .encode()
        .to_vec();
        encode_record(&mut out, Lsn(1), b"x");
        let second_at = out.len() as u64;
        encode_record(&mut out, Lsn(3), b"y");
        let got = decode_segment("s", Bytes::from(out), expected(1));
        assert_eq!(got.records.len(), 1);
        let tail = got.bad_tail.expect("gap");
        assert_eq!(tail.damage.offset, second_at);
        assert_eq!(
            tail.damage.problem,
            Problem::LsnGap {
                expected: 2,
                found: 3
            }
        );
        assert!(!tail.torn_candidate);
    }

    #[test]
    fn truncated_last_record_is_a_torn_candidate() {
        let bytes = segment(1, &[b"first", b"second"]);
        let cut = bytes.len() - 3;
        let got = decode_segment("s", Bytes::from(bytes[..cut].to_vec()), expected(1));
        assert_eq!(got.records.len(), 1);
        let tail = got.bad_tail.expect("torn");
        assert!(tail.torn_candidate);
        assert_eq!(got.valid_len, tail.damage.offset);
    }

    #[test]
    fn checkpoint_round_trip_and_checks() {
        let bytes = Bytes::from(encode_checkpoint(PartitionId(1), Lsn(42), b"state"));
        let payload = decode_checkpoint("c", bytes.clone(), PartitionId(1), Lsn(42)).expect("ok");
        assert_eq!(&payload[..], b"state");
        let err = decode_checkpoint("c", bytes.clone(), PartitionId(2), Lsn(42)).expect_err("bad");
        assert!(matches!(err.problem, Problem::WrongPartition { .. }));
        let err = decode_checkpoint("c", bytes, PartitionId(1), Lsn(41)).expect_err("bad");
        assert!(matches!(err.problem, Problem::NameMismatch { .. }));
    }

    #[test]
    fn names_round_trip() {
        let key = segment_key(PartitionId(3), Epoch(12), Lsn(1200));
        assert_eq!(key, "p03/log/00000012-00000000000000001200.seg");
        let name = key.rsplit('/').next().unwrap_or_default();
        assert_eq!(parse_segment_name(name), Some((Epoch(12), Lsn(1200))));
        assert_eq!(parse_segment_name("junk.seg"), None);
        let key = checkpoint_key(PartitionId(0), Lsn(5));
        let name = key.rsplit('/').next().unwrap_or_default();
        assert_eq!(parse_checkpoint_name(name), Some(Lsn(5)));
    }
}
