//! The virtual-node runtime (virtual-kubelet's node and pod controllers): registers a Node backed by a
//! [`VirtualNodeProvider`], keeps it alive through the shared [`Heartbeat`], and runs the pods bound to it in the
//! provider.
//!
//! * The Node carries virtual-kubelet's labels (`type=virtual-kubelet`, `kubernetes.io/role=agent`) and the
//!   taint `virtual-kubelet.io/provider=<provider>:NoSchedule`, so only pods that tolerate it land there.
//! * Pods with `spec.nodeName=<node>` are watched (field selector); new ones are created in the provider,
//!   changed specs updated; a provider error sets the pod `Pending` (or `Failed` with `restartPolicy: Never`)
//!   with reason `ProviderFailed` and is retried with backoff.
//! * Deletion is graceful: provider delete first, then an API delete with grace period 0 and a UID precondition,
//!   as soon as the provider reports the pod gone or terminal, at the latest when the grace period ends.
//! * Statuses flow back to the pod `/status` subresource from the provider's notifications when it has a
//!   [`PodNotifier`](cloudprovider_api::PodNotifier), with polling as the fallback (every
//!   [`status_poll_interval`](VirtualNodeConfig::status_poll_interval), twelve times slower when notified).
//! * On start, provider pods that Kubernetes does not know are deleted.
//!
//! One process can run many virtual nodes: they share one [`Heartbeat`] (one timer queue for every Lease); each
//! node has its own pod watch, filtered by the API server.
//!
//! ```no_run
//! use std::sync::Arc;
//! use controller_core::heartbeat::{Heartbeat, HeartbeatConfig};
//! use controller_core::runtime::{EventPublisher, RuntimeMetrics, CancellationToken};
//! use controller_core::virtual_node::{VirtualNode, VirtualNodeConfig};
//! # async fn demo(provider: Arc<dyn cloudprovider_api::VirtualNodeProvider>) -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let shutdown = CancellationToken::new();
//! let heartbeat = Heartbeat::start(client.clone(), HeartbeatConfig::default(), shutdown.clone())?;
//! let node = VirtualNode::new(
//!     client.clone(),
//!     VirtualNodeConfig::new("vk-1", "fake"),
//!     provider,
//!     heartbeat,
//!     EventPublisher::new(client, "virtual-kubelet", Some("vk-1".into())),
//!     RuntimeMetrics::default(),
//! );
//! node.run(shutdown).await?;
//! # Ok(()) }
//! ```

mod pods;
mod status_sync;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{CloudError, NodeProvider, VirtualNodeProvider};
use k8s_openapi::api::core::v1::{Node, NodeSpec, Pod, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{Controller, watcher};
use tracing::{info, warn};

use crate::heartbeat::{Heartbeat, HeartbeatError};
use crate::runtime::{self, CancellationToken, EventPublisher, RunOptions, RuntimeMetrics};

/// Label virtual-kubelet puts on its nodes, with value [`NODE_TYPE`].
pub const LABEL_TYPE: &str = "type";
/// Value of [`LABEL_TYPE`].
pub const NODE_TYPE: &str = "virtual-kubelet";
/// Role label of virtual nodes, with value `agent`.
pub const LABEL_ROLE: &str = "kubernetes.io/role";
/// Key of the taint that keeps pods off a virtual node unless they tolerate it; its value is the provider name.
pub const TAINT_PROVIDER: &str = "virtual-kubelet.io/provider";
/// Pod status reason (and Warning Event reason) when the provider failed to run the pod.
pub const REASON_PROVIDER_FAILED: &str = "ProviderFailed";

/// What a virtual node looks like and how it syncs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VirtualNodeConfig {
    /// The Node's name.
    pub node_name: String,
    /// The provider's name, the value of the `virtual-kubelet.io/provider` taint.
    pub provider_name: String,
    /// Labels besides `type`, `kubernetes.io/role`, `kubernetes.io/hostname` and `kubernetes.io/os`.
    pub labels: BTreeMap<String, String>,
    /// Taints besides `virtual-kubelet.io/provider=<provider>:NoSchedule`.
    pub taints: Vec<Taint>,
    /// Without the `virtual-kubelet.io/provider` taint (any pod may land on the node).
    pub disable_taint: bool,
    /// Node capacity (= allocatable) the scheduler sees.
    pub capacity: BTreeMap<String, Quantity>,
    /// How often pod statuses are polled from the provider when it has no notifier.
    pub status_poll_interval: Duration,
    /// Pods reconciled at once.
    pub workers: u16,
    /// How long registering the Node is retried (with backoff from 500 ms to 10 s, each failure logged) before
    /// [`VirtualNode::run`] gives up with the last error, so a supervisor sees the failure. Default 2 minutes.
    pub register_timeout: Duration,
}

impl VirtualNodeConfig {
    /// Defaults for node `node_name` of provider `provider_name`: capacity of 20 CPUs, 100 GiB, 110 pods;
    /// polling every 5 s (virtual-kubelet's interval).
    pub fn new(node_name: impl Into<String>, provider_name: impl Into<String>) -> Self {
        let capacity = [("cpu", "20"), ("memory", "100Gi"), ("pods", "110")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
            .collect();
        Self {
            node_name: node_name.into(),
            provider_name: provider_name.into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            disable_taint: false,
            capacity,
            status_poll_interval: Duration::from_secs(5),
            workers: 8,
            register_timeout: Duration::from_secs(120),
        }
    }

    /// The Node to register.
    pub fn node(&self) -> Node {
        let mut labels = BTreeMap::from([
            (LABEL_TYPE.to_owned(), NODE_TYPE.to_owned()),
            (LABEL_ROLE.to_owned(), "agent".to_owned()),
            ("kubernetes.io/hostname".to_owned(), self.node_name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ]);
        labels.extend(self.labels.clone());
        let mut taints = Vec::new();
        if !self.disable_taint {
            taints.push(Taint {
                key: TAINT_PROVIDER.to_owned(),
                value: Some(self.provider_name.clone()),
                effect: "NoSchedule".to_owned(),
                time_added: None,
            });
        }
        taints.extend(self.taints.clone());
        Node {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }
}

/// Why a virtual node stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VirtualNodeError {
    /// Registration failed.
    #[error(transparent)]
    Heartbeat(#[from] HeartbeatError),
    /// A start-up API call failed.
    #[error("{op}: {source}")]
    Kube {
        /// The operation.
        op: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A start-up provider call failed.
    #[error("{op}: {source}")]
    Cloud {
        /// The operation.
        op: &'static str,
        /// The provider's error.
        #[source]
        source: CloudError,
    },
}

/// One virtual node.
pub struct VirtualNode {
    client: kube::Client,
    config: VirtualNodeConfig,
    provider: Arc<dyn VirtualNodeProvider>,
    heartbeat: Heartbeat,
    events: EventPublisher,
    metrics: RuntimeMetrics,
}

impl VirtualNode {
    /// A virtual node; nothing happens until [`run`](Self::run).
    pub fn new(
        client: kube::Client,
        config: VirtualNodeConfig,
        provider: Arc<dyn VirtualNodeProvider>,
        heartbeat: Heartbeat,
        events: EventPublisher,
        metrics: RuntimeMetrics,
    ) -> Self {
        Self {
            client,
            config,
            provider,
            heartbeat,
            events,
            metrics,
        }
    }

    /// Registers the Node, deletes provider pods Kubernetes does not know, then runs the pods bound to the node
    /// until `shutdown` fires. The node stays registered afterwards (its Lease expires).
    ///
    /// Registration is retried for [`register_timeout`](VirtualNodeConfig::register_timeout), then its error is
    /// returned. `shutdown` ends the start-up at once too (`Ok`), whatever the API server does.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), VirtualNodeError> {
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let pods: Api<Pod> = Api::all(self.client.clone());
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            started = self.start_up(&pods, &selector) => started?,
        }
        self.run_pods(pods, &selector, shutdown).await;
        Ok(())
    }

    /// Registers the Node (retrying), sets its capacity and deletes provider pods Kubernetes does not know.
    async fn start_up(&self, pods: &Api<Pod>, selector: &str) -> Result<(), VirtualNodeError> {
        let name = self.config.node_name.clone();
        self.register().await?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let capacity = serde_json::json!({ "status": {
            "capacity": self.config.capacity,
            "allocatable": self.config.capacity,
        }});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&capacity))
            .await
            .map_err(|source| VirtualNodeError::Kube {
                op: "patch Node capacity",
                source,
            })?;

        self.delete_unknown_pods(pods, selector).await
    }

    /// Registers the Node through the heartbeat, retrying with backoff until `register_timeout` has passed.
    async fn register(&self) -> Result<(), HeartbeatError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(500);
        for attempt in 1.. {
            let node_provider: Arc<dyn NodeProvider> = self.provider.clone();
            match self
                .heartbeat
                .register(self.config.node(), node_provider)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e @ HeartbeatError::Register { .. })
                    if started.elapsed() + delay < self.config.register_timeout =>
                {
                    warn!(node = %self.config.node_name, attempt, error = %e, retry_in = ?delay, "registering the Node failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
        Err(HeartbeatError::Stopped)
    }

    /// Runs the pods bound to the node until `shutdown` fires.
    async fn run_pods(self, pods: Api<Pod>, selector: &str, shutdown: CancellationToken) {
        let name = self.config.node_name.clone();
        self.watch_node_status(shutdown.clone());

        let sync = status_sync::StatusSync::new(
            self.client.clone(),
            Arc::clone(&self.provider),
            self.config.status_poll_interval,
        );
        let sync_task = tokio::spawn(sync.clone().run(shutdown.clone()));
        let reconciler =
            pods::PodReconciler::new(self.client.clone(), Arc::clone(&self.provider), sync);
        let controller = Controller::new(pods, watcher::Config::default().fields(selector))
            .graceful_shutdown_on(shutdown.clone().cancelled_owned());
        info!(node = %name, "virtual node running");
        runtime::run(
            controller,
            reconciler,
            RunOptions {
                workers: self.config.workers,
                events: self.events,
                metrics: self.metrics,
            },
        )
        .await;
        sync_task.abort();
    }

    async fn delete_unknown_pods(
        &self,
        pods: &Api<Pod>,
        selector: &str,
    ) -> Result<(), VirtualNodeError> {
        let known: HashSet<(String, String, String)> = pods
            .list(&ListParams::default().fields(selector))
            .await
            .map_err(|source| VirtualNodeError::Kube {
                op: "list Pods",
                source,
            })?
            .items
            .into_iter()
            .map(|p| identity(&p))
            .collect();
        let running = self
            .provider
            .get_pods()
            .await
            .map_err(|source| VirtualNodeError::Cloud {
                op: "GetPods",
                source,
            })?;
        for pod in running.iter().filter(|p| !known.contains(&identity(p))) {
            let (namespace, name, _) = identity(pod);
            info!(%namespace, %name, "deleting provider pod unknown to Kubernetes");
            if let Err(e) = self.provider.delete_pod(pod).await
                && !e.is_not_found()
            {
                warn!(%namespace, %name, error = %e, "could not delete unknown provider pod");
            }
        }
        Ok(())
    }

    /// Forwards the provider's node condition notifications to the heartbeat.
    fn watch_node_status(&self, shutdown: CancellationToken) {
        use futures::StreamExt;
        let Some(mut updates) = self.provider.notify_node_status() else {
            return;
        };
        let heartbeat = self.heartbeat.clone();
        let name = self.config.node_name.clone();
        tokio::spawn(async move {
            let stop = shutdown.cancelled_owned();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    update = updates.next() => match update {
                        Some(conditions) => heartbeat.set_conditions(&name, conditions),
                        None => break,
                    },
                }
            }
        });
    }
}

/// Namespace, name and UID: the same name with another UID is another pod.
fn identity(pod: &Pod) -> (String, String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}
