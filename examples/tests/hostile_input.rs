//! Hostile and careless input to every bundled binary (issue 21): out-of-range flags and configs fail at startup with
//! an error naming the flag or field, never a panic (exit code 101) or a backtrace.

use std::process::Output;

const CCM: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");
const NODE_POOL: &str = env!("CARGO_BIN_EXE_node-pool-controller");
const LEADER_ELECTION: &str = env!("CARGO_BIN_EXE_leader-election");
const VIRTUAL_NODE: &str = env!("CARGO_BIN_EXE_virtual-node");

/// Runs `bin` with `args` (and `RUST_BACKTRACE=1`, so a panic or an anyhow error would show a backtrace).
fn run(bin: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "warn")
        // Never reach a cluster by accident: no kubeconfig lookup succeeds.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

/// Asserts that `bin args` exits non-zero without panicking, its stderr naming `what`; returns stderr.
fn rejected(bin: &str, args: &[&str], what: &str) -> String {
    let out = run(bin, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let name = bin.rsplit('/').next().unwrap_or(bin);
    assert_ne!(
        out.status.code(),
        Some(101),
        "{name} {args:?} panicked: {stderr}"
    );
    assert!(
        !out.status.success(),
        "{name} {args:?} should fail: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{name} {args:?}: {stderr}");
    assert!(
        stderr.contains(what),
        "{name} {args:?}: expected {what:?} in: {stderr}"
    );
    stderr
}

/// Regression (issue 21, finding 2): `--kube-api-qps=1e-10` panicked in governor, `1e-20` in
/// `Duration::from_secs_f64`, huge leader-election durations overflowed an `Instant`.
#[test]
fn out_of_range_flags_name_the_flag_and_never_panic() {
    let cases: &[(&str, &str)] = &[
        ("--kube-api-qps=1e-10", "--kube-api-qps"),
        ("--kube-api-qps=1e-20", "--kube-api-qps"),
        ("--kube-api-burst=4294967295", "--kube-api-burst"),
        (
            "--node-monitor-period=100000000years",
            "--node-monitor-period",
        ),
        (
            "--leader-elect-lease-duration=100000000years",
            "--leader-elect-lease-duration",
        ),
    ];
    for bin in [CCM, NODE_POOL] {
        for (arg, flag) in cases {
            rejected(bin, &["--cloud-provider=fake", arg], flag);
        }
        rejected(
            bin,
            &[
                "--cloud-provider=fake",
                "--leader-elect-lease-duration=20h",
                "--leader-elect-renew-deadline=100000000years",
            ],
            "--leader-elect-renew-deadline",
        );
        rejected(
            bin,
            &[
                "--cloud-provider=fake",
                "--leader-elect-lease-duration=20h",
                "--leader-elect-renew-deadline=10h",
                "--leader-elect-retry-period=100000000years",
            ],
            "--leader-elect-retry-period",
        );
    }
    for (args, flag) in [
        (
            &["--leader-elect-lease-duration=100000000years"][..],
            "--leader-elect-lease-duration",
        ),
        (
            &[
                "--leader-elect-lease-duration=20h",
                "--leader-elect-renew-deadline=100000000years",
            ][..],
            "--leader-elect-renew-deadline",
        ),
        (
            &["--leader-elect-retry-period=100000000years"][..],
            "--leader-elect-retry-period",
        ),
    ] {
        rejected(LEADER_ELECTION, args, flag);
    }
    for (arg, flag) in [
        (
            "--node-lease-duration-seconds=18446744073709551615",
            "--node-lease-duration-seconds",
        ),
        (
            "--node-lease-duration-seconds=0",
            "--node-lease-duration-seconds",
        ),
        (
            "--node-status-report-frequency=100000000years",
            "--node-status-report-frequency",
        ),
        ("--pod-sync-workers=0", "--pod-sync-workers"),
    ] {
        rejected(VIRTUAL_NODE, &[arg], flag);
    }
}
