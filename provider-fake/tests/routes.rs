//! Routes: idempotent creation, per-cluster listing, blackholes, conflicts, deletion.

mod common;

use cloudprovider_api::ipnet::IpNet;
use cloudprovider_api::{CloudError, Route, Routes};
use common::ok;
use provider_fake::{FakeCloud, FakeError, FakeInstance, FakeInstanceState};

fn cidr(s: &str) -> IpNet {
    ok(s.parse())
}

fn route(target: &str, dest: &str) -> Route {
    Route {
        name: String::new(),
        target_node: target.into(),
        target_node_addresses: vec![],
        destination_cidr: cidr(dest),
        blackhole: false,
    }
}

fn summary(routes: &[Route]) -> Vec<(String, String, String, bool)> {
    routes
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.target_node.clone(),
                r.destination_cidr.to_string(),
                r.blackhole,
            )
        })
        .collect()
}

fn row(name: &str, target: &str, dest: &str, blackhole: bool) -> (String, String, String, bool) {
    (name.into(), target.into(), dest.into(), blackhole)
}

#[tokio::test]
async fn create_is_idempotent_and_listing_is_per_cluster() {
    let cloud = FakeCloud::new();
    ok(cloud
        .create_route("k", "uid-2", &route("n2", "10.244.2.0/24"))
        .await);
    ok(cloud
        .create_route("k", "uid-1", &route("n1", "10.244.1.0/24"))
        .await);
    ok(cloud
        .create_route("k", "uid-1", &route("n1", "10.244.1.0/24"))
        .await);
    ok(cloud
        .create_route("other", "", &route("n1", "10.244.1.0/24"))
        .await);

    assert_eq!(
        summary(&ok(cloud.list_routes("k").await)),
        [
            row("k-uid-1", "n1", "10.244.1.0/24", false),
            row("k-uid-2", "n2", "10.244.2.0/24", false),
        ]
    );
    assert_eq!(
        summary(&ok(cloud.list_routes("other").await)),
        [row("other-10-244-1-0-24", "n1", "10.244.1.0/24", false)]
    );
    assert!(ok(cloud.list_routes("none").await).is_empty());
}

#[tokio::test]
async fn delete_and_delete_absent() {
    let cloud = FakeCloud::new();
    ok(cloud
        .create_route("k", "u", &route("n1", "10.244.1.0/24"))
        .await);
    let listed = ok(cloud.list_routes("k").await);
    ok(cloud.delete_route("k", &listed[0]).await);
    assert!(ok(cloud.list_routes("k").await).is_empty());
    ok(cloud.delete_route("k", &listed[0]).await);
    ok(cloud
        .delete_route("k", &route("ghost", "10.9.0.0/16"))
        .await);
}

#[tokio::test]
async fn a_live_route_to_another_target_is_a_transient_conflict() {
    let cloud = FakeCloud::new();
    ok(cloud
        .create_route("k", "u1", &route("n1", "10.244.1.0/24"))
        .await);
    let r = cloud
        .create_route("k", "u2", &route("n2", "10.244.1.0/24"))
        .await;
    assert!(matches!(r, Err(CloudError::Transient { .. })), "{r:?}");
    let r = cloud
        .create_route("k", "u", &route("", "10.244.3.0/24"))
        .await;
    assert!(matches!(r, Err(CloudError::InvalidInput { .. })), "{r:?}");
}

#[tokio::test]
async fn blackholes_manual_and_from_terminated_targets() {
    let cloud = FakeCloud::new();
    ok(cloud.add_instance(FakeInstance::new("n1")));
    ok(cloud
        .create_route("k", "u1", &route("n1", "10.244.1.0/24"))
        .await);
    // A target the fake knows nothing about is not a blackhole.
    ok(cloud
        .create_route("k", "u2", &route("unknown", "10.244.2.0/24"))
        .await);

    ok(cloud.set_instance_state("n1", FakeInstanceState::Terminated));
    let blackholes: Vec<bool> = ok(cloud.list_routes("k").await)
        .iter()
        .map(|r| r.blackhole)
        .collect();
    assert_eq!(blackholes, [true, false]);

    // A blackhole route is replaced by a new route for the destination.
    ok(cloud
        .create_route("k", "u3", &route("n3", "10.244.1.0/24"))
        .await);
    assert_eq!(
        summary(&ok(cloud.list_routes("k").await))[0],
        row("k-u3", "n3", "10.244.1.0/24", false)
    );

    ok(cloud.set_route_blackhole("k", cidr("10.244.2.0/24"), true));
    assert!(ok(cloud.list_routes("k").await)[1].blackhole);
    assert!(cloud.route_list("k")[1].blackhole);
    ok(cloud.set_route_blackhole("k", cidr("10.244.2.0/24"), false));
    assert!(!ok(cloud.list_routes("k").await)[1].blackhole);
    assert_eq!(
        cloud.set_route_blackhole("k", cidr("10.1.0.0/16"), true),
        Err(FakeError::UnknownRoute {
            cluster: "k".into(),
            cidr: "10.1.0.0/16".into()
        })
    );
}
