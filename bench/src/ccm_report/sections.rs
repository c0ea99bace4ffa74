//! One report per CCM scenario: node init, load balancers, memory.

use std::fmt::Write as _;

use crate::ccm::{AuditCounts, Side};
use crate::ccm_scenarios::{LoadBalancersArgs, MemoryArgs, MemorySize, NodeInitArgs, Rss, Timed};

use super::stats::*;
use super::svg::*;
use super::*;

pub fn node_init(
    args: &NodeInitArgs,
    measured: &[Timed],
    audit: &AuditCounts,
    k8s: &str,
) -> Report {
    let c = &args.common;
    let sides: Vec<(Side, Agg)> = [Side::Rust, Side::GoDefault, Side::GoEqual, Side::Ceiling]
        .into_iter()
        .filter_map(|side| Some((side, aggregate(side, measured, Some(audit))?)))
        .collect();
    let get = |side: Side| sides.iter().find(|(s, _)| *s == side).map(|(_, a)| a);
    let mut s = format!(
        "{}\n\n{} Nodes with the `node.cloudprovider.kubernetes.io/uninitialized` taint created in one burst per side \
         (a fresh set each time, `--controllers=cloud-node`); a Node counts as initialized when the benchmark's \
         watch sees it without the taint. The apiserver ceiling is the benchmark itself doing, per Node, the \
         create plus the two writes a CCM needs (merge patch: providerID, the six topology/instance-type labels, \
         taint removed; status patch: addresses) with as many Nodes in flight as the CCMs have workers \
         ({} — the ceiling at equal workers), no cloud calls.\n\n",
        run_line(c, k8s),
        args.nodes,
        c.workers
    );
    timed_table(&mut s, c, &sides, "initialized", "node", false);
    let ours = get(Side::Rust).and_then(|a| a.total);
    let vs_default = speedup(ours, get(Side::GoDefault).and_then(|a| a.total));
    let vs_equal = speedup(ours, get(Side::GoEqual).and_then(|a| a.total));
    let of_ceiling = speedup(ours, get(Side::Ceiling).and_then(|a| a.total));
    let requests = |side: Side| get(side).and_then(|a| a.requests);
    let _ = writeln!(
        s,
        "Goals: node init ≥ 90% of the apiserver ceiling at equal workers — {} ({}); ≥ 5× upstream's default — {} \
         ({}; at equal workers {}); API requests per Node ≤ upstream's — {} (ours {}, upstream default {}, equal \
         workers {}).\n",
        verdict(of_ceiling.is_some_and(|v| v >= 0.9)),
        of_ceiling.map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
        verdict(vs_default.is_some_and(|v| v >= 5.0)),
        x(vs_default),
        x(vs_equal),
        verdict(at_most(
            requests(Side::Rust),
            requests(Side::GoDefault),
            requests(Side::GoEqual)
        )),
        opt_ratio(requests(Side::Rust)),
        opt_ratio(requests(Side::GoDefault)),
        opt_ratio(requests(Side::GoEqual)),
    );
    verbs_table(
        &mut s,
        c,
        &sides,
        "the bursts of all rounds, canaries excluded",
    );
    let _ = writeln!(
        s,
        "![node init latency CDF](benchmarks/ccm-node-init-cdf.svg)\n"
    );
    let plot = cdf_svg(
        &format!(
            "Node init: Node created → taint removed ({} Nodes)",
            args.nodes
        ),
        &sides
            .iter()
            .map(|(side, a)| (side.label(c), a.latencies.clone()))
            .collect::<Vec<_>>(),
    );
    Report {
        title: "Node init",
        body: s,
        plots: vec![("ccm-node-init-cdf.svg".into(), plot)],
    }
}

pub fn load_balancers(
    args: &LoadBalancersArgs,
    measured: &[Timed],
    audit: &AuditCounts,
    k8s: &str,
) -> Report {
    let c = &args.common;
    let sides: Vec<(Side, Agg)> = [Side::Rust, Side::GoDefault, Side::GoEqual]
        .into_iter()
        .filter_map(|side| Some((side, aggregate(side, measured, Some(audit))?)))
        .collect();
    let get = |side: Side| sides.iter().find(|(s, _)| *s == side).map(|(_, a)| a);
    let setup = if args.during_creation {
        "created in one burst per side while its CCM runs (`--controllers=service`, `--during-creation`: the \
         clock starts at each Service's creation, so the total includes the benchmark's own burst)"
    } else {
        "created before each side's CCM starts (`--controllers=service`); the clock starts when the CCM process \
         is spawned, so the times are the controller's own: start-up, initial list, one ensure per Service"
    };
    let mut s = format!(
        "{}\n\n{} Nodes, then {} `LoadBalancer` Services (one TCP port, `allocateLoadBalancerNodePorts: false`) \
         {setup}; a Service counts when the watch sees \
         `status.loadBalancer.ingress`. Then one Node is added; the fan-out time runs from its creation until \
         every one of the {} load balancers got a host update with it (upstream: our Go main prints each \
         `UpdateLoadBalancer` with its host count; ours: provider-fake's call trace, read from the CCM's output \
         as it happens).\n\n",
        run_line(c, k8s),
        args.nodes,
        args.services,
        args.services
    );
    timed_table(&mut s, c, &sides, "have an address", "service", true);
    let ours = get(Side::Rust);
    let vs_default = speedup(
        ours.and_then(|a| a.total),
        get(Side::GoDefault).and_then(|a| a.total),
    );
    let vs_equal = speedup(
        ours.and_then(|a| a.total),
        get(Side::GoEqual).and_then(|a| a.total),
    );
    let fanout = ours.and_then(|a| a.fanout);
    let requests = |side: Side| get(side).and_then(|a| a.requests);
    let _ = writeln!(
        s,
        "Goals: LB convergence ≥ 3× upstream's default — {} ({}); ≥ 1× upstream at equal workers — {} ({}); \
         node-change fan-out to {} LBs ≤ 2 s — {} ({}; upstream default {}, equal workers {}); API requests per \
         Service ≤ upstream's — {} (ours {}, upstream default {}, equal workers {}).\n",
        verdict(vs_default.is_some_and(|v| v >= 3.0)),
        x(vs_default),
        verdict(vs_equal.is_some_and(|v| v >= 1.0)),
        x(vs_equal),
        args.services,
        verdict(fanout.is_some_and(|f| f <= 2.0)),
        opt_secs(fanout),
        opt_secs(get(Side::GoDefault).and_then(|a| a.fanout)),
        opt_secs(get(Side::GoEqual).and_then(|a| a.fanout)),
        verdict(at_most(
            requests(Side::Rust),
            requests(Side::GoDefault),
            requests(Side::GoEqual)
        )),
        opt_ratio(requests(Side::Rust)),
        opt_ratio(requests(Side::GoDefault)),
        opt_ratio(requests(Side::GoEqual)),
    );
    verbs_table(&mut s, c, &sides, "creation burst and fan-out");
    let _ = writeln!(
        s,
        "![load balancer latency CDF](benchmarks/ccm-load-balancers-cdf.svg)\n"
    );
    let plot = cdf_svg(
        &format!(
            "Load balancers: {} → address ({} Services)",
            if args.during_creation {
                "Service created"
            } else {
                "CCM started"
            },
            args.services
        ),
        &sides
            .iter()
            .map(|(side, a)| (side.label(c), a.latencies.clone()))
            .collect::<Vec<_>>(),
    );
    Report {
        title: "Load balancers",
        body: s,
        plots: vec![("ccm-load-balancers-cdf.svg".into(), plot)],
    }
}

pub fn memory(args: &MemoryArgs, sizes: &[MemorySize], k8s: &str) -> Report {
    let c = &args.common;
    let mut s = format!(
        "{}\n\nFor each size N, a fresh control plane holds N Nodes as a kubelet and the CCM leave them (Ready and \
         four other conditions, addresses, capacity, allocatable, node info, ten images, kubeadm's annotations, \
         initialized, with a provider ID) and N headless ClusterIP Services, all created before each CCM starts with \
         `--controllers={}` (1 worker each); after {:?} the benchmark reads `VmHWM` (peak RSS) and `VmRSS` of the \
         process from `/proc/<pid>/status`. Services are ClusterIP so the service controller caches all of them \
         without creating thousands of load balancers first.\n\n\
         | Nodes + Services | ours: peak RSS (VmHWM) | ours: RSS at the end | upstream: peak RSS | upstream: RSS at the end | ours / upstream (peak) | rounds |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        run_line(c, k8s),
        args.controllers,
        args.settle
    );
    let mib = |k: Option<f64>| k.map_or("–".into(), |k| format!("{:.1} MiB", k / 1024.0));
    let mut verdicts = Vec::new();
    for size in sizes {
        let of = |side: Side, f: &dyn Fn(&Rss) -> u64| {
            median(
                size.measured
                    .iter()
                    .filter(|m| m.side == side)
                    .map(|m| f(m) as f64)
                    .collect(),
            )
        };
        let (op, oc) = (
            of(Side::Rust, &|m| m.peak_kib),
            of(Side::Rust, &|m| m.current_kib),
        );
        let (tp, tc) = (
            of(Side::GoDefault, &|m| m.peak_kib),
            of(Side::GoDefault, &|m| m.current_kib),
        );
        let ratio = op.zip(tp).filter(|(_, t)| *t > 0.0).map(|(o, t)| o / t);
        let rounds = size
            .measured
            .iter()
            .filter(|m| m.side == Side::Rust)
            .count();
        let _ = writeln!(
            s,
            "| {} + {} | {} | {} | {} | {} | {} | {rounds} |",
            size.size,
            size.size,
            mib(op),
            mib(oc),
            mib(tp),
            mib(tc),
            ratio.map_or("–".into(), |r| format!("{r:.2}")),
        );
        verdicts.push(format!(
            "{} + {}: {} ({})",
            size.size,
            size.size,
            verdict(ratio.is_some_and(|r| r <= 1.0 / 3.0)),
            ratio.map_or("–".into(), |r| format!("{r:.2}"))
        ));
    }
    let _ = writeln!(
        s,
        "\nGoal: RSS ≤ 1/3 of upstream's — {}.\n",
        verdicts.join("; ")
    );
    // How each fills its caches: list and watch requests per resource (first round of each size).
    let _ = writeln!(
        s,
        "Informer traffic in the first round (list and watch requests per resource, audit log):\n"
    );
    let _ = write!(s, "| |");
    for size in sizes {
        let _ = write!(s, " ours, {0} + {0} | upstream, {0} + {0} |", size.size);
    }
    let _ = write!(s, "\n|---|");
    for _ in sizes {
        s.push_str("---:|---:|");
    }
    s.push('\n');
    let first = |size: &MemorySize, side: Side| {
        size.measured
            .iter()
            .find(|m| m.side == side)
            .map(|m| {
                size.audit
                    .count(&side.user(), m.window.start_us, m.window.end_us)
                    .1
            })
            .unwrap_or_default()
    };
    let counts: Vec<_> = sizes
        .iter()
        .map(|size| (first(size, Side::Rust), first(size, Side::GoDefault)))
        .collect();
    let keys: std::collections::BTreeSet<String> = counts
        .iter()
        .flat_map(|(o, t)| o.keys().chain(t.keys()).cloned().collect::<Vec<_>>())
        .filter(|k| k.starts_with("list ") || k.starts_with("watch "))
        .collect();
    for k in keys {
        let _ = write!(s, "| `{k}` |");
        for (o, t) in &counts {
            let _ = write!(
                s,
                " {} | {} |",
                o.get(&k).copied().unwrap_or(0),
                t.get(&k).copied().unwrap_or(0)
            );
        }
        s.push('\n');
    }
    s.push('\n');
    Report {
        title: "Memory",
        body: s,
        plots: Vec::new(),
    }
}
