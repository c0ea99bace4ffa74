use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, PodAffinityTerm, PodAntiAffinity, PodSpec,
    ResourceRequirements, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::*;

const ZONE: &str = "topology.kubernetes.io/zone";

fn res(cpu: &str, memory: &str, pods: &str) -> Resources {
    Resources::from_quantities(Some(&BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpu.into())),
        ("memory".to_owned(), Quantity(memory.into())),
        ("pods".to_owned(), Quantity(pods.into())),
    ])))
}

fn shape(cpu: &str, zone: &str) -> NodeShape {
    let allocatable = res(cpu, "64Gi", "110");
    NodeShape {
        labels: BTreeMap::from([(ZONE.to_owned(), zone.to_owned())]),
        capacity: allocatable.clone(),
        allocatable,
        ..NodeShape::default()
    }
}

fn offer(shape: &NodeShape, price: Option<f64>, headroom: u32) -> Offer<'_> {
    Offer {
        shape,
        price,
        headroom,
    }
}

fn pod(cpu: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pods(cpus: &[&str]) -> Vec<Pod> {
    cpus.iter().map(|c| pod(c)).collect()
}

fn refs(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter().collect()
}

fn budget(max_new: u32) -> Budget {
    Budget {
        max_new,
        limits: None,
    }
}

fn web() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_owned(), "web".to_owned())])),
        ..Default::default()
    }
}

fn apart(mut p: Pod, key: &str) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        spec.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(web()),
                    topology_key: key.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    p
}

fn spread(mut p: Pod, key: &str, max_skew: i32) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            label_selector: Some(web()),
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            ..Default::default()
        }]);
    }
    p
}

#[test]
fn twenty_half_cpu_pods_need_five_two_cpu_nodes() {
    let s = shape("2", "a");
    let p = pods(&["500m"; 20]);
    let plan = plan(&refs(&p), &[], &[offer(&s, None, 100)], &budget(100));
    assert_eq!(
        (plan.new_nodes, plan.on_new, plan.unplaced_total()),
        (5, 20, 0)
    );
    assert_eq!(plan.launches, BTreeMap::from([(0, 5)]));
}

#[test]
fn in_flight_capacity_is_used_before_new_nodes() {
    let s = shape("2", "a");
    let launching = |i: usize| Existing {
        offer: 0,
        hostname: format!("n{i}"),
        free: s.allocatable.clone(),
        pods: Vec::new(),
    };
    let existing = [launching(0), launching(1)];
    let offers = [offer(&s, None, 100)];
    let p = pods(&["500m"; 8]);
    let plan1 = plan(&refs(&p), &existing, &offers, &budget(100));
    assert_eq!((plan1.new_nodes, plan1.on_existing), (0, 8));
    assert_eq!(plan1.existing_used, vec![true, true]);
    let p = pods(&["500m"; 10]);
    assert_eq!(
        plan(&refs(&p), &existing, &offers, &budget(100)).new_nodes,
        1
    );
}

#[test]
fn first_fit_decreasing_packs_mixed_sizes() {
    let s = shape("2", "a");
    // 1.5 + 0.5, 1.5 + 0.5, 1 + 1: three nodes (first-fit in arrival order would need four).
    let p = pods(&["500m", "1", "1500m", "500m", "1", "1500m"]);
    let plan = plan(&refs(&p), &[], &[offer(&s, None, 100)], &budget(100));
    assert_eq!(plan.new_nodes, 3);
}

#[test]
fn max_nodes_and_oversized_pods_leave_pods_unplaced() {
    let s = shape("2", "a");
    let offers = [offer(&s, None, 100)];
    let p = pods(&["1"; 6]);
    let at_max = plan(&refs(&p), &[], &offers, &budget(2));
    assert_eq!((at_max.new_nodes, at_max.on_new), (2, 4));
    assert_eq!(at_max.unplaced, BTreeMap::from([(Blocked::MaxNodes, 2)]));
    let p = pods(&["3"]);
    let too_big = plan(&refs(&p), &[], &offers, &budget(5));
    assert_eq!((too_big.new_nodes, too_big.unplaced_total()), (0, 1));
    // The pods resource bounds a node too.
    let mut tiny = shape("100", "a");
    tiny.allocatable = res("100", "100Gi", "3");
    let p = pods(&["1"; 7]);
    assert_eq!(
        plan(&refs(&p), &[], &[offer(&tiny, None, 100)], &budget(10)).new_nodes,
        3
    );
}

#[test]
fn the_cheapest_offer_that_fits_each_node_is_launched() {
    let (small, large) = (shape("2", "a"), shape("8", "a"));
    let offers = [
        offer(&small, Some(0.10), 100),
        offer(&large, Some(0.30), 100),
    ];
    // Eight 1-CPU pods fill one large node ($0.30) rather than four small ones ($0.40).
    let p = pods(&["1"; 8]);
    let eight = plan(&refs(&p), &[], &offers, &budget(100));
    assert_eq!(eight.launches, BTreeMap::from([(1, 1)]));
    assert!((eight.price - 0.30).abs() < 1e-9, "{}", eight.price);
    // Nine: the large one, and a small one for the last pod.
    let p = pods(&["1"; 9]);
    assert_eq!(
        plan(&refs(&p), &[], &offers, &budget(100)).launches,
        BTreeMap::from([(0, 1), (1, 1)])
    );
    // One pod: the small one.
    let p = pods(&["1"]);
    assert_eq!(
        plan(&refs(&p), &[], &offers, &budget(100)).launches,
        BTreeMap::from([(0, 1)])
    );
    // Without prices the smallest shape that fits is the choice.
    let unpriced = [offer(&large, None, 100), offer(&small, None, 100)];
    assert_eq!(
        plan(&refs(&p), &[], &unpriced, &budget(100)).launches,
        BTreeMap::from([(1, 1)])
    );
}

#[test]
fn limits_and_group_headroom_bound_the_launches() {
    let (small, large) = (shape("2", "a"), shape("8", "a"));
    let offers = [
        offer(&small, Some(0.10), 100),
        offer(&large, Some(0.30), 100),
    ];
    let p = pods(&["1"; 12]);
    let limited = Budget {
        max_new: 100,
        limits: Some(Resources::from_quantities(Some(&BTreeMap::from([(
            "cpu".to_owned(),
            Quantity("10".into()),
        )])))),
    };
    // 8 CPUs on a large node, 2 on a small one, and then the limit of 10 CPUs is reached.
    let plan1 = plan(&refs(&p), &[], &offers, &limited);
    assert_eq!(plan1.launches, BTreeMap::from([(0, 1), (1, 1)]));
    assert_eq!(plan1.unplaced, BTreeMap::from([(Blocked::Limits, 2)]));
    // One large instance left in its group: small ones for the rest.
    let scarce = [offer(&small, Some(0.10), 100), offer(&large, Some(0.30), 1)];
    assert_eq!(
        plan(&refs(&p), &[], &scarce, &budget(100)).launches,
        BTreeMap::from([(0, 2), (1, 1)])
    );
}

#[test]
fn node_selection_picks_the_offers_a_pod_allows() {
    let (a, b) = (shape("4", "a"), shape("4", "b"));
    let offers = [offer(&a, Some(0.10), 100), offer(&b, Some(0.20), 100)];
    let mut p = pod("1");
    if let Some(spec) = p.spec.as_mut() {
        spec.node_selector = Some(BTreeMap::from([(ZONE.to_owned(), "b".to_owned())]));
    }
    let ps = [p, pod("1")];
    let plan = plan(&refs(&ps), &[], &offers, &budget(100));
    // Both on one node of zone b: the unconstrained pod joins it rather than opening a cheaper node.
    assert_eq!(plan.launches, BTreeMap::from([(1, 1)]));
}

#[test]
fn anti_affinity_on_the_hostname_gives_each_pod_its_own_node() {
    let s = shape("8", "a");
    let offers = [offer(&s, None, 100)];
    let existing_pod = pod("100m");
    let existing = [Existing {
        offer: 0,
        hostname: "n0".into(),
        free: res("7", "60Gi", "100"),
        pods: vec![&existing_pod],
    }];
    let p: Vec<Pod> = (0..3).map(|_| apart(pod("100m"), HOSTNAME)).collect();
    let plan1 = plan(&refs(&p), &existing, &offers, &budget(100));
    assert_eq!((plan1.new_nodes, plan1.on_existing), (3, 0));
    // Without the term they share the existing node.
    let p = pods(&["100m"; 3]);
    assert_eq!(
        plan(&refs(&p), &existing, &offers, &budget(100)).on_existing,
        3
    );
    // A placed pod's term keeps a plain pod off its node too.
    let p = [apart(pod("1"), HOSTNAME), pod("100m")];
    assert_eq!(plan(&refs(&p), &[], &offers, &budget(100)).new_nodes, 2);
}

#[test]
fn anti_affinity_on_the_zone_uses_one_zone_per_pod() {
    let (a, b) = (shape("8", "a"), shape("8", "b"));
    let offers = [offer(&a, Some(0.1), 100), offer(&b, Some(0.1), 100)];
    let p: Vec<Pod> = (0..3).map(|_| apart(pod("100m"), ZONE)).collect();
    let plan = plan(&refs(&p), &[], &offers, &budget(100));
    assert_eq!(plan.launches, BTreeMap::from([(0, 1), (1, 1)]));
    assert_eq!(plan.unplaced, BTreeMap::from([(Blocked::Topology, 1)]));
}

#[test]
fn zone_spread_alternates_zones() {
    let (a, b) = (shape("8", "a"), shape("8", "b"));
    let offers = [offer(&a, Some(0.1), 100), offer(&b, Some(0.1), 100)];
    let p: Vec<Pod> = (0..4).map(|_| spread(pod("1"), ZONE, 1)).collect();
    let plan1 = plan(&refs(&p), &[], &offers, &budget(100));
    assert_eq!(plan1.launches, BTreeMap::from([(0, 1), (1, 1)]));
    // Zone a already holds two of them: both new pods go to zone b.
    let existing_pods = pods(&["1", "1"]);
    let existing = [Existing {
        offer: 0,
        hostname: "n0".into(),
        free: res("6", "60Gi", "100"),
        pods: existing_pods.iter().collect(),
    }];
    let p: Vec<Pod> = (0..2).map(|_| spread(pod("1"), ZONE, 1)).collect();
    let plan2 = plan(&refs(&p), &existing, &offers, &budget(100));
    assert_eq!(
        (plan2.on_existing, plan2.launches.clone()),
        (0, BTreeMap::from([(1, 1)]))
    );
}

#[test]
fn hostname_spread_with_a_skew_of_one_spreads_over_nodes() {
    let s = shape("8", "a");
    let p: Vec<Pod> = (0..4).map(|_| spread(pod("100m"), HOSTNAME, 1)).collect();
    let plan1 = plan(&refs(&p), &[], &[offer(&s, None, 100)], &budget(100));
    assert_eq!(plan1.new_nodes, 4);
    // At maxNodes 2 the skew is counted over the two nodes: two pods each.
    let plan2 = plan(&refs(&p), &[], &[offer(&s, None, 100)], &budget(2));
    assert_eq!((plan2.new_nodes, plan2.on_new), (2, 4));
}

#[test]
fn a_host_port_is_taken_once_per_node() {
    let s = shape("8", "a");
    let with_port = || {
        let mut p = pod("100m");
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].ports = Some(vec![ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..Default::default()
            }]);
        }
        p
    };
    let p = [with_port(), with_port(), with_port(), pod("100m")];
    let plan = plan(&refs(&p), &[], &[offer(&s, None, 100)], &budget(100));
    assert_eq!((plan.new_nodes, plan.on_new), (3, 4));
}
