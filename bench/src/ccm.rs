//! Cloud controller manager: ours (`cloud-controller-manager` of kube-cloud-examples with provider-fake) vs
//! upstream's (`k8s.io/cloud-provider/app` with upstream's `k8s.io/cloud-provider/fake`, built from
//! bench/go/cloud-controller-manager), on one etcd + kube-apiserver, one CCM at a time on fresh objects.
//!
//! This module holds what the scenarios share: arguments, the control plane with an audit log of the CCMs'
//! requests (each CCM authenticates with its own static token), CCM processes, watches that timestamp objects
//! reaching a state, object templates and RSS sampling. The scenarios are in `ccm_scenarios`, the report in
//! `ccm_report`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeSpec, Service, ServicePort, ServiceSpec, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::io::Write as _;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::candidate::{die_with_parent, wall_us};

/// The label that tells which run (side and round) an object belongs to.
pub const RUN_LABEL: &str = "bench.kube-cloud-rs/run";
/// Upstream's uninitialized taint.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// Options every CCM scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Latency of every call of both fake providers, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub latency_ms: u64,
    /// Workers of our CCM and of upstream's "equal workers" run (`--concurrent-node-syncs` /
    /// `--concurrent-service-syncs`); upstream's default is 1.
    #[arg(long, default_value_t = 16)]
    pub workers: u16,
    /// `--kube-api-qps` given to every CCM (upstream's default, 20, would make the client the bottleneck).
    #[arg(long, default_value_t = 1000.0)]
    pub kube_api_qps: f32,
    /// `--kube-api-burst` given to every CCM.
    #[arg(long, default_value_t = 2000)]
    pub kube_api_burst: u32,
    /// Requests in flight of the benchmark's own bursts (creating objects; the apiserver ceiling).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Rounds; each round runs every side once, in alternation.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Give up on one side after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Markdown file whose `## Cloud controller manager` section gets this scenario's subsection (default:
    /// docs/benchmarks.md of the workspace); `-` writes nothing (and no plot).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Our `cloud-controller-manager` binary (default: built with `cargo build --release`).
    #[arg(long)]
    pub rust_bin: Option<PathBuf>,
    /// Upstream's CCM with the fake provider (default: built by `bench/build-go cloud-controller-manager`).
    #[arg(long)]
    pub go_bin: Option<PathBuf>,
    /// Keep the working directory (audit log, CCM logs) and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// Who does the work in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// Our CCM with `--workers` workers.
    Rust,
    /// Upstream's CCM at its default, 1 worker.
    GoDefault,
    /// Upstream's CCM with `--workers` workers.
    GoEqual,
    /// No CCM: the benchmark issues the CCM's writes itself, as fast as the apiserver takes them.
    Ceiling,
}

impl Side {
    pub fn key(self) -> &'static str {
        match self {
            Side::Rust => "rust",
            Side::GoDefault => "go-default",
            Side::GoEqual => "go-equal",
            Side::Ceiling => "ceiling",
        }
    }

    /// The apiserver user (static token) of this side's CCM.
    pub fn user(self) -> String {
        format!("ccm-{}", self.key())
    }

    pub fn is_go(self) -> bool {
        matches!(self, Side::GoDefault | Side::GoEqual)
    }

    /// Workers this side's CCM runs with.
    pub fn workers(self, common: &Common) -> u16 {
        match self {
            Side::GoDefault => 1,
            _ => common.workers,
        }
    }

    pub fn label(self, common: &Common) -> String {
        match self {
            Side::Rust => format!("ours ({} workers)", common.workers),
            Side::GoDefault => "upstream (default, 1 worker)".into(),
            Side::GoEqual => format!("upstream ({} workers)", common.workers),
            Side::Ceiling => "apiserver ceiling".into(),
        }
    }
}

const CCM_SIDES: [Side; 3] = [Side::Rust, Side::GoDefault, Side::GoEqual];

/// The audit policy: metadata of every request of the CCMs' users, nothing of anyone else.
fn audit_policy() -> String {
    let users: Vec<String> = CCM_SIDES
        .iter()
        .map(|s| format!("\"{}\"", s.user()))
        .collect();
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n\
         - level: Metadata\n  users: [{}]\n- level: None\n",
        users.join(", ")
    )
}

/// The control plane, the binaries and the working directory of one scenario run.
pub struct Env {
    pub common: Common,
    /// Kept running (and killed on drop).
    _control_plane: test_support::ControlPlane,
    pub client: kube::Client,
    pub work: PathBuf,
    pub audit_log: PathBuf,
    pub k8s_version: String,
    rust_bin: PathBuf,
    go_bin: PathBuf,
    kubeconfigs: HashMap<Side, PathBuf>,
}

impl Env {
    /// Builds what is missing and starts etcd + kube-apiserver (audit log, one static token per CCM side).
    pub async fn start(common: &Common, work: &Path) -> Result<Env> {
        let rust_bin = match &common.rust_bin {
            Some(p) => p.clone(),
            None => crate::build::rust_binary("cloud-controller-manager").await?,
        };
        let go_bin = match &common.go_bin {
            Some(p) => p.clone(),
            None => crate::build::go_binary("cloud-controller-manager").await?,
        };
        let mut tokens = Vec::new();
        for side in CCM_SIDES {
            tokens.push((side, format!("{:032x}", rand::random::<u128>())));
        }
        let token_file = work.join("tokens.csv");
        let csv: String = tokens
            .iter()
            .map(|(side, token)| format!("{token},{u},{u},\"system:masters\"\n", u = side.user()))
            .collect();
        std::fs::write(&token_file, csv).context("writing the token file")?;
        let policy = work.join("audit-policy.yaml");
        std::fs::write(&policy, audit_policy()).context("writing the audit policy")?;
        let audit_log = work.join("audit.log");

        eprintln!("bench: starting etcd + kube-apiserver with an audit log of the CCMs' requests");
        let cp = test_support::ControlPlane::builder()
            .apiserver_arg(format!("--audit-policy-file={}", policy.display()))
            .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
            .apiserver_arg(format!("--token-auth-file={}", token_file.display()))
            .start()
            .await
            .context("starting the control plane")?;
        let client = cp.client();
        let k8s_version = client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_else(|e| format!("unknown ({e})"));
        let ca = crate::leader_election::certificate_authority(cp.kubeconfig_path())?;
        let mut kubeconfigs = HashMap::new();
        for (side, token) in &tokens {
            let path = work.join(format!("kubeconfig-{}.yaml", side.key()));
            std::fs::write(
                &path,
                crate::leader_election::token_kubeconfig(cp.server_url(), &ca, &side.user(), token),
            )
            .context("writing a kubeconfig")?;
            kubeconfigs.insert(*side, path);
        }
        Ok(Env {
            common: common.clone(),
            _control_plane: cp,
            client,
            work: work.to_path_buf(),
            audit_log,
            k8s_version,
            rust_bin,
            go_bin,
            kubeconfigs,
        })
    }

    /// Starts `side`'s CCM with `controllers` (upstream names) and `workers`. `trace_lb_updates` turns on
    /// provider-fake's call trace in ours (the source of its load-balancer update lines; off otherwise, as
    /// formatting a line per call costs CPU upstream's side does not spend).
    pub fn spawn_ccm(
        &self,
        side: Side,
        run: &str,
        controllers: &str,
        workers: u16,
        trace_lb_updates: bool,
    ) -> Result<Ccm> {
        let kubeconfig = self
            .kubeconfigs
            .get(&side)
            .ok_or_else(|| anyhow!("{} runs no CCM", side.key()))?;
        let c = &self.common;
        let config = self.work.join(format!("cloud-config-{run}"));
        let (program, config_text) = if side.is_go() {
            (
                &self.go_bin,
                format!("{{\"requestDelayMs\": {}}}\n", c.latency_ms),
            )
        } else {
            (
                &self.rust_bin,
                // The default address pool is a /24: too small for thousands of load balancers.
                format!(
                    "autoCreateInstances: true\nloadBalancerIpPool: 198.18.0.0/15\nlatency: {{ globalMs: {} }}\n",
                    c.latency_ms
                ),
            )
        };
        std::fs::write(&config, config_text).context("writing the cloud config")?;
        let mut args: Vec<OsString> = vec![
            "--cloud-provider=fake".into(),
            format!("--cloud-config={}", config.display()).into(),
            format!("--kubeconfig={}", kubeconfig.display()).into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            format!("--controllers={controllers}").into(),
            format!("--concurrent-node-syncs={workers}").into(),
            format!("--concurrent-service-syncs={workers}").into(),
            format!("--kube-api-qps={}", c.kube_api_qps).into(),
            format!("--kube-api-burst={}", c.kube_api_burst).into(),
        ];
        if side.is_go() {
            args.push("--configure-cloud-routes=false".into());
        }
        let log = self.work.join(format!("ccm-{run}.log"));
        Ccm::spawn(program, &args, &log, !side.is_go() && trace_lb_updates)
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates `objects` with `--concurrency` requests in flight; returns when each creation was sent.
    pub async fn create_all<K>(
        &self,
        api: &Api<K>,
        objects: Vec<K>,
    ) -> Result<HashMap<String, Instant>>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        futures::stream::iter(objects)
            .map(|obj| async move {
                let name = obj.meta().name.clone().unwrap_or_default();
                let at = Instant::now();
                api.create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("creating {name}"))?;
                Ok::<_, anyhow::Error>((name, at))
            })
            .buffer_unordered(self.common.concurrency)
            .try_collect()
            .await
    }

    /// Deletes the Nodes of `run`.
    pub async fn delete_nodes(&self, run: &str) -> Result<()> {
        self.nodes()
            .delete_collection(&DeleteParams::default(), &run_selector(run))
            .await
            .context("deleting the run's Nodes")?;
        Ok(())
    }

    /// Deletes the Services of `run`, removing finalizers first (their CCM is gone).
    pub async fn delete_services(&self, run: &str) -> Result<()> {
        let api = self.services();
        let names: Vec<String> = api
            .list_metadata(&run_selector(run))
            .await
            .context("listing the run's Services")?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        let unfinalize = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        futures::stream::iter(names)
            .map(|name| {
                let (api, unfinalize) = (api.clone(), &unfinalize);
                async move {
                    api.patch(&name, &PatchParams::default(), unfinalize)
                        .await?;
                    api.delete(&name, &DeleteParams::default()).await?;
                    Ok::<_, kube::Error>(())
                }
            })
            .buffer_unordered(self.common.concurrency)
            .try_collect::<Vec<()>>()
            .await
            .context("deleting the run's Services")?;
        Ok(())
    }
}

pub fn run_selector(run: &str) -> ListParams {
    ListParams::default().labels(&format!("{RUN_LABEL}={run}"))
}

/// A Node of `run`; `tainted` adds the uninitialized taint (as a kubelet with `--cloud-provider=external` does).
pub fn node(name: &str, run: &str, tainted: bool, provider_id: Option<String>) -> Node {
    Node {
        metadata: labelled(name, run, None),
        spec: Some(NodeSpec {
            taints: tainted.then(|| {
                vec![Taint {
                    key: UNINITIALIZED_TAINT.into(),
                    value: Some("true".into()),
                    effect: "NoSchedule".into(),
                    ..Taint::default()
                }]
            }),
            provider_id,
            ..NodeSpec::default()
        }),
        ..Node::default()
    }
}

/// A Service of `run` with one TCP port; `load_balancer` makes it type LoadBalancer (no node ports, so thousands
/// fit the node-port range), else ClusterIP.
pub fn service(name: &str, run: &str, load_balancer: bool) -> Service {
    Service {
        metadata: labelled(name, run, Some("default")),
        spec: Some(ServiceSpec {
            type_: Some(
                if load_balancer {
                    "LoadBalancer"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            allocate_load_balancer_node_ports: load_balancer.then_some(false),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(8080)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn labelled(name: &str, run: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([(RUN_LABEL.to_owned(), run.to_owned())])),
        ..ObjectMeta::default()
    }
}

pub fn is_initialized(node: &Node) -> bool {
    !node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNINITIALIZED_TAINT))
}

pub fn has_address(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

/// A watch of `run`'s objects that reports each object (by name) the first time `reached` holds, timestamped
/// on receipt. Stops when dropped.
pub struct Reached {
    pub rx: mpsc::UnboundedReceiver<(String, Instant)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reached {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reached {
    /// Starts the watch and returns once its initial list is done.
    pub async fn watch<K>(api: Api<K>, run: &str, reached: fn(&K) -> bool) -> Result<Reached>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
        let task = tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut ready = Some(ready_tx);
            let mut events = std::pin::pin!(watcher(api, config));
            while let Some(event) = events.next().await {
                let obj = match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => obj,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("bench: watch error (retrying): {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let at = Instant::now();
                let name = obj.meta().name.clone().unwrap_or_default();
                if reached(&obj) && seen.insert(name.clone()) && tx.send((name, at)).is_err() {
                    return;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .context("the watch did not list within 60 s")?
            .context("the watch ended")?;
        Ok(Reached { rx, task })
    }

    /// Waits until `wanted` names have been reported (others are ignored), or `deadline`; returns when each was.
    pub async fn collect(
        &mut self,
        wanted: &HashSet<String>,
        deadline: tokio::time::Instant,
    ) -> HashMap<String, Instant> {
        let mut got = HashMap::new();
        while got.len() < wanted.len() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((name, at))) => {
                    if wanted.contains(&name) {
                        got.insert(name, at);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        got
    }
}

/// A load-balancer host update the CCM reported: `(service key, hosts if known, receipt time)`.
pub type LbUpdate = (String, Option<usize>, Instant);

/// A running CCM. Its stdout and stderr go to a log file; load-balancer host updates (upstream: our Go main's
/// `UPDATE_LB` lines; ours: provider-fake's `fake cloud call` trace) are parsed into `updates`.
pub struct Ccm {
    child: Child,
    pub pid: u32,
    pub updates: mpsc::UnboundedReceiver<LbUpdate>,
    pub log: PathBuf,
}

impl Ccm {
    fn spawn(program: &Path, args: &[OsString], log: &Path, trace_calls: bool) -> Result<Ccm> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if trace_calls {
            cmd.env("RUST_LOG", "info,kube=warn,provider_fake::cloud=trace");
        }
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the CCM exited at once"))?;
        let (tx, updates) = mpsc::unbounded_channel();
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let err = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let file = |suffix: &str| {
            let path = log.with_extension(suffix);
            std::fs::File::create(&path)
                .map(std::io::LineWriter::new)
                .with_context(|| format!("creating {}", path.display()))
        };
        tokio::spawn(pump(out, file("stdout.log")?, tx.clone()));
        tokio::spawn(pump(err, file("stderr.log")?, tx));
        Ok(Ccm {
            child,
            pid,
            updates,
            log: log.with_extension("stderr.log"),
        })
    }

    /// Fails if the CCM has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the CCM")? {
            bail!("the CCM exited ({status}); see {}", self.log.display());
        }
        Ok(())
    }

    /// Peak and current resident set size in KiB (`VmHWM`, `VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("reading /proc/<pid>/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| anyhow!("no {name} in /proc/{}/status", self.pid))
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .context("reading /proc/<pid>/stat")?;
        // Fields after the parenthesised command name start at field 3 (state); utime and stime are 14 and 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("unexpected /proc/<pid>/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<f64> {
            Ok(fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("no field {} in /proc/<pid>/stat", i + 3))?
                as f64)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            n if n > 0 => n as f64,
            _ => 100.0,
        };
        Ok((ticks(11)? + ticks(12)?) / hz)
    }

    /// Drops the updates received so far.
    pub fn drain_updates(&mut self) {
        while self.updates.try_recv().is_ok() {}
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn pump(
    stream: impl AsyncRead + Unpin,
    mut file: std::io::LineWriter<std::fs::File>,
    tx: mpsc::UnboundedSender<LbUpdate>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let at = Instant::now();
        if let Some((key, hosts)) = parse_lb_update(&line) {
            let _ = tx.send((key, hosts, at));
        }
        // A line at a time to a local file: short enough not to stall the runtime.
        let _ = writeln!(file, "{line}");
    }
}

/// `UPDATE_LB default/svc-1 hosts=11` (upstream) or a provider-fake trace line
/// `... fake cloud call method=update_load_balancer key="default/svc-1" outcome=ok` (ours).
pub fn parse_lb_update(line: &str) -> Option<(String, Option<usize>)> {
    if let Some(rest) = line.strip_prefix("UPDATE_LB ") {
        let mut parts = rest.split_whitespace();
        let key = parts.next()?.to_owned();
        let hosts = parts
            .next()
            .and_then(|h| h.strip_prefix("hosts="))
            .and_then(|h| h.parse().ok());
        return Some((key, hosts));
    }
    if !line.contains("fake cloud call") || !line.contains("method=update_load_balancer") {
        return None;
    }
    if !line.contains("outcome=ok") {
        return None;
    }
    let key = line.split_once("key=")?.1;
    let key = key.strip_prefix('"').map_or_else(
        || key.split_whitespace().next(),
        |quoted| quoted.split('"').next(),
    )?;
    Some((key.to_owned(), None))
}

/// Requests of the CCMs' users, read from the audit log: per user, the requests received in a window.
pub struct AuditCounts {
    /// `(user, received unix µs, verb, resource)`, one per request (audit ID).
    requests: Vec<(String, i64, String, String)>,
}

impl AuditCounts {
    pub fn read(path: &Path) -> Result<AuditCounts> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut seen = HashSet::new();
        let mut requests = Vec::new();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let s = |p: &str| event.pointer(p).and_then(Value::as_str);
            let (Some(id), Some(user), Some(verb), Some(received)) = (
                s("/auditID"),
                s("/user/username"),
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
                requests.push((
                    user.to_owned(),
                    received,
                    verb.to_owned(),
                    format!("{resource}{sub}"),
                ));
            }
        }
        Ok(AuditCounts { requests })
    }

    /// Requests of `user` received in `[start_us, end_us)`, in all and per `verb resource`.
    pub fn count(&self, user: &str, start_us: i64, end_us: i64) -> (u64, BTreeMap<String, u64>) {
        let mut per = BTreeMap::new();
        let mut total = 0;
        for (u, at, verb, resource) in &self.requests {
            if u == user && (start_us..end_us).contains(at) {
                total += 1;
                *per.entry(format!("{verb} {resource}")).or_default() += 1;
            }
        }
        (total, per)
    }
}

/// Wall-clock window of one side, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
}

impl Window {
    pub fn open() -> Window {
        let now = wall_us();
        Window {
            start_us: now,
            end_us: now,
        }
    }

    pub fn close(&mut self) {
        self.end_us = wall_us();
    }
}
