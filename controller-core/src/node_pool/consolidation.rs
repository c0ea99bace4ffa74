//! Consolidation of underutilized nodes, with `spec.consolidationPolicy: WhenEmptyOrUnderutilized` (Karpenter's
//! policy name; the default `WhenEmpty` removes empty nodes only). When the pool has no pending pods and nothing
//! launching, a ready node whose pods would all fit into the free room of the pool's other ready nodes, for
//! `emptyNodeDelaySeconds`, is drained ([`drain`](super::drain): tainted, pods evicted through the Eviction API,
//! PodDisruptionBudgets respected) and removed with its instance — one node at a time, never below `minNodes`.
//! Of several such nodes the one with the fewest pods (then the least CPU requested) goes first.
//!
//! Nodes annotated, or running a pod annotated, [`DO_NOT_DISRUPT`] or Karpenter's `karpenter.sh/do-not-disrupt`
//! (`"true"`) are never consolidated; an annotated Node is not removed when empty either.
//!
//! [`candidate`] decides; [`disrupt`](super::disrupt) writes.

use k8s_openapi::api::core::v1::Pod;

use super::resources::Resources;

/// Annotation (`"true"`) on a pod or a Node that keeps the node from voluntary disruption (Karpenter:
/// `karpenter.sh/do-not-disrupt`, also honoured).
pub const DO_NOT_DISRUPT: &str = "kube-cloud-rs.dev/do-not-disrupt";
const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

/// Whether the object asks not to be disrupted.
pub(crate) fn do_not_disrupt(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    meta.annotations.as_ref().is_some_and(|a| {
        [DO_NOT_DISRUPT, KARPENTER_DO_NOT_DISRUPT]
            .iter()
            .any(|key| a.get(*key).is_some_and(|v| v == "true"))
    })
}

/// One ready node of the pool as consolidation sees it.
#[derive(Debug, Default)]
pub(crate) struct Seat {
    /// May it be consolidated at all (ready, has pods, nothing says do-not-disrupt)?
    pub(crate) eligible: bool,
    /// The requests of the pods that keep it.
    pub(crate) load: Vec<Resources>,
    /// What is free on it for pods moved from elsewhere.
    pub(crate) room: Resources,
}

/// The index of the node to consolidate: an eligible seat whose load fits (first-fit decreasing) into the room of
/// the others; the one with the fewest pods, then the least CPU requested.
pub(crate) fn candidate(seats: &[Seat]) -> Option<usize> {
    let mut order: Vec<usize> = (0..seats.len()).filter(|i| seats[*i].eligible).collect();
    order.sort_by_key(|i| {
        let cpu: i128 = seats[*i].load.iter().map(|r| r.get("cpu")).sum();
        (seats[*i].load.len(), cpu)
    });
    order.into_iter().find(|i| {
        let others: Vec<Resources> = seats
            .iter()
            .enumerate()
            .filter(|(j, _)| j != i)
            .map(|(_, s)| s.room.clone())
            .collect();
        fits_into(&seats[*i].load, others)
    })
}

/// Whether every request fits (first-fit decreasing) into the free room of `bins`.
fn fits_into(load: &[Resources], mut bins: Vec<Resources>) -> bool {
    let mut order: Vec<&Resources> = load.iter().collect();
    order.sort_by_key(|r| std::cmp::Reverse((r.get("cpu"), r.get("memory"))));
    order.into_iter().all(|request| {
        let Some(bin) = bins.iter_mut().find(|free| free.fits(request)) else {
            return false;
        };
        bin.sub(request);
        true
    })
}

/// Whether any of the pods asks not to be disrupted.
pub(crate) fn pods_forbid(pods: &[&Pod]) -> bool {
    pods.iter().any(|p| do_not_disrupt(&p.metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn cpu(milli: &str) -> Resources {
        Resources::from_quantities(Some(&BTreeMap::from([(
            "cpu".to_owned(),
            Quantity(milli.to_owned()),
        )])))
    }

    fn seat(load: &[&str], room: &str) -> Seat {
        Seat {
            eligible: true,
            load: load.iter().map(|c| cpu(c)).collect(),
            room: cpu(room),
        }
    }

    #[test]
    fn the_least_loaded_node_whose_pods_fit_elsewhere_goes() {
        // Node 0: two pods, 1 CPU free; node 1: one pod, 1.5 CPU free. Both would fit on the other; node 1 has
        // fewer pods.
        let seats = [seat(&["500m", "500m"], "1"), seat(&["500m"], "1500m")];
        assert_eq!(candidate(&seats), Some(1));
        // Nothing fits elsewhere: no candidate.
        let full = [seat(&["1", "1"], "0"), seat(&["1500m"], "500m")];
        assert_eq!(candidate(&full), None);
        // Ineligible (do-not-disrupt, not ready, empty) seats are never picked, but offer their room.
        let mut blocked = [seat(&["500m"], "1500m"), seat(&["500m", "500m"], "1")];
        blocked[0].eligible = false;
        assert_eq!(candidate(&blocked), Some(1));
    }

    #[test]
    fn annotations_say_do_not_disrupt() {
        let mut pod = Pod::default();
        assert!(!pods_forbid(&[&pod]));
        pod.metadata.annotations = Some(BTreeMap::from([(
            KARPENTER_DO_NOT_DISRUPT.to_owned(),
            "true".to_owned(),
        )]));
        assert!(pods_forbid(&[&pod]));
        let mut node = Node::default();
        node.metadata.annotations = Some(BTreeMap::from([(
            DO_NOT_DISRUPT.to_owned(),
            "false".to_owned(),
        )]));
        assert!(!do_not_disrupt(&node.metadata));
    }
}
