//! The keys a tier has dropped from memory while they exist in the store,
//! kept as Bloom filters so a tier that started out knowing everything
//! (a new partition, or one whose store was empty) can go on telling a key
//! that was never written from one that must be loaded.
//!
//! Without it, a tier that has evicted anything must ask the store about
//! every key it does not hold, and most such keys are new instance ids
//! the store has never seen: each was a point lookup through every table
//! of the store (tens of microseconds and several allocations on the
//! partition's path). A filter answers "not evicted" for most new ids at
//! once; a false positive costs only the lookup it replaces.
//!
//! The filters are a pure function of the eviction order (fixed seed, no
//! randomness), and their memory counts against the tier's budget. They
//! grow in steps (each filter twice the capacity of the one before); past
//! [`EVICTED_KEYS_BYTES_MAX`] the tier gives them up and loads every key it
//! does not hold, as a tier over a store it did not write does.

use fastbloom::BloomFilter;

/// Most memory the filters of one tier may take, in bytes: about 850,000
/// evicted keys at the target false-positive rate.
pub const EVICTED_KEYS_BYTES_MAX: usize = 1 << 20;

/// Keys the first filter is sized for; each next one holds twice as many.
const FIRST_CAPACITY: usize = 4096;

/// False positives per filter when full. With filters doubling in size
/// the rate over all of them stays under a few percent.
const FALSE_POSITIVE_RATE: f64 = 0.01;

/// The hash seed: fixed, so the same evictions give the same filters.
const SEED: u128 = 0x6261_7361_6c74_2d65_7669_6374_6564_2d31;

/// Evicted keys that exist in the store (see the module documentation).
#[derive(Debug, Default)]
pub struct EvictedKeys {
    filters: Vec<BloomFilter>,
    /// Keys inserted into the last filter.
    in_last: usize,
    /// Keys the last filter was sized for.
    capacity_of_last: usize,
    /// Bytes of all filters' bits.
    bytes: usize,
}

impl EvictedKeys {
    /// No key evicted yet.
    pub fn new() -> EvictedKeys {
        EvictedKeys::default()
    }

    /// Records that `key` left memory while it exists in the store.
    /// Returns `false` if that would take the filters past
    /// [`EVICTED_KEYS_BYTES_MAX`]: the caller must stop relying on them.
    pub fn insert(&mut self, key: &str) -> bool {
        if self.filters.is_empty() || self.in_last >= self.capacity_of_last {
            let capacity = if self.capacity_of_last == 0 {
                FIRST_CAPACITY
            } else {
                self.capacity_of_last * 2
            };
            let filter = BloomFilter::with_false_pos(FALSE_POSITIVE_RATE)
                .seed(&SEED)
                .expected_items(capacity);
            let bytes = filter.num_bits() / 8;
            if self.bytes + bytes > EVICTED_KEYS_BYTES_MAX {
                return false;
            }
            self.bytes += bytes;
            self.filters.push(filter);
            self.capacity_of_last = capacity;
            self.in_last = 0;
        }
        if let Some(last) = self.filters.last_mut() {
            last.insert(key);
            self.in_last += 1;
        }
        true
    }

    /// Whether `key` may have been evicted (`false`: certainly not). The
    /// key is hashed once: every filter has the same seed, so the same
    /// source hash.
    pub fn may_contain(&self, key: &str) -> bool {
        let Some(first) = self.filters.first() else {
            return false;
        };
        let hash = first.source_hash(key);
        self.filters.iter().any(|f| f.contains_hash(hash))
    }

    /// Whether no key was ever inserted.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Memory the filters take, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_key_is_always_found_and_most_others_are_not() {
        let mut keys = EvictedKeys::new();
        for i in 0..50_000 {
            assert!(keys.insert(&format!("checkout-{i}")));
        }
        for i in 0..50_000 {
            assert!(keys.may_contain(&format!("checkout-{i}")), "{i}");
        }
        let false_positives = (0..50_000)
            .filter(|i| keys.may_contain(&format!("other-{i}")))
            .count();
        assert!(false_positives < 2_500, "{false_positives} of 50,000");
        assert!(keys.bytes() > 0 && keys.bytes() <= EVICTED_KEYS_BYTES_MAX);
    }

    #[test]
    fn the_filters_refuse_to_grow_past_their_limit() {
        let mut keys = EvictedKeys::new();
        let mut inserted = 0usize;
        while keys.insert(&format!("k{inserted}")) {
            inserted += 1;
            assert!(inserted < 10_000_000, "never refused");
        }
        assert!(keys.bytes() <= EVICTED_KEYS_BYTES_MAX);
        assert!(inserted > 100_000, "refused after only {inserted} keys");
    }

    #[test]
    fn the_same_insertions_give_the_same_answers() {
        let (mut a, mut b) = (EvictedKeys::new(), EvictedKeys::new());
        for i in 0..5_000 {
            a.insert(&format!("x{i}"));
            b.insert(&format!("x{i}"));
        }
        for i in 0..20_000 {
            let key = format!("y{i}");
            assert_eq!(a.may_contain(&key), b.may_contain(&key));
        }
    }
}
