//! Instances: the input type, the snapshot type and the store with lookup by provider ID or node name.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use cloudprovider_api::{
    CloudError, CloudInstanceError, CloudResult, InstanceMetadata, NodeAddress, NodeAddressType,
    ProviderId, node_provider_id,
};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::FakeError;

/// The state of a fake instance.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum FakeInstanceState {
    /// Requested from a node group, not yet running. Exists (not shut down) for the `Instances` capability.
    Creating,
    /// Running.
    #[default]
    Running,
    /// Stopped: exists, and is shut down.
    Stopped,
    /// Terminated: does not exist (`instance_exists` is false, metadata and shutdown are `NotFound`).
    Terminated,
    /// Failed to come up (node groups with [`Provisioning::Fail`](crate::Provisioning::Fail)): does not exist.
    Failed,
}

impl FakeInstanceState {
    /// Whether an instance in this state exists for the `Instances` capability.
    pub fn exists(self) -> bool {
        matches!(self, Self::Creating | Self::Running | Self::Stopped)
    }
}

/// An instance to add with [`FakeCloud::add_instance`](crate::FakeCloud::add_instance) or list in
/// [`FakeConfig::instances`](crate::FakeConfig::instances). Unset fields take the cloud's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FakeInstance {
    /// The node name the instance registers as.
    pub name: String,
    /// The provider ID; default `<provider>://<name>`. Must use the provider's scheme.
    #[serde(default)]
    pub provider_id: Option<String>,
    /// Instance type; default [`FakeConfig::default_instance_type`](crate::FakeConfig::default_instance_type).
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Zone; default [`FakeConfig::zone`](crate::FakeConfig::zone).
    #[serde(default)]
    pub zone: Option<String>,
    /// Region; default [`FakeConfig::region`](crate::FakeConfig::region).
    #[serde(default)]
    pub region: Option<String>,
    /// Node addresses; default an `InternalIP` from
    /// [`FakeConfig::instance_address_pool`](crate::FakeConfig::instance_address_pool) and a `Hostname` equal
    /// to the name. `Some(vec![])` means no addresses.
    #[serde(default)]
    pub addresses: Option<Vec<NodeAddress>>,
    /// Labels reported as `InstanceMetadata::additional_labels`.
    #[serde(default)]
    pub additional_labels: BTreeMap<String, String>,
    /// The initial state; default running.
    #[serde(default)]
    pub state: FakeInstanceState,
}

impl FakeInstance {
    /// A running instance named `name` with the cloud's defaults.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the provider ID.
    #[must_use]
    pub fn with_provider_id(mut self, provider_id: impl Into<String>) -> Self {
        self.provider_id = Some(provider_id.into());
        self
    }

    /// Sets the instance type.
    #[must_use]
    pub fn with_instance_type(mut self, instance_type: impl Into<String>) -> Self {
        self.instance_type = Some(instance_type.into());
        self
    }

    /// Sets the zone.
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the region.
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the addresses (replacing the generated default).
    #[must_use]
    pub fn with_addresses(mut self, addresses: Vec<NodeAddress>) -> Self {
        self.addresses = Some(addresses);
        self
    }

    /// Adds an additional label.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.additional_labels.insert(key.into(), value.into());
        self
    }

    /// Sets the initial state.
    #[must_use]
    pub fn with_state(mut self, state: FakeInstanceState) -> Self {
        self.state = state;
        self
    }
}

/// A snapshot of a fake instance, for tests to inspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeInstanceInfo {
    /// The node name.
    pub name: String,
    /// The provider ID.
    pub provider_id: String,
    /// The instance type.
    pub instance_type: String,
    /// The zone.
    pub zone: String,
    /// The region.
    pub region: String,
    /// The node addresses.
    pub addresses: Vec<NodeAddress>,
    /// The additional labels.
    pub additional_labels: BTreeMap<String, String>,
    /// The state now (pending node group transitions applied).
    pub state: FakeInstanceState,
    /// The node group the instance belongs to.
    pub node_group: Option<String>,
    /// Why it failed to come up, for [`FakeInstanceState::Failed`].
    pub error: Option<CloudInstanceError>,
}

/// A state change that happens by itself at `at` (node group provisioning).
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) at: Instant,
    pub(crate) outcome: Result<(), CloudInstanceError>,
}

#[derive(Clone, Debug)]
pub(crate) struct InstanceRecord {
    pub(crate) name: String,
    pub(crate) provider_id: String,
    pub(crate) instance_type: String,
    pub(crate) zone: String,
    pub(crate) region: String,
    pub(crate) addresses: Vec<NodeAddress>,
    pub(crate) additional_labels: BTreeMap<String, String>,
    state: FakeInstanceState,
    pending: Option<Pending>,
    error: Option<CloudInstanceError>,
    pub(crate) group: Option<String>,
}

impl InstanceRecord {
    /// The state at `now`, with a due pending transition applied.
    pub(crate) fn state_at(&self, now: Instant) -> FakeInstanceState {
        match &self.pending {
            Some(p) if self.state == FakeInstanceState::Creating && now >= p.at => {
                match p.outcome {
                    Ok(()) => FakeInstanceState::Running,
                    Err(_) => FakeInstanceState::Failed,
                }
            }
            _ => self.state,
        }
    }

    pub(crate) fn error_at(&self, now: Instant) -> Option<&CloudInstanceError> {
        match &self.pending {
            Some(Pending {
                at,
                outcome: Err(e),
            }) if self.state == FakeInstanceState::Creating && now >= *at => Some(e),
            _ => self.error.as_ref(),
        }
    }

    pub(crate) fn exists_at(&self, now: Instant) -> bool {
        self.state_at(now).exists()
    }

    /// Terminated (pending transitions never lead there, so no time is needed).
    pub(crate) fn is_terminated(&self) -> bool {
        self.state == FakeInstanceState::Terminated
    }

    pub(crate) fn set_state(&mut self, state: FakeInstanceState) {
        self.state = state;
        self.pending = None;
        if state != FakeInstanceState::Failed {
            self.error = None;
        }
    }

    pub(crate) fn metadata(&self) -> InstanceMetadata {
        InstanceMetadata {
            provider_id: self.provider_id.clone(),
            instance_type: self.instance_type.clone(),
            node_addresses: self.addresses.clone(),
            zone: self.zone.clone(),
            region: self.region.clone(),
            additional_labels: self.additional_labels.clone(),
        }
    }

    pub(crate) fn info(&self, now: Instant) -> FakeInstanceInfo {
        FakeInstanceInfo {
            name: self.name.clone(),
            provider_id: self.provider_id.clone(),
            instance_type: self.instance_type.clone(),
            zone: self.zone.clone(),
            region: self.region.clone(),
            addresses: self.addresses.clone(),
            additional_labels: self.additional_labels.clone(),
            state: self.state_at(now),
            node_group: self.group.clone(),
            error: self.error_at(now).cloned(),
        }
    }
}

/// Defaults applied to instances that leave fields unset.
#[derive(Clone, Debug)]
pub(crate) struct InstanceDefaults {
    pub(crate) provider: String,
    pub(crate) instance_type: String,
    pub(crate) zone: String,
    pub(crate) region: String,
    pub(crate) address_pool: IpNet,
}

/// How an instance is created besides its [`FakeInstance`] fields.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origin {
    pub(crate) group: Option<String>,
    pub(crate) pending: Option<Pending>,
    pub(crate) error: Option<CloudInstanceError>,
}

#[derive(Debug)]
pub(crate) struct InstanceStore {
    pub(crate) defaults: InstanceDefaults,
    by_id: BTreeMap<String, InstanceRecord>,
    by_name: HashMap<String, String>,
    next_address: u128,
}

impl InstanceStore {
    pub(crate) fn new(defaults: InstanceDefaults) -> Self {
        Self {
            defaults,
            by_id: BTreeMap::new(),
            by_name: HashMap::new(),
            next_address: 0,
        }
    }

    /// The provider ID an instance would get.
    pub(crate) fn provider_id_for(&self, inst: &FakeInstance) -> Result<String, FakeError> {
        match &inst.provider_id {
            None => Ok(format!("{}://{}", self.defaults.provider, inst.name)),
            Some(id) => ProviderId::parse_for(&self.defaults.provider, id)
                .map(|_| id.clone())
                .map_err(|e| FakeError::config("providerId", e.to_string())),
        }
    }

    /// Whether a live (not terminated) instance already uses this name or provider ID.
    pub(crate) fn is_taken(&self, name: &str, provider_id: &str) -> bool {
        let live = |id: &str| self.by_id.get(id).is_some_and(|r| !r.is_terminated());
        live(provider_id) || self.by_name.get(name).is_some_and(|id| live(id))
    }

    /// Adds an instance; a terminated instance with the same name or provider ID is replaced.
    pub(crate) fn add(&mut self, inst: FakeInstance, origin: Origin) -> Result<String, FakeError> {
        if inst.name.is_empty() {
            return Err(FakeError::config("name", "must not be empty"));
        }
        let provider_id = self.provider_id_for(&inst)?;
        if self.is_taken(&inst.name, &provider_id) {
            let which = if self.by_id.contains_key(&provider_id) {
                provider_id
            } else {
                inst.name
            };
            return Err(FakeError::DuplicateInstance(which));
        }
        // Replace terminated records that share the name or the provider ID.
        if let Some(old_id) = self.by_name.remove(&inst.name) {
            self.by_id.remove(&old_id);
        }
        if let Some(old) = self.by_id.remove(&provider_id)
            && self.by_name.get(&old.name) == Some(&provider_id)
        {
            self.by_name.remove(&old.name);
        }
        let addresses = match inst.addresses {
            Some(a) => a,
            None => self.default_addresses(&inst.name),
        };
        let d = &self.defaults;
        let record = InstanceRecord {
            instance_type: inst
                .instance_type
                .unwrap_or_else(|| d.instance_type.clone()),
            zone: inst.zone.unwrap_or_else(|| d.zone.clone()),
            region: inst.region.unwrap_or_else(|| d.region.clone()),
            addresses,
            additional_labels: inst.additional_labels,
            state: inst.state,
            pending: origin.pending,
            error: origin.error,
            group: origin.group,
            provider_id: provider_id.clone(),
            name: inst.name,
        };
        self.by_name
            .insert(record.name.clone(), provider_id.clone());
        self.by_id.insert(provider_id.clone(), record);
        Ok(provider_id)
    }

    fn default_addresses(&mut self, name: &str) -> Vec<NodeAddress> {
        let n = self.next_address;
        self.next_address = self.next_address.wrapping_add(1);
        let mut out = Vec::with_capacity(2);
        if let Some(ip) = nth_host(&self.defaults.address_pool, n) {
            out.push(NodeAddress::new(
                NodeAddressType::InternalIp,
                ip.to_string(),
            ));
        }
        out.push(NodeAddress::new(NodeAddressType::Hostname, name));
        out
    }

    /// The provider ID of the instance with this provider ID or name.
    fn id_of(&self, id_or_name: &str) -> Option<&String> {
        self.by_id
            .get_key_value(id_or_name)
            .map(|(k, _)| k)
            .or_else(|| self.by_name.get(id_or_name))
    }

    pub(crate) fn get(&self, id_or_name: &str) -> Option<&InstanceRecord> {
        self.id_of(id_or_name).and_then(|id| self.by_id.get(id))
    }

    pub(crate) fn get_mut(&mut self, id_or_name: &str) -> Option<&mut InstanceRecord> {
        let id = self.id_of(id_or_name)?.clone();
        self.by_id.get_mut(&id)
    }

    pub(crate) fn remove(&mut self, id_or_name: &str) -> Option<InstanceRecord> {
        let id = self.id_of(id_or_name)?.clone();
        let record = self.by_id.remove(&id)?;
        if self.by_name.get(&record.name) == Some(&id) {
            self.by_name.remove(&record.name);
        }
        Some(record)
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = &InstanceRecord> {
        self.by_id.values()
    }

    /// The instance behind `node`: by `spec.providerID` when set (it must belong to this provider), else by node
    /// name. With `auto_create`, a node without any instance record gets a running one.
    pub(crate) fn resolve(
        &mut self,
        node: &Node,
        auto_create: bool,
    ) -> CloudResult<Option<&InstanceRecord>> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let found = match node_provider_id(node) {
            Some(pid) => {
                ProviderId::parse_for(&self.defaults.provider, pid)?;
                if self.by_id.contains_key(pid) {
                    Some(pid.to_owned())
                } else if auto_create && !name.is_empty() {
                    Some(self.add(
                        FakeInstance::new(name).with_provider_id(pid),
                        Origin::default(),
                    )?)
                } else {
                    None
                }
            }
            None if name.is_empty() => {
                return Err(CloudError::invalid_input(
                    "metadata.name",
                    "the node has neither spec.providerID nor a name",
                ));
            }
            None => self.resolve_name(name, auto_create)?,
        };
        Ok(found.and_then(|id| self.by_id.get(&id)))
    }

    /// The provider ID of the instance registered as `name`, creating one with `auto_create`.
    pub(crate) fn resolve_name(
        &mut self,
        name: &str,
        auto_create: bool,
    ) -> CloudResult<Option<String>> {
        if let Some(id) = self.by_name.get(name) {
            return Ok(Some(id.clone()));
        }
        if auto_create {
            return Ok(Some(self.add(FakeInstance::new(name), Origin::default())?));
        }
        Ok(None)
    }
}

/// The `n`-th usable host address of `net` (wrapping around), skipping the network and, for IPv4, the broadcast
/// address when the network is large enough to have them.
pub(crate) fn nth_host(net: &IpNet, n: u128) -> Option<IpAddr> {
    let (bits, base) = match net {
        IpNet::V4(v4) => (32u32, u128::from(u32::from(v4.network()))),
        IpNet::V6(v6) => (128u32, u128::from(v6.network())),
    };
    let host_bits = bits - u32::from(net.prefix_len());
    let size = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
    let (first, count) = match (net, host_bits) {
        (_, 0) => (0, 1),
        (IpNet::V4(_), 1) => (0, 2),
        (IpNet::V4(_), _) => (1, size - 2),
        (IpNet::V6(_), _) => (1, size - 1),
    };
    let addr = base.checked_add(first + n % count)?;
    Some(match net {
        IpNet::V4(_) => IpAddr::V4(u32::try_from(addr).ok()?.into()),
        IpNet::V6(_) => IpAddr::V6(addr.into()),
    })
}

/// How many addresses [`nth_host`] cycles through.
pub(crate) fn host_count(net: &IpNet) -> u128 {
    let bits = match net {
        IpNet::V4(_) => 32u32,
        IpNet::V6(_) => 128u32,
    };
    let host_bits = bits - u32::from(net.prefix_len());
    let size = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
    match (net, host_bits) {
        (_, 0) => 1,
        (IpNet::V4(_), 1) => 2,
        (IpNet::V4(_), _) => size - 2,
        (IpNet::V6(_), _) => size - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn nth_host_skips_network_and_broadcast() {
        let n = net("192.0.2.0/24");
        assert_eq!(host_count(&n), 254);
        assert_eq!(
            nth_host(&n, 0).map(|a| a.to_string()),
            Some("192.0.2.1".into())
        );
        assert_eq!(
            nth_host(&n, 253).map(|a| a.to_string()),
            Some("192.0.2.254".into())
        );
        assert_eq!(
            nth_host(&n, 254).map(|a| a.to_string()),
            Some("192.0.2.1".into())
        );
        assert_eq!(
            nth_host(&net("10.0.0.7/32"), 5).map(|a| a.to_string()),
            Some("10.0.0.7".into())
        );
        assert_eq!(
            nth_host(&net("10.0.0.6/31"), 1).map(|a| a.to_string()),
            Some("10.0.0.7".into())
        );
        assert_eq!(
            nth_host(&net("fd00::/64"), 0).map(|a| a.to_string()),
            Some("fd00::1".into())
        );
        assert_eq!(host_count(&net("::/0")), u128::MAX - 1);
    }
}
