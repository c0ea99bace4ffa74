//! A Classic ELB's security groups, as upstream: its own group `k8s-elb-<name>` (created and tagged owned by this
//! cluster; its ingress exactly the source ranges on the listener ports plus ICMP "fragmentation needed"), or the
//! annotated groups instead, plus the extra ones; and on each target instance's group one rule admitting the load
//! balancer's (first) group on every protocol, removed from groups no target uses.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    Filter, Instance, IpPermission, ResourceType, SecurityGroup, Tag, TagSpecification,
    UserIdGroupPair,
};

use super::ClassicSpec;
use crate::AwsCloud;
use crate::error::{AwsError, AwsResult, api_error};
use crate::load_balancers::annotations::LbSpec;
use crate::load_balancers::ingress::{Rule, ungroup};

/// Upstream's name of a Classic ELB's own group.
pub(crate) fn managed_group_name(lb_name: &str) -> String {
    format!("k8s-elb-{lb_name}")
}

/// The rules of the managed group: the source ranges on every listener port (TCP), and ICMP type 3 code 4 from
/// them for path-MTU discovery (IPv4 ranges).
fn wanted_rules(spec: &LbSpec, classic: &ClassicSpec) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for cidr in &spec.source_ranges {
        for l in &classic.listeners {
            rules.insert(Rule::plain("tcp", l.port, l.port, cidr));
        }
        if !cidr.contains(':') {
            rules.insert(Rule::plain("icmp", 3, 4, cidr));
        }
    }
    rules
}

/// True when `p` admits everything from group `group`.
fn admits_group(p: &IpPermission, group: &str) -> bool {
    p.ip_protocol() == Some("-1")
        && p.user_id_group_pairs()
            .iter()
            .any(|pair| pair.group_id() == Some(group))
}

fn group_permission(group: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("-1")
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(group).build())
        .build()
}

impl AwsCloud {
    /// The managed group of `lb_name` in `vpc`, if it exists and this cluster owns it.
    pub(crate) async fn managed_classic_group(
        &self,
        lb_name: &str,
        vpc: Option<&str>,
    ) -> AwsResult<Option<String>> {
        let mut request = self.inner.ec2.describe_security_groups().filters(
            Filter::builder()
                .name("group-name")
                .values(managed_group_name(lb_name))
                .build(),
        );
        if let Some(vpc) = vpc {
            request = request.filters(Filter::builder().name("vpc-id").values(vpc).build());
        }
        let out = request
            .send()
            .await
            .map_err(|e| api_error("DescribeSecurityGroups", e))?;
        Ok(out
            .security_groups()
            .iter()
            .find(|g| self.owns_group(g))
            .and_then(|g| g.group_id().map(str::to_owned)))
    }

    fn owns_group(&self, group: &SecurityGroup) -> bool {
        self.inner.tagging.owned(
            group
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default()))),
        )
    }

    /// The load balancer's groups, first the one node rules admit: the annotated groups, or the managed group
    /// (created if missing, its ingress made exact); then the extra ones.
    pub(crate) async fn classic_groups(
        &self,
        lb_name: &str,
        spec: &LbSpec,
        classic: &ClassicSpec,
        vpc: &str,
    ) -> AwsResult<Vec<String>> {
        let mut groups = if classic.groups.replace.is_empty() {
            let group = match self.managed_classic_group(lb_name, Some(vpc)).await? {
                Some(group) => group,
                None => self.create_managed_group(lb_name, spec, vpc).await?,
            };
            self.sync_managed_ingress(&group, &wanted_rules(spec, classic))
                .await?;
            vec![group]
        } else {
            classic.groups.replace.clone()
        };
        for extra in &classic.groups.extra {
            if !groups.contains(extra) {
                groups.push(extra.clone());
            }
        }
        Ok(groups)
    }

    async fn create_managed_group(
        &self,
        lb_name: &str,
        spec: &LbSpec,
        vpc: &str,
    ) -> AwsResult<String> {
        let tags: Vec<Tag> = self
            .inner
            .tagging
            .owned_tags(&spec.extra_tags)
            .into_iter()
            .chain([(
                crate::tags::TAG_SERVICE_NAME.to_owned(),
                spec.service_name(),
            )])
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let out = self
            .inner
            .ec2
            .create_security_group()
            .group_name(managed_group_name(lb_name))
            .description(format!(
                "Security group for Kubernetes ELB {lb_name} ({})",
                spec.service_name()
            ))
            .vpc_id(vpc)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| api_error("CreateSecurityGroup", e))?;
        out.group_id()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::unexpected("CreateSecurityGroup", "no group ID returned"))
    }

    /// Makes the managed group's ingress exactly `wanted` (the group is this cluster's: every rule is ours).
    async fn sync_managed_ingress(&self, group: &str, wanted: &BTreeSet<Rule>) -> AwsResult<()> {
        let out = self
            .inner
            .ec2
            .describe_security_groups()
            .group_ids(group)
            .send()
            .await
            .map_err(|e| api_error("DescribeSecurityGroups", e))?;
        let current: BTreeSet<Rule> = out
            .security_groups()
            .iter()
            .flat_map(|g| ungroup(g.ip_permissions()))
            .map(Rule::without_description)
            .collect();
        let revoke: Vec<IpPermission> = current
            .difference(wanted)
            .map(Rule::to_permission)
            .collect();
        let grant: Vec<IpPermission> = wanted
            .difference(&current)
            .map(Rule::to_permission)
            .collect();
        self.revoke_ingress(group, revoke).await?;
        self.grant_ingress(group, grant).await?;
        Ok(())
    }

    /// On the group of every target instance, a rule admitting `lb_group`; removed from every other group of the
    /// VPC that has it.
    pub(crate) async fn sync_classic_node_ingress(
        &self,
        vpc: &str,
        lb_group: &str,
        targets: &BTreeMap<String, Instance>,
    ) -> AwsResult<()> {
        if self.inner.config.disable_security_group_ingress {
            return Ok(());
        }
        let (groups, used) = self
            .groups_with_targets((!vpc.is_empty()).then_some(vpc), targets)
            .await?;
        for group in &groups {
            let Some(id) = group.group_id() else { continue };
            if id == lb_group {
                continue;
            }
            let has = group
                .ip_permissions()
                .iter()
                .any(|p| admits_group(p, lb_group));
            match (used.contains(id), has) {
                (true, false) => {
                    self.grant_ingress(id, vec![group_permission(lb_group)])
                        .await?
                }
                (false, true) => {
                    self.revoke_ingress(id, vec![group_permission(lb_group)])
                        .await?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Deletes the managed group; while AWS still holds it (the load balancer's interfaces linger for a while after
    /// deletion: `DependencyViolation`) the error is transient and the deletion is retried.
    pub(crate) async fn delete_managed_group(&self, group: &str) -> AwsResult<()> {
        match self
            .inner
            .ec2
            .delete_security_group()
            .group_id(group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = api_error("DeleteSecurityGroup", e);
                if e.code() == Some("InvalidGroup.NotFound") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_rules_match_only_the_whole_group() {
        let p = group_permission("sg-lb");
        assert!(admits_group(&p, "sg-lb"));
        assert!(!admits_group(&p, "sg-other"));
        let tcp = IpPermission::builder()
            .ip_protocol("tcp")
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-lb").build())
            .build();
        assert!(!admits_group(&tcp, "sg-lb"));
        assert_eq!(managed_group_name("a1"), "k8s-elb-a1");
    }
}
