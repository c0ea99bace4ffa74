//! The fake cloud's data, behind one lock so every operation is atomic and deterministic.

pub(crate) mod instances;
pub(crate) mod load_balancers;
pub(crate) mod node_group_spec;
pub(crate) mod node_groups;
pub(crate) mod routes;

use std::collections::BTreeMap;

use instances::InstanceStore;
use load_balancers::LbStore;
use node_groups::Group;
use routes::RouteStore;

/// Everything the fake cloud holds.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) instances: InstanceStore,
    pub(crate) lbs: LbStore,
    pub(crate) routes: RouteStore,
    pub(crate) groups: BTreeMap<String, Group>,
}

impl State {
    /// Whether the instance registered as `node_name` is known to be gone (terminated or failed). Nodes the
    /// fake knows nothing about are not gone.
    pub(crate) fn node_gone(&self, node_name: &str, now: tokio::time::Instant) -> bool {
        self.instances
            .get(node_name)
            .is_some_and(|r| !r.exists_at(now))
    }

    /// Removes an instance entirely (also from its node group).
    pub(crate) fn remove_instance(
        &mut self,
        id_or_name: &str,
    ) -> Option<instances::InstanceRecord> {
        let record = self.instances.remove(id_or_name)?;
        if let Some(group) = record.group.as_deref().and_then(|g| self.groups.get_mut(g)) {
            group.remove_member(&record.provider_id);
        }
        Some(record)
    }
}
