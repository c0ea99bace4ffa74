//! ELBv2 building blocks: find load balancers and target groups, read tags, diff and (de)register targets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_elasticloadbalancingv2::types::{LoadBalancer, Tag, TargetDescription, TargetGroup};

use crate::AwsCloud;
use crate::error::{AwsError, AwsResult, api_error};

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
    /// Returns the targets the cloud refused to register (see [`register_chunk`](Self::register_chunk)); they
    /// are left out and the rest is registered.
    pub(crate) async fn sync_targets(
        &self,
        tg_arn: &str,
        port: i32,
        wanted: &BTreeSet<String>,
    ) -> AwsResult<Vec<String>> {
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
        let mut refused = Vec::new();
        for chunk in add.chunks(TARGET_CHUNK_SIZE) {
            refused.extend(self.register_chunk(tg_arn, chunk.to_vec()).await?);
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
        Ok(refused)
    }

    /// Registers one chunk of targets. A target the cloud refuses (`InvalidTarget`: not running any more, gone,
    /// another VPC) is dropped and returned rather than failing the chunk: first the IDs the error names are dropped
    /// and the rest retried; if the error names none of them, each target is registered on its own. Every other
    /// error fails the chunk.
    async fn register_chunk(
        &self,
        tg_arn: &str,
        mut chunk: Vec<TargetDescription>,
    ) -> AwsResult<Vec<String>> {
        let mut refused = Vec::new();
        while !chunk.is_empty() {
            let Some(message) = self.register(tg_arn, chunk.clone()).await? else {
                return Ok(refused);
            };
            let named = refused_ids(&message, &chunk);
            if named.is_empty() {
                // The message names no target of ours: find the refused ones one by one.
                for target in chunk {
                    if self.register(tg_arn, vec![target.clone()]).await?.is_some() {
                        refused.extend(target.id().map(str::to_owned));
                    }
                }
                return Ok(refused);
            }
            chunk.retain(|t| !t.id().is_some_and(|id| named.contains(id)));
            refused.extend(named);
        }
        Ok(refused)
    }

    /// One `RegisterTargets`: `Ok(None)` on success, `Ok(Some(message))` when the cloud refused a target
    /// (`InvalidTarget`), `Err` otherwise.
    async fn register(
        &self,
        tg_arn: &str,
        targets: Vec<TargetDescription>,
    ) -> AwsResult<Option<String>> {
        match self
            .inner
            .elb
            .register_targets()
            .target_group_arn(tg_arn)
            .set_targets(Some(targets))
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(e) => match api_error("RegisterTargets", e) {
                AwsError::Api { code, message, .. } if code == INVALID_TARGET => Ok(Some(message)),
                e => Err(e),
            },
        }
    }
}

/// The ELBv2 error code of a target it does not accept.
const INVALID_TARGET: &str = "InvalidTarget";

/// The IDs of `chunk` that an `InvalidTarget` message names (AWS: "The following targets are not in a running
/// state and cannot be registered: 'i-0123…'").
fn refused_ids(message: &str, chunk: &[TargetDescription]) -> BTreeSet<String> {
    let named: BTreeSet<&str> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .collect();
    chunk
        .iter()
        .filter_map(|t| t.id())
        .filter(|id| named.contains(id))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str) -> TargetDescription {
        TargetDescription::builder().id(id).port(30080).build()
    }

    #[test]
    fn refused_ids_are_the_named_targets_of_the_chunk() {
        let chunk = [target("i-0a1"), target("i-0b2"), target("i-0c3")];
        let msg = "The following targets are not in a running state and cannot be registered: 'i-0b2', 'i-0c3'";
        assert_eq!(
            refused_ids(msg, &chunk),
            BTreeSet::from(["i-0b2".to_owned(), "i-0c3".to_owned()])
        );
        // IDs are matched whole: i-0b2 does not match i-0b20, and unknown IDs are ignored.
        let msg = "not in a running state: 'i-0b20', 'i-9'";
        assert!(refused_ids(msg, &chunk).is_empty());
        assert!(refused_ids("", &chunk).is_empty());
    }
}
