//! The `NodePool` custom resource (group [`GROUP`], version `v1alpha1`, cluster-scoped).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of [`NodePool`]: ours, not a Kubernetes or Karpenter group, so it never collides with either.
pub const GROUP: &str = "kube-cloud-rs.dev";

/// The label every node of a pool carries, valued with the pool's name. Pods may select it with `nodeSelector`.
pub const POOL_LABEL: &str = "kube-cloud-rs.dev/nodepool";

/// The label (value `"true"`) the controller puts on a Node of a pool once it was first initialized and Ready
/// (like Karpenter's `karpenter.sh/initialized`): the initialization timeout no longer applies to it, so a node
/// that is NotReady for a while later is left to the node lifecycle, not deleted.
pub const INITIALIZED_LABEL: &str = "kube-cloud-rs.dev/initialized";

/// A taint (`NoExecute`) a machine launched for a pool should register its Node with (like Karpenter's
/// `karpenter.sh/unregistered`): no pod lands on the Node before the pool's labels and taints are on it. The
/// controller removes it in the same write that adds them. Nodes registered without it are labelled too, with a
/// short window in which pods not tolerating the pool's taints could be scheduled.
pub const UNREGISTERED_TAINT: &str = "kube-cloud-rs.dev/unregistered";

/// Kubernetes' OpenAPI knows the integer formats `int32` and `int64`, not schemars' `uint32`/`uint64`/`uint`:
/// with those the apiserver warns `unrecognized format "uint32"` on every `kubectl apply` of the CRD. Every
/// unsigned 32-bit value fits `int64` (the `minimum: 0` schemars writes stays); wider unsigned formats are dropped.
fn kubernetes_integer_formats(schema: &mut schemars::Schema) {
    if let Some(format) = schema.get("format").and_then(|f| f.as_str()) {
        match format {
            "uint8" | "uint16" | "uint32" => {
                schema.insert("format".into(), "int64".into());
            }
            "uint" | "uint64" | "uint128" => {
                schema.remove("format");
            }
            _ => {}
        }
    }
    schemars::transform::transform_subschemas(&mut kubernetes_integer_formats, schema);
}

/// On-demand nodes from one provider node group: launched when pending pods would fit them, removed when empty.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kube-cloud-rs.dev",
    version = "v1alpha1",
    kind = "NodePool",
    plural = "nodepools",
    singular = "nodepool",
    shortname = "np",
    status = "NodePoolStatus",
    printcolumn = r#"{"name":"Group","type":"string","jsonPath":".spec.nodeGroup"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minNodes"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxNodes"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredNodes"}"#,
    printcolumn = r#"{"name":"Launching","type":"integer","jsonPath":".status.launchingNodes"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integer_formats)]
pub struct NodePoolSpec {
    /// The provider's node group (instance template) the pool launches from; its template node gives the
    /// capacity, labels and taints new nodes start with.
    #[schemars(length(min = 1))]
    pub node_group: String,
    /// Labels put on every node of the pool (besides the node group's and `kube-cloud-rs.dev/nodepool`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints put on every node of the pool (besides the node group's). Pods must tolerate them to count.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// The pool never removes nodes below this many, and launches up to it. Must not exceed `maxNodes`.
    #[serde(default)]
    pub min_nodes: u32,
    /// The pool never has more nodes than this (launching ones included).
    pub max_nodes: u32,
    /// How long a node must stay empty (no pods but DaemonSet and mirror pods) before it is removed.
    #[serde(default = "default_empty_node_delay")]
    pub empty_node_delay_seconds: u32,
    /// How long an instance may stay `Creating` in the cloud before it is deleted.
    #[serde(default = "default_launch_timeout")]
    pub launch_timeout_seconds: u32,
    /// How long after the launch request a Node with the instance's providerID must have registered, else the
    /// instance is deleted (this also collects instances of the group that never registered).
    #[serde(default = "default_registration_timeout")]
    pub registration_timeout_seconds: u32,
    /// How long after registering a Node must become initialized (uninitialized and unregistered taints gone,
    /// `Ready=True`), else the Node and its instance are deleted.
    #[serde(default = "default_initialization_timeout")]
    pub initialization_timeout_seconds: u32,
    /// What deleting the pool does with its nodes; default `Delete`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Which nodes scale-down removes (Karpenter's `consolidationPolicy`); default `WhenEmpty`. Both wait
    /// `emptyNodeDelaySeconds`.
    #[serde(default)]
    pub consolidation_policy: ConsolidationPolicy,
}

/// Which nodes of a pool are removed to save capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub enum ConsolidationPolicy {
    /// Only nodes without pods (but DaemonSet and mirror ones).
    #[default]
    WhenEmpty,
    /// Also a node whose pods would all fit on the pool's other ready nodes: it is drained through the Eviction API
    /// (PodDisruptionBudgets respected) and removed, one node at a time, when no pod is pending for the pool.
    WhenEmptyOrUnderutilized,
}

/// What happens to a pool's nodes when the pool is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub enum DeletionPolicy {
    /// Drain every node of the pool (pods evicted through the Eviction API, PodDisruptionBudgets respected,
    /// blocked evictions retried, never forced), then delete the Nodes and their instances; the pool object goes
    /// once none is left (finalizer [`TERMINATION_FINALIZER`]).
    #[default]
    Delete,
    /// Leave the nodes and their instances as they are; the pool object goes at once.
    Orphan,
}

/// The finalizer that keeps a deleted pool until its nodes are drained and removed (Karpenter:
/// `karpenter.sh/termination`).
pub const TERMINATION_FINALIZER: &str = "kube-cloud-rs.dev/termination";

fn default_empty_node_delay() -> u32 {
    30
}
fn default_launch_timeout() -> u32 {
    5 * 60
}
fn default_registration_timeout() -> u32 {
    15 * 60
}
fn default_initialization_timeout() -> u32 {
    10 * 60
}

impl NodePoolSpec {
    /// A pool over `node_group` with `max_nodes`, no minimum and the default delays and timeouts.
    pub fn new(node_group: impl Into<String>, max_nodes: u32) -> Self {
        Self {
            node_group: node_group.into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            min_nodes: 0,
            max_nodes,
            empty_node_delay_seconds: default_empty_node_delay(),
            launch_timeout_seconds: default_launch_timeout(),
            registration_timeout_seconds: default_registration_timeout(),
            initialization_timeout_seconds: default_initialization_timeout(),
            deletion_policy: DeletionPolicy::Delete,
            consolidation_policy: ConsolidationPolicy::WhenEmpty,
        }
    }

    /// Checks what the schema cannot express. The error names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.node_group.is_empty() {
            return Err(SpecError::new("spec.nodeGroup", "must not be empty"));
        }
        if self.min_nodes > self.max_nodes {
            return Err(SpecError::new(
                "spec.minNodes",
                format!(
                    "{} is greater than spec.maxNodes {}",
                    self.min_nodes, self.max_nodes
                ),
            ));
        }
        for (i, taint) in self.taints.iter().enumerate() {
            if taint.key.is_empty() {
                return Err(SpecError::new(
                    format!("spec.taints[{i}].key"),
                    "must not be empty",
                ));
            }
            if !matches!(
                taint.effect.as_str(),
                "NoSchedule" | "PreferNoSchedule" | "NoExecute"
            ) {
                return Err(SpecError::new(
                    format!("spec.taints[{i}].effect"),
                    format!(
                        "{:?} is not one of NoSchedule, PreferNoSchedule, NoExecute",
                        taint.effect
                    ),
                ));
            }
        }
        for (key, value) in &self.labels {
            if key.is_empty() || value.len() > 63 {
                return Err(SpecError::new(
                    format!("spec.labels[{key:?}]"),
                    "keys must be non-empty and values at most 63 characters",
                ));
            }
        }
        Ok(())
    }

    /// [`empty_node_delay_seconds`](Self::empty_node_delay_seconds) as a duration.
    pub fn empty_node_delay(&self) -> Duration {
        Duration::from_secs(self.empty_node_delay_seconds.into())
    }

    /// [`launch_timeout_seconds`](Self::launch_timeout_seconds) as a duration.
    pub fn launch_timeout(&self) -> Duration {
        Duration::from_secs(self.launch_timeout_seconds.into())
    }

    /// [`registration_timeout_seconds`](Self::registration_timeout_seconds) as a duration.
    pub fn registration_timeout(&self) -> Duration {
        Duration::from_secs(self.registration_timeout_seconds.into())
    }

    /// [`initialization_timeout_seconds`](Self::initialization_timeout_seconds) as a duration.
    pub fn initialization_timeout(&self) -> Duration {
        Duration::from_secs(self.initialization_timeout_seconds.into())
    }
}

/// A spec field the schema accepted but the controller cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct SpecError {
    /// The field, e.g. `spec.minNodes`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What the controller observed and decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integer_formats)]
pub struct NodePoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Instances the pool has in the cloud, launching ones included.
    #[serde(default)]
    pub desired_nodes: u32,
    /// Instances not yet initialized and Ready.
    #[serde(default)]
    pub launching_nodes: u32,
    /// Nodes initialized and Ready.
    #[serde(default)]
    pub ready_nodes: u32,
    /// One entry per instance.
    #[serde(default)]
    pub nodes: Vec<PoolNodeStatus>,
    /// `Valid` (the spec is usable) and `Ready` (no launch in flight).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The last scale-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<ScalingDecision>,
    /// The last removal of nodes (empty, timed out or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<ScalingDecision>,
}

/// One instance of the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolNodeStatus {
    /// The instance's provider ID (`spec.providerID` of its Node).
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// The Node's name, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `Launching`, `Registered`, `Ready`, `NotReady` (initialized once, not Ready now) or `Deleting`.
    pub phase: String,
    /// When the controller first saw the instance (its launch request, for instances it launched).
    pub launched_at: Time,
}

/// A scaling decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingDecision {
    /// When.
    pub time: Time,
    /// How many nodes were added or removed.
    pub nodes: u32,
    /// Why, in words.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_is_cluster_scoped_with_status_and_columns() {
        let crd = NodePool::crd();
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        assert!(columns.iter().any(|c| c.name == "Ready"));
    }

    #[test]
    fn crd_uses_only_integer_formats_kubernetes_knows() {
        let text = serde_json::to_string(&NodePool::crd()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !text.contains("\"uint"),
            "schemars' unsigned formats left in the CRD"
        );
        assert!(text.contains("\"int64\""), "the u32 fields say int64");
        assert!(
            text.contains("\"minimum\":0"),
            "and keep their minimum of 0"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut spec = NodePoolSpec::new("g", 1);
        assert_eq!(spec.validate(), Ok(()));
        spec.min_nodes = 2;
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.minNodes".into())
        );
        spec.min_nodes = 0;
        spec.taints.push(Taint {
            key: "k".into(),
            effect: "Sometimes".into(),
            ..Default::default()
        });
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.taints[0].effect".into())
        );
    }

    #[test]
    fn defaults_apply_when_fields_are_missing() {
        let spec: NodePoolSpec =
            serde_json::from_value(serde_json::json!({"nodeGroup": "g", "maxNodes": 3}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec, NodePoolSpec::new("g", 3));
    }
}
