//! Instances (upstream `InstancesV2`): lookups by provider ID or private DNS name, batched `DescribeInstances`.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, NetworkInterfaceStatus};
use cloudprovider_api::{
    CloudError, CloudResult, InstanceMetadata, InstanceState, Instances, NodeAddress,
    NodeAddressType, PROVIDER_ID_FIELD, async_trait, node_provider_id,
};
use k8s_openapi::api::core::v1::Node;
use tracing::instrument;

use crate::AwsCloud;
use crate::config::IpFamily;
use crate::error::{AwsResult, api_error};

/// How many instance IDs or DNS names one `DescribeInstances` call filters on (upstream's `filterNodeLimit`).
pub const DESCRIBE_BATCH_SIZE: usize = 150;

/// Parses the instance ID out of a provider ID: `aws:///<zone>/<id>`, `aws:////<id>`, `aws://<id>`, or a bare
/// `i-…`, as upstream accepts.
///
/// ```
/// use provider_aws::instance_id_from_provider_id;
/// assert_eq!(instance_id_from_provider_id("aws:///us-east-1a/i-0abc123").unwrap(), "i-0abc123");
/// assert_eq!(instance_id_from_provider_id("aws:////i-0abc123").unwrap(), "i-0abc123");
/// assert_eq!(instance_id_from_provider_id("i-0abc123").unwrap(), "i-0abc123");
/// assert!(instance_id_from_provider_id("gce://p/z/i-0abc123").is_err());
/// assert!(instance_id_from_provider_id("aws:///us-east-1a/vm-1").is_err());
/// ```
pub fn instance_id_from_provider_id(provider_id: &str) -> CloudResult<String> {
    let invalid = |why: &str| {
        CloudError::invalid_input(
            PROVIDER_ID_FIELD,
            format!(
                "{provider_id:?} is not an AWS provider ID ({why}); want aws:///<zone>/<instance-id>"
            ),
        )
    };
    let path = match provider_id.split_once("://") {
        None => provider_id,
        Some((crate::PROVIDER_NAME, rest)) => rest,
        Some(_) => return Err(invalid("scheme is not aws")),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let id = match segments.as_slice() {
        [id] | [_, id] => *id,
        _ => return Err(invalid("too many path segments")),
    };
    if is_instance_id(id) {
        Ok(id.to_owned())
    } else {
        Err(invalid("the instance ID must look like i-0123abcd"))
    }
}

fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The provider ID of an instance: `aws:///<zone>/<instance-id>`.
pub(crate) fn provider_id_of(instance: &Instance) -> String {
    format!(
        "aws:///{}/{}",
        zone_of(instance),
        instance.instance_id().unwrap_or_default()
    )
}

fn zone_of(instance: &Instance) -> &str {
    instance
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap_or_default()
}

/// How a Node is found: by the instance ID of its provider ID, or by private DNS name (its node name) while it
/// has no provider ID yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum NodeKey {
    Id(String),
    Name(String),
}

pub(crate) fn node_key(node: &Node) -> CloudResult<NodeKey> {
    if let Some(provider_id) = node_provider_id(node) {
        return instance_id_from_provider_id(provider_id).map(NodeKey::Id);
    }
    match node.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(NodeKey::Name(name.to_owned())),
        _ => Err(CloudError::invalid_input(
            "metadata.name",
            "a node without provider ID needs a name",
        )),
    }
}

pub(crate) fn is_terminated(instance: &Instance) -> bool {
    matches!(
        instance.state().and_then(|s| s.name()),
        Some(InstanceStateName::Terminated)
    )
}

/// Whether ELBv2 accepts the instance as a target: only running instances are.
pub(crate) fn is_running(instance: &Instance) -> bool {
    matches!(
        instance.state().and_then(|s| s.name()),
        Some(InstanceStateName::Running)
    )
}

fn state_of(instance: Option<&Instance>) -> InstanceState {
    match instance {
        None => InstanceState::Gone,
        Some(i) if is_terminated(i) => InstanceState::Gone,
        Some(i) => match i.state().and_then(|s| s.name()) {
            Some(InstanceStateName::Stopped) => InstanceState::Shutdown,
            _ => InstanceState::Running,
        },
    }
}

/// Upstream's address order: every private IP by device index (primary first), the public IP, then the private
/// DNS name as InternalDNS and Hostname, and the public DNS name.
/// The Node addresses of `instance` for `families`, in that order (upstream's `getInstanceNodeAddress`).
pub(crate) fn addresses_of(instance: &Instance, families: &[IpFamily]) -> Vec<NodeAddress> {
    let mut out = Vec::new();
    for family in families {
        match family {
            IpFamily::Ipv4 => out.extend(ipv4_addresses_of(instance)),
            IpFamily::Ipv6 => out.extend(ipv6_addresses_of(instance)),
        }
    }
    out
}

/// The first IPv6 address of every network interface in use, as `InternalIP` (upstream's rule).
fn ipv6_addresses_of(instance: &Instance) -> Vec<NodeAddress> {
    let mut interfaces: Vec<_> = instance.network_interfaces().iter().collect();
    interfaces.sort_by_key(|n| n.attachment().and_then(|a| a.device_index()).unwrap_or(0));
    interfaces
        .into_iter()
        .filter(|n| n.status() == Some(&NetworkInterfaceStatus::InUse))
        .filter_map(|n| n.ipv6_addresses().first()?.ipv6_address())
        .filter_map(|a| a.parse::<std::net::Ipv6Addr>().ok())
        .map(|ip| NodeAddress::new(NodeAddressType::InternalIp, ip.to_string()))
        .collect()
}

fn ipv4_addresses_of(instance: &Instance) -> Vec<NodeAddress> {
    let mut out: Vec<NodeAddress> = Vec::new();
    let mut push = |kind, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            let a = NodeAddress::new(kind, v);
            if !out.contains(&a) {
                out.push(a);
            }
        }
    };
    let mut interfaces: Vec<_> = instance.network_interfaces().iter().collect();
    interfaces.sort_by_key(|n| n.attachment().and_then(|a| a.device_index()).unwrap_or(0));
    for interface in interfaces {
        let mut ips: Vec<_> = interface.private_ip_addresses().iter().collect();
        ips.sort_by_key(|ip| !ip.primary().unwrap_or(false));
        for ip in ips {
            push(NodeAddressType::InternalIp, ip.private_ip_address());
        }
    }
    push(NodeAddressType::InternalIp, instance.private_ip_address());
    push(NodeAddressType::ExternalIp, instance.public_ip_address());
    push(NodeAddressType::InternalDns, instance.private_dns_name());
    push(NodeAddressType::Hostname, instance.private_dns_name());
    push(NodeAddressType::ExternalDns, instance.public_dns_name());
    out
}

/// The zone-ID label upstream adds to Nodes (`use1-az1`: the same physical zone in every account, unlike the name).
pub const LABEL_ZONE_ID: &str = "topology.k8s.aws/zone-id";

impl AwsCloud {
    /// The ID of zone `zone_name`, from one `DescribeAvailabilityZones` of the region remembered for the
    /// process's life (zone IDs never change); `None` if the region has no such zone.
    pub(crate) async fn zone_id(&self, zone_name: &str) -> AwsResult<Option<String>> {
        if let Some(id) = self.inner.known().zone_ids.get(zone_name) {
            return Ok(Some(id.clone()));
        }
        let out = self
            .inner
            .ec2
            .describe_availability_zones()
            .all_availability_zones(true)
            .send()
            .await
            .map_err(|e| api_error("DescribeAvailabilityZones", e))?;
        let mut known = self.inner.known();
        for zone in out.availability_zones() {
            if let (Some(name), Some(id)) = (zone.zone_name(), zone.zone_id()) {
                known.zone_ids.insert(name.to_owned(), id.to_owned());
            }
        }
        Ok(known.zone_ids.get(zone_name).cloned())
    }

    /// Describes instances matching `filter_name` ∈ `values`, in batches of [`DESCRIBE_BATCH_SIZE`] values
    /// (following pagination), returning every instance found.
    pub(crate) async fn describe_instances_where(
        &self,
        filter_name: &str,
        values: &[String],
        extra: &[Filter],
    ) -> AwsResult<Vec<Instance>> {
        let mut found = Vec::new();
        for chunk in values.chunks(DESCRIBE_BATCH_SIZE) {
            let mut filters = extra.to_vec();
            filters.push(
                Filter::builder()
                    .name(filter_name)
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            );
            found.extend(self.describe_instances_filtered(filters).await?);
        }
        Ok(found)
    }

    /// One logical `DescribeInstances` with `filters`, following `NextToken`.
    pub(crate) async fn describe_instances_filtered(
        &self,
        filters: Vec<Filter>,
    ) -> AwsResult<Vec<Instance>> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .inner
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeInstances", e))?;
            for reservation in out.reservations() {
                found.extend(reservation.instances().iter().cloned());
            }
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    /// Looks up the instances of many nodes at once: one batch by instance ID, one by private DNS name.
    /// Absent instances are missing from the map. By name, a live instance wins over a terminated one.
    pub(crate) async fn lookup(&self, keys: &[NodeKey]) -> AwsResult<HashMap<NodeKey, Instance>> {
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for key in keys {
            match key {
                NodeKey::Id(id) if !ids.contains(id) => ids.push(id.clone()),
                NodeKey::Name(name) if !names.contains(name) => names.push(name.clone()),
                _ => {}
            }
        }
        let mut found = HashMap::new();
        if !ids.is_empty() {
            for instance in self
                .describe_instances_where("instance-id", &ids, &[])
                .await?
            {
                if let Some(id) = instance.instance_id() {
                    found.insert(NodeKey::Id(id.to_owned()), instance);
                }
            }
        }
        if !names.is_empty() {
            for instance in self
                .describe_instances_where("private-dns-name", &names, &[])
                .await?
            {
                let Some(name) = instance.private_dns_name().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let key = NodeKey::Name(name.to_owned());
                let keep_existing = found
                    .get(&key)
                    .is_some_and(|existing: &Instance| !is_terminated(existing));
                if !keep_existing {
                    found.insert(key, instance);
                }
            }
        }
        Ok(found)
    }

    /// The instance behind one node, `None` if absent.
    async fn instance_of(&self, node: &Node) -> CloudResult<Option<Instance>> {
        let key = node_key(node)?;
        let mut found = self
            .lookup(std::slice::from_ref(&key))
            .await
            .map_err(|e| self.cloud_error(e))?;
        Ok(found.remove(&key))
    }

    /// The live (not terminated) instance behind `node`, or `NotFound`.
    async fn live_instance_of(&self, node: &Node) -> CloudResult<Instance> {
        match self.instance_of(node).await? {
            Some(i) if !is_terminated(&i) => Ok(i),
            _ => Err(CloudError::not_found("instance", node_label(node))),
        }
    }
}

fn node_label(node: &Node) -> String {
    node_provider_id(node)
        .or(node.metadata.name.as_deref())
        .unwrap_or_default()
        .to_owned()
}

#[async_trait]
impl Instances for AwsCloud {
    #[instrument(skip_all, fields(node = node.metadata.name.as_deref()))]
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        Ok(state_of(self.instance_of(node).await?.as_ref()) != InstanceState::Gone)
    }

    #[instrument(skip_all, fields(node = node.metadata.name.as_deref()))]
    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        let instance = self.live_instance_of(node).await?;
        Ok(state_of(Some(&instance)) == InstanceState::Shutdown)
    }

    #[instrument(skip_all, fields(node = node.metadata.name.as_deref()))]
    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        let instance = self.live_instance_of(node).await?;
        let zone = zone_of(&instance).to_owned();
        let mut additional_labels = std::collections::BTreeMap::new();
        let has_zone_id = node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_ZONE_ID));
        if !has_zone_id && !zone.is_empty() {
            let zone_id = self.zone_id(&zone).await.map_err(|e| self.cloud_error(e))?;
            additional_labels.extend(zone_id.map(|id| (LABEL_ZONE_ID.to_owned(), id)));
        }
        Ok(InstanceMetadata {
            provider_id: provider_id_of(&instance),
            instance_type: instance
                .instance_type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            node_addresses: addresses_of(&instance, &self.inner.config.ip_families()),
            zone,
            // The instance was found through this region's endpoint. (Cutting the zone's letter, as upstream does,
            // is wrong for Local Zones such as us-west-2-lax-1a.)
            region: self.inner.region.clone(),
            additional_labels,
        })
    }

    /// One `DescribeInstances` per [`DESCRIBE_BATCH_SIZE`] nodes with provider IDs (plus one per batch of nodes
    /// still without one), whatever the number of nodes.
    #[instrument(skip_all, fields(nodes = nodes.len()))]
    async fn instance_states(&self, nodes: &[&Node]) -> Vec<CloudResult<InstanceState>> {
        let keys: Vec<CloudResult<NodeKey>> = nodes.iter().map(|n| node_key(n)).collect();
        let valid: Vec<NodeKey> = keys
            .iter()
            .filter_map(|k| k.as_ref().ok().cloned())
            .collect();
        let found = match self.lookup(&valid).await {
            Ok(found) => found,
            Err(e) => {
                let e = self.cloud_error(e);
                // Every node shares the failure; repeat it (CloudError is not Clone).
                return keys.iter().map(|_| Err(repeat_error(&e))).collect();
            }
        };
        keys.into_iter()
            .map(|key| key.map(|k| state_of(found.get(&k))))
            .collect()
    }
}

/// A copy of `e` for batch answers (same variant, same retry policy).
pub(crate) fn repeat_error(e: &CloudError) -> CloudError {
    match e {
        CloudError::Throttled {
            retry_after,
            message,
        } => CloudError::throttled(*retry_after, message.clone()),
        CloudError::InvalidInput { field, message } => {
            CloudError::invalid_input(field.clone(), message.clone())
        }
        CloudError::NotFound { kind, id } => CloudError::not_found(kind, id.clone()),
        CloudError::Transient { message, .. } => CloudError::transient(message.clone()),
        other => CloudError::transient(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_errors_keep_their_message_once() {
        let e = CloudError::transient("AWS DescribeInstances failed: InternalError");
        let copy = repeat_error(&e);
        assert_eq!(copy.to_string(), e.to_string());
        let throttled = CloudError::throttled(std::time::Duration::from_secs(3), "slow down");
        assert_eq!(repeat_error(&throttled).to_string(), throttled.to_string());
    }
}
