//! What a Classic ELB needs from a Service, validated before any AWS call: listeners, health check, attributes,
//! proxy protocol and security groups, with upstream's names and defaults (`pkg/providers/v1/aws.go`).

use std::collections::BTreeSet;

use cloudprovider_api::{CloudError, CloudResult};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};

use crate::load_balancers::annotations::{boolean, list, number, set_annotation as annotation};
use crate::load_balancers::nlb_options::{
    ANNOTATION_ACCESS_LOG_BUCKET, ANNOTATION_ACCESS_LOG_ENABLED, ANNOTATION_ACCESS_LOG_PREFIX,
    ANNOTATION_BACKEND_PROTOCOL, ANNOTATION_SSL_CERT, ANNOTATION_SSL_NEGOTIATION_POLICY,
    ANNOTATION_SSL_PORTS,
};

/// `*`: the proxy protocol (v1) towards every backend port.
pub const ANNOTATION_PROXY_PROTOCOL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol";
/// `5` or `60` minutes between access-log files.
pub const ANNOTATION_ACCESS_LOG_EMIT_INTERVAL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-emit-interval";
/// `true`: connection draining.
pub const ANNOTATION_CONNECTION_DRAINING_ENABLED: &str =
    "service.beta.kubernetes.io/aws-load-balancer-connection-draining-enabled";
/// Seconds of connection draining.
pub const ANNOTATION_CONNECTION_DRAINING_TIMEOUT: &str =
    "service.beta.kubernetes.io/aws-load-balancer-connection-draining-timeout";
/// Seconds a connection may idle.
pub const ANNOTATION_CONNECTION_IDLE_TIMEOUT: &str =
    "service.beta.kubernetes.io/aws-load-balancer-connection-idle-timeout";
/// Security groups replacing the managed one (comma-separated IDs).
pub const ANNOTATION_SECURITY_GROUPS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-security-groups";
/// Security groups added to the managed (or annotated) ones.
pub const ANNOTATION_EXTRA_SECURITY_GROUPS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-extra-security-groups";

/// The name of the proxy-protocol policy (upstream's).
pub const PROXY_PROTOCOL_POLICY: &str = "k8s-proxyprotocol-enabled";

/// One listener.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ClassicListener {
    /// `TCP`, `SSL`, `HTTP` or `HTTPS`.
    pub(crate) protocol: String,
    pub(crate) port: i32,
    /// `TCP`, `SSL`, `HTTP` or `HTTPS`.
    pub(crate) instance_protocol: String,
    pub(crate) instance_port: i32,
    pub(crate) certificate: Option<String>,
}

/// The health check as ELB takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClassicHealthCheck {
    /// `TCP:30080`, `HTTP:31000/healthz`, …
    pub(crate) target: String,
    pub(crate) interval: i32,
    pub(crate) timeout: i32,
    pub(crate) healthy: i32,
    pub(crate) unhealthy: i32,
}

/// The attributes (upstream's defaults when an annotation is absent: no access log, no draining, 60 s idle, no
/// cross-zone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClassicAttributes {
    pub(crate) access_log: Option<(i32, String, String)>,
    pub(crate) draining: Option<i32>,
    pub(crate) idle_timeout: i32,
    pub(crate) cross_zone: bool,
}

/// Where the load balancer's security groups come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClassicGroups {
    /// The annotated groups replacing the managed one; empty: a managed group `k8s-elb-<name>`.
    pub(crate) replace: Vec<String>,
    /// Added in any case.
    pub(crate) extra: Vec<String>,
}

/// Everything a Classic ELB needs beyond what it shares with an NLB (scheme, subnets, target nodes, source
/// ranges, tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClassicSpec {
    pub(crate) listeners: Vec<ClassicListener>,
    pub(crate) health: ClassicHealthCheck,
    pub(crate) attributes: ClassicAttributes,
    pub(crate) proxy_protocol: bool,
    pub(crate) ssl_policy: Option<String>,
    pub(crate) groups: ClassicGroups,
}

impl ClassicSpec {
    /// The backend ports (for the proxy-protocol policy).
    pub(crate) fn instance_ports(&self) -> BTreeSet<i32> {
        self.listeners.iter().map(|l| l.instance_port).collect()
    }
}

/// Upstream's `buildListener`: plain TCP; with a certificate covering the port, `SSL` to `TCP` backends, or the
/// backend protocol's secure twin (`http`→`HTTPS`, `https`→`HTTPS`, `ssl`→`SSL`, `tcp`→`SSL`); without one,
/// `backend-protocol: http` makes an `HTTP` listener.
fn listeners(service: &Service, spec: &ServiceSpec) -> CloudResult<Vec<ClassicListener>> {
    let backend = annotation(service, ANNOTATION_BACKEND_PROTOCOL).map(str::to_ascii_lowercase);
    if let Some(b) = &backend
        && !matches!(b.as_str(), "tcp" | "ssl" | "http" | "https")
    {
        return Err(CloudError::invalid_input(
            ANNOTATION_BACKEND_PROTOCOL,
            format!("{b:?} is not one of tcp, ssl, http, https"),
        ));
    }
    let certificate = annotation(service, ANNOTATION_SSL_CERT);
    let ssl_ports = list(service, ANNOTATION_SSL_PORTS);
    let covers = |port: i32, name: Option<&str>| {
        ssl_ports.is_empty()
            || ssl_ports.iter().any(|p| {
                p == "*" || p.parse::<i32>().ok() == Some(port) || Some(p.as_str()) == name
            })
    };
    let mut out = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let Some(node_port) = p.node_port.filter(|n| *n > 0) else {
            continue;
        };
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if protocol != "TCP" {
            return Err(CloudError::invalid_input(
                format!("spec.ports[{i}].protocol"),
                format!(
                    "{protocol:?} is not supported by a Classic ELB; use TCP, or an NLB (aws-load-balancer-type: nlb) for UDP"
                ),
            ));
        }
        let (front, back, cert) = match certificate {
            Some(cert) if covers(p.port, p.name.as_deref()) => {
                let back = backend.clone().unwrap_or_else(|| "tcp".to_owned());
                let front = match back.as_str() {
                    "http" | "https" => "HTTPS",
                    _ => "SSL",
                };
                (
                    front.to_owned(),
                    back.to_ascii_uppercase(),
                    Some(cert.to_owned()),
                )
            }
            _ if backend.as_deref() == Some("http") => ("HTTP".to_owned(), "HTTP".to_owned(), None),
            _ => ("TCP".to_owned(), "TCP".to_owned(), None),
        };
        out.push(ClassicListener {
            protocol: front,
            port: p.port,
            instance_protocol: back,
            instance_port: node_port,
            certificate: cert,
        });
    }
    if out.is_empty() {
        return Err(CloudError::invalid_input(
            "spec.ports",
            "no port with a nodePort to balance",
        ));
    }
    Ok(out)
}

/// Upstream's classic health check: `TCP:<first NodePort>`, or `HTTP:<healthCheckNodePort>/healthz` for
/// `externalTrafficPolicy: Local`; the healthcheck annotations override; 2 healthy, 6 unhealthy, 5 s timeout, 10 s
/// interval by default.
fn health_check(
    service: &Service,
    spec: &ServiceSpec,
    listeners: &[ClassicListener],
) -> CloudResult<ClassicHealthCheck> {
    use crate::load_balancers::annotations::{
        ANNOTATION_HC_HEALTHY, ANNOTATION_HC_INTERVAL, ANNOTATION_HC_PATH, ANNOTATION_HC_PORT,
        ANNOTATION_HC_PROTOCOL, ANNOTATION_HC_TIMEOUT, ANNOTATION_HC_UNHEALTHY,
    };
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    let first = listeners
        .first()
        .map(|l| l.instance_port)
        .unwrap_or_default();
    let (mut protocol, mut port, mut path) = match (local, spec.health_check_node_port) {
        (true, Some(hc)) => ("HTTP".to_owned(), hc.to_string(), "/healthz".to_owned()),
        _ => ("TCP".to_owned(), first.to_string(), String::new()),
    };
    if let Some(p) = annotation(service, ANNOTATION_HC_PROTOCOL) {
        let p = p.to_ascii_uppercase();
        if !matches!(p.as_str(), "TCP" | "HTTP" | "HTTPS" | "SSL") {
            return Err(CloudError::invalid_input(
                ANNOTATION_HC_PROTOCOL,
                format!("{p:?} is not TCP, SSL, HTTP or HTTPS"),
            ));
        }
        protocol = p;
    }
    if let Some(p) = annotation(service, ANNOTATION_HC_PORT) {
        if p != "traffic-port" {
            let n: u16 = p.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                CloudError::invalid_input(
                    ANNOTATION_HC_PORT,
                    format!("{p:?} is not a port or traffic-port"),
                )
            })?;
            port = n.to_string();
        } else {
            port = first.to_string();
        }
    }
    if let Some(p) = annotation(service, ANNOTATION_HC_PATH) {
        if !p.starts_with('/') {
            return Err(CloudError::invalid_input(
                ANNOTATION_HC_PATH,
                format!("{p:?} does not start with /"),
            ));
        }
        path = p.to_owned();
    }
    let target = if matches!(protocol.as_str(), "HTTP" | "HTTPS") {
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        format!("{protocol}:{port}{path}")
    } else {
        format!("{protocol}:{port}")
    };
    Ok(ClassicHealthCheck {
        target,
        interval: number(service, ANNOTATION_HC_INTERVAL, 5..=300)?.unwrap_or(10),
        timeout: number(service, ANNOTATION_HC_TIMEOUT, 2..=60)?.unwrap_or(5),
        healthy: number(service, ANNOTATION_HC_HEALTHY, 2..=10)?.unwrap_or(2),
        unhealthy: number(service, ANNOTATION_HC_UNHEALTHY, 2..=10)?.unwrap_or(6),
    })
}

fn attributes(service: &Service, cross_zone: Option<bool>) -> CloudResult<ClassicAttributes> {
    let access_log = match boolean(service, ANNOTATION_ACCESS_LOG_ENABLED)? {
        Some(true) => {
            let bucket = annotation(service, ANNOTATION_ACCESS_LOG_BUCKET).ok_or_else(|| {
                CloudError::invalid_input(
                    ANNOTATION_ACCESS_LOG_BUCKET,
                    format!("is required when {ANNOTATION_ACCESS_LOG_ENABLED} is \"true\""),
                )
            })?;
            let interval = match annotation(service, ANNOTATION_ACCESS_LOG_EMIT_INTERVAL) {
                None => 60,
                Some("5") => 5,
                Some("60") => 60,
                Some(other) => {
                    return Err(CloudError::invalid_input(
                        ANNOTATION_ACCESS_LOG_EMIT_INTERVAL,
                        format!("{other:?} is not 5 or 60 (minutes)"),
                    ));
                }
            };
            let prefix = annotation(service, ANNOTATION_ACCESS_LOG_PREFIX).unwrap_or_default();
            Some((interval, bucket.to_owned(), prefix.to_owned()))
        }
        _ => None,
    };
    let draining = match boolean(service, ANNOTATION_CONNECTION_DRAINING_ENABLED)? {
        Some(true) => {
            Some(number(service, ANNOTATION_CONNECTION_DRAINING_TIMEOUT, 1..=3600)?.unwrap_or(300))
        }
        _ => None,
    };
    Ok(ClassicAttributes {
        access_log,
        draining,
        idle_timeout: number(service, ANNOTATION_CONNECTION_IDLE_TIMEOUT, 1..=4000)?.unwrap_or(60),
        cross_zone: cross_zone.unwrap_or(false),
    })
}

fn groups(service: &Service) -> CloudResult<ClassicGroups> {
    let replace = list(service, ANNOTATION_SECURITY_GROUPS);
    let extra = list(service, ANNOTATION_EXTRA_SECURITY_GROUPS);
    for (key, ids) in [
        (ANNOTATION_SECURITY_GROUPS, &replace),
        (ANNOTATION_EXTRA_SECURITY_GROUPS, &extra),
    ] {
        if let Some(bad) = ids.iter().find(|id| !id.starts_with("sg-")) {
            return Err(CloudError::invalid_input(
                key,
                format!("{bad:?} is not a security group ID (sg-…)"),
            ));
        }
    }
    Ok(ClassicGroups { replace, extra })
}

/// Reads and validates what only a Classic ELB needs, in steps: listeners, health check, attributes, proxy
/// protocol, security groups.
pub(crate) fn classic_spec(
    service: &Service,
    cross_zone: Option<bool>,
) -> CloudResult<ClassicSpec> {
    let spec = service.spec.clone().unwrap_or_default();
    let listeners = listeners(service, &spec)?;
    let health = health_check(service, &spec, &listeners)?;
    let attributes = attributes(service, cross_zone)?;
    let proxy_protocol = match annotation(service, ANNOTATION_PROXY_PROTOCOL) {
        None => false,
        Some("*") => true,
        Some(other) => {
            return Err(CloudError::invalid_input(
                ANNOTATION_PROXY_PROTOCOL,
                format!("{other:?}: the only value supported is \"*\""),
            ));
        }
    };
    Ok(ClassicSpec {
        listeners,
        health,
        attributes,
        proxy_protocol,
        ssl_policy: annotation(service, ANNOTATION_SSL_NEGOTIATION_POLICY).map(str::to_owned),
        groups: groups(service)?,
    })
}

#[cfg(test)]
mod tests {
    use cloudprovider_api::conformance::load_balancer_service;

    use super::*;

    fn svc(annotations: &[(&str, &str)]) -> Service {
        let mut s = load_balancer_service("web", "u1");
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        s
    }

    fn field(r: CloudResult<ClassicSpec>) -> String {
        match r {
            Err(CloudError::InvalidInput { field, .. }) => field,
            other => format!("not invalid input: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_upstreams() {
        let s = classic_spec(&svc(&[]), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.listeners,
            vec![ClassicListener {
                protocol: "TCP".into(),
                port: 80,
                instance_protocol: "TCP".into(),
                instance_port: 30080,
                certificate: None
            }]
        );
        assert_eq!(s.health.target, "TCP:30080");
        assert_eq!(
            (
                s.health.interval,
                s.health.timeout,
                s.health.healthy,
                s.health.unhealthy
            ),
            (10, 5, 2, 6)
        );
        assert_eq!(
            s.attributes,
            ClassicAttributes {
                access_log: None,
                draining: None,
                idle_timeout: 60,
                cross_zone: false
            }
        );
        assert!(!s.proxy_protocol);
    }

    #[test]
    fn certificates_make_secure_listeners() {
        let cert = "arn:aws:acm:us-east-1:1:certificate/x";
        let s = classic_spec(&svc(&[(ANNOTATION_SSL_CERT, cert)]), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                s.listeners[0].protocol.as_str(),
                s.listeners[0].instance_protocol.as_str()
            ),
            ("SSL", "TCP")
        );
        let s = classic_spec(
            &svc(&[
                (ANNOTATION_SSL_CERT, cert),
                (ANNOTATION_BACKEND_PROTOCOL, "http"),
            ]),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                s.listeners[0].protocol.as_str(),
                s.listeners[0].instance_protocol.as_str()
            ),
            ("HTTPS", "HTTP")
        );
        let s = classic_spec(
            &svc(&[(ANNOTATION_SSL_CERT, cert), (ANNOTATION_SSL_PORTS, "443")]),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.listeners[0].protocol, "TCP", "port 80 is not covered");
        let s = classic_spec(&svc(&[(ANNOTATION_BACKEND_PROTOCOL, "http")]), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.listeners[0].protocol, "HTTP");
        assert_eq!(
            field(classic_spec(
                &svc(&[(ANNOTATION_BACKEND_PROTOCOL, "grpc")]),
                None
            )),
            ANNOTATION_BACKEND_PROTOCOL
        );
    }

    #[test]
    fn attributes_and_policies_are_validated() {
        let s = classic_spec(
            &svc(&[
                (ANNOTATION_ACCESS_LOG_ENABLED, "true"),
                (ANNOTATION_ACCESS_LOG_BUCKET, "logs"),
                (ANNOTATION_ACCESS_LOG_EMIT_INTERVAL, "5"),
                (ANNOTATION_CONNECTION_DRAINING_ENABLED, "true"),
                (ANNOTATION_CONNECTION_DRAINING_TIMEOUT, "30"),
                (ANNOTATION_CONNECTION_IDLE_TIMEOUT, "120"),
                (ANNOTATION_PROXY_PROTOCOL, "*"),
            ]),
            Some(true),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.attributes,
            ClassicAttributes {
                access_log: Some((5, "logs".into(), String::new())),
                draining: Some(30),
                idle_timeout: 120,
                cross_zone: true
            }
        );
        assert!(s.proxy_protocol);
        for (key, value) in [
            (ANNOTATION_ACCESS_LOG_EMIT_INTERVAL, "7"),
            (ANNOTATION_CONNECTION_IDLE_TIMEOUT, "0"),
            (ANNOTATION_PROXY_PROTOCOL, "v2"),
            (ANNOTATION_SECURITY_GROUPS, "default"),
            (ANNOTATION_EXTRA_SECURITY_GROUPS, "sg-1,web"),
        ] {
            let mut pairs = vec![(key, value)];
            if key == ANNOTATION_ACCESS_LOG_EMIT_INTERVAL {
                pairs.extend([
                    (ANNOTATION_ACCESS_LOG_ENABLED, "true"),
                    (ANNOTATION_ACCESS_LOG_BUCKET, "b"),
                ]);
            }
            assert_eq!(
                field(classic_spec(&svc(&pairs), None)),
                key,
                "{key}={value}"
            );
        }
        assert_eq!(
            field(classic_spec(
                &svc(&[(ANNOTATION_ACCESS_LOG_ENABLED, "true")]),
                None
            )),
            ANNOTATION_ACCESS_LOG_BUCKET
        );
    }

    #[test]
    fn local_traffic_checks_the_health_node_port() {
        let mut s = svc(&[]);
        if let Some(spec) = s.spec.as_mut() {
            spec.external_traffic_policy = Some("Local".into());
            spec.health_check_node_port = Some(32000);
        }
        assert_eq!(
            classic_spec(&s, None).map(|c| c.health.target).ok(),
            Some("HTTP:32000/healthz".to_owned())
        );
    }
}
