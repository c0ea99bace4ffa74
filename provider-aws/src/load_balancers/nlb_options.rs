//! The NLB annotations beyond the basics, parsed and validated before any AWS call: TLS listeners, static
//! addresses, target-group attributes and access logs. Upstream's names and values
//! (`pkg/providers/v1/aws.go`, `aws_validations.go`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use cloudprovider_api::{CloudError, CloudResult};

use super::annotations::set_annotation as annotation;
use k8s_openapi::api::core::v1::Service;

/// ARN of an ACM (or IAM) certificate: the ports it covers get TLS listeners.
pub const ANNOTATION_SSL_CERT: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-cert";
/// Comma-separated port numbers or names getting TLS (`*` or absent: every TCP port).
pub const ANNOTATION_SSL_PORTS: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-ports";
/// The listeners' security policy, e.g. `ELBSecurityPolicy-TLS13-1-2-2021-06`.
pub const ANNOTATION_SSL_NEGOTIATION_POLICY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy";
/// `ssl`: TLS to the targets too (NLB); `tcp`, `http`, `https`, `ssl` for Classic ELBs.
pub const ANNOTATION_BACKEND_PROTOCOL: &str =
    "service.beta.kubernetes.io/aws-load-balancer-backend-protocol";
/// Comma-separated Elastic IP allocation IDs, one per subnet (internet-facing NLBs, at creation).
pub const ANNOTATION_EIP_ALLOCATIONS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-eip-allocations";
/// Comma-separated private IPv4 addresses, one per subnet (internal NLBs, at creation).
pub const ANNOTATION_PRIVATE_IPV4_ADDRESSES: &str =
    "service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses";
/// `preserve_client_ip.enabled=true|false,proxy_protocol_v2.enabled=true|false` on every target group.
pub const ANNOTATION_TARGET_GROUP_ATTRIBUTES: &str =
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes";
/// `true`: access logs to S3.
pub const ANNOTATION_ACCESS_LOG_ENABLED: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-enabled";
/// The S3 bucket of the access logs (required when they are enabled).
pub const ANNOTATION_ACCESS_LOG_BUCKET: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-s3-bucket-name";
/// The key prefix of the access logs.
pub const ANNOTATION_ACCESS_LOG_PREFIX: &str =
    "service.beta.kubernetes.io/aws-load-balancer-access-log-s3-bucket-prefix";

/// Target-group attributes the annotation may set (upstream's list).
pub const TARGET_GROUP_ATTRIBUTES: [&str; 2] =
    ["preserve_client_ip.enabled", "proxy_protocol_v2.enabled"];

/// A TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tls {
    pub(crate) certificate_arn: String,
    pub(crate) policy: Option<String>,
    /// TLS to the targets as well (`backend-protocol: ssl`).
    pub(crate) backend: bool,
}

/// Access logs of the load balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccessLogs {
    pub(crate) enabled: bool,
    pub(crate) bucket: Option<String>,
    pub(crate) prefix: Option<String>,
}

/// Where each subnet's address comes from at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StaticAddresses {
    /// Elastic IP allocation IDs, one per subnet.
    Eips(Vec<String>),
    /// Private IPv4 addresses, one per subnet.
    Private(Vec<Ipv4Addr>),
}

impl StaticAddresses {
    /// The annotation they come from, for errors.
    pub(crate) fn annotation(&self) -> &'static str {
        match self {
            Self::Eips(_) => ANNOTATION_EIP_ALLOCATIONS,
            Self::Private(_) => ANNOTATION_PRIVATE_IPV4_ADDRESSES,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Eips(v) => v.len(),
            Self::Private(v) => v.len(),
        }
    }
}

/// The options, all validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NlbOptions {
    pub(crate) static_addresses: Option<StaticAddresses>,
    /// Set on every target group (attributes not named are left as they are).
    pub(crate) target_group_attributes: BTreeMap<String, String>,
    pub(crate) access_logs: Option<AccessLogs>,
}

fn list(raw: &str) -> Vec<&str> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The TLS listener of a port (`port`, its `name`, its protocol), if the annotations give it one: a certificate is
/// set, the port is TCP, and `ssl-ports` is absent, `*`, or names the port by number or name.
pub(crate) fn tls_for(
    service: &Service,
    port: i32,
    name: Option<&str>,
    protocol: &str,
) -> CloudResult<Option<Tls>> {
    let Some(certificate_arn) = annotation(service, ANNOTATION_SSL_CERT) else {
        return Ok(None);
    };
    if !certificate_arn.starts_with("arn:") {
        return Err(CloudError::invalid_input(
            ANNOTATION_SSL_CERT,
            format!("{certificate_arn:?} is not an ARN (arn:aws:acm:…:certificate/…)"),
        ));
    }
    if protocol == "UDP" {
        return Ok(None);
    }
    let covered = match annotation(service, ANNOTATION_SSL_PORTS) {
        None | Some("*") => true,
        Some(raw) => list(raw)
            .iter()
            .any(|p| p.parse::<i32>().ok() == Some(port) || Some(*p) == name),
    };
    if !covered {
        return Ok(None);
    }
    let backend = match annotation(service, ANNOTATION_BACKEND_PROTOCOL) {
        None | Some("tcp") => false,
        Some("ssl") => true,
        Some(other) => {
            return Err(CloudError::invalid_input(
                ANNOTATION_BACKEND_PROTOCOL,
                format!(
                    "{other:?} is not supported by a Network Load Balancer with TLS; use \"ssl\" (TLS to the \
                     targets) or \"tcp\""
                ),
            ));
        }
    };
    Ok(Some(Tls {
        certificate_arn: certificate_arn.to_owned(),
        policy: annotation(service, ANNOTATION_SSL_NEGOTIATION_POLICY).map(str::to_owned),
        backend,
    }))
}

/// Static addresses: EIPs for internet-facing NLBs, private IPv4 addresses for internal ones; not both.
fn static_addresses(service: &Service, internal: bool) -> CloudResult<Option<StaticAddresses>> {
    let eips = annotation(service, ANNOTATION_EIP_ALLOCATIONS);
    let private = annotation(service, ANNOTATION_PRIVATE_IPV4_ADDRESSES);
    match (eips, private) {
        (Some(_), Some(_)) => Err(CloudError::invalid_input(
            ANNOTATION_EIP_ALLOCATIONS,
            format!("cannot be set together with {ANNOTATION_PRIVATE_IPV4_ADDRESSES}"),
        )),
        (Some(raw), None) => {
            if internal {
                return Err(CloudError::invalid_input(
                    ANNOTATION_EIP_ALLOCATIONS,
                    "Elastic IPs need an internet-facing load balancer; this one is internal",
                ));
            }
            let ids = list(raw);
            if let Some(bad) = ids.iter().find(|id| !id.starts_with("eipalloc-")) {
                return Err(CloudError::invalid_input(
                    ANNOTATION_EIP_ALLOCATIONS,
                    format!("{bad:?} is not an allocation ID (eipalloc-…)"),
                ));
            }
            Ok(Some(StaticAddresses::Eips(
                ids.into_iter().map(str::to_owned).collect(),
            )))
        }
        (None, Some(raw)) => {
            if !internal {
                return Err(CloudError::invalid_input(
                    ANNOTATION_PRIVATE_IPV4_ADDRESSES,
                    "private addresses need an internal load balancer (aws-load-balancer-internal: \"true\")",
                ));
            }
            let mut ips = Vec::new();
            for item in list(raw) {
                ips.push(item.parse::<Ipv4Addr>().map_err(|_| {
                    CloudError::invalid_input(
                        ANNOTATION_PRIVATE_IPV4_ADDRESSES,
                        format!("{item:?} is not an IPv4 address"),
                    )
                })?);
            }
            Ok(Some(StaticAddresses::Private(ips)))
        }
        (None, None) => Ok(None),
    }
}

/// `key=value,…` of upstream's supported attributes, `true`/`false`, each once; client IP preservation cannot be
/// disabled for UDP.
fn target_group_attributes(service: &Service, udp: bool) -> CloudResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(raw) = annotation(service, ANNOTATION_TARGET_GROUP_ATTRIBUTES) else {
        return Ok(out);
    };
    let invalid = |m: String| CloudError::invalid_input(ANNOTATION_TARGET_GROUP_ATTRIBUTES, m);
    for item in list(raw) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let (key, value) = (key.trim(), value.trim());
        if !TARGET_GROUP_ATTRIBUTES.contains(&key) {
            return Err(invalid(format!(
                "{key:?} is not supported; supported: {}",
                TARGET_GROUP_ATTRIBUTES.join(", ")
            )));
        }
        if value != "true" && value != "false" {
            return Err(invalid(format!(
                "{key}: {value:?} is not \"true\" or \"false\""
            )));
        }
        if udp && key == "preserve_client_ip.enabled" && value == "false" {
            return Err(invalid(
                "client IP preservation cannot be disabled for UDP ports".to_owned(),
            ));
        }
        if out.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(invalid(format!("{key:?} is set twice")));
        }
    }
    Ok(out)
}

/// S3 access logs; enabling them needs a bucket.
fn access_logs(service: &Service) -> CloudResult<Option<AccessLogs>> {
    let enabled = match annotation(service, ANNOTATION_ACCESS_LOG_ENABLED) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
        Some(v) => {
            return Err(CloudError::invalid_input(
                ANNOTATION_ACCESS_LOG_ENABLED,
                format!("{v:?} is not \"true\" or \"false\""),
            ));
        }
    };
    let bucket = annotation(service, ANNOTATION_ACCESS_LOG_BUCKET).map(str::to_owned);
    let prefix = annotation(service, ANNOTATION_ACCESS_LOG_PREFIX).map(str::to_owned);
    match enabled {
        None => Ok(None),
        Some(true) if bucket.is_none() => Err(CloudError::invalid_input(
            ANNOTATION_ACCESS_LOG_BUCKET,
            format!("is required when {ANNOTATION_ACCESS_LOG_ENABLED} is \"true\""),
        )),
        Some(enabled) => Ok(Some(AccessLogs {
            enabled,
            bucket,
            prefix,
        })),
    }
}

/// Every option, validated.
pub(crate) fn parse(service: &Service, internal: bool, udp: bool) -> CloudResult<NlbOptions> {
    Ok(NlbOptions {
        static_addresses: static_addresses(service, internal)?,
        target_group_attributes: target_group_attributes(service, udp)?,
        access_logs: access_logs(service)?,
    })
}

/// The load-balancer attributes the annotations ask for (cross-zone, access logs); empty when they ask nothing,
/// so nothing is read or written.
pub(crate) fn load_balancer_attributes(
    cross_zone: Option<bool>,
    logs: Option<&AccessLogs>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(enabled) = cross_zone {
        out.insert(
            "load_balancing.cross_zone.enabled".to_owned(),
            enabled.to_string(),
        );
    }
    if let Some(logs) = logs {
        out.insert(
            "access_logs.s3.enabled".to_owned(),
            logs.enabled.to_string(),
        );
        // ELBv2 refuses an empty bucket: bucket and prefix are only set while logs are on.
        if logs.enabled {
            out.extend(
                logs.bucket
                    .iter()
                    .map(|b| ("access_logs.s3.bucket".to_owned(), b.clone())),
            );
            out.insert(
                "access_logs.s3.prefix".to_owned(),
                logs.prefix.clone().unwrap_or_default(),
            );
        }
    }
    out
}

/// The attributes of `wanted` whose current value differs.
pub(crate) fn changed_attributes(
    wanted: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> BTreeSet<(String, String)> {
    wanted
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
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

    fn field(r: CloudResult<impl std::fmt::Debug>) -> String {
        match r {
            Err(CloudError::InvalidInput { field, .. }) => field,
            other => format!("not invalid input: {other:?}"),
        }
    }

    const CERT: &str = "arn:aws:acm:us-east-1:123456789012:certificate/abc";

    #[test]
    fn tls_listeners_follow_cert_ports_and_backend_protocol() {
        let s = svc(&[
            (ANNOTATION_SSL_CERT, CERT),
            (ANNOTATION_SSL_PORTS, "443, metrics"),
            (
                ANNOTATION_SSL_NEGOTIATION_POLICY,
                "ELBSecurityPolicy-TLS13-1-2-2021-06",
            ),
        ]);
        let tls = tls_for(&s, 443, Some("https"), "TCP").ok().flatten();
        assert_eq!(
            tls,
            Some(Tls {
                certificate_arn: CERT.to_owned(),
                policy: Some("ELBSecurityPolicy-TLS13-1-2-2021-06".to_owned()),
                backend: false
            })
        );
        assert!(
            tls_for(&s, 9000, Some("metrics"), "TCP")
                .ok()
                .flatten()
                .is_some()
        );
        assert_eq!(tls_for(&s, 80, Some("http"), "TCP").ok().flatten(), None);
        assert_eq!(tls_for(&s, 443, None, "UDP").ok().flatten(), None);
        let all = svc(&[
            (ANNOTATION_SSL_CERT, CERT),
            (ANNOTATION_BACKEND_PROTOCOL, "ssl"),
        ]);
        assert!(
            tls_for(&all, 80, None, "TCP")
                .ok()
                .flatten()
                .is_some_and(|t| t.backend)
        );
        assert_eq!(tls_for(&svc(&[]), 443, None, "TCP").ok().flatten(), None);
        assert_eq!(
            field(tls_for(
                &svc(&[(ANNOTATION_SSL_CERT, "abc")]),
                443,
                None,
                "TCP"
            )),
            ANNOTATION_SSL_CERT
        );
        let http = svc(&[
            (ANNOTATION_SSL_CERT, CERT),
            (ANNOTATION_BACKEND_PROTOCOL, "http"),
        ]);
        assert_eq!(
            field(tls_for(&http, 443, None, "TCP")),
            ANNOTATION_BACKEND_PROTOCOL
        );
    }

    #[test]
    fn static_addresses_match_the_scheme() {
        let eips = svc(&[(ANNOTATION_EIP_ALLOCATIONS, "eipalloc-1, eipalloc-2")]);
        assert_eq!(
            parse(&eips, false, false)
                .ok()
                .and_then(|o| o.static_addresses),
            Some(StaticAddresses::Eips(vec![
                "eipalloc-1".into(),
                "eipalloc-2".into()
            ]))
        );
        assert_eq!(field(parse(&eips, true, false)), ANNOTATION_EIP_ALLOCATIONS);
        let bad = svc(&[(ANNOTATION_EIP_ALLOCATIONS, "eip-1")]);
        assert_eq!(field(parse(&bad, false, false)), ANNOTATION_EIP_ALLOCATIONS);
        let private = svc(&[(ANNOTATION_PRIVATE_IPV4_ADDRESSES, "10.0.1.10,10.0.2.10")]);
        assert_eq!(
            parse(&private, true, false)
                .ok()
                .and_then(|o| o.static_addresses)
                .map(|a| a.len()),
            Some(2)
        );
        assert_eq!(
            field(parse(&private, false, false)),
            ANNOTATION_PRIVATE_IPV4_ADDRESSES
        );
        let not_ip = svc(&[(ANNOTATION_PRIVATE_IPV4_ADDRESSES, "10.0.1.300")]);
        assert_eq!(
            field(parse(&not_ip, true, false)),
            ANNOTATION_PRIVATE_IPV4_ADDRESSES
        );
        let both = svc(&[
            (ANNOTATION_EIP_ALLOCATIONS, "eipalloc-1"),
            (ANNOTATION_PRIVATE_IPV4_ADDRESSES, "10.0.1.10"),
        ]);
        assert_eq!(
            field(parse(&both, false, false)),
            ANNOTATION_EIP_ALLOCATIONS
        );
    }

    #[test]
    fn target_group_attributes_are_upstreams_two() {
        let ok = svc(&[(
            ANNOTATION_TARGET_GROUP_ATTRIBUTES,
            "preserve_client_ip.enabled=false, proxy_protocol_v2.enabled=true",
        )]);
        assert_eq!(
            parse(&ok, false, false)
                .ok()
                .map(|o| o.target_group_attributes.len()),
            Some(2)
        );
        for bad in [
            "stickiness.enabled=true",
            "proxy_protocol_v2.enabled=yes",
            "proxy_protocol_v2.enabled=true,proxy_protocol_v2.enabled=false",
        ] {
            let s = svc(&[(ANNOTATION_TARGET_GROUP_ATTRIBUTES, bad)]);
            assert_eq!(
                field(parse(&s, false, false)),
                ANNOTATION_TARGET_GROUP_ATTRIBUTES,
                "{bad}"
            );
        }
        let udp = svc(&[(
            ANNOTATION_TARGET_GROUP_ATTRIBUTES,
            "preserve_client_ip.enabled=false",
        )]);
        assert_eq!(
            field(parse(&udp, false, true)),
            ANNOTATION_TARGET_GROUP_ATTRIBUTES
        );
    }

    #[test]
    fn access_logs_need_a_bucket_and_become_attributes() {
        let on = svc(&[
            (ANNOTATION_ACCESS_LOG_ENABLED, "true"),
            (ANNOTATION_ACCESS_LOG_BUCKET, "logs"),
            (ANNOTATION_ACCESS_LOG_PREFIX, "web"),
        ]);
        let logs = parse(&on, false, false).ok().and_then(|o| o.access_logs);
        let attributes = load_balancer_attributes(Some(true), logs.as_ref());
        assert_eq!(
            attributes.get("access_logs.s3.bucket").map(String::as_str),
            Some("logs")
        );
        assert_eq!(attributes.len(), 4);
        let no_bucket = svc(&[(ANNOTATION_ACCESS_LOG_ENABLED, "true")]);
        assert_eq!(
            field(parse(&no_bucket, false, false)),
            ANNOTATION_ACCESS_LOG_BUCKET
        );
        let off = svc(&[(ANNOTATION_ACCESS_LOG_ENABLED, "false")]);
        let logs = parse(&off, false, false).ok().and_then(|o| o.access_logs);
        assert_eq!(
            load_balancer_attributes(None, logs.as_ref()),
            [("access_logs.s3.enabled".to_owned(), "false".to_owned())].into()
        );
        assert!(load_balancer_attributes(None, None).is_empty());
        let current = [("access_logs.s3.enabled".to_owned(), "false".to_owned())].into();
        assert!(
            changed_attributes(&load_balancer_attributes(None, logs.as_ref()), &current).is_empty()
        );
    }
}
