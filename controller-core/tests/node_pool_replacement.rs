//! Disruption of a pool's nodes against a real kube-apiserver, kube-scheduler, kwok and kube-controller-manager's
//! Deployment controllers, on the priced offering of `node_pool_env::offering` (`small-a` 2 CPU $0.10, `large-a`
//! 8 CPU $0.30, `large-b` 8 CPU $0.30): drift and expiry replace nodes, replacements first, never more at once
//! than the budget; an underused node is replaced by a cheaper one.

mod common;
mod node_pool_env;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Env, events_about, eventually};
use controller_core::node_pool::{DISRUPTED_TAINT, DisruptionBudget, NodePool, POOL_LABEL};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use node_pool_env::WAIT;
use node_pool_env::offering::*;

/// Nodes of the pool being disrupted now: tainted `disrupted` or being deleted.
async fn disrupted_nodes(env: &Env) -> Option<BTreeSet<String>> {
    let nodes = env.nodes().list(&ListParams::default()).await.ok()?;
    Some(
        nodes
            .items
            .into_iter()
            .filter(|n: &Node| {
                n.metadata.deletion_timestamp.is_some()
                    || n.spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|t| t.iter().any(|t| t.key == DISRUPTED_TAINT))
            })
            .map(|n| n.name_any())
            .collect(),
    )
}

async fn reasons(env: &Env, pool: &str) -> Vec<String> {
    events_about(env, pool)
        .await
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifted_nodes_are_replaced_one_at_a_time_without_losing_capacity() {
    let Cluster {
        env,
        metrics,
        _kubelets,
    } = cluster().await;
    let mut pool = spec(&["large-a"]);
    pool.disruption_budgets = vec![DisruptionBudget::new("1")];
    create_pool(&env, "drift", pool).await;
    // Three 5-CPU replicas: one 8-CPU node each.
    deploy(&env, workload("big", 3, "5", (POOL_LABEL, "drift"), |_| {})).await;
    eventually(WAIT, "3 replicas Running", || running(&env, "big", 3)).await;
    assert_eq!(launched(&env), counts(&[("large-a", 3)]));

    // The pool moves to zone b's group: every large-a node has drifted.
    let pools: Api<NodePool> = Api::all(env.client());
    let patch = serde_json::json!({ "spec": { "nodeGroups": ["large-b"] } });
    pools
        .patch("drift", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let (mut most_disrupted, mut fewest_running) = (0, usize::MAX);
    loop {
        let disrupted = disrupted_nodes(&env).await.unwrap_or_default();
        most_disrupted = most_disrupted.max(disrupted.len());
        let up = pods_of(&env, "big")
            .await
            .iter()
            .filter(|p| node_pool_env::phase(p) == "Running")
            .count();
        fewest_running = fewest_running.min(up);
        if launched(&env) == counts(&[("large-b", 3)]) && up == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "not replaced in time: {:?}, {up} Running, events {:?}",
            launched(&env),
            reasons(&env, "drift").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(most_disrupted, 1, "a budget of 1 allows one node at a time");
    assert!(
        fewest_running >= 2,
        "replacements come first: at most the moving pod is down (fewest Running {fewest_running})"
    );
    assert_eq!(metrics.decision_count("drift", "drifted"), 3);
    let seen = reasons(&env, "drift").await;
    for reason in [
        "DisruptionLaunching",
        "DisruptionWaitingReadiness",
        "DisruptionTerminating",
        "ScaleDown",
    ] {
        assert!(seen.iter().any(|r| r == reason), "{reason} in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_node_is_replaced_and_an_underused_one_gets_a_cheaper_shape() {
    let Cluster {
        env,
        metrics,
        _kubelets,
    } = cluster().await;
    // Expiry: a node older than 20 s is replaced by a new one, the pod moves to it. (The pool takes zone b's group
    // so the second pool below owns small-a and large-a.)
    let mut expiring = spec(&["large-b"]);
    expiring.expire_after = Some("20s".into());
    create_pool(&env, "expiring", expiring).await;
    deploy(
        &env,
        workload("short", 1, "1", (POOL_LABEL, "expiring"), |_| {}),
    )
    .await;
    let first = eventually(WAIT, "the pod Running", || running(&env, "short", 1)).await;
    let first_node = node_of(&first[0]);
    let moved = eventually(WAIT, "the pod Running on another node", || async {
        let pods = running(&env, "short", 1).await?;
        (node_of(&pods[0]) != first_node).then(|| node_of(&pods[0]))
    })
    .await;
    eventually(WAIT, "the expired Node gone", || async {
        env.nodes()
            .get_opt(&first_node)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_ne!(moved, first_node);
    assert!(metrics.decision_count("expiring", "expired") >= 1);
    scale(&env, "short", 0).await;

    // Replacement by a cheaper shape: eight 1-CPU replicas on one 8-CPU node ($0.30); scaled to one, a 2-CPU node
    // ($0.10) holds it: launched first, the pod moved, the large node removed.
    let mut cheap = spec(&["small-a", "large-a"]);
    cheap.consolidation_policy =
        controller_core::node_pool::ConsolidationPolicy::WhenEmptyOrUnderutilized;
    cheap.empty_node_delay_seconds = 2;
    create_pool(&env, "cheap", cheap).await;
    deploy(&env, workload("web", 8, "1", (POOL_LABEL, "cheap"), |_| {})).await;
    let pods = eventually(WAIT, "8 replicas Running", || running(&env, "web", 8)).await;
    let large = node_of(&pods[0]);
    assert!(large.starts_with("large-a"), "{large}");
    scale(&env, "web", 1).await;
    let small = eventually(WAIT, "the replica on a small node", || async {
        let pods = running(&env, "web", 1).await?;
        let node = node_of(&pods[0]);
        node.starts_with("small-a").then_some(node)
    })
    .await;
    eventually(WAIT, "the large Node gone", || async {
        env.nodes()
            .get_opt(&large)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(metrics.decision_count("cheap", "replaced"), 1);
    let note = events_about(&env, "cheap")
        .await
        .into_iter()
        .find(|(_, r, _)| r == "DisruptionTerminating")
        .map(|(_, _, n)| n)
        .unwrap_or_default();
    assert!(
        note.contains("1 node(s) at 0.1000/h instead of 0.3000/h"),
        "{note}"
    );
    assert!(!small.is_empty());
}
