//! Resource arithmetic for the fit check: Kubernetes quantities in thousandths, pod requests, node allocatable.

use std::collections::BTreeMap;

use cloudprovider_api::parse_quantity;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Amounts per resource name (`cpu`, `memory`, `pods`, extended resources) in thousandths of the unit, so
/// `500m` CPU is 500 and `1Gi` memory is 1024³·1000.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Resources(BTreeMap<String, i128>);

impl Resources {
    pub(crate) fn from_quantities(map: Option<&BTreeMap<String, Quantity>>) -> Self {
        Self(
            map.into_iter()
                .flatten()
                .filter_map(|(name, q)| Some((name.clone(), parse_quantity(&q.0)?)))
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> i128 {
        self.0.get(name).copied().unwrap_or(0)
    }

    fn add(&mut self, other: &Resources) {
        for (name, v) in &other.0 {
            *self.0.entry(name.clone()).or_insert(0) += v;
        }
    }

    pub(crate) fn sub(&mut self, other: &Resources) {
        for (name, v) in &other.0 {
            *self.0.entry(name.clone()).or_insert(0) -= v;
        }
    }

    fn max(&mut self, other: &Resources) {
        for (name, v) in &other.0 {
            let e = self.0.entry(name.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    /// Whether `request` fits in `self` (what is free). A resource the node does not offer fits only a request
    /// of zero.
    pub(crate) fn fits(&self, request: &Resources) -> bool {
        request
            .0
            .iter()
            .all(|(name, v)| *v <= 0 || self.get(name) >= *v)
    }
}

/// What a pod asks the scheduler for: the larger of its containers' sum and its largest init container, plus
/// overhead, plus one `pods` slot.
pub(crate) fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c));
    }
    for c in spec.init_containers.iter().flatten() {
        let init = container_requests(c);
        // Sidecars (restartPolicy Always) keep running next to the app containers.
        if c.restart_policy.as_deref() == Some("Always") {
            sum.add(&init);
        } else {
            sum.max(&init);
        }
    }
    sum.add(&Resources::from_quantities(spec.overhead.as_ref()));
    sum.0.insert("pods".to_owned(), 1000);
    sum
}

fn container_requests(c: &Container) -> Resources {
    let Some(res) = c.resources.as_ref() else {
        return Resources::default();
    };
    // The API defaults requests to limits; do the same for objects that never went through defaulting.
    let mut r = Resources::from_quantities(res.limits.as_ref());
    for (name, v) in Resources::from_quantities(res.requests.as_ref()).0 {
        r.0.insert(name, v);
    }
    r
}

/// The node's allocatable resources (capacity when allocatable is unset).
pub(crate) fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    let cap = status.and_then(|s| s.capacity.as_ref());
    Resources::from_quantities(alloc.or(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn container(cpu: &str, memory: &str) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity(cpu.into())),
                    ("memory".to_owned(), Quantity(memory.into())),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_take_the_larger_of_app_and_init_containers() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("250m", "64Mi"), container("250m", "64Mi")],
                init_containers: Some(vec![container("1", "16Mi")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&pod);
        assert_eq!(r.get("cpu"), 1000);
        assert_eq!(r.get("memory"), 128 * 1024 * 1024 * 1000);
        assert_eq!(r.get("pods"), 1000);
    }

    #[test]
    fn fits_compares_every_requested_resource() {
        let mut free = Resources::default();
        free.0.insert("cpu".into(), 1000);
        let mut req = Resources::default();
        req.0.insert("cpu".into(), 1000);
        assert!(free.fits(&req));
        req.0.insert("nvidia.com/gpu".into(), 1000);
        assert!(!free.fits(&req));
    }
}
