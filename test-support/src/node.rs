//! Node objects for tests, built as a kubelet (or a test) would register them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE};

/// The taint a kubelet with `--cloud-provider=external` registers with, and the cloud-node controller removes.
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// Builds a [`Node`]. Only what is asked for is set: `NodeBuilder::new("a").build()` has a name and nothing
/// else (no `spec`, no `status`); `spec` appears with a provider ID, taints or pod CIDRs, `status` with
/// addresses, conditions or resources. Lists keep the order of the calls.
///
/// ```
/// use test_support::NodeBuilder;
///
/// let node = NodeBuilder::new("node-a")
///     .uninitialized()
///     .provider_id("fake://node-a")
///     .label("team", "storage")
///     .address("InternalIP", "10.0.0.1")
///     .build();
/// assert_eq!(node.metadata.name.as_deref(), Some("node-a"));
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct NodeBuilder {
    metadata: ObjectMeta,
    spec: Option<NodeSpec>,
    status: Option<NodeStatus>,
}

impl NodeBuilder {
    /// A Node named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        NodeBuilder {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: None,
        }
    }

    fn spec(&mut self) -> &mut NodeSpec {
        self.spec.get_or_insert_default()
    }

    fn status(&mut self) -> &mut NodeStatus {
        self.status.get_or_insert_default()
    }

    /// `metadata.uid` (for Nodes handed to a provider directly, never created on an apiserver).
    pub fn uid(mut self, uid: impl Into<String>) -> Self {
        self.metadata.uid = Some(uid.into());
        self
    }

    /// A label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata
            .labels
            .get_or_insert_default()
            .insert(key.into(), value.into());
        self
    }

    /// An annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata
            .annotations
            .get_or_insert_default()
            .insert(key.into(), value.into());
        self
    }

    /// Kwok's annotation, so kwok plays the kubelet (see [`crate::KwokOptions`]).
    pub fn kwok(self) -> Self {
        self.annotation(KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE)
    }

    /// `spec.providerID`.
    pub fn provider_id(mut self, provider_id: impl Into<String>) -> Self {
        self.spec().provider_id = Some(provider_id.into());
        self
    }

    /// A taint; `value` is a `&str` or `None`.
    pub fn taint<'a>(self, key: &str, value: impl Into<Option<&'a str>>, effect: &str) -> Self {
        self.with_taint(Taint {
            key: key.to_owned(),
            value: value.into().map(str::to_owned),
            effect: effect.to_owned(),
            ..Taint::default()
        })
    }

    /// A taint given whole.
    pub fn with_taint(mut self, taint: Taint) -> Self {
        self.spec().taints.get_or_insert_default().push(taint);
        self
    }

    /// The taint a kubelet with `--cloud-provider=external` registers with: [`UNINITIALIZED_TAINT`]`=true:NoSchedule`.
    pub fn uninitialized(self) -> Self {
        self.taint(UNINITIALIZED_TAINT, "true", "NoSchedule")
    }

    /// `spec.podCIDRs`, and `spec.podCIDR` = the first (as the apiserver requires).
    pub fn pod_cidrs(mut self, cidrs: &[&str]) -> Self {
        let spec = self.spec();
        spec.pod_cidr = cidrs.first().map(|c| (*c).to_owned());
        spec.pod_cidrs = Some(cidrs.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// An address in `status.addresses`, e.g. `("InternalIP", "10.0.0.1")`.
    pub fn address(mut self, type_: &str, address: &str) -> Self {
        self.status()
            .addresses
            .get_or_insert_default()
            .push(NodeAddress {
                type_: type_.to_owned(),
                address: address.to_owned(),
            });
        self
    }

    /// A condition in `status.conditions`, e.g. `("Ready", "Unknown")`.
    pub fn condition(mut self, type_: &str, status: &str) -> Self {
        self.status()
            .conditions
            .get_or_insert_default()
            .push(NodeCondition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                ..NodeCondition::default()
            });
        self
    }

    /// The `Ready` condition, `"True"` or `"False"`.
    pub fn ready(self, ready: bool) -> Self {
        self.condition("Ready", if ready { "True" } else { "False" })
    }

    /// `status.capacity` (replacing any set before).
    pub fn capacity(mut self, capacity: BTreeMap<String, Quantity>) -> Self {
        self.status().capacity = Some(capacity);
        self
    }

    /// `status.allocatable` (replacing any set before).
    pub fn allocatable(mut self, allocatable: BTreeMap<String, Quantity>) -> Self {
        self.status().allocatable = Some(allocatable);
        self
    }

    /// The Node.
    pub fn build(self) -> Node {
        Node {
            metadata: self.metadata,
            spec: self.spec,
            status: self.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_only_what_is_asked_for() {
        let name_only = NodeBuilder::new("a").build();
        assert_eq!(
            name_only,
            Node {
                metadata: ObjectMeta {
                    name: Some("a".into()),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            }
        );
    }

    #[test]
    fn builds_every_part_in_call_order() {
        let node = NodeBuilder::new("a")
            .uid("uid-a")
            .label("l", "1")
            .annotation("an", "2")
            .uninitialized()
            .taint("k", None, "NoExecute")
            .provider_id("fake://a")
            .pod_cidrs(&["10.0.0.0/24", "fd00::/64"])
            .address("InternalIP", "10.1.0.1")
            .ready(false)
            .build();
        let spec = node.spec.unwrap_or_default();
        let status = node.status.unwrap_or_default();
        assert_eq!(node.metadata.uid.as_deref(), Some("uid-a"));
        assert_eq!(
            node.metadata.labels,
            Some(BTreeMap::from([("l".into(), "1".into())]))
        );
        assert_eq!(
            node.metadata.annotations,
            Some(BTreeMap::from([("an".into(), "2".into())]))
        );
        assert_eq!(
            spec.taints,
            Some(vec![
                Taint {
                    key: UNINITIALIZED_TAINT.into(),
                    value: Some("true".into()),
                    effect: "NoSchedule".into(),
                    time_added: None,
                },
                Taint {
                    key: "k".into(),
                    value: None,
                    effect: "NoExecute".into(),
                    time_added: None,
                },
            ])
        );
        assert_eq!(spec.provider_id.as_deref(), Some("fake://a"));
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.0.0.0/24"));
        assert_eq!(
            spec.pod_cidrs,
            Some(vec!["10.0.0.0/24".into(), "fd00::/64".into()])
        );
        assert_eq!(
            status.addresses,
            Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "10.1.0.1".into()
            }])
        );
        let conditions = status.conditions.unwrap_or_default();
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].status.as_str()),
            ("Ready", "False")
        );
    }
}
