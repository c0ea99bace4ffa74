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
