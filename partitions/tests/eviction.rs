//! I2 with two tiers: applying a log under any schedule of checkpoints,
//! evictions, checkpoints still in flight and crashes (a restart from the
//! store plus the log) gives the same effects, event by event, and the
//! same state as applying it with everything in memory.

use std::collections::BTreeMap;

use basalt_partitions::checkpoint::{
    BUSY_PREFIX, CORE_KEY, Changes, INSTANCE_PREFIX, NAME_PREFIX, STATUS_PREFIX, TIME_PREFIX,
    name_hash, name_prefix, parse_key, record_key, status_key, status_tag, time_bucket,
    time_prefix,
};
use basalt_partitions::{Applied, Effects, Event, PartitionState, StateKey, codec};
use basalt_runtime::OrchestrationStatus;
use proptest::prelude::*;

mod common;

use common::ApplyWhole;
use common::workload::generate;

/// What the checkpoints wrote: the partition's store.
#[derive(Default)]
struct Store(BTreeMap<Vec<u8>, Vec<u8>>);

impl Store {
    fn write(&mut self, changes: &Changes) {
        for write in &changes.writes {
            match &write.value {
                Some(value) => self.0.insert(write.key.clone(), value.clone()),
                None => self.0.remove(&write.key),
            };
        }
    }

    fn record(&self, key: &StateKey) -> Option<&[u8]> {
        self.0.get(&record_key(key)).map(Vec::as_slice)
    }

    /// A state as recovery opens it: the core in memory, records left in
    /// the store.
    fn open(&self, partition_count: u32) -> PartitionState {
        match self.0.get(CORE_KEY) {
            Some(core) => PartitionState::from_core(codec::decode_core(core).expect("core"), false),
            None => PartitionState::new(0, partition_count),
        }
    }

    /// The state with every record loaded: what the store says, whole.
    fn whole(&self) -> PartitionState {
        let core = codec::decode_core(self.0.get(CORE_KEY).expect("a checkpoint")).expect("core");
        let mut state = PartitionState::from_core(core, true);
        for (key, value) in &self.0 {
            if key.starts_with(BUSY_PREFIX) {
                continue;
            }
            if let Some(record) = parse_key(key) {
                state.install(record, Some(value)).expect("record decodes");
            }
        }
        state
    }

    /// The records marked as having work, for the recovery check.
    fn busy(&self) -> Vec<StateKey> {
        self.0
            .keys()
            .filter(|k| k.starts_with(BUSY_PREFIX))
            .filter_map(|k| parse_key(k))
            .collect()
    }
}

/// Applies an event, loading from the store whatever it asks for.
fn apply_loading(state: &mut PartitionState, store: &Store, lsn: u64, event: Event) -> Effects {
    let mut applied = state.apply(lsn, event);
    loop {
        match applied {
            Applied::Done(fx) => return fx,
            Applied::Suspended(suspended) => {
                let key = suspended.missing().clone();
                assert!(
                    !state.knows(&key),
                    "suspended for a resident record {key:?}"
                );
                // As the engine does: a record kept cold in memory first,
                // else the store.
                if !state.warm(&key).expect("a cold record decodes") {
                    state
                        .install(key.clone(), store.record(&key))
                        .expect("record decodes");
                }
                applied = state.resume(suspended);
            }
        }
    }
}

fn status_counts(state: &PartitionState) -> BTreeMap<OrchestrationStatus, u64> {
    let mut counts = BTreeMap::new();
    for instance in state.instances.resident().values() {
        *counts.entry(instance.meta.status).or_insert(0) += 1;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn i2_any_eviction_schedule_gives_the_same_effects_and_state(
        seed in any::<u64>(),
        length in 1usize..300,
        schedule in proptest::collection::vec(0u8..12, 1..40),
        budget in 0usize..20_000,
    ) {
        let (log, live) = generate(seed, length);
        // The effects with everything in memory, event by event.
        let mut reference = PartitionState::new(0, 2);
        let expected: Vec<Effects> = log
            .iter()
            .enumerate()
            .map(|(i, e)| reference.apply_whole(i as u64 + 1, e.clone()))
            .collect();

        let mut store = Store::default();
        let mut state = PartitionState::new(0, 2);
        let mut in_flight: Option<Changes> = None;
        for (i, event) in log.iter().enumerate() {
            let lsn = i as u64 + 1;
            let fx = apply_loading(&mut state, &store, lsn, event.clone());
            prop_assert_eq!(&fx, &expected[i], "effects of event {} ({:?})", lsn, event);
            prop_assert_eq!(state.undeclared_touches(), 0);
            match schedule[i % schedule.len()] {
                // A checkpoint, written at once.
                0 | 1 => {
                    if let Some(changes) = in_flight.take() {
                        store.write(&changes);
                        state.checkpointed(&changes);
                    }
                    let changes = state.take_changes().expect("encode");
                    store.write(&changes);
                    state.checkpointed(&changes);
                }
                // A checkpoint still being written while events go on.
                2 if in_flight.is_none() => {
                    in_flight = Some(state.take_changes().expect("encode"));
                }
                3 => {
                    if let Some(changes) = in_flight.take() {
                        store.write(&changes);
                        state.checkpointed(&changes);
                    }
                }
                4 | 5 => {
                    state.evict_to(0);
                }
                6 | 7 => {
                    state.evict_to(budget);
                }
                // A crash: memory is gone; a checkpoint in flight landed or
                // not. Recovery opens the store and replays the log after
                // its LSN.
                8 => {
                    if let Some(changes) = in_flight.take()
                        && seed % 2 == 0
                    {
                        store.write(&changes);
                    }
                    state = store.open(2);
                    for key in store.busy() {
                        state.install(key.clone(), store.record(&key)).expect("decodes");
                    }
                    let from = state.last_lsn as usize;
                    for (j, replayed) in log.iter().enumerate().take(i + 1).skip(from) {
                        apply_loading(&mut state, &store, j as u64 + 1, replayed.clone());
                    }
                    prop_assert_eq!(state.last_lsn, lsn);
                }
                _ => {}
            }
        }
        if let Some(changes) = in_flight.take() {
            store.write(&changes);
            state.checkpointed(&changes);
        }
        let changes = state.take_changes().expect("encode");
        store.write(&changes);
        state.checkpointed(&changes);

        let whole = store.whole();
        prop_assert!(
            codec::encode_snapshot(&whole).expect("encode") == codec::encode_snapshot(&live).expect("encode"),
            "the store holds the state"
        );
        // The status index lists every instance under its status, and
        // nothing else, whatever was evicted or lost in crashes.
        let indexed: Vec<&Vec<u8>> = store
            .0
            .keys()
            .filter(|k| k.starts_with(STATUS_PREFIX))
            .collect();
        let mut expected: Vec<Vec<u8>> = store
            .0
            .iter()
            .filter_map(|(key, value)| {
                let id = std::str::from_utf8(key.strip_prefix(INSTANCE_PREFIX)?).ok()?;
                let meta = codec::decode_instance_meta(value).expect("record decodes");
                Some(status_key(status_tag(meta.status), id))
            })
            .collect();
        expected.sort();
        prop_assert_eq!(indexed, expected.iter().collect::<Vec<_>>());
        // So do the time and name indexes, under its creation time and name.
        for index in [TIME_PREFIX, NAME_PREFIX] {
            let indexed: Vec<(&Vec<u8>, &Vec<u8>)> = store
                .0
                .iter()
                .filter(|(k, _)| k.starts_with(index))
                .collect();
            let mut expected: Vec<(Vec<u8>, Vec<u8>)> = store
                .0
                .iter()
                .filter_map(|(key, value)| {
                    let id = std::str::from_utf8(key.strip_prefix(INSTANCE_PREFIX)?).ok()?;
                    let meta = codec::decode_instance_meta(value).expect("record decodes");
                    Some(if index == TIME_PREFIX {
                        let prefix = time_prefix(time_bucket(meta.created_at_ms));
                        ([prefix, id.as_bytes().to_vec()].concat(), meta.created_at_ms.to_be_bytes().to_vec())
                    } else {
                        let prefix = name_prefix(name_hash(&meta.name));
                        ([prefix, id.as_bytes().to_vec()].concat(), Vec::new())
                    })
                })
                .collect();
            expected.sort();
            prop_assert_eq!(indexed, expected.iter().map(|(k, v)| (k, v)).collect::<Vec<_>>());
        }
        prop_assert_eq!(&state.instances_by_status, &status_counts(&live));
        prop_assert_eq!(
            state.entities_with_state,
            live.entities.resident().values().filter(|e| e.state.is_some()).count() as u64
        );
        // After a restart, the records marked busy give the same work to
        // hand out as the live state.
        let mut reopened = store.open(2);
        for key in store.busy() {
            reopened.install(key.clone(), store.record(&key)).expect("decodes");
        }
        let mut expected_work = live.pending_work();
        let mut work = reopened.pending_work();
        for fx in [&mut expected_work, &mut work] {
            fx.steps.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
            fx.activities.sort_by(|a, b| (&a.instance_id, a.task_id).cmp(&(&b.instance_id, b.task_id)));
            fx.entity_batches.sort_by_key(|a| a.entity.to_string());
            fx.timers.sort();
        }
        prop_assert_eq!(work, expected_work);
    }
}
