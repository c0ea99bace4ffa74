//! The fake passes the conformance kit, with nodes that carry `spec.providerID` and with nodes that do not (so
//! instances are found by name), and every check really runs.

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::conformance::{
    ConformanceReport, ConformanceTarget, Outcome, check_names, node_with_provider_id, run,
};
use cloudprovider_api::{CloudError, CloudProvider, CloudResult, node_provider_id};
use k8s_openapi::api::core::v1::Node;
use provider_fake::{
    Capability, CapabilitySwitches, FakeCloud, FakeConfig, FakeInstance, FakeInstanceState, Method,
    NodeGroupSpec,
};
use test_support::NodeBuilder;

struct FakeTarget {
    cloud: FakeCloud,
    with_provider_id: bool,
}

impl FakeTarget {
    fn new(cloud: FakeCloud, with_provider_id: bool) -> Self {
        Self {
            cloud,
            with_provider_id,
        }
    }
}

#[cloudprovider_api::async_trait]
impl ConformanceTarget for FakeTarget {
    fn provider(&self) -> Arc<dyn CloudProvider> {
        Arc::new(self.cloud.clone())
    }

    async fn create_instance(&self, name: &str) -> CloudResult<Node> {
        let provider_id = self.cloud.add_instance(FakeInstance::new(name))?;
        Ok(if self.with_provider_id {
            node_with_provider_id(name, &provider_id)
        } else {
            NodeBuilder::new(name).uid(format!("uid-{name}")).build()
        })
    }

    async fn stop_instance(&self, node: &Node) -> CloudResult<()> {
        Ok(self
            .cloud
            .set_instance_state(&id_of(node)?, FakeInstanceState::Stopped)?)
    }

    async fn terminate_instance(&self, node: &Node) -> CloudResult<()> {
        Ok(self
            .cloud
            .set_instance_state(&id_of(node)?, FakeInstanceState::Terminated)?)
    }

    fn settle_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

fn id_of(node: &Node) -> CloudResult<String> {
    node_provider_id(node)
        .or(node.metadata.name.as_deref())
        .map(str::to_owned)
        .ok_or_else(|| CloudError::invalid_input("metadata.name", "node without name"))
}

fn cloud_with_group(group: NodeGroupSpec) -> FakeCloud {
    let config = FakeConfig {
        node_groups: vec![group],
        ..FakeConfig::default()
    };
    FakeCloud::from_config(config).unwrap_or_else(|e| panic!("config: {e}"))
}

fn assert_all_passed(report: &ConformanceReport) {
    report.assert_passed();
    let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        check_names(),
        "the kit reported other checks than it lists"
    );
    for name in check_names() {
        assert_eq!(
            report.outcome(name),
            Some(&Outcome::Passed),
            "{name}:\n{report}"
        );
    }
    assert_eq!(report.counts(), (check_names().len(), 0, 0), "{report}");
}

#[tokio::test(start_paused = true)]
async fn passes_with_provider_ids() {
    let cloud = cloud_with_group(NodeGroupSpec::new("workers", 0, 5).with_initial_size(1));
    let report = run(&FakeTarget::new(cloud.clone(), true)).await;
    assert_all_passed(&report);
    // The kit went through the fake, and cleaned up after itself.
    assert!(cloud.count(Method::InstanceExists) >= 4);
    assert!(cloud.count(Method::EnsureLoadBalancer) >= 2);
    assert!(cloud.load_balancer_list().is_empty());
    assert!(cloud.route_list("conformance").is_empty());
}

#[tokio::test(start_paused = true)]
async fn passes_with_lookup_by_node_name() {
    let cloud = cloud_with_group(NodeGroupSpec::new("workers", 1, 4));
    let report = run(&FakeTarget::new(cloud.clone(), false)).await;
    assert_all_passed(&report);
    // Every instance call was made with nodes that had no provider ID: the name lookup answered them.
    let calls = cloud.calls_of(Method::InstanceMetadata);
    assert!(
        calls
            .iter()
            .any(|c| c.key == "conformance-running" && c.outcome.is_ok()),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn passes_with_a_provision_delay() {
    // New node group instances stay Creating for 3s (less than the settle timeout): still conformant.
    let group = NodeGroupSpec::new("slow", 0, 3).with_provision_delay(Duration::from_secs(3));
    let cloud = cloud_with_group(group);
    let report = run(&FakeTarget::new(cloud, true)).await;
    assert_all_passed(&report);
}

#[tokio::test(start_paused = true)]
async fn switched_off_capabilities_are_skipped() {
    let config = FakeConfig {
        capabilities: CapabilitySwitches {
            instances: false,
            load_balancers: false,
            routes: false,
            zones: false,
            clusters: false,
            node_groups: false,
        },
        ..FakeConfig::default()
    };
    let cloud = FakeCloud::from_config(config).unwrap_or_else(|e| panic!("config: {e}"));
    let report = run(&FakeTarget::new(cloud.clone(), true)).await;
    assert_eq!(report.counts(), (1, 0, check_names().len() - 1), "{report}");
    assert_eq!(
        report.outcome("provider/capabilities-consistent"),
        Some(&Outcome::Passed)
    );

    // Switched on again at run time, all of it runs.
    for capability in Capability::ALL {
        cloud.set_capability(capability, true);
    }
    cloud
        .add_node_group(NodeGroupSpec::new("late", 0, 2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_all_passed(&run(&FakeTarget::new(cloud, true)).await);
}
