//! What counts as a Service change, and what this controller last applied for each Service (in memory), from
//! which a reconcile decides between ensure, a hosts-only update, and nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use parking_lot::Mutex;

use super::FINALIZER;

/// `spec.type` of the Services this controller serves.
pub(super) const TYPE_LOAD_BALANCER: &str = "LoadBalancer";

/// The fields of one port that matter to a load balancer.
#[derive(Clone, Debug, PartialEq)]
struct PortFingerprint {
    name: Option<String>,
    protocol: Option<String>,
    port: i32,
    node_port: Option<i32>,
    target_port: Option<IntOrString>,
    app_protocol: Option<String>,
}

/// Everything upstream counts as a Service change: type, source ranges, ports, session affinity,
/// loadBalancerIP, external IPs, annotations, UID, externalTrafficPolicy, healthCheckNodePort and the number of
/// IP families (plus the class, which decides ownership).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ServiceFingerprint {
    uid: Option<String>,
    type_: Option<String>,
    load_balancer_class: Option<String>,
    source_ranges: Option<Vec<String>>,
    ports: Vec<PortFingerprint>,
    session_affinity: Option<String>,
    load_balancer_ip: Option<String>,
    external_ips: Option<Vec<String>>,
    annotations: BTreeMap<String, String>,
    external_traffic_policy: Option<String>,
    health_check_node_port: Option<i32>,
    ip_families: usize,
}

impl ServiceFingerprint {
    pub(super) fn of(svc: &Service) -> Self {
        let spec = svc.spec.clone().unwrap_or_default();
        Self {
            uid: svc.metadata.uid.clone(),
            type_: spec.type_,
            load_balancer_class: spec.load_balancer_class,
            source_ranges: spec.load_balancer_source_ranges,
            ports: spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| PortFingerprint {
                    name: p.name,
                    protocol: p.protocol,
                    port: p.port,
                    node_port: p.node_port,
                    target_port: p.target_port,
                    app_protocol: p.app_protocol,
                })
                .collect(),
            session_affinity: spec.session_affinity,
            load_balancer_ip: spec.load_balancer_ip,
            external_ips: spec.external_ips,
            annotations: svc.annotations().clone(),
            external_traffic_policy: spec.external_traffic_policy,
            health_check_node_port: spec.health_check_node_port,
            ip_families: spec.ip_families.map_or(0, |f| f.len()),
        }
    }
}

/// Whether this controller serves `svc`: type LoadBalancer with no class, or one of `classes`.
pub(super) fn is_ours(svc: &Service, classes: &[String]) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some(TYPE_LOAD_BALANCER)
        && spec
            .load_balancer_class
            .as_ref()
            .is_none_or(|c| classes.contains(c))
}

/// Whether `svc` carries the cleanup finalizer.
pub(super) fn has_finalizer(svc: &Service) -> bool {
    svc.finalizers().iter().any(|f| f == FINALIZER)
}

/// Compares two statuses as the apiserver stores them: no ingress equals an empty list, and an ingress with an IP
/// and no `ipMode` is defaulted to `VIP`, so a provider that leaves `ipMode` unset causes no patch every sync.
pub(super) fn same_status(
    stored: Option<&LoadBalancerStatus>,
    new: Option<&LoadBalancerStatus>,
) -> bool {
    fn normalized(
        s: Option<&LoadBalancerStatus>,
    ) -> Vec<k8s_openapi::api::core::v1::LoadBalancerIngress> {
        let mut ingress = s.and_then(|s| s.ingress.clone()).unwrap_or_default();
        for i in &mut ingress {
            if i.ip.is_some() && i.ip_mode.is_none() {
                i.ip_mode = Some("VIP".into());
            }
            if i.ports.as_ref().is_some_and(Vec::is_empty) {
                i.ports = None;
            }
        }
        ingress
    }
    normalized(stored) == normalized(new)
}

/// What a reconcile of a Service we serve must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Never synced, the Service changed, or our finalizer is missing: `ensure_load_balancer`.
    Ensure,
    /// Only the target nodes changed: `update_load_balancer`.
    UpdateHosts,
    /// Nothing changed since the last sync.
    UpToDate,
    /// The provider said another controller owns this Service, and it has not changed since.
    ImplementedElsewhere,
}

#[derive(Debug, Clone, PartialEq)]
enum Synced {
    Ensured {
        spec: ServiceFingerprint,
        hosts: u64,
    },
    Elsewhere {
        spec: ServiceFingerprint,
    },
}

/// What was last applied per Service key (`namespace/name`), lost on restart (the first sync then ensures,
/// which providers must support being idempotent).
#[derive(Debug, Default)]
pub(super) struct SyncedServices {
    inner: Mutex<HashMap<String, Synced>>,
}

impl SyncedServices {
    /// Decides what a Service with `spec` needs, given target set `hosts` (its generation).
    pub(super) fn plan(
        &self,
        key: &str,
        spec: &ServiceFingerprint,
        hosts: u64,
        has_finalizer: bool,
    ) -> Plan {
        match self.inner.lock().get(key) {
            Some(Synced::Elsewhere { spec: s }) if s == spec => Plan::ImplementedElsewhere,
            Some(Synced::Ensured { spec: s, hosts: h }) if s == spec && has_finalizer => {
                if *h == hosts {
                    Plan::UpToDate
                } else {
                    Plan::UpdateHosts
                }
            }
            _ => Plan::Ensure,
        }
    }

    pub(super) fn ensured(&self, key: &str, spec: ServiceFingerprint, hosts: u64) {
        self.inner
            .lock()
            .insert(key.to_owned(), Synced::Ensured { spec, hosts });
    }

    /// Records that the hosts of generation `hosts` are applied, if the Service is still known as ensured.
    pub(super) fn hosts_updated(&self, key: &str, hosts: u64) {
        if let Some(Synced::Ensured { hosts: h, .. }) = self.inner.lock().get_mut(key) {
            *h = hosts;
        }
    }

    pub(super) fn elsewhere(&self, key: &str, spec: ServiceFingerprint) {
        self.inner
            .lock()
            .insert(key.to_owned(), Synced::Elsewhere { spec });
    }

    pub(super) fn forget(&self, key: &str) {
        self.inner.lock().remove(key);
    }

    /// Whether the Service needs nothing from a node-set change to generation `hosts`: its load balancer already
    /// has those hosts, or it is implemented elsewhere.
    pub(super) fn hosts_current(&self, key: &str, hosts: u64) -> bool {
        match self.inner.lock().get(key) {
            Some(Synced::Ensured { hosts: h, .. }) => *h == hosts,
            Some(Synced::Elsewhere { .. }) => true,
            None => false,
        }
    }

    /// Keys of ensured Services whose hosts are not generation `hosts`: those a node-set change will update.
    pub(super) fn stale_hosts(&self, hosts: u64) -> HashSet<String> {
        self.inner
            .lock()
            .iter()
            .filter(|(_, s)| matches!(s, Synced::Ensured { hosts: h, .. } if *h != hosts))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drops the entries of Services that no longer exist.
    pub(super) fn retain(&self, mut exists: impl FnMut(&str) -> bool) {
        self.inner.lock().retain(|k, _| exists(k));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, ServicePort, ServiceSpec};

    use super::*;

    fn svc() -> Service {
        let mut s = Service::default();
        s.metadata.uid = Some("u1".into());
        s.spec = Some(ServiceSpec {
            type_: Some(TYPE_LOAD_BALANCER.into()),
            ports: Some(vec![ServicePort {
                port: 80,
                node_port: Some(30080),
                ..Default::default()
            }]),
            ..Default::default()
        });
        s
    }

    #[test]
    fn fingerprint_covers_the_listed_fields_only() {
        let base = ServiceFingerprint::of(&svc());
        let mut s = svc();
        s.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
        s.metadata.resource_version = Some("7".into());
        assert_eq!(
            ServiceFingerprint::of(&s),
            base,
            "labels and resourceVersion are no change"
        );
        let edits: Vec<fn(&mut Service)> = vec![
            |s| s.metadata.uid = Some("u2".into()),
            |s| s.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())])),
            |s| {
                s.spec
                    .as_mut()
                    .into_iter()
                    .for_each(|p| p.session_affinity = Some("ClientIP".into()))
            },
            |s| {
                s.spec
                    .as_mut()
                    .into_iter()
                    .for_each(|p| p.external_traffic_policy = Some("Local".into()))
            },
            |s| {
                s.spec
                    .as_mut()
                    .into_iter()
                    .for_each(|p| p.health_check_node_port = Some(31000))
            },
            |s| {
                s.spec
                    .as_mut()
                    .into_iter()
                    .for_each(|p| p.ip_families = Some(vec!["IPv4".into()]))
            },
            |s| {
                s.spec
                    .as_mut()
                    .into_iter()
                    .for_each(|p| p.load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]))
            },
            |s| {
                s.spec
                    .as_mut()
                    .into_iter()
                    .for_each(|p| p.load_balancer_ip = Some("192.0.2.1".into()))
            },
            |s| {
                s.spec
                    .as_mut()
                    .into_iter()
                    .for_each(|p| p.external_ips = Some(vec!["192.0.2.2".into()]))
            },
            |s| {
                s.spec
                    .as_mut()
                    .and_then(|p| p.ports.as_mut())
                    .into_iter()
                    .flatten()
                    .for_each(|p| p.node_port = Some(1))
            },
            |s| {
                s.spec
                    .as_mut()
                    .and_then(|p| p.ports.as_mut())
                    .into_iter()
                    .flatten()
                    .for_each(|p| p.target_port = Some(IntOrString::String("http".into())))
            },
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let mut s = svc();
            edit(&mut s);
            assert_ne!(ServiceFingerprint::of(&s), base, "edit {i}");
        }
    }

    #[test]
    fn plans() {
        let synced = SyncedServices::default();
        let spec = ServiceFingerprint::of(&svc());
        assert_eq!(synced.plan("ns/a", &spec, 1, true), Plan::Ensure);
        synced.ensured("ns/a", spec.clone(), 1);
        assert_eq!(synced.plan("ns/a", &spec, 1, true), Plan::UpToDate);
        assert_eq!(
            synced.plan("ns/a", &spec, 1, false),
            Plan::Ensure,
            "finalizer removed"
        );
        assert_eq!(synced.plan("ns/a", &spec, 2, true), Plan::UpdateHosts);
        assert_eq!(synced.stale_hosts(2).len(), 1);
        synced.hosts_updated("ns/a", 2);
        assert_eq!(synced.plan("ns/a", &spec, 2, true), Plan::UpToDate);
        assert!(synced.stale_hosts(2).is_empty());
        let mut changed = svc();
        changed.metadata.uid = Some("u2".into());
        assert_eq!(
            synced.plan("ns/a", &ServiceFingerprint::of(&changed), 2, true),
            Plan::Ensure
        );
        synced.elsewhere("ns/a", spec.clone());
        assert_eq!(
            synced.plan("ns/a", &spec, 3, false),
            Plan::ImplementedElsewhere
        );
        synced.retain(|_| false);
        assert_eq!(synced.plan("ns/a", &spec, 3, true), Plan::Ensure);
    }

    #[test]
    fn status_comparison_normalizes_defaults() {
        let provider = LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("192.0.2.1".into()),
                ..Default::default()
            }]),
        };
        let mut stored = provider.clone();
        if let Some(i) = stored.ingress.as_mut().and_then(|v| v.first_mut()) {
            i.ip_mode = Some("VIP".into());
        }
        assert!(same_status(Some(&stored), Some(&provider)));
        assert!(same_status(None, Some(&LoadBalancerStatus::default())));
        assert!(!same_status(None, Some(&provider)));
    }

    #[test]
    fn ownership() {
        let mut s = svc();
        assert!(is_ours(&s, &[]));
        s.spec
            .as_mut()
            .into_iter()
            .for_each(|p| p.load_balancer_class = Some("x/y".into()));
        assert!(!is_ours(&s, &[]));
        assert!(is_ours(&s, &["x/y".into()]));
        s.spec
            .as_mut()
            .into_iter()
            .for_each(|p| p.type_ = Some("ClusterIP".into()));
        assert!(!is_ours(&s, &["x/y".into()]));
    }
}
