//! The wiring every kube-runtime controller shares (cloud-node, service, node-pool, virtual-node pods, and a
//! provider's own): one error policy, Warning Events, metrics and a tracing span per object. The periodic loops
//! (node-lifecycle, route) share [`periodic`](super::periodic) instead, with the same metrics.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info_span, warn};

use super::{
    ErrorClass, EventPublisher, PerObjectBackoff, ReconcileError, RuntimeMetrics, WorkQueue,
};

/// A controller's reconcile logic. The runtime calls [`reconcile`](Self::reconcile) for each changed (or requeued)
/// object; on error it publishes a Warning Event with [`failure_reason`](Self::failure_reason) and requeues per the
/// error's class: throttled → after the cloud's retry-after; transient → per-object exponential backoff; invalid
/// input or permanent → not until the object changes.
pub trait Reconciler<K>: Send + Sync + 'static {
    /// The controller's name, as upstream names it (e.g. `cloud-node-controller`); used in logs and metrics.
    fn name(&self) -> &'static str;

    /// Brings the world in line with `obj`.
    fn reconcile(&self, obj: Arc<K>)
    -> impl Future<Output = Result<Action, ReconcileError>> + Send;

    /// The reason of the Warning Event published about `obj` when reconcile fails with `err`; `None` publishes none.
    fn failure_reason(&self, err: &ReconcileError) -> Option<&'static str>;

    /// The `name` label of the controller's `workqueue_*` metrics: upstream's queue name where there is one
    /// (`Nodes`, `service`), else [`name`](Self::name). Wrap the controller's trigger streams with
    /// `RuntimeMetrics::work_queue(queue_name).track(..)` so depth and queue latency see what waits.
    fn queue_name(&self) -> &'static str {
        self.name()
    }
}

/// What the runtime needs besides the reconciler.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunOptions {
    /// How many objects are reconciled at once (upstream's `--concurrent-*-syncs`).
    pub workers: u16,
    /// Events.
    pub events: EventPublisher,
    /// Metrics.
    pub metrics: RuntimeMetrics,
}

impl RunOptions {
    /// `workers` at once, publishing to `events` and recording in `metrics`.
    pub fn new(workers: u16, events: EventPublisher, metrics: RuntimeMetrics) -> Self {
        Self {
            workers,
            events,
            metrics,
        }
    }
}

struct RunState<R, K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    reconciler: R,
    events: EventPublisher,
    metrics: RuntimeMetrics,
    backoff: PerObjectBackoff,
    queue: WorkQueue,
    /// The controller's cache, to forget the backoff of objects deleted while failing.
    store: Store<K>,
}

/// Drops the backoff of objects no longer in the cache: deleted while failing, they never reach the success that
/// would reset it. Costs one lookup per failing object, and nothing while none fails.
fn forget_deleted<K>(backoff: &PerObjectBackoff, store: &Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    if backoff.failing() == 0 {
        return;
    }
    backoff.retain(|key| {
        let (namespace, name) = match key.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, key),
        };
        let mut reference = ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            reference = reference.within(ns);
        }
        store.get(&reference).is_some()
    });
}

/// The key of `obj` in a controller's queue and backoff: `namespace/name`, or `name` when cluster-scoped.
pub fn object_key<K: Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Runs `controller` with `reconciler` until the controller's shutdown trigger fires (set one with
/// `Controller::graceful_shutdown_on`).
pub async fn run<K, R>(controller: Controller<K>, reconciler: R, options: RunOptions)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Debug + Unpin,
    R: Reconciler<K>,
{
    let name = reconciler.name();
    let queue = options.metrics.work_queue(reconciler.queue_name());
    let state = Arc::new(RunState {
        reconciler,
        events: options.events,
        metrics: options.metrics,
        backoff: PerObjectBackoff::default(),
        queue,
        store: controller.store(),
    });
    controller
        .with_config(Config::default().concurrency(options.workers.max(1)))
        .run(reconcile::<K, R>, error_policy::<K, R>, state)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(controller = name, error = %e, "controller event");
            }
        })
        .await;
}

async fn reconcile<K, R>(obj: Arc<K>, state: Arc<RunState<R, K>>) -> Result<Action, ReconcileError>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    R: Reconciler<K>,
{
    let name = state.reconciler.name();
    let span = info_span!(
        "reconcile",
        controller = name,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
    );
    async move {
        let key = object_key(obj.as_ref());
        state.queue.started(&key);
        let started = Instant::now();
        let result = state.reconciler.reconcile(Arc::clone(&obj)).await;
        let seconds = started.elapsed().as_secs_f64();
        state.queue.finished(&key);
        match &result {
            Ok(_) => {
                state.backoff.reset(&key);
                forget_deleted(&state.backoff, &state.store);
                state.metrics.record(name, "success", seconds);
            }
            Err(err) => {
                state.metrics.record(name, err.class_label(), seconds);
                warn!(error = %err, class = err.class_label(), "reconcile failed");
                if let Some(reason) = state.reconciler.failure_reason(err) {
                    let reference = obj.object_ref(&K::DynamicType::default());
                    state.events.warning(&reference, reason, err.to_string());
                }
            }
        }
        result
    }
    .instrument(span)
    .await
}

fn error_policy<K, R>(obj: Arc<K>, err: &ReconcileError, state: Arc<RunState<R, K>>) -> Action
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    R: Reconciler<K>,
{
    forget_deleted(&state.backoff, &state.store);
    match err.class() {
        ErrorClass::Throttled(after) => {
            state.queue.retried();
            Action::requeue(after)
        }
        ErrorClass::Transient => {
            state.queue.retried();
            Action::requeue(state.backoff.next_delay(&object_key(obj.as_ref())))
        }
        ErrorClass::InvalidInput | ErrorClass::Permanent => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher;

    use super::*;

    fn config_map(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm
    }

    #[test]
    fn backoff_of_deleted_objects_is_forgotten() {
        let (store, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("kept")));
        let backoff = PerObjectBackoff::default();
        backoff.next_delay("ns/kept");
        backoff.next_delay("ns/deleted");
        forget_deleted(&backoff, &store);
        assert_eq!(backoff.failing(), 1);
        writer.apply_watcher_event(&watcher::Event::Delete(config_map("kept")));
        forget_deleted(&backoff, &store);
        assert_eq!(backoff.failing(), 0);
    }
}
