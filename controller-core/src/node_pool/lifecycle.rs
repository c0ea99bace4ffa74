//! The life of one instance of a pool: launching → registered (a Node with its providerID, labelled and tainted
//! from the pool) → initialized (cloud-node controller done, Ready) → removed (timed out, failed, or empty).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{CloudInstanceError, CloudInstanceState};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::crd::{INITIALIZED_LABEL, NodePoolSpec, POOL_LABEL, UNREGISTERED_TAINT};
use super::disruption::NODEPOOL_HASH_ANNOTATION;
use crate::cloud_node::UNINITIALIZED_TAINT;

/// One instance of the pool's node group, with its Node once registered.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) provider_id: String,
    /// The node group it belongs to.
    pub(crate) group: String,
    /// The pool's startup taints: the node is initialized only once they are gone.
    pub(crate) startup_taints: Vec<Taint>,
    pub(crate) state: CloudInstanceState,
    pub(crate) error: Option<CloudInstanceError>,
    pub(crate) node: Option<Arc<Node>>,
    /// When the launch was requested (or the controller first saw the instance).
    pub(crate) launched_at: Timestamp,
}

/// Where an instance is in its life, as shown in `status.nodes[].phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Launching,
    Registered,
    Ready,
    /// Initialized once, not Ready now: left to the node lifecycle.
    NotReady,
    Deleting,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Launching => "Launching",
            Phase::Registered => "Registered",
            Phase::Ready => "Ready",
            Phase::NotReady => "NotReady",
            Phase::Deleting => "Deleting",
        }
    }
}

/// Why an instance is removed without being empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The cloud reported an error creating it.
    LaunchFailed(String),
    /// Still `Creating` after the launch timeout.
    LaunchTimeout,
    /// No Node registered within the registration timeout.
    RegistrationTimeout,
    /// The Node did not become initialized and Ready within the initialization timeout.
    InitializationTimeout,
}

impl Failure {
    /// The Event reason (Warning, on the NodePool).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Failure::LaunchFailed(_) => "LaunchFailed",
            Failure::LaunchTimeout => "LaunchTimeout",
            Failure::RegistrationTimeout => "RegistrationTimeout",
            Failure::InitializationTimeout => "InitializationTimeout",
        }
    }

    /// The metric label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Failure::LaunchFailed(_) => "launch_failed",
            Failure::LaunchTimeout => "launch_timeout",
            Failure::RegistrationTimeout => "registration_timeout",
            Failure::InitializationTimeout => "initialization_timeout",
        }
    }
}

impl Member {
    pub(crate) fn phase(&self) -> Phase {
        match (&self.node, self.state) {
            (_, CloudInstanceState::Deleting) => Phase::Deleting,
            (None, _) => Phase::Launching,
            (Some(node), _) if self.initialized(node) => Phase::Ready,
            (Some(node), _) if was_initialized(node) => Phase::NotReady,
            (Some(_), _) => Phase::Registered,
        }
    }

    /// [`is_initialized`], and the pool's startup taints gone.
    pub(crate) fn initialized(&self, node: &Node) -> bool {
        is_initialized(node)
            && !taints(node).iter().any(|t| {
                self.startup_taints
                    .iter()
                    .any(|s| s.key == t.key && s.effect == t.effect)
            })
    }

    /// Whether the instance must go (and why), or else how long until its next deadline (if it has one).
    pub(crate) fn check(
        &self,
        spec: &NodePoolSpec,
        now: Timestamp,
    ) -> Result<Option<Duration>, Failure> {
        if let Some(e) = &self.error {
            return Err(Failure::LaunchFailed(format!("{}: {}", e.code, e.message)));
        }
        let since_launch = elapsed(self.launched_at, now);
        match (&self.node, self.state) {
            (_, CloudInstanceState::Deleting) => Ok(None),
            (None, state) => {
                if state == CloudInstanceState::Creating && since_launch >= spec.launch_timeout() {
                    return Err(Failure::LaunchTimeout);
                }
                if since_launch >= spec.registration_timeout() {
                    return Err(Failure::RegistrationTimeout);
                }
                let mut next = spec.registration_timeout() - since_launch;
                if state == CloudInstanceState::Creating {
                    next = next.min(spec.launch_timeout() - since_launch);
                }
                Ok(Some(next))
            }
            (Some(node), _) if self.initialized(node) || was_initialized(node) => Ok(None),
            (Some(node), _) => {
                let registered = node
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(now, |t| t.0);
                let since = elapsed(registered, now);
                if since >= spec.initialization_timeout() {
                    return Err(Failure::InitializationTimeout);
                }
                Ok(Some(spec.initialization_timeout() - since))
            }
        }
    }
}

/// `now - then`, zero if `then` is in the future.
pub(crate) fn elapsed(then: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or(Duration::ZERO)
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Initialized: the cloud-node controller removed its taint, we removed ours, and the kubelet reports Ready.
pub(crate) fn is_initialized(node: &Node) -> bool {
    is_ready(node)
        && !taints(node)
            .iter()
            .any(|t| t.key == UNINITIALIZED_TAINT || t.key == UNREGISTERED_TAINT)
}

/// Whether the controller marked the Node initialized before (see [`INITIALIZED_LABEL`]).
pub(crate) fn was_initialized(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INITIALIZED_LABEL))
        .is_some_and(|v| v == "true")
}

/// Whether pods of the pool can be scheduled on the Node: not cordoned, not being deleted, and no
/// `NoSchedule`/`NoExecute` taint beyond the pool's shape (`shape_taints`) except the startup taints that go
/// away by themselves (uninitialized, unregistered, not-ready, unreachable).
pub(crate) fn accepts_pods(node: &Node, shape_taints: &[Taint]) -> bool {
    if node.metadata.deletion_timestamp.is_some()
        || node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
    {
        return false;
    }
    const STARTUP: [&str; 4] = [
        UNINITIALIZED_TAINT,
        UNREGISTERED_TAINT,
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ];
    taints(node).iter().all(|t| {
        t.effect == "PreferNoSchedule"
            || STARTUP.contains(&t.key.as_str())
            || shape_taints
                .iter()
                .any(|s| s.key == t.key && s.effect == t.effect)
    })
}

/// The merge patch that gives a registered Node the pool's labels and taints and removes
/// [`UNREGISTERED_TAINT`] (and, once it is initialized, adds [`INITIALIZED_LABEL`]), or `None` if it has them
/// all already. Conditioned on the observed
/// `resourceVersion` since the taint list is replaced whole.
pub(crate) fn registration_patch(
    node: &Node,
    pool: &str,
    spec: &NodePoolSpec,
) -> Option<serde_json::Value> {
    let current_labels = node.metadata.labels.clone().unwrap_or_default();
    let mut labels = BTreeMap::new();
    let mut wanted_labels = spec.labels.clone();
    wanted_labels.insert(POOL_LABEL.to_owned(), pool.to_owned());
    let startup_left = taints(node).iter().any(|t| {
        spec.startup_taints
            .iter()
            .any(|s| s.key == t.key && s.effect == t.effect)
    });
    if is_initialized(node) && !startup_left {
        wanted_labels.insert(INITIALIZED_LABEL.to_owned(), "true".to_owned());
    }
    for (k, v) in &wanted_labels {
        if current_labels.get(k) != Some(v) {
            labels.insert(k.clone(), v.clone());
        }
    }
    let current = taints(node);
    let mut wanted: Vec<Taint> = current
        .iter()
        .filter(|t| t.key != UNREGISTERED_TAINT)
        .cloned()
        .collect();
    // Startup taints go on with the first write only: whoever removes them must not see them come back.
    let first = current_labels.get(POOL_LABEL).map(String::as_str) != Some(pool);
    let startup = spec.startup_taints.iter().filter(|_| first);
    for t in spec.taints.iter().chain(startup) {
        if !wanted
            .iter()
            .any(|have| have.key == t.key && have.effect == t.effect)
        {
            wanted.push(t.clone());
        }
    }
    let taints_change = wanted.as_slice() != current;
    // The template digest is written once (at registration, or the first time a node is seen without it); a
    // different digest later is drift.
    let unmarked = node
        .metadata
        .annotations
        .as_ref()
        .is_none_or(|a| !a.contains_key(NODEPOOL_HASH_ANNOTATION));
    if labels.is_empty() && !taints_change && !unmarked {
        return None;
    }
    let mut patch = json!({
        "metadata": {
            "resourceVersion": node.metadata.resource_version,
            "labels": labels,
        }
    });
    if unmarked {
        patch["metadata"]["annotations"] =
            json!({ NODEPOOL_HASH_ANNOTATION: super::disruption::template_hash(spec) });
    }
    if taints_change {
        patch["spec"] = json!({ "taints": wanted });
    }
    Some(patch)
}

/// Whether a pod keeps its node from being removed: bound to it, not finished, not a DaemonSet or mirror pod.
pub(crate) fn blocks_removal(pod: &Pod) -> bool {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    !(finished || daemon || mirror)
}

/// The node a pod is bound to.
pub(crate) fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::SignedDuration;

    fn spec() -> NodePoolSpec {
        let mut s = NodePoolSpec::new("g", 5);
        s.launch_timeout_seconds = 10;
        s.registration_timeout_seconds = 20;
        s.initialization_timeout_seconds = 30;
        s
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_000_000 + seconds)
    }

    fn member(state: CloudInstanceState, node: Option<Node>) -> Member {
        Member {
            group: "g".into(),
            startup_taints: Vec::new(),
            provider_id: "fake://g-1".into(),
            state,
            error: None,
            node: node.map(Arc::new),
            launched_at: at(0),
        }
    }

    fn node(created: i64, taint: Option<&str>, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("g-1".into()),
                creation_timestamp: Some(Time(at(created))),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|k| {
                    vec![Taint {
                        key: k.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn launch_and_registration_deadlines() {
        let s = spec();
        let creating = member(CloudInstanceState::Creating, None);
        assert_eq!(creating.check(&s, at(4)), Ok(Some(Duration::from_secs(6))));
        assert_eq!(creating.check(&s, at(10)), Err(Failure::LaunchTimeout));
        let running = member(CloudInstanceState::Running, None);
        assert_eq!(running.check(&s, at(15)), Ok(Some(Duration::from_secs(5))));
        assert_eq!(running.check(&s, at(20)), Err(Failure::RegistrationTimeout));
        let mut failed = member(CloudInstanceState::Creating, None);
        failed.error = Some(CloudInstanceError {
            class: cloudprovider_api::CloudInstanceErrorClass::OutOfResources,
            code: "NoCapacity".into(),
            message: "none left".into(),
        });
        assert!(matches!(
            failed.check(&s, at(0)),
            Err(Failure::LaunchFailed(_))
        ));
    }

    #[test]
    fn initialization_deadline_counts_from_registration() {
        let s = spec();
        let uninit = member(
            CloudInstanceState::Running,
            Some(node(15, Some(UNINITIALIZED_TAINT), true)),
        );
        assert_eq!(uninit.phase(), Phase::Registered);
        assert_eq!(uninit.check(&s, at(40)), Ok(Some(Duration::from_secs(5))));
        assert_eq!(
            uninit.check(&s, at(45)),
            Err(Failure::InitializationTimeout)
        );
        let not_ready = member(CloudInstanceState::Running, Some(node(15, None, false)));
        assert_eq!(
            not_ready.check(&s, at(45)),
            Err(Failure::InitializationTimeout)
        );
        let ready = member(CloudInstanceState::Running, Some(node(15, None, true)));
        assert_eq!(ready.phase(), Phase::Ready);
        assert_eq!(ready.check(&s, at(1000)), Ok(None));
        // Initialized once, NotReady later: no longer subject to the initialization timeout.
        let mut once = node(15, None, false);
        once.metadata.labels = Some(BTreeMap::from([(
            INITIALIZED_LABEL.to_owned(),
            "true".to_owned(),
        )]));
        let once = member(CloudInstanceState::Running, Some(once));
        assert_eq!(once.phase(), Phase::NotReady);
        assert_eq!(once.check(&s, at(1000)), Ok(None));
    }

    #[test]
    fn cordoned_or_foreign_tainted_nodes_take_no_pods() {
        let pool_taint = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let starting = node(0, Some(UNINITIALIZED_TAINT), false);
        assert!(accepts_pods(&starting, &[]));
        let foreign = node(0, Some("dedicated"), true);
        assert!(!accepts_pods(&foreign, &[]));
        assert!(accepts_pods(&foreign, &[pool_taint]));
        let mut cordoned = node(0, None, true);
        if let Some(spec) = cordoned.spec.as_mut() {
            spec.unschedulable = Some(true);
        }
        assert!(!accepts_pods(&cordoned, &[]));
    }

    #[test]
    fn registration_patch_adds_labels_and_taints_and_drops_unregistered() {
        let mut s = spec();
        s.labels.insert("team".into(), "ml".into());
        s.taints.push(Taint {
            key: "dedicated".into(),
            value: Some("ml".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        let n = node(0, Some(UNREGISTERED_TAINT), true);
        let Some(patch) = registration_patch(&n, "pool-a", &s) else {
            panic!("expected a patch")
        };
        assert_eq!(patch["metadata"]["labels"]["team"], "ml");
        assert_eq!(patch["metadata"]["labels"][POOL_LABEL], "pool-a");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let keys: Vec<&str> = patch["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["key"].as_str())
            .collect();
        assert_eq!(keys, vec!["dedicated"]);
        assert_eq!(
            patch["metadata"]["annotations"][NODEPOOL_HASH_ANNOTATION],
            super::super::disruption::template_hash(&s).as_str()
        );

        // Initialized: marked so.
        let initialized = node(0, None, true);
        let Some(patch) = registration_patch(&initialized, "pool-a", &s) else {
            panic!("expected a patch")
        };
        assert_eq!(patch["metadata"]["labels"][INITIALIZED_LABEL], "true");

        // Applied: nothing left to do.
        let mut done = node(0, None, true);
        done.metadata.labels = Some(BTreeMap::from([
            ("team".to_owned(), "ml".to_owned()),
            (POOL_LABEL.to_owned(), "pool-a".to_owned()),
            (INITIALIZED_LABEL.to_owned(), "true".to_owned()),
        ]));
        if let Some(spec) = done.spec.as_mut() {
            spec.taints = Some(s.taints.clone());
        }
        done.metadata.annotations = Some(BTreeMap::from([(
            NODEPOOL_HASH_ANNOTATION.to_owned(),
            "an older digest".to_owned(),
        )]));
        // The digest is not rewritten: a different one is drift, for the disruption step to act on.
        assert_eq!(registration_patch(&done, "pool-a", &s), None);

        // Startup taints go on with the first write only.
        s.startup_taints.push(Taint {
            key: "agent".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        let Some(first) = registration_patch(&n, "pool-a", &s) else {
            panic!("expected a patch")
        };
        assert!(
            first["spec"]["taints"].to_string().contains("\"agent\""),
            "{first}"
        );
        assert_eq!(
            registration_patch(&done, "pool-a", &s),
            None,
            "not put back once registered"
        );
    }
}
