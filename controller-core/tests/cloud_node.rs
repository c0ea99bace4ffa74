//! The cloud-node controller against a real kube-apiserver and provider-fake.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use cloudprovider_api::{NodeAddress, NodeAddressType};
use common::{
    Env, NodeBuilder, UNINITIALIZED, create_node, events_about, eventually, stops_on_shutdown,
    tainted_node,
};
use controller_core::cloud_node::{
    self, CloudNodeConfig, CloudNodeController, PROVIDED_NODE_IP_ANNOTATION,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, WatchEvent, WatchParams};
use provider_fake::{FakeInstance, FaultKind, Method};

const WAIT: Duration = Duration::from_secs(15);

fn start(env: &Env, frequency: Duration) -> tokio::task::JoinHandle<()> {
    let mut config = CloudNodeConfig::default();
    config.node_status_update_frequency = frequency;
    env.run(CloudNodeController::new(config))
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key))
}

fn labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

fn addresses(node: &Node) -> Vec<(String, String)> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .map(|a| (a.type_.clone(), a.address.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn metadata_calls(env: &Env, name: &str) -> usize {
    env.cloud
        .calls_of(Method::InstanceMetadata)
        .iter()
        .filter(|c| c.key == name)
        .count()
}

async fn initialized(nodes: &Api<Node>, name: &str) -> Option<Node> {
    let node = nodes.get_opt(name).await.ok().flatten()?;
    (!has_taint(&node, UNINITIALIZED) && !addresses(&node).is_empty()).then_some(node)
}

async fn has_event(env: &Env, name: &str, type_: &str, reason: &str) -> bool {
    events_about(env, name)
        .await
        .iter()
        .any(|(t, r, _)| t == type_ && r == reason)
}

/// Counts the writes to each Node since `resource_version`, by replaying the watch history.
async fn writes_since(nodes: &Api<Node>, resource_version: &str) -> HashMap<String, usize> {
    let params = WatchParams::default().timeout(2);
    let mut counts = HashMap::new();
    let stream = nodes
        .watch(&params, resource_version)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));
    let events: Vec<WatchEvent<Node>> = stream
        .take_until(tokio::time::sleep(Duration::from_secs(4)))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("watch stream: {e}"));
    for event in events {
        if let WatchEvent::Modified(node) = event {
            *counts
                .entry(node.metadata.name.unwrap_or_default())
                .or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initializes_tainted_nodes_with_minimal_writes() {
    let env = Env::start().await;
    let add = |i: FakeInstance| {
        env.cloud
            .add_instance(i)
            .unwrap_or_else(|e| panic!("add instance: {e}"))
    };
    add(FakeInstance::new("node-a")
        .with_instance_type("m5.large")
        .with_zone("zone-a")
        .with_region("region-1")
        .with_label("team", "storage")
        .with_label("node.kubernetes.io/sneaky", "x")
        .with_label("preset", "from-cloud"));
    add(FakeInstance::new("node-b").with_addresses(vec![
        NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.1"),
        NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.2"),
        NodeAddress::new(NodeAddressType::ExternalIp, "192.0.2.5"),
        NodeAddress::new(NodeAddressType::Hostname, "node-b"),
    ]));
    let c_id = add(FakeInstance::new("node-c").with_zone("").with_region(""));

    let a = NodeBuilder::new("node-a")
        .uninitialized()
        .label("preset", "from-node")
        .build();
    let b = NodeBuilder::new("node-b")
        .uninitialized()
        .annotation(PROVIDED_NODE_IP_ANNOTATION, "10.0.0.2")
        .build();
    let c = NodeBuilder::new("node-c")
        .uninitialized()
        .provider_id(c_id.clone())
        .taint("example.com/dedicated", "db", "NoSchedule")
        .build();
    create_node(&env, &a).await;
    create_node(&env, &b).await;
    let created = create_node(&env, &c).await;
    let since = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();

    start(&env, Duration::from_secs(300));
    let api = env.nodes();
    let a = eventually(WAIT, "node-a initialized", || initialized(&api, "node-a")).await;
    let b = eventually(WAIT, "node-b initialized", || initialized(&api, "node-b")).await;
    let c = eventually(WAIT, "node-c initialized", || initialized(&api, "node-c")).await;

    // node-a: provider ID, GA labels and beta twins, additional labels minus the k8s-namespaced and present ones.
    assert_eq!(
        a.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
        Some("fake://node-a")
    );
    let want: BTreeMap<String, String> = [
        ("node.kubernetes.io/instance-type", "m5.large"),
        ("beta.kubernetes.io/instance-type", "m5.large"),
        ("topology.kubernetes.io/zone", "zone-a"),
        ("failure-domain.beta.kubernetes.io/zone", "zone-a"),
        ("topology.kubernetes.io/region", "region-1"),
        ("failure-domain.beta.kubernetes.io/region", "region-1"),
        ("team", "storage"),
        ("preset", "from-node"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(labels(&a), want);
    let a_addresses = addresses(&a);
    assert!(
        a_addresses.iter().any(|(t, _)| t == "InternalIP"),
        "{a_addresses:?}"
    );
    assert!(
        a_addresses.contains(&("Hostname".to_owned(), "node-a".to_owned())),
        "{a_addresses:?}"
    );

    // node-b: the provided IP first, the other addresses kept in the cloud's order.
    assert_eq!(
        addresses(&b),
        pairs(&[
            ("InternalIP", "10.0.0.2"),
            ("InternalIP", "10.0.0.1"),
            ("ExternalIP", "192.0.2.5"),
            ("Hostname", "node-b"),
        ])
    );

    // node-c: empty zone and region give no labels; its provider ID and other taint are kept.
    let c_labels = labels(&c);
    assert!(
        c_labels.contains_key("node.kubernetes.io/instance-type"),
        "{c_labels:?}"
    );
    assert!(
        !c_labels
            .keys()
            .any(|k| k.contains("zone") || k.contains("region")),
        "{c_labels:?}"
    );
    assert_eq!(
        c.spec.as_ref().and_then(|s| s.provider_id.clone()),
        Some(c_id)
    );
    assert!(has_taint(&c, "example.com/dedicated"));

    for name in ["node-a", "node-b", "node-c"] {
        eventually(WAIT, "Synced event", || async {
            has_event(&env, name, "Normal", "Synced")
                .await
                .then_some(())
        })
        .await;
    }
    // Our own writes come back as watch events: none of them may cost another cloud call or write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["node-a", "node-b", "node-c"] {
        assert_eq!(
            metadata_calls(&env, name),
            1,
            "InstanceMetadata calls for {name}"
        );
    }
    let writes = writes_since(&api, &since).await;
    for name in ["node-a", "node-b", "node-c"] {
        // One metadata+spec patch, one status patch.
        assert_eq!(writes.get(name), Some(&2), "writes to {name}: {writes:?}");
    }
    assert!(env.cloud.calls().iter().all(|c| c.outcome.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_error_keeps_the_taint_until_it_clears() {
    let env = Env::start().await;
    for name in ["node-x", "node-y"] {
        env.cloud
            .add_instance(FakeInstance::new(name))
            .unwrap_or_else(|e| panic!("add instance: {e}"));
    }
    // node-x: the first lookup fails. node-y: asks for an address the cloud does not have.
    env.cloud
        .fail_next_for(Method::InstanceMetadata, "node-x", 1, FaultKind::NotFound);
    create_node(&env, &tainted_node("node-x")).await;
    let y = NodeBuilder::new("node-y")
        .uninitialized()
        .annotation(PROVIDED_NODE_IP_ANNOTATION, "10.99.99.99")
        .build();
    create_node(&env, &y).await;

    start(&env, Duration::from_secs(300));
    let api = env.nodes();
    eventually(WAIT, "Warning about node-x", || async {
        has_event(&env, "node-x", "Warning", cloud_node::SYNC_FAILED_REASON)
            .await
            .then_some(())
    })
    .await;
    let x = api
        .get("node-x")
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert!(
        has_taint(&x, UNINITIALIZED),
        "taint removed despite the error"
    );
    assert_eq!(x.spec.as_ref().and_then(|s| s.provider_id.clone()), None);

    // The retry (after the runtime's backoff) succeeds.
    let x = eventually(WAIT, "node-x initialized", || initialized(&api, "node-x")).await;
    assert_eq!(
        x.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
        Some("fake://node-x")
    );
    assert_eq!(metadata_calls(&env, "node-x"), 2);
    // Events are sent from a queue after the write they announce: wait for it rather than race it.
    eventually(WAIT, "the Synced Event about node-x", || async {
        has_event(&env, "node-x", "Normal", "Synced")
            .await
            .then_some(())
    })
    .await;

    // node-y never matches: still tainted, with a Warning naming the annotation.
    let events = events_about(&env, "node-y").await;
    assert!(
        events.iter().any(|(t, r, note)| t == "Warning"
            && r == cloud_node::SYNC_FAILED_REASON
            && note.contains("10.99.99.99")),
        "{events:?}"
    );
    let y = api
        .get("node-y")
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert!(has_taint(&y, UNINITIALIZED));
    assert!(
        labels(&y).is_empty(),
        "node-y was partly initialized: {:?}",
        labels(&y)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_refreshed_periodically() {
    let env = Env::start().await;
    let original = vec![
        NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.1"),
        NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.2"),
    ];
    env.cloud
        .add_instance(FakeInstance::new("node-p").with_addresses(original))
        .unwrap_or_else(|e| panic!("add instance: {e}"));
    let p = NodeBuilder::new("node-p")
        .uninitialized()
        .annotation(PROVIDED_NODE_IP_ANNOTATION, "10.0.0.2")
        .build();
    create_node(&env, &p).await;

    let task = start(&env, Duration::from_secs(1));
    let api = env.nodes();
    let node = eventually(WAIT, "node-p initialized", || initialized(&api, "node-p")).await;
    assert_eq!(
        addresses(&node),
        pairs(&[("InternalIP", "10.0.0.2"), ("InternalIP", "10.0.0.1")])
    );

    // The cloud's addresses change: the next periodic sync writes them, the provided IP still first.
    env.cloud
        .remove_instance("node-p")
        .unwrap_or_else(|e| panic!("remove instance: {e}"));
    env.cloud
        .add_instance(FakeInstance::new("node-p").with_addresses(vec![
            NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.3"),
            NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.2"),
            NodeAddress::new(NodeAddressType::ExternalIp, "192.0.2.9"),
        ]))
        .unwrap_or_else(|e| panic!("add instance: {e}"));
    let want = pairs(&[
        ("InternalIP", "10.0.0.2"),
        ("InternalIP", "10.0.0.3"),
        ("ExternalIP", "192.0.2.9"),
    ]);
    let node = eventually(WAIT, "addresses refreshed", || async {
        let node = api.get_opt("node-p").await.ok().flatten()?;
        (addresses(&node) == want).then_some(node)
    })
    .await;

    // Unchanged addresses cost one cloud call a period and no write.
    let since = node.metadata.resource_version.clone().unwrap_or_default();
    let before = metadata_calls(&env, "node-p");
    let started = std::time::Instant::now();
    let writes = writes_since(&api, &since).await;
    let seconds = started.elapsed().as_secs();
    let calls = metadata_calls(&env, "node-p") - before;
    assert_eq!(writes.get("node-p"), None, "unexpected writes: {writes:?}");
    let max = usize::try_from(seconds)
        .unwrap_or(usize::MAX)
        .saturating_add(2);
    assert!(
        (1..=max).contains(&calls),
        "{calls} InstanceMetadata calls in {seconds} s at a 1 s period"
    );
    stops_on_shutdown(&env, task).await;
}

/// Upstream's label reconciliation on already initialized Nodes: the GA twin of a beta label is added when missing
/// and corrected when it differs; a Node whose twins agree is not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga_twins_of_beta_labels_are_reconciled_on_initialized_nodes() {
    let env = Env::start().await;
    env.cloud
        .add_instance(FakeInstance::new("node-l"))
        .unwrap_or_else(|e| panic!("{e}"));
    let node = NodeBuilder::new("node-l")
        .provider_id("fake://node-l")
        .label("failure-domain.beta.kubernetes.io/zone", "z1")
        .label("topology.kubernetes.io/zone", "z-stale")
        .label("failure-domain.beta.kubernetes.io/region", "r1")
        .label("beta.kubernetes.io/instance-type", "large")
        .label("node.kubernetes.io/instance-type", "large")
        .build();
    create_node(&env, &node).await;
    start(&env, Duration::from_secs(300));
    let nodes: Api<Node> = Api::all(env.client());
    // The first pass writes the labels and then (a separate status patch) the cloud's addresses: wait for both, so
    // the resource-version check below sees only what a further event would write.
    let reconciled = eventually(
        WAIT,
        "the GA zone and region labels and the addresses",
        || async {
            let node = nodes.get("node-l").await.ok()?;
            let l = labels(&node);
            let addressed = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|a| !a.is_empty());
            (l.get("topology.kubernetes.io/zone").map(String::as_str) == Some("z1")
                && l.get("topology.kubernetes.io/region").map(String::as_str) == Some("r1")
                && addressed)
                .then_some(node)
        },
    )
    .await;
    assert_eq!(
        labels(&reconciled)
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("large")
    );
    // Nothing more to write: the resource version stays put across further events of the controller.
    let rv = reconciled.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = nodes.get("node-l").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.metadata.resource_version, rv);
}
