//! The AWS provider of kube-cloud-rs.
//!
//! Not yet implemented: tracked by the provider-aws issue. See `docs/architecture.md`.
#![deny(missing_docs)]
