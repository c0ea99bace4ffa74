//! Property tests (issue 21) of provider-fake's `--cloud-config` through the [`ProviderRegistry`]: sizes, delays,
//! capacities and list lengths anywhere in their types' ranges (the size bombs of finding 3). Properties: building
//! never panics and stays fast (nothing is allocated per unit of a size before it is checked), an accepted
//! configuration is within every bound, and a rejection names the field.

use std::time::{Duration, Instant};

use cloudprovider_api::{CloudError, ProviderRegistry, RegistryError, parse_quantity};
use proptest::prelude::*;
use provider_fake::{
    MAX_CALL_LOG_CAPACITY, MAX_DELAY_MS, MAX_INITIAL_INSTANCES, MAX_NODE_GROUP_SIZE,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files: a failure is fixed and kept as a unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

thread_local! {
    static REGISTRY: ProviderRegistry = {
        let mut r = ProviderRegistry::new();
        provider_fake::register(&mut r).unwrap_or_else(|e| panic!("{e}"));
        r
    };
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Builds `fake` from `text`: `Ok(())`, or the field the rejection names.
fn build(text: &str) -> Result<(), String> {
    REGISTRY.with(|r| {
        RUNTIME.with(
            |rt| match rt.block_on(r.build_from_str("fake", Some(text))) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => panic!("no provider"),
                Err(RegistryError::InvalidConfig { field, .. })
                | Err(RegistryError::Factory {
                    source: CloudError::InvalidInput { field, .. },
                    ..
                }) => Err(field),
                Err(other) => panic!("{text}: rejection naming no field: {other}"),
            },
        )
    })
}

/// Sizes biased to the edges of the bounds and of `u32`.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..20,
        1 => (u64::from(MAX_NODE_GROUP_SIZE) - 2)..=(u64::from(MAX_NODE_GROUP_SIZE) + 2),
        1 => Just(u64::from(u32::MAX)),
        1 => Just(u64::from(u32::MAX) + 1),
        1 => any::<u32>().prop_map(u64::from),
    ]
}

fn delay() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..10, 1 => (MAX_DELAY_MS - 1)..=(MAX_DELAY_MS + 1), 1 => any::<u64>()]
}

fn quantity() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9]{1,4}(m|Mi|Gi|k)?",
        1 => proptest::sample::select(vec!["lots", "-1", "1e400", "", "2.5", "99999999999999999999999999999999999999999"]).prop_map(str::to_owned),
        1 => "[0-9a-zA-Z.+-]{0,8}",
    ]
}

proptest! {
    #![proptest_config(config(64))]

    /// Every size, delay and capacity of the config: accepted only within its bound, else named; never slow.
    #[test]
    fn fake_config_bounds(
        groups in proptest::collection::vec((size(), size(), proptest::option::of(size()), delay(), quantity()), 0..4),
        global_ms in delay(),
        call_log in prop_oneof![4 => 0u64..1000, 1 => Just(MAX_CALL_LOG_CAPACITY as u64 + 1), 1 => any::<u64>()],
        per_second in prop_oneof![
            6 => Just("1".to_owned()),
            1 => proptest::sample::select(vec!["0", "-5", ".nan", ".inf", "1e-300", "1e400"]).prop_map(str::to_owned),
            1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        ],
    ) {
        let mut text = format!("latency: {{globalMs: {global_ms}}}\ncallLogCapacity: {call_log}\nrateLimit: {{perSecond: {per_second}}}\nnodeGroups:\n");
        for (i, (min, max, initial, delay, cpu)) in groups.iter().enumerate() {
            let initial = initial.map(|n| format!(", initialSize: {n}")).unwrap_or_default();
            text.push_str(&format!(
                "  - {{id: g{i}, minSize: {min}, maxSize: {max}{initial}, provisionDelayMs: {delay}, template: {{cpu: {cpu:?}}}}}\n"
            ));
        }
        let start = Instant::now();
        let result = build(&text);
        prop_assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        let fits = |n: u64| n <= u64::from(MAX_NODE_GROUP_SIZE);
        match result {
            Ok(()) => {
                prop_assert!(global_ms <= MAX_DELAY_MS);
                prop_assert!(call_log <= MAX_CALL_LOG_CAPACITY as u64);
                let mut total = 0;
                for (min, max, initial, delay, cpu) in &groups {
                    let initial = initial.unwrap_or(*min);
                    prop_assert!(min <= max && (min..=max).contains(&&initial) && fits(*max), "{}", text);
                    prop_assert!(*delay <= MAX_DELAY_MS);
                    prop_assert!(parse_quantity(cpu).is_some_and(|q| q >= 0), "cpu {:?} accepted", cpu);
                    total += initial;
                }
                prop_assert!(total <= MAX_INITIAL_INSTANCES, "{}", text);
            }
            Err(field) => {
                let known = ["latency.globalMs", "callLogCapacity", "rateLimit.perSecond", "rateLimit", "nodeGroups"];
                prop_assert!(
                    known.iter().any(|k| field.starts_with(k)),
                    "{} rejected naming {:?}", text, field
                );
            }
        }
    }
}
