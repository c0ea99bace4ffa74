//! Instances: metadata and addresses as upstream, provider ID forms, and batched DescribeInstances on the node sync
//! path (`instance_states`).

use cloudprovider_api::conformance::node_with_provider_id;
use cloudprovider_api::{CloudError, InstanceState, Instances, NodeAddressType, Zones};
use provider_aws::DESCRIBE_BATCH_SIZE;

use crate::common::{REGION, env, id, node};

#[tokio::test]
async fn metadata_addresses_and_provider_id_forms() {
    let env = env().await;
    let instance = env.launch(1, 1).await.remove(0);
    let iid = id(&instance);
    let described = env.describe(&iid).await;
    let private_ip = described
        .private_ip_address()
        .unwrap_or_default()
        .to_owned();
    let private_dns = described.private_dns_name().unwrap_or_default().to_owned();
    assert!(!private_ip.is_empty() && !private_dns.is_empty());

    let md = env
        .cloud
        .instance_metadata(&node(&instance, false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(md.provider_id, format!("aws:///us-east-1b/{iid}"));
    assert_eq!(md.instance_type, "t3.medium");
    assert_eq!(md.zone, "us-east-1b");
    assert_eq!(md.region, REGION);
    let kinds: Vec<(NodeAddressType, &str)> = md
        .node_addresses
        .iter()
        .map(|a| (a.kind, a.address.as_str()))
        .collect();
    assert_eq!(kinds[0], (NodeAddressType::InternalIp, private_ip.as_str()));
    assert!(kinds.contains(&(NodeAddressType::InternalDns, private_dns.as_str())));
    assert!(kinds.contains(&(NodeAddressType::Hostname, private_dns.as_str())));
    if let Some(public_ip) = described.public_ip_address() {
        assert!(kinds.contains(&(NodeAddressType::ExternalIp, public_ip)));
    }

    // Every accepted provider ID form finds the same instance.
    for form in [
        format!("aws:///us-east-1b/{iid}"),
        format!("aws:////{iid}"),
        iid.clone(),
    ] {
        let n = node_with_provider_id("n", &form);
        assert!(
            env.cloud.instance_exists(&n).await.unwrap_or(false),
            "{form}"
        );
    }
    // Zones of the instance, by provider ID and by node name.
    let by_id = env
        .cloud
        .zone_by_provider_id(&md.provider_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let by_name = env
        .cloud
        .zone_by_node_name(&private_dns)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (by_id.failure_domain.as_str(), by_id.region.as_str()),
        ("us-east-1b", REGION)
    );
    assert_eq!(by_name, by_id);
    assert!(matches!(
        env.cloud
            .zone_by_node_name("ip-10-9-9-9.ec2.internal")
            .await,
        Err(CloudError::NotFound { .. })
    ));

    // Another provider's ID is invalid input, never "gone".
    let foreign = node_with_provider_id("n", "gce://project/zone/vm");
    assert!(matches!(
        env.cloud.instance_exists(&foreign).await,
        Err(CloudError::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn stopped_is_shutdown_and_terminated_is_gone() {
    let env = env().await;
    let mut instances = env.launch(2, 0).await;
    let (a, b) = (instances.remove(0), instances.remove(0));
    env.cloud
        .ec2_client()
        .stop_instances()
        .instance_ids(id(&a))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    env.terminate(&id(&b)).await;
    let (na, nb) = (node(&a, true), node(&b, true));
    assert!(env.cloud.instance_exists(&na).await.unwrap_or(false));
    assert!(env.cloud.instance_shutdown(&na).await.unwrap_or(false));
    assert!(!env.cloud.instance_exists(&nb).await.unwrap_or(true));
    assert!(matches!(
        env.cloud.instance_metadata(&nb).await,
        Err(CloudError::NotFound { .. })
    ));
}

/// The measurement the issue asks for: DescribeInstances calls per 100 nodes on the node sync path.
#[tokio::test]
async fn instance_states_batches_describe_instances() {
    let env = env().await;
    let instances = env.launch(100, 0).await;
    env.terminate(&id(&instances[7])).await;
    env.cloud
        .ec2_client()
        .stop_instances()
        .instance_ids(id(&instances[9]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));

    let calls = env.cloud.api_calls();
    for with_provider_id in [true, false] {
        let nodes: Vec<_> = instances
            .iter()
            .map(|i| node(i, with_provider_id))
            .collect();
        calls.reset();
        let states = env
            .cloud
            .instance_states(&nodes.iter().collect::<Vec<_>>())
            .await;
        let per_100 = calls.count("DescribeInstances");
        println!(
            "instance_states of 100 nodes (provider IDs: {with_provider_id}): {per_100} DescribeInstances, {} AWS calls in all",
            calls.total()
        );
        assert_eq!(per_100, 1, "{:?}", calls.snapshot());
        assert_eq!(calls.total(), 1, "{:?}", calls.snapshot());
        assert_eq!(states.len(), 100);
        for (i, state) in states.iter().enumerate() {
            let want = match i {
                7 => InstanceState::Gone,
                9 => InstanceState::Shutdown,
                _ => InstanceState::Running,
            };
            assert_eq!(state.as_ref().ok(), Some(&want), "node {i}");
        }
    }

    // 400 nodes (100 real, 300 that never existed): ceil(400 / 150) = 3 calls, order kept.
    let mut nodes: Vec<_> = instances.iter().map(|i| node(i, true)).collect();
    for n in 0..300 {
        nodes.push(node_with_provider_id(
            &format!("ghost-{n}"),
            &format!("aws:///us-east-1a/i-{n:017x}"),
        ));
    }
    calls.reset();
    let states = env
        .cloud
        .instance_states(&nodes.iter().collect::<Vec<_>>())
        .await;
    assert_eq!(
        calls.count("DescribeInstances"),
        nodes.len().div_ceil(DESCRIBE_BATCH_SIZE) as u64
    );
    assert_eq!(states[0].as_ref().ok(), Some(&InstanceState::Running));
    assert!(
        states[100..]
            .iter()
            .all(|s| matches!(s, Ok(InstanceState::Gone)))
    );
}

/// Upstream's metric names on the manager's registry: latency of calls that succeeded, errors of calls that failed
/// (here: a cloud whose endpoint refuses connections), `errors` without the `_total` suffix as upstream exposes it.
#[tokio::test]
async fn api_calls_are_exported_under_upstreams_metric_names() {
    use cloudprovider_api::CloudProvider;
    let env = env().await;
    let instance = env.launch(1, 1).await.remove(0);
    let mut registry = prometheus_client::registry::Registry::default();
    env.cloud.register_metrics(&mut registry);
    env.cloud
        .instance_metadata(&node(&instance, false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let unreachable = crate::common::cloud(provider_aws::AwsConfig {
        endpoint_url: Some("http://127.0.0.1:1".into()),
        ..crate::common::base_config(&env._moto)
    })
    .await;
    unreachable.register_metrics(&mut registry);
    assert!(
        unreachable
            .instance_metadata(&node(&instance, false))
            .await
            .is_err()
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .unwrap_or_else(|e| panic!("{e}"));
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert!(
        value(
            r#"cloudprovider_aws_api_request_duration_seconds_count{request="DescribeInstances"}"#
        ) >= 1.0
    );
    assert!(
        text.contains("# TYPE cloudprovider_aws_api_request_errors unknown"),
        "{text}"
    );
    assert!(value(r#"cloudprovider_aws_api_request_errors{request="DescribeInstances"}"#) >= 1.0);
}
