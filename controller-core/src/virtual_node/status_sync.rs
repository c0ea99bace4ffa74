//! Provider → Kubernetes pod status: notifications first, polling as the fallback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::VirtualNodeProvider;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, Patch, PatchParams};
use parking_lot::Mutex;
use tracing::{debug, warn};

use tokio_util::sync::CancellationToken;

/// With a notifier, polling only catches notifications a slow consumer missed.
const NOTIFIED_POLL_FACTOR: u32 = 12;

/// Posts provider statuses to pods, skipping statuses already posted. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StatusSync {
    client: kube::Client,
    provider: Arc<dyn VirtualNodeProvider>,
    poll_interval: Duration,
    posted: Arc<Mutex<HashMap<(String, String), PodStatus>>>,
}

impl StatusSync {
    pub(crate) fn new(
        client: kube::Client,
        provider: Arc<dyn VirtualNodeProvider>,
        poll_interval: Duration,
    ) -> Self {
        Self {
            client,
            provider,
            poll_interval,
            posted: Arc::default(),
        }
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut notifications = self.provider.pod_notifier().map(|n| n.notify_pods());
        let period = if notifications.is_some() {
            self.poll_interval * NOTIFIED_POLL_FACTOR
        } else {
            self.poll_interval
        };
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(100)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = shutdown.cancelled_owned();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                pod = async { match notifications.as_mut() {
                    Some(stream) => stream.next().await,
                    None => std::future::pending().await,
                } } => match pod {
                    Some(pod) => self.push(&pod).await,
                    None => notifications = None,
                },
                _ = ticker.tick() => self.poll().await,
            }
        }
    }

    async fn poll(&self) {
        match self.provider.get_pods().await {
            Ok(pods) => {
                for pod in pods {
                    self.push(&pod).await;
                }
            }
            Err(error) => warn!(%error, "polling pod statuses from the provider failed"),
        }
    }

    /// Posts `pod`'s provider status unless it is the one last posted.
    pub(crate) async fn push(&self, pod: &Pod) {
        let (Some(namespace), Some(name), Some(status)) = (
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
            pod.status.clone(),
        ) else {
            return;
        };
        let key = (namespace.clone(), name.clone());
        if self.posted.lock().get(&key) == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({ "status": status });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                debug!(%namespace, %name, phase = ?status.phase, "pod status posted");
                self.posted.lock().insert(key, status);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.posted.lock().remove(&key);
            }
            Err(error) => warn!(%namespace, %name, %error, "posting pod status failed"),
        }
    }

    /// Forgets what was posted for a pod (it is gone).
    pub(crate) fn forget(&self, namespace: &str, name: &str) {
        self.posted
            .lock()
            .remove(&(namespace.to_owned(), name.to_owned()));
    }
}
