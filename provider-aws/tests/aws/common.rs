//! A moto server with a VPC the way a cluster's looks: two subnets in two zones (tagged for ELB and the cluster),
//! a cluster-tagged route table, and a provider pointed at it.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Instance, InstanceType, ResourceType, Tag, TagSpecification};
use cloudprovider_api::conformance::node_with_provider_id;
use k8s_openapi::api::core::v1::Node;
use provider_aws::{AwsCloud, AwsConfig, NodeGroupConfig, TAG_ROLE_ELB};
use test_support::{Moto, NodeBuilder};

pub const CLUSTER: &str = "test-cluster";
pub const REGION: &str = "us-east-1";
pub const CLUSTER_TAG: &str = "kubernetes.io/cluster/test-cluster";

pub struct Env {
    pub cloud: AwsCloud,
    pub vpc: String,
    pub subnets: Vec<String>,
    pub route_table: String,
    pub image: String,
    // Last: the server stops after the provider is dropped.
    pub _moto: Moto,
}

fn tags(resource: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            pairs
                .iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build()
}

pub fn base_config(moto: &Moto) -> AwsConfig {
    AwsConfig {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.endpoint_url().to_owned()),
        ..AwsConfig::new(CLUSTER)
    }
}

/// A provider for `config` with static test credentials.
pub async fn cloud(config: AwsConfig) -> AwsCloud {
    let sdk = AwsCloud::config_loader(&config)
        .test_credentials()
        .load()
        .await;
    AwsCloud::from_sdk_config(config, &sdk).unwrap_or_else(|e| panic!("provider: {e}"))
}

pub async fn env() -> Env {
    env_with(|_| {}).await
}

/// Starts moto, builds the VPC, and a provider whose config `adjust` may change (VPC and subnet are filled in).
pub async fn env_with(adjust: impl FnOnce(&mut AwsConfig)) -> Env {
    let moto = Moto::start().await.unwrap_or_else(|e| panic!("moto: {e}"));
    let setup = cloud(base_config(&moto)).await;
    let ec2 = setup.ec2_client();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .vpc()
        .and_then(|v| v.vpc_id())
        .map(str::to_owned)
        .unwrap_or_default();
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{}.0/24", i + 1))
            .availability_zone(*zone)
            .tag_specifications(tags(
                ResourceType::Subnet,
                &[
                    (TAG_ROLE_ELB, "1"),
                    (CLUSTER_TAG, "shared"),
                    ("Name", &format!("public-{zone}")),
                ],
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        subnets.push(
            subnet
                .subnet()
                .and_then(|s| s.subnet_id())
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // Another cluster's subnet in a third zone: never chosen.
    ec2.create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.9.0/24")
        .availability_zone("us-east-1c")
        .tag_specifications(tags(
            ResourceType::Subnet,
            &[
                (TAG_ROLE_ELB, "1"),
                ("kubernetes.io/cluster/other", "owned"),
            ],
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let route_table = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .tag_specifications(tags(ResourceType::RouteTable, &[(CLUSTER_TAG, "owned")]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .route_table()
        .and_then(|t| t.route_table_id())
        .map(str::to_owned)
        .unwrap_or_default();
    let image = ec2
        .describe_images()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .images()
        .first()
        .and_then(|i| i.image_id())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("moto has no AMI"));
    let mut config = base_config(&moto);
    config.vpc_id = Some(vpc.clone());
    config.subnet_id = Some(subnets[0].clone());
    adjust(&mut config);
    Env {
        cloud: cloud(config).await,
        vpc,
        subnets,
        route_table,
        image,
        _moto: moto,
    }
}

/// A node group of t3.medium instances in the first subnet.
pub fn group(env_image: &str, id: &str, min: u32, max: u32) -> NodeGroupConfig {
    NodeGroupConfig {
        id: id.into(),
        min_size: min,
        max_size: max,
        image_id: env_image.into(),
        instance_type: "t3.medium".into(),
        user_data: Some("#!/bin/sh\necho join\n".into()),
        tags: BTreeMap::from([("team".into(), "infra".into())]),
        labels: BTreeMap::from([("pool".into(), id.into())]),
        ..NodeGroupConfig::default()
    }
}

impl Env {
    /// Launches `count` instances (as a kubelet's machines) in subnet `subnet`, outside any node group.
    pub async fn launch(&self, count: i32, subnet: usize) -> Vec<Instance> {
        let out = self
            .cloud
            .ec2_client()
            .run_instances()
            .image_id(&self.image)
            .instance_type(InstanceType::T3Medium)
            .min_count(count)
            .max_count(count)
            .subnet_id(&self.subnets[subnet])
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        out.instances().to_vec()
    }

    pub async fn describe(&self, id: &str) -> Instance {
        self.cloud
            .ec2_client()
            .describe_instances()
            .filters(Filter::builder().name("instance-id").values(id).build())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .cloned()
            .unwrap_or_else(|| panic!("no instance {id}"))
    }

    pub async fn terminate(&self, id: &str) {
        self.cloud
            .ec2_client()
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
    }
}

pub fn id(instance: &Instance) -> String {
    instance.instance_id().unwrap_or_default().to_owned()
}

/// The Node a kubelet on `instance` registers: named after the private DNS name, with or without provider ID.
pub fn node(instance: &Instance, with_provider_id: bool) -> Node {
    let name = instance.private_dns_name().unwrap_or_default();
    if with_provider_id {
        let zone = instance
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default();
        node_with_provider_id(name, &format!("aws:///{zone}/{}", id(instance)))
    } else {
        NodeBuilder::new(name).uid(format!("uid-{name}")).build()
    }
}
