//! The virtual-node runtime and the heartbeat on a real kube-apiserver + kube-scheduler, with the fake provider.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::VirtualNodeProvider;
use controller_core::heartbeat::{Heartbeat, HeartbeatConfig};
use controller_core::runtime::{CancellationToken, EventPublisher, RuntimeMetrics};
use controller_core::virtual_node::{
    LABEL_TYPE, NODE_TYPE, REASON_PROVIDER_FAILED, TAINT_PROVIDER, VirtualNode, VirtualNodeConfig,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Node, NodeCondition, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use provider_fake::{FakeCloud, FaultKind, Method};
use test_support::ControlPlane;

mod common;
use common::eventually;

const WAIT: Duration = Duration::from_secs(60);

/// A 4 s Lease renewed every second, so the test sees several renewals quickly.
fn fast_heartbeat() -> HeartbeatConfig {
    let mut config = HeartbeatConfig::default();
    config.lease_duration = Duration::from_secs(4);
    config
}

fn pod(name: &str, node: &str, tolerate: bool, restart_policy: &str) -> Pod {
    let tolerations = tolerate.then(|| {
        vec![Toleration {
            key: Some(TAINT_PROVIDER.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }]
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                ..Container::default()
            }],
            node_selector: Some(BTreeMap::from([
                (LABEL_TYPE.to_string(), NODE_TYPE.to_string()),
                ("kubernetes.io/hostname".to_string(), node.to_string()),
            ])),
            tolerations,
            restart_policy: Some(restart_policy.into()),
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn condition_status(node: &Node, type_: &str) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

async fn renew_time(leases: &Api<Lease>, name: &str) -> Option<i64> {
    let lease = leases.get_opt(name).await.ok()??;
    Some(lease.spec?.renew_time?.0.as_microsecond())
}

#[tokio::test]
async fn tolerating_pod_runs_on_the_virtual_node_and_its_deletion_completes() {
    let cp = ControlPlane::builder()
        .scheduler(true)
        .start()
        .await
        .expect("control plane");
    let client = cp.client();
    let cloud = FakeCloud::new();
    let vnode = cloud.virtual_node("vk-1");
    // Left over from an earlier run: Kubernetes has no such pod, so the runtime deletes it on start.
    vnode.insert_running_pod(pod("orphan", "vk-1", true, "Always"));

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let heartbeat =
        Heartbeat::start(client.clone(), fast_heartbeat(), shutdown.clone()).expect("heartbeat");
    let provider: Arc<dyn VirtualNodeProvider> = Arc::new(vnode.clone());
    let node = VirtualNode::new(
        client.clone(),
        VirtualNodeConfig::new("vk-1", "fake"),
        provider,
        heartbeat.clone(),
        EventPublisher::new(client.clone(), "virtual-kubelet", Some("vk-1".into())),
        RuntimeMetrics::default(),
    );
    let task = tokio::spawn(node.run(shutdown));

    let nodes: Api<Node> = Api::all(client.clone());
    let ready = eventually(WAIT, "vk-1 Ready", || async {
        let n = nodes.get_opt("vk-1").await.ok()??;
        (condition_status(&n, "Ready").as_deref() == Some("True")).then_some(n)
    })
    .await;
    let labels = ready.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(LABEL_TYPE).map(String::as_str), Some(NODE_TYPE));
    assert_eq!(
        labels.get("kubernetes.io/role").map(String::as_str),
        Some("agent")
    );
    let taints = ready
        .spec
        .clone()
        .and_then(|s| s.taints)
        .unwrap_or_default();
    assert!(
        taints.iter().any(|t| t.key == TAINT_PROVIDER
            && t.value.as_deref() == Some("fake")
            && t.effect == "NoSchedule"),
        "taints: {taints:?}"
    );
    eventually(WAIT, "orphan deleted from the provider", || async {
        vnode.pod("default", "orphan").is_none().then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("web", "vk-1", true, "Always"))
        .await
        .expect("create web");
    pods.create(
        &PostParams::default(),
        &pod("intolerant", "vk-1", false, "Always"),
    )
    .await
    .expect("create intolerant");

    let running = eventually(WAIT, "web Running", || async {
        let p = pods.get_opt("web").await.ok()??;
        (phase(&p) == Some("Running")).then_some(p)
    })
    .await;
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("vk-1")
    );
    let statuses = running
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    assert!(
        statuses.iter().all(|c| c.ready) && !statuses.is_empty(),
        "{statuses:?}"
    );
    assert!(vnode.pod("default", "web").is_some());

    // The pod without the toleration is not scheduled on the tainted node (and there is no other node).
    let unschedulable = eventually(WAIT, "intolerant reported unschedulable", || async {
        let p = pods.get_opt("intolerant").await.ok()??;
        let c = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "PodScheduled")?
            .clone();
        (c.status == "False").then_some((p, c))
    })
    .await;
    assert_eq!(unschedulable.1.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        unschedulable
            .0
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref()),
        None
    );

    // Graceful deletion: the provider stops the pod, then the runtime deletes it with grace 0.
    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    eventually(WAIT, "web gone from the API", || async {
        matches!(pods.get_opt("web").await, Ok(None)).then_some(())
    })
    .await;
    assert!(vnode.pod("default", "web").is_none());
    assert!(cloud.count(Method::DeletePod) >= 1);

    // A provider error: the pod is Pending with reason ProviderFailed until the provider recovers.
    cloud.fail_always_for(Method::CreatePod, "default/flaky", FaultKind::Transient);
    pods.create(
        &PostParams::default(),
        &pod("flaky", "vk-1", true, "Always"),
    )
    .await
    .expect("create flaky");
    let failed = eventually(WAIT, "flaky ProviderFailed", || async {
        let p = pods.get_opt("flaky").await.ok()??;
        (p.status.as_ref()?.reason.as_deref() == Some(REASON_PROVIDER_FAILED)).then_some(p)
    })
    .await;
    assert_eq!(phase(&failed), Some("Pending"));
    cloud.clear_faults(Method::CreatePod);
    eventually(
        WAIT,
        "flaky Running after the provider recovered",
        || async {
            let p = pods.get_opt("flaky").await.ok()??;
            (phase(&p) == Some("Running")).then_some(())
        },
    )
    .await;

    // restartPolicy Never: a provider error fails the pod.
    cloud.fail_always_for(Method::CreatePod, "default/once", FaultKind::Transient);
    pods.create(&PostParams::default(), &pod("once", "vk-1", true, "Never"))
        .await
        .expect("create once");
    eventually(WAIT, "once Failed with ProviderFailed", || async {
        let p = pods.get_opt("once").await.ok()??;
        let s = p.status.as_ref()?;
        (s.phase.as_deref() == Some("Failed")
            && s.reason.as_deref() == Some(REASON_PROVIDER_FAILED))
        .then_some(())
    })
    .await;

    stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("runtime stops on shutdown")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn lease_advances_while_ping_succeeds_and_stops_when_it_fails() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client();
    let cloud = FakeCloud::new();
    let vnode = cloud.virtual_node("vk-2");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let heartbeat =
        Heartbeat::start(client.clone(), fast_heartbeat(), shutdown.clone()).expect("heartbeat");
    let registered = heartbeat
        .register(
            VirtualNodeConfig::new("vk-2", "fake").node(),
            Arc::new(vnode.clone()),
        )
        .await
        .expect("register");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = eventually(WAIT, "vk-2 Lease", || async {
        leases.get_opt("vk-2").await.ok()?
    })
    .await;
    let spec = lease.spec.clone().unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("vk-2"));
    assert_eq!(spec.lease_duration_seconds, Some(4));
    let owner = lease.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(owner[0].kind, "Node");
    assert_eq!(Some(owner[0].uid.clone()), registered.metadata.uid);

    // Renewals advance renewTime.
    let mut last = renew_time(&leases, "vk-2").await.unwrap_or_default();
    for _ in 0..3 {
        last = eventually(WAIT, "renewTime advances", || async {
            let t = renew_time(&leases, "vk-2").await?;
            (t > last).then_some(t)
        })
        .await;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get("vk-2").await.expect("node");
    assert_eq!(condition_status(&node, "Ready").as_deref(), Some("True"));
    assert!(heartbeat.metrics().renewals.get() >= 4);

    // A condition reported by the provider is posted at the next renewal.
    let posted_before = heartbeat.metrics().status_updates.get();
    heartbeat.set_conditions(
        "vk-2",
        vec![NodeCondition {
            type_: "MemoryPressure".into(),
            status: "True".into(),
            reason: Some("ProviderMemoryLow".into()),
            message: Some("the backend is short of memory".into()),
            ..NodeCondition::default()
        }],
    );
    let after_change = eventually(WAIT, "a status post after the change", || async {
        let n = heartbeat.metrics().status_updates.get();
        (n > posted_before).then_some(n)
    })
    .await;
    let node = nodes.get("vk-2").await.expect("node");
    assert_eq!(
        condition_status(&node, "MemoryPressure").as_deref(),
        Some("True")
    );
    // Unchanged conditions are not posted again within the report period, while the Lease keeps advancing.
    let renewals = heartbeat.metrics().renewals.get();
    eventually(WAIT, "three more renewals", || async {
        (heartbeat.metrics().renewals.get() >= renewals + 3).then_some(())
    })
    .await;
    assert_eq!(heartbeat.metrics().status_updates.get(), after_change);

    // The provider stops answering pings: no more Lease writes.
    cloud.fail_always_for(Method::Ping, "vk-2", FaultKind::Transient);
    eventually(WAIT, "a failed ping", || async {
        (heartbeat.metrics().ping_failures.get() >= 1).then_some(())
    })
    .await;
    let frozen = leases.get("vk-2").await.expect("lease");
    let skipped = heartbeat.metrics().ping_failures.get();
    eventually(WAIT, "three more failed pings", || async {
        (heartbeat.metrics().ping_failures.get() >= skipped + 3).then_some(())
    })
    .await;
    let after = leases.get("vk-2").await.expect("lease");
    assert_eq!(
        after.metadata.resource_version, frozen.metadata.resource_version,
        "the Lease was written while pings failed"
    );
    assert_eq!(
        after.spec.and_then(|s| s.renew_time),
        frozen.spec.and_then(|s| s.renew_time)
    );

    // The provider answers again: renewals resume.
    cloud.clear_faults(Method::Ping);
    let frozen_at = renew_time(&leases, "vk-2").await.unwrap_or_default();
    eventually(WAIT, "renewals resume", || async {
        let t = renew_time(&leases, "vk-2").await?;
        (t > frozen_at).then_some(())
    })
    .await;
    assert_eq!(heartbeat.metrics().renewal_failures.get(), 0);
}
