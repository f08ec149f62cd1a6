//! duroxide's management interface (`ProviderAdmin`) over the hosted
//! backend's views. Listing reads every partition; deletions of a tree
//! check the whole tree first (a running instance without `force`, a
//! child outside the tree), then delete instance by instance.

use basalt_runtime::hosted::HostedInstanceView;
use duroxide::Event;
use duroxide::providers::{
    DeleteInstanceResult, ExecutionInfo, InstanceFilter, InstanceInfo, ProviderAdmin,
    ProviderError, PruneOptions, PruneResult, QueueDepths, SystemMetrics,
};

use crate::convert::instance_id;
use crate::{BasaltProvider, provider_error};

const TERMINAL: [&str; 3] = ["Completed", "Failed", "ContinuedAsNew"];

fn not_found(operation: &str, instance: &str) -> ProviderError {
    ProviderError::permanent(operation, format!("instance {instance} not found"))
}

/// The status of an instance's current execution.
fn status(view: &HostedInstanceView) -> Option<&str> {
    view.executions
        .iter()
        .find(|e| e.execution_id == view.current_execution)
        .map(|e| e.status.as_str())
}

/// Whether a bulk operation's filter takes an instance: in its allowlist
/// (if any), and its current execution finished before its cutoff (if
/// any).
fn selected(filter: &InstanceFilter, view: &HostedInstanceView) -> bool {
    let allowed = filter
        .instance_ids
        .as_ref()
        .is_none_or(|ids| ids.iter().any(|id| id == view.instance.as_str()));
    let old_enough = filter.completed_before.is_none_or(|cut| {
        view.executions
            .iter()
            .find(|e| e.execution_id == view.current_execution)
            .and_then(|e| e.completed_ms)
            .is_some_and(|done| done < cut)
    });
    allowed && old_enough
}

impl BasaltProvider {
    async fn views(&self) -> Result<Vec<HostedInstanceView>, ProviderError> {
        self.backend()
            .hosted_instances()
            .await
            .map_err(|e| provider_error("list_instances", e))
    }

    async fn named(
        &self,
        operation: &str,
        instance: &str,
    ) -> Result<HostedInstanceView, ProviderError> {
        match self.view(instance).await? {
            Some(view) if view.named.is_some() => Ok(view),
            _ => Err(not_found(operation, instance)),
        }
    }
}

#[async_trait::async_trait]
impl ProviderAdmin for BasaltProvider {
    async fn list_instances(&self) -> Result<Vec<String>, ProviderError> {
        Ok(self
            .views()
            .await?
            .into_iter()
            .map(|v| v.instance.to_string())
            .collect())
    }

    async fn list_instances_by_status(&self, wanted: &str) -> Result<Vec<String>, ProviderError> {
        Ok(self
            .views()
            .await?
            .into_iter()
            .filter(|v| status(v) == Some(wanted))
            .map(|v| v.instance.to_string())
            .collect())
    }

    async fn list_executions(&self, instance: &str) -> Result<Vec<u64>, ProviderError> {
        Ok(self
            .view(instance)
            .await?
            .map(|v| v.executions.iter().map(|e| e.execution_id).collect())
            .unwrap_or_default())
    }

    async fn read_history_with_execution_id(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        duroxide::providers::Provider::read_with_execution(self, instance, execution_id).await
    }

    async fn read_history(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        duroxide::providers::Provider::read(self, instance).await
    }

    async fn latest_execution_id(&self, instance: &str) -> Result<u64, ProviderError> {
        self.latest(instance).await
    }

    async fn get_instance_info(&self, instance: &str) -> Result<InstanceInfo, ProviderError> {
        let view = self.named("get_instance_info", instance).await?;
        let current = view
            .executions
            .iter()
            .find(|e| e.execution_id == view.current_execution);
        let (name, version) = view.named.clone().unwrap_or_default();
        Ok(InstanceInfo {
            instance_id: instance.to_owned(),
            orchestration_name: name,
            orchestration_version: version,
            current_execution_id: view.current_execution,
            status: current.map_or_else(|| "Unknown".to_owned(), |e| e.status.clone()),
            output: current.and_then(|e| e.output.clone()),
            created_at: view.created_ms,
            updated_at: view.updated_ms,
            parent_instance_id: view.parent.map(|p| p.to_string()),
        })
    }

    async fn get_execution_info(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<ExecutionInfo, ProviderError> {
        let operation = "get_execution_info";
        let view = self
            .view(instance)
            .await?
            .ok_or_else(|| not_found(operation, instance))?;
        let execution = view
            .executions
            .iter()
            .find(|e| e.execution_id == execution_id)
            .ok_or_else(|| {
                ProviderError::permanent(
                    operation,
                    format!("execution {execution_id} of instance {instance} not found"),
                )
            })?;
        Ok(ExecutionInfo {
            execution_id,
            status: execution.status.clone(),
            output: execution.output.clone(),
            started_at: execution.started_ms,
            completed_at: execution.completed_ms,
            event_count: usize::try_from(execution.event_count).unwrap_or(usize::MAX),
        })
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        let views = self.views().await?;
        let count =
            |wanted: &str| views.iter().filter(|v| status(v) == Some(wanted)).count() as u64;
        Ok(SystemMetrics {
            total_instances: views.len() as u64,
            total_executions: views.iter().map(|v| v.executions.len() as u64).sum(),
            running_instances: count("Running"),
            completed_instances: count("Completed"),
            failed_instances: count("Failed"),
            total_events: views
                .iter()
                .flat_map(|v| v.executions.iter())
                .map(|e| e.event_count)
                .sum(),
        })
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        let (orchestrator, worker) = self
            .backend()
            .hosted_queue_depths()
            .await
            .map_err(|e| provider_error("get_queue_depths", e))?;
        Ok(QueueDepths {
            orchestrator_queue: usize::try_from(orchestrator).unwrap_or(usize::MAX),
            worker_queue: usize::try_from(worker).unwrap_or(usize::MAX),
            timer_queue: 0,
        })
    }

    async fn list_children(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        Ok(self
            .views()
            .await?
            .into_iter()
            .filter(|v| v.parent.as_ref().is_some_and(|p| p.as_str() == instance_id))
            .map(|v| v.instance.to_string())
            .collect())
    }

    async fn get_parent_id(&self, instance_id: &str) -> Result<Option<String>, ProviderError> {
        let view = self.named("get_parent_id", instance_id).await?;
        Ok(view.parent.map(|p| p.to_string()))
    }

    async fn delete_instances_atomic(
        &self,
        ids: &[String],
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        let operation = "delete_instances_atomic";
        if ids.is_empty() {
            return Ok(DeleteInstanceResult::default());
        }
        let views = self.views().await?;
        if !force {
            for id in ids {
                if views
                    .iter()
                    .any(|v| v.instance.as_str() == id && status(v) == Some("Running"))
                {
                    return Err(ProviderError::permanent(
                        operation,
                        format!("instance {id} is running; delete it with force"),
                    ));
                }
            }
        }
        if let Some(orphan) = views.iter().find(|v| {
            v.parent
                .as_ref()
                .is_some_and(|p| ids.iter().any(|id| id == p.as_str()))
                && !ids.iter().any(|id| id == v.instance.as_str())
        }) {
            return Err(ProviderError::permanent(
                operation,
                format!(
                    "deleting these would orphan child {}: delete the whole tree",
                    orphan.instance
                ),
            ));
        }
        let mut result = DeleteInstanceResult::default();
        for id in ids {
            let Ok(instance) = instance_id(id) else {
                continue;
            };
            match self.backend().hosted_delete(&instance).await {
                Ok(removed) => {
                    result.instances_deleted += 1;
                    result.executions_deleted += removed.executions;
                    result.events_deleted += removed.events;
                    result.queue_messages_deleted += removed.messages;
                }
                Err(e) if e.kind() == basalt_runtime::ErrorKind::NotFound => {}
                Err(e) => return Err(provider_error(operation, e)),
            }
        }
        Ok(result)
    }

    async fn delete_instance_bulk(
        &self,
        filter: InstanceFilter,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        if filter.instance_ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(DeleteInstanceResult::default());
        }
        let limit = filter.limit.unwrap_or(1000) as usize;
        let views = self.views().await?;
        let roots: Vec<String> = views
            .iter()
            .filter(|v| v.parent.is_none())
            .filter(|v| status(v).is_some_and(|s| TERMINAL.contains(&s)))
            .filter(|v| selected(&filter, v))
            .take(limit)
            .map(|v| v.instance.to_string())
            .collect();
        let mut total = DeleteInstanceResult::default();
        for root in roots {
            let tree = self.get_instance_tree(&root).await?;
            let deleted = self.delete_instances_atomic(&tree.all_ids, true).await?;
            total.instances_deleted += deleted.instances_deleted;
            total.executions_deleted += deleted.executions_deleted;
            total.events_deleted += deleted.events_deleted;
            total.queue_messages_deleted += deleted.queue_messages_deleted;
        }
        Ok(total)
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let operation = "prune_executions";
        let id = crate::convert::instance_id(instance_id)
            .map_err(|_| not_found(operation, instance_id))?;
        let removed = self
            .backend()
            .hosted_prune(
                &id,
                options.keep_last.unwrap_or(0),
                options.completed_before,
            )
            .await
            .map_err(|e| match e.kind() {
                basalt_runtime::ErrorKind::NotFound => not_found(operation, instance_id),
                _ => provider_error(operation, e),
            })?;
        Ok(PruneResult {
            instances_processed: 1,
            executions_deleted: removed.executions,
            events_deleted: removed.events,
        })
    }

    async fn prune_executions_bulk(
        &self,
        filter: InstanceFilter,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        if filter.instance_ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(PruneResult::default());
        }
        let limit = filter.limit.unwrap_or(1000) as usize;
        let views = self.views().await?;
        let mut total = PruneResult::default();
        for view in views.iter().filter(|v| selected(&filter, v)).take(limit) {
            let pruned = self
                .prune_executions(view.instance.as_str(), options.clone())
                .await?;
            total.instances_processed += pruned.instances_processed;
            total.executions_deleted += pruned.executions_deleted;
            total.events_deleted += pruned.events_deleted;
        }
        Ok(total)
    }
}
