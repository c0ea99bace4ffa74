//! Resource arithmetic for the fit check: Kubernetes quantities in thousandths, pod requests, node allocatable.

use std::collections::BTreeMap;

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

/// Parses a Kubernetes quantity (`"2"`, `"500m"`, `"1.5Gi"`, `"1e3"`) into thousandths, rounding up. `None` for
/// anything unparsable.
pub(crate) fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // value = mantissa / 10^frac_len
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    let frac_len = u32::try_from(frac_part.len()).ok()?;
    // The suffix as (numerator, power of ten): value·1000 = mantissa·num·10^(pow10+3) / 10^frac_len.
    let (num, pow10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        exp if exp.starts_with(['e', 'E']) => (1, exp[1..].parse().ok()?),
        _ => return None,
    };
    let exponent = pow10 + 3 - i32::try_from(frac_len).ok()?;
    let scaled = mantissa.checked_mul(num)?;
    let value = if exponent >= 0 {
        scaled.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?
    } else {
        let div = 10i128.checked_pow(exponent.unsigned_abs())?;
        // Round up, as the API does for sub-milli amounts.
        (scaled + div - 1) / div
    };
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    #[test]
    fn quantities() {
        for (q, want) in [
            ("2", 2000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5Gi", 1536 * 1024 * 1024 * 1000),
            ("4Gi", 4 * 1024 * 1024 * 1024 * 1000),
            ("128Mi", 128 * 1024 * 1024 * 1000),
            ("1k", 1_000_000),
            ("1e3", 1_000_000),
            ("110", 110_000),
            ("1n", 1),
        ] {
            assert_eq!(parse_quantity(q), Some(want), "{q}");
        }
        for bad in ["", "m", "1x", "1.2.3", "Gi"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

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
