//! Scale-up decisions, per pod: whether the scheduler gave up on it, and whether a node of one of the pool's
//! shapes would take it (nodeSelector, required node affinity, tolerations, resources against the node template).
//! Where the pending pods go and what to launch for them is [`packing`](super::packing).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};

use super::crd::{NodePoolSpec, POOL_LABEL};
use super::resources::{Resources, node_allocatable, pod_requests};

/// What a node of the pool looks like "as if just started".
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NodeShape {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) taints: Vec<Taint>,
    /// The pool's startup taints: on new nodes until something else removes them; pods need not tolerate them.
    pub(crate) startup: Vec<Taint>,
    pub(crate) allocatable: Resources,
    /// What counts against the pool's `limits` (the template's capacity, else its allocatable).
    pub(crate) capacity: Resources,
}

impl NodeShape {
    /// The node group's template node with the pool's labels and taints added.
    pub(crate) fn for_pool(template: &Node, spec: &NodePoolSpec, pool: &str) -> Self {
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        labels.extend(spec.labels.clone());
        labels.insert(POOL_LABEL.to_owned(), pool.to_owned());
        let mut taints: Vec<Taint> = template
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        for t in &spec.taints {
            if !taints
                .iter()
                .any(|have| have.key == t.key && have.effect == t.effect)
            {
                taints.push(t.clone());
            }
        }
        let capacity =
            Resources::from_quantities(template.status.as_ref().and_then(|s| s.capacity.as_ref()));
        let allocatable = node_allocatable(template);
        Self {
            labels,
            taints,
            startup: spec.startup_taints.clone(),
            capacity: if capacity == Resources::default() {
                allocatable.clone()
            } else {
                capacity
            },
            allocatable,
        }
    }

    /// The taints a Node of this shape may carry and still take the pool's pods: the shape's and the startup ones.
    pub(crate) fn expected_taints(&self) -> Vec<Taint> {
        self.taints.iter().chain(&self.startup).cloned().collect()
    }
}

/// Why a pod would not fit a pool's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Misfit {
    NodeSelector,
    NodeAffinity,
    Taint(String),
    Resources,
}

/// Whether the scheduler gave up on `pod` for now: not bound, not being deleted, `PodScheduled=False` with reason
/// `Unschedulable`.
pub(crate) fn is_unschedulable(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some()
        || pod
            .spec
            .as_ref()
            .is_some_and(|s| s.node_name.as_deref().is_some_and(|n| !n.is_empty()))
    {
        return false;
    }
    let status = pod.status.as_ref();
    if status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p != "Pending")
    {
        return false;
    }
    status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}

/// Whether `pod` would be scheduled on an empty node of `shape`.
pub(crate) fn fits_shape(pod: &Pod, shape: &NodeShape) -> Result<(), Misfit> {
    fits_labels(pod, shape)?;
    if !shape.allocatable.fits(&pod_requests(pod)) {
        return Err(Misfit::Resources);
    }
    Ok(())
}

/// [`fits_shape`] without the resources: the pod's node selection and tolerations allow the shape.
pub(crate) fn fits_labels(pod: &Pod, shape: &NodeShape) -> Result<(), Misfit> {
    let Some(spec) = pod.spec.as_ref() else {
        return Err(Misfit::Resources);
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| shape.labels.get(k) == Some(v));
    if !selector_ok {
        return Err(Misfit::NodeSelector);
    }
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice());
    if let Some(terms) = terms
        && !terms.is_empty()
    {
        // Terms are ORed, expressions within a term ANDed. A term with matchFields names a node we cannot know.
        let any = terms.iter().any(|t| {
            t.match_fields.as_ref().is_none_or(|f| f.is_empty())
                && t.match_expressions
                    .iter()
                    .flatten()
                    .all(|e| matches_requirement(&shape.labels, e))
        });
        if !any {
            return Err(Misfit::NodeAffinity);
        }
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if let Some(t) = shape
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Err(Misfit::Taint(t.key.clone()));
    }
    Ok(())
}

fn matches_requirement(labels: &BTreeMap<String, String>, r: &NodeSelectorRequirement) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    let as_int = |v: &str| v.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(|v| as_int(v)),
                values.first().and_then(|v| as_int(v)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// The scheduler's toleration matching.
fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => tol
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        "Equal" => {
            tol.key.as_deref() == Some(taint.key.as_str())
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, Container, NodeAffinity, NodeSelector, NodeSelectorTerm, PodCondition, PodSpec,
        PodStatus, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn res(cpu: &str, memory: &str, pods: &str) -> Resources {
        Resources::from_quantities(Some(&BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(memory.into())),
            ("pods".to_owned(), Quantity(pods.into())),
        ])))
    }

    fn pod(cpu: &str, selector: &[(&str, &str)]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                node_selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn shape() -> NodeShape {
        NodeShape {
            labels: BTreeMap::from([("pool".to_owned(), "a".to_owned())]),
            taints: vec![Taint {
                key: "dedicated".into(),
                value: Some("batch".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
            allocatable: res("2", "4Gi", "110"),
            ..NodeShape::default()
        }
    }

    fn tolerating(mut p: Pod, key: &str, value: &str) -> Pod {
        if let Some(spec) = p.spec.as_mut() {
            spec.tolerations = Some(vec![Toleration {
                key: Some(key.into()),
                value: Some(value.into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]);
        }
        p
    }

    #[test]
    fn unschedulable_needs_the_scheduler_condition() {
        let mut p = pod("1", &[]);
        assert!(is_unschedulable(&p));
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some("n".into());
        }
        assert!(!is_unschedulable(&p));
        let mut fresh = pod("1", &[]);
        fresh.status = None;
        assert!(!is_unschedulable(&fresh));
    }

    #[test]
    fn fit_checks_selector_taints_and_resources() {
        let s = shape();
        assert_eq!(
            fits_shape(&pod("1", &[("pool", "a")]), &s),
            Err(Misfit::Taint("dedicated".into()))
        );
        assert_eq!(
            fits_shape(
                &tolerating(pod("1", &[("pool", "a")]), "dedicated", "batch"),
                &s
            ),
            Ok(())
        );
        assert_eq!(
            fits_shape(
                &tolerating(pod("1", &[("pool", "b")]), "dedicated", "batch"),
                &s
            ),
            Err(Misfit::NodeSelector)
        );
        assert_eq!(
            fits_shape(&tolerating(pod("1", &[]), "dedicated", "other"), &s),
            Err(Misfit::Taint("dedicated".into()))
        );
        assert_eq!(
            fits_shape(&tolerating(pod("3", &[]), "dedicated", "batch"), &s),
            Err(Misfit::Resources)
        );
        let exists = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        let mut p = pod("1", &[]);
        if let Some(spec) = p.spec.as_mut() {
            spec.tolerations = Some(vec![exists]);
        }
        assert_eq!(fits_shape(&p, &s), Ok(()));
    }

    #[test]
    fn required_node_affinity_is_honoured() {
        let mut s = shape();
        s.taints.clear();
        let with_affinity = |op: &str, values: &[&str]| {
            let mut p = pod("1", &[]);
            if let Some(spec) = p.spec.as_mut() {
                spec.affinity = Some(Affinity {
                    node_affinity: Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                            node_selector_terms: vec![NodeSelectorTerm {
                                match_expressions: Some(vec![NodeSelectorRequirement {
                                    key: "pool".into(),
                                    operator: op.into(),
                                    values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
                                }]),
                                match_fields: None,
                            }],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            p
        };
        assert_eq!(fits_shape(&with_affinity("In", &["a", "b"]), &s), Ok(()));
        assert_eq!(
            fits_shape(&with_affinity("NotIn", &["a"]), &s),
            Err(Misfit::NodeAffinity)
        );
        assert_eq!(fits_shape(&with_affinity("Exists", &[]), &s), Ok(()));
        assert_eq!(
            fits_shape(&with_affinity("DoesNotExist", &[]), &s),
            Err(Misfit::NodeAffinity)
        );
    }
}
