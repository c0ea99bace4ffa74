//! The provider object: which capabilities a cloud supports.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{CloudResult, Clusters, Instances, LoadBalancers, NodeGroups, Routes, Zones};

/// A cloud provider: its name and the capabilities it supports. Used as `Arc<dyn CloudProvider>` so a binary can
/// pick a provider by name at run time (see [`ProviderRegistry`](crate::ProviderRegistry)).
///
/// Every capability accessor defaults to `None` (unsupported); a provider overrides the ones it has, usually
/// returning `Some(self)`.
///
/// A controller of the provider's own crate gets the concrete type back with
/// `<dyn CloudProvider>::downcast` (every `'static` type is [`Any`](std::any::Any), so implementors need
/// nothing for it).
#[async_trait]
pub trait CloudProvider: std::any::Any + Send + Sync + 'static {
    /// The provider name, also the scheme of its provider IDs (`<name>://…`).
    fn provider_name(&self) -> &str;

    /// Called once, before any controller starts (upstream's `Initialize(clientBuilder, stop)`): open connections,
    /// check credentials, discover defaults, or read what the provider needs from the cluster with
    /// [`InitContext::client`]. An error here stops the process with a clear message.
    async fn initialize(&self, _ctx: &InitContext) -> CloudResult<()> {
        Ok(())
    }

    /// Instances (upstream `InstancesV2`).
    fn instances(&self) -> Option<&dyn Instances> {
        None
    }

    /// Load balancers for Services of type LoadBalancer.
    fn load_balancers(&self) -> Option<&dyn LoadBalancers> {
        None
    }

    /// Routes for pod CIDRs.
    fn routes(&self) -> Option<&dyn Routes> {
        None
    }

    /// Zones (deprecated upstream where instance metadata carries the zone).
    fn zones(&self) -> Option<&dyn Zones> {
        None
    }

    /// Clusters.
    fn clusters(&self) -> Option<&dyn Clusters> {
        None
    }

    /// Node groups for on-demand capacity.
    fn node_groups(&self) -> Option<&dyn NodeGroups> {
        None
    }

    /// Whether the provider was configured with a cluster ID (upstream `HasClusterID`); a controller manager
    /// refuses to run without one unless told to allow it.
    fn has_cluster_id(&self) -> bool {
        true
    }

    /// Registers the provider's own metrics (its cloud API calls' count, latency and errors, by operation) on the
    /// registry the controller manager serves on `/metrics`. Called once, before any controller runs. Name them as
    /// the Go provider does, if there is one (provider-aws: `cloudprovider_aws_api_request_duration_seconds`,
    /// `cloudprovider_aws_api_request_errors`), else `cloudprovider_<provider>_api_request_*`.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// The capabilities this provider supports, derived from the accessors.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            instances: self.instances().is_some(),
            load_balancers: self.load_balancers().is_some(),
            routes: self.routes().is_some(),
            zones: self.zones().is_some(),
            clusters: self.clusters().is_some(),
            node_groups: self.node_groups().is_some(),
        }
    }
}

/// Which capabilities a provider supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`CloudProvider::instances`]
    pub instances: bool,
    /// [`CloudProvider::load_balancers`]
    pub load_balancers: bool,
    /// [`CloudProvider::routes`]
    pub routes: bool,
    /// [`CloudProvider::zones`]
    pub zones: bool,
    /// [`CloudProvider::clusters`]
    pub clusters: bool,
    /// [`CloudProvider::node_groups`]
    pub node_groups: bool,
}

impl Capabilities {
    /// Whether `capability` is supported.
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::Instances => self.instances,
            Capability::LoadBalancers => self.load_balancers,
            Capability::Routes => self.routes,
            Capability::Zones => self.zones,
            Capability::Clusters => self.clusters,
            Capability::NodeGroups => self.node_groups,
        }
    }

    /// The names of the supported capabilities.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.instances, "instances"),
            (self.load_balancers, "load-balancers"),
            (self.routes, "routes"),
            (self.zones, "zones"),
            (self.clusters, "clusters"),
            (self.node_groups, "node-groups"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// One capability of a provider, as a controller declares it needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// [`CloudProvider::instances`]
    Instances,
    /// [`CloudProvider::load_balancers`]
    LoadBalancers,
    /// [`CloudProvider::routes`]
    Routes,
    /// [`CloudProvider::zones`]
    Zones,
    /// [`CloudProvider::clusters`]
    Clusters,
    /// [`CloudProvider::node_groups`]
    NodeGroups,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 6] = [
        Capability::Instances,
        Capability::LoadBalancers,
        Capability::Routes,
        Capability::Zones,
        Capability::Clusters,
        Capability::NodeGroups,
    ];

    /// The name used in logs and docs (`instances`, `load-balancers`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Instances => "instances",
            Self::LoadBalancers => "load-balancers",
            Self::Routes => "routes",
            Self::Zones => "zones",
            Self::Clusters => "clusters",
            Self::NodeGroups => "node-groups",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`CloudProvider::initialize`] is given: a Kubernetes client of the controller manager (with its QPS
/// limits), for a provider that reads its settings or credentials from the cluster.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A client connects on first use; the app passes its own (with its QPS limits).
/// let client = kube::Client::try_from(kube::Config::new("https://127.0.0.1:6443".parse()?))?;
/// let ctx = cloudprovider_api::InitContext::new(client.clone());
/// assert_eq!(ctx.component(), "cloud-controller-manager");
/// let ctx = cloudprovider_api::InitContext::new(client).with_component("node-pool-controller");
/// assert_eq!(ctx.component(), "node-pool-controller");
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct InitContext {
    client: kube::Client,
    component: String,
}

impl InitContext {
    /// A context around `client`, for the component `cloud-controller-manager`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            component: "cloud-controller-manager".to_owned(),
        }
    }

    /// The same, naming the component that initializes the provider (e.g. `node-pool-controller`).
    pub fn with_component(mut self, component: impl Into<String>) -> Self {
        self.component = component.into();
        self
    }

    /// The Kubernetes client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The component initializing the provider.
    pub fn component(&self) -> &str {
        &self.component
    }
}

impl fmt::Debug for InitContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitContext")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl dyn CloudProvider {
    /// The provider as its concrete type, if it is a `T`: how a provider crate's own controller (cloud-provider-aws'
    /// tagging controller, say) reaches APIs the capability traits do not have.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cloudprovider_api::CloudProvider;
    ///
    /// struct MyCloud;
    /// impl CloudProvider for MyCloud {
    ///     fn provider_name(&self) -> &str { "mine" }
    /// }
    /// struct Other;
    /// impl CloudProvider for Other {
    ///     fn provider_name(&self) -> &str { "other" }
    /// }
    ///
    /// let provider: Arc<dyn CloudProvider> = Arc::new(MyCloud);
    /// assert!(provider.clone().downcast::<MyCloud>().is_some());
    /// assert!(provider.downcast::<Other>().is_none());
    /// ```
    pub fn downcast<T: CloudProvider>(self: Arc<Self>) -> Option<Arc<T>> {
        let any: Arc<dyn std::any::Any + Send + Sync> = self;
        any.downcast::<T>().ok()
    }
}
