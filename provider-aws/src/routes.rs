//! Routes: pod CIDRs in the cluster's VPC route table, each pointing at a node's instance.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Filter, RouteState, RouteTable};
use cloudprovider_api::{CloudError, CloudResult, Route, Routes, async_trait, ipnet::IpNet};
use tracing::instrument;

use crate::AwsCloud;
use crate::error::{AwsError, AwsResult, api_error};
use crate::instances::{NodeKey, is_terminated};

impl AwsCloud {
    /// The route table: configured `routeTableId`, else the one table tagged with the cluster tag.
    async fn route_table_id(&self) -> AwsResult<String> {
        self.inner
            .route_table
            .get_or_try_init(|| async {
                if let Some(id) = &self.inner.config.route_table_id {
                    return Ok(id.clone());
                }
                let out = self
                    .inner
                    .ec2
                    .describe_route_tables()
                    .filters(
                        Filter::builder()
                            .name("tag-key")
                            .values(&self.inner.tagging.cluster_key)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeRouteTables", e))?;
                let ids: Vec<&str> = out
                    .route_tables()
                    .iter()
                    .filter_map(|t| t.route_table_id())
                    .collect();
                match ids.as_slice() {
                    [id] => Ok((*id).to_owned()),
                    [] => Err(AwsError::config(
                        "routeTableId",
                        format!(
                            "not set, and no route table is tagged {}",
                            self.inner.tagging.cluster_key
                        ),
                    )),
                    many => Err(AwsError::config(
                        "routeTableId",
                        format!(
                            "not set, and several route tables are tagged {}: {many:?}",
                            self.inner.tagging.cluster_key
                        ),
                    )),
                }
            })
            .await
            .cloned()
    }

    async fn route_table(&self) -> AwsResult<RouteTable> {
        let id = self.route_table_id().await?;
        let out = self
            .inner
            .ec2
            .describe_route_tables()
            .route_table_ids(&id)
            .send()
            .await
            .map_err(|e| api_error("DescribeRouteTables", e))?;
        out.route_tables().first().cloned().ok_or_else(|| {
            AwsError::config("routeTableId", format!("route table {id} does not exist"))
        })
    }

    /// The live instance named `node` (its private DNS name), with its source/dest check flag.
    async fn route_target(&self, node: &str) -> CloudResult<(String, bool)> {
        let key = NodeKey::Name(node.to_owned());
        let mut found = self
            .lookup(std::slice::from_ref(&key))
            .await
            .map_err(|e| self.cloud_error(e))?;
        let instance = found
            .remove(&key)
            .filter(|i| !is_terminated(i))
            .ok_or_else(|| CloudError::not_found("instance", node))?;
        let id = instance.instance_id().ok_or_else(|| {
            CloudError::transient("DescribeInstances returned an instance without ID")
        })?;
        Ok((id.to_owned(), instance.source_dest_check().unwrap_or(true)))
    }
}

#[async_trait]
impl Routes for AwsCloud {
    /// Routes of the table that target an instance (or did, for blackholes). One `DescribeRouteTables` and one
    /// batched `DescribeInstances` to name the target nodes.
    #[instrument(skip_all, fields(cluster = cluster_name))]
    async fn list_routes(&self, cluster_name: &str) -> CloudResult<Vec<Route>> {
        let _ = cluster_name; // the table is the cluster's; upstream ignores the name too
        let table = self.route_table().await.map_err(|e| self.cloud_error(e))?;
        let mut wanted = Vec::new();
        for route in table.routes() {
            let (Some(cidr), Some(instance)) =
                (route.destination_cidr_block(), route.instance_id())
            else {
                continue;
            };
            let Ok(cidr) = cidr.parse::<IpNet>() else {
                continue;
            };
            let blackhole = route.state() == Some(&RouteState::Blackhole);
            wanted.push((cidr, instance.to_owned(), blackhole));
        }
        let keys: Vec<NodeKey> = wanted
            .iter()
            .map(|(_, id, _)| NodeKey::Id(id.clone()))
            .collect();
        let found = self.lookup(&keys).await.map_err(|e| self.cloud_error(e))?;
        // AWS shows a route to a terminated instance as a blackhole only after a while (and moto never does):
        // a target that is gone makes the route a blackhole right away.
        let live: HashMap<&str, &str> = found
            .values()
            .filter(|i| !is_terminated(i))
            .filter_map(|i| Some((i.instance_id()?, i.private_dns_name().unwrap_or_default())))
            .collect();
        Ok(wanted
            .iter()
            .map(|(cidr, id, blackhole)| Route {
                name: format!("{cluster_name}-{cidr}"),
                target_node: live
                    .get(id.as_str())
                    .map(|n| (*n).to_owned())
                    .unwrap_or_default(),
                target_node_addresses: vec![],
                destination_cidr: *cidr,
                blackhole: *blackhole || !live.contains_key(id.as_str()),
            })
            .collect())
    }

    /// Disables the instance's source/dest check (so it may receive pod traffic), then creates the route,
    /// replacing a blackhole (or a route to another instance) for the same CIDR.
    #[instrument(skip_all, fields(cluster = cluster_name, node = %route.target_node, cidr = %route.destination_cidr))]
    async fn create_route(
        &self,
        cluster_name: &str,
        name_hint: &str,
        route: &Route,
    ) -> CloudResult<()> {
        let _ = (cluster_name, name_hint);
        let (instance_id, source_dest_check) = self.route_target(&route.target_node).await?;
        let ec2 = &self.inner.ec2;
        if source_dest_check {
            ec2.modify_instance_attribute()
                .instance_id(&instance_id)
                .source_dest_check(
                    aws_sdk_ec2::types::AttributeBooleanValue::builder()
                        .value(false)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.cloud_error(api_error("ModifyInstanceAttribute", e)))?;
        }
        let table = self.route_table().await.map_err(|e| self.cloud_error(e))?;
        let table_id = table.route_table_id().unwrap_or_default().to_owned();
        let cidr = route.destination_cidr.to_string();
        let existing = table
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(cidr.as_str()));
        match existing {
            Some(r)
                if r.instance_id() == Some(instance_id.as_str())
                    && r.state() != Some(&RouteState::Blackhole) =>
            {
                Ok(())
            }
            Some(_) => {
                ec2.replace_route()
                    .route_table_id(&table_id)
                    .destination_cidr_block(&cidr)
                    .instance_id(&instance_id)
                    .send()
                    .await
                    .map_err(|e| self.cloud_error(api_error("ReplaceRoute", e)))?;
                Ok(())
            }
            None => {
                ec2.create_route()
                    .route_table_id(&table_id)
                    .destination_cidr_block(&cidr)
                    .instance_id(&instance_id)
                    .send()
                    .await
                    .map_err(|e| self.cloud_error(api_error("CreateRoute", e)))?;
                Ok(())
            }
        }
    }

    #[instrument(skip_all, fields(cluster = cluster_name, cidr = %route.destination_cidr))]
    async fn delete_route(&self, cluster_name: &str, route: &Route) -> CloudResult<()> {
        let _ = cluster_name;
        let table_id = self
            .route_table_id()
            .await
            .map_err(|e| self.cloud_error(e))?;
        match self
            .inner
            .ec2
            .delete_route()
            .route_table_id(&table_id)
            .destination_cidr_block(route.destination_cidr.to_string())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = api_error("DeleteRoute", e);
                if e.code() == Some("InvalidRoute.NotFound") {
                    Ok(())
                } else {
                    Err(self.cloud_error(e))
                }
            }
        }
    }
}
