//! A pool's deletion. Every pool carries [`TERMINATION_FINALIZER`]; once deleted, with `deletionPolicy: Delete`
//! (the default), each pass:
//!
//! 1. **Members**: the instances of the pool's node group — none if an older pool owns the group
//!    (`NodeGroupInUse`) or the provider has no such group.
//! 2. **Drain** each member with a Node ([`drain`](super::drain)): tainted, pods evicted through the Eviction API
//!    (`Draining` once; `FailedDraining` Warnings while a PodDisruptionBudget blocks).
//! 3. **Remove** each drained member: the Node deleted (UID precondition), the instance terminated
//!    (`Terminated`); members without a Node are terminated at once.
//! 4. **Release**: with no member left the finalizer is removed and the pool goes; else the pool is looked at
//!    again after the poll interval.
//!
//! With `deletionPolicy: Orphan` the finalizer is removed at once and nodes and instances stay.
//!
//! Why not kube-runtime's `finalizer` helper: it removes the finalizer whenever the cleanup returns `Ok`, so a drain
//! that takes several passes would have to report "still draining" as an error, which the error policy turns into
//! a `NodePoolSyncFailed` Warning and backoff.

use std::time::Duration;

use cloudprovider_api::{CloudInstanceState, NodeGroups, Unsupported};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::crd::{DeletionPolicy, NodePool, POOL_LABEL, TERMINATION_FINALIZER};
use super::lifecycle::Member;
use super::reconcile::{delete_instance, patch_params};
use super::{PoolReconciler, reasons, status};
use crate::runtime::ReconcileError;

/// Whether the pool carries the termination finalizer.
pub(super) fn has_finalizer(pool: &NodePool) -> bool {
    pool.finalizers().iter().any(|f| f == TERMINATION_FINALIZER)
}

impl PoolReconciler {
    /// Adds [`TERMINATION_FINALIZER`] (guarded by the pool's `resourceVersion`, as the list is replaced whole).
    pub(super) async fn add_finalizer(&self, pool: &NodePool) -> Result<(), ReconcileError> {
        let mut finalizers = pool.finalizers().to_vec();
        finalizers.push(TERMINATION_FINALIZER.to_owned());
        self.set_finalizers(pool, finalizers, "add the termination finalizer")
            .await
    }

    /// Steps 1–4 of the module docs, for a pool with a deletion timestamp.
    pub(super) async fn terminate(&self, pool: &NodePool) -> Result<Action, ReconcileError> {
        let name = pool.name_any();
        if !has_finalizer(pool) {
            return Ok(Action::await_change());
        }
        if pool.spec.deletion_policy == DeletionPolicy::Orphan {
            info!(pool = %name, "pool deleted; its nodes are orphaned (deletionPolicy: Orphan)");
            return self.release(pool).await;
        }
        let groups = self.provider.node_groups().unwrap_or(&Unsupported);
        let members = self.deleted_pool_members(pool, groups).await?;
        let mut left = 0;
        for member in &members {
            if !self.remove_member(pool, groups, member).await? {
                left += 1;
            }
        }
        if left == 0 {
            return self.release(pool).await;
        }
        Ok(Action::requeue(
            self.config.poll_interval.max(Duration::from_millis(100)),
        ))
    }

    /// Step 1: the instances this pool answers for.
    async fn deleted_pool_members(
        &self,
        pool: &NodePool,
        groups: &dyn NodeGroups,
    ) -> Result<Vec<Member>, ReconcileError> {
        if self.group_owner(pool).is_some() {
            return Ok(Vec::new());
        }
        let mut live = Vec::new();
        for group in pool.spec.group_ids() {
            let instances = match groups.instances(group).await {
                Ok(instances) => instances,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(ReconcileError::cloud("NodeGroupInstances", e)),
            };
            live.extend(
                instances
                    .into_iter()
                    .filter(|i| i.state != CloudInstanceState::Deleting)
                    .map(|i| (group.to_owned(), i)),
            );
        }
        Ok(self.members(pool, &live, status::now()))
    }

    /// Steps 2 and 3 for one member; true once it is gone.
    async fn remove_member(
        &self,
        pool: &NodePool,
        groups: &dyn NodeGroups,
        member: &Member,
    ) -> Result<bool, ReconcileError> {
        let pool_ref = pool.object_ref(&());
        if let Some(node) = member.node.as_deref() {
            // A Node another pool labelled is not this pool's to drain (it cannot happen while one pool owns the
            // group; kept as a guard).
            let other = node
                .labels()
                .get(POOL_LABEL)
                .is_some_and(|p| *p != pool.name_any());
            if other {
                return Ok(true);
            }
            let first = self.with_memory(&pool.name_any(), |m| {
                m.draining.insert(member.provider_id.clone())
            });
            if first {
                let note = format!(
                    "draining node {} (instance {}): the pool is being deleted",
                    node.name_any(),
                    member.provider_id
                );
                self.events
                    .normal(&pool_ref, reasons::DRAINING, note.clone());
                self.events
                    .normal(&node.object_ref(&()), reasons::DRAINING, note);
            }
            if !self.drain_and_delete(pool, node).await? {
                return Ok(false);
            }
        }
        self.terminate_instance(pool, groups, member, member.node.as_deref())
            .await?;
        Ok(true)
    }

    /// Step 3's cloud half: the instance terminated, counted and announced.
    async fn terminate_instance(
        &self,
        pool: &NodePool,
        groups: &dyn NodeGroups,
        member: &Member,
        node: Option<&Node>,
    ) -> Result<(), ReconcileError> {
        delete_instance(groups, member).await?;
        let name = pool.name_any();
        let node_name = node.map_or_else(|| "(none)".to_owned(), ResourceExt::name_any);
        info!(pool = %name, node = %node_name, provider_id = %member.provider_id, "removed node of deleted pool");
        self.metrics.decision(&name, "pool_deletion", 1);
        self.events.normal(
            &pool.object_ref(&()),
            reasons::TERMINATED,
            format!(
                "removed node {node_name} and terminated instance {}: the pool is being deleted",
                member.provider_id
            ),
        );
        Ok(())
    }

    /// Step 4: the finalizer removed, so the pool goes.
    async fn release(&self, pool: &NodePool) -> Result<Action, ReconcileError> {
        let finalizers: Vec<String> = pool
            .finalizers()
            .iter()
            .filter(|f| *f != TERMINATION_FINALIZER)
            .cloned()
            .collect();
        self.set_finalizers(pool, finalizers, "remove the termination finalizer")
            .await?;
        self.memory.lock().remove(&pool.name_any());
        Ok(Action::await_change())
    }

    async fn set_finalizers(
        &self,
        pool: &NodePool,
        finalizers: Vec<String>,
        what: &'static str,
    ) -> Result<(), ReconcileError> {
        let patch = json!({
            "metadata": {
                "resourceVersion": pool.metadata.resource_version,
                "finalizers": finalizers,
            }
        });
        let api: Api<NodePool> = Api::all(self.client.clone());
        match api
            .patch(&pool.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or changed meanwhile: the next event brings the new state.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(e) => Err(ReconcileError::kube(what, e)),
        }
    }
}
