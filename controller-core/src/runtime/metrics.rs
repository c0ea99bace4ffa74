//! Metrics shared by every controller: reconciles by result and their latency, and the work-queue metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::queue::{WorkQueue, WorkQueueMetrics};

/// Labels of [`RuntimeMetrics::reconciles`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// The controller's name.
    pub controller: String,
    /// `success` or the error class (`throttled`, `transient`, `invalid_input`, `permanent`).
    pub result: String,
}

/// Labels of [`RuntimeMetrics::duration`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// The controller's name.
    pub controller: String,
}

/// Reconcile counts and latency per controller, and the `workqueue_*` metrics of every controller's queue.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// `cloud_controller_reconcile_total{controller, result}`.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// `cloud_controller_reconcile_duration_seconds{controller}`.
    pub duration: Family<ControllerLabel, Histogram>,
    /// `workqueue_*{name}` (client-go's names), one queue per controller.
    pub queues: WorkQueueMetrics,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0])
            }),
            queues: WorkQueueMetrics::default(),
        }
    }
}

impl RuntimeMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            queues: WorkQueueMetrics::register(registry),
            ..Self::default()
        };
        registry.register(
            "cloud_controller_reconcile",
            "Reconciles by controller and result",
            m.reconciles.clone(),
        );
        registry.register(
            "cloud_controller_reconcile_duration_seconds",
            "Reconcile latency by controller",
            m.duration.clone(),
        );
        m
    }

    /// The work queue called `name` (the same one for every call with that name).
    pub fn work_queue(&self, name: &str) -> WorkQueue {
        self.queues.queue(name)
    }

    /// Counts one reconcile.
    pub fn record(&self, controller: &str, result: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&ControllerLabel {
                controller: controller.to_owned(),
            })
            .observe(seconds);
    }

    /// How many reconciles of `controller` ended with `result` (tests, diagnostics).
    pub fn count(&self, controller: &str, result: &str) -> u64 {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.to_owned(),
                result: result.to_owned(),
            })
            .get()
    }
}
