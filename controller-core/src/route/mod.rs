//! The route controller (upstream `node-route-controller`): one cloud route per Node pod CIDR.
//!
//! A single loop, not a per-object controller: routes live in one table, so each round reads the table **once**
//! (`list_routes`), compares it with every cached Node and fixes the difference:
//!
//! * creates a route for each pod CIDR (`spec.podCIDRs`, else `spec.podCIDR`) that lies inside a cluster CIDR
//!   (`--cluster-cidr`, dual-stack allowed), named after the node's UID and targeting the node and its addresses;
//! * deletes routes inside the cluster CIDRs that are blackholes or that no node wants (a CIDR now on another
//!   node: the old route is deleted first, then the new one created). Routes outside the cluster CIDRs are not
//!   ours and are never touched;
//! * at most [`RouteConfig::max_concurrent_ops`] cloud calls are in flight;
//! * sets the Node condition `NetworkUnavailable` to `False`/`RouteCreated` once every in-cluster pod CIDR of the
//!   node has a route, or `True`/`NoRouteCreated` when creating one failed (with a Warning Event
//!   `FailedToCreateRoute`); the status is written only when it changes.
//!
//! Rounds run at start, every [`RouteConfig::reconciliation_period`], and after a change of the Node set's
//! route-relevant parts (a node added or removed, its pod CIDRs, UID or addresses), debounced so that a burst of
//! changes (a hundred nodes joining) costs one round, not a hundred: route loops flooding the cloud API are a
//! known upstream pain point. Kubelet heartbeats and our own condition writes change none of those parts and so
//! trigger nothing. A throttled cloud call stops the round and the next one waits for the cloud's retry-after;
//! other failures are retried with exponential backoff capped at the reconciliation period; nothing hot-loops.
//!
//! A round (`round.rs`, one function per step) is a [`PeriodicPass`], timed and counted by the runtime's
//! [`Periodic`]; the driver here decides when rounds run.

mod plan;
mod round;
mod status;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::Capability;
use futures::StreamExt;
use futures::future::BoxFuture;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::Store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, Interval, sleep_until};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::ControllerContext;
use crate::NodeSource;
use crate::manager::{ControllerError, ManagedController, SharedCaches};
use crate::runtime::periodic::{self, later};
use crate::runtime::{
    CancellationToken, NodeChanges, PassOutcome, PerObjectBackoff, Periodic, PeriodicPass, Synced,
};

pub use status::{CONDITION_NETWORK_UNAVAILABLE, REASON_NO_ROUTE_CREATED, REASON_ROUTE_CREATED};

/// The controller's name, as upstream names it (`--controllers` alias, logs, metrics).
pub const CONTROLLER_NAME: &str = "node-route-controller";

/// Reason of the Warning Event published on a Node when creating its route fails.
pub const REASON_FAILED_TO_CREATE_ROUTE: &str = "FailedToCreateRoute";

/// The subscription announces only added and modified Nodes, so deletions are found by rescanning the cache
/// (local work, no API calls): soon after the cache's generation moves, but at most once per `RESCAN_GAP` (every
/// heartbeat moves it), and every `SCAN_INTERVAL` regardless, as a safety net.
const RESCAN_GAP: Duration = Duration::from_millis(200);
const SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// A burst of Node changes is held back at most this many debounce periods, so a steady trickle of changes
/// cannot postpone routing forever.
const MAX_DEBOUNCE_FACTOR: u32 = 10;

/// Status patches in flight at once (apiserver calls; the client's QPS limit applies on top).
const MAX_CONCURRENT_STATUS_PATCHES: usize = 16;

/// Metrics of the route controller, under upstream's names. Cheap to clone.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RouteMetrics {
    /// `route_controller_route_sync_total`: rounds that synced routes with the cloud (counted as each round starts,
    /// as upstream counts them).
    pub route_sync: Counter,
}

impl RouteMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "route_controller_route_sync",
            "A metric counting the amount of times routes have been synced with the cloud provider.",
            m.route_sync.clone(),
        );
        m
    }
}

/// Settings of the route controller.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The cluster's pod address ranges (upstream `--cluster-cidr`, comma-separated, dual-stack allowed). Only
    /// routes inside them are managed. Must not be empty: the [`RouteController`] does not start without them.
    pub cluster_cidrs: Vec<IpNet>,
    /// Safety resync: a full round at least this often (upstream `--route-reconciliation-period`, default 10s).
    pub reconciliation_period: Duration,
    /// Most cloud route calls (create and delete) in flight at once (upstream: 200). Zero counts as one.
    pub max_concurrent_ops: usize,
    /// Quiet period after a Node change before a round starts; every further change restarts it, up to ten
    /// times this in total. Default 250ms.
    pub debounce: Duration,
    /// Metrics (unregistered by default).
    pub metrics: RouteMetrics,
}

impl RouteConfig {
    /// Upstream's `--route-reconciliation-period` default.
    pub const DEFAULT_RECONCILIATION_PERIOD: Duration = Duration::from_secs(10);
    /// Upstream's limit of concurrent route operations.
    pub const DEFAULT_MAX_CONCURRENT_OPS: usize = 200;
    /// Default [`debounce`](Self::debounce).
    pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(250);

    /// Upstream's defaults for the given cluster CIDRs.
    pub fn new(cluster_cidrs: Vec<IpNet>) -> Self {
        Self {
            cluster_cidrs,
            reconciliation_period: Self::DEFAULT_RECONCILIATION_PERIOD,
            max_concurrent_ops: Self::DEFAULT_MAX_CONCURRENT_OPS,
            debounce: Self::DEFAULT_DEBOUNCE,
            metrics: RouteMetrics::default(),
        }
    }
}

/// A `--cluster-cidr` value that is not a comma-separated list of CIDRs.
#[derive(Debug, thiserror::Error)]
#[error("invalid --cluster-cidr {value:?}: {reason}")]
pub struct ClusterCidrError {
    /// The offending entry (or the whole flag when it is empty).
    pub value: String,
    /// Why it is invalid.
    pub reason: String,
}

/// Parses upstream's `--cluster-cidr`: comma-separated CIDRs (e.g. `10.244.0.0/16,fd00:10:244::/56`). Host bits
/// are cleared, as upstream's parser does.
pub fn parse_cluster_cidrs(flag: &str) -> Result<Vec<IpNet>, ClusterCidrError> {
    let cidrs = flag
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|e| ClusterCidrError {
                    value: s.to_owned(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if cidrs.is_empty() {
        return Err(ClusterCidrError {
            value: flag.to_owned(),
            reason: "no CIDR given".into(),
        });
    }
    Ok(cidrs)
}

/// The route controller as a [`ManagedController`]: `route` (alias `node-route-controller`, `route-controller`), needs routes.
#[derive(Clone, Debug)]
pub struct RouteController {
    config: RouteConfig,
    disabled: Option<String>,
}

impl RouteController {
    /// The controller with these settings.
    pub fn new(config: RouteConfig) -> Self {
        Self {
            config,
            disabled: None,
        }
    }

    /// A route controller that is registered (so `--controllers` knows it) but does not run, for this reason
    /// (upstream: "will not configure cloud provider routes" without `--allocate-node-cidrs` and
    /// `--configure-cloud-routes`).
    pub fn disabled(reason: impl Into<String>) -> Self {
        Self {
            config: RouteConfig::new(Vec::new()),
            disabled: Some(reason.into()),
        }
    }
}

impl ManagedController for RouteController {
    fn name(&self) -> &'static str {
        "route"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["node-route-controller", "route-controller"]
    }

    fn required_capabilities(&self) -> &'static [Capability] {
        &[Capability::Routes]
    }

    /// Without a cluster CIDR there is nothing to route (upstream refuses to start the controller then too).
    fn inactive_reason(&self) -> Option<String> {
        if let Some(reason) = &self.disabled {
            return Some(reason.clone());
        }
        self.config
            .cluster_cidrs
            .is_empty()
            .then(|| "no --cluster-cidr configured".to_owned())
    }

    fn run(
        &self,
        ctx: ControllerContext,
        caches: SharedCaches,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ControllerError>> {
        let nodes = caches.nodes();
        let config = self.config.clone();
        Box::pin(async move {
            run(ctx, nodes, config, shutdown).await;
            Ok(())
        })
    }
}

/// Runs the route controller until `shutdown` fires.
async fn run(
    ctx: ControllerContext,
    nodes: NodeSource,
    config: RouteConfig,
    shutdown: CancellationToken,
) {
    let span = info_span!("route_controller", controller = CONTROLLER_NAME);
    let cluster_cidrs = config.cluster_cidrs.iter().map(IpNet::trunc).collect();
    let metrics = ctx.metrics.clone();
    let shared = Shared {
        nodes: Api::all(ctx.client.clone()),
        ctx,
        store: nodes.store,
        cluster_cidrs,
        max_ops: config.max_concurrent_ops.max(1),
        metrics: config.metrics.clone(),
    };
    let periodic = Periodic::new(shared, metrics, shutdown);
    drive(
        periodic,
        nodes.changes,
        nodes.generation,
        nodes.synced,
        &config,
    )
    .instrument(span)
    .await;
}

/// What every round needs.
struct Shared {
    ctx: ControllerContext,
    nodes: Api<Node>,
    store: Store<Node>,
    cluster_cidrs: Vec<IpNet>,
    max_ops: usize,
    metrics: RouteMetrics,
}

/// A round is a [`PeriodicPass`]: the runtime times and counts it.
impl PeriodicPass for Shared {
    fn name(&self) -> &'static str {
        CONTROLLER_NAME
    }

    fn queue_name(&self) -> &'static str {
        "Routes"
    }

    fn pass(&self) -> impl Future<Output = PassOutcome> + Send {
        round::reconcile(self)
    }
}

/// When the next round may start.
struct Schedule {
    /// The next safety resync (or backoff retry).
    next_full: Instant,
    /// First and latest unhandled relevant Node change.
    dirty: Option<(Instant, Instant)>,
    /// Not before this (the cloud's retry-after).
    not_before: Instant,
    debounce: Duration,
}

impl Schedule {
    fn changed(&mut self, now: Instant) {
        self.dirty = Some(match self.dirty {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    fn due(&self) -> Instant {
        let mut due = self.next_full;
        if let Some((first, last)) = self.dirty {
            let settled = later(last, self.debounce).min(later(
                first,
                self.debounce.saturating_mul(MAX_DEBOUNCE_FACTOR),
            ));
            due = due.min(settled);
        }
        due.max(self.not_before)
    }
}

/// Remembers, per Node name, a hash of the parts routes depend on, so that unrelated updates (heartbeats,
/// conditions, labels) do not trigger rounds.
#[derive(Default)]
struct ChangeTracker {
    seen: HashMap<String, u64>,
}

fn fingerprint(node: &Node) -> u64 {
    let mut h = DefaultHasher::new();
    node.uid().hash(&mut h);
    if let Some(spec) = &node.spec {
        spec.pod_cidr.hash(&mut h);
        spec.pod_cidrs.hash(&mut h);
    }
    if let Some(addresses) = node.status.as_ref().and_then(|s| s.addresses.as_ref()) {
        for a in addresses {
            a.type_.hash(&mut h);
            a.address.hash(&mut h);
        }
    }
    h.finish()
}

impl ChangeTracker {
    /// Records `node`; true if its route-relevant parts changed (or it is new).
    fn observe(&mut self, node: &Node) -> bool {
        let print = fingerprint(node);
        self.seen.insert(node.name_any(), print) != Some(print)
    }

    /// Re-reads the whole cache; true if any node was added, removed or changed.
    fn scan(&mut self, store: &Store<Node>) -> bool {
        let nodes = store.state();
        let mut changed = nodes.len() != self.seen.len();
        let mut next = HashMap::with_capacity(nodes.len());
        for node in &nodes {
            let name = node.name_any();
            let print = fingerprint(node);
            changed |= self.seen.get(&name) != Some(&print);
            next.insert(name, print);
        }
        self.seen = next;
        changed
    }
}

/// The controller loop: keeps draining the Node subscription (a slow subscriber would hold back the shared
/// reflector) while at most one round runs in its own task.
async fn drive(
    periodic: Periodic<Shared>,
    changes: NodeChanges,
    generation: watch::Receiver<u64>,
    synced: Synced,
    config: &RouteConfig,
) {
    // Never plan from a cache that has not finished its initial list: that round would see no Nodes and delete
    // every route.
    if !periodic.wait_until_ready(synced).await {
        return;
    }
    let mut driver = Driver::new(periodic, changes, generation, config);
    loop {
        let wake = driver.wait().await;
        if driver.handle(wake).is_break() {
            return;
        }
    }
}

/// What woke the [`Driver`].
enum Wake {
    Shutdown,
    RoundFinished(Result<PassOutcome, JoinError>),
    NodeChanged(Option<Arc<Node>>),
    GenerationMoved(Result<(), watch::error::RecvError>),
    RescanDue,
    ScanTick,
    RoundDue,
}

/// The loop's state: change detection, the schedule and the running round.
struct Driver {
    periodic: Periodic<Shared>,
    changes: NodeChanges,
    /// False once the subscription ended.
    subscribed: bool,
    generation: watch::Receiver<u64>,
    /// False once the generation channel closed.
    generation_open: bool,
    tracker: ChangeTracker,
    /// Periodic cache scans, the safety net of change detection.
    scan: Interval,
    last_scan: Instant,
    /// The rescan pending after the cache's generation moved.
    rescan_at: Option<Instant>,
    schedule: Schedule,
    period: Duration,
    /// Failed rounds retry sooner than the safety resync.
    retry: PerObjectBackoff,
    running: Option<JoinHandle<PassOutcome>>,
    round: u64,
}

impl Driver {
    /// A driver over a ready cache: first round at once.
    fn new(
        periodic: Periodic<Shared>,
        changes: NodeChanges,
        generation: watch::Receiver<u64>,
        config: &RouteConfig,
    ) -> Self {
        let period = config.reconciliation_period.max(periodic::MIN_PERIOD);
        let mut tracker = ChangeTracker::default();
        tracker.scan(&periodic.inner().store);
        let now = Instant::now();
        Self {
            periodic,
            changes,
            subscribed: true,
            generation,
            generation_open: true,
            tracker,
            scan: periodic::ticker(SCAN_INTERVAL),
            last_scan: now,
            rescan_at: None,
            schedule: Schedule {
                next_full: now,
                dirty: None,
                not_before: now,
                debounce: config.debounce,
            },
            period,
            // Never faster than every 1s (or the period).
            retry: PerObjectBackoff::new(period.min(Duration::from_secs(1)), period),
            running: None,
            round: 0,
        }
    }

    /// Waits for the next thing to handle.
    async fn wait(&mut self) -> Wake {
        let due = self.schedule.due();
        tokio::select! {
            () = self.periodic.shutdown().cancelled() => Wake::Shutdown,
            finished = join(&mut self.running) => Wake::RoundFinished(finished),
            change = self.changes.next(), if self.subscribed => Wake::NodeChanged(change),
            moved = self.generation.changed(), if self.generation_open => Wake::GenerationMoved(moved),
            () = sleep_until(self.rescan_at.unwrap_or(due)), if self.rescan_at.is_some() => Wake::RescanDue,
            _ = self.scan.tick() => Wake::ScanTick,
            () = sleep_until(due), if self.running.is_none() => Wake::RoundDue,
        }
    }

    /// Handles `wake`; breaks on shutdown.
    fn handle(&mut self, wake: Wake) -> ControlFlow<()> {
        match wake {
            Wake::Shutdown => {
                self.stop();
                return ControlFlow::Break(());
            }
            Wake::RoundFinished(finished) => self.round_finished(finished),
            Wake::NodeChanged(Some(node)) => self.node_changed(&node),
            Wake::NodeChanged(None) => self.subscription_ended(),
            Wake::GenerationMoved(Ok(())) => self.generation_moved(),
            Wake::GenerationMoved(Err(_)) => self.generation_open = false,
            Wake::RescanDue => {
                self.rescan_at = None;
                self.scan_cache();
            }
            Wake::ScanTick => self.scan_cache(),
            Wake::RoundDue => self.start_round(),
        }
        ControlFlow::Continue(())
    }

    /// Cloud route calls are idempotent; an interrupted round is finished by the next leader.
    fn stop(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
        info!("route controller stopped");
    }

    /// Schedules the next round after the cloud's retry-after, if any; after a backoff if this one was
    /// incomplete, else a period from now.
    fn round_finished(&mut self, finished: Result<PassOutcome, JoinError>) {
        let outcome = finished.unwrap_or_else(|e| {
            error!(error = %e, "route round task failed");
            PassOutcome {
                retry_after: None,
                incomplete: true,
            }
        });
        let now = Instant::now();
        if let Some(resume) = self.periodic.throttled_until(&outcome, now) {
            self.schedule.not_before = resume;
        }
        self.schedule.next_full = if outcome.incomplete {
            later(now, self.retry.next_delay("round").min(self.period))
        } else {
            self.retry.reset("round");
            later(now, self.period)
        };
    }

    fn node_changed(&mut self, node: &Node) {
        if self.tracker.observe(node) {
            debug!(node = %node.name_any(), "route-relevant Node change");
            self.schedule.changed(Instant::now());
        }
    }

    fn subscription_ended(&mut self) {
        // Cache scans still notice changes.
        warn!("Node subscription ended; relying on cache scans");
        self.subscribed = false;
    }

    /// Something changed in the cache, maybe a deletion: rescan soon, but not more often than every `RESCAN_GAP`.
    fn generation_moved(&mut self) {
        self.generation.borrow_and_update();
        let at = later(self.last_scan, RESCAN_GAP);
        self.rescan_at.get_or_insert(at);
    }

    fn scan_cache(&mut self) {
        self.last_scan = Instant::now();
        if self.tracker.scan(&self.periodic.inner().store) {
            self.schedule.changed(self.last_scan);
        }
    }

    fn start_round(&mut self) {
        self.round += 1;
        self.schedule.dirty = None;
        let span = info_span!("route_reconcile", round = self.round);
        self.running = Some(tokio::spawn(self.periodic.run_pass().instrument(span)));
    }
}

/// Waits for the running round, if any (forever otherwise), and clears the slot.
async fn join(running: &mut Option<JoinHandle<PassOutcome>>) -> Result<PassOutcome, JoinError> {
    let Some(task) = running.as_mut() else {
        return std::future::pending().await;
    };
    let result = task.await;
    *running = None;
    result
}

/// Everything this controller decides from a cached Node, for the projection test
/// ([`projection`](crate::runtime::projection)).
#[cfg(test)]
pub(crate) fn node_decisions(node: &Node) -> String {
    let clusters: Vec<ipnet::IpNet> = ["10.0.0.0/8", "fd00::/8"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    );
    format!(
        "{:?}",
        (
            plan::pod_cidrs(node),
            plan::NodeRoutes::of(std::sync::Arc::new(node.clone()), &clusters).1,
            status::condition_patch(node, status::Networking::RouteCreated, at.clone()).ok(),
            status::condition_patch(node, status::Networking::NoRouteCreated, at).ok(),
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cluster_cidr_flag() {
        let cidrs = parse_cluster_cidrs("10.244.0.1/16, fd00:10:244::/56").unwrap_or_default();
        assert_eq!(cidrs.len(), 2);
        assert_eq!(cidrs[0].to_string(), "10.244.0.0/16");
        assert_eq!(cidrs[1].to_string(), "fd00:10:244::/56");
        assert!(parse_cluster_cidrs("").is_err());
        let err = parse_cluster_cidrs("10.0.0.0/8,nope")
            .err()
            .map(|e| e.value);
        assert_eq!(err.as_deref(), Some("nope"));
    }

    #[test]
    fn schedule_debounces_and_respects_throttling() {
        let t0 = Instant::now();
        let debounce = Duration::from_millis(100);
        let mut s = Schedule {
            next_full: t0 + Duration::from_secs(10),
            dirty: None,
            not_before: t0,
            debounce,
        };
        assert_eq!(s.due(), t0 + Duration::from_secs(10));
        s.changed(t0);
        assert_eq!(s.due(), t0 + debounce);
        // Each change restarts the quiet period…
        s.changed(t0 + Duration::from_millis(50));
        assert_eq!(s.due(), t0 + Duration::from_millis(150));
        // …but never beyond ten periods after the first change.
        s.changed(t0 + Duration::from_secs(5));
        assert_eq!(s.due(), t0 + debounce * MAX_DEBOUNCE_FACTOR);
        // The cloud's retry-after beats everything.
        s.not_before = t0 + Duration::from_secs(30);
        assert_eq!(s.due(), t0 + Duration::from_secs(30));
    }

    #[test]
    fn tracker_ignores_irrelevant_changes() {
        use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
        let mut node = Node::default();
        node.metadata.name = Some("a".into());
        node.spec = Some(NodeSpec {
            pod_cidr: Some("10.244.1.0/24".into()),
            ..Default::default()
        });
        let mut t = ChangeTracker::default();
        assert!(t.observe(&node));
        assert!(!t.observe(&node));
        node.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition::default()]),
            ..Default::default()
        });
        node.metadata.resource_version = Some("2".into());
        assert!(
            !t.observe(&node),
            "conditions and resourceVersion do not matter"
        );
        node.spec = Some(NodeSpec::default());
        assert!(t.observe(&node), "pod CIDRs do");
    }
}
