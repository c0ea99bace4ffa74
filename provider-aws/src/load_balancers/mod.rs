//! Network Load Balancers (ELBv2) with instance targets for Services of type LoadBalancer.
//!
//! One NLB per Service named like upstream (`"a"` + UID, 32 characters), one target group per port named
//! `k8s-<ns8>-<svc8>-<hash10>`, one listener per port, targets = the nodes' instances on the NodePort. Everything is
//! tagged `kubernetes.io/cluster/<clusterId>=owned` and `kubernetes.io/service-name=<ns>/<name>`; deletion removes
//! only what carries both.

pub(crate) mod annotations;
#[cfg(test)]
mod annotations_prop;
mod attributes;
pub(crate) mod classic;
mod elb;
pub(crate) mod ingress;
pub(crate) mod nlb_options;
mod security_groups;
mod subnets;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_ec2::types::Instance;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, LoadBalancer, LoadBalancerSchemeEnum,
    LoadBalancerTypeEnum, ProtocolEnum, SubnetMapping, TargetGroup, TargetTypeEnum,
};
use cloudprovider_api::{
    CloudError, CloudResult, LoadBalancers, async_trait, default_load_balancer_name,
};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use tracing::{instrument, warn};

use self::annotations::{LbSpec, Plan, PortSpec, plan, plan_nlb, target_group_prefix};
pub use self::elb::TARGET_CHUNK_SIZE;
use self::elb::elb_tags;
use self::nlb_options::{StaticAddresses, load_balancer_attributes};
use crate::AwsCloud;
use crate::error::{AwsError, AwsResult, api_error};
use crate::instances::{is_running, node_key};
use crate::tags::TAG_SERVICE_NAME;

fn status_of(lb: &LoadBalancer) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: lb.dns_name().map(|dns| {
            vec![LoadBalancerIngress {
                hostname: Some(dns.to_owned()),
                ..Default::default()
            }]
        }),
    }
}

/// Targets the cloud refused are left out of the load balancer, which is provisioned with the rest; the next
/// sync (any node change, or the service controller's periodic resync) offers them again.
fn warn_refused(tg_arn: &str, refused: &[String]) {
    if !refused.is_empty() {
        warn!(
            target_group = tg_arn,
            ?refused,
            "targets refused by ELBv2 (InvalidTarget) left out of the load balancer"
        );
    }
}

/// One mapping per subnet with its Elastic IP or private address, in the order both are listed.
fn subnet_mappings(
    subnet_ids: &[String],
    addresses: &StaticAddresses,
) -> CloudResult<Vec<SubnetMapping>> {
    if addresses.len() != subnet_ids.len() {
        return Err(CloudError::invalid_input(
            addresses.annotation(),
            format!(
                "lists {} addresses but the load balancer has {} subnets ({}); give one per subnet",
                addresses.len(),
                subnet_ids.len(),
                subnet_ids.join(", ")
            ),
        ));
    }
    Ok(subnet_ids
        .iter()
        .enumerate()
        .map(|(i, subnet)| {
            let mapping = SubnetMapping::builder().subnet_id(subnet);
            match addresses {
                StaticAddresses::Eips(ids) => mapping.set_allocation_id(ids.get(i).cloned()),
                StaticAddresses::Private(ips) => {
                    mapping.set_private_ipv4_address(ips.get(i).map(ToString::to_string))
                }
            }
            .build()
        })
        .collect())
}

fn scheme(internal: bool) -> LoadBalancerSchemeEnum {
    if internal {
        LoadBalancerSchemeEnum::Internal
    } else {
        LoadBalancerSchemeEnum::InternetFacing
    }
}

fn service_key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or("default"),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

impl AwsCloud {
    fn owned_tags_for(&self, spec: &LbSpec) -> BTreeMap<String, String> {
        let mut tags = self.inner.tagging.owned_tags(&spec.extra_tags);
        tags.insert(TAG_SERVICE_NAME.to_owned(), spec.service_name());
        tags
    }

    /// The load balancer named `name` when this cluster owns it; an error when it exists but is someone else's.
    async fn owned_load_balancer(&self, name: &str) -> CloudResult<Option<LoadBalancer>> {
        let Some(lb) = self
            .find_load_balancer(name)
            .await
            .map_err(|e| self.cloud_error(e))?
        else {
            return Ok(None);
        };
        let arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
        if self.inner.known().owned_load_balancers.contains(&arn) {
            return Ok(Some(lb));
        }
        let tags = self
            .elb_tags_of(std::slice::from_ref(&arn))
            .await
            .map_err(|e| self.cloud_error(e))?;
        let owned = tags.get(&arn).is_some_and(|t| {
            self.inner
                .tagging
                .owned(t.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        });
        if owned {
            self.inner.known().owned_load_balancers.insert(arn);
            Ok(Some(lb))
        } else {
            Err(CloudError::invalid_input(
                "metadata.uid",
                format!(
                    "load balancer {name} exists but is not tagged {}=owned; refusing to touch it",
                    self.inner.tagging.cluster_key
                ),
            ))
        }
    }

    /// The instance IDs of the target nodes: the *running* instances of the selected nodes (as upstream registers
    /// only running instances; ELBv2 refuses the others with `InvalidTarget`), from one batched `DescribeInstances`
    /// lookup per [`DESCRIBE_BATCH_SIZE`](crate::DESCRIBE_BATCH_SIZE) nodes, whatever their number. Nodes filtered
    /// out by the target-node-labels annotation, nodes without an instance and instances not running (stopped,
    /// pending, terminated) are left out with a log line.
    async fn target_instances(
        &self,
        spec: &LbSpec,
        nodes: &[Node],
    ) -> CloudResult<BTreeMap<String, Instance>> {
        let selected = nodes.iter().filter(|n| {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            spec.target_node_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        });
        let mut keys = Vec::new();
        for node in selected {
            match node_key(node) {
                Ok(key) => keys.push(key),
                Err(e) => {
                    warn!(node = node.metadata.name.as_deref(), error = %e, "node skipped as a target")
                }
            }
        }
        let mut ids = BTreeMap::new();
        if keys.is_empty() {
            return Ok(ids);
        }
        let found = self.lookup(&keys).await.map_err(|e| self.cloud_error(e))?;
        for key in &keys {
            let Some(instance) = found.get(key) else {
                warn!(?key, "node without instance skipped as a target");
                continue;
            };
            match (instance.instance_id(), is_running(instance)) {
                (Some(id), true) => {
                    ids.insert(id.to_owned(), instance.clone());
                }
                (id, _) => warn!(
                    ?key,
                    instance = id,
                    state = instance.state().and_then(|s| s.name()).map(|n| n.as_str()),
                    "instance not running skipped as a target"
                ),
            }
        }
        Ok(ids)
    }

    async fn create_load_balancer(
        &self,
        name: &str,
        spec: &LbSpec,
    ) -> CloudResult<(LoadBalancer, String)> {
        let placement = self.placement(spec).await?;
        let mut request = self
            .inner
            .elb
            .create_load_balancer()
            .name(name)
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(scheme(spec.internal));
        request = match &spec.options.static_addresses {
            None => request.set_subnets(Some(placement.subnet_ids)),
            Some(addresses) => request
                .set_subnet_mappings(Some(subnet_mappings(&placement.subnet_ids, addresses)?)),
        };
        let out = request
            .set_tags(Some(elb_tags(&self.owned_tags_for(spec))))
            .send()
            .await
            .map_err(|e| self.cloud_error(api_error("CreateLoadBalancer", e)))?;
        let lb = out.load_balancers().first().cloned().ok_or_else(|| {
            self.cloud_error(AwsError::unexpected(
                "CreateLoadBalancer",
                "no load balancer returned",
            ))
        })?;
        Ok((lb, placement.vpc_id))
    }

    /// The port's target group: one already attached to the load balancer (`attached`, no call), else one by name
    /// (left by an interrupted ensure), else a new one.
    async fn ensure_target_group(
        &self,
        spec: &LbSpec,
        port: &PortSpec,
        vpc_id: &str,
        attached: &[TargetGroup],
    ) -> AwsResult<TargetGroup> {
        let name = spec.target_group_name(&self.inner.config.cluster_id, port);
        if let Some(tg) = attached
            .iter()
            .find(|tg| tg.target_group_name() == Some(name.as_str()))
        {
            return Ok(tg.clone());
        }
        if let Some(tg) = self.find_target_group(&name).await? {
            return Ok(tg);
        }
        let hc = &spec.health;
        let out = self
            .inner
            .elb
            .create_target_group()
            .name(&name)
            .protocol(ProtocolEnum::from(port.target_protocol()))
            .port(port.node_port)
            .vpc_id(vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_protocol(ProtocolEnum::from(hc.protocol.as_str()))
            .health_check_port(&hc.port)
            .set_health_check_path(hc.path.clone())
            .health_check_interval_seconds(hc.interval)
            .set_health_check_timeout_seconds(hc.timeout)
            .healthy_threshold_count(hc.healthy)
            .unhealthy_threshold_count(hc.unhealthy)
            .set_tags(Some(elb_tags(&self.owned_tags_for(spec))))
            .send()
            .await
            .map_err(|e| api_error("CreateTargetGroup", e))?;
        out.target_groups()
            .first()
            .cloned()
            .ok_or_else(|| AwsError::unexpected("CreateTargetGroup", "no target group returned"))
    }

    /// Listeners: one per port forwarding to its target group; others deleted.
    async fn sync_listeners(&self, lb_arn: &str, wanted: &[(PortSpec, String)]) -> AwsResult<()> {
        let elb = &self.inner.elb;
        let out = elb
            .describe_listeners()
            .load_balancer_arn(lb_arn)
            .send()
            .await
            .map_err(|e| api_error("DescribeListeners", e))?;
        let existing: HashMap<i32, _> = out
            .listeners()
            .iter()
            .filter_map(|l| Some((l.port()?, l.clone())))
            .collect();
        for (port, tg_arn) in wanted {
            let action = Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(tg_arn)
                .build();
            let protocol = ProtocolEnum::from(port.listener_protocol());
            let certificates = port.tls.as_ref().map(|t| {
                vec![
                    Certificate::builder()
                        .certificate_arn(&t.certificate_arn)
                        .build(),
                ]
            });
            let policy = port.tls.as_ref().and_then(|t| t.policy.clone());
            match existing.get(&port.port) {
                None => {
                    elb.create_listener()
                        .load_balancer_arn(lb_arn)
                        .port(port.port)
                        .protocol(protocol)
                        .set_certificates(certificates)
                        .set_ssl_policy(policy)
                        .default_actions(action)
                        .send()
                        .await
                        .map_err(|e| api_error("CreateListener", e))?;
                }
                Some(l) => {
                    let forwards = l
                        .default_actions()
                        .iter()
                        .any(|a| a.target_group_arn() == Some(tg_arn.as_str()));
                    let certificate = l.certificates().first().and_then(|c| c.certificate_arn());
                    let tls_differs = certificate
                        != port.tls.as_ref().map(|t| t.certificate_arn.as_str())
                        || (policy.is_some() && l.ssl_policy() != policy.as_deref());
                    if !forwards || l.protocol() != Some(&protocol) || tls_differs {
                        elb.modify_listener()
                            .set_listener_arn(l.listener_arn().map(str::to_owned))
                            .port(port.port)
                            .protocol(protocol)
                            .set_certificates(certificates)
                            .set_ssl_policy(policy)
                            .default_actions(action)
                            .send()
                            .await
                            .map_err(|e| api_error("ModifyListener", e))?;
                    }
                }
            }
        }
        for (port, l) in &existing {
            if !wanted.iter().any(|(p, _)| p.port == *port) {
                elb.delete_listener()
                    .set_listener_arn(l.listener_arn().map(str::to_owned))
                    .send()
                    .await
                    .map_err(|e| api_error("DeleteListener", e))?;
            }
        }
        Ok(())
    }

    /// Deletes the given target groups that this cluster owns for `service_name`.
    async fn delete_owned_target_groups(
        &self,
        groups: &[TargetGroup],
        service_name: &str,
    ) -> AwsResult<()> {
        let arns: Vec<String> = groups
            .iter()
            .filter_map(|tg| tg.target_group_arn().map(str::to_owned))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if arns.is_empty() {
            return Ok(());
        }
        let tags = self.elb_tags_of(&arns).await?;
        for arn in &arns {
            let Some(t) = tags.get(arn) else { continue };
            let owned = self
                .inner
                .tagging
                .owned(t.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if owned && t.get(TAG_SERVICE_NAME).map(String::as_str) == Some(service_name) {
                match self
                    .inner
                    .elb
                    .delete_target_group()
                    .target_group_arn(arn)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        let e = api_error("DeleteTargetGroup", e);
                        if e.code() != Some("TargetGroupNotFound") {
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn ensure(
        &self,
        service: &Service,
        spec: &LbSpec,
        nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus> {
        let name = default_load_balancer_name(service);
        let err = |e| self.cloud_error(e);
        // Resolve targets first: a failure here must not leave a half-built load balancer.
        let targets = self.target_instances(spec, nodes).await?;
        let (lb, vpc_id) = match self.owned_load_balancer(&name).await? {
            Some(lb) if lb.scheme() == Some(&scheme(spec.internal)) => {
                let vpc = lb.vpc_id().unwrap_or_default().to_owned();
                (lb, vpc)
            }
            Some(lb) => {
                // The scheme cannot change in place: replace the load balancer (target groups are kept).
                self.inner
                    .elb
                    .delete_load_balancer()
                    .set_load_balancer_arn(lb.load_balancer_arn().map(str::to_owned))
                    .send()
                    .await
                    .map_err(|e| err(api_error("DeleteLoadBalancer", e)))?;
                self.create_load_balancer(&name, spec).await?
            }
            None => self.create_load_balancer(&name, spec).await?,
        };
        let lb_arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
        let attached = self.target_groups_of(&lb_arn).await.map_err(err)?;
        let mut wanted = Vec::new();
        for port in &spec.ports {
            let tg = self
                .ensure_target_group(spec, port, &vpc_id, &attached)
                .await
                .map_err(err)?;
            wanted.push((
                port.clone(),
                tg.target_group_arn().unwrap_or_default().to_owned(),
            ));
        }
        self.sync_listeners(&lb_arn, &wanted).await.map_err(err)?;
        let target_ids: BTreeSet<String> = targets.keys().cloned().collect();
        for (port, tg_arn) in &wanted {
            let refused = self
                .sync_targets(tg_arn, port.node_port, &target_ids)
                .await
                .map_err(err)?;
            warn_refused(tg_arn, &refused);
        }
        self.sync_nlb_ingress(&lb, spec, &targets)
            .await
            .map_err(err)?;
        let stale: Vec<TargetGroup> = attached
            .into_iter()
            .filter(|tg| {
                !wanted
                    .iter()
                    .any(|(_, arn)| tg.target_group_arn() == Some(arn.as_str()))
            })
            .collect();
        self.delete_owned_target_groups(&stale, &spec.service_name())
            .await
            .map_err(err)?;
        for (_, tg_arn) in &wanted {
            self.sync_target_group_attributes(tg_arn, &spec.options.target_group_attributes)
                .await
                .map_err(err)?;
        }
        let attributes =
            load_balancer_attributes(spec.cross_zone, spec.options.access_logs.as_ref());
        self.sync_load_balancer_attributes(&lb_arn, &attributes)
            .await
            .map_err(err)?;
        Ok(status_of(&lb))
    }
}

impl AwsCloud {
    /// The plan, except that a Service without type annotation whose owned NLB already exists (built by this
    /// provider before Classic ELBs became the default) keeps the NLB instead of getting a second load balancer.
    async fn plan_for(&self, service: &Service) -> CloudResult<Plan> {
        let planned = plan(service)?;
        let name = default_load_balancer_name(service);
        match planned {
            Plan::Classic(..) => {}
            Plan::Nlb(_) => {
                self.refuse_type_change(&name).await?;
                return Ok(planned);
            }
            Plan::Elsewhere(_) => return Ok(planned),
        }
        match self.owned_load_balancer(&name).await {
            Ok(Some(_)) => {
                warn!(
                    load_balancer = %name,
                    "no aws-load-balancer-type, but this Service already has an NLB: keeping it (annotate nlb to say so)"
                );
                plan_nlb(service)
            }
            Ok(None) | Err(CloudError::InvalidInput { .. }) => Ok(planned),
            Err(e) => Err(e),
        }
    }

    /// An NLB for a Service that has a Classic ELB would be a second load balancer: as upstream, the type cannot
    /// change after creation. Checked once per Service and process (a Classic ELB never appears for a Service that
    /// got its NLB).
    async fn refuse_type_change(&self, name: &str) -> CloudResult<()> {
        if self.inner.known().nlb_names.contains(name) {
            return Ok(());
        }
        match self.owned_classic(name).await {
            Ok(Some(_)) => Err(CloudError::invalid_input(
                annotations::ANNOTATION_LOAD_BALANCER_TYPE,
                "\"nlb\", but the Service has a Classic ELB and the type cannot change after creation (as upstream): \
                 delete the Service and create it again with the annotation",
            )),
            Ok(None) | Err(CloudError::InvalidInput { .. }) => {
                self.inner.known().nlb_names.insert(name.to_owned());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl LoadBalancers for AwsCloud {
    #[instrument(skip_all, fields(service = %service_key(service)))]
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> CloudResult<Option<LoadBalancerStatus>> {
        let _ = cluster_name;
        let name = default_load_balancer_name(service);
        let lb = self
            .find_load_balancer(&name)
            .await
            .map_err(|e| self.cloud_error(e))?;
        if let Some(lb) = lb {
            return Ok(Some(status_of(&lb)));
        }
        let classic = self.owned_classic(&name).await?;
        Ok(classic.as_ref().map(classic::status_of))
    }

    #[instrument(skip_all, fields(service = %service_key(service), nodes = nodes.len()))]
    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus> {
        let _ = cluster_name;
        match self.plan_for(service).await? {
            Plan::Elsewhere(why) => Err(CloudError::ImplementedElsewhere(why)),
            Plan::Nlb(spec) => self.ensure(service, &spec, nodes).await,
            Plan::Classic(spec, classic) => {
                self.ensure_classic(service, &spec, &classic, nodes).await
            }
        }
    }

    /// Only the targets: one `DescribeTargetGroups` and per target group one `DescribeTargetHealth` plus the
    /// (de)registrations the diff needs.
    #[instrument(skip_all, fields(service = %service_key(service), nodes = nodes.len()))]
    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<()> {
        let _ = cluster_name;
        let spec = match self.plan_for(service).await? {
            Plan::Elsewhere(why) => return Err(CloudError::ImplementedElsewhere(why)),
            Plan::Classic(spec, _) => return self.update_classic(service, &spec, nodes).await,
            Plan::Nlb(spec) => spec,
        };
        let name = default_load_balancer_name(service);
        let lb = self
            .owned_load_balancer(&name)
            .await?
            .ok_or_else(|| CloudError::not_found("load balancer", name))?;
        let targets = self.target_instances(&spec, nodes).await?;
        let target_ids: BTreeSet<String> = targets.keys().cloned().collect();
        let groups = self
            .target_groups_of(lb.load_balancer_arn().unwrap_or_default())
            .await
            .map_err(|e| self.cloud_error(e))?;
        for tg in &groups {
            let (Some(arn), Some(port)) = (tg.target_group_arn(), tg.port()) else {
                continue;
            };
            let refused = self
                .sync_targets(arn, port, &target_ids)
                .await
                .map_err(|e| self.cloud_error(e))?;
            warn_refused(arn, &refused);
        }
        // A new node may bring a security group without the rules.
        self.sync_nlb_ingress(&lb, &spec, &targets)
            .await
            .map_err(|e| self.cloud_error(e))
    }

    /// Deletes the NLB (its listeners go with it) when this cluster owns it, then every target group owned by this
    /// cluster for this Service — attached or left over from an interrupted ensure. Never parses annotations, so a
    /// Service with invalid ones can still be cleaned up.
    #[instrument(skip_all, fields(service = %service_key(service)))]
    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> CloudResult<()> {
        let _ = cluster_name;
        let err = |e| self.cloud_error(e);
        let name = default_load_balancer_name(service);
        let service_name = service_key(service);
        let mut groups = Vec::new();
        match self.owned_load_balancer(&name).await {
            Ok(Some(lb)) => {
                let arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
                groups.extend(self.target_groups_of(&arn).await.map_err(err)?);
                // Rules first: while the load balancer exists a failed pass is retried and finds them again.
                self.remove_nlb_ingress(&name, lb.vpc_id())
                    .await
                    .map_err(err)?;
                self.inner
                    .elb
                    .delete_load_balancer()
                    .load_balancer_arn(&arn)
                    .send()
                    .await
                    .map_err(|e| err(api_error("DeleteLoadBalancer", e)))?;
            }
            // Gone already (an earlier pass may have stopped after deleting it): rules may remain.
            Ok(None) => self.remove_nlb_ingress(&name, None).await.map_err(err)?,
            // Someone else's load balancer under our name: leave it, but still clean up our target groups.
            Err(CloudError::InvalidInput { message, .. }) => {
                warn!(%message, "load balancer not deleted")
            }
            Err(e) => return Err(e),
        }
        let (namespace, svc) = service_name.split_once('/').unwrap_or_default();
        groups.extend(
            self.target_groups_named(&target_group_prefix(namespace, svc))
                .await
                .map_err(err)?,
        );
        self.delete_owned_target_groups(&groups, &service_name)
            .await
            .map_err(err)?;
        // Whatever the annotation says now, a Classic ELB of the Service goes too.
        self.delete_classic(service).await
    }
}
