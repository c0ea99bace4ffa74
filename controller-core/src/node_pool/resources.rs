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

    pub(crate) fn add(&mut self, other: &Resources) {
        for (name, v) in &other.0 {
            let e = self.0.entry(name.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    pub(crate) fn sub(&mut self, other: &Resources) {
        for (name, v) in &other.0 {
            let e = self.0.entry(name.clone()).or_insert(0);
            *e = e.saturating_sub(*v);
        }
    }

    /// `self + other`.
    pub(crate) fn plus(&self, other: &Resources) -> Resources {
        let mut sum = self.clone();
        sum.add(other);
        sum
    }

    /// `self - used`, over the resources `self` names only (a limit minus usage stays a limit).
    pub(crate) fn left_after(&self, used: &Resources) -> Resources {
        Self(
            self.0
                .iter()
                .map(|(name, v)| (name.clone(), v.saturating_sub(used.get(name))))
                .collect(),
        )
    }

    /// Whether every resource `limits` names stays at or below its limit (resources it does not name are free).
    pub(crate) fn within(&self, limits: &Resources) -> bool {
        limits
            .0
            .iter()
            .all(|(name, limit)| self.get(name) <= *limit)
    }

    /// As Kubernetes quantities: whole units where exact, else thousandths (`1500m`); memory-like amounts in
    /// `Ki`/`Mi`/`Gi` where exact.
    pub(crate) fn to_quantities(&self) -> BTreeMap<String, Quantity> {
        self.0
            .iter()
            .map(|(name, v)| (name.clone(), Quantity(format_amount(name, *v))))
            .collect()
    }

    /// Per resource, the larger of `self` and `other`.
    pub(crate) fn max(&mut self, other: &Resources) {
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

fn format_amount(name: &str, thousandths: i128) -> String {
    if thousandths % 1000 != 0 {
        return format!("{thousandths}m");
    }
    let units = thousandths / 1000;
    if name != "cpu" && name != "pods" {
        for (suffix, factor) in [("Gi", 1_i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if units != 0 && units % factor == 0 {
                return format!("{}{suffix}", units / factor);
            }
        }
    }
    units.to_string()
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
    fn amounts_print_as_kubernetes_quantities() {
        let r = Resources::from_quantities(Some(&BTreeMap::from([
            ("cpu".to_owned(), Quantity("1500m".into())),
            ("memory".to_owned(), Quantity("8Gi".into())),
            ("pods".to_owned(), Quantity("110".into())),
            ("ephemeral-storage".to_owned(), Quantity("1000".into())),
        ])));
        let q = r.to_quantities();
        let text = |k: &str| q.get(k).map(|q| q.0.clone());
        assert_eq!(text("cpu").as_deref(), Some("1500m"));
        assert_eq!(text("memory").as_deref(), Some("8Gi"));
        assert_eq!(text("pods").as_deref(), Some("110"));
        assert_eq!(text("ephemeral-storage").as_deref(), Some("1000"));
        let cpu = |v: &str| {
            Resources::from_quantities(Some(&BTreeMap::from([(
                "cpu".to_owned(),
                Quantity(v.into()),
            )])))
        };
        assert!(r.within(&cpu("2")), "memory and pods are not limited");
        assert_eq!(
            cpu("2").left_after(&r),
            cpu("500m"),
            "only the limited resources"
        );
        assert!(!r.within(&cpu("1")));
        assert!(r.plus(&r).within(&cpu("3")));
        assert!(!r.plus(&r).within(&cpu("2999m")));
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
