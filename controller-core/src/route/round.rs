//! One round of the route controller, one function per step: read the cached Nodes, list the cloud's routes
//! (once), plan, delete, create, publish the Warning Events of failed creates, update the `NetworkUnavailable`
//! conditions. A round never fails as a whole; its [`PassOutcome`] schedules the next one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{CloudError, Route};
use futures::{StreamExt, stream};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::Resource;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::plan::{self, Create, NodeRoutes, Plan};
use super::status::{self, ConditionUpdate, Networking};
use super::{MAX_CONCURRENT_STATUS_PATCHES, REASON_FAILED_TO_CREATE_ROUTE, Shared};
use crate::runtime::PassOutcome;

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

/// What the round has achieved so far.
struct Progress {
    /// `(node, CIDR)` of the routes that exist: kept by the plan or created by this round.
    routed: HashSet<(String, IpNet)>,
    /// Indexes (into the round's nodes) of the nodes a create failed for.
    failed: HashSet<usize>,
    /// Something failed, was skipped or raced a Node update: retry before the next periodic round.
    incomplete: bool,
}

/// A Warning Event to publish: about whom, and the note.
type Warning = (ObjectReference, String);

/// A condition to set. Owned items: borrowing closures in a spawned (Send) stream trip the compiler's
/// higher-ranked lifetime check.
type ConditionChange = (Arc<Node>, String, Networking);

/// One round: list, plan, delete, create, report.
pub(super) async fn reconcile(shared: &Shared) -> PassOutcome {
    shared.metrics.route_sync.inc();
    let nodes = cached_nodes(shared);
    let existing = match list_routes(shared).await {
        Ok(existing) => existing,
        Err(outcome) => return outcome,
    };
    let plan = plan_round(shared, &nodes, &existing);
    let gate = ThrottleGate::default();
    let mut progress = Progress {
        routed: plan.routed,
        failed: HashSet::new(),
        incomplete: false,
    };
    // Deletes first: a CIDR that moved to another node must be free before its new route is created.
    let deleted = delete_routes(shared, &gate, plan.delete).await;
    let blocked = record_deletes(deleted, &mut progress);
    let creates = unblocked(plan.create, &blocked, &mut progress);
    let created = create_routes(shared, &gate, &nodes, creates).await;
    let warnings = record_creates(&nodes, created, &mut progress);
    let updates = condition_changes(&nodes, &progress);
    publish_warnings(shared, warnings).await;
    if !update_conditions(shared, updates).await {
        progress.incomplete = true;
    }
    PassOutcome {
        retry_after: gate.retry_after(),
        incomplete: progress.incomplete,
    }
}

/// The cached Nodes as the plan sees them (unparsable pod CIDRs logged and ignored).
fn cached_nodes(shared: &Shared) -> Vec<NodeRoutes> {
    shared
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
        .collect()
}

/// The cloud's route table, read once per round; on failure the outcome that ends the round.
async fn list_routes(shared: &Shared) -> Result<Vec<Route>, PassOutcome> {
    shared
        .ctx
        .routes()
        .list_routes(&shared.ctx.cluster_name)
        .await
        .map_err(|e| {
            warn!(error = %e, "ListRoutes failed");
            PassOutcome {
                retry_after: e.retry_after(),
                incomplete: true,
            }
        })
}

/// What to delete and create, with CIDR conflicts logged.
fn plan_round(shared: &Shared, nodes: &[NodeRoutes], existing: &[Route]) -> Plan {
    let plan = plan::plan(&shared.cluster_cidrs, nodes, existing);
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
    plan
}

/// Deletes `delete`, at most `max_ops` calls at once.
async fn delete_routes(
    shared: &Shared,
    gate: &ThrottleGate,
    delete: Vec<Route>,
) -> Vec<(Route, OpResult)> {
    let routes = shared.ctx.routes();
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

/// Logs the deletes; returns the CIDRs still taken by a route that could not be deleted.
fn record_deletes(deleted: Vec<(Route, OpResult)>, progress: &mut Progress) -> HashSet<IpNet> {
    let mut blocked = HashSet::new();
    for (route, result) in deleted {
        let cidr = route.destination_cidr.trunc();
        match result {
            OpResult::Done => {
                info!(%cidr, target = %route.target_node, blackhole = route.blackhole, "deleted route")
            }
            OpResult::Failed(e) => {
                warn!(%cidr, target = %route.target_node, error = %e, "DeleteRoute failed");
                blocked.insert(cidr);
                progress.incomplete = true;
            }
            OpResult::Skipped => {
                blocked.insert(cidr);
                progress.incomplete = true;
            }
        }
    }
    blocked
}

/// The creates whose CIDR is free; the others wait for the next round.
fn unblocked(
    creates: Vec<Create>,
    blocked: &HashSet<IpNet>,
    progress: &mut Progress,
) -> Vec<Create> {
    creates
        .into_iter()
        .filter(|c| {
            let free = !blocked.contains(&c.route.destination_cidr);
            progress.incomplete |= !free;
            free
        })
        .collect()
}

/// Creates `creates`, at most `max_ops` calls at once; each result with how long the call took.
async fn create_routes(
    shared: &Shared,
    gate: &ThrottleGate,
    nodes: &[NodeRoutes],
    creates: Vec<Create>,
) -> Vec<(Create, Duration, OpResult)> {
    let routes = shared.ctx.routes();
    let cluster = shared.ctx.cluster_name.as_str();
    stream::iter(creates)
        .map(|create| {
            let node = &nodes[create.node];
            async move {
                let started = std::time::Instant::now();
                let result =
                    call(gate, routes.create_route(cluster, &node.uid, &create.route)).await;
                (create, started.elapsed(), result)
            }
        })
        .buffer_unordered(shared.max_ops)
        .collect()
        .await
}

/// Logs the creates and records them in `progress`; returns the Warning Events of the failed ones.
fn record_creates(
    nodes: &[NodeRoutes],
    created: Vec<(Create, Duration, OpResult)>,
    progress: &mut Progress,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for (create, took, result) in created {
        let node = &nodes[create.node];
        let cidr = create.route.destination_cidr;
        match result {
            OpResult::Done => {
                info!(%cidr, node = %node.name, "created route");
                progress.routed.insert((node.name.clone(), cidr));
            }
            OpResult::Failed(e) => {
                warn!(%cidr, node = %node.name, error = %e, "CreateRoute failed");
                let note = format!(
                    "Could not create route {} {cidr} for node {} after {took:?}: {e}",
                    node.uid, node.name
                );
                warnings.push((node.node.object_ref(&()), note));
                progress.failed.insert(create.node);
                progress.incomplete = true;
            }
            OpResult::Skipped => progress.incomplete = true,
        }
    }
    warnings
}

/// The `NetworkUnavailable` condition each node should get: failure wins; success needs every in-cluster pod
/// CIDR routed; otherwise (skipped) unchanged.
fn condition_changes(nodes: &[NodeRoutes], progress: &Progress) -> Vec<ConditionChange> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| {
            if node.cidrs.is_empty() {
                return None;
            }
            let want = if progress.failed.contains(&i) {
                Networking::NoRouteCreated
            } else if node
                .cidrs
                .iter()
                .all(|c| progress.routed.contains(&(node.name.clone(), *c)))
            {
                Networking::RouteCreated
            } else {
                return None;
            };
            Some((Arc::clone(&node.node), node.name.clone(), want))
        })
        .collect()
}

/// Publishes the Warning Events of failed creates.
async fn publish_warnings(shared: &Shared, warnings: Vec<Warning>) {
    let events = &shared.ctx.events;
    stream::iter(warnings)
        .for_each_concurrent(
            MAX_CONCURRENT_STATUS_PATCHES,
            move |(reference, note)| async move {
                events.warning(&reference, REASON_FAILED_TO_CREATE_ROUTE, note);
            },
        )
        .await;
}

/// Writes the conditions that changed. False if any could not be written (retried next round).
async fn update_conditions(shared: &Shared, updates: Vec<ConditionChange>) -> bool {
    let api = &shared.nodes;
    let patched = stream::iter(updates)
        .map(move |(node, name, want)| async move {
            let result = status::set_condition(api, &node, want).await;
            (name, result)
        })
        .buffer_unordered(MAX_CONCURRENT_STATUS_PATCHES)
        .collect::<Vec<_>>()
        .await;
    let mut complete = true;
    for (node, result) in patched {
        match result {
            Ok(ConditionUpdate::Unchanged) => {}
            Ok(ConditionUpdate::Patched) => debug!(%node, "updated NetworkUnavailable"),
            Ok(ConditionUpdate::Stale) => {
                debug!(%node, "Node changed since cached; condition retried next round");
                complete = false;
            }
            Err(e) => {
                warn!(%node, error = %e, "could not update NetworkUnavailable");
                complete = false;
            }
        }
    }
    complete
}
