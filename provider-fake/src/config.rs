//! The typed configuration and the registration with a [`ProviderRegistry`].

use std::collections::BTreeMap;
use std::sync::Arc;

use cloudprovider_api::{CloudProvider, ProviderId, ProviderRegistry, RegistryError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::PROVIDER_NAME;
use crate::cloud::FakeCloud;
use crate::error::FakeError;
use crate::faults::RateLimit;
use crate::kubelets::KubeletConfig;
use crate::method::Method;
use crate::state::instances::{FakeInstance, host_count};
use crate::state::node_group_spec::{MAX_DELAY_MS, MAX_LIST_LEN, NodeGroupSpec};

/// The most instances that exist at load time: `instances` plus every node group's initial size.
pub const MAX_INITIAL_INSTANCES: u64 = 10_000;
/// The largest `callLogCapacity`.
pub const MAX_CALL_LOG_CAPACITY: usize = 10_000_000;

/// Which capabilities the provider reports (all on by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CapabilitySwitches {
    /// Instances.
    pub instances: bool,
    /// Load balancers.
    pub load_balancers: bool,
    /// Routes.
    pub routes: bool,
    /// Zones.
    pub zones: bool,
    /// Clusters.
    pub clusters: bool,
    /// Node groups.
    pub node_groups: bool,
}

impl Default for CapabilitySwitches {
    fn default() -> Self {
        Self {
            instances: true,
            load_balancers: true,
            routes: true,
            zones: true,
            clusters: true,
            node_groups: true,
        }
    }
}

/// Latency added to every call, to make the fake behave like a remote API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LatencyConfig {
    /// Milliseconds added to every call of a method without its own value.
    pub global_ms: u64,
    /// Milliseconds per method (snake_case names, e.g. `ensure_load_balancer: 200`), replacing `globalMs`.
    pub per_method_ms: BTreeMap<Method, u64>,
}

/// The configuration of the fake cloud (the `--cloud-config` file of the bundled binaries, YAML or JSON).
/// Every field has a default, so an empty file is valid.
///
/// ```yaml
/// zone: zone-a
/// region: region-1
/// autoCreateInstances: true
/// loadBalancerIpPool: 192.0.2.0/24
/// instances:
///   - name: worker-1
///     state: Running
/// nodeGroups:
///   - id: workers
///     minSize: 0
///     maxSize: 10
///     provisionDelayMs: 2000
///     price: 0.17
///     template: { cpu: "4", memory: 16Gi, labels: { pool: workers } }
/// latency: { globalMs: 5, perMethodMs: { ensure_load_balancer: 200 } }
/// rateLimit: { perSecond: 20, burst: 40 }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FakeConfig {
    /// The provider name and provider-ID scheme. Default `fake`.
    pub provider_name: String,
    /// The zone of [`Zones::zone`](cloudprovider_api::Zones::zone) and of instances without one.
    /// Default `fake-zone-1a`.
    pub zone: String,
    /// The region. Default `fake-region-1`.
    pub region: String,
    /// The instance type of instances without one. Default `fake.small`.
    pub default_instance_type: String,
    /// Where instances without explicit addresses get their `InternalIP`, in creation order.
    /// Default `10.0.0.0/16`.
    #[schemars(with = "String")]
    pub instance_address_pool: IpNet,
    /// Where load balancers get their address (lowest free first). Default `192.0.2.0/24` (TEST-NET-1).
    #[schemars(with = "String")]
    pub load_balancer_ip_pool: IpNet,
    /// `spec.loadBalancerClass` values that another controller implements. Default
    /// `["fake.cloudprovider/elsewhere"]`.
    pub implemented_elsewhere_classes: Vec<String>,
    /// The cluster names [`Clusters::list_clusters`](cloudprovider_api::Clusters::list_clusters) reports.
    /// Default `["kubernetes"]`.
    pub clusters: Vec<String>,
    /// What [`Clusters::master`](cloudprovider_api::Clusters::master) answers. Default `127.0.0.1`.
    pub master_address: String,
    /// [`CloudProvider::has_cluster_id`]. Default true.
    pub has_cluster_id: bool,
    /// Give every node asked about (by name or provider ID) that has no instance yet a running instance.
    /// Handy for demos where Nodes are created first. Default false.
    pub auto_create_instances: bool,
    /// Which capabilities are on.
    pub capabilities: CapabilitySwitches,
    /// Instances that exist from the start.
    pub instances: Vec<FakeInstance>,
    /// Node groups.
    pub node_groups: Vec<NodeGroupSpec>,
    /// Added latency.
    pub latency: LatencyConfig,
    /// A rate limit on all calls together.
    pub rate_limit: Option<RateLimit>,
    /// How many recent calls the call log keeps (counts stay exact). Default 100000.
    pub call_log_capacity: usize,
    /// Really carry traffic: listen on every load balancer's address and TCP ports and forward connections to the
    /// backend nodes' address and NodePort (see [`FakeCloud::start_local_load_balancers`]). Needs a loopback
    /// `loadBalancerIpPool` such as `127.0.100.0/24`. Default false.
    pub local_load_balancers: bool,
    /// The machines' kubelets: with `registerNodes: true` every node-group instance that reaches `Running`
    /// registers its Node (see [`KubeletConfig`] and [`MachineKubelets`](crate::MachineKubelets)).
    pub kubelets: KubeletConfig,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            provider_name: PROVIDER_NAME.to_owned(),
            zone: "fake-zone-1a".to_owned(),
            region: "fake-region-1".to_owned(),
            default_instance_type: "fake.small".to_owned(),
            instance_address_pool: IpNet::V4(ipnet::Ipv4Net::new_assert([10, 0, 0, 0].into(), 16)),
            load_balancer_ip_pool: IpNet::V4(ipnet::Ipv4Net::new_assert([192, 0, 2, 0].into(), 24)),
            implemented_elsewhere_classes: vec!["fake.cloudprovider/elsewhere".to_owned()],
            clusters: vec!["kubernetes".to_owned()],
            master_address: "127.0.0.1".to_owned(),
            has_cluster_id: true,
            auto_create_instances: false,
            capabilities: CapabilitySwitches::default(),
            instances: Vec::new(),
            node_groups: Vec::new(),
            latency: LatencyConfig::default(),
            rate_limit: None,
            call_log_capacity: 100_000,
            local_load_balancers: false,
            kubelets: KubeletConfig::default(),
        }
    }
}

impl FakeConfig {
    /// Checks the values serde cannot, and the bounds of every size (instances and node groups are checked again
    /// when they are created). Bounds: [`MAX_NODE_GROUP_SIZE`](crate::MAX_NODE_GROUP_SIZE) per node group,
    /// [`MAX_INITIAL_INSTANCES`] at load time, [`MAX_LIST_LEN`](crate::MAX_LIST_LEN) entries per list,
    /// [`MAX_DELAY_MS`](crate::MAX_DELAY_MS) per latency or delay, [`MAX_CALL_LOG_CAPACITY`].
    pub fn validate(&self) -> Result<(), FakeError> {
        ProviderId::new(&self.provider_name, "x").map_err(|_| {
            FakeError::config(
                "providerName",
                "must be non-empty and contain neither ':' nor '/'",
            )
        })?;
        for (field, pool) in [
            ("instanceAddressPool", &self.instance_address_pool),
            ("loadBalancerIpPool", &self.load_balancer_ip_pool),
        ] {
            if host_count(pool) == 0 {
                return Err(FakeError::config(
                    field,
                    format!("{pool} has no usable address"),
                ));
            }
        }
        if self.local_load_balancers && !self.load_balancer_ip_pool.network().is_loopback() {
            return Err(FakeError::config(
                "loadBalancerIpPool",
                format!(
                    "{} is not a loopback range; localLoadBalancers listens on load balancer addresses, so use \
                     one such as 127.0.100.0/24",
                    self.load_balancer_ip_pool
                ),
            ));
        }
        if let Some(limit) = &self.rate_limit {
            limit
                .validate()
                .map_err(|m| FakeError::config("rateLimit.perSecond", m))?;
        }
        self.check_sizes()?;
        for (i, group) in self.node_groups.iter().enumerate() {
            group.validate(&format!("nodeGroups[{i}]"))?;
        }
        let group_ids: Vec<&str> = self.node_groups.iter().map(|g| g.id.as_str()).collect();
        self.kubelets.validate(&group_ids)?;
        let initial: u64 = self
            .node_groups
            .iter()
            .map(|g| u64::from(g.initial_size.unwrap_or(g.min_size)))
            .sum::<u64>()
            + self.instances.len() as u64;
        if initial > MAX_INITIAL_INSTANCES {
            return Err(FakeError::config(
                "nodeGroups",
                format!(
                    "instances and node groups' initial sizes add up to {initial}, more than {MAX_INITIAL_INSTANCES}"
                ),
            ));
        }
        Ok(())
    }

    /// The list lengths, latencies and the call log capacity within their bounds.
    fn check_sizes(&self) -> Result<(), FakeError> {
        for (field, len) in [
            ("instances", self.instances.len()),
            ("nodeGroups", self.node_groups.len()),
            ("clusters", self.clusters.len()),
            (
                "implementedElsewhereClasses",
                self.implemented_elsewhere_classes.len(),
            ),
        ] {
            if len > MAX_LIST_LEN {
                return Err(FakeError::config(
                    field,
                    format!("must have at most {MAX_LIST_LEN} entries, has {len}"),
                ));
            }
        }
        let per_method = self.latency.per_method_ms.values().copied();
        if self.latency.global_ms > MAX_DELAY_MS {
            return Err(FakeError::config(
                "latency.globalMs",
                format!("must be at most {MAX_DELAY_MS} (one day)"),
            ));
        }
        if per_method.into_iter().any(|ms| ms > MAX_DELAY_MS) {
            return Err(FakeError::config(
                "latency.perMethodMs",
                format!("every value must be at most {MAX_DELAY_MS} (one day)"),
            ));
        }
        if self.call_log_capacity > MAX_CALL_LOG_CAPACITY {
            return Err(FakeError::config(
                "callLogCapacity",
                format!("must be at most {MAX_CALL_LOG_CAPACITY}"),
            ));
        }
        Ok(())
    }
}

/// Registers the fake provider as `fake` (see [`PROVIDER_NAME`]); its configuration is a [`FakeConfig`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// # rt.block_on(async {
/// let mut registry = cloudprovider_api::ProviderRegistry::new();
/// provider_fake::register(&mut registry)?;
/// let provider = registry.build_from_str("fake", Some("zone: z1\nregion: r1")).await?.ok_or("no provider")?;
/// assert_eq!(provider.provider_name(), "fake");
/// assert_eq!(provider.zones().ok_or("no zones")?.zone().await?.failure_domain, "z1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
pub fn register(registry: &mut ProviderRegistry) -> Result<(), RegistryError> {
    register_with(registry, |_| {})
}

/// Like [`register`], and hands a handle of every cloud it builds to `on_build`, so a demo can inspect the load
/// balancers or inject faults into the provider a binary built from its config file.
pub fn register_with(
    registry: &mut ProviderRegistry,
    on_build: impl Fn(FakeCloud) + Send + Sync + 'static,
) -> Result<(), RegistryError> {
    let on_build = Arc::new(on_build);
    registry.register(PROVIDER_NAME, move |config: Option<FakeConfig>| {
        let on_build = Arc::clone(&on_build);
        async move {
            let config = config.unwrap_or_default();
            let local = config.local_load_balancers;
            let cloud = FakeCloud::from_config(config)?;
            if local {
                cloud.keep_local_load_balancers()?;
            }
            on_build(cloud.clone());
            Ok(Arc::new(cloud) as Arc<dyn CloudProvider>)
        }
    })
}
