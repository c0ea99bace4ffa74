//! Property tests (issue 21) of provider-aws's parsers that users and the cloud feed, besides the Service
//! annotations (a unit-test module beside the private parser): AWS provider IDs, and the `--cloud-config`
//! ([`AwsConfig`], YAML or JSON) through the [`ProviderRegistry`]'s typed config and [`AwsConfig::validate`].
//! Properties: no panic, every rejection names the field, valid generated inputs are accepted as written.

use std::collections::BTreeMap;
use std::sync::Arc;

use cloudprovider_api::{
    CloudError, CloudProvider, PROVIDER_ID_FIELD, ProviderRegistry, RegistryError,
};
use proptest::prelude::*;
use provider_aws::{
    AwsConfig, CapacityConfig, NodeGroupConfig, RetryMode, instance_id_from_provider_id,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files: a failure is fixed and kept as a unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn instance_id() -> impl Strategy<Value = String> {
    "i-[0-9a-f]{8,17}"
}

proptest! {
    #![proptest_config(config(256))]

    /// `aws:///<zone>/<id>`, `aws:////<id>`, `aws://<id>` and a bare `<id>` give the instance ID.
    #[test]
    fn aws_provider_ids_give_the_instance(id in instance_id(), zone in "[a-z]{2}-[a-z]+-[0-9][a-z]") {
        for text in [format!("aws:///{zone}/{id}"), format!("aws:////{id}"), format!("aws://{id}"), id.clone()] {
            prop_assert_eq!(instance_id_from_provider_id(&text).ok(), Some(id.clone()), "{}", text);
        }
    }

    /// Any text: no panic; a rejection names `spec.providerID`; an accepted one is an `i-…` segment of the text.
    #[test]
    fn aws_provider_ids_any_text(text in prop_oneof![
        any::<String>(),
        "[a-z]{0,4}:/{0,4}[a-z0-9/-]{0,20}",
        "(aws|gce|fake)://(/[a-z0-9-]{0,12}){0,4}/i-[0-9a-z]{0,10}",
    ]) {
        match instance_id_from_provider_id(&text) {
            Ok(id) => {
                prop_assert!(id.starts_with("i-") && id.len() > 2, "{}", id);
                prop_assert!(text.ends_with(&id), "{text:?} -> {id:?}");
            }
            Err(CloudError::InvalidInput { field, message }) => {
                prop_assert_eq!(field, PROVIDER_ID_FIELD);
                prop_assert!(!message.is_empty());
            }
            Err(other) => prop_assert!(false, "{text:?}: {other:?}"),
        }
    }
}

/// The `aws` config parsed by the registry and validated, without building AWS clients (no network).
fn registry() -> ProviderRegistry {
    struct Parsed(String);
    impl CloudProvider for Parsed {
        fn provider_name(&self) -> &str {
            &self.0
        }
    }
    let mut r = ProviderRegistry::new();
    r.register("aws", |c: Option<AwsConfig>| async move {
        let c = c.unwrap_or_default();
        c.validate()
            .map_err(|e| e.into_cloud_error(std::time::Duration::ZERO))?;
        let json = serde_json::to_string(&c)
            .map_err(|e| CloudError::invalid_input("config", e.to_string()))?;
        Ok(Arc::new(Parsed(json)) as Arc<dyn CloudProvider>)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    r
}

thread_local! {
    static REGISTRY: ProviderRegistry = registry();
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
}

fn build(text: &str) -> Result<AwsConfig, RegistryError> {
    REGISTRY.with(|r| {
        RUNTIME.with(|rt| {
            rt.block_on(r.build_from_str("aws", Some(text))).map(|p| {
                let p = p.unwrap_or_else(|| panic!("no provider"));
                serde_json::from_str(p.provider_name()).unwrap_or_else(|e| panic!("{e}"))
            })
        })
    })
}

/// The field a rejection names: the parse error's path, or the field `validate` named.
fn rejected_field(r: Result<AwsConfig, RegistryError>) -> String {
    match r {
        Err(RegistryError::InvalidConfig { field, .. }) => field,
        Err(RegistryError::Factory {
            source: CloudError::InvalidInput { field, .. },
            ..
        }) => field,
        other => panic!("expected a rejection naming a field, got {other:?}"),
    }
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}"
}

fn node_group() -> impl Strategy<Value = NodeGroupConfig> {
    (
        (word(), any::<u32>(), any::<u32>(), word(), word()),
        proptest::option::of(word()),
        proptest::collection::vec(word(), 0..3),
        proptest::collection::btree_map(word(), any::<String>(), 0..3),
        proptest::option::of(any::<String>()),
        proptest::option::of("[0-9]{1,3}(m|Gi|Mi)?"),
    )
        .prop_map(
            |(
                (id, a, b, image_id, instance_type),
                subnet_id,
                security_group_ids,
                labels,
                user_data,
                cpu,
            )| {
                NodeGroupConfig {
                    id,
                    min_size: a.min(b),
                    max_size: a.max(b),
                    image_id,
                    instance_type,
                    subnet_id,
                    security_group_ids,
                    labels,
                    user_data,
                    capacity: CapacityConfig {
                        cpu,
                        ..CapacityConfig::default()
                    },
                    ..NodeGroupConfig::default()
                }
            },
        )
}

/// Valid configurations: ids unique, sizes ordered, a subnet for every group.
fn valid_config() -> impl Strategy<Value = AwsConfig> {
    (
        "[a-zA-Z0-9_.-]{1,30}",
        proptest::option::of(word()),
        proptest::option::of(1u32..=20),
        proptest::option::of(1u64..=3600),
        proptest::collection::vec(node_group(), 0..4),
        proptest::option::of(prop_oneof![
            Just(RetryMode::Standard),
            Just(RetryMode::Adaptive)
        ]),
        proptest::option::of(0u32..=1000),
    )
        .prop_map(
            |(cluster_id, region, max_attempts, throttle, groups, retry_mode, refill)| {
                let mut seen = std::collections::BTreeSet::new();
                let node_groups = groups
                    .into_iter()
                    .filter(|g| seen.insert(g.id.clone()))
                    .collect();
                AwsConfig {
                    region,
                    subnet_id: Some("subnet-0abc".to_owned()),
                    max_attempts,
                    throttle_retry_after_seconds: throttle,
                    retry_mode,
                    retry_quota_refill_per_second: refill,
                    node_groups,
                    ..AwsConfig::new(cluster_id)
                }
            },
        )
}

proptest! {
    #![proptest_config(config(128))]

    /// Valid configurations in JSON and YAML are accepted as written.
    #[test]
    fn aws_config_round_trips(cfg in valid_config()) {
        for text in [
            serde_json::to_string(&cfg).unwrap_or_else(|e| panic!("{e}")),
            serde_yaml_ng::to_string(&cfg).unwrap_or_else(|e| panic!("{e}")),
        ] {
            prop_assert_eq!(build(&text).ok(), Some(cfg.clone()), "{}", text);
        }
    }

    /// Breaking one thing (serde's or `validate`'s rules) is rejected naming exactly that field, without echoing
    /// a value of the wrong type.
    #[test]
    fn aws_config_breakage_names_the_field(cfg in valid_config(), which in 0usize..14, marker in "[a-z]{5}[0-9]{5}") {
        let mut doc = serde_json::to_value(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let has_group = !cfg.node_groups.is_empty();
        let g = cfg.node_groups.len().saturating_sub(1);
        let (pointer, value, field) = match which {
            0 => ("/clusterId".to_owned(), serde_json::json!(""), "clusterId".to_owned()),
            1 => ("/clusterId".to_owned(), serde_json::json!(format!("a/{marker}")), "clusterId".to_owned()),
            2 => ("/maxAttempts".to_owned(), serde_json::json!(0), "maxAttempts".to_owned()),
            3 => ("/maxAttempts".to_owned(), serde_json::json!(marker), "maxAttempts".to_owned()),
            4 => ("/throttleRetryAfterSeconds".to_owned(), serde_json::json!(-1), "throttleRetryAfterSeconds".to_owned()),
            5 if has_group => (format!("/nodeGroups/{g}/minSize"), serde_json::json!(u64::from(u32::MAX) + 1), format!("nodeGroups[{g}].minSize")),
            6 if has_group => (format!("/nodeGroups/{g}/maxSize"), serde_json::json!(marker), format!("nodeGroups[{g}].maxSize")),
            7 if has_group => (format!("/nodeGroups/{g}/imageId"), serde_json::json!(""), format!("nodeGroups[{g}].imageId")),
            8 if has_group && cfg.node_groups[g].max_size < u32::MAX => (
                format!("/nodeGroups/{g}/minSize"),
                serde_json::json!(cfg.node_groups[g].max_size + 1),
                format!("nodeGroups[{g}].minSize"),
            ),
            9 => ("/maxAttempts".to_owned(), serde_json::json!(21), "maxAttempts".to_owned()),
            10 => ("/throttleRetryAfterSeconds".to_owned(), serde_json::json!(0), "throttleRetryAfterSeconds".to_owned()),
            11 => ("/throttleRetryAfterSeconds".to_owned(), serde_json::json!(u64::MAX), "throttleRetryAfterSeconds".to_owned()),
            12 => ("/retryQuotaRefillPerSecond".to_owned(), serde_json::json!(1001), "retryQuotaRefillPerSecond".to_owned()),
            13 => ("/retryMode".to_owned(), serde_json::json!(marker), "retryMode".to_owned()),
            _ => ("/nodeGroups".to_owned(), serde_json::json!({ "id": marker }), "nodeGroups".to_owned()),
        };
        let (parent, key) = pointer.rsplit_once('/').unwrap_or_else(|| panic!("{pointer}"));
        let parent = if parent.is_empty() { Some(&mut doc) } else { doc.pointer_mut(parent) };
        if let Some(obj) = parent.and_then(|p| p.as_object_mut()) {
            obj.insert(key.to_owned(), value);
        }
        for text in [
            serde_json::to_string(&doc).unwrap_or_else(|e| panic!("{e}")),
            serde_yaml_ng::to_string(&doc).unwrap_or_else(|e| panic!("{e}")),
        ] {
            let r = build(&text);
            let shown = r.as_ref().err().map(ToString::to_string).unwrap_or_default();
            prop_assert_eq!(rejected_field(r), field.clone(), "{}", shown);
            // A wrong-typed value is not echoed (validate's own messages may quote what they check).
            if which == 3 || which == 6 || which == 13 {
                prop_assert!(!shown.contains(&marker), "value echoed: {}", shown);
            }
        }
    }

    /// Any text as the config: no panic; a rejection names a field.
    #[test]
    fn aws_config_any_text(text in prop_oneof![
        any::<String>(),
        "(clusterId|region|maxAttempts|nodeGroups|minSize|id|x)[:] ?([-0-9a-z{}\\[\\],.\"]{0,12}\n  ?){0,4}",
    ]) {
        let r = build(&text);
        if r.is_err() {
            prop_assert!(!rejected_field(r).is_empty());
        }
    }
}

/// Lists as long as a user may paste are parsed, and every group is validated.
#[test]
fn aws_config_long_lists() {
    let groups: Vec<String> = (0..2_000)
        .map(|i| format!("{{id: g{i}, maxSize: 1, imageId: ami-1, instanceType: t3.micro}}"))
        .collect();
    let text = format!(
        "clusterId: c\nsubnetId: subnet-1\nnodeGroups: [{}]",
        groups.join(",")
    );
    assert_eq!(build(&text).map(|c| c.node_groups.len()).ok(), Some(2_000));
    let dup = format!("{text}, {{id: g7, maxSize: 1, imageId: a, instanceType: t}}]")
        .replacen("}]", "}", 1);
    assert_eq!(rejected_field(build(&dup)), "nodeGroups[2000].id");
    let tags: BTreeMap<String, String> =
        (0..2_000).map(|i| (format!("k{i}"), "v".into())).collect();
    let mut cfg = AwsConfig::new("c");
    cfg.subnet_id = Some("s".into());
    cfg.node_groups = vec![NodeGroupConfig {
        id: "g".into(),
        max_size: 1,
        image_id: "a".into(),
        instance_type: "t".into(),
        tags,
        ..NodeGroupConfig::default()
    }];
    let json = serde_json::to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(build(&json).ok(), Some(cfg));
}
