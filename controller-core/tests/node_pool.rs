//! The node-pool controller against a real kube-apiserver, kube-scheduler and kwok, with provider-fake's node
//! groups as the cloud and provider-fake's `MachineKubelets` playing the kubelet of each launched machine.
//!
//! The workloads are real Deployments: kube-controller-manager runs with only its deployment, replicaset and
//! disruption controllers (nothing that overlaps the controllers under test, no node lifecycle).

mod common;
mod node_pool_env;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Env, UNINITIALIZED, events_about, eventually};
use controller_core::cloud_node::{CloudNodeConfig, CloudNodeController};
use controller_core::node_pool::{
    self, INITIALIZED_LABEL, NodePool, POOL_LABEL, UNREGISTERED_TAINT,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use provider_fake::{FakeInstanceState, Provisioning};

use node_pool_env::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pods_bring_up_initialized_nodes_and_idle_nodes_go_away() {
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_millis(500), true).await;
    create_pool(&env, pool_spec()).await;
    deploy(&env, "web", 3).await;

    let running = eventually(WAIT, "3 replicas Running", || all_running(&env, "web", 3)).await;
    // They were unschedulable first: no node of the pool existed (the scheduler's events tell).
    for pod in &running {
        let events = events_about(&env, &pod.name_any()).await;
        assert!(
            events.iter().any(|(_, r, _)| r == "FailedScheduling"),
            "{events:?}"
        );
    }
    let members = live_members(&env);
    assert_eq!(
        members.len(),
        1,
        "3 × 500m fit one 2-CPU node: {members:#?}"
    );
    assert_eq!(joiner.registered(), vec![members[0].provider_id.clone()]);

    let nodes = env.nodes();
    let node_name = running[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    assert!(
        running
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(node_name.as_str()))
    );
    let node = nodes
        .get(&node_name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        Some(members[0].provider_id.clone())
    );
    let labels = node.labels();
    assert_eq!(labels.get(POOL_LABEL).map(String::as_str), Some(POOL));
    assert_eq!(labels.get("team").map(String::as_str), Some("ml"));
    assert_eq!(labels.get("hardware").map(String::as_str), Some("standard"));
    // Set by the cloud-node controller while initializing it.
    assert_eq!(
        labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("fake.large")
    );
    let taints = taint_keys(&node);
    assert!(!taints.contains(&UNINITIALIZED.to_owned()), "{taints:?}");
    eventually(WAIT, "the initialized label", || async {
        let node = nodes.get_opt(&node_name).await.ok()??;
        (node.labels().get(INITIALIZED_LABEL).map(String::as_str) == Some("true")).then_some(())
    })
    .await;
    assert!(
        !taints.contains(&UNREGISTERED_TAINT.to_owned()),
        "{taints:?}"
    );

    let status = eventually(WAIT, "status with one ready node", || async {
        let pool = get_pool(&env).await;
        pool.status.filter(|s| s.ready_nodes == 1)
    })
    .await;
    assert_eq!((status.desired_nodes, status.launching_nodes), (1, 0));
    assert_eq!(
        status.nodes[0].node_name.as_deref(),
        Some(node_name.as_str())
    );
    assert!(status.last_scale_up.is_some());
    for reason in ["TriggeredScaleUp", "Registered", "Initialized"] {
        eventually(WAIT, reason, || has_event(&env, reason)).await;
    }
    // Registered once: the later write adding the initialized label is no second registration (it used to
    // show as `Registered (x2)`).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(env.client());
    let registered: Vec<_> = events
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Registered"))
        .collect();
    assert_eq!(registered.len(), 1, "{registered:#?}");
    assert!(registered[0].series.is_none(), "{registered:#?}");
    assert_eq!(metrics.decision_count(POOL, "scale_up"), 1);

    // Scale to 0: the node empties, and after the delay it is cordoned, deleted, and its instance terminated.
    scale(&env, "web", 0).await;
    let note = eventually(WAIT, "ScaleDown", || has_event(&env, "ScaleDown")).await;
    eventually(WAIT, "the Node deleted", || async {
        nodes
            .get_opt(&node_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(live_members(&env).is_empty());
    assert_eq!(
        env.cloud.instance(&members[0].provider_id).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
    // The note says how long the node had been empty: at least the delay.
    let waited: u64 = note
        .rsplit("after ")
        .next()
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no delay in {note:?}"));
    assert!(waited >= 2, "{note}");
    assert_eq!(metrics.decision_count(POOL, "scale_down"), 1);
    let status = eventually(WAIT, "status with no nodes", || async {
        get_pool(&env)
            .await
            .status
            .filter(|s| s.desired_nodes == 0 && s.last_scale_down.is_some())
    })
    .await;
    assert_eq!(status.ready_nodes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pending_pods_get_exactly_the_nodes_they_need() {
    // Nodes take 2 s to come up, so the second wave arrives while the first nodes are still launching.
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_secs(2), true).await;
    create_pool(&env, pool_spec()).await;
    let started = std::time::Instant::now();
    deploy(&env, "batch", 6).await;
    eventually(WAIT, "the first scale-up", || {
        has_event(&env, "TriggeredScaleUp")
    })
    .await;
    let first_wave = live_members(&env).len();
    assert_eq!(first_wave, 2, "6 × 500m need two 2-CPU nodes");
    scale(&env, "batch", 20).await;

    let running = eventually(WAIT, "20 replicas Running", || {
        all_running(&env, "batch", 20)
    })
    .await;
    // A measurement for the report, not an assertion.
    eprintln!(
        "20 replicas Running {:.1}s after the first was created (nodes take 2 s to launch)",
        started.elapsed().as_secs_f64()
    );
    // 20 × 500m CPU on 2-CPU nodes: 5 nodes, not 6 (which re-provisioning for the first wave's pods would give).
    let members = live_members(&env);
    assert_eq!(members.len(), 5, "{members:#?}");
    assert_eq!(joiner.registered().len(), 5);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &running {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 5);
    assert!(per_node.values().all(|n| *n == 4), "{per_node:?}");
    let launched: u64 = metrics
        .nodes_changed
        .get_or_create(&node_pool::DecisionLabels {
            pool: POOL.into(),
            decision: "scale_up".into(),
        })
        .get();
    assert_eq!(launched, 5);
    // Still five after the pool has seen every pod Running.
    eventually(WAIT, "status with five ready nodes", || async {
        get_pool(&env).await.status.filter(|s| s.ready_nodes == 5)
    })
    .await;
    assert_eq!(live_members(&env).len(), 5);
    // Each registration is an Event of its own (a series of one reason used to show only its first node).
    let registered: BTreeSet<String> = pool_events(&env)
        .await
        .into_iter()
        .filter(|(_, reason, _)| reason == "Registered")
        .map(|(_, _, note)| note)
        .collect();
    for node in joiner.registered() {
        assert!(
            registered
                .iter()
                .any(|note| note.contains(&format!("for instance {node};"))),
            "no Registered Event names {node}: {registered:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_that_never_come_up_or_never_register_are_cleaned_up() {
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_millis(200), true).await;
    // Phase 0: the cloud has no capacity; the failed launch is deleted.
    env.cloud
        .set_node_group_provisioning(GROUP, Provisioning::out_of_resources())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut spec = pool_spec();
    spec.launch_timeout_seconds = 2;
    spec.registration_timeout_seconds = 4;
    create_pool(&env, spec).await;
    deploy(&env, "job", 1).await;
    let note = eventually(WAIT, "LaunchFailed", || has_event(&env, "LaunchFailed")).await;
    assert!(note.contains("InsufficientInstanceCapacity"), "{note}");
    assert!(metrics.decision_count(POOL, "launch_failed") >= 1);

    // Phase 1: the cloud never finishes creating instances.
    env.cloud
        .set_node_group_provisioning(GROUP, Provisioning::NeverReady)
        .unwrap_or_else(|e| panic!("{e}"));
    let note = eventually(WAIT, "LaunchTimeout", || has_event(&env, "LaunchTimeout")).await;
    let stuck = env
        .cloud
        .node_group_members(GROUP)
        .unwrap_or_default()
        .into_iter()
        .chain(env.cloud.instance_list())
        .find(|i| note.contains(&i.provider_id))
        .unwrap_or_else(|| panic!("no instance named in {note:?}"));
    assert_eq!(
        env.cloud.instance(&stuck.provider_id).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );

    // Phase 2: instances come up but their machines never join.
    joiner.hold();
    env.cloud
        .set_node_group_provisioning(GROUP, Provisioning::Succeed)
        .unwrap_or_else(|e| panic!("{e}"));
    let never_joined = eventually(WAIT, "an instance held back", || async {
        joiner.held_back().first().cloned()
    })
    .await;
    eventually(WAIT, "its RegistrationTimeout", || async {
        pool_events(&env).await.into_iter().find(|(t, r, note)| {
            t == "Warning" && r == "RegistrationTimeout" && note.contains(&never_joined)
        })
    })
    .await;
    assert_eq!(
        env.cloud.instance(&never_joined).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
    assert!(metrics.decision_count(POOL, "registration_timeout") >= 1);
    assert!(metrics.decision_count(POOL, "launch_timeout") >= 1);

    // Phase 3: machines join again; the pod still gets its node.
    joiner.release();
    let running = eventually(WAIT, "the replica Running", || all_running(&env, "job", 1)).await;
    let node_name = running[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let node = env
        .nodes()
        .get(&node_name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let provider_id = node.spec.and_then(|s| s.provider_id).unwrap_or_default();
    assert!(!joiner.held_back().contains(&provider_id));
    // Nothing left behind: every instance but the one serving the pod is terminated.
    eventually(WAIT, "only the serving instance left", || async {
        let live: Vec<String> = live_members(&env)
            .into_iter()
            .map(|i| i.provider_id)
            .collect();
        (live == vec![provider_id.clone()]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_never_initialized_are_removed_with_their_instance() {
    // No cloud-node controller: Nodes keep the uninitialized taint.
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_millis(200), false).await;
    let mut spec = pool_spec();
    spec.initialization_timeout_seconds = 3;
    create_pool(&env, spec).await;
    deploy(&env, "stuck", 1).await;
    let first = eventually(WAIT, "a Node registered", || async {
        joiner.registered().first().cloned()
    })
    .await;
    let node_name = first.rsplit('/').next().unwrap_or_default().to_owned();
    // The pool labelled it while it waited for initialization.
    let node = eventually(WAIT, "the pool's labels on the Node", || async {
        let node = env.nodes().get_opt(&node_name).await.ok()??;
        node.labels().contains_key(POOL_LABEL).then_some(node)
    })
    .await;
    assert!(taint_keys(&node).contains(&UNINITIALIZED.to_owned()));
    eventually(WAIT, "InitializationTimeout", || async {
        pool_events(&env).await.into_iter().find(|(t, r, note)| {
            t == "Warning" && r == "InitializationTimeout" && note.contains(&first)
        })
    })
    .await;
    eventually(WAIT, "the Node deleted", || async {
        env.nodes()
            .get_opt(&node_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        env.cloud.instance(&first).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
    assert!(metrics.decision_count(POOL, "initialization_timeout") >= 1);
    // The pod never ran on an uninitialized node.
    assert!(
        replicas(&env, "stuck")
            .await
            .iter()
            .all(|p| phase(p) != "Running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_reported_and_max_nodes_bounds_the_pool() {
    // The joiner must stay bound: dropping it stops it.
    let PoolEnv {
        env,
        metrics,
        joiner: _joiner,
    } = start(Duration::ZERO, true).await;
    let mut spec = pool_spec();
    spec.min_nodes = 3;
    spec.max_nodes = 1;
    create_pool(&env, spec).await;
    deploy(&env, "web", 6).await;
    let note = eventually(WAIT, "InvalidNodePool", || async {
        pool_events(&env)
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "InvalidNodePool")
            .map(|(_, _, note)| note)
    })
    .await;
    assert!(note.contains("spec.minNodes"), "{note}");
    let condition = eventually(WAIT, "Valid=False", || valid_condition(&env, "False")).await;
    assert!(condition.message.contains("spec.minNodes"), "{condition:?}");
    assert!(metrics.decision_count(POOL, "invalid_spec") >= 1);
    assert!(live_members(&env).is_empty());

    let pools: Api<NodePool> = Api::all(env.client());
    let fix = serde_json::json!({ "spec": { "minNodes": 0, "maxNodes": 1 } });
    pools
        .patch(POOL, &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Fixed with maxNodes 1: one node, four of the six 500m replicas on it, two left Pending and announced. The
    // announcement follows the number left out, which may pass through 1 while the scheduler is still marking the
    // replicas unschedulable; each distinct note is an Event of its own, and the first found may name 1 or 2.
    let note = eventually(WAIT, "NotTriggerScaleUp", || {
        has_event(&env, "NotTriggerScaleUp")
    })
    .await;
    assert!(
        (note.contains("2 pending pod(s)") || note.contains("1 pending pod(s)"))
            && note.contains("spec.maxNodes 1"),
        "{note}"
    );
    eventually(WAIT, "4 replicas Running", || async {
        let running = replicas(&env, "web")
            .await
            .iter()
            .filter(|p| phase(p) == "Running")
            .count();
        (running == 4).then_some(())
    })
    .await;
    // The other two stay Pending: nothing is launched past maxNodes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = replicas(&env, "web").await;
    assert_eq!(pods.iter().filter(|p| phase(p) == "Pending").count(), 2);
    assert_eq!(live_members(&env).len(), 1);
    assert!(metrics.decision_count(POOL, "max_nodes_reached") >= 1);
    eventually(WAIT, "Valid=True", || valid_condition(&env, "True")).await;
}

/// The pool's `Valid` condition when it has `status`.
async fn valid_condition(env: &Env, status: &str) -> Option<Condition> {
    valid_condition_of(env, POOL, status).await
}

/// Pool `name`'s `Valid` condition when it has `status`.
async fn valid_condition_of(env: &Env, name: &str, status: &str) -> Option<Condition> {
    let pools: Api<NodePool> = Api::all(env.client());
    pools
        .get(name)
        .await
        .ok()?
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Valid" && c.status == status)
}

/// A second pool naming a node group another pool already uses, and a pool naming a group the provider does not
/// have: both `Valid=False` with their reason, checked once (not again on every Node change, which used to warn
/// several times a second), and only the owner acts on the group's nodes (two pools used to relabel one Node back
/// and forth forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_node_group_and_an_unknown_one_are_invalid_and_checked_once() {
    let PoolEnv {
        env,
        metrics,
        joiner: _joiner,
    } = start(Duration::ZERO, true).await;
    create_pool(&env, pool_spec()).await;
    eventually(WAIT, "pool-a Valid=True", || valid_condition(&env, "True")).await;
    let pools: Api<NodePool> = Api::all(env.client());
    let mut unknown = pool_spec();
    unknown.node_group = "no-such-group".into();
    for (name, spec) in [("pool-b", pool_spec()), ("pool-c", unknown)] {
        pools
            .create(&PostParams::default(), &NodePool::new(name, spec))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    let b = eventually(WAIT, "pool-b Valid=False", || {
        valid_condition_of(&env, "pool-b", "False")
    })
    .await;
    assert_eq!(b.reason, "NodeGroupInUse", "{b:?}");
    assert!(b.message.contains("pool-a"), "{b:?}");
    let c = eventually(WAIT, "pool-c Valid=False", || {
        valid_condition_of(&env, "pool-c", "False")
    })
    .await;
    assert_eq!(c.reason, "NodeGroupNotFound", "{c:?}");
    assert!(c.message.contains("no-such-group"), "{c:?}");
    let warned = events_about(&env, "pool-c").await;
    assert!(
        warned.iter().any(|(t, r, n)| t == "Warning"
            && r == "InvalidNodePool"
            && n.contains("no-such-group")),
        "{warned:?}"
    );

    // Nodes come and go (pool-a launches for a Deployment): the invalid pools are not checked on each change.
    let checks = || {
        (
            metrics.decision_count("pool-b", "invalid_spec"),
            metrics.decision_count("pool-c", "invalid_spec"),
        )
    };
    let before = checks();
    let since = std::time::Instant::now();
    deploy(&env, "web", 6).await;
    eventually(WAIT, "6 replicas Running", || all_running(&env, "web", 6)).await;
    let after = checks();
    // At most one re-check per resync interval (30 s) each; before the fix, dozens.
    let allowed = since.elapsed().as_secs() / 30 + 1;
    assert!(
        after.0 - before.0 <= allowed && after.1 - before.1 <= allowed,
        "re-checked {:?} → {after:?} in {:?}",
        before,
        since.elapsed()
    );
    // Only pool-a owns the nodes: each carries its pool label, and pool-b reports none.
    let nodes: Api<Node> = Api::all(env.client());
    let labelled: Vec<String> = nodes
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .iter()
        .filter_map(|n| n.labels().get(POOL_LABEL).cloned())
        .collect();
    assert_eq!(labelled.len(), live_members(&env).len(), "{labelled:?}");
    assert!(labelled.iter().all(|p| p == POOL), "{labelled:?}");
    let b_nodes = pools
        .get("pool-b")
        .await
        .ok()
        .and_then(|p| p.status)
        .map_or(0, |s| s.nodes.len());
    assert_eq!(b_nodes, 0);
}

/// Two replicas, 20 pending pods, the leader killed (its task aborted: no Lease release, no further call) while the
/// instances it launched are still starting: the new leader counts them and the pool ends with exactly the 5
/// nodes 20 pods of 500m need on 2-CPU nodes, never launching for the same pods twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_launch_once_when_the_leader_dies_mid_scale_up() {
    let env = cluster(Duration::from_secs(4)).await;
    env.run(CloudNodeController::new(CloudNodeConfig::default()));
    let _joiner = joiner(&env);
    let shutdown = env.shutdown.clone();
    let (a, a_elector) = replica(&env, "replica-a");
    let a_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { a.run_with_leader_election(a_elector, shutdown).await }
    });
    eventually(WAIT, "replica-a to lead", || async {
        (lease_holder(&env).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let (b, b_elector) = replica(&env, "replica-b");
    let b_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { b.run_with_leader_election(b_elector, shutdown).await }
    });

    create_pool(&env, pool_spec()).await;
    deploy(&env, "web", 20).await;
    // Mid scale-up: the leader has launched instances and none has started yet (they take 4 s).
    eventually(WAIT, "the leader to launch instances", || async {
        (!live_members(&env).is_empty()).then_some(())
    })
    .await;
    let launched_by_a = live_members(&env).len();
    a_task.abort();
    eprintln!("replica-a killed after launching {launched_by_a} instances");

    eventually(WAIT, "replica-b to take over", || async {
        (lease_holder(&env).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    eventually(WAIT, "20 replicas Running", || all_running(&env, "web", 20)).await;
    let members = env
        .cloud
        .node_group_members(GROUP)
        .unwrap_or_else(|e| panic!("members: {e}"));
    assert_eq!(
        members.len(),
        5,
        "instances ever launched (replica-a launched {launched_by_a} before it was killed): {members:?}"
    );
    assert!(!b_task.is_finished(), "replica-b stopped leading");
}
