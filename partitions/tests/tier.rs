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

/// A tier of `running` and `finished` records, checkpointed (each encoded
/// in 16 bytes, so charged about 8 times that decoded), running ones used
/// last.
fn checkpointed_tier(running: usize, finished: usize) -> Tier<String> {
    let mut tier: Tier<String> = Tier::new();
    for i in 0..finished {
        tier.insert(id("done", i), "finished".into());
    }
    for i in 0..running {
        tier.insert(id("run", i), format!("running {i}"));
    }
    let generation = tier
        .take_changes(|_| Ok::<usize, ()>(16))
        .expect("sizes every change");
    tier.checkpointed(generation);
    for i in 0..finished {
        tier.touch(&id("done", i));
    }
    for i in 0..running {
        tier.touch(&id("run", i));
    }
    tier
}

fn encode(record: &String) -> Option<Vec<u8>> {
    Some(record.as_bytes().to_vec())
}

#[test]
fn running_records_leaving_the_decoded_cache_stay_cold_and_finished_ones_go() {
    let mut tier = checkpointed_tier(100, 100);
    let before = tier.resident_bytes();
    // Half the memory: the finished ones go for good, then running ones
    // turn cold (a fraction of their decoded size) instead of leaving.
    tier.evict_keeping_cold(before / 2, |r| r.as_str() == "finished", encode);
    assert!(tier.resident_bytes() <= before / 2);
    assert!((0..100).all(|i| !tier.knows(&id("done", i)) || tier.contains_key(&id("done", i))));
    assert!(tier.cold_len() > 0, "some running records are cold");
    assert!(tier.cold_bytes() <= before / 4);
    assert!(!tier.is_complete(), "a cold record is not decoded");
    // A cold record must be loaded (the state machine does not know it)
    // but needs no store: its bytes are in memory, as the store has them.
    let cold: Vec<usize> = (0..100).filter(|&i| !tier.knows(&id("run", i))).collect();
    assert_eq!(cold.len(), tier.cold_len());
    let first = cold[0];
    let bytes = tier.take_cold(&id("run", first)).expect("kept cold");
    assert_eq!(bytes, format!("running {first}").into_bytes());
    tier.install(
        id("run", first),
        Some(format!("running {first}")),
        bytes.len(),
    );
    assert!(tier.knows(&id("run", first)));
    assert_eq!(tier.take_cold(&id("run", first)), None, "taken once");
    // Finished records are never kept cold: none was taken as one.
    assert!((0..100).all(|i| tier.take_cold(&id("done", i)).is_none()));
}

#[test]
fn cold_records_take_at_most_half_the_budget_and_then_leave_for_good() {
    let mut tier = checkpointed_tier(1_000, 0);
    let budget = tier.resident_bytes() / 10;
    tier.evict_keeping_cold(budget, |_| false, encode);
    assert!(
        tier.resident_bytes() <= budget,
        "{} > {budget} (cold {} in {})",
        tier.resident_bytes(),
        tier.cold_bytes(),
        tier.cold_len()
    );
    assert!(
        tier.cold_bytes() <= budget / 2,
        "cold {} > half of {budget}",
        tier.cold_bytes()
    );
    // Those that left for good are remembered as evicted: loaded from the
    // store, neither known nor cold.
    let unknown: Vec<usize> = (0..1_000).filter(|&i| !tier.knows(&id("run", i))).collect();
    let gone: Vec<usize> = unknown
        .into_iter()
        .filter(|&i| tier.take_cold(&id("run", i)).is_none())
        .collect();
    assert!(!gone.is_empty());
    // With nothing left to spare (a budget of 0), cold records go too.
    let mut tier = checkpointed_tier(100, 0);
    let half = tier.resident_bytes() / 2;
    tier.evict_keeping_cold(half, |_| false, encode);
    assert!(tier.cold_len() > 0);
    tier.evict_keeping_cold(0, |_| false, encode);
    assert_eq!(tier.cold_len(), 0);
    assert_eq!(tier.cold_bytes(), 0);
}

/// What a read of one record waits for: the LSN of the event that last
/// changed it, until a durable checkpoint holds that change.
#[test]
fn a_record_remembers_the_lsn_that_last_changed_it_until_checkpointed() {
    let mut tier: Tier<String> = Tier::new();
    let (a, b) = (id("a", 0), id("b", 0));
    tier.set_lsn(5);
    tier.insert(a.clone(), "a at 5".into());
    tier.insert(b.clone(), "b at 5".into());
    tier.set_lsn(9);
    if let Some(record) = tier.get_mut(&a) {
        *record = "a at 9".into();
    }
    assert_eq!(tier.changed_at(&a), Some(9));
    assert_eq!(tier.changed_at(&b), Some(5), "b did not change at 9");
    assert_eq!(tier.changed_at(&id("never", 0)), None);
    let generation = tier
        .take_changes(|_| Ok::<usize, ()>(16))
        .expect("sizes every change");
    // Written but not yet durable: still waited for.
    assert_eq!(tier.changed_at(&a), Some(9));
    tier.checkpointed(generation);
    assert_eq!(tier.changed_at(&a), None);
    assert_eq!(tier.changed_at(&b), None);
    // A removal is a change too.
    tier.set_lsn(12);
    assert_eq!(tier.remove(&b), Some("b at 5".into()));
    assert_eq!(tier.changed_at(&b), Some(12));
}
