//! Draining a node before it is removed, as `kubectl drain` and Karpenter's termination do: the node is tainted
//! [`DISRUPTED_TAINT`]`:NoSchedule` so nothing new lands on it, every pod that keeps it (not a DaemonSet or
//! mirror pod, not finished) is evicted through the Eviction API, so PodDisruptionBudgets decide, and the node
//! counts as drained once none is left — terminating ones included, so their replacements can land first.
//! A blocked eviction (429: a budget allows no disruption now) is reported and retried on the next pass, never
//! forced with a delete. (kube's client retries 429 answers on its own for minutes, so an eviction that has not
//! returned after [`EVICTION_PATIENCE`] counts as refused.)
//!
//! [`taint_patch`] and [`triage`] decide; [`drain`] writes.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::ResourceExt;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::crd::NodePool;
use super::lifecycle::blocks_removal;
use super::reconcile::patch_params;
use super::{PoolReconciler, reasons};
use crate::runtime::ReconcileError;

/// How long one eviction may take. The apiserver refuses an eviction a PodDisruptionBudget does not allow with
/// 429 at once, but kube's client retries 429 answers itself (exponential backoff from 5 ms, 15 times: minutes), so
/// a refused eviction shows up as one that does not return. Past this it counts as refused, retried next pass.
const EVICTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
/// Evictions sent at once per node.
const EVICTIONS_IN_FLIGHT: usize = 16;
const BLOCKED: &str = "the Eviction API keeps answering 429 Too Many Requests: a PodDisruptionBudget allows no \
                       disruption now (see kubectl get pdb); retrying";

/// The taint on a node being drained (Karpenter: `karpenter.sh/disrupted:NoSchedule`).
pub const DISRUPTED_TAINT: &str = "kube-cloud-rs.dev/disrupted";

/// Where the drain of one node stands after a pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct DrainProgress {
    /// Whether the Node is gone already.
    pub(crate) node_gone: bool,
    /// Pods still on the node that keep it: evicted this pass or earlier and still terminating, or blocked.
    pub(crate) remaining: usize,
    /// Pods whose eviction was refused this pass, with the apiserver's message (usually the budget's).
    pub(crate) blocked: Vec<(String, String)>,
}

impl DrainProgress {
    /// Nothing keeps the node any more.
    pub(crate) fn drained(&self) -> bool {
        self.node_gone || self.remaining == 0
    }
}

/// The merge patch adding [`DISRUPTED_TAINT`] (guarded by the Node's `resourceVersion`, as the taint list is
/// replaced whole), or `None` if the node has it.
pub(crate) fn taint_patch(node: &Node) -> Option<serde_json::Value> {
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints.iter().any(|t| t.key == DISRUPTED_TAINT) {
        return None;
    }
    taints.push(Taint {
        key: DISRUPTED_TAINT.to_owned(),
        effect: "NoSchedule".to_owned(),
        ..Taint::default()
    });
    Some(json!({
        "metadata": { "resourceVersion": node.metadata.resource_version },
        "spec": { "taints": taints },
    }))
}

/// The pods on a node that keep it, split into those to evict now and how many are terminating already.
pub(crate) fn triage(pods: &[Pod]) -> (Vec<&Pod>, usize) {
    let keeping = pods.iter().filter(|p| blocks_removal(p));
    let (terminating, to_evict): (Vec<&Pod>, Vec<&Pod>) =
        keeping.partition(|p| p.metadata.deletion_timestamp.is_some());
    (to_evict, terminating.len())
}

/// One drain pass over `node`: taint it, evict what keeps it, report what is left. Conflicts on the taint are
/// left to the next pass.
pub(crate) async fn drain(
    client: &kube::Client,
    node: &Node,
    params: &PatchParams,
) -> Result<DrainProgress, ReconcileError> {
    let name = node.name_any();
    if let Some(patch) = taint_patch(node) {
        let nodes: Api<Node> = Api::all(client.clone());
        match nodes.patch(&name, params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                return Ok(DrainProgress {
                    node_gone: true,
                    ..DrainProgress::default()
                });
            }
            // A stale cached Node: the next pass has a newer one.
            Err(kube::Error::Api(s)) if s.is_conflict() => {}
            Err(e) => return Err(ReconcileError::kube("taint Node", e)),
        }
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await
        .map_err(|e| ReconcileError::kube("list Pods", e))?;
    let (to_evict, terminating) = triage(&on_node.items);
    let mut progress = DrainProgress {
        remaining: terminating,
        ..DrainProgress::default()
    };
    let targets: Vec<(String, String)> = to_evict
        .iter()
        .map(|p| (p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    let answers: Vec<(String, Outcome)> = futures::stream::iter(targets)
        .map(|(namespace, name)| evict(client.clone(), namespace, name))
        .buffer_unordered(EVICTIONS_IN_FLIGHT)
        .collect()
        .await;
    for (pod, outcome) in answers {
        match outcome {
            Outcome::Gone => {}
            Outcome::Evicted => progress.remaining += 1,
            Outcome::Blocked(message) => {
                progress.remaining += 1;
                progress.blocked.push((pod, message));
            }
            Outcome::Failed(e) => return Err(ReconcileError::kube("evict Pod", e)),
        }
    }
    Ok(progress)
}

impl PoolReconciler {
    /// One drain pass over a node of `pool` ([`drain`]), each refused eviction a `FailedDraining` Warning on the
    /// pool and the Node; once drained the Node is deleted. True when the node is drained and gone.
    pub(super) async fn drain_and_delete(
        &self,
        pool: &NodePool,
        node: &Node,
    ) -> Result<bool, ReconcileError> {
        let progress = drain(&self.client, node, &patch_params()).await?;
        for (pod, message) in &progress.blocked {
            let note = format!(
                "cannot evict pod {pod} from node {}: {message}",
                node.name_any()
            );
            tracing::warn!(node = node.name_any(), pod, "eviction refused; retrying");
            self.events.warning(
                &kube::Resource::object_ref(pool, &()),
                reasons::FAILED_DRAINING,
                note.clone(),
            );
            self.events.warning(
                &kube::Resource::object_ref(node, &()),
                reasons::FAILED_DRAINING,
                note,
            );
        }
        if !progress.drained() {
            return Ok(false);
        }
        if !progress.node_gone {
            self.delete_node(node)
                .await
                .map_err(|e| ReconcileError::kube("delete Node", e))?;
        }
        Ok(true)
    }
}

/// What one eviction request came to.
enum Outcome {
    Evicted,
    Gone,
    Blocked(String),
    Failed(kube::Error),
}

/// Evicts one pod: `namespace/name` and the outcome.
async fn evict(client: kube::Client, namespace: String, name: String) -> (String, Outcome) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let params = EvictParams::default();
    let outcome = match tokio::time::timeout(EVICTION_PATIENCE, api.evict(&name, &params)).await {
        Err(_) => Outcome::Blocked(BLOCKED.to_owned()),
        Ok(Ok(_)) => Outcome::Evicted,
        Ok(Err(kube::Error::Api(s))) if s.is_not_found() => Outcome::Gone,
        // 429: a PodDisruptionBudget allows no disruption now.
        Ok(Err(kube::Error::Api(s))) if s.code == 429 => Outcome::Blocked(s.message),
        Ok(Err(e)) => Outcome::Failed(e),
    };
    (format!("{namespace}/{name}"), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn daemons_mirrors_and_finished_pods_stay_terminating_ones_are_waited_for() {
        let mut daemon = pod("daemon");
        daemon.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        let mut mirror = pod("mirror");
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_owned(), "x".to_owned())].into());
        let mut done = pod("done");
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let mut leaving = pod("leaving");
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pods = [daemon, mirror, done, leaving, pod("app-1"), pod("app-2")];
        let (evict, terminating) = triage(&pods);
        let names: Vec<String> = evict.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["app-1", "app-2"]);
        assert_eq!(terminating, 1);
    }

    #[test]
    fn the_taint_is_added_once_and_keeps_the_others() {
        let mut node = Node::default();
        node.metadata.resource_version = Some("5".into());
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(vec![Taint {
                key: "dedicated".into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            }]),
            ..Default::default()
        });
        let Some(patch) = taint_patch(&node) else {
            panic!("expected a patch")
        };
        assert_eq!(patch["metadata"]["resourceVersion"], "5");
        let keys: Vec<&str> = patch["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["key"].as_str())
            .collect();
        assert_eq!(keys, ["dedicated", DISRUPTED_TAINT]);
        let tainted: Node = serde_json::from_value(json!({"spec": patch["spec"].clone()}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(taint_patch(&tainted), None);
    }

    #[test]
    fn drained_when_nothing_keeps_the_node() {
        assert!(DrainProgress::default().drained());
        let left = DrainProgress {
            remaining: 1,
            ..DrainProgress::default()
        };
        assert!(!left.drained());
    }
}
