//! # lease-election
//!
//! Lease-based leader election for any kube-rs program, on a `coordination.k8s.io/v1` Lease, with client-go's
//! contract and defaults (15s lease, 10s renew deadline, 2s retry period) — and what neither client-go nor the
//! existing Rust crates give:
//!
//! - **Correct under races**: every write carries the observed `resourceVersion`; a 409 after a write that timed out
//!   is recognised as our own write when the Lease shows our identity and the exact `renewTime` we sent.
//! - **Clock-skew tolerant**: expiry is judged from the LOCAL monotonic time at which the record was last seen to
//!   change, never by comparing remote timestamps with the local clock.
//! - **Fast failover**: the Lease is watched, so a released Lease is taken within milliseconds and an expired one
//!   exactly at expiry; on graceful exit the Lease is released only after the guarded work has stopped.
//! - **Fencing**: [`Leadership::is_leader`] turns false at the SEND time of the last successful renew plus the renew
//!   deadline — before anyone else can acquire — so a caller can check it right before a side effect;
//!   [`Leadership::epoch`] (the Lease's `leaseTransitions`) tags writes.
//! - **Operability**: a healthz watchdog ([`LeaderElector::check_health`]), Prometheus metrics
//!   ([`LeaderElectionMetrics`]), state changes as a watch channel ([`LeaderElector::subscribe`]).
//!
//! ```no_run
//! use lease_election::{LeaderElector, LeaseConfig};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let elector = LeaderElector::new(client, LeaseConfig::new("default", "my-app", "replica-1"))?;
//! let ended = elector
//!     .run(tokio::signal::ctrl_c(), |leadership| async move {
//!         println!("leading with epoch {}", leadership.epoch());
//!         leadership.lost().await;
//!     })
//!     .await;
//! println!("{ended:?}");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod clock;
mod config;
mod contender;
mod elector;
mod leadership;
mod metrics;
mod record;

pub use config::{ConfigError, LeaseConfig, MAX_TIMING};
pub use elector::{Ended, LeaderElector, LeaderState, Unhealthy};
pub use leadership::Leadership;
pub use metrics::{LeaderElectionMetrics, LeaseLabels};
