//! # controller-core
//!
//! The controllers of kube-cloud-rs, the Rust counterpart of the Go `k8s.io/cloud-provider` controllers, on
//! kube-runtime, with upstream's names for controllers, labels, taints, events and metrics:
//!
//! | module | upstream | what it does |
//! |---|---|---|
//! | [`cloud_node`] | `cloud-node-controller` | initializes Nodes tainted `node.cloudprovider.kubernetes.io/uninitialized`: provider ID, addresses, zone/region/instance-type labels (and beta twins), taint removed; periodic address sync |
//! | [`node_lifecycle`] | `cloud-node-lifecycle-controller` | deletes Nodes whose instance is gone (never on an error, never for a stopped instance); shutdown taint on and off |
//! | [`service`] | `service-lb-controller` | load balancers for Services of type LoadBalancer: finalizer first, status only on change, cleanup, upstream's target-node rules; a node-set change re-queues only the load balancers whose hosts are stale, updated by `--concurrent-service-syncs` workers |
//! | [`route`] | `node-route-controller` | one route per pod CIDR inside the cluster CIDR, stale and blackhole routes deleted, bounded concurrency, `NetworkUnavailable` condition |
//! | [`node_pool`] | (cluster-autoscaler / Karpenter) | on-demand nodes: the `NodePool` CRD; launches node-group instances for unschedulable pods, labels and taints their Nodes, times out launch / registration / initialization, removes empty nodes |
//! | [`heartbeat`] | kubelet node lease + status | keeps many Nodes alive from one process: one timer queue, Lease renewed every 10 s without a GET, status on change |
//! | [`virtual_node`] | virtual-kubelet | a Node backed by a provider: pods bound to it run in the provider, statuses flow back |
//! | [`manager`] | `app.ControllerInitializers` | the one trait every controller implements, the registry `--controllers` selects from, shared caches created on request, and the manager that runs the selection only while holding the leader Lease |
//!
//! Every controller implements [`manager::ManagedController`] (name, aliases, on by default or not, the provider
//! capabilities it needs, run with the shared caches and a shutdown signal); a binary registers the built-in ones
//! and its own in a [`manager::ControllerRegistry`], and the [`manager::Manager`] runs the selected ones only while
//! holding the leader Lease. They are built on the shared [`runtime`]: one Node cache (and one Pod cache where
//! needed) feeding all of them, one error policy for the kube-runtime controllers (throttled → wait the cloud's
//! retry-after; transient → per-object exponential backoff; invalid input → Warning Event naming the field and no
//! retry until the object changes), Events, metrics and a tracing span per object.
//!
//! With feature `app`, [`app`] is the controller-manager application (upstream's flags, client, leader election,
//! serving, signals), so a provider crate's own binary is a short `main`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use controller_core::manager::{ControllerRegistry, Manager};
//! use controller_core::cloud_node::{CloudNodeConfig, CloudNodeController};
//! use controller_core::service::{ServiceConfig, ServiceController};
//! use controller_core::runtime::{CancellationToken, EventPublisher};
//! use controller_core::ControllerContext;
//! # async fn demo(provider: Arc<dyn cloudprovider_api::CloudProvider>) -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let events = EventPublisher::new(client.clone(), "cloud-controller-manager", None);
//! let ctx = ControllerContext::new(client.clone(), provider, events);
//! let mut registry = ControllerRegistry::new();
//! registry
//!     .register(CloudNodeController::new(CloudNodeConfig::default()))?
//!     .register(ServiceController::new(ServiceConfig::default()))?;
//! let selection = registry.select(["*"])?;
//! let lease = lease_election::LeaseConfig::new("kube-system", "cloud-controller-manager", "replica-1");
//! let elector = lease_election::LeaderElector::new(client, lease)?;
//! Manager::new(ctx, &registry, &selection)
//!     .run_with_leader_election(elector, CancellationToken::new())
//!     .await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

#[cfg(feature = "app")]
pub mod app;
pub mod cloud_node;
mod context;
pub mod heartbeat;
pub mod manager;
pub mod node_lifecycle;
pub mod node_pool;
pub mod route;
pub mod runtime;
pub mod service;
pub mod virtual_node;

pub use context::{ControllerContext, NodeSource};
