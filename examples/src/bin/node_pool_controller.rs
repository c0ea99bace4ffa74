//! The node-pool controller: on-demand nodes from the provider's node groups, driven by `NodePool` objects, run by
//! the same app as the cloud-controller-manager (upstream's flags, leader election on the Lease
//! `node-pool-controller`, `/healthz` `/readyz` `/metrics` on port 10270).
//!
//! ```text
//! node-pool-controller --print-crd > nodepool-crd.yaml          # the CRD, to kubectl apply
//! node-pool-controller --kubeconfig DIR/kubeconfig --cloud-provider fake --cloud-config fake.yaml \
//!     --controllers '*,cloud-node'
//! ```
//!
//! `node-pool` is on by default; `cloud-node` (for clusters without a cloud-controller-manager) and every other
//! built-in controller can be added with `--controllers`. With the fake provider, node groups come from
//! `--cloud-config` (`nodeGroups: [{id: workers, maxSize: 10, template: {cpu: "2", memory: 4Gi}}]`). Something
//! must register the Nodes of launched instances: a kubelet on a real machine; with the fake provider its
//! `kubelets: {registerNodes: true}` setting, with kwok playing the rest of the kubelet (docs/local-cluster.md).
//! Run two replicas for availability: only the Lease holder launches instances.

use std::process::ExitCode;

use controller_core::app::{App, AppError, exit};
use controller_core::node_pool::NodePool;
use kube::CustomResourceExt;

/// The component name: Event reporter, Lease name, field manager.
const COMPONENT: &str = "node-pool-controller";

fn crd_yaml() -> Result<String, AppError> {
    serde_yaml_ng::to_string(&NodePool::crd()).map_err(|e| AppError::Io {
        context: "serializing the NodePool CRD".into(),
        source: std::io::Error::other(e),
    })
}

fn main() -> ExitCode {
    // `--print-crd` needs neither a cluster nor a provider.
    if std::env::args().skip(1).any(|a| a == "--print-crd") {
        return exit(crd_yaml().map(|yaml| print!("{yaml}")));
    }
    match kube_cloud_examples::provider_registry() {
        Ok(providers) => App::new(COMPONENT, 10270, providers)
            .enabled_by_default(&["node-pool"])
            .after_help(
                "Also: --print-crd prints the NodePool CustomResourceDefinition as YAML and exits.",
            )
            .main(),
        Err(e) => exit(Err(AppError::Provider(e))),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::ResourceExt;

    use super::*;

    #[test]
    fn printed_crd_is_the_node_pool_crd() {
        let yaml = crd_yaml().unwrap_or_else(|e| panic!("{e}"));
        let crd: CustomResourceDefinition =
            serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(crd.name_any(), "nodepools.kube-cloud-rs.dev");
        assert_eq!(crd.spec.scope, "Cluster");
    }
}
