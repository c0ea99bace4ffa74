//! The manager runs controllers only while leading: two replicas never call the cloud at the same time, even when
//! the leader is cut off from the apiserver.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloudprovider_api::{CloudProvider, CloudResult, InstanceMetadata, InstanceState, Instances};
use common::*;
use controller_core::ControllerContext;
use controller_core::manager::{ControllerRegistry, Manager, ManagerExit};
use controller_core::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use controller_core::runtime::CancellationToken;
use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use lease_election::{LeaderElector, LeaseConfig};
use parking_lot::Mutex;
use provider_fake::{FakeCloud, FakeInstance};
use test_support::{FaultProxy, ProxyMode};
use tokio::time::Instant;

/// Records which replica called the cloud, and when, then forwards to the shared fake cloud.
struct Audited {
    cloud: FakeCloud,
    replica: &'static str,
    log: Arc<Mutex<Vec<(&'static str, Instant)>>>,
}

impl Audited {
    fn record(&self) {
        self.log.lock().push((self.replica, Instant::now()));
    }
}

impl CloudProvider for Audited {
    fn provider_name(&self) -> &str {
        "fake"
    }
    fn instances(&self) -> Option<&dyn Instances> {
        Some(self)
    }
}

#[async_trait]
impl Instances for Audited {
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        self.record();
        Instances::instance_exists(&self.cloud, node).await
    }
    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        self.record();
        Instances::instance_shutdown(&self.cloud, node).await
    }
    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        self.record();
        Instances::instance_metadata(&self.cloud, node).await
    }
    async fn instance_states(&self, nodes: &[&Node]) -> Vec<CloudResult<InstanceState>> {
        self.record();
        Instances::instance_states(&self.cloud, nodes).await
    }
}

fn replica(
    env: &Env,
    client: kube::Client,
    name: &'static str,
    log: &Arc<Mutex<Vec<(&'static str, Instant)>>>,
) -> (Manager, LeaderElector) {
    let provider: Arc<dyn CloudProvider> = Arc::new(Audited {
        cloud: env.cloud.clone(),
        replica: name,
        log: Arc::clone(log),
    });
    let ctx = ControllerContext::new(client.clone(), provider, env.ctx.events.clone());
    let mut lifecycle = NodeLifecycleConfig::default();
    lifecycle.monitor_period = Duration::from_millis(100);
    let mut registry = ControllerRegistry::new();
    registry
        .register(NodeLifecycleController::new(lifecycle))
        .unwrap_or_else(|e| panic!("{e}"));
    let selection = registry
        .select(["cloud-node-lifecycle"])
        .unwrap_or_else(|e| panic!("{e}"));
    let lease = LeaseConfig::new("kube-system", "cloud-controller-manager", name).with_timings(
        Duration::from_secs(2),
        Duration::from_millis(1500),
        Duration::from_secs(1),
    );
    let elector = LeaderElector::new(client, lease).unwrap_or_else(|e| panic!("{e}"));
    (Manager::new(ctx, &registry, &selection), elector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_act_at_the_same_time() {
    let env = Env::start().await;
    // NotReady nodes with running instances: the lifecycle controller asks the cloud about them every period.
    for i in 0..3 {
        let name = format!("node-{i}");
        env.cloud
            .add_instance(FakeInstance::new(&name))
            .unwrap_or_else(|e| panic!("{e}"));
        let node = NodeBuilder::new(name.clone())
            .provider_id(format!("fake://{name}"))
            .build();
        env.nodes()
            .create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let proxy = FaultProxy::start(env.cp.server_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a_client = proxy
        .client(env.cp.config())
        .unwrap_or_else(|e| panic!("{e}"));
    let (a, a_elector) = replica(&env, a_client, "a", &log);
    let (b, b_elector) = replica(&env, env.client(), "b", &log);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();

    let a_shutdown = shutdown.clone();
    let a_task =
        tokio::spawn(async move { a.run_with_leader_election(a_elector, a_shutdown).await });
    let calls_by = |who: &str| log.lock().iter().filter(|(r, _)| *r == who).count();
    eventually(Duration::from_secs(15), "a to call the cloud", || async {
        (calls_by("a") > 3).then_some(())
    })
    .await;
    let b_shutdown = shutdown.clone();
    let b_task =
        tokio::spawn(async move { b.run_with_leader_election(b_elector, b_shutdown).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls_by("b"), 0, "b acted while a was leading");

    // Cut a off from the apiserver: its Node cache and Lease renewals stall, but the cloud is still reachable.
    proxy.set_mode(ProxyMode::Blackhole);
    eventually(Duration::from_secs(15), "b to call the cloud", || async {
        (calls_by("b") > 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let calls = log.lock().clone();
    let first_b = calls.iter().find(|(r, _)| *r == "b").map(|(_, t)| *t);
    let last_a = calls
        .iter()
        .filter(|(r, _)| *r == "a")
        .map(|(_, t)| *t)
        .max();
    let (Some(first_b), Some(last_a)) = (first_b, last_a) else {
        panic!("both replicas should have acted: {} calls", calls.len());
    };
    assert!(
        last_a < first_b,
        "a called the cloud {:?} after b started",
        last_a - first_b
    );
    eprintln!(
        "gap between a's last and b's first cloud call: {:?}",
        first_b - last_a
    );

    let a_exit = tokio::time::timeout(Duration::from_secs(5), a_task).await;
    assert!(
        matches!(a_exit, Ok(Ok(ManagerExit::LeadershipLost))),
        "{a_exit:?}"
    );
    drop(_stop);
    let b_exit = tokio::time::timeout(Duration::from_secs(10), b_task).await;
    assert!(
        matches!(b_exit, Ok(Ok(ManagerExit::Shutdown))),
        "{b_exit:?}"
    );
}
