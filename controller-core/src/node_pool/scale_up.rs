//! Scale-up decisions: which pending pods a pool's nodes would take (nodeSelector, required node affinity,
//! tolerations, resources against the node template), and how many new nodes they need (first-fit decreasing
//! onto the pool's existing and in-flight nodes first, then onto new ones).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};

use super::crd::{NodePoolSpec, POOL_LABEL};
use super::resources::{Resources, node_allocatable, pod_requests};

/// What a node of the pool looks like "as if just started".
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NodeShape {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) taints: Vec<Taint>,
    pub(crate) allocatable: Resources,
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
        Self {
            labels,
            taints,
            allocatable: node_allocatable(template),
        }
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
    if !shape.allocatable.fits(&pod_requests(pod)) {
        return Err(Misfit::Resources);
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

/// Where pending pods go: how many new nodes they need and which existing nodes they would use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// New nodes to launch.
    pub(crate) new_nodes: u32,
    /// Pods placed on existing (or in-flight) nodes.
    pub(crate) on_existing: usize,
    /// Pods placed on new nodes.
    pub(crate) on_new: usize,
    /// Pods that fit nowhere within the limit.
    pub(crate) unplaced: usize,
    /// For each existing node: whether a pending pod was placed on it.
    pub(crate) existing_used: Vec<bool>,
}

/// First-fit decreasing: the largest pods first, each on the first node with room, existing nodes (free capacity
/// given in `existing`) before new ones of `template`, at most `max_new` new ones. Pods already known to fit the
/// template's shape are expected; a pod larger than the template is left unplaced.
pub(crate) fn plan(
    requests: &[Resources],
    existing: &[Resources],
    template: &Resources,
    max_new: u32,
) -> Plan {
    let mut order: Vec<&Resources> = requests.iter().collect();
    order.sort_by_key(|r| std::cmp::Reverse((r.get("cpu"), r.get("memory"))));
    let mut bins: Vec<Resources> = existing.to_vec();
    let mut result = Plan {
        existing_used: vec![false; existing.len()],
        ..Plan::default()
    };
    for request in order {
        if let Some(i) = bins.iter().position(|free| free.fits(request)) {
            bins[i].sub(request);
            if i < existing.len() {
                result.existing_used[i] = true;
                result.on_existing += 1;
            } else {
                result.on_new += 1;
            }
        } else if result.new_nodes < max_new && template.fits(request) {
            let mut free = template.clone();
            free.sub(request);
            bins.push(free);
            result.new_nodes += 1;
            result.on_new += 1;
        } else {
            result.unplaced += 1;
        }
    }
    result
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

    fn cpu_requests(cpus: &[&str]) -> Vec<Resources> {
        cpus.iter().map(|c| pod_requests(&pod(c, &[]))).collect()
    }

    #[test]
    fn twenty_half_cpu_pods_need_five_two_cpu_nodes() {
        let template = res("2", "4Gi", "110");
        let p = plan(&cpu_requests(&["500m"; 20]), &[], &template, 100);
        assert_eq!((p.new_nodes, p.on_new, p.unplaced), (5, 20, 0));
    }

    #[test]
    fn in_flight_capacity_is_used_before_new_nodes() {
        let template = res("2", "4Gi", "110");
        // Two nodes already launching for these pods: nothing new.
        let p = plan(
            &cpu_requests(&["500m"; 8]),
            &[template.clone(), template.clone()],
            &template,
            100,
        );
        assert_eq!((p.new_nodes, p.on_existing), (0, 8));
        assert_eq!(p.existing_used, vec![true, true]);
        // Ten pods, two nodes in flight: one more.
        let p = plan(
            &cpu_requests(&["500m"; 10]),
            &[template.clone(), template.clone()],
            &template,
            100,
        );
        assert_eq!(p.new_nodes, 1);
    }

    #[test]
    fn first_fit_decreasing_packs_mixed_sizes() {
        let template = res("2", "4Gi", "110");
        // 1.5 + 0.5, 1.5 + 0.5, 1 + 1: three nodes (first-fit in arrival order would need four).
        let p = plan(
            &cpu_requests(&["500m", "1", "1500m", "500m", "1", "1500m"]),
            &[],
            &template,
            100,
        );
        assert_eq!(p.new_nodes, 3);
    }

    #[test]
    fn limits_and_oversized_pods_leave_pods_unplaced() {
        let template = res("2", "4Gi", "110");
        let p = plan(&cpu_requests(&["1"; 6]), &[], &template, 2);
        assert_eq!((p.new_nodes, p.on_new, p.unplaced), (2, 4, 2));
        let p = plan(&cpu_requests(&["3"]), &[], &template, 5);
        assert_eq!((p.new_nodes, p.unplaced), (0, 1));
        // The pods resource bounds a node too.
        let tiny = res("100", "100Gi", "3");
        let p = plan(&cpu_requests(&["1"; 7]), &[], &tiny, 10);
        assert_eq!(p.new_nodes, 3);
    }
}
