//! Aggregates of the measured rounds, ratios, formatting, and the tables every scenario shares.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::ccm::{AuditCounts, Common, Side};
use crate::ccm_scenarios::Timed;

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub(crate) fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

pub(crate) fn opt_secs(s: Option<f64>) -> String {
    s.map_or_else(|| "–".into(), secs)
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// Per side, over rounds: median total, pooled latencies (sorted), rounds complete.
pub(crate) struct Agg {
    pub(crate) total: Option<f64>,
    /// Fastest and slowest round (all rounds complete).
    pub(crate) total_range: Option<(f64, f64)>,
    pub(crate) latencies: Vec<f64>,
    pub(crate) done: usize,
    pub(crate) of: usize,
    /// Objects per round.
    pub(crate) per_round: usize,
    pub(crate) fanout: Option<f64>,
    pub(crate) fanout_done: usize,
    pub(crate) requests: Option<f64>,
    pub(crate) verbs: BTreeMap<String, u64>,
    /// CPU seconds of the CCM per object.
    pub(crate) cpu_ms_per_object: Option<f64>,
    /// Median creation burst.
    pub(crate) burst: Option<f64>,
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    crate::report::stats(&v).map(|s| s.median)
}

pub(crate) fn aggregate(
    side: Side,
    measured: &[Timed],
    audit: Option<&AuditCounts>,
) -> Option<Agg> {
    let runs: Vec<&Timed> = measured.iter().filter(|m| m.side == side).collect();
    if runs.is_empty() {
        return None;
    }
    let all_done = runs.iter().all(|m| m.total.is_some());
    let mut latencies: Vec<f64> = runs
        .iter()
        .flat_map(|m| m.latencies.iter().copied())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut verbs = BTreeMap::new();
    let requests = audit.filter(|_| side != Side::Ceiling).map(|a| {
        let mut total = 0u64;
        let mut objects = 0usize;
        for m in &runs {
            let (n, per) = a.count(&side.user(), m.window.start_us, m.window.end_us);
            total += n;
            objects += m.of;
            for (k, v) in per {
                *verbs.entry(k).or_default() += v;
            }
        }
        total as f64 / objects.max(1) as f64
    });
    let totals: Vec<f64> = runs
        .iter()
        .filter_map(|m| m.total)
        .map(|d| d.as_secs_f64())
        .collect();
    let total_range = all_done
        .then(|| {
            Some((
                totals.iter().copied().reduce(f64::min)?,
                totals.iter().copied().reduce(f64::max)?,
            ))
        })
        .flatten();
    Some(Agg {
        total_range,
        total: all_done
            .then(|| {
                median(
                    runs.iter()
                        .filter_map(|m| m.total)
                        .map(|d| d.as_secs_f64())
                        .collect(),
                )
            })
            .flatten(),
        latencies,
        done: runs.iter().map(|m| m.done).sum(),
        of: runs.iter().map(|m| m.of).sum(),
        per_round: runs[0].of,
        fanout: runs
            .iter()
            .all(|m| m.fanout.is_some())
            .then(|| {
                median(
                    runs.iter()
                        .filter_map(|m| m.fanout)
                        .map(|d| d.as_secs_f64())
                        .collect(),
                )
            })
            .flatten(),
        fanout_done: runs.iter().map(|m| m.fanout_done).sum(),
        requests,
        verbs,
        burst: median(
            runs.iter()
                .filter_map(|m| m.burst)
                .map(|d| d.as_secs_f64())
                .collect(),
        ),
        cpu_ms_per_object: runs
            .iter()
            .map(|m| m.cpu_s)
            .sum::<Option<f64>>()
            .map(|cpu| cpu * 1000.0 / runs.iter().map(|m| m.of).sum::<usize>().max(1) as f64),
    })
}

/// Whether ours is at most both of upstream's (all known).
pub(crate) fn at_most(ours: Option<f64>, a: Option<f64>, b: Option<f64>) -> bool {
    match (ours, a, b) {
        (Some(o), Some(a), Some(b)) => o <= a && o <= b,
        _ => false,
    }
}

pub(crate) fn opt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

/// Half the range as a percentage of its midpoint.
pub(crate) fn spread(lo: f64, hi: f64) -> f64 {
    let mid = (lo + hi) / 2.0;
    if mid > 0.0 {
        (hi - lo) / 2.0 / mid * 100.0
    } else {
        0.0
    }
}

/// Speed-up of ours over `theirs` (their time / our time).
pub(crate) fn speedup(ours: Option<f64>, theirs: Option<f64>) -> Option<f64> {
    match (ours, theirs) {
        (Some(o), Some(t)) if o > 0.0 => Some(t / o),
        _ => None,
    }
}

pub(crate) fn x(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}×"))
}

pub(crate) fn run_line(common: &Common, k8s: &str) -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "`{}` — finished {} UTC on {cpus} CPUs, load average {load} at the end (the machine is shared with other \
         builds: expect noise; compare ratios). Kubernetes {k8s}, {} ms per cloud call, {} round(s), \
         `--kube-api-qps={}` `--kube-api-burst={}`, benchmark bursts with {} requests in flight.",
        crate::command_line(),
        utc_now(),
        common.latency_ms,
        common.rounds,
        common.kube_api_qps,
        common.kube_api_burst,
        common.concurrency,
    )
}

pub(crate) fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn timed_table(
    s: &mut String,
    common: &Common,
    sides: &[(Side, Agg)],
    what: &str,
    per: &str,
    with_fanout: bool,
) {
    let _ = write!(s, "| |");
    for (side, _) in sides {
        let _ = write!(s, " {} |", side.label(common));
    }
    let _ = write!(s, "\n|---|");
    for _ in sides {
        s.push_str("---:|");
    }
    s.push('\n');
    let row = |s: &mut String, title: &str, f: &dyn Fn(&Agg) -> String| {
        let _ = write!(s, "| {title} |");
        for (_, a) in sides {
            let _ = write!(s, " {} |", f(a));
        }
        s.push('\n');
    };
    row(
        s,
        &format!("time until all {what} (median of rounds)"),
        &|a: &Agg| opt_secs(a.total),
    );
    row(
        s,
        &format!("time until all {what}, fastest – slowest round"),
        &|a: &Agg| {
            a.total_range.map_or("–".into(), |(lo, hi)| {
                format!("{} – {} (±{:.0}%)", secs(lo), secs(hi), spread(lo, hi))
            })
        },
    );
    row(
        s,
        "benchmark's creation burst, first → last create sent",
        &|a: &Agg| opt_secs(a.burst),
    );
    row(s, &format!("{per}s per second"), &|a: &Agg| {
        a.total
            .map_or("–".into(), |t| format!("{:.0}", a.per_round as f64 / t))
    });
    row(s, &format!("latency per {per}, p50"), &|a: &Agg| {
        opt_secs(percentile(&a.latencies, 50.0))
    });
    row(s, &format!("latency per {per}, p99"), &|a: &Agg| {
        opt_secs(percentile(&a.latencies, 99.0))
    });
    row(s, &format!("latency per {per}, max"), &|a: &Agg| {
        opt_secs(a.latencies.last().copied())
    });
    row(
        s,
        &format!("API requests per {per} (audit log)"),
        &|a: &Agg| a.requests.map_or("–".into(), |r| format!("{r:.2}")),
    );
    row(
        s,
        &format!("CCM CPU time per {per} (/proc/<pid>/stat)"),
        &|a: &Agg| {
            a.cpu_ms_per_object
                .map_or("–".into(), |v| format!("{v:.2} ms"))
        },
    );
    row(s, &format!("{per}s done / created"), &|a: &Agg| {
        format!("{}/{}", a.done, a.of)
    });
    if with_fanout {
        row(
            s,
            "node added → in every LB (median of rounds)",
            &|a: &Agg| opt_secs(a.fanout),
        );
        row(s, "LBs updated with the new node", &|a: &Agg| {
            format!("{}/{}", a.fanout_done, a.of)
        });
    }
    s.push('\n');
}

pub(crate) fn verbs_table(s: &mut String, common: &Common, sides: &[(Side, Agg)], objects: &str) {
    let with: Vec<&(Side, Agg)> = sides.iter().filter(|(_, a)| a.requests.is_some()).collect();
    if with.is_empty() {
        return;
    }
    let keys: std::collections::BTreeSet<&String> =
        with.iter().flat_map(|(_, a)| a.verbs.keys()).collect();
    let _ = write!(
        s,
        "Requests by verb and resource, all rounds ({objects}):\n\n| |"
    );
    for (side, _) in &with {
        let _ = write!(s, " {} |", side.label(common));
    }
    let _ = write!(s, "\n|---|");
    for _ in &with {
        s.push_str("---:|");
    }
    s.push('\n');
    for k in keys {
        let _ = write!(s, "| `{k}` |");
        for (_, a) in &with {
            let _ = write!(s, " {} |", a.verbs.get(k).copied().unwrap_or(0));
        }
        s.push('\n');
    }
    s.push('\n');
}
