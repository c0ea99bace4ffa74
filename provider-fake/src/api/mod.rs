//! The capability trait implementations: each call goes through [`FakeCloud::call`](crate::FakeCloud) (latency,
//! throttling, faults, call log) and then operates on the locked state.

mod instances;
mod load_balancers;
mod node_groups;
mod routes;
mod zones;

use k8s_openapi::api::core::v1::Node;

/// The call-log key of a node: its name, or its provider ID if it has no name.
pub(crate) fn node_key(node: &Node) -> String {
    match node.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => cloudprovider_api::node_provider_id(node)
            .unwrap_or_default()
            .to_owned(),
    }
}
