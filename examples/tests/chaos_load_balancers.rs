//! Chaos for load balancers: two `cloud-controller-manager` replicas with provider-aws against moto (a cloud whose
//! state outlives every CCM process) and a real kube-apiserver. LoadBalancer Services are created and deleted in
//! cycles while the leading replica is `kill -9`ed at random moments and instances are stopped and terminated (their
//! Nodes turning NotReady, as a kubelet's would). At the end every Service is deleted, and the cloud and the cluster
//! are audited: leaked load balancers, target groups and listeners, security-group rules added and never removed,
//! stuck finalizers, Nodes deleted although their instance was not terminated, Services never addressed.
//!
//! The same runs again through [`AwsFaultProxy`], which throttles a share of the CCMs' AWS calls and fails another
//! (`CHAOS_THROTTLE`, `CHAOS_FAIL`: 20 % / 5 % in the short run, 50 % / 10 % in `scripts/chaos`): everything must
//! still converge, and the calls per Service are reported.
//!
//! The short versions run in `scripts/test`; `scripts/chaos` runs the long ones (`CHAOS_CYCLES`, `CHAOS_REPORT`,
//! `CHAOS_THROTTLED_REPORT`). `CHAOS_SEED` replays a run. The Services ask for NLBs; `CHAOS_LB_TYPE=classic` makes
//! them Classic ELBs (provider-aws's default), whose load balancers, listeners and security groups the audit counts
//! the same way.
#![cfg(feature = "aws")]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, Instance, InstanceType, ResourceType, Tag, TagSpecification};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use provider_aws::{AwsCloud, AwsConfig, TAG_ROLE_ELB};
use rand::{Rng, SeedableRng};
use test_support::{AwsFaultProxy, AwsFaultRates, ControlPlane, Moto, NodeBuilder};
use tokio::process::Child;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");
const CLUSTER: &str = "chaos";
const REGION: &str = "us-east-1";
const INSTANCES: usize = 6;
/// Services alive at once; the oldest is deleted when a cycle would exceed it.
const WINDOW: usize = 3;
/// How long the cluster gets to converge after the last fault: each Service's address, then all deletions.
const CONVERGE: Duration = Duration::from_secs(120);
/// The same through the throttling cloud: with half the calls throttled (provider-aws waits its 10 s retry-after)
/// and a tenth failing, one load balancer takes several attempts of ~8 calls each, one Service at a time.
const CONVERGE_THROTTLED: Duration = Duration::from_secs(420);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tags(resource: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            pairs
                .iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build()
}

/// The cloud: a VPC with two ELB subnets of the cluster and `INSTANCES` running instances.
struct Cloud {
    aws: AwsCloud,
    config: AwsConfig,
    instances: Vec<Instance>,
    _moto: Moto,
}

async fn cloud() -> Cloud {
    let moto = Moto::start().await.unwrap_or_else(|e| panic!("moto: {e}"));
    let mut config = AwsConfig {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.endpoint_url().to_owned()),
        ..AwsConfig::new(CLUSTER)
    };
    let aws = build(&config).await;
    let ec2 = aws.ec2_client();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .vpc()
        .and_then(|v| v.vpc_id())
        .map(str::to_owned)
        .unwrap_or_default();
    let cluster_tag = format!("kubernetes.io/cluster/{CLUSTER}");
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let out = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{}.0/24", i + 1))
            .availability_zone(*zone)
            .tag_specifications(tags(
                ResourceType::Subnet,
                &[(TAG_ROLE_ELB, "1"), (&cluster_tag, "shared")],
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        subnets.push(
            out.subnet()
                .and_then(|s| s.subnet_id())
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let image = ec2
        .describe_images()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .images()
        .first()
        .and_then(|i| i.image_id())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("moto has no AMI"));
    let mut instances = Vec::new();
    for subnet in &subnets {
        let count = i32::try_from(INSTANCES / 2).unwrap_or(1);
        let out = ec2
            .run_instances()
            .image_id(&image)
            .instance_type(InstanceType::T3Medium)
            .min_count(count)
            .max_count(count)
            .subnet_id(subnet)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        instances.extend(out.instances().iter().cloned());
    }
    config.vpc_id = Some(vpc);
    config.subnet_id = subnets.first().cloned();
    let aws = build(&config).await;
    Cloud {
        aws,
        config,
        instances,
        _moto: moto,
    }
}

async fn build(config: &AwsConfig) -> AwsCloud {
    let sdk = AwsCloud::config_loader(config)
        .test_credentials()
        .load()
        .await;
    AwsCloud::from_sdk_config(config.clone(), &sdk).unwrap_or_else(|e| panic!("provider: {e}"))
}

fn instance_id(i: &Instance) -> String {
    i.instance_id().unwrap_or_default().to_owned()
}

/// The Node of `instance`, initialized and Ready, as a kubelet would have left it.
fn node_of(instance: &Instance) -> Node {
    let zone = instance
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or_default();
    NodeBuilder::new(instance.private_dns_name().unwrap_or_default())
        .provider_id(format!("aws:///{zone}/{}", instance_id(instance)))
        .ready(true)
        .build()
}

impl Cloud {
    /// Instance ID → state name (`running`, `stopped`, `terminated`, …).
    async fn states(&self) -> BTreeMap<String, String> {
        let out = self
            .aws
            .ec2_client()
            .describe_instances()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default();
                (instance_id(i), state)
            })
            .collect()
    }

    /// (load balancers, target groups, listeners) in the cloud.
    async fn elb_resources(&self) -> (usize, usize, usize) {
        let elb = self.aws.elb_client();
        let lbs = elb
            .describe_load_balancers()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let mut listeners = 0;
        for lb in lbs.load_balancers() {
            let out = elb
                .describe_listeners()
                .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            listeners += out.listeners().len();
        }
        let tgs = elb
            .describe_target_groups()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let classic = self
            .aws
            .classic_client()
            .describe_load_balancers()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let classic_listeners: usize = classic
            .load_balancer_descriptions()
            .iter()
            .map(|lb| lb.listener_descriptions().len())
            .sum();
        (
            lbs.load_balancers().len() + classic.load_balancer_descriptions().len(),
            tgs.target_groups().len(),
            listeners + classic_listeners,
        )
    }

    /// Ingress and egress rules of every security group in the VPC.
    async fn security_group_rules(&self) -> usize {
        let out = self
            .aws
            .ec2_client()
            .describe_security_groups()
            .filters(
                Filter::builder()
                    .name("vpc-id")
                    .values(self.config.vpc_id.clone().unwrap_or_default())
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        out.security_groups()
            .iter()
            .map(|g| g.ip_permissions().len() + g.ip_permissions_egress().len())
            .sum()
    }
}

/// The replicas: `replicas[i]` runs as identity `r<i>-g<generation>`.
struct Replicas {
    kubeconfig: String,
    cloud_config: String,
    log_dir: std::path::PathBuf,
    procs: Vec<(String, Child)>,
    generation: usize,
}

impl Replicas {
    fn spawn(&mut self, slot: usize) -> (String, Child) {
        self.generation += 1;
        let identity = format!("r{slot}-g{}", self.generation);
        let log = std::fs::File::create(self.log_dir.join(format!("{identity}.log")))
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let child = tokio::process::Command::new(BIN)
            .args([
                "--cloud-provider=aws",
                &format!("--cloud-config={}", self.cloud_config),
                &format!("--kubeconfig={}", self.kubeconfig),
                &format!("--cluster-name={CLUSTER}"),
                "--controllers=cloud-node,cloud-node-lifecycle,service",
                "--leader-elect=true",
                "--leader-elect-lease-duration=4s",
                "--leader-elect-renew-deadline=3s",
                "--leader-elect-retry-period=1s",
                &format!("--leader-elect-identity={identity}"),
                "--node-monitor-period=1s",
                "--secure-port=0",
            ])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the CCM: {e}"));
        (identity, child)
    }

    /// Panics, with its log, if a replica exited: a CCM must not die of the chaos (only of our kills).
    fn assert_running(&mut self) {
        for (identity, child) in &mut self.procs {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.log_dir.join(format!("{identity}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "replica {identity} exited ({status}); its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }

    fn start(&mut self, count: usize) {
        for slot in 0..count {
            let replica = self.spawn(slot);
            self.procs.push(replica);
        }
    }

    /// `kill -9` of the replica holding the Lease (if one does), restarted under a new identity. True if one was killed.
    async fn kill_leader(&mut self, leases: &Api<Lease>) -> bool {
        let holder = leases
            .get("cloud-controller-manager")
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        let Some(slot) = holder.and_then(|h| self.procs.iter().position(|(id, _)| *id == h)) else {
            return false;
        };
        let (_, mut child) = self.procs.remove(slot);
        let _ = child.start_kill();
        let _ = child.wait().await;
        let replica = self.spawn(slot);
        self.procs.insert(slot, replica);
        true
    }
}

/// What one run saw.
#[derive(Default)]
struct Outcome {
    cycles: usize,
    kills: usize,
    stopped: usize,
    terminated: usize,
    leaked_lbs: usize,
    leaked_target_groups: usize,
    leaked_listeners: usize,
    leaked_sg_rules: usize,
    stuck_finalizers: usize,
    wrong_node_deletions: usize,
    never_addressed: usize,
    max_convergence: Duration,
    elapsed: Duration,
    /// AWS calls the CCMs made (through the fault proxy; 0 when there is none) and how many it throttled / failed.
    aws_calls: (u64, u64, u64),
}

impl Outcome {
    fn table(&self, seed: u64) -> String {
        let mut t = String::new();
        let (calls, throttled, failed) = self.aws_calls;
        let calls_column = if calls == 0 {
            String::from("not counted")
        } else {
            let per_service = calls as f64 / self.cycles.max(1) as f64;
            format!(
                "{calls} ({throttled} throttled, {failed} failed); {per_service:.1} per Service"
            )
        };
        let _ = writeln!(
            t,
            "| cycles | leader kills | instances stopped / terminated | leaked LBs / target groups / listeners / SG rules | stuck finalizers | wrong Node deletions | Services never addressed | max convergence | AWS calls of the CCMs | run time | seed |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            t,
            "| {} | {} | {} / {} | {} / {} / {} / {} | {} | {} | {} | {:.1} s | {calls_column} | {:.0} s | {seed} |",
            self.cycles,
            self.kills,
            self.stopped,
            self.terminated,
            self.leaked_lbs,
            self.leaked_target_groups,
            self.leaked_listeners,
            self.leaked_sg_rules,
            self.stuck_finalizers,
            self.wrong_node_deletions,
            self.never_addressed,
            self.max_convergence.as_secs_f64(),
            self.elapsed.as_secs_f64(),
        );
        t
    }
}

/// Kills the leader; when `insist`, waits up to the lease duration (4 s) for one to exist first.
async fn kill_leader_soon(replicas: &mut Replicas, leases: &Api<Lease>, insist: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(if insist { 8 } else { 0 });
    loop {
        if replicas.kill_leader(leases).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A LoadBalancer Service: an NLB, or with `CHAOS_LB_TYPE=classic` a Classic ELB (provider-aws's default without
/// the type annotation); the audit counts both kinds.
fn load_balancer_service(name: &str) -> Service {
    let classic = std::env::var("CHAOS_LB_TYPE").is_ok_and(|t| t == "classic");
    let annotations = if classic {
        serde_json::json!({})
    } else {
        serde_json::json!({ "service.beta.kubernetes.io/aws-load-balancer-type": "nlb" })
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "default", "annotations": annotations },
        "spec": {
            "type": "LoadBalancer",
            "ports": [{ "port": 80, "targetPort": 8080, "protocol": "TCP" }],
        },
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn addressed(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

/// Marks `node` NotReady, as the node lifecycle of kube-controller-manager would once its kubelet went quiet.
async fn not_ready(nodes: &Api<Node>, name: &str) {
    let patch = serde_json::json!({
        "status": { "conditions": [{ "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown" }] }
    });
    let _ = nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_survive_leader_kills_and_instance_churn() {
    chaos(env_number("CHAOS_CYCLES", 10), None, "CHAOS_REPORT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_converge_through_a_throttling_cloud() {
    // The long run (scripts/chaos) uses the 50 % / 10 %; the short one in CI a milder cloud it can rely on.
    let rate = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let faults = AwsFaultRates {
        throttle: rate("CHAOS_THROTTLE", 0.2),
        fail: rate("CHAOS_FAIL", 0.05),
    };
    chaos(
        env_number("CHAOS_THROTTLED_CYCLES", 4),
        Some(faults),
        "CHAOS_THROTTLED_REPORT",
    )
    .await;
}

/// One run: `cycles` cycles; the CCMs reach the cloud through a proxy with `faults` when given; the table goes to
/// the file named by the environment variable `report`.
async fn chaos(cycles: usize, faults: Option<AwsFaultRates>, report: &str) {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("chaos seed {seed} (rerun with CHAOS_SEED={seed}), {cycles} cycles");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let cloud = cloud().await;
    let proxy = match faults {
        Some(rates) => {
            let target = cloud.config.endpoint_url.clone().unwrap_or_default();
            let proxy = AwsFaultProxy::start(&target, seed)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            proxy.set_rates(rates);
            Some(proxy)
        }
        None => None,
    };
    let mut ccm_config = cloud.config.clone();
    if let Some(proxy) = &proxy {
        ccm_config.endpoint_url = Some(proxy.url());
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cloud_config = dir.path().join("aws.yaml");
    std::fs::write(
        &cloud_config,
        serde_yaml_ng::to_string(&ccm_config).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let nodes: Api<Node> = Api::all(cp.client());
    let services: Api<Service> = Api::namespaced(cp.client(), "default");
    let leases: Api<Lease> = Api::namespaced(cp.client(), "kube-system");
    let mut node_of_instance = BTreeMap::new();
    for instance in &cloud.instances {
        let node = node_of(instance);
        let name = node.metadata.name.clone().unwrap_or_default();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("create node {name}: {e}"));
        node_of_instance.insert(instance_id(instance), name);
    }
    let sg_rules_before = cloud.security_group_rules().await;
    let mut replicas = Replicas {
        kubeconfig: cp.kubeconfig_path().display().to_string(),
        cloud_config: cloud_config.display().to_string(),
        log_dir: dir.path().to_owned(),
        procs: Vec::new(),
        generation: 0,
    };
    replicas.start(2);

    let mut outcome = Outcome {
        cycles,
        ..Outcome::default()
    };
    let mut live: Vec<String> = Vec::new();
    let mut healthy: Vec<String> = cloud.instances.iter().map(instance_id).collect();
    let ec2 = cloud.aws.ec2_client();
    for cycle in 0..cycles {
        replicas.assert_running();
        let name = format!("svc-{cycle}");
        services
            .create(&PostParams::default(), &load_balancer_service(&name))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        live.push(name);
        if live.len() > WINDOW {
            let oldest = live.remove(0);
            let _ = services.delete(&oldest, &DeleteParams::default()).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        // A leader kill every few cycles, at a random moment of the cycle; at least one per run.
        let must = cycle == cycles / 2 && outcome.kills == 0;
        if (must || rng.random_bool(0.3)) && kill_leader_soon(&mut replicas, &leases, must).await {
            outcome.kills += 1;
        }
        // Instance churn, keeping at least three healthy instances.
        if healthy.len() > 3 && rng.random_bool(0.15) {
            let victim = healthy.remove(rng.random_range(0..healthy.len()));
            let node = node_of_instance.get(&victim).cloned().unwrap_or_default();
            if rng.random_bool(0.5) {
                ec2.stop_instances()
                    .instance_ids(&victim)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                outcome.stopped += 1;
            } else {
                ec2.terminate_instances()
                    .instance_ids(&victim)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                outcome.terminated += 1;
            }
            not_ready(&nodes, &node).await;
        }
    }

    let converge = if faults.is_some() {
        CONVERGE_THROTTLED
    } else {
        CONVERGE
    };
    // Convergence: every live Service addressed.
    replicas.assert_running();
    let converging = Instant::now();
    for name in &live {
        let got = tokio::time::timeout(converge, async {
            loop {
                if services.get(name).await.ok().is_some_and(|s| addressed(&s)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        if got.is_err() {
            outcome.never_addressed += 1;
        }
    }
    outcome.max_convergence = converging.elapsed();

    // Cleanup: every Service deleted, its finalizer released.
    for svc in services
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    {
        let name = svc.metadata.name.unwrap_or_default();
        if name != "kubernetes" {
            let _ = services.delete(&name, &DeleteParams::default()).await;
        }
    }
    let remaining = tokio::time::timeout(converge, async {
        loop {
            let left = services
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|s| s.metadata.name.as_deref() != Some("kubernetes"))
                        .count()
                })
                .unwrap_or(usize::MAX);
            if left == 0 {
                return 0;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    outcome.stuck_finalizers = match remaining {
        Ok(n) => n,
        Err(_) => services
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len().saturating_sub(1))
            .unwrap_or(0),
    };
    // Deletions in moto are immediate, but give the last finalizer pass a moment before counting.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resources = cloud.elb_resources().await;
    while resources != (0, 0, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        resources = cloud.elb_resources().await;
    }
    (
        outcome.leaked_lbs,
        outcome.leaked_target_groups,
        outcome.leaked_listeners,
    ) = resources;
    outcome.leaked_sg_rules = cloud
        .security_group_rules()
        .await
        .saturating_sub(sg_rules_before);
    // Node deletions: only Nodes of terminated instances may be gone.
    let states = cloud.states().await;
    let present: BTreeSet<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for (instance, node) in &node_of_instance {
        let gone = !present.contains(node);
        let was_terminated = states.get(instance).is_some_and(|s| s == "terminated");
        if gone && !was_terminated {
            outcome.wrong_node_deletions += 1;
        }
    }
    outcome.elapsed = started.elapsed();
    drop(replicas);
    if let Some(proxy) = &proxy {
        let counts = proxy.counts();
        outcome.aws_calls = counts.values().fold((0, 0, 0), |(c, t, f), a| {
            (c + a.calls, t + a.throttled, f + a.failed)
        });
        eprintln!("AWS calls by action: {counts:?}");
    }

    let table = outcome.table(seed);
    eprintln!("{table}");
    if let Ok(path) = std::env::var(report) {
        std::fs::write(&path, &table).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    let logs = dir.keep();
    assert_eq!(
        (
            outcome.leaked_lbs,
            outcome.leaked_target_groups,
            outcome.leaked_listeners,
            outcome.leaked_sg_rules
        ),
        (0, 0, 0, 0),
        "leaks (CCM logs in {})",
        logs.display()
    );
    assert_eq!(
        outcome.stuck_finalizers,
        0,
        "stuck finalizers; logs in {}",
        logs.display()
    );
    assert_eq!(
        outcome.wrong_node_deletions,
        0,
        "wrong Node deletions; logs in {}",
        logs.display()
    );
    assert_eq!(
        outcome.never_addressed,
        0,
        "Services never addressed; logs in {}",
        logs.display()
    );
    let _ = std::fs::remove_dir_all(&logs);
}
