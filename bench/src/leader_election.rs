//! Leader election: our `lease-election` (the `leader-election` example binary) vs client-go's
//! `tools/leaderelection` (bench/go/leader-election), side by side on one kube-apiserver.
//!
//! Each implementation gets its own Lease and its own candidates; each candidate authenticates with its own static
//! token, so the audit log attributes every Lease request to one candidate. Per implementation:
//! 1. start `--candidates` candidates, wait for a leader that all others follow;
//! 2. API load: count the Lease requests of the idle candidates during `--window` (audit log);
//! 3. graceful handover, `--rounds` times: SIGTERM the leader, time until another prints LEADING; the stopped
//!    candidate is replaced by a fresh one;
//! 4. crash takeover, `--rounds` times: the same with SIGKILL.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rand::Rng;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use crate::audit;
use crate::candidate::{self, Event, Said};
use crate::report;

/// Command-line arguments of `bench leader-election`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Rounds of graceful handover and of crash takeover, per implementation.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Candidates per implementation (at least 2).
    #[arg(long, default_value_t = 3)]
    pub candidates: usize,
    /// Length of the idle window whose Lease requests are counted.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Markdown file whose `## Leader election` section is written or replaced (default: docs/benchmarks.md of
    /// the workspace); `-` writes nothing.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Implementations to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rust,rust-no-watch,client-go"
    )]
    pub impls: Vec<Impl>,
    /// Lease duration given to every candidate.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Renew deadline given to every candidate.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// Retry period given to every candidate.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
    /// Our `leader-election` binary (default: built with `cargo build --release`).
    #[arg(long)]
    pub rust_bin: Option<PathBuf>,
    /// The client-go twin (default: built by `bench/build-go`).
    #[arg(long)]
    pub go_bin: Option<PathBuf>,
    /// Keep the working directory (audit log, candidate logs, kubeconfigs) and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Impl {
    /// Our lease-election, watching the Lease (the default configuration).
    Rust,
    /// Our lease-election with `--no-watch` (RBAC without list/watch on leases).
    RustNoWatch,
    /// client-go's tools/leaderelection with a LeaseLock.
    ClientGo,
}

impl Impl {
    pub fn key(self) -> &'static str {
        match self {
            Impl::Rust => "rust",
            Impl::RustNoWatch => "rust-no-watch",
            Impl::ClientGo => "client-go",
        }
    }

    /// Identity prefix; no prefix is a prefix of another.
    fn prefix(self) -> &'static str {
        match self {
            Impl::Rust => "rs",
            Impl::RustNoWatch => "rsnw",
            Impl::ClientGo => "go",
        }
    }

    pub fn lease(self) -> String {
        format!("bench-{}", self.key())
    }

    pub fn is_rust(self) -> bool {
        matches!(self, Impl::Rust | Impl::RustNoWatch)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub lease: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

/// What one implementation measured (times from our clocks; requests come later from the audit log).
#[derive(Debug, Clone)]
pub struct Measured {
    pub imp: Impl,
    pub window: Window,
    /// SIGTERM → another candidate prints LEADING.
    pub graceful: Vec<Duration>,
    pub crash: Vec<Crash>,
}

#[derive(Debug, Clone)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
    pub leader: String,
    pub followers: Vec<String>,
    /// No leadership change during the window.
    pub stable: bool,
}

#[derive(Debug, Clone)]
pub struct Crash {
    pub killed: String,
    /// SIGKILL → another candidate prints LEADING.
    pub from_kill: Duration,
    pub kill_us: i64,
    pub leading_us: i64,
}

/// Runs the whole benchmark and writes the report.
pub async fn run(args: Args) -> Result<()> {
    if args.candidates < 2 {
        bail!("--candidates must be at least 2");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut impls = args.impls.clone();
    impls.sort();
    impls.dedup();
    if impls.is_empty() {
        bail!("--impls is empty");
    }
    let timings = Timings {
        lease: args.lease_duration,
        renew: args.renew_deadline,
        retry: args.retry_period,
    };

    let rust_bin = match (&args.rust_bin, impls.iter().any(|i| i.is_rust())) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(crate::build::rust_binary("leader-election").await?),
        (None, false) => None,
    };
    let go_bin = match (&args.go_bin, impls.contains(&Impl::ClientGo)) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(crate::build::go_binary("leader-election").await?),
        (None, false) => None,
    };

    let work = tempfile::Builder::new()
        .prefix("kube-cloud-rs-bench-")
        .tempdir()
        .context("creating the working directory")?;
    let result = run_in(&args, &impls, timings, rust_bin, go_bin, work.path()).await;
    if args.keep || result.is_err() {
        let kept = work.keep();
        eprintln!(
            "bench: kept the working directory (audit log, candidate logs): {}",
            kept.display()
        );
    }
    result
}

async fn run_in(
    args: &Args,
    impls: &[Impl],
    timings: Timings,
    rust_bin: Option<PathBuf>,
    go_bin: Option<PathBuf>,
    work: &Path,
) -> Result<()> {
    let (kubeconfigs, logs) = (work.join("kubeconfigs"), work.join("logs"));
    for dir in [&kubeconfigs, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    // Identities (= users with a static token each) for every candidate any round may start.
    let pool = args.candidates + 2 * args.rounds + 4;
    let mut tokens = Vec::new();
    let mut rng = rand::rng();
    for imp in impls {
        for n in 1..=pool {
            let id = format!("{}-{n}", imp.prefix());
            tokens.push((id, format!("{:032x}", rng.random::<u128>())));
        }
    }
    let token_file = work.join("tokens.csv");
    let token_csv: String = tokens
        .iter()
        .map(|(id, token)| format!("{token},{id},{id},\"system:masters\"\n"))
        .collect();
    std::fs::write(&token_file, token_csv).context("writing the token file")?;
    let policy = work.join("audit-policy.yaml");
    std::fs::write(&policy, audit::POLICY).context("writing the audit policy")?;
    let audit_log = work.join("audit.log");

    eprintln!("bench: starting etcd + kube-apiserver with an audit log");
    let cp = test_support::ControlPlane::builder()
        .apiserver_arg(format!("--audit-policy-file={}", policy.display()))
        .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
        .apiserver_arg(format!("--token-auth-file={}", token_file.display()))
        .start()
        .await
        .context("starting the control plane")?;
    let k8s_version = cp
        .client()
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));

    let ca = certificate_authority(cp.kubeconfig_path())?;
    for (id, token) in &tokens {
        std::fs::write(
            kubeconfigs.join(format!("{id}.yaml")),
            token_kubeconfig(cp.server_url(), &ca, id, token),
        )
        .context("writing a kubeconfig")?;
    }

    let env = Env {
        kubeconfigs,
        logs,
        timings,
        pool,
    };
    let minutes_est = estimate(args, timings).as_secs_f64() / 60.0;
    eprintln!(
        "bench: running {} side by side: {} candidates, {:?} window, {} graceful + {} crash rounds (≈{minutes_est:.1} min)",
        impls.iter().map(|i| i.key()).collect::<Vec<_>>().join(", "),
        args.candidates,
        args.window,
        args.rounds,
        args.rounds,
    );
    let runs = impls.iter().map(|&imp| {
        let bin = match imp {
            Impl::ClientGo => go_bin.clone(),
            Impl::Rust | Impl::RustNoWatch => rust_bin.clone(),
        };
        let env = &env;
        async move {
            let bin = bin.ok_or_else(|| anyhow!("no binary for {}", imp.key()))?;
            let mut runner = Runner::new(imp, env, bin);
            let result = runner.scenario(args).await;
            runner.shutdown().await;
            result.with_context(|| format!("benchmarking {}", imp.key()))
        }
    });
    let measured = futures::future::try_join_all(runs).await?;

    // Stop the apiserver so the audit log is complete (open watches end), then read it.
    drop(cp);
    let requests = audit::read(&audit_log)?;

    let context = report::Context {
        command: crate::command_line(),
        k8s_version,
        client_go_version: client_go_version(),
        args: args.clone(),
        timings,
    };
    let section = report::section(&context, &measured, &requests);
    println!("{section}");
    let out = match &args.out {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => Some(crate::workspace_root().join("docs").join("benchmarks.md")),
    };
    if let Some(out) = out {
        report::write_section(&out, &report::header(&context), "Leader election", &section)?;
        eprintln!(
            "bench: wrote the `## Leader election` section of {}",
            out.display()
        );
    }
    Ok(())
}

/// A rough duration of the run, for the progress message.
fn estimate(args: &Args, t: Timings) -> Duration {
    let rounds = u32::try_from(args.rounds).unwrap_or(u32::MAX);
    let graceful = 3 * t.retry + Duration::from_secs(3);
    let crash = t.lease + 4 * t.retry + Duration::from_secs(3);
    args.window + 2 * t.retry + Duration::from_secs(10) + (graceful + crash) * rounds
}

/// Shared by the runners.
struct Env {
    kubeconfigs: PathBuf,
    logs: PathBuf,
    timings: Timings,
    pool: usize,
}

struct Cand {
    child: Child,
    /// The leader this candidate last said it follows (or itself when it said LEADING).
    sees: Option<String>,
}

/// The candidates of one implementation and what they said.
struct Runner<'e> {
    imp: Impl,
    env: &'e Env,
    bin: PathBuf,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    cands: BTreeMap<String, Cand>,
    /// Who last said LEADING and has not stopped leading since.
    leader: Option<String>,
    leading_lines: usize,
    next: usize,
    expect_exit: HashSet<String>,
    recent: VecDeque<String>,
}

impl<'e> Runner<'e> {
    fn new(imp: Impl, env: &'e Env, bin: PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            imp,
            env,
            bin,
            tx,
            rx,
            cands: BTreeMap::new(),
            leader: None,
            leading_lines: 0,
            next: 0,
            expect_exit: HashSet::new(),
            recent: VecDeque::new(),
        }
    }

    fn spawn(&mut self) -> Result<String> {
        self.next += 1;
        if self.next > self.env.pool {
            bail!("out of identities (pool of {})", self.env.pool);
        }
        let id = format!("{}-{}", self.imp.prefix(), self.next);
        let t = self.env.timings;
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let mut args: Vec<OsString> = vec![
            "--kubeconfig".into(),
            self.env.kubeconfigs.join(format!("{id}.yaml")).into(),
            "--id".into(),
            id.clone().into(),
            "--leader-elect-resource-namespace".into(),
            "default".into(),
            "--leader-elect-resource-name".into(),
            self.imp.lease().into(),
            "--leader-elect-lease-duration".into(),
            secs(t.lease).into(),
            "--leader-elect-renew-deadline".into(),
            secs(t.renew).into(),
            "--leader-elect-retry-period".into(),
            secs(t.retry).into(),
        ];
        if self.imp == Impl::RustNoWatch {
            args.push("--no-watch".into());
        }
        let log = self.env.logs.join(format!("{id}.log"));
        let child = candidate::spawn(&id, &self.bin, &args, &log, self.tx.clone())?;
        self.cands.insert(id.clone(), Cand { child, sees: None });
        Ok(id)
    }

    /// Takes in one event: updates who leads and who sees whom.
    async fn apply(&mut self, event: &Event) -> Result<()> {
        if self.recent.len() == 40 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{} {}", event.id, event.raw));
        let id = &event.id;
        match &event.said {
            Said::Leading { .. } => {
                self.leading_lines += 1;
                self.leader = Some(id.clone());
                if let Some(c) = self.cands.get_mut(id) {
                    c.sees = Some(id.clone());
                }
            }
            Said::Following { leader } => {
                if let Some(c) = self.cands.get_mut(id) {
                    c.sees = leader.clone();
                }
                if self.leader.as_ref() == Some(id) {
                    self.leader = None;
                }
            }
            Said::Lost | Said::Released => {
                if self.leader.as_ref() == Some(id) {
                    self.leader = None;
                }
            }
            Said::Other(_) => {}
            Said::Exited => {
                if self.leader.as_ref() == Some(id) {
                    self.leader = None;
                }
                let expected = self.expect_exit.remove(id);
                if let Some(mut c) = self.cands.remove(id) {
                    let status = c.child.wait().await.context("waiting for a candidate")?;
                    if !expected {
                        bail!(
                            "candidate {id} exited unexpectedly ({status}); its log: {}",
                            self.env.logs.join(format!("{id}.log")).display()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The next event before `deadline` (applied), or `None` at the deadline.
    async fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>> {
        match timeout_at(deadline, self.rx.recv()).await {
            Ok(Some(event)) => {
                self.apply(&event).await?;
                Ok(Some(event))
            }
            Ok(None) => bail!("the event channel closed"),
            Err(_) => Ok(None),
        }
    }

    /// Waits for an event matching `pred` (all events are applied).
    async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Self, &Event) -> bool,
    ) -> Result<Event> {
        let deadline = Instant::now() + within;
        loop {
            match self.next_event(deadline).await? {
                Some(event) if pred(self, &event) => return Ok(event),
                Some(_) => {}
                None => bail!(
                    "timed out after {within:?} waiting for {what}{}",
                    self.tail()
                ),
            }
        }
    }

    /// Waits until `cond` holds.
    async fn wait_until(
        &mut self,
        within: Duration,
        what: &str,
        cond: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        while !cond(self) {
            if self.next_event(deadline).await?.is_none() {
                bail!(
                    "timed out after {within:?} waiting for {what}{}",
                    self.tail()
                );
            }
        }
        Ok(())
    }

    /// Takes in events for `d`.
    async fn idle(&mut self, d: Duration) -> Result<()> {
        let deadline = Instant::now() + d;
        while self.next_event(deadline).await?.is_some() {}
        Ok(())
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self.recent.iter().map(String::as_str).collect();
        format!("; last lines:\n  {}", lines.join("\n  "))
    }

    /// One leader, followed by all other candidates.
    fn settled(&self, n: usize) -> bool {
        let Some(leader) = &self.leader else {
            return false;
        };
        self.cands.len() == n
            && self.cands.contains_key(leader)
            && self.cands.values().all(|c| c.sees.as_ref() == Some(leader))
    }

    fn current_leader(&self) -> Result<String> {
        self.leader.clone().ok_or_else(|| anyhow!("no leader"))
    }

    /// Waits until settled, then idles a retry period plus a random fraction of one, so the signal lands at a
    /// random phase of the renew cycle (and the leader has renewed at least once).
    async fn prepare_round(&mut self, n: usize) -> Result<String> {
        let t = self.env.timings;
        self.wait_until(
            2 * t.lease + Duration::from_secs(30),
            "a leader followed by every candidate",
            |s| s.settled(n),
        )
        .await?;
        let phase = t.retry.mul_f64(rand::rng().random_range(0.0..1.0));
        self.idle(t.retry + phase).await?;
        if !self.settled(n) {
            bail!("leadership changed while idle{}", self.tail());
        }
        self.current_leader()
    }

    /// Stops `old` with `signal` and measures the time until another candidate leads; then replaces `old`.
    async fn failover(&mut self, old: &str, crash: bool) -> Result<(Duration, Event, i64)> {
        let t = self.env.timings;
        let Some(cand) = self.cands.get_mut(old) else {
            bail!("{old} is not running");
        };
        self.expect_exit.insert(old.to_owned());
        let kill_us = candidate::wall_us();
        let t0 = Instant::now();
        if crash {
            cand.child.start_kill().context("SIGKILL")?;
        } else {
            candidate::signal(&cand.child, libc::SIGTERM).context("SIGTERM")?;
        }
        let what = if crash { "SIGKILL" } else { "SIGTERM" };
        let event = self
            .wait_for(
                3 * t.lease + Duration::from_secs(10),
                &format!("another leader after {what} to {old}"),
                |_, e| e.is_leading() && e.id != old,
            )
            .await?;
        let took = event.at.duration_since(t0.into_std());
        self.wait_until(Duration::from_secs(30), &format!("{old} to exit"), |s| {
            !s.cands.contains_key(old)
        })
        .await?;
        self.spawn()?;
        Ok((took, event, kill_us))
    }

    async fn scenario(&mut self, args: &Args) -> Result<Measured> {
        let n = args.candidates;
        let t = self.env.timings;
        for _ in 0..n {
            self.spawn()?;
        }
        self.wait_until(
            2 * t.lease + Duration::from_secs(30),
            "a first leader followed by every candidate",
            |s| s.settled(n),
        )
        .await?;

        // API load: idle candidates, one leading.
        self.idle(2 * t.retry + Duration::from_secs(1)).await?;
        let leader = self.current_leader()?;
        let leading_before = self.leading_lines;
        let start_us = candidate::wall_us();
        eprintln!(
            "bench: {}: {leader} leads; counting requests for {:?}",
            self.imp.key(),
            args.window
        );
        self.idle(args.window).await?;
        let end_us = candidate::wall_us();
        let window = Window {
            start_us,
            end_us,
            stable: self.leading_lines == leading_before && self.leader.as_ref() == Some(&leader),
            followers: self
                .cands
                .keys()
                .filter(|id| **id != leader)
                .cloned()
                .collect(),
            leader,
        };

        let mut graceful = Vec::new();
        for round in 1..=args.rounds {
            let old = self.prepare_round(n).await?;
            let (took, event, _) = self.failover(&old, false).await?;
            eprintln!(
                "bench: {}: graceful {round}/{}: {old} → {} in {took:.3?}",
                self.imp.key(),
                args.rounds,
                event.id
            );
            graceful.push(took);
        }

        let mut crash = Vec::new();
        for round in 1..=args.rounds {
            let old = self.prepare_round(n).await?;
            let (took, event, kill_us) = self.failover(&old, true).await?;
            eprintln!(
                "bench: {}: crash {round}/{}: {old} → {} in {took:.3?}",
                self.imp.key(),
                args.rounds,
                event.id
            );
            crash.push(Crash {
                killed: old,
                from_kill: took,
                kill_us,
                leading_us: event.wall_us,
            });
        }

        Ok(Measured {
            imp: self.imp,
            window,
            graceful,
            crash,
        })
    }

    /// Kills every candidate and reaps it.
    async fn shutdown(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.cands) {
            let _ = c.child.kill().await;
        }
    }
}

/// A kubeconfig for `user` authenticating with a static `token`.
pub(crate) fn token_kubeconfig(server: &str, ca: &str, user: &str, token: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {{server: "{server}", certificate-authority: "{ca}"}}
users:
- name: {user}
  user: {{token: "{token}"}}
contexts:
- name: bench
  context: {{cluster: bench, user: {user}}}
current-context: bench
"#
    )
}

/// The CA file of the control plane's kubeconfig.
pub(crate) fn certificate_authority(kubeconfig: &Path) -> Result<String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    kc.clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.certificate_authority.clone())
        .ok_or_else(|| anyhow!("no certificate-authority in {}", kubeconfig.display()))
}

/// The client-go version required by bench/go/leader-election/go.mod.
fn client_go_version() -> String {
    let go_mod = crate::workspace_root().join("bench/go/leader-election/go.mod");
    std::fs::read_to_string(go_mod)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let l = l.trim().strip_prefix("require").unwrap_or(l.trim()).trim();
                l.strip_prefix("k8s.io/client-go ")
                    .map(|v| v.split_whitespace().next().unwrap_or(v).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_client_go_version() {
        assert!(client_go_version().starts_with("v0."));
    }
}
