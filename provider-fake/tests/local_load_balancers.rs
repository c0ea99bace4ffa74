//! Local load balancers carry real TCP traffic from `lb ip:port` to `node address:NodePort`, follow host changes,
//! fail over between backends and close when the load balancer is deleted.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudprovider_api::{LoadBalancers, ProviderRegistry};
use common::{node_with_ip, ok, service};
use k8s_openapi::api::core::v1::Service;
use provider_fake::{FakeCloud, FakeConfig, FakeError};
use test_support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback /24 of our own per test process and purpose, so parallel runs do not collide.
fn loopback_net(purpose: u8) -> [u8; 3] {
    let pid = std::process::id();
    [
        127,
        (100 + (pid % 100)) as u8,
        ((pid / 100) % 120) as u8 * 2 + purpose,
    ]
}

fn addr(net: [u8; 3], host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host))
}

/// A free port on `ip`.
async fn free_port(ip: IpAddr) -> u16 {
    let l = ok(TcpListener::bind((ip, 0)).await);
    ok(l.local_addr()).port()
}

/// A backend answering every connection with its name, like a pod behind a NodePort.
async fn backend(ip: IpAddr, port: u16, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = ok(TcpListener::bind((ip, port)).await);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(name.as_bytes()).await;
        }
    })
}

/// What one connection through the load balancer reads, or the connect/read error.
async fn fetch(to: SocketAddr) -> Result<String, String> {
    let mut conn = TcpStream::connect(to).await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    conn.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out)
}

async fn answers(to: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(fetch(to).await.unwrap_or_else(|e| format!("error: {e}")));
    }
    seen.sort();
    seen.dedup();
    seen
}

/// How long the listeners get to follow a change (they do so asynchronously).
const WAIT: Duration = Duration::from_secs(10);

fn lb_service(port: u16, node_port: u16) -> Service {
    let mut svc = service("web", "uid-web");
    if let Some(p) = svc
        .spec
        .as_mut()
        .and_then(|s| s.ports.as_mut())
        .and_then(|p| p.first_mut())
    {
        p.port = i32::from(port);
        p.node_port = Some(i32::from(node_port));
    }
    svc
}

fn local_config(lb_net: [u8; 3]) -> FakeConfig {
    FakeConfig {
        local_load_balancers: true,
        load_balancer_ip_pool: ok(format!("{}.{}.{}.0/24", lb_net[0], lb_net[1], lb_net[2]).parse()),
        ..FakeConfig::default()
    }
}

#[tokio::test]
async fn forwards_follows_hosts_fails_over_and_closes() {
    let (lb_net, node_net) = (loopback_net(0), loopback_net(1));
    let (n1, n2) = (addr(node_net, 1), addr(node_net, 2));
    let node_port = free_port(n1).await;
    let b1 = backend(n1, node_port, "node-1").await;
    let _b2 = backend(n2, node_port, "node-2").await;

    let cloud = ok(FakeCloud::from_config(local_config(lb_net)));
    let local = ok(cloud.start_local_load_balancers());
    let lb_ip = addr(lb_net, 1);
    let lb_addr = SocketAddr::new(lb_ip, free_port(lb_ip).await);
    let svc = lb_service(lb_addr.port(), node_port);
    let nodes = [
        node_with_ip("node-1", &n1.to_string()),
        node_with_ip("node-2", &n2.to_string()),
    ];
    ok(cloud.ensure_load_balancer("k", &svc, &nodes).await);
    eventually(WAIT, "the listener to be up", async || {
        local.listening().contains_key(&lb_addr).then_some(())
    })
    .await;
    assert_eq!(
        local.listening().get(&lb_addr).map(String::as_str),
        Some("default/web")
    );
    // Round-robin reaches both nodes.
    assert_eq!(answers(lb_addr, 4).await, ["node-1", "node-2"]);

    // Hosts follow update_load_balancer.
    ok(cloud.update_load_balancer("k", &svc, &nodes[..1]).await);
    eventually(WAIT, "only node-1 to answer", async || {
        (answers(lb_addr, 4).await == ["node-1"]).then_some(())
    })
    .await;

    // A dead backend is skipped while another is up.
    ok(cloud.update_load_balancer("k", &svc, &nodes).await);
    b1.abort();
    eventually(WAIT, "node-1's backend to be gone", async || {
        TcpStream::connect((n1, node_port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert_eq!(answers(lb_addr, 4).await, ["node-2"]);

    // Deleting the load balancer closes the listener.
    ok(cloud.ensure_load_balancer_deleted("k", &svc).await);
    eventually(WAIT, "the listener to be closed", async || {
        TcpStream::connect(lb_addr).await.is_err().then_some(())
    })
    .await;
    assert!(local.listening().is_empty());
}

#[tokio::test]
async fn the_registry_path_starts_them_from_the_config() {
    let (lb_net, node_net) = (loopback_net(2), loopback_net(3));
    let n1 = addr(node_net, 1);
    let node_port = free_port(n1).await;
    let _b1 = backend(n1, node_port, "node-1").await;

    let built: Arc<Mutex<Option<FakeCloud>>> = Arc::default();
    let mut registry = ProviderRegistry::new();
    let keep = Arc::clone(&built);
    ok(provider_fake::register_with(&mut registry, move |c| {
        *keep.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }));
    let yaml = format!(
        "localLoadBalancers: true\nloadBalancerIpPool: {}.{}.{}.0/24",
        lb_net[0], lb_net[1], lb_net[2]
    );
    let provider = ok(registry.build_from_str("fake", Some(&yaml)).await).expect("a provider");
    let cloud = built.lock().unwrap().clone().expect("the built cloud");

    let lb_ip = addr(lb_net, 1);
    let lb_addr = SocketAddr::new(lb_ip, free_port(lb_ip).await);
    let svc = lb_service(lb_addr.port(), node_port);
    let lbs = provider.load_balancers().expect("load balancers");
    ok(lbs
        .ensure_load_balancer("k", &svc, &[node_with_ip("node-1", &n1.to_string())])
        .await);
    eventually(WAIT, "the config's listener to be up", async || {
        cloud
            .local_load_balancer_listeners()
            .contains_key(&lb_addr)
            .then_some(())
    })
    .await;
    assert_eq!(ok(fetch(lb_addr).await), "node-1");
}

#[test]
fn a_non_loopback_pool_is_a_config_error_naming_the_field() {
    let config = FakeConfig {
        local_load_balancers: true,
        ..FakeConfig::default()
    };
    match FakeCloud::from_config(config) {
        Err(FakeError::InvalidConfig { field, message }) => {
            assert_eq!(field, "loadBalancerIpPool");
            assert!(message.contains("192.0.2.0/24"), "{message}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn outside_a_runtime_it_is_an_error_not_a_panic() {
    let cloud = FakeCloud::new();
    assert!(matches!(
        cloud.start_local_load_balancers(),
        Err(FakeError::NoRuntime)
    ));
}
