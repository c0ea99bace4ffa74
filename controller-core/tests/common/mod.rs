//! Shared test environment: a real control plane, provider-fake, and a controller context around them.

#![allow(dead_code, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::CloudProvider;
use controller_core::ControllerContext;
use controller_core::manager::{ManagedController, SharedCaches};
use controller_core::runtime::{CancellationToken, EventPublisher, RuntimeMetrics};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use provider_fake::FakeCloud;
use test_support::ControlPlane;

/// The taint upstream's cloud-node controller removes.
pub const UNINITIALIZED: &str = test_support::UNINITIALIZED_TAINT;

pub use test_support::{NodeBuilder, eventually};

/// A control plane, a fake cloud and a context for controllers.
pub struct Env {
    pub cp: ControlPlane,
    pub cloud: FakeCloud,
    pub ctx: ControllerContext,
    pub metrics: RuntimeMetrics,
    pub shutdown: CancellationToken,
    /// The caches every controller started with [`Env::run`] shares.
    pub caches: SharedCaches,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(FakeCloud::new()).await
    }

    pub async fn start_with(cloud: FakeCloud) -> Env {
        let cp = ControlPlane::start()
            .await
            .unwrap_or_else(|e| panic!("control plane: {e}"));
        Self::start_on(cp, cloud)
    }

    /// An environment around a control plane started by the caller (e.g. with kube-scheduler and kwok).
    pub fn start_on(cp: ControlPlane, cloud: FakeCloud) -> Env {
        let client = cp.client();
        let metrics = RuntimeMetrics::default();
        let provider: Arc<dyn CloudProvider> = Arc::new(cloud.clone());
        let events = EventPublisher::new(
            client.clone(),
            "cloud-controller-manager",
            Some("test".into()),
        );
        let ctx =
            ControllerContext::new(client.clone(), provider, events).with_metrics(metrics.clone());
        let shutdown = CancellationToken::new();
        let caches = SharedCaches::new(client, shutdown.clone());
        Env {
            cp,
            cloud,
            ctx,
            metrics,
            shutdown,
            caches,
        }
    }

    pub fn client(&self) -> kube::Client {
        self.cp.client()
    }

    /// Runs `controller` as the manager would (shared caches, this environment's shutdown signal) in a task that
    /// panics if the controller fails.
    pub fn run(&self, controller: impl ManagedController) -> tokio::task::JoinHandle<()> {
        let name = controller.name();
        let run = controller.run(self.ctx.clone(), self.caches.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("controller {name} failed: {e}");
            }
        })
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client())
    }
}

/// A Node as a kubelet with `--cloud-provider=external` registers it: tainted uninitialized, no providerID.
pub fn tainted_node(name: &str) -> Node {
    NodeBuilder::new(name).uninitialized().build()
}

pub async fn create_node(env: &Env, node: &Node) -> Node {
    env.nodes()
        .create(&PostParams::default(), node)
        .await
        .unwrap_or_else(|e| panic!("create node: {e}"))
}

/// Events (events.k8s.io/v1) about the object named `name`, as (type, reason, note).
pub async fn events_about(env: &Env, name: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(env.client());
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Fires the shutdown signal and checks that the controller `task` returns promptly.
pub async fn stops_on_shutdown(env: &Env, task: tokio::task::JoinHandle<()>) {
    env.shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("controller task failed: {e}"),
        Err(_) => panic!("the controller did not stop on shutdown"),
    }
}

impl Drop for Env {
    /// Stops every controller started on this environment.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
