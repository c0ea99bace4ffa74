//! Which Nodes back load balancers (exactly upstream's rules), and the loop that notices when that set changes.

use std::pin::pin;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span, warn};

use tokio_util::sync::CancellationToken;

/// Node label that takes a Node out of every load balancer; any value except a parseable false excludes it.
pub const LABEL_EXCLUDE_FROM_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Taint cluster-autoscaler puts on a Node it is about to delete; such a Node is no load balancer target.
pub const TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether `node` backs load balancers, as upstream decides: not being deleted, not excluded by
/// [`LABEL_EXCLUDE_FROM_LOAD_BALANCERS`], not tainted [`TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER`].
/// Readiness is deliberately not a filter: removing NotReady Nodes from load balancers caused outages upstream.
pub fn is_load_balancer_target(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if let Some(value) = node.labels().get(LABEL_EXCLUDE_FROM_LOAD_BALANCERS)
        && !parses_as_false(value)
    {
        return false;
    }
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| {
            taints
                .iter()
                .any(|t| t.key == TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER)
        });
    !tainted
}

/// Go's `strconv.ParseBool` false values.
fn parses_as_false(value: &str) -> bool {
    matches!(value, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

/// Whether two versions of a target Node look the same to a load balancer: name, provider ID and addresses
/// (`(type, address)` pairs, as a provider may register Nodes by address). Compared in place: nothing is copied.
fn same_host(a: &Node, b: &Node) -> bool {
    fn provider_id(n: &Node) -> Option<&str> {
        n.spec.as_ref().and_then(|s| s.provider_id.as_deref())
    }
    fn addresses(n: &Node) -> &[k8s_openapi::api::core::v1::NodeAddress] {
        n.status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default()
    }
    a.metadata.name == b.metadata.name
        && provider_id(a) == provider_id(b)
        && addresses(a).len() == addresses(b).len()
        && addresses(a)
            .iter()
            .zip(addresses(b))
            .all(|(x, y)| x.type_ == y.type_ && x.address == y.address)
}

/// What of a target Node a load balancer depends on, for the projection test.
#[cfg(test)]
pub(super) fn host_key(node: &Node) -> impl std::fmt::Debug {
    (
        node.name_any(),
        node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        node.status.as_ref().and_then(|s| s.addresses.clone()),
    )
}

/// One version of the target node set. `generation` grows by one whenever the set (or a target's name, provider
/// ID or addresses) changes, so "same generation" means "same hosts".
#[derive(Debug, Default)]
pub(super) struct TargetSet {
    pub(super) generation: u64,
    /// Sorted by name; the cache's own objects, not copies.
    nodes: Vec<Arc<Node>>,
    /// The same as the owned slice `LoadBalancers` takes: built once per set, on the first load balancer's ensure
    /// (never in a cluster without load balancers), and shared by every ensure of this generation.
    owned: OnceLock<Vec<Node>>,
}

impl TargetSet {
    /// The target Nodes, sorted by name, as the provider takes them.
    pub(super) fn nodes(&self) -> &[Node] {
        self.owned
            .get_or_init(|| self.nodes.iter().map(|n| n.as_ref().clone()).collect())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The target Node names, sorted.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .map(|n| n.metadata.name.as_deref().unwrap_or_default())
    }
}

/// Recomputes the target set from the Node cache. Holds only the current set: a recompute filters and sorts the
/// cache's objects (shared, not copied) and compares them in place with the previous set, so a burst of Node
/// changes costs no allocation per Node.
#[derive(Default)]
pub(super) struct TargetTracker {
    current: Arc<TargetSet>,
}

impl TargetTracker {
    /// Re-reads `nodes`; returns the new set if it differs from the previous one.
    pub(super) fn recompute(&mut self, mut nodes: Vec<Arc<Node>>) -> Option<Arc<TargetSet>> {
        nodes.retain(|n| is_load_balancer_target(n));
        nodes.sort_unstable_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let unchanged = nodes.len() == self.current.nodes.len()
            && nodes
                .iter()
                .zip(&self.current.nodes)
                .all(|(new, old)| Arc::ptr_eq(new, old) || same_host(new, old));
        if unchanged {
            return None;
        }
        let set = Arc::new(TargetSet {
            generation: self.current.generation + 1,
            nodes,
            owned: OnceLock::new(),
        });
        self.current = Arc::clone(&set);
        Some(set)
    }
}

/// Recomputes the target set whenever the shared Node cache changes (deletions included; a burst of changes is
/// seen as one, since the generation signal keeps only the latest value), calling `on_change` with each new set,
/// until `shutdown`.
pub(super) async fn track_target_nodes(
    mut generation: watch::Receiver<u64>,
    store: Store<Node>,
    mut tracker: TargetTracker,
    shutdown: CancellationToken,
    mut on_change: impl FnMut(Arc<TargetSet>) + Send,
) {
    let span = info_span!("service-node-sync");
    async move {
        let mut stop = pin!(shutdown.cancelled_owned());
        loop {
            tokio::select! {
                () = &mut stop => return,
                changed = generation.changed() => {
                    if changed.is_err() {
                        warn!("the Node cache stopped; node-set changes no longer reach load balancers");
                        stop.await;
                        return;
                    }
                }
            }
            if let Some(set) = tracker.recompute(store.state()) {
                debug!(
                    generation = set.generation,
                    nodes = set.nodes.len(),
                    "load balancer target nodes changed"
                );
                on_change(set);
            }
        }
    }
    .instrument(span)
    .await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn node(name: &str, rv: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.resource_version = Some(rv.into());
        n
    }

    fn labelled(mut n: Node, value: &str) -> Node {
        n.metadata.labels = Some(BTreeMap::from([(
            LABEL_EXCLUDE_FROM_LOAD_BALANCERS.into(),
            value.into(),
        )]));
        n
    }

    #[test]
    fn predicate() {
        assert!(is_load_balancer_target(&node("a", "1")));
        for v in ["", "true", "yes", "1", "no"] {
            assert!(
                !is_load_balancer_target(&labelled(node("a", "1"), v)),
                "{v:?}"
            );
        }
        for v in ["false", "0", "f", "F", "FALSE", "False"] {
            assert!(
                is_load_balancer_target(&labelled(node("a", "1"), v)),
                "{v:?}"
            );
        }
        let mut tainted = node("a", "1");
        tainted.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: TAINT_TO_BE_DELETED_BY_CLUSTER_AUTOSCALER.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(!is_load_balancer_target(&tainted));
        let mut deleting = node("a", "1");
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(!is_load_balancer_target(&deleting));
    }

    #[test]
    fn tracker_detects_changes_only() {
        let mut t = TargetTracker::default();
        let set = t
            .recompute(vec![Arc::new(node("b", "1")), Arc::new(node("a", "1"))])
            .unwrap_or_default();
        assert_eq!(set.generation, 1);
        assert_eq!(set.names().collect::<Vec<_>>(), ["a", "b"]);
        // A new resourceVersion with the same relevant fields is no change.
        assert!(
            t.recompute(vec![Arc::new(node("a", "2")), Arc::new(node("b", "1"))])
                .is_none()
        );
        // Excluding, deleting, and re-including are.
        let set = t
            .recompute(vec![
                Arc::new(labelled(node("a", "3"), "true")),
                Arc::new(node("b", "1")),
            ])
            .unwrap_or_default();
        assert_eq!(set.names().collect::<Vec<_>>(), ["b"]);
        let set = t
            .recompute(vec![Arc::new(node("a", "4"))])
            .unwrap_or_default();
        assert_eq!(
            (set.generation, set.names().collect::<Vec<_>>()),
            (3, vec!["a"])
        );
        assert!(t.recompute(vec![]).is_some_and(|s| s.is_empty()));
    }
}
