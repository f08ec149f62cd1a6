//! Queries over both tiers of a partition: the store's records as of the
//! last checkpoint, overlaid with the records in memory (which are newer,
//! removals included), in id order, one bounded page at a time. A query
//! never loads the partition into memory: it reads store pages and decodes
//! only what it returns (for instances, only the part clients see).

use std::collections::{BTreeMap, VecDeque};

use async_trait::async_trait;
use basalt_partitions::checkpoint::{
    ENTITY_PREFIX, INSTANCE_PREFIX, TIME_PREFIX, name_hash, name_prefix, status_prefix, status_tag,
    time_bucket, time_prefix,
};
use basalt_partitions::{
    Entity, Instance, PartitionState, Tier, codec, entity_matches, entity_view, instance_matches,
    instance_view,
};
use basalt_runtime::{
    EntityQuery, EntityState, Error, InstanceId, InstanceQuery, InstanceState, OrchestrationStatus,
};

use crate::tiers::RecordSource;

/// Store entries read per round trip of a query.
const STORE_PAGE: usize = 256;

/// The instances of one partition that match `query`, after its
/// continuation, in id order: at most `limit`, and whether more match.
pub(crate) async fn instances(
    state: &PartitionState,
    store: &dyn RecordSource,
    query: &InstanceQuery,
    limit: usize,
) -> Result<(Vec<InstanceState>, bool), Error> {
    let id_prefix = query.instance_id_prefix.clone().unwrap_or_default();
    let resident = state
        .instances
        .resident_entries()
        .map(|(id, value, _)| (id, value));
    // With a complete index for what the query narrows by, the store side
    // lists only what that index names (memory, which is newer, is checked
    // record by record as always; so is every record the index names).
    let by_index = index_for(state, store, query).await?;
    let store: &dyn RecordSource = match &by_index {
        Some(index) => index,
        None => store,
    };
    let page = walk_page(
        resident,
        store,
        INSTANCE_PREFIX,
        &id_prefix,
        query.continuation.as_deref(),
        limit,
        usize::MAX,
        |bytes| {
            let meta = codec::decode_instance_meta(bytes)
                .map_err(|e| Error::Storage(format!("an instance record: {e}")))?;
            Ok(instance_matches(query, &meta).then(|| instance_view(query, &meta)))
        },
        |instance: &Instance| {
            instance_matches(query, &instance.meta).then(|| instance_view(query, &instance.meta))
        },
    )
    .await?;
    Ok((page.items, page.more))
}

/// The index that lists the fewest records for `query` (by name, by time
/// of creation, by status, in that order), if the store has a complete one
/// that narrows it; `None`: scan every record.
async fn index_for<'a>(
    state: &PartitionState,
    store: &'a dyn RecordSource,
    query: &InstanceQuery,
) -> Result<Option<ByIndex<'a>>, Error> {
    if state.name_time_indexed {
        if let Some(name) = &query.name {
            return Ok(Some(ByIndex::name(store, name)));
        }
        if query.created_from_ms.is_some() || query.created_to_ms.is_some() {
            let (from, to) = (query.created_from_ms, query.created_to_ms);
            if let Some(buckets) = time_buckets(store, from, to).await? {
                return Ok(Some(ByIndex::created(store, &buckets, from, to)));
            }
        }
    }
    if state.status_indexed && !query.statuses.is_empty() {
        return Ok(Some(ByIndex::statuses(store, &query.statuses)));
    }
    Ok(None)
}

/// The entities of one partition (those with state) that match `query`,
/// after its continuation, in id order: at most `limit`, and whether more
/// match.
pub(crate) async fn entities(
    state: &PartitionState,
    store: &dyn RecordSource,
    query: &EntityQuery,
    limit: usize,
) -> Result<(Vec<EntityState>, bool), Error> {
    // An entity's id is `@name@key`: a name narrows the scan to its keys.
    let id_prefix = match &query.name {
        Some(name) => format!(
            "@{}@{}",
            name.to_lowercase(),
            query.key_prefix.as_deref().unwrap_or("")
        ),
        None => "@".to_owned(),
    };
    let resident = state
        .entities
        .resident_entries()
        .map(|(id, value, _)| (id, value));
    let view = |entity: &Entity| {
        entity_matches(query, entity)
            .then(|| entity_view(entity, query.include_state))
            .flatten()
    };
    let page = walk_page(
        resident,
        store,
        ENTITY_PREFIX,
        &id_prefix,
        query.continuation.as_deref(),
        limit,
        usize::MAX,
        |bytes| {
            let entity = codec::decode_entity(bytes)
                .map_err(|e| Error::Storage(format!("an entity record: {e}")))?;
            Ok(view(&entity))
        },
        view,
    )
    .await?;
    Ok((page.items, page.more))
}

/// The instance records of a store listed through a secondary index, in
/// id order: the entries under each of `lists` (`{list}{id}`) that
/// [`ByIndex::keeps`], merged. What a scan of `i/{id prefix}`
/// would list, less the instances the index rules out.
struct ByIndex<'a> {
    store: &'a dyn RecordSource,
    /// The index prefixes to list (one status, one hour of creation, one
    /// name hash...), each followed by ids.
    lists: Vec<Vec<u8>>,
    /// Only entries whose value (a creation time) is in `[from, to)`:
    /// `None` keeps every entry.
    created: Option<(Option<u64>, Option<u64>)>,
}

impl<'a> ByIndex<'a> {
    /// The instances with any of `statuses`, through the status index.
    fn statuses(store: &'a dyn RecordSource, statuses: &[OrchestrationStatus]) -> ByIndex<'a> {
        ByIndex {
            store,
            lists: statuses
                .iter()
                .map(|s| status_prefix(status_tag(*s)))
                .collect(),
            created: None,
        }
    }

    /// The instances of the orchestration named `name` (and any whose
    /// name has the same hash), through the name index.
    fn name(store: &'a dyn RecordSource, name: &str) -> ByIndex<'a> {
        ByIndex {
            store,
            lists: vec![name_prefix(name_hash(name))],
            created: None,
        }
    }

    /// The instances created in `[from, to)`, through the time index's
    /// `buckets`.
    fn created(
        store: &'a dyn RecordSource,
        buckets: &[u64],
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    ) -> ByIndex<'a> {
        ByIndex {
            store,
            lists: buckets.iter().map(|b| time_prefix(*b)).collect(),
            created: Some((from_ms, to_ms)),
        }
    }
}

impl ByIndex<'_> {
    /// Whether an index entry with this value counts.
    fn keeps(&self, value: &[u8]) -> bool {
        let Some((from_ms, to_ms)) = self.created else {
            return true;
        };
        let created = <[u8; 8]>::try_from(value)
            .map(u64::from_be_bytes)
            .unwrap_or_default();
        from_ms.is_none_or(|f| created >= f) && to_ms.is_none_or(|t| created < t)
    }
}

#[async_trait]
impl RecordSource for ByIndex<'_> {
    async fn get(&self, key: &[u8]) -> basalt_storage::Result<Option<bytes::Bytes>> {
        self.store.get(key).await
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> basalt_storage::Result<basalt_storage::Entries> {
        let id_prefix = prefix.strip_prefix(INSTANCE_PREFIX).unwrap_or(prefix);
        let after_id = after.map(|a| a.strip_prefix(INSTANCE_PREFIX).unwrap_or(a));
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for list in &self.lists {
            // Up to `limit` kept entries of this list (fewer: it has no
            // more), so a merged page shorter than `limit` means every list
            // is exhausted.
            let scan_prefix = [list.as_slice(), id_prefix].concat();
            let mut cursor = after_id.map(|a| [list.as_slice(), a].concat());
            let mut kept = 0;
            loop {
                let entries = self
                    .store
                    .scan(&scan_prefix, cursor.as_deref(), limit)
                    .await?;
                let exhausted = entries.len() < limit;
                if let Some((key, _)) = entries.last() {
                    cursor = Some(key.to_vec());
                }
                for (key, value) in entries {
                    if kept < limit && self.keeps(&value) {
                        ids.push(key[list.len()..].to_vec());
                        kept += 1;
                    }
                }
                if exhausted || kept == limit {
                    break;
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(limit);
        let mut page = Vec::with_capacity(ids.len());
        for id in ids {
            let key = [INSTANCE_PREFIX, id.as_slice()].concat();
            // The index and the records are written in the same batch.
            let Some(value) = self.store.get(&key).await? else {
                return Err(basalt_storage::Error::Corrupted(basalt_storage::Damage {
                    object: format!(
                        "state store index entry for {}",
                        String::from_utf8_lossy(&id)
                    ),
                    offset: 0,
                    problem: basalt_storage::Problem::BadMetadata(
                        "a secondary index names an instance the store has no record of".to_owned(),
                    ),
                }));
            };
            page.push((bytes::Bytes::from(key), value));
        }
        Ok(page)
    }
}

/// Most hours of the time index a query merges; a wider range is listed
/// by another index or a scan (each hour costs a read per page).
const TIME_BUCKETS_MAX: usize = 48;

/// The hours of the time index with entries in `[from, to)`, found with
/// one seek each; `None` if there are more than [`TIME_BUCKETS_MAX`].
async fn time_buckets(
    store: &dyn RecordSource,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
) -> Result<Option<Vec<u64>>, Error> {
    let last = match to_ms {
        Some(0) => return Ok(Some(Vec::new())),
        Some(to) => Some(time_bucket(to - 1)),
        None => None,
    };
    let mut buckets = Vec::new();
    let mut next = from_ms.map_or(0, time_bucket);
    while last.is_none_or(|l| next <= l) {
        // Past every entry of the hour before `next` (ids are UTF-8, which
        // has no 0xff byte).
        let after = next.checked_sub(1).map(|b| {
            let mut key = time_prefix(b);
            key.push(0xff);
            key
        });
        let found = store
            .scan(TIME_PREFIX, after.as_deref(), 1)
            .await
            .map_err(|e| Error::Storage(e.to_string()))?;
        let Some((key, _)) = found.first() else {
            break;
        };
        let bucket = std::str::from_utf8(&key[TIME_PREFIX.len()..])
            .ok()
            .and_then(|rest| rest.get(..8))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or_else(|| {
                Error::Storage(format!(
                    "state store key {:?}: not a time index entry",
                    String::from_utf8_lossy(key)
                ))
            })?;
        if last.is_some_and(|l| bucket > l) {
            break;
        }
        if buckets.len() == TIME_BUCKETS_MAX {
            return Ok(None);
        }
        buckets.push(bucket);
        next = bucket + 1;
    }
    Ok(Some(buckets))
}

/// Records a whole-partition walk reads per page.
const WALK_PAGE: usize = 4096;

/// Every record of one tier of a partition, both tiers of state, in id
/// order, a page at a time: `visit` sees each one once, as `from_store`
/// and `from_memory` map it, with its id.
async fn each_record<V, T>(
    tier: &Tier<V>,
    store: &dyn RecordSource,
    record_prefix: &[u8],
    mut from_store: impl FnMut(&[u8]) -> Result<T, Error>,
    mut from_memory: impl FnMut(&V) -> T,
    id_of: impl Fn(&T) -> String,
    mut visit: impl FnMut(T),
) -> Result<(), Error> {
    let mut after: Option<String> = None;
    loop {
        let resident = tier.resident_entries().map(|(id, value, _)| (id, value));
        let page = walk_page(
            resident,
            store,
            record_prefix,
            "",
            after.as_deref(),
            WALK_PAGE,
            usize::MAX,
            |bytes| from_store(bytes).map(Some),
            |value| Some(from_memory(value)),
        )
        .await?;
        after = page.items.last().map(&id_of);
        page.items.into_iter().for_each(&mut visit);
        if !page.more {
            return Ok(());
        }
    }
}

/// Every instance of a partition, both tiers, in id order, a page at a
/// time: `visit` sees each one's client-visible part once.
pub(crate) async fn each_instance(
    state: &PartitionState,
    store: &dyn RecordSource,
    visit: impl FnMut(InstanceState),
) -> Result<(), Error> {
    each_record(
        &state.instances,
        store,
        INSTANCE_PREFIX,
        |bytes| {
            codec::decode_instance_meta(bytes)
                .map_err(|e| Error::Storage(format!("an instance record: {e}")))
        },
        |instance: &Instance| instance.meta.clone(),
        |meta| meta.instance_id.to_string(),
        visit,
    )
    .await
}

/// How many entities of a partition have state, both tiers, counted a
/// page at a time.
pub(crate) async fn count_entities_with_state(
    state: &PartitionState,
    store: &dyn RecordSource,
) -> Result<u64, Error> {
    let mut count = 0;
    each_record(
        &state.entities,
        store,
        ENTITY_PREFIX,
        |bytes| {
            let entity = codec::decode_entity(bytes)
                .map_err(|e| Error::Storage(format!("an entity record: {e}")))?;
            Ok((entity.id.to_string(), entity.state.is_some()))
        },
        |entity: &Entity| (entity.id.to_string(), entity.state.is_some()),
        |(id, _)| id.clone(),
        |(_, has_state)| count += u64::from(has_state),
    )
    .await?;
    Ok(count)
}

/// A page of a walk over records.
struct WalkPage<T> {
    items: Vec<T>,
    /// More records match after the page.
    more: bool,
    /// The last id examined, if the walk stopped before the end.
    stopped_at: Option<String>,
}

/// One page of records whose id starts with `id_prefix` and comes after
/// `after`, memory overriding the store, mapped (and filtered) by
/// `from_store` / `from_memory`: at most `limit` items, stopping early
/// after `examine_max` records examined (matching or not), so a background
/// sweep does bounded work per call.
#[allow(clippy::too_many_arguments)]
async fn walk_page<'a, V: 'a, T>(
    resident: impl Iterator<Item = (&'a InstanceId, Option<&'a V>)>,
    store: &dyn RecordSource,
    record_prefix: &[u8],
    id_prefix: &str,
    after: Option<&str>,
    limit: usize,
    examine_max: usize,
    mut from_store: impl FnMut(&[u8]) -> Result<Option<T>, Error>,
    mut from_memory: impl FnMut(&V) -> Option<T>,
) -> Result<WalkPage<T>, Error> {
    let mut examined = 0usize;
    let after = after.filter(|a| !a.is_empty());
    let wanted = |id: &str| id.starts_with(id_prefix) && after.is_none_or(|a| id > a);
    // Memory's records in range, in id order (`None`: removed).
    let memory: BTreeMap<&str, Option<&V>> = resident
        .filter(|(id, _)| wanted(id.as_str()))
        .map(|(id, value)| (id.as_str(), value))
        .collect();
    let mut memory = memory.into_iter().peekable();
    let mut scan_prefix = record_prefix.to_vec();
    scan_prefix.extend_from_slice(id_prefix.as_bytes());
    let mut cursor: Option<Vec<u8>> = after.map(|a| {
        let mut key = record_prefix.to_vec();
        key.extend_from_slice(a.as_bytes());
        key
    });
    let mut page: VecDeque<(String, bytes::Bytes)> = VecDeque::new();
    let mut store_done = false;
    let mut found = Vec::new();
    let mut last_examined: Option<String> = None;
    loop {
        if page.is_empty() && !store_done {
            let entries = store
                .scan(&scan_prefix, cursor.as_deref(), STORE_PAGE)
                .await
                .map_err(|e| Error::Storage(e.to_string()))?;
            store_done = entries.len() < STORE_PAGE;
            if let Some((key, _)) = entries.last() {
                cursor = Some(key.to_vec());
            }
            for (key, value) in entries {
                let id = String::from_utf8_lossy(&key[record_prefix.len()..]).into_owned();
                if wanted(&id) {
                    page.push_back((id, value));
                }
            }
            if page.is_empty() && !store_done {
                continue;
            }
        }
        let from_memory_first = match (memory.peek(), page.front()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((m, _)), Some((s, _))) => *m <= s.as_str(),
        };
        if examined == examine_max {
            return Ok(WalkPage {
                items: found,
                more: true,
                stopped_at: last_examined,
            });
        }
        examined += 1;
        let item = if from_memory_first {
            let Some((id, value)) = memory.next() else {
                break;
            };
            // Memory is newer than the store: its record (or removal) wins.
            if page.front().is_some_and(|(s, _)| s == id) {
                page.pop_front();
            }
            last_examined = Some(id.to_owned());
            value.and_then(&mut from_memory)
        } else {
            let Some((id, bytes)) = page.pop_front() else {
                break;
            };
            last_examined = Some(id);
            from_store(&bytes)?
        };
        if let Some(item) = item {
            if found.len() == limit {
                return Ok(WalkPage {
                    items: found,
                    more: true,
                    stopped_at: None,
                });
            }
            found.push(item);
        }
    }
    Ok(WalkPage {
        items: found,
        more: false,
        stopped_at: None,
    })
}

/// One step of the retention sweep: finished instances whose last change
/// is before `cutoff_ms`, after `after` in id order, at most `limit`
/// found and `examine_max` examined. Returns them and where the next step
/// starts (`None`: the sweep reached the end and starts over).
pub(crate) async fn expired(
    state: &PartitionState,
    store: &dyn RecordSource,
    after: Option<&str>,
    cutoff_ms: u64,
    limit: usize,
    examine_max: usize,
) -> Result<(Vec<InstanceId>, Option<String>), Error> {
    let resident = state
        .instances
        .resident_entries()
        .map(|(id, value, _)| (id, value));
    let old = |meta: &InstanceState| {
        (meta.status.is_terminal() && meta.last_updated_at_ms < cutoff_ms)
            .then(|| meta.instance_id.clone())
    };
    // Only finished instances can expire: with a complete status index
    // the store side lists just those.
    let finished = ByIndex::statuses(
        store,
        &[
            OrchestrationStatus::Completed,
            OrchestrationStatus::Failed,
            OrchestrationStatus::Terminated,
        ],
    );
    let store: &dyn RecordSource = if state.status_indexed {
        &finished
    } else {
        store
    };
    let page = walk_page(
        resident,
        store,
        INSTANCE_PREFIX,
        "",
        after,
        limit,
        examine_max,
        |bytes| {
            let meta = codec::decode_instance_meta(bytes)
                .map_err(|e| Error::Storage(format!("an instance record: {e}")))?;
            Ok(old(&meta))
        },
        |instance: &Instance| old(&instance.meta),
    )
    .await?;
    let next = match (&page.stopped_at, page.items.last()) {
        (Some(stopped), _) => Some(stopped.clone()),
        (None, Some(last)) if page.more => Some(last.to_string()),
        _ => None,
    };
    Ok((page.items, next))
}
