//! Registration and configuration: the cluster ID is required, bad fields are named, the schema is published.

use cloudprovider_api::{ProviderRegistry, RegistryError};
use test_support::Moto;

fn registry() -> ProviderRegistry {
    let mut r = ProviderRegistry::new();
    provider_aws::register(&mut r).unwrap_or_else(|e| panic!("{e}"));
    r
}

#[tokio::test]
async fn refuses_to_start_without_a_cluster_id() {
    let r = registry();
    for config in [
        None,
        Some(""),
        Some("region: us-east-1"),
        Some("clusterId: ''\nregion: us-east-1"),
    ] {
        let err = r
            .build_from_str("aws", config)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("clusterId"), "{config:?}: {err}");
    }
}

#[tokio::test]
async fn bad_fields_are_named() {
    let r = registry();
    let err = r
        .build_from_str("aws", Some("clusterId: c\nregoin: x"))
        .await
        .err();
    assert!(
        matches!(&err, Some(RegistryError::InvalidConfig { message, .. }) if message.contains("regoin")),
        "{err:?}"
    );
    let err = r
        .build_from_str(
            "aws",
            Some("clusterId: c\nregion: r\nnodeGroups: [{id: g, minSize: 3, maxSize: 1, imageId: ami-1, instanceType: t3.small, subnetId: s}]"),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("nodeGroups[0].minSize"), "{err}");
    let schema = serde_json::to_string(&r.config_schema("aws").unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_default();
    for field in [
        "clusterId",
        "endpointUrl",
        "routeTableId",
        "nodeGroups",
        "userData",
    ] {
        assert!(schema.contains(field), "{field} missing from the schema");
    }
}

#[tokio::test]
async fn builds_from_a_config_file_and_talks_to_the_endpoint() {
    let moto = Moto::start().await.unwrap_or_else(|e| panic!("{e}"));
    let r = registry();
    // Building makes no AWS call (credentials are resolved lazily by the standard chain).
    let config = format!(
        "clusterId: c1\nregion: us-east-1\nendpointUrl: {}\n",
        moto.endpoint_url()
    );
    let provider = r
        .build_from_str("aws", Some(&config))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no provider"));
    assert_eq!(provider.provider_name(), "aws");
    assert!(provider.has_cluster_id());
    let caps = provider.capabilities();
    assert!(caps.instances && caps.load_balancers && caps.routes);
    assert!(!caps.node_groups, "no node groups configured");
}
