//! The harness of the node-pool tests (`node_pool.rs`, `node_pool_chaos.rs`): a control plane with kube-scheduler,
//! kwok and kube-controller-manager's Deployment controllers, provider-fake's node group `workers`, the NodePool
//! CRD, Deployments of 500m pods, and replicas of the node-pool controller under leader election.
#![allow(dead_code)]

pub mod offering;

use std::collections::BTreeMap;
use std::time::Duration;

use controller_core::cloud_node::{CloudNodeConfig, CloudNodeController};
use controller_core::manager::{ControllerRegistry, Manager};
use controller_core::node_pool::{
    NodePool, NodePoolConfig, NodePoolController, NodePoolMetrics, NodePoolSpec, POOL_LABEL,
    UNREGISTERED_TAINT,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, Node, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use lease_election::{LeaderElector, LeaseConfig};
use provider_fake::{
    FakeCloud, FakeInstanceState, KubeletOptions, MachineKubelets, NodeGroupSpec, NodeTemplate,
};
use test_support::{ControlPlane, KwokOptions};

use crate::common::{Env, events_about, eventually};

pub const GROUP: &str = "workers";
pub const POOL: &str = "pool-a";
pub const WAIT: Duration = Duration::from_secs(90);

pub struct PoolEnv {
    pub env: Env,
    pub joiner: MachineKubelets,
    pub metrics: NodePoolMetrics,
}

/// A control plane with kube-scheduler and kwok, a fake cloud with node group `workers` (2 CPU, 4Gi nodes
/// labelled `hardware=standard`) whose instances take `provision_delay` to start, and the NodePool CRD.
pub async fn cluster(provision_delay: Duration) -> Env {
    let cloud = FakeCloud::new();
    let template = NodeTemplate {
        instance_type: Some("fake.large".into()),
        labels: BTreeMap::from([("hardware".to_owned(), "standard".to_owned())]),
        cpu: "2".into(),
        memory: "4Gi".into(),
        pods: "110".into(),
        ..NodeTemplate::default()
    };
    cloud
        .add_node_group(
            NodeGroupSpec::new(GROUP, 0, 20)
                .with_template(template)
                .with_provision_delay(provision_delay),
        )
        .unwrap_or_else(|e| panic!("node group: {e}"));
    let cp = ControlPlane::builder()
        .scheduler(true)
        // disruption-controller computes PodDisruptionBudget status, which the Eviction API decides by.
        .controller_manager([
            "deployment-controller",
            "replicaset-controller",
            "disruption-controller",
        ])
        .kwok(KwokOptions::default())
        .start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let env = Env::start_on(cp, cloud);
    install_crd(&env).await;
    env
}

/// The kubelets of the group's machines: each running instance registers its Node.
pub fn joiner(env: &Env) -> MachineKubelets {
    MachineKubelets::start(
        env.client(),
        env.ctx.provider.clone(),
        KubeletOptions::new()
            .group(GROUP)
            .register_with_taint(UNREGISTERED_TAINT, "NoExecute"),
    )
    .unwrap_or_else(|e| panic!("machine kubelets: {e}"))
}

/// [`cluster`] with the node-pool controller, optionally the cloud-node controller, and a [`joiner`].
pub async fn start(provision_delay: Duration, with_cloud_node: bool) -> PoolEnv {
    let env = cluster(provision_delay).await;
    if with_cloud_node {
        env.run(CloudNodeController::new(CloudNodeConfig::default()));
    }
    let metrics = NodePoolMetrics::default();
    let mut config = NodePoolConfig::default();
    config.metrics = metrics.clone();
    env.run(NodePoolController::new(config));
    let joiner = joiner(&env);
    PoolEnv {
        env,
        joiner,
        metrics,
    }
}

pub async fn install_crd(env: &Env) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    crds.create(&PostParams::default(), &NodePool::crd())
        .await
        .unwrap_or_else(|e| panic!("create CRD: {e}"));
    let pools: Api<NodePool> = Api::all(env.client());
    eventually(WAIT, "the NodePool CRD to be served", || {
        let pools = pools.clone();
        async move { pools.list(&ListParams::default()).await.ok() }
    })
    .await;
}

pub fn pool_spec() -> NodePoolSpec {
    let mut spec = NodePoolSpec::new(GROUP, 10);
    spec.labels.insert("team".into(), "ml".into());
    spec.empty_node_delay_seconds = 2;
    spec
}

pub async fn create_pool(env: &Env, spec: NodePoolSpec) {
    let pools: Api<NodePool> = Api::all(env.client());
    pools
        .create(&PostParams::default(), &NodePool::new(POOL, spec))
        .await
        .unwrap_or_else(|e| panic!("create NodePool: {e}"));
}

/// A Deployment of `replicas` pods of 500m CPU selecting the pool's nodes by the pool's labels.
pub fn deployment(app: &str, replicas: i32) -> Deployment {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(app.to_owned()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    node_selector: Some(BTreeMap::from([
                        (POOL_LABEL.to_owned(), POOL.to_owned()),
                        ("team".to_owned(), "ml".to_owned()),
                    ])),
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some("registry.example/app:1".into()),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_owned(), Quantity("500m".into())),
                                ("memory".to_owned(), Quantity("256Mi".into())),
                            ])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn deployments(env: &Env) -> Api<Deployment> {
    Api::namespaced(env.client(), "default")
}

pub async fn deploy(env: &Env, app: &str, replicas: i32) {
    deployments(env)
        .create(&PostParams::default(), &deployment(app, replicas))
        .await
        .unwrap_or_else(|e| panic!("create Deployment: {e}"));
}

pub async fn scale(env: &Env, app: &str, replicas: i32) {
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    deployments(env)
        .patch(app, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("scale Deployment: {e}"));
}

pub fn pods(env: &Env) -> Api<Pod> {
    Api::namespaced(env.client(), "default")
}

pub async fn replicas(env: &Env, app: &str) -> Vec<Pod> {
    pods(env)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub async fn all_running(env: &Env, app: &str, n: usize) -> Option<Vec<Pod>> {
    let list = replicas(env, app).await;
    (list.len() == n && list.iter().all(|p| phase(p) == "Running")).then_some(list)
}

pub fn live_members(env: &Env) -> Vec<provider_fake::FakeInstanceInfo> {
    env.cloud
        .node_group_members(GROUP)
        .unwrap_or_else(|e| panic!("members: {e}"))
        .into_iter()
        .filter(|i| i.state != FakeInstanceState::Terminated)
        .collect()
}

pub fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

pub async fn pool_events(env: &Env) -> Vec<(String, String, String)> {
    events_about(env, POOL).await
}

pub async fn has_event(env: &Env, reason: &str) -> Option<String> {
    pool_events(env)
        .await
        .into_iter()
        .find(|(_, r, _)| r == reason)
        .map(|(_, _, note)| note)
}

pub async fn get_pool(env: &Env) -> NodePool {
    let pools: Api<NodePool> = Api::all(env.client());
    pools
        .get(POOL)
        .await
        .unwrap_or_else(|e| panic!("get pool: {e}"))
}

/// One replica of `node-pool-controller` as the app runs it: the node-pool controller under the manager, contending
/// for the Lease `node-pool-controller` (short timings, so the test sees a takeover quickly).
pub fn replica(env: &Env, id: &str) -> (Manager, LeaderElector) {
    let mut registry = ControllerRegistry::new();
    registry
        .register(NodePoolController::new(NodePoolConfig::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    registry.set_enabled_by_default("node-pool", true);
    let selection = registry.select(["*"]).unwrap_or_else(|e| panic!("{e}"));
    let lease = LeaseConfig::new("kube-system", "node-pool-controller", id).with_timings(
        Duration::from_secs(2),
        Duration::from_millis(1500),
        Duration::from_secs(1),
    );
    let elector = LeaderElector::new(env.client(), lease).unwrap_or_else(|e| panic!("{e}"));
    (
        Manager::new(env.ctx.clone(), &registry, &selection),
        elector,
    )
}

pub async fn lease_holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client(), "kube-system");
    leases
        .get("node-pool-controller")
        .await
        .ok()?
        .spec?
        .holder_identity
}
