//! Statistics and the markdown report (stdout and `docs/benchmarks.md`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::audit::{self, Request};
use crate::leader_election::{Args, Impl, Measured, Timings};

/// What the report needs besides the measurements.
pub struct Context {
    pub command: String,
    pub k8s_version: String,
    pub client_go_version: String,
    pub args: Args,
    pub timings: Timings,
}

/// Median, min, max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[v.len() - 1],
    })
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 && ours.is_finite() {
        format!("{:.2}×", ours / theirs)
    } else if ours == 0.0 && theirs == 0.0 {
        "=".into()
    } else {
        "–".into()
    }
}

fn label(imp: Impl) -> &'static str {
    match imp {
        Impl::Rust => "Rust lease-election",
        Impl::RustNoWatch => "Rust `--no-watch`",
        Impl::ClientGo => "client-go",
    }
}

/// Request rates of one implementation in its window.
struct Load {
    window_s: f64,
    leader: f64,
    follower_mean: f64,
    per_candidate: f64,
    total: f64,
    counts: audit::Counts,
    stable: bool,
}

fn load(m: &Measured, requests: &[Request]) -> Load {
    let w = &m.window;
    let users: Vec<String> = std::iter::once(w.leader.clone())
        .chain(w.followers.iter().cloned())
        .collect();
    let counts = audit::count(requests, &users, w.start_us, w.end_us);
    let window_s = (w.end_us - w.start_us) as f64 / 1e6;
    let rate = |u: &str| counts.per_user.get(u).copied().unwrap_or(0) as f64 / window_s;
    let total: f64 = users.iter().map(|u| rate(u)).sum();
    let follower_mean = if w.followers.is_empty() {
        0.0
    } else {
        w.followers.iter().map(|u| rate(u)).sum::<f64>() / w.followers.len() as f64
    };
    Load {
        window_s,
        leader: rate(&w.leader),
        follower_mean,
        per_candidate: total / users.len() as f64,
        total,
        counts,
        stable: w.stable,
    }
}

/// Crash takeover measured from the killed leader's last successful renew (audit log receipt time).
fn from_last_renew(m: &Measured, requests: &[Request]) -> Vec<f64> {
    m.crash
        .iter()
        .filter_map(|c| {
            let renew = audit::last_successful_write(requests, &c.killed, c.kill_us)?;
            Some((c.leading_us - renew) as f64 / 1e6)
        })
        .collect()
}

/// The `## Leader election` section.
pub fn section(ctx: &Context, measured: &[Measured], requests: &[Request]) -> String {
    let t = ctx.timings;
    let client_go = measured.iter().find(|m| m.imp == Impl::ClientGo);
    let ours: Vec<&Measured> = measured.iter().filter(|m| m.imp.is_rust()).collect();
    let loads: Vec<Load> = measured.iter().map(|m| load(m, requests)).collect();
    let go_load = measured
        .iter()
        .position(|m| m.imp == Impl::ClientGo)
        .map(|i| &loads[i]);

    let mut s = String::new();
    let _ = writeln!(s, "## Leader election\n");
    let _ = writeln!(
        s,
        "`{}` — {} UTC. Per implementation: {} candidates on their own Lease, lease duration {:?}, renew deadline \
         {:?}, retry period {:?}; {} rounds of each failover; {:?} idle window. All implementations ran side by side \
         against one kube-apiserver. Times come from the benchmark's monotonic clock when it read the candidates' \
         stdout lines; requests come from the apiserver's audit log (each candidate authenticates as its own user; \
         completed requests, each watch counted once).\n",
        ctx.command,
        utc_now(),
        ctx.args.candidates,
        t.lease,
        t.renew,
        t.retry,
        ctx.args.rounds,
        ctx.args.window,
    );
    let _ = writeln!(
        s,
        "Implementations: **{}** = `lease-election` via `examples/src/bin/leader_election.rs` (watches the Lease); \
         **{}** = the same with `--no-watch`; **{}** = client-go {} `tools/leaderelection` with a `LeaseLock` and \
         `ReleaseOnCancel` (`bench/go/leader-election`).\n",
        label(Impl::Rust),
        label(Impl::RustNoWatch),
        label(Impl::ClientGo),
        ctx.client_go_version,
    );

    // Columns: every implementation, then ratios of each Rust variant to client-go.
    let mut header = String::from("| |");
    let mut align = String::from("|---|");
    for m in measured {
        let _ = write!(header, " {} |", label(m.imp));
        align.push_str("---:|");
    }
    if client_go.is_some() {
        for m in &ours {
            let _ = write!(header, " {} / client-go |", label(m.imp));
            align.push_str("---:|");
        }
    }

    // Failover.
    let _ = writeln!(s, "### Failover\n\n{header}\n{align}");
    let graceful: Vec<Option<Stats>> = measured
        .iter()
        .map(|m| {
            stats(
                &m.graceful
                    .iter()
                    .map(Duration::as_secs_f64)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let crash: Vec<Option<Stats>> = measured
        .iter()
        .map(|m| {
            stats(
                &m.crash
                    .iter()
                    .map(|c| c.from_kill.as_secs_f64())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let renew: Vec<Option<Stats>> = measured
        .iter()
        .map(|m| stats(&from_last_renew(m, requests)))
        .collect();
    let go_index = measured.iter().position(|m| m.imp == Impl::ClientGo);
    let mut stat_rows = |title: &str, all: &[Option<Stats>]| {
        for (what, pick) in [
            ("median", (|x: &Stats| x.median) as fn(&Stats) -> f64),
            ("min", |x: &Stats| x.min),
            ("max", |x: &Stats| x.max),
        ] {
            let _ = write!(s, "| {title}, {what} |");
            for st in all {
                let _ = write!(
                    s,
                    " {} |",
                    st.as_ref().map_or("–".into(), |x| secs(pick(x)))
                );
            }
            if let Some(g) = go_index {
                for (i, m) in measured.iter().enumerate() {
                    if !m.imp.is_rust() {
                        continue;
                    }
                    let cell = match (&all[i], &all[g]) {
                        (Some(a), Some(b)) => ratio(pick(a), pick(b)),
                        _ => "–".into(),
                    };
                    let _ = write!(s, " {cell} |");
                }
            }
            s.push('\n');
        }
    };
    stat_rows("graceful handover (SIGTERM → LEADING)", &graceful);
    stat_rows("crash takeover (SIGKILL → LEADING)", &crash);
    stat_rows("crash takeover from last successful renew", &renew);
    s.push('\n');

    // API load.
    let _ = writeln!(
        s,
        "### API load (idle: one leader, {} followers)\n\n{header}\n{align}",
        ctx.args.candidates.saturating_sub(1)
    );
    let rate_row = |s: &mut String, title: &str, f: fn(&Load) -> f64, fmt: fn(f64) -> String| {
        let _ = write!(s, "| {title} |");
        for l in &loads {
            let _ = write!(s, " {} |", fmt(f(l)));
        }
        if let Some(g) = go_load {
            for (i, m) in measured.iter().enumerate() {
                if m.imp.is_rust() {
                    let _ = write!(s, " {} |", ratio(f(&loads[i]), f(g)));
                }
            }
        }
        s.push('\n');
    };
    let rps = |x: f64| format!("{x:.3}");
    let count = |x: f64| format!("{x:.0}");
    rate_row(
        &mut s,
        "requests/s per candidate (mean)",
        |l| l.per_candidate,
        rps,
    );
    rate_row(&mut s, "requests/s, leader", |l| l.leader, rps);
    rate_row(&mut s, "requests/s, per follower", |l| l.follower_mean, rps);
    rate_row(&mut s, "requests/s, all candidates", |l| l.total, rps);
    let verbs: BTreeSet<&str> = ["get", "update", "create", "list", "watch"]
        .into_iter()
        .chain(
            loads
                .iter()
                .flat_map(|l| l.counts.per_verb.keys().map(String::as_str)),
        )
        .collect();
    for verb in verbs {
        let _ = write!(s, "| `{verb}` requests/s, all candidates (count) |");
        for l in &loads {
            let n = l.counts.per_verb.get(verb).copied().unwrap_or(0);
            let _ = write!(s, " {:.3} ({n}) |", n as f64 / l.window_s);
        }
        if let Some(g) = go_load {
            let theirs = g.counts.per_verb.get(verb).copied().unwrap_or(0) as f64;
            for (i, m) in measured.iter().enumerate() {
                if m.imp.is_rust() {
                    let ours = loads[i].counts.per_verb.get(verb).copied().unwrap_or(0) as f64;
                    let _ = write!(s, " {} |", ratio(ours, theirs));
                }
            }
        }
        s.push('\n');
    }
    rate_row(
        &mut s,
        "watches open during the window",
        |l| l.counts.watches_open as f64,
        count,
    );
    rate_row(&mut s, "window (s)", |l| l.window_s, |x| format!("{x:.1}"));
    s.push('\n');
    for (m, l) in measured.iter().zip(&loads) {
        if !l.stable {
            let _ = writeln!(
                s,
                "Note: leadership of {} changed during its window; its rates mix leader and follower behaviour.\n",
                label(m.imp)
            );
        }
    }

    // Goals.
    let _ = writeln!(s, "### Goals (from the issue)\n");
    let limit = t.lease.as_secs_f64() + 1.0;
    for (i, m) in measured.iter().enumerate() {
        if !m.imp.is_rust() {
            continue;
        }
        let name = label(m.imp);
        if let Some(g) = &graceful[i] {
            let theirs = go_index
                .and_then(|j| graceful[j])
                .map(|x| format!(" (client-go median {})", secs(x.median)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "- {name}: graceful handover < 0.5 s — {} (max {}, median {}){theirs}.",
                verdict(g.max < 0.5),
                secs(g.max),
                secs(g.median),
            );
        }
        if let Some(c) = &crash[i] {
            let _ = writeln!(
                s,
                "- {name}: crash takeover ≤ lease duration + 1 s = {} — {} (max {}, median {}).",
                secs(limit),
                verdict(c.max <= limit),
                secs(c.max),
                secs(c.median),
            );
        }
        if let Some(g) = go_load {
            let l = &loads[i];
            let _ = writeln!(
                s,
                "- {name}: API load per candidate ≤ client-go's — {} ({:.3} vs {:.3} requests/s; leader {:.3} vs \
                 {:.3}, follower {:.3} vs {:.3}).",
                verdict(l.per_candidate <= g.per_candidate),
                l.per_candidate,
                g.per_candidate,
                l.leader,
                g.leader,
                l.follower_mean,
                g.follower_mean,
            );
        }
    }
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// The file header: machine and versions.
pub fn header(ctx: &Context) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let rustc = command_output("rustc", &["--version"]);
    let go = command_output("go", &["env", "GOVERSION"]);
    format!(
        "# Benchmarks\n\n\
         Numbers measured by the `bench` crate (`bench/`), each section regenerated by the command it names. \
         Components run on loopback: etcd + kube-apiserver built by `scripts/build-test-tools`.\n\n\
         - Machine: {cpus} CPUs (`nproc`), {cpu}, Linux {kernel}\n\
         - Versions: {rustc}; Go {go}; Kubernetes {k8s} (kube-apiserver); client-go {client_go}\n\
         - Command: `{command}`\n",
        k8s = ctx.k8s_version,
        client_go = ctx.client_go_version,
        command = ctx.command,
    )
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| format!("{program}: unknown"))
}

/// Writes `header` and replaces (or appends) the `## {title}` section of the markdown file at `path`, keeping the
/// other sections.
/// Prints `section` and writes it as the `## {title}` section of `out` (default: docs/benchmarks.md; `-`: nowhere),
/// keeping the file's header (written by the other benchmarks) as it is.
pub fn publish_section(out: Option<&Path>, title: &str, section: &str) -> Result<()> {
    println!("{section}");
    let out = match out {
        Some(p) if p.as_os_str() == "-" => return Ok(()),
        Some(p) => p.to_path_buf(),
        None => crate::workspace_root().join("docs").join("benchmarks.md"),
    };
    let existing = std::fs::read_to_string(&out).unwrap_or_default();
    let header = match existing.find("\n## ") {
        Some(i) => existing[..i].to_owned(),
        None if !existing.trim().is_empty() => existing.clone(),
        None => "# Benchmarks\n".to_owned(),
    };
    write_section(&out, &header, title, section)?;
    eprintln!("bench: wrote the {title} section of {}", out.display());
    Ok(())
}

pub fn write_section(path: &Path, header: &str, title: &str, section: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let text = merge(&old, header, title, section);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn merge(old: &str, header: &str, title: &str, section: &str) -> String {
    // Split into `## ` sections; whatever precedes the first one is the header, which is replaced.
    let mut sections: Vec<String> = Vec::new();
    let mut in_fence = false;
    for line in old.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && line.starts_with("## ") {
            sections.push(String::new());
        }
        if let Some(current) = sections.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    let heading = format!("## {title}");
    let new = format!("{}\n", section.trim_end());
    match sections
        .iter_mut()
        .find(|s| s.lines().next().map(str::trim_end) == Some(heading.as_str()))
    {
        Some(existing) => *existing = new,
        None => sections.push(new),
    }
    let mut out = format!("{}\n", header.trim_end());
    for s in sections {
        out.push('\n');
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

/// Now as `YYYY-MM-DD HH:MM`.
pub fn utc_now() -> String {
    let secs = crate::candidate::wall_us() / 1_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(stats(&[]), None);
        let s = stats(&[3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
    }

    #[test]
    fn replaces_only_its_section() {
        let old = "# Old header\n\n## Other\n\nkeep me\n\n## Leader election\n\nold numbers\n\n## Later\n\nkeep too\n";
        let new = merge(
            old,
            "# Benchmarks\n",
            "Leader election",
            "## Leader election\n\nnew numbers\n",
        );
        assert_eq!(
            new,
            "# Benchmarks\n\n## Other\n\nkeep me\n\n## Leader election\n\nnew numbers\n\n## Later\n\nkeep too\n"
        );
        let fresh = merge(
            "",
            "# Benchmarks\n",
            "Leader election",
            "## Leader election\n\nx\n",
        );
        assert_eq!(fresh, "# Benchmarks\n\n## Leader election\n\nx\n");
    }
}
