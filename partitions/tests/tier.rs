//! The memory tier's choices: a tier that has known every key since it
//! began (a new partition) keeps knowing which keys do not exist after it
//! evicts records (a new id needs no store lookup, an evicted one must be
//! loaded); finished records leave memory before running ones; a new
//! record is charged as one whatever the tier held for its key before.

use basalt_partitions::Tier;
use basalt_runtime::InstanceId;

fn id(prefix: &str, i: usize) -> InstanceId {
    InstanceId::new(format!("{prefix}-{i}")).expect("valid id")
}

/// A tier holding `count` records, all checkpointed and then evicted.
fn evicted_tier(count: usize) -> Tier<String> {
    let mut tier = Tier::new();
    for i in 0..count {
        tier.insert(id("old", i), format!("record {i}"));
    }
    let generation = tier
        .take_changes(|_| Ok::<usize, ()>(16))
        .expect("sizes every change");
    tier.checkpointed(generation);
    assert_eq!(tier.evict_to(0, |_| false), count);
    tier
}

#[test]
fn after_evicting_a_new_tier_still_knows_which_keys_do_not_exist() {
    let tier = evicted_tier(2_000);
    assert!(!tier.is_complete());
    assert!(tier.keeps_evicted_keys());
    for i in 0..2_000 {
        assert!(!tier.knows(&id("old", i)), "evicted old-{i} must be loaded");
    }
    let must_load = (0..10_000).filter(|&i| !tier.knows(&id("new", i))).count();
    assert!(
        must_load < 300,
        "{must_load} of 10,000 new ids would be looked up in the store"
    );
    // The filters count against the budget.
    assert!(tier.resident_bytes() > 0);
}

#[test]
fn a_tier_over_a_store_it_did_not_fill_loads_every_key_it_does_not_hold() {
    let tier: Tier<String> = Tier::backed();
    assert!(!tier.keeps_evicted_keys());
    assert!((0..100).all(|i| !tier.knows(&id("new", i))));
}

#[test]
fn removed_records_that_leave_memory_stay_known_absent() {
    let mut tier = evicted_tier(10);
    // Load one back, remove it, checkpoint the removal, evict again.
    tier.install(id("old", 3), Some("record 3".into()), 16);
    assert_eq!(tier.remove(&id("old", 3)), Some("record 3".into()));
    let generation = tier
        .take_changes(|_| Ok::<usize, ()>(0))
        .expect("sizes every change");
    tier.checkpointed(generation);
    tier.evict_to(0, |_| false);
    // Its key was evicted once while it existed, so it is looked up (and
    // found absent in the store): never taken for present.
    assert!(!tier.knows(&id("old", 3)));
}

#[test]
fn finished_records_leave_memory_before_running_ones() {
    let mut tier: Tier<String> = Tier::new();
    for i in 0..100 {
        tier.insert(id("run", i), "running".into());
    }
    for i in 0..100 {
        tier.insert(id("done", i), "finished".into());
    }
    let generation = tier
        .take_changes(|_| Ok::<usize, ()>(16))
        .expect("sizes every change");
    tier.checkpointed(generation);
    // Recency: run-0 oldest, then up to run-99, then the finished ones.
    for i in 0..100 {
        tier.touch(&id("run", i));
    }
    for i in 0..100 {
        tier.touch(&id("done", i));
    }
    let before = tier.resident_bytes();
    let per_record = before / 200;
    // Room for 150 records, the first evicted-keys filter included (it
    // takes about 20 records' worth).
    let budget = before - 50 * per_record;
    tier.evict_to(budget, |record| record == "finished");
    assert!(tier.resident_bytes() <= budget);
    assert!((0..100).all(|i| tier.contains_key(&id("run", i))));
    assert!((0..100).any(|i| tier.contains_key(&id("done", i))));
    // Once the finished ones are gone, running ones go too, oldest first.
    tier.evict_to(before / 4, |record| record == "finished");
    assert!((0..100).all(|i| !tier.contains_key(&id("done", i))));
    assert!(!tier.contains_key(&id("run", 0)));
    assert!(tier.contains_key(&id("run", 99)));
}

#[test]
fn a_record_created_over_a_known_absence_is_charged_as_a_new_record() {
    let mut over_absence: Tier<String> = Tier::backed();
    over_absence.install(id("new", 0), None, 0);
    let absence = over_absence.resident_bytes();
    over_absence.insert(id("new", 0), "created".into());
    let mut fresh: Tier<String> = Tier::new();
    fresh.insert(id("new", 0), "created".into());
    assert!(absence < 1024, "an absence costs {absence} bytes");
    assert_eq!(over_absence.resident_bytes(), fresh.resident_bytes());
    assert_eq!(over_absence.dirty_bytes(), fresh.dirty_bytes());
}
