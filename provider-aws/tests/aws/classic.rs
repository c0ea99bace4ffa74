//! Classic ELBs against moto (upstream's default for a Service without `aws-load-balancer-type`): listeners,
//! health check, instances, attributes and policies, the managed security group and the node rule admitting it;
//! deletion leaves nothing; an invalid annotation changes nothing; a Service that already has an NLB keeps it.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
use cloudprovider_api::conformance::load_balancer_service;
use cloudprovider_api::{CloudError, LoadBalancers, default_load_balancer_name};
use k8s_openapi::api::core::v1::{Node, Service};
use provider_aws::annotations::*;

use crate::common::{CLUSTER_TAG, Env, env, node};

const UID: &str = "3d5e7f90-5555-4666-8777-88889999aaaa";

fn service(annotations: &[(&str, &str)]) -> Service {
    let mut svc = load_balancer_service("classic", UID);
    svc.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    svc
}

/// A cluster-tagged node security group and `count` instances in it, as Nodes.
async fn nodes(env: &Env, count: i32) -> (String, Vec<Node>) {
    let ec2 = env.cloud.ec2_client();
    let group = ec2
        .create_security_group()
        .group_name("k8s-nodes")
        .description("nodes")
        .vpc_id(&env.vpc)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(Tag::builder().key(CLUSTER_TAG).value("owned").build())
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .group_id()
        .unwrap_or_default()
        .to_owned();
    let out = ec2
        .run_instances()
        .image_id(&env.image)
        .instance_type(InstanceType::T3Medium)
        .min_count(count)
        .max_count(count)
        .subnet_id(&env.subnets[0])
        .security_group_ids(&group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    (
        group,
        out.instances().iter().map(|i| node(i, true)).collect(),
    )
}

async fn describe(
    env: &Env,
    name: &str,
) -> Option<aws_sdk_elasticloadbalancing::types::LoadBalancerDescription> {
    env.cloud
        .classic_client()
        .describe_load_balancers()
        .load_balancer_names(name)
        .send()
        .await
        .ok()?
        .load_balancer_descriptions()
        .first()
        .cloned()
}

/// Whether `group` has a rule admitting everything from `from`.
async fn admits(env: &Env, group: &str, from: &str) -> bool {
    let out = env
        .cloud
        .ec2_client()
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.security_groups()
        .iter()
        .flat_map(|g| g.ip_permissions())
        .any(|p| {
            p.ip_protocol() == Some("-1")
                && p.user_id_group_pairs()
                    .iter()
                    .any(|u| u.group_id() == Some(from))
        })
}

async fn group_exists(env: &Env, group: &str) -> bool {
    env.cloud
        .ec2_client()
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .is_ok_and(|o| !o.security_groups().is_empty())
}

#[tokio::test]
async fn a_service_without_type_gets_a_classic_elb_end_to_end() {
    let env = env().await;
    let cloud = &env.cloud;
    let (nodes_sg, nodes) = nodes(&env, 2).await;
    let mut svc = service(&[
        (ANNOTATION_PROXY_PROTOCOL, "*"),
        (ANNOTATION_CONNECTION_IDLE_TIMEOUT, "120"),
        (ANNOTATION_CONNECTION_DRAINING_ENABLED, "true"),
        (ANNOTATION_CONNECTION_DRAINING_TIMEOUT, "30"),
        (ANNOTATION_CROSS_ZONE, "true"),
        (ANNOTATION_HC_INTERVAL, "20"),
    ]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.load_balancer_source_ranges = Some(vec!["203.0.113.0/24".into()]);
    }
    let name = default_load_balancer_name(&svc);
    let status = cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lb = describe(&env, &name)
        .await
        .unwrap_or_else(|| panic!("no Classic ELB {name}"));
    assert_eq!(
        status.ingress.as_ref().and_then(|i| i[0].hostname.clone()),
        lb.dns_name().map(str::to_owned)
    );
    // No NLB was made.
    let v2 = cloud
        .elb_client()
        .describe_load_balancers()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(v2.load_balancers().is_empty());
    // Listener, health check, instances.
    let listeners: Vec<(String, i32, i32)> = lb
        .listener_descriptions()
        .iter()
        .filter_map(|d| d.listener())
        .map(|l| {
            (
                l.protocol().to_ascii_uppercase(),
                l.load_balancer_port(),
                l.instance_port(),
            )
        })
        .collect();
    assert_eq!(listeners, vec![("TCP".to_owned(), 80, 30080)]);
    let hc = lb
        .health_check()
        .unwrap_or_else(|| panic!("no health check"));
    assert_eq!(
        (
            hc.target(),
            hc.interval(),
            hc.healthy_threshold(),
            hc.unhealthy_threshold()
        ),
        ("TCP:30080", 20, 2, 6)
    );
    let registered: BTreeSet<String> = lb
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    assert_eq!(registered.len(), 2);
    // Attributes.
    let attrs = cloud
        .classic_client()
        .describe_load_balancer_attributes()
        .load_balancer_name(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let a = attrs
        .load_balancer_attributes()
        .unwrap_or_else(|| panic!("no attributes"));
    assert_eq!(a.connection_settings().map(|s| s.idle_timeout()), Some(120));
    assert_eq!(
        a.connection_draining().map(|d| (d.enabled(), d.timeout())),
        Some((true, Some(30)))
    );
    assert_eq!(
        a.cross_zone_load_balancing().map(|c| c.enabled()),
        Some(true)
    );
    // Proxy protocol on the backend port.
    assert!(
        lb.backend_server_descriptions()
            .iter()
            .any(|b| b.instance_port() == Some(30080)
                && b.policy_names().iter().any(|p| p == PROXY_PROTOCOL_POLICY)),
        "{:?}",
        lb.backend_server_descriptions()
    );
    // The managed group: source ranges on the listener port (and MTU), attached; the node group admits it.
    let lb_sg = lb.security_groups().first().cloned().unwrap_or_default();
    let sg = cloud
        .ec2_client()
        .describe_security_groups()
        .group_ids(&lb_sg)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let group = &sg.security_groups()[0];
    assert_eq!(group.group_name(), Some(format!("k8s-elb-{name}").as_str()));
    let rules: BTreeSet<(String, i32, String)> = group
        .ip_permissions()
        .iter()
        .flat_map(|p| {
            p.ip_ranges().iter().map(move |r| {
                (
                    p.ip_protocol().unwrap_or_default().to_owned(),
                    p.from_port().unwrap_or(-1),
                    r.cidr_ip().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect();
    assert_eq!(
        rules,
        BTreeSet::from([
            ("tcp".to_owned(), 80, "203.0.113.0/24".to_owned()),
            ("icmp".to_owned(), 3, "203.0.113.0/24".to_owned()),
        ])
    );
    assert!(
        admits(&env, &nodes_sg, &lb_sg).await,
        "node group admits the ELB's group"
    );

    // Ensuring again writes nothing.
    let calls = cloud.api_calls();
    calls.reset();
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for write in [
        "CreateLoadBalancer",
        "CreateLoadBalancerListeners",
        "ConfigureHealthCheck",
        "ModifyLoadBalancerAttributes",
        "SetLoadBalancerPoliciesForBackendServer",
        "RegisterInstancesWithLoadBalancer",
        "AuthorizeSecurityGroupIngress",
    ] {
        assert_eq!(calls.count(write), 0, "{write}: {:?}", calls.snapshot());
    }

    // A node leaves: deregistered.
    cloud
        .update_load_balancer("c", &svc, &nodes[..1])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lb = describe(&env, &name)
        .await
        .unwrap_or_else(|| panic!("gone"));
    assert_eq!(lb.instances().len(), 1);

    // An invalid annotation changes nothing.
    let broken = service(&[(ANNOTATION_CONNECTION_IDLE_TIMEOUT, "forever")]);
    calls.reset();
    match cloud.ensure_load_balancer("c", &broken, &nodes).await {
        Err(CloudError::InvalidInput { field, .. }) => {
            assert_eq!(field, ANNOTATION_CONNECTION_IDLE_TIMEOUT)
        }
        other => panic!("want invalid input, got {other:?}"),
    }
    assert_eq!(calls.total(), 0, "{:?}", calls.snapshot());

    // Deletion: the node rule, the load balancer and its group go; the node group stays.
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(describe(&env, &name).await.is_none(), "load balancer left");
    assert!(!group_exists(&env, &lb_sg).await, "managed group left");
    assert!(!admits(&env, &nodes_sg, &lb_sg).await, "node rule left");
    assert!(group_exists(&env, &nodes_sg).await);
    // Deleting again is a no-op.
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn certificates_make_secure_listeners_and_annotated_groups_replace_the_managed_one() {
    let env = env().await;
    let (_, nodes) = nodes(&env, 1).await;
    // moto reports a listener's instance protocol as its protocol: a recording proxy shows what was asked for.
    let proxy = test_support::AwsFaultProxy::start(env._moto.endpoint_url(), 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    proxy.record(&["CreateLoadBalancer"]);
    let mut config = env.cloud.config().clone();
    config.endpoint_url = Some(proxy.url());
    let cloud = &crate::common::cloud(config).await;
    let cert = env
        ._moto
        .request_certificate("us-east-1", "web.example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let own = cloud
        .ec2_client()
        .create_security_group()
        .group_name("mine")
        .description("mine")
        .vpc_id(&env.vpc)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .group_id()
        .unwrap_or_default()
        .to_owned();
    let svc = service(&[
        (ANNOTATION_SSL_CERT, &cert),
        (ANNOTATION_BACKEND_PROTOCOL, "http"),
        (ANNOTATION_SECURITY_GROUPS, &own),
        (
            ANNOTATION_SSL_NEGOTIATION_POLICY,
            "ELBSecurityPolicy-TLS-1-2-2017-01",
        ),
    ]);
    let name = default_load_balancer_name(&svc);
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lb = describe(&env, &name)
        .await
        .unwrap_or_else(|| panic!("no ELB"));
    let l = lb.listener_descriptions()[0]
        .listener()
        .cloned()
        .unwrap_or_else(|| panic!("no listener"));
    assert_eq!(
        (l.protocol().to_ascii_uppercase(), l.ssl_certificate_id()),
        ("HTTPS".to_owned(), Some(cert.as_str()))
    );
    let created = proxy.requests("CreateLoadBalancer");
    let param = |key: &str| {
        created[0]
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    assert_eq!(
        param("Listeners.member.1.Protocol").as_deref(),
        Some("HTTPS"),
        "{}",
        created[0]
    );
    assert_eq!(
        param("Listeners.member.1.InstanceProtocol").as_deref(),
        Some("HTTP"),
        "{}",
        created[0]
    );
    assert_eq!(lb.security_groups(), std::slice::from_ref(&own));
    // The TLS policy (upstream's name) is on the secure listener.
    assert_eq!(
        lb.listener_descriptions()[0].policy_names(),
        ["k8s-SSLNegotiationPolicy-ELBSecurityPolicy-TLS-1-2-2017-01".to_owned()]
    );
    // No managed group was made.
    let managed = cloud
        .ec2_client()
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(format!("k8s-elb-{name}"))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(managed.security_groups().is_empty());
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        group_exists(&env, &own).await,
        "an annotated group is never deleted"
    );
}

#[tokio::test]
async fn a_service_that_has_an_nlb_keeps_it_without_the_annotation() {
    let env = env().await;
    let cloud = &env.cloud;
    let (_, nodes) = nodes(&env, 1).await;
    let nlb = service(&[(ANNOTATION_LOAD_BALANCER_TYPE, "nlb")]);
    cloud
        .ensure_load_balancer("c", &nlb, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The annotation is gone (as for Services created before Classic ELBs were the default): still the NLB.
    let plain = service(&[]);
    cloud
        .ensure_load_balancer("c", &plain, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let name = default_load_balancer_name(&plain);
    assert!(
        describe(&env, &name).await.is_none(),
        "no Classic ELB beside the NLB"
    );
    let v2 = cloud
        .elb_client()
        .describe_load_balancers()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(v2.load_balancers().len(), 1);
    cloud
        .ensure_load_balancer_deleted("c", &plain)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let v2 = cloud
        .elb_client()
        .describe_load_balancers()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(v2.load_balancers().is_empty());
}

#[tokio::test]
async fn the_type_cannot_change_after_creation() {
    let env = env().await;
    let cloud = &env.cloud;
    let (_, nodes) = nodes(&env, 1).await;
    let plain = service(&[]);
    cloud
        .ensure_load_balancer("c", &plain, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let to_nlb = service(&[(ANNOTATION_LOAD_BALANCER_TYPE, "nlb")]);
    match cloud.ensure_load_balancer("c", &to_nlb, &nodes).await {
        Err(CloudError::InvalidInput { field, message }) => {
            assert_eq!(field, ANNOTATION_LOAD_BALANCER_TYPE);
            assert!(message.contains("cannot change"), "{message}");
        }
        other => panic!("want invalid input, got {other:?}"),
    }
    let v2 = cloud
        .elb_client()
        .describe_load_balancers()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(v2.load_balancers().is_empty(), "no second load balancer");
    // Deleting the Service (whatever its annotation now) removes the Classic ELB.
    cloud
        .ensure_load_balancer_deleted("c", &to_nlb)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        describe(&env, &default_load_balancer_name(&plain))
            .await
            .is_none()
    );
}
