//! Writes the node security-group rules [`ingress`](super::ingress) decides: one paginated
//! `DescribeSecurityGroups` of the load balancer's VPC, then per group that needs it one
//! `RevokeSecurityGroupIngress` and one `AuthorizeSecurityGroupIngress`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, Instance, IpPermission, SecurityGroup};
use tracing::{info, warn};

use aws_sdk_elasticloadbalancingv2::types::LoadBalancer;

use super::annotations::LbSpec;
use super::ingress::{GroupChange, NlbIngress, Rule, plan_group, ungroup};
use crate::AwsCloud;
use crate::error::{AwsError, AwsResult, api_error};

/// The security group of `instance` whose rules the load balancer manages, as upstream picks it: the one group
/// tagged with the cluster tag, else the instance's only group; `None` (with a warning) for an instance without
/// groups. Two tagged groups, or two untagged and none tagged, are an error naming them: tag exactly one.
pub(crate) fn instance_group(
    instance: &Instance,
    tagged: &BTreeSet<String>,
) -> AwsResult<Option<String>> {
    let id = instance.instance_id().unwrap_or("?");
    let groups: Vec<&str> = instance
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    let (tagged_groups, untagged): (Vec<&str>, Vec<&str>) =
        groups.iter().partition(|g| tagged.contains(**g));
    let pick = |list: &[&str], kind: &str| match list {
        [one] => Ok(Some((*one).to_owned())),
        _ => Err(AwsError::unexpected(
            "DescribeSecurityGroups",
            format!(
                "instance {id} has {} {kind} security groups ({}); tag exactly one with the cluster tag so the \
                 load balancer's rules go there",
                list.len(),
                list.join(", ")
            ),
        )),
    };
    if !tagged_groups.is_empty() {
        return pick(&tagged_groups, "cluster-tagged");
    }
    if !untagged.is_empty() {
        return pick(&untagged, "untagged");
    }
    warn!(
        instance = id,
        "instance without security group: no ingress rules for it"
    );
    Ok(None)
}

impl AwsCloud {
    /// Every security group of `vpc_id` (all visible groups when `None`).
    pub(crate) async fn security_groups_of(
        &self,
        vpc_id: Option<&str>,
    ) -> AwsResult<Vec<SecurityGroup>> {
        let mut groups = Vec::new();
        let mut token = None;
        loop {
            let mut request = self
                .inner
                .ec2
                .describe_security_groups()
                .set_next_token(token);
            if let Some(vpc) = vpc_id {
                request = request.filters(Filter::builder().name("vpc-id").values(vpc).build());
            }
            let out = request
                .send()
                .await
                .map_err(|e| api_error("DescribeSecurityGroups", e))?;
            groups.extend(out.security_groups().iter().cloned());
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(groups);
            }
        }
    }

    /// The CIDRs of `subnet_ids` (IPv4 and associated IPv6 blocks): where an NLB's health checks come from.
    /// Asks AWS only for subnets not seen before (a subnet's IPv4 block never changes).
    pub(crate) async fn subnet_cidrs(&self, subnet_ids: &[String]) -> AwsResult<BTreeSet<String>> {
        let unknown: Vec<String> = {
            let known = self.inner.known();
            subnet_ids
                .iter()
                .filter(|id| !known.subnet_cidrs.contains_key(*id))
                .cloned()
                .collect()
        };
        if !unknown.is_empty() {
            let out = self
                .inner
                .ec2
                .describe_subnets()
                .set_subnet_ids(Some(unknown))
                .send()
                .await
                .map_err(|e| api_error("DescribeSubnets", e))?;
            let mut known = self.inner.known();
            for subnet in out.subnets() {
                let Some(id) = subnet.subnet_id() else {
                    continue;
                };
                let mut cidrs: BTreeSet<String> =
                    subnet.cidr_block().map(str::to_owned).into_iter().collect();
                cidrs.extend(
                    subnet
                        .ipv6_cidr_block_association_set()
                        .iter()
                        .filter_map(|a| a.ipv6_cidr_block().map(str::to_owned)),
                );
                known.subnet_cidrs.insert(id.to_owned(), cidrs);
            }
        }
        let known = self.inner.known();
        Ok(subnet_ids
            .iter()
            .filter_map(|id| known.subnet_cidrs.get(id))
            .flatten()
            .cloned()
            .collect())
    }

    /// Revokes `permissions` from `group` (none: no call); a rule already gone (a concurrent change) is no error.
    pub(crate) async fn revoke_ingress(
        &self,
        group: &str,
        permissions: Vec<IpPermission>,
    ) -> AwsResult<()> {
        if permissions.is_empty() {
            return Ok(());
        }
        let result = self
            .inner
            .ec2
            .revoke_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(permissions))
            .send()
            .await;
        match result {
            Err(e) => {
                let e = api_error("RevokeSecurityGroupIngress", e);
                if e.code() == Some("InvalidPermission.NotFound") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Ok(_) => Ok(()),
        }
    }

    /// Grants `permissions` on `group` (none: no call); a rule already there (a concurrent change) is no error.
    pub(crate) async fn grant_ingress(
        &self,
        group: &str,
        permissions: Vec<IpPermission>,
    ) -> AwsResult<()> {
        if permissions.is_empty() {
            return Ok(());
        }
        let result = self
            .inner
            .ec2
            .authorize_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(permissions))
            .send()
            .await;
        match result {
            Err(e) => {
                let e = api_error("AuthorizeSecurityGroupIngress", e);
                if e.code() == Some("InvalidPermission.Duplicate") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Ok(_) => Ok(()),
        }
    }

    /// Revokes then grants.
    async fn apply_group_change(&self, group_id: &str, change: &GroupChange) -> AwsResult<()> {
        self.revoke_ingress(
            group_id,
            change.revoke.iter().map(Rule::to_permission).collect(),
        )
        .await?;
        self.grant_ingress(
            group_id,
            change.grant.iter().map(Rule::to_permission).collect(),
        )
        .await?;
        info!(
            security_group = group_id,
            revoked = change.revoke.len(),
            granted = change.grant.len(),
            "security group rules updated"
        );
        Ok(())
    }

    /// Makes the rules of `lb` exactly as wanted: on the group of every target instance, and none on any other
    /// group of the VPC (cluster-tagged or not, so a group no instance uses any more is cleaned up too). Groups
    /// without rules of this load balancer and not used by a target are not written to.
    pub(crate) async fn sync_nlb_ingress(
        &self,
        lb: &LoadBalancer,
        spec: &LbSpec,
        targets: &BTreeMap<String, Instance>,
    ) -> AwsResult<()> {
        if self.inner.config.disable_security_group_ingress {
            return Ok(());
        }
        let subnets: Vec<String> = lb
            .availability_zones()
            .iter()
            .filter_map(|z| z.subnet_id().map(str::to_owned))
            .collect();
        let health_cidrs = self.subnet_cidrs(&subnets).await?;
        let ingress = NlbIngress::for_service(
            lb.load_balancer_name().unwrap_or_default(),
            spec,
            health_cidrs,
        );
        self.write_nlb_ingress(lb.vpc_id(), &ingress, targets).await
    }

    /// Revokes every rule of the load balancer `lb_name` from the groups of `vpc_id` (of every visible VPC when
    /// the load balancer is already gone and the config names no `vpcId`).
    pub(crate) async fn remove_nlb_ingress(
        &self,
        lb_name: &str,
        vpc_id: Option<&str>,
    ) -> AwsResult<()> {
        if self.inner.config.disable_security_group_ingress {
            return Ok(());
        }
        let vpc_id = vpc_id.or(self.inner.config.vpc_id.as_deref());
        self.write_nlb_ingress(vpc_id, &NlbIngress::for_removal(lb_name), &BTreeMap::new())
            .await
    }

    /// Every security group of `vpc_id`, and the IDs of those the target instances use (each instance's one group,
    /// as [`instance_group`] picks it).
    pub(crate) async fn groups_with_targets(
        &self,
        vpc_id: Option<&str>,
        targets: &BTreeMap<String, Instance>,
    ) -> AwsResult<(Vec<SecurityGroup>, BTreeSet<String>)> {
        let groups = self.security_groups_of(vpc_id).await?;
        let tagged: BTreeSet<String> = groups
            .iter()
            .filter(|g| {
                g.tags().iter().any(|t| {
                    t.key()
                        .is_some_and(|k| k == self.inner.tagging.cluster_key.as_str())
                })
            })
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect();
        let mut used = BTreeSet::new();
        for instance in targets.values() {
            used.extend(instance_group(instance, &tagged)?);
        }
        Ok((groups, used))
    }

    async fn write_nlb_ingress(
        &self,
        vpc_id: Option<&str>,
        lb: &NlbIngress,
        targets: &BTreeMap<String, Instance>,
    ) -> AwsResult<()> {
        let (groups, used) = self.groups_with_targets(vpc_id, targets).await?;
        for group in &groups {
            let Some(id) = group.group_id() else { continue };
            let change = plan_group(&ungroup(group.ip_permissions()), lb, used.contains(id));
            if !change.is_empty() {
                self.apply_group_change(id, &change).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::GroupIdentifier;

    use super::*;

    fn instance(groups: &[&str]) -> Instance {
        Instance::builder()
            .instance_id("i-1")
            .set_security_groups(Some(
                groups
                    .iter()
                    .map(|g| GroupIdentifier::builder().group_id(*g).build())
                    .collect(),
            ))
            .build()
    }

    #[test]
    fn the_tagged_group_else_the_only_one() {
        let tagged: BTreeSet<String> = ["sg-k8s".to_owned()].into();
        let pick =
            |groups: &[&str]| instance_group(&instance(groups), &tagged).map_err(|e| e.to_string());
        assert_eq!(pick(&["sg-a", "sg-k8s"]), Ok(Some("sg-k8s".to_owned())));
        assert_eq!(pick(&["sg-a"]), Ok(Some("sg-a".to_owned())));
        assert_eq!(pick(&[]), Ok(None));
        let two = pick(&["sg-a", "sg-b"]).err().unwrap_or_default();
        assert!(
            two.contains("2 untagged security groups (sg-a, sg-b)"),
            "{two}"
        );
        let tagged: BTreeSet<String> = ["sg-a".to_owned(), "sg-b".to_owned()].into();
        let both = instance_group(&instance(&["sg-a", "sg-b"]), &tagged)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(both.contains("2 cluster-tagged"), "{both}");
    }
}
