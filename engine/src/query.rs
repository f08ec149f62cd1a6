//! Queries over both tiers of a partition: the store's records as of the
//! last checkpoint, overlaid with the records in memory (which are newer,
//! removals included), in id order, one bounded page at a time. A query
//! never loads the partition into memory: it reads store pages and decodes
//! only what it returns (for instances, only the part clients see).

use std::collections::{BTreeMap, VecDeque};

use basalt_partitions::checkpoint::{ENTITY_PREFIX, INSTANCE_PREFIX};
use basalt_partitions::{
    Entity, Instance, PartitionState, codec, entity_matches, entity_view, instance_matches,
    instance_view,
};
use basalt_runtime::{EntityQuery, EntityState, Error, InstanceId, InstanceQuery, InstanceState};

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
    merged_page(
        resident,
        store,
        INSTANCE_PREFIX,
        &id_prefix,
        query.continuation.as_deref(),
        limit,
        |bytes| {
            let meta = codec::decode_instance_meta(bytes)
                .map_err(|e| Error::Storage(format!("an instance record: {e}")))?;
            Ok(instance_matches(query, &meta).then(|| instance_view(query, &meta)))
        },
        |instance: &Instance| {
            instance_matches(query, &instance.meta).then(|| instance_view(query, &instance.meta))
        },
    )
    .await
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
    merged_page(
        resident,
        store,
        ENTITY_PREFIX,
        &id_prefix,
        query.continuation.as_deref(),
        limit,
        |bytes| {
            let entity = codec::decode_entity(bytes)
                .map_err(|e| Error::Storage(format!("an entity record: {e}")))?;
            Ok(view(&entity))
        },
        view,
    )
    .await
}

/// One page of records whose id starts with `id_prefix` and comes after
/// `after`, memory overriding the store, mapped (and filtered) by
/// `from_store` / `from_memory`.
#[allow(clippy::too_many_arguments)]
async fn merged_page<'a, V: 'a, T>(
    resident: impl Iterator<Item = (&'a InstanceId, Option<&'a V>)>,
    store: &dyn RecordSource,
    record_prefix: &[u8],
    id_prefix: &str,
    after: Option<&str>,
    limit: usize,
    mut from_store: impl FnMut(&[u8]) -> Result<Option<T>, Error>,
    mut from_memory: impl FnMut(&V) -> Option<T>,
) -> Result<(Vec<T>, bool), Error> {
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
        let item = if from_memory_first {
            let Some((id, value)) = memory.next() else {
                break;
            };
            // Memory is newer than the store: its record (or removal) wins.
            if page.front().is_some_and(|(s, _)| s == id) {
                page.pop_front();
            }
            value.and_then(&mut from_memory)
        } else {
            let Some((_, bytes)) = page.pop_front() else {
                break;
            };
            from_store(&bytes)?
        };
        if let Some(item) = item {
            if found.len() == limit {
                return Ok((found, true));
            }
            found.push(item);
        }
    }
    Ok((found, false))
}
