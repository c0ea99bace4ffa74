//! Step 4 of a pool's reconcile, scale up: where the pending pods go ([`packing`]) and the launches that follow,
//! once the batch of pending pods has settled; `NotTriggerScaleUp` for pods left out at `maxNodes` or `limits`.

use std::collections::{BTreeMap, BTreeSet};

use cloudprovider_api::CloudInstanceState;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use super::crd::PoolNodeStatus;
use super::lifecycle::{Member, Phase};
use super::packing::{self, Blocked, Budget, Existing, Offer, Plan as Placement};
use super::reconcile::{Launch, decision, free_room, pod_key};
use super::resources::Resources;
use super::sync::{Group, PodView, Round, in_use};
use super::{PoolReconciler, reasons};
use crate::runtime::ReconcileError;

impl PoolReconciler {
    /// The pending pods placed on the free room of the live nodes (launching ones included), then on the cheapest
    /// new nodes within `maxNodes`, `limits` and the groups' sizes ([`packing`]).
    pub(super) fn placement(
        &self,
        round: &Round<'_>,
        live: &[Member],
        view: &PodView<'_>,
        live_count: u32,
    ) -> Placement {
        let offers = offers(round);
        let existing = existing(round, live, view);
        let budget = Budget {
            max_new: round.pool.spec.max_nodes.saturating_sub(live_count),
            limits: self.remaining_limits(round, live),
        };
        let pending: Vec<&Pod> = view.pending.iter().map(|p| p.as_ref()).collect();
        let placement = packing::plan(&pending, &existing, &offers, &budget);
        let left_out = placement
            .unplaced_pods
            .iter()
            .filter_map(|&i| pending.get(i))
            .map(|p| pod_key(p))
            .collect();
        self.with_memory(&round.name, |m| m.left_out = left_out);
        placement
    }

    /// `spec.limits` minus the capacity of the pool's live nodes; `None` without limits.
    pub(super) fn remaining_limits(&self, round: &Round<'_>, live: &[Member]) -> Option<Resources> {
        let limits = &round.pool.spec.limits;
        if limits.is_empty() {
            return None;
        }
        Some(Resources::from_quantities(Some(limits)).left_after(&in_use(round, live)))
    }

    /// Step 4: launches what the placement needs once the batch of pending pods has settled (or what `minNodes`
    /// needs, as the cheapest group with room); returns how many were launched.
    pub(super) async fn scale_up_step(
        &self,
        round: &mut Round<'_>,
        view: &PodView<'_>,
        placement: &Placement,
        live_count: u32,
    ) -> Result<u32, ReconcileError> {
        let spec = &round.pool.spec;
        let mut launches = BTreeMap::new();
        if placement.new_nodes > 0 {
            let pending_ids: BTreeSet<String> = view.pending.iter().map(|p| pod_key(p)).collect();
            match self.batch_wait(&round.name, pending_ids) {
                Some(wait) => round.next.at_most(wait),
                None => launches = placement.launches.clone(),
            }
        } else {
            self.with_memory(&round.name, |m| m.batch = None);
        }
        self.announce_left_out(round, placement);
        let planned: u32 = launches.values().sum();
        let below_min = spec
            .min_nodes
            .saturating_sub(live_count.saturating_add(planned));
        if below_min > 0
            && let Some(cheapest) = self.cheapest_group(round)
        {
            *launches.entry(cheapest).or_insert(0) += below_min;
        }
        let total: u32 = launches.values().sum();
        if total == 0 {
            return Ok(0);
        }
        let why = if below_min == 0 {
            format!(
                "{} pending pod(s): {} on nodes already there or launching, {} on new ones",
                view.pending.len(),
                placement.on_existing,
                placement.on_new
            )
        } else {
            format!("below spec.minNodes {}", spec.min_nodes)
        };
        let launched_total = self.launch_all(round, &launches, &why).await?;
        round.scale_up = Some(decision(launched_total, why, round.now));
        round.next.at_most(self.config.poll_interval);
        Ok(launched_total)
    }

    /// Launches `launches` (instances per offer) for `why`; each new instance gets its `Launching` status entry.
    /// Returns how many were asked for.
    pub(super) async fn launch_all(
        &self,
        round: &mut Round<'_>,
        launches: &BTreeMap<usize, u32>,
        why: &str,
    ) -> Result<u32, ReconcileError> {
        let mut total = 0;
        for (&offer, &count) in launches {
            let group = round.offered[offer].id.clone();
            let launch = Launch {
                group: &group,
                count,
                why,
                now: round.now,
            };
            let launched = self
                .scale_up(round.pool, round.groups, &round.instances, launch)
                .await?;
            total += count;
            for provider_id in launched {
                round.status_nodes.push(PoolNodeStatus {
                    provider_id,
                    node_name: None,
                    phase: Phase::Launching.as_str().to_owned(),
                    launched_at: Time(round.now),
                    node_group: Some(group.clone()),
                });
            }
        }
        Ok(total)
    }

    /// The group `minNodes` launches from: the cheapest (then smallest) with room.
    fn cheapest_group(&self, round: &Round<'_>) -> Option<usize> {
        let room = |g: &Group| {
            let have = round.instances.iter().filter(|(id, _)| *id == g.id).count();
            u32::try_from(have).unwrap_or(u32::MAX) < g.max_size
        };
        (0..round.offered.len())
            .filter(|&i| room(&round.offered[i]))
            .min_by(|&a, &b| {
                let (ga, gb) = (&round.offered[a], &round.offered[b]);
                let price = |g: &Group| g.price.unwrap_or(f64::INFINITY);
                let size = |g: &Group| {
                    (
                        g.shape.allocatable.get("cpu"),
                        g.shape.allocatable.get("memory"),
                    )
                };
                price(ga)
                    .total_cmp(&price(gb))
                    .then(size(ga).cmp(&size(gb)))
            })
    }

    /// `NotTriggerScaleUp` when pods are left out at `maxNodes` or `limits`, announced when their number changes,
    /// not on every reconcile.
    fn announce_left_out(&self, round: &Round<'_>, placement: &Placement) {
        let count = |why| placement.unplaced.get(&why).copied().unwrap_or(0);
        let (at_max, at_limits) = (count(Blocked::MaxNodes), count(Blocked::Limits));
        let left_out = (at_max + at_limits > 0).then_some(at_max + at_limits);
        let changed = self.with_memory(&round.name, |m| {
            std::mem::replace(&mut m.left_out_at_max, left_out) != left_out
        });
        if left_out.is_none() || !changed {
            return;
        }
        let spec = &round.pool.spec;
        if at_max > 0 {
            self.metrics.decision(&round.name, "max_nodes_reached", 0);
            self.events.normal(
                &round.pool.object_ref(&()),
                reasons::NOT_TRIGGER_SCALE_UP,
                format!(
                    "{at_max} pending pod(s) would fit but the pool is at spec.maxNodes {} (or its node groups at \
                     their maximum size)",
                    spec.max_nodes
                ),
            );
        }
        if at_limits > 0 {
            self.metrics.decision(&round.name, "limits_reached", 0);
            let limits: Vec<String> = spec
                .limits
                .iter()
                .map(|(k, v)| format!("{k}={}", v.0))
                .collect();
            self.events.normal(
                &round.pool.object_ref(&()),
                reasons::NOT_TRIGGER_SCALE_UP,
                format!(
                    "{at_limits} pending pod(s) would fit but another node would pass spec.limits ({})",
                    limits.join(", ")
                ),
            );
        }
    }
}

/// The pool's groups as [`packing`] offers: shape, price, and how many more instances each takes (none for a group
/// the pool no longer names).
pub(super) fn offers<'r>(round: &'r Round<'_>) -> Vec<Offer<'r>> {
    round
        .offered
        .iter()
        .map(|g| {
            let have = round
                .instances
                .iter()
                .filter(|(id, i)| *id == g.id && i.state != CloudInstanceState::Deleting)
                .count();
            Offer {
                shape: &g.shape,
                price: g.price,
                headroom: g
                    .max_size
                    .saturating_sub(u32::try_from(have).unwrap_or(u32::MAX)),
            }
        })
        .collect()
}

/// `members` as [`packing`] sees them: their group, hostname, free room and bound pods.
pub(super) fn existing<'p>(
    round: &Round<'_>,
    members: &[Member],
    view: &PodView<'p>,
) -> Vec<Existing<'p>> {
    members
        .iter()
        .map(|m| {
            let hostname = m
                .node
                .as_ref()
                .map_or_else(|| m.provider_id.clone(), |n| n.name_any());
            let pods = view
                .by_node
                .get(hostname.as_str())
                .cloned()
                .unwrap_or_default();
            Existing {
                offer: round.group_of(m),
                free: free_room(m, round.shape_of(m), &view.by_node),
                hostname,
                pods,
            }
        })
        .collect()
}
