//! Which Nodes back load balancers (exactly upstream's rules), and the loop that notices when that set changes.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

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

/// What of a target Node a load balancer depends on: a change here means every load balancer needs an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HostKey {
    name: String,
    provider_id: Option<String>,
    /// `(type, address)` pairs, as the provider may register Nodes by address.
    addresses: Vec<(String, String)>,
}

/// [`HostKey::of`], for the projection test.
#[cfg(test)]
pub(super) fn host_key(node: &Node) -> HostKey {
    HostKey::of(node)
}

impl HostKey {
    fn of(node: &Node) -> Self {
        Self {
            name: node.name_any(),
            provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
            addresses: node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .map(|addrs| {
                    addrs
                        .iter()
                        .map(|a| (a.type_.clone(), a.address.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// One version of the target node set. `generation` grows by one whenever the set (or a [`HostKey`]) changes,
/// so "same generation" means "same hosts".
#[derive(Debug, Default)]
pub(super) struct TargetSet {
    pub(super) generation: u64,
    nodes: Vec<Arc<Node>>,
    keys: Vec<HostKey>,
}

impl TargetSet {
    /// The target Nodes, sorted by name, as the provider takes them.
    pub(super) fn nodes(&self) -> Vec<Node> {
        self.nodes.iter().map(|n| n.as_ref().clone()).collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The target Node names, sorted.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.name.as_str())
    }
}

struct Entry {
    resource_version: Option<String>,
    /// `None` when the Node is not a target.
    key: Option<HostKey>,
    node: Arc<Node>,
}

/// Recomputes the target set from the Node cache; only Nodes whose resourceVersion moved are re-evaluated.
#[derive(Default)]
pub(super) struct TargetTracker {
    entries: HashMap<String, Entry>,
    current: Arc<TargetSet>,
}

impl TargetTracker {
    /// Re-reads `nodes`; returns the new set if it differs from the previous one.
    pub(super) fn recompute(&mut self, nodes: Vec<Arc<Node>>) -> Option<Arc<TargetSet>> {
        let mut entries = HashMap::with_capacity(nodes.len());
        for node in nodes {
            let name = node.name_any();
            let resource_version = node.resource_version();
            let key = match self.entries.remove(&name) {
                Some(old)
                    if resource_version.is_some() && old.resource_version == resource_version =>
                {
                    old.key
                }
                _ => is_load_balancer_target(&node).then(|| HostKey::of(&node)),
            };
            entries.insert(
                name,
                Entry {
                    resource_version,
                    key,
                    node,
                },
            );
        }
        self.entries = entries;

        let mut targets: Vec<(&HostKey, &Arc<Node>)> = self
            .entries
            .values()
            .filter_map(|e| e.key.as_ref().map(|k| (k, &e.node)))
            .collect();
        targets.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let unchanged = targets.len() == self.current.keys.len()
            && targets
                .iter()
                .zip(&self.current.keys)
                .all(|(new, old)| new.0 == old);
        if unchanged {
            return None;
        }
        let set = Arc::new(TargetSet {
            generation: self.current.generation + 1,
            nodes: targets.iter().map(|(_, n)| Arc::clone(n)).collect(),
            keys: targets.into_iter().map(|(k, _)| k.clone()).collect(),
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
