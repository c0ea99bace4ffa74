//! Pure planning: from the cached Nodes and the cloud's route list, what one round must delete and create.
//! No I/O here, so every rule is unit-tested.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use cloudprovider_api::{NodeAddress, Route, node_addresses};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

/// A Node as the route controller sees it: its in-cluster pod CIDRs and what a route to it needs.
#[derive(Clone, Debug)]
pub(super) struct NodeRoutes {
    /// The cached Node (for its conditions, resourceVersion and Event references).
    pub node: Arc<Node>,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`, the name hint of its routes.
    pub uid: String,
    /// `status.addresses` with known types.
    pub addresses: Vec<NodeAddress>,
    /// Its pod CIDRs that lie inside a cluster CIDR, truncated to their network, without duplicates.
    pub cidrs: Vec<IpNet>,
}

/// The pod CIDRs of `node`: `spec.podCIDRs`, or the legacy `spec.podCIDR` when the list is empty. Unparsable
/// values are returned separately so the caller can log them.
pub(super) fn pod_cidrs(node: &Node) -> (Vec<IpNet>, Vec<String>) {
    let Some(spec) = node.spec.as_ref() else {
        return (Vec::new(), Vec::new());
    };
    let raw: Vec<&str> = match spec.pod_cidrs.as_deref() {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec.pod_cidr.as_deref().into_iter().collect(),
    };
    let mut parsed = Vec::new();
    let mut invalid = Vec::new();
    for value in raw {
        match value.trim().parse::<IpNet>() {
            Ok(net) => {
                let net = net.trunc();
                if !parsed.contains(&net) {
                    parsed.push(net);
                }
            }
            Err(_) => invalid.push(value.to_owned()),
        }
    }
    (parsed, invalid)
}

/// Whether a route for `cidr` is ours to manage: it lies entirely inside one of the cluster CIDRs. Routes
/// elsewhere in the route table belong to someone else and are never touched.
pub(super) fn responsible(cluster_cidrs: &[IpNet], cidr: &IpNet) -> bool {
    cluster_cidrs.iter().any(|cluster| cluster.contains(cidr))
}

impl NodeRoutes {
    /// The route view of `node`, with its pod CIDRs filtered to the cluster CIDRs, and the pod CIDR values it
    /// could not parse.
    pub(super) fn of(node: Arc<Node>, cluster_cidrs: &[IpNet]) -> (Self, Vec<String>) {
        let (cidrs, invalid) = pod_cidrs(&node);
        let cidrs = cidrs
            .into_iter()
            .filter(|cidr| responsible(cluster_cidrs, cidr))
            .collect();
        let routes = Self {
            name: node.name_any(),
            uid: node.uid().unwrap_or_default(),
            addresses: node_addresses(&node),
            cidrs,
            node,
        };
        (routes, invalid)
    }
}

/// One route to create, for the node at `node` (an index into the planned nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Create {
    /// Index of the target node in the slice given to [`plan`].
    pub node: usize,
    /// The route (empty name: the provider chooses, from the name hint).
    pub route: Route,
}

/// What one round must do.
#[derive(Clone, Debug, Default)]
pub(super) struct Plan {
    /// Routes to delete: blackholes and routes no node wants, inside the cluster CIDRs only.
    pub delete: Vec<Route>,
    /// Routes to create. A create whose CIDR is also being deleted (the CIDR moved to another node, or the old
    /// route is a blackhole) must wait for that delete: clouds hold one route per destination.
    pub create: Vec<Create>,
    /// `(target node, CIDR)` of live routes that stay.
    pub routed: HashSet<(String, IpNet)>,
    /// CIDRs claimed by more than one node, with the node that won and the ones ignored.
    pub conflicts: Vec<(IpNet, String, Vec<String>)>,
}

/// Plans a round: one route per (node, in-cluster pod CIDR); delete blackholes and routes inside the cluster
/// CIDRs whose (target, CIDR) no node wants; leave everything else alone.
pub(super) fn plan(cluster_cidrs: &[IpNet], nodes: &[NodeRoutes], existing: &[Route]) -> Plan {
    // Live routes by CIDR, to settle CIDR conflicts in favour of the node that already has the route.
    let live: HashSet<(&str, IpNet)> = existing
        .iter()
        .filter(|r| !r.blackhole)
        .map(|r| (r.target_node.as_str(), r.destination_cidr.trunc()))
        .collect();

    let mut claims: BTreeMap<IpNet, Vec<usize>> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for cidr in &node.cidrs {
            claims.entry(*cidr).or_default().push(i);
        }
    }
    let mut plan = Plan::default();
    // CIDR → index of the node that gets the route.
    let mut desired: BTreeMap<IpNet, usize> = BTreeMap::new();
    for (cidr, mut claimants) in claims {
        // Two nodes with one CIDR is an IPAM bug or a transient state while a node is replaced; one route per
        // destination is all a cloud holds, so pick deterministically: the current target, else the first name.
        claimants.sort_by(|a, b| nodes[*a].name.cmp(&nodes[*b].name));
        let Some(&first) = claimants.first() else {
            continue;
        };
        let winner = claimants
            .iter()
            .copied()
            .find(|i| live.contains(&(nodes[*i].name.as_str(), cidr)))
            .unwrap_or(first);
        if claimants.len() > 1 {
            let losers = claimants
                .iter()
                .filter(|i| **i != winner)
                .map(|i| nodes[*i].name.clone())
                .collect();
            plan.conflicts
                .push((cidr, nodes[winner].name.clone(), losers));
        }
        desired.insert(cidr, winner);
    }

    for route in existing {
        let cidr = route.destination_cidr.trunc();
        if !responsible(cluster_cidrs, &cidr) {
            continue;
        }
        let wanted = desired
            .get(&cidr)
            .is_some_and(|i| nodes[*i].name == route.target_node);
        if route.blackhole || !wanted {
            plan.delete.push(route.clone());
        } else {
            plan.routed.insert((route.target_node.clone(), cidr));
        }
    }

    for (cidr, i) in desired {
        let node = &nodes[i];
        if plan.routed.contains(&(node.name.clone(), cidr)) {
            continue;
        }
        plan.create.push(Create {
            node: i,
            route: Route {
                name: String::new(),
                target_node: node.name.clone(),
                target_node_addresses: node.addresses.clone(),
                destination_cidr: cidr,
                blackhole: false,
            },
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn node(name: &str, pod_cidr: Option<&str>, pod_cidrs: &[&str]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(Into::into),
                pod_cidrs: Some(pod_cidrs.iter().map(|s| (*s).to_owned()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn route(target: &str, cidr: &str, blackhole: bool) -> Route {
        Route {
            name: format!("r-{target}"),
            target_node: target.into(),
            target_node_addresses: Vec::new(),
            destination_cidr: net(cidr),
            blackhole,
        }
    }

    fn cluster() -> Vec<IpNet> {
        vec![net("10.244.0.0/16"), net("fd00:10:244::/56")]
    }

    #[test]
    fn pod_cidrs_prefers_the_list_and_truncates() {
        let n = node(
            "a",
            Some("10.0.0.0/24"),
            &["10.244.1.7/24", "fd00:10:244:1::/64", "bogus"],
        );
        let (cidrs, invalid) = pod_cidrs(&n);
        assert_eq!(cidrs, vec![net("10.244.1.0/24"), net("fd00:10:244:1::/64")]);
        assert_eq!(invalid, vec!["bogus".to_owned()]);
        let legacy = node("b", Some("10.244.2.0/24"), &[]);
        assert_eq!(pod_cidrs(&legacy).0, vec![net("10.244.2.0/24")]);
        assert!(pod_cidrs(&node("c", None, &[])).0.is_empty());
    }

    #[test]
    fn responsibility_is_containment() {
        let c = cluster();
        assert!(responsible(&c, &net("10.244.3.0/24")));
        assert!(responsible(&c, &net("10.244.0.0/16")));
        assert!(
            !responsible(&c, &net("10.0.0.0/8")),
            "a supernet is not ours"
        );
        assert!(!responsible(&c, &net("192.168.0.0/24")));
        assert!(responsible(&c, &net("fd00:10:244:5::/64")));
        assert!(!responsible(&c, &net("fd00:99::/64")));
    }

    #[test]
    fn plans_creates_deletes_and_leaves_foreign_routes() {
        let c = cluster();
        let nodes: Vec<NodeRoutes> = [
            node("a", None, &["10.244.1.0/24", "fd00:10:244:1::/64"]),
            node("b", Some("10.244.2.0/24"), &[]),
            node("outside", Some("172.16.0.0/24"), &[]),
            node("moved", Some("10.244.5.0/24"), &[]),
        ]
        .into_iter()
        .map(|n| NodeRoutes::of(n, &c).0)
        .collect();
        assert!(nodes[2].cidrs.is_empty());
        let existing = vec![
            route("a", "10.244.1.0/24", false),     // kept
            route("ghost", "10.244.9.0/24", false), // no such node: delete
            route("b", "10.244.2.0/24", true),      // blackhole: delete and re-create
            route("old", "10.244.5.0/24", false),   // CIDR moved to "moved": delete and create
            route("ext", "192.168.0.0/24", false),  // not ours
            route("ext", "192.168.1.0/24", true),   // not ours, even as a blackhole
        ];
        let p = plan(&c, &nodes, &existing);
        let deleted: Vec<_> = p
            .delete
            .iter()
            .map(|r| r.destination_cidr.to_string())
            .collect();
        assert_eq!(deleted, ["10.244.9.0/24", "10.244.2.0/24", "10.244.5.0/24"]);
        let created: Vec<_> = p
            .create
            .iter()
            .map(|c| {
                (
                    c.route.target_node.as_str(),
                    c.route.destination_cidr.to_string(),
                )
            })
            .collect();
        assert_eq!(
            created,
            [
                ("b", "10.244.2.0/24".to_owned()),
                ("moved", "10.244.5.0/24".to_owned()),
                ("a", "fd00:10:244:1::/64".to_owned()),
            ]
        );
        assert!(p.routed.contains(&("a".to_owned(), net("10.244.1.0/24"))));
        assert_eq!(p.routed.len(), 1);
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn cidr_conflicts_keep_the_current_target() {
        let c = cluster();
        let nodes: Vec<NodeRoutes> = [
            node("a", Some("10.244.1.0/24"), &[]),
            node("z", Some("10.244.1.0/24"), &[]),
        ]
        .into_iter()
        .map(|n| NodeRoutes::of(n, &c).0)
        .collect();
        let p = plan(&c, &nodes, &[route("z", "10.244.1.0/24", false)]);
        assert!(p.delete.is_empty() && p.create.is_empty());
        assert_eq!(
            p.conflicts,
            vec![(net("10.244.1.0/24"), "z".to_owned(), vec!["a".to_owned()])]
        );
        // Without a route, the first name wins.
        let p = plan(&c, &nodes, &[]);
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].route.target_node, "a");
    }
}
