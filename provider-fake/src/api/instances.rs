//! [`Instances`] for the fake cloud.

use async_trait::async_trait;
use cloudprovider_api::{CloudError, CloudResult, InstanceMetadata, InstanceState, Instances};
use k8s_openapi::api::core::v1::Node;
use tokio::time::Instant;

use super::node_key;
use crate::calls::CallOutcome;
use crate::cloud::{FakeCloud, lock};
use crate::method::Method;
use crate::state::State;
use crate::state::instances::{FakeInstanceState, InstanceRecord};

/// The existing instance behind `node`, or `NotFound`.
fn existing<'a>(
    st: &'a mut State,
    node: &Node,
    auto_create: bool,
    now: Instant,
) -> CloudResult<&'a InstanceRecord> {
    match st.instances.resolve(node, auto_create)? {
        Some(r) if r.exists_at(now) => Ok(r),
        _ => Err(CloudError::not_found("instance", node_key(node))),
    }
}

fn state_of(
    st: &mut State,
    node: &Node,
    auto_create: bool,
    now: Instant,
) -> CloudResult<InstanceState> {
    Ok(
        match st
            .instances
            .resolve(node, auto_create)?
            .map(|r| r.state_at(now))
        {
            Some(FakeInstanceState::Creating | FakeInstanceState::Running) => {
                InstanceState::Running
            }
            Some(FakeInstanceState::Stopped) => InstanceState::Shutdown,
            Some(FakeInstanceState::Terminated | FakeInstanceState::Failed) | None => {
                InstanceState::Gone
            }
        },
    )
}

#[async_trait]
impl Instances for FakeCloud {
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        let auto = self.auto_create();
        self.call(Method::InstanceExists, node_key(node), |st, now| {
            Ok(st
                .instances
                .resolve(node, auto)?
                .is_some_and(|r| r.exists_at(now)))
        })
        .await
    }

    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        let auto = self.auto_create();
        self.call(Method::InstanceShutdown, node_key(node), |st, now| {
            Ok(existing(st, node, auto, now)?.state_at(now) == FakeInstanceState::Stopped)
        })
        .await
    }

    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        let auto = self.auto_create();
        self.call(Method::InstanceMetadata, node_key(node), |st, now| {
            Ok(existing(st, node, auto, now)?.metadata())
        })
        .await
    }

    /// One call for the whole batch, under one lock. A method-wide fault or throttling fails every entry; a
    /// per-key fault (key = node name) fails only that node's entry.
    async fn instance_states(&self, nodes: &[&Node]) -> Vec<CloudResult<InstanceState>> {
        let method = Method::InstanceStates;
        let key = nodes
            .iter()
            .map(|n| node_key(n))
            .collect::<Vec<_>>()
            .join(",");
        self.delay(method).await;
        let now = Instant::now();
        let (denied, keyed) = {
            let mut faults = lock(&self.inner.faults);
            match faults.check_method(method, now) {
                Some(denial) => (Some(denial), Vec::new()),
                None => {
                    let keyed: Vec<_> = nodes
                        .iter()
                        .map(|n| faults.take_keyed(method, &node_key(n)))
                        .collect();
                    (None, keyed)
                }
            }
        };
        if let Some(denial) = denied {
            let label = denial.to_error(method, &key).kind_label();
            self.record(method, key, CallOutcome::Err(label));
            return nodes
                .iter()
                .map(|n| Err(denial.to_error(method, &node_key(n))))
                .collect();
        }
        let auto = self.auto_create();
        let out: Vec<_> = {
            let mut st = self.state();
            nodes
                .iter()
                .zip(keyed)
                .map(|(node, fault)| match fault {
                    Some(denial) => Err(denial.to_error(method, &node_key(node))),
                    None => state_of(&mut st, node, auto, now),
                })
                .collect()
        };
        self.record(method, key, CallOutcome::Ok);
        out
    }
}
