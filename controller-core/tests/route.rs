//! The route controller against a real kube-apiserver and provider-fake.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudprovider_api::{CloudProvider, CloudResult, Route, Routes, async_trait};
use common::{Env, NodeBuilder, create_node, events_about, eventually};
use controller_core::route::{self, RouteConfig, RouteController};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams};
use provider_fake::{FakeCloud, FaultKind, Method};
use tokio::task::JoinHandle;

const CLUSTER: &str = "kubernetes";

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn config(cidrs: &[&str], period: Duration) -> RouteConfig {
    let mut c = RouteConfig::new(cidrs.iter().map(|s| net(s)).collect());
    c.reconciliation_period = period;
    c
}

/// A Node with the given pod CIDRs (`spec.podCIDR` = the first, as the apiserver requires).
fn node(name: &str, cidrs: &[&str]) -> Node {
    NodeBuilder::new(name).pod_cidrs(cidrs).build()
}

fn start(env: &Env, config: RouteConfig) -> JoinHandle<()> {
    env.run(RouteController::new(config))
}

/// The fake's routes as CIDR → (target, blackhole).
fn routes(cloud: &FakeCloud) -> BTreeMap<String, (String, bool)> {
    cloud
        .route_list(CLUSTER)
        .into_iter()
        .map(|r| (r.destination_cidr.to_string(), (r.target_node, r.blackhole)))
        .collect()
}

fn live(pairs: &[(&str, &str)]) -> BTreeMap<String, (String, bool)> {
    pairs
        .iter()
        .map(|(cidr, target)| ((*cidr).to_owned(), ((*target).to_owned(), false)))
        .collect()
}

async fn precreate(cloud: &FakeCloud, target: &str, cidr: &str) {
    let route = Route {
        name: String::new(),
        target_node: target.to_owned(),
        target_node_addresses: Vec::new(),
        destination_cidr: net(cidr),
        blackhole: false,
    };
    let routes = cloud.routes().unwrap_or_else(|| panic!("fake has routes"));
    routes
        .create_route(CLUSTER, "", &route)
        .await
        .unwrap_or_else(|e| panic!("pre-create {cidr}: {e}"));
}

/// `NetworkUnavailable` of the node as (status, reason, message).
async fn network_condition(env: &Env, name: &str) -> Option<(String, String, String)> {
    let node = env.nodes().get(name).await.ok()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == route::CONDITION_NETWORK_UNAVAILABLE)
        .map(|c| {
            (
                c.status,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
            )
        })
}

async fn wait_condition(env: &Env, name: &str, status: &str, reason: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{name}: NetworkUnavailable={status}/{reason}"),
        || async {
            network_condition(env, name)
                .await
                .filter(|(s, r, _)| s == status && r == reason)
                .map(|_| ())
        },
    )
    .await;
}

async fn wait_routes(env: &Env, want: &BTreeMap<String, (String, bool)>) {
    let cloud = env.cloud.clone();
    let last = eventually(Duration::from_secs(10), "routes to converge", || {
        let cloud = cloud.clone();
        async move { Some(routes(&cloud)).filter(|r| r == want) }
    })
    .await;
    assert_eq!(&last, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_converge_and_stale_blackhole_and_moved_routes_are_replaced() {
    let env = Env::start().await;
    let cloud = &env.cloud;
    // Inside the cluster CIDR: a route to a node that does not exist, a blackhole, and a CIDR that moved to "c".
    precreate(cloud, "ghost", "10.244.99.0/24").await;
    precreate(cloud, "gone", "10.244.98.0/24").await;
    cloud
        .set_route_blackhole(CLUSTER, net("10.244.98.0/24"), true)
        .unwrap_or_else(|e| panic!("{e}"));
    precreate(cloud, "old", "10.244.3.0/24").await;
    // Outside: not ours, whatever state it is in.
    precreate(cloud, "ext", "192.168.5.0/24").await;
    precreate(cloud, "ext", "192.168.6.0/24").await;
    cloud
        .set_route_blackhole(CLUSTER, net("192.168.6.0/24"), true)
        .unwrap_or_else(|e| panic!("{e}"));

    let a = create_node(&env, &node("a", &["10.244.1.0/24", "fd00:10:244:1::/64"])).await;
    create_node(&env, &node("b", &["10.244.2.0/24"])).await;
    create_node(&env, &node("c", &["10.244.3.0/24"])).await;
    create_node(&env, &node("d", &["172.16.0.0/24"])).await;
    // b reports an address, which its route must carry.
    let status = NodeBuilder::new("b")
        .address("InternalIP", "192.0.2.2")
        .build();
    env.nodes()
        .patch_status("b", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("patch b status: {e}"));

    let _controller = start(
        &env,
        config(
            &["10.244.0.0/16", "fd00:10:244::/56"],
            Duration::from_secs(60),
        ),
    );

    let mut want = live(&[
        ("10.244.1.0/24", "a"),
        ("10.244.2.0/24", "b"),
        ("10.244.3.0/24", "c"),
        ("192.168.5.0/24", "ext"),
        ("fd00:10:244:1::/64", "a"),
    ]);
    want.insert("192.168.6.0/24".into(), ("ext".into(), true));
    wait_routes(&env, &want).await;

    let listed = cloud.route_list(CLUSTER);
    let b_route = listed.iter().find(|r| r.target_node == "b");
    let addresses: Vec<_> = b_route
        .map(|r| r.target_node_addresses.clone())
        .unwrap_or_default();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert_eq!(addresses[0].address, "192.0.2.2");
    // The name hint is the node's UID (the fake names routes "<cluster>-<hint>").
    let a_uid = a.metadata.uid.unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|r| r.target_node == "a" && r.name == format!("{CLUSTER}-{a_uid}")),
        "{listed:?}"
    );

    for name in ["a", "b", "c"] {
        wait_condition(&env, name, "False", "RouteCreated").await;
    }
    let (_, _, message) = network_condition(&env, "a").await.unwrap_or_default();
    assert_eq!(message, "RouteController created a route");
    // d's pod CIDR is outside the cluster CIDRs: no route and no condition.
    assert_eq!(network_condition(&env, "d").await, None);
    // One round did it all: no per-node listing.
    assert!(
        cloud.count(Method::ListRoutes) <= 3,
        "{}",
        cloud.count(Method::ListRoutes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_removes_its_route() {
    let env = Env::start().await;
    create_node(&env, &node("a", &["10.244.1.0/24"])).await;
    create_node(&env, &node("b", &["10.244.2.0/24"])).await;
    // A long period: only the Node deletion can trigger the round that removes the route.
    let _controller = start(&env, config(&["10.244.0.0/16"], Duration::from_secs(60)));
    wait_routes(
        &env,
        &live(&[("10.244.1.0/24", "a"), ("10.244.2.0/24", "b")]),
    )
    .await;

    let deleted_at = tokio::time::Instant::now();
    env.nodes()
        .delete("a", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete a: {e}"));
    wait_routes(&env, &live(&[("10.244.2.0/24", "b")])).await;
    // Noticed from the cache's generation, not from the 5 s safety scan or the 60 s resync.
    let took = deleted_at.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "route removed {took:?} after the Node"
    );
    assert_eq!(env.cloud.count(Method::DeleteRoute), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_failure_reports_then_recovers_without_hot_looping() {
    let env = Env::start().await;
    env.cloud
        .fail_always_for(Method::CreateRoute, "10.244.7.0/24", FaultKind::Transient);
    create_node(&env, &node("x", &["10.244.7.0/24"])).await;
    create_node(&env, &node("y", &["10.244.8.0/24"])).await;
    let _controller = start(&env, config(&["10.244.0.0/16"], Duration::from_secs(60)));

    // The healthy node is routed regardless.
    wait_condition(&env, "y", "False", "RouteCreated").await;
    wait_condition(&env, "x", "True", "NoRouteCreated").await;
    let (_, _, message) = network_condition(&env, "x").await.unwrap_or_default();
    assert_eq!(message, "RouteController failed to create a route");
    let events = eventually(
        Duration::from_secs(10),
        "FailedToCreateRoute event",
        || async {
            Some(events_about(&env, "x").await)
                .filter(|e| e.iter().any(|(_, r, _)| r == "FailedToCreateRoute"))
        },
    )
    .await;
    let event = events.iter().find(|(_, r, _)| r == "FailedToCreateRoute");
    let (kind, _, note) = event.cloned().unwrap_or_default();
    assert_eq!(kind, "Warning");
    assert!(note.contains("10.244.7.0/24"), "{note}");

    // Retries back off: over two seconds of failure, a handful of attempts, not a loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = env
        .cloud
        .calls_of(Method::CreateRoute)
        .iter()
        .filter(|c| c.key == "10.244.7.0/24")
        .count();
    assert!((1..=4).contains(&attempts), "{attempts} attempts");

    env.cloud.clear_faults(Method::CreateRoute);
    wait_routes(
        &env,
        &live(&[("10.244.7.0/24", "x"), ("10.244.8.0/24", "y")]),
    )
    .await;
    wait_condition(&env, "x", "False", "RouteCreated").await;
    // y's route was created once and never again.
    let y_creates = env
        .cloud
        .calls_of(Method::CreateRoute)
        .iter()
        .filter(|c| c.key == "10.244.8.0/24")
        .count();
    assert_eq!(y_creates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_even_when_nodes_change() {
    let env = Env::start().await;
    env.cloud.fail_next(
        Method::CreateRoute,
        1,
        FaultKind::Throttled(Duration::from_secs(3)),
    );
    create_node(&env, &node("a", &["10.244.1.0/24"])).await;
    let _controller = start(&env, config(&["10.244.0.0/16"], Duration::from_secs(60)));

    let cloud = env.cloud.clone();
    eventually(Duration::from_secs(10), "the throttled CreateRoute", || {
        let cloud = cloud.clone();
        async move { (cloud.count(Method::CreateRoute) >= 1).then_some(()) }
    })
    .await;
    let seen = tokio::time::Instant::now();
    let lists = env.cloud.count(Method::ListRoutes);
    // A Node change would normally start a round after the debounce; the cloud's retry-after wins.
    create_node(&env, &node("b", &["10.244.2.0/24"])).await;
    tokio::time::sleep_until(seen + Duration::from_millis(2500)).await;
    assert_eq!(
        env.cloud.count(Method::ListRoutes),
        lists,
        "a round ran inside the retry-after"
    );
    assert_eq!(env.cloud.count(Method::CreateRoute), 1);

    wait_routes(
        &env,
        &live(&[("10.244.1.0/24", "a"), ("10.244.2.0/24", "b")]),
    )
    .await;
    wait_condition(&env, "a", "False", "RouteCreated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_resync_repairs_routes_removed_behind_its_back() {
    let env = Env::start().await;
    create_node(&env, &node("a", &["10.244.1.0/24"])).await;
    let _controller = start(&env, config(&["10.244.0.0/16"], Duration::from_secs(1)));
    let want = live(&[("10.244.1.0/24", "a")]);
    wait_routes(&env, &want).await;

    let listed = env.cloud.route_list(CLUSTER);
    let routes_api = env
        .cloud
        .routes()
        .unwrap_or_else(|| panic!("fake has routes"));
    for r in &listed {
        routes_api
            .delete_route(CLUSTER, r)
            .await
            .unwrap_or_else(|e| panic!("delete: {e}"));
    }
    assert!(env.cloud.route_list(CLUSTER).is_empty());
    // No Node changed: only the safety resync can bring it back.
    wait_routes(&env, &want).await;
}

/// Routes of the fake behind added latency, counting calls in flight.
struct SlowRoutes {
    cloud: FakeCloud,
    latency: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl SlowRoutes {
    async fn timed<T>(&self, call: impl Future<Output = T>) -> T {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        let out = call.await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn inner(&self) -> &dyn Routes {
        self.cloud
            .routes()
            .unwrap_or_else(|| panic!("fake has routes"))
    }
}

impl CloudProvider for SlowRoutes {
    fn provider_name(&self) -> &str {
        "slow-fake"
    }

    fn routes(&self) -> Option<&dyn Routes> {
        Some(self)
    }
}

#[async_trait]
impl Routes for SlowRoutes {
    async fn list_routes(&self, cluster_name: &str) -> CloudResult<Vec<Route>> {
        self.timed(self.inner().list_routes(cluster_name)).await
    }

    async fn create_route(
        &self,
        cluster_name: &str,
        name_hint: &str,
        route: &Route,
    ) -> CloudResult<()> {
        self.timed(self.inner().create_route(cluster_name, name_hint, route))
            .await
    }

    async fn delete_route(&self, cluster_name: &str, route: &Route) -> CloudResult<()> {
        self.timed(self.inner().delete_route(cluster_name, route))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_bursts_are_debounced_and_cloud_calls_bounded() {
    let mut env = Env::start().await;
    let slow = Arc::new(SlowRoutes {
        cloud: env.cloud.clone(),
        latency: Duration::from_millis(25),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    env.ctx.provider = slow.clone();
    let mut cfg = config(&["10.244.0.0/16"], Duration::from_secs(60));
    cfg.max_concurrent_ops = 3;
    let _controller = start(&env, cfg);

    // The first round (no nodes) lists once.
    let cloud = env.cloud.clone();
    eventually(Duration::from_secs(10), "the initial round", || {
        let cloud = cloud.clone();
        async move { (cloud.count(Method::ListRoutes) == 1).then_some(()) }
    })
    .await;

    // Twenty nodes joining over a second or so: without debouncing, a round (a few 25 ms cloud calls) would
    // start after nearly every one of them.
    for i in 0..20 {
        create_node(
            &env,
            &node(&format!("n{i}"), &[&format!("10.244.{i}.0/24")]),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let want: BTreeMap<_, _> = (0..20)
        .map(|i| (format!("10.244.{i}.0/24"), (format!("n{i}"), false)))
        .collect();
    wait_routes(&env, &want).await;
    for i in 0..20 {
        wait_condition(&env, &format!("n{i}"), "False", "RouteCreated").await;
    }

    let rounds = env.cloud.count(Method::ListRoutes) - 1;
    assert!(
        rounds <= 3,
        "{rounds} rounds (ListRoutes calls) for a burst of 20 nodes"
    );
    assert_eq!(
        env.cloud.count(Method::CreateRoute),
        20,
        "each route created once"
    );
    let max = slow.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} cloud calls in flight, limit 3");
    assert!(max >= 2, "creates ran one at a time ({max})");
    // Our own condition writes do not trigger more rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.cloud.count(Method::ListRoutes), rounds + 1);
}
