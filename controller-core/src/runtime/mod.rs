//! The runtime every controller shares, written once: a shared Node cache, controller wiring with one error
//! policy, per-object backoff, Events and metrics.

mod backoff;
mod controller;
mod error;
mod events;
mod metrics;
mod nodes;
mod shutdown;

pub use backoff::PerObjectBackoff;
pub use controller::{Reconciler, RunOptions, run};
pub use error::{ErrorClass, ReconcileError};
pub use events::EventPublisher;
pub use metrics::{ControllerLabel, ReconcileLabels, RuntimeMetrics};
pub use nodes::{NodeCache, NodeChanges};
pub use shutdown::{Shutdown, ShutdownTrigger};
