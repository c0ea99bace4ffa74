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
    #[command(flatten)]
    pub common: Common,
}

/// `bench memory`.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Nodes in the cluster (initialized, with a provider ID).
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    /// ClusterIP Services in the cluster.
    #[arg(long, default_value_t = 5000)]
    pub services: usize,
    /// How long each CCM runs with everything cached before its peak RSS is read.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// `--controllers` of both CCMs (e.g. `cloud-node` or `service` to see what each cache costs).
    #[arg(long, default_value = "*")]
    pub controllers: String,
    #[command(flatten)]
    pub common: Common,
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
/// status patch setting the addresses.
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
        .buffer_unordered(env.common.concurrency)
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
    let mut watch = Reached::watch(api.clone(), &run, has_address).await?;
    let mut ccm = env.spawn_ccm(side, &run, "service", side.workers(c), true)?;
    let name = format!("{run}-canary");
    api.create(&Default::default(), &ccm::service(&name, &run, true))
        .await
        .context("creating the canary Service")?;
    canary(&mut watch, &mut ccm, &name).await?;

    let names: Vec<String> = (0..args.services)
        .map(|i| format!("{run}-{i:05}"))
        .collect();
    let wanted: HashSet<String> = names.iter().cloned().collect();
    let mut m = Timed::new(side, args.services);
    let cpu_before = ccm.cpu_seconds().ok();
    let services = names.iter().map(|n| ccm::service(n, &run, true)).collect();
    let (created, reached) = tokio::join!(
        env.create_all(&api, services),
        watch.collect(&wanted, deadline(c))
    );
    m.measure(&created?, &reached);
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
    let (measured, audit, version) = with_env(c, async |env: &Env| {
        let run = "mem";
        eprintln!(
            "bench: memory: creating {} Nodes and {} Services",
            args.nodes, args.services
        );
        let nodes = (0..args.nodes)
            .map(|i| {
                let name = format!("mem-node-{i:05}");
                let id = format!("fake://{name}");
                ccm::node(&name, run, false, Some(id))
            })
            .collect();
        env.create_all(&env.nodes(), nodes).await?;
        let services = (0..args.services)
            .map(|i| ccm::service(&format!("mem-svc-{i:05}"), run, false))
            .collect();
        env.create_all(&env.services(), services).await?;
        let mut measured = Vec::new();
        for round in 1..=c.rounds {
            for side in sides {
                let m = memory_side(env, side, round, &args).await?;
                eprintln!(
                    "bench: memory {} round {round}: peak {} MiB",
                    side.key(),
                    m.peak_kib / 1024
                );
                measured.push(m);
            }
        }
        Ok(measured)
    })
    .await?;
    let report = ccm_report::memory(&args, &measured, &audit, &version);
    ccm_report::publish(c, &report)
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
