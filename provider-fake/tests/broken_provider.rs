//! Proof that the conformance kit catches contract violations: the fake is wrapped in a decorator that breaks one
//! contract point at a time, and the kit must fail exactly the check for that point (plus the checks that depend
//! on it), while every other check still passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloudprovider_api::conformance::{
    ConformanceReport, ConformanceTarget, Outcome, check_names, node_with_provider_id, run,
};
use cloudprovider_api::{
    Capabilities, CloudError, CloudInstance, CloudInstanceState, CloudProvider, CloudResult,
    Clusters, InstanceMetadata, InstanceState, Instances, LoadBalancers, NodeGroup, NodeGroups,
    Route, Routes, Zone, Zones, async_trait,
};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use provider_fake::{FakeCloud, FakeConfig, FakeInstance, FakeInstanceState, NodeGroupSpec};

/// One contract point broken at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// No bug: the control experiment.
    None,
    /// `capabilities()` disagrees with the accessors.
    CapabilitiesLie,
    /// A running instance is reported as shut down.
    RunningReportedShutdown,
    /// Metadata carries a provider ID of another provider.
    ForeignProviderId,
    /// A stopped instance is reported as not existing (the Node would be deleted).
    StoppedDoesNotExist,
    /// A terminated instance keeps existing.
    TerminatedStillExists,
    /// `instance_shutdown` of an absent instance answers `Ok(false)` instead of `NotFound`.
    AbsentShutdownIsFalse,
    /// `instance_states` answers in the wrong order.
    BatchStatesReversed,
    /// `ensure_load_balancer_deleted` fails when the LB does not exist.
    DeleteOfAbsentLbFails,
    /// Every Service gets the same LB name.
    ConstantLbName,
    /// `ensure_load_balancer` hands out a new address every time.
    NewIpOnEveryEnsure,
    /// `update_load_balancer` without hosts deletes the LB.
    UpdateWithoutHostsDeletes,
    /// `ensure_load_balancer_deleted` answers `ImplementedElsewhere` for an existing LB.
    DeleteAnswersImplementedElsewhere,
    /// `list_routes` lists each route twice.
    DuplicateRoutes,
    /// `delete_route` of an absent route fails.
    DeleteOfAbsentRouteFails,
    /// `target_size` of an unknown group answers 0.
    UnknownGroupHasSizeZero,
    /// `instances()` hides instances that are still being created.
    CreatingInstancesHidden,
    /// `increase_size` ignores the maximum.
    IncreaseIgnoresMax,
    /// `delete_instances` accepts instances that are not in the group.
    DeleteUnknownInstanceSucceeds,
    /// `decrease_target_size` accepts any delta.
    DecreaseAcceptsAnything,
    /// The template node lacks the pods resource.
    TemplateWithoutPods,
    /// `zone_by_provider_id` of an absent instance answers a zone.
    ZoneOfAbsentInstance,
    /// `list_clusters` fails.
    ListClustersFails,
}

struct Broken {
    cloud: FakeCloud,
    bug: Bug,
    ips: AtomicU32,
}

fn is(b: &Broken, bug: Bug) -> bool {
    b.bug == bug
}

#[async_trait]
impl CloudProvider for Broken {
    fn provider_name(&self) -> &str {
        self.cloud.provider_name()
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
    fn clusters(&self) -> Option<&dyn Clusters> {
        Some(self)
    }
    fn node_groups(&self) -> Option<&dyn NodeGroups> {
        Some(self)
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = CloudProvider::capabilities(&self.cloud);
        if is(self, Bug::CapabilitiesLie) {
            caps.routes = false;
        }
        caps
    }
}

#[async_trait]
impl Instances for Broken {
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        let exists = Instances::instance_exists(&self.cloud, node).await?;
        if is(self, Bug::StoppedDoesNotExist)
            && exists
            && Instances::instance_shutdown(&self.cloud, node).await?
        {
            return Ok(false);
        }
        if is(self, Bug::TerminatedStillExists)
            && !exists
            && node.metadata.name.as_deref() != Some("conformance-absent")
        {
            return Ok(true);
        }
        Ok(exists)
    }

    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        match Instances::instance_shutdown(&self.cloud, node).await {
            Err(e) if e.is_not_found() && is(self, Bug::AbsentShutdownIsFalse) => Ok(false),
            Ok(false) if is(self, Bug::RunningReportedShutdown) => Ok(true),
            other => other,
        }
    }

    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        let mut md = Instances::instance_metadata(&self.cloud, node).await?;
        if is(self, Bug::ForeignProviderId) {
            md.provider_id = format!("other://{}", md.provider_id);
        }
        Ok(md)
    }

    async fn instance_states(&self, nodes: &[&Node]) -> Vec<CloudResult<InstanceState>> {
        // Built from the (possibly broken) single calls, like the trait's default.
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            out.push(match self.instance_exists(node).await {
                Err(e) => Err(e),
                Ok(false) => Ok(InstanceState::Gone),
                Ok(true) => match self.instance_shutdown(node).await {
                    Ok(true) => Ok(InstanceState::Shutdown),
                    Ok(false) => Ok(InstanceState::Running),
                    Err(e) if e.is_not_found() => Ok(InstanceState::Gone),
                    Err(e) => Err(e),
                },
            });
        }
        if is(self, Bug::BatchStatesReversed) {
            out.reverse();
        }
        out
    }
}

#[async_trait]
impl LoadBalancers for Broken {
    async fn get_load_balancer(
        &self,
        cluster: &str,
        svc: &Service,
    ) -> CloudResult<Option<LoadBalancerStatus>> {
        LoadBalancers::get_load_balancer(&self.cloud, cluster, svc).await
    }

    fn load_balancer_name(&self, cluster: &str, svc: &Service) -> String {
        if is(self, Bug::ConstantLbName) {
            return "the-lb".to_owned();
        }
        LoadBalancers::load_balancer_name(&self.cloud, cluster, svc)
    }

    async fn ensure_load_balancer(
        &self,
        cluster: &str,
        svc: &Service,
        nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus> {
        let status = LoadBalancers::ensure_load_balancer(&self.cloud, cluster, svc, nodes).await?;
        if is(self, Bug::NewIpOnEveryEnsure) {
            let n = self.ips.fetch_add(1, Ordering::SeqCst);
            return Ok(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(format!("198.51.100.{}", n + 1)),
                    ..Default::default()
                }]),
            });
        }
        Ok(status)
    }

    async fn update_load_balancer(
        &self,
        cluster: &str,
        svc: &Service,
        nodes: &[Node],
    ) -> CloudResult<()> {
        if is(self, Bug::UpdateWithoutHostsDeletes) && nodes.is_empty() {
            return LoadBalancers::ensure_load_balancer_deleted(&self.cloud, cluster, svc).await;
        }
        LoadBalancers::update_load_balancer(&self.cloud, cluster, svc, nodes).await
    }

    async fn ensure_load_balancer_deleted(&self, cluster: &str, svc: &Service) -> CloudResult<()> {
        let exists = LoadBalancers::get_load_balancer(&self.cloud, cluster, svc)
            .await?
            .is_some();
        if is(self, Bug::DeleteOfAbsentLbFails) && !exists {
            return Err(CloudError::not_found("load balancer", "absent"));
        }
        if is(self, Bug::DeleteAnswersImplementedElsewhere) && exists {
            return Err(CloudError::ImplementedElsewhere("someone else's".into()));
        }
        LoadBalancers::ensure_load_balancer_deleted(&self.cloud, cluster, svc).await
    }
}

#[async_trait]
impl Routes for Broken {
    async fn list_routes(&self, cluster: &str) -> CloudResult<Vec<Route>> {
        let routes = Routes::list_routes(&self.cloud, cluster).await?;
        if is(self, Bug::DuplicateRoutes) {
            return Ok(routes.iter().chain(routes.iter()).cloned().collect());
        }
        Ok(routes)
    }

    async fn create_route(&self, cluster: &str, hint: &str, route: &Route) -> CloudResult<()> {
        Routes::create_route(&self.cloud, cluster, hint, route).await
    }

    async fn delete_route(&self, cluster: &str, route: &Route) -> CloudResult<()> {
        if is(self, Bug::DeleteOfAbsentRouteFails) {
            let listed = Routes::list_routes(&self.cloud, cluster).await?;
            if !listed
                .iter()
                .any(|r| r.destination_cidr == route.destination_cidr)
            {
                return Err(CloudError::not_found(
                    "route",
                    route.destination_cidr.to_string(),
                ));
            }
        }
        Routes::delete_route(&self.cloud, cluster, route).await
    }
}

#[async_trait]
impl Zones for Broken {
    async fn zone(&self) -> CloudResult<Zone> {
        Zones::zone(&self.cloud).await
    }
    async fn zone_by_provider_id(&self, provider_id: &str) -> CloudResult<Zone> {
        match Zones::zone_by_provider_id(&self.cloud, provider_id).await {
            Err(e) if e.is_not_found() && is(self, Bug::ZoneOfAbsentInstance) => {
                Zones::zone(&self.cloud).await
            }
            other => other,
        }
    }
    async fn zone_by_node_name(&self, node_name: &str) -> CloudResult<Zone> {
        Zones::zone_by_node_name(&self.cloud, node_name).await
    }
}

#[async_trait]
impl Clusters for Broken {
    async fn list_clusters(&self) -> CloudResult<Vec<String>> {
        if is(self, Bug::ListClustersFails) {
            return Err(CloudError::transient("clusters are down"));
        }
        Clusters::list_clusters(&self.cloud).await
    }
    async fn master(&self, cluster: &str) -> CloudResult<String> {
        Clusters::master(&self.cloud, cluster).await
    }
}

#[async_trait]
impl NodeGroups for Broken {
    async fn node_groups(&self) -> CloudResult<Vec<NodeGroup>> {
        NodeGroups::node_groups(&self.cloud).await
    }
    async fn node_group_for_node(&self, node: &Node) -> CloudResult<Option<String>> {
        NodeGroups::node_group_for_node(&self.cloud, node).await
    }
    async fn target_size(&self, id: &str) -> CloudResult<u32> {
        match NodeGroups::target_size(&self.cloud, id).await {
            Err(e) if e.is_not_found() && is(self, Bug::UnknownGroupHasSizeZero) => Ok(0),
            other => other,
        }
    }
    async fn increase_size(&self, id: &str, delta: u32) -> CloudResult<()> {
        match NodeGroups::increase_size(&self.cloud, id, delta).await {
            Err(CloudError::InvalidInput { .. }) if is(self, Bug::IncreaseIgnoresMax) => Ok(()),
            other => other,
        }
    }
    async fn delete_instances(&self, id: &str, provider_ids: &[String]) -> CloudResult<()> {
        match NodeGroups::delete_instances(&self.cloud, id, provider_ids).await {
            Err(e) if e.is_not_found() && is(self, Bug::DeleteUnknownInstanceSucceeds) => Ok(()),
            other => other,
        }
    }
    async fn decrease_target_size(&self, id: &str, delta: u32) -> CloudResult<()> {
        if is(self, Bug::DecreaseAcceptsAnything) {
            return Ok(());
        }
        NodeGroups::decrease_target_size(&self.cloud, id, delta).await
    }
    async fn instances(&self, id: &str) -> CloudResult<Vec<CloudInstance>> {
        let mut all = NodeGroups::instances(&self.cloud, id).await?;
        if is(self, Bug::CreatingInstancesHidden) {
            all.retain(|i| i.state == CloudInstanceState::Running);
        }
        Ok(all)
    }
    async fn template_node(&self, id: &str) -> CloudResult<Node> {
        let mut node = NodeGroups::template_node(&self.cloud, id).await?;
        if is(self, Bug::TemplateWithoutPods)
            && let Some(status) = node.status.as_mut()
        {
            for list in [status.capacity.as_mut(), status.allocatable.as_mut()]
                .into_iter()
                .flatten()
            {
                list.remove("pods");
            }
        }
        Ok(node)
    }
}

struct Target {
    provider: Arc<Broken>,
}

#[async_trait]
impl ConformanceTarget for Target {
    fn provider(&self) -> Arc<dyn CloudProvider> {
        self.provider.clone()
    }
    async fn create_instance(&self, name: &str) -> CloudResult<Node> {
        let id = self.provider.cloud.add_instance(FakeInstance::new(name))?;
        Ok(node_with_provider_id(name, &id))
    }
    async fn stop_instance(&self, node: &Node) -> CloudResult<()> {
        let id = node.metadata.name.clone().unwrap_or_default();
        Ok(self
            .provider
            .cloud
            .set_instance_state(&id, FakeInstanceState::Stopped)?)
    }
    async fn terminate_instance(&self, node: &Node) -> CloudResult<()> {
        let id = node.metadata.name.clone().unwrap_or_default();
        Ok(self
            .provider
            .cloud
            .set_instance_state(&id, FakeInstanceState::Terminated)?)
    }
    fn settle_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// Runs the kit against the fake with `bug`, and checks that exactly `failed` fail and `skipped` are skipped.
async fn expect(bug: Bug, failed: &[&str], skipped: &[&str]) {
    // New node group instances take a minute to come up, longer than the settle timeout, so hiding `Creating`
    // instances is observable.
    let group = NodeGroupSpec::new("workers", 0, 5)
        .with_initial_size(1)
        .with_provision_delay(Duration::from_secs(60));
    let config = FakeConfig {
        node_groups: vec![group],
        ..FakeConfig::default()
    };
    let cloud = FakeCloud::from_config(config).unwrap_or_else(|e| panic!("{e}"));
    let target = Target {
        provider: Arc::new(Broken {
            cloud,
            bug,
            ips: AtomicU32::new(0),
        }),
    };
    let report: ConformanceReport = run(&target).await;
    assert_eq!(report.checks.len(), check_names().len(), "{report}");
    for check in &report.checks {
        let name = check.name;
        match &check.outcome {
            Outcome::Failed(_) => assert!(
                failed.contains(&name),
                "{bug:?}: unexpected failure of {name}:\n{report}"
            ),
            Outcome::Skipped(_) => assert!(
                skipped.contains(&name),
                "{bug:?}: unexpected skip of {name}:\n{report}"
            ),
            Outcome::Passed => assert!(
                !failed.contains(&name) && !skipped.contains(&name),
                "{bug:?}: {name} passed but should not have:\n{report}"
            ),
        }
    }
    assert_eq!(report.passed(), failed.is_empty(), "{bug:?}:\n{report}");
}

macro_rules! broken {
    ($($test:ident: $bug:ident => failed [$($f:literal),* $(,)?] skipped [$($s:literal),* $(,)?];)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $test() {
            expect(Bug::$bug, &[$($f),*], &[$($s),*]).await;
        }
    )*};
}

broken! {
    capabilities_lie: CapabilitiesLie => failed ["provider/capabilities-consistent"] skipped [];
    running_reported_shutdown: RunningReportedShutdown
        => failed ["instances/running-exists", "instances/batch-states-in-order"] skipped [];
    foreign_provider_id: ForeignProviderId => failed ["instances/metadata"] skipped [];
    stopped_instance_does_not_exist: StoppedDoesNotExist
        => failed ["instances/stopped-exists-and-is-shutdown"] skipped ["instances/batch-states-in-order"];
    terminated_instance_still_exists: TerminatedStillExists => failed ["instances/terminated-is-gone", "instances/absent-by-name-is-not-found"] skipped [];
    absent_shutdown_is_false: AbsentShutdownIsFalse => failed ["instances/absent-is-not-found", "instances/absent-by-name-is-not-found"] skipped [];
    batch_states_reversed: BatchStatesReversed => failed ["instances/batch-states-in-order"] skipped [];
    delete_of_absent_lb_fails: DeleteOfAbsentLbFails
        => failed [
            "load-balancers/absent-get-is-none-and-delete-succeeds",
            "load-balancers/delete-is-idempotent",
        ] skipped [];
    constant_lb_name: ConstantLbName => failed ["load-balancers/name-is-stable-and-distinct"] skipped [];
    new_ip_on_every_ensure: NewIpOnEveryEnsure
        => failed ["load-balancers/ensure-is-idempotent"] skipped ["load-balancers/update-hosts"];
    update_without_hosts_deletes: UpdateWithoutHostsDeletes => failed ["load-balancers/update-hosts"] skipped [];
    delete_answers_implemented_elsewhere: DeleteAnswersImplementedElsewhere
        => failed ["load-balancers/delete-is-idempotent"] skipped [];
    duplicate_routes: DuplicateRoutes => failed ["routes/lifecycle"] skipped [];
    delete_of_absent_route_fails: DeleteOfAbsentRouteFails => failed ["routes/delete-absent-succeeds"] skipped [];
    unknown_group_has_size_zero: UnknownGroupHasSizeZero => failed ["node-groups/sizes-within-bounds"] skipped [];
    creating_instances_hidden: CreatingInstancesHidden
        => failed ["node-groups/increase-size"] skipped ["node-groups/delete-instances"];
    increase_ignores_max: IncreaseIgnoresMax => failed ["node-groups/increase-beyond-max-is-rejected"] skipped [];
    delete_unknown_instance_succeeds: DeleteUnknownInstanceSucceeds
        => failed ["node-groups/delete-instances"] skipped [];
    decrease_accepts_anything: DecreaseAcceptsAnything
        => failed ["node-groups/decrease-target-size-cannot-delete-running"] skipped [];
    template_without_pods: TemplateWithoutPods => failed ["node-groups/template-node"] skipped [];
    zone_of_absent_instance: ZoneOfAbsentInstance => failed ["zones/zone-of-instance"] skipped [];
    list_clusters_fails: ListClustersFails => failed ["clusters/list"] skipped [];
}

/// The decorator without a bug passes everything: the failures above come from the bugs, not from the harness.
#[tokio::test(start_paused = true)]
async fn harness_without_bugs_passes() {
    expect(Bug::None, &[], &[]).await;
}
