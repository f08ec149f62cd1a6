//! Which partition owns an instance.

/// The partition of an instance id among `partition_count`: FNV-1a of the
/// id, modulo the count. An id ending in `!n` (n a decimal number) is
/// pinned to partition `n mod partition_count`, so related instances can
/// be placed together or apart on purpose.
pub fn partition_of(instance_id: &str, partition_count: u32) -> u32 {
    let count = partition_count.max(1);
    if let Some((_, suffix)) = instance_id.rsplit_once('!')
        && !suffix.is_empty()
        && let Ok(n) = suffix.parse::<u64>()
    {
        return (n % u64::from(count)) as u32;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in instance_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_ids_go_where_they_say() {
        assert_eq!(partition_of("order-7!3", 12), 3);
        assert_eq!(partition_of("x!15", 12), 3);
        assert_eq!(partition_of("x!", 12), partition_of("x!", 12));
    }

    #[test]
    fn hashing_spreads_ids_and_is_stable() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(partition_of("a", u32::MAX), 0xe40c_292c);
        let mut counts = [0u32; 12];
        for i in 0..12_000 {
            counts[partition_of(&format!("instance-{i}"), 12) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }
}
