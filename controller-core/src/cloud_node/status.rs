//! Upstream's `UpdateNodeStatus`: every [`node_status_update_frequency`](super::CloudNodeConfig) the addresses of
//! each initialized Node are refreshed from the cloud, [`status_update_workers`](super::CloudNodeConfig) Nodes at a
//! time (upstream `--concurrent-node-status-updates`), with a status patch only when they changed. A pass of its
//! own, apart from the per-Node reconciles that initialize Nodes, so a slow or large refresh never delays a new
//! Node's initialization.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{CloudProvider, Instances, Unsupported};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use kube::ResourceExt;
use kube::api::{Api, Patch};
use kube::runtime::reflector::Store;
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{address_error, addresses, has_uninitialized_taint, patch_params};
use crate::runtime::{ErrorClass, PassOutcome, PeriodicPass, ReconcileError};

/// The name of the pass in the reconcile metrics (`controller` label) and logs.
pub(super) const PASS_NAME: &str = "cloud-node-status-update";

/// One refresh of every initialized Node's addresses.
pub(super) struct StatusUpdate {
    pub(super) nodes: Api<Node>,
    pub(super) store: Store<Node>,
    pub(super) provider: Arc<dyn CloudProvider>,
    pub(super) workers: usize,
}

impl PeriodicPass for StatusUpdate {
    fn name(&self) -> &'static str {
        PASS_NAME
    }

    fn pass(&self) -> impl Future<Output = PassOutcome> + Send {
        self.update_all()
    }
}

impl StatusUpdate {
    async fn update_all(&self) -> PassOutcome {
        let nodes: Vec<Arc<Node>> = self
            .store
            .state()
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none() && !has_uninitialized_taint(n))
            .collect();
        let instances = self.provider.instances().unwrap_or(&Unsupported);
        let results: Vec<Result<(), ReconcileError>> = futures::stream::iter(nodes)
            .map(|node| {
                let span = info_span!("update_node_status", name = %node.name_any());
                async move { self.update(instances, &node).await }.instrument(span)
            })
            .buffer_unordered(self.workers.max(1))
            .collect()
            .await;
        outcome(&results)
    }

    /// Refreshes one Node's addresses; writes only when they changed.
    async fn update(&self, instances: &dyn Instances, node: &Node) -> Result<(), ReconcileError> {
        let result = self.refresh(instances, node).await;
        if let Err(e) = &result {
            warn!(error = %e, "updating the node's addresses failed; retrying next period");
        }
        result
    }

    async fn refresh(&self, instances: &dyn Instances, node: &Node) -> Result<(), ReconcileError> {
        let md = instances
            .instance_metadata(node)
            .await
            .map_err(|e| ReconcileError::cloud("InstanceMetadata", e))?;
        let Some(addresses) =
            addresses::desired_addresses(node, &md.node_addresses).map_err(address_error)?
        else {
            debug!("the cloud reports no addresses; leaving the node's alone");
            return Ok(());
        };
        if addresses.as_slice() == addresses::current_addresses(node) {
            return Ok(());
        }
        info!(?addresses, "updating node addresses");
        patch_addresses(&self.nodes, &node.name_any(), &addresses).await
    }
}

/// The pass's outcome: throttled for the longest retry-after any Node got, incomplete when any Node failed.
fn outcome(results: &[Result<(), ReconcileError>]) -> PassOutcome {
    let mut outcome = PassOutcome::default();
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        outcome.incomplete = true;
        if let ErrorClass::Throttled(after) = err.class() {
            outcome.retry_after = Some(
                outcome
                    .retry_after
                    .map_or(after, |d: Duration| d.max(after)),
            );
        }
    }
    outcome
}

/// Replaces `status.addresses` of Node `name`. A merge patch replaces the list whole; a strategic merge would merge
/// by `type` and mangle nodes with two addresses of one type.
pub(super) async fn patch_addresses(
    nodes: &Api<Node>,
    name: &str,
    addresses: &[NodeAddress],
) -> Result<(), ReconcileError> {
    let patch = json!({ "status": { "addresses": addresses } });
    nodes
        .patch_status(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ReconcileError::kube("patch Node status", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use cloudprovider_api::CloudError;

    use super::*;

    #[test]
    fn outcome_takes_the_longest_retry_after_and_marks_failures() {
        let throttled = |s| {
            Err(ReconcileError::cloud(
                "InstanceMetadata",
                CloudError::throttled(Duration::from_secs(s), "slow down"),
            ))
        };
        assert_eq!(outcome(&[Ok(()), Ok(())]), PassOutcome::default());
        let o = outcome(&[Ok(()), throttled(3), throttled(7)]);
        assert_eq!(o.retry_after, Some(Duration::from_secs(7)));
        assert!(o.incomplete);
        let o = outcome(&[Err(ReconcileError::cloud(
            "InstanceMetadata",
            CloudError::transient("boom"),
        ))]);
        assert_eq!(o.retry_after, None);
        assert!(o.incomplete);
    }
}
