//! The runtime every controller shares, written once: shared Node and Pod caches, controller wiring with one error
//! policy, per-object backoff, periodic passes, Events and metrics.

mod backoff;
mod cache;
mod controller;
mod error;
mod events;
mod metrics;
pub mod periodic;
pub mod projection;
mod queue;

pub use backoff::PerObjectBackoff;
pub use cache::{
    CacheSource, Cached, Changes, InitialList, NodeCache, NodeChanges, PodCache, SharedCache,
    Synced, watch_objects,
};
pub use controller::{Reconciler, RunOptions, object_key, run};
pub use error::{ErrorClass, ReconcileError};
pub use events::EventPublisher;
pub use metrics::{ControllerLabel, ReconcileLabels, RuntimeMetrics};
pub use periodic::{PassOutcome, Periodic, PeriodicPass};
pub use queue::{QueueLabel, WorkQueue, WorkQueueMetrics};
/// The shutdown signal every controller and task takes (tokio-util's, re-exported so callers need no extra dependency).
pub use tokio_util::sync::CancellationToken;
