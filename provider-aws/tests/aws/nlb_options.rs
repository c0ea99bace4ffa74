//! NLB annotations against moto: TLS listeners with a certificate and policy, Elastic IPs and private addresses
//! bound to the subnets, target-group attributes, access logs; an invalid value leaves an existing load balancer as
//! it was.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::ProtocolEnum;
use cloudprovider_api::conformance::load_balancer_service;
use cloudprovider_api::{CloudError, LoadBalancers};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use provider_aws::annotations::*;

use test_support::AwsFaultProxy;

use crate::common::{Env, REGION, cloud, env, node};

const UID: &str = "7c9f2e40-4444-4555-8666-777788889999";

fn service(annotations: &[(&str, &str)]) -> Service {
    let mut svc = load_balancer_service("tls", UID);
    let mut annotations: std::collections::BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // These are NLB tests: without a type annotation a Service gets a Classic ELB (tests/aws/classic.rs).
    annotations
        .entry(ANNOTATION_LOAD_BALANCER_TYPE.to_owned())
        .or_insert_with(|| "nlb".to_owned());
    svc.metadata.annotations = Some(annotations);
    if let Some(spec) = svc.spec.as_mut() {
        spec.ports = Some(vec![
            ServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                node_port: Some(30080),
                ..Default::default()
            },
            ServicePort {
                name: Some("https".into()),
                protocol: Some("TCP".into()),
                port: 443,
                node_port: Some(30443),
                ..Default::default()
            },
        ]);
    }
    svc
}

async fn nodes(env: &Env) -> Vec<Node> {
    env.launch(1, 0)
        .await
        .iter()
        .map(|i| node(i, true))
        .collect()
}

async fn only_lb(env: &Env) -> aws_sdk_elasticloadbalancingv2::types::LoadBalancer {
    let out = env
        .cloud
        .elb_client()
        .describe_load_balancers()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(out.load_balancers().len(), 1, "{out:?}");
    out.load_balancers()[0].clone()
}

async fn attributes(env: &Env, lb_arn: &str) -> BTreeMap<String, String> {
    env.cloud
        .elb_client()
        .describe_load_balancer_attributes()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .attributes()
        .iter()
        .filter_map(|a| Some((a.key()?.to_owned(), a.value()?.to_owned())))
        .collect()
}

#[tokio::test]
async fn tls_listeners_attributes_and_access_logs() {
    let env = env().await;
    let cloud = &env.cloud;
    let nodes = nodes(&env).await;
    let cert = env
        ._moto
        .request_certificate(REGION, "web.example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let svc = service(&[
        (ANNOTATION_SSL_CERT, &cert),
        (ANNOTATION_SSL_PORTS, "https"),
        (
            ANNOTATION_SSL_NEGOTIATION_POLICY,
            "ELBSecurityPolicy-TLS13-1-2-2021-06",
        ),
        (ANNOTATION_BACKEND_PROTOCOL, "ssl"),
        (
            ANNOTATION_TARGET_GROUP_ATTRIBUTES,
            "proxy_protocol_v2.enabled=true",
        ),
        (ANNOTATION_ACCESS_LOG_ENABLED, "true"),
        (ANNOTATION_ACCESS_LOG_BUCKET, "lb-logs"),
        (ANNOTATION_ACCESS_LOG_PREFIX, "tls"),
    ]);
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lb = only_lb(&env).await;
    let lb_arn = lb.load_balancer_arn().unwrap_or_default();
    let elb = cloud.elb_client();
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let by_port: BTreeMap<i32, _> = listeners
        .listeners()
        .iter()
        .filter_map(|l| Some((l.port()?, l.clone())))
        .collect();
    // Only the named port is TLS, with the certificate and policy.
    assert_eq!(by_port[&80].protocol(), Some(&ProtocolEnum::Tcp));
    let tls = &by_port[&443];
    assert_eq!(tls.protocol(), Some(&ProtocolEnum::Tls));
    assert_eq!(
        tls.certificates().first().and_then(|c| c.certificate_arn()),
        Some(cert.as_str())
    );
    assert_eq!(
        tls.ssl_policy(),
        Some("ELBSecurityPolicy-TLS13-1-2-2021-06")
    );
    // backend-protocol ssl: TLS to the targets of that port.
    let groups = elb
        .describe_target_groups()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let protocols: BTreeMap<i32, ProtocolEnum> = groups
        .target_groups()
        .iter()
        .filter_map(|g| Some((g.port()?, g.protocol()?.clone())))
        .collect();
    assert_eq!(
        protocols,
        [(30080, ProtocolEnum::Tcp), (30443, ProtocolEnum::Tls)].into()
    );
    for g in groups.target_groups() {
        let attrs = elb
            .describe_target_group_attributes()
            .target_group_arn(g.target_group_arn().unwrap_or_default())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(
            attrs
                .attributes()
                .iter()
                .any(|a| a.key() == Some("proxy_protocol_v2.enabled") && a.value() == Some("true")),
            "{attrs:?}"
        );
    }
    let lb_attrs = attributes(&env, lb_arn).await;
    assert_eq!(
        lb_attrs.get("access_logs.s3.enabled").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        lb_attrs.get("access_logs.s3.bucket").map(String::as_str),
        Some("lb-logs")
    );
    assert_eq!(
        lb_attrs.get("access_logs.s3.prefix").map(String::as_str),
        Some("tls")
    );

    // Ensuring again writes nothing.
    let calls = cloud.api_calls();
    calls.reset();
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for write in [
        "ModifyListener",
        "ModifyTargetGroupAttributes",
        "ModifyLoadBalancerAttributes",
        "CreateListener",
    ] {
        assert_eq!(calls.count(write), 0, "{write}: {:?}", calls.snapshot());
    }

    // An invalid value is named, and the existing load balancer is left as it was.
    let mut broken = svc.clone();
    if let Some(a) = broken.metadata.annotations.as_mut() {
        a.insert(
            ANNOTATION_TARGET_GROUP_ATTRIBUTES.into(),
            "stickiness.enabled=true".into(),
        );
        a.insert(ANNOTATION_SSL_CERT.into(), "not-an-arn".into());
    }
    calls.reset();
    match cloud.ensure_load_balancer("c", &broken, &nodes).await {
        Err(CloudError::InvalidInput { field, .. }) => {
            assert!(
                field == ANNOTATION_SSL_CERT || field == ANNOTATION_TARGET_GROUP_ATTRIBUTES,
                "{field}"
            )
        }
        other => panic!("want invalid input, got {other:?}"),
    }
    assert_eq!(calls.total(), 0, "nothing called: {:?}", calls.snapshot());
    assert_eq!(
        only_lb(&env).await.load_balancer_arn(),
        lb.load_balancer_arn()
    );

    // Access logs off: the flag is cleared, nothing else needed.
    let mut off = svc.clone();
    if let Some(a) = off.metadata.annotations.as_mut() {
        a.insert(ANNOTATION_ACCESS_LOG_ENABLED.into(), "false".into());
    }
    cloud
        .ensure_load_balancer("c", &off, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        attributes(&env, lb_arn)
            .await
            .get("access_logs.s3.enabled")
            .map(String::as_str),
        Some("false")
    );
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn elastic_ips_and_private_addresses_are_bound_to_the_subnets() {
    let env = env().await;
    let nodes = nodes(&env).await;
    // moto accepts subnet mappings but keeps no addresses: a recording proxy shows what the provider asked for.
    let proxy = AwsFaultProxy::start(env._moto.endpoint_url(), 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    proxy.record(&["CreateLoadBalancer"]);
    let mut config = env.cloud.config().clone();
    config.endpoint_url = Some(proxy.url());
    let cloud = &cloud(config).await;
    let ec2 = cloud.ec2_client();
    let mut allocations = Vec::new();
    for _ in 0..2 {
        let out = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        allocations.push(out.allocation_id().unwrap_or_default().to_owned());
    }
    // One address too few: named, nothing created.
    let short = service(&[(ANNOTATION_EIP_ALLOCATIONS, &allocations[0])]);
    match cloud.ensure_load_balancer("c", &short, &nodes).await {
        Err(CloudError::InvalidInput { field, message }) => {
            assert_eq!(field, ANNOTATION_EIP_ALLOCATIONS);
            assert!(message.contains("2 subnets"), "{message}");
        }
        other => panic!("want invalid input, got {other:?}"),
    }
    let svc = service(&[(ANNOTATION_EIP_ALLOCATIONS, &allocations.join(","))]);
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let lb = only_lb(&env).await;
    let zones: Vec<&str> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id())
        .collect();
    assert_eq!(zones.len(), 2, "{lb:?}");
    // The one CreateLoadBalancer (the short list made none) mapped each subnet to its allocation.
    let created = proxy.requests("CreateLoadBalancer");
    assert_eq!(created.len(), 1, "{created:?}");
    for (i, (subnet, allocation)) in env.subnets.iter().zip(&allocations).enumerate() {
        let n = i + 1;
        assert!(
            created[0].contains(&format!("SubnetMappings.member.{n}.SubnetId={subnet}"))
                && created[0].contains(&format!(
                    "SubnetMappings.member.{n}.AllocationId={allocation}"
                )),
            "{}",
            created[0]
        );
    }
    assert!(!created[0].contains("Subnets.member"), "{}", created[0]);
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Private addresses: internal load balancers only.
    let public = service(&[(ANNOTATION_PRIVATE_IPV4_ADDRESSES, "10.0.1.10,10.0.2.10")]);
    assert!(matches!(
        cloud.ensure_load_balancer("c", &public, &nodes).await,
        Err(CloudError::InvalidInput { .. })
    ));
    let internal = service(&[
        (ANNOTATION_INTERNAL, "true"),
        (ANNOTATION_SUBNETS, "public-us-east-1a,public-us-east-1b"),
        (ANNOTATION_PRIVATE_IPV4_ADDRESSES, "10.0.1.10,10.0.2.10"),
    ]);
    cloud
        .ensure_load_balancer("c", &internal, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        only_lb(&env).await.scheme().map(|s| s.as_str()),
        Some("internal")
    );
    let created = proxy.requests("CreateLoadBalancer");
    assert_eq!(created.len(), 2, "{created:?}");
    for (n, ip) in [(1, "10.0.1.10"), (2, "10.0.2.10")] {
        assert!(
            created[1].contains(&format!(
                "SubnetMappings.member.{n}.PrivateIPv4Address={ip}"
            )),
            "{}",
            created[1]
        );
    }
}
