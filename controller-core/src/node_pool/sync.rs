//! One reconcile of a pool, step by step as the module docs list them: spec check, cleanup, registration, scale
//! up, scale down, status. [`PoolReconciler::sync`] runs the steps in order on one [`Round`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use std::time::Duration;

use cloudprovider_api::{CloudError, CloudInstance, CloudInstanceState, NodeGroups, Unsupported};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::consolidation::{Seat, candidate, do_not_disrupt, pods_forbid};
use super::crd::{ConsolidationPolicy, NodePool, PoolNodeStatus, ScalingDecision, SpecError};
use super::lifecycle::{Member, Phase, blocks_removal, bound_node};
use super::reconcile::{NextLook, decision, entry, free_room, pod_key};
use super::resources::{Resources, pod_requests};
use super::scale_up::{NodeShape, Plan as Placement, fits_shape, is_unschedulable, plan};
use super::status::{self, Observed};
use super::{PoolReconciler, reasons};
use crate::runtime::ReconcileError;

/// What one reconcile of a pool reads once and accumulates as its steps run.
struct Round<'a> {
    pool: &'a NodePool,
    name: String,
    groups: &'a dyn NodeGroups,
    instances: Vec<CloudInstance>,
    shape: NodeShape,
    now: Timestamp,
    next: NextLook,
    status_nodes: Vec<PoolNodeStatus>,
    scale_up: Option<ScalingDecision>,
    scale_down: Option<ScalingDecision>,
}

/// The cluster's pods as the scale steps need them.
struct PodView<'p> {
    /// Pods bound to each node, by node name.
    by_node: BTreeMap<&'p str, Vec<&'p Pod>>,
    /// Unschedulable pods that would fit the pool's node and count for this pool.
    pending: Vec<&'p Arc<Pod>>,
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
        if let Some(owner) = self.group_owner(pool) {
            let e = SpecError::new(
                "spec.nodeGroup",
                format!(
                    "node group {:?} is already used by NodePool {owner:?}; a node group belongs to one pool \
                     (the oldest), so this one launches and removes nothing",
                    pool.spec.node_group
                ),
            );
            return Err(self.reject(pool, e, status::NODE_GROUP_IN_USE).await);
        }
        Ok(())
    }

    /// The older pool that owns this pool's node group, if it is not this one.
    pub(super) fn group_owner(&self, pool: &NodePool) -> Option<String> {
        let age = |p: &NodePool| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.name_any(),
            )
        };
        let mine = age(pool);
        self.pools
            .state()
            .iter()
            .filter(|p| {
                // A pool being deleted keeps its group until its nodes are drained and its finalizer is gone.
                p.spec.node_group == pool.spec.node_group && p.name_any() != mine.1
            })
            .map(|p| age(p))
            .filter(|other| *other < mine)
            .min()
            .map(|(_, name)| name)
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

    /// The group's instances and template node, read once per reconcile.
    async fn snapshot<'a>(&'a self, pool: &'a NodePool) -> Result<Round<'a>, ReconcileError> {
        let name = pool.name_any();
        // The manager starts this controller only for providers with node groups.
        let groups = self.provider.node_groups().unwrap_or(&Unsupported);
        let group = pool.spec.node_group.as_str();
        let instances = match groups.instances(group).await {
            Ok(instances) => instances,
            Err(e) => return Err(self.group_error(pool, "NodeGroupInstances", e).await),
        };
        let template = match groups.template_node(group).await {
            Ok(template) => template,
            Err(e) => return Err(self.group_error(pool, "TemplateNode", e).await),
        };
        let shape = NodeShape::for_pool(&template, &pool.spec, &name);
        self.with_memory(&name, |m| {
            m.shape = Some(shape.clone());
            m.invalid = None;
        });
        Ok(Round {
            pool,
            name,
            groups,
            instances,
            shape,
            now: status::now(),
            next: NextLook(self.config.resync_interval),
            status_nodes: Vec::new(),
            scale_up: None,
            scale_down: None,
        })
    }

    /// A provider error about the pool's group: an unknown group is the user's to fix (`Valid=False`), anything
    /// else the cloud's (retried).
    async fn group_error(
        &self,
        pool: &NodePool,
        op: &'static str,
        e: CloudError,
    ) -> ReconcileError {
        if e.is_not_found() {
            let message = format!("the provider has no node group {:?}", pool.spec.node_group);
            let e = SpecError::new("spec.nodeGroup", message);
            self.reject(pool, e, status::NODE_GROUP_NOT_FOUND).await
        } else {
            ReconcileError::cloud(op, e)
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
        let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for pod in pods {
            if let Some(node) = bound_node(pod) {
                by_node.entry(node).or_default().push(pod);
            }
        }
        let pending = pods
            .iter()
            .filter(|p| is_unschedulable(p) && fits_shape(p, &round.shape).is_ok())
            .filter(|p| self.counts_for(&round.name, p))
            .collect();
        PodView { by_node, pending }
    }

    /// The pending pods bin-packed onto the free room of the live nodes (launching ones included), then new nodes
    /// up to `maxNodes`.
    fn placement(
        &self,
        round: &Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        live_count: u32,
    ) -> Placement {
        let requests: Vec<Resources> = view.pending.iter().map(|p| pod_requests(p)).collect();
        let room: Vec<Resources> = live
            .iter()
            .map(|m| free_room(m, &round.shape, &view.by_node))
            .collect();
        let max_new = round.pool.spec.max_nodes.saturating_sub(live_count);
        plan(&requests, &room, &round.shape.allocatable, max_new)
    }

    /// Step 4: launches what the placement needs once the batch of pending pods has settled (or what `minNodes`
    /// needs); returns how many were launched.
    async fn scale_up_step(
        &self,
        round: &mut Round<'_>,
        view: &PodView<'_>,
        placement: &Placement,
        live_count: u32,
    ) -> Result<u32, ReconcileError> {
        let spec = &round.pool.spec;
        let mut launch = 0;
        if placement.new_nodes > 0 {
            let pending_ids: BTreeSet<String> = view.pending.iter().map(|p| pod_key(p)).collect();
            match self.batch_wait(&round.name, pending_ids) {
                Some(wait) => round.next.at_most(wait),
                None => launch = placement.new_nodes,
            }
        } else {
            self.with_memory(&round.name, |m| m.batch = None);
        }
        let max_new = spec.max_nodes.saturating_sub(live_count);
        self.announce_max_nodes(round, placement, max_new);
        let launch = launch.max(spec.min_nodes.saturating_sub(live_count));
        if launch == 0 {
            return Ok(0);
        }
        let why = if placement.new_nodes >= launch {
            format!(
                "{} pending pod(s): {} on nodes already there or launching, {} on new ones",
                view.pending.len(),
                placement.on_existing,
                placement.on_new
            )
        } else {
            format!("below spec.minNodes {}", spec.min_nodes)
        };
        let launched = self
            .scale_up(
                round.pool,
                round.groups,
                &round.instances,
                launch,
                &why,
                round.now,
            )
            .await?;
        for provider_id in launched {
            round.status_nodes.push(PoolNodeStatus {
                provider_id,
                node_name: None,
                phase: Phase::Launching.as_str().to_owned(),
                launched_at: Time(round.now),
            });
        }
        round.scale_up = Some(decision(launch, why, round.now));
        round.next.at_most(self.config.poll_interval);
        Ok(launch)
    }

    /// `NotTriggerScaleUp` when pods are left out at `maxNodes`, announced when their number changes, not on every
    /// reconcile.
    fn announce_max_nodes(&self, round: &Round<'_>, placement: &Placement, max_new: u32) {
        let left_out = (placement.unplaced > 0 && placement.new_nodes == max_new)
            .then_some(placement.unplaced);
        let changed = self.with_memory(&round.name, |m| {
            std::mem::replace(&mut m.left_out_at_max, left_out) != left_out
        });
        if left_out.is_some() && changed {
            self.metrics.decision(&round.name, "max_nodes_reached", 0);
            self.events.normal(
                &round.pool.object_ref(&()),
                reasons::NOT_TRIGGER_SCALE_UP,
                format!(
                    "{} pending pod(s) would fit but the pool is at spec.maxNodes {}",
                    placement.unplaced, round.pool.spec.max_nodes
                ),
            );
        }
    }

    /// Step 5: empty, ready nodes not needed by a pending pod are removed after the delay, never below
    /// `minNodes`; returns the provider IDs removed.
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
            if remaining <= round.pool.spec.min_nodes {
                continue;
            }
            if self
                .remove_empty(round.pool, round.groups, member, node, waited)
                .await?
            {
                remaining -= 1;
                removed.insert(member.provider_id.clone());
                self.with_memory(&round.name, |m| m.empty_since.remove(&key));
                round.scale_down = Some(decision(
                    1,
                    format!("empty node {} removed", node.name_any()),
                    round.now,
                ));
            }
        }
        let underutilized =
            round.pool.spec.consolidation_policy == ConsolidationPolicy::WhenEmptyOrUnderutilized;
        if removed.is_empty()
            && underutilized
            && let Some(gone) = self
                .consolidation_step(round, live, view, remaining)
                .await?
        {
            removed.insert(gone);
        }
        Ok(removed)
    }

    /// Step 5b (`consolidationPolicy: WhenEmptyOrUnderutilized`): the node being consolidated goes on draining; else,
    /// when nothing is pending or launching, the candidate of [`candidate`] starts after the delay. One at a time.
    async fn consolidation_step(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        remaining: u32,
    ) -> Result<Option<String>, ReconcileError> {
        let target = match self.with_memory(&round.name, |m| m.consolidating.clone()) {
            Some(pid) => live.iter().find(|m| m.provider_id == pid),
            None => self.next_to_consolidate(round, live, view, remaining),
        };
        let clear = |m: &mut super::PoolMemory| m.consolidating = None;
        let Some((member, node)) = target.and_then(|m| Some((m, m.node.as_deref()?))) else {
            self.with_memory(&round.name, clear);
            return Ok(None);
        };
        if self
            .consolidate(round.pool, round.groups, member, node)
            .await?
        {
            self.with_memory(&round.name, clear);
            let why = format!("underutilized node {} consolidated", node.name_any());
            round.scale_down = Some(decision(1, why, round.now));
            return Ok(Some(member.provider_id.clone()));
        }
        round.next.at_most(self.config.poll_interval);
        Ok(None)
    }

    /// The member to start consolidating now, if one has been the candidate for the delay.
    fn next_to_consolidate<'m>(
        &self,
        round: &mut Round<'_>,
        live: &'m [Member],
        view: &PodView<'_>,
        remaining: u32,
    ) -> Option<&'m Member> {
        let settled = live
            .iter()
            .all(|m| !matches!(m.phase(), Phase::Launching | Phase::Registered));
        let seats: Vec<Seat> = live.iter().map(|m| seat(m, &round.shape, view)).collect();
        let pick = (view.pending.is_empty() && settled && remaining > round.pool.spec.min_nodes)
            .then(|| candidate(&seats))
            .flatten();
        let Some(index) = pick else {
            self.with_memory(&round.name, |m| m.underused = None);
            return None;
        };
        let member = live.get(index)?;
        let since = self.with_memory(&round.name, |m| match &m.underused {
            Some((pid, since)) if *pid == member.provider_id => *since,
            _ => {
                let now = tokio::time::Instant::now();
                m.underused = Some((member.provider_id.clone(), now));
                now
            }
        });
        let (delay, waited) = (round.pool.spec.empty_node_delay(), since.elapsed());
        if waited < delay {
            round.next.at_most(delay - waited);
            return None;
        }
        self.with_memory(&round.name, |m| {
            m.underused = None;
            m.consolidating = Some(member.provider_id.clone());
        });
        Some(member)
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
        let observed = Observed {
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

/// A member as consolidation sees it: ready, with the pods that keep it, and what is free on it.
fn seat(member: &Member, shape: &NodeShape, view: &PodView<'_>) -> Seat {
    let Some(node) = member
        .node
        .as_deref()
        .filter(|_| member.phase() == Phase::Ready)
    else {
        return Seat::default();
    };
    let name = node.name_any();
    let pods: Vec<&Pod> = view
        .by_node
        .get(name.as_str())
        .into_iter()
        .flatten()
        .copied()
        .filter(|p| blocks_removal(p))
        .collect();
    Seat {
        eligible: !pods.is_empty() && !do_not_disrupt(&node.metadata) && !pods_forbid(&pods),
        load: pods.iter().map(|p| pod_requests(p)).collect(),
        room: free_room(member, shape, &view.by_node),
    }
}
