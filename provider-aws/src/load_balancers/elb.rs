//! ELBv2 building blocks: find load balancers and target groups, read tags, diff and (de)register targets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_elasticloadbalancingv2::types::{LoadBalancer, Tag, TargetDescription, TargetGroup};

use crate::AwsCloud;
use crate::error::{AwsResult, api_error};

/// Targets are (de)registered in chunks of this many, as upstream does.
pub const TARGET_CHUNK_SIZE: usize = 100;
/// `DescribeTags` takes at most 20 ARNs.
const DESCRIBE_TAGS_CHUNK: usize = 20;

pub(crate) fn elb_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

impl AwsCloud {
    /// The load balancer named `name`, if any.
    pub(crate) async fn find_load_balancer(&self, name: &str) -> AwsResult<Option<LoadBalancer>> {
        match self
            .inner
            .elb
            .describe_load_balancers()
            .names(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.load_balancers().first().cloned()),
            Err(e) => {
                let e = api_error("DescribeLoadBalancers", e);
                if e.code() == Some("LoadBalancerNotFound") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The target group named `name`, if any.
    pub(crate) async fn find_target_group(&self, name: &str) -> AwsResult<Option<TargetGroup>> {
        match self
            .inner
            .elb
            .describe_target_groups()
            .names(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.target_groups().first().cloned()),
            Err(e) => {
                let e = api_error("DescribeTargetGroups", e);
                if e.code() == Some("TargetGroupNotFound") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The target groups a load balancer forwards to.
    pub(crate) async fn target_groups_of(&self, lb_arn: &str) -> AwsResult<Vec<TargetGroup>> {
        match self
            .inner
            .elb
            .describe_target_groups()
            .load_balancer_arn(lb_arn)
            .send()
            .await
        {
            Ok(out) => Ok(out.target_groups().to_vec()),
            Err(e) => {
                // moto answers TargetGroupNotFound for a load balancer without target groups (AWS: an empty list).
                let e = api_error("DescribeTargetGroups", e);
                if e.code() == Some("TargetGroupNotFound") {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Every target group whose name starts with `prefix` (all pages).
    pub(crate) async fn target_groups_named(&self, prefix: &str) -> AwsResult<Vec<TargetGroup>> {
        let mut found = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .inner
                .elb
                .describe_target_groups()
                .set_marker(marker)
                .page_size(400)
                .send()
                .await
                .map_err(|e| api_error("DescribeTargetGroups", e))?;
            found.extend(
                out.target_groups()
                    .iter()
                    .filter(|tg| {
                        tg.target_group_name()
                            .is_some_and(|n| n.starts_with(prefix))
                    })
                    .cloned(),
            );
            marker = out
                .next_marker()
                .filter(|m| !m.is_empty())
                .map(str::to_owned);
            if marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Tags of ELBv2 resources by ARN.
    pub(crate) async fn elb_tags_of(
        &self,
        arns: &[String],
    ) -> AwsResult<HashMap<String, BTreeMap<String, String>>> {
        let mut out = HashMap::new();
        for chunk in arns.chunks(DESCRIBE_TAGS_CHUNK) {
            let answer = self
                .inner
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api_error("DescribeTags", e))?;
            for d in answer.tag_descriptions() {
                let tags = d
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((
                            t.key()?.to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        ))
                    })
                    .collect();
                if let Some(arn) = d.resource_arn() {
                    out.insert(arn.to_owned(), tags);
                }
            }
        }
        Ok(out)
    }

    /// Makes the target group's registered instances exactly `wanted` (on `port`): registers what is missing and
    /// deregisters what is extra, in chunks of [`TARGET_CHUNK_SIZE`]. Targets already draining count as absent.
    pub(crate) async fn sync_targets(
        &self,
        tg_arn: &str,
        port: i32,
        wanted: &BTreeSet<String>,
    ) -> AwsResult<()> {
        let health = self
            .inner
            .elb
            .describe_target_health()
            .target_group_arn(tg_arn)
            .send()
            .await
            .map_err(|e| api_error("DescribeTargetHealth", e))?;
        let current: BTreeSet<String> = health
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                !matches!(
                    d.target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str()),
                    Some("draining")
                )
            })
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
            .collect();
        let target = |id: &String| TargetDescription::builder().id(id).port(port).build();
        let add: Vec<TargetDescription> = wanted.difference(&current).map(target).collect();
        let remove: Vec<TargetDescription> = current.difference(wanted).map(target).collect();
        for chunk in add.chunks(TARGET_CHUNK_SIZE) {
            self.inner
                .elb
                .register_targets()
                .target_group_arn(tg_arn)
                .set_targets(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api_error("RegisterTargets", e))?;
        }
        for chunk in remove.chunks(TARGET_CHUNK_SIZE) {
            self.inner
                .elb
                .deregister_targets()
                .target_group_arn(tg_arn)
                .set_targets(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api_error("DeregisterTargets", e))?;
        }
        Ok(())
    }
}
