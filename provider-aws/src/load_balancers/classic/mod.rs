//! Classic ELBs, upstream's default for a Service without `aws-load-balancer-type`: one per Service, named like
//! the NLB (`"a"` + UID), TCP/SSL/HTTP/HTTPS listeners to the NodePorts, a health check, the running instances of
//! the target nodes registered, attributes and policies from the annotations, and security groups: the load
//! balancer's own (`k8s-elb-<name>`, created and owned by this cluster, admitting the source ranges on the listener
//! ports; or the annotated ones), and on each target instance's group a rule admitting that group.
//!
//! The steps of an ensure, each skipped when AWS already matches: security group, create or listeners, health
//! check, attributes, proxy-protocol and TLS policies, instances, node ingress. Deletion revokes the node rules,
//! deletes the load balancer, then its owned security group.

mod groups;
pub(crate) mod spec;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_elasticloadbalancing::types::{
    AccessLog, ConnectionDraining, ConnectionSettings, CrossZoneLoadBalancing, HealthCheck,
    Instance as ElbInstance, Listener, LoadBalancerAttributes, LoadBalancerDescription,
    PolicyAttribute, Tag,
};
use cloudprovider_api::{CloudError, CloudResult, default_load_balancer_name};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use tracing::info;

pub(crate) use self::spec::{ClassicSpec, classic_spec};
use super::annotations::LbSpec;
use crate::AwsCloud;
use crate::error::{AwsError, AwsResult, api_error};

fn build_error(
    operation: &'static str,
) -> impl Fn(aws_smithy_types::error::operation::BuildError) -> AwsError {
    move |e| AwsError::unexpected(operation, e.to_string())
}

pub(crate) fn status_of(lb: &LoadBalancerDescription) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: lb.dns_name().map(|dns| {
            vec![LoadBalancerIngress {
                hostname: Some(dns.to_owned()),
                ..Default::default()
            }]
        }),
    }
}

fn listener_of(l: &spec::ClassicListener) -> AwsResult<Listener> {
    Listener::builder()
        .protocol(&l.protocol)
        .load_balancer_port(l.port)
        .instance_protocol(&l.instance_protocol)
        .instance_port(l.instance_port)
        .set_ssl_certificate_id(l.certificate.clone())
        .build()
        .map_err(build_error("CreateLoadBalancerListeners"))
}

/// The listener as ELB describes it, in the spec's terms (for comparing).
fn described(l: &Listener) -> spec::ClassicListener {
    spec::ClassicListener {
        protocol: l.protocol().to_ascii_uppercase(),
        port: l.load_balancer_port(),
        instance_protocol: l
            .instance_protocol()
            .unwrap_or(l.protocol())
            .to_ascii_uppercase(),
        instance_port: l.instance_port(),
        certificate: l.ssl_certificate_id().map(str::to_owned),
    }
}

impl AwsCloud {
    /// The Classic ELB named `name`: `None` if absent, an error if it exists but this cluster does not own it.
    pub(crate) async fn owned_classic(
        &self,
        name: &str,
    ) -> CloudResult<Option<LoadBalancerDescription>> {
        self.owned_classic_aws(name).await.map_err(|e| match e {
            AwsError::Config { field, message } => CloudError::invalid_input(field, message),
            e => self.cloud_error(e),
        })
    }

    /// [`owned_classic`](Self::owned_classic) with a not-owned load balancer as `AwsError::Config` naming the field.
    async fn owned_classic_aws(&self, name: &str) -> AwsResult<Option<LoadBalancerDescription>> {
        let out = self
            .inner
            .classic
            .describe_load_balancers()
            .load_balancer_names(name)
            .send()
            .await;
        let lb = match out {
            Ok(out) => out.load_balancer_descriptions().first().cloned(),
            Err(e) => {
                let e = api_error("DescribeLoadBalancers", e);
                if e.code() == Some("LoadBalancerNotFound") {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        let Some(lb) = lb else { return Ok(None) };
        let tags = self
            .inner
            .classic
            .describe_tags()
            .load_balancer_names(name)
            .send()
            .await
            .map_err(|e| api_error("DescribeTags", e))?;
        let owned = tags
            .tag_descriptions()
            .iter()
            .flat_map(|d| d.tags())
            .any(|t| {
                t.key() == self.inner.tagging.cluster_key.as_str()
                    && t.value() == Some(crate::tags::TAG_VALUE_OWNED)
            });
        if owned {
            Ok(Some(lb))
        } else {
            Err(AwsError::config(
                "metadata.uid",
                format!(
                    "Classic ELB {name} exists but is not tagged {}=owned; refusing to touch it",
                    self.inner.tagging.cluster_key
                ),
            ))
        }
    }

    /// Creates the load balancer, or makes its listeners exactly the spec's.
    async fn create_or_sync_listeners(
        &self,
        name: &str,
        lb_spec: &LbSpec,
        classic: &ClassicSpec,
        existing: Option<&LoadBalancerDescription>,
        groups: &[String],
    ) -> CloudResult<()> {
        let err = |e| self.cloud_error(e);
        let wanted: Vec<Listener> = classic
            .listeners
            .iter()
            .map(listener_of)
            .collect::<AwsResult<_>>()
            .map_err(err)?;
        let Some(lb) = existing else {
            let placement = self.placement(lb_spec).await?;
            let mut tags = Vec::new();
            for (k, v) in self.owned_tags_of(lb_spec) {
                tags.push(
                    Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(build_error("CreateLoadBalancer"))
                        .map_err(err)?,
                );
            }
            let mut request = self
                .inner
                .classic
                .create_load_balancer()
                .load_balancer_name(name)
                .set_listeners(Some(wanted))
                .set_subnets(Some(placement.subnet_ids))
                .set_security_groups(Some(groups.to_vec()))
                .set_tags(Some(tags));
            if lb_spec.internal {
                request = request.scheme("internal");
            }
            request
                .send()
                .await
                .map_err(|e| err(api_error("CreateLoadBalancer", e)))?;
            info!(load_balancer = name, "Classic ELB created");
            return Ok(());
        };
        let current: BTreeSet<spec::ClassicListener> = lb
            .listener_descriptions()
            .iter()
            .filter_map(|d| d.listener())
            .map(described)
            .collect();
        let want: BTreeSet<spec::ClassicListener> = classic.listeners.iter().cloned().collect();
        let stale: Vec<i32> = current.difference(&want).map(|l| l.port).collect();
        let missing: Vec<Listener> = want
            .difference(&current)
            .map(listener_of)
            .collect::<AwsResult<_>>()
            .map_err(err)?;
        if !stale.is_empty() {
            self.inner
                .classic
                .delete_load_balancer_listeners()
                .load_balancer_name(name)
                .set_load_balancer_ports(Some(stale))
                .send()
                .await
                .map_err(|e| err(api_error("DeleteLoadBalancerListeners", e)))?;
        }
        if !missing.is_empty() {
            self.inner
                .classic
                .create_load_balancer_listeners()
                .load_balancer_name(name)
                .set_listeners(Some(missing))
                .send()
                .await
                .map_err(|e| err(api_error("CreateLoadBalancerListeners", e)))?;
        }
        let attached: BTreeSet<&String> = lb.security_groups().iter().collect();
        if attached != groups.iter().collect() {
            self.inner
                .classic
                .apply_security_groups_to_load_balancer()
                .load_balancer_name(name)
                .set_security_groups(Some(groups.to_vec()))
                .send()
                .await
                .map_err(|e| err(api_error("ApplySecurityGroupsToLoadBalancer", e)))?;
        }
        Ok(())
    }

    async fn sync_health_check(
        &self,
        name: &str,
        classic: &ClassicSpec,
        lb: &LoadBalancerDescription,
    ) -> AwsResult<()> {
        let h = &classic.health;
        let current = lb.health_check().map(|c| {
            (
                c.target().to_owned(),
                c.interval(),
                c.timeout(),
                c.healthy_threshold(),
                c.unhealthy_threshold(),
            )
        });
        if current
            == Some((
                h.target.clone(),
                h.interval,
                h.timeout,
                h.healthy,
                h.unhealthy,
            ))
        {
            return Ok(());
        }
        let check = HealthCheck::builder()
            .target(&h.target)
            .interval(h.interval)
            .timeout(h.timeout)
            .healthy_threshold(h.healthy)
            .unhealthy_threshold(h.unhealthy)
            .build()
            .map_err(build_error("ConfigureHealthCheck"))?;
        self.inner
            .classic
            .configure_health_check()
            .load_balancer_name(name)
            .health_check(check)
            .send()
            .await
            .map_err(|e| api_error("ConfigureHealthCheck", e))?;
        Ok(())
    }

    async fn sync_classic_attributes(&self, name: &str, classic: &ClassicSpec) -> AwsResult<()> {
        let a = &classic.attributes;
        let out = self
            .inner
            .classic
            .describe_load_balancer_attributes()
            .load_balancer_name(name)
            .send()
            .await
            .map_err(|e| api_error("DescribeLoadBalancerAttributes", e))?;
        let current = out.load_balancer_attributes();
        let log = current.and_then(|c| c.access_log());
        let current_log = log.filter(|l| l.enabled()).map(|l| {
            (
                l.emit_interval().unwrap_or(60),
                l.s3_bucket_name().unwrap_or_default().to_owned(),
                l.s3_bucket_prefix().unwrap_or_default().to_owned(),
            )
        });
        let draining = current
            .and_then(|c| c.connection_draining())
            .filter(|d| d.enabled())
            .map(|d| d.timeout().unwrap_or(300));
        let idle = current
            .and_then(|c| c.connection_settings())
            .map(|s| s.idle_timeout());
        let cross = current
            .and_then(|c| c.cross_zone_load_balancing())
            .map(|c| c.enabled());
        if (current_log.as_ref(), draining, idle, cross)
            == (
                a.access_log.as_ref(),
                a.draining,
                Some(a.idle_timeout),
                Some(a.cross_zone),
            )
        {
            return Ok(());
        }
        let access_log = match &a.access_log {
            Some((interval, bucket, prefix)) => AccessLog::builder()
                .enabled(true)
                .emit_interval(*interval)
                .s3_bucket_name(bucket)
                .s3_bucket_prefix(prefix)
                .build(),
            None => AccessLog::builder().enabled(false).build(),
        };
        let attributes = LoadBalancerAttributes::builder()
            .access_log(access_log)
            .connection_draining(
                ConnectionDraining::builder()
                    .enabled(a.draining.is_some())
                    .set_timeout(a.draining)
                    .build(),
            )
            .connection_settings(
                ConnectionSettings::builder()
                    .idle_timeout(a.idle_timeout)
                    .build()
                    .map_err(build_error("ModifyLoadBalancerAttributes"))?,
            )
            .cross_zone_load_balancing(
                CrossZoneLoadBalancing::builder()
                    .enabled(a.cross_zone)
                    .build(),
            )
            .build();
        self.inner
            .classic
            .modify_load_balancer_attributes()
            .load_balancer_name(name)
            .load_balancer_attributes(attributes)
            .send()
            .await
            .map_err(|e| api_error("ModifyLoadBalancerAttributes", e))?;
        Ok(())
    }

    /// The proxy-protocol policy on every backend port (or on none), as upstream.
    async fn sync_proxy_protocol(
        &self,
        name: &str,
        classic: &ClassicSpec,
        lb: &LoadBalancerDescription,
    ) -> AwsResult<()> {
        let enabled_ports: BTreeSet<i32> = lb
            .backend_server_descriptions()
            .iter()
            .filter(|b| {
                b.policy_names()
                    .iter()
                    .any(|p| p == spec::PROXY_PROTOCOL_POLICY)
            })
            .filter_map(|b| b.instance_port())
            .collect();
        let wanted: BTreeSet<i32> = if classic.proxy_protocol {
            classic.instance_ports()
        } else {
            BTreeSet::new()
        };
        if enabled_ports == wanted {
            return Ok(());
        }
        let has_policy = lb
            .policies()
            .map(|p| {
                p.other_policies()
                    .iter()
                    .any(|n| n == spec::PROXY_PROTOCOL_POLICY)
            })
            .unwrap_or(false);
        if classic.proxy_protocol && !has_policy {
            let attribute = PolicyAttribute::builder()
                .attribute_name("ProxyProtocol")
                .attribute_value("true")
                .build();
            self.inner
                .classic
                .create_load_balancer_policy()
                .load_balancer_name(name)
                .policy_name(spec::PROXY_PROTOCOL_POLICY)
                .policy_type_name("ProxyProtocolPolicyType")
                .policy_attributes(attribute)
                .send()
                .await
                .map_err(|e| api_error("CreateLoadBalancerPolicy", e))?;
        }
        for port in enabled_ports.union(&wanted) {
            let names: Vec<String> = if wanted.contains(port) {
                vec![spec::PROXY_PROTOCOL_POLICY.to_owned()]
            } else {
                Vec::new()
            };
            self.inner
                .classic
                .set_load_balancer_policies_for_backend_server()
                .load_balancer_name(name)
                .instance_port(*port)
                .set_policy_names(Some(names))
                .send()
                .await
                .map_err(|e| api_error("SetLoadBalancerPoliciesForBackendServer", e))?;
        }
        Ok(())
    }

    /// `ssl-negotiation-policy` on the secure listeners: upstream's policy `k8s-SSLNegotiationPolicy-<name>`
    /// (referencing the named security policy), created once and set on every `SSL`/`HTTPS` listener lacking it.
    async fn sync_ssl_policy(
        &self,
        name: &str,
        classic: &ClassicSpec,
        lb: &LoadBalancerDescription,
    ) -> AwsResult<()> {
        let Some(reference) = &classic.ssl_policy else {
            return Ok(());
        };
        let policy = format!("k8s-SSLNegotiationPolicy-{reference}");
        let secure: BTreeSet<i32> = classic
            .listeners
            .iter()
            .filter(|l| l.certificate.is_some())
            .map(|l| l.port)
            .collect();
        let done: BTreeSet<i32> = lb
            .listener_descriptions()
            .iter()
            .filter(|d| d.policy_names().contains(&policy))
            .filter_map(|d| d.listener().map(|l| l.load_balancer_port()))
            .collect();
        let missing: Vec<i32> = secure.difference(&done).copied().collect();
        if missing.is_empty() {
            return Ok(());
        }
        let created = self
            .inner
            .classic
            .create_load_balancer_policy()
            .load_balancer_name(name)
            .policy_name(&policy)
            .policy_type_name("SSLNegotiationPolicyType")
            .policy_attributes(
                PolicyAttribute::builder()
                    .attribute_name("Reference-Security-Policy")
                    .attribute_value(reference)
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = created {
            let e = api_error("CreateLoadBalancerPolicy", e);
            if e.code() != Some("DuplicatePolicyName") {
                return Err(e);
            }
        }
        for port in missing {
            self.inner
                .classic
                .set_load_balancer_policies_of_listener()
                .load_balancer_name(name)
                .load_balancer_port(port)
                .policy_names(&policy)
                .send()
                .await
                .map_err(|e| api_error("SetLoadBalancerPoliciesOfListener", e))?;
        }
        Ok(())
    }

    /// Registers the target instances, deregisters the others.
    async fn sync_classic_instances(
        &self,
        name: &str,
        lb: &LoadBalancerDescription,
        targets: &BTreeSet<String>,
    ) -> AwsResult<()> {
        let current: BTreeSet<String> = lb
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        let add: Vec<ElbInstance> = targets
            .difference(&current)
            .map(|id| ElbInstance::builder().instance_id(id).build())
            .collect();
        let remove: Vec<ElbInstance> = current
            .difference(targets)
            .map(|id| ElbInstance::builder().instance_id(id).build())
            .collect();
        if !add.is_empty() {
            self.inner
                .classic
                .register_instances_with_load_balancer()
                .load_balancer_name(name)
                .set_instances(Some(add))
                .send()
                .await
                .map_err(|e| api_error("RegisterInstancesWithLoadBalancer", e))?;
        }
        if !remove.is_empty() {
            self.inner
                .classic
                .deregister_instances_from_load_balancer()
                .load_balancer_name(name)
                .set_instances(Some(remove))
                .send()
                .await
                .map_err(|e| api_error("DeregisterInstancesFromLoadBalancer", e))?;
        }
        Ok(())
    }

    /// Ensures the Service's Classic ELB, in the steps of the module docs.
    pub(crate) async fn ensure_classic(
        &self,
        service: &Service,
        lb_spec: &LbSpec,
        classic: &ClassicSpec,
        nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus> {
        let name = default_load_balancer_name(service);
        let err = |e| self.cloud_error(e);
        let targets = self.target_instances(lb_spec, nodes).await?;
        let existing = self.owned_classic(&name).await?;
        let vpc = match existing.as_ref().and_then(|lb| lb.vpc_id()) {
            Some(vpc) => vpc.to_owned(),
            None => self.placement(lb_spec).await?.vpc_id,
        };
        let groups = self
            .classic_groups(&name, lb_spec, classic, &vpc)
            .await
            .map_err(err)?;
        self.create_or_sync_listeners(&name, lb_spec, classic, existing.as_ref(), &groups)
            .await?;
        let lb = match existing {
            // Listeners and groups were changed in place; the rest of the description still holds.
            Some(lb) => lb,
            None => self.owned_classic(&name).await?.ok_or_else(|| {
                err(AwsError::unexpected(
                    "DescribeLoadBalancers",
                    "the new Classic ELB is not there",
                ))
            })?,
        };
        self.sync_health_check(&name, classic, &lb)
            .await
            .map_err(err)?;
        self.sync_classic_attributes(&name, classic)
            .await
            .map_err(err)?;
        self.sync_proxy_protocol(&name, classic, &lb)
            .await
            .map_err(err)?;
        self.sync_ssl_policy(&name, classic, &lb)
            .await
            .map_err(err)?;
        let ids: BTreeSet<String> = targets.keys().cloned().collect();
        self.sync_classic_instances(&name, &lb, &ids)
            .await
            .map_err(err)?;
        if let Some(group) = groups.first() {
            self.sync_classic_node_ingress(&vpc, group, &targets)
                .await
                .map_err(err)?;
        }
        Ok(status_of(&lb))
    }

    /// Node changes: the instances and the node rules.
    pub(crate) async fn update_classic(
        &self,
        service: &Service,
        lb_spec: &LbSpec,
        nodes: &[Node],
    ) -> CloudResult<()> {
        let name = default_load_balancer_name(service);
        let err = |e| self.cloud_error(e);
        let lb = self
            .owned_classic(&name)
            .await?
            .ok_or_else(|| CloudError::not_found("load balancer", name.clone()))?;
        let targets = self.target_instances(lb_spec, nodes).await?;
        let ids: BTreeSet<String> = targets.keys().cloned().collect();
        self.sync_classic_instances(&name, &lb, &ids)
            .await
            .map_err(err)?;
        if let (Some(vpc), Some(group)) = (lb.vpc_id(), lb.security_groups().first()) {
            self.sync_classic_node_ingress(vpc, group, &targets)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Revokes the node rules admitting the load balancer's groups, deletes it, then its owned security group.
    pub(crate) async fn delete_classic(&self, service: &Service) -> CloudResult<()> {
        let name = default_load_balancer_name(service);
        let err = |e| self.cloud_error(e);
        let lb = match self.owned_classic(&name).await {
            Ok(lb) => lb,
            Err(CloudError::InvalidInput { message, .. }) => {
                tracing::warn!(%message, "Classic ELB not deleted");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let vpc = lb
            .as_ref()
            .and_then(|l| l.vpc_id().map(str::to_owned))
            .or_else(|| self.inner.config.vpc_id.clone());
        let managed = self
            .managed_classic_group(&name, vpc.as_deref())
            .await
            .map_err(err)?;
        if let Some(group) = &managed {
            self.sync_classic_node_ingress(
                vpc.as_deref().unwrap_or_default(),
                group,
                &BTreeMap::new(),
            )
            .await
            .map_err(err)?;
        }
        if lb.is_some() {
            self.inner
                .classic
                .delete_load_balancer()
                .load_balancer_name(&name)
                .send()
                .await
                .map_err(|e| err(api_error("DeleteLoadBalancer", e)))?;
            info!(load_balancer = %name, "Classic ELB deleted");
        }
        if let Some(group) = managed {
            self.delete_managed_group(&group).await.map_err(err)?;
        }
        Ok(())
    }

    /// The tags of what this cluster creates for the Service.
    fn owned_tags_of(&self, spec: &LbSpec) -> BTreeMap<String, String> {
        let mut tags = self.inner.tagging.owned_tags(&spec.extra_tags);
        tags.insert(
            crate::tags::TAG_SERVICE_NAME.to_owned(),
            spec.service_name(),
        );
        tags
    }
}
