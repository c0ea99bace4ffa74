//! What one pod demands of the pods around it, as kube-scheduler checks it: host ports, required pod
//! anti-affinity, and topology spread constraints with `whenUnsatisfiable: DoNotSchedule`. Pure functions over
//! pod specs; [`packing`](super::packing) applies them to nodes and planned nodes.
//!
//! Not modelled (the scheduler still decides, the plan may then launch a node too few or too many): required
//! pod *affinity*, `ScheduleAnyway` spread (a preference), `matchLabelKeys`, `minDomains`, and spread counts of
//! pods on nodes outside the pool.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The well-known hostname label: a topology domain of its own per node.
pub(crate) const HOSTNAME: &str = "kubernetes.io/hostname";

/// A host port a container binds: (protocol, port). The host IP is ignored, as if every port were on `0.0.0.0`
/// (the scheduler is that strict unless both name the same specific IP).
pub(crate) type HostPort = (String, i32);

/// Every host port `pod`'s containers ask for.
pub(crate) fn host_ports(pod: &Pod) -> BTreeSet<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return BTreeSet::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), port))
        })
        .collect()
}

/// `metav1.LabelSelector` semantics: every `matchLabels` pair and every expression must hold; an empty selector
/// matches everything.
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    pairs
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let have = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// One required pod anti-affinity term: no pod matching `selector` (in `namespaces`) may share the pod's
/// domain of `key`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AntiAffinity {
    pub(crate) selector: LabelSelector,
    /// `None`: every namespace (an empty `namespaceSelector`).
    pub(crate) namespaces: Option<BTreeSet<String>>,
    pub(crate) key: String,
}

impl AntiAffinity {
    /// Whether `other` is a pod this term keeps away.
    pub(crate) fn repels(&self, other: &Pod) -> bool {
        let namespace = other.metadata.namespace.as_deref().unwrap_or("default");
        let in_scope = self
            .namespaces
            .as_ref()
            .is_none_or(|ns| ns.contains(namespace));
        in_scope
            && selector_matches(
                &self.selector,
                other.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            )
    }
}

/// `pod`'s required anti-affinity terms. A term without a label selector matches no pod and is dropped, as the
/// scheduler does; a non-empty `namespaceSelector` (which needs the Namespace objects) is read as "the listed
/// namespaces, else the pod's own".
pub(crate) fn anti_affinity(pod: &Pod) -> Vec<AntiAffinity> {
    let own = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter_map(|term| {
            let selector = term.label_selector.clone()?;
            let everywhere = term.namespace_selector.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                    && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
            });
            let namespaces = match term.namespaces.as_ref().filter(|n| !n.is_empty()) {
                _ if everywhere => None,
                Some(listed) => Some(listed.iter().cloned().collect()),
                None => Some(BTreeSet::from([own.clone()])),
            };
            Some(AntiAffinity {
                selector,
                namespaces,
                key: term.topology_key.clone(),
            })
        })
        .collect()
}

/// One `DoNotSchedule` topology spread constraint of a pod: in every domain of `key`, the pods of its namespace
/// matching `selector` may differ by at most `max_skew`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spread {
    pub(crate) selector: LabelSelector,
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) max_skew: i64,
}

impl Spread {
    /// Whether `other` counts in this constraint's domains.
    pub(crate) fn counts(&self, other: &Pod) -> bool {
        other.metadata.namespace.as_deref().unwrap_or("default") == self.namespace
            && selector_matches(
                &self.selector,
                other.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
            )
    }
}

/// `pod`'s `whenUnsatisfiable: DoNotSchedule` spread constraints (those with a selector; `ScheduleAnyway` ones
/// are preferences the plan does not need to meet).
pub(crate) fn spread(pod: &Pod) -> Vec<Spread> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
        .filter_map(|c| {
            Some(Spread {
                selector: c.label_selector.clone()?,
                namespace: namespace.clone(),
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew.max(1)),
            })
        })
        .collect()
}

/// Everything [`packing`](super::packing) needs of a pod besides its resources, read once.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Demands {
    pub(crate) ports: BTreeSet<HostPort>,
    pub(crate) anti_affinity: Vec<AntiAffinity>,
    pub(crate) spread: Vec<Spread>,
}

impl Demands {
    pub(crate) fn of(pod: &Pod) -> Self {
        Self {
            ports: host_ports(pod),
            anti_affinity: anti_affinity(pod),
            spread: spread(pod),
        }
    }

    /// Whether none apply (most pods): the plan can skip every topology check.
    pub(crate) fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.anti_affinity.is_empty() && self.spread.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, Container, ContainerPort, PodAffinityTerm, PodAntiAffinity, PodSpec,
        TopologySpreadConstraint,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};

    fn labelled(ns: &str, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    fn app(value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_owned(), value.to_owned())])),
            ..Default::default()
        }
    }

    #[test]
    fn selectors_follow_label_selector_semantics() {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        assert!(selector_matches(&LabelSelector::default(), &labels));
        assert!(selector_matches(&app("web"), &labels));
        assert!(!selector_matches(&app("db"), &labels));
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&expr("In", &["db", "web"]), &labels));
        assert!(!selector_matches(&expr("NotIn", &["web"]), &labels));
        assert!(selector_matches(&expr("Exists", &[]), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", &[]), &labels));
        assert!(!selector_matches(&expr("Sometimes", &[]), &labels));
    }

    #[test]
    fn host_ports_default_to_tcp_and_skip_zero() {
        let mut p = labelled("ns", "web");
        if let Some(spec) = p.spec.as_mut() {
            spec.containers = vec![Container {
                name: "c".into(),
                ports: Some(vec![
                    ContainerPort {
                        container_port: 80,
                        host_port: Some(8080),
                        ..Default::default()
                    },
                    ContainerPort {
                        container_port: 53,
                        host_port: Some(53),
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    },
                    ContainerPort {
                        container_port: 9000,
                        host_port: Some(0),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }];
        }
        assert_eq!(
            host_ports(&p),
            BTreeSet::from([("TCP".to_owned(), 8080), ("UDP".to_owned(), 53)])
        );
    }

    #[test]
    fn anti_affinity_scopes_to_the_namespace_unless_told_otherwise() {
        let term = |namespaces: Option<Vec<String>>, everywhere: bool| {
            let mut p = labelled("a", "web");
            if let Some(spec) = p.spec.as_mut() {
                spec.affinity = Some(Affinity {
                    pod_anti_affinity: Some(PodAntiAffinity {
                        required_during_scheduling_ignored_during_execution: Some(vec![
                            PodAffinityTerm {
                                label_selector: Some(app("web")),
                                namespaces,
                                namespace_selector: everywhere.then(LabelSelector::default),
                                topology_key: HOSTNAME.into(),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            anti_affinity(&p)
        };
        let own = term(None, false);
        assert_eq!(own.len(), 1);
        assert!(own[0].repels(&labelled("a", "web")));
        assert!(!own[0].repels(&labelled("b", "web")));
        assert!(!own[0].repels(&labelled("a", "db")));
        let listed = term(Some(vec!["b".into()]), false);
        assert!(listed[0].repels(&labelled("b", "web")));
        assert!(!listed[0].repels(&labelled("a", "web")));
        let all = term(None, true);
        assert!(all[0].repels(&labelled("z", "web")));
    }

    #[test]
    fn only_do_not_schedule_spread_is_a_demand() {
        let mut p = labelled("a", "web");
        if let Some(spec) = p.spec.as_mut() {
            spec.topology_spread_constraints = Some(vec![
                TopologySpreadConstraint {
                    label_selector: Some(app("web")),
                    max_skew: 1,
                    topology_key: "topology.kubernetes.io/zone".into(),
                    when_unsatisfiable: "DoNotSchedule".into(),
                    ..Default::default()
                },
                TopologySpreadConstraint {
                    label_selector: Some(app("web")),
                    max_skew: 1,
                    topology_key: HOSTNAME.into(),
                    when_unsatisfiable: "ScheduleAnyway".into(),
                    ..Default::default()
                },
            ]);
        }
        let demands = Demands::of(&p);
        assert_eq!(demands.spread.len(), 1);
        assert_eq!(demands.spread[0].key, "topology.kubernetes.io/zone");
        assert!(demands.spread[0].counts(&labelled("a", "web")));
        assert!(!demands.spread[0].counts(&labelled("b", "web")));
        assert!(!demands.is_empty());
        assert!(Demands::of(&labelled("a", "web")).is_empty());
    }
}
