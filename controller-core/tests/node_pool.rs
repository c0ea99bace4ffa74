//! The node-pool controller against a real kube-apiserver, kube-scheduler and kwok, with provider-fake's node
//! groups as the cloud and test-support's `NodeJoiner` playing the kubelet of each launched machine.
//!
//! The workloads are real Deployments: kube-controller-manager runs with only its deployment and replicaset
//! controllers (nothing that overlaps the controllers under test, no node lifecycle).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, UNINITIALIZED, events_about, eventually};
use controller_core::cloud_node::{CloudNodeConfig, CloudNodeController};
use controller_core::manager::{ControllerRegistry, Manager};
use controller_core::node_pool::{
    self, INITIALIZED_LABEL, NodePool, NodePoolConfig, NodePoolController, NodePoolMetrics,
    NodePoolSpec, POOL_LABEL, UNREGISTERED_TAINT,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, Node, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use lease_election::{LeaderElector, LeaseConfig};
use provider_fake::{FakeCloud, FakeInstanceState, NodeGroupSpec, NodeTemplate, Provisioning};
use test_support::{ControlPlane, JoinerOptions, KwokOptions, NodeJoiner};

const GROUP: &str = "workers";
const POOL: &str = "pool-a";
const WAIT: Duration = Duration::from_secs(90);

struct PoolEnv {
    env: Env,
    joiner: NodeJoiner,
    metrics: NodePoolMetrics,
}

/// A control plane with kube-scheduler and kwok, a fake cloud with node group `workers` (2 CPU, 4Gi nodes
/// labelled `hardware=standard`) whose instances take `provision_delay` to start, and the NodePool CRD.
async fn cluster(provision_delay: Duration) -> Env {
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
        .controller_manager(["deployment-controller", "replicaset-controller"])
        .kwok(KwokOptions::default())
        .start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let env = Env::start_on(cp, cloud);
    install_crd(&env).await;
    env
}

/// A joiner registering the group's running instances, as their kubelets would.
fn joiner(env: &Env) -> NodeJoiner {
    NodeJoiner::start(
        env.client(),
        env.ctx.provider.clone(),
        JoinerOptions::new(GROUP).register_with_taint(UNREGISTERED_TAINT, "NoExecute"),
    )
}

/// [`cluster`] with the node-pool controller, optionally the cloud-node controller, and a [`joiner`].
async fn start(provision_delay: Duration, with_cloud_node: bool) -> PoolEnv {
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

async fn install_crd(env: &Env) {
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

fn pool_spec() -> NodePoolSpec {
    let mut spec = NodePoolSpec::new(GROUP, 10);
    spec.labels.insert("team".into(), "ml".into());
    spec.empty_node_delay_seconds = 2;
    spec
}

async fn create_pool(env: &Env, spec: NodePoolSpec) {
    let pools: Api<NodePool> = Api::all(env.client());
    pools
        .create(&PostParams::default(), &NodePool::new(POOL, spec))
        .await
        .unwrap_or_else(|e| panic!("create NodePool: {e}"));
}

/// A Deployment of `replicas` pods of 500m CPU selecting the pool's nodes by the pool's labels.
fn deployment(app: &str, replicas: i32) -> Deployment {
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

fn deployments(env: &Env) -> Api<Deployment> {
    Api::namespaced(env.client(), "default")
}

async fn deploy(env: &Env, app: &str, replicas: i32) {
    deployments(env)
        .create(&PostParams::default(), &deployment(app, replicas))
        .await
        .unwrap_or_else(|e| panic!("create Deployment: {e}"));
}

async fn scale(env: &Env, app: &str, replicas: i32) {
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    deployments(env)
        .patch(app, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("scale Deployment: {e}"));
}

fn pods(env: &Env) -> Api<Pod> {
    Api::namespaced(env.client(), "default")
}

async fn replicas(env: &Env, app: &str) -> Vec<Pod> {
    pods(env)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn all_running(env: &Env, app: &str, n: usize) -> Option<Vec<Pod>> {
    let list = replicas(env, app).await;
    (list.len() == n && list.iter().all(|p| phase(p) == "Running")).then_some(list)
}

fn live_members(env: &Env) -> Vec<provider_fake::FakeInstanceInfo> {
    env.cloud
        .node_group_members(GROUP)
        .unwrap_or_else(|e| panic!("members: {e}"))
        .into_iter()
        .filter(|i| i.state != FakeInstanceState::Terminated)
        .collect()
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

async fn pool_events(env: &Env) -> Vec<(String, String, String)> {
    events_about(env, POOL).await
}

async fn has_event(env: &Env, reason: &str) -> Option<String> {
    pool_events(env)
        .await
        .into_iter()
        .find(|(_, r, _)| r == reason)
        .map(|(_, _, note)| note)
}

async fn get_pool(env: &Env) -> NodePool {
    let pools: Api<NodePool> = Api::all(env.client());
    pools
        .get(POOL)
        .await
        .unwrap_or_else(|e| panic!("get pool: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pods_bring_up_initialized_nodes_and_idle_nodes_go_away() {
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_millis(500), true).await;
    create_pool(&env, pool_spec()).await;
    deploy(&env, "web", 3).await;

    let running = eventually(WAIT, "3 replicas Running", || all_running(&env, "web", 3)).await;
    // They were unschedulable first: no node of the pool existed (the scheduler's events tell).
    for pod in &running {
        let events = events_about(&env, &pod.name_any()).await;
        assert!(
            events.iter().any(|(_, r, _)| r == "FailedScheduling"),
            "{events:?}"
        );
    }
    let members = live_members(&env);
    assert_eq!(
        members.len(),
        1,
        "3 × 500m fit one 2-CPU node: {members:#?}"
    );
    assert_eq!(joiner.registered(), vec![members[0].provider_id.clone()]);

    let nodes = env.nodes();
    let node_name = running[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    assert!(
        running
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(node_name.as_str()))
    );
    let node = nodes
        .get(&node_name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        Some(members[0].provider_id.clone())
    );
    let labels = node.labels();
    assert_eq!(labels.get(POOL_LABEL).map(String::as_str), Some(POOL));
    assert_eq!(labels.get("team").map(String::as_str), Some("ml"));
    assert_eq!(labels.get("hardware").map(String::as_str), Some("standard"));
    // Set by the cloud-node controller while initializing it.
    assert_eq!(
        labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("fake.large")
    );
    let taints = taint_keys(&node);
    assert!(!taints.contains(&UNINITIALIZED.to_owned()), "{taints:?}");
    eventually(WAIT, "the initialized label", || async {
        let node = nodes.get_opt(&node_name).await.ok()??;
        (node.labels().get(INITIALIZED_LABEL).map(String::as_str) == Some("true")).then_some(())
    })
    .await;
    assert!(
        !taints.contains(&UNREGISTERED_TAINT.to_owned()),
        "{taints:?}"
    );

    let status = eventually(WAIT, "status with one ready node", || async {
        let pool = get_pool(&env).await;
        pool.status.filter(|s| s.ready_nodes == 1)
    })
    .await;
    assert_eq!((status.desired_nodes, status.launching_nodes), (1, 0));
    assert_eq!(
        status.nodes[0].node_name.as_deref(),
        Some(node_name.as_str())
    );
    assert!(status.last_scale_up.is_some());
    for reason in ["TriggeredScaleUp", "Registered", "Initialized"] {
        eventually(WAIT, reason, || has_event(&env, reason)).await;
    }
    assert_eq!(metrics.decision_count(POOL, "scale_up"), 1);

    // Scale to 0: the node empties, and after the delay it is cordoned, deleted, and its instance terminated.
    scale(&env, "web", 0).await;
    let note = eventually(WAIT, "ScaleDown", || has_event(&env, "ScaleDown")).await;
    eventually(WAIT, "the Node deleted", || async {
        nodes
            .get_opt(&node_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(live_members(&env).is_empty());
    assert_eq!(
        env.cloud.instance(&members[0].provider_id).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
    // The note says how long the node had been empty: at least the delay.
    let waited: u64 = note
        .rsplit("after ")
        .next()
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no delay in {note:?}"));
    assert!(waited >= 2, "{note}");
    assert_eq!(metrics.decision_count(POOL, "scale_down"), 1);
    let status = eventually(WAIT, "status with no nodes", || async {
        get_pool(&env)
            .await
            .status
            .filter(|s| s.desired_nodes == 0 && s.last_scale_down.is_some())
    })
    .await;
    assert_eq!(status.ready_nodes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pending_pods_get_exactly_the_nodes_they_need() {
    // Nodes take 2 s to come up, so the second wave arrives while the first nodes are still launching.
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_secs(2), true).await;
    create_pool(&env, pool_spec()).await;
    let started = std::time::Instant::now();
    deploy(&env, "batch", 6).await;
    eventually(WAIT, "the first scale-up", || {
        has_event(&env, "TriggeredScaleUp")
    })
    .await;
    let first_wave = live_members(&env).len();
    assert_eq!(first_wave, 2, "6 × 500m need two 2-CPU nodes");
    scale(&env, "batch", 20).await;

    let running = eventually(WAIT, "20 replicas Running", || {
        all_running(&env, "batch", 20)
    })
    .await;
    // A measurement for the report, not an assertion.
    eprintln!(
        "20 replicas Running {:.1}s after the first was created (nodes take 2 s to launch)",
        started.elapsed().as_secs_f64()
    );
    // 20 × 500m CPU on 2-CPU nodes: 5 nodes, not 6 (which re-provisioning for the first wave's pods would give).
    let members = live_members(&env);
    assert_eq!(members.len(), 5, "{members:#?}");
    assert_eq!(joiner.registered().len(), 5);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &running {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 5);
    assert!(per_node.values().all(|n| *n == 4), "{per_node:?}");
    let launched: u64 = metrics
        .nodes_changed
        .get_or_create(&node_pool::DecisionLabels {
            pool: POOL.into(),
            decision: "scale_up".into(),
        })
        .get();
    assert_eq!(launched, 5);
    // Still five after the pool has seen every pod Running.
    eventually(WAIT, "status with five ready nodes", || async {
        get_pool(&env).await.status.filter(|s| s.ready_nodes == 5)
    })
    .await;
    assert_eq!(live_members(&env).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_that_never_come_up_or_never_register_are_cleaned_up() {
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_millis(200), true).await;
    // Phase 0: the cloud has no capacity; the failed launch is deleted.
    env.cloud
        .set_node_group_provisioning(GROUP, Provisioning::out_of_resources())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut spec = pool_spec();
    spec.launch_timeout_seconds = 2;
    spec.registration_timeout_seconds = 4;
    create_pool(&env, spec).await;
    deploy(&env, "job", 1).await;
    let note = eventually(WAIT, "LaunchFailed", || has_event(&env, "LaunchFailed")).await;
    assert!(note.contains("InsufficientInstanceCapacity"), "{note}");
    assert!(metrics.decision_count(POOL, "launch_failed") >= 1);

    // Phase 1: the cloud never finishes creating instances.
    env.cloud
        .set_node_group_provisioning(GROUP, Provisioning::NeverReady)
        .unwrap_or_else(|e| panic!("{e}"));
    let note = eventually(WAIT, "LaunchTimeout", || has_event(&env, "LaunchTimeout")).await;
    let stuck = env
        .cloud
        .node_group_members(GROUP)
        .unwrap_or_default()
        .into_iter()
        .chain(env.cloud.instance_list())
        .find(|i| note.contains(&i.provider_id))
        .unwrap_or_else(|| panic!("no instance named in {note:?}"));
    assert_eq!(
        env.cloud.instance(&stuck.provider_id).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );

    // Phase 2: instances come up but their machines never join.
    joiner.hold();
    env.cloud
        .set_node_group_provisioning(GROUP, Provisioning::Succeed)
        .unwrap_or_else(|e| panic!("{e}"));
    let never_joined = eventually(WAIT, "an instance held back", || async {
        joiner.held_back().first().cloned()
    })
    .await;
    eventually(WAIT, "its RegistrationTimeout", || async {
        pool_events(&env).await.into_iter().find(|(t, r, note)| {
            t == "Warning" && r == "RegistrationTimeout" && note.contains(&never_joined)
        })
    })
    .await;
    assert_eq!(
        env.cloud.instance(&never_joined).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
    assert!(metrics.decision_count(POOL, "registration_timeout") >= 1);
    assert!(metrics.decision_count(POOL, "launch_timeout") >= 1);

    // Phase 3: machines join again; the pod still gets its node.
    joiner.release();
    let running = eventually(WAIT, "the replica Running", || all_running(&env, "job", 1)).await;
    let node_name = running[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let node = env
        .nodes()
        .get(&node_name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let provider_id = node.spec.and_then(|s| s.provider_id).unwrap_or_default();
    assert!(!joiner.held_back().contains(&provider_id));
    // Nothing left behind: every instance but the one serving the pod is terminated.
    eventually(WAIT, "only the serving instance left", || async {
        let live: Vec<String> = live_members(&env)
            .into_iter()
            .map(|i| i.provider_id)
            .collect();
        (live == vec![provider_id.clone()]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_never_initialized_are_removed_with_their_instance() {
    // No cloud-node controller: Nodes keep the uninitialized taint.
    let PoolEnv {
        env,
        joiner,
        metrics,
    } = start(Duration::from_millis(200), false).await;
    let mut spec = pool_spec();
    spec.initialization_timeout_seconds = 3;
    create_pool(&env, spec).await;
    deploy(&env, "stuck", 1).await;
    let first = eventually(WAIT, "a Node registered", || async {
        joiner.registered().first().cloned()
    })
    .await;
    let node_name = first.rsplit('/').next().unwrap_or_default().to_owned();
    // The pool labelled it while it waited for initialization.
    let node = eventually(WAIT, "the pool's labels on the Node", || async {
        let node = env.nodes().get_opt(&node_name).await.ok()??;
        node.labels().contains_key(POOL_LABEL).then_some(node)
    })
    .await;
    assert!(taint_keys(&node).contains(&UNINITIALIZED.to_owned()));
    eventually(WAIT, "InitializationTimeout", || async {
        pool_events(&env).await.into_iter().find(|(t, r, note)| {
            t == "Warning" && r == "InitializationTimeout" && note.contains(&first)
        })
    })
    .await;
    eventually(WAIT, "the Node deleted", || async {
        env.nodes()
            .get_opt(&node_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        env.cloud.instance(&first).map(|i| i.state),
        Some(FakeInstanceState::Terminated)
    );
    assert!(metrics.decision_count(POOL, "initialization_timeout") >= 1);
    // The pod never ran on an uninitialized node.
    assert!(
        replicas(&env, "stuck")
            .await
            .iter()
            .all(|p| phase(p) != "Running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_reported_and_max_nodes_bounds_the_pool() {
    // The joiner must stay bound: dropping it stops it.
    let PoolEnv {
        env,
        metrics,
        joiner: _joiner,
    } = start(Duration::ZERO, true).await;
    let mut spec = pool_spec();
    spec.min_nodes = 3;
    spec.max_nodes = 1;
    create_pool(&env, spec).await;
    deploy(&env, "web", 6).await;
    let note = eventually(WAIT, "InvalidNodePool", || async {
        pool_events(&env)
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "InvalidNodePool")
            .map(|(_, _, note)| note)
    })
    .await;
    assert!(note.contains("spec.minNodes"), "{note}");
    let condition = eventually(WAIT, "Valid=False", || valid_condition(&env, "False")).await;
    assert!(condition.message.contains("spec.minNodes"), "{condition:?}");
    assert!(metrics.decision_count(POOL, "invalid_spec") >= 1);
    assert!(live_members(&env).is_empty());

    let pools: Api<NodePool> = Api::all(env.client());
    let fix = serde_json::json!({ "spec": { "minNodes": 0, "maxNodes": 1 } });
    pools
        .patch(POOL, &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Fixed with maxNodes 1: one node, four of the six 500m replicas on it, two left Pending and announced. The
    // announcement follows the number left out, which may pass through 1 while the scheduler is still marking the
    // replicas unschedulable; kube-runtime's Recorder turns a repeated reason into a series of the first Event and
    // keeps its note, so the note names 1 or 2.
    let note = eventually(WAIT, "NotTriggerScaleUp", || {
        has_event(&env, "NotTriggerScaleUp")
    })
    .await;
    assert!(
        (note.contains("2 pending pod(s)") || note.contains("1 pending pod(s)"))
            && note.contains("spec.maxNodes 1"),
        "{note}"
    );
    eventually(WAIT, "4 replicas Running", || async {
        let running = replicas(&env, "web")
            .await
            .iter()
            .filter(|p| phase(p) == "Running")
            .count();
        (running == 4).then_some(())
    })
    .await;
    // The other two stay Pending: nothing is launched past maxNodes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = replicas(&env, "web").await;
    assert_eq!(pods.iter().filter(|p| phase(p) == "Pending").count(), 2);
    assert_eq!(live_members(&env).len(), 1);
    assert!(metrics.decision_count(POOL, "max_nodes_reached") >= 1);
    eventually(WAIT, "Valid=True", || valid_condition(&env, "True")).await;
}

/// The pool's `Valid` condition when it has `status`.
async fn valid_condition(env: &Env, status: &str) -> Option<Condition> {
    get_pool(env)
        .await
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Valid" && c.status == status)
}

/// One replica of `node-pool-controller` as the app runs it: the node-pool controller under the manager, contending
/// for the Lease `node-pool-controller` (short timings, so the test sees a takeover quickly).
fn replica(env: &Env, id: &str) -> (Manager, LeaderElector) {
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

async fn lease_holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client(), "kube-system");
    leases
        .get("node-pool-controller")
        .await
        .ok()?
        .spec?
        .holder_identity
}

/// Two replicas, 20 pending pods, the leader killed (its task aborted: no Lease release, no further call) while the
/// instances it launched are still starting: the new leader counts them and the pool ends with exactly the 5
/// nodes 20 pods of 500m need on 2-CPU nodes, never launching for the same pods twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_launch_once_when_the_leader_dies_mid_scale_up() {
    let env = cluster(Duration::from_secs(4)).await;
    env.run(CloudNodeController::new(CloudNodeConfig::default()));
    let _joiner = joiner(&env);
    let shutdown = env.shutdown.clone();
    let (a, a_elector) = replica(&env, "replica-a");
    let a_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { a.run_with_leader_election(a_elector, shutdown).await }
    });
    eventually(WAIT, "replica-a to lead", || async {
        (lease_holder(&env).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let (b, b_elector) = replica(&env, "replica-b");
    let b_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { b.run_with_leader_election(b_elector, shutdown).await }
    });

    create_pool(&env, pool_spec()).await;
    deploy(&env, "web", 20).await;
    // Mid scale-up: the leader has launched instances and none has started yet (they take 4 s).
    eventually(WAIT, "the leader to launch instances", || async {
        (!live_members(&env).is_empty()).then_some(())
    })
    .await;
    let launched_by_a = live_members(&env).len();
    a_task.abort();
    eprintln!("replica-a killed after launching {launched_by_a} instances");

    eventually(WAIT, "replica-b to take over", || async {
        (lease_holder(&env).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    eventually(WAIT, "20 replicas Running", || all_running(&env, "web", 20)).await;
    let members = env
        .cloud
        .node_group_members(GROUP)
        .unwrap_or_else(|e| panic!("members: {e}"));
    assert_eq!(
        members.len(),
        5,
        "instances ever launched (replica-a launched {launched_by_a} before it was killed): {members:?}"
    );
    assert!(!b_task.is_finished(), "replica-b stopped leading");
}
