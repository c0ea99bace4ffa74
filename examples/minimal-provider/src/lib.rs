//! A minimal kube-cloud-rs provider: machines of a bare-metal inventory, known from the provider's config and
//! powered on and off through an API (here an in-memory table standing in for the inventory system's client).
//! It implements only [`Instances`], so the cloud-controller-manager runs the cloud-node and cloud-node-lifecycle
//! controllers for it and skips load balancers and routes. Built step by step in `docs/writing-a-provider.md`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = cloudprovider_api::ProviderRegistry::new();
//! minimal_provider::register(&mut registry)?;
//! let config = "machines:\n  - { name: rack1-u07, address: 10.1.0.7, rack: rack1 }";
//! let provider = registry.build_from_str("inventory", Some(config)).await?.ok_or("no provider")?;
//! assert!(provider.capabilities().instances);
//! assert!(!provider.capabilities().load_balancers);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

#[cfg(feature = "ccm")]
pub mod power_labels;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use cloudprovider_api::{
    CloudError, CloudProvider, CloudResult, InstanceMetadata, Instances, NodeAddress,
    NodeAddressType, ProviderId, ProviderRegistry, RegistryError, node_provider_id,
};
use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;

/// The provider's name: `--cloud-provider=inventory`, and the scheme of its provider IDs (`inventory://<name>`).
pub const NAME: &str = "inventory";

/// The `--cloud-config` file. `deny_unknown_fields` turns a typo into a startup error naming the field.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryConfig {
    /// The machines of the inventory.
    #[serde(default)]
    pub machines: Vec<Machine>,
    /// The region all racks are in. Default `datacenter-1`.
    #[serde(default = "default_region")]
    pub region: String,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            machines: Vec::new(),
            region: default_region(),
        }
    }
}

fn default_region() -> String {
    "datacenter-1".to_owned()
}

/// One machine.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// The host name, which is also its Node name.
    pub name: String,
    /// Its IP address.
    pub address: String,
    /// The rack, published as the zone.
    pub rack: String,
    /// The hardware model, published as the instance type. Default `server`.
    #[serde(default)]
    pub model: Option<String>,
}

/// Power state as the inventory reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    /// Running.
    On,
    /// Powered off: the machine exists, the Node gets the shutdown taint.
    Off,
    /// Decommissioned: the machine is gone, its Node is deleted.
    Decommissioned,
}

/// The provider. Cheap to clone; clones share the inventory.
#[derive(Clone, Debug)]
pub struct Inventory {
    region: String,
    machines: Arc<Mutex<BTreeMap<String, (Machine, Power)>>>,
}

impl Inventory {
    /// The inventory of `config`, every machine powered on.
    pub fn new(config: InventoryConfig) -> Self {
        let machines = config
            .machines
            .into_iter()
            .map(|m| (m.name.clone(), (m, Power::On)))
            .collect();
        Self {
            region: config.region,
            machines: Arc::new(Mutex::new(machines)),
        }
    }

    /// Adds a machine (a real provider would not have this: its cloud API creates machines).
    pub fn add(&self, machine: Machine) {
        self.table()
            .insert(machine.name.clone(), (machine, Power::On));
    }

    /// Changes a machine's power state, as an operator would in the inventory system.
    pub fn set_power(&self, name: &str, power: Power) -> CloudResult<()> {
        let mut table = self.table();
        let entry = table
            .get_mut(name)
            .ok_or_else(|| CloudError::not_found("machine", name))?;
        entry.1 = power;
        Ok(())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Machine, Power)>> {
        // A panic while holding the lock cannot leave the table half-updated: every update is one assignment.
        self.machines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The machine behind a Node: by provider ID when the Node has one (it must be ours), else by Node name.
    fn lookup(&self, node: &Node) -> CloudResult<Option<(Machine, Power)>> {
        let name = match node_provider_id(node) {
            Some(id) => ProviderId::parse_for(NAME, id)?.id().to_owned(),
            None => node.metadata.name.clone().unwrap_or_default(),
        };
        Ok(self
            .table()
            .get(&name)
            .filter(|(_, power)| *power != Power::Decommissioned)
            .cloned())
    }
}

impl CloudProvider for Inventory {
    fn provider_name(&self) -> &str {
        NAME
    }

    fn instances(&self) -> Option<&dyn Instances> {
        Some(self)
    }
}

#[async_trait]
impl Instances for Inventory {
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        Ok(self.lookup(node)?.is_some())
    }

    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        let (_, power) = self.lookup(node)?.ok_or_else(|| not_found(node))?;
        Ok(power == Power::Off)
    }

    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        let (machine, _) = self.lookup(node)?.ok_or_else(|| not_found(node))?;
        Ok(InstanceMetadata {
            provider_id: ProviderId::new(NAME, &machine.name)?.to_string(),
            instance_type: machine.model.clone().unwrap_or_else(|| "server".to_owned()),
            node_addresses: vec![
                NodeAddress::new(NodeAddressType::InternalIp, &machine.address),
                NodeAddress::new(NodeAddressType::Hostname, &machine.name),
            ],
            zone: machine.rack.clone(),
            region: self.region.clone(),
            additional_labels: BTreeMap::new(),
        })
    }
}

fn not_found(node: &Node) -> CloudError {
    CloudError::not_found("machine", node.metadata.name.clone().unwrap_or_default())
}

/// Registers the provider as `inventory`; its `--cloud-config` is an [`InventoryConfig`].
pub fn register(registry: &mut ProviderRegistry) -> Result<(), RegistryError> {
    registry.register(NAME, |config: Option<InventoryConfig>| async move {
        Ok(Arc::new(Inventory::new(config.unwrap_or_default())) as Arc<dyn CloudProvider>)
    })
}
