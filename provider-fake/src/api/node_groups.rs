//! [`NodeGroups`] for the fake cloud.

use async_trait::async_trait;
use cloudprovider_api::{CloudInstance, CloudResult, NodeGroup, NodeGroups, node_provider_id};
use k8s_openapi::api::core::v1::Node;

use super::node_key;
use crate::cloud::FakeCloud;
use crate::method::Method;

#[async_trait]
impl NodeGroups for FakeCloud {
    async fn node_groups(&self) -> CloudResult<Vec<NodeGroup>> {
        self.call(Method::NodeGroups, String::new(), |st, _| {
            Ok(st.node_groups())
        })
        .await
    }

    async fn node_group_for_node(&self, node: &Node) -> CloudResult<Option<String>> {
        self.call(Method::NodeGroupForNode, node_key(node), |st, _| {
            let id = node_provider_id(node)
                .or(node.metadata.name.as_deref())
                .unwrap_or_default();
            Ok(st.instances.get(id).and_then(|r| r.group.clone()))
        })
        .await
    }

    async fn target_size(&self, group_id: &str) -> CloudResult<u32> {
        self.call(Method::TargetSize, group_id.to_owned(), |st, _| {
            st.target_size(group_id)
        })
        .await
    }

    async fn increase_size(&self, group_id: &str, delta: u32) -> CloudResult<()> {
        self.call(Method::IncreaseSize, group_id.to_owned(), |st, now| {
            st.increase_size(group_id, delta, now)
        })
        .await
    }

    async fn delete_instances(&self, group_id: &str, provider_ids: &[String]) -> CloudResult<()> {
        self.call(Method::DeleteInstances, group_id.to_owned(), |st, _| {
            st.delete_instances(group_id, provider_ids)
        })
        .await
    }

    async fn decrease_target_size(&self, group_id: &str, delta: u32) -> CloudResult<()> {
        self.call(
            Method::DecreaseTargetSize,
            group_id.to_owned(),
            |st, now| st.decrease_target_size(group_id, delta, now),
        )
        .await
    }

    async fn instances(&self, group_id: &str) -> CloudResult<Vec<CloudInstance>> {
        self.call(
            Method::NodeGroupInstances,
            group_id.to_owned(),
            |st, now| st.group_instances(group_id, now),
        )
        .await
    }

    async fn template_node(&self, group_id: &str) -> CloudResult<Node> {
        self.call(Method::TemplateNode, group_id.to_owned(), |st, _| {
            st.template_node(group_id)
        })
        .await
    }
}
