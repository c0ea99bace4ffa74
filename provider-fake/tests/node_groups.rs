//! Node groups: provisioning delay and state transitions (paused time), faults of launches, bounds, deletion,
//! cancelling requests, templates, and the link to the Instances capability.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cloudprovider_api::{
    CloudError, CloudInstanceErrorClass, CloudInstanceState, Instances, NodeGroups,
};
use common::{node, node_with_provider_id, ok};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use provider_fake::{
    FakeCloud, FakeError, FakeInstance, FakeInstanceState, FakeTaint, LABEL_NODE_GROUP,
    NodeGroupSpec, NodeTemplate, Provisioning,
};

fn cloud_with(spec: NodeGroupSpec) -> FakeCloud {
    let cloud = FakeCloud::new();
    ok(cloud.add_node_group(spec));
    cloud
}

async fn states(cloud: &FakeCloud, group: &str) -> Vec<(String, CloudInstanceState, bool)> {
    ok(NodeGroups::instances(cloud, group).await)
        .into_iter()
        .map(|i| (i.provider_id, i.state, i.error.is_some()))
        .collect()
}

fn st(id: &str, state: CloudInstanceState, error: bool) -> (String, CloudInstanceState, bool) {
    (id.to_owned(), state, error)
}

#[tokio::test(start_paused = true)]
async fn instances_are_creating_until_the_provision_delay_passes() {
    let cloud =
        cloud_with(NodeGroupSpec::new("w", 0, 5).with_provision_delay(Duration::from_secs(10)));
    ok(cloud.increase_size("w", 2).await);
    assert_eq!(ok(cloud.target_size("w").await), 2);
    assert_eq!(
        states(&cloud, "w").await,
        [
            st("fake://w-1", CloudInstanceState::Creating, false),
            st("fake://w-2", CloudInstanceState::Creating, false)
        ]
    );
    // Creating instances exist for the Instances capability (their Node may register early).
    assert!(ok(cloud.instance_exists(&node("w-1")).await));
    assert_eq!(
        cloud.instance("w-1").map(|i| i.state),
        Some(FakeInstanceState::Creating)
    );

    tokio::time::advance(Duration::from_secs(5)).await;
    ok(cloud.increase_size("w", 1).await);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        states(&cloud, "w").await,
        [
            st("fake://w-1", CloudInstanceState::Running, false),
            st("fake://w-2", CloudInstanceState::Running, false),
            st("fake://w-3", CloudInstanceState::Creating, false),
        ]
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(
        states(&cloud, "w")
            .await
            .iter()
            .all(|s| s.1 == CloudInstanceState::Running)
    );
}

#[tokio::test]
async fn without_delay_instances_run_at_once_and_are_instances() {
    let template = NodeTemplate {
        instance_type: Some("fake.large".into()),
        zone: Some("z3".into()),
        labels: BTreeMap::from([("pool".to_owned(), "batch".to_owned())]),
        ..NodeTemplate::default()
    };
    let cloud = cloud_with(NodeGroupSpec::new("batch", 1, 3).with_template(template));
    // The initial size defaults to the minimum.
    assert_eq!(
        states(&cloud, "batch").await,
        [st("fake://batch-1", CloudInstanceState::Running, false)]
    );
    ok(cloud.increase_size("batch", 1).await);
    assert_eq!(
        states(&cloud, "batch").await[1],
        st("fake://batch-2", CloudInstanceState::Running, false)
    );

    let md = ok(cloud.instance_metadata(&node("batch-2")).await);
    assert_eq!(md.provider_id, "fake://batch-2");
    assert_eq!(
        (md.instance_type.as_str(), md.zone.as_str()),
        ("fake.large", "z3")
    );
    assert_eq!(
        md.additional_labels.get("pool").map(String::as_str),
        Some("batch")
    );
    assert_eq!(
        md.additional_labels
            .get(LABEL_NODE_GROUP)
            .map(String::as_str),
        Some("batch")
    );

    let owner = ok(cloud
        .node_group_for_node(&node_with_provider_id("x", "fake://batch-2"))
        .await);
    assert_eq!(owner.as_deref(), Some("batch"));
    assert_eq!(
        ok(cloud.node_group_for_node(&node("batch-1")).await).as_deref(),
        Some("batch")
    );
    assert_eq!(ok(cloud.node_group_for_node(&node("stranger")).await), None);
    let members: Vec<String> = ok(cloud.node_group_members("batch"))
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(members, ["batch-1", "batch-2"]);
}

#[tokio::test]
async fn names_taken_by_hand_are_skipped() {
    let cloud = cloud_with(NodeGroupSpec::new("g", 0, 3));
    ok(cloud.add_instance(FakeInstance::new("g-1")));
    ok(cloud.increase_size("g", 1).await);
    assert_eq!(
        states(&cloud, "g").await,
        [st("fake://g-2", CloudInstanceState::Running, false)]
    );
    assert_eq!(ok(cloud.node_group_for_node(&node("g-1")).await), None);
}

#[tokio::test]
async fn bounds_and_unknown_groups() {
    let cloud = cloud_with(NodeGroupSpec::new("w", 1, 3).with_initial_size(2));
    let too_many = cloud.increase_size("w", 2).await;
    assert!(
        matches!(too_many, Err(CloudError::InvalidInput { .. })),
        "{too_many:?}"
    );
    assert!(matches!(
        cloud.increase_size("w", 0).await,
        Err(CloudError::InvalidInput { .. })
    ));
    assert!(matches!(
        cloud.increase_size("w", u32::MAX).await,
        Err(CloudError::InvalidInput { .. })
    ));
    assert_eq!(ok(cloud.target_size("w").await), 2);

    for r in [
        cloud.target_size("nope").await.map(|_| ()),
        cloud.increase_size("nope", 1).await,
        cloud.delete_instances("nope", &[]).await,
        cloud.decrease_target_size("nope", 1).await,
        cloud.template_node("nope").await.map(|_| ()),
        NodeGroups::instances(&cloud, "nope").await.map(|_| ()),
    ] {
        assert!(
            matches!(
                r,
                Err(CloudError::NotFound {
                    kind: "node group",
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let groups = ok(NodeGroups::node_groups(&cloud).await);
    assert_eq!(
        (
            groups[0].id.as_str(),
            groups[0].min_size,
            groups[0].max_size
        ),
        ("w", 1, 3)
    );

    assert_eq!(
        cloud.add_node_group(NodeGroupSpec::new("w", 0, 1)),
        Err(FakeError::DuplicateNodeGroup("w".into()))
    );
    assert!(matches!(
        cloud.add_node_group(NodeGroupSpec::new("bad", 3, 1)),
        Err(FakeError::InvalidConfig { .. })
    ));
    assert!(matches!(
        cloud.add_node_group(NodeGroupSpec::new("bad", 0, 1).with_initial_size(2)),
        Err(FakeError::InvalidConfig { .. })
    ));
}

#[tokio::test]
async fn delete_instances_terminates_and_respects_the_minimum() {
    let cloud = cloud_with(NodeGroupSpec::new("w", 1, 5).with_initial_size(3));
    let ids = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("fake://{n}"))
            .collect::<Vec<_>>()
    };

    let unknown = cloud.delete_instances("w", &ids(&["w-1", "nope"])).await;
    assert!(
        matches!(unknown, Err(CloudError::NotFound { .. })),
        "{unknown:?}"
    );
    let below_min = cloud
        .delete_instances("w", &ids(&["w-1", "w-2", "w-3"]))
        .await;
    assert!(
        matches!(below_min, Err(CloudError::InvalidInput { .. })),
        "{below_min:?}"
    );
    assert_eq!(
        ok(cloud.target_size("w").await),
        3,
        "rejected deletes change nothing"
    );
    assert!(ok(cloud.instance_exists(&node("w-1")).await));

    // Duplicates in the request count once.
    ok(cloud.delete_instances("w", &ids(&["w-2", "w-2"])).await);
    assert_eq!(ok(cloud.target_size("w").await), 2);
    assert!(!ok(cloud.instance_exists(&node("w-2")).await));
    assert_eq!(ok(cloud.node_group_for_node(&node("w-2")).await), None);
    let listed: Vec<String> = states(&cloud, "w").await.into_iter().map(|s| s.0).collect();
    assert_eq!(listed, ["fake://w-1", "fake://w-3"]);
    // A deleted instance is no longer in the group.
    assert!(matches!(
        cloud.delete_instances("w", &ids(&["w-2"])).await,
        Err(CloudError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn decrease_target_size_only_cancels_unfulfilled_requests() {
    let cloud = cloud_with(NodeGroupSpec::new("w", 0, 5).with_initial_size(1));
    ok(cloud.set_provision_delay("w", Duration::from_secs(30)));
    ok(cloud.increase_size("w", 2).await);
    assert_eq!(ok(cloud.target_size("w").await), 3);
    // Only two are pending: lowering by three would delete a running instance.
    let r = cloud.decrease_target_size("w", 3).await;
    assert!(matches!(r, Err(CloudError::InvalidInput { .. })), "{r:?}");
    assert!(matches!(
        cloud.decrease_target_size("w", 0).await,
        Err(CloudError::InvalidInput { .. })
    ));
    // The newest request is cancelled first.
    ok(cloud.decrease_target_size("w", 1).await);
    assert_eq!(ok(cloud.target_size("w").await), 2);
    assert_eq!(
        cloud.instance("w-3").map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
    assert_eq!(
        states(&cloud, "w").await,
        [
            st("fake://w-1", CloudInstanceState::Running, false),
            st("fake://w-2", CloudInstanceState::Creating, false)
        ]
    );
    // Once running, nothing is pending any more.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(matches!(
        cloud.decrease_target_size("w", 1).await,
        Err(CloudError::InvalidInput { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn never_ready_instances_stay_creating() {
    let cloud =
        cloud_with(NodeGroupSpec::new("w", 0, 2).with_provisioning(Provisioning::NeverReady));
    ok(cloud.increase_size("w", 1).await);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(
        states(&cloud, "w").await,
        [st("fake://w-1", CloudInstanceState::Creating, false)]
    );
    // The request can be cancelled.
    ok(cloud.decrease_target_size("w", 1).await);
    assert_eq!(ok(cloud.target_size("w").await), 0);
}

#[tokio::test(start_paused = true)]
async fn failed_launches_report_out_of_resources() {
    let spec = NodeGroupSpec::new("w", 0, 4)
        .with_provisioning(Provisioning::out_of_resources())
        .with_provision_delay(Duration::from_secs(5));
    let cloud = cloud_with(spec);
    ok(cloud.increase_size("w", 1).await);
    assert_eq!(
        states(&cloud, "w").await,
        [st("fake://w-1", CloudInstanceState::Creating, false)]
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    let instances = ok(NodeGroups::instances(&cloud, "w").await);
    let error = instances[0]
        .error
        .clone()
        .unwrap_or_else(|| panic!("no error: {instances:?}"));
    assert_eq!(instances[0].state, CloudInstanceState::Creating);
    assert_eq!(error.class, CloudInstanceErrorClass::OutOfResources);
    assert_eq!(error.code, "InsufficientInstanceCapacity");
    // A failed instance does not exist, but still counts until deleted.
    assert!(!ok(cloud.instance_exists(&node("w-1")).await));
    assert_eq!(
        cloud.instance("w-1").map(|i| i.state),
        Some(FakeInstanceState::Failed)
    );
    assert_eq!(ok(cloud.target_size("w").await), 1);
    ok(cloud
        .delete_instances("w", &["fake://w-1".to_owned()])
        .await);
    assert_eq!(ok(cloud.target_size("w").await), 0);

    // Without a delay the failure is immediate; switching provisioning back makes later launches succeed.
    ok(cloud.set_provision_delay("w", Duration::ZERO));
    ok(cloud.increase_size("w", 1).await);
    assert_eq!(
        states(&cloud, "w").await,
        [st("fake://w-2", CloudInstanceState::Creating, true)]
    );
    ok(cloud.set_node_group_provisioning("w", Provisioning::Succeed));
    ok(cloud.increase_size("w", 1).await);
    assert_eq!(
        states(&cloud, "w").await[1],
        st("fake://w-3", CloudInstanceState::Running, false)
    );
    assert_eq!(
        cloud.set_node_group_provisioning("x", Provisioning::Succeed),
        Err(FakeError::UnknownNodeGroup("x".into()))
    );
}

#[tokio::test]
async fn externally_terminated_members_are_deleting() {
    let cloud = cloud_with(NodeGroupSpec::new("w", 0, 3).with_initial_size(2));
    ok(cloud.set_instance_state("w-1", FakeInstanceState::Terminated));
    assert_eq!(ok(cloud.target_size("w").await), 1);
    assert_eq!(
        states(&cloud, "w").await[0],
        st("fake://w-1", CloudInstanceState::Deleting, false)
    );
    // Removing an instance by hand takes it out of its group.
    ok(cloud.remove_instance("w-2"));
    assert_eq!(states(&cloud, "w").await.len(), 1);
}

#[tokio::test]
async fn template_node_has_labels_taints_and_resources() {
    let template = NodeTemplate {
        labels: BTreeMap::from([("pool".to_owned(), "gpu".to_owned())]),
        taints: vec![FakeTaint {
            key: "gpu".into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
        }],
        cpu: "8".into(),
        memory: "32Gi".into(),
        pods: "58".into(),
        ..NodeTemplate::default()
    };
    let cloud = cloud_with(NodeGroupSpec::new("gpu", 0, 2).with_template(template));
    let node = ok(cloud.template_node("gpu").await);
    let labels = node.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("pool").map(String::as_str), Some("gpu"));
    assert_eq!(
        labels.get(LABEL_NODE_GROUP).map(String::as_str),
        Some("gpu")
    );
    assert_eq!(
        labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("fake.small")
    );
    assert_eq!(
        labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("fake-zone-1a")
    );
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert_eq!(
        (taints[0].key.as_str(), taints[0].effect.as_str()),
        ("gpu", "NoSchedule")
    );
    let status = node.status.unwrap_or_default();
    for list in [status.capacity, status.allocatable] {
        let list = list.unwrap_or_default();
        assert_eq!(list.get("cpu"), Some(&Quantity("8".into())));
        assert_eq!(list.get("memory"), Some(&Quantity("32Gi".into())));
        assert_eq!(list.get("pods"), Some(&Quantity("58".into())));
    }
}
