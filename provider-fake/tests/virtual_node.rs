//! The fake virtual node: pods run Pending → Running → Succeeded/Failed, notifications, deletion, faults.

use std::time::Duration;

use cloudprovider_api::{CloudError, NodeProvider, PodLifecycle};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use provider_fake::{FakeCloud, FaultKind, Method, PodBehaviour};

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("img:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn phase(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.phase.clone())
}

#[tokio::test(start_paused = true)]
async fn pods_run_through_their_phases_and_subscribers_hear_each() {
    let cloud = FakeCloud::new();
    let node = cloud.virtual_node("vk");
    node.set_pod_behaviour(PodBehaviour {
        start_delay: Duration::from_secs(1),
        run_for: Some(Duration::from_secs(5)),
        exit_code: 3,
    });
    let mut notes = node
        .pod_notifier()
        .map(|n| n.notify_pods())
        .expect("the fake notifies");

    node.create_pod(&pod("a")).await.expect("create");
    let seen: Vec<Option<String>> = notes.by_ref().take(3).map(|p| phase(&p)).collect().await;
    assert_eq!(
        seen,
        vec![
            Some("Pending".into()),
            Some("Running".into()),
            Some("Failed".into())
        ]
    );
    let status = node
        .get_pod_status("ns", "a")
        .await
        .expect("status")
        .expect("known");
    let terminated = status.container_statuses.unwrap_or_default()[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(terminated.exit_code, 3);
    // Creating the same pod again is a no-op.
    node.create_pod(&pod("a")).await.expect("create again");
    assert_eq!(
        phase(&node.pod("ns", "a").expect("a")),
        Some("Failed".into())
    );
}

#[tokio::test(start_paused = true)]
async fn deletion_reports_every_container_terminated_and_forgets_the_pod() {
    let cloud = FakeCloud::new();
    let node = cloud.virtual_node("vk");
    let mut notes = node
        .pod_notifier()
        .map(|n| n.notify_pods())
        .expect("notifier");
    node.create_pod(&pod("b")).await.expect("create");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        phase(&node.pod("ns", "b").expect("b")),
        Some("Running".into())
    );
    node.delete_pod(&pod("b")).await.expect("delete");
    node.delete_pod(&pod("b"))
        .await
        .expect("delete twice is fine");
    assert!(node.get_pod("ns", "b").await.expect("get").is_none());
    let last = notes
        .by_ref()
        .take(3)
        .collect::<Vec<_>>()
        .await
        .pop()
        .expect("note");
    let statuses = last
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    assert!(!statuses.is_empty());
    assert!(
        statuses
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
    );
    assert!(node.get_pods().await.expect("list").is_empty());
}

#[tokio::test]
async fn faults_apply_to_pod_methods_and_ping_by_key() {
    let cloud = FakeCloud::new();
    let node = cloud.virtual_node("vk");
    cloud.fail_next_for(Method::CreatePod, "ns/c", 1, FaultKind::Transient);
    let err = node.create_pod(&pod("c")).await.err();
    assert!(matches!(err, Some(CloudError::Transient { .. })), "{err:?}");
    assert!(
        node.pod("ns", "c").is_none(),
        "a failed create has no effect"
    );
    node.create_pod(&pod("c")).await.expect("second create");
    assert!(node.pod("ns", "c").is_some());

    node.ping().await.expect("ping");
    cloud.fail_always_for(Method::Ping, "vk", FaultKind::Transient);
    assert!(node.ping().await.is_err());
    // Another node of the same cloud is not affected.
    cloud
        .virtual_node("other")
        .ping()
        .await
        .expect("other ping");
    cloud.clear_faults(Method::Ping);
    node.ping().await.expect("ping again");
    assert_eq!(cloud.count(Method::Ping), 4);
    assert_eq!(cloud.count(Method::CreatePod), 2);
}
