//! The two autoscalers under test, each started against a side's control plane: Karpenter's kwok provider (the
//! anchor) and our node-pool-controller on the same offering.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{Args, Autoscaler, Env, free_port, http_ok, kubectl};
use crate::karpenter_offering;

/// Karpenter's kwok provider, run as a plain process against the control plane (how: docs/benchmarks.md,
/// "Karpenter as the anchor"): its CRDs, a KWOKNodeClass, a NodePool offering the amd64/linux instance types in
/// every zone, on-demand and spot.
pub async fn start_karpenter(env: &Env, args: &Args, dir: &Path) -> Result<Autoscaler> {
    kubectl(
        env,
        &[
            "create".into(),
            "-f".into(),
            dir.join("crds").into_os_string(),
        ],
    )
    .await?;
    kubectl(
        env,
        &[
            "wait".into(),
            "--for=condition=established".into(),
            "--timeout=60s".into(),
            "crd".into(),
            "--all".into(),
        ],
    )
    .await?;
    let pool = env.work.join("karpenter-nodepool.json");
    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass", "metadata": {"name": "default"}},
        {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "default"}, "spec": {
            "template": {"spec": {
                "requirements": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand", "spot"]},
                ],
                "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"},
                "expireAfter": "Never",
            }},
            "limits": {"cpu": "10000"},
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": args.consolidate_after,
                "budgets": [{"nodes": args.karpenter_budget}],
            },
        }},
    ]});
    std::fs::write(&pool, serde_json::to_vec_pretty(&manifest)?).context("writing the NodePool")?;
    kubectl(env, &["create".into(), "-f".into(), pool.into_os_string()]).await?;

    let version = std::fs::read_to_string(dir.join("VERSION"))
        .ok()
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("KARPENTER_VERSION=").map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let metrics_port = free_port()?;
    let health_port = free_port()?;
    let log = env.work.join("karpenter.log");
    let file = std::fs::File::create(&log).context("creating the Karpenter log")?;
    let mut cmd = tokio::process::Command::new(dir.join("bin").join("karpenter-kwok"));
    cmd.env("KUBECONFIG", env.cp.kubeconfig_path())
        .env("DISABLE_LEADER_ELECTION", "true")
        .env("SYSTEM_NAMESPACE", "kube-system")
        .env("METRICS_PORT", metrics_port.to_string())
        .env("HEALTH_PROBE_PORT", health_port.to_string())
        .env("INSTANCE_TYPES_FILE_PATH", dir.join("instance_types.json"))
        .env("LOG_LEVEL", "info");
    if let Some(gates) = &args.karpenter_feature_gates {
        cmd.env("FEATURE_GATES", gates);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(file.try_clone().context("the Karpenter log")?)
        .stderr(file)
        .kill_on_drop(true);
    crate::candidate::die_with_parent(&mut cmd);
    let child = cmd.spawn().context("starting karpenter-kwok")?;
    let pid = child.id().context("karpenter-kwok exited at once")?;
    let mut autoscaler = Autoscaler {
        child,
        pid,
        user_agent_prefix: "karpenter/".to_owned(),
        version,
        log,
    };
    let started = Instant::now();
    loop {
        autoscaler.check_running()?;
        if http_ok(health_port, "/readyz").await {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "Karpenter not ready after 120s; see {}",
                autoscaler.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "bench: node-pools: Karpenter {} ready in {:.1}s (pid {pid})",
        autoscaler.version,
        started.elapsed().as_secs_f64()
    );
    Ok(autoscaler)
}

/// Our NodePool controller against `env`, offered what Karpenter is: the CRD; provider-fake's config with one node
/// group per offering (Karpenter's prices, its Nodes' allocatable) and machine kubelets that register each
/// running instance's Node as a kwok Node; one NodePool naming every group, consolidating as Karpenter's does
/// (`WhenEmptyOrUnderutilized` after `--consolidate-after`, budget `--karpenter-budget`); then
/// `node-pool-controller --controllers=node-pool,cloud-node` (the cloud-node controller initializes the Nodes, as
/// the cloud-controller-manager would) with Karpenter's client limits (200 QPS, burst 300).
pub async fn start_ours(env: &Env, args: &Args) -> Result<Autoscaler> {
    let bin = crate::build::rust_binary("node-pool-controller").await?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.client.clone());
    let crd = <controller_core::node_pool::NodePool as kube::CustomResourceExt>::crd();
    crds.create(&PostParams::default(), &crd)
        .await
        .context("creating the NodePool CRD")?;
    kubectl(
        env,
        &[
            "wait".into(),
            "--for=condition=established".into(),
            "--timeout=60s".into(),
            "crd/nodepools.kube-cloud-rs.dev".into(),
        ],
    )
    .await?;
    let config = env.work.join("fake.yaml");
    let mut text = karpenter_offering::fake_config_yaml(&env.offerings, 500, true);
    text.push_str(
        "kubelets:\n  registerNodes: true\n  intervalMs: 200\n  registerWithTaints: [{key: kube-cloud-rs.dev/unregistered, \
         effect: NoExecute}]\n",
    );
    std::fs::write(&config, text).context("writing the fake cloud config")?;
    let delay = humantime::parse_duration(&args.consolidate_after)
        .with_context(|| format!("--consolidate-after {:?}", args.consolidate_after))?;
    let pool = env.work.join("nodepool.yaml");
    let mut manifest = karpenter_offering::node_pool_yaml("default", &env.offerings, 10_000);
    manifest.push_str(&format!(
        "  emptyNodeDelaySeconds: {}\n  consolidationPolicy: WhenEmptyOrUnderutilized\n  disruptionBudgets: \
         [{{nodes: \"{}\"}}]\n",
        delay.as_secs(),
        args.karpenter_budget
    ));
    std::fs::write(&pool, manifest).context("writing the NodePool")?;
    kubectl(env, &["create".into(), "-f".into(), pool.into_os_string()]).await?;

    let log = env.work.join("node-pool-controller.log");
    let file = std::fs::File::create(&log).context("creating the controller log")?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args([
        "--cloud-provider=fake".to_owned(),
        format!("--cloud-config={}", config.display()),
        format!("--kubeconfig={}", env.cp.kubeconfig_path().display()),
        "--secure-port=0".to_owned(),
        "--leader-elect=false".to_owned(),
        "--controllers=node-pool,cloud-node".to_owned(),
        "--kube-api-qps=200".to_owned(),
        "--kube-api-burst=300".to_owned(),
    ])
    .env("RUST_LOG", "info")
    .stdin(std::process::Stdio::null())
    .stdout(file.try_clone().context("the controller log")?)
    .stderr(file)
    .kill_on_drop(true);
    crate::candidate::die_with_parent(&mut cmd);
    let child = cmd.spawn().context("starting node-pool-controller")?;
    let pid = child.id().context("node-pool-controller exited at once")?;
    let mut autoscaler = Autoscaler {
        child,
        pid,
        user_agent_prefix: "node-pool-controller/".to_owned(),
        version: format!("{} (this repository)", env!("CARGO_PKG_VERSION")),
        log,
    };
    // Ready once it has looked at the pool (its status says Valid).
    let pools: Api<controller_core::node_pool::NodePool> = Api::all(env.client.clone());
    let started = Instant::now();
    loop {
        autoscaler.check_running()?;
        let valid = pools
            .get("default")
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Valid" && c.status == "True")
            });
        if valid {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "node-pool-controller did not report the pool Valid within 120s; see {}",
                autoscaler.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "bench: node-pools: node-pool-controller ready in {:.1}s (pid {pid})",
        started.elapsed().as_secs_f64()
    );
    Ok(autoscaler)
}
