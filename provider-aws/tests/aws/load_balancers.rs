//! Network load balancers against moto: targets follow node changes, annotations, deletion leaves nothing behind and
//! never touches what this cluster does not own, invalid annotations are named.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, Tag, TargetTypeEnum};
use cloudprovider_api::conformance::load_balancer_service;
use cloudprovider_api::{CloudError, LoadBalancers, default_load_balancer_name};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use provider_aws::AwsCloud;
use provider_aws::annotations::*;

use crate::common::{CLUSTER_TAG, Env, env, node};

const UID: &str = "0e6f4ab0-1111-4222-8333-444455556666";

fn service(annotations: &[(&str, &str)]) -> Service {
    let mut svc = load_balancer_service("web", UID);
    let mut annotations: std::collections::BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // These are NLB tests: without a type annotation a Service gets a Classic ELB (tests/aws/classic.rs).
    annotations
        .entry(ANNOTATION_LOAD_BALANCER_TYPE.to_owned())
        .or_insert_with(|| "nlb".to_owned());
    svc.metadata.annotations = Some(annotations);
    svc
}

fn with_ports(mut svc: Service, ports: &[(i32, i32)]) -> Service {
    if let Some(spec) = svc.spec.as_mut() {
        spec.ports = Some(
            ports
                .iter()
                .map(|(port, node_port)| ServicePort {
                    name: Some(format!("p{port}")),
                    protocol: Some("TCP".into()),
                    port: *port,
                    node_port: Some(*node_port),
                    ..Default::default()
                })
                .collect(),
        );
    }
    svc
}

/// Everything ELBv2 holds, in one view.
struct Snapshot {
    lbs: Vec<aws_sdk_elasticloadbalancingv2::types::LoadBalancer>,
    tgs: Vec<aws_sdk_elasticloadbalancingv2::types::TargetGroup>,
}

async fn snapshot(cloud: &AwsCloud) -> Snapshot {
    let elb = cloud.elb_client();
    let lbs = elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let tgs = elb
        .describe_target_groups()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    Snapshot {
        lbs: lbs.load_balancers().to_vec(),
        tgs: tgs.target_groups().to_vec(),
    }
}

async fn targets(cloud: &AwsCloud, tg_arn: &str) -> BTreeSet<(String, i32)> {
    cloud
        .elb_client()
        .describe_target_health()
        .target_group_arn(tg_arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .target_health_descriptions()
        .iter()
        .filter_map(|d| {
            let t = d.target()?;
            Some((t.id()?.to_owned(), t.port()?))
        })
        .collect()
}

async fn tags(cloud: &AwsCloud, arn: &str) -> BTreeMap<String, String> {
    cloud
        .elb_client()
        .describe_tags()
        .resource_arns(arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .tag_descriptions()
        .iter()
        .flat_map(|d| d.tags())
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn ids(nodes: &[Node], port: i32) -> BTreeSet<(String, i32)> {
    nodes
        .iter()
        .map(|n| {
            let pid = n
                .spec
                .as_ref()
                .and_then(|s| s.provider_id.clone())
                .unwrap_or_default();
            (pid.rsplit('/').next().unwrap_or_default().to_owned(), port)
        })
        .collect()
}

async fn nodes(env: &Env, count: i32) -> Vec<Node> {
    env.launch(count, 0)
        .await
        .iter()
        .map(|i| node(i, true))
        .collect()
}

#[tokio::test]
async fn nlb_targets_follow_node_changes() {
    let env = env().await;
    let cloud = &env.cloud;
    let nodes = nodes(&env, 3).await;
    let svc = service(&[]);

    let status = cloud
        .ensure_load_balancer("c", &svc, &nodes[..2])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = snapshot(cloud).await;
    assert_eq!(snap.lbs.len(), 1);
    let lb = &snap.lbs[0];
    assert_eq!(
        lb.load_balancer_name(),
        Some(default_load_balancer_name(&svc).as_str())
    );
    assert_eq!(lb.r#type().map(|t| t.as_str()), Some("network"));
    assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
    let hostname = status.ingress.as_ref().and_then(|i| i[0].hostname.clone());
    assert_eq!(hostname.as_deref(), lb.dns_name());
    // Subnets discovered by role tag, one per zone, never another cluster's.
    let zones: BTreeSet<&str> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.zone_name())
        .collect();
    assert_eq!(zones, BTreeSet::from(["us-east-1a", "us-east-1b"]));
    let lb_tags = tags(cloud, lb.load_balancer_arn().unwrap_or_default()).await;
    assert_eq!(lb_tags.get(CLUSTER_TAG).map(String::as_str), Some("owned"));
    assert_eq!(
        lb_tags
            .get("kubernetes.io/service-name")
            .map(String::as_str),
        Some("default/web")
    );

    assert_eq!(snap.tgs.len(), 1);
    let tg = &snap.tgs[0];
    let tg_arn = tg.target_group_arn().unwrap_or_default().to_owned();
    let tg_name = tg.target_group_name().unwrap_or_default();
    assert!(
        tg_name.starts_with("k8s-default-web-") && tg_name.len() == 26,
        "{tg_name}"
    );
    assert_eq!(tg.target_type(), Some(&TargetTypeEnum::Instance));
    assert_eq!(tg.port(), Some(30080));
    assert_eq!(tg.health_check_protocol(), Some(&ProtocolEnum::Tcp));
    let tg_tags = tags(cloud, &tg_arn).await;
    assert_eq!(tg_tags.get(CLUSTER_TAG).map(String::as_str), Some("owned"));
    let listeners = cloud
        .elb_client()
        .describe_listeners()
        .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let listener = &listeners.listeners()[0];
    assert_eq!(
        (listener.port(), listener.protocol()),
        (Some(80), Some(&ProtocolEnum::Tcp))
    );
    assert_eq!(
        listener.default_actions()[0].target_group_arn(),
        Some(tg_arn.as_str())
    );
    assert_eq!(targets(cloud, &tg_arn).await, ids(&nodes[..2], 30080));

    // Node added: one diff, one batched DescribeInstances (only running instances are targets), no re-creation.
    let calls = cloud.api_calls();
    calls.reset();
    cloud
        .update_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("update_load_balancer (+1 node): {:?}", calls.snapshot());
    assert_eq!(targets(cloud, &tg_arn).await, ids(&nodes, 30080));
    assert_eq!(calls.count("DescribeInstances"), 1);
    assert_eq!(calls.count("RegisterTargets"), 1);
    assert_eq!(calls.count("DeregisterTargets"), 0);

    // Nodes removed.
    cloud
        .update_load_balancer("c", &svc, &nodes[2..])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(targets(cloud, &tg_arn).await, ids(&nodes[2..], 30080));

    // An unchanged ensure changes nothing and reports the same status.
    calls.reset();
    let again = cloud
        .ensure_load_balancer("c", &svc, &nodes[2..])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("ensure_load_balancer (no change): {:?}", calls.snapshot());
    assert_eq!(again, status);
    for write in [
        "CreateLoadBalancer",
        "CreateTargetGroup",
        "CreateListener",
        "RegisterTargets",
        "DeregisterTargets",
    ] {
        assert_eq!(calls.count(write), 0, "{write}: {:?}", calls.snapshot());
    }
    assert_eq!(snapshot(cloud).await.tgs.len(), 1);
}

/// Regression (issue 21, finding 1): one stopped instance made `RegisterTargets` fail with `InvalidTarget` for
/// every new load balancer, retried forever. Targets are the running instances; the load balancer is provisioned.
#[tokio::test]
async fn stopped_instance_does_not_block_new_load_balancers() {
    let env = env().await;
    let cloud = &env.cloud;
    let nodes = nodes(&env, 3).await;
    let stopped = ids(&nodes[..1], 30080)
        .into_iter()
        .next()
        .map(|(id, _)| id)
        .unwrap_or_default();
    cloud
        .ec2_client()
        .stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));

    let calls = cloud.api_calls();
    calls.reset();
    let status = cloud
        .ensure_load_balancer("c", &service(&[]), &nodes)
        .await
        .unwrap_or_else(|e| panic!("a stopped instance must not fail the load balancer: {e}"));
    println!(
        "ensure_load_balancer (1 of 3 stopped): {:?}",
        calls.snapshot()
    );
    assert!(status.ingress.is_some_and(|i| !i.is_empty()));
    assert_eq!(calls.count("DescribeInstances"), 1, "one batched lookup");
    let snap = snapshot(cloud).await;
    let arn = snap.tgs[0].target_group_arn().unwrap_or_default();
    assert_eq!(targets(cloud, arn).await, ids(&nodes[1..], 30080));

    // update_load_balancer keeps the stopped instance out too.
    cloud
        .update_load_balancer("c", &service(&[]), &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(targets(cloud, arn).await, ids(&nodes[1..], 30080));
}

#[tokio::test]
async fn targets_are_registered_in_chunks_of_100() {
    let env = env().await;
    let nodes = nodes(&env, 150).await;
    let calls = env.cloud.api_calls();
    calls.reset();
    env.cloud
        .ensure_load_balancer("c", &service(&[]), &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "ensure_load_balancer (create, 150 nodes): {:?}",
        calls.snapshot()
    );
    assert_eq!(calls.count("RegisterTargets"), 2);
    let snap = snapshot(&env.cloud).await;
    let arn = snap.tgs[0].target_group_arn().unwrap_or_default();
    assert_eq!(targets(&env.cloud, arn).await.len(), 150);
}

#[tokio::test]
async fn annotations_shape_the_load_balancer() {
    let env = env().await;
    let cloud = &env.cloud;
    let mut nodes = nodes(&env, 2).await;
    nodes[1].metadata.labels = Some(BTreeMap::from([("edge".to_owned(), "yes".to_owned())]));
    let svc = service(&[
        (ANNOTATION_LOAD_BALANCER_TYPE, "nlb"),
        (ANNOTATION_INTERNAL, "true"),
        (ANNOTATION_SUBNETS, "public-us-east-1a"),
        (ANNOTATION_HC_PROTOCOL, "HTTP"),
        (ANNOTATION_HC_PATH, "/ready"),
        (ANNOTATION_HC_PORT, "10256"),
        (ANNOTATION_HC_INTERVAL, "30"),
        (ANNOTATION_HC_HEALTHY, "2"),
        (ANNOTATION_HC_UNHEALTHY, "4"),
        (ANNOTATION_ADDITIONAL_TAGS, "team=web,env=test"),
        (ANNOTATION_TARGET_NODE_LABELS, "edge=yes"),
        (ANNOTATION_CROSS_ZONE, "true"),
    ]);
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = snapshot(cloud).await;
    let lb = &snap.lbs[0];
    assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internal"));
    let zones: Vec<&str> = lb
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id())
        .collect();
    assert_eq!(zones, vec![env.subnets[0].as_str()]);
    let lb_tags = tags(cloud, lb.load_balancer_arn().unwrap_or_default()).await;
    assert_eq!(lb_tags.get("team").map(String::as_str), Some("web"));
    assert_eq!(lb_tags.get("env").map(String::as_str), Some("test"));
    let tg = &snap.tgs[0];
    assert_eq!(tg.health_check_protocol(), Some(&ProtocolEnum::Http));
    assert_eq!(tg.health_check_path(), Some("/ready"));
    assert_eq!(tg.health_check_port(), Some("10256"));
    assert_eq!(tg.health_check_interval_seconds(), Some(30));
    assert_eq!(tg.healthy_threshold_count(), Some(2));
    assert_eq!(tg.unhealthy_threshold_count(), Some(4));
    // Only the labelled node is a target.
    let arn = tg.target_group_arn().unwrap_or_default();
    assert_eq!(targets(cloud, arn).await, ids(&nodes[1..], 30080));
    let attrs = cloud
        .elb_client()
        .describe_load_balancer_attributes()
        .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        attrs
            .attributes()
            .iter()
            .any(|a| a.key() == Some("load_balancing.cross_zone.enabled")
                && a.value() == Some("true")),
        "{attrs:?}"
    );
}

#[tokio::test]
async fn invalid_annotation_is_named_and_creates_nothing() {
    let env = env().await;
    let nodes = nodes(&env, 1).await;
    let calls = env.cloud.api_calls();
    calls.reset();
    for (key, value) in [
        (ANNOTATION_HC_INTERVAL, "often"),
        (ANNOTATION_INTERNAL, "perhaps"),
        (ANNOTATION_LOAD_BALANCER_TYPE, "classic"),
    ] {
        let err = env
            .cloud
            .ensure_load_balancer("c", &service(&[(key, value)]), &nodes)
            .await
            .err();
        match err {
            Some(CloudError::InvalidInput {
                ref field,
                ref message,
            }) => {
                assert_eq!(field, key);
                println!(
                    "{key}={value}: {}",
                    err.as_ref().map(|e| e.to_string()).unwrap_or_default()
                );
                assert!(message.contains(value), "{message}");
            }
            other => panic!("{key}={value}: {other:?}"),
        }
    }
    // Rejected before any AWS call; nothing exists.
    assert_eq!(calls.total(), 0, "{:?}", calls.snapshot());
    let snap = snapshot(&env.cloud).await;
    assert!(snap.lbs.is_empty() && snap.tgs.is_empty());
    // Deleting a Service with invalid annotations still works.
    env.cloud
        .ensure_load_balancer_deleted("c", &service(&[(ANNOTATION_HC_INTERVAL, "often")]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn other_load_balancer_types_are_implemented_elsewhere() {
    let env = env().await;
    for t in ["nlb-ip", "external"] {
        let svc = service(&[(ANNOTATION_LOAD_BALANCER_TYPE, t)]);
        assert!(matches!(
            env.cloud.ensure_load_balancer("c", &svc, &[]).await,
            Err(CloudError::ImplementedElsewhere(_))
        ));
        assert!(matches!(
            env.cloud.update_load_balancer("c", &svc, &[]).await,
            Err(CloudError::ImplementedElsewhere(_))
        ));
        // Deletion never answers "implemented elsewhere".
        assert!(
            env.cloud
                .ensure_load_balancer_deleted("c", &svc)
                .await
                .is_ok()
        );
    }
}

#[tokio::test]
async fn port_changes_replace_listeners_and_target_groups() {
    let env = env().await;
    let cloud = &env.cloud;
    let nodes = nodes(&env, 1).await;
    let two = with_ports(service(&[]), &[(80, 30080), (443, 30443)]);
    cloud
        .ensure_load_balancer("c", &two, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snapshot(cloud).await.tgs.len(), 2);
    let one = with_ports(service(&[]), &[(443, 30443)]);
    cloud
        .ensure_load_balancer("c", &one, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = snapshot(cloud).await;
    assert_eq!(snap.tgs.len(), 1, "the port-80 target group is deleted");
    assert_eq!(snap.tgs[0].port(), Some(30443));
    let listeners = cloud
        .elb_client()
        .describe_listeners()
        .load_balancer_arn(snap.lbs[0].load_balancer_arn().unwrap_or_default())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let ports: Vec<Option<i32>> = listeners.listeners().iter().map(|l| l.port()).collect();
    assert_eq!(ports, vec![Some(443)]);
}

#[tokio::test]
async fn delete_leaves_nothing_and_spares_what_is_not_owned() {
    let env = env().await;
    let cloud = &env.cloud;
    let nodes = nodes(&env, 2).await;
    let svc = with_ports(service(&[]), &[(80, 30080), (443, 30443)]);
    cloud
        .ensure_load_balancer("c", &svc, &nodes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A target group with the Service's name prefix but no ownership tag (someone else's), and a leftover one
    // owned by us but attached to nothing (an interrupted ensure).
    let elb = cloud.elb_client();
    for (name, owned) in [
        ("k8s-default-web-foreign000", false),
        ("k8s-default-web-leftover00", true),
    ] {
        let mut create = elb
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Tcp)
            .port(31000)
            .vpc_id(&env.vpc)
            .target_type(TargetTypeEnum::Instance);
        if owned {
            create = create
                .tags(Tag::builder().key(CLUSTER_TAG).value("owned").build())
                .tags(
                    Tag::builder()
                        .key("kubernetes.io/service-name")
                        .value("default/web")
                        .build(),
                );
        }
        create.send().await.unwrap_or_else(|e| panic!("{e:?}"));
    }
    assert_eq!(snapshot(cloud).await.tgs.len(), 4);

    let calls = cloud.api_calls();
    calls.reset();
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("ensure_load_balancer_deleted: {:?}", calls.snapshot());
    let snap = snapshot(cloud).await;
    assert!(snap.lbs.is_empty(), "{:?}", snap.lbs);
    let left: Vec<&str> = snap
        .tgs
        .iter()
        .filter_map(|t| t.target_group_name())
        .collect();
    assert_eq!(left, vec!["k8s-default-web-foreign000"]);
    assert_eq!(cloud.get_load_balancer("c", &svc).await.ok(), Some(None));
    // Idempotent.
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_load_balancer_not_owned_is_never_touched() {
    let env = env().await;
    let cloud = &env.cloud;
    let svc = service(&[]);
    // Someone else's NLB under the Service's load balancer name.
    cloud
        .elb_client()
        .create_load_balancer()
        .name(default_load_balancer_name(&svc))
        .r#type(aws_sdk_elasticloadbalancingv2::types::LoadBalancerTypeEnum::Network)
        .subnets(&env.subnets[0])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let nodes = nodes(&env, 1).await;
    let err = cloud.ensure_load_balancer("c", &svc, &nodes).await.err();
    assert!(
        matches!(err, Some(CloudError::InvalidInput { .. })),
        "{err:?}"
    );
    cloud
        .ensure_load_balancer_deleted("c", &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = snapshot(cloud).await;
    assert_eq!(
        snap.lbs.len(),
        1,
        "a load balancer not tagged owned was deleted"
    );
    assert!(snap.tgs.is_empty());
}
