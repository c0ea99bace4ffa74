//! # cloudprovider-api
//!
//! The provider contract of kube-cloud-rs, the Rust counterpart of Go's `k8s.io/cloud-provider`: the traits a cloud
//! (or IaaS: OpenStack, VMware, bare metal) implements so the controllers of `controller-core` can initialize
//! Nodes, delete Nodes whose machines are gone, provision load balancers, program routes and bring up capacity on
//! demand.
//!
//! A provider crate depends on this crate only. It implements [`CloudProvider`] and the capability traits it
//! supports ([`Instances`], [`LoadBalancers`], [`Routes`], [`Zones`], [`Clusters`], [`NodeGroups`]), reports every
//! failure as a [`CloudError`] (the variant chooses the controllers' retry policy), registers a factory in a
//! [`ProviderRegistry`] with a typed configuration, and runs the conformance kit (feature `conformance`) from its
//! tests.
//!
//! Traits are `async` through [`async_trait`](mod@async_trait), so they stay usable as `Arc<dyn CloudProvider>` and
//! `&dyn Instances`; a binary picks its provider by name at run time.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use k8s_openapi::api::core::v1::Node;
//! use cloudprovider_api::*;
//!
//! /// A cloud where every node is a running `small` instance in zone `z1`.
//! struct TinyCloud;
//!
//! impl CloudProvider for TinyCloud {
//!     fn provider_name(&self) -> &str { "tiny" }
//!     fn instances(&self) -> Option<&dyn Instances> { Some(self) }
//! }
//!
//! #[async_trait]
//! impl Instances for TinyCloud {
//!     async fn instance_exists(&self, _node: &Node) -> CloudResult<bool> { Ok(true) }
//!     async fn instance_shutdown(&self, _node: &Node) -> CloudResult<bool> { Ok(false) }
//!     async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
//!         let name = node.metadata.name.clone().unwrap_or_default();
//!         Ok(InstanceMetadata {
//!             provider_id: ProviderId::new("tiny", name)?.to_string(),
//!             instance_type: "small".into(),
//!             zone: "z1".into(),
//!             region: "r1".into(),
//!             ..Default::default()
//!         })
//!     }
//! }
//!
//! let provider: Arc<dyn CloudProvider> = Arc::new(TinyCloud);
//! assert!(provider.capabilities().instances);
//! assert!(!provider.capabilities().load_balancers);
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod address;
mod error;
mod instances;
mod load_balancers;
mod node_groups;
mod provider;
mod provider_id;
mod quantity;
mod registry;
mod routes;
mod unsupported;
mod virtual_node;
mod zones;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use address::{NodeAddress, NodeAddressType, node_addresses};
pub use error::{BoxError, CloudError, CloudResult};
pub use instances::{InstanceMetadata, InstanceState, Instances};
pub use load_balancers::{LoadBalancers, MAX_LOAD_BALANCER_NAME_LEN, default_load_balancer_name};
pub use node_groups::{
    CloudInstance, CloudInstanceError, CloudInstanceErrorClass, CloudInstanceState, NodeGroup,
    NodeGroups,
};
pub use provider::{Capabilities, Capability, CloudProvider, InitContext};
pub use provider_id::{PROVIDER_ID_FIELD, ProviderId, node_provider_id};
pub use quantity::parse_quantity;
pub use registry::{NO_PROVIDER_NAMES, ProviderRegistry, RegistryError};
pub use routes::{Route, Routes};
pub use unsupported::Unsupported;
pub use virtual_node::{NodeProvider, PodLifecycle, PodNotifier, VirtualNodeProvider};
pub use zones::{Clusters, Zone, Zones};

// Re-exported so provider crates implement the traits with the same macro version.
pub use async_trait::async_trait;
pub use ipnet;
