//! `bench virtual-nodes`: one process keeping N virtual nodes alive — our heartbeat (`bench heartbeat-agent`, one
//! thread) vs kwok (built from Go modules) with the same Lease settings — on a fresh etcd + kube-apiserver per
//! row. Measures the process's CPU (from `/proc/<pid>/stat`) and RSS, Lease writes per second and missed
//! renewals as seen by a watch on `kube-node-lease`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::candidate::{self, Event};
use crate::heartbeat_agent::LABEL;
use crate::report;

/// Command-line arguments of `bench virtual-nodes`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Node counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub nodes: Vec<usize>,
    /// Implementations, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "rust,kwok")]
    pub impls: Vec<Impl>,
    /// Time after every Lease exists before measuring.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Measurement window.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// `leaseDurationSeconds` for both (renewed every quarter of it).
    #[arg(long, default_value_t = 40)]
    pub lease_seconds: u64,
    /// Lease and status writes our heartbeat keeps in flight at once.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_writes: usize,
    /// How long registration may take before the row fails.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub setup_timeout: Duration,
    /// Markdown file whose `## Virtual nodes` section is written or replaced (default: docs/benchmarks.md of
    /// the workspace); `-` writes nothing.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Impl {
    /// `controller_core::heartbeat` with fake-provider virtual nodes, one thread.
    Rust,
    /// kwok v0.8.0 with `--node-lease-duration-seconds`.
    Kwok,
}

impl Impl {
    fn label(self) -> &'static str {
        match self {
            Impl::Rust => "kube-cloud-rs heartbeat (1 thread)",
            Impl::Kwok => "kwok",
        }
    }
}

/// One measured row.
#[derive(Debug, Clone)]
pub struct Row {
    imp: Impl,
    nodes: usize,
    cpu_cores: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    writes_per_s: f64,
    missed: u64,
    max_gap_s: f64,
    ready: usize,
    setup_s: f64,
    /// The agent's own counters over the window (renewals, failures, missed), ours only.
    self_reported: Option<(u64, u64, u64)>,
}

/// Lease renewals seen by the watch.
#[derive(Default)]
struct Watched {
    last_renew_us: HashMap<String, i64>,
    counting: bool,
    writes: u64,
    missed: u64,
    max_gap_us: i64,
    threshold_us: i64,
}

impl Watched {
    fn observe(&mut self, lease: &Lease) {
        let (Some(name), Some(renew)) = (
            lease.metadata.name.clone(),
            lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.as_microsecond()),
        ) else {
            return;
        };
        let previous = self.last_renew_us.insert(name, renew);
        if !self.counting {
            return;
        }
        if let Some(previous) = previous
            && renew > previous
        {
            self.writes += 1;
            let gap = renew - previous;
            self.max_gap_us = self.max_gap_us.max(gap);
            if gap > self.threshold_us {
                self.missed += 1;
            }
        }
    }

    /// At the end of the window: Leases not renewed within the threshold count as missed too.
    fn stalled(&mut self, now_us: i64) -> u64 {
        let mut stalled = 0;
        for last in self.last_renew_us.values() {
            let gap = now_us - last;
            if gap > self.threshold_us {
                stalled += 1;
                self.max_gap_us = self.max_gap_us.max(gap);
            }
        }
        stalled
    }
}

async fn watch_leases(client: kube::Client, state: Arc<Mutex<Watched>>) {
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                if let Ok(mut s) = state.lock() {
                    s.observe(&l);
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("bench: lease watch: {e}"),
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
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
    Ok((utime + stime) / clock_ticks())
}

/// (current RSS, peak RSS) in MiB.
pub(crate) fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn last_metrics(events: &mut mpsc::UnboundedReceiver<Event>, latest: &mut Option<Vec<u64>>) {
    while let Ok(e) = events.try_recv() {
        if let Some(rest) = e.raw.strip_prefix("METRICS ") {
            *latest = Some(
                rest.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect(),
            );
        }
    }
}

async fn create_kwok_nodes(client: &kube::Client, n: usize) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let node = Node {
                    metadata: ObjectMeta {
                        name: Some(format!("kw-{i}")),
                        labels: Some([(LABEL.to_owned(), "kwok".to_owned())].into()),
                        annotations: Some(
                            [("kwok.x-k8s.io/node".to_owned(), "fake".to_owned())].into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    ..Node::default()
                };
                api.create(&PostParams::default(), &node).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_for_each(|()| async { Ok(()) })
        .await
        .context("creating kwok nodes")
}

async fn ready_nodes(client: &kube::Client) -> Result<usize> {
    let api: Api<Node> = Api::all(client.clone());
    let nodes = api
        .list(&ListParams::default().labels(LABEL))
        .await
        .context("listing nodes")?;
    Ok(nodes
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count())
}

fn spawn_process(
    imp: Impl,
    n: usize,
    args: &Args,
    kubeconfig: &Path,
    work: &Path,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Child> {
    let log = work.join(format!("{imp:?}-{n}.log").to_lowercase());
    match imp {
        Impl::Rust => {
            let me = std::env::current_exe().context("locating the bench binary")?;
            let argv: Vec<OsString> = vec![
                "heartbeat-agent".into(),
                "--kubeconfig".into(),
                kubeconfig.into(),
                "--nodes".into(),
                n.to_string().into(),
                "--prefix".into(),
                "rs".into(),
                "--lease-seconds".into(),
                args.lease_seconds.to_string().into(),
                "--max-concurrent-writes".into(),
                args.max_concurrent_writes.to_string().into(),
            ];
            candidate::spawn("agent", &me, &argv, &log, events)
        }
        Impl::Kwok => {
            let tools = test_support::Tools::get().context("locating kwok")?;
            let home = work.join(format!("kwok-home-{n}"));
            std::fs::create_dir_all(&home).context("creating kwok's HOME")?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("picking a port")?
                .port();
            // Through env(1) so kwok gets its own HOME; env execs kwok, so the pid is kwok's.
            let mut argv: Vec<OsString> = vec![
                format!("HOME={}", home.display()).into(),
                tools.bin("kwok").into(),
                "--kubeconfig".into(),
                kubeconfig.into(),
                "--node-lease-duration-seconds".into(),
                args.lease_seconds.to_string().into(),
                "--server-address".into(),
                format!("127.0.0.1:{port}").into(),
                "--manage-nodes-with-label-selector".into(),
                format!("{LABEL}=kwok").into(),
            ];
            for stage in tools.kwok_stages().context("kwok stage files")? {
                argv.push("--config".into());
                argv.push(stage.into());
            }
            candidate::spawn("kwok", Path::new("/usr/bin/env"), &argv, &log, events)
        }
    }
}

async fn measure(args: &Args, imp: Impl, n: usize, work: &Path) -> Result<Row> {
    eprintln!(
        "bench: {} with {n} nodes: starting etcd + kube-apiserver",
        imp.label()
    );
    let cp = test_support::ControlPlane::builder()
        .start()
        .await
        .context("starting the control plane")?;
    let client = cp.client();
    let interval_us = i64::try_from(args.lease_seconds).unwrap_or(40) * 1_000_000 / 4;
    let state = Arc::new(Mutex::new(Watched {
        threshold_us: 2 * interval_us,
        ..Watched::default()
    }));
    let watch = tokio::spawn(watch_leases(client.clone(), Arc::clone(&state)));
    let setup_started = Instant::now();
    if imp == Impl::Kwok {
        create_kwok_nodes(&client, n).await?;
    }
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut child = spawn_process(imp, n, args, cp.kubeconfig_path(), work, tx)?;
    let pid = child.id().context("no pid")?;
    loop {
        let leases = state.lock().map(|s| s.last_renew_us.len()).unwrap_or(0);
        if leases >= n {
            break;
        }
        if setup_started.elapsed() > args.setup_timeout {
            bail!(
                "{}: only {leases} of {n} Leases after {:?}",
                imp.label(),
                args.setup_timeout
            );
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{} exited during setup: {status}", imp.label());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "bench: {n} Leases after {setup_s:.0}s; warming up {:?}",
        args.warmup
    );
    tokio::time::sleep(args.warmup).await;

    let mut metrics = None;
    last_metrics(&mut events, &mut metrics);
    let metrics_before = metrics.clone();
    if let Ok(mut s) = state.lock() {
        s.counting = true;
    }
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    tokio::time::sleep(args.window).await;
    let cpu_after = cpu_seconds(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    let (rss, peak) = rss_mib(pid)?;
    let now_us = candidate::wall_us();
    let (writes, missed, max_gap_us) = {
        let mut s = state
            .lock()
            .map_err(|_| anyhow::anyhow!("watch state poisoned"))?;
        s.counting = false;
        let stalled = s.stalled(now_us);
        (s.writes, s.missed + stalled, s.max_gap_us)
    };
    last_metrics(&mut events, &mut metrics);
    let self_reported = match (metrics_before, metrics) {
        (Some(a), Some(b)) if a.len() >= 3 && b.len() >= 3 => {
            Some((b[0] - a[0], b[1] - a[1], b[2] - a[2]))
        }
        _ => None,
    };
    let ready = ready_nodes(&client).await?;
    let _ = child.kill().await;
    watch.abort();
    cp.stop();
    let row = Row {
        imp,
        nodes: n,
        cpu_cores: (cpu_after - cpu_before) / elapsed,
        rss_mib: rss,
        peak_rss_mib: peak,
        writes_per_s: writes as f64 / elapsed,
        missed,
        max_gap_s: max_gap_us as f64 / 1e6,
        ready,
        setup_s,
        self_reported,
    };
    eprintln!("bench: {row:?}");
    Ok(row)
}

pub async fn run(args: Args) -> Result<()> {
    if args.nodes.is_empty() || args.impls.is_empty() {
        bail!("--nodes and --impls must not be empty");
    }
    if args.lease_seconds < 4 {
        bail!("--lease-seconds must be at least 4");
    }
    let work = tempfile::Builder::new()
        .prefix("kube-cloud-rs-bench-vn-")
        .tempdir()
        .context("creating the working directory")?;
    let mut rows = Vec::new();
    for &n in &args.nodes {
        for &imp in &args.impls {
            match measure(&args, imp, n, work.path()).await {
                Ok(row) => rows.push(row),
                Err(e) => {
                    let kept = work.keep();
                    eprintln!("bench: logs kept in {}", kept.display());
                    return Err(e);
                }
            }
        }
    }
    let section = section(&args, &rows);
    report::publish_section(args.out.as_deref(), "Virtual nodes", &section)?;
    Ok(())
}

fn section(args: &Args, rows: &[Row]) -> String {
    let interval = args.lease_seconds as f64 / 4.0;
    let mut s = String::from("## Virtual nodes\n\n");
    let _ = write!(
        s,
        "One process keeping N nodes alive through their Leases in `kube-node-lease` \
         (`leaseDurationSeconds={lease}`, renewed every {interval:.0} s plus up to 4 % jitter): our \
         `controller_core::heartbeat` driving N fake-provider virtual nodes on **one thread** (`bench heartbeat-agent`; \
         one timer queue, at most {inflight} writes in flight, one PUT per renewal) vs kwok v0.8.0 (built from Go modules, \
         its default stages) managing N Nodes with the same Lease duration. Each row has a fresh etcd + \
         kube-apiserver on the same machine; after every Lease exists and a {warmup:?} warm-up, the window of \
         {window:?} is measured.\n\n\
         - CPU: user + system time of the process over the window (`/proc/<pid>/stat`), in cores (1.0 = one core \
           busy). RSS at the end of the window (peak in parentheses, which includes registration).\n\
         - Lease writes/s: renewals seen by a watch on `kube-node-lease` (a renewal = a newer `renewTime`); \
           N / {interval:.0} s ≈ expected.\n\
         - Missed renewals: a gap between consecutive `renewTime`s of one Lease above 2 × the renew interval \
           ({gap:.0} s), or a Lease not renewed within that at the end of the window. Max gap is the largest such \
           gap seen.\n\
         - The apiserver, etcd and the bench (which watches every Lease) share the 2 cores with the measured \
           process.\n\n",
        lease = args.lease_seconds,
        warmup = args.warmup,
        window = args.window,
        gap = 2.0 * interval,
        inflight = args.max_concurrent_writes,
    );
    s.push_str("| implementation | nodes | CPU (cores) | RSS MiB (peak) | Lease writes/s (expected) | missed renewals | max gap s | nodes Ready | setup s |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.0} ({:.0}) | {:.0} ({:.0}) | {} | {:.1} | {} | {:.0} |",
            r.imp.label(),
            r.nodes,
            r.cpu_cores,
            r.rss_mib,
            r.peak_rss_mib,
            r.writes_per_s,
            r.nodes as f64 / interval,
            r.missed,
            r.max_gap_s,
            r.ready,
            r.setup_s,
        );
    }
    let ours: Vec<&Row> = rows.iter().filter(|r| r.self_reported.is_some()).collect();
    if !ours.is_empty() {
        s.push_str(
            "\nOur process's own counters over the same window (`node_heartbeat_*` metrics): ",
        );
        let parts: Vec<String> = ours
            .iter()
            .filter_map(|r| {
                r.self_reported.map(|(renewals, failures, missed)| {
                    format!(
                        "{} nodes: {renewals} renewals, {failures} failed writes, {missed} missed",
                        r.nodes
                    )
                })
            })
            .collect();
        s.push_str(&parts.join("; "));
        s.push_str(".\n");
    }
    let _ = write!(
        s,
        "\nCommand: `{}` (measured {}).\n",
        crate::command_line(),
        report::utc_now(),
    );
    s
}
