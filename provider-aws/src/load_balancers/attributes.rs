//! Load-balancer and target-group attributes the annotations ask for, written only where they differ (one
//! `Describe…Attributes` per object, and only when an annotation asks for any).

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerAttribute, TargetGroupAttribute};

use super::nlb_options::changed_attributes;
use crate::AwsCloud;
use crate::error::{AwsResult, api_error};

impl AwsCloud {
    /// Sets `wanted` on the load balancer `lb_arn`.
    pub(crate) async fn sync_load_balancer_attributes(
        &self,
        lb_arn: &str,
        wanted: &BTreeMap<String, String>,
    ) -> AwsResult<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let elb = &self.inner.elb;
        let out = elb
            .describe_load_balancer_attributes()
            .load_balancer_arn(lb_arn)
            .send()
            .await
            .map_err(|e| api_error("DescribeLoadBalancerAttributes", e))?;
        let current: BTreeMap<String, String> = out
            .attributes()
            .iter()
            .filter_map(|a| {
                Some((
                    a.key()?.to_owned(),
                    a.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect();
        let changed = changed_attributes(wanted, &current);
        if changed.is_empty() {
            return Ok(());
        }
        elb.modify_load_balancer_attributes()
            .load_balancer_arn(lb_arn)
            .set_attributes(Some(
                changed
                    .into_iter()
                    .map(|(k, v)| LoadBalancerAttribute::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| api_error("ModifyLoadBalancerAttributes", e))?;
        Ok(())
    }

    /// Sets `wanted` on the target group `tg_arn`; attributes not named are left as they are (upstream's rule).
    pub(crate) async fn sync_target_group_attributes(
        &self,
        tg_arn: &str,
        wanted: &BTreeMap<String, String>,
    ) -> AwsResult<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let elb = &self.inner.elb;
        let out = elb
            .describe_target_group_attributes()
            .target_group_arn(tg_arn)
            .send()
            .await
            .map_err(|e| api_error("DescribeTargetGroupAttributes", e))?;
        let current: BTreeMap<String, String> = out
            .attributes()
            .iter()
            .filter_map(|a| {
                Some((
                    a.key()?.to_owned(),
                    a.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect();
        let changed = changed_attributes(wanted, &current);
        if changed.is_empty() {
            return Ok(());
        }
        elb.modify_target_group_attributes()
            .target_group_arn(tg_arn)
            .set_attributes(Some(
                changed
                    .into_iter()
                    .map(|(k, v)| TargetGroupAttribute::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| api_error("ModifyTargetGroupAttributes", e))?;
        Ok(())
    }
}
