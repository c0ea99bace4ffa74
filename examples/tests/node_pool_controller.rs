//! The node-pool-controller binary on a real apiserver: the same app as the cloud-controller-manager with
//! `node-pool` on by default, leader election on its own Lease, and a clear startup failure when the NodePool CRD
//! is missing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use test_support::{ControlPlane, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_node-pool-controller");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_without_its_crd_and_leads_its_own_lease_with_it() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("fake.yaml");
    std::fs::write(
        &config,
        "nodeGroups: [{id: workers, maxSize: 3, template: {cpu: \"2\", memory: 4Gi}}]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let args = [
        "--cloud-provider=fake".to_owned(),
        format!("--cloud-config={}", config.display()),
        format!("--kubeconfig={}", cp.kubeconfig_path().display()),
        "--secure-port=0".to_owned(),
        "--leader-elect-identity=np-1".to_owned(),
    ];

    // Without the CRD: exit 1, saying how to install it.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN).args(&args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("node-pool-controller did not exit without its CRD"))
    .unwrap_or_else(|e| panic!("run: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("controller \"node-pool\" failed")
            && stderr.contains("--print-crd | kubectl apply"),
        "{stderr}"
    );

    // With it: it leads the Lease node-pool-controller and runs only node-pool (the default of this binary).
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client());
    let crd = <controller_core::node_pool::NodePool as kube::CustomResourceExt>::crd();
    crds.create(&PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("create CRD: {e}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut child = tokio::process::Command::new(BIN)
        .args(&args)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start: {e}"));
    let leases: Api<Lease> = Api::namespaced(cp.client(), "kube-system");
    eventually(
        Duration::from_secs(60),
        "a Lease held by np-1",
        async || {
            let holder = leases
                .get_opt("node-pool-controller")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity);
            if holder.as_deref() == Some("np-1") {
                return Some(());
            }
            assert!(
                child.try_wait().ok().flatten().is_none(),
                "node-pool-controller exited"
            );
            None
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.start_kill().unwrap_or_else(|e| panic!("{e}"));
    let out = child
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("controllers started controllers=[\"node-pool\"]"),
        "{log}"
    );
}

/// The on-demand flow of docs/local-cluster.md, with the binaries: the cloud-controller-manager runs `node-pool`
/// beside its own controllers, and the fake cloud's machine kubelets (`kubelets: {registerNodes: true}`) register
/// the launched instances. A Deployment selecting the pool gets nodes launched, registered, initialized by the
/// CCM's cloud-node controller and running its pods; scaled to zero, the nodes are removed with their instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ccm_runs_node_pools_on_machines_that_register_themselves() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{ListParams, Patch, PatchParams};
    use test_support::KwokOptions;

    const CCM: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");
    let cp = ControlPlane::builder()
        .scheduler(true)
        .controller_manager(["deployment-controller", "replicaset-controller"])
        .kwok(KwokOptions::default())
        .start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client());
    let crd = <controller_core::node_pool::NodePool as kube::CustomResourceExt>::crd();
    crds.create(&PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("create CRD: {e}"));
    let pools: Api<controller_core::node_pool::NodePool> = Api::all(cp.client());
    eventually(
        Duration::from_secs(30),
        "the NodePool CRD served",
        async || pools.list(&ListParams::default()).await.ok().map(|_| ()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("fake.yaml");
    std::fs::write(
        &config,
        "nodeGroups:\n\
         - id: workers\n  maxSize: 10\n  provisionDelayMs: 500\n\
         \x20 template: {instanceType: fake.large, cpu: \"2\", memory: 4Gi, labels: {hardware: standard}}\n\
         kubelets:\n  registerNodes: true\n\
         \x20 registerWithTaints: [{key: kube-cloud-rs.dev/unregistered, effect: NoExecute}]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _ccm = tokio::process::Command::new(CCM)
        .args([
            "--cloud-provider=fake".to_owned(),
            format!("--cloud-config={}", config.display()),
            format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            "--controllers=*,node-pool".to_owned(),
            "--leader-elect=false".to_owned(),
            "--secure-port=0".to_owned(),
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start the CCM: {e}"));

    let pool: controller_core::node_pool::NodePool = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-cloud-rs.dev/v1alpha1", "kind": "NodePool",
        "metadata": {"name": "web"},
        "spec": {"nodeGroup": "workers", "maxNodes": 5, "emptyNodeDelaySeconds": 1}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    pools
        .create(&PostParams::default(), &pool)
        .await
        .unwrap_or_else(|e| panic!("create NodePool: {e}"));
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"kube-cloud-rs.dev/nodepool": "web"},
                    "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "500m"}}}]
                }
            }
        }
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let deployments: Api<Deployment> = Api::namespaced(cp.client(), "default");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|e| panic!("create Deployment: {e}"));

    // 6 × 500m on 2-CPU nodes: two nodes, registered by the machines, initialized by the CCM, running the pods.
    let pods: Api<Pod> = Api::namespaced(cp.client(), "default");
    let nodes: Api<Node> = Api::all(cp.client());
    let hosts = eventually(Duration::from_secs(120), "6 pods Running", async || {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        let hosts: std::collections::BTreeSet<String> = running
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (list.items.len() == 6
            && list
                .items
                .iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        .then_some(hosts)
    })
    .await;
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    for host in &hosts {
        let node = nodes
            .get(host)
            .await
            .unwrap_or_else(|e| panic!("get {host}: {e}"));
        let spec = node.spec.clone().unwrap_or_default();
        assert!(
            spec.provider_id
                .as_deref()
                .is_some_and(|p| p.starts_with("fake://workers-")),
            "{spec:?}"
        );
        let taints: Vec<String> = spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert!(
            !taints
                .iter()
                .any(|k| k.contains("uninitialized") || k.contains("unregistered")),
            "{taints:?}"
        );
        // Registered with the instance's address, and kwok's status did not wipe it.
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default();
        assert!(
            addresses
                .iter()
                .any(|a| a.type_ == "InternalIP" && a.address.starts_with("10.0.")),
            "{addresses:?}"
        );
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels
                .get("node.kubernetes.io/instance-type")
                .map(String::as_str),
            Some("fake.large"),
            "initialized by the CCM: {labels:?}"
        );
        assert_eq!(
            labels.get("kube-cloud-rs.dev/nodepool").map(String::as_str),
            Some("web")
        );
    }

    // Scaled to zero, the empty nodes go away.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap_or_else(|e| panic!("scale: {e}"));
    eventually(
        Duration::from_secs(120),
        "the pool's nodes removed",
        async || {
            let left = nodes.list(&ListParams::default()).await.ok()?;
            left.items
                .iter()
                .all(|n| !hosts.contains(&n.metadata.name.clone().unwrap_or_default()))
                .then_some(())
        },
    )
    .await;
}

/// `deploy/node-pool-controller/rbac.yaml` is enough: the binary, impersonating its ServiceAccount, leads its Lease,
/// launches a node for a Deployment, initializes it (`cloud-node` in the same process), and drains and removes it
/// when the pool is deleted (finalizer, Eviction API), without one `forbidden` answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_pool_end_to_end_as_its_service_account() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::ListParams;
    use test_support::KwokOptions;

    let cp = ControlPlane::builder()
        .scheduler(true)
        .controller_manager([
            "deployment-controller",
            "replicaset-controller",
            "disruption-controller",
        ])
        .kwok(KwokOptions::default())
        .start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rbac = repo.join("deploy/node-pool-controller/rbac.yaml");
    // Only for this test: the fake cloud's machine kubelets run inside the binary and register Nodes with its
    // client, which a real kubelet does with its own credentials.
    let kubelets = dir.path().join("fake-kubelets.yaml");
    std::fs::write(
        &kubelets,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: test:fake-machine-kubelets}\n\
         rules:\n- {apiGroups: [\"\"], resources: [nodes], verbs: [create]}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: test:fake-machine-kubelets}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: test:fake-machine-kubelets}\n\
         subjects: [{kind: ServiceAccount, name: node-pool-controller, namespace: kube-system}]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for file in [&rbac, &kubelets] {
        let out = cp
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(file)
            .output()
            .await
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client());
    let crd = <controller_core::node_pool::NodePool as kube::CustomResourceExt>::crd();
    crds.create(&PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("create CRD: {e}"));

    // A kubeconfig like the control plane's whose requests are made as the ServiceAccount.
    let mut kc =
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).unwrap_or_else(|e| panic!("{e}"));
    for named in &mut kc.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate =
                Some("system:serviceaccount:kube-system:node-pool-controller".into());
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:kube-system".into(),
                "system:authenticated".into(),
            ]);
        }
    }
    let as_sa = dir.path().join("as-node-pool-controller.kubeconfig");
    std::fs::write(
        &as_sa,
        serde_yaml_ng::to_string(&kc).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("fake.yaml");
    std::fs::write(
        &config,
        "nodeGroups:\n\
         - id: workers\n  maxSize: 5\n\
         \x20 template: {instanceType: fake.large, cpu: \"2\", memory: 4Gi}\n\
         kubelets:\n  registerNodes: true\n\
         \x20 registerWithTaints: [{key: kube-cloud-rs.dev/unregistered, effect: NoExecute}]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("node-pool-controller.log");
    let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--cloud-provider=fake".to_owned(),
            format!("--cloud-config={}", config.display()),
            format!("--kubeconfig={}", as_sa.display()),
            "--secure-port=0".to_owned(),
            "--leader-elect-identity=np-rbac".to_owned(),
            "--controllers=node-pool,cloud-node".to_owned(),
        ])
        .env("RUST_LOG", "info")
        .stdout(file.try_clone().unwrap_or_else(|e| panic!("{e}")))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start: {e}"));

    let manifest = dir.path().join("workload.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: kube-cloud-rs.dev/v1alpha1\nkind: NodePool\nmetadata: {name: web}\n\
         spec: {nodeGroup: workers, maxNodes: 3}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\n\
         spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n\
         \x20   spec:\n      nodeSelector: {kube-cloud-rs.dev/nodepool: web}\n\
         \x20     containers: [{name: app, image: app, resources: {requests: {cpu: 500m}}}]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(&manifest)
        .output()
        .await
        .unwrap_or_else(|e| panic!("kubectl: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods: Api<Pod> = Api::namespaced(cp.client(), "default");
    let nodes: Api<Node> = Api::all(cp.client());
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(
        Duration::from_secs(90),
        "2 replicas Running on the pool's node",
        async || {
            assert!(
                child.try_wait().ok().flatten().is_none(),
                "exited: {}",
                read_log()
            );
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (running == 2).then_some(())
        },
    )
    .await;

    // Deleting the pool drains its node through the Eviction API and removes it.
    let pools: Api<controller_core::node_pool::NodePool> = Api::all(cp.client());
    pools
        .delete("web", &Default::default())
        .await
        .unwrap_or_else(|e| panic!("delete pool: {e}"));
    eventually(
        Duration::from_secs(90),
        "the pool and its node gone",
        async || {
            let pool_gone = pools.get_opt("web").await.ok()?.is_none();
            let no_nodes = nodes
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty();
            (pool_gone && no_nodes).then_some(())
        },
    )
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let text = read_log();
    assert!(!text.to_lowercase().contains("forbidden"), "{text}");
    assert!(text.contains("controllers started"), "{text}");
}
