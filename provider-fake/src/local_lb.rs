//! Local TCP load balancers: every TCP port of every fake load balancer becomes a real listener on the load
//! balancer's address, forwarding each connection to a backend node's address and NodePort, the way
//! cloud-provider-kind runs one proxy per Service. With a loopback address pool (`127.0.100.0/24`) and loopback
//! node addresses, `curl` on one machine reaches whatever listens on `node address:NodePort`.
//!
//! Backends are tried round-robin; a backend that refuses or times out is skipped for that connection, so one
//! dead node does not fail requests while another is up. UDP and SCTP ports are not forwarded.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudprovider_api::NodeAddressType;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::cloud::lock;
use crate::state::load_balancers::FakeLoadBalancer;

/// How long a backend may take to accept a connection before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The running local load balancers of one [`FakeCloud`](crate::FakeCloud), started with
/// [`FakeCloud::start_local_load_balancers`](crate::FakeCloud::start_local_load_balancers). Every listener
/// closes when this handle is dropped.
#[derive(Debug)]
pub struct LocalLoadBalancers {
    task: JoinHandle<()>,
    listening: Arc<Mutex<BTreeMap<SocketAddr, String>>>,
}

impl LocalLoadBalancers {
    pub(crate) fn start(changes: watch::Receiver<Vec<FakeLoadBalancer>>) -> Self {
        let listening = Arc::new(Mutex::new(BTreeMap::new()));
        let task = tokio::spawn(follow(changes, Arc::clone(&listening)));
        Self { task, listening }
    }

    /// The addresses listened on now, each with its Service (`namespace/name`).
    pub fn listening(&self) -> BTreeMap<SocketAddr, String> {
        lock(&self.listening).clone()
    }
}

impl Drop for LocalLoadBalancers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One listener: its accept loop and the backends it forwards to (updated in place when hosts change).
struct Proxy {
    service: String,
    backends: watch::Sender<Vec<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps one listener per load balancer TCP port until the cloud is dropped (the channel closes).
async fn follow(
    mut changes: watch::Receiver<Vec<FakeLoadBalancer>>,
    listening: Arc<Mutex<BTreeMap<SocketAddr, String>>>,
) {
    let mut proxies: HashMap<SocketAddr, Proxy> = HashMap::new();
    loop {
        let lbs = changes.borrow_and_update().clone();
        reconcile(&mut proxies, &lbs).await;
        *lock(&listening) = proxies
            .iter()
            .map(|(addr, p)| (*addr, p.service.clone()))
            .collect();
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn reconcile(proxies: &mut HashMap<SocketAddr, Proxy>, lbs: &[FakeLoadBalancer]) {
    let desired = desired_listeners(lbs);
    proxies.retain(|addr, proxy| {
        let keep = desired
            .get(addr)
            .is_some_and(|(service, _)| *service == proxy.service);
        if !keep {
            info!(%addr, service = %proxy.service, "local load balancer listener closed");
        }
        keep
    });
    for (addr, (service, backends)) in desired {
        if let Some(proxy) = proxies.get(&addr) {
            proxy.backends.send_if_modified(|current| {
                let changed = *current != backends;
                *current = backends.clone();
                changed
            });
            continue;
        }
        // A failed bind is retried at the next change of any load balancer.
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                info!(%addr, %service, backends = ?backends, "local load balancer listening");
                let (tx, rx) = watch::channel(backends);
                let task = tokio::spawn(accept_loop(listener, rx, service.clone()));
                proxies.insert(
                    addr,
                    Proxy {
                        service,
                        backends: tx,
                        task,
                    },
                );
            }
            Err(e) => {
                error!(%addr, %service, error = %e, "cannot listen for the local load balancer");
            }
        }
    }
}

/// `ip:port` of every TCP load balancer port with a NodePort → (Service, backend `node address:NodePort`s).
fn desired_listeners(lbs: &[FakeLoadBalancer]) -> BTreeMap<SocketAddr, (String, Vec<SocketAddr>)> {
    let mut out = BTreeMap::new();
    for lb in lbs {
        for port in &lb.ports {
            let (Some(node_port), Ok(lb_port)) = (port.node_port, u16::try_from(port.port)) else {
                continue;
            };
            if !port.protocol.eq_ignore_ascii_case("TCP") {
                debug!(service = %lb.service, protocol = %port.protocol, "only TCP is forwarded locally");
                continue;
            }
            let Ok(node_port) = u16::try_from(node_port) else {
                continue;
            };
            let backends = lb
                .hosts
                .iter()
                .filter_map(|host| backend_ip(lb, host))
                .map(|ip| SocketAddr::new(ip, node_port))
                .collect();
            out.insert(
                SocketAddr::new(lb.ip, lb_port),
                (lb.service.clone(), backends),
            );
        }
    }
    out
}

/// The node's first InternalIP, else its first ExternalIP (what kube-proxy's NodePort answers on).
fn backend_ip(lb: &FakeLoadBalancer, host: &str) -> Option<IpAddr> {
    let addresses = lb.host_addresses.get(host)?;
    [NodeAddressType::InternalIp, NodeAddressType::ExternalIp]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .filter(|a| a.kind == *kind)
                .find_map(|a| a.address.parse().ok())
        })
}

async fn accept_loop(
    listener: TcpListener,
    backends: watch::Receiver<Vec<SocketAddr>>,
    service: String,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                warn!(%service, error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let candidates = backends.borrow().clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(why) = forward(client, &candidates, start).await {
                warn!(%service, %peer, "{why}");
            }
        });
    }
}

/// Connects to the first backend that answers, starting at `start` (round-robin), and copies both ways.
async fn forward(
    mut client: TcpStream,
    backends: &[SocketAddr],
    start: usize,
) -> Result<(), String> {
    if backends.is_empty() {
        return Err("no backends: the load balancer has no hosts with an address".into());
    }
    let mut failures = Vec::new();
    for i in 0..backends.len() {
        let backend = backends[(start + i) % backends.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                // Either side closing or resetting ends the connection; nothing to report.
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return Ok(());
            }
            Ok(Err(e)) => failures.push(format!("{backend}: {e}")),
            Err(_) => failures.push(format!("{backend}: connect timed out")),
        }
    }
    Err(format!("every backend failed: {}", failures.join("; ")))
}
