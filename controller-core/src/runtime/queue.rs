//! Work-queue metrics under client-go's names (`workqueue_*{name}`), so dashboards built for the Go controllers
//! (depth, adds, queue latency, work duration, retries, stuck workers) read ours unchanged.
//!
//! kube-runtime's controller keeps its queue to itself, so a [`WorkQueue`] follows it from the outside with
//! client-go's semantics:
//! * an object becomes *pending* when a trigger stream wrapped with [`WorkQueue::track`] yields it, unless it is
//!   pending already (client-go's dirty set: a second add of a waiting item is not counted);
//! * it stops being pending when its reconcile starts ([`started`](WorkQueue::started)), which observes the time
//!   it waited (`workqueue_queue_duration_seconds`); a reconcile of an object that was not pending — a requeue
//!   after `Action::requeue`, or a trigger the controller made itself — counts as an add that waited zero seconds;
//! * a reconcile runs until [`finished`](WorkQueue::finished) (`workqueue_work_duration_seconds`); while it runs it
//!   counts in `workqueue_unfinished_work_seconds` and `workqueue_longest_running_processor_seconds`, computed at
//!   each scrape;
//! * a failed reconcile requeued with a delay is a retry (`workqueue_retries_total`).
//!
//! The runtime ([`run`](super::run) and [`Periodic`](super::Periodic)) calls these itself; a controller only wraps
//! its trigger streams with [`WorkQueue::track`] so that depth and queue latency see the waiting.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `name` label of every `workqueue_*` metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct QueueLabel {
    /// The queue's name (upstream's: `Nodes`, `service`, `Routes`; otherwise the controller's name).
    pub name: String,
}

/// client-go's buckets for queue and work durations: `ExponentialBuckets(10e-9, 10, 10)`, 10 ns to 10 s.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        10e-9, 10.0, 10,
    ))
}

struct Families {
    depth: Family<QueueLabel, Gauge>,
    adds: Family<QueueLabel, Counter>,
    queue_duration: Family<QueueLabel, Histogram>,
    work_duration: Family<QueueLabel, Histogram>,
    retries: Family<QueueLabel, Counter>,
    queues: Mutex<HashMap<String, WorkQueue>>,
}

/// The `workqueue_*` metric families of every controller of a process. Cheap to clone: clones share them.
#[derive(Clone)]
pub struct WorkQueueMetrics {
    families: Arc<Families>,
}

impl Default for WorkQueueMetrics {
    /// Unregistered metrics.
    fn default() -> Self {
        Self {
            families: Arc::new(Families {
                depth: Family::default(),
                adds: Family::default(),
                queue_duration: Family::new_with_constructor(duration_histogram),
                work_duration: Family::new_with_constructor(duration_histogram),
                retries: Family::default(),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl fmt::Debug for WorkQueueMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = self.families.queues.lock().keys().cloned().collect();
        names.sort();
        f.debug_struct("WorkQueueMetrics")
            .field("queues", &names)
            .finish()
    }
}

impl WorkQueueMetrics {
    /// Creates the metrics and registers them under client-go's names.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let f = &m.families;
        registry.register(
            "workqueue_depth",
            "Current depth of workqueue",
            f.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            f.adds.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested.",
            f.queue_duration.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            f.work_duration.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            f.retries.clone(),
        );
        registry.register_collector(Box::new(InFlight(m.clone())));
        m
    }

    /// The queue called `name` (created on first use; every call with the same name returns the same queue).
    pub fn queue(&self, name: &str) -> WorkQueue {
        let mut queues = self.families.queues.lock();
        if let Some(queue) = queues.get(name) {
            return queue.clone();
        }
        let queue = WorkQueue {
            label: QueueLabel {
                name: name.to_owned(),
            },
            families: Arc::downgrade(&self.families),
            state: Arc::new(Mutex::new(QueueState::default())),
        };
        queues.insert(name.to_owned(), queue.clone());
        queue
    }
}

#[derive(Default)]
struct QueueState {
    /// Objects triggered and not yet started, with when they were first added.
    pending: HashMap<String, Instant>,
    /// Objects being reconciled, with when their reconcile started.
    running: HashMap<String, Instant>,
}

/// One controller's queue, as the `workqueue_*{name}` metrics see it. Cheap to clone: clones share the state.
#[derive(Clone)]
pub struct WorkQueue {
    label: QueueLabel,
    // Weak: the families own the queues (for the in-flight collector); a queue must not keep them alive.
    families: std::sync::Weak<Families>,
    state: Arc<Mutex<QueueState>>,
}

impl fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("WorkQueue")
            .field("name", &self.label.name)
            .field("pending", &state.pending.len())
            .field("running", &state.running.len())
            .finish()
    }
}

impl WorkQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.label.name
    }

    /// `key` was triggered: it waits until its reconcile starts. A key already waiting is not counted again.
    pub fn added(&self, key: String) {
        let mut state = self.state.lock();
        if state.pending.contains_key(&key) {
            return;
        }
        state.pending.insert(key, Instant::now());
        drop(state);
        if let Some(f) = self.families.upgrade() {
            f.adds.get_or_create(&self.label).inc();
            f.depth.get_or_create(&self.label).inc();
        }
    }

    /// `key`'s reconcile starts.
    pub fn started(&self, key: &str) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let waited = state.pending.remove(key);
        state.running.insert(key.to_owned(), now);
        drop(state);
        let Some(f) = self.families.upgrade() else {
            return;
        };
        match waited {
            Some(at) => {
                f.depth.get_or_create(&self.label).dec();
                f.queue_duration
                    .get_or_create(&self.label)
                    .observe(now.saturating_duration_since(at).as_secs_f64());
            }
            None => {
                f.adds.get_or_create(&self.label).inc();
                f.queue_duration.get_or_create(&self.label).observe(0.0);
            }
        }
    }

    /// `key`'s reconcile ended.
    pub fn finished(&self, key: &str) {
        let started = self.state.lock().running.remove(key);
        if let (Some(at), Some(f)) = (started, self.families.upgrade()) {
            f.work_duration
                .get_or_create(&self.label)
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// A failed reconcile was requeued with a delay.
    pub fn retried(&self) {
        if let Some(f) = self.families.upgrade() {
            f.retries.get_or_create(&self.label).inc();
        }
    }

    /// Objects waiting for their reconcile to start.
    pub fn depth(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// `stream` unchanged, with each item `key` names (`Some`) counted as added to this queue. Wrap the trigger
    /// streams a controller is built from; keys are `namespace/name`, or `name` for cluster-scoped objects (see
    /// [`object_key`](super::object_key)).
    pub fn track<S, F>(&self, stream: S, key: F) -> impl Stream<Item = S::Item> + Send + use<S, F>
    where
        S: Stream + Send,
        F: Fn(&S::Item) -> Option<String> + Send,
    {
        let queue = self.clone();
        stream.inspect(move |item| {
            if let Some(k) = key(item) {
                queue.added(k);
            }
        })
    }

    /// Seconds of work in progress, and the longest-running reconcile's seconds.
    fn in_flight(&self, now: Instant) -> (f64, f64) {
        let state = self.state.lock();
        state.running.values().fold((0.0, 0.0), |(sum, max), at| {
            let s = now.saturating_duration_since(*at).as_secs_f64();
            (sum + s, f64::max(max, s))
        })
    }
}

/// `workqueue_unfinished_work_seconds` and `workqueue_longest_running_processor_seconds`, computed at each scrape
/// from the reconciles running at that moment (client-go updates them every 500 ms).
struct InFlight(WorkQueueMetrics);

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InFlight").finish_non_exhaustive()
    }
}

impl Collector for InFlight {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let now = Instant::now();
        let mut queues: Vec<WorkQueue> = self.0.families.queues.lock().values().cloned().collect();
        queues.sort_by(|a, b| a.label.cmp(&b.label));
        let values: Vec<(QueueLabel, (f64, f64))> = queues
            .iter()
            .map(|q| (q.label.clone(), q.in_flight(now)))
            .collect();
        let metrics = [
            (
                "workqueue_unfinished_work_seconds",
                "How many seconds of work has done that is in progress and hasn't been observed by \
                 work_duration. Large values indicate stuck threads.",
                false,
            ),
            (
                "workqueue_longest_running_processor_seconds",
                "How many seconds has the longest running processor for workqueue been running.",
                true,
            ),
        ];
        for (name, help, longest) in metrics {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (label, (sum, max)) in &values {
                let value = if longest { *max } else { *sum };
                ConstGauge::new(value).encode(family.encode_family(label)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encodes");
        out
    }

    #[test]
    fn adds_are_deduplicated_while_pending_and_requeues_count_as_adds() {
        let mut registry = Registry::default();
        let metrics = WorkQueueMetrics::register(&mut registry);
        let queue = metrics.queue("Nodes");
        queue.added("a".into());
        queue.added("a".into());
        queue.added("b".into());
        assert_eq!(queue.depth(), 2);
        queue.started("a");
        assert_eq!(queue.depth(), 1);
        let text = scrape(&registry);
        assert!(
            text.contains("workqueue_adds_total{name=\"Nodes\"} 2"),
            "{text}"
        );
        assert!(text.contains("workqueue_depth{name=\"Nodes\"} 1"), "{text}");
        assert!(
            text.contains("workqueue_unfinished_work_seconds{name=\"Nodes\"}"),
            "{text}"
        );
        queue.finished("a");
        // A requeue: not pending, yet reconciled.
        queue.started("a");
        queue.finished("a");
        queue.retried();
        let text = scrape(&registry);
        assert!(
            text.contains("workqueue_adds_total{name=\"Nodes\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("workqueue_work_duration_seconds_count{name=\"Nodes\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("workqueue_retries_total{name=\"Nodes\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("workqueue_longest_running_processor_seconds{name=\"Nodes\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn the_same_name_is_the_same_queue() {
        let metrics = WorkQueueMetrics::default();
        metrics.queue("x").added("k".into());
        assert_eq!(metrics.queue("x").depth(), 1);
        assert_eq!(metrics.queue("y").depth(), 0);
    }

    #[tokio::test]
    async fn tracked_streams_add_what_they_yield() {
        let metrics = WorkQueueMetrics::default();
        let queue = metrics.queue("q");
        let items = futures::stream::iter(["a", "b", "skip"]);
        let seen: Vec<&str> = queue
            .track(items, |s| (*s != "skip").then(|| s.to_string()))
            .collect()
            .await;
        assert_eq!(seen, ["a", "b", "skip"]);
        assert_eq!(queue.depth(), 2);
    }
}
