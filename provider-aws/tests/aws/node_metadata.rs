//! What Nodes get beyond upstream's basic addresses: IPv6 addresses with `nodeIPFamilies`, the
//! `topology.k8s.aws/zone-id` label, and credentials of an assumed role (`roleArn`) — against moto.

use aws_sdk_ec2::types::InstanceType;
use cloudprovider_api::{Instances, NodeAddressType};
use provider_aws::{AwsCloud, IpFamily, LABEL_ZONE_ID};
use test_support::AwsFaultProxy;

use crate::common::{Env, cloud, env, env_with, node};

/// A subnet with an IPv6 block in a VPC with one, and an instance in it with one IPv6 address.
async fn dual_stack_instance(env: &Env) -> aws_sdk_ec2::types::Instance {
    let ec2 = env.cloud.ec2_client();
    ec2.associate_vpc_cidr_block()
        .vpc_id(&env.vpc)
        .amazon_provided_ipv6_cidr_block(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let subnet = ec2
        .create_subnet()
        .vpc_id(&env.vpc)
        .cidr_block("10.0.7.0/24")
        .ipv6_cidr_block("2600:1f18:1:7::/64")
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .subnet()
        .and_then(|s| s.subnet_id())
        .map(str::to_owned)
        .unwrap_or_default();
    let out = ec2
        .run_instances()
        .image_id(&env.image)
        .instance_type(InstanceType::T3Medium)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .ipv6_address_count(1)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.instances()[0].clone()
}

fn ipv6_of(instance: &aws_sdk_ec2::types::Instance) -> Vec<String> {
    instance
        .network_interfaces()
        .iter()
        .filter_map(|n| {
            n.ipv6_addresses()
                .first()?
                .ipv6_address()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn ipv6_addresses_follow_node_ip_families() {
    let env = env_with(|c| c.node_ip_families = vec![IpFamily::Ipv4, IpFamily::Ipv6]).await;
    let instance = dual_stack_instance(&env).await;
    let v6 = ipv6_of(
        &env.describe(instance.instance_id().unwrap_or_default())
            .await,
    );
    assert_eq!(
        v6.len(),
        1,
        "moto gave the instance no IPv6 address: {instance:?}"
    );
    let md = env
        .cloud
        .instance_metadata(&node(&instance, true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let internal: Vec<&str> = md
        .node_addresses
        .iter()
        .filter(|a| a.kind == NodeAddressType::InternalIp)
        .map(|a| a.address.as_str())
        .collect();
    // IPv4 first (the listed order), then the interface's IPv6 address.
    assert_eq!(
        internal.last(),
        Some(&v6[0].as_str()),
        "{:?}",
        md.node_addresses
    );
    assert!(internal[0].starts_with("10.0.7."), "{internal:?}");

    // IPv6 first, then IPv4.
    let mut config = env.cloud.config().clone();
    config.node_ip_families = vec![IpFamily::Ipv6, IpFamily::Ipv4];
    let v6_first = cloud(config).await;
    let md = v6_first
        .instance_metadata(&node(&instance, true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        md.node_addresses[0].address, v6[0],
        "{:?}",
        md.node_addresses
    );

    // The default is IPv4 only.
    let mut config = env.cloud.config().clone();
    config.node_ip_families = Vec::new();
    let md = cloud(config)
        .await
        .instance_metadata(&node(&instance, true))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !md.node_addresses.iter().any(|a| a.address.contains(':')),
        "{:?}",
        md.node_addresses
    );
}

#[tokio::test]
async fn nodes_get_the_zone_id_label_from_one_cached_lookup() {
    let env = env().await;
    let instances = env.launch(2, 0).await;
    let zones = env
        .cloud
        .ec2_client()
        .describe_availability_zones()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let want = zones
        .availability_zones()
        .iter()
        .find(|z| z.zone_name() == Some("us-east-1a"))
        .and_then(|z| z.zone_id())
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(!want.is_empty(), "moto has no zone ID");
    let calls = env.cloud.api_calls();
    calls.reset();
    for instance in &instances {
        let md = env
            .cloud
            .instance_metadata(&node(instance, true))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(md.additional_labels.get(LABEL_ZONE_ID), Some(&want));
    }
    assert_eq!(
        calls.count("DescribeAvailabilityZones"),
        1,
        "{:?}",
        calls.snapshot()
    );
    // A Node that has the label already keeps its own value.
    let mut labelled = node(&instances[0], true);
    labelled.metadata.labels = Some([(LABEL_ZONE_ID.to_owned(), "mine".to_owned())].into());
    let md = env
        .cloud
        .instance_metadata(&labelled)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        md.additional_labels.is_empty(),
        "{:?}",
        md.additional_labels
    );
}

#[tokio::test]
async fn role_arn_calls_aws_with_the_assumed_role() {
    let env = env().await;
    let instance = env.launch(1, 0).await.remove(0);
    let proxy = AwsFaultProxy::start(env._moto.endpoint_url(), 7)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    proxy.record(&["AssumeRole"]);
    let mut config = env.cloud.config().clone();
    config.endpoint_url = Some(proxy.url());
    config.role_arn = Some("arn:aws:iam::123456789012:role/kube-cloud".into());
    let sdk = AwsCloud::config_loader(&config)
        .test_credentials()
        .load()
        .await;
    let sdk = AwsCloud::assume_role(&config, sdk).await;
    let assumed = AwsCloud::from_sdk_config(config, &sdk).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        assumed
            .instance_exists(&node(&instance, true))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    let requests = proxy.requests("AssumeRole");
    assert_eq!(
        requests.len(),
        1,
        "one AssumeRole, then cached credentials: {requests:?}"
    );
    assert!(
        requests[0].contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fkube-cloud")
            && requests[0].contains("RoleSessionName=kube-cloud-rs"),
        "{}",
        requests[0]
    );
    assert!(
        assumed
            .instance_exists(&node(&instance, true))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert_eq!(proxy.requests("AssumeRole").len(), 1);
}
