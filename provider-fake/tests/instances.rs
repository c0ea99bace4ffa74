//! Instances: lookup by provider ID or name, states, administration, auto-creation; zones and clusters.

mod common;

use cloudprovider_api::{
    CloudError, Clusters, InstanceState, Instances, NodeAddress, NodeAddressType, Zones,
};
use common::{node, node_with_provider_id, ok};
use provider_fake::{FakeCloud, FakeConfig, FakeError, FakeInstance, FakeInstanceState};

#[tokio::test]
async fn metadata_has_defaults_and_generated_addresses() {
    let cloud = FakeCloud::new();
    assert_eq!(ok(cloud.add_instance(FakeInstance::new("a"))), "fake://a");
    assert_eq!(ok(cloud.add_instance(FakeInstance::new("b"))), "fake://b");
    let md = ok(cloud.instance_metadata(&node("b")).await);
    assert_eq!(md.provider_id, "fake://b");
    assert_eq!(md.instance_type, "fake.small");
    assert_eq!(
        (md.zone.as_str(), md.region.as_str()),
        ("fake-zone-1a", "fake-region-1")
    );
    assert_eq!(
        md.node_addresses,
        [
            NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.2"),
            NodeAddress::new(NodeAddressType::Hostname, "b"),
        ]
    );
    assert!(md.additional_labels.is_empty());
}

#[tokio::test]
async fn explicit_fields_are_reported() {
    let cloud = FakeCloud::new();
    let inst = FakeInstance::new("big")
        .with_provider_id("fake://pool/i-123")
        .with_instance_type("fake.xlarge")
        .with_zone("z9")
        .with_region("r9")
        .with_addresses(vec![NodeAddress::new(
            NodeAddressType::ExternalIp,
            "203.0.113.7",
        )])
        .with_label("example.com/tier", "gold");
    assert_eq!(ok(cloud.add_instance(inst)), "fake://pool/i-123");
    let md = ok(cloud
        .instance_metadata(&node_with_provider_id("big", "fake://pool/i-123"))
        .await);
    assert_eq!(md.instance_type, "fake.xlarge");
    assert_eq!((md.zone.as_str(), md.region.as_str()), ("z9", "r9"));
    assert_eq!(
        md.node_addresses,
        [NodeAddress::new(NodeAddressType::ExternalIp, "203.0.113.7")]
    );
    assert_eq!(
        md.additional_labels
            .get("example.com/tier")
            .map(String::as_str),
        Some("gold")
    );
    // The same instance by name.
    assert_eq!(
        ok(cloud.instance_metadata(&node("big")).await).provider_id,
        "fake://pool/i-123"
    );
}

#[tokio::test]
async fn provider_id_wins_over_the_name() {
    let cloud = FakeCloud::new();
    ok(cloud.add_instance(FakeInstance::new("a").with_zone("za")));
    ok(cloud.add_instance(FakeInstance::new("b").with_zone("zb")));
    // A node named "a" whose provider ID points at "b" is instance b.
    let md = ok(cloud
        .instance_metadata(&node_with_provider_id("a", "fake://b"))
        .await);
    assert_eq!(md.zone, "zb");
    // A provider ID that matches nothing is not found, even though the name would match.
    let ghost = node_with_provider_id("a", "fake://ghost");
    assert!(!ok(cloud.instance_exists(&ghost).await));
    assert!(matches!(
        cloud.instance_metadata(&ghost).await,
        Err(CloudError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_foreign_provider_id_is_invalid_input_never_gone() {
    let cloud = FakeCloud::new();
    let foreign = node_with_provider_id("a", "aws:///us-east-1a/i-0abc");
    let exists = cloud.instance_exists(&foreign).await;
    assert!(
        matches!(exists, Err(CloudError::InvalidInput { ref field, .. }) if field == "spec.providerID"),
        "{exists:?}"
    );
    let states = cloud.instance_states(&[&foreign]).await;
    assert!(matches!(states[0], Err(CloudError::InvalidInput { .. })));
    // A node with neither name nor provider ID cannot be looked up.
    let nameless = cloud.instance_exists(&Default::default()).await;
    assert!(
        matches!(nameless, Err(CloudError::InvalidInput { ref field, .. }) if field == "metadata.name")
    );
}

#[tokio::test]
async fn stopped_exists_and_terminated_is_gone() {
    let cloud = FakeCloud::new();
    ok(cloud.add_instance(FakeInstance::new("n")));
    let n = node("n");
    assert!(ok(cloud.instance_exists(&n).await));
    assert!(!ok(cloud.instance_shutdown(&n).await));

    ok(cloud.set_instance_state("fake://n", FakeInstanceState::Stopped));
    assert!(ok(cloud.instance_exists(&n).await));
    assert!(ok(cloud.instance_shutdown(&n).await));
    assert!(cloud.instance_metadata(&n).await.is_ok());
    assert!(matches!(
        cloud.instance_states(&[&n]).await[0],
        Ok(InstanceState::Shutdown)
    ));

    ok(cloud.set_instance_state("n", FakeInstanceState::Running));
    assert!(!ok(cloud.instance_shutdown(&n).await));

    ok(cloud.set_instance_state("n", FakeInstanceState::Terminated));
    assert!(!ok(cloud.instance_exists(&n).await));
    assert!(matches!(
        cloud.instance_shutdown(&n).await,
        Err(CloudError::NotFound { .. })
    ));
    assert!(matches!(
        cloud.instance_metadata(&n).await,
        Err(CloudError::NotFound { .. })
    ));
    assert!(matches!(
        cloud.instance_states(&[&n]).await[0],
        Ok(InstanceState::Gone)
    ));
    assert_eq!(
        cloud.instance("n").map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
}

#[tokio::test]
async fn administration_errors_and_replacement() {
    let cloud = FakeCloud::new();
    ok(cloud.add_instance(FakeInstance::new("n")));
    assert_eq!(
        cloud.add_instance(FakeInstance::new("n")),
        Err(FakeError::DuplicateInstance("fake://n".into()))
    );
    assert_eq!(
        cloud.add_instance(FakeInstance::new("other").with_provider_id("fake://n")),
        Err(FakeError::DuplicateInstance("fake://n".into()))
    );
    assert!(matches!(
        cloud.add_instance(FakeInstance::new("")),
        Err(FakeError::InvalidConfig { .. })
    ));
    assert!(matches!(
        cloud.add_instance(FakeInstance::new("x").with_provider_id("aws:///i-1")),
        Err(FakeError::InvalidConfig { ref field, .. }) if field == "providerId"
    ));
    assert_eq!(
        cloud.set_instance_state("nope", FakeInstanceState::Stopped),
        Err(FakeError::UnknownInstance("nope".into()))
    );

    // A terminated instance's name can be reused: the new instance replaces it.
    ok(cloud.set_instance_state("n", FakeInstanceState::Terminated));
    ok(cloud.add_instance(FakeInstance::new("n").with_zone("z2")));
    assert!(ok(cloud.instance_exists(&node("n")).await));
    assert_eq!(ok(cloud.zone_by_node_name("n").await).failure_domain, "z2");

    // Removing forgets it entirely.
    let removed = ok(cloud.remove_instance("n"));
    assert_eq!(removed.zone, "z2");
    assert!(cloud.instance("n").is_none());
    assert!(!ok(cloud.instance_exists(&node("n")).await));
    assert_eq!(
        cloud.remove_instance("n"),
        Err(FakeError::UnknownInstance("n".into()))
    );
}

#[tokio::test]
async fn instance_list_is_sorted_by_provider_id() {
    let cloud = FakeCloud::new();
    for name in ["c", "a", "b"] {
        ok(cloud.add_instance(FakeInstance::new(name).with_state(FakeInstanceState::Stopped)));
    }
    let names: Vec<String> = cloud.instance_list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(
        cloud
            .instance_list()
            .iter()
            .all(|i| i.state == FakeInstanceState::Stopped)
    );
}

#[tokio::test]
async fn auto_create_gives_unknown_nodes_a_running_instance() {
    let cloud = ok(FakeCloud::from_config(FakeConfig {
        auto_create_instances: true,
        ..FakeConfig::default()
    }));
    assert!(ok(cloud.instance_exists(&node("fresh")).await));
    let md = ok(cloud.instance_metadata(&node("fresh")).await);
    assert_eq!(md.provider_id, "fake://fresh");
    // A node that already carries one of our provider IDs gets exactly that ID.
    let with_id = node_with_provider_id("named", "fake://custom/7");
    assert_eq!(
        ok(cloud.instance_metadata(&with_id).await).provider_id,
        "fake://custom/7"
    );
    assert_eq!(
        ok(cloud.zone_by_node_name("zoned").await).failure_domain,
        "fake-zone-1a"
    );
    assert_eq!(cloud.instance_list().len(), 3);

    // Terminated instances stay gone: auto-creation never resurrects them.
    ok(cloud.set_instance_state("fresh", FakeInstanceState::Terminated));
    assert!(!ok(cloud.instance_exists(&node("fresh")).await));

    cloud.set_auto_create_instances(false);
    assert!(!ok(cloud.instance_exists(&node("other")).await));
}

#[tokio::test]
async fn zones_and_clusters() {
    let cloud = ok(FakeCloud::from_config(FakeConfig {
        zone: "z1".into(),
        region: "r1".into(),
        clusters: vec!["one".into(), "two".into()],
        master_address: "10.1.1.1".into(),
        ..FakeConfig::default()
    }));
    ok(cloud.add_instance(FakeInstance::new("n").with_zone("z2")));
    assert_eq!(ok(cloud.zone().await).failure_domain, "z1");
    let by_id = ok(cloud.zone_by_provider_id("fake://n").await);
    assert_eq!(
        (by_id.failure_domain.as_str(), by_id.region.as_str()),
        ("z2", "r1")
    );
    assert_eq!(ok(cloud.zone_by_node_name("n").await).failure_domain, "z2");
    assert!(matches!(
        cloud.zone_by_provider_id("fake://x").await,
        Err(CloudError::NotFound { .. })
    ));
    assert!(matches!(
        cloud.zone_by_node_name("x").await,
        Err(CloudError::NotFound { .. })
    ));
    assert!(matches!(
        cloud.zone_by_provider_id("x").await,
        Err(CloudError::InvalidInput { .. })
    ));
    ok(cloud.set_instance_state("n", FakeInstanceState::Terminated));
    assert!(matches!(
        cloud.zone_by_node_name("n").await,
        Err(CloudError::NotFound { .. })
    ));

    assert_eq!(ok(cloud.list_clusters().await), ["one", "two"]);
    assert_eq!(ok(cloud.master("two").await), "10.1.1.1");
    assert!(matches!(
        cloud.master("three").await,
        Err(CloudError::NotFound {
            kind: "cluster",
            ..
        })
    ));
}
