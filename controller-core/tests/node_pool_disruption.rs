//! Disrupting a NodePool's nodes, against a real kube-apiserver, kube-scheduler, kwok and kube-controller-manager's
//! Deployment and disruption controllers. Deleting the pool: its nodes are drained through the Eviction API — a
//! PodDisruptionBudget holds an eviction until it allows it, never forced — then deleted with their instances,
//! and the pool goes last; `deletionPolicy: Orphan` leaves them. Consolidation: an underutilized node whose pods fit
//! on another is drained and removed, unless annotated do-not-disrupt.

mod common;
mod node_pool_env;

use std::collections::BTreeMap;
use std::time::Duration;

use common::eventually;
use controller_core::node_pool::{
    ConsolidationPolicy, DISRUPTED_TAINT, DO_NOT_DISRUPT, DeletionPolicy, NodePool, POOL_LABEL,
    TERMINATION_FINALIZER,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use provider_fake::FakeInstanceState;
use test_support::NodeBuilder;

use node_pool_env::*;

fn pool_nodes(env: &common::Env) -> Vec<String> {
    live_members(env).into_iter().map(|m| m.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pool_drains_its_nodes_under_their_budgets_then_removes_them() {
    let PoolEnv {
        env,
        joiner: _joiner,
        metrics,
    } = start(Duration::ZERO, true).await;
    create_pool(&env, pool_spec()).await;
    let pools: Api<NodePool> = Api::all(env.client());
    eventually(WAIT, "the termination finalizer", || async {
        let pool = pools.get(POOL).await.ok()?;
        pool.finalizers()
            .iter()
            .any(|f| f == TERMINATION_FINALIZER)
            .then_some(())
    })
    .await;

    // A node outside the pool that the pods may use, cordoned for now: the pool launches one node for them.
    let nodes: Api<Node> = Api::all(env.client());
    let four_cpus = BTreeMap::from([
        ("cpu".to_owned(), Quantity("4".into())),
        ("memory".to_owned(), Quantity("8Gi".into())),
        ("pods".to_owned(), Quantity("110".into())),
    ]);
    let mut spare = NodeBuilder::new("spare")
        .kwok()
        .label(POOL_LABEL, POOL)
        .label("team", "ml")
        .capacity(four_cpus.clone())
        .allocatable(four_cpus)
        .build();
    if let Some(spec) = spare.spec.as_mut() {
        spec.unschedulable = Some(true);
    } else {
        spare.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
    }
    nodes
        .create(&PostParams::default(), &spare)
        .await
        .unwrap_or_else(|e| panic!("create spare: {e}"));
    deploy(&env, "web", 3).await;
    let running = eventually(WAIT, "3 replicas Running", || all_running(&env, "web", 3)).await;
    let launched = pool_nodes(&env);
    assert_eq!(launched.len(), 1, "{launched:?}");
    assert!(
        running
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()) == launched.first())
    );

    // A budget that allows no disruption of the 3 replicas.
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client(), "default");
    pdbs.create(&PostParams::default(), &pdb)
        .await
        .unwrap_or_else(|e| panic!("create PDB: {e}"));
    eventually(WAIT, "the budget observed", || async {
        let status = pdbs.get("web").await.ok()?.status?;
        (status.current_healthy == Some(3) && status.observed_generation.is_some()).then_some(())
    })
    .await;
    let uncordon = serde_json::json!({"spec": {"unschedulable": false}});
    nodes
        .patch("spare", &PatchParams::default(), &Patch::Merge(&uncordon))
        .await
        .unwrap_or_else(|e| panic!("uncordon: {e}"));

    pools
        .delete(POOL, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete pool: {e}"));
    // The budget blocks: a FailedDraining Warning, the node tainted, every replica still on it, the pool kept.
    let blocked = eventually(WAIT, "FailedDraining", || has_event(&env, "FailedDraining")).await;
    assert!(
        blocked.contains("cannot evict pod default/web-"),
        "{blocked}"
    );
    let node = &launched[0];
    let tainted = nodes.get(node).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(taint_keys(&tainted).contains(&DISRUPTED_TAINT.to_owned()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(all_running(&env, "web", 3).await.is_some_and(|pods| {
        pods.iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()) == Some(node))
    }));
    assert!(pools.get_opt(POOL).await.ok().flatten().is_some());
    assert_eq!(metrics.decision_count(POOL, "pool_deletion"), 0);

    // A fourth replica (on the spare node: the pool's is tainted) lets the budget allow one eviction at a time.
    scale(&env, "web", 4).await;
    eventually(WAIT, "the pool gone", || async {
        pools.get_opt(POOL).await.ok()?.is_none().then_some(())
    })
    .await;
    let moved = eventually(WAIT, "4 replicas Running on spare", || async {
        let pods = all_running(&env, "web", 4).await?;
        pods.iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("spare"))
            .then_some(pods)
    })
    .await;
    assert_eq!(moved.len(), 4);
    assert!(
        nodes.get_opt(node).await.ok().flatten().is_none(),
        "{node} still there"
    );
    assert!(live_members(&env).is_empty(), "{:?}", live_members(&env));
    assert_eq!(metrics.decision_count(POOL, "pool_deletion"), 1);
    let removed = has_event(&env, "Terminated").await.unwrap_or_default();
    assert!(removed.contains(node.as_str()), "{removed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaning_pool_leaves_its_nodes_and_instances() {
    let PoolEnv {
        env,
        joiner: _joiner,
        ..
    } = start(Duration::ZERO, true).await;
    let mut spec = pool_spec();
    spec.deletion_policy = DeletionPolicy::Orphan;
    create_pool(&env, spec).await;
    deploy(&env, "web", 1).await;
    eventually(WAIT, "1 replica Running", || all_running(&env, "web", 1)).await;
    let launched = pool_nodes(&env);
    assert_eq!(launched.len(), 1);
    let pools: Api<NodePool> = Api::all(env.client());
    eventually(WAIT, "the termination finalizer", || async {
        let pool = pools.get(POOL).await.ok()?;
        (!pool.finalizers().is_empty()).then_some(())
    })
    .await;
    pools
        .delete(POOL, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete pool: {e}"));
    eventually(WAIT, "the pool gone", || async {
        pools.get_opt(POOL).await.ok()?.is_none().then_some(())
    })
    .await;
    let nodes: Api<Node> = Api::all(env.client());
    let node = nodes
        .get(&launched[0])
        .await
        .unwrap_or_else(|e| panic!("the orphaned node: {e}"));
    assert!(!taint_keys(&node).contains(&DISRUPTED_TAINT.to_owned()));
    assert!(all_running(&env, "web", 1).await.is_some());
    let members = live_members(&env);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].state, FakeInstanceState::Running);
}

/// The nodes whose pods include one of `app`'s.
async fn hosts_of(env: &common::Env, app: &str) -> Vec<String> {
    let mut hosts: Vec<String> = replicas(env, app)
        .await
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_underutilized_node_is_consolidated_onto_one_that_says_do_not_disrupt() {
    let PoolEnv {
        env,
        joiner: _joiner,
        metrics,
    } = start(Duration::ZERO, true).await;
    let mut spec = pool_spec();
    spec.consolidation_policy = ConsolidationPolicy::WhenEmptyOrUnderutilized;
    create_pool(&env, spec).await;
    // Node A full with 4 × 500m, node B with one more pod: neither fits on the other.
    deploy(&env, "big", 4).await;
    eventually(WAIT, "big Running", || all_running(&env, "big", 4)).await;
    deploy(&env, "small", 1).await;
    eventually(WAIT, "small Running", || all_running(&env, "small", 1)).await;
    let a = hosts_of(&env, "big").await;
    let b = hosts_of(&env, "small").await;
    assert_eq!((a.len(), b.len()), (1, 1), "{a:?} {b:?}");
    assert_ne!(a, b);
    let (a, b) = (a[0].clone(), b[0].clone());

    // B (one pod, the cheaper one to move) says do-not-disrupt. Once big is down to 2 pods, A's pods fit on B:
    // A is drained and removed, its pods move to B, and B is never touched.
    let nodes: Api<Node> = Api::all(env.client());
    assert_eq!(DO_NOT_DISRUPT, "kube-cloud-rs.dev/do-not-disrupt");
    let annotate = serde_json::json!({"metadata": {"annotations": {"kube-cloud-rs.dev/do-not-disrupt": "true"}}});
    nodes
        .patch(&b, &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap_or_else(|e| panic!("annotate: {e}"));
    scale(&env, "big", 2).await;
    eventually(WAIT, "A removed", || async {
        nodes.get_opt(&a).await.ok()?.is_none().then_some(())
    })
    .await;
    eventually(WAIT, "every pod Running on B", || async {
        all_running(&env, "big", 2).await?;
        all_running(&env, "small", 1).await?;
        let on_b = [b.clone()];
        (hosts_of(&env, "big").await == on_b && hosts_of(&env, "small").await == on_b).then_some(())
    })
    .await;
    assert_eq!(pool_nodes(&env), std::slice::from_ref(&b));
    let kept = nodes.get(&b).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!taint_keys(&kept).contains(&DISRUPTED_TAINT.to_owned()));
    assert_eq!(metrics.decision_count(POOL, "consolidation"), 1);
    let b = a; // the removed node, for the Event check below
    let note = has_event(&env, "ScaleDown").await.unwrap_or_default();
    assert!(
        note.contains(&format!("consolidated underutilized node {b}")),
        "{note}"
    );
}
