//! Step 5b of a pool's reconcile: the writing half of [`disruption`](super::disruption) — goes on with the
//! disruptions in progress (plan, launch replacements, wait for them, drain), then starts new ones within the
//! budget.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Resource, ResourceExt};
use tracing::info;

use super::consolidation::{Seat, candidate, do_not_disrupt, pods_forbid};
use super::crd::ConsolidationPolicy;
use super::disruption::{Disruption, Reason, forced, movers, room_in_budget, until_expiry};
use super::drain::DISRUPTED_TAINT;
use super::launch::{existing, offers};
use super::lifecycle::{Member, Phase, blocks_removal};
use super::packing::{self, Budget, Plan};
use super::reconcile::{decision, delete_instance, free_room};
use super::scale_up::NodeShape;
use super::sync::{PodView, Round};
use super::{PoolReconciler, reasons};
use crate::runtime::ReconcileError;

impl PoolReconciler {
    /// Step 5b: disruptions in progress go on; new ones start when nothing is pending or launching, within the
    /// budget (which `removed_empty`, this round's empty-node removals, count against). Returns the provider IDs
    /// removed.
    pub(super) async fn disruption_step(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        removed_empty: usize,
    ) -> Result<BTreeSet<String>, ReconcileError> {
        self.adopt_tainted(round, live);
        let expire_after = round.pool.spec.expire_after().ok().flatten();
        for member in live {
            if let Some(d) = until_expiry(member, expire_after, round.now) {
                round.next.at_most(d);
            }
        }
        let mut removed = BTreeSet::new();
        let current = self.with_memory(&round.name, |m| {
            m.disrupting
                .retain(|pid, _| live.iter().any(|l| l.provider_id == *pid));
            m.disrupting.clone()
        });
        for (pid, disruption) in current {
            let Some(member) = live.iter().find(|m| m.provider_id == pid) else {
                continue;
            };
            if self.advance(round, live, view, member, disruption).await? {
                removed.insert(pid);
            }
        }
        let busy = self.with_memory(&round.name, |m| m.disrupting.len()) + removed_empty;
        let total = u32::try_from(live.len()).unwrap_or(u32::MAX);
        let room = room_in_budget(&round.pool.spec, total, busy, round.now);
        let settled = live
            .iter()
            .all(|m| !matches!(m.phase(), Phase::Launching | Phase::Registered));
        if room == 0 || !view.pending.is_empty() || !settled {
            return Ok(removed);
        }
        let left: Vec<Member> = live
            .iter()
            .filter(|m| !removed.contains(&m.provider_id))
            .cloned()
            .collect();
        for (pid, disruption) in self.pick(round, &left, view, room) {
            let Some(member) = left.iter().find(|m| m.provider_id == pid) else {
                continue;
            };
            info!(pool = %round.name, provider_id = %pid, why = %disruption.why, "disrupting node");
            self.with_memory(&round.name, |m| {
                m.disrupting.insert(pid.clone(), disruption.clone());
            });
            if self.advance(round, &left, view, member, disruption).await? {
                removed.insert(pid);
            }
        }
        Ok(removed)
    }

    /// Nodes still tainted by a disruption the controller no longer remembers (it restarted mid-drain) are taken
    /// up again, so they neither stay tainted forever nor escape the budget.
    fn adopt_tainted(&self, round: &Round<'_>, live: &[Member]) {
        for member in live {
            let Some(node) = member.node.as_deref() else {
                continue;
            };
            let tainted = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == DISRUPTED_TAINT));
            if tainted {
                self.with_memory(&round.name, |m| {
                    m.disrupting
                        .entry(member.provider_id.clone())
                        .or_insert_with(|| {
                            let why = format!(
                                "resuming the disruption of node {} (tainted {DISRUPTED_TAINT})",
                                node.name_any()
                            );
                            Disruption::new(Reason::Underutilized, why)
                        });
                });
            }
        }
    }

    /// Up to `room` new disruptions: expired and drifted nodes first, then (with `WhenEmptyOrUnderutilized`) the
    /// consolidation candidate once it has been one for `emptyNodeDelaySeconds`.
    fn pick(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        room: usize,
    ) -> Vec<(String, Disruption)> {
        let spec = &round.pool.spec;
        let expire_after = spec.expire_after().ok().flatten();
        let busy = self.with_memory(&round.name, |m| m.disrupting.clone());
        let mut picked: Vec<(String, Disruption)> = live
            .iter()
            .filter(|m| !busy.contains_key(&m.provider_id) && may_disrupt(m, view))
            .filter_map(|m| {
                Some((
                    m.provider_id.clone(),
                    forced(m, spec, expire_after, round.now)?,
                ))
            })
            .take(room)
            .collect();
        let underutilized =
            spec.consolidation_policy == ConsolidationPolicy::WhenEmptyOrUnderutilized;
        if picked.len() < room
            && busy.is_empty()
            && picked.is_empty()
            && underutilized
            && let Some(next) = self.consolidation(round, live, view)
        {
            picked.push(next);
        }
        picked
    }

    /// The consolidation candidate — a node whose pods fit on the others (deleted), else one whose pods one
    /// cheaper node would hold (replaced) — once it has been the candidate for `emptyNodeDelaySeconds`.
    fn consolidation(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
    ) -> Option<(String, Disruption)> {
        let live_count = u32::try_from(live.len()).unwrap_or(u32::MAX);
        let seats: Vec<Seat> = live
            .iter()
            .map(|m| seat(m, round.shape_of(m), view))
            .collect();
        let delete = (live_count > round.pool.spec.min_nodes)
            .then(|| candidate(&seats))
            .flatten()
            .and_then(|i| live.get(i))
            .map(|m| {
                let node = m.node.as_ref().map(|n| n.name_any()).unwrap_or_default();
                let why =
                    format!("node {node} is underutilized: its pods fit on the pool's other nodes");
                (
                    m.provider_id.clone(),
                    Disruption::new(Reason::Underutilized, why),
                )
            });
        let Some((pid, disruption)) = delete.or_else(|| self.cheaper(round, live, view)) else {
            self.with_memory(&round.name, |m| m.underused = None);
            return None;
        };
        let since = self.with_memory(&round.name, |m| match &m.underused {
            Some((p, since)) if *p == pid => *since,
            _ => {
                let now = tokio::time::Instant::now();
                m.underused = Some((pid.clone(), now));
                now
            }
        });
        let (delay, waited) = (round.pool.spec.empty_node_delay(), since.elapsed());
        if waited < delay {
            round.next.at_most(delay - waited);
            return None;
        }
        self.with_memory(&round.name, |m| m.underused = None);
        Some((pid, disruption))
    }

    /// The ready node with the largest saving whose pods the others plus new nodes costing less than it would
    /// hold.
    fn cheaper(
        &self,
        round: &Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
    ) -> Option<(String, Disruption)> {
        let mut best: Option<(f64, String, Disruption)> = None;
        for member in live.iter().filter(|m| may_disrupt(m, view)) {
            let Some(price) = round.offered[round.group_of(member)].price else {
                continue;
            };
            // Only offers cheaper than the node itself: new nodes fill up to the largest of those, so one large
            // node can also become two smaller ones that cost less together.
            let plan = self.replacement_plan(round, live, view, member, Some(price));
            let cheaper =
                plan.unplaced.is_empty() && plan.new_nodes >= 1 && plan.price < price - 1e-9;
            if !cheaper {
                continue;
            }
            let saving = price - plan.price;
            if best.as_ref().is_none_or(|(s, ..)| saving > *s) {
                let node = member
                    .node
                    .as_ref()
                    .map(|n| n.name_any())
                    .unwrap_or_default();
                let why = format!(
                    "node {node} is underutilized: {} node(s) at {:.4}/h instead of {price:.4}/h hold its pods",
                    plan.new_nodes, plan.price
                );
                best = Some((
                    saving,
                    member.provider_id.clone(),
                    Disruption::new(Reason::Replaced, why),
                ));
            }
        }
        best.map(|(_, pid, d)| (pid, d))
    }

    /// Where `member`'s pods would go: the pool's other nodes (not being disrupted), then new ones — of offers
    /// priced below `cap`, if given.
    fn replacement_plan(
        &self,
        round: &Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        member: &Member,
        cap: Option<f64>,
    ) -> Plan {
        let Some(node) = member.node.as_deref() else {
            return Plan::default();
        };
        let busy = self.with_memory(&round.name, |m| m.disrupting.clone());
        let others: Vec<Member> = live
            .iter()
            .filter(|m| m.provider_id != member.provider_id && !busy.contains_key(&m.provider_id))
            .filter(|m| !matches!(m.phase(), Phase::NotReady | Phase::Deleting))
            .cloned()
            .collect();
        let pods: Vec<&Pod> = movers(&view.by_node, node);
        let mut offers = offers(round);
        if let Some(cap) = cap {
            for offer in &mut offers {
                if offer.price.is_none_or(|p| p >= cap) {
                    offer.headroom = 0;
                }
            }
        }
        let existing = existing(round, &others, view);
        let budget = Budget {
            max_new: round
                .pool
                .spec
                .max_nodes
                .saturating_sub(u32::try_from(others.len()).unwrap_or(u32::MAX)),
            limits: self.remaining_limits(round, &others),
        };
        packing::plan(&pods, &existing, &offers, &budget)
    }

    /// One step of a disruption; true once the node and its instance are gone.
    async fn advance(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        member: &Member,
        mut d: Disruption,
    ) -> Result<bool, ReconcileError> {
        let Some(node) = member.node.clone() else {
            return Ok(false);
        };
        let pool_ref = round.pool.object_ref(&());
        let pool_name = round.name.clone();
        let save = |d: &Disruption| {
            self.with_memory(&pool_name, |m| {
                m.disrupting.insert(member.provider_id.clone(), d.clone());
            });
        };
        if !d.planned {
            match self
                .plan_replacements(round, live, view, member, &node, &d)
                .await?
            {
                None => return Ok(false),
                Some(launched) => {
                    d.planned = true;
                    save(&d);
                    if launched > 0 {
                        round.next.at_most(self.config.poll_interval);
                        return Ok(false);
                    }
                }
            }
        }
        let launching = live
            .iter()
            .any(|m| matches!(m.phase(), Phase::Launching | Phase::Registered));
        if launching {
            if !d.waiting_announced {
                let note = format!(
                    "waiting for the replacement of node {} to be ready: {}",
                    node.name_any(),
                    d.why
                );
                self.events
                    .normal(&pool_ref, reasons::DISRUPTION_WAITING_READINESS, note);
                d.waiting_announced = true;
                save(&d);
            }
            round.next.at_most(self.config.poll_interval);
            return Ok(false);
        }
        if !d.terminating_announced {
            let note = format!("draining node {}: {}", node.name_any(), d.why);
            self.events
                .normal(&pool_ref, reasons::DISRUPTION_TERMINATING, note.clone());
            self.events
                .normal(&node.object_ref(&()), reasons::DISRUPTION_TERMINATING, note);
            d.terminating_announced = true;
            save(&d);
        }
        if !self.drain_and_delete(round.pool, &node).await? {
            round.next.at_most(self.config.poll_interval);
            return Ok(false);
        }
        delete_instance(round.groups, member).await?;
        self.with_memory(&round.name, |m| m.disrupting.remove(&member.provider_id));
        let note = match d.reason {
            Reason::Underutilized => format!(
                "consolidated underutilized node {} (instance {}): its pods fit on the pool's other nodes",
                node.name_any(),
                member.provider_id
            ),
            _ => format!(
                "removed node {} (instance {}): {}",
                node.name_any(),
                member.provider_id,
                d.why
            ),
        };
        info!(pool = %round.name, node = node.name_any(), reason = d.reason.label(), "disrupted node removed");
        self.metrics.decision(&round.name, d.reason.label(), 1);
        self.events
            .normal(&pool_ref, reasons::SCALE_DOWN, note.clone());
        self.events
            .normal(&node.object_ref(&()), reasons::SCALE_DOWN, note);
        round.scale_down = Some(decision(1, d.why.clone(), round.now));
        Ok(true)
    }

    /// Steps 1 and 2 of a disruption: where the node's pods go, and the new nodes launched for them. `None` when
    /// some would fit nowhere (`DisruptionBlocked`; the disruption is dropped), else how many were launched.
    async fn plan_replacements(
        &self,
        round: &mut Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        member: &Member,
        node: &Node,
        d: &Disruption,
    ) -> Result<Option<u32>, ReconcileError> {
        let cap = (d.reason == Reason::Replaced)
            .then(|| round.offered[round.group_of(member)].price)
            .flatten();
        let plan = self.replacement_plan(round, live, view, member, cap);
        let stuck: usize = plan.unplaced.values().sum();
        if stuck > 0 {
            let note = format!(
                "not disrupting node {}: {stuck} of its pods would fit nowhere else (spec.maxNodes, spec.limits \
                 or the node groups' sizes); {}",
                node.name_any(),
                d.why
            );
            self.metrics.decision(&round.name, "disruption_blocked", 0);
            self.events.normal(
                &round.pool.object_ref(&()),
                reasons::DISRUPTION_BLOCKED,
                note,
            );
            self.with_memory(&round.name, |m| m.disrupting.remove(&member.provider_id));
            return Ok(None);
        }
        self.launch_replacements(round, &plan, &node.name_any(), d)
            .await?;
        Ok(Some(plan.new_nodes))
    }

    /// Launches the new nodes of a replacement plan (`DisruptionLaunching`).
    async fn launch_replacements(
        &self,
        round: &mut Round<'_>,
        plan: &Plan,
        node: &str,
        d: &Disruption,
    ) -> Result<(), ReconcileError> {
        if plan.new_nodes == 0 {
            return Ok(());
        }
        let why = format!("replacing node {node}: {}", d.why);
        self.events.normal(
            &round.pool.object_ref(&()),
            reasons::DISRUPTION_LAUNCHING,
            format!("launching {} node(s) first: {why}", plan.new_nodes),
        );
        self.launch_all(round, &plan.launches, &why).await?;
        round.scale_up = Some(decision(plan.new_nodes, why, round.now));
        Ok(())
    }
}

/// Whether a member may be picked for disruption: a ready, registered node that neither it nor its pods ask not
/// to be disrupted.
fn may_disrupt(member: &Member, view: &PodView<'_>) -> bool {
    let Some(node) = member.node.as_deref() else {
        return false;
    };
    member.phase() == Phase::Ready
        && !do_not_disrupt(&node.metadata)
        && !pods_forbid(&movers(&view.by_node, node))
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
        load: pods
            .iter()
            .map(|p| super::resources::pod_requests(p))
            .collect(),
        room: free_room(member, shape, &view.by_node),
    }
}
