//! The provider's own cloud-controller-manager (`inventory-ccm`, built only from published crates' APIs) on a real
//! apiserver: its own controller `power-labels` is selectable with `--controllers`, runs under leader election
//! beside the built-in cloud-node controller, and an unknown controller name lists it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use test_support::{ControlPlane, NodeBuilder, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_inventory-ccm");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_controller_runs_under_leader_election_when_selected() {
    // An unknown name is a startup error that lists the provider's controller with the built-in ones.
    let out = tokio::process::Command::new(BIN)
        .args(["--cloud-provider=inventory", "--controllers=*,power-lables"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("power-lables")
            && stderr.contains("power-labels")
            && stderr.contains("cloud-node"),
        "{stderr}"
    );

    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("inventory.yaml");
    std::fs::write(
        &config,
        "machines:\n  - { name: rack1-u07, address: 10.1.0.7, rack: rack1 }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut ccm = tokio::process::Command::new(BIN)
        .arg("--cloud-provider=inventory")
        .arg(format!("--cloud-config={}", config.display()))
        .arg(format!("--kubeconfig={}", cp.kubeconfig_path().display()))
        .args([
            "--controllers=*,power-labels",
            "--leader-elect-identity=inventory-1",
            "--secure-port=0",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start inventory-ccm: {e}"));

    let nodes: Api<Node> = Api::all(cp.client());
    nodes
        .create(
            &PostParams::default(),
            &NodeBuilder::new("rack1-u07").uninitialized().build(),
        )
        .await
        .unwrap_or_else(|e| panic!("create node: {e}"));
    // The built-in cloud-node controller initializes it; then the provider's own controller labels it.
    let node = eventually(
        Duration::from_secs(60),
        "the Node to be initialized and labelled with its power state",
        || {
            let nodes = nodes.clone();
            async move {
                let node = nodes.get("rack1-u07").await.ok()?;
                let label = node
                    .metadata
                    .labels
                    .as_ref()?
                    .get("inventory.example.com/power")?;
                (label == "on").then_some(node)
            }
        },
    )
    .await;
    let provider_id = node.spec.and_then(|s| s.provider_id);
    assert_eq!(provider_id.as_deref(), Some("inventory://rack1-u07"));

    // Both ran under the Lease this replica holds.
    let leases: Api<Lease> = Api::namespaced(cp.client(), "kube-system");
    let lease = leases
        .get("cloud-controller-manager")
        .await
        .unwrap_or_else(|e| panic!("lease: {e}"));
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("inventory-1")
    );

    let pid = ccm.id().unwrap_or_else(|| panic!("no pid"));
    // SAFETY: kill(2) with a valid signal on the pid of our own child.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), ccm.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit after SIGTERM"))
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(status.success(), "exit status {status}");
}
