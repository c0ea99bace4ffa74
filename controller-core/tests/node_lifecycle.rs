//! The cloud-node-lifecycle controller against a real kube-apiserver and provider-fake.

mod common;

use std::time::Duration;

use common::{
    Env, NodeBuilder, create_node, events_about, eventually, stops_on_shutdown, tainted_node,
};
use controller_core::node_lifecycle::{
    self, NodeLifecycleConfig, NodeLifecycleController, SHUTDOWN_TAINT,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use provider_fake::{FakeInstance, FakeInstanceState, FaultKind, Method};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
const PERIOD: Duration = Duration::from_millis(200);

fn start(env: &Env) -> tokio::task::JoinHandle<()> {
    let mut config = NodeLifecycleConfig::default();
    config.monitor_period = PERIOD;
    env.run(NodeLifecycleController::new(config))
}

/// An initialized Node (provider ID set, no uninitialized taint), optionally with the shutdown taint.
fn initialized_node(name: &str, shutdown_tainted: bool) -> Node {
    let node = NodeBuilder::new(name).provider_id(format!("fake://{name}"));
    if shutdown_tainted {
        node.taint(SHUTDOWN_TAINT, None, "NoSchedule").build()
    } else {
        node.build()
    }
}

/// Creates `node` with its Ready condition set to `ready` ("True", "False", "Unknown").
async fn create_with_ready(env: &Env, node: &Node, ready: &str) {
    create_node(env, node).await;
    set_ready(
        env,
        node.metadata.name.as_deref().unwrap_or_default(),
        ready,
    )
    .await;
}

async fn set_ready(env: &Env, name: &str, ready: &str) {
    let patch = json!({ "status": { "conditions": [
        { "type": "Ready", "status": ready, "reason": "Test", "message": "set by the test" }
    ] } });
    env.nodes()
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch status of {name}: {e}"));
}

fn add(env: &Env, name: &str, state: FakeInstanceState) {
    env.cloud
        .add_instance(FakeInstance::new(name).with_state(state))
        .unwrap_or_else(|e| panic!("add instance {name}: {e}"));
}

fn has_shutdown_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == SHUTDOWN_TAINT && t.effect == "NoSchedule")
        })
}

async fn get(env: &Env, name: &str) -> Option<Node> {
    env.nodes()
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
}

async fn deletion_events(env: &Env, name: &str) -> usize {
    events_about(env, name)
        .await
        .iter()
        .filter(|(_, reason, _)| reason == node_lifecycle::DELETING_NODE_REASON)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_nodes_are_deleted_and_shut_down_nodes_tainted() {
    let env = Env::start().await;
    add(&env, "gone", FakeInstanceState::Terminated);
    add(&env, "stopped", FakeInstanceState::Stopped);
    add(&env, "ready", FakeInstanceState::Running);
    add(&env, "uninitialized", FakeInstanceState::Terminated);
    create_with_ready(&env, &initialized_node("gone", false), "False").await;
    create_with_ready(&env, &initialized_node("stopped", false), "Unknown").await;
    create_with_ready(&env, &initialized_node("ready", true), "True").await;
    // Not ready, instance gone, but not initialized yet: never deleted.
    create_node(&env, &tainted_node("uninitialized")).await;

    start(&env);
    eventually(WAIT, "node gone deleted", || async {
        get(&env, "gone").await.is_none().then_some(())
    })
    .await;
    eventually(WAIT, "a successful pass counted", || async {
        (env.metrics
            .count(node_lifecycle::CONTROLLER_NAME, "success")
            > 0)
        .then_some(())
    })
    .await;
    eventually(WAIT, "DeletingNode event", || async {
        (deletion_events(&env, "gone").await > 0).then_some(())
    })
    .await;
    eventually(WAIT, "node stopped tainted", || async {
        get(&env, "stopped")
            .await
            .filter(has_shutdown_taint)
            .map(|_| ())
    })
    .await;
    eventually(WAIT, "node ready untainted", || async {
        get(&env, "ready")
            .await
            .filter(|n| !has_shutdown_taint(n))
            .map(|_| ())
    })
    .await;

    // A few more periods change nothing: the stopped and uninitialized nodes stay, the taint is added once.
    tokio::time::sleep(PERIOD * 5).await;
    let stopped = get(&env, "stopped").await;
    assert!(stopped.is_some(), "a stopped instance's node was deleted");
    let shutdown_taints = stopped
        .and_then(|n| n.spec)
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .filter(|t| t.key == SHUTDOWN_TAINT)
        .count();
    assert_eq!(shutdown_taints, 1);
    assert!(
        get(&env, "uninitialized").await.is_some(),
        "an uninitialized node was deleted"
    );
    assert_eq!(deletion_events(&env, "stopped").await, 0);

    // The instance starts again: the taint goes even before the node reports Ready.
    env.cloud
        .set_instance_state("stopped", FakeInstanceState::Running)
        .unwrap_or_else(|e| panic!("set state: {e}"));
    eventually(WAIT, "node stopped untainted", || async {
        get(&env, "stopped")
            .await
            .filter(|n| !has_shutdown_taint(n))
            .map(|_| ())
    })
    .await;
    // One batched lookup a period, however many nodes are not ready.
    let calls = env.cloud.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.method == Method::InstanceExists)
            .count(),
        0,
        "per-node calls instead of the batch: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_delete_nothing() {
    let env = Env::start().await;
    add(&env, "gone", FakeInstanceState::Terminated);
    create_with_ready(&env, &initialized_node("gone", false), "False").await;
    env.cloud
        .fail_always(Method::InstanceStates, FaultKind::Transient);

    let task = start(&env);
    eventually(WAIT, "four failed lookups", || async {
        (env.cloud.count(Method::InstanceStates) >= 4).then_some(())
    })
    .await;
    assert!(
        get(&env, "gone").await.is_some(),
        "deleted on a provider error"
    );
    assert_eq!(deletion_events(&env, "gone").await, 0);
    // Every pass is counted in the shared reconcile metrics; a failed lookup makes it transient.
    assert!(
        env.metrics
            .count(node_lifecycle::CONTROLLER_NAME, "transient")
            >= 3
    );

    // Once the cloud answers, the same node is deleted: the test above could have failed.
    env.cloud.clear_faults(Method::InstanceStates);
    eventually(WAIT, "node deleted after the fault cleared", || async {
        get(&env, "gone").await.is_none().then_some(())
    })
    .await;
    stops_on_shutdown(&env, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_node_is_not_deleted() {
    let env = Env::start().await;
    add(&env, "reborn", FakeInstanceState::Terminated);
    // A slow lookup, so the Node can be replaced between the lookup and the delete.
    env.cloud
        .set_latency(Method::InstanceStates, Duration::from_secs(3));
    create_with_ready(&env, &initialized_node("reborn", false), "False").await;
    let old_uid = get(&env, "reborn").await.and_then(|n| n.metadata.uid);
    start(&env);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The machine re-registers under the same name while the first lookup is in flight.
    env.nodes()
        .delete("reborn", &Default::default())
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    let reborn = create_node(&env, &tainted_node("reborn")).await;
    assert_ne!(reborn.metadata.uid, old_uid);

    // The controller acts on the old answer (its Event proves it tried) but the UID precondition spares the new Node.
    eventually(WAIT, "DeletingNode event", || async {
        (deletion_events(&env, "reborn").await > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = get(&env, "reborn").await;
    assert_eq!(
        now.and_then(|n| n.metadata.uid),
        reborn.metadata.uid,
        "the re-created node was deleted"
    );
}
