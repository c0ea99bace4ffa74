//! The provider object: AWS clients, configuration and the capabilities it offers.

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_ec2::config::retry::{RetryPartition, TokenBucket};
use aws_smithy_http_client::tls;
use cloudprovider_api::{
    CloudError, CloudProvider, Instances, LoadBalancers, NodeGroups, Routes, Zones, async_trait,
};

use crate::config::AwsConfig;
use crate::error::AwsError;
use crate::metrics::ApiCallCounter;
use crate::tags::Tagging;

/// The AWS provider: EC2 instances, ELBv2 network load balancers, VPC routes and on-demand EC2 node groups.
///
/// Cheap to clone (an `Arc` inside). Build it with [`AwsCloud::new`] (standard credential chain) or, for full
/// control of the SDK configuration (credentials, HTTP client, timeouts), [`AwsCloud::from_sdk_config`].
#[derive(Clone, Debug)]
pub struct AwsCloud {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: AwsConfig,
    pub(crate) region: String,
    pub(crate) tagging: Tagging,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) elb: aws_sdk_elasticloadbalancingv2::Client,
    /// Classic ELB (the first Elastic Load Balancing API).
    pub(crate) classic: aws_sdk_elasticloadbalancing::Client,
    pub(crate) calls: ApiCallCounter,
    /// The route table, resolved on first use.
    pub(crate) route_table: tokio::sync::OnceCell<String>,
    /// Facts AWS never changes once seen, so each load-balancer pass need not ask again (fewer calls per pass
    /// is what lets a pass complete while the API throttles): subnet CIDRs, and the ARNs of load balancers whose
    /// tags showed this cluster owns them (an ARN is never reused; the `owned` tag is only ever set at creation).
    pub(crate) known: std::sync::Mutex<Known>,
}

/// See [`Inner::known`].
#[derive(Debug, Default)]
pub(crate) struct Known {
    pub(crate) subnet_cidrs: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    pub(crate) owned_load_balancers: std::collections::BTreeSet<String>,
    /// Zone name → zone ID of the region.
    pub(crate) zone_ids: std::collections::BTreeMap<String, String>,
    /// Load-balancer names checked to have no Classic ELB beside their NLB.
    pub(crate) nlb_names: std::collections::BTreeSet<String>,
}

impl Inner {
    /// The memo of [`Inner::known`] (a panic elsewhere cannot leave it inconsistent: every update is one insert).
    pub(crate) fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The HTTPS client the provider uses: hyper 1 with rustls on the `ring` crypto provider (the same TLS stack as
/// kube-rs, so no second crypto library is built) and the platform's root certificates.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The retry quota (and, in adaptive mode, the client-side rate limiter) of one provider, shared by its EC2 and
/// ELB clients and by nobody else: the SDK's default partition is process-wide per service, so a second provider
/// in the same process (a test, another cluster) would drain it too. The quota is the SDK's (500 tokens, a retry
/// costs 5, a timeout 10) plus the configured time-based refill, so a long throttling storm slows retries down
/// instead of ending them.
fn retry_partition(config: &AwsConfig) -> RetryPartition {
    // Refill rates are small integers (validated <= 1000), exact in f32.
    #[allow(clippy::cast_precision_loss)]
    let refill = config.retry_quota_refill() as f32;
    RetryPartition::custom(format!("kube-cloud-aws-{}", config.cluster_id))
        .token_bucket(TokenBucket::builder().refill_rate(refill).build())
        .build()
}

impl AwsCloud {
    /// Validates `config`, loads the SDK configuration through the standard chain (environment, profile, web
    /// identity, container and instance metadata credentials) and builds the clients.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), provider_aws::AwsError> {
    /// use provider_aws::{AwsCloud, AwsConfig};
    /// let mut config = AwsConfig::new("prod-eu");
    /// config.region = Some("eu-west-1".into());
    /// let cloud = AwsCloud::new(config).await?;
    /// # let _ = cloud; Ok(()) }
    /// ```
    pub async fn new(config: AwsConfig) -> Result<Self, AwsError> {
        config.validate()?;
        let sdk = Self::config_loader(&config).load().await;
        let sdk = Self::assume_role(&config, sdk).await;
        Self::from_sdk_config(config, &sdk)
    }

    /// With `roleArn` set, `sdk` with credentials of that role (STS `AssumeRole` through `sdk`'s own endpoint,
    /// region and credentials, session `kube-cloud-rs`, refreshed before they expire); else `sdk` unchanged.
    /// [`new`](Self::new) calls it; embedders that build their own `SdkConfig` can too.
    pub async fn assume_role(config: &AwsConfig, sdk: SdkConfig) -> SdkConfig {
        let Some(role) = &config.role_arn else {
            return sdk;
        };
        let provider = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name("kube-cloud-rs")
            .configure(&sdk)
            .build()
            .await;
        sdk.into_builder()
            .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
                provider,
            ))
            .build()
    }

    /// The SDK configuration loader `new` uses: latest behaviour version, the provider's HTTPS client, and the
    /// region, profile, endpoint and retry settings of `config`. Tests and embedders can add to it (e.g.
    /// `.test_credentials()`) and pass the result to [`from_sdk_config`](Self::from_sdk_config).
    pub fn config_loader(config: &AwsConfig) -> ConfigLoader {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .retry_config(config.sdk_retry_config());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        loader
    }

    /// Builds the provider from an SDK configuration, with a fresh [`ApiCallCounter`].
    pub fn from_sdk_config(config: AwsConfig, sdk: &SdkConfig) -> Result<Self, AwsError> {
        Self::from_sdk_config_with_counter(config, sdk, ApiCallCounter::new())
    }

    /// Builds the provider from an SDK configuration, counting calls with `calls` (e.g. one with an observer that
    /// feeds your metrics).
    pub fn from_sdk_config_with_counter(
        config: AwsConfig,
        sdk: &SdkConfig,
        calls: ApiCallCounter,
    ) -> Result<Self, AwsError> {
        config.validate()?;
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_owned())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                AwsError::config(
                    "region",
                    "no region: set `region` in the config, AWS_REGION, or a profile region",
                )
            })?;
        let retries = retry_partition(&config);
        let mut ec2 = aws_sdk_ec2::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .retry_partition(retries.clone());
        if let Some(url) = &config.ec2_endpoint_url {
            ec2 = ec2.endpoint_url(url);
        }
        let mut elb = aws_sdk_elasticloadbalancingv2::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .retry_partition(retries.clone());
        let mut classic = aws_sdk_elasticloadbalancing::config::Builder::from(sdk)
            .interceptor(calls.clone())
            .retry_partition(retries);
        if let Some(url) = &config.elb_endpoint_url {
            classic = classic.endpoint_url(url);
        }
        if let Some(url) = &config.elb_endpoint_url {
            elb = elb.endpoint_url(url);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                tagging: Tagging::new(&config.cluster_id),
                config,
                region,
                ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
                elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(elb.build()),
                classic: aws_sdk_elasticloadbalancing::Client::from_conf(classic.build()),
                calls,
                route_table: tokio::sync::OnceCell::new(),
                known: std::sync::Mutex::new(Known::default()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AwsConfig {
        &self.inner.config
    }

    /// The region the clients talk to.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The counter of AWS requests sent by this provider (all clones share it).
    pub fn api_calls(&self) -> &ApiCallCounter {
        &self.inner.calls
    }

    /// The EC2 client (e.g. for tests that set up a VPC).
    pub fn ec2_client(&self) -> &aws_sdk_ec2::Client {
        &self.inner.ec2
    }

    /// The Elastic Load Balancing v2 client.
    pub fn elb_client(&self) -> &aws_sdk_elasticloadbalancingv2::Client {
        &self.inner.elb
    }

    /// The Classic ELB client (tests, inspection).
    pub fn classic_client(&self) -> &aws_sdk_elasticloadbalancing::Client {
        &self.inner.classic
    }

    pub(crate) fn retry_after(&self) -> Duration {
        self.inner.config.throttle_retry_after()
    }

    /// Converts a crate error to the trait's error, with the configured throttling delay.
    pub(crate) fn cloud_error(&self, e: AwsError) -> CloudError {
        e.into_cloud_error(self.retry_after())
    }
}

#[async_trait]
impl CloudProvider for AwsCloud {
    fn provider_name(&self) -> &str {
        crate::PROVIDER_NAME
    }

    fn instances(&self) -> Option<&dyn Instances> {
        Some(self)
    }

    fn load_balancers(&self) -> Option<&dyn LoadBalancers> {
        Some(self)
    }

    fn routes(&self) -> Option<&dyn Routes> {
        Some(self)
    }

    fn zones(&self) -> Option<&dyn Zones> {
        Some(self)
    }

    fn node_groups(&self) -> Option<&dyn NodeGroups> {
        if self.inner.config.node_groups.is_empty() {
            None
        } else {
            Some(self)
        }
    }

    fn has_cluster_id(&self) -> bool {
        true
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.calls.metrics().register(registry);
    }
}
