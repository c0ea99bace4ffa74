//! The `NetworkUnavailable` Node condition the route controller owns.

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value};

use super::CONTROLLER_NAME;
use crate::runtime::ReconcileError;

/// The Node condition type the route controller sets.
pub const CONDITION_NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";
/// Reason of `NetworkUnavailable=False`: every pod CIDR of the node has a route.
pub const REASON_ROUTE_CREATED: &str = "RouteCreated";
/// Reason of `NetworkUnavailable=True`: creating a route for the node failed.
pub const REASON_NO_ROUTE_CREATED: &str = "NoRouteCreated";

/// The networking state of a node, as the route controller reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Networking {
    /// All routes exist: `NetworkUnavailable=False`, reason `RouteCreated`.
    RouteCreated,
    /// A route could not be created: `NetworkUnavailable=True`, reason `NoRouteCreated`.
    NoRouteCreated,
}

impl Networking {
    fn status(self) -> &'static str {
        match self {
            Self::RouteCreated => "False",
            Self::NoRouteCreated => "True",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::RouteCreated => REASON_ROUTE_CREATED,
            Self::NoRouteCreated => REASON_NO_ROUTE_CREATED,
        }
    }

    // Upstream's messages, word for word: dashboards and alerts match on them.
    fn message(self) -> &'static str {
        match self {
            Self::RouteCreated => "RouteController created a route",
            Self::NoRouteCreated => "RouteController failed to create a route",
        }
    }
}

/// The strategic-merge patch that sets `NetworkUnavailable` to `want` on `node`, or `None` when its status and
/// reason already match (no write, so steady-state rounds cost the apiserver nothing).
///
/// Node conditions merge by `type` under a strategic-merge patch, so the patch carries only this condition (as
/// upstream's `SetNodeCondition` does): the kubelet's conditions are neither sent nor needed, and the Node cache
/// may leave them out ([`projection`](crate::runtime::projection)).
pub(super) fn condition_patch(
    node: &Node,
    want: Networking,
    now: Time,
) -> Result<Option<Value>, serde_json::Error> {
    let current = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|all| {
            all.iter()
                .find(|c| c.type_ == CONDITION_NETWORK_UNAVAILABLE)
        });
    if let Some(c) = current
        && c.status == want.status()
        && c.reason.as_deref() == Some(want.reason())
    {
        return Ok(None);
    }
    // The transition time moves only when the status flips; a reason change alone keeps it.
    let transition = current
        .filter(|c| c.status == want.status())
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let condition = NodeCondition {
        type_: CONDITION_NETWORK_UNAVAILABLE.to_owned(),
        status: want.status().to_owned(),
        reason: Some(want.reason().to_owned()),
        message: Some(want.message().to_owned()),
        last_transition_time: Some(transition),
        last_heartbeat_time: Some(now),
    };
    let mut status = Map::new();
    status.insert("conditions".into(), serde_json::to_value([condition])?);
    let mut patch = Map::new();
    patch.insert("status".into(), Value::Object(status));
    Ok(Some(Value::Object(patch)))
}

/// What [`set_condition`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConditionUpdate {
    /// The condition already said so.
    Unchanged,
    /// Patched.
    Patched,
    /// The Node is gone (404) since it was cached; the next round decides again.
    Stale,
}

/// Sets `NetworkUnavailable` to `want` on `node` (as cached) through the status subresource.
pub(super) async fn set_condition(
    api: &Api<Node>,
    node: &Node,
    want: Networking,
) -> Result<ConditionUpdate, ReconcileError> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let patch = condition_patch(node, want, now)
        .map_err(|e| ReconcileError::invalid("status.conditions", e.to_string()))?;
    let Some(patch) = patch else {
        return Ok(ConditionUpdate::Unchanged);
    };
    let params = PatchParams {
        field_manager: Some(CONTROLLER_NAME.to_owned()),
        ..PatchParams::default()
    };
    match api
        .patch_status(&node.name_any(), &params, &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => Ok(ConditionUpdate::Patched),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
            Ok(ConditionUpdate::Stale)
        }
        Err(e) => Err(ReconcileError::kube("patch Node status", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use kube::api::ObjectMeta;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
    }

    fn node_with(conditions: Vec<NodeCondition>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(conditions),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ready() -> NodeCondition {
        NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }
    }

    fn conditions_of(patch: &Value) -> Vec<NodeCondition> {
        serde_json::from_value(patch["status"]["conditions"].clone()).unwrap_or_default()
    }

    #[test]
    fn patches_only_its_own_condition() {
        let patch = condition_patch(&node_with(vec![ready()]), Networking::RouteCreated, at(100))
            .ok()
            .flatten();
        let Some(patch) = patch else {
            panic!("expected a patch")
        };
        assert!(patch.get("metadata").is_none(), "{patch}");
        let c = conditions_of(&patch);
        assert_eq!(c.len(), 1, "the kubelet's conditions are not sent");
        assert_eq!(c[0].type_, CONDITION_NETWORK_UNAVAILABLE);
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].reason.as_deref(), Some("RouteCreated"));
        assert_eq!(
            c[0].message.as_deref(),
            Some("RouteController created a route")
        );
        assert_eq!(c[0].last_transition_time, Some(at(100)));
        assert_eq!(c[0].last_heartbeat_time, Some(at(100)));
    }

    #[test]
    fn unchanged_is_no_patch_and_flips_move_the_transition_time() {
        let mut created = NodeCondition {
            type_: CONDITION_NETWORK_UNAVAILABLE.into(),
            status: "False".into(),
            reason: Some("RouteCreated".into()),
            last_transition_time: Some(at(10)),
            ..Default::default()
        };
        let node = node_with(vec![created.clone(), ready()]);
        assert!(matches!(
            condition_patch(&node, Networking::RouteCreated, at(100)),
            Ok(None)
        ));

        let flipped = condition_patch(&node, Networking::NoRouteCreated, at(100))
            .ok()
            .flatten();
        let c = conditions_of(&flipped.unwrap_or_default());
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_deref()),
            ("True", Some("NoRouteCreated"))
        );
        assert_eq!(c[0].last_transition_time, Some(at(100)));

        // Same status, other reason (e.g. set by another component): patched, transition time kept.
        created.reason = Some("Other".into());
        let node = node_with(vec![created]);
        let patched = condition_patch(&node, Networking::RouteCreated, at(100))
            .ok()
            .flatten();
        let c = conditions_of(&patched.unwrap_or_default());
        assert_eq!(c[0].reason.as_deref(), Some("RouteCreated"));
        assert_eq!(c[0].last_transition_time, Some(at(10)));
        assert_eq!(c[0].last_heartbeat_time, Some(at(100)));
    }
}
