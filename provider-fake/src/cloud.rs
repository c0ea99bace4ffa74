//! The [`FakeCloud`] handle: construction, capability switches, the call wrapper, and the administration API
//! tests use to shape the cloud.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cloudprovider_api::{
    Capability, CloudError, CloudProvider, CloudResult, Clusters, Instances, LoadBalancers,
    NodeGroups, Routes, Zones, default_load_balancer_name,
};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::calls::{CallLog, CallOutcome};
use crate::config::FakeConfig;
use crate::error::FakeError;
use crate::faults::Faults;
use crate::kubelets::{KubeletOptions, MachineKubelets};
use crate::local_lb::LocalLoadBalancers;
use crate::method::Method;
use crate::metrics::FakeApiMetrics;
use crate::state::State;
use crate::state::instances::{
    FakeInstance, FakeInstanceInfo, FakeInstanceState, InstanceDefaults, Origin,
};
use crate::state::load_balancers::{FakeLoadBalancer, LbStore};
use crate::state::node_group_spec::{NodeGroupSpec, Provisioning};
use crate::state::routes::RouteStore;

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent before it can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The position of a capability in [`Capability::ALL`], the index of its switch.
fn index(capability: Capability) -> usize {
    Capability::ALL
        .iter()
        .position(|c| *c == capability)
        .unwrap_or(0)
}

/// Values fixed at construction.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) zone: String,
    pub(crate) region: String,
    pub(crate) clusters: Vec<String>,
    pub(crate) master_address: String,
    pub(crate) has_cluster_id: bool,
    /// The machine kubelets the config asks for ([`FakeConfig::kubelets`]), started by `initialize`.
    pub(crate) kubelets: Option<KubeletOptions>,
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    capabilities: [AtomicBool; 6],
    auto_create: AtomicBool,
    pub(crate) state: Mutex<State>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) calls: Mutex<CallLog>,
    metrics: FakeApiMetrics,
    lb_changes: watch::Sender<Vec<FakeLoadBalancer>>,
    /// The listeners started because the config asked for them ([`FakeConfig::local_load_balancers`]); they
    /// close when the cloud is dropped.
    local_lbs: Mutex<Option<LocalLoadBalancers>>,
    /// The machine kubelets started by `initialize`; they stop when the cloud is dropped.
    kubelets: Mutex<Option<MachineKubelets>>,
}

/// The in-memory cloud. Cloning is cheap and every clone is the same cloud.
///
/// It implements [`CloudProvider`] and every capability trait; the methods below shape the cloud from a test
/// (see also fault injection and the call log, documented with [`FakeCloud::fail_next`] and
/// [`FakeCloud::calls`]).
///
/// `instances` and `node_groups` are names of both a [`CloudProvider`] accessor and a [`NodeGroups`] method, so
/// on a `FakeCloud` value call them fully qualified (`CloudProvider::instances(&cloud)`), or go through an
/// `Arc<dyn CloudProvider>` as controllers do.
#[derive(Clone)]
pub struct FakeCloud {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for FakeCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeCloud")
            .field("name", &self.inner.settings.name)
            .field("capabilities", &self.enabled_capabilities())
            .finish_non_exhaustive()
    }
}

impl Default for FakeCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCloud {
    /// A cloud with the default configuration: provider `fake`, every capability on, no instances, no node
    /// groups, no latency.
    pub fn new() -> Self {
        Self::build(FakeConfig::default())
    }

    /// A cloud built from `config`: validated, then the configured instances and node groups are created.
    pub fn from_config(config: FakeConfig) -> Result<Self, FakeError> {
        config.validate()?;
        let instances = config.instances.clone();
        let groups = config.node_groups.clone();
        let cloud = Self::build(config);
        // `validate` checked every field with its full path; what is left (duplicates) is named by the entry.
        let at = |field: String| {
            move |e: FakeError| match e {
                e @ FakeError::InvalidConfig { .. } => e,
                other => FakeError::config(field, other.to_string()),
            }
        };
        for (i, inst) in instances.into_iter().enumerate() {
            cloud
                .add_instance(inst)
                .map_err(at(format!("instances[{i}]")))?;
        }
        for (i, group) in groups.into_iter().enumerate() {
            cloud
                .add_node_group(group)
                .map_err(at(format!("nodeGroups[{i}]")))?;
        }
        Ok(cloud)
    }

    /// Builds the cloud without validation or initial objects.
    fn build(config: FakeConfig) -> Self {
        let now = Instant::now();
        let mut faults = Faults::default();
        faults.set_global_latency(Duration::from_millis(config.latency.global_ms));
        for (method, ms) in &config.latency.per_method_ms {
            faults.set_latency(*method, Some(Duration::from_millis(*ms)));
        }
        faults.set_rate_limit(config.rate_limit.clone(), now);
        let switches = &config.capabilities;
        let capabilities = [
            switches.instances,
            switches.load_balancers,
            switches.routes,
            switches.zones,
            switches.clusters,
            switches.node_groups,
        ]
        .map(AtomicBool::new);
        let defaults = InstanceDefaults {
            provider: config.provider_name.clone(),
            instance_type: config.default_instance_type.clone(),
            zone: config.zone.clone(),
            region: config.region.clone(),
            address_pool: config.instance_address_pool,
        };
        let state = State {
            instances: crate::state::instances::InstanceStore::new(defaults),
            lbs: LbStore::new(
                config.load_balancer_ip_pool,
                config.implemented_elsewhere_classes.clone(),
            ),
            routes: RouteStore::default(),
            groups: Default::default(),
        };
        Self {
            inner: Arc::new(Inner {
                settings: Settings {
                    name: config.provider_name,
                    zone: config.zone,
                    region: config.region,
                    clusters: config.clusters,
                    master_address: config.master_address,
                    has_cluster_id: config.has_cluster_id,
                    kubelets: config.kubelets.options(),
                },
                capabilities,
                auto_create: AtomicBool::new(config.auto_create_instances),
                state: Mutex::new(state),
                faults: Mutex::new(faults),
                calls: Mutex::new(CallLog::new(config.call_log_capacity)),
                metrics: FakeApiMetrics::default(),
                lb_changes: watch::Sender::new(Vec::new()),
                local_lbs: Mutex::new(None),
                kubelets: Mutex::new(None),
            }),
        }
    }

    /// Switches a capability on or off. Off, its accessor on [`CloudProvider`] returns `None`, so controllers see
    /// it as unsupported. Calling the trait methods directly on the `FakeCloud` still works.
    pub fn set_capability(&self, capability: Capability, enabled: bool) {
        self.inner.capabilities[index(capability)].store(enabled, Ordering::SeqCst);
    }

    /// Whether a capability is on.
    pub fn capability_enabled(&self, capability: Capability) -> bool {
        self.inner.capabilities[index(capability)].load(Ordering::SeqCst)
    }

    /// The capabilities that are on.
    pub fn enabled_capabilities(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.capability_enabled(*c))
            .collect()
    }

    /// Turns [`FakeConfig::auto_create_instances`] on or off.
    pub fn set_auto_create_instances(&self, enabled: bool) {
        self.inner.auto_create.store(enabled, Ordering::SeqCst);
    }

    pub(crate) fn auto_create(&self) -> bool {
        self.inner.auto_create.load(Ordering::SeqCst)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Runs one provider call: latency, throttling and faults, then `op` on the locked state, then the call log.
    pub(crate) async fn call<T>(
        &self,
        method: Method,
        key: String,
        op: impl FnOnce(&mut State, Instant) -> CloudResult<T>,
    ) -> CloudResult<T> {
        let started = std::time::Instant::now();
        self.delay(method).await;
        let now = Instant::now();
        let denied = lock(&self.inner.faults).check(method, &key, now);
        let result = match denied {
            Some(denial) => Err(denial.to_error(method, &key)),
            None => op(&mut self.state(), now),
        };
        self.inner
            .metrics
            .record(method, started.elapsed().as_secs_f64(), result.is_err());
        self.record(method, key, CallOutcome::of(&result));
        result
    }

    /// Sleeps for the latency configured for `method`, if any.
    pub(crate) async fn delay(&self, method: Method) {
        let latency = lock(&self.inner.faults).latency(method);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    pub(crate) fn record(&self, method: Method, key: String, outcome: CallOutcome) {
        tracing::trace!(%method, key, %outcome, "fake cloud call");
        lock(&self.inner.calls).record(method, key, outcome);
    }

    // ----- instances -----

    /// Adds an instance and returns its provider ID. Fails if a live instance has the same name or provider ID
    /// (a terminated one is replaced), if the name is empty, or if the provider ID has another scheme.
    pub fn add_instance(&self, instance: FakeInstance) -> Result<String, FakeError> {
        self.state().instances.add(instance, Origin::default())
    }

    /// Sets the state of the instance with this provider ID or name. Cancels a pending node group transition.
    pub fn set_instance_state(
        &self,
        id_or_name: &str,
        state: FakeInstanceState,
    ) -> Result<(), FakeError> {
        let mut st = self.state();
        let record = st
            .instances
            .get_mut(id_or_name)
            .ok_or_else(|| FakeError::UnknownInstance(id_or_name.to_owned()))?;
        record.set_state(state);
        Ok(())
    }

    /// Removes an instance entirely, as if it had never existed (unlike terminating it, which keeps it known as
    /// gone). Returns what it was.
    pub fn remove_instance(&self, id_or_name: &str) -> Result<FakeInstanceInfo, FakeError> {
        let now = Instant::now();
        self.state()
            .remove_instance(id_or_name)
            .map(|r| r.info(now))
            .ok_or_else(|| FakeError::UnknownInstance(id_or_name.to_owned()))
    }

    /// The instance with this provider ID or name.
    pub fn instance(&self, id_or_name: &str) -> Option<FakeInstanceInfo> {
        let now = Instant::now();
        self.state().instances.get(id_or_name).map(|r| r.info(now))
    }

    /// Every known instance (terminated ones included), sorted by provider ID.
    pub fn instance_list(&self) -> Vec<FakeInstanceInfo> {
        let now = Instant::now();
        self.state()
            .instances
            .records()
            .map(|r| r.info(now))
            .collect()
    }

    // ----- load balancers -----

    /// The load balancer with this name (in any cluster), e.g. `default_load_balancer_name(&service)`.
    pub fn load_balancer(&self, name: &str) -> Option<FakeLoadBalancer> {
        self.state().lbs.find(name).cloned()
    }

    /// The load balancer of `service` (default name), in any cluster.
    pub fn load_balancer_of(&self, service: &Service) -> Option<FakeLoadBalancer> {
        self.load_balancer(&default_load_balancer_name(service))
    }

    /// Every load balancer, sorted by cluster and name.
    pub fn load_balancer_list(&self) -> Vec<FakeLoadBalancer> {
        self.state().lbs.all()
    }

    /// A receiver that sees every load balancer after each change (ensure, update, delete): the hook for
    /// anything that must follow the load balancers, such as a local forwarding proxy.
    pub fn subscribe_load_balancers(&self) -> watch::Receiver<Vec<FakeLoadBalancer>> {
        let st = self.state();
        self.inner.lb_changes.send_replace(st.lbs.all());
        self.inner.lb_changes.subscribe()
    }

    /// Serves every TCP port of every load balancer on its address, forwarding connections to the backend
    /// nodes' `InternalIP` (else `ExternalIP`) and NodePort, round-robin; see [`LocalLoadBalancers`]. The
    /// listeners follow load balancer changes and close when the returned handle is dropped. Use a load balancer
    /// pool of local addresses (e.g. `127.0.100.0/24`: Linux answers on all of `127.0.0.0/8`).
    ///
    /// Fails outside a Tokio runtime.
    pub fn start_local_load_balancers(&self) -> Result<LocalLoadBalancers, FakeError> {
        tokio::runtime::Handle::try_current().map_err(|_| FakeError::NoRuntime)?;
        Ok(LocalLoadBalancers::start(self.subscribe_load_balancers()))
    }

    /// Starts local load balancers owned by the cloud itself (what [`FakeConfig::local_load_balancers`] does):
    /// they run until the last clone of the cloud is dropped.
    pub(crate) fn keep_local_load_balancers(&self) -> Result<(), FakeError> {
        let lbs = self.start_local_load_balancers()?;
        *lock(&self.inner.local_lbs) = Some(lbs);
        Ok(())
    }

    /// Starts the machine kubelets [`FakeConfig::kubelets`] asks for (once: a second `initialize` keeps the
    /// running ones). They hold the cloud weakly, so dropping its last clone stops them.
    fn start_configured_kubelets(&self, client: &kube::Client) -> CloudResult<()> {
        let Some(options) = self.inner.settings.kubelets.clone() else {
            return Ok(());
        };
        let mut running = lock(&self.inner.kubelets);
        if running.is_some() {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        let source = Box::new(move || {
            weak.upgrade()
                .map(|inner| Arc::new(FakeCloud { inner }) as Arc<dyn CloudProvider>)
        });
        let kubelets = MachineKubelets::start_from(client.clone(), source, options)
            .map_err(|e| CloudError::invalid_input("kubelets.registerNodes", e.to_string()))?;
        *running = Some(kubelets);
        Ok(())
    }

    /// The addresses the local load balancers started from the config listen on, each with its Service
    /// (`namespace/name`); empty when they are off.
    pub fn local_load_balancer_listeners(
        &self,
    ) -> std::collections::BTreeMap<std::net::SocketAddr, String> {
        lock(&self.inner.local_lbs)
            .as_ref()
            .map(LocalLoadBalancers::listening)
            .unwrap_or_default()
    }

    /// Publishes the load balancers to subscribers, if any. Called with the state locked so updates are ordered.
    pub(crate) fn publish_load_balancers(&self, state: &State) {
        if !self.inner.lb_changes.is_closed() {
            self.inner.lb_changes.send_replace(state.lbs.all());
        }
    }

    // ----- routes -----

    /// Marks the route for `cidr` in `cluster` as a blackhole (or not), as a cloud does when the target is gone.
    pub fn set_route_blackhole(
        &self,
        cluster: &str,
        cidr: IpNet,
        blackhole: bool,
    ) -> Result<(), FakeError> {
        self.state().routes.set_blackhole(cluster, cidr, blackhole)
    }

    /// The routes of `cluster`, as `list_routes` shows them (without recording a call).
    pub fn route_list(&self, cluster: &str) -> Vec<cloudprovider_api::Route> {
        let now = Instant::now();
        let st = self.state();
        st.routes.list(cluster, |node| st.node_gone(node, now))
    }

    // ----- node groups -----

    /// Adds a node group and creates its initial instances (running).
    pub fn add_node_group(&self, spec: NodeGroupSpec) -> Result<(), FakeError> {
        self.state().add_group(spec, Instant::now())
    }

    /// Changes how the group's future instances come up.
    pub fn set_node_group_provisioning(
        &self,
        id: &str,
        provisioning: Provisioning,
    ) -> Result<(), FakeError> {
        self.state().group_mut(id)?.provisioning = provisioning;
        Ok(())
    }

    /// Changes how long the group's future instances stay `Creating`.
    pub fn set_provision_delay(&self, id: &str, delay: Duration) -> Result<(), FakeError> {
        self.state().group_mut(id)?.provision_delay_ms =
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Ok(())
    }

    /// The instances of a node group, oldest first (deleted ones are no longer members).
    pub fn node_group_members(&self, id: &str) -> Result<Vec<FakeInstanceInfo>, FakeError> {
        let now = Instant::now();
        let st = self.state();
        let members = st
            .group_members(id)
            .ok_or_else(|| FakeError::UnknownNodeGroup(id.to_owned()))?;
        Ok(members
            .iter()
            .filter_map(|pid| st.instances.get(pid))
            .map(|r| r.info(now))
            .collect())
    }
}

#[async_trait]
impl CloudProvider for FakeCloud {
    fn provider_name(&self) -> &str {
        &self.inner.settings.name
    }

    async fn initialize(&self, ctx: &cloudprovider_api::InitContext) -> CloudResult<()> {
        self.call(Method::Initialize, String::new(), |_, _| Ok(()))
            .await?;
        self.start_configured_kubelets(ctx.client())
    }

    fn instances(&self) -> Option<&dyn Instances> {
        self.capability_enabled(Capability::Instances)
            .then_some(self as &dyn Instances)
    }

    fn load_balancers(&self) -> Option<&dyn LoadBalancers> {
        self.capability_enabled(Capability::LoadBalancers)
            .then_some(self as &dyn LoadBalancers)
    }

    fn routes(&self) -> Option<&dyn Routes> {
        self.capability_enabled(Capability::Routes)
            .then_some(self as &dyn Routes)
    }

    fn zones(&self) -> Option<&dyn Zones> {
        self.capability_enabled(Capability::Zones)
            .then_some(self as &dyn Zones)
    }

    fn clusters(&self) -> Option<&dyn Clusters> {
        self.capability_enabled(Capability::Clusters)
            .then_some(self as &dyn Clusters)
    }

    fn node_groups(&self) -> Option<&dyn NodeGroups> {
        self.capability_enabled(Capability::NodeGroups)
            .then_some(self as &dyn NodeGroups)
    }

    fn has_cluster_id(&self) -> bool {
        self.inner.settings.has_cluster_id
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }
}
