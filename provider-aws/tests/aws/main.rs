//! provider-aws against moto's server: one test binary (the AWS SDK makes linking expensive), one moto per test.

mod classic;
mod common;
mod config;
mod conformance;
mod instances;
mod load_balancers;
mod nlb_options;
mod node_groups;
mod node_metadata;
mod routes;
mod security_groups;
mod throttling;
