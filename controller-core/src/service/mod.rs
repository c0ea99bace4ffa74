//! The service controller (upstream `service-lb-controller`): cloud load balancers for Services of type
//! LoadBalancer.
//!
//! * Serves Services of type LoadBalancer whose `spec.loadBalancerClass` is unset or one of
//!   [`ServiceConfig::load_balancer_classes`].
//! * Puts the [`FINALIZER`] on before asking the provider for anything, ensures the load balancer with the
//!   target Nodes, and patches `status.loadBalancer` only when it changed.
//! * Cleans up (deletes the load balancer, empties the status, removes the finalizer) when a Service carrying
//!   the finalizer is deleted or stops being one we serve.
//! * Target Nodes follow upstream exactly ([`is_load_balancer_target`]); readiness is not a filter.
//! * A change of the target node set updates the hosts of the affected load balancers through the controller's
//!   own queue, `workers` at a time (default 1, upstream's `--concurrent-service-syncs`; a Service is never synced
//!   twice at a time): the set is recomputed on every Node change, and when it differs only the load-balancer
//!   Services whose recorded hosts are stale are re-queued (kube-runtime's `reconcile_on`; ClusterIP and NodePort
//!   Services never are). Each reconcile compares what it last applied (in memory) and calls
//!   `update_load_balancer` only if the hosts differ, or `ensure_load_balancer` if the Service itself changed (see
//!   [`ServiceConfig`] for the resync periods).
//! * The provider answering "implemented elsewhere" leaves the Service alone: no status, no event after the
//!   first `EnsuringLoadBalancer`, and our finalizer is taken off again if no load balancer of ours exists.

mod change;
mod metrics;
mod reconcile;
mod target_nodes;

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::Capability;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

pub use metrics::ServiceMetrics;
pub use target_nodes::{
    LABEL_EXCLUDE_FROM_LOAD_BALANCERS, TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER,
    is_load_balancer_target,
};

use crate::runtime::{self, CancellationToken, RunOptions, object_key};
use crate::{ControllerContext, NodeSource};
use reconcile::{ServiceReconciler, Shared};
use target_nodes::{TargetSet, TargetTracker, track_target_nodes};

/// The controller's name, as upstream names it.
pub const CONTROLLER_NAME: &str = "service-lb-controller";

/// The `name` of its `workqueue_*` metrics, as upstream's queue is called.
pub(crate) const QUEUE_NAME: &str = "service";

/// Finalizer that keeps a Service until its load balancer is deleted.
pub const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

/// Normal Event: about to ensure the load balancer.
pub const EVENT_ENSURING: &str = "EnsuringLoadBalancer";
/// Normal Event: the load balancer was ensured.
pub const EVENT_ENSURED: &str = "EnsuredLoadBalancer";
/// Normal Event: the hosts of the load balancer were updated after a node-set change.
pub const EVENT_UPDATED: &str = "UpdatedLoadBalancer";
/// Normal Event: about to delete the load balancer.
pub const EVENT_DELETING: &str = "DeletingLoadBalancer";
/// Normal Event: the load balancer was deleted.
pub const EVENT_DELETED: &str = "DeletedLoadBalancer";
/// Warning Event: ensuring the load balancer (or recording it on the Service) failed.
pub const EVENT_SYNC_FAILED: &str = "SyncLoadBalancerFailed";
/// Warning Event: deleting the load balancer (or releasing the Service) failed.
pub const EVENT_DELETE_FAILED: &str = "DeleteLoadBalancerFailed";
/// Warning Event: updating the hosts of the load balancer failed.
pub const EVENT_UPDATE_FAILED: &str = "UpdateLoadBalancerFailed";
/// Warning Event: there are no target Nodes for the load balancer.
pub const EVENT_NO_NODES: &str = "UnAvailableLoadBalancer";

/// How the service controller runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Services synced at once (upstream's `--concurrent-service-syncs`, default 1). Node-set changes fan out
    /// through the same queue, so this is also how many load balancers are updated in parallel.
    pub workers: u16,
    /// `spec.loadBalancerClass` values served besides unset.
    pub load_balancer_classes: Vec<String>,
    /// How often a synced Service is reconciled again (default 30 s, upstream's service resync). Cheap: nothing
    /// reaches the cloud unless the Service or the target nodes changed since the last sync.
    pub resync_period: Duration,
    /// Metrics.
    pub metrics: ServiceMetrics,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            load_balancer_classes: Vec::new(),
            resync_period: Duration::from_secs(30),
            metrics: ServiceMetrics::default(),
        }
    }
}

crate::manager::node_cache_controller! {
    /// The service controller as a [`ManagedController`](crate::manager::ManagedController): `service` (alias
    /// `service-lb-controller`, `service-controller`), needs loadbalancers.
    ServiceController(ServiceConfig) = "service", aliases ["service-lb-controller", "service-controller"], needs Capability::LoadBalancers, runs run
}

/// Runs the service controller until `shutdown` fires.
async fn run(
    ctx: ControllerContext,
    nodes: NodeSource,
    config: ServiceConfig,
    shutdown: CancellationToken,
) {
    // Never sync against a partly listed Node cache: the load balancers would lose backends.
    let mut synced = nodes.synced.clone();
    tokio::select! {
        ready = synced.wait() => {
            if !ready {
                warn!(controller = CONTROLLER_NAME, "the Node cache stopped before it was ready; not starting");
                shutdown.cancelled_owned().await;
                return;
            }
        }
        () = shutdown.clone().cancelled_owned() => return,
    }

    let shared = Arc::new(Shared::new(config.metrics));
    let mut tracker = TargetTracker::default();
    if let Some(set) = tracker.recompute(nodes.store.state()) {
        shared.publish(set);
    }

    // A node-set change re-queues only the load balancers whose hosts are stale (kube-runtime's `reconcile_on`);
    // the queue deduplicates a Service triggered again before its reconcile.
    let (trigger, triggers) = mpsc::unbounded::<ObjectRef<Service>>();
    let (reader, writer) = reflector::store();
    let watched = runtime::watch_objects(
        Api::<Service>::all(ctx.client.clone()),
        watcher::Config::default(),
        Arc::default(),
    )
    .modify(strip_unread_fields)
    .reflect(writer)
    .applied_objects();
    let queue = ctx.metrics.work_queue(QUEUE_NAME);
    let watched = queue.track(watched, |svc| svc.as_ref().ok().map(object_key));
    let triggers = queue.track(triggers, |svc| {
        Some(match &svc.namespace {
            Some(ns) => format!("{ns}/{}", svc.name),
            None => svc.name.clone(),
        })
    });
    let controller = Controller::for_stream(watched, reader)
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let services = controller.store();

    let on_change = {
        let shared = Arc::clone(&shared);
        let classes = config.load_balancer_classes.clone();
        move |set: Arc<TargetSet>| {
            let generation = set.generation;
            shared.publish(set);
            // Forget Services deleted without passing through cleanup (e.g. their finalizer was removed by hand).
            if !services.is_empty() {
                shared.synced.retain(|key| {
                    let (ns, name) = key.split_once('/').unwrap_or(("", key));
                    services.get(&ObjectRef::new(name).within(ns)).is_some()
                });
            }
            for svc in stale_load_balancers(&services, &shared, &classes, generation) {
                // The receiver lives as long as the controller; a send after it stopped is moot.
                let _ = trigger.unbounded_send(svc);
            }
        }
    };
    // Only the generation signal is needed (it also moves on deletions, which the change stream does not carry).
    drop(nodes.changes);
    let node_sync = track_target_nodes(
        nodes.generation,
        nodes.store.clone(),
        tracker,
        shutdown.clone(),
        on_change,
    );

    let reconciler = ServiceReconciler {
        ctx: ctx.clone(),
        shared,
        classes: config.load_balancer_classes,
        resync: config.resync_period,
    };
    let options = RunOptions {
        workers: config.workers,
        events: ctx.events.clone(),
        metrics: ctx.metrics.clone(),
    };
    info!(
        controller = CONTROLLER_NAME,
        workers = config.workers,
        "starting"
    );
    futures::join!(runtime::run(controller, reconciler, options), node_sync);
    info!(controller = CONTROLLER_NAME, "stopped");
}

/// The load-balancer Services whose hosts are not generation `hosts`: ensured ones with older hosts, and ones not
/// recorded yet (an ensure in flight may have used the previous set). ClusterIP and NodePort Services, and load
/// balancers already up to date or implemented elsewhere, are not re-queued.
fn stale_load_balancers(
    services: &reflector::Store<Service>,
    shared: &Shared,
    classes: &[String],
    hosts: u64,
) -> Vec<ObjectRef<Service>> {
    services
        .state()
        .iter()
        .filter(|svc| change::is_ours(svc, classes))
        .map(|svc| ObjectRef::from_obj(svc.as_ref()))
        .filter(|svc| {
            let key = format!(
                "{}/{}",
                svc.namespace.as_deref().unwrap_or_default(),
                svc.name
            );
            !shared.synced.hosts_current(&key, hosts)
        })
        .collect()
}

/// The Service cache holds every Service of the cluster, most of them not ours: drop what no reconcile reads. The
/// field-manager bookkeeping and kubectl's copy of the last applied object are often larger than the Service; a
/// Service that is not a load balancer and carries no finalizer of ours is reconciled from its type alone.
fn strip_unread_fields(service: &mut Service) {
    service.metadata.managed_fields = None;
    if let Some(annotations) = service.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
    let type_ = service.spec.as_ref().and_then(|spec| spec.type_.clone());
    if type_.as_deref() != Some(change::TYPE_LOAD_BALANCER) && !change::has_finalizer(service) {
        service.spec = Some(ServiceSpec {
            type_,
            ..ServiceSpec::default()
        });
        service.status = None;
        service.metadata.labels = None;
        service.metadata.annotations = None;
        service.metadata.owner_references = None;
    }
}

/// kubectl's client-side-apply annotation.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Everything this controller decides from a cached Node, for the projection test
/// ([`projection`](crate::runtime::projection)).
#[cfg(test)]
pub(crate) fn node_decisions(node: &k8s_openapi::api::core::v1::Node) -> String {
    format!(
        "{:?}",
        (
            target_nodes::is_load_balancer_target(node),
            target_nodes::host_key(node),
        )
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServicePort;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::api::ObjectMeta;

    use super::*;

    fn service(type_: &str, finalizer: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                annotations: Some(
                    [
                        (LAST_APPLIED_ANNOTATION.to_owned(), "{...}".to_owned()),
                        ("example.com/lb".to_owned(), "internal".to_owned()),
                    ]
                    .into(),
                ),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                finalizers: finalizer.then(|| vec![FINALIZER.to_owned()]),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn load_balancers_keep_what_the_provider_reads() {
        let mut svc = service("LoadBalancer", false);
        strip_unread_fields(&mut svc);
        assert!(svc.metadata.managed_fields.is_none());
        let annotations = svc.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.len(), 1, "{annotations:?}");
        assert!(annotations.contains_key("example.com/lb"));
        assert!(svc.metadata.labels.is_some());
        assert_eq!(svc.spec.and_then(|s| s.ports).map(|p| p.len()), Some(1));
    }

    #[test]
    fn other_services_keep_only_their_type_unless_they_carry_our_finalizer() {
        let mut plain = service("ClusterIP", false);
        strip_unread_fields(&mut plain);
        assert_eq!(plain.metadata.name.as_deref(), Some("web"));
        assert!(plain.metadata.labels.is_none() && plain.metadata.annotations.is_none());
        assert_eq!(
            plain.spec,
            Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                ..ServiceSpec::default()
            })
        );

        // Once a load balancer, now ClusterIP: cleanup still needs the whole object.
        let mut former = service("ClusterIP", true);
        strip_unread_fields(&mut former);
        assert!(
            former
                .metadata
                .annotations
                .is_some_and(|a| a.contains_key("example.com/lb"))
        );
        assert!(former.spec.and_then(|s| s.ports).is_some());
    }
}
