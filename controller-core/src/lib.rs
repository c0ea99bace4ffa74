//! Controllers of kube-cloud-rs: the Rust counterpart of the Go `k8s.io/cloud-provider` controllers.
//!
//! Not yet implemented: the runtime and the cloud-node, node-lifecycle, service and route controllers are
//! tracked by the controllers issue; heartbeats and virtual nodes, and on-demand nodes, by their own issues.
//! See `docs/architecture.md` for the intended shape.
#![deny(missing_docs)]
