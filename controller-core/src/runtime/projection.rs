//! What the shared caches keep of each object: a whitelist per kind, defined once here, applied to every object
//! before it is cached.
//!
//! A cache holds every Node (or Pod) of the cluster for as long as the process lives, so what it keeps decides the
//! controller's memory. Each projection keeps exactly the fields some controller of this crate (or a provider, for
//! the fields named below) reads, and nothing else: a field added later to the API, a kubelet's image list, a CNI
//! plugin's annotations or a pod's volumes never reach the cache. The lists:
//!
//! | kind | kept |
//! |---|---|
//! | Node | name, UID, resourceVersion, creation and deletion timestamps, labels, the annotations in [`NODE_ANNOTATIONS`], `spec.providerID`, `spec.podCIDR(s)`, `spec.taints`, `spec.unschedulable`, `status.addresses`, `status.capacity`, `status.allocatable`, `status.nodeInfo.systemUUID`, the conditions in [`NODE_CONDITIONS`] (whole) |
//! | Pod | name, namespace, UID, resourceVersion, creation and deletion timestamps, labels, owner references, the annotations in [`POD_ANNOTATIONS`], `spec.nodeName`, `spec.nodeSelector`, `spec.affinity`, `spec.tolerations`, `spec.topologySpreadConstraints`, `spec.priority`, `spec.overhead`, each container's and init container's name, resources, restart policy and host ports, `status.phase`, the `PodScheduled` condition |
//!
//! Everything a controller writes back is a patch of the fields it owns (a merge patch of labels or taints, a
//! strategic-merge patch of one condition), never an update of a cached object, so a field left out of the cache is
//! never lost in the cluster. Providers get cached Nodes too (`InstancesV2`, load-balancer hosts, routes): one that
//! needs a field not listed here reads the Node from the API. The tests
//! `projected_nodes_decide_like_whole_ones` and `projected_pods_decide_like_whole_ones` (this module) run every
//! controller's decisions on whole kubelet-style objects and on their projections and fail when a decision reads a
//! field that is left out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod,
    PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The Node annotations kept: the kubelet's `--node-ip` (read when choosing addresses), the do-not-disrupt
/// markers node pools honour (ours and Karpenter's) and the node pool's template hash (drift).
pub const NODE_ANNOTATIONS: &[&str] = &[
    "alpha.kubernetes.io/provided-node-ip",
    "kube-cloud-rs.dev/do-not-disrupt",
    "karpenter.sh/do-not-disrupt",
    "kube-cloud-rs.dev/nodepool-hash",
];

/// The Node conditions kept, whole: `Ready` (node lifecycle, node pools) and `NetworkUnavailable` (routes).
pub const NODE_CONDITIONS: &[&str] = &["Ready", "NetworkUnavailable"];

/// The Pod annotations kept: the mirror-pod marker (static pods are not a node pool's to place) and the
/// do-not-disrupt markers (a node running such a pod is not consolidated).
pub const POD_ANNOTATIONS: &[&str] = &[
    "kubernetes.io/config.mirror",
    "kube-cloud-rs.dev/do-not-disrupt",
    "karpenter.sh/do-not-disrupt",
];

/// The Pod conditions kept: `PodScheduled` (whether the scheduler gave up on a pod).
pub const POD_CONDITIONS: &[&str] = &["PodScheduled"];

/// What the Node cache keeps of `node` (see the [module docs](self)).
pub fn project_node(node: &mut Node) {
    let metadata = project_meta(&mut node.metadata, NODE_ANNOTATIONS, false);
    let spec = node.spec.take().map(|s| NodeSpec {
        provider_id: s.provider_id,
        pod_cidr: s.pod_cidr,
        pod_cidrs: s.pod_cidrs,
        taints: s.taints,
        unschedulable: s.unschedulable,
        ..NodeSpec::default()
    });
    let status = node.status.take().map(|s| NodeStatus {
        addresses: s.addresses,
        capacity: s.capacity,
        allocatable: s.allocatable,
        conditions: keep_conditions(s.conditions, NODE_CONDITIONS, |c: &NodeCondition| &c.type_),
        node_info: s.node_info.map(|info| NodeSystemInfo {
            system_uuid: info.system_uuid,
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    });
    *node = Node {
        metadata,
        spec,
        status,
    };
}

/// What the Pod cache keeps of `pod` (see the [module docs](self)).
pub fn project_pod(pod: &mut Pod) {
    let metadata = project_meta(&mut pod.metadata, POD_ANNOTATIONS, true);
    let spec = pod.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        node_selector: s.node_selector,
        affinity: s.affinity,
        tolerations: s.tolerations,
        topology_spread_constraints: s.topology_spread_constraints,
        priority: s.priority,
        overhead: s.overhead,
        containers: s.containers.into_iter().map(project_container).collect(),
        init_containers: s
            .init_containers
            .map(|c| c.into_iter().map(project_container).collect()),
        ..PodSpec::default()
    });
    let status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        conditions: keep_conditions(s.conditions, POD_CONDITIONS, |c: &PodCondition| &c.type_),
        ..PodStatus::default()
    });
    *pod = Pod {
        metadata,
        spec,
        status,
    };
}

/// Identity, labels and the named annotations; owner references where asked.
fn project_meta(meta: &mut ObjectMeta, annotations: &[&str], owners: bool) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        creation_timestamp: meta.creation_timestamp.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        labels: meta.labels.take(),
        annotations: meta
            .annotations
            .take()
            .map(|all| keep_keys(all, annotations))
            .filter(|kept| !kept.is_empty()),
        owner_references: if owners {
            meta.owner_references.take()
        } else {
            None
        },
        ..ObjectMeta::default()
    }
}

/// A container as a node pool sizes it: requests and limits, restart policy (sidecars), host ports.
fn project_container(c: Container) -> Container {
    let ports: Vec<ContainerPort> = c
        .ports
        .into_iter()
        .flatten()
        .filter(|p| p.host_port.is_some())
        .collect();
    Container {
        name: c.name,
        resources: c.resources,
        restart_policy: c.restart_policy,
        ports: (!ports.is_empty()).then_some(ports),
        ..Container::default()
    }
}

fn keep_keys(mut all: BTreeMap<String, String>, keep: &[&str]) -> BTreeMap<String, String> {
    all.retain(|k, _| keep.contains(&k.as_str()));
    all
}

fn keep_conditions<C>(
    conditions: Option<Vec<C>>,
    keep: &[&str],
    type_of: impl Fn(&C) -> &String,
) -> Option<Vec<C>> {
    let mut conditions = conditions?;
    conditions.retain(|c| keep.contains(&type_of(c).as_str()));
    (!conditions.is_empty()).then_some(conditions)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerImage, NodeAddress};

    use super::*;

    #[test]
    fn nodes_keep_what_controllers_read_and_nothing_else() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "n1", "uid": "u1", "resourceVersion": "7",
                "labels": {"a": "b"},
                "annotations": {
                    "alpha.kubernetes.io/provided-node-ip": "10.0.0.1",
                    "flannel.alpha.coreos.com/backend-data": "{\"VNI\":1}",
                },
                "managedFields": [{"manager": "kubelet"}],
                "finalizers": ["x"],
            },
            "spec": {"providerID": "fake://n1", "podCIDR": "10.1.0.0/24", "configSource": {}},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "conditions": [
                    {"type": "Ready", "status": "True", "message": "kubelet is posting ready status"},
                    {"type": "MemoryPressure", "status": "False"},
                ],
                "nodeInfo": {"systemUUID": "abc", "kubeletVersion": "v1.36.3", "machineID": "m",
                    "bootID": "b", "kernelVersion": "k", "osImage": "o", "containerRuntimeVersion": "c",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            },
        }))
        .unwrap_or_default();
        node.status.get_or_insert_default().images = Some(vec![ContainerImage::default(); 3]);
        project_node(&mut node);
        let meta = &node.metadata;
        assert_eq!(meta.name.as_deref(), Some("n1"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(
            meta.annotations
                .as_ref()
                .map(|a| a.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["alpha.kubernetes.io/provided-node-ip".to_owned()])
        );
        assert!(meta.managed_fields.is_none() && meta.finalizers.is_none());
        let spec = node.spec.clone().unwrap_or_default();
        assert_eq!(spec.provider_id.as_deref(), Some("fake://n1"));
        assert!(spec.config_source.is_none());
        let status = node.status.clone().unwrap_or_default();
        assert!(status.images.is_none());
        assert_eq!(
            status.addresses,
            Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "10.0.0.1".into()
            }])
        );
        let conditions = status.conditions.unwrap_or_default();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let info = status.node_info.unwrap_or_default();
        assert_eq!(info.system_uuid, "abc");
        assert!(info.kubelet_version.is_empty());
    }

    #[test]
    fn pods_keep_scheduling_fields_and_drop_the_rest() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": {"a": "b"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u"}]},
            "spec": {
                "nodeSelector": {"pool": "a"},
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep"],
                    "env": [{"name": "X", "value": "1"}],
                    "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}],
                    "resources": {"requests": {"cpu": "1"}}}],
                "volumes": [{"name": "v", "emptyDir": {}}],
            },
            "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
                               {"type": "Initialized", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0}]},
        }))
        .unwrap_or_default();
        project_pod(&mut pod);
        assert!(pod.metadata.annotations.is_none());
        assert_eq!(
            pod.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let spec = pod.spec.clone().unwrap_or_default();
        assert!(spec.volumes.is_none());
        let c = &spec.containers[0];
        assert!(c.image.is_none() && c.command.is_none() && c.env.is_none());
        assert_eq!(c.ports.as_ref().map(Vec::len), Some(1));
        assert!(c.resources.is_some());
        let status = pod.status.clone().unwrap_or_default();
        assert!(status.container_statuses.is_none());
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
    }
}

/// The projection test: every controller's decisions on whole kubelet-style objects and on their projections
/// must agree. A controller that starts reading a field the projection drops makes its decision differ on one of
/// these fixtures (extend them with the new field when adding a read, and the projection with the field).
#[cfg(test)]
mod decisions {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use super::{project_node, project_pod};

    /// What every controller decides from one Node.
    fn node_decisions(node: &Node) -> Vec<(&'static str, String)> {
        vec![
            ("cloud-node", crate::cloud_node::node_decisions(node)),
            (
                "node-lifecycle",
                crate::node_lifecycle::node_decisions(node),
            ),
            ("route", crate::route::node_decisions(node)),
            ("service", crate::service::node_decisions(node)),
            ("node-pool", crate::node_pool::node_decisions(node)),
        ]
    }

    /// A Node as a kubelet, kubeadm, a CNI plugin and the CCM leave it: every field set.
    fn kubelet_node(overrides: Value) -> Node {
        let mut base = json!({
            "metadata": {
                "name": "worker-1", "uid": "0b5c", "resourceVersion": "4711", "generation": 3,
                "creationTimestamp": "2026-11-01T10:00:00Z",
                "labels": {
                    "kubernetes.io/hostname": "worker-1", "kubernetes.io/os": "linux",
                    "beta.kubernetes.io/instance-type": "m5.large", "node.kubernetes.io/instance-type": "m5.large",
                    "topology.kubernetes.io/zone": "z1", "failure-domain.beta.kubernetes.io/zone": "z1",
                    "kube-cloud-rs.io/node-pool": "pool", "team": "ml",
                },
                "annotations": {
                    "alpha.kubernetes.io/provided-node-ip": "10.0.0.1",
                    "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    "flannel.alpha.coreos.com/public-ip": "10.0.0.9",
                },
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "Foo", "name": "f", "uid": "u"}],
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}],
            },
            "spec": {
                "providerID": "fake://worker-1", "podCIDR": "10.244.1.0/24",
                "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"],
                "taints": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}],
                "externalID": "worker-1",
            },
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "worker-1"}],
                "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110", "ephemeral-storage": "90Gi"},
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                    {"type": "DiskPressure", "status": "True", "reason": "KubeletHasDiskPressure"},
                    {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                     "lastHeartbeatTime": "2026-11-01T10:05:00Z", "lastTransitionTime": "2026-11-01T10:01:00Z"},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": "m", "systemUUID": "ec2-uuid", "bootID": "b", "kernelVersion": "6.1",
                    "osImage": "Debian", "containerRuntimeVersion": "containerd://2.0", "kubeletVersion": "v1.36.3",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
                "images": [{"names": ["registry.k8s.io/pause:3.10"], "sizeBytes": 320000}],
                "volumesInUse": ["kubernetes.io/csi/ebs^vol-1"],
                "volumesAttached": [{"name": "kubernetes.io/csi/ebs^vol-1", "devicePath": ""}],
            },
        });
        merge(&mut base, overrides);
        serde_json::from_value(base).unwrap_or_default()
    }

    /// JSON merge patch semantics (RFC 7386), to derive fixtures from the base.
    fn merge(target: &mut Value, patch: Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p,
        }
    }

    #[test]
    fn projected_nodes_decide_like_whole_ones() {
        let uninitialized = json!({"key": "node.cloudprovider.kubernetes.io/uninitialized", "value": "true", "effect": "NoSchedule"});
        let shutdown =
            json!({"key": "node.cloudprovider.kubernetes.io/shutdown", "effect": "NoSchedule"});
        let to_be_deleted =
            json!({"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"});
        let fixtures = [
            json!({}),
            json!({"spec": {"taints": [uninitialized]}, "metadata": {"annotations": {"alpha.kubernetes.io/provided-node-ip": "10.0.0.7"}}}),
            json!({"spec": {"taints": [shutdown], "unschedulable": true}}),
            json!({"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}),
            json!({"spec": {"taints": [to_be_deleted], "podCIDRs": null}}),
            json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": "true",
                "kube-cloud-rs.io/initialized": "true"}, "deletionTimestamp": "2026-11-02T00:00:00Z"}}),
            json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
                {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated", "lastTransitionTime": "2026-11-01T10:00:00Z"},
            ]}}),
            json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated"}],
                "addresses": [{"type": "ExternalIP", "address": "203.0.113.5"}]}}),
            json!({"spec": {"providerID": null, "taints": null}, "status": {"allocatable": null, "addresses": null}}),
        ];
        for (i, overrides) in fixtures.into_iter().enumerate() {
            let whole = kubelet_node(overrides);
            let mut projected = whole.clone();
            project_node(&mut projected);
            for ((controller, want), (_, got)) in node_decisions(&whole)
                .into_iter()
                .zip(node_decisions(&projected))
            {
                assert_eq!(
                    got, want,
                    "fixture {i}: {controller} decides differently on the projected Node: it reads a field the \
                     projection drops (runtime/projection.rs)"
                );
            }
        }
    }

    /// A Pod as a Deployment, the scheduler and a kubelet leave it.
    fn pod(overrides: Value) -> Pod {
        let mut base = json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "p1", "resourceVersion": "9",
                "creationTimestamp": "2026-11-01T10:00:00Z", "generateName": "web-",
                "labels": {"app": "web", "pod-template-hash": "abc"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-01T09:00:00Z"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "r", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
            },
            "spec": {
                "nodeSelector": {"pool": "a"},
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]}}},
                "containers": [{"name": "app", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
                    "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "livenessProbe": {"httpGet": {"path": "/", "port": 80}}}],
                "initContainers": [
                    {"name": "init", "image": "busybox", "resources": {"requests": {"cpu": "2"}}},
                    {"name": "sidecar", "image": "envoy", "restartPolicy": "Always", "resources": {"requests": {"memory": "64Mi"}}},
                ],
                "overhead": {"cpu": "100m"},
                "volumes": [{"name": "data", "emptyDir": {}}],
                "serviceAccountName": "web", "priority": 0, "schedulerName": "default-scheduler",
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            },
            "status": {
                "phase": "Pending", "qosClass": "Burstable",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"},
                    {"type": "PodReadyToStartContainers", "status": "False"},
                ],
                "containerStatuses": [{"name": "app", "image": "nginx:1.27", "imageID": "", "ready": false, "restartCount": 0}],
            },
        });
        merge(&mut base, overrides);
        serde_json::from_value(base).unwrap_or_default()
    }

    #[test]
    fn projected_pods_decide_like_whole_ones() {
        let fixtures = [
            json!({}),
            json!({"spec": {"nodeName": "worker-1"}, "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}]}}),
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "d", "controller": true}]},
                "spec": {"nodeName": "worker-1"}}),
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}, "spec": {"nodeName": "worker-1"}}),
            json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}], "nodeSelector": null, "affinity": null}}),
            json!({"spec": {"nodeName": "worker-1"}, "status": {"phase": "Succeeded"}}),
            json!({"metadata": {"annotations": {"kube-cloud-rs.dev/do-not-disrupt": "true"}}, "spec": {"nodeName": "worker-1"}}),
            json!({"metadata": {"deletionTimestamp": "2026-11-02T00:00:00Z"}}),
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["a"]}]}]}}}}}),
        ];
        for (i, overrides) in fixtures.into_iter().enumerate() {
            let whole = pod(overrides);
            let mut projected = whole.clone();
            project_pod(&mut projected);
            assert_eq!(
                crate::node_pool::pod_decisions(&projected),
                crate::node_pool::pod_decisions(&whole),
                "fixture {i}: node-pool decides differently on the projected Pod: it reads a field the projection \
                 drops (runtime/projection.rs)"
            );
        }
    }

    #[test]
    fn the_decisions_see_the_fixtures_differ() {
        // Guards the guard: if every fixture gave the same decisions, the tests above could not fail.
        let a = node_decisions(&kubelet_node(json!({})));
        let b = node_decisions(&kubelet_node(
            json!({"spec": {"taints": null}, "status": {"conditions": null}}),
        ));
        assert!(
            a.iter().zip(&b).filter(|(x, y)| x.1 != y.1).count() >= 3,
            "{a:?}\n{b:?}"
        );
        let p = crate::node_pool::pod_decisions(&pod(json!({})));
        let q = crate::node_pool::pod_decisions(&pod(json!({"spec": {"nodeName": "w"}})));
        assert_ne!(p, q);
    }
}
