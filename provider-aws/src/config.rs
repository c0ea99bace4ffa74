//! The typed configuration (`--cloud-config`, YAML or JSON) with its JSON Schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::AwsError;

/// The provider's configuration. Only `clusterId` is required; everything else is discovered or defaulted.
///
/// ```yaml
/// clusterId: prod-eu            # required: tags kubernetes.io/cluster/<clusterId>
/// region: eu-west-1             # else the standard chain (AWS_REGION, profile)
/// vpcId: vpc-0abc               # optional: limits subnet discovery to this VPC
/// subnetId: subnet-0abc         # optional: the subnet on-demand instances use by default
/// routeTableId: rtb-0abc        # optional: else the table tagged kubernetes.io/cluster/<clusterId>
/// endpointUrl: http://127.0.0.1:5000   # optional: one endpoint for every service (moto, private endpoints)
/// nodeGroups:
///   - id: workers
///     minSize: 0
///     maxSize: 10
///     imageId: ami-0abc
///     instanceType: m7i.large
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsConfig {
    /// The cluster ID (upstream `KubernetesClusterID`). Required: resources are tagged
    /// `kubernetes.io/cluster/<clusterId>` and only those tagged `owned` are ever deleted.
    pub cluster_id: String,
    /// The AWS region. Empty: the standard chain (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile).
    #[serde(default)]
    pub region: Option<String>,
    /// A named profile of `~/.aws/config` for credentials and region. Empty: `AWS_PROFILE` or `default`.
    #[serde(default)]
    pub profile: Option<String>,
    /// The zone this process runs in, answered by `Zones::zone`. Empty: read from the instance metadata service
    /// (IMDS) when asked.
    #[serde(default)]
    pub zone: Option<String>,
    /// The VPC of the cluster. Limits subnet discovery for load balancers to it.
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// The subnet on-demand instances are launched in when their node group names none.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// The route table for pod routes. Empty: the one route table tagged `kubernetes.io/cluster/<clusterId>`.
    #[serde(default)]
    pub route_table_id: Option<String>,
    /// One endpoint URL for every AWS service (moto, a proxy). Overridden per service below.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The EC2 endpoint URL (e.g. a VPC interface endpoint).
    #[serde(default)]
    pub ec2_endpoint_url: Option<String>,
    /// The Elastic Load Balancing (v2) endpoint URL.
    #[serde(default)]
    pub elb_endpoint_url: Option<String>,
    /// The SDK's attempts per call, including the first (standard retry mode with backoff). Default 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Seconds a caller should wait after the API throttled us (and the SDK's own retries were used up).
    /// Default 10, at most 3600.
    #[serde(default)]
    pub throttle_retry_after_seconds: Option<u64>,
    /// How the SDK retries: `standard` (default) or `adaptive`, which also slows every later request of this
    /// provider down after throttling (client-side rate limiting, the SDK's counterpart of upstream's
    /// process-wide `CrossRequestRetryDelay`; the SDK calls the mode experimental).
    #[serde(default)]
    pub retry_mode: Option<RetryMode>,
    /// Retry-quota tokens regained per second (a retry costs 5, 10 after a timeout; the quota holds 500 and
    /// every first-try success returns 1, as in every AWS SDK). Without time-based refill a long throttling storm
    /// drains the quota and then no call is retried at all, so an operation of several calls almost never
    /// completes; the refill keeps retries possible at a bounded rate. Default 5 (one retry per second on
    /// average once the quota is drained), `0` = the SDK's behaviour, at most 1000.
    #[serde(default)]
    pub retry_quota_refill_per_second: Option<u32>,
    /// Upstream's `NodeIPFamilies`: which addresses Nodes get, in this order. `ipv4` (default): every private
    /// IPv4 address, the public one and the DNS names; `ipv6`: the first IPv6 address of every network interface in
    /// use (as `InternalIP`, as upstream, even when globally routable).
    #[serde(default, rename = "nodeIPFamilies")]
    pub node_ip_families: Vec<IpFamily>,
    /// Upstream's `RoleARN`: an IAM role assumed with STS `AssumeRole` for every AWS call (credentials refreshed
    /// before they expire); the standard chain's credentials are the source. Empty: the chain's own.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Upstream's `DisableSecurityGroupIngress`: never add or remove security-group rules for load balancers
    /// (the nodes' groups are managed elsewhere and must admit NLB clients and health checks themselves).
    #[serde(default)]
    pub disable_security_group_ingress: bool,
    /// Groups of on-demand EC2 instances (the node-groups capability).
    #[serde(default)]
    pub node_groups: Vec<NodeGroupConfig>,
}

/// An address family of Node addresses (config field `nodeIPFamilies`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum IpFamily {
    /// IPv4 addresses and DNS names.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
}

/// The SDK's retry mode (config field `retryMode`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RetryMode {
    /// Exponential backoff with jitter per call, bounded by the retry quota.
    #[default]
    Standard,
    /// Standard, plus a client-side rate limiter that slows all requests after throttling.
    Adaptive,
}

/// The largest `maxAttempts`.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// The largest `throttleRetryAfterSeconds`.
pub const THROTTLE_RETRY_AFTER_LIMIT_SECONDS: u64 = 3600;
/// The largest `retryQuotaRefillPerSecond`.
pub const RETRY_QUOTA_REFILL_LIMIT: u32 = 1000;

/// One group of on-demand EC2 instances, launched from a template with `RunInstances` (no Auto Scaling group).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeGroupConfig {
    /// The group id; instances carry it in the tag [`TAG_NODE_GROUP`](crate::TAG_NODE_GROUP).
    pub id: String,
    /// The fewest instances.
    #[serde(default)]
    pub min_size: u32,
    /// The most instances.
    pub max_size: u32,
    /// The AMI.
    pub image_id: String,
    /// The instance type, e.g. `m7i.large`.
    pub instance_type: String,
    /// The subnet. Empty: the provider's `subnetId`.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Security groups.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// An EC2 key pair name.
    #[serde(default)]
    pub key_name: Option<String>,
    /// An IAM instance profile name.
    #[serde(default)]
    pub iam_instance_profile: Option<String>,
    /// User data (plain text; it is base64-encoded for the API), e.g. the node bootstrap script.
    #[serde(default)]
    pub user_data: Option<String>,
    /// Extra instance tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Labels the group's Nodes get (reported on the template node).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Capacity of one instance for the template node. Empty fields are read from `DescribeInstanceTypes`.
    #[serde(default)]
    pub capacity: CapacityConfig,
}

/// The capacity of one instance of a node group, as Kubernetes quantities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapacityConfig {
    /// CPU, e.g. `"2"`.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory, e.g. `"8Gi"`.
    #[serde(default)]
    pub memory: Option<String>,
    /// Pods. Default `"110"`.
    #[serde(default)]
    pub pods: Option<String>,
}

impl AwsConfig {
    /// A configuration with just the cluster ID.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            ..Self::default()
        }
    }

    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), AwsError> {
        if self.cluster_id.trim().is_empty() {
            return Err(AwsError::config(
                "clusterId",
                "is required: resources are tagged kubernetes.io/cluster/<clusterId> and only those owned by \
                 this cluster are ever deleted",
            ));
        }
        if self.cluster_id.contains(['/', ' ']) {
            return Err(AwsError::config(
                "clusterId",
                "must not contain '/' or spaces (it is part of a tag key)",
            ));
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
        {
            return Err(AwsError::config(
                "maxAttempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {n}"),
            ));
        }
        if let Some(n) = self.throttle_retry_after_seconds
            && !(1..=THROTTLE_RETRY_AFTER_LIMIT_SECONDS).contains(&n)
        {
            return Err(AwsError::config(
                "throttleRetryAfterSeconds",
                format!("must be between 1 and {THROTTLE_RETRY_AFTER_LIMIT_SECONDS}, got {n}"),
            ));
        }
        if let Some(n) = self.retry_quota_refill_per_second
            && n > RETRY_QUOTA_REFILL_LIMIT
        {
            return Err(AwsError::config(
                "retryQuotaRefillPerSecond",
                format!("must be at most {RETRY_QUOTA_REFILL_LIMIT}, got {n}"),
            ));
        }
        let families: std::collections::BTreeSet<_> = self.node_ip_families.iter().collect();
        if families.len() != self.node_ip_families.len() {
            return Err(AwsError::config(
                "nodeIPFamilies",
                "lists a family twice; want [ipv4], [ipv6], [ipv4, ipv6] or [ipv6, ipv4]",
            ));
        }
        if let Some(role) = &self.role_arn
            && !(role.starts_with("arn:") && role.contains(":role/"))
        {
            return Err(AwsError::config(
                "roleArn",
                "is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, group) in self.node_groups.iter().enumerate() {
            let field = |f: &str| format!("nodeGroups[{i}].{f}");
            if group.id.is_empty() {
                return Err(AwsError::config(field("id"), "must not be empty"));
            }
            if !seen.insert(group.id.as_str()) {
                return Err(AwsError::config(
                    field("id"),
                    format!("{:?} is used twice", group.id),
                ));
            }
            if group.min_size > group.max_size {
                return Err(AwsError::config(
                    field("minSize"),
                    format!("{} is above maxSize {}", group.min_size, group.max_size),
                ));
            }
            for (name, value) in [
                ("imageId", &group.image_id),
                ("instanceType", &group.instance_type),
            ] {
                if value.is_empty() {
                    return Err(AwsError::config(field(name), "must not be empty"));
                }
            }
            if group.subnet_id.is_none() && self.subnet_id.is_none() {
                return Err(AwsError::config(
                    field("subnetId"),
                    "is required when the provider has no subnetId",
                ));
            }
        }
        Ok(())
    }

    /// The SDK retry configuration: mode and attempts (default 3, as upstream's standard retryer).
    pub(crate) fn sdk_retry_config(&self) -> aws_config::retry::RetryConfig {
        let config = match self.retry_mode.unwrap_or_default() {
            RetryMode::Standard => aws_config::retry::RetryConfig::standard(),
            RetryMode::Adaptive => aws_config::retry::RetryConfig::adaptive(),
        };
        config.with_max_attempts(self.max_attempts.unwrap_or(3))
    }

    /// The families of Node addresses, in order (default IPv4 only).
    pub(crate) fn ip_families(&self) -> Vec<IpFamily> {
        if self.node_ip_families.is_empty() {
            vec![IpFamily::Ipv4]
        } else {
            self.node_ip_families.clone()
        }
    }

    /// Retry-quota tokens regained per second (default 5).
    pub(crate) fn retry_quota_refill(&self) -> u32 {
        self.retry_quota_refill_per_second.unwrap_or(5)
    }

    pub(crate) fn throttle_retry_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.throttle_retry_after_seconds.unwrap_or(10))
    }
}
