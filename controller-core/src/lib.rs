//! # controller-core
//!
//! The controllers of kube-cloud-rs, the Rust counterpart of the Go `k8s.io/cloud-provider` controllers, on
//! kube-runtime, with upstream's names for controllers, labels, taints, events and metrics:
//!
//! | module | upstream | what it does |
//! |---|---|---|
//! | [`cloud_node`] | `cloud-node-controller` | initializes Nodes tainted `node.cloudprovider.kubernetes.io/uninitialized`: provider ID, addresses, zone/region/instance-type labels (and beta twins), taint removed; periodic address sync |
//! | [`node_lifecycle`] | `cloud-node-lifecycle-controller` | deletes Nodes whose instance is gone (never on an error, never for a stopped instance); shutdown taint on and off |
//! | [`service`] | `service-lb-controller` | load balancers for Services of type LoadBalancer: finalizer first, status only on change, cleanup, upstream's target-node rules, node-set changes fanned out to every LB at once |
//! | [`route`] | `node-route-controller` | one route per pod CIDR inside the cluster CIDR, stale and blackhole routes deleted, bounded concurrency, `NetworkUnavailable` condition |
//! | [`node_pool`] | (cluster-autoscaler / Karpenter) | on-demand nodes: the `NodePool` CRD; launches node-group instances for unschedulable pods, labels and taints their Nodes, times out launch / registration / initialization, removes empty nodes |
//! | [`heartbeat`] | kubelet node lease + status | keeps many Nodes alive from one process: one timer queue, Lease renewed every 10 s without a GET, status on change |
//! | [`virtual_node`] | virtual-kubelet | a Node backed by a provider: pods bound to it run in the provider, statuses flow back |
//! | [`manager`] | `cloud-controller-manager` | runs the controllers selected with `--controllers` syntax, only while holding the leader Lease |
//!
//! Every controller is built on the shared [`runtime`]: one Node cache (managed fields stripped) feeding all of
//! them, one error policy (throttled → wait the cloud's retry-after; transient → per-object exponential backoff;
//! invalid input → Warning Event naming the field and no retry until the object changes), Events, metrics and a
//! tracing span per object.
//!
//! ```no_run
//! use std::sync::Arc;
//! use controller_core::manager::{Manager, ManagerConfig};
//! use controller_core::runtime::{EventPublisher, RuntimeMetrics, Shutdown};
//! use controller_core::ControllerContext;
//! # async fn demo(provider: Arc<dyn cloudprovider_api::CloudProvider>) -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let ctx = ControllerContext {
//!     client: client.clone(),
//!     provider,
//!     cluster_name: "kubernetes".into(),
//!     events: EventPublisher::new(client.clone(), "cloud-controller-manager", None),
//!     metrics: RuntimeMetrics::default(),
//! };
//! let lease = lease_election::LeaseConfig::new("kube-system", "cloud-controller-manager", "replica-1");
//! let elector = lease_election::LeaderElector::new(client, lease)?;
//! let (_trigger, shutdown) = Shutdown::new();
//! Manager::new(ctx, ManagerConfig::default()).run_with_leader_election(elector, shutdown).await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod cloud_node;
mod context;
pub mod heartbeat;
pub mod manager;
pub mod node_lifecycle;
pub mod node_pool;
pub mod route;
pub mod runtime;
mod selection;
pub mod service;
pub mod virtual_node;

pub use context::{ControllerContext, NodeSource};
pub use selection::{ControllerKind, ControllerSelection, SelectionError};
