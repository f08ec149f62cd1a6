//! The factories duroxide's validation suite asks for, over Basalt on
//! memory or on a local directory, and the suite itself as a macro that
//! each storage's test file expands.

use std::sync::Arc;
use std::time::Duration;

use basalt_duroxide::BasaltProvider;
use basalt_engine::{Engine, EngineOptions};
use duroxide::provider_validation::ProviderFactory;
use duroxide::providers::Provider;
use parking_lot::Mutex;

pub use duroxide::provider_validation as suite;

/// Partitions of every test hub: enough that instances, their children
/// and sessions land on different partitions.
const PARTITIONS: u32 = 4;

/// Where a test hub lives (each test binary uses one).
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub enum Store {
    /// In memory.
    Memory,
    /// In a temporary local directory (segment files with fsync).
    Local,
}

/// Opens a hub; a local one's directory is pushed to `dirs`, to be removed
/// when the factory that asked is dropped (after the test).
async fn open(store: Store, dirs: &Mutex<Vec<tempfile::TempDir>>) -> (BasaltProvider, Arc<Engine>) {
    let options = EngineOptions {
        partition_count: PARTITIONS,
        ..EngineOptions::default()
    };
    let storage = match store {
        Store::Memory => basalt_storage::Storage::in_memory(),
        Store::Local => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let storage = basalt_storage::Storage::local(dir.path()).expect("local storage");
            dirs.lock().push(dir);
            storage
        }
    };
    BasaltProvider::open(storage, options)
        .await
        .expect("open a test hub")
}

/// A fresh, empty hub for every provider the suite asks for.
pub struct Fresh {
    store: Store,
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl Fresh {
    /// A factory of hubs on `store`.
    pub fn new(store: Store) -> Fresh {
        Fresh {
            store,
            dirs: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl ProviderFactory for Fresh {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        Arc::new(open(self.store, &self.dirs).await.0)
    }

    fn lock_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// One hub for the whole test, for the tests that reach into its storage
/// through the factory's hooks (corrupting a history, reading attempt
/// counts).
pub struct Shared {
    provider: Arc<BasaltProvider>,
    engine: Arc<Engine>,
    _dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl Shared {
    /// A factory of one hub on `store`.
    pub async fn new(store: Store) -> Shared {
        let dirs = Mutex::new(Vec::new());
        let (provider, engine) = open(store, &dirs).await;
        Shared {
            provider: Arc::new(provider),
            engine,
            _dirs: dirs,
        }
    }
}

#[async_trait::async_trait]
impl ProviderFactory for Shared {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }

    fn lock_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn corrupt_instance_history(&self, instance: &str) {
        let id = basalt_runtime::InstanceId::new(instance).expect("instance id");
        self.engine
            .hosted_corrupt_history(&id)
            .await
            .expect("corrupt the history");
    }

    async fn get_max_attempt_count(&self, instance: &str) -> u32 {
        let id = basalt_runtime::InstanceId::new(instance).expect("instance id");
        self.engine
            .hosted_max_attempts(&id)
            .await
            .expect("read attempt counts")
    }
}

/// Every test of duroxide 0.1.32's validation suite, as SQLite's wiring
/// runs them, except that Basalt long-polls: it runs the two long-poll
/// tests and not the two short-poll ones (see `docs/duroxide.md`).
/// Generated from the suite's function list.
#[macro_export]
macro_rules! validation_suite {
    ($store:expr) => {
        mod atomicity {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_atomicity_failure_rollback() {
                suite::atomicity::test_atomicity_failure_rollback(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_multi_operation_atomic_ack() {
                suite::atomicity::test_multi_operation_atomic_ack(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_lock_released_only_on_successful_ack() {
                suite::atomicity::test_lock_released_only_on_successful_ack(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_concurrent_ack_prevention() {
                suite::atomicity::test_concurrent_ack_prevention(&Fresh::new($store)).await;
            }
        }

        mod bulk_deletion {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_delete_instance_bulk_filter_combinations() {
                suite::bulk_deletion::test_delete_instance_bulk_filter_combinations(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_instance_bulk_safety_and_limits() {
                suite::bulk_deletion::test_delete_instance_bulk_safety_and_limits(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_instance_bulk_completed_before_filter() {
                suite::bulk_deletion::test_delete_instance_bulk_completed_before_filter(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_instance_bulk_cascades_to_children() {
                suite::bulk_deletion::test_delete_instance_bulk_cascades_to_children(&Fresh::new($store)).await;
            }
        }

        mod cancellation {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_fetch_returns_running_state_for_active_orchestration() {
                suite::cancellation::test_fetch_returns_running_state_for_active_orchestration(&Fresh::new($store))
                    .await;
            }

            #[tokio::test]
            async fn test_fetch_returns_terminal_state_when_orchestration_completed() {
                suite::cancellation::test_fetch_returns_terminal_state_when_orchestration_completed(&Fresh::new($store))
                    .await;
            }

            #[tokio::test]
            async fn test_fetch_returns_terminal_state_when_orchestration_failed() {
                suite::cancellation::test_fetch_returns_terminal_state_when_orchestration_failed(&Fresh::new($store))
                    .await;
            }

            #[tokio::test]
            async fn test_fetch_returns_terminal_state_when_orchestration_continued_as_new() {
                suite::cancellation::test_fetch_returns_terminal_state_when_orchestration_continued_as_new(
                    &Fresh::new($store),
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_returns_missing_state_when_instance_deleted() {
                suite::cancellation::test_fetch_returns_missing_state_when_instance_deleted(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_returns_running_when_orchestration_active() {
                suite::cancellation::test_renew_returns_running_when_orchestration_active(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_returns_terminal_when_orchestration_completed() {
                suite::cancellation::test_renew_returns_terminal_when_orchestration_completed(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_returns_missing_when_instance_deleted() {
                suite::cancellation::test_renew_returns_missing_when_instance_deleted(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_ack_work_item_none_deletes_without_enqueue() {
                suite::cancellation::test_ack_work_item_none_deletes_without_enqueue(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cancelled_activities_deleted_from_worker_queue() {
                suite::cancellation::test_cancelled_activities_deleted_from_worker_queue(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_ack_work_item_fails_when_entry_deleted() {
                suite::cancellation::test_ack_work_item_fails_when_entry_deleted(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_fails_when_entry_deleted() {
                suite::cancellation::test_renew_fails_when_entry_deleted(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cancelling_nonexistent_activities_is_idempotent() {
                suite::cancellation::test_cancelling_nonexistent_activities_is_idempotent(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_batch_cancellation_deletes_multiple_activities() {
                suite::cancellation::test_batch_cancellation_deletes_multiple_activities(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_same_activity_in_worker_items_and_cancelled_is_noop() {
                suite::cancellation::test_same_activity_in_worker_items_and_cancelled_is_noop(
                    &Shared::new($store).await,
                )
                .await;
            }

            #[tokio::test]
            async fn test_orphan_activity_after_instance_force_deletion() {
                suite::cancellation::test_orphan_activity_after_instance_force_deletion(&Fresh::new($store)).await;
            }
        }

        mod capability_filtering {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_fetch_with_filter_none_returns_any_item() {
                suite::capability_filtering::test_fetch_with_filter_none_returns_any_item(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_fetch_with_compatible_filter_returns_item() {
                suite::capability_filtering::test_fetch_with_compatible_filter_returns_item(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_fetch_with_incompatible_filter_skips_item() {
                suite::capability_filtering::test_fetch_with_incompatible_filter_skips_item(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_fetch_filter_skips_incompatible_selects_compatible() {
                suite::capability_filtering::test_fetch_filter_skips_incompatible_selects_compatible(
                    &Fresh::new($store),
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_filter_does_not_lock_skipped_instances() {
                suite::capability_filtering::test_fetch_filter_does_not_lock_skipped_instances(&Fresh::new($store))
                    .await;
            }

            #[tokio::test]
            async fn test_fetch_filter_null_pinned_version_always_compatible() {
                suite::capability_filtering::test_fetch_filter_null_pinned_version_always_compatible(
                    &Fresh::new($store),
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_filter_boundary_versions() {
                suite::capability_filtering::test_fetch_filter_boundary_versions(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_pinned_version_stored_via_ack_metadata() {
                suite::capability_filtering::test_pinned_version_stored_via_ack_metadata(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_pinned_version_immutable_across_ack_cycles() {
                suite::capability_filtering::test_pinned_version_immutable_across_ack_cycles(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_continue_as_new_execution_gets_own_pinned_version() {
                suite::capability_filtering::test_continue_as_new_execution_gets_own_pinned_version(&Fresh::new($store))
                    .await;
            }

            #[tokio::test]
            async fn test_filter_with_empty_supported_versions_returns_nothing() {
                suite::capability_filtering::test_filter_with_empty_supported_versions_returns_nothing(
                    &Fresh::new($store),
                )
                .await;
            }

            #[tokio::test]
            async fn test_concurrent_filtered_fetch_no_double_lock() {
                suite::capability_filtering::test_concurrent_filtered_fetch_no_double_lock(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_ack_stores_pinned_version_via_metadata_update() {
                suite::capability_filtering::test_ack_stores_pinned_version_via_metadata_update(&Fresh::new($store))
                    .await;
            }

            #[tokio::test]
            async fn test_provider_updates_pinned_version_when_told() {
                suite::capability_filtering::test_provider_updates_pinned_version_when_told(
                    &Shared::new($store).await,
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_corrupted_history_filtered_vs_unfiltered() {
                suite::capability_filtering::test_fetch_corrupted_history_filtered_vs_unfiltered(
                    &Shared::new($store).await,
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_deserialization_error_increments_attempt_count() {
                suite::capability_filtering::test_fetch_deserialization_error_increments_attempt_count(
                    &Shared::new($store).await,
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_deserialization_error_eventually_reaches_poison() {
                suite::capability_filtering::test_fetch_deserialization_error_eventually_reaches_poison(
                    &Shared::new($store).await,
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_filter_applied_before_history_deserialization() {
                suite::capability_filtering::test_fetch_filter_applied_before_history_deserialization(
                    &Shared::new($store).await,
                )
                .await;
            }

            #[tokio::test]
            async fn test_fetch_single_range_only_uses_first_range() {
                suite::capability_filtering::test_fetch_single_range_only_uses_first_range(
                    &Shared::new($store).await,
                )
                .await;
            }

            #[tokio::test]
            async fn test_ack_appends_event_to_corrupted_history() {
                suite::capability_filtering::test_ack_appends_event_to_corrupted_history(
                    &Shared::new($store).await,
                )
                .await;
            }
        }

        mod custom_status {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_custom_status_set() {
                suite::custom_status::test_custom_status_set(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_custom_status_clear() {
                suite::custom_status::test_custom_status_clear(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_custom_status_none_preserves() {
                suite::custom_status::test_custom_status_none_preserves(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_custom_status_version_increments() {
                suite::custom_status::test_custom_status_version_increments(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_custom_status_polling_no_change() {
                suite::custom_status::test_custom_status_polling_no_change(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_custom_status_nonexistent_instance() {
                suite::custom_status::test_custom_status_nonexistent_instance(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_custom_status_default_on_new_instance() {
                suite::custom_status::test_custom_status_default_on_new_instance(&Fresh::new($store)).await;
            }
        }

        mod deletion {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_delete_terminal_instances() {
                suite::deletion::test_delete_terminal_instances(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_running_rejected_force_succeeds() {
                suite::deletion::test_delete_running_rejected_force_succeeds(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_nonexistent_instance() {
                suite::deletion::test_delete_nonexistent_instance(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_cleans_queues_and_locks() {
                suite::deletion::test_delete_cleans_queues_and_locks(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cascade_delete_hierarchy() {
                suite::deletion::test_cascade_delete_hierarchy(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_force_delete_prevents_ack_recreation() {
                suite::deletion::test_force_delete_prevents_ack_recreation(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_list_children() {
                suite::deletion::test_list_children(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_get_parent_id() {
                suite::deletion::test_delete_get_parent_id(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_get_instance_tree() {
                suite::deletion::test_delete_get_instance_tree(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_instances_atomic() {
                suite::deletion::test_delete_instances_atomic(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_instances_atomic_force() {
                suite::deletion::test_delete_instances_atomic_force(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_delete_instances_atomic_orphan_detection() {
                suite::deletion::test_delete_instances_atomic_orphan_detection(&Shared::new($store).await).await;
            }

            #[tokio::test]
            async fn test_stale_activity_after_delete_recreate() {
                suite::deletion::test_stale_activity_after_delete_recreate(&Shared::new($store).await).await;
            }
        }

        mod error_handling {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_invalid_lock_token_on_ack() {
                suite::error_handling::test_invalid_lock_token_on_ack(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_duplicate_event_id_rejection() {
                suite::error_handling::test_duplicate_event_id_rejection(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_missing_instance_metadata() {
                suite::error_handling::test_missing_instance_metadata(&Shared::new($store).await).await;
            }

            #[tokio::test]
            async fn test_corrupted_serialization_data() {
                suite::error_handling::test_corrupted_serialization_data(&Shared::new($store).await).await;
            }

            #[tokio::test]
            async fn test_lock_expiration_during_ack() {
                suite::error_handling::test_lock_expiration_during_ack(&Shared::new($store).await).await;
            }

            #[tokio::test]
            async fn test_read_corrupted_history_returns_error() {
                suite::error_handling::test_read_corrupted_history_returns_error(&Shared::new($store).await)
                    .await;
            }

            #[tokio::test]
            async fn test_read_with_execution_corrupted_history_returns_error() {
                suite::error_handling::test_read_with_execution_corrupted_history_returns_error(
                    &Shared::new($store).await,
                )
                .await;
            }
        }

        mod instance_creation {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_instance_creation_via_metadata() {
                suite::instance_creation::test_instance_creation_via_metadata(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_no_instance_creation_on_enqueue() {
                suite::instance_creation::test_no_instance_creation_on_enqueue(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_null_version_handling() {
                suite::instance_creation::test_null_version_handling(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_sub_orchestration_instance_creation() {
                suite::instance_creation::test_sub_orchestration_instance_creation(&Fresh::new($store)).await;
            }
        }

        mod instance_locking {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_exclusive_instance_lock() {
                suite::instance_locking::test_exclusive_instance_lock(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_lock_token_uniqueness() {
                suite::instance_locking::test_lock_token_uniqueness(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_invalid_lock_token_rejection() {
                suite::instance_locking::test_invalid_lock_token_rejection(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_concurrent_instance_fetching() {
                suite::instance_locking::test_concurrent_instance_fetching(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_completions_arriving_during_lock_blocked() {
                suite::instance_locking::test_completions_arriving_during_lock_blocked(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cross_instance_lock_isolation() {
                suite::instance_locking::test_cross_instance_lock_isolation(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_message_tagging_during_lock() {
                suite::instance_locking::test_message_tagging_during_lock(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_ack_only_affects_locked_messages() {
                suite::instance_locking::test_ack_only_affects_locked_messages(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_multi_threaded_lock_contention() {
                suite::instance_locking::test_multi_threaded_lock_contention(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_multi_threaded_no_duplicate_processing() {
                suite::instance_locking::test_multi_threaded_no_duplicate_processing(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_multi_threaded_lock_expiration_recovery() {
                suite::instance_locking::test_multi_threaded_lock_expiration_recovery(&Fresh::new($store)).await;
            }
        }

        mod kv_store {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_kv_set_and_get() {
                suite::kv_store::test_kv_set_and_get(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_overwrite() {
                suite::kv_store::test_kv_overwrite(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_clear_single() {
                suite::kv_store::test_kv_clear_single(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_clear_all() {
                suite::kv_store::test_kv_clear_all(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_get_nonexistent() {
                suite::kv_store::test_kv_get_nonexistent(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_snapshot_in_fetch() {
                suite::kv_store::test_kv_snapshot_in_fetch(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_snapshot_after_clear_single() {
                suite::kv_store::test_kv_snapshot_after_clear_single(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_snapshot_after_clear_all() {
                suite::kv_store::test_kv_snapshot_after_clear_all(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_execution_id_tracking() {
                suite::kv_store::test_kv_execution_id_tracking(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_cross_execution_overwrite() {
                suite::kv_store::test_kv_cross_execution_overwrite(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_cross_execution_remove_readd() {
                suite::kv_store::test_kv_cross_execution_remove_readd(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_prune_preserves_overwritten() {
                suite::kv_store::test_kv_prune_preserves_overwritten(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_prune_preserves_all_keys() {
                suite::kv_store::test_kv_prune_preserves_all_keys(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_instance_isolation() {
                suite::kv_store::test_kv_instance_isolation(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delete_instance_cascades() {
                suite::kv_store::test_kv_delete_instance_cascades(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_clear_nonexistent_key() {
                suite::kv_store::test_kv_clear_nonexistent_key(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_get_unknown_instance() {
                suite::kv_store::test_kv_get_unknown_instance(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_set_after_clear() {
                suite::kv_store::test_kv_set_after_clear(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_empty_value() {
                suite::kv_store::test_kv_empty_value(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_large_value() {
                suite::kv_store::test_kv_large_value(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_special_chars_in_key() {
                suite::kv_store::test_kv_special_chars_in_key(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_snapshot_empty() {
                suite::kv_store::test_kv_snapshot_empty(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_snapshot_cross_execution() {
                suite::kv_store::test_kv_snapshot_cross_execution(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_prune_current_execution_protected() {
                suite::kv_store::test_kv_prune_current_execution_protected(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delete_instance_with_children() {
                suite::kv_store::test_kv_delete_instance_with_children(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_clear_isolation() {
                suite::kv_store::test_kv_clear_isolation(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_snapshot_excludes_current_execution() {
                suite::kv_store::test_kv_delta_snapshot_excludes_current_execution(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_snapshot_includes_completed_execution() {
                suite::kv_store::test_kv_delta_snapshot_includes_completed_execution(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_client_reads_merged() {
                suite::kv_store::test_kv_delta_client_reads_merged(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_tombstone_overrides_store() {
                suite::kv_store::test_kv_delta_tombstone_overrides_store(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_clear_all_tombstones_store() {
                suite::kv_store::test_kv_delta_clear_all_tombstones_store(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_merged_on_completion() {
                suite::kv_store::test_kv_delta_merged_on_completion(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_merged_on_can() {
                suite::kv_store::test_kv_delta_merged_on_can(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_delete_instance_cascades() {
                suite::kv_store::test_kv_delta_delete_instance_cascades(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_kv_delta_prune_untouched_key_survives() {
                suite::kv_store::test_kv_delta_prune_untouched_key_survives(&Fresh::new($store)).await;
            }
        }

        mod lock_expiration {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_lock_expires_after_timeout() {
                suite::lock_expiration::test_lock_expires_after_timeout(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_abandon_releases_lock_immediately() {
                suite::lock_expiration::test_abandon_releases_lock_immediately(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_lock_renewal_on_ack() {
                suite::lock_expiration::test_lock_renewal_on_ack(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_concurrent_lock_attempts_respect_expiration() {
                suite::lock_expiration::test_concurrent_lock_attempts_respect_expiration(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_lock_renewal_success() {
                suite::lock_expiration::test_worker_lock_renewal_success(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_lock_renewal_invalid_token() {
                suite::lock_expiration::test_worker_lock_renewal_invalid_token(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_lock_renewal_after_expiration() {
                suite::lock_expiration::test_worker_lock_renewal_after_expiration(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_lock_renewal_extends_timeout() {
                suite::lock_expiration::test_worker_lock_renewal_extends_timeout(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_lock_renewal_after_ack() {
                suite::lock_expiration::test_worker_lock_renewal_after_ack(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_abandon_work_item_releases_lock() {
                suite::lock_expiration::test_abandon_work_item_releases_lock(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_abandon_work_item_with_delay() {
                suite::lock_expiration::test_abandon_work_item_with_delay(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_ack_fails_after_lock_expiry() {
                suite::lock_expiration::test_worker_ack_fails_after_lock_expiry(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_orchestration_lock_renewal_after_expiration() {
                suite::lock_expiration::test_orchestration_lock_renewal_after_expiration(&Fresh::new($store)).await;
            }
        }

        mod long_polling {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_long_poll_waits_for_timeout() {
                let factory = Fresh::new($store);
                    let provider = factory.create_provider().await;
                suite::long_polling::test_long_poll_waits_for_timeout(&*provider).await;
            }

            #[tokio::test]
            async fn test_fetch_respects_timeout_upper_bound() {
                let factory = Fresh::new($store);
                    let provider = factory.create_provider().await;
                suite::long_polling::test_fetch_respects_timeout_upper_bound(&*provider).await;
            }

            #[tokio::test]
            async fn test_long_poll_work_item_waits_for_timeout() {
                let factory = Fresh::new($store);
                    let provider = factory.create_provider().await;
                suite::long_polling::test_long_poll_work_item_waits_for_timeout(&*provider).await;
            }
        }

        mod management {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_list_instances() {
                suite::management::test_list_instances(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_list_instances_by_status() {
                suite::management::test_list_instances_by_status(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_list_executions() {
                suite::management::test_list_executions(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_instance_info() {
                suite::management::test_get_instance_info(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_execution_info() {
                suite::management::test_get_execution_info(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_system_metrics() {
                suite::management::test_get_system_metrics(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_queue_depths() {
                suite::management::test_get_queue_depths(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_instance_stats_nonexistent() {
                suite::management::test_get_instance_stats_nonexistent(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_instance_stats_history() {
                suite::management::test_get_instance_stats_history(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_instance_stats_kv() {
                suite::management::test_get_instance_stats_kv(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_instance_stats_carry_forward() {
                suite::management::test_get_instance_stats_carry_forward(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_instance_stats_kv_delta_only() {
                suite::management::test_get_instance_stats_kv_delta_only(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_get_instance_stats_kv_merged() {
                suite::management::test_get_instance_stats_kv_merged(&Fresh::new($store)).await;
            }
        }

        mod multi_execution {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_execution_isolation() {
                suite::multi_execution::test_execution_isolation(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_latest_execution_detection() {
                suite::multi_execution::test_latest_execution_detection(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_execution_id_sequencing() {
                suite::multi_execution::test_execution_id_sequencing(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_continue_as_new_creates_new_execution() {
                suite::multi_execution::test_continue_as_new_creates_new_execution(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_execution_history_persistence() {
                suite::multi_execution::test_execution_history_persistence(&Fresh::new($store)).await;
            }
        }

        mod poison_message {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn orchestration_ignore_attempt_preserves_hidden_start() {
                suite::poison_message::orchestration_ignore_attempt_preserves_hidden_start(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn orchestration_delayed_abandon_preserves_unlocked_rows() {
                suite::poison_message::orchestration_delayed_abandon_preserves_unlocked_rows(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn orchestration_attempt_count_starts_at_one() {
                suite::poison_message::orchestration_attempt_count_starts_at_one(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn orchestration_attempt_count_increments_on_refetch() {
                suite::poison_message::orchestration_attempt_count_increments_on_refetch(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn worker_attempt_count_starts_at_one() {
                suite::poison_message::worker_attempt_count_starts_at_one(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn worker_attempt_count_increments_on_lock_expiry() {
                suite::poison_message::worker_attempt_count_increments_on_lock_expiry(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn attempt_count_is_per_message() {
                suite::poison_message::attempt_count_is_per_message(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn abandon_work_item_ignore_attempt_decrements() {
                suite::poison_message::abandon_work_item_ignore_attempt_decrements(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn abandon_orchestration_item_ignore_attempt_decrements() {
                suite::poison_message::abandon_orchestration_item_ignore_attempt_decrements(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn ignore_attempt_never_goes_negative() {
                suite::poison_message::ignore_attempt_never_goes_negative(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn max_attempt_count_across_message_batch() {
                suite::poison_message::max_attempt_count_across_message_batch(&Fresh::new($store)).await;
            }
        }

        mod prune {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_prune_options_combinations() {
                suite::prune::test_prune_options_combinations(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_prune_safety() {
                suite::prune::test_prune_safety(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_prune_bulk() {
                suite::prune::test_prune_bulk(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_prune_bulk_includes_running_instances() {
                suite::prune::test_prune_bulk_includes_running_instances(&Fresh::new($store)).await;
            }
        }

        mod queue_semantics {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_worker_queue_fifo_ordering() {
                suite::queue_semantics::test_worker_queue_fifo_ordering(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_peek_lock_semantics() {
                suite::queue_semantics::test_worker_peek_lock_semantics(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_ack_atomicity() {
                suite::queue_semantics::test_worker_ack_atomicity(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_timer_delayed_visibility() {
                suite::queue_semantics::test_timer_delayed_visibility(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_lost_lock_token_handling() {
                suite::queue_semantics::test_lost_lock_token_handling(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_item_immediate_visibility() {
                suite::queue_semantics::test_worker_item_immediate_visibility(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_worker_delayed_visibility_skips_future_items() {
                suite::queue_semantics::test_worker_delayed_visibility_skips_future_items(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_orphan_queue_messages_dropped() {
                suite::queue_semantics::test_orphan_queue_messages_dropped(&Fresh::new($store)).await;
            }
        }

        mod race_replay {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_duplicate_start_preserves_pinned_handler() {
                suite::race_replay::test_duplicate_start_preserves_pinned_handler(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_continue_as_new_unregistered_backoff() {
                suite::race_replay::test_continue_as_new_unregistered_backoff(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_continue_as_new_poisoned_successor_is_own_execution() {
                suite::race_replay::test_continue_as_new_poisoned_successor_is_own_execution(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_continue_as_new_duplicate_start() {
                suite::race_replay::test_continue_as_new_duplicate_start(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_continue_as_new_transition_delivery_0_1_30() {
                suite::race_replay::test_continue_as_new_transition_delivery(&Fresh::new($store), "0.1.30").await;
            }

            #[tokio::test]
            async fn test_continue_as_new_transition_delivery_0_1_31() {
                suite::race_replay::test_continue_as_new_transition_delivery(&Fresh::new($store), "0.1.31").await;
            }

            #[tokio::test]
            async fn test_queue_race_cancellation_replay() {
                suite::race_replay::test_queue_race_cancellation_replay(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_continue_as_new_queue_race_replay() {
                suite::race_replay::test_continue_as_new_queue_race_replay(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_queue_replay_version_stamp_roundtrip() {
                suite::race_replay::test_queue_replay_version_stamp_roundtrip(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_positional_wait_race_replay() {
                suite::race_replay::test_positional_wait_race_replay(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_legacy_queue_race_decision_preserved() {
                suite::race_replay::test_legacy_queue_race_decision_preserved(&Fresh::new($store)).await;
            }
        }

        mod sessions {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_non_session_items_fetchable_by_any_worker() {
                suite::sessions::test_non_session_items_fetchable_by_any_worker(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_item_claimable_when_no_session() {
                suite::sessions::test_session_item_claimable_when_no_session(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_affinity_same_worker() {
                suite::sessions::test_session_affinity_same_worker(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_affinity_blocks_other_worker() {
                suite::sessions::test_session_affinity_blocks_other_worker(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_different_sessions_different_workers() {
                suite::sessions::test_different_sessions_different_workers(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_mixed_session_and_non_session_items() {
                suite::sessions::test_mixed_session_and_non_session_items(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_claimable_after_lock_expiry() {
                suite::sessions::test_session_claimable_after_lock_expiry(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_none_session_skips_session_items() {
                suite::sessions::test_none_session_skips_session_items(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_some_session_returns_all_items() {
                suite::sessions::test_some_session_returns_all_items(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_session_lock_active() {
                suite::sessions::test_renew_session_lock_active(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_session_lock_skips_idle() {
                suite::sessions::test_renew_session_lock_skips_idle(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_session_lock_no_sessions() {
                suite::sessions::test_renew_session_lock_no_sessions(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cleanup_removes_expired_no_items() {
                suite::sessions::test_cleanup_removes_expired_no_items(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cleanup_keeps_sessions_with_pending_items() {
                suite::sessions::test_cleanup_keeps_sessions_with_pending_items(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cleanup_keeps_active_sessions() {
                suite::sessions::test_cleanup_keeps_active_sessions(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_ack_updates_session_last_activity() {
                suite::sessions::test_ack_updates_session_last_activity(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_work_item_updates_session_last_activity() {
                suite::sessions::test_renew_work_item_updates_session_last_activity(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_items_processed_in_order() {
                suite::sessions::test_session_items_processed_in_order(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_non_session_items_returned_with_session_config() {
                suite::sessions::test_non_session_items_returned_with_session_config(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_shared_worker_id_any_caller_can_fetch_owned_session() {
                suite::sessions::test_shared_worker_id_any_caller_can_fetch_owned_session(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_concurrent_session_claim_only_one_wins() {
                suite::sessions::test_concurrent_session_claim_only_one_wins(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_takeover_after_lock_expiry() {
                suite::sessions::test_session_takeover_after_lock_expiry(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_cleanup_then_new_item_recreates_session() {
                suite::sessions::test_cleanup_then_new_item_recreates_session(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_abandoned_session_item_retryable() {
                suite::sessions::test_abandoned_session_item_retryable(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_abandoned_session_item_ignore_attempt() {
                suite::sessions::test_abandoned_session_item_ignore_attempt(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_renew_session_lock_after_expiry_returns_zero() {
                suite::sessions::test_renew_session_lock_after_expiry_returns_zero(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_original_worker_reclaims_expired_session() {
                suite::sessions::test_original_worker_reclaims_expired_session(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_activity_lock_expires_session_lock_valid_same_worker_refetches() {
                suite::sessions::test_activity_lock_expires_session_lock_valid_same_worker_refetches(
                    &Fresh::new($store),
                )
                .await;
            }

            #[tokio::test]
            async fn test_session_lock_expires_new_owner_gets_redelivery() {
                suite::sessions::test_session_lock_expires_new_owner_gets_redelivery(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_lock_expires_same_worker_reacquires() {
                suite::sessions::test_session_lock_expires_same_worker_reacquires(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_both_locks_expire_different_worker_claims() {
                suite::sessions::test_both_locks_expire_different_worker_claims(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_lock_expires_activity_lock_valid_ack_succeeds() {
                suite::sessions::test_session_lock_expires_activity_lock_valid_ack_succeeds(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_session_lock_renewal_extends_past_original_timeout() {
                suite::sessions::test_session_lock_renewal_extends_past_original_timeout(&Fresh::new($store)).await;
            }
        }

        mod tag_filtering {
            use $crate::common::*;
                #[allow(unused_imports)]
                use duroxide::provider_validation::ProviderFactory;

            #[tokio::test]
            async fn test_default_only_fetches_untagged() {
                suite::tag_filtering::test_default_only_fetches_untagged(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_tags_fetches_only_matching() {
                suite::tag_filtering::test_tags_fetches_only_matching(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_default_and_fetches_untagged_and_matching() {
                suite::tag_filtering::test_default_and_fetches_untagged_and_matching(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_none_filter_returns_nothing() {
                suite::tag_filtering::test_none_filter_returns_nothing(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_multi_tag_filter() {
                suite::tag_filtering::test_multi_tag_filter(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_tag_round_trip_preservation() {
                suite::tag_filtering::test_tag_round_trip_preservation(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_any_filter_fetches_everything() {
                suite::tag_filtering::test_any_filter_fetches_everything(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_tag_survives_abandon_and_refetch() {
                suite::tag_filtering::test_tag_survives_abandon_and_refetch(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_multi_runtime_tag_isolation() {
                suite::tag_filtering::test_multi_runtime_tag_isolation(&Fresh::new($store)).await;
            }

            #[tokio::test]
            async fn test_tag_preserved_through_ack_orchestration_item() {
                suite::tag_filtering::test_tag_preserved_through_ack_orchestration_item(&Fresh::new($store)).await;
            }
        }
    };
}
