//! Plays the kubelets of machines a node group launches: the cloud creating an instance does not create a Node,
//! a kubelet booting on it does. [`NodeJoiner`] watches a node group through the provider's
//! [`NodeGroups`](cloudprovider_api::NodeGroups) capability and registers a Node for every instance that reaches
//! `Running`, as a kubelet with `--cloud-provider=external` would: `spec.providerID` set, the template node's
//! labels and taints, the `node.cloudprovider.kubernetes.io/uninitialized` taint, capacity from the template,
//! and kwok's annotation so kwok plays the rest of the kubelet (Ready, heartbeats, running pods).
//!
//! It can also hold instances back: [`NodeJoiner::hold`] makes instances that come up meanwhile never register,
//! to test what happens to machines that never join.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cloudprovider_api::{CloudInstanceState, CloudProvider, ProviderId};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, PostParams};

use crate::NodeBuilder;

/// How a [`NodeJoiner`] registers Nodes.
#[derive(Clone, Debug)]
pub struct JoinerOptions {
    group: String,
    interval: Duration,
    register_taints: Vec<Taint>,
    kwok: bool,
}

impl JoinerOptions {
    /// Registers the instances of node group `group`, polling every 100 ms, with kwok's annotation.
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            interval: Duration::from_millis(100),
            register_taints: Vec::new(),
            kwok: true,
        }
    }

    /// How often the group's instances are listed.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A taint to register with besides the template's and the uninitialized one (a kubelet's
    /// `--register-with-taints`), e.g. a node-pool controller's "unregistered" taint.
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
struct JoinerState {
    held: bool,
    /// Provider IDs dealt with: registered or held back.
    seen: BTreeSet<String>,
    registered: Vec<String>,
    held_back: Vec<String>,
}

/// Registers a Node for each running instance of a node group; see the module docs. Stops when dropped.
#[derive(Debug)]
pub struct NodeJoiner {
    state: Arc<Mutex<JoinerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NodeJoiner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<JoinerState>) -> MutexGuard<'_, JoinerState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl NodeJoiner {
    /// Starts joining instances of `options`' group, read through `provider`'s node groups. Needs a tokio runtime.
    pub fn start(
        client: kube::Client,
        provider: Arc<dyn CloudProvider>,
        options: JoinerOptions,
    ) -> Self {
        let state = Arc::new(Mutex::new(JoinerState::default()));
        let task = tokio::spawn(join_loop(client, provider, options, Arc::clone(&state)));
        Self { state, task }
    }

    /// Instances reaching `Running` from now on never register (until [`release`](Self::release); those seen
    /// meanwhile stay unregistered).
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

async fn join_loop(
    client: kube::Client,
    provider: Arc<dyn CloudProvider>,
    options: JoinerOptions,
    state: Arc<Mutex<JoinerState>>,
) {
    let nodes: Api<Node> = Api::all(client);
    let mut ticker = tokio::time::interval(options.interval);
    loop {
        ticker.tick().await;
        let Some(groups) = provider.node_groups() else {
            tracing::warn!("the provider has no node groups; nothing to join");
            return;
        };
        let instances = match groups.instances(&options.group).await {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(error = %e, "listing node group instances failed; retrying");
                continue;
            }
        };
        for instance in instances {
            if instance.state != CloudInstanceState::Running
                || lock(&state).seen.contains(&instance.provider_id)
            {
                continue;
            }
            if lock(&state).held {
                let mut st = lock(&state);
                st.seen.insert(instance.provider_id.clone());
                st.held_back.push(instance.provider_id.clone());
                continue;
            }
            let template = match groups.template_node(&options.group).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "template node failed; retrying");
                    continue;
                }
            };
            let node = registered_node(&instance.provider_id, &template, &options);
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_already_exists() => {}
                Err(e) => {
                    tracing::debug!(error = %e, "registering a Node failed; retrying");
                    continue;
                }
            }
            let mut st = lock(&state);
            st.seen.insert(instance.provider_id.clone());
            st.registered.push(instance.provider_id);
        }
    }
}

/// The Node a kubelet on the instance would register.
fn registered_node(provider_id: &str, template: &Node, options: &JoinerOptions) -> Node {
    let name = ProviderId::parse(provider_id)
        .map(|p| p.last_segment().to_owned())
        .unwrap_or_else(|_| provider_id.replace(['/', ':'], "-"));
    let mut node = NodeBuilder::new(name.clone());
    for (key, value) in template.metadata.labels.iter().flatten() {
        node = node.label(key, value);
    }
    node = node.label("kubernetes.io/hostname", name);
    if options.kwok {
        node = node.kwok();
    }
    node = node.provider_id(provider_id);
    let template_taints = template.spec.as_ref().and_then(|s| s.taints.clone());
    for taint in template_taints.into_iter().flatten() {
        node = node.with_taint(taint);
    }
    node = node.uninitialized();
    for taint in &options.register_taints {
        node = node.with_taint(taint.clone());
    }
    let template_status = template.status.clone().unwrap_or_default();
    if let Some(capacity) = template_status.capacity {
        node = node.capacity(capacity);
    }
    if let Some(allocatable) = template_status.allocatable {
        node = node.allocatable(allocatable);
    }
    node.build()
}
