//! Virtual nodes of the fake cloud: pods "run" in memory (Pending → Running → Succeeded/Failed on tokio timers),
//! status changes are pushed to subscribers, and every call goes through the cloud's fault injection, latency
//! and call log ([`Method::CreatePod`] … [`Method::Ping`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use cloudprovider_api::{CloudError, CloudResult, NodeProvider, PodLifecycle, PodNotifier};
use futures::stream::{self, BoxStream};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::broadcast;

use crate::calls::CallOutcome;
use crate::cloud::{FakeCloud, lock};
use crate::method::Method;

/// How pods run on a [`FakeVirtualNode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodBehaviour {
    /// Time from creation (phase `Pending`) to `Running`.
    pub start_delay: Duration,
    /// Time from `Running` to the end (`Succeeded` with exit code 0, `Failed` otherwise); `None` runs until
    /// deleted.
    pub run_for: Option<Duration>,
    /// Exit code of every container when the pod ends by itself.
    pub exit_code: i32,
}

impl Default for PodBehaviour {
    fn default() -> Self {
        Self {
            start_delay: Duration::from_millis(200),
            run_for: None,
            exit_code: 0,
        }
    }
}

struct Pods {
    node: String,
    pods: Mutex<BTreeMap<String, Pod>>,
    behaviour: Mutex<PodBehaviour>,
    /// Made at the first subscription: a node nobody listens to (thousands in a benchmark) costs no channel.
    notify: OnceLock<broadcast::Sender<Pod>>,
}

impl Pods {
    fn notify(&self, pod: Pod) {
        if let Some(sender) = self.notify.get() {
            let _ = sender.send(pod);
        }
    }
}

/// One virtual node of a [`FakeCloud`], implementing
/// [`VirtualNodeProvider`](cloudprovider_api::VirtualNodeProvider). Cheap to clone (same node).
///
/// Pod transitions run on timers of the tokio runtime that called `create_pod`. Faults are injected with the
/// cloud's [`fail_next`](FakeCloud::fail_next) family, keyed by `<namespace>/<name>` for pod methods and by
/// the node name for [`Method::Ping`] and [`Method::GetPods`].
///
/// ```
/// use cloudprovider_api::{NodeProvider, PodLifecycle};
/// use provider_fake::{FakeCloud, FaultKind, Method};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cloud = FakeCloud::new();
/// let node = cloud.virtual_node("vk-1");
/// node.ping().await?;
/// cloud.fail_always_for(Method::Ping, "vk-1", FaultKind::Transient);
/// assert!(node.ping().await.is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FakeVirtualNode {
    cloud: FakeCloud,
    inner: Arc<Pods>,
}

impl fmt::Debug for FakeVirtualNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeVirtualNode")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn pod_key(pod: &Pod) -> String {
    key_of(
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn now() -> Time {
    // From the system clock directly: jiff's own `now` needs a feature this crate does not enable.
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Time(Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH))
}

impl FakeCloud {
    /// A new virtual node named `node` backed by this cloud (its faults, latency and call log).
    pub fn virtual_node(&self, node: &str) -> FakeVirtualNode {
        FakeVirtualNode {
            cloud: self.clone(),
            inner: Arc::new(Pods {
                node: node.to_owned(),
                pods: Mutex::new(BTreeMap::new()),
                behaviour: Mutex::new(PodBehaviour::default()),
                notify: OnceLock::new(),
            }),
        }
    }
}

impl FakeVirtualNode {
    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.node
    }

    /// Sets how pods created from now on run.
    pub fn set_pod_behaviour(&self, behaviour: PodBehaviour) {
        *lock(&self.inner.behaviour) = behaviour;
    }

    /// The pod as the provider runs it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        lock(&self.inner.pods)
            .get(&key_of(namespace, name))
            .cloned()
    }

    /// Every pod the provider runs.
    pub fn pod_list(&self) -> Vec<Pod> {
        lock(&self.inner.pods).values().cloned().collect()
    }

    /// Puts a running pod in the provider directly, as if created by an earlier process (no call recorded).
    pub fn insert_running_pod(&self, mut pod: Pod) {
        pod.status = Some(running_status(&pod));
        lock(&self.inner.pods).insert(pod_key(&pod), pod);
    }

    /// Ends a pod now with `exit_code` (`Succeeded` for 0, `Failed` otherwise) and notifies subscribers.
    /// Returns whether the pod exists.
    pub fn finish_pod(&self, namespace: &str, name: &str, exit_code: i32) -> bool {
        let updated = {
            let mut pods = lock(&self.inner.pods);
            pods.get_mut(&key_of(namespace, name)).map(|pod| {
                pod.status = Some(terminated_status(pod, exit_code, None));
                pod.clone()
            })
        };
        match updated {
            Some(pod) => {
                self.inner.notify(pod);
                true
            }
            None => false,
        }
    }

    /// Delay, fault check and call log around `op`.
    async fn call<T>(
        &self,
        method: Method,
        key: String,
        op: impl FnOnce() -> CloudResult<T>,
    ) -> CloudResult<T> {
        self.cloud.delay(method).await;
        let denied =
            lock(&self.cloud.inner.faults).check(method, &key, tokio::time::Instant::now());
        let result = match denied {
            Some(denial) => Err(denial.to_error(method, &key)),
            None => op(),
        };
        self.cloud.record(method, key, CallOutcome::of(&result));
        result
    }

    /// Moves the pod with `uid` to the next phase after `delay`, unless it was deleted or replaced meanwhile.
    fn schedule(&self, key: String, uid: Option<String>, behaviour: PodBehaviour) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(behaviour.start_delay).await;
            if !this.transition(&key, &uid, running_status) {
                return;
            }
            if let Some(run_for) = behaviour.run_for {
                tokio::time::sleep(run_for).await;
                this.transition(&key, &uid, |pod| {
                    terminated_status(pod, behaviour.exit_code, None)
                });
            }
        });
    }

    fn transition(
        &self,
        key: &str,
        uid: &Option<String>,
        status: impl FnOnce(&Pod) -> PodStatus,
    ) -> bool {
        let updated = {
            let mut pods = lock(&self.inner.pods);
            match pods.get_mut(key) {
                Some(pod) if &pod.metadata.uid == uid && !is_terminal(pod) => {
                    pod.status = Some(status(pod));
                    Some(pod.clone())
                }
                _ => None,
            }
        };
        match updated {
            Some(pod) => {
                self.inner.notify(pod);
                true
            }
            None => false,
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn container_statuses(
    pod: &Pod,
    state: impl Fn() -> ContainerState,
    ready: bool,
) -> Vec<ContainerStatus> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready,
            started: Some(ready),
            restart_count: 0,
            state: Some(state()),
            ..ContainerStatus::default()
        })
        .collect()
}

fn conditions(ready: bool) -> Vec<PodCondition> {
    let status = if ready { "True" } else { "False" };
    let t = now();
    ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .into_iter()
        .map(|type_| PodCondition {
            type_: type_.into(),
            status: if type_ == "PodScheduled" || type_ == "Initialized" {
                "True".into()
            } else {
                status.into()
            },
            last_transition_time: Some(t.clone()),
            ..PodCondition::default()
        })
        .collect()
}

fn pending_status(pod: &Pod) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(conditions(false)),
        container_statuses: Some(container_statuses(
            pod,
            || ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..ContainerState::default()
            },
            false,
        )),
        ..PodStatus::default()
    }
}

fn running_status(pod: &Pod) -> PodStatus {
    let started = now();
    PodStatus {
        phase: Some("Running".into()),
        start_time: Some(started.clone()),
        conditions: Some(conditions(true)),
        container_statuses: Some(container_statuses(
            pod,
            || ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started.clone()),
                }),
                ..ContainerState::default()
            },
            true,
        )),
        ..PodStatus::default()
    }
}

fn terminated_status(pod: &Pod, exit_code: i32, reason: Option<&str>) -> PodStatus {
    let finished = now();
    let started = pod.status.as_ref().and_then(|s| s.start_time.clone());
    let reason = reason
        .unwrap_or(if exit_code == 0 { "Completed" } else { "Error" })
        .to_owned();
    PodStatus {
        phase: Some(
            if exit_code == 0 {
                "Succeeded"
            } else {
                "Failed"
            }
            .into(),
        ),
        start_time: started.clone(),
        conditions: Some(conditions(false)),
        container_statuses: Some(container_statuses(
            pod,
            || ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    reason: Some(reason.clone()),
                    started_at: started.clone(),
                    finished_at: Some(finished.clone()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
            false,
        )),
        ..PodStatus::default()
    }
}

#[async_trait]
impl PodLifecycle for FakeVirtualNode {
    async fn create_pod(&self, pod: &Pod) -> CloudResult<()> {
        let key = pod_key(pod);
        let created = self
            .call(Method::CreatePod, key.clone(), || {
                let mut pods = lock(&self.inner.pods);
                if pods
                    .get(&key)
                    .is_some_and(|p| p.metadata.uid == pod.metadata.uid)
                {
                    return Ok(None);
                }
                let mut stored = pod.clone();
                stored.metadata.managed_fields = None;
                stored.status = Some(pending_status(pod));
                pods.insert(key.clone(), stored.clone());
                Ok(Some(stored))
            })
            .await?;
        if let Some(stored) = created {
            self.inner.notify(stored);
            let behaviour = lock(&self.inner.behaviour).clone();
            self.schedule(key, pod.metadata.uid.clone(), behaviour);
        }
        Ok(())
    }

    async fn update_pod(&self, pod: &Pod) -> CloudResult<()> {
        let key = pod_key(pod);
        self.call(Method::UpdatePod, key.clone(), || {
            let mut pods = lock(&self.inner.pods);
            let stored = pods
                .get_mut(&key)
                .ok_or_else(|| CloudError::not_found("pod", &key))?;
            stored.spec = pod.spec.clone();
            stored.metadata.labels = pod.metadata.labels.clone();
            stored.metadata.annotations = pod.metadata.annotations.clone();
            Ok(())
        })
        .await
    }

    async fn delete_pod(&self, pod: &Pod) -> CloudResult<()> {
        let key = pod_key(pod);
        let removed = self
            .call(Method::DeletePod, key.clone(), || {
                Ok(lock(&self.inner.pods).remove(&key))
            })
            .await?;
        if let Some(mut gone) = removed {
            // Subscribers learn the final state: every container terminated.
            if !is_terminal(&gone) {
                gone.status = Some(terminated_status(&gone, 0, Some("ProviderPodDeleted")));
            }
            self.inner.notify(gone);
        }
        Ok(())
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> CloudResult<Option<Pod>> {
        let key = key_of(namespace, name);
        self.call(Method::GetPod, key.clone(), || {
            Ok(lock(&self.inner.pods).get(&key).cloned())
        })
        .await
    }

    async fn get_pod_status(&self, namespace: &str, name: &str) -> CloudResult<Option<PodStatus>> {
        let key = key_of(namespace, name);
        self.call(Method::GetPodStatus, key.clone(), || {
            Ok(lock(&self.inner.pods)
                .get(&key)
                .and_then(|p| p.status.clone()))
        })
        .await
    }

    async fn get_pods(&self) -> CloudResult<Vec<Pod>> {
        self.call(Method::GetPods, self.inner.node.clone(), || {
            Ok(self.pod_list())
        })
        .await
    }

    fn pod_notifier(&self) -> Option<&dyn PodNotifier> {
        Some(self)
    }
}

impl PodNotifier for FakeVirtualNode {
    fn notify_pods(&self) -> BoxStream<'static, Pod> {
        let receiver = self
            .inner
            .notify
            .get_or_init(|| broadcast::channel(256).0)
            .subscribe();
        Box::pin(stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(pod) => return Some((pod, receiver)),
                    // A slow subscriber misses some notifications; polling catches up.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

#[async_trait]
impl NodeProvider for FakeVirtualNode {
    async fn ping(&self) -> CloudResult<()> {
        self.call(Method::Ping, self.inner.node.clone(), || Ok(()))
            .await
    }
}
