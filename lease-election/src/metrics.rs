//! Prometheus metrics of an elector.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set: the Lease name, as client-go labels `leader_election_master_status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// The Lease name.
    pub name: String,
}

/// Metrics of leader election. Register once per registry and share with every elector of the process.
///
/// | metric | type | meaning |
/// |---|---|---|
/// | `leader_election_master_status` | gauge | 1 while this process leads (client-go's name) |
/// | `leader_election_slowpath_total` | counter | renews that needed a GET first (client-go's name) |
/// | `leader_election_transitions_total` | counter | times this process acquired leadership |
/// | `leader_election_renew_duration_seconds` | histogram | latency of successful renews |
/// | `leader_election_renew_failures_total` | counter | failed acquire/renew attempts |
#[derive(Clone, Debug)]
pub struct LeaderElectionMetrics {
    pub(crate) is_leader: Family<LeaseLabels, Gauge>,
    pub(crate) slowpath: Family<LeaseLabels, Counter>,
    pub(crate) transitions: Family<LeaseLabels, Counter>,
    pub(crate) renew_latency: Family<LeaseLabels, Histogram>,
    pub(crate) failures: Family<LeaseLabels, Counter>,
}

impl Default for LeaderElectionMetrics {
    fn default() -> Self {
        Self {
            is_leader: Family::default(),
            slowpath: Family::default(),
            transitions: Family::default(),
            renew_latency: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            }),
            failures: Family::default(),
        }
    }
}

impl LeaderElectionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "leader_election_master_status",
            "1 while this process is leader",
            m.is_leader.clone(),
        );
        registry.register(
            "leader_election_slowpath",
            "Renews that had to read the Lease first",
            m.slowpath.clone(),
        );
        registry.register(
            "leader_election_transitions",
            "Times this process acquired leadership",
            m.transitions.clone(),
        );
        registry.register(
            "leader_election_renew_duration_seconds",
            "Latency of successful renews",
            m.renew_latency.clone(),
        );
        registry.register(
            "leader_election_renew_failures",
            "Failed acquire or renew attempts",
            m.failures.clone(),
        );
        m
    }

    /// How many writes to Lease `name` met a conflict and needed a read first (client-go's "slow path").
    pub fn slowpath_count(&self, name: &str) -> u64 {
        self.slowpath
            .get_or_create(&LeaseLabels {
                name: name.to_owned(),
            })
            .get()
    }

    /// How many acquire or renew attempts on Lease `name` failed.
    pub fn failure_count(&self, name: &str) -> u64 {
        self.failures
            .get_or_create(&LeaseLabels {
                name: name.to_owned(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_upstream_names() {
        let mut registry = Registry::default();
        let m = LeaderElectionMetrics::register(&mut registry);
        let l = LeaseLabels { name: "ccm".into() };
        m.is_leader.get_or_create(&l).set(1);
        m.slowpath.get_or_create(&l).inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.contains("leader_election_master_status{name=\"ccm\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("leader_election_slowpath_total{name=\"ccm\"} 1"),
            "{out}"
        );
    }
}
