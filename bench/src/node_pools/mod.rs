//! `bench node-pools`: node autoscaling of a burst of pending Pods and of a scale-down, Karpenter (its kwok cloud
//! provider, the anchor) vs our NodePool controller, each on a fresh control plane.
//!
//! Per side: etcd + kube-apiserver (audit log of every request, Metadata level) + kube-scheduler +
//! kube-controller-manager (Deployments, ReplicaSets, garbage collection) + kwok (fake kubelets for Nodes annotated
//! `kwok.x-k8s.io/node=fake`, which Karpenter's kwok provider creates), then the autoscaler, then the workload:
//!
//! (a) Deployments of pending Pods of mixed sizes (100m/128Mi, 500m/1Gi, 1/2Gi, 2/3Gi; `--pods` in all): the time
//!     until every Pod is bound, the Nodes launched, their price per hour (Karpenter's kwok prices); then the time
//!     until the Node set is quiet for `--quiet`;
//! (b) every Deployment scaled to `--scale-to` percent: the time until the Node set settles (last change before a
//!     quiet `--quiet`), the Nodes and price left, the Pods evicted (audit log: `create pods/eviction`);
//! (c) the autoscaler's apiserver requests (audit log, by User-Agent), CPU seconds and peak RSS (`/proc`).
//!
//! Both sides are offered the same instance types: Karpenter's NodePool is held to amd64/linux, ours gets the same
//! 288 offerings as node groups (see [`crate::karpenter_offering`]); [`start_ours`] says how ours is set up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::karpenter_offering::{self, Offering, Subset};

mod section;
mod sides;

use crate::report;
use section::{bind_plot, section};
pub use sides::{start_karpenter, start_ours};

/// The label of every workload object.
const WORKLOAD_LABEL: &str = "bench-node-pools";
/// The workload: (name, CPU request, memory request), one Deployment each.
pub(super) const SIZES: [(&str, &str, &str); 4] = [
    ("np-100m", "100m", "128Mi"),
    ("np-500m", "500m", "1Gi"),
    ("np-1cpu", "1", "2Gi"),
    ("np-2cpu", "2", "3Gi"),
];

/// Which autoscaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Impl {
    /// Karpenter's kwok cloud provider (scripts/build-karpenter).
    Karpenter,
    /// Our node-pool-controller with provider-fake (see `start_ours`).
    Ours,
}

impl Impl {
    fn label(self) -> &'static str {
        match self {
            Impl::Karpenter => "Karpenter (kwok provider)",
            Impl::Ours => "ours (node-pool-controller)",
        }
    }
}

/// `bench node-pools`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Pending Pods created at once, split over the four Deployment sizes.
    #[arg(long, default_value_t = 500)]
    pub pods: usize,
    /// Every Deployment is scaled to this percentage of its replicas (rounded) in phase (b).
    #[arg(long, default_value_t = 30)]
    pub scale_to: u32,
    /// The Node set counts as settled once it has not changed for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub quiet: Duration,
    /// The most each phase may take.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Which autoscalers, one after the other, each on a fresh control plane.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "karpenter")]
    pub impls: Vec<Impl>,
    /// Karpenter's NodePool disruption budget (`spec.disruption.budgets[0].nodes`); Karpenter's default is 10%.
    #[arg(long, default_value = "100%")]
    pub karpenter_budget: String,
    /// Karpenter's NodePool `spec.disruption.consolidateAfter`.
    #[arg(long, default_value = "10s")]
    pub consolidate_after: String,
    /// Karpenter's `FEATURE_GATES` (default: its own defaults, under which SpotToSpotConsolidation is off, so a
    /// spot node is deleted when empty or emptied onto others but never replaced by a cheaper spot node).
    #[arg(long)]
    pub karpenter_feature_gates: Option<String>,
    /// The directory `scripts/build-karpenter` prints (default: run it).
    #[arg(long)]
    pub karpenter_dir: Option<PathBuf>,
    /// Keep the working directories (audit logs, autoscaler logs) and print their paths.
    #[arg(long)]
    pub keep: bool,
    /// Markdown file whose `## Node pools: provisioning and consolidation` section is replaced (default:
    /// docs/benchmarks.md); `-` writes nothing.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The state of the cluster at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds since the phase began.
    pub seconds: f64,
    /// Nodes not being deleted.
    pub nodes: usize,
    /// Their price per hour (Karpenter's kwok prices, by instance type × zone × capacity type).
    pub price_per_hour: f64,
    /// Their number per `instance type/capacity type`.
    pub instance_types: BTreeMap<String, usize>,
    /// Nodes whose price was not found (no such offering).
    pub unpriced: usize,
    /// How the live Nodes changed while settling: (seconds since the phase began, Nodes, price per hour).
    pub changes: Vec<(f64, usize, f64)>,
}

/// What one side measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub which: Impl,
    pub version: String,
    /// (a) every Pod bound.
    pub scheduled: Snapshot,
    /// (a) Nodes that ever existed until every Pod was bound.
    pub launched: usize,
    /// (a) when each Pod was first seen bound (seconds since the Deployments were created; polled every 0.5 s).
    pub bind_times: Vec<f64>,
    /// (a) the Node set quiet.
    pub up_settled: Snapshot,
    /// (b) the Node set settled after the scale-down (seconds: to its last change).
    pub down_settled: Snapshot,
    /// (b) Pods left.
    pub pods_left: usize,
    /// (b) Pod evictions (`create pods/eviction`) by the autoscaler.
    pub evictions: u64,
    /// (c) requests by the autoscaler over the whole run.
    pub requests: u64,
    /// (c) per `verb resource`, the largest first.
    pub requests_per: Vec<(String, u64)>,
    /// (c) requests in phase (a), in phase (b).
    pub requests_up: u64,
    pub requests_down: u64,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    /// Start of (a), start of (b), end of (b): unix µs, the audit-log windows.
    pub window_us: (i64, i64, i64),
    pub work: PathBuf,
}

/// A running autoscaler under test: what [`start_karpenter`] and [`start_ours`] hand back.
pub struct Autoscaler {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// Its requests in the audit log: `userAgent` starts with this.
    pub user_agent_prefix: String,
    pub version: String,
    pub log: PathBuf,
}

impl Autoscaler {
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the autoscaler")? {
            bail!(
                "the autoscaler exited ({status}); see {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

/// What a side's autoscaler is started against.
pub struct Env {
    pub cp: test_support::ControlPlane,
    pub client: kube::Client,
    pub work: PathBuf,
    pub audit_log: PathBuf,
    /// The instance types both sides may launch.
    pub offerings: Vec<Offering>,
}

pub async fn run(args: Args) -> Result<()> {
    if args.pods < SIZES.len() {
        bail!("--pods must be at least {}", SIZES.len());
    }
    let karpenter_dir = match &args.karpenter_dir {
        Some(d) => d.clone(),
        None => karpenter_offering::karpenter_tools_dir().await?,
    };
    let offerings =
        karpenter_offering::read(&karpenter_dir.join("instance_types.json"), Subset::AmdLinux)?;
    let mut rows = Vec::new();
    for &which in &args.impls {
        rows.push(run_side(&args, which, &karpenter_dir, &offerings).await?);
    }
    let mut section = section(&args, &rows, offerings.len());
    if let Some(plot) = bind_plot(&args, &rows)? {
        section.push_str(&format!(
            "\n![Pods bound over time, each side](benchmarks/{plot})\n"
        ));
    }
    report::publish_section(
        args.out.as_deref(),
        "Node pools: provisioning and consolidation",
        &section,
    )?;
    Ok(())
}

async fn run_side(
    args: &Args,
    which: Impl,
    karpenter_dir: &Path,
    offerings: &[Offering],
) -> Result<Measured> {
    let tmp = tempfile::Builder::new()
        .prefix("kube-cloud-rs-bench-node-pools-")
        .tempdir()
        .context("creating the working directory")?;
    let work = tmp.path().to_path_buf();
    let policy = work.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n- level: Metadata\n",
    )
    .context("writing the audit policy")?;
    let audit_log = work.join("audit.log");
    eprintln!(
        "bench: node-pools: {}: starting the control plane (scheduler, controller-manager, kwok)",
        which.label()
    );
    let cp = test_support::ControlPlane::builder()
        .scheduler(true)
        .controller_manager([
            "deployment-controller",
            "replicaset-controller",
            "garbage-collector-controller",
        ])
        .kwok(test_support::KwokOptions::new())
        .apiserver_arg(format!("--audit-policy-file={}", policy.display()))
        .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
        .apiserver_arg("--audit-log-maxsize=0")
        .start()
        .await
        .context("starting the control plane")?;
    let client = cp.client();
    let env = Env {
        cp,
        client,
        work: work.clone(),
        audit_log,
        offerings: offerings.to_vec(),
    };
    let mut autoscaler = match which {
        Impl::Karpenter => start_karpenter(&env, args, karpenter_dir).await?,
        Impl::Ours => start_ours(&env, args).await?,
    };
    let result = measure(&env, args, which, &mut autoscaler).await;
    let _ = autoscaler.child.kill().await;
    // Stopping the apiserver completes the audit log (open watches end) before it is read.
    let Env {
        cp,
        audit_log,
        offerings: _,
        ..
    } = env;
    cp.stop();
    let mut measured = result?;
    let (start_us, scaled_us, end_us) = measured.window_us;
    let audit = AuditByAgent::read(&audit_log, &autoscaler.user_agent_prefix)?;
    measured.requests = audit.count(i64::MIN, i64::MAX);
    measured.requests_up = audit.count(start_us, scaled_us);
    measured.requests_down = audit.count(scaled_us, end_us);
    measured.evictions = audit.evictions(scaled_us, end_us);
    measured.requests_per = audit.per_kind();
    if args.keep {
        let kept = tmp.keep();
        eprintln!(
            "bench: node-pools: kept {} (audit.log, {})",
            kept.display(),
            autoscaler.log.display()
        );
        measured.work = kept;
    }
    Ok(measured)
}

/// The workload and the measurements, the same for both sides.
pub async fn measure(
    env: &Env,
    args: &Args,
    which: Impl,
    autoscaler: &mut Autoscaler,
) -> Result<Measured> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), "default");
    let replicas = split(args.pods, SIZES.len());
    let start_us = crate::candidate::wall_us();
    let t0 = Instant::now();
    for ((name, cpu, memory), n) in SIZES.iter().zip(&replicas) {
        deployments
            .create(&PostParams::default(), &deployment(name, cpu, memory, *n))
            .await
            .with_context(|| format!("creating Deployment {name}"))?;
    }
    eprintln!(
        "bench: node-pools: {}: {} pending Pods in {} Deployments",
        which.label(),
        args.pods,
        SIZES.len()
    );
    // (a) every Pod bound.
    let mut seen_nodes = HashSet::new();
    let mut bind_times = Vec::new();
    let scheduled = loop {
        autoscaler.check_running()?;
        let (bound, total) = bound_pods(env).await?;
        let at = t0.elapsed().as_secs_f64();
        bind_times.extend(std::iter::repeat_n(
            at,
            bound.saturating_sub(bind_times.len()),
        ));
        let nodes = live_nodes(env).await?;
        seen_nodes.extend(
            nodes
                .iter()
                .map(|n| n.metadata.name.clone().unwrap_or_default()),
        );
        if total == args.pods && bound == total {
            break snapshot(&nodes, &env.offerings, t0.elapsed());
        }
        if t0.elapsed() > args.timeout {
            bail!(
                "{}: {bound}/{total} Pods bound after {:?}",
                which.label(),
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let launched = seen_nodes.len();
    eprintln!(
        "bench: node-pools: {}: all {} Pods bound after {:.1}s on {} Nodes (${:.4}/h; {launched} launched)",
        which.label(),
        args.pods,
        scheduled.seconds,
        scheduled.nodes,
        scheduled.price_per_hour
    );
    let up_settled = settle(env, args, autoscaler, t0, "after the scale-up").await?;

    // (b) scale every Deployment down.
    let scaled_us = crate::candidate::wall_us();
    let t1 = Instant::now();
    let mut target = 0;
    for ((name, _, _), n) in SIZES.iter().zip(&replicas) {
        let to = scaled(*n, args.scale_to);
        target += to;
        deployments
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": to}})),
            )
            .await
            .with_context(|| format!("scaling Deployment {name}"))?;
    }
    eprintln!(
        "bench: node-pools: {}: scaled to {}% ({target} Pods)",
        which.label(),
        args.scale_to
    );
    let down_settled = settle(env, args, autoscaler, t1, "after the scale-down").await?;
    let (bound, pods_left) = bound_pods(env).await?;
    if bound != pods_left || pods_left != target {
        eprintln!(
            "bench: node-pools: {}: at the end {bound}/{pods_left} Pods bound, {target} wanted",
            which.label()
        );
    }
    let end_us = crate::candidate::wall_us();
    let cpu_seconds = cpu_seconds(autoscaler.pid)?;
    let (_, peak_rss_mib) = crate::virtual_nodes::rss_mib(autoscaler.pid)?;
    Ok(Measured {
        which,
        version: autoscaler.version.clone(),
        scheduled,
        launched,
        bind_times,
        up_settled,
        down_settled,
        pods_left,
        evictions: 0,
        requests: 0,
        requests_per: Vec::new(),
        requests_up: 0,
        requests_down: 0,
        cpu_seconds,
        peak_rss_mib,
        window_us: (start_us, scaled_us, end_us),
        work: env.work.clone(),
    })
}

/// Waits until the set of live Nodes has not changed for `--quiet` (and none is being deleted); the snapshot's
/// time is that of the last change, since `since`.
async fn settle(
    env: &Env,
    args: &Args,
    autoscaler: &mut Autoscaler,
    since: Instant,
    what: &str,
) -> Result<Snapshot> {
    let mut last: Option<(Vec<String>, usize)> = None;
    let mut changed_at = since.elapsed();
    let mut changes = Vec::new();
    loop {
        autoscaler.check_running()?;
        let all: Vec<Node> = Api::<Node>::all(env.client.clone())
            .list(&ListParams::default())
            .await
            .context("listing Nodes")?
            .items;
        let deleting = all
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_some())
            .count();
        let live: Vec<Node> = all
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .collect();
        let mut names: Vec<String> = live
            .iter()
            .map(|n| n.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        let now = since.elapsed();
        if last.as_ref() != Some(&(names.clone(), deleting)) {
            if last.is_some() {
                changed_at = now;
            }
            if last.as_ref().is_none_or(|(before, _)| *before != names) {
                let s = snapshot(&live, &env.offerings, now);
                changes.push((now.as_secs_f64(), s.nodes, s.price_per_hour));
            }
            last = Some((names, deleting));
        } else if deleting == 0 && now - changed_at >= args.quiet {
            let mut s = snapshot(&live, &env.offerings, changed_at);
            s.seconds = changed_at.as_secs_f64();
            s.changes = changes;
            eprintln!(
                "bench: node-pools: settled {what}: {} Nodes (${:.4}/h), last change at {:.1}s",
                s.nodes, s.price_per_hour, s.seconds
            );
            return Ok(s);
        }
        if now > args.timeout {
            bail!("the Nodes did not settle {what} within {:?}", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (bound, all) workload Pods that are not being deleted.
async fn bound_pods(env: &Env) -> Result<(usize, usize)> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels(&format!("{WORKLOAD_LABEL}=true")))
        .await
        .context("listing Pods")?;
    let live: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let bound = live
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    Ok((bound, live.len()))
}

async fn live_nodes(env: &Env) -> Result<Vec<Node>> {
    Ok(Api::<Node>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Nodes")?
        .items
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Nodes and their price, by the labels instance type, zone and capacity type.
pub fn snapshot(nodes: &[Node], offerings: &[Offering], at: Duration) -> Snapshot {
    let prices: HashMap<(&str, &str, &str), f64> = offerings
        .iter()
        .map(|o| {
            (
                (
                    o.instance_type.as_str(),
                    o.zone.as_str(),
                    o.capacity_type.as_str(),
                ),
                o.price,
            )
        })
        .collect();
    let mut s = Snapshot {
        seconds: at.as_secs_f64(),
        nodes: nodes.len(),
        ..Snapshot::default()
    };
    for n in nodes {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let l = |k: &str| labels.get(k).map_or("", String::as_str);
        let (it, zone, ct) = (
            l("node.kubernetes.io/instance-type"),
            l("topology.kubernetes.io/zone"),
            l("karpenter.sh/capacity-type"),
        );
        *s.instance_types.entry(format!("{it}/{ct}")).or_default() += 1;
        match prices.get(&(it, zone, ct)) {
            Some(p) => s.price_per_hour += p,
            None => s.unpriced += 1,
        }
    }
    s
}

fn deployment(name: &str, cpu: &str, memory: &str, replicas: usize) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {WORKLOAD_LABEL: "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, WORKLOAD_LABEL: "true"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": "registry.example.com/bench/app:v1",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                },
            },
        },
    }))
    .expect("a valid Deployment")
}

/// `total` split into `parts` as evenly as possible (the first ones get the remainder).
pub(super) fn split(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// `n` scaled to `percent`, rounded half up.
pub(super) fn scaled(n: usize, percent: u32) -> usize {
    (n * percent as usize + 50) / 100
}

pub(super) async fn kubectl(env: &Env, args: &[OsString]) -> Result<()> {
    let output = env
        .cp
        .kubectl()
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .context("running kubectl")?;
    if !output.status.success() {
        bail!(
            "kubectl {:?} failed: {}",
            args,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

pub(super) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A plain HTTP/1.0 GET answered 200.
pub(super) async fn http_ok(port: u16, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(
            buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"),
        )
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .is_ok_and(|r| r.unwrap_or(false))
}

/// User + system CPU seconds of `pid` (not its children).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok((utime + stime) / if ticks > 0 { ticks as f64 } else { 100.0 })
}

/// The requests of one client, told apart by its User-Agent, from an audit log of every request.
struct AuditByAgent {
    /// (received unix µs, `verb resource[/subresource]`), one per audit ID.
    requests: Vec<(i64, String)>,
}

impl AuditByAgent {
    fn read(path: &Path, agent_prefix: &str) -> Result<AuditByAgent> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut seen = HashSet::new();
        let mut requests = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if !line.contains(agent_prefix) {
                continue;
            }
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let s = |p: &str| event.pointer(p).and_then(Value::as_str);
            if !s("/userAgent").is_some_and(|a| a.starts_with(agent_prefix)) {
                continue;
            }
            let (Some(id), Some(verb), Some(received)) = (
                s("/auditID"),
                s("/verb"),
                s("/requestReceivedTimestamp").and_then(crate::audit::parse_rfc3339_us),
            ) else {
                continue;
            };
            if seen.insert(id.to_owned()) {
                let resource = s("/objectRef/resource").unwrap_or("-");
                let sub = s("/objectRef/subresource")
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                requests.push((received, format!("{verb} {resource}{sub}")));
            }
        }
        Ok(AuditByAgent { requests })
    }

    fn count(&self, start_us: i64, end_us: i64) -> u64 {
        self.requests
            .iter()
            .filter(|(at, _)| (start_us..end_us).contains(at))
            .count() as u64
    }

    fn evictions(&self, start_us: i64, end_us: i64) -> u64 {
        self.requests
            .iter()
            .filter(|(at, k)| (start_us..end_us).contains(at) && k == "create pods/eviction")
            .count() as u64
    }

    fn per_kind(&self) -> Vec<(String, u64)> {
        let mut per: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, k) in &self.requests {
            *per.entry(k).or_default() += 1;
        }
        let mut v: Vec<(String, u64)> = per.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_scales() {
        assert_eq!(split(500, 4), vec![125, 125, 125, 125]);
        assert_eq!(split(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(scaled(125, 30), 38);
        assert_eq!(scaled(10, 30), 3);
    }

    #[test]
    fn prices_nodes_by_their_labels() {
        let offerings = vec![Offering {
            instance_type: "c-4x-amd64-linux".into(),
            family: "c".into(),
            arch: "amd64".into(),
            os: "linux".into(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: "64".into(),
            zone: "test-zone-a".into(),
            capacity_type: "spot".into(),
            price: 0.5,
        }];
        let node = |ct: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n", "labels": {
                "node.kubernetes.io/instance-type": "c-4x-amd64-linux",
                "topology.kubernetes.io/zone": "test-zone-a",
                "karpenter.sh/capacity-type": ct}}}))
            .unwrap()
        };
        let s = snapshot(
            &[node("spot"), node("spot"), node("on-demand")],
            &offerings,
            Duration::ZERO,
        );
        assert_eq!(s.nodes, 3);
        assert!((s.price_per_hour - 1.0).abs() < 1e-9);
        assert_eq!(s.unpriced, 1);
        assert_eq!(s.instance_types["c-4x-amd64-linux/spot"], 2);
    }
}
