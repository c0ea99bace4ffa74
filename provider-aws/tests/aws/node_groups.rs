//! On-demand capacity: launch from the template, list (pending included), terminate specific instances.

use cloudprovider_api::{CloudError, CloudInstanceState, NodeGroups};
use provider_aws::{TAG_NODE_GROUP, instance_id_from_provider_id};

use crate::common::{CLUSTER_TAG, env_with, group};

#[tokio::test]
async fn launch_list_and_terminate() {
    let env = env_with(|_| {}).await;
    let mut config = env.cloud.config().clone();
    config.node_groups = vec![group(&env.image, "workers", 1, 3)];
    let cloud = crate::common::cloud(config).await;

    assert_eq!(cloud.target_size("workers").await.ok(), Some(0));
    cloud
        .increase_size("workers", 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cloud.target_size("workers").await.ok(), Some(2));
    let listed = cloud
        .instances("workers")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|i| matches!(
        i.state,
        CloudInstanceState::Creating | CloudInstanceState::Running
    )));

    // Launched from the template: type, subnet, tags, user data.
    let id = instance_id_from_provider_id(&listed[0].provider_id).unwrap_or_else(|e| panic!("{e}"));
    let instance = env.describe(&id).await;
    assert_eq!(
        instance.instance_type().map(|t| t.as_str()),
        Some("t3.medium")
    );
    assert_eq!(instance.image_id(), Some(env.image.as_str()));
    assert_eq!(instance.subnet_id(), Some(env.subnets[0].as_str()));
    let tag = |k: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    assert_eq!(tag(CLUSTER_TAG).as_deref(), Some("owned"));
    assert_eq!(tag(TAG_NODE_GROUP).as_deref(), Some("workers"));
    assert_eq!(tag("team").as_deref(), Some("infra"));
    let user_data = env
        .cloud
        .ec2_client()
        .describe_instance_attribute()
        .instance_id(&id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let encoded = user_data
        .user_data()
        .and_then(|u| u.value())
        .unwrap_or_default();
    let decoded = aws_smithy_types::base64::decode(encoded).unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&decoded), "#!/bin/sh\necho join\n");

    // Beyond the maximum: rejected, nothing launched.
    assert!(matches!(
        cloud.increase_size("workers", 2).await,
        Err(CloudError::InvalidInput { .. })
    ));
    assert_eq!(cloud.target_size("workers").await.ok(), Some(2));

    // Terminate one specific instance.
    let node = cloudprovider_api::conformance::node_with_provider_id("n", &listed[0].provider_id);
    assert_eq!(
        cloud.node_group_for_node(&node).await.ok(),
        Some(Some("workers".to_owned()))
    );
    cloud
        .delete_instances("workers", std::slice::from_ref(&listed[0].provider_id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cloud.target_size("workers").await.ok(), Some(1));
    let state = env
        .describe(&id)
        .await
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned());
    assert!(
        matches!(state.as_deref(), Some("terminated" | "shutting-down")),
        "{state:?}"
    );
    // The minimum is 1: the last one stays.
    assert!(matches!(
        cloud
            .delete_instances("workers", std::slice::from_ref(&listed[1].provider_id))
            .await,
        Err(CloudError::InvalidInput { .. })
    ));

    // An instance outside the group cannot be deleted through it.
    let stranger = env.launch(1, 0).await.remove(0);
    let stranger_id = format!(
        "aws:///us-east-1a/{}",
        stranger.instance_id().unwrap_or_default()
    );
    assert!(matches!(
        cloud.delete_instances("workers", &[stranger_id]).await,
        Err(CloudError::NotFound { .. })
    ));

    // The template node has the instance type's capacity (DescribeInstanceTypes) and the group's labels.
    let template = cloud
        .template_node("workers")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let capacity = template.status.and_then(|s| s.capacity).unwrap_or_default();
    assert_eq!(capacity.get("cpu").map(|q| q.0.as_str()), Some("2"));
    assert_eq!(capacity.get("memory").map(|q| q.0.as_str()), Some("4096Mi"));
    let labels = template.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("pool").map(String::as_str), Some("workers"));
    assert_eq!(
        labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("t3.medium")
    );
}
