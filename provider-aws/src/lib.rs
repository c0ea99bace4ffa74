//! # provider-aws
//!
//! The AWS provider of kube-cloud-rs, on the official AWS SDK for Rust:
//!
//! * **Instances** ([`Instances`](cloudprovider_api::Instances)): EC2 instances by provider ID
//!   (`aws:///<zone>/<instance-id>`, also `aws:////<id>` and a bare `i-…`) or, before a Node has one, by its
//!   private DNS name. Terminated or missing = gone; `stopped` = shut down. `instance_states` answers many nodes
//!   with one `DescribeInstances` per [`DESCRIBE_BATCH_SIZE`] nodes.
//! * **Load balancers** ([`LoadBalancers`](cloudprovider_api::LoadBalancers)): Classic ELBs (upstream's default)
//!   and ELBv2 Network Load Balancers (`aws-load-balancer-type: nlb`) with instance targets, the node
//!   security-group rules they need, configured by upstream's `service.beta.kubernetes.io/aws-load-balancer-*`
//!   annotations (see [`annotations`]).
//! * **Tagging controller** (feature `controllers`): upstream's `tagging` controller for `--controllers`.
//! * **Routes** ([`Routes`](cloudprovider_api::Routes)): pod CIDRs in the cluster's VPC route table.
//! * **Zones** ([`Zones`](cloudprovider_api::Zones)): the zone of an instance; this process's own zone from the
//!   config (`zone`) or the instance metadata service.
//! * **Node groups** ([`NodeGroups`](cloudprovider_api::NodeGroups)): on-demand EC2 instances from a configured
//!   template ([`NodeGroupConfig`]).
//!
//! Every AWS request is counted by an SDK interceptor ([`ApiCallCounter`], [`AwsCloud::api_calls`]); throttling
//! (`RequestLimitExceeded`, `Throttling`, …) becomes
//! [`CloudError::Throttled`](cloudprovider_api::CloudError::Throttled) once the SDK's own retries are used up.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use cloudprovider_api::ProviderRegistry;
//!
//! let mut registry = ProviderRegistry::new();
//! provider_aws::register(&mut registry)?;
//! let provider = registry
//!     .build_from_str("aws", Some("clusterId: prod-eu\nregion: eu-west-1"))
//!     .await?
//!     .ok_or("no provider")?;
//! assert!(provider.capabilities().load_balancers);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cloud;
mod config;
mod error;
mod instances;
mod load_balancers;
mod metrics;
mod node_groups;
mod routes;
#[cfg(feature = "controllers")]
pub mod tagging;
mod tags;
mod zones;

use std::sync::Arc;

use cloudprovider_api::{CloudProvider, ProviderRegistry, RegistryError};

pub use cloud::{AwsCloud, https_client};
pub use config::{
    AwsConfig, CapacityConfig, IpFamily, MAX_ATTEMPTS_LIMIT, NodeGroupConfig,
    RETRY_QUOTA_REFILL_LIMIT, RetryMode, THROTTLE_RETRY_AFTER_LIMIT_SECONDS,
};
pub use error::{AwsError, THROTTLING_CODES, is_throttling_code};
pub use instances::{DESCRIBE_BATCH_SIZE, LABEL_ZONE_ID, instance_id_from_provider_id};
pub use load_balancers::TARGET_CHUNK_SIZE;
pub use metrics::{ApiCall, ApiCallCounter, AwsApiMetrics, RequestLabel, UntypedCounter};
pub use tags::{
    TAG_CLUSTER_PREFIX, TAG_NODE_GROUP, TAG_ROLE_ELB, TAG_ROLE_INTERNAL_ELB, TAG_SERVICE_NAME,
    TAG_VALUE_OWNED, TAG_VALUE_SHARED,
};

/// The Service annotations this provider reads (upstream's names).
pub mod annotations {
    pub use crate::load_balancers::annotations::{
        ANNOTATION_ADDITIONAL_TAGS, ANNOTATION_CROSS_ZONE, ANNOTATION_HC_HEALTHY,
        ANNOTATION_HC_INTERVAL, ANNOTATION_HC_PATH, ANNOTATION_HC_PORT, ANNOTATION_HC_PROTOCOL,
        ANNOTATION_HC_TIMEOUT, ANNOTATION_HC_UNHEALTHY, ANNOTATION_INTERNAL,
        ANNOTATION_LOAD_BALANCER_TYPE, ANNOTATION_SOURCE_RANGES, ANNOTATION_SUBNETS,
        ANNOTATION_TARGET_NODE_LABELS, DEFAULT_SOURCE_RANGE,
    };
    pub use crate::load_balancers::classic::spec::{
        ANNOTATION_ACCESS_LOG_EMIT_INTERVAL, ANNOTATION_CONNECTION_DRAINING_ENABLED,
        ANNOTATION_CONNECTION_DRAINING_TIMEOUT, ANNOTATION_CONNECTION_IDLE_TIMEOUT,
        ANNOTATION_EXTRA_SECURITY_GROUPS, ANNOTATION_PROXY_PROTOCOL, ANNOTATION_SECURITY_GROUPS,
        PROXY_PROTOCOL_POLICY,
    };
    pub use crate::load_balancers::nlb_options::{
        ANNOTATION_ACCESS_LOG_BUCKET, ANNOTATION_ACCESS_LOG_ENABLED, ANNOTATION_ACCESS_LOG_PREFIX,
        ANNOTATION_BACKEND_PROTOCOL, ANNOTATION_EIP_ALLOCATIONS, ANNOTATION_PRIVATE_IPV4_ADDRESSES,
        ANNOTATION_SSL_CERT, ANNOTATION_SSL_NEGOTIATION_POLICY, ANNOTATION_SSL_PORTS,
        ANNOTATION_TARGET_GROUP_ATTRIBUTES, TARGET_GROUP_ATTRIBUTES,
    };
}
pub use load_balancers::ingress::{NLB_CLIENT_RULE, NLB_HEALTH_RULE, NLB_MTU_RULE};

/// The name the provider registers under and the scheme of its provider IDs.
pub const PROVIDER_NAME: &str = "aws";

/// Registers the provider as `aws`; its configuration is an [`AwsConfig`]. Building it without a configuration,
/// or with one lacking `clusterId`, fails with an error naming `clusterId`.
pub fn register(registry: &mut ProviderRegistry) -> Result<(), RegistryError> {
    registry.register(PROVIDER_NAME, |config: Option<AwsConfig>| async move {
        let config = config.unwrap_or_default();
        let cloud = AwsCloud::new(config)
            .await
            .map_err(|e| e.into_cloud_error(std::time::Duration::ZERO))?;
        Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
    })
}
