//! Property tests (issue 21) of the Service annotation parser ([`plan`]): any annotations and ports, no panic;
//! every rejection is `InvalidInput` naming the annotation (or `spec.*` field) that is wrong, the first one in the
//! order `plan` reads them; valid values are accepted with the value they denote.

use std::collections::BTreeMap;

use cloudprovider_api::CloudError;
use cloudprovider_api::conformance::load_balancer_service;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use proptest::prelude::*;

use super::annotations::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files: a failure is fixed and kept as a unit test.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The annotations in the order `plan` reads them (after the load-balancer type).
const ORDER: [&str; 13] = [
    ANNOTATION_LOAD_BALANCER_TYPE,
    ANNOTATION_INTERNAL,
    ANNOTATION_SUBNETS,
    ANNOTATION_HC_PROTOCOL,
    ANNOTATION_HC_PORT,
    ANNOTATION_HC_PATH,
    ANNOTATION_HC_HEALTHY,
    ANNOTATION_HC_UNHEALTHY,
    ANNOTATION_HC_TIMEOUT,
    ANNOTATION_HC_INTERVAL,
    ANNOTATION_TARGET_NODE_LABELS,
    ANNOTATION_CROSS_ZONE,
    ANNOTATION_ADDITIONAL_TAGS,
];

/// The Service; without a type annotation it asks for an NLB (these properties are the NLB's; a missing type
/// means a Classic ELB, whose parser `classic::spec` tests).
fn service(annotations: &BTreeMap<String, String>) -> Service {
    let mut svc = load_balancer_service("web", "11111111-2222-4333-8444-555555555555");
    let mut annotations = annotations.clone();
    annotations
        .entry(ANNOTATION_LOAD_BALANCER_TYPE.to_owned())
        .or_insert_with(|| "nlb".to_owned());
    svc.metadata.annotations = Some(annotations);
    svc
}

/// Values for `key`: the documented valid forms (in odd case and with spaces) mixed with near misses and noise.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let noise = prop_oneof![any::<String>(), "[ -~]{0,12}"];
    let padded = |s: BoxedStrategy<String>| {
        (s, "[ \t]{0,2}", "[ \t]{0,2}")
            .prop_map(|(s, a, b)| format!("{a}{s}{b}"))
            .boxed()
    };
    let range = |lo: i64, hi: i64| {
        prop_oneof![
            4 => (lo..=hi).prop_map(|n| n.to_string()),
            2 => (lo - 5..=hi + 5).prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => (lo..=hi).prop_map(|n| format!("{n}.0")),
            1 => "[0-9]{11,30}",
        ]
        .boxed()
    };
    let boolean = prop_oneof![
        proptest::sample::select(vec!["true", "false", "TRUE", "False", "yes", "1", ""])
            .prop_map(str::to_owned),
        "[tTfF][a-zA-Z]{0,5}",
    ]
    .boxed();
    let list = "[a-z0-9=, -]{0,30}".boxed();
    let strategy = match key {
        ANNOTATION_LOAD_BALANCER_TYPE => {
            proptest::sample::select(vec!["nlb", "", "nlb-ip", "external", "clb", "NLB", "elb"])
                .prop_map(str::to_owned)
                .boxed()
        }
        ANNOTATION_INTERNAL => prop_oneof![
            boolean.clone(),
            Just("0.0.0.0/0".to_owned()),
            Just("10.0.0.0/8".to_owned())
        ]
        .boxed(),
        ANNOTATION_CROSS_ZONE => boolean,
        ANNOTATION_SUBNETS | ANNOTATION_TARGET_NODE_LABELS | ANNOTATION_ADDITIONAL_TAGS => list,
        ANNOTATION_HC_PROTOCOL => {
            proptest::sample::select(vec!["TCP", "http", "Https", "HTTP2", "udp", "ICMP", ""])
                .prop_map(str::to_owned)
                .boxed()
        }
        ANNOTATION_HC_PORT => prop_oneof![
            Just("traffic-port".to_owned()),
            Just("Traffic-Port".to_owned()),
            range(0, 65_535),
            range(65_530, 70_000),
            Just("+80".to_owned()),
        ]
        .boxed(),
        ANNOTATION_HC_PATH => {
            prop_oneof!["/[ -~]{0,20}", "[a-z][ -~]{0,10}", Just(String::new())].boxed()
        }
        ANNOTATION_HC_HEALTHY | ANNOTATION_HC_UNHEALTHY => range(2, 10),
        ANNOTATION_HC_TIMEOUT => range(2, 120),
        ANNOTATION_HC_INTERVAL => range(5, 300),
        _ => unreachable!("{key}"),
    };
    prop_oneof![8 => padded(strategy), 1 => noise].boxed()
}

/// A whole number in `lo..=hi`, as the parser reads it.
fn in_range(v: &str, lo: i32, hi: i32) -> bool {
    v.parse::<i32>().is_ok_and(|n| (lo..=hi).contains(&n))
}

fn key_values_ok(v: &str) -> bool {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|item| {
            !item
                .split_once('=')
                .map_or(item, |(k, _)| k)
                .trim()
                .is_empty()
        })
}

/// Whether `value` (already trimmed, as the parser sees it) is valid for `key`, from the documented syntax.
fn valid(key: &str, value: &str) -> bool {
    let is_bool = value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false");
    match key {
        ANNOTATION_LOAD_BALANCER_TYPE => ["", "nlb", "nlb-ip", "external"].contains(&value),
        ANNOTATION_INTERNAL => value.is_empty() || is_bool || value == "0.0.0.0/0",
        ANNOTATION_CROSS_ZONE => is_bool,
        ANNOTATION_SUBNETS => value.split(',').any(|s| !s.trim().is_empty()),
        ANNOTATION_TARGET_NODE_LABELS | ANNOTATION_ADDITIONAL_TAGS => key_values_ok(value),
        ANNOTATION_HC_PROTOCOL => {
            ["TCP", "HTTP", "HTTPS"].contains(&value.to_ascii_uppercase().as_str())
        }
        ANNOTATION_HC_PORT => value == "traffic-port" || value.parse::<u16>().is_ok_and(|p| p > 0),
        ANNOTATION_HC_PATH => value.starts_with('/'),
        ANNOTATION_HC_HEALTHY | ANNOTATION_HC_UNHEALTHY => in_range(value, 2, 10),
        ANNOTATION_HC_TIMEOUT => in_range(value, 2, 120),
        ANNOTATION_HC_INTERVAL => in_range(value, 5, 300),
        _ => true,
    }
}

/// A random subset of the annotations with values for each, plus unrelated annotations.
fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let per_key: Vec<_> = ORDER
        .iter()
        .map(|k| proptest::option::weighted(0.5, value_for(k)).prop_map(move |v| (*k, v)))
        .collect();
    (
        per_key,
        proptest::collection::btree_map("[a-z./-]{1,20}", any::<String>(), 0..3),
    )
        .prop_map(|(pairs, other)| {
            let mut map: BTreeMap<String, String> = other;
            for (k, v) in pairs {
                if let Some(v) = v {
                    map.insert(k.to_owned(), v);
                }
            }
            map
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// Any mix of annotations: rejected exactly when one is invalid, naming the first invalid one in reading order;
    /// `nlb-ip`/`external` hand the Service to another controller; otherwise the spec carries the values.
    #[test]
    fn annotations_first_invalid_is_named(annotations in annotations()) {
        let get = |k: &str| annotations.get(k).map(|v| v.trim());
        let elsewhere = get(ANNOTATION_LOAD_BALANCER_TYPE).is_some_and(|t| t == "nlb-ip" || t == "external");
        // A Service for another controller is handed over before anything else is read.
        let first_invalid = ORDER
            .iter()
            .find(|k| get(k).is_some_and(|v| !valid(k, v)))
            .filter(|_| !elsewhere);
        if get(ANNOTATION_LOAD_BALANCER_TYPE).is_some_and(str::is_empty) {
            // An empty type is a Classic ELB, with rules of its own: only no panic is asked here.
            let _ = plan(&service(&annotations));
            return Ok(());
        }
        match plan(&service(&annotations)) {
            Err(CloudError::InvalidInput { field, message }) => {
                prop_assert_eq!(Some(field.as_str()), first_invalid.copied(), "{}", message);
                prop_assert!(!message.is_empty());
            }
            Err(other) => prop_assert!(false, "not InvalidInput: {other:?}"),
            Ok(Plan::Elsewhere(reason)) => {
                prop_assert!(elsewhere, "{:?}", annotations);
                prop_assert!(reason.contains(ANNOTATION_LOAD_BALANCER_TYPE));
            }
            Ok(Plan::Classic(..)) => prop_assert!(false, "a Classic ELB for an NLB Service: {:?}", annotations),
            Ok(Plan::Nlb(spec)) => {
                prop_assert_eq!(first_invalid, None, "accepted: {:?}", annotations);
                prop_assert!(!elsewhere);
                let h = &spec.health;
                let num = |k: &str, default: i32| get(k).map_or(default, |v| v.parse().unwrap_or_else(|e| panic!("{v}: {e}")));
                prop_assert_eq!(h.healthy, num(ANNOTATION_HC_HEALTHY, 3));
                prop_assert_eq!(h.unhealthy, num(ANNOTATION_HC_UNHEALTHY, 3));
                prop_assert_eq!(h.interval, num(ANNOTATION_HC_INTERVAL, 10));
                prop_assert_eq!(h.timeout, get(ANNOTATION_HC_TIMEOUT).map(|_| num(ANNOTATION_HC_TIMEOUT, 0)));
                prop_assert_eq!(&h.protocol, &get(ANNOTATION_HC_PROTOCOL).map_or("TCP".to_owned(), str::to_ascii_uppercase));
                prop_assert_eq!(h.path.is_some(), h.protocol != "TCP");
                if let Some(p) = get(ANNOTATION_HC_PORT).filter(|p| *p != "traffic-port") {
                    prop_assert_eq!(h.port.parse::<u16>().ok(), p.parse::<u16>().ok());
                }
                let internal = get(ANNOTATION_INTERNAL).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "0.0.0.0/0");
                prop_assert_eq!(spec.internal, internal);
                prop_assert_eq!(spec.cross_zone, get(ANNOTATION_CROSS_ZONE).map(|v| v.eq_ignore_ascii_case("true")));
                if let Some(subnets) = &spec.subnets {
                    prop_assert!(!subnets.is_empty() && subnets.iter().all(|s| !s.is_empty() && s.trim() == s));
                }
                for map in [&spec.extra_tags, &spec.target_node_labels] {
                    prop_assert!(map.keys().all(|k| !k.is_empty() && k.trim() == k));
                }
            }
        }
    }

    /// Key-value lists parse to exactly their pairs, whatever the spacing and empty items.
    #[test]
    fn key_value_lists_round_trip(pairs in proptest::collection::btree_map("[a-z0-9./_-]{1,20}", "[a-z0-9./_-]{0,20}", 0..8), sep in "[ ]{0,2},[ ]{0,2}(,)?") {
        let text = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(&sep);
        for key in [ANNOTATION_ADDITIONAL_TAGS, ANNOTATION_TARGET_NODE_LABELS] {
            let annotations = BTreeMap::from([(key.to_owned(), text.clone())]);
            let Ok(Plan::Nlb(spec)) = plan(&service(&annotations)) else {
                return Err(TestCaseError::fail(format!("{key}={text:?} refused")));
            };
            let got = if key == ANNOTATION_ADDITIONAL_TAGS { &spec.extra_tags } else { &spec.target_node_labels };
            prop_assert_eq!(got, &pairs);
        }
    }

    /// Ports: any protocols and node ports; rejected naming `spec.ports[i].protocol` (the first unsupported one) or
    /// `spec.ports` (none with a node port, or TCP mixed with UDP); else one listener per port with a node port.
    #[test]
    fn ports_are_checked(ports in proptest::collection::vec((
        any::<i32>(),
        proptest::option::of(prop_oneof![3 => 1i32..=65_535, 1 => any::<i32>()]),
        proptest::option::of(proptest::sample::select(vec!["TCP", "UDP", "SCTP", "tcp", ""])),
    ), 0..5), affinity in proptest::option::of(proptest::sample::select(vec!["None", "ClientIP", ""]))) {
        let mut svc = service(&BTreeMap::new());
        if let Some(spec) = svc.spec.as_mut() {
            spec.session_affinity = affinity.map(str::to_owned);
            spec.ports = Some(ports.iter().map(|(port, node_port, protocol)| ServicePort {
                port: *port,
                node_port: *node_port,
                protocol: protocol.map(str::to_owned),
                ..ServicePort::default()
            }).collect());
        }
        let balanced: Vec<(usize, &str)> = ports
            .iter()
            .enumerate()
            .filter(|(_, (_, np, _))| np.is_some_and(|n| n > 0))
            .map(|(i, (_, _, proto))| (i, proto.unwrap_or("TCP")))
            .collect();
        let want_err = if affinity.is_some_and(|a| a != "None") {
            Some("spec.sessionAffinity".to_owned())
        } else if let Some((i, _)) = balanced.iter().find(|(_, p)| !["TCP", "UDP"].contains(p)) {
            Some(format!("spec.ports[{i}].protocol"))
        } else if balanced.is_empty() || balanced.iter().any(|(_, p)| *p != balanced[0].1) {
            Some("spec.ports".to_owned())
        } else {
            None
        };
        match (plan(&svc), want_err) {
            (Err(CloudError::InvalidInput { field, .. }), Some(want)) => prop_assert_eq!(field, want),
            (Ok(Plan::Nlb(spec)), None) => {
                prop_assert_eq!(spec.ports.len(), balanced.len());
                prop_assert!(spec.ports.iter().all(|p| p.node_port > 0));
            }
            (other, want) => prop_assert!(false, "{other:?}, expected error {want:?}"),
        }
    }

    /// Target group names fit AWS's 32 characters of `[A-Za-z0-9-]` for any namespace, name and cluster, start
    /// with the Service's prefix, and change with the health check.
    #[test]
    fn target_group_names_fit(namespace in any::<String>(), name in any::<String>(), cluster in any::<String>(), interval in 5i32..=300) {
        let mut svc = service(&BTreeMap::new());
        svc.metadata.namespace = Some(namespace.clone());
        svc.metadata.name = Some(name.clone());
        let Ok(Plan::Nlb(mut spec)) = plan(&svc) else {
            return Err(TestCaseError::fail("default Service refused"));
        };
        let port = spec.ports[0].clone();
        let tg = spec.target_group_name(&cluster, &port);
        prop_assert!(tg.len() <= 32, "{}", tg);
        prop_assert!(tg.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{}", tg);
        prop_assert!(tg.starts_with(&target_group_prefix(&namespace, &name)));
        let before = tg;
        spec.health.interval = if interval == spec.health.interval { interval + 1 } else { interval };
        prop_assert_ne!(spec.target_group_name(&cluster, &port), before);
    }
}
