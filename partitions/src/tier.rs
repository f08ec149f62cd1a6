//! The memory tier of a partition's instances or entities: a bounded cache
//! of the records that live in the partition's store.
//!
//! A record is *dirty* from the moment the state machine may have changed
//! it until a checkpoint holding that change is durable; dirty records are
//! never evicted, so the store plus the dirty records are always the whole
//! truth. *Clean* records match the store and may be dropped, least
//! recently used first. A key the tier holds nothing for is *unknown*
//! unless the tier has known every key since it began (its store held
//! nothing it did not load) and the key is not among those it evicted:
//! the engine must load an unknown key before an event touches it
//! (`PartitionState` says which).
//!
//! Between the two, a record of running work that eviction takes out of
//! the decoded cache may stay *cold*: encoded, as the store holds it, at
//! about an eighth of its decoded size. Loading a cold record costs a
//! decode instead of a store read, so work in flight that does not fit in
//! memory decoded (a burst of starts) is not read back from the store on
//! every step.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use basalt_runtime::InstanceId;
use lru::LruCache;

use crate::evicted::EvictedKeys;

/// Memory charged for a record whose size is not known yet (created since
/// the last checkpoint): about one small instance.
const UNSIZED_RECORD_BYTES: usize = 8192;

/// Memory charged per resident key on top of its record: map slots, the
/// key's string, the LRU links.
const KEY_OVERHEAD_BYTES: usize = 96;

/// What a record is filed under in its store's secondary indexes (an
/// instance: its status, creation time and name). Small and fixed-size:
/// the tier keeps one per resident record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexTag {
    /// The status index's tag (0: not in the status index).
    pub status: u8,
    /// The creation time, ms since the Unix epoch (the time index).
    pub created_ms: u64,
    /// A hash of the name (the name index; a collision only costs a
    /// record read, the query checks the name itself).
    pub name_hash: u32,
}

/// What a record is filed under in its store's secondary indexes, if
/// anything. The tier remembers the tag of the version in the store, so a
/// checkpoint moves index entries only when the tag changed.
pub trait Indexed {
    /// The record's index tag.
    fn index_tag(&self) -> Option<IndexTag> {
        None
    }
}

impl Indexed for String {}

/// A record, boxed: records move between the dirty set and the cache on
/// every checkpoint and first change, and an instance is hundreds of bytes.
type Boxed<V> = Option<Box<V>>;

/// Hashing of instance ids in the dirty set (the cache uses the same).
type Hasher = lru::DefaultHasher;

/// A changed record, waiting for a checkpoint to make it durable.
#[derive(Clone, Debug)]
struct Changed<V> {
    /// The record, or `None` if it was removed.
    value: Boxed<V>,
    /// The checkpoint generation that will carry this change: the tier's
    /// generation when it was last changed.
    generation: u64,
    /// The LSN of the event that last changed it (or may have): a read of
    /// this record alone waits for no later record to be durable.
    lsn: u64,
    /// Estimated memory, from its last encoding (or a default).
    bytes: usize,
    /// The index tag of the version in the store (`None`: none there, or
    /// not indexed).
    stored_tag: Option<IndexTag>,
}

/// A record that matches the store (or is known not to exist).
#[derive(Clone, Debug)]
struct Clean<V> {
    value: Boxed<V>,
    bytes: usize,
    /// The index tag of the record (as the store holds it).
    stored_tag: Option<IndexTag>,
}

/// A record out of the decoded cache, kept encoded (the same bytes the
/// store holds for it).
#[derive(Clone, Debug)]
struct Cold {
    encoded: Vec<u8>,
    bytes: usize,
}

/// Records by instance id, some resident, all of them in the store or dirty.
#[derive(Debug)]
pub struct Tier<V> {
    dirty: HashMap<InstanceId, Changed<V>, Hasher>,
    clean: LruCache<InstanceId, Clean<V>>,
    /// Records evicted from `clean` but kept encoded, least recently
    /// evicted first out; not known to the state machine until loaded.
    cold: LruCache<InstanceId, Cold>,
    /// The keys of existing records dropped from memory, if the tier has
    /// known every key since it began: a key that is neither resident nor
    /// in here does not exist (none in here: the tier is complete). `None`
    /// for a tier over a store it did not fill, or once the filters hit
    /// their limit.
    evicted: Option<EvictedKeys>,
    /// The generation changes are recorded in now; `take_changes` closes it.
    generation: u64,
    /// The LSN of the event being applied (see [`Tier::set_lsn`]).
    lsn: u64,
    /// Memory estimate of the clean records.
    clean_bytes: usize,
    /// Memory of the cold records (their bytes and keys).
    cold_bytes: usize,
    /// Counts records entering the clean cache (checkpointed or loaded).
    clean_arrivals: u64,
    /// `clean_arrivals` when a search for settled records last found none:
    /// until more arrive, searching again cannot find any.
    no_settled_at: Option<u64>,
    /// Memory estimate of the dirty records.
    dirty_bytes: usize,
    /// Touches of keys that were neither resident nor loaded: a bug in the
    /// state machine's key declarations, counted so the engine can stop
    /// the partition instead of acting on a guess.
    undeclared: AtomicU64,
}

impl<V> Default for Tier<V> {
    fn default() -> Self {
        Tier {
            dirty: HashMap::default(),
            clean: LruCache::unbounded(),
            cold: LruCache::unbounded(),
            evicted: Some(EvictedKeys::new()),
            generation: 0,
            lsn: 0,
            clean_bytes: 0,
            cold_bytes: 0,
            clean_arrivals: 0,
            no_settled_at: None,
            dirty_bytes: 0,
            undeclared: AtomicU64::new(0),
        }
    }
}

/// What a checkpoint writes for one key.
#[derive(Debug)]
pub struct Change<'a, V> {
    /// The key.
    pub key: &'a InstanceId,
    /// Its record, or `None` if it no longer exists.
    pub value: Option<&'a V>,
    /// Its index tag in the store before this change (to delete).
    pub stored_tag: Option<IndexTag>,
    /// Its index tag now (to write).
    pub tag: Option<IndexTag>,
}

impl<V> Tier<V> {
    /// An empty tier that knows it holds everything.
    pub fn new() -> Tier<V> {
        Tier::default()
    }

    /// A tier loaded with every record (an old-format snapshot): complete,
    /// and all of it dirty, so the first checkpoint writes it all.
    pub fn from_map(map: BTreeMap<InstanceId, V>) -> Tier<V> {
        let mut tier = Tier::new();
        for (key, value) in map {
            tier.insert(key, value);
        }
        tier
    }

    /// A tier over a store that may hold records it has not loaded.
    pub fn backed() -> Tier<V> {
        Tier {
            evicted: None,
            ..Tier::default()
        }
    }

    /// Whether the state machine may touch `key` now: it is resident, or
    /// known not to exist.
    pub fn knows(&self, key: &InstanceId) -> bool {
        self.dirty.contains_key(key)
            || self.clean.contains(key)
            || (!self.cold.contains(key)
                && self
                    .evicted
                    .as_ref()
                    .is_some_and(|evicted| !evicted.may_contain(key.as_str())))
    }

    /// Whether every record is resident and decoded: the tier has known
    /// every key since it began and never dropped one that exists.
    pub fn is_complete(&self) -> bool {
        self.cold.is_empty() && self.evicted.as_ref().is_some_and(EvictedKeys::is_empty)
    }

    /// Takes a cold record's encoded bytes out, to be decoded and installed
    /// (see [`Tier::install`]); `None` if the key is not cold.
    pub fn take_cold(&mut self, key: &InstanceId) -> Option<Vec<u8>> {
        let cold = self.cold.pop(key)?;
        self.cold_bytes -= cold.bytes;
        Some(cold.encoded)
    }

    fn unknown(&self, key: &InstanceId) -> bool {
        if self.knows(key) {
            return false;
        }
        self.undeclared.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Touches of unknown keys so far (see the type's documentation).
    pub fn undeclared_touches(&self) -> u64 {
        self.undeclared.load(Ordering::Relaxed)
    }

    /// The record, if it exists. Reading does not change recency (see
    /// [`Tier::touch`]).
    pub fn get(&self, key: &InstanceId) -> Option<&V> {
        if let Some(changed) = self.dirty.get(key) {
            return changed.value.as_deref();
        }
        if let Some(clean) = self.clean.peek(key) {
            return clean.value.as_deref();
        }
        self.unknown(key);
        None
    }

    /// The event being applied: changes from here on are its (see
    /// [`Tier::changed_at`]).
    pub fn set_lsn(&mut self, lsn: u64) {
        self.lsn = lsn;
    }

    /// The LSN of the event that last changed the record, while that
    /// change is not yet in a durable checkpoint; `None` for a record
    /// whose every change is (a clean one, or one never changed). A read
    /// of the record alone needs the log durable up to here, no further.
    pub fn changed_at(&self, key: &InstanceId) -> Option<u64> {
        self.dirty.get(key).map(|changed| changed.lsn)
    }

    /// Whether the record exists.
    pub fn contains_key(&self, key: &InstanceId) -> bool {
        self.get(key).is_some()
    }

    /// Marks a key as just used, so eviction takes it last.
    pub fn touch(&mut self, key: &InstanceId) {
        self.clean.promote(key);
    }

    /// Moves a clean record to the dirty set, as it is about to change.
    fn make_dirty(&mut self, key: &InstanceId) {
        if let Some(changed) = self.dirty.get_mut(key) {
            changed.generation = self.generation;
            changed.lsn = self.lsn;
            return;
        }
        if let Some(clean) = self.clean.pop(key) {
            self.clean_bytes -= clean.bytes;
            self.dirty_bytes += clean.bytes;
            self.dirty.insert(
                key.clone(),
                Changed {
                    value: clean.value,
                    generation: self.generation,
                    lsn: self.lsn,
                    bytes: clean.bytes,
                    stored_tag: clean.stored_tag,
                },
            );
        }
    }

    /// The record, to change it. The key becomes dirty if it exists.
    pub fn get_mut(&mut self, key: &InstanceId) -> Option<&mut V> {
        if !self.dirty.contains_key(key) {
            // A clean record moves to the dirty set; a known absence or an
            // unknown key gives nothing.
            match self.clean.peek(key) {
                Some(clean) if clean.value.is_some() => self.make_dirty(key),
                Some(_) => return None,
                None => {
                    self.unknown(key);
                    return None;
                }
            }
        }
        let changed = self.dirty.get_mut(key)?;
        changed.generation = self.generation;
        changed.lsn = self.lsn;
        changed.value.as_deref_mut()
    }

    /// Puts a record (new or replacing one), as a change.
    pub fn insert(&mut self, key: InstanceId, value: V) {
        self.unknown(&key);
        self.make_dirty(&key);
        match self.dirty.get_mut(&key) {
            Some(changed) => {
                if changed.value.is_none() {
                    Self::charge_new_record(changed, &mut self.dirty_bytes);
                }
                changed.value = Some(Box::new(value));
            }
            None => {
                self.dirty_bytes += UNSIZED_RECORD_BYTES;
                self.dirty.insert(
                    key,
                    Changed {
                        value: Some(Box::new(value)),
                        generation: self.generation,
                        lsn: self.lsn,
                        bytes: UNSIZED_RECORD_BYTES,
                        stored_tag: None,
                    },
                );
            }
        }
    }

    /// Removes a record, as a change; returns it.
    pub fn remove(&mut self, key: &InstanceId) -> Option<V> {
        if self.unknown(key) || !self.contains_key(key) {
            return None;
        }
        self.make_dirty(key);
        self.dirty
            .get_mut(key)
            .and_then(|c| c.value.take())
            .map(|boxed| *boxed)
    }

    /// The record, created with `make` if it does not exist.
    pub fn get_or_insert_with(&mut self, key: InstanceId, make: impl FnOnce() -> V) -> &mut V {
        self.unknown(&key);
        self.make_dirty(&key);
        let (generation, lsn) = (self.generation, self.lsn);
        let changed = self.dirty.entry(key).or_insert_with(|| {
            self.dirty_bytes += UNSIZED_RECORD_BYTES;
            Changed {
                value: None,
                generation,
                lsn,
                bytes: UNSIZED_RECORD_BYTES,
                stored_tag: None,
            }
        });
        if changed.value.is_none() {
            Self::charge_new_record(changed, &mut self.dirty_bytes);
        }
        changed.value.get_or_insert_with(|| Box::new(make()))
    }

    /// A record is created where the tier held only a known absence (a
    /// key looked up and not found, or removed): charge it as a new record
    /// until a checkpoint measures it, not as the absence's few bytes
    /// (which let freshly created records go uncounted).
    fn charge_new_record(changed: &mut Changed<V>, dirty_bytes: &mut usize) {
        if changed.bytes < UNSIZED_RECORD_BYTES {
            *dirty_bytes += UNSIZED_RECORD_BYTES - changed.bytes;
            changed.bytes = UNSIZED_RECORD_BYTES;
        }
    }

    /// Every resident record, in key order (recovery's pending work, the
    /// snapshot of a complete tier).
    pub fn resident(&self) -> BTreeMap<&InstanceId, &V> {
        let mut all = BTreeMap::new();
        for (key, changed) in &self.dirty {
            if let Some(value) = changed.value.as_deref() {
                all.insert(key, value);
            }
        }
        for (key, clean) in self.clean.iter() {
            if let Some(value) = clean.value.as_deref() {
                all.insert(key, value);
            }
        }
        all
    }

    /// The record if it is resident, without counting an unknown key (a
    /// scan's look at a key it kept from earlier, which may have gone
    /// cold or been removed since).
    pub fn peek_resident(&self, key: &InstanceId) -> Option<&V> {
        match self.dirty.get(key) {
            Some(changed) => changed.value.as_deref(),
            None => self.clean.peek(key).and_then(|c| c.value.as_deref()),
        }
    }

    /// Every resident record, in no order and without building a map: for
    /// scans that look at each record once (the hosted fetchers' looks).
    pub fn resident_iter(&self) -> impl Iterator<Item = (&InstanceId, &V)> {
        let dirty = self
            .dirty
            .iter()
            .filter_map(|(k, c)| Some((k, c.value.as_deref()?)));
        let clean = self
            .clean
            .iter()
            .filter(|(k, _)| !self.dirty.contains_key(*k))
            .filter_map(|(k, c)| Some((k, c.value.as_deref()?)));
        dirty.chain(clean)
    }

    /// Resident records, dirty ones changed since the last checkpoint
    /// included (for merging with a store scan): `None` marks a removal.
    pub fn resident_entries(&self) -> impl Iterator<Item = (&InstanceId, Option<&V>, bool)> {
        let dirty = self
            .dirty
            .iter()
            .map(|(k, c)| (k, c.value.as_deref(), true));
        let clean = self
            .clean
            .iter()
            .map(|(k, c)| (k, c.value.as_deref(), false));
        dirty.chain(clean)
    }

    /// Installs a record the engine read from the store (`None`: the store
    /// has none), with its encoded size. A key already known is left alone:
    /// what memory holds is newer.
    pub fn install(&mut self, key: InstanceId, value: Option<V>, encoded_bytes: usize)
    where
        V: Indexed,
    {
        if self.dirty.contains_key(&key) || self.clean.contains(&key) {
            return;
        }
        // A cold copy is the same record: the installed one replaces it.
        self.take_cold(&key);
        let bytes = estimate_bytes(&key, value.is_some(), encoded_bytes);
        self.clean_bytes += bytes;
        self.clean_arrivals += 1;
        let stored_tag = value.as_ref().and_then(Indexed::index_tag);
        self.clean.put(
            key,
            Clean {
                value: value.map(Box::new),
                bytes,
                stored_tag,
            },
        );
    }

    /// Closes the current generation and lists its changes for a
    /// checkpoint; `write` returns each change's encoded size. Returns the
    /// generation, for [`Tier::checkpointed`]. From here on the store's
    /// index tag of each change is its new one (checkpoints land in order;
    /// one that fails stops the partition).
    pub fn take_changes<E>(
        &mut self,
        mut write: impl FnMut(Change<'_, V>) -> Result<usize, E>,
    ) -> Result<u64, E>
    where
        V: Indexed,
    {
        let generation = self.generation;
        for (key, changed) in self.dirty.iter_mut() {
            if changed.generation != generation {
                continue;
            }
            let tag = changed.value.as_deref().and_then(Indexed::index_tag);
            let encoded = write(Change {
                key,
                value: changed.value.as_deref(),
                stored_tag: changed.stored_tag,
                tag,
            })?;
            changed.stored_tag = tag;
            let bytes = estimate_bytes(key, changed.value.is_some(), encoded);
            self.dirty_bytes = self.dirty_bytes - changed.bytes + bytes;
            changed.bytes = bytes;
        }
        self.generation += 1;
        Ok(generation)
    }

    /// The checkpoint of `generation` is durable: what it carried and was
    /// not changed since is clean now.
    pub fn checkpointed(&mut self, generation: u64) {
        let done: Vec<InstanceId> = self
            .dirty
            .iter()
            .filter(|(_, c)| c.generation <= generation)
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            if let Some(changed) = self.dirty.remove(&key) {
                self.dirty_bytes -= changed.bytes;
                self.clean_bytes += changed.bytes;
                self.clean_arrivals += 1;
                self.clean.put(
                    key,
                    Clean {
                        value: changed.value,
                        bytes: changed.bytes,
                        stored_tag: changed.stored_tag,
                    },
                );
            }
        }
    }

    /// Drops clean records until the tier's estimate is at most
    /// `budget_bytes` (or nothing clean is left): first those `settled`
    /// says nothing will touch again unless a client asks (finished
    /// instances), least recently used first, then the rest in the same
    /// order, so the records of running work stay in memory longest.
    /// Returns how many were dropped. The tier is no longer complete once
    /// it drops a record that exists; it remembers the key in its evicted
    /// keys, if it keeps them.
    pub fn evict_to(&mut self, budget_bytes: usize, settled: impl Fn(&V) -> bool) -> usize {
        self.evict_keeping_cold(budget_bytes, settled, |_| None)
    }

    /// [`Tier::evict_to`], except that a record of running work (not
    /// `settled`) leaving the decoded cache stays cold, as `encode` gives
    /// it (the bytes the store holds), while cold records take at most
    /// half the budget; beyond that, and when nothing decoded is left to
    /// evict, the least recently cooled go for good.
    pub fn evict_keeping_cold(
        &mut self,
        budget_bytes: usize,
        settled: impl Fn(&V) -> bool,
        encode: impl Fn(&V) -> Option<Vec<u8>>,
    ) -> usize {
        // When what cannot be evicted (dirty records, filters) fills the
        // budget alone, every clean record goes, in any order: no need to
        // look for the settled ones.
        let unevictable = self.resident_bytes() - self.clean_bytes - self.cold_bytes;
        let mut evicted = 0;
        if unevictable < budget_bytes {
            evicted += self.evict_settled(budget_bytes, settled);
        }
        let cold_max = if unevictable < budget_bytes {
            budget_bytes / 2
        } else {
            0
        };
        while self.resident_bytes() > budget_bytes {
            if self.cold_bytes > cold_max || self.clean.is_empty() {
                let Some((key, cold)) = self.cold.pop_lru() else {
                    break;
                };
                self.cold_bytes -= cold.bytes;
                self.remember_evicted(&key);
                evicted += 1;
                continue;
            }
            let Some((key, clean)) = self.clean.pop_lru() else {
                break;
            };
            let encoded = if cold_max > 0 {
                clean.value.as_deref().and_then(&encode)
            } else {
                None
            };
            let bytes = encoded
                .as_ref()
                .map_or(0, |e| KEY_OVERHEAD_BYTES + key.as_str().len() + e.len());
            match encoded {
                Some(encoded) if bytes <= cold_max => {
                    self.clean_bytes -= clean.bytes;
                    // Room for it: the least recently cooled go.
                    while self.cold_bytes + bytes > cold_max {
                        let Some((old, cold)) = self.cold.pop_lru() else {
                            break;
                        };
                        self.cold_bytes -= cold.bytes;
                        self.remember_evicted(&old);
                        evicted += 1;
                    }
                    self.cold_bytes += bytes;
                    self.cold.put(key, Cold { encoded, bytes });
                }
                _ => self.forget(key, clean),
            }
            evicted += 1;
        }
        evicted
    }

    /// The settled part of [`Tier::evict_to`]: settled records, least
    /// recently used first, in batches that cover the excess (the evicted
    /// keys' filters may grow meanwhile, hence the loop), copying only the
    /// keys dropped.
    fn evict_settled(&mut self, budget_bytes: usize, settled: impl Fn(&V) -> bool) -> usize {
        let mut evicted = 0;
        // The search walks the whole cache when it finds nothing, and the
        // partition evicts after every batch of commands: skip it until
        // records arrive that could be settled.
        if self.no_settled_at == Some(self.clean_arrivals) {
            return 0;
        }
        loop {
            let excess = self.resident_bytes().saturating_sub(budget_bytes);
            if excess == 0 {
                return evicted;
            }
            let mut covered = 0;
            let batch: Vec<InstanceId> = self
                .clean
                .iter()
                .rev()
                .filter(|(_, clean)| clean.value.as_deref().is_some_and(&settled))
                .take_while(|(_, clean)| {
                    let more = covered < excess;
                    covered += clean.bytes;
                    more
                })
                .map(|(key, _)| key.clone())
                .collect();
            if batch.is_empty() {
                self.no_settled_at = Some(self.clean_arrivals);
                return evicted;
            }
            for key in batch {
                if let Some(clean) = self.clean.pop(&key) {
                    self.forget(key, clean);
                    evicted += 1;
                }
            }
        }
    }

    /// Accounts for a clean record dropped from memory.
    fn forget(&mut self, key: InstanceId, clean: Clean<V>) {
        self.clean_bytes -= clean.bytes;
        if clean.value.is_some() {
            self.remember_evicted(&key);
        }
    }

    /// Adds the key of an existing record that left memory to the evicted
    /// keys, if the tier keeps them (past their limit it stops).
    fn remember_evicted(&mut self, key: &InstanceId) {
        if let Some(keys) = &mut self.evicted
            && !keys.insert(key.as_str())
        {
            self.evicted = None;
        }
    }

    /// Whether the tier tells absent keys from evicted ones by itself
    /// (see the `evicted` field); `false` means every key it does not hold
    /// must be loaded.
    pub fn keeps_evicted_keys(&self) -> bool {
        self.evicted.is_some()
    }

    /// Estimated memory of the resident records, and of the evicted keys'
    /// filters: what the budget limits.
    pub fn resident_bytes(&self) -> usize {
        self.clean_bytes
            + self.dirty_bytes
            + self.cold_bytes
            + self.evicted.as_ref().map_or(0, EvictedKeys::bytes)
    }

    /// Memory of the cold records (kept encoded).
    pub fn cold_bytes(&self) -> usize {
        self.cold_bytes
    }

    /// Cold records (kept encoded).
    pub fn cold_len(&self) -> usize {
        self.cold.len()
    }

    /// Estimated memory of the records not yet durable in the store.
    pub fn dirty_bytes(&self) -> usize {
        self.dirty_bytes
    }

    /// Resident keys (records and known absences).
    pub fn resident_len(&self) -> usize {
        self.dirty.len() + self.clean.len()
    }
}

/// Decoded records take several times their bincode bytes: every history
/// event is an enum as large as its largest variant, every string and
/// vector has a header and an allocation rounded up. Measured with
/// `basalt bench steady` (RSS growth against encoded bytes while every
/// record was resident): about 8 for checkouts.
const DECODED_PER_ENCODED_BYTE: usize = 8;

/// Estimated memory of a resident record from its encoded size.
fn estimate_bytes(key: &InstanceId, exists: bool, encoded_bytes: usize) -> usize {
    let record = if exists {
        encoded_bytes * DECODED_PER_ENCODED_BYTE
    } else {
        0
    };
    KEY_OVERHEAD_BYTES + key.as_str().len() + record
}
