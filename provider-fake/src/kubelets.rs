//! The kubelets of the fake cloud's machines. A cloud launching an instance creates no Node: a kubelet booting on
//! the machine registers it. [`MachineKubelets`] plays those kubelets for node groups: for every instance that
//! reaches `Running` it registers the Node a kubelet started with `--cloud-provider=external` would
//! (`spec.providerID`, the template node's labels, taints and capacity, `kubernetes.io/hostname`, the instance's
//! addresses as a kubelet's `--node-ip` would give them, the
//! `node.cloudprovider.kubernetes.io/uninitialized` taint, the `--register-with-taints` of
//! [`KubeletOptions::register_with_taint`]) and, by default, kwok's annotation `kwok.x-k8s.io/node=fake`, so kwok
//! plays the rest of the kubelet: Ready, Lease heartbeats, running pods.
//!
//! Two ways to run it:
//! * from the configuration ([`KubeletConfig`], `kubelets: {registerNodes: true}` in `--cloud-config`): the
//!   provider starts it in [`CloudProvider::initialize`] with the binary's client and stops it when the cloud is
//!   dropped — the on-demand flow on a local cluster, see `docs/local-cluster.md`;
//! * from a test, [`MachineKubelets::start`] with any provider that has [`NodeGroups`](cloudprovider_api::NodeGroups);
//!   [`MachineKubelets::hold`] then keeps machines from joining, to test instances that never register.
//!
//! It registers each instance once (a Node deleted later is not registered again while its instance lives) and
//! lists the node groups every [`KubeletOptions::interval`]; listing or registration failures are logged and
//! retried on the next tick.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudprovider_api::{CloudInstanceState, CloudProvider, NodeGroups, ProviderId};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};

use crate::cloud::lock;
use crate::error::FakeError;
use crate::state::node_group_spec::FakeTaint;

/// The taint a kubelet with `--cloud-provider=external` registers with, until a cloud-controller-manager
/// initializes the Node.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";
/// The annotation (with value [`KWOK_NODE_VALUE`]) kwok selects the Nodes it plays the kubelet of by default.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// See [`KWOK_NODE_ANNOTATION`].
pub const KWOK_NODE_VALUE: &str = "fake";

/// The shortest and longest `kubelets.intervalMs`.
const INTERVAL_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// The `kubelets` section of [`FakeConfig`](crate::FakeConfig): whether the fake machines of node groups
/// register Nodes, as kubelets booting on them would.
///
/// ```yaml
/// kubelets:
///   registerNodes: true
///   registerWithTaints: [{key: kube-cloud-rs.dev/unregistered, effect: NoExecute}]
///   nodeGroups: [workers]        # empty: every node group
///   kwok: true                   # kwok.x-k8s.io/node=fake, so kwok makes the Nodes Ready and runs their pods
///   intervalMs: 500
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletConfig {
    /// Register a Node for every node-group instance that reaches `Running`. Needs the Kubernetes client the
    /// binaries pass to `initialize`. Default false.
    pub register_nodes: bool,
    /// The node groups whose machines register; empty (the default) means all of them.
    pub node_groups: Vec<String>,
    /// Taints to register with besides the template's and the uninitialized one (a kubelet's
    /// `--register-with-taints`), e.g. the node-pool controller's `kube-cloud-rs.dev/unregistered:NoExecute`.
    pub register_with_taints: Vec<FakeTaint>,
    /// Annotate the Nodes with `kwok.x-k8s.io/node=fake` so kwok plays the rest of the kubelet. Default true.
    pub kwok: bool,
    /// How often the node groups' instances are listed, in milliseconds (10–60000). Default 500.
    pub interval_ms: u64,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            register_nodes: false,
            node_groups: Vec::new(),
            register_with_taints: Vec::new(),
            kwok: true,
            interval_ms: 500,
        }
    }
}

impl KubeletConfig {
    /// Checks the interval, the taints and that every named node group is one of `groups`.
    pub(crate) fn validate(&self, groups: &[&str]) -> Result<(), FakeError> {
        if !INTERVAL_MS.contains(&self.interval_ms) {
            return Err(FakeError::config(
                "kubelets.intervalMs",
                format!(
                    "must be between {} and {}, is {}",
                    INTERVAL_MS.start(),
                    INTERVAL_MS.end(),
                    self.interval_ms
                ),
            ));
        }
        for (i, taint) in self.register_with_taints.iter().enumerate() {
            if taint.key.is_empty() {
                return Err(FakeError::config(
                    format!("kubelets.registerWithTaints[{i}].key"),
                    "must not be empty",
                ));
            }
            if !TAINT_EFFECTS.contains(&taint.effect.as_str()) {
                return Err(FakeError::config(
                    format!("kubelets.registerWithTaints[{i}].effect"),
                    format!(
                        "{:?} is not one of {}",
                        taint.effect,
                        TAINT_EFFECTS.join(", ")
                    ),
                ));
            }
        }
        for (i, group) in self.node_groups.iter().enumerate() {
            if !groups.contains(&group.as_str()) {
                return Err(FakeError::config(
                    format!("kubelets.nodeGroups[{i}]"),
                    format!("no node group {group:?} in nodeGroups"),
                ));
            }
        }
        Ok(())
    }

    /// The options these settings stand for, or `None` when Nodes are not to be registered.
    pub(crate) fn options(&self) -> Option<KubeletOptions> {
        self.register_nodes.then(|| KubeletOptions {
            groups: self.node_groups.clone(),
            interval: Duration::from_millis(self.interval_ms),
            register_taints: self.register_with_taints.iter().map(k8s_taint).collect(),
            kwok: self.kwok,
        })
    }
}

fn k8s_taint(taint: &FakeTaint) -> Taint {
    Taint {
        key: taint.key.clone(),
        value: taint.value.clone(),
        effect: taint.effect.clone(),
        ..Taint::default()
    }
}

/// How [`MachineKubelets`] registers Nodes.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    groups: Vec<String>,
    interval: Duration,
    register_taints: Vec<Taint>,
    kwok: bool,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl KubeletOptions {
    /// Every node group, listed every 100 ms, with kwok's annotation and no extra taints.
    pub fn new() -> Self {
        Self {
            groups: Vec::new(),
            interval: Duration::from_millis(100),
            register_taints: Vec::new(),
            kwok: true,
        }
    }

    /// Only the machines of this node group register (call again for more groups).
    pub fn group(mut self, id: impl Into<String>) -> Self {
        self.groups.push(id.into());
        self
    }

    /// How often the node groups' instances are listed.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A taint to register with besides the template's and the uninitialized one (a kubelet's
    /// `--register-with-taints`).
    pub fn register_with_taint(mut self, key: &str, effect: &str) -> Self {
        self.register_taints.push(Taint {
            key: key.to_owned(),
            effect: effect.to_owned(),
            ..Taint::default()
        });
        self
    }

    /// Whether the Nodes carry kwok's annotation (default yes).
    pub fn kwok(mut self, enabled: bool) -> Self {
        self.kwok = enabled;
        self
    }
}

#[derive(Debug, Default)]
struct KubeletState {
    held: bool,
    /// Provider IDs dealt with (registered or held back) whose instances still exist.
    seen: BTreeSet<String>,
    registered: Vec<String>,
    held_back: Vec<String>,
}

/// Where the kubelets find the cloud on each tick: `None` ends them (the cloud was dropped).
type Source = Box<dyn Fn() -> Option<Arc<dyn CloudProvider>> + Send + Sync>;

/// Registers a Node for each running node-group instance; see the module docs. Stops when dropped.
///
/// ```no_run
/// # async fn demo(client: kube::Client) -> Result<(), provider_fake::FakeError> {
/// use std::sync::Arc;
/// use provider_fake::{FakeCloud, KubeletOptions, MachineKubelets, NodeGroupSpec};
///
/// let cloud = FakeCloud::new();
/// cloud.add_node_group(NodeGroupSpec::new("workers", 0, 10))?;
/// let kubelets = MachineKubelets::start(
///     client,
///     Arc::new(cloud.clone()),
///     KubeletOptions::new().register_with_taint("kube-cloud-rs.dev/unregistered", "NoExecute"),
/// )?;
/// // ... instances the group launches now register as Nodes; `kubelets.registered()` lists them.
/// # drop(kubelets);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MachineKubelets {
    state: Arc<Mutex<KubeletState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MachineKubelets {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MachineKubelets {
    /// Starts registering the instances of `provider`'s node groups. Fails outside a Tokio runtime.
    pub fn start(
        client: kube::Client,
        provider: Arc<dyn CloudProvider>,
        options: KubeletOptions,
    ) -> Result<Self, FakeError> {
        Self::start_from(
            client,
            Box::new(move || Some(Arc::clone(&provider))),
            options,
        )
    }

    /// Starts with a cloud found anew on every tick (the provider's own kubelets hold it weakly).
    pub(crate) fn start_from(
        client: kube::Client,
        source: Source,
        options: KubeletOptions,
    ) -> Result<Self, FakeError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| FakeError::NoRuntime)?;
        let state = Arc::new(Mutex::new(KubeletState::default()));
        let task = runtime.spawn(run(client, source, options, Arc::clone(&state)));
        Ok(Self { state, task })
    }

    /// Instances reaching `Running` from now on never register (until [`release`](Self::release); those seen
    /// meanwhile stay unregistered): machines that never join.
    pub fn hold(&self) {
        lock(&self.state).held = true;
    }

    /// Instances reaching `Running` from now on register again.
    pub fn release(&self) {
        lock(&self.state).held = false;
    }

    /// Provider IDs of the instances registered so far, in order.
    pub fn registered(&self) -> Vec<String> {
        lock(&self.state).registered.clone()
    }

    /// Provider IDs of the instances held back.
    pub fn held_back(&self) -> Vec<String> {
        lock(&self.state).held_back.clone()
    }
}

async fn run(
    client: kube::Client,
    source: Source,
    options: KubeletOptions,
    state: Arc<Mutex<KubeletState>>,
) {
    let nodes: Api<Node> = Api::all(client);
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(provider) = source() else {
            return;
        };
        let Some(groups) = provider.node_groups() else {
            tracing::warn!("the provider has no node groups: no machine kubelets to play");
            return;
        };
        tick(provider.as_ref(), groups, &nodes, &options, &state).await;
    }
}

/// One pass: every running instance not dealt with yet registers (or is held back).
async fn tick(
    provider: &dyn CloudProvider,
    groups: &dyn NodeGroups,
    nodes: &Api<Node>,
    options: &KubeletOptions,
    state: &Mutex<KubeletState>,
) {
    let ids = if options.groups.is_empty() {
        match groups.node_groups().await {
            Ok(all) => all.into_iter().map(|g| g.id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing node groups failed; retrying");
                return;
            }
        }
    } else {
        options.groups.clone()
    };
    let mut listed = BTreeSet::new();
    let mut complete = true;
    for group in &ids {
        match groups.instances(group).await {
            Ok(instances) => {
                for instance in instances {
                    listed.insert(instance.provider_id.clone());
                    if instance.state == CloudInstanceState::Running {
                        let machine = Machine {
                            provider,
                            groups,
                            group,
                            provider_id: &instance.provider_id,
                        };
                        boot(machine, nodes, options, state).await;
                    }
                }
            }
            Err(e) => {
                complete = false;
                tracing::warn!(group = %group, error = %e, "listing node group instances failed; retrying");
            }
        }
    }
    if complete {
        lock(state).seen.retain(|id| listed.contains(id));
    }
}

/// A running instance, and where to ask about it.
struct Machine<'a> {
    provider: &'a dyn CloudProvider,
    groups: &'a dyn NodeGroups,
    group: &'a str,
    provider_id: &'a str,
}

/// The kubelet of one running instance registers its Node, unless it did already or machines are held.
async fn boot(
    machine: Machine<'_>,
    nodes: &Api<Node>,
    options: &KubeletOptions,
    state: &Mutex<KubeletState>,
) {
    let Machine {
        provider,
        groups,
        group,
        provider_id,
    } = machine;
    {
        let mut st = lock(state);
        if st.seen.contains(provider_id) {
            return;
        }
        if st.held {
            st.seen.insert(provider_id.to_owned());
            st.held_back.push(provider_id.to_owned());
            return;
        }
    }
    let template = match groups.template_node(group).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(group = %group, error = %e, "reading the template node failed; retrying");
            return;
        }
    };
    let mut node = registered_node(provider_id, &template, options);
    // A kubelet knows its machine's address (`--node-ip`); without one at registration kwok would write a status
    // of its own that can race the cloud-node controller's addresses away.
    if let Some(instances) = provider.instances()
        && let Ok(metadata) = instances.instance_metadata(&node).await
        && let Some(status) = node.status.as_mut()
    {
        status.addresses = Some(metadata.node_addresses.iter().map(|a| a.to_k8s()).collect());
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {
            tracing::info!(node = %name, provider_id, group, "machine kubelet registered its Node")
        }
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => {
            tracing::warn!(node = %name, provider_id, error = %e, "registering a Node failed; retrying");
            return;
        }
    }
    let mut st = lock(state);
    st.seen.insert(provider_id.to_owned());
    st.registered.push(provider_id.to_owned());
}

/// The Node a kubelet on the instance would register: named after the provider ID's last segment.
pub(crate) fn registered_node(
    provider_id: &str,
    template: &Node,
    options: &KubeletOptions,
) -> Node {
    let name = ProviderId::parse(provider_id)
        .map(|p| p.last_segment().to_owned())
        .unwrap_or_else(|_| provider_id.replace(['/', ':'], "-"));
    let mut labels: BTreeMap<String, String> = template.metadata.labels.clone().unwrap_or_default();
    labels.insert("kubernetes.io/hostname".to_owned(), name.clone());
    let annotations = options
        .kwok
        .then(|| BTreeMap::from([(KWOK_NODE_ANNOTATION.to_owned(), KWOK_NODE_VALUE.to_owned())]));
    let mut taints = template
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints.push(Taint {
        key: UNINITIALIZED_TAINT.to_owned(),
        value: Some("true".to_owned()),
        effect: "NoSchedule".to_owned(),
        ..Taint::default()
    });
    taints.extend(options.register_taints.iter().cloned());
    let template_status = template.status.clone().unwrap_or_default();
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id.to_owned()),
            taints: Some(taints),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            capacity: template_status.capacity,
            allocatable: template_status.allocatable,
            ..NodeStatus::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Node {
        Node {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([("pool".to_owned(), "a".to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(vec![k8s_taint(&FakeTaint {
                    key: "dedicated".into(),
                    value: Some("a".into()),
                    effect: "NoSchedule".into(),
                })]),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn the_node_is_what_an_external_cloud_kubelet_registers() {
        let options = KubeletOptions::new().register_with_taint("unregistered", "NoExecute");
        let node = registered_node("fake://workers-3", &template(), &options);
        assert_eq!(node.metadata.name.as_deref(), Some("workers-3"));
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("pool").map(String::as_str), Some("a"));
        assert_eq!(
            labels.get("kubernetes.io/hostname").map(String::as_str),
            Some("workers-3")
        );
        let spec = node.spec.unwrap_or_default();
        assert_eq!(spec.provider_id.as_deref(), Some("fake://workers-3"));
        let keys: Vec<String> = spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert_eq!(keys, ["dedicated", UNINITIALIZED_TAINT, "unregistered"]);
        let kwok = node.metadata.annotations.unwrap_or_default();
        assert_eq!(
            kwok.get(KWOK_NODE_ANNOTATION).map(String::as_str),
            Some("fake")
        );
        let without = registered_node("fake://w", &template(), &options.kwok(false));
        assert!(without.metadata.annotations.is_none());
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad_effect = KubeletConfig {
            register_with_taints: vec![FakeTaint {
                key: "k".into(),
                value: None,
                effect: "Sometimes".into(),
            }],
            ..KubeletConfig::default()
        };
        let err = bad_effect.validate(&[]).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("kubelets.registerWithTaints[0].effect")),
            "{err:?}"
        );
        let unknown_group = KubeletConfig {
            node_groups: vec!["gpu".into()],
            ..KubeletConfig::default()
        };
        let err = unknown_group
            .validate(&["workers"])
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("kubelets.nodeGroups[0]")),
            "{err:?}"
        );
        let fast = KubeletConfig {
            interval_ms: 1,
            ..KubeletConfig::default()
        };
        assert!(fast.validate(&[]).is_err());
        assert!(KubeletConfig::default().validate(&[]).is_ok());
        assert!(KubeletConfig::default().options().is_none());
    }
}
