//! Tag names and the ownership rules built on them.

use std::collections::BTreeMap;

/// Prefix of the cluster tag: `kubernetes.io/cluster/<clusterId>` = `owned` | `shared`.
pub const TAG_CLUSTER_PREFIX: &str = "kubernetes.io/cluster/";
/// The cluster tag value of resources this cluster created and may delete.
pub const TAG_VALUE_OWNED: &str = "owned";
/// The cluster tag value of resources this cluster uses but never deletes.
pub const TAG_VALUE_SHARED: &str = "shared";
/// Tag on load balancers and target groups: `<namespace>/<name>` of the Service.
pub const TAG_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Subnet role tag for internet-facing load balancers.
pub const TAG_ROLE_ELB: &str = "kubernetes.io/role/elb";
/// Subnet role tag for internal load balancers.
pub const TAG_ROLE_INTERNAL_ELB: &str = "kubernetes.io/role/internal-elb";
/// Tag carrying the node group id on instances launched for a node group.
pub const TAG_NODE_GROUP: &str = "kube-cloud-rs/node-group";

/// The cluster's tag key and ownership checks.
#[derive(Clone, Debug)]
pub(crate) struct Tagging {
    pub(crate) cluster_key: String,
}

impl Tagging {
    pub(crate) fn new(cluster_id: &str) -> Self {
        Self {
            cluster_key: format!("{TAG_CLUSTER_PREFIX}{cluster_id}"),
        }
    }

    /// True when `tags` say this cluster owns the resource.
    pub(crate) fn owned<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        tags.into_iter()
            .any(|(k, v)| k == self.cluster_key && v == TAG_VALUE_OWNED)
    }

    /// The tags of a resource this cluster creates, plus `extra`.
    pub(crate) fn owned_tags(&self, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut tags = extra.clone();
        tags.insert(self.cluster_key.clone(), TAG_VALUE_OWNED.to_owned());
        tags
    }
}
