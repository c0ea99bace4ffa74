//! The service controller's metrics, with upstream's names, and the bookkeeping behind the node-sync latency.

use std::collections::HashSet;
use std::time::Instant;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metrics of the service controller. Cheap to clone (clones share the values).
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    /// `service_controller_loadbalancer_sync_total`: load balancer ensure, update and delete calls.
    pub loadbalancer_syncs: Counter,
    /// `service_controller_nodesync_error_total`: failed hosts updates after a node-set change.
    pub nodesync_errors: Counter,
    /// `service_controller_nodesync_latency_seconds`: from noticing a node-set change until every affected load
    /// balancer was updated (or failed).
    pub nodesync_latency: Histogram,
    /// `service_controller_update_loadbalancer_host_latency_seconds`: one `update_load_balancer` call.
    pub update_host_latency: Histogram,
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        // 5 ms .. ~11 min: node syncs are meant to take well under a second per load balancer.
        let buckets = || Histogram::new(exponential_buckets(0.005, 2.0, 18));
        Self {
            loadbalancer_syncs: Counter::default(),
            nodesync_errors: Counter::default(),
            nodesync_latency: buckets(),
            update_host_latency: buckets(),
        }
    }
}

impl ServiceMetrics {
    /// Creates the metrics and registers them in `registry` under upstream's names.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "service_controller_loadbalancer_sync",
            "Times any load balancer was configured, as an effect of Service or Node changes",
            m.loadbalancer_syncs.clone(),
        );
        registry.register(
            "service_controller_nodesync_error",
            "Load balancer host updates that failed after a node-set change",
            m.nodesync_errors.clone(),
        );
        registry.register(
            "service_controller_nodesync_latency_seconds",
            "Time to update every affected load balancer after a node-set change",
            m.nodesync_latency.clone(),
        );
        registry.register(
            "service_controller_update_loadbalancer_host_latency_seconds",
            "Latency of updating the hosts of one load balancer",
            m.update_host_latency.clone(),
        );
        m
    }
}

#[derive(Debug)]
struct Round {
    generation: u64,
    started: Instant,
    pending: HashSet<String>,
}

/// The node-sync round in progress: the Services a node-set change must update, and when it was noticed.
#[derive(Debug, Default)]
pub(super) struct NodeSyncRounds {
    round: Mutex<Option<Round>>,
}

impl NodeSyncRounds {
    /// Starts the round for target set `generation`. A round still open is superseded: its latency so far is
    /// observed, since its Services will be updated to the newer set anyway.
    pub(super) fn start(
        &self,
        metrics: &ServiceMetrics,
        generation: u64,
        pending: HashSet<String>,
    ) {
        let mut round = self.round.lock();
        if let Some(old) = round.take() {
            metrics
                .nodesync_latency
                .observe(old.started.elapsed().as_secs_f64());
        }
        if !pending.is_empty() {
            *round = Some(Round {
                generation,
                started: Instant::now(),
                pending,
            });
        }
    }

    /// A reconcile of `key` that used target set `generation` finished (successfully or not).
    pub(super) fn settle(&self, metrics: &ServiceMetrics, key: &str, generation: u64) {
        let mut guard = self.round.lock();
        let Some(round) = guard.as_mut() else { return };
        // A reconcile that started on an older set has not applied this round's hosts.
        if generation < round.generation || !round.pending.remove(key) {
            return;
        }
        if round.pending.is_empty() {
            metrics
                .nodesync_latency
                .observe(round.started.elapsed().as_secs_f64());
            *guard = None;
        }
    }
}
