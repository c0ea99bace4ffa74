//! The labels the cloud-node controller sets when it initializes a node.

use std::collections::BTreeMap;

use cloudprovider_api::InstanceMetadata;
use k8s_openapi::api::core::v1::Node;
use tracing::warn;

/// Instance type (GA) and its beta twin, zone, region: each value is written under both keys.
const TWIN_LABELS: [(&str, &str); 3] = [
    (
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/instance-type",
    ),
    (
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    ),
    (
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    ),
];

/// Whether `key` matches upstream's `(^|\.)(kubernetes|k8s)\.io/` anywhere: a cloud must not write labels in the
/// Kubernetes namespaces through `additional_labels`.
pub(crate) fn is_kubernetes_namespaced(key: &str) -> bool {
    ["kubernetes.io/", "k8s.io/"].iter().any(|suffix| {
        key.match_indices(suffix)
            .any(|(at, _)| at == 0 || key.as_bytes().get(at - 1) == Some(&b'.'))
    })
}

/// The labels to add to `node` from `md`: instance type, zone and region (non-empty values, with their beta
/// twins), then additional labels not in the Kubernetes namespaces and not already on the node.
pub(crate) fn init_labels(node: &Node, md: &InstanceMetadata) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for ((ga, beta), value) in TWIN_LABELS
        .iter()
        .zip([&md.instance_type, &md.zone, &md.region])
    {
        if !value.is_empty() {
            labels.insert((*ga).to_owned(), value.clone());
            labels.insert((*beta).to_owned(), value.clone());
        }
    }
    let existing = node.metadata.labels.as_ref();
    for (key, value) in &md.additional_labels {
        if is_kubernetes_namespaced(key) {
            warn!(label = %key, "discarding a cloud label in a Kubernetes namespace");
            continue;
        }
        if let Some(current) = existing.and_then(|l| l.get(key)) {
            if current != value {
                warn!(label = %key, "discarding a cloud label already present on the node");
            }
            continue;
        }
        labels.insert(key.clone(), value.clone());
    }
    labels
}

/// Upstream's `reconcileNodeLabels` on an initialized Node: the beta label is the source of truth, and its GA twin
/// is added when missing or set when it differs. Returns the labels to patch (empty: nothing to do); a Node without
/// the beta label is left alone, as upstream does.
pub(crate) fn reconcile_twins(node: &Node) -> BTreeMap<String, String> {
    let Some(labels) = node.metadata.labels.as_ref() else {
        return BTreeMap::new();
    };
    TWIN_LABELS
        .iter()
        .filter_map(|(ga, beta)| {
            let primary = labels.get(*beta)?;
            (labels.get(*ga) != Some(primary)).then(|| ((*ga).to_owned(), primary.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(pairs: &[(&str, &str)]) -> Node {
        let mut node = Node::default();
        node.metadata.labels = Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        node
    }

    #[test]
    fn twins_follow_the_beta_labels_as_upstream() {
        // GA missing: added; GA different: set to the beta value; GA equal: nothing.
        let node = labelled(&[
            ("failure-domain.beta.kubernetes.io/zone", "z1"),
            ("failure-domain.beta.kubernetes.io/region", "r1"),
            ("topology.kubernetes.io/region", "r-old"),
            ("beta.kubernetes.io/instance-type", "large"),
            ("node.kubernetes.io/instance-type", "large"),
        ]);
        let patch = reconcile_twins(&node);
        assert_eq!(
            patch,
            BTreeMap::from([
                ("topology.kubernetes.io/region".to_owned(), "r1".to_owned()),
                ("topology.kubernetes.io/zone".to_owned(), "z1".to_owned()),
            ])
        );
        // Without the beta label there is no source of truth: a lone GA label is left alone.
        let ga_only = labelled(&[("topology.kubernetes.io/zone", "z9")]);
        assert!(reconcile_twins(&ga_only).is_empty());
        assert!(reconcile_twins(&Node::default()).is_empty());
    }

    #[test]
    fn kubernetes_namespaces() {
        for key in [
            "kubernetes.io/hostname",
            "k8s.io/x",
            "node.kubernetes.io/foo",
            "a.b.k8s.io/c",
            "x/y.kubernetes.io/z",
        ] {
            assert!(is_kubernetes_namespaced(key), "{key}");
        }
        for key in [
            "example.com/kubernetes.io",
            "mykubernetes.io/a",
            "k8s.io",
            "kubernetes-io/a",
            "team",
        ] {
            assert!(!is_kubernetes_namespaced(key), "{key}");
        }
    }

    #[test]
    fn labels_from_metadata() {
        let md = InstanceMetadata {
            instance_type: "m1".into(),
            zone: "z1".into(),
            additional_labels: BTreeMap::from([
                ("team".to_owned(), "a".to_owned()),
                ("present".to_owned(), "cloud".to_owned()),
                ("node.kubernetes.io/evil".to_owned(), "x".to_owned()),
            ]),
            ..Default::default()
        };
        let mut node = Node::default();
        node.metadata.labels = Some(BTreeMap::from([("present".to_owned(), "node".to_owned())]));
        let got = init_labels(&node, &md);
        let want: BTreeMap<String, String> = [
            ("node.kubernetes.io/instance-type", "m1"),
            ("beta.kubernetes.io/instance-type", "m1"),
            ("topology.kubernetes.io/zone", "z1"),
            ("failure-domain.beta.kubernetes.io/zone", "z1"),
            ("team", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got, want);
    }
}
