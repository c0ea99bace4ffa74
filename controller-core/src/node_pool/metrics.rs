//! Metrics of the node-pool controller: every decision counted, node counts per state, launch-to-ready time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of [`NodePoolMetrics::decisions`] and [`NodePoolMetrics::nodes_changed`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The NodePool.
    pub pool: String,
    /// `scale_up`, `scale_up_failed`, `max_nodes_reached`, `scale_down`, `launch_failed`, `launch_timeout`,
    /// `registration_timeout`, `initialization_timeout`, `invalid_spec`, `pool_deletion`, `consolidation`.
    pub decision: String,
}

/// Labels of [`NodePoolMetrics::nodes`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeStateLabels {
    /// The NodePool.
    pub pool: String,
    /// `desired`, `launching` or `ready`.
    pub state: String,
}

/// Labels of [`NodePoolMetrics::launch_to_ready`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// The NodePool.
    pub pool: String,
}

/// The node-pool controller's metrics. Cheap to clone (families are shared).
#[derive(Clone, Debug)]
pub struct NodePoolMetrics {
    /// `node_pool_decisions_total{pool, decision}`: decisions taken.
    pub decisions: Family<DecisionLabels, Counter>,
    /// `node_pool_nodes_changed_total{pool, decision}`: nodes added or removed by those decisions.
    pub nodes_changed: Family<DecisionLabels, Counter>,
    /// `node_pool_nodes{pool, state}`: nodes per state at the last reconcile.
    pub nodes: Family<NodeStateLabels, Gauge>,
    /// `node_pool_launch_to_ready_seconds{pool}`: from the launch request to an initialized, Ready Node.
    pub launch_to_ready: Family<PoolLabel, Histogram>,
}

impl Default for NodePoolMetrics {
    /// Unregistered metrics.
    fn default() -> Self {
        Self {
            decisions: Family::default(),
            nodes_changed: Family::default(),
            nodes: Family::default(),
            // 0.25 s to ~17 min.
            launch_to_ready: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 2.0, 13))
            }),
        }
    }
}

impl NodePoolMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "node_pool_decisions",
            "Scaling and cleanup decisions of the node-pool controller",
            m.decisions.clone(),
        );
        registry.register(
            "node_pool_nodes_changed",
            "Nodes added or removed by the node-pool controller's decisions",
            m.nodes_changed.clone(),
        );
        registry.register(
            "node_pool_nodes",
            "Nodes of each pool by state",
            m.nodes.clone(),
        );
        registry.register(
            "node_pool_launch_to_ready_seconds",
            "Seconds from a launch request to an initialized, Ready Node",
            m.launch_to_ready.clone(),
        );
        m
    }

    /// Counts one decision about `nodes` nodes.
    pub(crate) fn decision(&self, pool: &str, decision: &str, nodes: u32) {
        let labels = DecisionLabels {
            pool: pool.to_owned(),
            decision: decision.to_owned(),
        };
        self.decisions.get_or_create(&labels).inc();
        self.nodes_changed
            .get_or_create(&labels)
            .inc_by(u64::from(nodes));
    }

    /// How many decisions of this kind were taken for `pool` (tests, diagnostics).
    pub fn decision_count(&self, pool: &str, decision: &str) -> u64 {
        self.decisions
            .get_or_create(&DecisionLabels {
                pool: pool.to_owned(),
                decision: decision.to_owned(),
            })
            .get()
    }

    pub(crate) fn set_nodes(&self, pool: &str, desired: u32, launching: u32, ready: u32) {
        for (state, value) in [
            ("desired", desired),
            ("launching", launching),
            ("ready", ready),
        ] {
            self.nodes
                .get_or_create(&NodeStateLabels {
                    pool: pool.to_owned(),
                    state: state.to_owned(),
                })
                .set(i64::from(value));
        }
    }
}
