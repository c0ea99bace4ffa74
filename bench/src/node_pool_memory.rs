//! `bench node-pool-memory`: the node-pool-controller's memory with thousands of Pods in its shared Pod cache.
//!
//! One control plane; the controller runs once before any Pod exists (its base) and once with N Pods as a
//! Deployment, the scheduler and a kubelet leave them (bound, Running, with container statuses), each time with
//! one NodePool to reconcile. Ours alone, with the cost per Pod; Karpenter (with its kwok provider) is compared
//! under a workload by `bench node-pools`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::report;

/// `bench node-pool-memory`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Pods in the cluster.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// How long the controller runs before its RSS is read.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Requests in flight while creating the Pods.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Markdown file whose `## Node pools` section is replaced (default: docs/benchmarks.md); `-` writes nothing.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Our `node-pool-controller` binary (default: built with `cargo build --release`).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

/// One run of the controller.
struct Measured {
    pods: usize,
    peak_mib: f64,
    end_mib: f64,
}

pub async fn run(args: Args) -> Result<()> {
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => crate::build::rust_binary("node-pool-controller").await?,
    };
    let work = tempfile::Builder::new()
        .prefix("kube-cloud-rs-bench-np-")
        .tempdir()
        .context("creating the working directory")?;
    eprintln!("bench: node-pool-memory: starting etcd + kube-apiserver");
    let cp = test_support::ControlPlane::builder()
        .start()
        .await
        .context("starting the control plane")?;
    let client = cp.client();
    prepare(&client).await?;
    let config = work.path().join("fake.yaml");
    std::fs::write(
        &config,
        "nodeGroups: [{id: workers, maxSize: 3, template: {cpu: \"2\", memory: 4Gi}}]\n",
    )
    .context("writing the cloud config")?;
    let mut rows = Vec::new();
    rows.push(measure(&args, &bin, &config, cp.kubeconfig_path(), work.path(), 0).await?);
    eprintln!("bench: node-pool-memory: creating {} Pods", args.pods);
    create_pods(&client, args.pods, args.concurrency).await?;
    rows.push(
        measure(
            &args,
            &bin,
            &config,
            cp.kubeconfig_path(),
            work.path(),
            args.pods,
        )
        .await?,
    );
    let section = section(&args, &rows);
    report::publish_section(args.out.as_deref(), "Node pools", &section)?;
    Ok(())
}

/// The NodePool CRD, one NodePool, and the default ServiceAccount (no controller-manager runs to create it).
async fn prepare(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = <controller_core::node_pool::NodePool as kube::CustomResourceExt>::crd();
    crds.create(&PostParams::default(), &crd)
        .await
        .context("creating the NodePool CRD")?;
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
    if let Err(e) = sa.create(&PostParams::default(), &account).await {
        eprintln!("bench: default ServiceAccount: {e} (continuing)");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pools: Api<controller_core::node_pool::NodePool> = Api::all(client.clone());
    let pool: controller_core::node_pool::NodePool = serde_json::from_value(json!({
        "apiVersion": "kube-cloud-rs.dev/v1alpha1", "kind": "NodePool",
        "metadata": {"name": "workers"},
        "spec": {"nodeGroup": "workers", "minNodes": 0, "maxNodes": 3},
    }))?;
    pools
        .create(&PostParams::default(), &pool)
        .await
        .context("creating the NodePool")?;
    Ok(())
}

/// `n` Pods as a Deployment, the scheduler and a kubelet leave them.
async fn create_pods(client: &kube::Client, n: usize, concurrency: usize) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("web-{i:05}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": "web", "pod-template-hash": "5d4f8c7b9"},
                        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-01T00:00:00Z"}},
                    "spec": {
                        "nodeName": format!("node-{:03}", i % 100),
                        "containers": [{"name": "app", "image": "registry.example.com/team/web:v1.2.3",
                            "command": ["/app/server"], "args": ["--port=8080", "--log-level=info"],
                            "env": [{"name": "MODE", "value": "production"}, {"name": "REGION", "value": "fake-region-1"}],
                            "ports": [{"containerPort": 8080, "name": "http"}],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}],
                        "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
                        "tolerations": [
                            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                        ],
                    },
                }))?;
                api.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("creating {name}"))?;
                let now = "2026-12-01T00:00:00Z";
                let conditions: Vec<_> = [
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                ]
                .iter()
                .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": now}))
                .collect();
                let status = json!({"status": {
                    "phase": "Running", "podIP": format!("10.64.{}.{}", i / 250, i % 250 + 1), "hostIP": "10.0.0.1",
                    "startTime": now, "qosClass": "Burstable",
                    "conditions": conditions,
                    "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "started": true,
                        "image": "registry.example.com/team/web:v1.2.3",
                        "imageID": "registry.example.com/team/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                        "containerID": format!("containerd://{i:064x}"),
                        "state": {"running": {"startedAt": now}}}],
                }});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .with_context(|| format!("patching the status of {name}"))?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn measure(
    args: &Args,
    bin: &Path,
    config: &Path,
    kubeconfig: &Path,
    work: &Path,
    pods: usize,
) -> Result<Measured> {
    let log = work.join(format!("node-pool-controller-{pods}.log"));
    let argv: Vec<OsString> = vec![
        "--cloud-provider=fake".into(),
        format!("--cloud-config={}", config.display()).into(),
        format!("--kubeconfig={}", kubeconfig.display()).into(),
        "--secure-port=0".into(),
        "--leader-elect=false".into(),
    ];
    let file = std::fs::File::create(&log).context("creating the log")?;
    let mut child = tokio::process::Command::new(bin)
        .args(&argv)
        .stdout(file.try_clone().context("log")?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("the controller exited at once")?;
    tokio::time::sleep(args.settle).await;
    if let Some(status) = child.try_wait().context("polling the controller")? {
        anyhow::bail!(
            "node-pool-controller exited ({status}); see {}",
            log.display()
        );
    }
    let (end_mib, peak_mib) = crate::virtual_nodes::rss_mib(pid)?;
    let _ = child.kill().await;
    eprintln!("bench: node-pool-memory: {pods} Pods: peak {peak_mib:.1} MiB, end {end_mib:.1} MiB");
    Ok(Measured {
        pods,
        peak_mib,
        end_mib,
    })
}

fn section(args: &Args, rows: &[Measured]) -> String {
    let mut s = format!(
        "## Node pools\n\n`{}` — finished {} UTC.\n\nThe node-pool-controller (provider-fake, one NodePool, `--leader-elect=false`) \
         caches every Pod of the cluster (the shared Pod cache, projected: see `controller-core/src/runtime/projection.rs`). \
         It runs once before any Pod exists and once with {} Pods as a Deployment, the scheduler and a kubelet \
         leave them (bound, Running, five conditions, a container status, env, probes, volumes); after {:?} the \
         benchmark reads `VmHWM` (peak) and `VmRSS` from `/proc/<pid>/status`. Ours alone; Karpenter's RSS under a \
         workload is in \"Node pools: provisioning and consolidation\" (`bench node-pools`).\n\n\
         | Pods | peak RSS (VmHWM) | RSS at the end |\n|---:|---:|---:|\n",
        crate::command_line(),
        report::utc_now(),
        args.pods,
        args.settle
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.1} MiB | {:.1} MiB |\n",
            r.pods, r.peak_mib, r.end_mib
        ));
    }
    if let [base, full] = rows
        && full.pods > 0
    {
        let per_pod = (full.peak_mib - base.peak_mib) * 1024.0 * 1024.0 / full.pods as f64;
        s.push_str(&format!(
            "\nCost per cached Pod (peak with Pods − peak without, / Pods): {per_pod:.0} bytes.\n"
        ));
    }
    s
}
