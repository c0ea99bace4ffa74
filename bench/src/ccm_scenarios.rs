//! The three CCM scenarios of issue 9: node initialization, load-balancer convergence and node fan-out, memory.
//! Each side runs alone on fresh objects (its own run label); sides alternate within each round.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::ccm::{
    self, AuditCounts, Ccm, Common, Env, Reached, Side, Window, has_address, is_initialized,
};
use crate::ccm_report;

/// `bench node-init`.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeInitArgs {
    /// Tainted Nodes created in one burst per side.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    #[command(flatten)]
    pub common: Common,
}

/// `bench load-balancers`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadBalancersArgs {
    /// LoadBalancer Services created in one burst per side.
    #[arg(long, default_value_t = 500)]
    pub services: usize,
    /// Nodes that exist before the Services (one more is added for the fan-out).
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Create the Services in one burst while the CCM runs (the setup before 2026-12-01, which mostly times the
    /// benchmark's own creation burst) instead of before the CCM starts.
    #[arg(long)]
    pub during_creation: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `bench memory`.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Cluster sizes: for each N, a fresh control plane with N Nodes (kubelet-style: Ready, addresses, capacity,
    /// node info, images; initialized, with a provider ID) and N ClusterIP Services.
    #[arg(long, value_delimiter = ',', default_value = "5000,20000")]
    pub sizes: Vec<usize>,
    /// How long each CCM runs with everything cached before its peak RSS is read.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// `--controllers` of both CCMs (e.g. `cloud-node` or `service` to see what each cache costs).
    #[arg(long, default_value = "*")]
    pub controllers: String,
    #[command(flatten)]
    pub common: Common,
}

/// What one cluster size measured: every round of both sides, and the audit log.
pub struct MemorySize {
    pub size: usize,
    pub measured: Vec<Rss>,
    pub audit: AuditCounts,
}

/// What one side measured in one round of a timed scenario.
#[derive(Debug, Clone)]
pub struct Timed {
    pub side: Side,
    /// First creation → last object reached the state (`None`: not all did before the timeout).
    pub total: Option<Duration>,
    /// Per object: creation sent → state observed, seconds.
    pub latencies: Vec<f64>,
    /// Objects that reached the state / objects created.
    pub done: usize,
    pub of: usize,
    pub window: Window,
    /// Node fan-out (load balancers only): node created → every load balancer updated with it.
    pub fanout: Option<Duration>,
    pub fanout_done: usize,
    /// CPU seconds the CCM used during the window.
    pub cpu_s: Option<f64>,
    /// First → last creation sent by the benchmark (a lower bound of `total`).
    pub burst: Option<Duration>,
}

impl Timed {
    fn new(side: Side, of: usize) -> Timed {
        Timed {
            side,
            total: None,
            latencies: Vec::new(),
            done: 0,
            of,
            window: Window::open(),
            fanout: None,
            fanout_done: 0,
            cpu_s: None,
            burst: None,
        }
    }

    /// Fills in from creation and arrival times.
    fn measure(&mut self, created: &HashMap<String, Instant>, reached: &HashMap<String, Instant>) {
        self.done = reached.len();
        self.latencies = reached
            .iter()
            .filter_map(|(name, at)| Some(at.duration_since(*created.get(name)?).as_secs_f64()))
            .collect();
        let first = created.values().min();
        let last = reached.values().max();
        self.burst = first
            .zip(created.values().max())
            .map(|(a, b)| b.duration_since(*a));
        if let (Some(first), Some(last), true) = (first, last, reached.len() == self.of) {
            self.total = Some(last.duration_since(*first));
        }
    }
}

/// Runs `body` in a fresh working directory and control plane; keeps the directory on error or `--keep`.
async fn with_env<T>(
    common: &Common,
    body: impl AsyncFnOnce(&Env) -> Result<T>,
) -> Result<(T, AuditCounts, String)> {
    let work = tempfile::Builder::new()
        .prefix("kube-cloud-rs-bench-ccm-")
        .tempdir()
        .context("creating the working directory")?;
    let result = async {
        let env = Env::start(common, work.path()).await?;
        let value = body(&env).await?;
        let audit = AuditCounts::read(&env.audit_log)?;
        Ok::<_, anyhow::Error>((value, audit, env.k8s_version.clone()))
    }
    .await;
    if common.keep || result.is_err() {
        let kept = work.keep();
        eprintln!(
            "bench: kept the working directory (audit log, CCM logs): {}",
            kept.display()
        );
    }
    result
}

fn deadline(common: &Common) -> tokio::time::Instant {
    tokio::time::Instant::now() + common.timeout
}

/// Waits until `name` is reported by `watch` (a canary proving the CCM is up and acting).
async fn canary(watch: &mut Reached, ccm: &mut Ccm, name: &str) -> Result<()> {
    let wanted = HashSet::from([name.to_owned()]);
    let got = watch
        .collect(
            &wanted,
            tokio::time::Instant::now() + Duration::from_secs(120),
        )
        .await;
    ccm.check_running()?;
    if got.is_empty() {
        bail!(
            "the CCM did not handle canary {name} within 120 s; see {}",
            ccm.log.display()
        );
    }
    Ok(())
}

// ----- node init -----

pub async fn node_init(args: NodeInitArgs) -> Result<()> {
    let c = &args.common;
    let sides = [Side::Rust, Side::GoDefault, Side::GoEqual, Side::Ceiling];
    let (measured, audit, version) = with_env(c, async |env: &Env| {
        let mut measured = Vec::new();
        for round in 1..=c.rounds {
            for side in sides {
                let m = node_init_side(env, side, round, args.nodes).await?;
                eprintln!(
                    "bench: node-init {} round {round}: {}/{} initialized in {:?}",
                    side.key(),
                    m.done,
                    m.of,
                    m.total
                );
                measured.push(m);
            }
        }
        Ok(measured)
    })
    .await?;
    let report = ccm_report::node_init(&args, &measured, &audit, &version);
    ccm_report::publish(c, &report)
}

async fn node_init_side(env: &Env, side: Side, round: usize, n: usize) -> Result<Timed> {
    let c = &env.common;
    let run = format!("ni-{}-{round}", side.key());
    let api = env.nodes();
    let mut watch = Reached::watch(api.clone(), &run, is_initialized).await?;
    let mut ccm = match side {
        Side::Ceiling => None,
        _ => {
            let mut ccm = env.spawn_ccm(side, &run, "cloud-node", side.workers(c), false)?;
            let name = format!("{run}-canary");
            api.create(&Default::default(), &ccm::node(&name, &run, true, None))
                .await
                .context("creating the canary Node")?;
            canary(&mut watch, &mut ccm, &name).await?;
            Some(ccm)
        }
    };
    let names: Vec<String> = (0..n).map(|i| format!("{run}-{i:05}")).collect();
    let wanted: HashSet<String> = names.iter().cloned().collect();
    let mut m = Timed::new(side, n);
    let cpu_before = ccm.as_ref().and_then(|c| c.cpu_seconds().ok());
    let deadline = deadline(c);
    let burst = async {
        if side == Side::Ceiling {
            ceiling_burst(env, &run, &names).await
        } else {
            let nodes = names
                .iter()
                .map(|name| ccm::node(name, &run, true, None))
                .collect();
            env.create_all(&api, nodes).await
        }
    };
    let (created, reached) = tokio::join!(burst, watch.collect(&wanted, deadline));
    m.window.close();
    m.measure(&created?, &reached);
    if let Some(mut ccm) = ccm.take() {
        ccm.check_running()?;
        m.cpu_s = cpu_before.zip(ccm.cpu_seconds().ok()).map(|(a, b)| b - a);
        ccm.stop().await;
    }
    env.delete_nodes(&run).await?;
    Ok(m)
}

/// The apiserver ceiling: per Node, what a CCM must do at least, issued by us as fast as the apiserver takes it:
/// create; one merge patch setting providerID and the topology/instance-type labels and removing the taint; one
/// status patch setting the addresses. As many Nodes in flight as the CCMs have workers (`--workers`), so the
/// ceiling is "at equal workers": what 16 workers could reach with no cloud latency and no CCM cost.
async fn ceiling_burst(env: &Env, run: &str, names: &[String]) -> Result<HashMap<String, Instant>> {
    let api = env.nodes();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let api = api.clone();
            async move {
                let at = Instant::now();
                api.create(&Default::default(), &ccm::node(name, run, true, None))
                    .await
                    .with_context(|| format!("creating {name}"))?;
                let spec = json!({
                    "metadata": {"labels": {
                        "node.kubernetes.io/instance-type": "fake.small",
                        "beta.kubernetes.io/instance-type": "fake.small",
                        "topology.kubernetes.io/zone": "fake-zone-1a",
                        "failure-domain.beta.kubernetes.io/zone": "fake-zone-1a",
                        "topology.kubernetes.io/region": "fake-region-1",
                        "failure-domain.beta.kubernetes.io/region": "fake-region-1",
                    }},
                    "spec": {"providerID": format!("fake://{name}"), "taints": null},
                });
                api.patch(name, &PatchParams::default(), &Patch::Merge(spec))
                    .await
                    .with_context(|| format!("patching {name}"))?;
                let address = format!("10.0.{}.{}", i / 250, i % 250 + 1);
                let status =
                    json!({"status": {"addresses": [{"type": "InternalIP", "address": address}]}});
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .with_context(|| format!("patching the status of {name}"))?;
                Ok::<_, anyhow::Error>((name.clone(), at))
            }
        })
        .buffer_unordered(usize::from(env.common.workers).max(1))
        .try_collect()
        .await
}

// ----- load balancers -----

pub async fn load_balancers(args: LoadBalancersArgs) -> Result<()> {
    let c = &args.common;
    let sides = [Side::Rust, Side::GoDefault, Side::GoEqual];
    let (measured, audit, version) = with_env(c, async |env: &Env| {
        let mut measured = Vec::new();
        for round in 1..=c.rounds {
            for side in sides {
                let m = load_balancers_side(env, side, round, &args).await?;
                eprintln!(
                    "bench: load-balancers {} round {round}: {}/{} addressed in {:?}; node fan-out {}/{} in {:?}",
                    side.key(),
                    m.done,
                    m.of,
                    m.total,
                    m.fanout_done,
                    m.of,
                    m.fanout
                );
                measured.push(m);
            }
        }
        Ok(measured)
    })
    .await?;
    let report = ccm_report::load_balancers(&args, &measured, &audit, &version);
    ccm_report::publish(c, &report)
}

async fn load_balancers_side(
    env: &Env,
    side: Side,
    round: usize,
    args: &LoadBalancersArgs,
) -> Result<Timed> {
    let c = &env.common;
    let run = format!("lb-{}-{round}", side.key());
    let nodes = (0..args.nodes)
        .map(|i| ccm::node(&format!("{run}-node-{i:03}"), &run, false, None))
        .collect();
    env.create_all(&env.nodes(), nodes).await?;
    let api = env.services();
    let names: Vec<String> = (0..args.services)
        .map(|i| format!("{run}-{i:05}"))
        .collect();
    let wanted: HashSet<String> = names.iter().cloned().collect();
    let services: Vec<_> = names.iter().map(|n| ccm::service(n, &run, true)).collect();
    let (mut ccm, mut m, cpu_before) = if args.during_creation {
        let mut watch = Reached::watch(api.clone(), &run, has_address).await?;
        let mut ccm = env.spawn_ccm(side, &run, "service", side.workers(c), true)?;
        let name = format!("{run}-canary");
        api.create(&Default::default(), &ccm::service(&name, &run, true))
            .await
            .context("creating the canary Service")?;
        canary(&mut watch, &mut ccm, &name).await?;
        let mut m = Timed::new(side, args.services);
        let cpu_before = ccm.cpu_seconds().ok();
        let (created, reached) = tokio::join!(
            env.create_all(&api, services),
            watch.collect(&wanted, deadline(c))
        );
        m.measure(&created?, &reached);
        (ccm, m, cpu_before)
    } else {
        // Every Service exists before the CCM starts: the clock runs from its start, so the times are the
        // controller's alone (initial list, then one ensure per Service).
        env.create_all(&api, services).await?;
        let mut watch = Reached::watch(api.clone(), &run, has_address).await?;
        let mut m = Timed::new(side, args.services);
        let started = Instant::now();
        let ccm = env.spawn_ccm(side, &run, "service", side.workers(c), true)?;
        let reached = watch.collect(&wanted, deadline(c)).await;
        let created = names.iter().map(|n| (n.clone(), started)).collect();
        m.measure(&created, &reached);
        m.burst = None;
        (ccm, m, Some(0.0))
    };
    ccm.check_running()?;

    if m.done == m.of {
        // Let stragglers (events, status writes) settle, then add one Node and time its arrival in every LB.
        tokio::time::sleep(Duration::from_secs(2)).await;
        ccm.drain_updates();
        let hosts = args.nodes + 1;
        let keys: HashSet<String> = names.iter().map(|n| format!("default/{n}")).collect();
        let t0 = Instant::now();
        env.nodes()
            .create(
                &Default::default(),
                &ccm::node(&format!("{run}-node-extra"), &run, false, None),
            )
            .await
            .context("creating the extra Node")?;
        let mut updated = HashSet::new();
        let mut last = t0;
        let fan_deadline = deadline(c);
        while updated.len() < keys.len() {
            match tokio::time::timeout_at(fan_deadline, ccm.updates.recv()).await {
                Ok(Some((key, n, at))) => {
                    if keys.contains(&key) && n.is_none_or(|n| n == hosts) && updated.insert(key) {
                        last = at;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        m.fanout_done = updated.len();
        if updated.len() == keys.len() {
            m.fanout = Some(last.duration_since(t0));
        }
    }
    m.window.close();
    ccm.check_running()?;
    m.cpu_s = cpu_before.zip(ccm.cpu_seconds().ok()).map(|(a, b)| b - a);
    ccm.stop().await;
    env.delete_services(&run).await?;
    env.delete_nodes(&run).await?;
    Ok(m)
}

// ----- memory -----

/// Peak RSS of one CCM.
#[derive(Debug, Clone)]
pub struct Rss {
    pub side: Side,
    pub peak_kib: u64,
    pub current_kib: u64,
    pub window: Window,
}

pub async fn memory(args: MemoryArgs) -> Result<()> {
    let c = &args.common;
    let sides = [Side::Rust, Side::GoDefault];
    let mut sizes = Vec::new();
    let mut version = String::new();
    for &size in &args.sizes {
        let (measured, audit, v) = with_env(c, async |env: &Env| {
            let run = "mem";
            eprintln!("bench: memory: creating {size} kubelet-style Nodes and {size} Services");
            create_kubelet_nodes(env, run, size).await?;
            // Headless: the apiserver's ClusterIP allocator slows to ~10 creations/s past 10,000 Services here,
            // and the address is not what is measured (both CCMs cache the same objects either way).
            let services = (0..size)
                .map(|i| {
                    let mut svc = ccm::service(&format!("mem-svc-{i:05}"), run, false);
                    if let Some(spec) = svc.spec.as_mut() {
                        spec.cluster_ip = Some("None".into());
                    }
                    svc
                })
                .collect();
            env.create_all(&env.services(), services).await?;
            let mut measured = Vec::new();
            for round in 1..=c.rounds {
                for side in sides {
                    let m = memory_side(env, side, round, &args).await?;
                    eprintln!(
                        "bench: memory {size} {} round {round}: peak {} MiB, end {} MiB",
                        side.key(),
                        m.peak_kib / 1024,
                        m.current_kib / 1024
                    );
                    measured.push(m);
                }
            }
            Ok(measured)
        })
        .await?;
        version = v;
        sizes.push(MemorySize {
            size,
            measured,
            audit,
        });
    }
    let report = ccm_report::memory(&args, &sizes, &version);
    ccm_report::publish(c, &report)
}

/// Creates `n` Nodes as a kubelet and the CCM leave them: labels, annotations, provider ID, pod CIDR, then a
/// status with five conditions (Ready), addresses, capacity, allocatable, node info and ten images.
async fn create_kubelet_nodes(env: &Env, run: &str, n: usize) -> Result<()> {
    let api = env.nodes();
    let names: Vec<String> = (0..n).map(|i| format!("mem-node-{i:05}")).collect();
    let nodes = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut node = ccm::node(name, run, false, Some(format!("fake://{name}")));
            let labels = node.metadata.labels.get_or_insert_default();
            for (k, v) in [
                ("kubernetes.io/hostname", name.as_str()),
                ("kubernetes.io/os", "linux"),
                ("kubernetes.io/arch", "amd64"),
                ("beta.kubernetes.io/os", "linux"),
                ("beta.kubernetes.io/arch", "amd64"),
                ("node.kubernetes.io/instance-type", "fake.small"),
                ("topology.kubernetes.io/zone", "fake-zone-1a"),
                ("topology.kubernetes.io/region", "fake-region-1"),
            ] {
                labels.insert(k.to_owned(), v.to_owned());
            }
            node.metadata.annotations = Some(
                [
                    (
                        "kubeadm.alpha.kubernetes.io/cri-socket",
                        "unix:///run/containerd/containerd.sock",
                    ),
                    ("node.alpha.kubernetes.io/ttl", "0"),
                    (
                        "volumes.kubernetes.io/controller-managed-attach-detach",
                        "true",
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            );
            if let Some(spec) = node.spec.as_mut() {
                let cidr = format!("10.{}.{}.0/24", 64 + i / 256, i % 256);
                spec.pod_cidr = Some(cidr.clone());
                spec.pod_cidrs = Some(vec![cidr]);
            }
            node
        })
        .collect();
    env.create_all(&api, nodes).await?;
    let now = "2026-12-01T00:00:00Z";
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let images: Vec<_> = (0..10)
        .map(|i| json!({"names": [format!("registry.example.com/team/app-{i}@sha256:{:064x}", i), format!("registry.example.com/team/app-{i}:v1.{i}.0")], "sizeBytes": 50_000_000 + i}))
        .collect();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let api = api.clone();
            let status = json!({"status": {
                "conditions": [
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                    condition("NetworkUnavailable", "False", "RouteCreated", "RouteController created a route"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250 + 1)},
                    {"type": "Hostname", "address": name},
                ],
                "capacity": {"cpu": "4", "memory": "16374584Ki", "pods": "110", "ephemeral-storage": "101445540Ki", "hugepages-2Mi": "0"},
                "allocatable": {"cpu": "3800m", "memory": "15223608Ki", "pods": "110", "ephemeral-storage": "93492209510", "hugepages-2Mi": "0"},
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": format!("ec2{i:029x}"), "bootID": format!("{i:032x}"),
                    "kernelVersion": "6.1.0-27-cloud-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "containerRuntimeVersion": "containerd://2.0.0", "kubeletVersion": "v1.36.3", "kubeProxyVersion": "",
                    "operatingSystem": "linux", "architecture": "amd64"},
                "images": images,
            }});
            async move {
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .with_context(|| format!("patching the status of {name}"))
            }
        })
        .buffer_unordered(env.common.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn memory_side(env: &Env, side: Side, round: usize, args: &MemoryArgs) -> Result<Rss> {
    // All controllers at their defaults (1 worker each), as a CCM would be deployed.
    let mut window = Window::open();
    let run = format!("mem-{}-{round}", side.key());
    let mut ccm = env.spawn_ccm(side, &run, &args.controllers, 1, false)?;
    tokio::time::sleep(args.settle).await;
    window.close();
    ccm.check_running()?;
    let (peak_kib, current_kib) = ccm.rss_kib()?;
    ccm.stop().await;
    Ok(Rss {
        side,
        peak_kib,
        current_kib,
        window,
    })
}
