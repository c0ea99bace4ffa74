//! The service controller against a real apiserver and provider-fake.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, NodeBuilder, create_node, events_about, eventually};
use controller_core::service::{
    FINALIZER, LABEL_EXCLUDE_FROM_LOAD_BALANCERS, ServiceConfig, ServiceController, ServiceMetrics,
};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use provider_fake::{ANNOTATION_IMPLEMENTED_ELSEWHERE, ANNOTATION_IP, FaultKind, Method};

const WAIT: Duration = Duration::from_secs(10);

fn plain_node(name: &str) -> Node {
    NodeBuilder::new(name).build()
}

fn lb_service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(BTreeMap::from([("app".into(), name.to_owned())])),
            // The apiserver allocates the nodePort.
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn annotated(mut svc: Service, key: &str, value: &str) -> Service {
    svc.annotations_mut()
        .insert(key.to_owned(), value.to_owned());
    svc
}

fn services(env: &Env) -> Api<Service> {
    Api::namespaced(env.client(), "default")
}

async fn create_service(env: &Env, svc: &Service) -> Service {
    services(env)
        .create(&PostParams::default(), svc)
        .await
        .unwrap_or_else(|e| panic!("create service: {e}"))
}

/// Starts the controller with `config` and `nodes` created first (so the first sync already sees them).
async fn start(env: &Env, nodes: &[&str], config: ServiceConfig) {
    for n in nodes {
        create_node(env, &plain_node(n)).await;
    }
    env.run(ServiceController::new(config));
}

fn ingress_ip(svc: &Service) -> Option<String> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .ip
        .clone()
}

/// Waits until the Service has our finalizer and an ingress IP; returns it.
async fn wait_ensured(env: &Env, name: &str) -> Service {
    eventually(WAIT, "finalizer and ingress IP", || async {
        let svc = services(env).get(name).await.ok()?;
        (svc.finalizers().iter().any(|f| f == FINALIZER) && ingress_ip(&svc).is_some())
            .then_some(svc)
    })
    .await
}

async fn wait_hosts(env: &Env, svc: &Service, want: &[&str]) {
    let what = format!("load balancer hosts {want:?}");
    eventually(WAIT, &what, || async {
        let hosts = env.cloud.load_balancer_of(svc)?.hosts;
        (hosts == want).then_some(())
    })
    .await
}

async fn has_event(env: &Env, name: &str, type_: &str, reason: &str) -> Option<String> {
    events_about(env, name)
        .await
        .into_iter()
        .find(|(t, r, _)| t == type_ && r == reason)
        .map(|(_, _, note)| note)
}

fn ensure_calls_for(env: &Env, name: &str) -> usize {
    let key = format!("default/{name}");
    env.cloud
        .calls_of(Method::EnsureLoadBalancer)
        .iter()
        .filter(|c| c.key == key)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensures_load_balancer_and_records_status_once() {
    let env = Env::start().await;
    let mut registry = Registry::default();
    let metrics = ServiceMetrics::register(&mut registry);
    let mut config = ServiceConfig::default();
    config.metrics = metrics.clone();
    start(&env, &["node-b", "node-a"], config).await;
    let created = create_service(&env, &lb_service("web")).await;

    let svc = wait_ensured(&env, "web").await;
    let lb = env
        .cloud
        .load_balancer_of(&created)
        .unwrap_or_else(|| panic!("no fake load balancer"));
    assert_eq!(ingress_ip(&svc), Some(lb.ip.to_string()));
    assert_eq!(lb.hosts, ["node-a", "node-b"]);
    let node_port = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p[0].node_port);
    assert!(node_port.is_some());
    assert_eq!(lb.ports[0].node_port, node_port);
    eventually(WAIT, "EnsuredLoadBalancer event", || {
        has_event(&env, "web", "Normal", "EnsuredLoadBalancer")
    })
    .await;
    assert!(
        has_event(&env, "web", "Normal", "EnsuringLoadBalancer")
            .await
            .is_some()
    );

    // Our own finalizer and status patches must not cause further ensures.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ensure_calls_for(&env, "web"), 1);
    assert_eq!(metrics.loadbalancer_syncs.get(), 1);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .unwrap_or_else(|e| panic!("encode: {e}"));
    for name in [
        "service_controller_loadbalancer_sync_total 1",
        "service_controller_nodesync_error_total 0",
        "service_controller_nodesync_latency_seconds_count",
        "service_controller_update_loadbalancer_host_latency_seconds_count",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failure_warns_and_retries() {
    let env = Env::start().await;
    env.cloud
        .fail_next(Method::EnsureLoadBalancer, 1, FaultKind::Transient);
    start(&env, &["node-a"], ServiceConfig::default()).await;
    create_service(&env, &lb_service("web")).await;

    eventually(WAIT, "SyncLoadBalancerFailed warning", || {
        has_event(&env, "web", "Warning", "SyncLoadBalancerFailed")
    })
    .await;
    // The runtime's first backoff is 5 s plus jitter.
    eventually(Duration::from_secs(15), "status after retry", || async {
        let svc = services(&env).get("web").await.ok()?;
        ingress_ip(&svc)
    })
    .await;
    assert_eq!(ensure_calls_for(&env, "web"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_annotation_warns_once_without_hot_loop() {
    let env = Env::start().await;
    start(&env, &["node-a"], ServiceConfig::default()).await;
    create_service(
        &env,
        &annotated(lb_service("web"), ANNOTATION_IP, "not-an-ip"),
    )
    .await;

    let note = eventually(WAIT, "SyncLoadBalancerFailed warning", || {
        has_event(&env, "web", "Warning", "SyncLoadBalancerFailed")
    })
    .await;
    assert!(
        note.contains(ANNOTATION_IP),
        "note does not name the annotation: {note}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = ensure_calls_for(&env, "web");
    assert!((1..=2).contains(&calls), "{calls} ensure calls: hot loop");
    let svc = services(&env)
        .get("web")
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(ingress_ip(&svc), None);

    // Fixing the annotation is a change: the Service gets its load balancer.
    let fix = serde_json::json!({ "metadata": { "annotations": { ANNOTATION_IP: null } } });
    services(&env)
        .patch("web", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap_or_else(|e| panic!("patch: {e}"));
    wait_ensured(&env, "web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_removes_load_balancer_then_finalizer() {
    let env = Env::start().await;
    start(&env, &["node-a"], ServiceConfig::default()).await;
    let created = create_service(&env, &lb_service("web")).await;
    wait_ensured(&env, "web").await;
    assert!(env.cloud.load_balancer_of(&created).is_some());

    services(&env)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    eventually(WAIT, "Service gone", || async {
        services(&env)
            .get_opt("web")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        env.cloud.load_balancer_of(&created).is_none(),
        "load balancer leaked"
    );
    assert_eq!(env.cloud.count(Method::EnsureLoadBalancerDeleted), 1);
    // Events are written by a background queue: the Service can be gone before its last Event lands.
    eventually(WAIT, "DeletedLoadBalancer event", || {
        has_event(&env, "web", "Normal", "DeletedLoadBalancer")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_change_cleans_up_and_empties_status() {
    let env = Env::start().await;
    start(&env, &["node-a"], ServiceConfig::default()).await;
    let created = create_service(&env, &lb_service("web")).await;
    wait_ensured(&env, "web").await;

    let to_cluster_ip = serde_json::json!({ "spec": { "type": "ClusterIP" } });
    services(&env)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&to_cluster_ip),
        )
        .await
        .unwrap_or_else(|e| panic!("patch type: {e}"));
    let svc = eventually(WAIT, "finalizer removed and status emptied", || async {
        let svc = services(&env).get("web").await.ok()?;
        (svc.finalizers().is_empty() && ingress_ip(&svc).is_none()).then_some(svc)
    })
    .await;
    assert!(
        env.cloud.load_balancer_of(&created).is_none(),
        "load balancer leaked"
    );
    assert_eq!(svc.spec.and_then(|s| s.type_).as_deref(), Some("ClusterIP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_set_changes_update_every_load_balancer() {
    let env = Env::start().await;
    let mut config = ServiceConfig::default();
    config.workers = 2;
    start(&env, &["node-a", "node-b"], config).await;
    let web = create_service(&env, &lb_service("web")).await;
    let api = create_service(&env, &lb_service("api")).await;
    wait_ensured(&env, "web").await;
    wait_ensured(&env, "api").await;
    wait_hosts(&env, &web, &["node-a", "node-b"]).await;

    // A new node joins both load balancers, well before any resync (30 s).
    let started = std::time::Instant::now();
    create_node(&env, &plain_node("node-c")).await;
    wait_hosts(&env, &web, &["node-a", "node-b", "node-c"]).await;
    wait_hosts(&env, &api, &["node-a", "node-b", "node-c"]).await;
    let latency = started.elapsed();
    eprintln!("node join reached both load balancers after {latency:?}");
    assert!(
        latency < Duration::from_secs(3),
        "node sync took {latency:?}"
    );

    // Excluding a node by label takes it out; removing the label puts it back; a parseable false keeps it.
    let label = |value: Option<&str>| serde_json::json!({ "metadata": { "labels": { LABEL_EXCLUDE_FROM_LOAD_BALANCERS: value } } });
    let nodes = env.nodes();
    let pp = PatchParams::default();
    nodes
        .patch("node-b", &pp, &Patch::Merge(&label(Some("true"))))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_hosts(&env, &web, &["node-a", "node-c"]).await;
    wait_hosts(&env, &api, &["node-a", "node-c"]).await;
    nodes
        .patch("node-b", &pp, &Patch::Merge(&label(None)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_hosts(&env, &web, &["node-a", "node-b", "node-c"]).await;
    wait_hosts(&env, &api, &["node-a", "node-b", "node-c"]).await;
    nodes
        .patch("node-b", &pp, &Patch::Merge(&label(Some("False"))))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A deleted node leaves (the shared cache does not announce deletions; the poll catches them).
    nodes
        .delete("node-a", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_hosts(&env, &web, &["node-b", "node-c"]).await;
    wait_hosts(&env, &api, &["node-b", "node-c"]).await;

    // Hosts changed through update_load_balancer only; each Service was ensured once.
    for svc in [&web, &api] {
        let lb = env
            .cloud
            .load_balancer_of(svc)
            .unwrap_or_else(|| panic!("no load balancer"));
        assert_eq!(lb.ensure_count, 1, "{}", lb.service);
        assert!(
            lb.update_count >= 3,
            "{}: {} updates",
            lb.service,
            lb.update_count
        );
    }
    eventually(WAIT, "UpdatedLoadBalancer event", || {
        has_event(&env, "web", "Normal", "UpdatedLoadBalancer")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implemented_elsewhere_is_left_alone() {
    let env = Env::start().await;
    start(&env, &["node-a"], ServiceConfig::default()).await;
    let created = create_service(
        &env,
        &annotated(lb_service("web"), ANNOTATION_IMPLEMENTED_ELSEWHERE, "true"),
    )
    .await;

    eventually(WAIT, "an ensure answered implemented elsewhere", || async {
        (ensure_calls_for(&env, "web") >= 1).then_some(())
    })
    .await;
    eventually(WAIT, "finalizer taken off again", || async {
        services(&env)
            .get("web")
            .await
            .ok()?
            .finalizers()
            .is_empty()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let svc = services(&env)
        .get("web")
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert!(
        svc.finalizers().is_empty(),
        "finalizer came back: {:?}",
        svc.finalizers()
    );
    assert_eq!(ingress_ip(&svc), None);
    assert!(env.cloud.load_balancer_of(&created).is_none());
    assert_eq!(
        ensure_calls_for(&env, "web"),
        1,
        "implemented elsewhere is asked again and again"
    );
    let warnings = events_about(&env, "web")
        .await
        .into_iter()
        .filter(|e| e.0 == "Warning")
        .count();
    assert_eq!(warnings, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_load_balancer_class_is_ignored() {
    let env = Env::start().await;
    let mut config = ServiceConfig::default();
    config.load_balancer_classes = vec!["example.com/ours".into()];
    start(&env, &["node-a"], config).await;
    let mut other = lb_service("other");
    let mut ours = lb_service("ours");
    for (svc, class) in [
        (&mut other, "example.com/theirs"),
        (&mut ours, "example.com/ours"),
    ] {
        if let Some(spec) = svc.spec.as_mut() {
            spec.load_balancer_class = Some(class.into());
        }
    }
    create_service(&env, &other).await;
    create_service(&env, &ours).await;
    // The configured class is served; by then the other Service has been seen too.
    wait_ensured(&env, "ours").await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let svc = services(&env)
        .get("other")
        .await
        .unwrap_or_else(|e| panic!("get: {e}"));
    assert!(svc.finalizers().is_empty());
    assert_eq!(ingress_ip(&svc), None);
    assert_eq!(ensure_calls_for(&env, "other"), 0);
    assert!(events_about(&env, "other").await.is_empty());
}

fn cluster_ip_service(name: &str) -> Service {
    let mut svc = lb_service(name);
    if let Some(spec) = svc.spec.as_mut() {
        spec.type_ = Some("ClusterIP".into());
    }
    svc
}

/// A node-set change re-queues only the Services whose load balancer hosts are stale: here the one load balancer,
/// not the twenty ClusterIP Services beside it (each reconcile is counted by the runtime's metrics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_changes_requeue_only_load_balancers() {
    let env = Env::start().await;
    start(&env, &["node-a"], ServiceConfig::default()).await;
    for i in 0..20 {
        create_service(&env, &cluster_ip_service(&format!("plain-{i}"))).await;
    }
    let web = create_service(&env, &lb_service("web")).await;
    wait_ensured(&env, "web").await;
    wait_hosts(&env, &web, &["node-a"]).await;
    // Every Service was reconciled once when it appeared; let the finalizer and status patches settle.
    let reconciles = || env.metrics.count("service-lb-controller", "success");
    eventually(WAIT, "21 Services reconciled", || async {
        (reconciles() >= 21).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = reconciles();

    for node in ["node-b", "node-c"] {
        create_node(&env, &plain_node(node)).await;
        let hosts: Vec<&str> = ["node-a", "node-b", "node-c"]
            .into_iter()
            .take_while(|n| *n <= node)
            .collect();
        wait_hosts(&env, &web, &hosts).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = reconciles();
    eprintln!("reconciles for two node additions: {}", after - before);
    // Two node-set changes: the load balancer twice (a change landing during the first update may add one more),
    // never the ClusterIP Services (which would be 40 more).
    assert!(
        (2..=4).contains(&(after - before)),
        "{} reconciles for two node-set changes",
        after - before
    );
}
