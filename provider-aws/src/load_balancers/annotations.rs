//! The Service annotations the provider honours, parsed and validated before any AWS call.

use std::collections::{BTreeMap, BTreeSet};

use cloudprovider_api::{CloudError, CloudResult};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use sha2::{Digest, Sha256};

use super::classic::{ClassicSpec, classic_spec};
use super::nlb_options::{self, NlbOptions, Tls};

/// `nlb` (or absent): a Network Load Balancer with instance targets. `nlb-ip` and `external` belong to the AWS Load
/// Balancer Controller (implemented elsewhere). Classic ELBs are not supported.
pub const ANNOTATION_LOAD_BALANCER_TYPE: &str = "service.beta.kubernetes.io/aws-load-balancer-type";
/// `true` (or `0.0.0.0/0`): an internal load balancer; `false` or absent: internet-facing.
pub const ANNOTATION_INTERNAL: &str = "service.beta.kubernetes.io/aws-load-balancer-internal";
/// Comma-separated subnet IDs or `Name` tags; else subnets are discovered by role and cluster tags.
pub const ANNOTATION_SUBNETS: &str = "service.beta.kubernetes.io/aws-load-balancer-subnets";
/// `key=value,…`: only nodes with all these labels become targets.
pub const ANNOTATION_TARGET_NODE_LABELS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-target-node-labels";
/// `true`/`false`: the NLB attribute `load_balancing.cross_zone.enabled`.
pub const ANNOTATION_CROSS_ZONE: &str =
    "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled";
/// `key=value,…`: extra tags on the load balancer and its target groups.
pub const ANNOTATION_ADDITIONAL_TAGS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags";
/// Upstream's (not AWS-specific) source ranges annotation, read when `spec.loadBalancerSourceRanges` is empty.
pub const ANNOTATION_SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// The client CIDRs when a Service names none.
pub const DEFAULT_SOURCE_RANGE: &str = "0.0.0.0/0";
/// `TCP`, `HTTP` or `HTTPS`.
pub const ANNOTATION_HC_PROTOCOL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol";
/// `traffic-port` or a port number.
pub const ANNOTATION_HC_PORT: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port";
/// The HTTP(S) path, starting with `/`.
pub const ANNOTATION_HC_PATH: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path";
/// 2–10.
pub const ANNOTATION_HC_HEALTHY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold";
/// 2–10.
pub const ANNOTATION_HC_UNHEALTHY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold";
/// Seconds, 2–120.
pub const ANNOTATION_HC_TIMEOUT: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-timeout";
/// Seconds, 5–300.
pub const ANNOTATION_HC_INTERVAL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval";

impl HealthCheck {
    /// The NLB health check of a Classic ELB's spec, which has its own.
    fn unused() -> Self {
        Self {
            protocol: "TCP".to_owned(),
            port: "traffic-port".to_owned(),
            path: None,
            healthy: 3,
            unhealthy: 3,
            timeout: None,
            interval: 10,
        }
    }
}

/// The health check of every target group of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HealthCheck {
    pub(crate) protocol: String,
    pub(crate) port: String,
    pub(crate) path: Option<String>,
    pub(crate) healthy: i32,
    pub(crate) unhealthy: i32,
    pub(crate) timeout: Option<i32>,
    pub(crate) interval: i32,
}

/// One listener and its target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortSpec {
    pub(crate) port: i32,
    pub(crate) node_port: i32,
    /// The Service port's protocol, `TCP` or `UDP`.
    pub(crate) protocol: String,
    /// The Service port's name.
    pub(crate) name: Option<String>,
    /// A TLS listener (certificate annotations).
    pub(crate) tls: Option<Tls>,
}

impl PortSpec {
    /// The listener's protocol: `TLS` with a certificate, else the port's.
    pub(crate) fn listener_protocol(&self) -> &str {
        if self.tls.is_some() {
            "TLS"
        } else {
            &self.protocol
        }
    }

    /// The target group's protocol: `TLS` with `backend-protocol: ssl`, else the port's.
    pub(crate) fn target_protocol(&self) -> &str {
        if self.tls.as_ref().is_some_and(|t| t.backend) {
            "TLS"
        } else {
            &self.protocol
        }
    }
}

/// Everything the provider needs from a Service, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LbSpec {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) internal: bool,
    pub(crate) subnets: Option<Vec<String>>,
    pub(crate) target_node_labels: BTreeMap<String, String>,
    pub(crate) cross_zone: Option<bool>,
    pub(crate) extra_tags: BTreeMap<String, String>,
    pub(crate) health: HealthCheck,
    pub(crate) ports: Vec<PortSpec>,
    /// The client CIDRs, normalized (`spec.loadBalancerSourceRanges`, else the annotation, else `0.0.0.0/0`).
    pub(crate) source_ranges: BTreeSet<String>,
    /// Static addresses, attributes, access logs.
    pub(crate) options: NlbOptions,
}

impl LbSpec {
    /// `<namespace>/<name>`, the value of the service-name tag.
    pub(crate) fn service_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Upstream's target group name `k8s-<ns8>-<svc8>-<hash10>`. The hash covers everything a target group cannot
    /// change in place (port, node port, protocol, target type) and its health check, so a change makes a new
    /// target group.
    pub(crate) fn target_group_name(&self, cluster_id: &str, port: &PortSpec) -> String {
        let mut h = Sha256::new();
        let hc = &self.health;
        for part in [
            cluster_id,
            &self.namespace,
            &self.name,
            &port.port.to_string(),
            &port.node_port.to_string(),
            port.target_protocol(),
            "instance",
            &hc.protocol,
            &hc.port,
            hc.path.as_deref().unwrap_or_default(),
            &hc.interval.to_string(),
            &hc.timeout.map(|t| t.to_string()).unwrap_or_default(),
            &hc.healthy.to_string(),
            &hc.unhealthy.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hash = hex::encode(h.finalize());
        format!(
            "{}{hash:.10}",
            target_group_prefix(&self.namespace, &self.name)
        )
    }
}

/// `k8s-<ns8>-<svc8>-`: the start of every target group name of a Service.
pub(crate) fn target_group_prefix(namespace: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect()
    };
    format!("k8s-{}-{}-", clean(namespace), clean(name))
}

/// What to do with a Service.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Build an NLB.
    Nlb(Box<LbSpec>),
    /// Build a Classic ELB (no type annotation: upstream's default).
    Classic(Box<LbSpec>, Box<ClassicSpec>),
    /// Another controller owns it.
    Elsewhere(String),
}

/// The annotation's value, trimmed.
pub(crate) fn annotation<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(|v| v.trim())
}

/// The annotation's value, trimmed, unless empty.
pub(crate) fn set_annotation<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    annotation(service, key).filter(|v| !v.is_empty())
}

/// A comma-separated annotation's non-empty items, trimmed.
pub(crate) fn list(service: &Service, key: &str) -> Vec<String> {
    set_annotation(service, key)
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A whole-number annotation within `range`, else invalid input naming it.
pub(crate) fn number(
    service: &Service,
    key: &str,
    range: std::ops::RangeInclusive<i32>,
) -> CloudResult<Option<i32>> {
    let Some(raw) = annotation(service, key) else {
        return Ok(None);
    };
    match raw.parse::<i32>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(CloudError::invalid_input(
            key,
            format!(
                "{raw:?} is not a whole number in {}–{}",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn key_values(service: &Service, key: &str) -> CloudResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(raw) = annotation(service, key) else {
        return Ok(out);
    };
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        if k.trim().is_empty() {
            return Err(CloudError::invalid_input(
                key,
                format!("{item:?} has an empty key; want key=value,…"),
            ));
        }
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// A `true`/`false` annotation, else invalid input naming it.
pub(crate) fn boolean(service: &Service, key: &str) -> CloudResult<Option<bool>> {
    match annotation(service, key) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(CloudError::invalid_input(
            key,
            format!("{v:?} is neither \"true\" nor \"false\""),
        )),
    }
}

/// Reads and validates the Service in steps: the load-balancer type (`nlb-ip`/`external` are another controller's),
/// session affinity, the ports, the scheme and subnets, the health check, then target node labels, cross-zone and
/// extra tags.
/// Errors are [`CloudError::InvalidInput`] naming the annotation or field.
pub(crate) fn plan(service: &Service) -> CloudResult<Plan> {
    plan_as(service, handled_elsewhere(service)?)
}

/// [`plan`] for an NLB whatever the type annotation says: for a Service without one whose load balancer this
/// provider built as an NLB before Classic ELBs became the default (it keeps its NLB).
pub(crate) fn plan_nlb(service: &Service) -> CloudResult<Plan> {
    plan_as(service, Kind::Nlb)
}

fn plan_as(service: &Service, kind: Kind) -> CloudResult<Plan> {
    let classic = match kind {
        Kind::Elsewhere(reason) => return Ok(Plan::Elsewhere(reason)),
        Kind::Nlb => false,
        Kind::Classic => true,
    };
    let spec = service.spec.clone().unwrap_or_default();
    check_session_affinity(&spec)?;
    let ports = port_specs(service, &spec, !classic)?;
    let internal = internal(service)?;
    let subnets = subnets(service)?;
    // A Classic ELB's health check and options are its own (classic::spec); the NLB's rules do not apply.
    let health = if classic {
        HealthCheck::unused()
    } else {
        health_check(service, &spec)?
    };
    let target_node_labels = key_values(service, ANNOTATION_TARGET_NODE_LABELS)?;
    let cross_zone = boolean(service, ANNOTATION_CROSS_ZONE)?;
    let extra_tags = key_values(service, ANNOTATION_ADDITIONAL_TAGS)?;
    let source_ranges = source_ranges(service, &spec)?;
    let udp = ports.iter().any(|p| p.protocol == "UDP");
    let options = if classic {
        NlbOptions::default()
    } else {
        nlb_options::parse(service, internal, udp)?
    };
    let lb = LbSpec {
        namespace: service
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name: service.metadata.name.clone().unwrap_or_default(),
        internal,
        subnets,
        target_node_labels,
        cross_zone,
        extra_tags,
        health,
        ports,
        source_ranges,
        options,
    };
    if classic {
        let classic = classic_spec(service, cross_zone)?;
        Ok(Plan::Classic(Box::new(lb), Box::new(classic)))
    } else {
        Ok(Plan::Nlb(Box::new(lb)))
    }
}

/// Which load balancer a Service asks for.
enum Kind {
    Nlb,
    Classic,
    Elsewhere(String),
}

/// The client CIDRs, as upstream's `GetLoadBalancerSourceRanges`: `spec.loadBalancerSourceRanges` when it lists
/// any, else the comma-separated annotation, else `0.0.0.0/0`. Host bits are cleared (`10.0.0.1/8` is
/// `10.0.0.0/8`, as EC2 wants it).
fn source_ranges(service: &Service, spec: &ServiceSpec) -> CloudResult<BTreeSet<String>> {
    let listed = spec.load_balancer_source_ranges.clone().unwrap_or_default();
    let (field, values): (String, Vec<String>) = if listed.iter().any(|r| !r.trim().is_empty()) {
        ("spec.loadBalancerSourceRanges".to_owned(), listed)
    } else {
        let raw = annotation(service, ANNOTATION_SOURCE_RANGES).unwrap_or_default();
        (
            ANNOTATION_SOURCE_RANGES.to_owned(),
            raw.split(',').map(str::to_owned).collect(),
        )
    };
    let mut ranges = BTreeSet::new();
    for value in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let net: ipnet::IpNet = value.parse().map_err(|_| {
            CloudError::invalid_input(
                field.clone(),
                format!("{value:?} is not an IP range; expected CIDRs like 10.0.0.0/24"),
            )
        })?;
        ranges.insert(net.trunc().to_string());
    }
    if ranges.is_empty() {
        ranges.insert(DEFAULT_SOURCE_RANGE.to_owned());
    }
    Ok(ranges)
}

/// The load-balancer type: `None` for an NLB, the reason for `nlb-ip`/`external`, an error for anything else.
/// The load-balancer type, as upstream: none → a Classic ELB, `nlb` → an NLB, `nlb-ip`/`external` → the AWS Load
/// Balancer Controller's; anything else is an error (upstream silently builds a Classic ELB for it).
fn handled_elsewhere(service: &Service) -> CloudResult<Kind> {
    match annotation(service, ANNOTATION_LOAD_BALANCER_TYPE) {
        None | Some("") => Ok(Kind::Classic),
        Some("nlb") => Ok(Kind::Nlb),
        Some(t @ ("nlb-ip" | "external")) => Ok(Kind::Elsewhere(format!(
            "{ANNOTATION_LOAD_BALANCER_TYPE}={t} is handled by the AWS Load Balancer Controller"
        ))),
        Some(other) => Err(CloudError::invalid_input(
            ANNOTATION_LOAD_BALANCER_TYPE,
            format!(
                "{other:?} is not supported: leave it out for a Classic ELB, \"nlb\" for a Network Load Balancer; \"nlb-ip\" and \"external\" are left to the AWS Load Balancer Controller"
            ),
        )),
    }
}

/// Rejects any `spec.sessionAffinity` but `None`.
fn check_session_affinity(spec: &ServiceSpec) -> CloudResult<()> {
    match spec.session_affinity.as_deref().filter(|a| *a != "None") {
        None => Ok(()),
        Some(affinity) => Err(CloudError::invalid_input(
            "spec.sessionAffinity",
            format!("{affinity:?} is not supported by AWS load balancers; use None"),
        )),
    }
}

/// The ports with a NodePort: at least one, all TCP or all UDP.
fn port_specs(service: &Service, spec: &ServiceSpec, nlb: bool) -> CloudResult<Vec<PortSpec>> {
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let Some(node_port) = p.node_port.filter(|n| *n > 0) else {
            continue; // upstream skips ports without a NodePort
        };
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP") {
            return Err(CloudError::invalid_input(
                format!("spec.ports[{i}].protocol"),
                format!("{protocol:?} is not supported by a Network Load Balancer; use TCP or UDP"),
            ));
        }
        ports.push(PortSpec {
            port: p.port,
            node_port,
            protocol: protocol.to_owned(),
            name: p.name.clone(),
            tls: if nlb {
                nlb_options::tls_for(service, p.port, p.name.as_deref(), protocol)?
            } else {
                None
            },
        });
    }
    let Some(first) = ports.first() else {
        return Err(CloudError::invalid_input(
            "spec.ports",
            "no port with a nodePort to balance",
        ));
    };
    if ports.iter().any(|p| p.protocol != first.protocol) {
        return Err(CloudError::invalid_input(
            "spec.ports",
            "mixed protocols (TCP and UDP) are not supported",
        ));
    }
    Ok(ports)
}

/// The scheme: `true` for an internal load balancer, `false` for internet-facing.
fn internal(service: &Service) -> CloudResult<bool> {
    match annotation(service, ANNOTATION_INTERNAL) {
        None | Some("") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "0.0.0.0/0" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(CloudError::invalid_input(
            ANNOTATION_INTERNAL,
            format!("{v:?} is not \"true\" or \"false\""),
        )),
    }
}

/// The annotated subnets, or `None` to discover them by tags.
fn subnets(service: &Service) -> CloudResult<Option<Vec<String>>> {
    let Some(raw) = annotation(service, ANNOTATION_SUBNETS) else {
        return Ok(None);
    };
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err(CloudError::invalid_input(
            ANNOTATION_SUBNETS,
            "lists no subnet",
        ));
    }
    Ok(Some(list))
}

/// The target groups' health check, defaulted for `externalTrafficPolicy: Local` like upstream.
fn health_check(service: &Service, spec: &ServiceSpec) -> CloudResult<HealthCheck> {
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let protocol = health_check_protocol(service, local)?;
    let port = health_check_port(service, spec, local)?;
    let path = health_check_path(service, &protocol, local)?;
    Ok(HealthCheck {
        protocol,
        port,
        path,
        healthy: number(service, ANNOTATION_HC_HEALTHY, 2..=10)?.unwrap_or(3),
        unhealthy: number(service, ANNOTATION_HC_UNHEALTHY, 2..=10)?.unwrap_or(3),
        timeout: number(service, ANNOTATION_HC_TIMEOUT, 2..=120)?,
        interval: number(service, ANNOTATION_HC_INTERVAL, 5..=300)?.unwrap_or(10),
    })
}

/// `TCP`, `HTTP` or `HTTPS`; by default HTTP for `Local` traffic, else TCP.
fn health_check_protocol(service: &Service, local: bool) -> CloudResult<String> {
    match annotation(service, ANNOTATION_HC_PROTOCOL) {
        None => Ok(if local { "HTTP" } else { "TCP" }.to_owned()),
        Some(p) if ["TCP", "HTTP", "HTTPS"].contains(&p.to_ascii_uppercase().as_str()) => {
            Ok(p.to_ascii_uppercase())
        }
        Some(p) => Err(CloudError::invalid_input(
            ANNOTATION_HC_PROTOCOL,
            format!("{p:?} is not TCP, HTTP or HTTPS"),
        )),
    }
}

/// `traffic-port` or a port number; by default the health check NodePort for `Local` traffic.
fn health_check_port(service: &Service, spec: &ServiceSpec, local: bool) -> CloudResult<String> {
    match annotation(service, ANNOTATION_HC_PORT) {
        Some("traffic-port") => Ok("traffic-port".to_owned()),
        Some(raw) => match raw.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n.to_string()),
            _ => Err(CloudError::invalid_input(
                ANNOTATION_HC_PORT,
                format!("{raw:?} is neither \"traffic-port\" nor a port number"),
            )),
        },
        None => Ok(spec
            .health_check_node_port
            .filter(|p| local && *p > 0)
            .map_or_else(|| "traffic-port".to_owned(), |p| p.to_string())),
    }
}

/// The HTTP(S) path (validated even for TCP, which has none); by default `/healthz` for `Local` traffic, else `/`.
fn health_check_path(
    service: &Service,
    protocol: &str,
    local: bool,
) -> CloudResult<Option<String>> {
    let path = match annotation(service, ANNOTATION_HC_PATH) {
        Some(p) if !p.starts_with('/') => {
            return Err(CloudError::invalid_input(
                ANNOTATION_HC_PATH,
                format!("{p:?} does not start with '/'"),
            ));
        }
        Some(p) => p.to_owned(),
        None if local => "/healthz".to_owned(),
        None => "/".to_owned(),
    };
    Ok(Some(path).filter(|_| protocol != "TCP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudprovider_api::conformance::load_balancer_service;

    fn with(annotations: &[(&str, &str)]) -> Service {
        let mut svc = load_balancer_service("web", "11111111-2222-4333-8444-555555555555");
        svc.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        svc
    }

    /// The NLB spec (the type annotation is added unless given).
    fn spec(annotations: &[(&str, &str)]) -> LbSpec {
        let mut pairs = annotations.to_vec();
        if !pairs
            .iter()
            .any(|(k, _)| *k == ANNOTATION_LOAD_BALANCER_TYPE)
        {
            pairs.push((ANNOTATION_LOAD_BALANCER_TYPE, "nlb"));
        }
        match plan(&with(&pairs)) {
            Ok(Plan::Nlb(spec)) => *spec,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_type_is_a_classic_elb_as_upstream() {
        assert!(matches!(plan(&with(&[])), Ok(Plan::Classic(..))));
        assert!(matches!(
            plan(&with(&[(ANNOTATION_LOAD_BALANCER_TYPE, "")])),
            Ok(Plan::Classic(..))
        ));
        assert!(matches!(plan_nlb(&with(&[])), Ok(Plan::Nlb(..))));
        // NLB-only rules do not apply to a Classic ELB (an SSL health check is fine there).
        assert!(matches!(
            plan(&with(&[(ANNOTATION_HC_PROTOCOL, "SSL")])),
            Ok(Plan::Classic(..))
        ));
    }

    #[test]
    fn defaults_and_names() {
        let s = spec(&[]);
        assert!(!s.internal);
        assert_eq!(s.health.protocol, "TCP");
        assert_eq!(s.health.port, "traffic-port");
        assert_eq!(
            s.ports,
            vec![PortSpec {
                port: 80,
                node_port: 30080,
                protocol: "TCP".into(),
                name: Some("http".into()),
                tls: None,
            }]
        );
        let name = s.target_group_name("c1", &s.ports[0]);
        assert!(name.starts_with("k8s-default-web-"), "{name}");
        assert_eq!(name.len(), "k8s-default-web-".len() + 10);
        assert!(name.len() <= 32);
        // Another cluster, another health check: another target group.
        assert_ne!(name, s.target_group_name("c2", &s.ports[0]));
        let h = spec(&[(ANNOTATION_HC_INTERVAL, "30")]);
        assert_ne!(name, h.target_group_name("c1", &h.ports[0]));
        assert_eq!(
            target_group_prefix("a-very-long-namespace", "svc.x"),
            "k8s-averylon-svcx-"
        );
    }

    #[test]
    fn annotations_are_read() {
        let s = spec(&[
            (ANNOTATION_INTERNAL, "true"),
            (ANNOTATION_SUBNETS, "subnet-1, subnet-2"),
            (ANNOTATION_HC_PROTOCOL, "http"),
            (ANNOTATION_HC_PATH, "/ready"),
            (ANNOTATION_HC_PORT, "8080"),
            (ANNOTATION_HC_HEALTHY, "2"),
            (ANNOTATION_HC_TIMEOUT, "5"),
            (ANNOTATION_ADDITIONAL_TAGS, "team=web, cost=1"),
            (ANNOTATION_TARGET_NODE_LABELS, "pool=edge"),
            (ANNOTATION_CROSS_ZONE, "true"),
        ]);
        assert!(s.internal);
        assert_eq!(s.subnets, Some(vec!["subnet-1".into(), "subnet-2".into()]));
        assert_eq!(
            s.health,
            HealthCheck {
                protocol: "HTTP".into(),
                port: "8080".into(),
                path: Some("/ready".into()),
                healthy: 2,
                unhealthy: 3,
                timeout: Some(5),
                interval: 10
            }
        );
        assert_eq!(s.extra_tags.get("team").map(String::as_str), Some("web"));
        assert_eq!(
            s.target_node_labels.get("pool").map(String::as_str),
            Some("edge")
        );
        assert_eq!(s.cross_zone, Some(true));
    }

    #[test]
    fn invalid_annotations_name_themselves() {
        for (key, value) in [
            (ANNOTATION_LOAD_BALANCER_TYPE, "clb"),
            (ANNOTATION_INTERNAL, "maybe"),
            (ANNOTATION_HC_PROTOCOL, "ICMP"),
            (ANNOTATION_HC_PORT, "http"),
            (ANNOTATION_HC_PATH, "ready"),
            (ANNOTATION_HC_HEALTHY, "11"),
            (ANNOTATION_HC_UNHEALTHY, "x"),
            (ANNOTATION_HC_TIMEOUT, "1"),
            (ANNOTATION_HC_INTERVAL, "1000"),
            (ANNOTATION_CROSS_ZONE, "yes"),
            (ANNOTATION_ADDITIONAL_TAGS, "=v"),
            (ANNOTATION_SUBNETS, " , "),
        ] {
            match plan(&with(&[(key, value)])) {
                Err(CloudError::InvalidInput { field, .. }) => assert_eq!(field, key, "{value}"),
                other => panic!("{key}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn elsewhere_and_spec_errors() {
        assert!(matches!(
            plan(&with(&[(ANNOTATION_LOAD_BALANCER_TYPE, "nlb-ip")])),
            Ok(Plan::Elsewhere(_))
        ));
        assert!(matches!(
            plan(&with(&[(ANNOTATION_LOAD_BALANCER_TYPE, "external")])),
            Ok(Plan::Elsewhere(_))
        ));
        let mut svc = with(&[]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.session_affinity = Some("ClientIP".into());
        }
        assert!(
            matches!(plan(&svc), Err(CloudError::InvalidInput { field, .. }) if field == "spec.sessionAffinity")
        );
        let mut svc = with(&[]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.ports.get_or_insert_default()[0].protocol = Some("SCTP".into());
        }
        assert!(
            matches!(plan(&svc), Err(CloudError::InvalidInput { field, .. }) if field == "spec.ports[0].protocol")
        );
        let mut svc = with(&[]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.ports.get_or_insert_default()[0].node_port = None;
        }
        assert!(
            matches!(plan(&svc), Err(CloudError::InvalidInput { field, .. }) if field == "spec.ports")
        );
    }
}
