//! A tiny HTTP backend for the demo, standing in for a pod behind a NodePort on each (fake) node: it listens on
//! every `--listen ADDRESS:PORT` and answers every request with the node it stands for and the address it was
//! reached on, so `curl` through the load balancer shows which node served it.
//!
//! ```text
//! demo-backend --listen 127.0.1.1:30080=demo-node-1 --listen 127.0.1.2:30080=demo-node-2
//! ```

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use clap::Parser;
use controller_core::app::{init_tracing, shutdown_signal};

#[derive(Parser, Debug)]
#[command(about = "Answer HTTP requests with the name of the node they reached")]
struct Args {
    /// `ADDRESS:PORT=NODE`: listen on ADDRESS:PORT, answering as NODE. Repeat for each node.
    #[arg(long, required = true, value_parser = parse_listen)]
    listen: Vec<(SocketAddr, String)>,
}

fn parse_listen(s: &str) -> Result<(SocketAddr, String), String> {
    let (addr, node) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ADDRESS:PORT=NODE"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not ADDRESS:PORT: {e}"))?;
    Ok((addr, node.to_owned()))
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let args = Args::parse();
    kube_cloud_examples::run_main(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    for (addr, node) in args.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let app = Router::new()
            .route("/", get(hello))
            .with_state((node, addr));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(%addr, error = %e, "backend stopped");
            }
        });
    }
    shutdown_signal().await;
    Ok(())
}

async fn hello(State((node, addr)): State<(String, SocketAddr)>) -> String {
    format!("hello from {node} (backend {addr})\n")
}
