//! The `NodePool` custom resource (group [`GROUP`], version `v1alpha1`, cluster-scoped).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
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
    printcolumn = r#"{"name":"Groups","type":"string","jsonPath":".spec.nodeGroups"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minNodes"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxNodes"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredNodes"}"#,
    printcolumn = r#"{"name":"Launching","type":"integer","jsonPath":".status.launchingNodes"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".status.resources.cpu"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.resources.memory"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integer_formats)]
pub struct NodePoolSpec {
    /// The provider's node group (instance template) the pool launches from; its template node gives the
    /// capacity, labels and taints new nodes start with. May be left empty when `nodeGroups` names the groups.
    #[serde(default)]
    pub node_group: String,
    /// More node groups the pool may launch from (after `nodeGroup`, if set): different instance shapes, zones and
    /// capacity types. Scale-up launches the cheapest set of instances that fits the pending pods (the groups'
    /// prices, see `cloudprovider_api::NodeGroup::price`; without prices the smallest shape that fits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_groups: Vec<String>,
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
    /// The most the pool's nodes may have in total, per resource (Karpenter's `limits`), e.g.
    /// `{cpu: "64", memory: 256Gi}`: counted over the capacity of the pool's instances, launching ones
    /// included; a launch that would pass a limit is not made (`NotTriggerScaleUp`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    /// Priority among pools (Karpenter's `weight`, 1 to 100): a pending pod that several pools could take counts
    /// for the one with the highest weight (then the first by name), unless that pool is at its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Taints new nodes register with that something else removes once the node is ready for work (Karpenter's
    /// `startupTaints`, e.g. a CNI or storage agent's): put on the Node with the pool's labels, never put back;
    /// pods need not tolerate them to count for the pool, and a node is initialized only once they are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    /// How long a node may live before it is replaced (Karpenter's `expireAfter`), e.g. `720h` or `30m`;
    /// `Never` or unset: nodes do not expire. A replacement is launched and Ready before the node is drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<String>,
    /// How many of the pool's nodes may be disrupted at once (consolidated, expired, drifted or removed empty),
    /// as Karpenter's `disruption.budgets`: the smallest applies; default one budget of `10%` (rounded up, so at
    /// least one node while the pool has any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disruption_budgets: Vec<DisruptionBudget>,
}

/// At most `nodes` of a pool's nodes disrupted at the same time, always or for `duration` after each time
/// `schedule` fires (Karpenter's budget: e.g. `{nodes: "0", schedule: "0 9 * * mon-fri", duration: 8h}` stops
/// voluntary disruption during working hours).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DisruptionBudget {
    /// A count (`"1"`, `"0"` to stop voluntary disruption) or a percentage of the pool's nodes (`"10%"`,
    /// rounded up).
    pub nodes: String,
    /// A cron schedule (UTC; five fields or a macro such as `@daily`) at which the budget starts to apply;
    /// needs `duration`. Unset: always applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long the budget applies after each time `schedule` fires, e.g. `8h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

impl DisruptionBudget {
    /// A budget of `nodes` (`"1"`, `"20%"`) that always applies.
    pub fn new(nodes: impl Into<String>) -> Self {
        Self {
            nodes: nodes.into(),
            schedule: None,
            duration: None,
        }
    }

    /// The budget applying only for `duration` after each time the cron `schedule` fires.
    #[must_use]
    pub fn with_schedule(
        mut self,
        schedule: impl Into<String>,
        duration: impl Into<String>,
    ) -> Self {
        self.schedule = Some(schedule.into());
        self.duration = Some(duration.into());
        self
    }

    /// Whether the budget applies at `now`; an error names what does not parse (`field` is its path).
    pub fn active(&self, now: Timestamp, field: &str) -> Result<bool, SpecError> {
        let (schedule, duration) = match (self.schedule.as_deref(), self.duration.as_deref()) {
            (None, None) => return Ok(true),
            (Some(s), Some(d)) => (s, d),
            _ => {
                return Err(SpecError::new(
                    format!("{field}.schedule"),
                    "schedule and duration go together",
                ));
            }
        };
        let cron: croner::Cron = schedule.parse().map_err(|e| {
            SpecError::new(
                format!("{field}.schedule"),
                format!("{schedule:?} is not a cron schedule such as \"0 9 * * mon-fri\": {e}"),
            )
        })?;
        let length = humantime::parse_duration(duration).map_err(|e| {
            SpecError::new(
                format!("{field}.duration"),
                format!("{duration:?} is not a duration such as \"8h\": {e}"),
            )
        })?;
        let Some(at) = chrono::DateTime::from_timestamp(now.as_second(), 0) else {
            return Ok(false);
        };
        let Ok(last) = cron.find_previous_occurrence(&at, true) else {
            return Ok(false);
        };
        let since = at.signed_duration_since(last).to_std().unwrap_or_default();
        Ok(since < length)
    }

    /// How many of `total` nodes this budget lets be disrupted at once; `None` if `nodes` is malformed.
    pub fn allowed(&self, total: u32) -> Option<u32> {
        let text = self.nodes.trim();
        match text.strip_suffix('%') {
            Some(percent) => {
                let p: u32 = percent.trim().parse().ok().filter(|p| *p <= 100)?;
                let scaled = u64::from(total) * u64::from(p);
                u32::try_from(scaled.div_ceil(100)).ok()
            }
            None => text.parse().ok(),
        }
    }
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
            node_groups: Vec::new(),
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
            limits: BTreeMap::new(),
            weight: None,
            startup_taints: Vec::new(),
            expire_after: None,
            disruption_budgets: Vec::new(),
        }
    }

    /// [`expire_after`](Self::expire_after) as a duration; `Ok(None)` for never.
    pub fn expire_after(&self) -> Result<Option<Duration>, SpecError> {
        match self.expire_after.as_deref().map(str::trim) {
            None | Some("Never") | Some("") => Ok(None),
            Some(text) => humantime::parse_duration(text).map(Some).map_err(|e| {
                SpecError::new(
                    "spec.expireAfter",
                    format!("{text:?} is not a duration such as \"720h\" or \"Never\": {e}"),
                )
            }),
        }
    }

    /// How many of `total` nodes may be disrupted at once at `now`: the smallest budget that applies then (no
    /// budget applying: no bound, as Karpenter), `10%` (rounded up) without budgets.
    pub fn disruptions_allowed(&self, total: u32, now: Timestamp) -> u32 {
        if self.disruption_budgets.is_empty() {
            return DisruptionBudget::new("10%").allowed(total).unwrap_or(1);
        }
        self.disruption_budgets
            .iter()
            .filter(|b| b.active(now, "").unwrap_or(true))
            .map(|b| b.allowed(total).unwrap_or(0))
            .min()
            .unwrap_or(total)
    }

    /// The node groups the pool launches from: `nodeGroup` (if set), then `nodeGroups`, without repeats.
    pub fn group_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for id in std::iter::once(&self.node_group).chain(&self.node_groups) {
            if !id.is_empty() && !ids.contains(&id.as_str()) {
                ids.push(id);
            }
        }
        ids
    }

    /// [`weight`](Self::weight), 0 when unset.
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(0)
    }

    /// Checks what the schema cannot express. The error names the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.group_ids().is_empty() {
            return Err(SpecError::new(
                "spec.nodeGroup",
                "name a node group in spec.nodeGroup or spec.nodeGroups",
            ));
        }
        if let Some(i) = self.node_groups.iter().position(String::is_empty) {
            return Err(SpecError::new(
                format!("spec.nodeGroups[{i}]"),
                "must not be empty",
            ));
        }
        if let Some(w) = self.weight.filter(|w| !(1..=100).contains(w)) {
            return Err(SpecError::new(
                "spec.weight",
                format!("{w} is outside 1 to 100"),
            ));
        }
        for (name, quantity) in &self.limits {
            if cloudprovider_api::parse_quantity(&quantity.0).is_none_or(|q| q < 0) {
                return Err(SpecError::new(
                    format!("spec.limits[{name:?}]"),
                    format!(
                        "{:?} is not a non-negative Kubernetes quantity such as \"64\" or \"256Gi\"",
                        quantity.0
                    ),
                ));
            }
        }
        for (i, taint) in self.startup_taints.iter().enumerate() {
            check_taint(taint, &format!("spec.startupTaints[{i}]"))?;
        }
        self.expire_after()?;
        for (i, budget) in self.disruption_budgets.iter().enumerate() {
            budget.active(
                Timestamp::UNIX_EPOCH,
                &format!("spec.disruptionBudgets[{i}]"),
            )?;
            if budget.allowed(1).is_none() {
                return Err(SpecError::new(
                    format!("spec.disruptionBudgets[{i}].nodes"),
                    format!(
                        "{:?} is neither a count such as \"1\" nor a percentage such as \"10%\"",
                        budget.nodes
                    ),
                ));
            }
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
            check_taint(taint, &format!("spec.taints[{i}]"))?;
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

fn check_taint(taint: &Taint, field: &str) -> Result<(), SpecError> {
    if taint.key.is_empty() {
        return Err(SpecError::new(format!("{field}.key"), "must not be empty"));
    }
    if !matches!(
        taint.effect.as_str(),
        "NoSchedule" | "PreferNoSchedule" | "NoExecute"
    ) {
        return Err(SpecError::new(
            format!("{field}.effect"),
            format!(
                "{:?} is not one of NoSchedule, PreferNoSchedule, NoExecute",
                taint.effect
            ),
        ));
    }
    Ok(())
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
    /// What the pool's nodes have in total (their groups' template capacity), launching ones included: what
    /// `spec.limits` bounds (Karpenter's `status.resources`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Quantity>,
    /// `Valid` (the spec is usable) and `Ready` (no launch in flight).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The last scale-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<ScalingDecision>,
    /// The last removal of nodes and why (empty, consolidated, timed out or failed): the last disruption decision.
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
    /// The node group (shape) it was launched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group: Option<String>,
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
    fn groups_weight_limits_and_startup_taints_are_checked() {
        let mut spec = NodePoolSpec::new("", 1);
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.nodeGroup".into())
        );
        spec.node_groups = vec!["a".into(), "b".into(), "a".into()];
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.group_ids(), vec!["a", "b"]);
        spec.node_group = "b".into();
        assert_eq!(spec.group_ids(), vec!["b", "a"]);
        spec.weight = Some(0);
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.weight".into())
        );
        spec.weight = Some(100);
        spec.limits.insert("cpu".into(), Quantity("lots".into()));
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.limits[\"cpu\"]".into())
        );
        spec.limits.insert("cpu".into(), Quantity("64".into()));
        spec.startup_taints.push(Taint {
            key: String::new(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.startupTaints[0].key".into())
        );
    }

    #[test]
    fn budgets_and_expiry_parse_as_karpenter_writes_them() {
        let mut spec = NodePoolSpec::new("g", 10);
        let t = Timestamp::UNIX_EPOCH;
        assert_eq!(spec.disruptions_allowed(0, t), 0);
        assert_eq!(spec.disruptions_allowed(3, t), 1, "10% rounded up");
        assert_eq!(spec.disruptions_allowed(25, t), 3);
        spec.disruption_budgets = vec![DisruptionBudget::new("50%"), DisruptionBudget::new("2")];
        assert_eq!(spec.disruptions_allowed(10, t), 2, "the smallest applies");
        spec.disruption_budgets = vec![DisruptionBudget::new("0")];
        assert_eq!(spec.disruptions_allowed(10, t), 0);
        // "No disruption from 09:00 for 8 hours on weekdays", 2026-12-01 being a Tuesday.
        let at = |hhmm: &str| -> Timestamp {
            format!("2026-12-01T{hhmm}:00Z")
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        };
        spec.disruption_budgets = vec![
            DisruptionBudget::new("0").with_schedule("0 9 * * mon-fri", "8h"),
            DisruptionBudget::new("3"),
        ];
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(spec.disruptions_allowed(10, at("08:59")), 3);
        assert_eq!(spec.disruptions_allowed(10, at("09:00")), 0);
        assert_eq!(spec.disruptions_allowed(10, at("16:59")), 0);
        assert_eq!(spec.disruptions_allowed(10, at("17:00")), 3);
        spec.disruption_budgets =
            vec![DisruptionBudget::new("0").with_schedule("0 9 * * mon-fri", "8h")];
        assert_eq!(
            spec.disruptions_allowed(10, at("18:00")),
            10,
            "no budget applies: no bound"
        );
        spec.disruption_budgets = vec![DisruptionBudget::new("1").with_schedule("sometimes", "8h")];
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.disruptionBudgets[0].schedule".into())
        );
        spec.disruption_budgets =
            vec![DisruptionBudget::new("1").with_schedule("@daily", "a while")];
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.disruptionBudgets[0].duration".into())
        );
        let mut half = DisruptionBudget::new("1");
        half.schedule = Some("@daily".into());
        spec.disruption_budgets = vec![half];
        assert!(spec.validate().is_err(), "a schedule needs a duration");
        spec.disruption_budgets = vec![DisruptionBudget::new("ten")];
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.disruptionBudgets[0].nodes".into())
        );
        spec.disruption_budgets = vec![DisruptionBudget::new("120%")];
        assert!(spec.validate().is_err());
        spec.disruption_budgets.clear();
        assert_eq!(spec.expire_after(), Ok(None));
        spec.expire_after = Some("720h".into());
        assert_eq!(
            spec.expire_after(),
            Ok(Some(Duration::from_secs(720 * 3600)))
        );
        spec.expire_after = Some("Never".into());
        assert_eq!(spec.expire_after(), Ok(None));
        spec.expire_after = Some("soon".into());
        assert_eq!(
            spec.validate().map_err(|e| e.field),
            Err("spec.expireAfter".into())
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
