//! `/readyz` of the cloud-controller-manager on a real apiserver: it fails, naming the check, while the shared caches
//! have not finished their initial list (the CCM's connection to the apiserver is held by a fault proxy), and passes
//! once they have; `/livez` stays healthy meanwhile.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use common::https_get;
use test_support::{ControlPlane, FaultProxy, ProxyMode, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"))
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_unsynced_caches_until_they_sync() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let proxy = FaultProxy::start(cp.server_url())
        .await
        .unwrap_or_else(|e| panic!("proxy: {e}"));
    // The CCM's requests are held: its caches cannot finish their initial list.
    proxy.set_mode(ProxyMode::Blackhole);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port().await);
    let _ccm = tokio::process::Command::new(BIN)
        .args([
            "--cloud-provider=fake",
            &format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            &format!("--master={}", proxy.url()),
            "--leader-elect=false",
            "--controllers=cloud-node,service",
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", addr.port()),
            &format!("--cert-dir={}", dir.path().display()),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start the binary: {e}"));

    let failing = eventually(
        Duration::from_secs(60),
        "/readyz?verbose to fail naming informer-sync",
        async || {
            https_get(addr, "/readyz?verbose", None, None)
                .await
                .filter(|a| a.status == 500 && a.body.contains("[-]informer-sync failed"))
        },
    )
    .await;
    assert!(
        failing.body.contains("caches not synced: nodes")
            && failing.body.contains("readyz check failed"),
        "{}",
        failing.body
    );
    let livez = https_get(addr, "/livez", None, None)
        .await
        .unwrap_or_else(|| panic!("/livez answers"));
    assert_eq!((livez.status, livez.body.as_str()), (200, "ok"));

    // The connection flows again: the caches sync and /readyz passes with every check listed.
    proxy.set_mode(ProxyMode::Pass);
    let ready = eventually(
        Duration::from_secs(60),
        "/readyz?verbose to pass",
        async || {
            https_get(addr, "/readyz?verbose", None, None)
                .await
                .filter(|a| a.status == 200)
        },
    )
    .await;
    for line in [
        "[+]informer-sync ok",
        "[+]controllers ok",
        "readyz check passed",
    ] {
        assert!(ready.body.contains(line), "{line} missing:\n{}", ready.body);
    }
    let plain = https_get(addr, "/readyz", None, None)
        .await
        .unwrap_or_else(|| panic!("/readyz answers"));
    assert_eq!((plain.status, plain.body.as_str()), (200, "ok"));
}
