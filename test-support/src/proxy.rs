//! A TCP proxy on loopback that injects network faults between one client and the apiserver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Error;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Hold all bytes in both directions (connections stay open) until the mode changes: a network partition or a
    /// paused apiserver, as the client sees it.
    Blackhole,
    /// Forward requests at once but hold every server→client chunk this long: writes land, answers come late.
    DelayResponses(Duration),
    /// Close every connection and refuse new ones: the apiserver is down.
    Refuse,
}

/// A fault-injecting TCP proxy in front of an address. TLS passes through untouched, so a client pointed at
/// [`FaultProxy::url`] still verifies the apiserver's certificate (its SANs name 127.0.0.1, not a port).
/// Dropping the proxy stops it and closes its connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<ProxyMode>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream_url` (`https://127.0.0.1:PORT`).
    pub async fn start(upstream_url: &str) -> Result<Self, Error> {
        let upstream = upstream_addr(upstream_url)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                context: "binding the fault proxy".into(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            context: "reading the fault proxy's address".into(),
            source,
        })?;
        let (tx, _) = watch::channel(ProxyMode::Pass);
        let mode = Arc::new(tx);
        let task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&mode)));
        Ok(Self { addr, mode, task })
    }

    /// The proxy's URL, to use instead of the apiserver's.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Changes what the proxy does, for existing and new connections.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.mode.borrow()
    }

    /// A copy of `base` (e.g. [`ControlPlane::config`](crate::ControlPlane::config)) that talks through this proxy.
    pub fn client_config(&self, base: &kube::Config) -> Result<kube::Config, Error> {
        let mut config = base.clone();
        config.cluster_url = self
            .url()
            .parse()
            .map_err(|e| Error::Tools(format!("proxy URL: {e}")))?;
        Ok(config)
    }

    /// A client that talks through this proxy.
    pub fn client(&self, base: &kube::Config) -> Result<kube::Client, Error> {
        kube::Client::try_from(self.client_config(base)?)
            .map_err(|e| Error::Tools(format!("client: {e}")))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.set_mode(ProxyMode::Refuse);
        self.task.abort();
    }
}

fn upstream_addr(url: &str) -> Result<SocketAddr, Error> {
    let hostport = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    hostport.parse().map_err(|e| {
        Error::Tools(format!(
            "fault proxy upstream {url:?} is not https://IP:PORT: {e}"
        ))
    })
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Arc<watch::Sender<ProxyMode>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == ProxyMode::Refuse {
            drop(client);
            continue;
        }
        let rx = mode.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Either direction ending (or Refuse) ends both.
            tokio::select! {
                () = pump(cr, sw, rx.clone(), false) => {}
                () = pump(sr, cw, rx, true) => {}
            }
        });
    }
}

/// Copies `from` to `to` chunk by chunk, applying the mode to each chunk.
async fn pump<R, W>(mut from: R, mut to: W, mut mode: watch::Receiver<ProxyMode>, is_response: bool)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|m| *m == ProxyMode::Refuse) => return,
        };
        // Hold the chunk while blackholed; give up if the proxy is told to refuse.
        loop {
            let current = *mode.borrow_and_update();
            match current {
                ProxyMode::Pass => break,
                ProxyMode::Refuse => return,
                ProxyMode::DelayResponses(d) if is_response => {
                    tokio::time::sleep(d).await;
                    break;
                }
                ProxyMode::DelayResponses(_) => break,
                ProxyMode::Blackhole => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
