//! Configuration: parsing through the registry, defaults, errors that name the field, the schema.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudprovider_api::{CloudProvider, ProviderRegistry, RegistryError};
use common::{node, ok};
use provider_fake::{
    Capability, FakeCloud, FakeConfig, FakeError, FakeInstanceState, Method, PROVIDER_NAME,
    Provisioning, register, register_with,
};

fn registry() -> ProviderRegistry {
    let mut r = ProviderRegistry::new();
    ok(register(&mut r));
    r
}

async fn build(yaml: &str) -> Result<Arc<dyn CloudProvider>, RegistryError> {
    registry()
        .build_from_str(PROVIDER_NAME, Some(yaml))
        .await
        .map(|p| p.unwrap_or_else(|| panic!("no provider built")))
}

fn config_error(r: Result<Arc<dyn CloudProvider>, RegistryError>) -> (String, String) {
    match r {
        Err(RegistryError::InvalidConfig { field, message, .. }) => (field, message),
        Err(other) => panic!("expected InvalidConfig, got {other}"),
        Ok(_) => panic!("expected InvalidConfig, got a provider"),
    }
}

/// The field and message of a config the provider's factory rejected (`FakeConfig::validate`).
fn factory_error(r: Result<Arc<dyn CloudProvider>, RegistryError>) -> (String, String) {
    match r {
        Err(RegistryError::Factory { source, .. }) => match source {
            cloudprovider_api::CloudError::InvalidInput { field, message } => (field, message),
            other => panic!("expected InvalidInput, got {other}"),
        },
        Err(other) => panic!("expected Factory, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[tokio::test]
async fn empty_and_absent_configs_use_defaults() {
    let p = ok(build("").await);
    assert_eq!(p.provider_name(), "fake");
    assert_eq!(p.capabilities().names().len(), 6);
    assert!(p.has_cluster_id());
    let none = ok(registry().build_from_str("fake", None).await);
    assert_eq!(
        none.map(|p| p.provider_name().to_owned()).as_deref(),
        Some("fake")
    );
    assert_eq!(
        FakeConfig::default().load_balancer_ip_pool.to_string(),
        "192.0.2.0/24"
    );
    assert_eq!(FakeConfig::default().call_log_capacity, 100_000);
}

#[tokio::test]
async fn a_full_config_is_applied() {
    let handle: Arc<Mutex<Option<FakeCloud>>> = Arc::default();
    let mut r = ProviderRegistry::new();
    let slot = Arc::clone(&handle);
    ok(register_with(&mut r, move |cloud| {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(cloud);
    }));
    let yaml = r#"
providerName: mycloud
zone: z1
region: r1
defaultInstanceType: m.tiny
hasClusterId: false
autoCreateInstances: true
loadBalancerIpPool: 203.0.113.0/28
clusters: [prod]
capabilities: { routes: false }
instances:
  - name: pre
    state: Stopped
    additionalLabels: { a: b }
nodeGroups:
  - id: workers
    minSize: 1
    maxSize: 4
    initialSize: 2
    provisionDelayMs: 1500
    provisioning: { mode: neverReady }
    template: { cpu: "4", memory: 8Gi, taints: [{ key: k, effect: NoSchedule }] }
  - id: broken
    maxSize: 1
    provisioning: { mode: fail, class: other, code: Boom }
latency: { globalMs: 0, perMethodMs: { zone: 0 } }
rateLimit: { perSecond: 100, burst: 10 }
callLogCapacity: 5
"#;
    let p = ok(r.build_from_str("fake", Some(yaml)).await).unwrap_or_else(|| panic!("none"));
    assert_eq!(p.provider_name(), "mycloud");
    assert!(!p.has_cluster_id());
    assert!(p.routes().is_none() && p.instances().is_some());

    let cloud = handle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| panic!("register_with did not hand out the cloud"));
    assert!(!cloud.capability_enabled(Capability::Routes));
    let pre = cloud.instance("pre").unwrap_or_else(|| panic!("no pre"));
    assert_eq!(pre.provider_id, "mycloud://pre");
    assert_eq!(
        (pre.state, pre.instance_type.as_str(), pre.zone.as_str()),
        (FakeInstanceState::Stopped, "m.tiny", "z1")
    );

    let instances = p.instances().unwrap_or_else(|| panic!("instances"));
    assert!(
        ok(instances.instance_exists(&node("auto")).await),
        "autoCreateInstances"
    );
    let lbs = p.load_balancers().unwrap_or_else(|| panic!("lbs"));
    let status = ok(lbs
        .ensure_load_balancer("c", &common::service("s", "u"), &[])
        .await);
    assert_eq!(
        status.ingress.unwrap_or_default()[0].ip.as_deref(),
        Some("203.0.113.1")
    );

    let groups = p.node_groups().unwrap_or_else(|| panic!("node groups"));
    assert_eq!(ok(groups.target_size("workers").await), 2);
    let template = ok(groups.template_node("workers").await);
    assert_eq!(
        template.spec.and_then(|s| s.taints).map(|t| t.len()),
        Some(1)
    );
    assert_eq!(
        ok(p.clusters()
            .unwrap_or_else(|| panic!("clusters"))
            .list_clusters()
            .await),
        ["prod"]
    );
    ok(groups.increase_size("broken", 1).await);
    let failed = ok(groups.instances("broken").await);
    assert_eq!(
        failed[0].error.as_ref().map(|e| e.code.as_str()),
        Some("Boom")
    );
    assert!(cloud.calls().len() <= 5);
    assert!(cloud.count(Method::TargetSize) >= 1);
}

#[tokio::test]
async fn unknown_fields_are_named() {
    let (field, message) = config_error(build("zone: z1\nzoen: typo").await);
    assert_eq!(field, "zoen");
    assert!(message.contains("zoen"), "{message}");

    let (field, message) =
        config_error(build("nodeGroups:\n  - id: g\n    maxSize: 2\n    maxSzie: 3").await);
    assert_eq!(field, "nodeGroups[0].maxSzie");
    assert!(message.contains("unknown field"), "{message}");

    let (field, _) = config_error(
        build("nodeGroups: [{ id: g, maxSize: 1, provisioning: { mode: later } }]").await,
    );
    assert_eq!(field, "nodeGroups[0].provisioning.mode");
    let (_, message) = config_error(
        build("nodeGroups: [{ id: g, maxSize: 1, provisioning: { mode: fail, cod: X } }]").await,
    );
    assert!(message.contains("cod"), "{message}");

    let (field, message) = config_error(build("latency: { perMethodMs: { ensureLB: 5 } }").await);
    assert!(field.starts_with("latency.perMethodMs"), "{field}");
    // Not echoed (it could be a secret pasted into the wrong field); the valid names are listed.
    assert!(
        !message.contains("ensureLB") && message.contains("ensure_load_balancer"),
        "{message}"
    );

    let (field, _) = config_error(build("loadBalancerIpPool: 192.0.2.0").await);
    assert_eq!(field, "loadBalancerIpPool");
}

#[tokio::test]
async fn invalid_values_are_named() {
    let factory_field = |r| factory_error(r).0;
    assert_eq!(
        factory_field(build("providerName: 'a:b'").await),
        "providerName"
    );
    assert_eq!(
        factory_field(build("nodeGroups: [{ id: g, minSize: 3, maxSize: 1 }]").await),
        "nodeGroups[0].minSize"
    );
    assert_eq!(
        factory_field(build("rateLimit: { perSecond: 0 }").await),
        "rateLimit.perSecond"
    );
    assert_eq!(
        factory_field(build("instances: [{ name: a }, { name: a }]").await),
        "instances[1]"
    );
}

#[test]
fn from_config_validates() {
    let bad = FakeConfig {
        instance_address_pool: ok("10.0.0.0/8".parse()),
        node_groups: vec![provider_fake::NodeGroupSpec::new("", 0, 1)],
        ..FakeConfig::default()
    };
    assert!(matches!(
        FakeCloud::from_config(bad),
        Err(FakeError::InvalidConfig { ref field, .. }) if field == "nodeGroups[0].id"
    ));
    let parsed: FakeConfig = ok(serde_json::from_str(
        r#"{"nodeGroups":[{"id":"g","maxSize":1,"provisioning":{"mode":"neverReady"}}]}"#,
    ));
    assert_eq!(parsed.node_groups[0].provisioning, Provisioning::NeverReady);
    assert_eq!(parsed.node_groups[0].template.pods, "110");
    let round_trip: FakeConfig = ok(serde_json::from_value(ok(serde_json::to_value(&parsed))));
    assert_eq!(round_trip, parsed);
}

#[test]
fn schema_describes_the_config() {
    let schema = ok(registry().config_schema("fake"));
    let text = ok(serde_json::to_string(&schema));
    for key in [
        "loadBalancerIpPool",
        "autoCreateInstances",
        "nodeGroups",
        "provisionDelayMs",
        "perMethodMs",
    ] {
        assert!(text.contains(key), "schema lacks {key}");
    }
    assert!(matches!(
        register(&mut registry()),
        Err(RegistryError::DuplicateName(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn config_rate_limit_throttles() {
    let cloud = ok(FakeCloud::from_config(ok(serde_yaml_ng::from_str::<
        FakeConfig,
    >(
        "rateLimit: { perSecond: 1, burst: 1, retryAfterMs: 2500 }",
    ))));
    use cloudprovider_api::Zones;
    assert!(cloud.zone().await.is_ok());
    let err = cloud.zone().await.err();
    assert_eq!(
        err.and_then(|e| e.retry_after()),
        Some(Duration::from_millis(2500))
    );
}

/// Regression (issue 21, finding 3): `minSize: 4294967295` launched that many instances at load time (16 GB RSS in
/// two minutes). Every size is bounded, and the error names the field.
#[tokio::test]
async fn sizes_are_bounded_and_name_the_field() {
    for (yaml, field) in [
        (
            "nodeGroups: [{id: g, minSize: 4294967295, maxSize: 4294967295}]",
            "nodeGroups[0].maxSize",
        ),
        (
            "nodeGroups: [{id: g, maxSize: 4294967295, initialSize: 20000}]",
            "nodeGroups[0].maxSize",
        ),
        (
            "nodeGroups: [{id: g, maxSize: 10, provisionDelayMs: 18446744073709551615}]",
            "nodeGroups[0].provisionDelayMs",
        ),
        (
            "nodeGroups: [{id: a, minSize: 6000, maxSize: 6000}, {id: b, minSize: 6000, maxSize: 6000}]",
            "nodeGroups",
        ),
        (
            "latency: {globalMs: 18446744073709551615}",
            "latency.globalMs",
        ),
        ("callLogCapacity: 18446744073709551615", "callLogCapacity"),
    ] {
        let started = std::time::Instant::now();
        let (f, message) = factory_error(build(yaml).await);
        assert_eq!(f, field, "{yaml}: {message}");
        assert!(
            message.contains("at most") || message.contains("more than"),
            "{message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{yaml} took {:?}",
            started.elapsed()
        );
    }
    let many: String = (0..10_001)
        .map(|i| format!("{{name: n{i}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (f, _) = factory_error(build(&format!("instances: [{many}]")).await);
    assert_eq!(f, "instances");
    // At the bound it loads.
    ok(build("nodeGroups: [{id: g, minSize: 3, maxSize: 10000}]").await);
}

/// Regression (issue 21, finding 6): a template `cpu: lots` was accepted without a word.
#[tokio::test]
async fn template_quantities_are_parsed() {
    for (yaml, field) in [
        (
            "nodeGroups: [{id: g, maxSize: 1, template: {cpu: lots}}]",
            "nodeGroups[0].template.cpu",
        ),
        (
            "nodeGroups: [{id: g, maxSize: 1, template: {memory: 4Gb}}]",
            "nodeGroups[0].template.memory",
        ),
        (
            "nodeGroups: [{id: g, maxSize: 1, template: {pods: \"-1\"}}]",
            "nodeGroups[0].template.pods",
        ),
    ] {
        let (f, message) = factory_error(build(yaml).await);
        assert_eq!(f, field, "{yaml}: {message}");
        assert!(message.contains("quantity"), "{message}");
    }
    ok(build(
        "nodeGroups: [{id: g, maxSize: 1, template: {cpu: 500m, memory: 1.5Gi, pods: \"10\"}}]",
    )
    .await);
}
