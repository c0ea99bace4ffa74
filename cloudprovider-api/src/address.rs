//! Node address types, as in `core/v1` `NodeAddress`.

use std::fmt;

use k8s_openapi::api::core::v1 as corev1;
use serde::{Deserialize, Serialize};

/// The type of a node address (`status.addresses[].type`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum NodeAddressType {
    /// `Hostname`
    Hostname,
    /// `InternalIP`
    #[serde(rename = "InternalIP")]
    InternalIp,
    /// `ExternalIP`
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    /// `InternalDNS`
    #[serde(rename = "InternalDNS")]
    InternalDns,
    /// `ExternalDNS`
    #[serde(rename = "ExternalDNS")]
    ExternalDns,
}

impl NodeAddressType {
    /// The string Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hostname => "Hostname",
            Self::InternalIp => "InternalIP",
            Self::ExternalIp => "ExternalIP",
            Self::InternalDns => "InternalDNS",
            Self::ExternalDns => "ExternalDNS",
        }
    }

    /// Parses the string Kubernetes uses; `None` for an unknown type.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Hostname" => Self::Hostname,
            "InternalIP" => Self::InternalIp,
            "ExternalIP" => Self::ExternalIp,
            "InternalDNS" => Self::InternalDns,
            "ExternalDNS" => Self::ExternalDns,
            _ => return None,
        })
    }
}

impl fmt::Display for NodeAddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One address of a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeAddress {
    /// The address type.
    #[serde(rename = "type")]
    pub kind: NodeAddressType,
    /// The address (an IP or DNS name).
    pub address: String,
}

impl NodeAddress {
    /// A new address.
    pub fn new(kind: NodeAddressType, address: impl Into<String>) -> Self {
        Self {
            kind,
            address: address.into(),
        }
    }

    /// Converts a Kubernetes address; `None` if its type is unknown.
    pub fn from_k8s(a: &corev1::NodeAddress) -> Option<Self> {
        NodeAddressType::parse(&a.type_).map(|kind| Self::new(kind, a.address.clone()))
    }

    /// Converts to the Kubernetes type.
    pub fn to_k8s(&self) -> corev1::NodeAddress {
        corev1::NodeAddress {
            type_: self.kind.as_str().to_owned(),
            address: self.address.clone(),
        }
    }
}

/// The addresses of `node.status.addresses` that have a known type.
pub fn node_addresses(node: &corev1::Node) -> Vec<NodeAddress> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|addrs| addrs.iter().filter_map(NodeAddress::from_k8s).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for t in [
            NodeAddressType::Hostname,
            NodeAddressType::InternalIp,
            NodeAddressType::ExternalIp,
            NodeAddressType::InternalDns,
            NodeAddressType::ExternalDns,
        ] {
            assert_eq!(NodeAddressType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(NodeAddressType::parse("internalip"), None);
        let a = NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.1");
        assert_eq!(NodeAddress::from_k8s(&a.to_k8s()), Some(a));
    }
}
