//! Node groups: on-demand EC2 instances launched with `RunInstances` from a configured template and found again by
//! their tags (no Auto Scaling group).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, Instance, InstanceStateName, InstanceType,
    ResourceType, Tag, TagSpecification,
};
use cloudprovider_api::{
    CloudError, CloudInstance, CloudInstanceState, CloudResult, NodeGroup, NodeGroups, async_trait,
    node_provider_id,
};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::instrument;

use crate::AwsCloud;
use crate::config::NodeGroupConfig;
use crate::error::{AwsError, AwsResult, api_error};
use crate::instances::{instance_id_from_provider_id, provider_id_of};
use crate::tags::TAG_NODE_GROUP;

fn state_of(instance: &Instance) -> Option<CloudInstanceState> {
    match instance.state().and_then(|s| s.name())? {
        InstanceStateName::Pending => Some(CloudInstanceState::Creating),
        InstanceStateName::ShuttingDown => Some(CloudInstanceState::Deleting),
        InstanceStateName::Terminated => None,
        _ => Some(CloudInstanceState::Running),
    }
}

fn group_tag(instance: &Instance) -> Option<&str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(TAG_NODE_GROUP))
        .and_then(|t| t.value())
}

impl AwsCloud {
    fn group(&self, id: &str) -> CloudResult<&NodeGroupConfig> {
        self.inner
            .config
            .node_groups
            .iter()
            .find(|g| g.id == id)
            .ok_or_else(|| CloudError::not_found("node group", id))
    }

    /// The group's instances that are not terminated (one `DescribeInstances` by tag).
    async fn group_instances(&self, id: &str) -> CloudResult<Vec<Instance>> {
        let filters = vec![
            Filter::builder()
                .name(format!("tag:{TAG_NODE_GROUP}"))
                .values(id)
                .build(),
            Filter::builder()
                .name(format!("tag:{}", self.inner.tagging.cluster_key))
                .values(crate::tags::TAG_VALUE_OWNED)
                .build(),
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .values("shutting-down")
                .build(),
        ];
        let all = self
            .describe_instances_filtered(filters)
            .await
            .map_err(|e| self.cloud_error(e))?;
        Ok(all.into_iter().filter(|i| state_of(i).is_some()).collect())
    }

    fn live(instances: &[Instance]) -> u32 {
        instances
            .iter()
            .filter(|i| state_of(i) != Some(CloudInstanceState::Deleting))
            .count() as u32
    }

    async fn launch(&self, group: &NodeGroupConfig, count: i32) -> AwsResult<()> {
        let mut tags: BTreeMap<String, String> = self.inner.tagging.owned_tags(&group.tags);
        tags.insert(TAG_NODE_GROUP.to_owned(), group.id.clone());
        tags.entry("Name".to_owned())
            .or_insert_with(|| format!("{}-{}", self.inner.config.cluster_id, group.id));
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let subnet = group
            .subnet_id
            .clone()
            .or_else(|| self.inner.config.subnet_id.clone());
        let user_data = group
            .user_data
            .as_deref()
            .map(|u| aws_smithy_types::base64::encode(u.as_bytes()));
        self.inner
            .ec2
            .run_instances()
            .image_id(&group.image_id)
            .instance_type(InstanceType::from(group.instance_type.as_str()))
            .min_count(count)
            .max_count(count)
            .set_subnet_id(subnet)
            .set_security_group_ids(
                Some(group.security_group_ids.clone()).filter(|v| !v.is_empty()),
            )
            .set_key_name(group.key_name.clone())
            .set_iam_instance_profile(
                group
                    .iam_instance_profile
                    .as_ref()
                    .map(|p| IamInstanceProfileSpecification::builder().name(p).build()),
            )
            .set_user_data(user_data)
            .tag_specifications(spec)
            .send()
            .await
            .map_err(|e| api_error("RunInstances", e))?;
        Ok(())
    }

    async fn terminate(&self, ids: Vec<String>) -> CloudResult<()> {
        self.inner
            .ec2
            .terminate_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .map_err(|e| self.cloud_error(api_error("TerminateInstances", e)))?;
        Ok(())
    }

    /// vCPUs and memory (MiB) of an instance type.
    async fn instance_type_capacity(
        &self,
        instance_type: &str,
    ) -> CloudResult<(Option<i32>, Option<i64>)> {
        let out = self
            .inner
            .ec2
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await
            .map_err(|e| self.cloud_error(api_error("DescribeInstanceTypes", e)))?;
        let info = out.instance_types().first();
        Ok((
            info.and_then(|i| i.v_cpu_info())
                .and_then(|v| v.default_v_cpus()),
            info.and_then(|i| i.memory_info())
                .and_then(|m| m.size_in_mib()),
        ))
    }
}

#[async_trait]
impl NodeGroups for AwsCloud {
    async fn node_groups(&self) -> CloudResult<Vec<NodeGroup>> {
        Ok(self
            .inner
            .config
            .node_groups
            .iter()
            .map(|g| NodeGroup::new(g.id.clone(), g.min_size, g.max_size))
            .collect())
    }

    #[instrument(skip_all, fields(node = node.metadata.name.as_deref()))]
    async fn node_group_for_node(&self, node: &Node) -> CloudResult<Option<String>> {
        let Some(id) = node_provider_id(node).and_then(|p| instance_id_from_provider_id(p).ok())
        else {
            return Ok(None); // another provider's node, or not initialized yet
        };
        let found = self
            .describe_instances_where("instance-id", &[id], &[])
            .await
            .map_err(|e| self.cloud_error(e))?;
        Ok(found
            .iter()
            .filter(|i| {
                self.inner
                    .tagging
                    .owned(i.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))))
            })
            .find_map(group_tag)
            .filter(|g| self.inner.config.node_groups.iter().any(|c| c.id == *g))
            .map(str::to_owned))
    }

    async fn target_size(&self, group_id: &str) -> CloudResult<u32> {
        self.group(group_id)?;
        Ok(Self::live(&self.group_instances(group_id).await?))
    }

    #[instrument(skip(self))]
    async fn increase_size(&self, group_id: &str, delta: u32) -> CloudResult<()> {
        let group = self.group(group_id)?;
        if delta == 0 {
            return Err(CloudError::invalid_input("delta", "must be positive"));
        }
        let size = Self::live(&self.group_instances(group_id).await?);
        if size + delta > group.max_size {
            return Err(CloudError::invalid_input(
                "delta",
                format!(
                    "{size} + {delta} exceeds the maximum {} of node group {group_id}",
                    group.max_size
                ),
            ));
        }
        let count =
            i32::try_from(delta).map_err(|_| CloudError::invalid_input("delta", "too large"))?;
        self.launch(group, count)
            .await
            .map_err(|e| self.cloud_error(e))
    }

    #[instrument(skip(self))]
    async fn delete_instances(&self, group_id: &str, provider_ids: &[String]) -> CloudResult<()> {
        let group = self.group(group_id)?;
        let instances = self.group_instances(group_id).await?;
        let mut ids = Vec::new();
        for provider_id in provider_ids {
            let id = instance_id_from_provider_id(provider_id)
                .map_err(|_| CloudError::not_found("instance", provider_id.clone()))?;
            let member = instances.iter().any(|i| {
                i.instance_id() == Some(id.as_str())
                    && state_of(i) != Some(CloudInstanceState::Deleting)
            });
            if !member {
                return Err(CloudError::not_found("instance", provider_id.clone()));
            }
            ids.push(id);
        }
        let size = Self::live(&instances);
        if size < group.min_size + ids.len() as u32 {
            return Err(CloudError::invalid_input(
                "providerIds",
                format!(
                    "deleting {} of {size} instances goes below the minimum {}",
                    ids.len(),
                    group.min_size
                ),
            ));
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.terminate(ids).await
    }

    /// Terminates `delta` instances still `pending` (requests not yet fulfilled); never a running one.
    #[instrument(skip(self))]
    async fn decrease_target_size(&self, group_id: &str, delta: u32) -> CloudResult<()> {
        self.group(group_id)?;
        let pending: Vec<String> = self
            .group_instances(group_id)
            .await?
            .iter()
            .filter(|i| state_of(i) == Some(CloudInstanceState::Creating))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        if (pending.len() as u32) < delta {
            return Err(CloudError::invalid_input(
                "delta",
                format!(
                    "only {} instances of node group {group_id} are pending; running ones are not cancelled",
                    pending.len()
                ),
            ));
        }
        if delta == 0 {
            return Ok(());
        }
        self.terminate(pending.into_iter().take(delta as usize).collect())
            .await
    }

    async fn instances(&self, group_id: &str) -> CloudResult<Vec<CloudInstance>> {
        self.group(group_id)?;
        let mut instances = self.group_instances(group_id).await?;
        instances.sort_by(|a, b| {
            a.launch_time()
                .map(|t| t.secs())
                .cmp(&b.launch_time().map(|t| t.secs()))
        });
        Ok(instances
            .iter()
            .filter_map(|i| {
                Some(CloudInstance {
                    provider_id: provider_id_of(i),
                    state: state_of(i)?,
                    error: None,
                })
            })
            .collect())
    }

    async fn template_node(&self, group_id: &str) -> CloudResult<Node> {
        let group = self.group(group_id)?;
        let (cpus, mib) = match (&group.capacity.cpu, &group.capacity.memory) {
            (Some(_), Some(_)) => (None, None),
            _ => self.instance_type_capacity(&group.instance_type).await?,
        };
        let cpu = group.capacity.cpu.clone().or(cpus.map(|c| c.to_string()));
        let memory = group
            .capacity
            .memory
            .clone()
            .or(mib.map(|m| format!("{m}Mi")));
        let (Some(cpu), Some(memory)) = (cpu, memory) else {
            return Err(self.cloud_error(AwsError::config(
                "nodeGroups[].capacity",
                format!(
                    "instance type {} has no known capacity; set cpu and memory",
                    group.instance_type
                ),
            )));
        };
        let capacity: BTreeMap<String, Quantity> = [
            ("cpu", cpu),
            ("memory", memory),
            (
                "pods",
                group
                    .capacity
                    .pods
                    .clone()
                    .unwrap_or_else(|| "110".to_owned()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v)))
        .collect();
        let mut labels = group.labels.clone();
        labels.insert(
            "node.kubernetes.io/instance-type".into(),
            group.instance_type.clone(),
        );
        labels.insert(
            "topology.kubernetes.io/region".into(),
            self.inner.region.clone(),
        );
        labels.insert(TAG_NODE_GROUP.replace('/', "."), group.id.clone());
        Ok(Node {
            metadata: ObjectMeta {
                name: Some(format!("template-{}", group.id)),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(capacity.clone()),
                capacity: Some(capacity),
                ..Default::default()
            }),
        })
    }
}
