//! Helpers shared by the integration tests.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use cloudprovider_api::conformance::load_balancer_service;
use k8s_openapi::api::core::v1::{Node, Service};
use test_support::NodeBuilder;

pub use cloudprovider_api::conformance::node_with_provider_id;

/// Unwraps a result, panicking with the error.
#[track_caller]
pub fn ok<T, E: Debug>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

/// A Node with only a name (no provider ID yet, as when it is being initialized).
pub fn node(name: &str) -> Node {
    NodeBuilder::new(name).build()
}

/// A Node with a name and an InternalIP.
pub fn node_with_ip(name: &str, ip: &str) -> Node {
    NodeBuilder::new(name).address("InternalIP", ip).build()
}

/// A LoadBalancer Service `default/<name>` with UID `<uid>` and one TCP port 80 → 30080.
pub fn service(name: &str, uid: &str) -> Service {
    load_balancer_service(name, uid)
}

/// `service` with annotations.
pub fn annotated(mut svc: Service, annotations: &[(&str, &str)]) -> Service {
    let map: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    svc.metadata.annotations = Some(map);
    svc
}
