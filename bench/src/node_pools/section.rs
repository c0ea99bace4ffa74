//! The `## Node pools: provisioning and consolidation` section: one column per side, the ours ÷ Karpenter ratios,
//! the per-side details, and the bind-time CDF plot written beside the markdown file.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Args, Impl, Measured, SIZES, Snapshot, split};
use crate::report;

fn types(s: &Snapshot) -> String {
    s.instance_types
        .iter()
        .map(|(k, n)| format!("{n}× `{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CDF of (a)'s bind times per side, written beside the markdown file as `benchmarks/node-pools-bound.svg`;
/// its file name, or `None` when nothing is written (`--out -`).
pub(super) fn bind_plot(args: &Args, rows: &[Measured]) -> Result<Option<&'static str>> {
    const NAME: &str = "node-pools-bound.svg";
    let out = match &args.out {
        Some(p) if p.as_os_str() == "-" => return Ok(None),
        Some(p) => p.clone(),
        None => crate::workspace_root().join("docs").join("benchmarks.md"),
    };
    let series: Vec<(String, Vec<f64>)> = rows
        .iter()
        .map(|r| (r.which.label().to_owned(), r.bind_times.clone()))
        .collect();
    let svg = crate::ccm_report::cdf_svg(
        &format!("{} pending Pods: fraction bound to a Node", args.pods),
        &series,
    );
    let dir = out.parent().unwrap_or(Path::new(".")).join("benchmarks");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(NAME);
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(Some(NAME))
}

/// Ours ÷ Karpenter's, per measure (below 1: ours is less), when both sides ran.
fn ratios(rows: &[Measured]) -> String {
    let side = |which| rows.iter().find(|r| r.which == which);
    let (Some(ours), Some(theirs)) = (side(Impl::Ours), side(Impl::Karpenter)) else {
        return String::new();
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}×", a / b)
        } else {
            "–".to_owned()
        }
    };
    let measures: [(&str, f64, f64); 8] = [
        (
            "(a) time until all Pods are bound",
            ours.scheduled.seconds,
            theirs.scheduled.seconds,
        ),
        (
            "(a) price when all are bound",
            ours.scheduled.price_per_hour,
            theirs.scheduled.price_per_hour,
        ),
        (
            "(a) price once settled",
            ours.up_settled.price_per_hour,
            theirs.up_settled.price_per_hour,
        ),
        (
            "(b) price left after the scale-down",
            ours.down_settled.price_per_hour,
            theirs.down_settled.price_per_hour,
        ),
        (
            "(b) time to settle",
            ours.down_settled.seconds,
            theirs.down_settled.seconds,
        ),
        (
            "(c) apiserver requests, whole run",
            ours.requests as f64,
            theirs.requests as f64,
        ),
        ("(c) CPU seconds", ours.cpu_seconds, theirs.cpu_seconds),
        ("(c) peak RSS", ours.peak_rss_mib, theirs.peak_rss_mib),
    ];
    let mut s = String::from("\n| ours ÷ Karpenter | ratio |\n|---|---:|\n");
    for (name, a, b) in measures {
        s.push_str(&format!("| {name} | {} |\n", ratio(a, b)));
    }
    s
}

pub(super) fn section(args: &Args, rows: &[Measured], offerings: usize) -> String {
    let per_size = split(args.pods, SIZES.len());
    let workload: Vec<String> = SIZES
        .iter()
        .zip(&per_size)
        .map(|((_, cpu, mem), n)| format!("{n}× {cpu}/{mem}"))
        .collect();
    let mut s = format!(
        "## Node pools: provisioning and consolidation\n\n`{}` — finished {} UTC.\n\n\
         Each side on a fresh control plane (etcd, kube-apiserver with an audit log, kube-scheduler, \
         kube-controller-manager for Deployments, kwok as the kubelets). Workload: {} pending Pods as Deployments \
         ({}); then every Deployment scaled to {} %. Both sides offered the same {} instance-type offerings \
         (Karpenter's kwok amd64/linux types × 4 zones × on-demand/spot; prices from its `instance_types.json`). \
         Karpenter: NodePool `WhenEmptyOrUnderutilized`, `consolidateAfter: {}`, budget `{}`, feature gates {}. \"Settled\": the \
         Node set unchanged for {:?} and none being deleted, timed to its last change; everything polled every 0.5 s. \
         Requests: the audit log's requests whose User-Agent is the autoscaler's (watches counted once).\n\n\
         | | {} |\n|---|{}\n",
        crate::command_line(),
        report::utc_now(),
        args.pods,
        workload.join(", "),
        args.scale_to,
        offerings,
        args.consolidate_after,
        args.karpenter_budget,
        args.karpenter_feature_gates
            .as_deref()
            .map_or("default".to_owned(), |g| format!("`{g}`")),
        args.quiet,
        rows.iter()
            .map(|r| format!("{} {}", r.which.label(), r.version))
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(rows.len()),
    );
    if !rows.iter().any(|r| r.which == Impl::Ours) {
        // Before the table's rows would break it: say it in the intro instead.
        let at = s.find("\n\n| |").unwrap_or(s.len());
        s.insert_str(at, " Karpenter alone this run (`--impls karpenter`).");
    }
    let mut row = |name: &str, f: &dyn Fn(&Measured) -> String| {
        s.push_str(&format!(
            "| {name} | {} |\n",
            rows.iter().map(f).collect::<Vec<_>>().join(" | ")
        ));
    };
    row("(a) all Pods bound after", &|r| {
        format!("{:.1} s", r.scheduled.seconds)
    });
    row("(a) Nodes then / launched until then", &|r| {
        format!("{} / {}", r.scheduled.nodes, r.launched)
    });
    row("(a) price then", &|r| {
        format!("${:.4}/h", r.scheduled.price_per_hour)
    });
    row("(a) Nodes settled after", &|r| {
        format!("{:.1} s", r.up_settled.seconds)
    });
    row("(a) Nodes / price settled", &|r| {
        format!(
            "{} / ${:.4}/h",
            r.up_settled.nodes, r.up_settled.price_per_hour
        )
    });
    row("(b) Nodes settled after", &|r| {
        format!("{:.1} s", r.down_settled.seconds)
    });
    row("(b) Nodes / price left", &|r| {
        format!(
            "{} / ${:.4}/h",
            r.down_settled.nodes, r.down_settled.price_per_hour
        )
    });
    row("(b) Pods left / evicted", &|r| {
        format!("{} / {}", r.pods_left, r.evictions)
    });
    row("(c) apiserver requests: (a) / (b) / whole run", &|r| {
        format!("{} / {} / {}", r.requests_up, r.requests_down, r.requests)
    });
    row("(c) CPU seconds / peak RSS", &|r| {
        format!("{:.1} s / {:.1} MiB", r.cpu_seconds, r.peak_rss_mib)
    });
    s.push_str(&ratios(rows));
    for r in rows {
        s.push_str(&format!(
            "\n{}: instance types when all Pods were bound: {}; after (a) settled: {}; after (b): {}. \
             Live Nodes after the scale-down (s: Nodes, $/h): {}. Requests by kind: {}.\n",
            r.which.label(),
            types(&r.scheduled),
            types(&r.up_settled),
            types(&r.down_settled),
            r.down_settled
                .changes
                .iter()
                .map(|(t, n, p)| format!("{t:.1}: {n}, {p:.4}"))
                .collect::<Vec<_>>()
                .join("; "),
            r.requests_per
                .iter()
                .take(12)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let unpriced = r.scheduled.unpriced + r.up_settled.unpriced + r.down_settled.unpriced;
        if unpriced > 0 {
            s.push_str(&format!(
                "({unpriced} Node observations had no matching offering and no price.)\n"
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    #[test]
    fn renders_one_column_per_side() {
        let args = Args {
            pods: 500,
            scale_to: 30,
            quiet: Duration::from_secs(60),
            timeout: Duration::from_secs(900),
            impls: vec![Impl::Karpenter],
            karpenter_budget: "100%".into(),
            consolidate_after: "10s".into(),
            karpenter_feature_gates: None,
            karpenter_dir: None,
            keep: false,
            out: None,
        };
        let snap = |seconds, nodes, price_per_hour| Snapshot {
            seconds,
            nodes,
            price_per_hour,
            instance_types: BTreeMap::from([("c-4x-amd64-linux/spot".to_owned(), nodes)]),
            unpriced: 0,
            changes: vec![(seconds, nodes, price_per_hour)],
        };
        let m = Measured {
            which: Impl::Karpenter,
            version: "v1.15.0".into(),
            scheduled: snap(28.9, 4, 9.1216),
            launched: 4,
            bind_times: vec![10.0, 28.9],
            up_settled: snap(28.9, 4, 9.1216),
            down_settled: snap(72.3, 1, 3.6486),
            pods_left: 152,
            evictions: 94,
            requests: 446,
            requests_per: vec![("create events".into(), 194)],
            requests_up: 130,
            requests_down: 308,
            cpu_seconds: 7.0,
            peak_rss_mib: 113.4,
            window_us: (0, 0, 0),
            work: PathBuf::new(),
        };
        let s = section(&args, std::slice::from_ref(&m), 288);
        assert!(
            s.contains("| | Karpenter (kwok provider) v1.15.0 |\n|---|---:|\n"),
            "{s}"
        );
        assert!(s.contains("| (a) all Pods bound after | 28.9 s |\n"), "{s}");
        assert!(
            s.contains("| (b) Pods left / evicted | 152 / 94 |\n"),
            "{s}"
        );
        assert!(
            s.contains("Karpenter alone this run (`--impls karpenter`).\n\n| |"),
            "{s}"
        );
        assert!(s.contains("(s: Nodes, $/h): 72.3: 1, 3.6486."), "{s}");
        assert!(!s.contains("ours ÷ Karpenter"), "no ratios with one side");
        // Both sides: one column each and the ratios, ours over Karpenter's.
        let mut ours = m.clone();
        ours.which = Impl::Ours;
        ours.scheduled.seconds = 14.45;
        let both = section(&args, &[m, ours], 288);
        assert!(
            both.contains("| (a) time until all Pods are bound | 0.50× |"),
            "{both}"
        );
        assert!(both.contains("| (c) peak RSS | 1.00× |"), "{both}");
    }
}
