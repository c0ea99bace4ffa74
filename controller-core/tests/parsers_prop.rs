//! Property tests (issue 21) of the parsers of `controller-core` that users feed: `--cluster-cidr`,
//! `--controllers`, NodePool specs, and (feature `app`) every flag with a number or a duration, through clap as the
//! binaries parse them. Properties: no input panics, every rejection names the flag or field, and valid generated
//! inputs are accepted with the value they denote.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use controller_core::cloud_node::{CloudNodeConfig, CloudNodeController};
use controller_core::manager::ControllerRegistry;
use controller_core::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use controller_core::node_pool::{NodePoolConfig, NodePoolController, NodePoolSpec};
use controller_core::route::{RouteConfig, RouteController, parse_cluster_cidrs};
use controller_core::service::{ServiceConfig, ServiceController};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::Taint;
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files: a failure is fixed and kept as a unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// --cluster-cidr

fn cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(a), p).unwrap_or_else(|e| panic!("{e}"))
        )),
        (any::<u128>(), 0u8..=128).prop_map(|(a, p)| IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(a), p).unwrap_or_else(|e| panic!("{e}"))
        )),
    ]
}

/// Separators between entries: commas with optional spaces, and empty entries (which are skipped).
fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(","), Just(", "), Just(" ,"), Just(",,"), Just(" , ")]
}

proptest! {
    #![proptest_config(config(256))]

    /// Valid CIDRs, IPv4 and IPv6, in any list form, are accepted with their host bits cleared, in order.
    #[test]
    fn cluster_cidr_valid_lists(cidrs in proptest::collection::vec((cidr(), separator()), 1..6), pad in any::<bool>()) {
        let mut flag = String::new();
        for (i, (c, sep)) in cidrs.iter().enumerate() {
            if i > 0 {
                flag.push_str(sep);
            }
            flag.push_str(&c.to_string());
        }
        if pad {
            flag = format!(" ,{flag}, ");
        }
        let parsed = parse_cluster_cidrs(&flag).unwrap_or_else(|e| panic!("{flag:?}: {e}"));
        let want: Vec<IpNet> = cidrs.iter().map(|(c, _)| c.trunc()).collect();
        prop_assert_eq!(parsed, want);
    }

    /// Any text: no panic; a rejection names `--cluster-cidr` and the offending entry.
    #[test]
    fn cluster_cidr_any_text(flag in prop_oneof![
        any::<String>(),
        "[0-9a-f.:/, ]{0,40}",
        "([0-9]{1,4}\\.){3}[0-9]{1,4}/[0-9]{1,3}(,[0-9:a-f]{0,20}/[0-9]{1,3})?",
    ]) {
        match parse_cluster_cidrs(&flag) {
            Ok(cidrs) => {
                prop_assert!(!cidrs.is_empty());
                // Each entry is a CIDR that prints and parses back.
                for c in cidrs {
                    prop_assert_eq!(c.to_string().parse::<IpNet>().ok(), Some(c));
                }
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(shown.starts_with("invalid --cluster-cidr "), "{}", shown);
                prop_assert!(flag.contains(e.value.trim()) || e.value == flag, "{:?} not in {:?}", e.value, flag);
            }
        }
    }

    /// Addresses without a prefix, prefixes out of range and empty lists are rejected naming the entry.
    #[test]
    fn cluster_cidr_invalid_entries(good in cidr(), addr in any::<u32>(), v6 in any::<u128>(), p4 in 33u16..1000, p6 in 129u16..1000) {
        let v4 = Ipv4Addr::from(addr);
        let v6 = Ipv6Addr::from(v6);
        for bad in [v4.to_string(), format!("{v4}/{p4}"), format!("{v6}/{p6}"), format!("{v4}/"), format!("{v6}/-1")] {
            let flag = format!("{good},{bad}");
            let e = parse_cluster_cidrs(&flag).err();
            prop_assert!(e.as_ref().is_some_and(|e| e.value == bad), "{flag:?}: {e:?}");
        }
        for empty in ["", " ", ",", " , ,"] {
            prop_assert!(parse_cluster_cidrs(empty).is_err_and(|e| e.to_string().contains("--cluster-cidr")));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// --controllers

/// The built-in controllers, as every binary registers them.
fn builtin_registry() -> ControllerRegistry {
    let mut r = ControllerRegistry::new();
    r.register(CloudNodeController::new(CloudNodeConfig::default()))
        .and_then(|r| r.register(NodeLifecycleController::new(NodeLifecycleConfig::default())))
        .and_then(|r| r.register(ServiceController::new(ServiceConfig::default())))
        .and_then(|r| r.register(RouteController::new(RouteConfig::new(Vec::new()))))
        .and_then(|r| r.register(NodePoolController::new(NodePoolConfig::default())))
        .unwrap_or_else(|e| panic!("{e}"));
    r
}

/// Every name and alias of the built-in controllers, with its canonical name.
fn known_names() -> Vec<(&'static str, &'static str)> {
    builtin_registry()
        .controllers()
        .flat_map(|c| {
            std::iter::once(c.name())
                .chain(c.aliases().iter().copied())
                .map(|n| (n, c.name()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One `--controllers` item: a known name or alias, enabled or disabled, `*`, or (when `unknown`) anything.
fn controller_item(unknown: bool) -> BoxedStrategy<String> {
    let names: Vec<String> = known_names()
        .into_iter()
        .map(|(n, _)| n.to_owned())
        .collect();
    let known = prop_oneof![
        4 => proptest::sample::select(names.clone()),
        3 => proptest::sample::select(names).prop_map(|n| format!("-{n}")),
        1 => Just("*".to_owned()),
        1 => Just(" ".to_owned()),
    ];
    if unknown {
        prop_oneof![
            3 => known,
            1 => "-?[a-z*-]{1,12}",
            1 => any::<String>().prop_map(|s| s.replace(',', "")),
        ]
        .boxed()
    } else {
        known.boxed()
    }
}

/// The first item (of the flag's comma-split, trimmed, non-empty items) that is not a known controller.
fn first_unknown(items: &[String]) -> Option<String> {
    let known = known_names();
    items
        .iter()
        .flat_map(|i| {
            i.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|i| i != "*")
        .map(|i| i.strip_prefix('-').map(str::to_owned).unwrap_or(i))
        .find(|name| !known.iter().any(|(k, _)| k == name))
}

proptest! {
    #![proptest_config(config(256))]

    /// Known names: accepted; an explicitly disabled controller never runs, an explicitly enabled one (not also
    /// disabled) runs, and without `*` only the named ones run.
    #[test]
    fn controllers_known_names(items in proptest::collection::vec(controller_item(false), 0..8)) {
        let registry = builtin_registry();
        let selection = registry.select(&items).unwrap_or_else(|e| panic!("{items:?}: {e}"));
        let canonical = |n: &str| known_names().into_iter().find(|(k, _)| *k == n).map(|(_, c)| c);
        let words: Vec<&str> = items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()).collect();
        let off: Vec<&str> = words.iter().filter_map(|w| w.strip_prefix('-')).filter_map(canonical).collect();
        let on: Vec<&str> = words.iter().filter(|w| !w.starts_with('-')).filter_map(|w| canonical(w)).collect();
        let star = words.is_empty() || words.contains(&"*");
        for name in selection.names() {
            prop_assert!(registry.names().contains(&name));
            prop_assert!(!off.contains(&name), "{} disabled but enabled: {:?}", name, items);
            prop_assert!(star || on.contains(&name), "{} not named but enabled: {:?}", name, items);
        }
        for name in on.iter().filter(|n| !off.contains(n)) {
            prop_assert!(selection.is_enabled(name), "{} named but not enabled: {:?}", name, items);
        }
    }

    /// Any items: no panic; a rejection is exactly the first unknown name, listing the known ones.
    #[test]
    fn controllers_unknown_names(items in proptest::collection::vec(controller_item(true), 0..6)) {
        match (builtin_registry().select(&items), first_unknown(&items)) {
            (Ok(_), None) => {}
            (Err(e), Some(name)) => {
                prop_assert_eq!(&e.name, &name);
                prop_assert!(e.to_string().starts_with(&format!("unknown controller {name:?}; known: cloud-node")), "{}", e);
            }
            (r, want) => prop_assert!(false, "{items:?}: {r:?}, expected unknown {want:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// NodePool specs

fn taint() -> impl Strategy<Value = Taint> {
    (
        prop_oneof![3 => "[a-z0-9./-]{1,30}", 1 => Just(String::new())],
        proptest::option::of("[a-z]{0,10}"),
        prop_oneof![
            3 => proptest::sample::select(vec!["NoSchedule", "PreferNoSchedule", "NoExecute"]).prop_map(str::to_owned),
            1 => any::<String>(),
        ],
    )
        .prop_map(|(key, value, effect)| Taint { key, value, effect, time_added: None })
}

fn node_pool_spec() -> impl Strategy<Value = NodePoolSpec> {
    (
        prop_oneof![4 => "[a-z0-9-]{1,20}", 1 => Just(String::new())],
        proptest::collection::btree_map(
            prop_oneof![5 => "[a-z0-9./-]{1,30}", 1 => Just(String::new())],
            prop_oneof![5 => "[a-z0-9-]{0,63}", 1 => "[a-z]{64,100}"],
            0..4,
        ),
        proptest::collection::vec(taint(), 0..4),
        (any::<u32>(), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(node_group, labels, taints, (a, b), (empty, launch, registration, init))| {
                let mut spec = NodePoolSpec::new(node_group, a.max(b));
                spec.min_nodes = if a % 4 == 0 { a.max(b) } else { a.min(b) };
                spec.labels = labels;
                spec.taints = taints;
                spec.empty_node_delay_seconds = empty;
                spec.launch_timeout_seconds = launch;
                spec.registration_timeout_seconds = registration;
                spec.initialization_timeout_seconds = init;
                spec
            },
        )
}

/// What `validate` should say: `None` for a valid spec, else the field of the first problem.
fn expected_problem(spec: &NodePoolSpec) -> Option<String> {
    if spec.node_group.is_empty() {
        return Some("spec.nodeGroup".into());
    }
    if spec.min_nodes > spec.max_nodes {
        return Some("spec.minNodes".into());
    }
    for (i, t) in spec.taints.iter().enumerate() {
        if t.key.is_empty() {
            return Some(format!("spec.taints[{i}].key"));
        }
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
            return Some(format!("spec.taints[{i}].effect"));
        }
    }
    spec.labels
        .iter()
        .find(|(k, v)| k.is_empty() || v.len() > 63)
        .map(|(k, _)| format!("spec.labels[{k:?}]"))
}

proptest! {
    #![proptest_config(config(256))]

    /// Generated specs: `validate` accepts exactly the valid ones and otherwise names the first bad field; the
    /// spec survives the JSON round trip the apiserver puts it through; every duration converts without overflow.
    #[test]
    fn node_pool_spec_validation(spec in node_pool_spec()) {
        match (spec.validate(), expected_problem(&spec)) {
            (Ok(()), None) => {}
            (Err(e), Some(field)) => {
                prop_assert_eq!(&e.field, &field);
                prop_assert!(e.to_string().starts_with(&format!("invalid {field}: ")), "{}", e);
            }
            (r, want) => prop_assert!(false, "{spec:?}: {r:?}, expected {want:?}"),
        }
        let json = serde_json::to_value(&spec).unwrap_or_else(|e| panic!("{e}"));
        let back: NodePoolSpec = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(&back, &spec);
        let durations = [spec.empty_node_delay(), spec.launch_timeout(), spec.registration_timeout(), spec.initialization_timeout()];
        let now = std::time::Instant::now();
        for d in durations {
            prop_assert!(now.checked_add(d).is_some());
        }
    }

    /// Any JSON document as a spec (what a user's `kubectl apply` of a hand-written object gives, if the schema let
    /// it through): no panic; a rejection names the field; an accepted spec validates or names its bad field.
    #[test]
    fn node_pool_spec_any_json(doc in json_object()) {
        let text = doc.to_string();
        match serde_json::from_str::<NodePoolSpec>(&text) {
            Ok(spec) => {
                if let Err(e) = spec.validate() {
                    prop_assert!(e.field.starts_with("spec."), "{}", e);
                }
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(
                    ["nodeGroup", "maxNodes", "minNodes", "labels", "taints", "Seconds", "key", "effect", "invalid type", "expected"]
                        .iter()
                        .any(|f| shown.contains(f)),
                    "{}", shown
                );
            }
        }
    }
}

/// JSON objects shaped like NodePool specs: the real keys with values of any type, nested.
fn json_object() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-zA-Z0-9 ]{0,10}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map(key(), value, 0..8)
        .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect()))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "nodeGroup", "maxNodes", "minNodes", "labels", "taints", "emptyNodeDelaySeconds",
            "launchTimeoutSeconds", "registrationTimeoutSeconds", "initializationTimeoutSeconds",
            "key", "value", "effect",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{1,8}",
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// Number and duration flags, through clap (feature `app`)

#[cfg(feature = "app")]
mod flags {
    use std::time::Duration;

    use cloudprovider_api::ProviderRegistry;
    use controller_core::app::{
        self, App, AppError, MAX_KUBE_API_BURST, MAX_KUBE_API_QPS, MAX_PERIOD, MIN_KUBE_API_QPS,
        Options,
    };
    use lease_election::MAX_TIMING;
    use proptest::prelude::*;

    use super::{cidr, config, controller_item, first_unknown};

    const COMPONENT: &str = "cloud-controller-manager";

    /// The flags as a binary parses them, then every check the app makes before connecting.
    fn parse(args: &[String]) -> Result<Options, String> {
        let argv = ["cloud-controller-manager", "--cloud-provider=fake"]
            .into_iter()
            .map(str::to_owned)
            .chain(args.iter().cloned());
        let options = app::parse_options(COMPONENT, argv).map_err(|e| e.to_string())?;
        options.check().map_err(|e| e.to_string())?;
        options.lease_config(COMPONENT).map_err(|e| e.to_string())?;
        Ok(options)
    }

    /// An integer flag as clap reads it: an `i64` (so `-0` and `+5` too) within the type's range.
    fn clap_int<T: TryFrom<i64>>(text: &str) -> Result<T, ()> {
        text.parse::<i64>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or(())
    }

    fn unit() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "ns", "us", "ms", "s", "sec", "m", "min", "h", "hr", "d", "day", "w", "week", "M",
            "month", "y", "years", "", "parsecs",
        ])
    }

    /// Duration texts: Go/humantime style, huge, combined, negative, fractional, garbage.
    fn duration_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => (0u64..100_000, unit()).prop_map(|(n, u)| format!("{n}{u}")),
            2 => (any::<u64>(), unit()).prop_map(|(n, u)| format!("{n}{u}")),
            1 => (0u64..1000, unit(), 0u64..1000, unit()).prop_map(|(a, u, b, v)| format!("{a}{u} {b}{v}")),
            1 => (0u64..100, unit()).prop_map(|(n, u)| format!("-{n}{u}")),
            1 => (0u64..100, 0u64..1000, unit()).prop_map(|(a, b, u)| format!("{a}.{b}{u}")),
            1 => "[0-9]{20,40}(s|ns|h|y)",
            1 => Just("0".to_owned()),
            1 => any::<String>(),
        ]
    }

    /// `(flag, smallest accepted value)` of every duration flag checked against [`MAX_PERIOD`].
    const PERIOD_FLAGS: [(&str, Duration); 6] = [
        ("--node-status-update-frequency", Duration::from_nanos(1)),
        ("--node-monitor-period", Duration::from_nanos(1)),
        ("--route-reconciliation-period", Duration::from_nanos(1)),
        ("--authentication-token-webhook-cache-ttl", Duration::ZERO),
        (
            "--authorization-webhook-cache-authorized-ttl",
            Duration::ZERO,
        ),
        (
            "--authorization-webhook-cache-unauthorized-ttl",
            Duration::ZERO,
        ),
    ];

    const LEADER_FLAGS: [&str; 3] = [
        "--leader-elect-lease-duration",
        "--leader-elect-renew-deadline",
        "--leader-elect-retry-period",
    ];

    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => any::<i64>().prop_map(|n| n.to_string()),
            2 => (0u64..2_000_000).prop_map(|n| n.to_string()),
            2 => any::<f32>().prop_map(|f| f.to_string()),
            1 => any::<f32>().prop_map(|f| format!("{f:e}")),
            1 => any::<f64>().prop_map(|f| format!("{f:e}")),
            1 => (-30i32..40).prop_map(|e| format!("1e{e}")),
            1 => proptest::sample::select(vec!["NaN", "inf", "-inf", "infinity", "-0", "+5", "0x10", "1_000", ""]).prop_map(str::to_owned),
            1 => "[0-9]{20,60}",
            1 => any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(config(256))]

        /// Every period and TTL flag: accepted exactly when humantime reads it and it lies in `min..=MAX_PERIOD`,
        /// with that value; otherwise the error names the flag (clap's for syntax, ours `<flag>: …` for bounds).
        #[test]
        fn period_flags(which in 0usize..PERIOD_FLAGS.len(), text in duration_text()) {
            let (flag, min) = PERIOD_FLAGS[which];
            let parsed = humantime::parse_duration(&text);
            match (parse(&[format!("{flag}={text}")]), parsed) {
                (Ok(o), Ok(d)) => {
                    prop_assert!(min <= d && d <= MAX_PERIOD, "{flag}={text:?} accepted as {d:?}");
                    let got = [
                        o.node_status_update_frequency,
                        o.node_monitor_period,
                        o.route_reconciliation_period,
                        o.serving.authentication_token_webhook_cache_ttl,
                        o.serving.authorization_webhook_cache_authorized_ttl,
                        o.serving.authorization_webhook_cache_unauthorized_ttl,
                    ][which];
                    prop_assert_eq!(got, d);
                    prop_assert!(std::time::Instant::now().checked_add(got).is_some());
                }
                (Err(e), Ok(d)) => {
                    prop_assert!(d < min || d > MAX_PERIOD, "{flag}={text:?} ({d:?}) refused: {e}");
                    prop_assert!(e.starts_with(&format!("{flag}: ")), "{}", e);
                }
                (Err(e), Err(_)) => prop_assert!(e.contains(flag), "{flag}={text:?}: {e}"),
                (Ok(_), Err(h)) => prop_assert!(false, "{flag}={text:?} accepted though humantime says {h}"),
            }
        }

        /// Leader-election durations (alone or all three): accepted only within 1 s..=MAX_TIMING and in order;
        /// otherwise the error names a `--leader-elect-*` flag: the one at fault when one is.
        #[test]
        fn leader_elect_flags(texts in proptest::collection::vec(duration_text(), 3), only in proptest::option::of(0usize..3)) {
            let args: Vec<String> = LEADER_FLAGS
                .iter()
                .zip(&texts)
                .enumerate()
                .filter(|(i, _)| only.is_none_or(|o| o == *i))
                .map(|(_, (f, t))| format!("{f}={t}"))
                .collect();
            match parse(&args) {
                Ok(o) => {
                    let l = o.lease_config(COMPONENT).unwrap_or_else(|e| panic!("{e}"));
                    for d in [l.lease_duration, l.renew_deadline, l.retry_period] {
                        prop_assert!(Duration::from_secs(1) <= d && d <= MAX_TIMING, "{args:?} accepted: {l:?}");
                    }
                    prop_assert!(l.lease_duration > l.renew_deadline && l.renew_deadline > l.retry_period);
                }
                Err(e) => {
                    prop_assert!(e.contains("--leader-elect-"), "{:?}: {}", args, e);
                    // A single flag that is out of range on its own is the one named first.
                    let (flag, text) = args[0].split_once('=').unwrap_or_else(|| panic!("{args:?}"));
                    if let (1, Ok(d)) = (args.len(), humantime::parse_duration(text))
                        && (d < Duration::from_secs(1) || d > MAX_TIMING)
                    {
                        prop_assert!(e.starts_with(&format!("{flag}: ")), "{:?}: {}", args, e);
                    }
                }
            }
        }

        /// `--kube-api-qps` (f32) and `--kube-api-burst` (u32): accepted exactly within their bounds (so the rate
        /// limiter is built without a panic), otherwise named.
        #[test]
        fn rate_flags(qps in number_text(), burst in number_text(), which in 0usize..3) {
            let mut args = Vec::new();
            if which != 1 {
                args.push(format!("--kube-api-qps={qps}"));
            }
            if which != 0 {
                args.push(format!("--kube-api-burst={burst}"));
            }
            let q = if which == 1 { Ok(20.0) } else { qps.parse::<f32>().map_err(|_| ()) };
            let b = if which == 0 { Ok(30) } else { clap_int::<u32>(&burst) };
            match (parse(&args), q, b) {
                (Ok(o), Ok(q), Ok(b)) => {
                    prop_assert!(q.is_finite() && (MIN_KUBE_API_QPS..=MAX_KUBE_API_QPS).contains(&q), "{args:?}");
                    prop_assert!((1..=MAX_KUBE_API_BURST).contains(&b), "{args:?}");
                    prop_assert_eq!((o.kube_api_qps, o.kube_api_burst), (q, b));
                    prop_assert!(app::RateLimitLayer::new(q, b).is_ok());
                }
                (Err(e), Err(()), _) => prop_assert!(e.contains("--kube-api-qps"), "{:?}: {}", args, e),
                (Err(e), Ok(_), Err(())) => prop_assert!(e.contains("--kube-api-burst"), "{:?}: {}", args, e),
                (Err(e), Ok(q), Ok(b)) => {
                    let qps_bad = !(q.is_finite() && (MIN_KUBE_API_QPS..=MAX_KUBE_API_QPS).contains(&q));
                    let flag = if qps_bad { "--kube-api-qps" } else { "--kube-api-burst" };
                    prop_assert!(qps_bad || !(1..=MAX_KUBE_API_BURST).contains(&b), "{:?} refused: {}", args, e);
                    prop_assert!(e.starts_with(&format!("{flag}: ")), "{:?}: {}", args, e);
                }
                (Ok(_), q, b) => prop_assert!(false, "{args:?} accepted though {q:?} {b:?}"),
            }
        }

        /// The u16 flags: accepted when they parse as u16 (the worker counts from 1), otherwise named.
        #[test]
        fn count_flags(which in 0usize..4, text in number_text()) {
            let (flag, min) = [
                ("--concurrent-service-syncs", 1),
                ("--concurrent-node-syncs", 1),
                ("--concurrent-node-status-updates", 0),
                ("--secure-port", 0),
            ][which];
            match (parse(&[format!("{flag}={text}")]), clap_int::<u16>(&text)) {
                (Ok(o), Ok(n)) => {
                    prop_assert!(n >= min);
                    let got = [o.concurrent_service_syncs, o.concurrent_node_syncs, o.concurrent_node_status_updates, o.serving.secure_port.unwrap_or(u16::MAX)][which];
                    prop_assert_eq!(got, n);
                }
                (Err(e), Ok(n)) => {
                    prop_assert!(n < min, "{flag}={text:?} refused: {e}");
                    prop_assert!(e.starts_with(&format!("{flag}: ")), "{}", e);
                }
                (Err(e), Err(_)) => prop_assert!(e.contains(flag), "{flag}={text:?}: {e}"),
                (Ok(_), Err(_)) => prop_assert!(false, "{flag}={text:?} accepted"),
            }
        }

        /// `--cluster-cidr` as the binaries read it (routes on): valid lists give the route controller those CIDRs;
        /// anything else fails naming the flag once, with the offending entry.
        #[test]
        fn cluster_cidr_flag(good in proptest::collection::vec(cidr(), 1..4), bad in proptest::option::of(prop_oneof!["[0-9a-z.:/ ]{0,20}", any::<String>()])) {
            let mut entries: Vec<String> = good.iter().map(ToString::to_string).collect();
            if let Some(bad) = &bad {
                entries.insert(entries.len() / 2, bad.replace(',', ""));
            }
            let flag = entries.join(",");
            let args = ["--allocate-node-cidrs".to_owned(), format!("--cluster-cidr={flag}")];
            match parse(&args) {
                Ok(o) => {
                    let route = o.route_config().ok().and_then(Result::ok).unwrap_or_else(|| panic!("{flag:?}: no routes"));
                    prop_assert_eq!(route.cluster_cidrs.len(), good.len() + usize::from(bad.is_some_and(|b| !b.trim().is_empty())));
                    for c in &good {
                        prop_assert!(route.cluster_cidrs.contains(&c.trunc()));
                    }
                }
                Err(e) => {
                    prop_assert!(bad.is_some(), "{flag:?} refused: {e}");
                    prop_assert!(e.starts_with("--cluster-cidr: "), "{}", e);
                    prop_assert_eq!(e.matches("--cluster-cidr").count(), 1, "{}", e);
                }
            }
        }

        /// Several number and duration flags at once: never a panic, and a rejection names one of the flags given.
        #[test]
        fn flag_combinations(values in proptest::collection::vec((0usize..14, prop_oneof![duration_text(), number_text()]), 1..6)) {
            let flags: Vec<&str> = PERIOD_FLAGS
                .iter()
                .map(|(f, _)| *f)
                .chain(LEADER_FLAGS)
                .chain(["--kube-api-qps", "--kube-api-burst", "--concurrent-service-syncs", "--concurrent-node-syncs", "--secure-port"])
                .collect();
            let args: Vec<String> = values.iter().map(|(i, v)| format!("{}={v}", flags[i % flags.len()])).collect();
            if let Err(e) = parse(&args) {
                prop_assert!(
                    args.iter().any(|a| a.split_once('=').is_some_and(|(f, _)| e.contains(f))),
                    "{:?}: {}", args, e
                );
            }
        }
    }

    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
    }

    proptest! {
        #![proptest_config(config(96))]

        /// `--controllers` through the app (clap's comma splitting, then the registry of every built-in
        /// controller), before anything connects: an unknown name fails naming the flag and the name, once;
        /// known names pass on to the next step (here: building the provider, which this binary does not have).
        #[test]
        fn controllers_flag_through_the_app(items in proptest::collection::vec(controller_item(true), 1..5)) {
            let joined = items.join(",");
            let argv = [
                "ccm".to_owned(),
                "--cloud-provider=none-here".to_owned(),
                "--secure-port=0".to_owned(),
                format!("--controllers={joined}"),
            ];
            let options = app::parse_options(COMPONENT, argv).unwrap_or_else(|e| panic!("{joined:?}: {e}"));
            let started = RUNTIME.with(|rt| rt.block_on(App::cloud_controller_manager(ProviderRegistry::new()).start(options)));
            let e = started.err().unwrap_or_else(|| panic!("{joined:?}: started without a provider"));
            let shown = e.to_string();
            match first_unknown(&items) {
                Some(name) => {
                    prop_assert!(matches!(e, AppError::Flag { flag: "--controllers", .. }), "{}", shown);
                    let want = format!("--controllers: unknown controller {name:?}; known: ");
                    prop_assert!(shown.starts_with(&want), "{} (want {})", shown, want);
                    prop_assert_eq!(shown.matches("--controllers").count(), 1, "{}", shown);
                }
                None => prop_assert!(shown.contains("unknown cloud provider \"none-here\""), "{joined:?}: {shown}"),
            }
        }
    }
}
