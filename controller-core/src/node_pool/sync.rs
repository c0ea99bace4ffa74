//! One reconcile of a pool, step by step as the module docs list them: spec check, cleanup, registration, scale
//! up, scale down, status. [`PoolReconciler::sync`] runs the steps in order on one [`Round`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use std::time::Duration;

use cloudprovider_api::{CloudError, CloudInstance, CloudInstanceState, NodeGroups, Unsupported};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::PoolReconciler;
use super::consolidation::do_not_disrupt;
use super::crd::{NodePool, PoolNodeStatus, ScalingDecision, SpecError};
use super::disruption::room_in_budget;
use super::lifecycle::{Member, Phase, blocks_removal, bound_node};
use super::packing::Plan as Placement;
use super::reconcile::{NextLook, decision, entry};
use super::resources::Resources;
use super::scale_up::{NodeShape, fits_shape, is_unschedulable};
use super::status::{self, Observed};
use crate::runtime::ReconcileError;

/// One node group of the pool as a reconcile reads it.
pub(super) struct Group {
    pub(super) id: String,
    pub(super) shape: NodeShape,
    pub(super) price: Option<f64>,
    pub(super) max_size: u32,
}

/// What one reconcile of a pool reads once and accumulates as its steps run.
pub(super) struct Round<'a> {
    pub(super) pool: &'a NodePool,
    pub(super) name: String,
    pub(super) groups: &'a dyn NodeGroups,
    /// The pool's node groups, in spec order.
    pub(super) offered: Vec<Group>,
    /// Every instance of those groups, with its group's id.
    pub(super) instances: Vec<(String, CloudInstance)>,
    pub(super) now: Timestamp,
    pub(super) next: NextLook,
    pub(super) status_nodes: Vec<PoolNodeStatus>,
    pub(super) scale_up: Option<ScalingDecision>,
    pub(super) scale_down: Option<ScalingDecision>,
}

/// The cluster's pods as the scale steps need them.
pub(super) struct PodView<'p> {
    /// Pods bound to each node, by node name.
    pub(super) by_node: BTreeMap<&'p str, Vec<&'p Pod>>,
    /// Unschedulable pods that would fit one of the pool's shapes and count for this pool.
    pub(super) pending: Vec<&'p Arc<Pod>>,
}

impl Round<'_> {
    /// The index in `offered` of a member's group (its shape, price, ...).
    pub(super) fn group_of(&self, member: &Member) -> usize {
        self.offered
            .iter()
            .position(|g| g.id == member.group)
            .unwrap_or(0)
    }

    /// The shape of a member's group.
    pub(super) fn shape_of(&self, member: &Member) -> &NodeShape {
        &self.offered[self.group_of(member)].shape
    }
}

impl PoolReconciler {
    /// Spec check, then one [`Round`] of cleanup, registration, scale up, scale down and status.
    pub(super) async fn sync(&self, pool: &NodePool) -> Result<Action, ReconcileError> {
        if let Some(wait) = self.still_invalid(pool) {
            return Ok(Action::requeue(wait));
        }
        self.check_spec(pool).await?;
        if !self.caches_ready() {
            return Ok(Action::requeue(self.config.poll_interval));
        }
        let mut round = self.snapshot(pool).await?;
        let live = self.cleanup(&mut round).await;
        self.registration(&mut round, &live).await?;
        let pods = self.pods.state();
        let view = self.pod_view(&round, &pods);
        let live_count = u32::try_from(live.len()).unwrap_or(u32::MAX);
        let placement = self.placement(&round, &live, &view, live_count);
        let launched = self
            .scale_up_step(&mut round, &view, &placement, live_count)
            .await?;
        let removed = self
            .scale_down_step(&mut round, &live, &view, &placement, live_count + launched)
            .await?;
        self.status_step(round, &live, &removed).await
    }

    /// Step 1: what the schema cannot say, and whether the node group is this pool's: a node group belongs to
    /// one pool, the oldest that names it (by creation time, then name), so two pools never act on the same
    /// instances and Nodes. An invalid spec is reported in the status and as a Warning Event.
    async fn check_spec(&self, pool: &NodePool) -> Result<(), ReconcileError> {
        if let Err(e) = pool.spec.validate() {
            return Err(self.reject(pool, e, status::INVALID_SPEC).await);
        }
        if let Some((group, owner)) = self.group_owner(pool) {
            let e = SpecError::new(
                group_field(pool, &group),
                format!(
                    "node group {group:?} is already used by NodePool {owner:?}; a node group belongs to one pool \
                     (the oldest), so this one launches and removes nothing"
                ),
            );
            return Err(self.reject(pool, e, status::NODE_GROUP_IN_USE).await);
        }
        Ok(())
    }

    /// A node group of this pool that an older pool owns, and that pool's name.
    pub(super) fn group_owner(&self, pool: &NodePool) -> Option<(String, String)> {
        let age = |p: &NodePool| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.name_any(),
            )
        };
        let mine = age(pool);
        let pools = self.pools.state();
        pool.spec.group_ids().into_iter().find_map(|group| {
            pools
                .iter()
                .filter(|p| {
                    // A pool being deleted keeps its groups until its nodes are drained and its finalizer is gone.
                    p.spec.group_ids().contains(&group) && p.name_any() != mine.1
                })
                .map(|p| age(p))
                .filter(|other| *other < mine)
                .min()
                .map(|(_, name)| (group.to_owned(), name))
        })
    }

    /// Reports `error`: `Valid=False` with `reason` in the status, the `invalid_spec` decision metric, and (through
    /// the returned error) one Warning Event and log line. Remembered, so the pool is not checked again (nor
    /// warned about) until its spec changes or the resync interval passes: every Node and Pod change re-runs every
    /// pool, and an invalid one used to warn several times a second.
    async fn reject(&self, pool: &NodePool, error: SpecError, reason: &str) -> ReconcileError {
        let name = pool.name_any();
        self.metrics.decision(&name, "invalid_spec", 0);
        if let Err(e) = self
            .write_status(pool, status::invalid(pool, &error, reason, status::now()))
            .await
        {
            return e;
        }
        self.with_memory(&name, |m| {
            m.invalid = Some((pool.metadata.generation, tokio::time::Instant::now()));
        });
        ReconcileError::invalid(error.field, error.message)
    }

    /// How long a pool rejected before stays rejected without a look: until the resync interval has passed since,
    /// unless its spec changed (a new generation).
    fn still_invalid(&self, pool: &NodePool) -> Option<Duration> {
        let resync = self.config.resync_interval;
        self.with_memory(&pool.name_any(), |m| {
            let (generation, since) = m.invalid?;
            let age = since.elapsed();
            (generation == pool.metadata.generation && age < resync).then(|| resync - age)
        })
    }

    /// The groups' sizes and prices, instances and template nodes, read once per reconcile.
    async fn snapshot<'a>(&'a self, pool: &'a NodePool) -> Result<Round<'a>, ReconcileError> {
        let name = pool.name_any();
        // The manager starts this controller only for providers with node groups.
        let groups = self.provider.node_groups().unwrap_or(&Unsupported);
        let known = match groups.node_groups().await {
            Ok(known) => known,
            Err(e) => return Err(ReconcileError::cloud("NodeGroups", e)),
        };
        let mut offered = Vec::new();
        let mut instances = Vec::new();
        for id in pool.spec.group_ids() {
            let Some(info) = known.iter().find(|g| g.id == id) else {
                return Err(self.group_error(pool, id, "NodeGroups", None).await);
            };
            match groups.instances(id).await {
                Ok(found) => instances.extend(found.into_iter().map(|i| (id.to_owned(), i))),
                Err(e) => {
                    return Err(self
                        .group_error(pool, id, "NodeGroupInstances", Some(e))
                        .await);
                }
            }
            let template = match groups.template_node(id).await {
                Ok(template) => template,
                Err(e) => return Err(self.group_error(pool, id, "TemplateNode", Some(e)).await),
            };
            offered.push(Group {
                id: id.to_owned(),
                shape: NodeShape::for_pool(&template, &pool.spec, &name),
                price: info.price,
                max_size: info.max_size,
            });
        }
        self.with_memory(&name, |m| {
            m.shapes = offered.iter().map(|g| g.shape.clone()).collect();
            m.invalid = None;
        });
        self.retired_groups(pool, &known, &mut offered, &mut instances)
            .await?;
        Ok(Round {
            pool,
            name,
            groups,
            offered,
            instances,
            now: status::now(),
            next: NextLook(self.config.resync_interval),
            status_nodes: Vec::new(),
            scale_up: None,
            scale_down: None,
        })
    }

    /// The groups the pool's nodes came from that its spec no longer names (from `status.nodes[].nodeGroup`):
    /// their instances stay members — drifted, so replaced — but nothing is launched from them (`max_size` 0).
    async fn retired_groups(
        &self,
        pool: &NodePool,
        known: &[cloudprovider_api::NodeGroup],
        offered: &mut Vec<Group>,
        instances: &mut Vec<(String, CloudInstance)>,
    ) -> Result<(), ReconcileError> {
        let groups = self.provider.node_groups().unwrap_or(&Unsupported);
        let named = pool.spec.group_ids();
        let retired: BTreeSet<&str> = pool
            .status
            .iter()
            .flat_map(|s| s.nodes.iter())
            .filter_map(|n| n.node_group.as_deref())
            .filter(|g| !named.contains(g) && known.iter().any(|k| k.id == *g))
            .collect();
        for id in retired {
            let found = match groups.instances(id).await {
                Ok(found) => found,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(ReconcileError::cloud("NodeGroupInstances", e)),
            };
            let template = match groups.template_node(id).await {
                Ok(template) => template,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(ReconcileError::cloud("TemplateNode", e)),
            };
            instances.extend(found.into_iter().map(|i| (id.to_owned(), i)));
            offered.push(Group {
                id: id.to_owned(),
                shape: NodeShape::for_pool(&template, &pool.spec, &pool.name_any()),
                price: None,
                max_size: 0,
            });
        }
        Ok(())
    }

    /// A provider error about one of the pool's groups: an unknown group (`error` `None` or not-found) is the
    /// user's to fix (`Valid=False`), anything else the cloud's (retried).
    async fn group_error(
        &self,
        pool: &NodePool,
        group: &str,
        op: &'static str,
        error: Option<CloudError>,
    ) -> ReconcileError {
        match error {
            Some(e) if !e.is_not_found() => ReconcileError::cloud(op, e),
            _ => {
                let message = format!("the provider has no node group {group:?}");
                let e = SpecError::new(group_field(pool, group), message);
                self.reject(pool, e, status::NODE_GROUP_NOT_FOUND).await
            }
        }
    }

    /// Step 2: failed and timed-out instances are removed; returns the live members (not failed, not deleting).
    async fn cleanup(&self, round: &mut Round<'_>) -> Vec<Member> {
        let mut live = Vec::new();
        for member in self.members(round.pool, &round.instances, round.now) {
            match member.check(&round.pool.spec, round.now) {
                Err(failure) => {
                    if self
                        .remove_failed(round.pool, round.groups, &member, &failure)
                        .await
                    {
                        round.scale_down = Some(decision(
                            1,
                            format!("{}: {}", failure.reason(), member.provider_id),
                            round.now,
                        ));
                    }
                }
                Ok(deadline) => {
                    if let Some(d) = deadline {
                        round.next.at_most(d);
                    }
                    if member.state == CloudInstanceState::Deleting {
                        round.status_nodes.push(entry(&member, Phase::Deleting));
                    } else {
                        live.push(member);
                    }
                }
            }
        }
        live
    }

    /// Step 3: registered Nodes get the pool's labels and taints; phase transitions are announced once.
    async fn registration(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
    ) -> Result<(), ReconcileError> {
        for member in live {
            if let Some(node) = &member.node {
                self.register(round.pool, member, node).await?;
            }
            self.announce(round.pool, member, round.now).await;
            if matches!(member.phase(), Phase::Launching | Phase::Registered) {
                round.next.at_most(self.config.poll_interval);
            }
        }
        Ok(())
    }

    fn pod_view<'p>(&self, round: &Round<'_>, pods: &'p [Arc<Pod>]) -> PodView<'p> {
        let fits = |p: &Pod| {
            round
                .offered
                .iter()
                .any(|g| fits_shape(p, &g.shape).is_ok())
        };
        let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for pod in pods {
            if let Some(node) = bound_node(pod) {
                by_node.entry(node).or_default().push(pod);
            }
        }
        let pending = pods
            .iter()
            .filter(|p| is_unschedulable(p) && fits(p))
            .filter(|p| self.counts_for(round.pool, p))
            .collect();
        PodView { by_node, pending }
    }

    /// Step 5: empty, ready nodes not needed by a pending pod are removed after the delay, never below
    /// `minNodes`, within the disruption budget; then step 5b ([`disruption_step`](Self::disruption_step)).
    /// Returns the provider IDs removed.
    async fn scale_down_step(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        placement: &Placement,
        mut remaining: u32,
    ) -> Result<BTreeSet<String>, ReconcileError> {
        let delay = round.pool.spec.empty_node_delay();
        let mut removed = BTreeSet::new();
        // Empty nodes count against the disruption budget too (Karpenter's `Empty` reason).
        let busy = self.with_memory(&round.name, |m| m.disrupting.len());
        let total = u32::try_from(live.len()).unwrap_or(u32::MAX);
        let mut budget = room_in_budget(&round.pool.spec, total, busy, round.now);
        for (i, member) in live.iter().enumerate() {
            let Some(node) = member
                .node
                .as_ref()
                .filter(|_| member.phase() == Phase::Ready)
            else {
                continue;
            };
            let key = (node.name_any(), node.uid().unwrap_or_default());
            let busy = view
                .by_node
                .get(node.name_any().as_str())
                .is_some_and(|pods| pods.iter().any(|p| blocks_removal(p)));
            let kept = do_not_disrupt(&node.metadata);
            if busy || kept || placement.existing_used.get(i).copied().unwrap_or(false) {
                self.with_memory(&round.name, |m| m.empty_since.remove(&key));
                continue;
            }
            let since = self.with_memory(&round.name, |m| {
                *m.empty_since
                    .entry(key.clone())
                    .or_insert_with(tokio::time::Instant::now)
            });
            let waited = since.elapsed();
            if waited < delay {
                round.next.at_most(delay - waited);
                continue;
            }
            if remaining <= round.pool.spec.min_nodes || budget == 0 {
                continue;
            }
            if self
                .remove_empty(round.pool, round.groups, member, node, waited)
                .await?
            {
                remaining -= 1;
                budget = budget.saturating_sub(1);
                removed.insert(member.provider_id.clone());
                self.with_memory(&round.name, |m| m.empty_since.remove(&key));
                round.scale_down = Some(decision(
                    1,
                    format!("empty node {} removed", node.name_any()),
                    round.now,
                ));
            }
        }
        let disrupted = self
            .disruption_step(round, live, view, removed.len())
            .await?;
        removed.extend(disrupted);
        Ok(removed)
    }

    /// Step 6: counts, one entry per instance, conditions and the last decisions, written only when changed.
    async fn status_step(
        &self,
        mut round: Round<'_>,
        live: &[Member],
        removed: &BTreeSet<String>,
    ) -> Result<Action, ReconcileError> {
        for member in live {
            let phase = if removed.contains(&member.provider_id) {
                Phase::Deleting
            } else {
                member.phase()
            };
            round.status_nodes.push(entry(member, phase));
        }
        let kept: Vec<Member> = live
            .iter()
            .filter(|m| !removed.contains(&m.provider_id))
            .cloned()
            .collect();
        let mut resources = in_use(&round, &kept);
        for launched in round
            .status_nodes
            .iter()
            .filter(|n| n.phase == Phase::Launching.as_str())
        {
            let fresh = !live.iter().any(|m| m.provider_id == launched.provider_id);
            if let Some(g) = launched.node_group.as_deref().filter(|_| fresh)
                && let Some(group) = round.offered.iter().find(|o| o.id == g)
            {
                resources.add(&group.shape.capacity);
            }
        }
        let observed = Observed {
            resources: resources.to_quantities(),
            nodes: round.status_nodes,
            scale_up: round.scale_up,
            scale_down: round.scale_down,
        };
        let new_status = status::observed(round.pool, observed, round.now);
        self.metrics.set_nodes(
            &round.name,
            new_status.desired_nodes,
            new_status.launching_nodes,
            new_status.ready_nodes,
        );
        self.write_status(round.pool, new_status).await?;
        Ok(Action::requeue(round.next.0))
    }
}

/// The capacity of the pool's live nodes (their groups' shapes), what counts against `spec.limits`.
pub(super) fn in_use(round: &Round<'_>, live: &[Member]) -> Resources {
    let mut sum = Resources::default();
    for member in live {
        sum.add(&round.shape_of(member).capacity);
    }
    sum
}

/// The spec field naming `group`: `spec.nodeGroup` or `spec.nodeGroups[i]`.
fn group_field(pool: &NodePool, group: &str) -> String {
    match pool.spec.node_groups.iter().position(|g| g == group) {
        Some(i) if pool.spec.node_group != group => format!("spec.nodeGroups[{i}]"),
        _ => "spec.nodeGroup".to_owned(),
    }
}
