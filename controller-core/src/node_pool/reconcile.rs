//! The writing steps of a pool's reconcile (register, launch, remove, status) and the reconciler's memory; the
//! order of the steps is in [`sync`](super::sync).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{CloudInstance, NodeGroups, node_provider_id};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::crd::{NodePool, POOL_LABEL, PoolNodeStatus, ScalingDecision};
use super::lifecycle::{
    Failure, Member, Phase, accepts_pods, blocks_removal, elapsed, registration_patch,
};
use super::resources::{Resources, node_allocatable, pod_requests};
use super::scale_up::{NodeShape, fits_shape};
use super::{Batch, CONTROLLER_NAME, PoolReconciler, reasons};
use crate::runtime::{self, ReconcileError};

/// One launch request: `count` instances of node group `group`, for `why`, at `now`.
pub(super) struct Launch<'a> {
    pub(super) group: &'a str,
    pub(super) count: u32,
    pub(super) why: &'a str,
    pub(super) now: Timestamp,
}

/// The earliest time the pool needs another look.
pub(super) struct NextLook(pub(super) Duration);

impl NextLook {
    pub(super) fn at_most(&mut self, d: Duration) {
        self.0 = self.0.min(d.max(Duration::from_millis(100)));
    }
}

pub(super) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER_NAME.to_owned()),
        ..PatchParams::default()
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_conflict())
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

impl PoolReconciler {
    /// Whether the Node and Pod caches have their initial lists (without waiting: a pool is looked at again after
    /// the poll interval).
    pub(super) fn caches_ready(&self) -> bool {
        self.synced.iter().all(runtime::Synced::is_synced)
    }

    pub(super) fn with_memory<T>(
        &self,
        pool: &str,
        f: impl FnOnce(&mut super::PoolMemory) -> T,
    ) -> T {
        let mut memory = self.memory.lock();
        f(memory.entry(pool.to_owned()).or_default())
    }

    /// The groups' instances (each with its group's id) with their Nodes (matched by providerID) and launch times.
    pub(super) fn members(
        &self,
        pool: &NodePool,
        instances: &[(String, CloudInstance)],
        now: Timestamp,
    ) -> Vec<Member> {
        let name = pool.name_any();
        let nodes: BTreeMap<String, Arc<Node>> = self
            .nodes
            .state()
            .into_iter()
            .filter_map(|n| Some((node_provider_id(&n)?.to_owned(), n)))
            .collect();
        let persisted: BTreeMap<&str, Timestamp> = pool
            .status
            .iter()
            .flat_map(|s| s.nodes.iter())
            .map(|n| (n.provider_id.as_str(), n.launched_at.0))
            .collect();
        self.with_memory(&name, |memory| {
            let known = |pid: &String| instances.iter().any(|(_, i)| &i.provider_id == pid);
            memory.launched_at.retain(|pid, _| known(pid));
            memory.phases.retain(|pid, _| known(pid));
            instances
                .iter()
                .map(|(group, i)| {
                    let launched_at = *memory
                        .launched_at
                        .entry(i.provider_id.clone())
                        .or_insert_with(|| {
                            persisted
                                .get(i.provider_id.as_str())
                                .copied()
                                .unwrap_or(now)
                        });
                    Member {
                        provider_id: i.provider_id.clone(),
                        group: group.clone(),
                        startup_taints: pool.spec.startup_taints.clone(),
                        state: i.state,
                        error: i.error.clone(),
                        node: nodes.get(&i.provider_id).cloned(),
                        launched_at,
                    }
                })
                .collect()
        })
    }

    /// Whether a pending pod that fits this pool counts for it: not if a pool before it (higher `weight`, then
    /// earlier by name) fits it too, unless that pool left the pod out of its last plan (at its `maxNodes` or
    /// `limits`).
    pub(super) fn counts_for(&self, pool: &NodePool, pod: &Pod) -> bool {
        let rank = |p: &NodePool, name: &str| (std::cmp::Reverse(p.spec.weight()), name.to_owned());
        let name = pool.name_any();
        let mine = rank(pool, &name);
        let key = pod_key(pod);
        let memory = self.memory.lock();
        !memory.iter().any(|(other, m)| {
            other != &name
                && self
                    .pools
                    .get(&ObjectRef::new(other))
                    .is_some_and(|p| rank(&p, other) < mine)
                && !m.left_out.contains(&key)
                && m.shapes.iter().any(|s| fits_shape(pod, s).is_ok())
        })
    }

    /// `None` when the batch of pending pods is ready to launch for, else how long to wait.
    pub(super) fn batch_wait(&self, pool: &str, pods: BTreeSet<String>) -> Option<Duration> {
        let (idle, max) = (self.config.batch_idle, self.config.batch_max);
        self.with_memory(pool, |m| {
            let now = tokio::time::Instant::now();
            let batch = m.batch.get_or_insert_with(|| Batch {
                pods: BTreeSet::new(),
                first_seen: now,
                last_change: now,
            });
            if batch.pods != pods {
                batch.pods = pods;
                batch.last_change = now;
            }
            let idle_left = idle.saturating_sub(batch.last_change.elapsed());
            let max_left = max.saturating_sub(batch.first_seen.elapsed());
            if idle_left.is_zero() || max_left.is_zero() {
                m.batch = None;
                None
            } else {
                Some(idle_left.min(max_left))
            }
        })
    }

    pub(super) async fn write_status(
        &self,
        pool: &NodePool,
        status: super::NodePoolStatus,
    ) -> Result<(), ReconcileError> {
        if pool.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<NodePool> = Api::all(self.client.clone());
        let patch = status_patch(pool.status.as_ref(), &status);
        api.patch_status(&pool.name_any(), &patch_params(), &Patch::Merge(patch))
            .await
            .map_err(|e| ReconcileError::kube("patch NodePool status", e))?;
        Ok(())
    }

    /// Gives a registered Node the pool's labels and taints. A conflict is left to the next reconcile (the Node's
    /// change triggers one).
    pub(super) async fn register(
        &self,
        pool: &NodePool,
        member: &Member,
        node: &Node,
    ) -> Result<(), ReconcileError> {
        let Some(patch) = registration_patch(node, &pool.name_any(), &pool.spec) else {
            return Ok(());
        };
        // The same patch later adds the initialized label: only the first write, which labels the Node for the
        // pool, is its registration.
        let first = node.labels().get(POOL_LABEL) != Some(&pool.name_any());
        let nodes: Api<Node> = Api::all(self.client.clone());
        match nodes
            .patch(&node.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) if !first => Ok(()),
            Ok(_) => {
                info!(node = node.name_any(), provider_id = %member.provider_id, "node registered");
                self.events.normal(
                    &pool.object_ref(&()),
                    reasons::REGISTERED,
                    format!(
                        "Node {} registered for instance {}; pool labels and taints applied",
                        node.name_any(),
                        member.provider_id
                    ),
                );
                Ok(())
            }
            Err(e) if is_conflict(&e) || is_not_found(&e) => {
                debug!(node = node.name_any(), error = %e, "registration patch raced; retrying on the next change");
                Ok(())
            }
            Err(e) => Err(ReconcileError::kube("patch Node", e)),
        }
    }

    /// Announces a member becoming initialized and Ready (once), with its launch-to-ready time.
    pub(super) async fn announce(&self, pool: &NodePool, member: &Member, now: Timestamp) {
        let name = pool.name_any();
        let phase = member.phase();
        let previous = self.with_memory(&name, |m| {
            m.phases.insert(member.provider_id.clone(), phase)
        });
        // A node already Ready when first seen (controller restart) is not news.
        if phase == Phase::Ready && matches!(previous, Some(Phase::Launching | Phase::Registered)) {
            let seconds = elapsed(member.launched_at, now).as_secs_f64();
            self.metrics
                .launch_to_ready
                .get_or_create(&super::PoolLabel { pool: name })
                .observe(seconds);
            let node = member
                .node
                .as_ref()
                .map(|n| n.name_any())
                .unwrap_or_default();
            self.events.normal(
                &pool.object_ref(&()),
                reasons::INITIALIZED,
                format!("Node {node} is initialized and Ready, {seconds:.0}s after launch"),
            );
        }
    }

    /// Launches `launch.count` instances of `launch.group`; returns the new provider IDs it could see.
    pub(super) async fn scale_up(
        &self,
        pool: &NodePool,
        groups: &dyn NodeGroups,
        before: &[(String, CloudInstance)],
        launch: Launch<'_>,
    ) -> Result<Vec<String>, ReconcileError> {
        let Launch {
            group,
            count,
            why,
            now,
        } = launch;
        let name = pool.name_any();
        if let Err(e) = groups.increase_size(group, count).await {
            self.metrics.decision(&name, "scale_up_failed", count);
            self.events.warning(
                &pool.object_ref(&()),
                reasons::FAILED_SCALE_UP,
                format!("launching {count} node(s) of node group {group} failed: {e}"),
            );
            return Err(ReconcileError::cloud("IncreaseSize", e));
        }
        self.metrics.decision(&name, "scale_up", count);
        info!(count, group, why, "launched nodes");
        self.events.normal(
            &pool.object_ref(&()),
            reasons::TRIGGERED_SCALE_UP,
            format!("launching {count} node(s) of node group {group}: {why}"),
        );
        // The new instances' launch time is now; one not listed yet is timed from when it is first seen.
        let after = groups.instances(group).await.unwrap_or_default();
        let launched: Vec<String> = after
            .into_iter()
            .map(|i| i.provider_id)
            .filter(|pid| !before.iter().any(|(_, b)| &b.provider_id == pid))
            .collect();
        self.with_memory(&name, |m| {
            for pid in &launched {
                m.launched_at.insert(pid.clone(), now);
                m.phases.insert(pid.clone(), Phase::Launching);
            }
        });
        Ok(launched)
    }

    /// Deletes a failed or timed-out instance and its Node. Returns whether the instance is gone.
    pub(super) async fn remove_failed(
        &self,
        pool: &NodePool,
        groups: &dyn NodeGroups,
        member: &Member,
        failure: &Failure,
    ) -> bool {
        let name = pool.name_any();
        let spec = &pool.spec;
        if let Some(node) = &member.node
            && let Err(e) = self.delete_node(node).await
        {
            warn!(node = node.name_any(), error = %e, "could not delete the Node of a failed instance");
            return false;
        }
        if let Err(e) = groups
            .delete_instances(&member.group, std::slice::from_ref(&member.provider_id))
            .await
            && !e.is_not_found()
        {
            warn!(provider_id = %member.provider_id, error = %e, "could not delete a failed instance");
            self.events.warning(
                &pool.object_ref(&()),
                failure.reason(),
                format!("could not delete instance {}: {e}", member.provider_id),
            );
            return false;
        }
        let note = match failure {
            Failure::LaunchFailed(why) => {
                format!(
                    "instance {} failed to launch ({why}); deleted it",
                    member.provider_id
                )
            }
            Failure::LaunchTimeout => format!(
                "instance {} still creating after spec.launchTimeoutSeconds {}; deleted it",
                member.provider_id, spec.launch_timeout_seconds
            ),
            Failure::RegistrationTimeout => format!(
                "no Node registered for instance {} within spec.registrationTimeoutSeconds {}; deleted it",
                member.provider_id, spec.registration_timeout_seconds
            ),
            Failure::InitializationTimeout => format!(
                "Node {} (instance {}) not initialized and Ready within spec.initializationTimeoutSeconds {}; \
                 deleted it and its instance",
                member
                    .node
                    .as_ref()
                    .map(|n| n.name_any())
                    .unwrap_or_default(),
                member.provider_id,
                spec.initialization_timeout_seconds
            ),
        };
        warn!(provider_id = %member.provider_id, reason = failure.reason(), "removed instance");
        self.metrics.decision(&name, failure.label(), 1);
        self.events
            .warning(&pool.object_ref(&()), failure.reason(), note);
        self.with_memory(&name, |m| m.launched_at.remove(&member.provider_id));
        true
    }

    /// Cordons an empty node, checks it is still empty, deletes it and terminates its instance.
    pub(super) async fn remove_empty(
        &self,
        pool: &NodePool,
        groups: &dyn NodeGroups,
        member: &Member,
        node: &Node,
        waited: Duration,
    ) -> Result<bool, ReconcileError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node_name = node.name_any();
        let cordon = |on: bool| json!({ "spec": { "unschedulable": on } });
        nodes
            .patch(&node_name, &patch_params(), &Patch::Merge(cordon(true)))
            .await
            .map_err(|e| ReconcileError::kube("cordon Node", e))?;
        // A pod bound between our snapshot and the cordon keeps the node.
        let pods: Api<Pod> = Api::all(self.client.clone());
        let bound = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
            .await
            .map_err(|e| ReconcileError::kube("list Pods", e))?;
        if bound.items.iter().any(blocks_removal) {
            nodes
                .patch(&node_name, &patch_params(), &Patch::Merge(cordon(false)))
                .await
                .map_err(|e| ReconcileError::kube("uncordon Node", e))?;
            return Ok(false);
        }
        self.delete_node(node)
            .await
            .map_err(|e| ReconcileError::kube("delete Node", e))?;
        // Should this fail, the instance has no Node any more and the registration timeout collects it.
        delete_instance(groups, member).await?;
        let note = format!(
            "removed empty node {node_name} (instance {}) after {}s",
            member.provider_id,
            waited.as_secs()
        );
        info!(node = node_name, provider_id = %member.provider_id, "removed empty node");
        self.metrics.decision(&pool.name_any(), "scale_down", 1);
        self.events
            .normal(&pool.object_ref(&()), reasons::SCALE_DOWN, note.clone());
        self.events
            .normal(&node.object_ref(&()), reasons::SCALE_DOWN, note);
        Ok(true)
    }

    pub(super) async fn delete_node(&self, node: &Node) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: node.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match nodes.delete(&node.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Terminates a member's instance; one already gone is fine.
pub(super) async fn delete_instance(
    groups: &dyn NodeGroups,
    member: &Member,
) -> Result<(), ReconcileError> {
    match groups
        .delete_instances(&member.group, std::slice::from_ref(&member.provider_id))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(ReconcileError::cloud("DeleteInstances", e)),
    }
}

/// What is left on a member for pending pods: its Node's allocatable (the template's until it registers) minus the
/// requests of pods bound to it.
pub(super) fn free_room(
    member: &Member,
    shape: &NodeShape,
    by_node: &BTreeMap<&str, Vec<&Pod>>,
) -> Resources {
    let Some(node) = &member.node else {
        return shape.allocatable.clone();
    };
    if !accepts_pods(node, &shape.expected_taints()) {
        return Resources::default();
    }
    let mut room = node_allocatable(node);
    if room == Resources::default() {
        room = shape.allocatable.clone();
    }
    let name = node.name_any();
    for pod in by_node.get(name.as_str()).into_iter().flatten() {
        if blocks_removal(pod) {
            room.sub(&pod_requests(pod));
        }
    }
    room
}

/// The merge patch from `old` to `new`: a merge patch keeps map keys it does not name, so resources no longer
/// there are set to `null`.
fn status_patch(
    old: Option<&super::NodePoolStatus>,
    new: &super::NodePoolStatus,
) -> serde_json::Value {
    let mut patch = json!({ "status": new });
    let gone: serde_json::Map<String, serde_json::Value> = old
        .into_iter()
        .flat_map(|s| s.resources.keys())
        .filter(|k| !new.resources.contains_key(*k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    if !gone.is_empty() {
        let mut resources = serde_json::Map::new();
        resources.extend(gone);
        for (k, v) in &new.resources {
            resources.insert(k.clone(), json!(v));
        }
        patch["status"]["resources"] = serde_json::Value::Object(resources);
    }
    patch
}

pub(super) fn pod_key(pod: &Pod) -> String {
    pod.uid()
        .unwrap_or_else(|| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()))
}

pub(super) fn entry(member: &Member, phase: Phase) -> PoolNodeStatus {
    PoolNodeStatus {
        provider_id: member.provider_id.clone(),
        node_name: member.node.as_ref().map(|n| n.name_any()),
        phase: phase.as_str().to_owned(),
        launched_at: Time(member.launched_at),
        node_group: Some(member.group.clone()),
    }
}

pub(super) fn decision(nodes: u32, message: String, now: Timestamp) -> ScalingDecision {
    ScalingDecision {
        time: Time(now),
        nodes,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn resources_no_longer_there_are_nulled_in_the_status_patch() {
        let mut old = super::super::NodePoolStatus::default();
        old.resources.insert("cpu".into(), Quantity("2".into()));
        old.resources
            .insert("memory".into(), Quantity("4Gi".into()));
        let mut new = super::super::NodePoolStatus::default();
        assert_eq!(
            status_patch(Some(&old), &new)["status"]["resources"],
            json!({"cpu": null, "memory": null})
        );
        new.resources.insert("cpu".into(), Quantity("4".into()));
        assert_eq!(
            status_patch(Some(&old), &new)["status"]["resources"],
            json!({"cpu": "4", "memory": null})
        );
        assert_eq!(
            status_patch(None, &new)["status"]["resources"],
            json!({"cpu": "4"})
        );
    }
}
