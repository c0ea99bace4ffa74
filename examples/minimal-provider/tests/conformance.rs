//! The provider passes the conformance kit: every instance check runs (none skipped), the rest are skipped because
//! the provider has no load balancers, routes or node groups.

use std::sync::Arc;

use async_trait::async_trait;
use cloudprovider_api::conformance::{self, ConformanceTarget, Outcome};
use cloudprovider_api::{CloudProvider, CloudResult, ProviderRegistry};
use k8s_openapi::api::core::v1::Node;
use minimal_provider::{Inventory, InventoryConfig, Machine, Power};
use test_support::NodeBuilder;

struct Target(Inventory);

fn name_of(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

#[async_trait]
impl ConformanceTarget for Target {
    fn provider(&self) -> Arc<dyn CloudProvider> {
        Arc::new(self.0.clone())
    }

    async fn create_instance(&self, name: &str) -> CloudResult<Node> {
        self.0.add(Machine {
            name: name.to_owned(),
            address: "10.1.0.9".to_owned(),
            rack: "rack1".to_owned(),
            model: None,
        });
        // A kubelet registers the Node by host name, without a provider ID.
        Ok(NodeBuilder::new(name).build())
    }

    async fn stop_instance(&self, node: &Node) -> CloudResult<()> {
        self.0.set_power(&name_of(node), Power::Off)
    }

    async fn terminate_instance(&self, node: &Node) -> CloudResult<()> {
        self.0.set_power(&name_of(node), Power::Decommissioned)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn passes_the_conformance_kit() {
    let report = conformance::run(&Target(Inventory::new(InventoryConfig::default()))).await;
    report.assert_passed();
    let instance_checks: Vec<_> = conformance::check_names()
        .into_iter()
        .filter(|n| n.starts_with("instances/"))
        .collect();
    assert!(!instance_checks.is_empty());
    for name in instance_checks {
        assert_eq!(report.outcome(name), Some(&Outcome::Passed), "{name}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_typo_in_the_config_names_the_field() {
    let mut registry = ProviderRegistry::new();
    minimal_provider::register(&mut registry).expect("register");
    let err = registry
        .build_from_str("inventory", Some("machines: []\nregoin: x"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("regoin"), "{err}");
}
