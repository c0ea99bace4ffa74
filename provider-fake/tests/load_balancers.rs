//! Load balancers: deterministic addresses, hosts and ports, implemented-elsewhere, invalid input, observers.

mod common;

use cloudprovider_api::{CloudError, LoadBalancers, default_load_balancer_name};
use common::{annotated, node, node_with_ip, ok, service};
use k8s_openapi::api::core::v1::Service;
use provider_fake::{
    ANNOTATION_IMPLEMENTED_ELSEWHERE, ANNOTATION_IP, FakeCloud, FakeConfig, FakeLoadBalancerPort,
};

fn ip_of(status: &k8s_openapi::api::core::v1::LoadBalancerStatus) -> String {
    status
        .ingress
        .as_ref()
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn addresses_are_deterministic_and_stable() {
    let cloud = FakeCloud::new();
    let (a, b, c) = (
        service("a", "uid-a"),
        service("b", "uid-b"),
        service("c", "uid-c"),
    );
    let nodes = [node("n1")];
    assert_eq!(
        ip_of(&ok(cloud.ensure_load_balancer("k", &a, &nodes).await)),
        "192.0.2.1"
    );
    assert_eq!(
        ip_of(&ok(cloud.ensure_load_balancer("k", &b, &nodes).await)),
        "192.0.2.2"
    );
    // Re-ensuring keeps the address.
    for _ in 0..3 {
        assert_eq!(
            ip_of(&ok(cloud.ensure_load_balancer("k", &a, &[]).await)),
            "192.0.2.1"
        );
    }
    // A freed address is the lowest free one again.
    ok(cloud.ensure_load_balancer_deleted("k", &a).await);
    assert_eq!(
        ip_of(&ok(cloud.ensure_load_balancer("k", &c, &nodes).await)),
        "192.0.2.1"
    );
    assert_eq!(ok(cloud.get_load_balancer("k", &a).await), None);
    let got = ok(cloud.get_load_balancer("k", &b).await).map(|s| ip_of(&s));
    assert_eq!(got.as_deref(), Some("192.0.2.2"));
}

#[tokio::test]
async fn hosts_and_ports_are_recorded() {
    let cloud = FakeCloud::new();
    let mut svc = service("web", "8f6b8a6e-2b1c-4a3e-9d7f-0c1e2d3f4a5b");
    if let Some(spec) = svc.spec.as_mut()
        && let Some(ports) = spec.ports.as_mut()
    {
        ports.push(k8s_openapi::api::core::v1::ServicePort {
            name: Some("dns".into()),
            protocol: Some("UDP".into()),
            port: 53,
            node_port: Some(30053),
            ..Default::default()
        });
    }
    let nodes = [
        node_with_ip("n2", "10.0.0.2"),
        node_with_ip("n1", "10.0.0.1"),
    ];
    ok(cloud.ensure_load_balancer("k", &svc, &nodes).await);

    let name = default_load_balancer_name(&svc);
    assert_eq!(name, "a8f6b8a6e2b1c4a3e9d7f0c1e2d3f4a5");
    let lb = cloud
        .load_balancer(&name)
        .unwrap_or_else(|| panic!("no LB {name}"));
    assert_eq!(lb.service, "default/web");
    assert_eq!(lb.cluster, "k");
    assert_eq!(lb.hosts, ["n1", "n2"]);
    assert_eq!(
        lb.host_addresses.get("n2").map(|a| a[0].address.as_str()),
        Some("10.0.0.2")
    );
    assert_eq!(
        lb.ports,
        [
            FakeLoadBalancerPort {
                name: Some("http".into()),
                protocol: "TCP".into(),
                port: 80,
                node_port: Some(30080)
            },
            FakeLoadBalancerPort {
                name: Some("dns".into()),
                protocol: "UDP".into(),
                port: 53,
                node_port: Some(30053)
            },
        ]
    );
    assert_eq!((lb.ensure_count, lb.update_count), (1, 0));

    // Updates replace the hosts only.
    ok(cloud.update_load_balancer("k", &svc, &[node("n3")]).await);
    let lb = cloud
        .load_balancer_of(&svc)
        .unwrap_or_else(|| panic!("no LB"));
    assert_eq!(lb.hosts, ["n3"]);
    assert_eq!(lb.ports.len(), 2);
    assert_eq!((lb.ensure_count, lb.update_count), (1, 1));
    assert_eq!(cloud.load_balancer_list().len(), 1);
}

#[tokio::test]
async fn update_of_an_absent_lb_is_not_found() {
    let cloud = FakeCloud::new();
    let r = cloud
        .update_load_balancer("k", &service("web", "u"), &[])
        .await;
    assert!(
        matches!(
            r,
            Err(CloudError::NotFound {
                kind: "load balancer",
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn clusters_do_not_share_load_balancers() {
    let cloud = FakeCloud::new();
    let svc = service("web", "u-1");
    ok(cloud.ensure_load_balancer("one", &svc, &[]).await);
    assert_eq!(ok(cloud.get_load_balancer("two", &svc).await), None);
    // Deleting in another cluster leaves ours alone.
    ok(cloud.ensure_load_balancer_deleted("two", &svc).await);
    assert!(ok(cloud.get_load_balancer("one", &svc).await).is_some());
}

#[tokio::test]
async fn implemented_elsewhere_by_annotation_or_class() {
    let cloud = FakeCloud::new();
    let annotated_svc = annotated(
        service("a", "u-a"),
        &[(ANNOTATION_IMPLEMENTED_ELSEWHERE, "true")],
    );
    let r = cloud.ensure_load_balancer("k", &annotated_svc, &[]).await;
    assert!(
        matches!(r, Err(CloudError::ImplementedElsewhere(_))),
        "{r:?}"
    );
    let r = cloud.update_load_balancer("k", &annotated_svc, &[]).await;
    assert!(
        matches!(r, Err(CloudError::ImplementedElsewhere(_))),
        "{r:?}"
    );
    // Deletion never answers implemented-elsewhere.
    ok(cloud
        .ensure_load_balancer_deleted("k", &annotated_svc)
        .await);

    let mut classed = service("b", "u-b");
    if let Some(spec) = classed.spec.as_mut() {
        spec.load_balancer_class = Some("fake.cloudprovider/elsewhere".into());
    }
    assert!(matches!(
        cloud.ensure_load_balancer("k", &classed, &[]).await,
        Err(CloudError::ImplementedElsewhere(_))
    ));

    // Configurable, and "false" means ours.
    let cloud = ok(FakeCloud::from_config(FakeConfig {
        implemented_elsewhere_classes: vec!["example.com/lb".into()],
        ..FakeConfig::default()
    }));
    assert!(cloud.ensure_load_balancer("k", &classed, &[]).await.is_ok());
    let not_elsewhere = annotated(
        service("c", "u-c"),
        &[(ANNOTATION_IMPLEMENTED_ELSEWHERE, "false")],
    );
    assert!(
        cloud
            .ensure_load_balancer("k", &not_elsewhere, &[])
            .await
            .is_ok()
    );
}

fn invalid_field(r: Result<impl std::fmt::Debug, CloudError>) -> String {
    match r {
        Err(CloudError::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[tokio::test]
async fn requested_addresses_are_honoured_or_rejected() {
    let cloud = FakeCloud::new();
    let bad = annotated(service("bad", "u-bad"), &[(ANNOTATION_IP, "not-an-ip")]);
    assert_eq!(
        invalid_field(cloud.ensure_load_balancer("k", &bad, &[]).await),
        ANNOTATION_IP
    );
    assert!(
        cloud.load_balancer_list().is_empty(),
        "a rejected ensure must not create anything"
    );

    let outside = annotated(service("out", "u-out"), &[(ANNOTATION_IP, "198.51.100.1")]);
    assert_eq!(
        invalid_field(cloud.ensure_load_balancer("k", &outside, &[]).await),
        ANNOTATION_IP
    );

    let wanted = annotated(service("w", "u-w"), &[(ANNOTATION_IP, "192.0.2.77")]);
    assert_eq!(
        ip_of(&ok(cloud.ensure_load_balancer("k", &wanted, &[]).await)),
        "192.0.2.77"
    );
    let taken = annotated(service("t", "u-t"), &[(ANNOTATION_IP, "192.0.2.77")]);
    assert_eq!(
        invalid_field(cloud.ensure_load_balancer("k", &taken, &[]).await),
        ANNOTATION_IP
    );

    // spec.loadBalancerIP is honoured the same way.
    let mut by_spec = service("s", "u-s");
    if let Some(spec) = by_spec.spec.as_mut() {
        spec.load_balancer_ip = Some("192.0.2.9".into());
    }
    assert_eq!(
        ip_of(&ok(cloud.ensure_load_balancer("k", &by_spec, &[]).await)),
        "192.0.2.9"
    );
    if let Some(spec) = by_spec.spec.as_mut() {
        spec.load_balancer_ip = Some("nope".into());
    }
    assert_eq!(
        invalid_field(cloud.ensure_load_balancer("k", &by_spec, &[]).await),
        "spec.loadBalancerIP"
    );

    // Changing the requested address moves the LB.
    let moved = annotated(service("w", "u-w"), &[(ANNOTATION_IP, "192.0.2.78")]);
    assert_eq!(
        ip_of(&ok(cloud.ensure_load_balancer("k", &moved, &[]).await)),
        "192.0.2.78"
    );
}

#[tokio::test]
async fn other_invalid_input() {
    let cloud = FakeCloud::new();
    let mut svc = service("p", "u-p");
    if let Some(port) = svc
        .spec
        .as_mut()
        .and_then(|s| s.ports.as_mut())
        .and_then(|p| p.first_mut())
    {
        port.protocol = Some("HTTP".into());
    }
    assert_eq!(
        invalid_field(cloud.ensure_load_balancer("k", &svc, &[]).await),
        "spec.ports[0].protocol"
    );
    let no_uid = Service {
        metadata: Default::default(),
        ..service("x", "")
    };
    assert_eq!(
        invalid_field(cloud.ensure_load_balancer("k", &no_uid, &[]).await),
        "metadata.uid"
    );
}

#[tokio::test]
async fn pool_exhaustion_is_transient() {
    let cloud = ok(FakeCloud::from_config(FakeConfig {
        load_balancer_ip_pool: ok("192.0.2.8/31".parse()),
        ..FakeConfig::default()
    }));
    assert_eq!(
        ip_of(&ok(cloud
            .ensure_load_balancer("k", &service("a", "u-a"), &[])
            .await)),
        "192.0.2.8"
    );
    assert_eq!(
        ip_of(&ok(cloud
            .ensure_load_balancer("k", &service("b", "u-b"), &[])
            .await)),
        "192.0.2.9"
    );
    let r = cloud
        .ensure_load_balancer("k", &service("c", "u-c"), &[])
        .await;
    assert!(matches!(r, Err(CloudError::Transient { .. })), "{r:?}");
}

#[tokio::test]
async fn subscribers_see_every_change() {
    let cloud = FakeCloud::new();
    let svc = service("web", "u-1");
    ok(cloud.ensure_load_balancer("k", &svc, &[node("n1")]).await);
    let mut rx = cloud.subscribe_load_balancers();
    assert_eq!(
        rx.borrow().len(),
        1,
        "the current LBs are there from the start"
    );

    ok(cloud
        .update_load_balancer("k", &svc, &[node("n1"), node("n2")])
        .await);
    ok(rx.changed().await);
    assert_eq!(rx.borrow_and_update()[0].hosts, ["n1", "n2"]);

    ok(cloud.ensure_load_balancer_deleted("k", &svc).await);
    ok(rx.changed().await);
    assert!(rx.borrow_and_update().is_empty());

    // Deleting an absent LB is no change.
    ok(cloud.ensure_load_balancer_deleted("k", &svc).await);
    assert!(!ok(rx.has_changed()));
}
