//! Fault injection (next-N errors, persistent and per-key faults, throttling, latency) and the call log.

mod common;

use std::time::Duration;

use cloudprovider_api::{
    CloudError, CloudProvider, Clusters, InstanceState, Instances, LoadBalancers, Zones,
};
use common::{node, ok, service};
use provider_fake::{
    CallOutcome, FakeCloud, FakeConfig, FakeInstance, FakeInstanceState, FaultKind, LatencyConfig,
    Method, RateLimit,
};
use tokio::time::Instant;

fn cloud_with(names: &[&str]) -> FakeCloud {
    let cloud = FakeCloud::new();
    for name in names {
        ok(cloud.add_instance(FakeInstance::new(*name)));
    }
    cloud
}

#[tokio::test]
async fn next_n_calls_fail_then_succeed() {
    let cloud = cloud_with(&["n1"]);
    cloud.fail_next(Method::InstanceExists, 2, FaultKind::Transient);
    assert_eq!(cloud.pending_faults(Method::InstanceExists), Some(2));
    let n1 = node("n1");
    for _ in 0..2 {
        let err = cloud.instance_exists(&n1).await.err();
        assert!(matches!(err, Some(CloudError::Transient { .. })), "{err:?}");
    }
    assert!(ok(cloud.instance_exists(&n1).await));
    assert_eq!(cloud.pending_faults(Method::InstanceExists), Some(0));
    // Other methods were never affected.
    assert!(!ok(cloud.instance_shutdown(&n1).await));
}

#[tokio::test]
async fn queued_faults_apply_in_order_with_their_kinds() {
    let cloud = cloud_with(&["n1"]);
    cloud.fail_next(
        Method::InstanceMetadata,
        1,
        FaultKind::Throttled(Duration::from_secs(9)),
    );
    cloud.fail_next(Method::InstanceMetadata, 1, FaultKind::NotFound);
    cloud.fail_next(
        Method::InstanceMetadata,
        1,
        FaultKind::InvalidInput("spec.providerID".into()),
    );
    let n1 = node("n1");
    let first = cloud.instance_metadata(&n1).await.err();
    assert_eq!(
        first.as_ref().and_then(CloudError::retry_after),
        Some(Duration::from_secs(9))
    );
    let second = cloud.instance_metadata(&n1).await.err();
    assert!(
        matches!(second, Some(CloudError::NotFound { kind: "instance", ref id }) if id == "n1"),
        "{second:?}"
    );
    let third = cloud.instance_metadata(&n1).await.err();
    assert!(
        matches!(third, Some(CloudError::InvalidInput { ref field, .. }) if field == "spec.providerID")
    );
    assert!(cloud.instance_metadata(&n1).await.is_ok());
}

#[tokio::test]
async fn persistent_faults_last_until_cleared() {
    let cloud = FakeCloud::new();
    cloud.fail_always(Method::Zone, FaultKind::NotImplemented);
    assert_eq!(cloud.pending_faults(Method::Zone), None);
    for _ in 0..5 {
        assert!(matches!(
            cloud.zone().await,
            Err(CloudError::NotImplemented("zone"))
        ));
    }
    cloud.clear_faults(Method::Zone);
    assert!(cloud.zone().await.is_ok());

    cloud.fail_always(Method::Initialize, FaultKind::Transient);
    assert!(cloud.initialize(&init_context()).await.is_err());
    cloud.reset_faults();
    assert!(cloud.initialize(&init_context()).await.is_ok());
}

#[tokio::test]
async fn per_key_faults_hit_only_their_key() {
    let cloud = cloud_with(&["a", "b"]);
    cloud.fail_always_for(
        Method::EnsureLoadBalancer,
        "default/web",
        FaultKind::ImplementedElsewhere,
    );
    let nodes = [node("a")];
    let web = cloud
        .ensure_load_balancer("c", &service("web", "u-1"), &nodes)
        .await;
    assert!(
        matches!(web, Err(CloudError::ImplementedElsewhere(_))),
        "{web:?}"
    );
    assert!(
        cloud
            .ensure_load_balancer("c", &service("api", "u-2"), &nodes)
            .await
            .is_ok()
    );

    cloud.fail_next_for(Method::InstanceExists, "b", 1, FaultKind::Transient);
    assert!(ok(cloud.instance_exists(&node("a")).await));
    assert!(cloud.instance_exists(&node("b")).await.is_err());
    assert!(ok(cloud.instance_exists(&node("b")).await));
}

#[tokio::test]
async fn instance_states_is_one_call_with_per_node_faults() {
    let cloud = cloud_with(&["a", "b", "c"]);
    ok(cloud.set_instance_state("b", FakeInstanceState::Stopped));
    ok(cloud.set_instance_state("c", FakeInstanceState::Terminated));
    let owned = [node("a"), node("b"), node("c"), node("never")];
    let nodes: Vec<&k8s_openapi::api::core::v1::Node> = owned.iter().collect();
    cloud.fail_next_for(Method::InstanceStates, "b", 1, FaultKind::Transient);

    let states = cloud.instance_states(&nodes).await;
    assert!(matches!(states[0], Ok(InstanceState::Running)));
    assert!(matches!(states[1], Err(CloudError::Transient { .. })));
    assert!(matches!(states[2], Ok(InstanceState::Gone)));
    assert!(matches!(states[3], Ok(InstanceState::Gone)));
    // One call, no per-node calls.
    assert_eq!(cloud.count(Method::InstanceStates), 1);
    assert_eq!(cloud.count(Method::InstanceExists), 0);
    assert_eq!(cloud.calls_of(Method::InstanceStates)[0].key, "a,b,c,never");

    let states = cloud.instance_states(&nodes).await;
    assert!(matches!(states[1], Ok(InstanceState::Shutdown)));

    // A method-wide fault fails every entry.
    cloud.fail_next(
        Method::InstanceStates,
        1,
        FaultKind::Throttled(Duration::from_secs(1)),
    );
    let states = cloud.instance_states(&nodes).await;
    assert_eq!(states.len(), 4);
    assert!(
        states
            .iter()
            .all(|s| matches!(s, Err(CloudError::Throttled { .. })))
    );
    assert_eq!(
        cloud.calls_of(Method::InstanceStates)[2].outcome,
        CallOutcome::Err("throttled")
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_is_a_token_bucket() {
    let cloud = cloud_with(&["n1"]);
    cloud.set_rate_limit(Some(RateLimit::new(2.0, 3)));
    let n1 = node("n1");
    // A burst of 3 goes through, the 4th is throttled with the time until the next token.
    for _ in 0..3 {
        assert!(cloud.instance_exists(&n1).await.is_ok());
    }
    let throttled = cloud.instance_exists(&n1).await.err();
    assert_eq!(
        throttled.as_ref().and_then(CloudError::retry_after),
        Some(Duration::from_millis(500))
    );
    // Throttled calls have no effect and are logged as such.
    assert_eq!(
        cloud.calls().last().map(|c| c.outcome),
        Some(CallOutcome::Err("throttled"))
    );

    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(cloud.instance_exists(&n1).await.is_ok());
    assert!(cloud.instance_exists(&n1).await.is_err());

    // After a long pause the bucket is full again, but not fuller than the burst.
    tokio::time::advance(Duration::from_secs(60)).await;
    let results: Vec<bool> = attempts(&cloud, &n1, 4).await;
    assert_eq!(results, [true, true, true, false]);

    cloud.set_rate_limit(None);
    assert_eq!(attempts(&cloud, &n1, 10).await, [true; 10]);
}

async fn attempts(cloud: &FakeCloud, n: &k8s_openapi::api::core::v1::Node, k: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..k {
        out.push(cloud.instance_exists(n).await.is_ok());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn per_method_rate_limit_with_fixed_retry_after() {
    let cloud = FakeCloud::new();
    let limit = RateLimit::new(1.0, 1).with_retry_after(Duration::from_secs(5));
    cloud.set_method_rate_limit(Method::Zone, Some(limit));
    assert!(cloud.zone().await.is_ok());
    let err = cloud.zone().await.err();
    assert_eq!(
        err.as_ref().and_then(CloudError::retry_after),
        Some(Duration::from_secs(5))
    );
    // Other methods are not limited.
    for _ in 0..5 {
        assert!(Clusters::list_clusters(&cloud).await.is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn latency_is_added_per_method_or_globally() {
    let cloud = cloud_with(&["n1"]);
    let n1 = node("n1");
    cloud.set_global_latency(Duration::from_millis(100));
    cloud.set_latency(Method::InstanceMetadata, Duration::from_secs(2));

    let start = Instant::now();
    assert!(cloud.instance_exists(&n1).await.is_ok());
    assert_eq!(start.elapsed(), Duration::from_millis(100));

    let start = Instant::now();
    assert!(cloud.instance_metadata(&n1).await.is_ok());
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // Latency also delays failing calls.
    cloud.fail_next(Method::InstanceMetadata, 1, FaultKind::Transient);
    let start = Instant::now();
    assert!(cloud.instance_metadata(&n1).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    cloud.clear_latency(Method::InstanceMetadata);
    let start = Instant::now();
    assert!(cloud.instance_metadata(&n1).await.is_ok());
    assert_eq!(start.elapsed(), Duration::from_millis(100));

    cloud.set_global_latency(Duration::ZERO);
    let start = Instant::now();
    assert!(cloud.instance_states(&[&n1]).await[0].is_ok());
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn latency_from_config_and_concurrent_calls_overlap() {
    let config = FakeConfig {
        latency: LatencyConfig {
            global_ms: 0,
            per_method_ms: [(Method::EnsureLoadBalancer, 300)].into_iter().collect(),
        },
        ..FakeConfig::default()
    };
    let cloud = ok(FakeCloud::from_config(config));
    let (svc_a, svc_b) = (service("a", "u-a"), service("b", "u-b"));
    let start = Instant::now();
    let (a, b) = tokio::join!(
        cloud.ensure_load_balancer("c", &svc_a, &[]),
        cloud.ensure_load_balancer("c", &svc_b, &[]),
    );
    assert!(a.is_ok() && b.is_ok());
    // The latency is a wait, not a lock: both calls took 300ms together.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test]
async fn call_log_records_method_key_and_outcome() {
    let cloud = cloud_with(&["n1"]);
    let provider: &dyn CloudProvider = &cloud;
    let instances = provider.instances().unwrap_or_else(|| panic!("instances"));
    assert!(instances.instance_exists(&node("n1")).await.is_ok());
    assert!(instances.instance_metadata(&node("ghost")).await.is_err());
    let lbs = provider.load_balancers().unwrap_or_else(|| panic!("lbs"));
    assert!(
        lbs.ensure_load_balancer_deleted("c", &service("web", "u-1"))
            .await
            .is_ok()
    );

    let calls = cloud.calls();
    let summary: Vec<(u64, Method, &str, CallOutcome)> = calls
        .iter()
        .map(|c| (c.seq, c.method, c.key.as_str(), c.outcome))
        .collect();
    assert_eq!(
        summary,
        [
            (0, Method::InstanceExists, "n1", CallOutcome::Ok),
            (
                1,
                Method::InstanceMetadata,
                "ghost",
                CallOutcome::Err("not_found")
            ),
            (
                2,
                Method::EnsureLoadBalancerDeleted,
                "default/web",
                CallOutcome::Ok
            ),
        ]
    );
    assert_eq!(
        calls[1].to_string(),
        "#1 instance_metadata(ghost) -> not_found"
    );
    assert_eq!(cloud.calls_of(Method::InstanceMetadata).len(), 1);
    assert_eq!(cloud.count(Method::InstanceExists), 1);
    assert_eq!(cloud.count(Method::Zone), 0);
    assert_eq!(cloud.total_calls(), 3);

    cloud.clear_calls();
    assert!(cloud.calls().is_empty());
    assert_eq!(cloud.total_calls(), 0);
    assert!(instances.instance_exists(&node("n1")).await.is_ok());
    assert_eq!(cloud.calls()[0].seq, 0);
}

#[tokio::test]
async fn call_log_capacity_bounds_memory_but_not_counts() {
    let cloud = ok(FakeCloud::from_config(FakeConfig {
        call_log_capacity: 3,
        ..FakeConfig::default()
    }));
    for _ in 0..10 {
        assert!(cloud.zone().await.is_ok());
    }
    let seqs: Vec<u64> = cloud.calls().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [7, 8, 9]);
    assert_eq!(cloud.count(Method::Zone), 10);
}

/// An initialization context whose client points nowhere (the fake never calls the apiserver).
fn init_context() -> cloudprovider_api::InitContext {
    let config = kube::Config::new(
        "http://127.0.0.1:9"
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let client = kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"));
    cloudprovider_api::InitContext::new(client)
}
