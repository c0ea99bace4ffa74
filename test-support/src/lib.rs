//! Real components for tests: a fresh etcd + kube-apiserver (optionally kube-scheduler and kwok) per test,
//! and moto's AWS emulator; plus the small helpers every test crate needs: [`eventually`] (poll until a
//! condition holds) and [`NodeBuilder`] (Node objects).
//!
//! The binaries are built from Go modules by `scripts/build-test-tools` (cached outside the repository;
//! the first build takes tens of minutes) or taken from `$KUBE_CLOUD_TOOLS_DIR` when that is set. moto runs
//! from a cached Python venv made by `scripts/moto-server`.
//!
//! Every [`ControlPlane`] lives in its own temporary directory, on free loopback ports, so tests can run in
//! parallel. Dropping it (also while a test panics) stops every process it started and removes the directory;
//! the processes also die with the test process (`PR_SET_PDEATHSIG`). Set `TEST_SUPPORT_KEEP_DIR=1` to keep
//! the directory (logs, kubeconfig) for a post-mortem. Directories of test processes that were killed
//! outright are removed by the next start.
//!
//! No kube-controller-manager runs unless asked for with
//! [`ControlPlaneBuilder::controller_manager`] (and then only the named controllers), so unlike a full cluster: no service-account tokens (the
//! `ServiceAccount` admission plugin is off), no `node.kubernetes.io/not-ready` taint on new Nodes
//! (`TaintNodesByCondition` is off, since nothing would lift it), no garbage collection of dependents, and
//! deleted namespaces stay `Terminating`.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::Node;
//! use kube::api::{Api, PostParams};
//! use test_support::{ControlPlane, KwokOptions, kwok_node};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let cp = ControlPlane::builder()
//!     .scheduler(true)
//!     .kwok(KwokOptions::default())
//!     .start()
//!     .await?;
//! let nodes: Api<Node> = Api::all(cp.client());
//! nodes.create(&PostParams::default(), &kwok_node("node-a")).await?; // kwok makes it Ready
//! println!("kubectl --kubeconfig {} get nodes", cp.kubeconfig_path().display());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod aws_faults;
mod control_plane;
mod error;
mod moto;
mod net;
mod node;
mod poll;
mod process;
mod proxy;
mod tools;

pub use aws_faults::{ActionCount, AwsFaultProxy, AwsFaultRates};
pub use control_plane::{
    Component, ControlPlane, ControlPlaneBuilder, KwokNodes, KwokOptions, kwok_node,
};
pub use error::Error;
pub use moto::Moto;
pub use node::{NodeBuilder, UNINITIALIZED_TAINT};
pub use poll::{POLL_INTERVAL, eventually, eventually_every};
pub use proxy::{FaultProxy, ProxyMode};
pub use tools::Tools;

/// Annotation key kwok selects Nodes by (with [`KWOK_NODE_ANNOTATION_VALUE`]) unless told otherwise.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Annotation value kwok selects Nodes by (see [`KWOK_NODE_ANNOTATION`]).
pub const KWOK_NODE_ANNOTATION_VALUE: &str = "fake";
