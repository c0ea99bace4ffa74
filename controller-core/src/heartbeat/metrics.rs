//! Heartbeat metrics: renewals, failures, missed renewals, skipped renewals (failed pings), status posts.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of the [`Heartbeat`](super::Heartbeat) scheduler. Cheap to clone (every clone counts together).
#[derive(Clone, Debug, Default)]
pub struct HeartbeatMetrics {
    /// `node_heartbeat_nodes`: nodes kept alive.
    pub nodes: Gauge,
    /// `node_heartbeat_lease_renewals_total`: successful Lease writes.
    pub renewals: Counter,
    /// `node_heartbeat_lease_renewal_failures_total`: failed Lease writes (each retried with backoff).
    pub renewal_failures: Counter,
    /// `node_heartbeat_lease_conflicts_total`: writes answered 409 (the Lease is then re-read once).
    pub conflicts: Counter,
    /// `node_heartbeat_missed_renewals_total`: successful renewals that came later than their deadline (the
    /// time they were due plus one renew interval), i.e. the Lease went more than about two renew intervals
    /// without a write.
    pub missed_renewals: Counter,
    /// `node_heartbeat_ping_failures_total`: renewals skipped because the provider's ping failed.
    pub ping_failures: Counter,
    /// `node_heartbeat_status_updates_total`: node status posts (on change or every report period).
    pub status_updates: Counter,
    /// `node_heartbeat_status_update_failures_total`.
    pub status_update_failures: Counter,
}

impl HeartbeatMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("node_heartbeat_nodes", "Nodes kept alive", m.nodes.clone());
        registry.register(
            "node_heartbeat_lease_renewals",
            "Successful node Lease writes",
            m.renewals.clone(),
        );
        registry.register(
            "node_heartbeat_lease_renewal_failures",
            "Failed node Lease writes",
            m.renewal_failures.clone(),
        );
        registry.register(
            "node_heartbeat_lease_conflicts",
            "Node Lease writes answered with a conflict",
            m.conflicts.clone(),
        );
        registry.register(
            "node_heartbeat_missed_renewals",
            "Node Lease renewals later than their deadline",
            m.missed_renewals.clone(),
        );
        registry.register(
            "node_heartbeat_ping_failures",
            "Renewals skipped because the provider ping failed",
            m.ping_failures.clone(),
        );
        registry.register(
            "node_heartbeat_status_updates",
            "Node status posts",
            m.status_updates.clone(),
        );
        registry.register(
            "node_heartbeat_status_update_failures",
            "Failed node status posts",
            m.status_update_failures.clone(),
        );
        m
    }
}
