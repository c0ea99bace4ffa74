//! Which subnets a load balancer goes into: the annotation's, or one per zone discovered by tags.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Subnet};
use cloudprovider_api::{CloudError, CloudResult};

use super::annotations::{ANNOTATION_SUBNETS, LbSpec};
use crate::AwsCloud;
use crate::error::api_error;
use crate::tags::{TAG_CLUSTER_PREFIX, TAG_ROLE_ELB, TAG_ROLE_INTERNAL_ELB};

/// The chosen subnets and their VPC.
pub(crate) struct Placement {
    pub(crate) subnet_ids: Vec<String>,
    pub(crate) vpc_id: String,
}

fn tag<'a>(subnet: &'a Subnet, key: &str) -> Option<&'a str> {
    subnet
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .map(|t| t.value().unwrap_or_default())
}

impl AwsCloud {
    async fn describe_subnets(&self, filters: Vec<Filter>) -> CloudResult<Vec<Subnet>> {
        let out = self
            .inner
            .ec2
            .describe_subnets()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(|e| self.cloud_error(api_error("DescribeSubnets", e)))?;
        Ok(out.subnets().to_vec())
    }

    /// Subnets from the annotation (IDs or `Name` tags), else discovered: in the configured VPC, carrying the
    /// role tag for the scheme or the cluster tag, not tagged for another cluster only; one per zone, preferring
    /// the role tag, then the cluster tag, then the lowest ID.
    pub(crate) async fn placement(&self, spec: &LbSpec) -> CloudResult<Placement> {
        let subnets = match &spec.subnets {
            Some(wanted) => self.annotated_subnets(wanted).await?,
            None => self.discovered_subnets(spec.internal).await?,
        };
        let vpc_id = subnets
            .first()
            .and_then(|s| s.vpc_id())
            .unwrap_or_default()
            .to_owned();
        if subnets.iter().any(|s| s.vpc_id() != Some(vpc_id.as_str())) {
            return Err(CloudError::invalid_input(
                ANNOTATION_SUBNETS,
                "the subnets are in different VPCs",
            ));
        }
        Ok(Placement {
            subnet_ids: subnets
                .iter()
                .filter_map(|s| s.subnet_id().map(str::to_owned))
                .collect(),
            vpc_id,
        })
    }

    async fn annotated_subnets(&self, wanted: &[String]) -> CloudResult<Vec<Subnet>> {
        let (ids, names): (Vec<String>, Vec<String>) = wanted
            .iter()
            .cloned()
            .partition(|s| s.starts_with("subnet-"));
        let mut found = Vec::new();
        if !ids.is_empty() {
            found.extend(
                self.describe_subnets(vec![
                    Filter::builder()
                        .name("subnet-id")
                        .set_values(Some(ids))
                        .build(),
                ])
                .await?,
            );
        }
        if !names.is_empty() {
            found.extend(
                self.describe_subnets(vec![
                    Filter::builder()
                        .name("tag:Name")
                        .set_values(Some(names))
                        .build(),
                ])
                .await?,
            );
        }
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|w| {
                !found.iter().any(|s| {
                    s.subnet_id() == Some(w.as_str()) || tag(s, "Name") == Some(w.as_str())
                })
            })
            .collect();
        if !missing.is_empty() {
            return Err(CloudError::invalid_input(
                ANNOTATION_SUBNETS,
                format!("no subnet has the ID or Name {missing:?}"),
            ));
        }
        Ok(found)
    }

    async fn discovered_subnets(&self, internal: bool) -> CloudResult<Vec<Subnet>> {
        let role = if internal {
            TAG_ROLE_INTERNAL_ELB
        } else {
            TAG_ROLE_ELB
        };
        let cluster_key = &self.inner.tagging.cluster_key;
        let mut filters = vec![
            Filter::builder()
                .name("tag-key")
                .values(role)
                .values(cluster_key)
                .build(),
        ];
        if let Some(vpc) = &self.inner.config.vpc_id {
            filters.push(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let candidates = self.describe_subnets(filters).await?;
        let mut best: BTreeMap<String, (bool, bool, String, Subnet)> = BTreeMap::new();
        for subnet in candidates {
            let ours = tag(&subnet, cluster_key).is_some();
            let other_cluster = subnet.tags().iter().any(|t| {
                t.key()
                    .is_some_and(|k| k.starts_with(TAG_CLUSTER_PREFIX) && k != cluster_key)
            });
            if other_cluster && !ours {
                continue;
            }
            let has_role =
                tag(&subnet, role).is_some_and(|v| v.is_empty() || v == "1" || v == "true");
            if !has_role && !ours {
                continue;
            }
            let zone = subnet.availability_zone().unwrap_or_default().to_owned();
            let id = subnet.subnet_id().unwrap_or_default().to_owned();
            let better = match best.get(&zone) {
                None => true,
                Some((r, o, best_id, _)) => {
                    (has_role, ours, std::cmp::Reverse(&id)) > (*r, *o, std::cmp::Reverse(best_id))
                }
            };
            if better {
                best.insert(zone, (has_role, ours, id, subnet));
            }
        }
        if best.is_empty() {
            return Err(CloudError::invalid_input(
                ANNOTATION_SUBNETS,
                format!(
                    "not set, and no subnet{} is tagged {role} or {cluster_key}",
                    self.inner
                        .config
                        .vpc_id
                        .as_ref()
                        .map(|v| format!(" of {v}"))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(best.into_values().map(|(_, _, _, s)| s).collect())
    }
}
