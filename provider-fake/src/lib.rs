//! # provider-fake
//!
//! An in-memory cloud for kube-cloud-rs that implements **every** capability of
//! [`cloudprovider_api`]: [`Instances`](cloudprovider_api::Instances),
//! [`LoadBalancers`](cloudprovider_api::LoadBalancers), [`Routes`](cloudprovider_api::Routes),
//! [`Zones`](cloudprovider_api::Zones), [`Clusters`](cloudprovider_api::Clusters) and
//! [`NodeGroups`](cloudprovider_api::NodeGroups). It is deterministic (no randomness; the only tasks it runs are
//! the timers of simulated virtual-node pods and the optional local load balancers) and built for three uses:
//!
//! * **controller tests** on a real apiserver: add, stop and terminate instances, inspect load balancers and
//!   routes, inject faults and read the call log;
//! * **benchmarks**: per-method or global latency and a token-bucket rate limit make it behave like a slow,
//!   throttling cloud API;
//! * **demos**: with [`FakeConfig::auto_create_instances`] every Node asked about gets a running instance, and
//!   [`register`] makes the provider available by name (`fake`) to the bundled binaries.
//!
//! [`FakeCloud`] is a cheap, cloneable handle (an `Arc` inside): keep one clone in the test and give another to
//! the controller as `Arc<dyn CloudProvider>`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cloudprovider_api::{CloudError, CloudProvider, conformance::node_with_provider_id};
//! use provider_fake::{FakeCloud, FakeInstance, FakeInstanceState, FaultKind, Method};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! # rt.block_on(async {
//! let cloud = FakeCloud::new();
//! let provider_id = cloud.add_instance(FakeInstance::new("node-1").with_zone("zone-b"))?;
//! assert_eq!(provider_id, "fake://node-1");
//!
//! // The controller side sees it through the traits.
//! let provider: Arc<dyn CloudProvider> = Arc::new(cloud.clone());
//! let instances = provider.instances().ok_or("no instances")?;
//! let node = node_with_provider_id("node-1", &provider_id);
//! assert!(instances.instance_exists(&node).await?);
//! assert_eq!(instances.instance_metadata(&node).await?.zone, "zone-b");
//!
//! // A stopped instance exists and is shut down; a terminated one is gone.
//! cloud.set_instance_state("node-1", FakeInstanceState::Stopped)?;
//! assert!(instances.instance_shutdown(&node).await?);
//! cloud.set_instance_state("node-1", FakeInstanceState::Terminated)?;
//! assert!(!instances.instance_exists(&node).await?);
//!
//! // Fail the next call of a method, then succeed again.
//! cloud.fail_next(Method::InstanceExists, 1, FaultKind::Throttled(Duration::from_secs(2)));
//! let err = instances.instance_exists(&node).await.err();
//! assert!(matches!(err, Some(CloudError::Throttled { .. })));
//! assert!(instances.instance_exists(&node).await.is_ok());
//!
//! // Every call was recorded.
//! assert_eq!(cloud.count(Method::InstanceExists), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! ## What the fake models
//!
//! * **Instances** are looked up by `spec.providerID` when the Node has one (it must belong to this provider,
//!   else the answer is [`CloudError::InvalidInput`](cloudprovider_api::CloudError::InvalidInput)), by node
//!   name otherwise. Terminated (and failed) instances do not exist; stopped ones exist and are shut down.
//! * **Load balancers** are keyed by cluster and [default name](cloudprovider_api::default_load_balancer_name)
//!   (from the Service UID) and get the lowest free address of [`FakeConfig::load_balancer_ip_pool`]; see
//!   [`ANNOTATION_IP`] and [`ANNOTATION_IMPLEMENTED_ELSEWHERE`] for the annotations honoured.
//!   [`FakeCloud::subscribe_load_balancers`] publishes every change. With
//!   [`FakeConfig::local_load_balancers`] (or [`FakeCloud::start_local_load_balancers`]) they really carry
//!   TCP traffic: a listener per Service port on the load balancer's address forwards to `node address:NodePort`,
//!   as cloud-provider-kind does, so `curl` reaches a backend on the same machine.
//! * **Routes** are keyed by cluster and destination CIDR; a route whose target node's instance is terminated
//!   is listed as a blackhole, as clouds do.
//! * **Node groups** follow cluster-autoscaler's semantics; instances they create go through `Creating` to
//!   `Running` after [`NodeGroupSpec::provision_delay_ms`], computed lazily from timestamps of
//!   [`tokio::time::Instant`] (so tests can use paused time and no runtime is needed), and they are also
//!   instances of the [`Instances`](cloudprovider_api::Instances) capability.
//! * **Faults** ([`FakeCloud::fail_next`], [`FakeCloud::fail_always`], per-key variants), **latency**
//!   ([`FakeCloud::set_latency`], needs a tokio runtime with time enabled when non-zero) and **throttling**
//!   ([`FakeCloud::set_rate_limit`]) apply to every trait method, recorded in the **call log**
//!   ([`FakeCloud::calls`]).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
mod calls;
mod cloud;
mod config;
mod error;
mod faults;
mod kubelets;
mod local_lb;
mod method;
mod metrics;
mod pods;
mod state;

pub use calls::{Call, CallOutcome};
pub use cloud::FakeCloud;
/// A capability that can be switched off with [`FakeCloud::set_capability`] (its accessor then returns `None`).
pub use cloudprovider_api::Capability;
pub use config::{
    CapabilitySwitches, FakeConfig, LatencyConfig, MAX_CALL_LOG_CAPACITY, MAX_INITIAL_INSTANCES,
    register, register_with,
};
pub use error::FakeError;
pub use faults::{FaultKind, RateLimit};
pub use kubelets::{
    KWOK_NODE_ANNOTATION, KWOK_NODE_VALUE, KubeletConfig, KubeletOptions, MachineKubelets,
    UNINITIALIZED_TAINT,
};
pub use local_lb::LocalLoadBalancers;
pub use method::{Method, UnknownMethod};
pub use pods::{FakeVirtualNode, PodBehaviour};
pub use state::instances::{FakeInstance, FakeInstanceInfo, FakeInstanceState};
pub use state::load_balancers::{FakeLoadBalancer, FakeLoadBalancerPort};
pub use state::node_group_spec::{
    FailureClass, FakeTaint, MAX_DELAY_MS, MAX_LIST_LEN, MAX_NODE_GROUP_SIZE, NodeGroupSpec,
    NodeTemplate, Provisioning,
};

/// The name the provider registers under and, by default, the scheme of its provider IDs (`fake://<name>`).
pub const PROVIDER_NAME: &str = "fake";

/// Service annotation asking for a specific load balancer address, e.g. `"192.0.2.10"`. It must lie in the
/// configured pool and be free; an unparsable or unusable value is
/// [`CloudError::InvalidInput`](cloudprovider_api::CloudError::InvalidInput) naming this key.
/// `spec.loadBalancerIP` is honoured the same way when the annotation is absent.
pub const ANNOTATION_IP: &str = "fake.cloudprovider/ip";

/// Service annotation that, set to `"true"`, makes `ensure_load_balancer` and `update_load_balancer` answer
/// [`CloudError::ImplementedElsewhere`](cloudprovider_api::CloudError::ImplementedElsewhere). Services whose
/// `spec.loadBalancerClass` is one of [`FakeConfig::implemented_elsewhere_classes`] are treated the same way.
pub const ANNOTATION_IMPLEMENTED_ELSEWHERE: &str = "fake.cloudprovider/implemented-elsewhere";

/// Label carrying the node group id, on node group instances (as an additional label) and template nodes.
pub const LABEL_NODE_GROUP: &str = "fake.cloudprovider/node-group";
