//! Shared by the log crash test and its child writer: the payload each
//! acknowledged record must have, and the snapshot format the child
//! checkpoints (the whole log so far, so a test can check every record
//! even after the segments below a checkpoint are deleted).

/// The payload of record `n` of `producer` in child run `run`: its length
/// varies and its bytes are a function of all three, so a record that is
/// lost, moved or overwritten by a later run is caught.
pub fn payload(run: u64, producer: u64, n: u64) -> Vec<u8> {
    let len = 8 + ((run * 31 + producer * 7 + n) % 120) as usize;
    let mut state = run
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(producer << 32)
        .wrapping_add(n);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Encodes (lsn, payload) pairs: `[lsn u64][len u32][payload]`, little-endian.
pub fn encode_snapshot(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (lsn, payload) in records {
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

/// Decodes what [`encode_snapshot`] wrote; `None` if the bytes are not such
/// a snapshot (the storage layer's checksums make that a test failure).
pub fn decode_snapshot(mut bytes: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let lsn = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
        let payload = bytes.get(12..12 + len)?.to_vec();
        records.push((lsn, payload));
        bytes = &bytes[12 + len..];
    }
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip() {
        let records = vec![
            (1, payload(1, 2, 3)),
            (2, Vec::new()),
            (3, payload(4, 5, 6)),
        ];
        assert_eq!(decode_snapshot(&encode_snapshot(&records)), Some(records));
        assert_eq!(decode_snapshot(&[1, 2, 3]), None);
        assert_ne!(payload(1, 0, 0), payload(2, 0, 0));
    }
}
