//! Node groups: cluster-autoscaler semantics over the instance store.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudprovider_api::{
    CloudError, CloudInstance, CloudInstanceError, CloudInstanceState, CloudResult, NodeGroup,
};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::time::Instant;

use crate::LABEL_NODE_GROUP;
use crate::error::FakeError;
use crate::state::State;
use crate::state::instances::{FakeInstance, FakeInstanceState, Origin, Pending};
use crate::state::node_group_spec::{NodeGroupSpec, Provisioning};

#[derive(Debug)]
pub(crate) struct Group {
    spec: NodeGroupSpec,
    /// Provider IDs, oldest first.
    members: Vec<String>,
    next_index: u64,
}

impl Group {
    pub(crate) fn remove_member(&mut self, provider_id: &str) {
        self.members.retain(|m| m != provider_id);
    }
}

fn unknown(id: &str) -> CloudError {
    CloudError::not_found("node group", id)
}

/// Node group operations; they span groups and instances, so they live on the whole state.
impl State {
    pub(crate) fn add_group(&mut self, spec: NodeGroupSpec, now: Instant) -> Result<(), FakeError> {
        spec.validate("nodeGroup")?;
        if self.groups.contains_key(&spec.id) {
            return Err(FakeError::DuplicateNodeGroup(spec.id));
        }
        let initial = spec.initial_size.unwrap_or(spec.min_size);
        let id = spec.id.clone();
        self.groups.insert(
            id.clone(),
            Group {
                spec,
                members: Vec::new(),
                next_index: 1,
            },
        );
        // Initial instances are already running.
        self.launch(&id, initial, now, true)
            .map_err(|e| FakeError::config("nodeGroup", e.to_string()))
    }

    pub(crate) fn group_members(&self, id: &str) -> Option<&[String]> {
        self.groups.get(id).map(|g| g.members.as_slice())
    }

    pub(crate) fn group_mut(&mut self, id: &str) -> Result<&mut NodeGroupSpec, FakeError> {
        self.groups
            .get_mut(id)
            .map(|g| &mut g.spec)
            .ok_or_else(|| FakeError::UnknownNodeGroup(id.to_owned()))
    }

    /// Creates `count` instances in group `id`.
    fn launch(&mut self, id: &str, count: u32, now: Instant, initial: bool) -> CloudResult<()> {
        let Some(group) = self.groups.get_mut(id) else {
            return Err(unknown(id));
        };
        let spec = group.spec.clone();
        let delay = Duration::from_millis(spec.provision_delay_ms);
        for _ in 0..count {
            // Skip names taken by instances added by hand.
            let (name, inst) = loop {
                let name = format!("{id}-{}", group.next_index);
                group.next_index += 1;
                let inst = template_instance(&spec, &name);
                let pid = self.instances.provider_id_for(&inst)?;
                if !self.instances.is_taken(&name, &pid) {
                    break (name, inst);
                }
            };
            let (state, pending, error) = if initial {
                (FakeInstanceState::Running, None, None)
            } else {
                launch_outcome(&spec.provisioning, delay, now)
            };
            let origin = Origin {
                group: Some(id.to_owned()),
                pending,
                error,
            };
            let pid = self.instances.add(inst.with_state(state), origin)?;
            tracing::debug!(
                group = id,
                instance = name,
                ?state,
                "fake node group launched an instance"
            );
            group.members.push(pid);
        }
        Ok(())
    }

    /// Members whose instance is not terminated.
    fn live_members(&self, group: &Group) -> Vec<String> {
        group
            .members
            .iter()
            .filter(|id| self.instances.get(id).is_some_and(|r| !r.is_terminated()))
            .cloned()
            .collect()
    }

    pub(crate) fn node_groups(&self) -> Vec<NodeGroup> {
        self.groups
            .values()
            .map(|g| {
                let group = NodeGroup::new(g.spec.id.clone(), g.spec.min_size, g.spec.max_size);
                match g.spec.price {
                    Some(price) => group.with_price(price),
                    None => group,
                }
            })
            .collect()
    }

    pub(crate) fn target_size(&self, id: &str) -> CloudResult<u32> {
        let group = self.groups.get(id).ok_or_else(|| unknown(id))?;
        Ok(u32::try_from(self.live_members(group).len()).unwrap_or(u32::MAX))
    }

    pub(crate) fn increase_size(&mut self, id: &str, delta: u32, now: Instant) -> CloudResult<()> {
        let size = self.target_size(id)?;
        let max = self
            .groups
            .get(id)
            .map(|g| g.spec.max_size)
            .unwrap_or_default();
        if delta == 0 {
            return Err(CloudError::invalid_input("delta", "must be positive"));
        }
        if size.checked_add(delta).is_none_or(|s| s > max) {
            return Err(CloudError::invalid_input(
                format!("nodeGroups[{id}].maxSize"),
                format!("increasing {id} from {size} by {delta} exceeds its maximum size {max}"),
            ));
        }
        self.launch(id, delta, now, false)
    }

    pub(crate) fn delete_instances(
        &mut self,
        id: &str,
        provider_ids: &[String],
    ) -> CloudResult<()> {
        let group = self.groups.get(id).ok_or_else(|| unknown(id))?;
        let mut victims: Vec<&String> = Vec::with_capacity(provider_ids.len());
        for pid in provider_ids {
            if !group.members.contains(pid) {
                return Err(CloudError::not_found(
                    "instance",
                    format!("{pid} in node group {id}"),
                ));
            }
            if !victims.contains(&pid) {
                victims.push(pid);
            }
        }
        let live = self.live_members(group);
        let removing = victims.iter().filter(|v| live.contains(v)).count();
        let remaining = live.len().saturating_sub(removing);
        let min = group.spec.min_size as usize;
        if remaining < min {
            return Err(CloudError::invalid_input(
                format!("nodeGroups[{id}].minSize"),
                format!(
                    "deleting {removing} of {} instances of {id} would go below its minimum size {min}",
                    live.len()
                ),
            ));
        }
        let victims: Vec<String> = victims.into_iter().cloned().collect();
        self.terminate_members(id, &victims);
        Ok(())
    }

    /// Terminates the instances and takes them out of the group.
    fn terminate_members(&mut self, id: &str, victims: &[String]) {
        for pid in victims {
            if let Some(r) = self.instances.get_mut(pid) {
                r.set_state(FakeInstanceState::Terminated);
                r.group = None;
            }
        }
        if let Some(group) = self.groups.get_mut(id) {
            group.members.retain(|m| !victims.contains(m));
        }
    }

    pub(crate) fn decrease_target_size(
        &mut self,
        id: &str,
        delta: u32,
        now: Instant,
    ) -> CloudResult<()> {
        let group = self.groups.get(id).ok_or_else(|| unknown(id))?;
        if delta == 0 {
            return Err(CloudError::invalid_input("delta", "must be positive"));
        }
        let pending: Vec<String> = group
            .members
            .iter()
            .rev()
            .filter(|pid| {
                self.instances.get(pid).is_some_and(|r| {
                    matches!(
                        r.state_at(now),
                        FakeInstanceState::Creating | FakeInstanceState::Failed
                    )
                })
            })
            .cloned()
            .collect();
        if (delta as usize) > pending.len() {
            return Err(CloudError::invalid_input(
                "delta",
                format!(
                    "{id} has only {} unfulfilled requests, cannot lower its target size by {delta}; \
                     running instances are removed with delete_instances",
                    pending.len()
                ),
            ));
        }
        let live = self.live_members(group).len();
        let min = group.spec.min_size as usize;
        if live.saturating_sub(delta as usize) < min {
            return Err(CloudError::invalid_input(
                format!("nodeGroups[{id}].minSize"),
                format!(
                    "lowering {id} from {live} by {delta} would go below its minimum size {min}"
                ),
            ));
        }
        let cancelled: Vec<String> = pending.into_iter().take(delta as usize).collect();
        self.terminate_members(id, &cancelled);
        Ok(())
    }

    pub(crate) fn group_instances(
        &self,
        id: &str,
        now: Instant,
    ) -> CloudResult<Vec<CloudInstance>> {
        let group = self.groups.get(id).ok_or_else(|| unknown(id))?;
        Ok(group
            .members
            .iter()
            .filter_map(|pid| self.instances.get(pid))
            .map(|r| {
                let (state, error) = match r.state_at(now) {
                    FakeInstanceState::Creating => (CloudInstanceState::Creating, None),
                    FakeInstanceState::Running | FakeInstanceState::Stopped => {
                        (CloudInstanceState::Running, None)
                    }
                    FakeInstanceState::Failed => {
                        (CloudInstanceState::Creating, r.error_at(now).cloned())
                    }
                    FakeInstanceState::Terminated => (CloudInstanceState::Deleting, None),
                };
                CloudInstance {
                    provider_id: r.provider_id.clone(),
                    state,
                    error,
                }
            })
            .collect())
    }

    pub(crate) fn template_node(&self, id: &str) -> CloudResult<Node> {
        let group = self.groups.get(id).ok_or_else(|| unknown(id))?;
        let spec = &group.spec;
        let inst = template_instance(spec, &format!("{id}-template"));
        let d = &self.instances.defaults;
        let mut labels = BTreeMap::new();
        let instance_type = inst
            .instance_type
            .unwrap_or_else(|| d.instance_type.clone());
        let zone = inst.zone.unwrap_or_else(|| d.zone.clone());
        let region = inst.region.unwrap_or_else(|| d.region.clone());
        for (key, value) in [
            ("node.kubernetes.io/instance-type", instance_type),
            ("topology.kubernetes.io/zone", zone),
            ("topology.kubernetes.io/region", region),
        ] {
            if !value.is_empty() {
                labels.insert(key.to_owned(), value);
            }
        }
        labels.extend(inst.additional_labels);
        let resources: BTreeMap<String, Quantity> = [
            ("cpu", &spec.template.cpu),
            ("memory", &spec.template.memory),
            ("pods", &spec.template.pods),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v.clone())))
        .collect();
        let taints: Vec<Taint> = spec
            .template
            .taints
            .iter()
            .map(|t| Taint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.clone(),
                ..Default::default()
            })
            .collect();
        Ok(Node {
            metadata: ObjectMeta {
                name: Some(format!("{id}-template")),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(resources.clone()),
                allocatable: Some(resources),
                ..Default::default()
            }),
        })
    }
}

/// The state a newly requested instance starts in, and what happens to it later.
fn launch_outcome(
    provisioning: &Provisioning,
    delay: Duration,
    now: Instant,
) -> (
    FakeInstanceState,
    Option<Pending>,
    Option<CloudInstanceError>,
) {
    // A delay too large to represent never ends.
    let at = now.checked_add(delay);
    match provisioning {
        Provisioning::Succeed if delay.is_zero() => (FakeInstanceState::Running, None, None),
        Provisioning::Succeed => (
            FakeInstanceState::Creating,
            at.map(|at| Pending {
                at,
                outcome: Ok(()),
            }),
            None,
        ),
        Provisioning::NeverReady => (FakeInstanceState::Creating, None, None),
        Provisioning::Fail { .. } if delay.is_zero() => {
            (FakeInstanceState::Failed, None, provisioning.error())
        }
        Provisioning::Fail { .. } => {
            let pending = at.zip(provisioning.error()).map(|(at, e)| Pending {
                at,
                outcome: Err(e),
            });
            (FakeInstanceState::Creating, pending, None)
        }
    }
}

/// The instance a group creates, named `name`.
fn template_instance(spec: &NodeGroupSpec, name: &str) -> FakeInstance {
    let mut labels = spec.template.labels.clone();
    labels.insert(LABEL_NODE_GROUP.to_owned(), spec.id.clone());
    FakeInstance {
        name: name.to_owned(),
        provider_id: None,
        instance_type: spec.template.instance_type.clone(),
        zone: spec.template.zone.clone(),
        region: spec.template.region.clone(),
        addresses: None,
        additional_labels: labels,
        state: FakeInstanceState::Running,
    }
}
