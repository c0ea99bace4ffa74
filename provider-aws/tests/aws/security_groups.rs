//! Node security-group rules of Network Load Balancers against moto: the client rules follow the source ranges,
//! the health-check rules the NLB's subnets, the MTU rules the clients; deletion removes exactly what was added and
//! leaves the rules someone else made.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{
    InstanceType, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
};
use cloudprovider_api::conformance::load_balancer_service;
use cloudprovider_api::{CloudError, LoadBalancers, default_load_balancer_name};
use k8s_openapi::api::core::v1::{Node, Service};
use provider_aws::annotations::{
    ANNOTATION_HC_PORT, ANNOTATION_LOAD_BALANCER_TYPE, ANNOTATION_SOURCE_RANGES,
};
use provider_aws::{NLB_CLIENT_RULE, NLB_HEALTH_RULE, NLB_MTU_RULE};

use crate::common::{CLUSTER_TAG, Env, env, env_with, node};

const UID: &str = "5a7d0c2e-2222-4333-8444-555566667777";

/// (protocol, from, to, cidr, description) of every IPv4 rule of `group`.
type Rules = BTreeSet<(String, i32, i32, String, String)>;

async fn rules(env: &Env, group: &str) -> Rules {
    let out = env
        .cloud
        .ec2_client()
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut rules = BTreeSet::new();
    for g in out.security_groups() {
        for p in g.ip_permissions() {
            for r in p.ip_ranges() {
                rules.insert((
                    p.ip_protocol().unwrap_or_default().to_owned(),
                    p.from_port().unwrap_or(-1),
                    p.to_port().unwrap_or(-1),
                    r.cidr_ip().unwrap_or_default().to_owned(),
                    r.description().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    rules
}

fn rule(
    protocol: &str,
    port: i32,
    cidr: &str,
    description: &str,
) -> (String, i32, i32, String, String) {
    (
        protocol.to_owned(),
        port,
        port,
        cidr.to_owned(),
        description.to_owned(),
    )
}

fn mtu(cidr: &str) -> (String, i32, i32, String, String) {
    (
        "icmp".to_owned(),
        3,
        4,
        cidr.to_owned(),
        NLB_MTU_RULE.to_owned(),
    )
}

/// A security group in the VPC, tagged with the cluster tag when `tagged`, with one hand-made SSH rule.
async fn group(env: &Env, name: &str, tagged: bool) -> String {
    let ec2 = env.cloud.ec2_client();
    let mut request = ec2
        .create_security_group()
        .group_name(name)
        .description("nodes")
        .vpc_id(&env.vpc);
    if tagged {
        request = request.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(Tag::builder().key(CLUSTER_TAG).value("owned").build())
                .build(),
        );
    }
    let id = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .group_id()
        .unwrap_or_default()
        .to_owned();
    ec2.authorize_security_group_ingress()
        .group_id(&id)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    IpRange::builder()
                        .cidr_ip("10.0.0.0/8")
                        .description("ssh")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    id
}

/// `count` instances with the security groups `groups`, as Nodes.
async fn nodes_in(env: &Env, count: i32, groups: &[&str]) -> Vec<Node> {
    let out = env
        .cloud
        .ec2_client()
        .run_instances()
        .image_id(&env.image)
        .instance_type(InstanceType::T3Medium)
        .min_count(count)
        .max_count(count)
        .subnet_id(&env.subnets[0])
        .set_security_group_ids(Some(groups.iter().map(|g| (*g).to_owned()).collect()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.instances().iter().map(|i| node(i, true)).collect()
}

fn service(ranges: &[&str]) -> Service {
    let mut svc = nlb(load_balancer_service("web", UID), &[]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.load_balancer_source_ranges = Some(ranges.iter().map(|r| (*r).to_owned()).collect());
    }
    svc
}

/// `svc` as an NLB Service with `annotations` (these are NLB rules; Classic ELBs have tests/aws/classic.rs).
fn nlb(mut svc: Service, annotations: &[(&str, &str)]) -> Service {
    let mut all: std::collections::BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.insert(ANNOTATION_LOAD_BALANCER_TYPE.to_owned(), "nlb".to_owned());
    svc.metadata.annotations = Some(all);
    svc
}

fn descriptions(svc: &Service) -> (String, String) {
    let name = default_load_balancer_name(svc);
    (
        format!("{NLB_CLIENT_RULE}={name}"),
        format!("{NLB_HEALTH_RULE}={name}"),
    )
}

#[tokio::test]
async fn nlb_rules_follow_source_ranges_and_are_removed_with_the_service() {
    let env = env().await;
    let cloud = &env.cloud;
    let nodes_sg = group(&env, "nodes", true).await;
    let nodes = nodes_in(&env, 2, &[&nodes_sg]).await;
    let before = rules(&env, &nodes_sg).await;
    let svc = service(&["203.0.113.0/24", "198.51.100.7/32"]);
    let (client, health) = descriptions(&svc);

    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Clients from exactly the source ranges on the NodePort; health checks from the NLB's two subnets; MTU.
    let mut want = before.clone();
    want.extend([
        rule("tcp", 30080, "203.0.113.0/24", &client),
        rule("tcp", 30080, "198.51.100.7/32", &client),
        rule("tcp", 30080, "10.0.1.0/24", &health),
        rule("tcp", 30080, "10.0.2.0/24", &health),
        mtu("203.0.113.0/24"),
        mtu("198.51.100.7/32"),
    ]);
    assert_eq!(rules(&env, &nodes_sg).await, want);

    // Ensuring again changes nothing.
    let calls = cloud.api_calls();
    calls.reset();
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(calls.count("AuthorizeSecurityGroupIngress"), 0);
    assert_eq!(calls.count("RevokeSecurityGroupIngress"), 0);
    assert_eq!(rules(&env, &nodes_sg).await, want);

    // New ranges replace the client and MTU rules; a health-check port of its own gets its rules.
    let mut changed = service(&["192.0.2.0/25"]);
    changed = nlb(changed, &[(ANNOTATION_HC_PORT, "31999")]);
    cloud
        .ensure_load_balancer("c", &changed, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut want = before.clone();
    want.extend([
        rule("tcp", 30080, "192.0.2.0/25", &client),
        rule("tcp", 31999, "10.0.1.0/24", &health),
        rule("tcp", 31999, "10.0.2.0/24", &health),
        mtu("192.0.2.0/25"),
    ]);
    assert_eq!(rules(&env, &nodes_sg).await, want);

    // Deletion leaves the group as it was: the SSH rule untouched.
    cloud
        .ensure_load_balancer_deleted("c", &changed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rules(&env, &nodes_sg).await, before);
}

#[tokio::test]
async fn open_service_shares_mtu_rules_and_keeps_other_load_balancers_rules() {
    let env = env().await;
    let cloud = &env.cloud;
    let nodes_sg = group(&env, "nodes", true).await;
    let nodes = nodes_in(&env, 1, &[&nodes_sg]).await;
    // No source ranges: 0.0.0.0/0, which on the traffic port covers the health checks too.
    let open = nlb(
        load_balancer_service("open", "6b8e1d3f-3333-4444-8555-666677778888"),
        &[],
    );
    let (open_client, _) = descriptions(&open);
    let mut annotated = service(&[]);
    annotated = nlb(annotated, &[(ANNOTATION_SOURCE_RANGES, " 10.1.2.3/16 ")]);
    if let Some(p) = annotated
        .spec
        .as_mut()
        .and_then(|s| s.ports.as_mut())
        .and_then(|p| p.first_mut())
    {
        p.node_port = Some(30081);
    }
    let (annotated_client, annotated_health) = descriptions(&annotated);
    let before = rules(&env, &nodes_sg).await;
    for svc in [&open, &annotated] {
        cloud
            .ensure_load_balancer("c", svc, &nodes)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut open_rules = before.clone();
    open_rules.extend([
        rule("tcp", 30080, "0.0.0.0/0", &open_client),
        mtu("0.0.0.0/0"),
    ]);
    let mut want = open_rules.clone();
    want.extend([
        // The annotation's range, host bits cleared.
        rule("tcp", 30081, "10.1.0.0/16", &annotated_client),
        rule("tcp", 30081, "10.0.1.0/24", &annotated_health),
        rule("tcp", 30081, "10.0.2.0/24", &annotated_health),
        mtu("10.1.0.0/16"),
    ]);
    assert_eq!(rules(&env, &nodes_sg).await, want);

    cloud
        .ensure_load_balancer_deleted("c", &annotated)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rules(&env, &nodes_sg).await,
        open_rules,
        "the open NLB keeps its rules"
    );
    cloud
        .ensure_load_balancer_deleted("c", &open)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rules(&env, &nodes_sg).await, before);
}

#[tokio::test]
async fn the_tagged_group_gets_the_rules_and_an_ambiguous_instance_is_named() {
    let env = env().await;
    let cloud = &env.cloud;
    let tagged = group(&env, "k8s-nodes", true).await;
    let other = group(&env, "monitoring", false).await;
    let nodes = nodes_in(&env, 1, &[&tagged, &other]).await;
    let svc = service(&["203.0.113.0/24"]);
    let other_before = rules(&env, &other).await;
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (client, _) = descriptions(&svc);
    assert!(
        rules(&env, &tagged)
            .await
            .contains(&rule("tcp", 30080, "203.0.113.0/24", &client))
    );
    assert_eq!(
        rules(&env, &other).await,
        other_before,
        "the untagged group is not written"
    );

    // Two untagged groups and none tagged: which one is meant cannot be known.
    let a = group(&env, "a", false).await;
    let b = group(&env, "b", false).await;
    let ambiguous = nodes_in(&env, 1, &[&a, &b]).await;
    match cloud.ensure_load_balancer("c", &svc, &ambiguous).await {
        Err(CloudError::Transient { message, .. }) => {
            assert!(message.contains(&a) && message.contains(&b), "{message}");
            assert!(message.contains("tag exactly one"), "{message}");
        }
        other => panic!("want an error naming the groups, got {other:?}"),
    }
    // The failed pass changed nothing.
    let tagged_rules = rules(&env, &tagged).await;
    assert!(tagged_rules.contains(&rule("tcp", 30080, "203.0.113.0/24", &client)));

    // The targets move to an instance whose only group is untagged: the rules move with them.
    let solo = group(&env, "solo", false).await;
    let moved = nodes_in(&env, 1, &[&solo]).await;
    cloud
        .ensure_load_balancer("c", &svc, &moved)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !rules(&env, &tagged).await.iter().any(|r| r.4 == client),
        "no target uses the tagged group any more"
    );
    assert!(
        rules(&env, &solo)
            .await
            .contains(&rule("tcp", 30080, "203.0.113.0/24", &client))
    );
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !rules(&env, &solo)
            .await
            .iter()
            .any(|r| r.4.starts_with("kubernetes.io/rule/nlb/")),
        "deletion cleans an untagged group too"
    );
}

#[tokio::test]
async fn disabled_security_group_ingress_writes_no_rule() {
    let env = env_with(|c| c.disable_security_group_ingress = true).await;
    let nodes_sg = group(&env, "nodes", true).await;
    let nodes = nodes_in(&env, 1, &[&nodes_sg]).await;
    let before = rules(&env, &nodes_sg).await;
    let svc = service(&["203.0.113.0/24"]);
    env.cloud.api_calls().reset();
    env.cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(env.cloud.api_calls().count("DescribeSecurityGroups"), 0);
    assert_eq!(rules(&env, &nodes_sg).await, before);
}
