//! Voluntary disruption of a pool's nodes, as Karpenter's disruption controller does it: which nodes go and why
//! (expired after `expireAfter`, drifted from the pool's template, underutilized: deleted when their pods fit
//! elsewhere, replaced when cheaper nodes would hold them), at most as many at once as the disruption budgets
//! allow, each node replaced first when its pods need room elsewhere.
//!
//! For each disrupted node:
//! 1. **Plan**: its pods placed ([`packing`](super::packing)) on the pool's other nodes and, where they do not
//!    fit, on new ones; pods that fit nowhere (at `maxNodes` or `limits`) block it (`DisruptionBlocked`).
//! 2. **Launch** the new nodes (`DisruptionLaunching`), and wait until no node of the pool is launching
//!    (`DisruptionWaitingReadiness`).
//! 3. **Drain** ([`drain`](super::drain), `DisruptionTerminating`): tainted, pods evicted through the Eviction API
//!    (PodDisruptionBudgets respected, refusals retried), Node deleted, instance terminated (`ScaleDown`).
//!
//! Nodes annotated, or running a pod annotated, `do-not-disrupt` are never picked. New disruptions start only
//! when no pod is pending for the pool and nothing is launching.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::crd::NodePoolSpec;
use super::lifecycle::{Member, elapsed};

/// Annotation on a pool's Node: a digest of the pool's labels, taints and startup taints when it registered
/// (Karpenter: `karpenter.sh/nodepool-hash`). A different digest now means the node drifted.
pub const NODEPOOL_HASH_ANNOTATION: &str = "kube-cloud-rs.dev/nodepool-hash";

/// Why a node is disrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Older than `expireAfter`.
    Expired,
    /// Its template no longer matches the pool's (labels, taints, startup taints, node groups).
    Drifted,
    /// Its pods fit on the pool's other nodes.
    Underutilized,
    /// New nodes costing less than it together would hold its pods.
    Replaced,
}

impl Reason {
    /// The decision metric's label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::Drifted => "drifted",
            Reason::Underutilized => "consolidation",
            Reason::Replaced => "replaced",
        }
    }
}

/// A disruption in progress (kept in the pool's memory until the node is gone).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Disruption {
    pub(crate) reason: Reason,
    /// In words, for Events.
    pub(crate) why: String,
    /// Whether its replacement nodes were planned (and launched, if any were needed).
    pub(crate) planned: bool,
    /// Whether `DisruptionWaitingReadiness` / `DisruptionTerminating` were announced.
    pub(crate) waiting_announced: bool,
    pub(crate) terminating_announced: bool,
}

impl Disruption {
    pub(crate) fn new(reason: Reason, why: String) -> Self {
        Self {
            reason,
            why,
            planned: false,
            waiting_announced: false,
            terminating_announced: false,
        }
    }
}

/// The digest of what the pool puts on its Nodes at registration.
pub(crate) fn template_hash(spec: &NodePoolSpec) -> String {
    let text = serde_json::to_string(&(&spec.labels, &spec.taints, &spec.startup_taints))
        .unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

/// Whether `member` must be replaced regardless of use: expired, or drifted from the pool.
pub(crate) fn forced(
    member: &Member,
    spec: &NodePoolSpec,
    expire_after: Option<Duration>,
    now: Timestamp,
) -> Option<Disruption> {
    let node = member.node.as_deref()?;
    if !spec.group_ids().contains(&member.group.as_str()) {
        let why = format!(
            "node {} drifted: its node group {} is no longer in the pool",
            node.name_any(),
            member.group
        );
        return Some(Disruption::new(Reason::Drifted, why));
    }
    if let Some(hash) = node.annotations().get(NODEPOOL_HASH_ANNOTATION)
        && *hash != template_hash(spec)
    {
        let why = format!(
            "node {} drifted: the pool's labels or taints changed since it registered",
            node.name_any()
        );
        return Some(Disruption::new(Reason::Drifted, why));
    }
    let expiry = expire_after?;
    let age = elapsed(born(member, node), now);
    (age >= expiry).then(|| {
        let why = format!(
            "node {} expired: {}s old, spec.expireAfter {}",
            node.name_any(),
            age.as_secs(),
            spec.expire_after.as_deref().unwrap_or_default()
        );
        Disruption::new(Reason::Expired, why)
    })
}

/// When a member's life began: its launch (as the pool saw it), else its Node's creation.
fn born(member: &Member, node: &Node) -> Timestamp {
    node.metadata
        .creation_timestamp
        .as_ref()
        .map_or(member.launched_at, |t| t.0.min(member.launched_at))
}

/// How long until `member` expires, for the next look.
pub(crate) fn until_expiry(
    member: &Member,
    expire_after: Option<Duration>,
    now: Timestamp,
) -> Option<Duration> {
    let node = member.node.as_deref()?;
    expire_after?.checked_sub(elapsed(born(member, node), now))
}

/// How many more nodes may be disrupted at `now`: the budget for `total` nodes minus those `busy` already.
pub(crate) fn room_in_budget(
    spec: &NodePoolSpec,
    total: u32,
    busy: usize,
    now: Timestamp,
) -> usize {
    let allowed = usize::try_from(spec.disruptions_allowed(total, now)).unwrap_or(usize::MAX);
    allowed.saturating_sub(busy)
}

/// The pods that must move off a node before it goes: bound, not finished, not DaemonSet or mirror pods.
pub(crate) fn movers<'p>(by_node: &BTreeMap<&str, Vec<&'p Pod>>, node: &Node) -> Vec<&'p Pod> {
    by_node
        .get(node.name_any().as_str())
        .into_iter()
        .flatten()
        .copied()
        .filter(|p| super::lifecycle::blocks_removal(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudprovider_api::CloudInstanceState;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::SignedDuration;
    use std::sync::Arc;

    fn member(group: &str, age_secs: i64, hash: Option<String>) -> (Member, Timestamp) {
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_000_000);
        let born = now - SignedDuration::from_secs(age_secs);
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(Time(born)),
                annotations: hash
                    .map(|h| BTreeMap::from([(NODEPOOL_HASH_ANNOTATION.to_owned(), h)])),
                ..Default::default()
            },
            ..Default::default()
        };
        let member = Member {
            provider_id: "fake://n1".into(),
            group: group.into(),
            startup_taints: Vec::new(),
            state: CloudInstanceState::Running,
            error: None,
            node: Some(Arc::new(node)),
            launched_at: born,
        };
        (member, now)
    }

    #[test]
    fn expiry_and_drift_are_found() {
        let mut spec = NodePoolSpec::new("g", 5);
        let hash = template_hash(&spec);
        let (young, now) = member("g", 30, Some(hash.clone()));
        assert_eq!(
            forced(&young, &spec, Some(Duration::from_secs(60)), now),
            None
        );
        assert_eq!(
            until_expiry(&young, Some(Duration::from_secs(60)), now),
            Some(Duration::from_secs(30))
        );
        let (old, now) = member("g", 90, Some(hash.clone()));
        let expired = forced(&old, &spec, Some(Duration::from_secs(60)), now);
        assert_eq!(expired.map(|d| d.reason), Some(Reason::Expired));
        assert_eq!(
            forced(&old, &spec, None, now),
            None,
            "no expireAfter, no expiry"
        );
        // The pool's taints changed since the node registered.
        spec.taints.push(k8s_openapi::api::core::v1::Taint {
            key: "k".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        assert_ne!(template_hash(&spec), hash);
        let drifted = forced(&young, &spec, None, now);
        assert_eq!(drifted.map(|d| d.reason), Some(Reason::Drifted));
        // A node without the annotation (registered before it existed) has not drifted.
        let (unmarked, now) = member("g", 30, None);
        assert_eq!(forced(&unmarked, &spec, None, now), None);
        // Its group left the pool.
        let (elsewhere, now) = member("old-group", 30, None);
        let moved = forced(&elsewhere, &spec, None, now);
        assert_eq!(moved.map(|d| d.reason), Some(Reason::Drifted));
    }

    #[test]
    fn the_budget_counts_what_is_already_disrupted() {
        let mut spec = NodePoolSpec::new("g", 5);
        spec.disruption_budgets = vec![super::super::crd::DisruptionBudget::new("1")];
        let t = Timestamp::UNIX_EPOCH;
        assert_eq!(room_in_budget(&spec, 3, 0, t), 1);
        assert_eq!(room_in_budget(&spec, 3, 1, t), 0);
        assert_eq!(room_in_budget(&spec, 3, 2, t), 0);
    }
}
