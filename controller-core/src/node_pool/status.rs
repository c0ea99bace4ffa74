//! The NodePool status: counts, one entry per instance, conditions — built whole and written only when changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::crd::{NodePool, NodePoolStatus, PoolNodeStatus, ScalingDecision, SpecError};

/// Condition type: the spec is usable.
pub(crate) const VALID: &str = "Valid";
/// Condition type: no instance of the pool is launching.
pub(crate) const READY: &str = "Ready";

/// Now, in whole seconds: what a `Time` keeps after a round trip through the API, so an unchanged status compares
/// equal to the stored one and is not rewritten.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A condition that keeps its `lastTransitionTime` while its status does not change.
fn condition(
    pool: &NodePool,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = pool
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        last_transition_time: since,
        message,
        observed_generation: pool.metadata.generation,
        reason: reason.to_owned(),
        status: status.to_owned(),
        type_: type_.to_owned(),
    }
}

/// Reason of `Valid=False`: a field the schema accepts but the controller cannot use.
pub(crate) const INVALID_SPEC: &str = "InvalidSpec";
/// Reason of `Valid=False`: the provider has no such node group.
pub(crate) const NODE_GROUP_NOT_FOUND: &str = "NodeGroupNotFound";
/// Reason of `Valid=False`: an older pool already uses the node group.
pub(crate) const NODE_GROUP_IN_USE: &str = "NodeGroupInUse";

/// The status of a pool whose spec is invalid: the previous counts and nodes, `Valid=False` with `reason` naming
/// the field.
pub(crate) fn invalid(
    pool: &NodePool,
    error: &SpecError,
    reason: &str,
    now: Timestamp,
) -> NodePoolStatus {
    let mut status = pool.status.clone().unwrap_or_default();
    status.observed_generation = pool.metadata.generation;
    let valid = condition(pool, VALID, false, reason, error.to_string(), now);
    status.conditions.retain(|c| c.type_ != VALID);
    status.conditions.insert(0, valid);
    status
}

/// What one reconcile decided, for the status.
pub(crate) struct Observed {
    pub(crate) nodes: Vec<PoolNodeStatus>,
    /// The capacity of the pool's nodes, launching ones included (what `spec.limits` bounds).
    pub(crate) resources:
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    pub(crate) scale_up: Option<ScalingDecision>,
    pub(crate) scale_down: Option<ScalingDecision>,
}

/// The status after a reconcile of a valid pool.
pub(crate) fn observed(pool: &NodePool, mut observed: Observed, now: Timestamp) -> NodePoolStatus {
    let previous = pool.status.clone().unwrap_or_default();
    observed
        .nodes
        .sort_by(|a, b| a.provider_id.cmp(&b.provider_id));
    let count = |phase: &str| {
        u32::try_from(observed.nodes.iter().filter(|n| n.phase == phase).count())
            .unwrap_or(u32::MAX)
    };
    let ready = count("Ready");
    let launching = count("Launching") + count("Registered");
    let desired = ready + launching + count("NotReady");
    let ready_condition = if launching == 0 {
        condition(
            pool,
            READY,
            true,
            "NoLaunchInFlight",
            format!("{ready} node(s) ready"),
            now,
        )
    } else {
        condition(
            pool,
            READY,
            false,
            "NodesLaunching",
            format!("{launching} of {desired} node(s) launching"),
            now,
        )
    };
    NodePoolStatus {
        observed_generation: pool.metadata.generation,
        desired_nodes: desired,
        launching_nodes: launching,
        ready_nodes: ready,
        nodes: observed.nodes,
        resources: observed.resources,
        conditions: vec![
            condition(pool, VALID, true, "Valid", String::new(), now),
            ready_condition,
        ],
        last_scale_up: observed.scale_up.or(previous.last_scale_up),
        last_scale_down: observed.scale_down.or(previous.last_scale_down),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_pool::crd::NodePoolSpec;

    fn entry(phase: &str) -> PoolNodeStatus {
        PoolNodeStatus {
            provider_id: format!("fake://{phase}"),
            node_name: None,
            phase: phase.into(),
            launched_at: Time(Timestamp::UNIX_EPOCH),
            node_group: None,
        }
    }

    #[test]
    fn counts_and_stable_conditions() {
        let mut pool = NodePool::new("p", NodePoolSpec::new("g", 3));
        let t0 = now();
        let obs = || Observed {
            resources: Default::default(),
            nodes: vec![entry("Ready"), entry("Launching"), entry("Deleting")],
            scale_up: None,
            scale_down: None,
        };
        let first = observed(&pool, obs(), t0);
        assert_eq!(
            (
                first.desired_nodes,
                first.launching_nodes,
                first.ready_nodes
            ),
            (2, 1, 1)
        );
        pool.status = Some(first.clone());
        // Unchanged observations at a later time give an equal status: nothing to write.
        let later = t0 + k8s_openapi::jiff::SignedDuration::from_secs(30);
        assert_eq!(observed(&pool, obs(), later), first);

        let bad = SpecError {
            field: "spec.minNodes".into(),
            message: "too big".into(),
        };
        let inv = invalid(&pool, &bad, INVALID_SPEC, later);
        let valid = inv.conditions.iter().find(|c| c.type_ == VALID);
        assert!(valid.is_some_and(|c| c.status == "False" && c.message.contains("spec.minNodes")));
        assert_eq!(inv.ready_nodes, 1);
    }
}
