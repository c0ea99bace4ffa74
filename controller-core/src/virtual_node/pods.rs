//! Kubernetes → provider: the pods bound to the virtual node are created, updated and deleted in the provider.

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{CloudError, VirtualNodeProvider};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use tracing::{debug, info};

use super::REASON_PROVIDER_FAILED;
use super::status_sync::StatusSync;
use crate::runtime::{ReconcileError, Reconciler};

pub(crate) struct PodReconciler {
    client: kube::Client,
    provider: Arc<dyn VirtualNodeProvider>,
    sync: StatusSync,
}

impl PodReconciler {
    pub(crate) fn new(
        client: kube::Client,
        provider: Arc<dyn VirtualNodeProvider>,
        sync: StatusSync,
    ) -> Self {
        Self {
            client,
            provider,
            sync,
        }
    }

    fn api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }

    async fn delete(&self, pod: &Pod, deadline: Timestamp) -> Result<Action, ReconcileError> {
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        match self.provider.delete_pod(pod).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(ReconcileError::cloud("DeletePod", e)),
        }
        let in_provider = self
            .provider
            .get_pod(&namespace, &name)
            .await
            .map_err(|e| ReconcileError::cloud("GetPod", e))?;
        let stopped = in_provider.as_ref().is_none_or(is_terminal);
        let remaining = deadline.as_millisecond() - Timestamp::now().as_millisecond();
        if !stopped && remaining > 0 {
            let wait = Duration::from_millis(u64::try_from(remaining).unwrap_or(0));
            debug!(
                ?wait,
                "provider pod still stopping; deleting at the end of the grace period"
            );
            return Ok(Action::requeue(wait));
        }
        if let Some(stopped) = &in_provider {
            self.sync.push(stopped).await;
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(pod).delete(&name, &params).await {
            Ok(_) => info!("pod deleted"),
            // Gone already, or another pod with the same name (UID precondition): nothing of ours to delete.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(ReconcileError::kube("delete Pod", e)),
        }
        self.sync.forget(&namespace, &name);
        Ok(Action::await_change())
    }

    /// Marks the pod `Pending` (or `Failed` when it would never be restarted) with reason `ProviderFailed`.
    async fn provider_failed(&self, pod: &Pod, error: &CloudError) {
        let never_restarts =
            pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never");
        let phase = if never_restarts { "Failed" } else { "Pending" };
        let patch = serde_json::json!({ "status": {
            "phase": phase,
            "reason": REASON_PROVIDER_FAILED,
            "message": error.to_string(),
        }});
        if let Err(e) = self
            .api(pod)
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            debug!(error = %e, "could not record the provider failure on the pod");
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Reconciler<Pod> for PodReconciler {
    fn name(&self) -> &'static str {
        "virtual-node-pod-controller"
    }

    async fn reconcile(&self, pod: Arc<Pod>) -> Result<Action, ReconcileError> {
        if let Some(deletion) = &pod.metadata.deletion_timestamp {
            return self.delete(&pod, deletion.0).await;
        }
        if is_terminal(&pod) {
            return Ok(Action::await_change());
        }
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let result = match self.provider.get_pod(&namespace, &name).await {
            Ok(Some(running)) if running.metadata.uid == pod.metadata.uid => {
                if running.spec == pod.spec {
                    Ok(())
                } else {
                    self.provider
                        .update_pod(&pod)
                        .await
                        .map_err(|e| ("UpdatePod", e))
                }
            }
            Ok(_) => self
                .provider
                .create_pod(&pod)
                .await
                .map_err(|e| ("CreatePod", e)),
            Err(e) => Err(("GetPod", e)),
        };
        match result {
            Ok(()) => Ok(Action::await_change()),
            Err((op, error)) => {
                self.provider_failed(&pod, &error).await;
                Err(ReconcileError::cloud(op, error))
            }
        }
    }

    fn failure_reason(&self, err: &ReconcileError) -> Option<&'static str> {
        matches!(err, ReconcileError::Cloud { .. }).then_some(REASON_PROVIDER_FAILED)
    }
}
