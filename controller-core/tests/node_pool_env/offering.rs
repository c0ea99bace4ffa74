//! A fake cloud offering several priced node groups (the table in `node_pool_choice.rs`), the node-pool and
//! cloud-node controllers, machine kubelets for every group, and helpers for Deployments with any pod spec.

use std::collections::BTreeMap;

use controller_core::cloud_node::{CloudNodeConfig, CloudNodeController};
use controller_core::node_pool::{
    NodePool, NodePoolConfig, NodePoolController, NodePoolMetrics, NodePoolSpec, UNREGISTERED_TAINT,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use provider_fake::{
    FakeCloud, FakeInstanceState, KubeletOptions, MachineKubelets, NodeGroupSpec, NodeTemplate,
};
use test_support::{ControlPlane, KwokOptions};

use super::{install_crd, phase};
use crate::common::Env;

pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const GROUPS: [(&str, &str, &str, &str, f64); 3] = [
    ("small-a", "2", "8Gi", "zone-a", 0.10),
    ("large-a", "8", "32Gi", "zone-a", 0.30),
    ("large-b", "8", "32Gi", "zone-b", 0.30),
];

pub struct Cluster {
    pub env: Env,
    pub metrics: NodePoolMetrics,
    pub _kubelets: MachineKubelets,
}

pub async fn cluster() -> Cluster {
    let cloud = FakeCloud::new();
    for (id, cpu, memory, zone, price) in GROUPS {
        let template = NodeTemplate {
            instance_type: Some(format!("fake.{}", id.trim_end_matches(['-', 'a', 'b']))),
            zone: Some(zone.into()),
            labels: BTreeMap::from([("tier".to_owned(), "shared".to_owned())]),
            cpu: cpu.into(),
            memory: memory.into(),
            pods: "110".into(),
            ..NodeTemplate::default()
        };
        cloud
            .add_node_group(
                NodeGroupSpec::new(id, 0, 20)
                    .with_template(template)
                    .with_price(price),
            )
            .unwrap_or_else(|e| panic!("node group: {e}"));
    }
    let cp = ControlPlane::builder()
        .scheduler(true)
        .controller_manager(["deployment-controller", "replicaset-controller"])
        .kwok(KwokOptions::default())
        .start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let env = Env::start_on(cp, cloud);
    install_crd(&env).await;
    env.run(CloudNodeController::new(CloudNodeConfig::default()));
    let metrics = NodePoolMetrics::default();
    let mut config = NodePoolConfig::default();
    config.metrics = metrics.clone();
    env.run(NodePoolController::new(config));
    let mut options = KubeletOptions::new().register_with_taint(UNREGISTERED_TAINT, "NoExecute");
    for (id, ..) in GROUPS {
        options = options.group(id);
    }
    let kubelets = MachineKubelets::start(env.client(), env.ctx.provider.clone(), options)
        .unwrap_or_else(|e| panic!("machine kubelets: {e}"));
    Cluster {
        env,
        metrics,
        _kubelets: kubelets,
    }
}

pub fn spec(groups: &[&str]) -> NodePoolSpec {
    let mut spec = NodePoolSpec::new("", 20);
    spec.node_groups = groups.iter().map(|g| (*g).to_owned()).collect();
    spec.empty_node_delay_seconds = 600;
    spec
}

pub async fn create_pool(env: &Env, name: &str, spec: NodePoolSpec) {
    let pools: Api<NodePool> = Api::all(env.client());
    pools
        .create(&PostParams::default(), &NodePool::new(name, spec))
        .await
        .unwrap_or_else(|e| panic!("create NodePool: {e}"));
}

/// A Deployment of `replicas` pods of `cpu` (and 512Mi) selecting `selector`, the pod spec then changed by `edit`.
pub fn workload(
    app: &str,
    replicas: i32,
    cpu: &str,
    selector: (&str, &str),
    edit: impl FnOnce(&mut PodSpec),
) -> Deployment {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    let mut spec = PodSpec {
        node_selector: Some(BTreeMap::from([(
            selector.0.to_owned(),
            selector.1.to_owned(),
        )])),
        containers: vec![Container {
            name: "app".into(),
            image: Some("registry.example/app:1".into()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity(cpu.into())),
                    ("memory".to_owned(), Quantity("512Mi".into())),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    edit(&mut spec);
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
                spec: Some(spec),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn app_selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
        ..Default::default()
    }
}

pub async fn deploy(env: &Env, deployment: Deployment) {
    let api: Api<Deployment> = Api::namespaced(env.client(), "default");
    api.create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|e| panic!("create Deployment: {e}"));
}

pub async fn scale(env: &Env, app: &str, replicas: i32) {
    let api: Api<Deployment> = Api::namespaced(env.client(), "default");
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    api.patch(app, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("scale Deployment: {e}"));
}

pub async fn pods_of(env: &Env, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client(), "default");
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

pub async fn running(env: &Env, app: &str, n: usize) -> Option<Vec<Pod>> {
    let pods = pods_of(env, app).await;
    let up: Vec<Pod> = pods.into_iter().filter(|p| phase(p) == "Running").collect();
    (up.len() == n).then_some(up)
}

pub fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// Live instances per node group.
pub fn launched(env: &Env) -> BTreeMap<String, usize> {
    GROUPS
        .iter()
        .map(|(id, ..)| {
            let live = env
                .cloud
                .node_group_members(id)
                .unwrap_or_else(|e| panic!("members: {e}"))
                .into_iter()
                .filter(|i| i.state != FakeInstanceState::Terminated)
                .count();
            ((*id).to_owned(), live)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

pub async fn pool(env: &Env, name: &str) -> NodePool {
    let pools: Api<NodePool> = Api::all(env.client());
    pools
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get pool: {e}"))
}

pub async fn node_zone(env: &Env, name: &str) -> String {
    let node = env
        .nodes()
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    node.labels().get(ZONE).cloned().unwrap_or_default()
}
