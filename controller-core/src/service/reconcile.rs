//! One Service's reconcile: ensure, update hosts, or clean up its load balancer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudprovider_api::{CloudError, LoadBalancers};
use k8s_openapi::api::core::v1::{LoadBalancerStatus, ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use parking_lot::RwLock;
use serde_json::json;
use tracing::debug;

use super::change::{
    Plan, ServiceFingerprint, SyncedServices, has_finalizer, is_ours, same_status,
};
use super::metrics::{NodeSyncRounds, ServiceMetrics};
use super::target_nodes::TargetSet;
use super::{
    CONTROLLER_NAME, EVENT_DELETE_FAILED, EVENT_DELETED, EVENT_DELETING, EVENT_ENSURED,
    EVENT_ENSURING, EVENT_NO_NODES, EVENT_SYNC_FAILED, EVENT_UPDATE_FAILED, EVENT_UPDATED,
    FINALIZER,
};
use crate::ControllerContext;
use crate::runtime::{ReconcileError, Reconciler};

const OP_ENSURE: &str = "EnsureLoadBalancer";
const OP_UPDATE: &str = "UpdateLoadBalancer";
const OP_DELETE: &str = "EnsureLoadBalancerDeleted";
const OP_ADD_FINALIZER: &str = "add load balancer finalizer";
const OP_PATCH_STATUS: &str = "patch load balancer status";
const OP_RELEASE_FINALIZER: &str = "remove finalizer of a load balancer implemented elsewhere";
const OP_CLEAR_STATUS: &str = "clear load balancer status";
const OP_REMOVE_FINALIZER: &str = "remove load balancer finalizer";

/// State shared by the reconciler and the node-sync loop.
#[derive(Debug, Default)]
pub(super) struct Shared {
    targets: RwLock<Arc<TargetSet>>,
    pub(super) synced: SyncedServices,
    pub(super) rounds: NodeSyncRounds,
    pub(super) metrics: ServiceMetrics,
}

impl Shared {
    pub(super) fn new(metrics: ServiceMetrics) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    pub(super) fn targets(&self) -> Arc<TargetSet> {
        Arc::clone(&self.targets.read())
    }

    /// Publishes a new target set. The round starts first, so that no reconcile can apply the new set before
    /// its Service is counted as pending.
    pub(super) fn publish(&self, set: Arc<TargetSet>) {
        let pending = self.synced.stale_hosts(set.generation);
        self.rounds.start(&self.metrics, set.generation, pending);
        *self.targets.write() = set;
    }
}

/// The service controller's [`Reconciler`].
pub(super) struct ServiceReconciler {
    pub(super) ctx: ControllerContext,
    pub(super) shared: Arc<Shared>,
    pub(super) classes: Vec<String>,
    pub(super) resync: Duration,
}

fn key_of(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

impl Reconciler<Service> for ServiceReconciler {
    fn name(&self) -> &'static str {
        CONTROLLER_NAME
    }

    fn queue_name(&self) -> &'static str {
        super::QUEUE_NAME
    }

    async fn reconcile(&self, svc: Arc<Service>) -> Result<Action, ReconcileError> {
        let key = key_of(&svc);
        let targets = self.shared.targets();
        let result = self.reconcile_with(&svc, &key, &targets).await;
        self.shared
            .rounds
            .settle(&self.shared.metrics, &key, targets.generation);
        result
    }

    fn failure_reason(&self, err: &ReconcileError) -> Option<&'static str> {
        match err {
            ReconcileError::Cloud { op: OP_UPDATE, .. } => Some(EVENT_UPDATE_FAILED),
            ReconcileError::Cloud { op: OP_DELETE, .. } => Some(EVENT_DELETE_FAILED),
            // A conflict only means our copy was stale; the newer version is already queued.
            ReconcileError::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => None,
            ReconcileError::Kube {
                op: OP_CLEAR_STATUS | OP_REMOVE_FINALIZER,
                ..
            } => Some(EVENT_DELETE_FAILED),
            _ => Some(EVENT_SYNC_FAILED),
        }
    }
}

impl ServiceReconciler {
    async fn reconcile_with(
        &self,
        svc: &Service,
        key: &str,
        targets: &TargetSet,
    ) -> Result<Action, ReconcileError> {
        let deleting = svc.metadata.deletion_timestamp.is_some();
        let finalizer = has_finalizer(svc);
        if deleting || !is_ours(svc, &self.classes) {
            self.shared.synced.forget(key);
            // Without our finalizer we never made anything for it (or already cleaned up): leave it alone.
            if finalizer {
                return self.cleanup(svc, deleting).await;
            }
            return Ok(Action::await_change());
        }
        let spec = ServiceFingerprint::of(svc);
        match self
            .shared
            .synced
            .plan(key, &spec, targets.generation, finalizer)
        {
            Plan::UpToDate => Ok(Action::requeue(self.resync)),
            Plan::ImplementedElsewhere => {
                debug!("load balancer implemented elsewhere; leaving the Service alone");
                Ok(Action::requeue(self.resync))
            }
            Plan::UpdateHosts => self.update_hosts(svc, key, targets).await,
            Plan::Ensure => self.ensure(svc, key, spec, targets, finalizer).await,
        }
    }

    fn api(&self, svc: &Service) -> Api<Service> {
        Api::namespaced(
            self.ctx.client.clone(),
            &svc.namespace().unwrap_or_default(),
        )
    }

    async fn ensure(
        &self,
        svc: &Service,
        key: &str,
        spec: ServiceFingerprint,
        targets: &TargetSet,
        finalizer: bool,
    ) -> Result<Action, ReconcileError> {
        let lbs = self.ctx.load_balancers();
        let reference = svc.object_ref(&());
        self.ctx
            .events
            .normal(&reference, EVENT_ENSURING, "Ensuring load balancer");
        // The finalizer goes on before anything exists in the cloud, so a deletion can never leak a load balancer.
        let patched = if finalizer {
            None
        } else {
            Some(self.set_finalizer(svc, true, OP_ADD_FINALIZER).await?)
        };
        self.warn_if_no_nodes(&reference, targets).await;
        self.shared.metrics.loadbalancer_syncs.inc();
        let nodes = targets.nodes();
        match lbs
            .ensure_load_balancer(&self.ctx.cluster_name, svc, nodes)
            .await
        {
            Ok(status) => {
                self.patch_status(svc, Some(&status), OP_PATCH_STATUS)
                    .await?;
                self.shared.synced.ensured(key, spec, targets.generation);
                debug!(hosts = ?targets.names().collect::<Vec<_>>(), "ensured load balancer");
                self.ctx
                    .events
                    .normal(&reference, EVENT_ENSURED, "Ensured load balancer");
                Ok(Action::requeue(self.resync))
            }
            Err(CloudError::ImplementedElsewhere(why)) => {
                debug!(%why, "load balancer implemented elsewhere; leaving the Service alone");
                let current = patched.as_ref().unwrap_or(svc);
                self.release_if_nothing_created(lbs, current).await?;
                self.shared.synced.elsewhere(key, spec);
                Ok(Action::requeue(self.resync))
            }
            Err(e) => {
                self.shared.synced.forget(key);
                Err(ReconcileError::cloud(OP_ENSURE, e))
            }
        }
    }

    /// After "implemented elsewhere": our finalizer would only block deletion, unless an earlier sync of ours
    /// created a load balancer that deletion must still remove.
    async fn release_if_nothing_created(
        &self,
        lbs: &dyn LoadBalancers,
        svc: &Service,
    ) -> Result<(), ReconcileError> {
        if !has_finalizer(svc) {
            return Ok(());
        }
        match lbs.get_load_balancer(&self.ctx.cluster_name, svc).await {
            Ok(None) => {
                self.set_finalizer(svc, false, OP_RELEASE_FINALIZER).await?;
                Ok(())
            }
            Ok(Some(_)) => Ok(()),
            Err(e) => {
                // Keeping the finalizer is the safe side: deletion then asks the provider, which tolerates absence.
                debug!(error = %e, "could not tell whether a load balancer exists; keeping the finalizer");
                Ok(())
            }
        }
    }

    async fn update_hosts(
        &self,
        svc: &Service,
        key: &str,
        targets: &TargetSet,
    ) -> Result<Action, ReconcileError> {
        let lbs = self.ctx.load_balancers();
        let reference = svc.object_ref(&());
        self.warn_if_no_nodes(&reference, targets).await;
        self.shared.metrics.loadbalancer_syncs.inc();
        let nodes = targets.nodes();
        let started = Instant::now();
        let result = lbs
            .update_load_balancer(&self.ctx.cluster_name, svc, nodes)
            .await;
        self.shared
            .metrics
            .update_host_latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.shared.synced.hosts_updated(key, targets.generation);
                debug!(hosts = ?targets.names().collect::<Vec<_>>(), "updated load balancer hosts");
                self.ctx.events.normal(
                    &reference,
                    EVENT_UPDATED,
                    "Updated load balancer with new hosts",
                );
            }
            Err(CloudError::ImplementedElsewhere(why)) => {
                debug!(%why, "hosts of a load balancer implemented elsewhere; nothing to do");
                self.shared.synced.hosts_updated(key, targets.generation);
            }
            Err(e) if e.is_not_found() => {
                // Upstream counts this as success. Forgetting the Service makes the next resync ensure it, which
                // recreates a load balancer removed behind our back.
                debug!(error = %e, "load balancer no longer exists; nothing to update");
                self.shared.synced.forget(key);
            }
            Err(e) => {
                self.shared.metrics.nodesync_errors.inc();
                return Err(ReconcileError::cloud(OP_UPDATE, e));
            }
        }
        Ok(Action::requeue(self.resync))
    }

    async fn cleanup(&self, svc: &Service, deleting: bool) -> Result<Action, ReconcileError> {
        let lbs = self.ctx.load_balancers();
        let reference = svc.object_ref(&());
        self.ctx
            .events
            .normal(&reference, EVENT_DELETING, "Deleting load balancer");
        self.shared.metrics.loadbalancer_syncs.inc();
        lbs.ensure_load_balancer_deleted(&self.ctx.cluster_name, svc)
            .await
            .map_err(|e| ReconcileError::cloud(OP_DELETE, e))?;
        self.ctx
            .events
            .normal(&reference, EVENT_DELETED, "Deleted load balancer");
        // Status before the finalizer: while the finalizer is on, a failed status patch is retried.
        if !deleting {
            self.patch_status(svc, None, OP_CLEAR_STATUS).await?;
        }
        self.set_finalizer(svc, false, OP_REMOVE_FINALIZER).await?;
        Ok(Action::await_change())
    }

    async fn warn_if_no_nodes(&self, reference: &ObjectReference, targets: &TargetSet) {
        if targets.is_empty() {
            self.ctx.events.warning(
                reference,
                EVENT_NO_NODES,
                "There are no available nodes for LoadBalancer",
            );
        }
    }

    /// Adds or removes our finalizer. The resourceVersion in the patch makes it fail (409) rather than overwrite
    /// a finalizer list someone else changed meanwhile.
    async fn set_finalizer(
        &self,
        svc: &Service,
        present: bool,
        op: &'static str,
    ) -> Result<Service, ReconcileError> {
        let mut finalizers: Vec<String> = svc
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        if present {
            finalizers.push(FINALIZER.to_owned());
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": svc.resource_version(),
                "finalizers": finalizers,
            }
        });
        self.api(svc)
            .patch(&svc.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ReconcileError::kube(op, e))
    }

    /// Sets `status.loadBalancer` to `status` (`None` empties it), only when it differs.
    async fn patch_status(
        &self,
        svc: &Service,
        status: Option<&LoadBalancerStatus>,
        op: &'static str,
    ) -> Result<(), ReconcileError> {
        let stored = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref());
        if same_status(stored, status) {
            return Ok(());
        }
        let ingress = status.and_then(|s| s.ingress.as_ref());
        let patch = json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        self.api(svc)
            .patch_status(&svc.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|e| ReconcileError::kube(op, e))?;
        Ok(())
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER_NAME.to_owned()),
        ..PatchParams::default()
    }
}
