//! The addresses the cloud-node controller writes to `status.addresses`, honouring the kubelet's
//! `alpha.kubernetes.io/provided-node-ip` annotation as upstream does.

use std::net::IpAddr;

use cloudprovider_api::NodeAddress;
use k8s_openapi::api::core::v1::{self as corev1, Node};

/// The annotation a kubelet started with `--cloud-provider=external --node-ip=...` sets: one IP, or a dual-stack
/// pair separated by a comma.
pub const PROVIDED_NODE_IP_ANNOTATION: &str = "alpha.kubernetes.io/provided-node-ip";

const HOSTNAME: &str = "Hostname";

/// Why the addresses could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddressError {
    /// The annotation is not one IP or a dual-stack pair: the kubelet (or whoever set it) must fix it.
    InvalidAnnotation(String),
    /// The provided IP is not among the cloud's addresses (yet, perhaps: clouds are eventually consistent).
    NotInCloud(IpAddr),
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidAnnotation(msg) => f.write_str(msg),
            Self::NotInCloud(ip) => write!(
                f,
                "{PROVIDED_NODE_IP_ANNOTATION} {ip} is not among the addresses the cloud reports for this node"
            ),
        }
    }
}

/// Parses the annotation as upstream's `ParseNodeIPAnnotation`: one IP or a pair of different families, no
/// whitespace, no unspecified address in a pair.
pub(crate) fn parse_provided_node_ips(value: &str) -> Result<Vec<IpAddr>, AddressError> {
    let mut ips = Vec::with_capacity(2);
    for part in value.split(',') {
        let ip: IpAddr = part.parse().map_err(|_| {
            AddressError::InvalidAnnotation(format!(
                "{PROVIDED_NODE_IP_ANNOTATION}: could not parse {part:?}"
            ))
        })?;
        ips.push(ip.to_canonical());
    }
    let invalid = |msg: &str| {
        AddressError::InvalidAnnotation(format!("{PROVIDED_NODE_IP_ANNOTATION} {value:?}: {msg}"))
    };
    match ips.as_slice() {
        [_] => Ok(ips),
        [a, b] if a.is_ipv4() == b.is_ipv4() => Err(invalid(
            "must contain either a single IP or a dual-stack pair of IPs",
        )),
        [a, b] if a.is_unspecified() || b.is_unspecified() => Err(invalid(
            "dual-stack node IP cannot include '0.0.0.0' or '::'",
        )),
        [_, _] => Ok(ips),
        _ => Err(invalid(
            "must contain either a single IP or a dual-stack pair of IPs",
        )),
    }
}

fn same_ip(address: &str, ip: IpAddr) -> bool {
    address
        .parse::<IpAddr>()
        .is_ok_and(|a| a.to_canonical() == ip)
}

/// Orders `addresses` so the provided IPs come first (in the annotation's order), keeping every other address in
/// the cloud's order. Upstream's current `GetNodeAddressesFromNodeIP` sorts rather than filters: other addresses of
/// the same type stay, after the provided one. Each provided IP must be among the addresses.
pub(crate) fn prefer_provided_ips(
    ips: &[IpAddr],
    mut addresses: Vec<corev1::NodeAddress>,
) -> Result<Vec<corev1::NodeAddress>, AddressError> {
    // Last first, so the first IP of a dual-stack pair ends up in front.
    for ip in ips.iter().rev() {
        let (mut matched, rest): (Vec<_>, Vec<_>) = addresses
            .into_iter()
            .partition(|a| same_ip(&a.address, *ip));
        if matched.is_empty() {
            return Err(AddressError::NotInCloud(*ip));
        }
        matched.extend(rest);
        addresses = matched;
    }
    Ok(addresses)
}

/// The provided IPs of `node`, if it is annotated.
pub(crate) fn provided_node_ips(node: &Node) -> Result<Option<Vec<IpAddr>>, AddressError> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVIDED_NODE_IP_ANNOTATION))
        .map(|v| parse_provided_node_ips(v))
        .transpose()
}

/// The addresses `node` should have given what the cloud reports, or `None` when the cloud reports none (upstream
/// then leaves the node's addresses alone). The node's own `Hostname` is kept when the cloud has none, as
/// upstream does. Errors when the provided node IP is invalid or not among the cloud's addresses, even when the
/// cloud reports no addresses at all, so a node is never initialized with an address it did not ask for.
pub(crate) fn desired_addresses(
    node: &Node,
    cloud: &[NodeAddress],
) -> Result<Option<Vec<corev1::NodeAddress>>, AddressError> {
    let mut addresses: Vec<corev1::NodeAddress> = cloud.iter().map(NodeAddress::to_k8s).collect();
    let provided = provided_node_ips(node)?;
    if let Some(ips) = &provided {
        // Validate against the cloud's own addresses before anything else is added.
        addresses = prefer_provided_ips(ips, addresses)?;
    }
    if addresses.is_empty() {
        return Ok(None);
    }
    if !addresses.iter().any(|a| a.type_ == HOSTNAME) {
        let current = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        addresses.extend(
            current
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == HOSTNAME)
                .cloned(),
        );
    }
    Ok(Some(addresses))
}

/// The node's current `status.addresses`.
pub(crate) fn current_addresses(node: &Node) -> &[corev1::NodeAddress] {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cloudprovider_api::NodeAddressType;
    use k8s_openapi::api::core::v1::NodeStatus;
    use kube::api::ObjectMeta;

    use super::*;

    fn addr(kind: &str, address: &str) -> corev1::NodeAddress {
        corev1::NodeAddress {
            type_: kind.into(),
            address: address.into(),
        }
    }

    fn node(annotation: Option<&str>, status: Vec<corev1::NodeAddress>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                annotations: annotation.map(|v| {
                    BTreeMap::from([(PROVIDED_NODE_IP_ANNOTATION.to_owned(), v.to_owned())])
                }),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(status),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn parses_annotation_like_upstream() {
        assert_eq!(parse_provided_node_ips("10.0.0.1").map(|v| v.len()), Ok(1));
        assert_eq!(
            parse_provided_node_ips("10.0.0.1,fd00::1").map(|v| v.len()),
            Ok(2)
        );
        for bad in [
            "",
            " 10.0.0.1",
            "10.0.0.1,10.0.0.2",
            "fd00::1,fd00::2",
            "0.0.0.0,fd00::1",
            "a,b",
            "1.2.3.4,::1,5.6.7.8",
        ] {
            assert!(
                matches!(
                    parse_provided_node_ips(bad),
                    Err(AddressError::InvalidAnnotation(_))
                ),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn provided_ip_first_others_kept() {
        let cloud = vec![
            addr("InternalIP", "10.0.0.1"),
            addr("InternalIP", "10.0.0.2"),
            addr("ExternalIP", "192.0.2.1"),
            addr("InternalIP", "fd00::2"),
        ];
        let ips = parse_provided_node_ips("10.0.0.2,fd00::2").unwrap_or_default();
        let got = prefer_provided_ips(&ips, cloud).unwrap_or_default();
        let got: Vec<&str> = got.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(got, ["10.0.0.2", "fd00::2", "10.0.0.1", "192.0.2.1"]);
    }

    #[test]
    fn provided_ip_must_be_in_cloud() {
        let cloud = vec![addr("InternalIP", "10.0.0.1")];
        let ips = parse_provided_node_ips("10.0.0.9").unwrap_or_default();
        assert!(matches!(
            prefer_provided_ips(&ips, cloud),
            Err(AddressError::NotInCloud(_))
        ));
        // Even when the cloud reports no addresses.
        let n = node(Some("10.0.0.9"), vec![]);
        assert!(desired_addresses(&n, &[]).is_err());
    }

    #[test]
    fn keeps_the_nodes_hostname_when_the_cloud_has_none() {
        let n = node(
            None,
            vec![addr("Hostname", "host-1"), addr("InternalIP", "10.9.9.9")],
        );
        let cloud = [NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.1")];
        assert_eq!(
            desired_addresses(&n, &cloud),
            Ok(Some(vec![
                addr("InternalIP", "10.0.0.1"),
                addr("Hostname", "host-1")
            ]))
        );
        let cloud = [
            NodeAddress::new(NodeAddressType::InternalIp, "10.0.0.1"),
            NodeAddress::new(NodeAddressType::Hostname, "cloud-host"),
        ];
        assert_eq!(
            desired_addresses(&n, &cloud),
            Ok(Some(vec![
                addr("InternalIP", "10.0.0.1"),
                addr("Hostname", "cloud-host")
            ]))
        );
        assert_eq!(desired_addresses(&n, &[]), Ok(None));
    }
}
