//! Instance choice of the node-pool controller against a real kube-apiserver, kube-scheduler, kwok and
//! kube-controller-manager's Deployment controllers, with provider-fake's node groups as the offering:
//!
//! | group     | CPU | memory | zone   | price/h |
//! |-----------|-----|--------|--------|---------|
//! | `small-a` | 2   | 8Gi    | zone-a | 0.10    |
//! | `large-a` | 8   | 32Gi   | zone-a | 0.30    |
//! | `large-b` | 8   | 32Gi   | zone-b | 0.30    |
//!
//! Cheapest fit, `limits`, zone spread, pod anti-affinity, `weight` between pools and `startupTaints`.

mod common;
mod node_pool_env;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{events_about, eventually};
use controller_core::node_pool::{INITIALIZED_LABEL, POOL_LABEL};
use k8s_openapi::api::core::v1::{
    Affinity, Node, PodAffinityTerm, PodAntiAffinity, Taint, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};

use node_pool_env::offering::*;
use node_pool_env::{WAIT, phase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cheapest_shapes_that_fit_are_launched_within_limits() {
    // Bound by name, not `..`: the machine kubelets stop when dropped.
    let Cluster { env, _kubelets, .. } = cluster().await;
    let mut limited = spec(&["small-a", "large-a", "large-b"]);
    limited.limits.insert("cpu".into(), Quantity("10".into()));
    create_pool(&env, "choice", limited).await;

    // Eight 1-CPU pods: one 8-CPU node ($0.30), not four 2-CPU ones ($0.40).
    deploy(
        &env,
        workload("web", 8, "1", (POOL_LABEL, "choice"), |_| {}),
    )
    .await;
    eventually(WAIT, "8 replicas Running", || running(&env, "web", 8)).await;
    assert_eq!(launched(&env), counts(&[("large-a", 1)]));

    // Four more: the limit of 10 CPUs leaves room for one 2-CPU node, two pods stay pending.
    scale(&env, "web", 12).await;
    eventually(WAIT, "10 replicas Running", || running(&env, "web", 10)).await;
    assert_eq!(launched(&env), counts(&[("large-a", 1), ("small-a", 1)]));
    let note = eventually(WAIT, "NotTriggerScaleUp naming the limits", || async {
        events_about(&env, "choice")
            .await
            .into_iter()
            .map(|(_, _, note)| note)
            .find(|n| n.contains("spec.limits"))
    })
    .await;
    assert!(note.starts_with("2 pending pod(s)"), "{note}");
    let status = eventually(WAIT, "status resources", || async {
        pool(&env, "choice")
            .await
            .status
            .filter(|s| s.ready_nodes == 2)
    })
    .await;
    assert_eq!(
        status.resources.get("cpu").map(|q| q.0.as_str()),
        Some("10"),
        "{status:#?}"
    );
    let groups: BTreeSet<Option<&str>> = status
        .nodes
        .iter()
        .map(|n| n.node_group.as_deref())
        .collect();
    assert_eq!(groups, BTreeSet::from([Some("large-a"), Some("small-a")]));
    // Still nothing more after a while: the limit holds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(launched(&env), counts(&[("large-a", 1), ("small-a", 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_spread_and_pod_anti_affinity_shape_the_launches() {
    // Bound by name, not `..`: the machine kubelets stop when dropped.
    let Cluster { env, _kubelets, .. } = cluster().await;
    create_pool(&env, "zones", spec(&["small-a", "large-a", "large-b"])).await;

    // Four pods spread over zones with a skew of 1: a node in each zone, the cheapest each zone has.
    let spread = workload("spread", 4, "100m", (POOL_LABEL, "zones"), |s| {
        s.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            label_selector: Some(app_selector("spread")),
            max_skew: 1,
            topology_key: ZONE.into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            ..Default::default()
        }]);
    });
    deploy(&env, spread).await;
    eventually(WAIT, "4 spread replicas Running", || {
        running(&env, "spread", 4)
    })
    .await;
    assert_eq!(launched(&env), counts(&[("large-b", 1), ("small-a", 1)]));

    // Three pods that must not share a node: the two nodes take one each, one more (the cheapest) for the third.
    let solo = workload("solo", 3, "100m", (POOL_LABEL, "zones"), |s| {
        s.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(app_selector("solo")),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    });
    deploy(&env, solo).await;
    let pods = eventually(WAIT, "3 solo replicas Running", || running(&env, "solo", 3)).await;
    let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 3, "one per node: {nodes:?}");
    assert_eq!(launched(&env), counts(&[("large-b", 1), ("small-a", 2)]));
    let mut zones = BTreeSet::new();
    for name in &nodes {
        zones.insert(node_zone(&env, name).await);
    }
    assert_eq!(
        zones,
        BTreeSet::from(["zone-a".to_owned(), "zone-b".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heavier_pool_takes_shared_pods_and_startup_taints_hold_them() {
    // Bound by name, not `..`: the machine kubelets stop when dropped.
    let Cluster { env, _kubelets, .. } = cluster().await;
    let mut light = spec(&["large-a"]);
    light.weight = Some(10);
    create_pool(&env, "light", light).await;
    let mut heavy = spec(&["small-a"]);
    heavy.weight = Some(50);
    heavy.startup_taints = vec![Taint {
        key: "example.com/agent-not-ready".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }];
    create_pool(&env, "heavy", heavy).await;
    for name in ["light", "heavy"] {
        eventually(WAIT, "both pools looked at", || async {
            pool(&env, name)
                .await
                .status
                .filter(|s| !s.conditions.is_empty())
        })
        .await;
    }

    // Pods either pool could take (both label their nodes tier=shared): the heavier pool launches.
    deploy(
        &env,
        workload("shared", 2, "500m", ("tier", "shared"), |_| {}),
    )
    .await;
    let node = eventually(WAIT, "a Node of the heavy pool", || async {
        let nodes = env.nodes().list(&ListParams::default()).await.ok()?;
        nodes
            .items
            .into_iter()
            .find(|n| n.labels().get(POOL_LABEL).map(String::as_str) == Some("heavy"))
    })
    .await;
    let taints = |n: &Node| -> Vec<String> {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|t| t.iter().map(|t| t.key.clone()).collect())
            .unwrap_or_default()
    };
    assert!(
        taints(&node).contains(&"example.com/agent-not-ready".to_owned()),
        "{:?}",
        taints(&node)
    );
    // The startup taint keeps the pods off, but the pool counts the node: no second launch, not initialized.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(launched(&env), counts(&[("small-a", 1)]));
    let pods = pods_of(&env, "shared").await;
    assert!(pods.iter().all(|p| phase(p) == "Pending"), "{pods:#?}");
    let nodes = env.nodes();
    let now = nodes
        .get(&node.name_any())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!now.labels().contains_key(INITIALIZED_LABEL));

    // The agent removes its taint: the pods run, the node is initialized, the taint does not come back.
    let kept: Vec<Taint> = now
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != "example.com/agent-not-ready")
        .collect();
    let patch = serde_json::json!({ "spec": { "taints": kept } });
    nodes
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eventually(WAIT, "2 shared replicas Running", || {
        running(&env, "shared", 2)
    })
    .await;
    let initialized = eventually(WAIT, "the initialized label", || async {
        let n = nodes.get_opt(&node.name_any()).await.ok()??;
        n.labels().contains_key(INITIALIZED_LABEL).then_some(n)
    })
    .await;
    assert!(
        !taints(&initialized).contains(&"example.com/agent-not-ready".to_owned()),
        "{:?}",
        taints(&initialized)
    );
    assert_eq!(launched(&env), counts(&[("small-a", 1)]));
}
