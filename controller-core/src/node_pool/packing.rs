//! Where the pending pods go, and the cheapest set of instances to launch for the rest: a pure decision over the
//! pool's nodes (existing and launching), its offers (one per node group: shape, price, headroom) and its
//! budget (`maxNodes`, `limits`).
//!
//! The method is Karpenter's: pods in decreasing order of CPU then memory, each onto the first existing node
//! that takes it, else onto the first planned node that some offer could still hold with it, else onto a new
//! planned node. A planned node keeps every offer that fits all its pods (labels, taints, resources), so it fills
//! up to the largest; once every pod is placed, each planned node becomes the cheapest offer that still fits it
//! (without prices: the smallest). Host ports, required pod anti-affinity and `DoNotSchedule` topology spread
//! ([`topology`](super::topology)) narrow the nodes and offers a pod may use; a planned node that gets a pod
//! constrained on a label such as the zone is narrowed to offers sharing one value of it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;

use super::resources::{Resources, pod_requests};
use super::scale_up::{NodeShape, fits_labels};
use super::topology::{AntiAffinity, Demands, HOSTNAME, HostPort};

/// One node group the pool may launch from.
#[derive(Clone, Debug)]
pub(crate) struct Offer<'a> {
    pub(crate) shape: &'a NodeShape,
    /// Per instance-hour; `None` when the provider does not say.
    pub(crate) price: Option<f64>,
    /// How many more instances the group takes (its `maxSize` minus what it has).
    pub(crate) headroom: u32,
}

/// A node of the pool already there or launching.
#[derive(Clone, Debug)]
pub(crate) struct Existing<'p> {
    /// Its offer (node group).
    pub(crate) offer: usize,
    /// Its hostname domain (the Node's name, or the provider ID before it registers).
    pub(crate) hostname: String,
    /// What is left for new pods.
    pub(crate) free: Resources,
    /// The pods bound to it, for host ports, anti-affinity and spread.
    pub(crate) pods: Vec<&'p Pod>,
}

/// What the pool may still add.
#[derive(Clone, Debug, Default)]
pub(crate) struct Budget {
    /// New nodes at most (`maxNodes` minus the pool's nodes).
    pub(crate) max_new: u32,
    /// What the new nodes' capacity may add up to (`limits` minus the pool's nodes' capacity); `None` without
    /// limits.
    pub(crate) limits: Option<Resources>,
}

/// Why a pod that would fit an offer got no node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Blocked {
    /// The pool is at `maxNodes` (or every group it offers is at its `maxSize`).
    MaxNodes,
    /// A new node would pass the pool's `limits`.
    Limits,
    /// No node can take it with its host ports, anti-affinity or spread.
    Topology,
}

/// The placement of the pending pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    /// Instances to launch per offer.
    pub(crate) launches: BTreeMap<usize, u32>,
    /// Their number.
    pub(crate) new_nodes: u32,
    /// Pods placed on existing (or in-flight) nodes.
    pub(crate) on_existing: usize,
    /// Pods placed on new nodes.
    pub(crate) on_new: usize,
    /// Pods left without a node, by why.
    pub(crate) unplaced: BTreeMap<Blocked, usize>,
    /// Which of the pending pods (their indices) are left at `maxNodes` or `limits`.
    pub(crate) unplaced_pods: Vec<usize>,
    /// For each existing node: whether a pending pod was placed on it.
    pub(crate) existing_used: Vec<bool>,
    /// What the launches cost per hour (offers with a price).
    pub(crate) price: f64,
}

#[cfg(test)]
impl Plan {
    /// All pods left without a node.
    pub(crate) fn unplaced_total(&self) -> usize {
        self.unplaced.values().sum()
    }
}

/// A node in the plan: existing (one offer, fixed) or planned (the offers still possible).
#[derive(Debug)]
struct Bin<'p> {
    existing: Option<usize>,
    offers: Vec<usize>,
    /// Existing nodes: what is free. Planned ones: the largest of their offers, per resource.
    free: Resources,
    /// Planned nodes: what their pods request.
    used: Resources,
    /// The offer a planned node would be launched as now.
    chosen: Option<usize>,
    pods: Vec<&'p Pod>,
    ports: BTreeSet<HostPort>,
    hostname: String,
}

struct Packer<'a, 'p> {
    offers: &'a [Offer<'a>],
    /// Each offer's place in the order cheapest first.
    rank: Vec<usize>,
    /// How many planned nodes are launched as each offer now (kept as `chosen` changes).
    taken: Vec<u32>,
    budget: &'a Budget,
    bins: Vec<Bin<'p>>,
    /// Anti-affinity terms of placed pods, with their bin: they keep other pods away too.
    repellers: Vec<(usize, AntiAffinity)>,
}

/// Places `pending` (with their requests) onto `existing`, then onto new nodes of `offers` within `budget`.
pub(crate) fn plan<'p>(
    pending: &[&'p Pod],
    existing: &[Existing<'p>],
    offers: &[Offer<'_>],
    budget: &Budget,
) -> Plan {
    let mut packer = Packer::new(existing, offers, budget);
    let mut order: Vec<(usize, &Pod, Resources)> = pending
        .iter()
        .enumerate()
        .map(|(i, p)| (i, *p, pod_requests(p)))
        .collect();
    order.sort_by_key(|(_, _, r)| std::cmp::Reverse((r.get("cpu"), r.get("memory"))));
    let mut result = Plan {
        existing_used: vec![false; existing.len()],
        ..Plan::default()
    };
    for (index, pod, request) in order {
        match packer.place(pod, &request) {
            Ok(bin) => match packer.bins[bin].existing {
                Some(i) => {
                    result.existing_used[i] = true;
                    result.on_existing += 1;
                }
                None => result.on_new += 1,
            },
            Err(why) => {
                *result.unplaced.entry(why).or_default() += 1;
                if why != Blocked::Topology {
                    result.unplaced_pods.push(index);
                }
            }
        }
    }
    for bin in packer.bins.iter().filter(|b| b.existing.is_none()) {
        if let Some(offer) = bin.chosen {
            *result.launches.entry(offer).or_default() += 1;
            result.new_nodes += 1;
            result.price += offers[offer].price.unwrap_or(0.0);
        }
    }
    result
}

impl<'a, 'p> Packer<'a, 'p> {
    fn new(existing: &[Existing<'p>], offers: &'a [Offer<'a>], budget: &'a Budget) -> Self {
        let mut rank: Vec<usize> = (0..offers.len()).collect();
        rank.sort_by(|a, b| {
            let key = |i: usize| {
                let o = &offers[i];
                (
                    o.shape.allocatable.get("cpu"),
                    o.shape.allocatable.get("memory"),
                    i,
                )
            };
            let price = |i: usize| offers[i].price.unwrap_or(f64::INFINITY);
            price(*a).total_cmp(&price(*b)).then(key(*a).cmp(&key(*b)))
        });
        let mut place = vec![0; offers.len()];
        for (position, &offer) in rank.iter().enumerate() {
            place[offer] = position;
        }
        let rank = place;
        let mut packer = Self {
            offers,
            rank,
            taken: vec![0; offers.len()],
            budget,
            bins: Vec::new(),
            repellers: Vec::new(),
        };
        for (i, e) in existing.iter().enumerate() {
            let index = packer.bins.len();
            for pod in &e.pods {
                for term in Demands::of(pod).anti_affinity {
                    packer.repellers.push((index, term));
                }
            }
            packer.bins.push(Bin {
                existing: Some(i),
                offers: vec![e.offer],
                free: e.free.clone(),
                used: Resources::default(),
                chosen: Some(e.offer),
                pods: e.pods.clone(),
                ports: e
                    .pods
                    .iter()
                    .flat_map(|p| super::topology::host_ports(p))
                    .collect(),
                hostname: e.hostname.clone(),
            });
        }
        packer
    }

    fn planned(&self) -> usize {
        self.bins.iter().filter(|b| b.existing.is_none()).count()
    }

    /// Puts `pod` on the first node that takes it, opening a planned one if none does; the bin's index.
    fn place(&mut self, pod: &'p Pod, request: &Resources) -> Result<usize, Blocked> {
        let demands = Demands::of(pod);
        let compatible: Vec<bool> = self
            .offers
            .iter()
            .map(|o| fits_labels(pod, o.shape).is_ok())
            .collect();
        for b in 0..self.bins.len() {
            if let Some(offers) = self.admit(b, pod, request, &demands, &compatible) {
                self.put(b, pod, request, demands, offers);
                return Ok(b);
            }
        }
        let b = self.open(pod, request, &demands, &compatible)?;
        Ok(b)
    }

    /// Opens a planned node for `pod`, if the budget, the groups' headroom and the pod's demands allow one.
    fn open(
        &mut self,
        pod: &'p Pod,
        request: &Resources,
        demands: &Demands,
        compatible: &[bool],
    ) -> Result<usize, Blocked> {
        let planned = self.planned();
        let fitting: Vec<usize> = (0..self.offers.len())
            .filter(|&o| compatible[o] && self.offers[o].shape.allocatable.fits(request))
            .collect();
        if u32::try_from(planned).unwrap_or(u32::MAX) >= self.budget.max_new {
            return Err(Blocked::MaxNodes);
        }
        let with_room: Vec<usize> = fitting
            .iter()
            .copied()
            .filter(|&o| self.headroom_left(o, None) > 0)
            .collect();
        if with_room.is_empty() {
            return Err(Blocked::MaxNodes);
        }
        let others = self.planned_capacity(None);
        let within: Vec<usize> = with_room
            .into_iter()
            .filter(|&o| self.within_limits(&others, o))
            .collect();
        if within.is_empty() {
            return Err(Blocked::Limits);
        }
        let b = self.bins.len();
        self.bins.push(Bin {
            existing: None,
            free: envelope(self.offers, &within),
            offers: within,
            used: Resources::default(),
            chosen: None,
            pods: Vec::new(),
            ports: BTreeSet::new(),
            hostname: format!("planned-node-{b}"),
        });
        match self.admit(b, pod, request, demands, compatible) {
            Some(offers) => {
                self.put(b, pod, request, demands.clone(), offers);
                Ok(b)
            }
            None => {
                self.bins.pop();
                Err(Blocked::Topology)
            }
        }
    }

    /// The offers bin `b` could still be with `pod` on it, or `None` if it cannot take the pod.
    fn admit(
        &self,
        b: usize,
        pod: &Pod,
        request: &Resources,
        demands: &Demands,
        compatible: &[bool],
    ) -> Option<Vec<usize>> {
        let bin = &self.bins[b];
        let mut offers: Vec<usize> = bin
            .offers
            .iter()
            .copied()
            .filter(|&o| compatible[o])
            .collect();
        if bin.existing.is_some() {
            if !bin.free.fits(request) {
                return None;
            }
        } else {
            let used = bin.used.plus(request);
            // The largest of its offers, per resource: a full planned node is passed over without a look at each.
            if !bin.free.fits(&used) {
                return None;
            }
            let others = self.planned_capacity(Some(b));
            offers.retain(|&o| {
                self.offers[o].shape.allocatable.fits(&used)
                    && self.headroom_left(o, Some(b)) > 0
                    && self.within_limits(&others, o)
            });
        }
        if offers.is_empty() || !bin.ports.is_disjoint(&demands.ports) {
            return None;
        }
        if !demands.is_empty() || !self.repellers.is_empty() {
            self.keep_apart(b, pod, demands, &mut offers);
            self.keep_spread(b, demands, compatible, &mut offers);
        }
        (!offers.is_empty()).then_some(offers)
    }

    /// Anti-affinity, both ways: the pod's terms against the pods in each domain, and placed pods' terms against
    /// the pod.
    fn keep_apart(&self, b: usize, pod: &Pod, demands: &Demands, offers: &mut Vec<usize>) {
        for term in &demands.anti_affinity {
            offers.retain(|&o| {
                let domain = self.domain_with(b, o, &term.key);
                domain.is_none_or(|d| !self.pods_in(&term.key, &d).any(|other| term.repels(other)))
            });
        }
        for (at, term) in &self.repellers {
            if !term.repels(pod) {
                continue;
            }
            let Some(theirs) = self.domain(*at, &term.key) else {
                continue;
            };
            offers.retain(|&o| self.domain_with(b, o, &term.key).as_deref() != Some(&theirs));
        }
    }

    /// Spread: placing the pod in a domain must keep that domain within `maxSkew` of the emptiest one the pod
    /// could use. A planned node counts as a fresh hostname domain while another may still be opened.
    fn keep_spread(
        &self,
        b: usize,
        demands: &Demands,
        compatible: &[bool],
        offers: &mut Vec<usize>,
    ) {
        for constraint in &demands.spread {
            let key = constraint.key.as_str();
            let mut counts: BTreeMap<String, i64> = BTreeMap::new();
            if key != HOSTNAME {
                for (o, offer) in self.offers.iter().enumerate() {
                    if let Some(v) = offer.shape.labels.get(key).filter(|_| compatible[o]) {
                        counts.entry(v.clone()).or_insert(0);
                    }
                }
            }
            for (i, bin) in self.bins.iter().enumerate() {
                if !bin.offers.iter().any(|&o| compatible[o]) {
                    continue;
                }
                let Some(d) = self.domain(i, key) else {
                    continue;
                };
                let n = bin.pods.iter().filter(|p| constraint.counts(p)).count();
                *counts.entry(d).or_insert(0) += i64::try_from(n).unwrap_or(i64::MAX);
            }
            let can_open = u32::try_from(self.planned()).unwrap_or(u32::MAX) < self.budget.max_new;
            let floor = if key == HOSTNAME && can_open {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            offers.retain(|&o| {
                let Some(d) = self.domain_with(b, o, key) else {
                    return false; // a node without the label is outside every domain of the constraint
                };
                let n = counts.get(&d).copied().unwrap_or(0);
                n.saturating_add(1).saturating_sub(floor) <= constraint.max_skew
            });
            // A planned node spanning several domains settles on the emptiest of those left.
            if self.bins[b].existing.is_none() && key != HOSTNAME {
                let best = offers
                    .iter()
                    .filter_map(|&o| self.domain_with(b, o, key))
                    .min_by_key(|d| (counts.get(d).copied().unwrap_or(0), d.clone()));
                if let Some(best) = best {
                    offers.retain(|&o| self.domain_with(b, o, key).as_deref() == Some(&best));
                }
            }
        }
    }

    /// Places the pod on bin `b`, now limited to `offers`.
    fn put(
        &mut self,
        b: usize,
        pod: &'p Pod,
        request: &Resources,
        demands: Demands,
        mut offers: Vec<usize>,
    ) {
        // A planned node given a pod constrained on a label (zone, ...) settles on one value of it.
        if self.bins[b].existing.is_none() {
            let keys = demands
                .anti_affinity
                .iter()
                .map(|t| t.key.as_str())
                .filter(|k| *k != HOSTNAME);
            for key in keys {
                let first = offers
                    .iter()
                    .find_map(|&o| self.offers[o].shape.labels.get(key).cloned());
                offers.retain(|&o| self.offers[o].shape.labels.get(key) == first.as_ref());
            }
        }
        for term in demands.anti_affinity {
            self.repellers.push((b, term));
        }
        let bin = &mut self.bins[b];
        bin.pods.push(pod);
        bin.ports.extend(demands.ports);
        if bin.existing.is_some() {
            bin.free.sub(request);
            return;
        }
        bin.used.add(request);
        bin.free = envelope(self.offers, &offers);
        bin.offers = offers;
        let before = self.bins[b].chosen;
        let chosen = self.cheapest(b);
        if let Some(o) = before {
            self.taken[o] = self.taken[o].saturating_sub(1);
        }
        if let Some(o) = chosen {
            self.taken[o] = self.taken[o].saturating_add(1);
        }
        self.bins[b].chosen = chosen;
    }

    /// The cheapest offer bin `b` can be launched as: fits its pods, has headroom, stays within the limits.
    fn cheapest(&self, b: usize) -> Option<usize> {
        let bin = &self.bins[b];
        let others = self.planned_capacity(Some(b));
        bin.offers
            .iter()
            .copied()
            .filter(|&o| {
                self.offers[o].shape.allocatable.fits(&bin.used)
                    && self.headroom_left(o, Some(b)) > 0
                    && self.within_limits(&others, o)
            })
            .min_by_key(|&o| self.rank[o])
    }

    /// The offer's headroom minus the planned nodes (but `except`) launched as it.
    fn headroom_left(&self, offer: usize, except: Option<usize>) -> u32 {
        let mut taken = self.taken[offer];
        if let Some(b) = except
            && self.bins[b].existing.is_none()
            && self.bins[b].chosen == Some(offer)
        {
            taken = taken.saturating_sub(1);
        }
        self.offers[offer].headroom.saturating_sub(taken)
    }

    /// The capacity of the planned nodes (but `except`), as launched now.
    fn planned_capacity(&self, except: Option<usize>) -> Resources {
        let mut sum = Resources::default();
        for (i, bin) in self.bins.iter().enumerate() {
            if Some(i) != except
                && bin.existing.is_none()
                && let Some(o) = bin.chosen
            {
                sum.add(&self.offers[o].shape.capacity);
            }
        }
        sum
    }

    fn within_limits(&self, others: &Resources, offer: usize) -> bool {
        self.budget.limits.as_ref().is_none_or(|limits| {
            others
                .plus(&self.offers[offer].shape.capacity)
                .within(limits)
        })
    }

    /// Bin `b`'s value of `key` if it were `offer`.
    fn domain_with(&self, b: usize, offer: usize, key: &str) -> Option<String> {
        if key == HOSTNAME {
            return Some(self.bins[b].hostname.clone());
        }
        self.offers[offer].shape.labels.get(key).cloned()
    }

    /// Bin `b`'s value of `key`, when all its offers agree on one.
    fn domain(&self, b: usize, key: &str) -> Option<String> {
        let bin = &self.bins[b];
        let mut values = bin.offers.iter().map(|&o| self.domain_with(b, o, key));
        let first = values.next()??;
        values
            .all(|v| v.as_deref() == Some(&first))
            .then_some(first)
    }

    /// The pods in domain `value` of `key`.
    fn pods_in<'s>(&'s self, key: &'s str, value: &'s str) -> impl Iterator<Item = &'p Pod> + 's {
        self.bins
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.domain(*i, key).as_deref() == Some(value))
            .flat_map(|(_, bin)| bin.pods.iter().copied())
    }
}

/// Per resource, the most any of `offers` has allocatable.
fn envelope(all: &[Offer<'_>], offers: &[usize]) -> Resources {
    let mut most = Resources::default();
    for &o in offers {
        most.max(&all[o].shape.allocatable);
    }
    most
}

#[cfg(test)]
mod tests;
