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

mod plan;
mod status;

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{Capability, CloudError, Route, Routes};
use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::ControllerContext;
use crate::NodeSource;
use crate::manager::{ControllerError, ManagedController, SharedCaches};
use crate::runtime::{CancellationToken, PerObjectBackoff};
use plan::NodeRoutes;
use status::{ConditionUpdate, Networking};

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

/// Settings of the route controller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The cluster's pod address ranges (upstream `--cluster-cidr`, comma-separated, dual-stack allowed). Only
    /// routes inside them are managed. Must not be empty: [`run`] refuses to start without them.
    pub cluster_cidrs: Vec<IpNet>,
    /// Safety resync: a full round at least this often (upstream `--route-reconciliation-period`, default 10s).
    pub reconciliation_period: Duration,
    /// Most cloud route calls (create and delete) in flight at once (upstream: 200). Zero counts as one.
    pub max_concurrent_ops: usize,
    /// Quiet period after a Node change before a round starts; every further change restarts it, up to ten
    /// times this in total. Default 250ms.
    pub debounce: Duration,
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
    let shared = Arc::new(Shared {
        nodes: Api::all(ctx.client.clone()),
        ctx,
        store: nodes.store,
        cluster_cidrs,
        max_ops: config.max_concurrent_ops.max(1),
    });
    drive(shared, nodes.changes, nodes.generation, &config, shutdown)
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
}

/// How a round ended, for scheduling the next one.
#[derive(Clone, Copy, Debug, Default)]
struct RoundOutcome {
    /// The cloud asked us to wait this long.
    throttled: Option<Duration>,
    /// Something failed (or was skipped, or raced a Node update): retry before the next periodic round.
    incomplete: bool,
}

/// `at + delay`, saturating far in the future instead of panicking on absurd configured durations.
fn later(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay)
        .unwrap_or_else(|| at + Duration::from_secs(60 * 60 * 24 * 365))
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
    shared: Arc<Shared>,
    changes: crate::runtime::NodeChanges,
    mut generation: tokio::sync::watch::Receiver<u64>,
    config: &RouteConfig,
    shutdown: CancellationToken,
) {
    let stop = shutdown.cancelled_owned();
    tokio::pin!(stop);
    let mut changes = std::pin::pin!(changes);

    // Never plan from a cache that has not finished its initial list: that round would see no Nodes and delete
    // every route.
    tokio::select! {
        () = &mut stop => return,
        ready = shared.store.wait_until_ready() => {
            if let Err(e) = ready {
                error!(error = %e, "the Node cache stopped before its initial list; route controller stops");
                return;
            }
        }
    }

    let period = config.reconciliation_period.max(Duration::from_millis(10));
    // Failed rounds retry sooner than the safety resync, but never faster than every 1s (or the period).
    let retry = PerObjectBackoff::new(period.min(Duration::from_secs(1)), period);
    let mut tracker = ChangeTracker::default();
    tracker.scan(&shared.store);
    let now = Instant::now();
    let mut schedule = Schedule {
        next_full: now,
        dirty: None,
        not_before: now,
        debounce: config.debounce,
    };
    let mut scan = tokio::time::interval(SCAN_INTERVAL);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Option<JoinHandle<RoundOutcome>> = None;
    let mut subscribed = true;
    let mut generation_open = true;
    let mut last_scan = Instant::now();
    let mut rescan_at: Option<Instant> = None;
    let mut round: u64 = 0;

    loop {
        let due = schedule.due();
        tokio::select! {
            () = &mut stop => {
                // Cloud route calls are idempotent; an interrupted round is finished by the next leader.
                if let Some(task) = running.take() {
                    task.abort();
                }
                info!("route controller stopped");
                return;
            }
            finished = join(&mut running) => {
                let outcome = finished.unwrap_or_else(|e| {
                    error!(error = %e, "route round task failed");
                    RoundOutcome { throttled: None, incomplete: true }
                });
                let now = Instant::now();
                if let Some(after) = outcome.throttled {
                    schedule.not_before = later(now, after);
                }
                schedule.next_full = if outcome.incomplete {
                    later(now, retry.next_delay("round").min(period))
                } else {
                    retry.reset("round");
                    later(now, period)
                };
            }
            change = changes.next(), if subscribed => match change {
                Some(node) => {
                    if tracker.observe(&node) {
                        debug!(node = %node.name_any(), "route-relevant Node change");
                        schedule.changed(Instant::now());
                    }
                }
                None => {
                    // Cache scans still notice changes.
                    warn!("Node subscription ended; relying on cache scans");
                    subscribed = false;
                }
            },
            changed = generation.changed(), if generation_open => match changed {
                Ok(()) => {
                    generation.borrow_and_update();
                    rescan_at.get_or_insert_with(|| later(last_scan, RESCAN_GAP));
                }
                Err(_) => generation_open = false,
            },
            () = tokio::time::sleep_until(rescan_at.unwrap_or(due)), if rescan_at.is_some() => {
                rescan_at = None;
                last_scan = Instant::now();
                if tracker.scan(&shared.store) {
                    schedule.changed(last_scan);
                }
            }
            _ = scan.tick() => {
                last_scan = Instant::now();
                if tracker.scan(&shared.store) {
                    schedule.changed(last_scan);
                }
            }
            () = tokio::time::sleep_until(due), if running.is_none() => {
                round += 1;
                schedule.dirty = None;
                let span = info_span!("route_reconcile", round);
                running = Some(tokio::spawn(reconcile(Arc::clone(&shared)).instrument(span)));
            }
        }
    }
}

/// Waits for the running round, if any (forever otherwise), and clears the slot.
async fn join(
    running: &mut Option<JoinHandle<RoundOutcome>>,
) -> Result<RoundOutcome, tokio::task::JoinError> {
    let Some(task) = running.as_mut() else {
        return std::future::pending().await;
    };
    let result = task.await;
    *running = None;
    result
}

/// One cloud call's result.
enum OpResult {
    Done,
    Failed(CloudError),
    /// Not attempted: an earlier call of the round was throttled.
    Skipped,
}

/// Once the cloud throttles, the rest of the round's calls are skipped instead of piling on.
#[derive(Default)]
struct ThrottleGate(Mutex<Option<Duration>>);

impl ThrottleGate {
    fn closed(&self) -> bool {
        self.0.lock().is_some()
    }

    fn record(&self, err: &CloudError) {
        if let Some(after) = err.retry_after() {
            let mut gate = self.0.lock();
            *gate = Some(gate.map_or(after, |d| d.max(after)));
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        *self.0.lock()
    }
}

async fn call(gate: &ThrottleGate, op: impl Future<Output = Result<(), CloudError>>) -> OpResult {
    if gate.closed() {
        return OpResult::Skipped;
    }
    match op.await {
        Ok(()) => OpResult::Done,
        Err(e) => {
            gate.record(&e);
            OpResult::Failed(e)
        }
    }
}

/// One round: list, plan, delete, create, report. Never fails as a whole; the outcome schedules the next one.
async fn reconcile(shared: Arc<Shared>) -> RoundOutcome {
    let started = std::time::Instant::now();
    let outcome = reconcile_inner(&shared).await;
    let result = match (outcome.throttled, outcome.incomplete) {
        (Some(_), _) => "throttled",
        (None, true) => "transient",
        (None, false) => "success",
    };
    shared
        .ctx
        .metrics
        .record(CONTROLLER_NAME, result, started.elapsed().as_secs_f64());
    outcome
}

async fn reconcile_inner(shared: &Shared) -> RoundOutcome {
    let routes = shared.ctx.routes();
    let cluster = shared.ctx.cluster_name.as_str();

    let nodes: Vec<NodeRoutes> = shared
        .store
        .state()
        .into_iter()
        .map(|node| {
            let (routes, invalid) = NodeRoutes::of(node, &shared.cluster_cidrs);
            if !invalid.is_empty() {
                warn!(node = %routes.name, ?invalid, "ignoring unparsable pod CIDRs");
            }
            routes
        })
        .collect();

    let existing = match routes.list_routes(cluster).await {
        Ok(existing) => existing,
        Err(e) => {
            warn!(error = %e, "ListRoutes failed");
            return RoundOutcome {
                throttled: e.retry_after(),
                incomplete: true,
            };
        }
    };
    let plan = plan::plan(&shared.cluster_cidrs, &nodes, &existing);
    for (cidr, winner, losers) in &plan.conflicts {
        warn!(%cidr, %winner, ?losers, "pod CIDR claimed by several nodes; routing it to one");
    }
    debug!(
        nodes = nodes.len(),
        routes = existing.len(),
        delete = plan.delete.len(),
        create = plan.create.len(),
        "planned"
    );
    let gate = ThrottleGate::default();
    let mut incomplete = false;

    // Deletes first: a CIDR that moved to another node must be free before its new route is created.
    let deleted = run_deletes(shared, routes, &gate, plan.delete).await;
    let mut blocked: HashSet<IpNet> = HashSet::new();
    for (route, result) in deleted {
        let cidr = route.destination_cidr.trunc();
        match result {
            OpResult::Done => {
                info!(%cidr, target = %route.target_node, blackhole = route.blackhole, "deleted route")
            }
            OpResult::Failed(e) => {
                warn!(%cidr, target = %route.target_node, error = %e, "DeleteRoute failed");
                blocked.insert(cidr);
                incomplete = true;
            }
            OpResult::Skipped => {
                blocked.insert(cidr);
                incomplete = true;
            }
        }
    }

    let creates: Vec<_> = plan
        .create
        .into_iter()
        .filter(|c| {
            let free = !blocked.contains(&c.route.destination_cidr);
            incomplete |= !free;
            free
        })
        .collect();
    let mut routed = plan.routed;
    // Indexes of nodes with a failed create, and the Warning Events to publish about them.
    let mut failed: HashSet<usize> = HashSet::new();
    let mut warnings: Vec<(ObjectReference, String)> = Vec::new();
    let created = stream::iter(creates)
        .map(|create| {
            let node = &nodes[create.node];
            let gate = &gate;
            async move {
                let started = std::time::Instant::now();
                let result =
                    call(gate, routes.create_route(cluster, &node.uid, &create.route)).await;
                (create, started.elapsed(), result)
            }
        })
        .buffer_unordered(shared.max_ops)
        .collect::<Vec<_>>()
        .await;
    for (create, took, result) in created {
        let node = &nodes[create.node];
        let cidr = create.route.destination_cidr;
        match result {
            OpResult::Done => {
                info!(%cidr, node = %node.name, "created route");
                routed.insert((node.name.clone(), cidr));
            }
            OpResult::Failed(e) => {
                warn!(%cidr, node = %node.name, error = %e, "CreateRoute failed");
                let note = format!(
                    "Could not create route {} {cidr} for node {} after {took:?}: {e}",
                    node.uid, node.name
                );
                warnings.push((node.node.object_ref(&()), note));
                failed.insert(create.node);
                incomplete = true;
            }
            OpResult::Skipped => incomplete = true,
        }
    }

    // Conditions: failure wins; success needs every in-cluster pod CIDR routed; otherwise (skipped) unchanged.
    // Owned items: borrowing closures in a spawned (Send) stream trip the compiler's higher-ranked lifetime check.
    let updates: Vec<(Arc<Node>, String, Networking)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| {
            if node.cidrs.is_empty() {
                return None;
            }
            let want = if failed.contains(&i) {
                Networking::NoRouteCreated
            } else if node
                .cidrs
                .iter()
                .all(|c| routed.contains(&(node.name.clone(), *c)))
            {
                Networking::RouteCreated
            } else {
                return None;
            };
            Some((Arc::clone(&node.node), node.name.clone(), want))
        })
        .collect();
    let events = &shared.ctx.events;
    stream::iter(warnings)
        .for_each_concurrent(
            MAX_CONCURRENT_STATUS_PATCHES,
            move |(reference, note)| async move {
                events.warning(&reference, REASON_FAILED_TO_CREATE_ROUTE, note);
            },
        )
        .await;
    let api = &shared.nodes;
    let patched = stream::iter(updates)
        .map(move |(node, name, want)| async move {
            let result = status::set_condition(api, &node, want).await;
            (name, result)
        })
        .buffer_unordered(MAX_CONCURRENT_STATUS_PATCHES)
        .collect::<Vec<_>>()
        .await;
    for (node, result) in patched {
        match result {
            Ok(ConditionUpdate::Unchanged) => {}
            Ok(ConditionUpdate::Patched) => debug!(%node, "updated NetworkUnavailable"),
            Ok(ConditionUpdate::Stale) => {
                debug!(%node, "Node changed since cached; condition retried next round");
                incomplete = true;
            }
            Err(e) => {
                warn!(%node, error = %e, "could not update NetworkUnavailable");
                incomplete = true;
            }
        }
    }

    RoundOutcome {
        throttled: gate.retry_after(),
        incomplete,
    }
}

async fn run_deletes(
    shared: &Shared,
    routes: &dyn Routes,
    gate: &ThrottleGate,
    delete: Vec<Route>,
) -> Vec<(Route, OpResult)> {
    let cluster = shared.ctx.cluster_name.as_str();
    stream::iter(delete)
        .map(|route| async move {
            let result = call(gate, routes.delete_route(cluster, &route)).await;
            (route, result)
        })
        .buffer_unordered(shared.max_ops)
        .collect()
        .await
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
