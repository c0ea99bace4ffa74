//! # controller-core
//!
//! The controllers of kube-cloud-rs, the Rust counterpart of the Go `k8s.io/cloud-provider` controllers, on
//! kube-runtime: a shared runtime ([`runtime`]) that every controller uses — one Node cache, one error policy
//! (throttled → wait the cloud's retry-after; transient → per-object exponential backoff; invalid input → Warning
//! Event and no hot loop), Events with upstream reasons, metrics and a tracing span per object — and upstream's
//! `--controllers` selection ([`ControllerSelection`]).
//!
//! The controllers themselves (cloud-node, node-lifecycle, service, route) and the leader-gated manager are being
//! built (see the controllers issue); heartbeats, virtual nodes and on-demand nodes follow.
#![deny(missing_docs)]

pub mod cloud_node;
mod context;
pub mod manager;
pub mod node_lifecycle;
pub mod route;
pub mod runtime;
mod selection;
pub mod service;

pub use context::{ControllerContext, NodeSource};
pub use selection::{ControllerKind, ControllerSelection, SelectionError};
