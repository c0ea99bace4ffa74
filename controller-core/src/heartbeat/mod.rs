//! Node heartbeats for many nodes from one process: the kubelet's contract (a Lease in `kube-node-lease`
//! renewed every quarter of its 40 s duration, node status posted when it changes or every report period),
//! driven by ONE timer queue and a bounded pool of concurrent writes instead of a task per node.
//!
//! * **Lease**: `kube-node-lease/<node>`, `holderIdentity=<node>`, owner reference to the Node. A renewal is one
//!   `PUT` of the last Lease written (no `GET`); a 409 re-reads it once; a missing Lease is created; failures back
//!   off 200 ms → 7 s. Renewals are due every `lease_duration × renew_fraction` plus up to `jitter` of that,
//!   and the first ones are spread over a whole interval so thousands of nodes do not renew in bursts.
//! * **Ping**: the Lease is renewed (and status posted) only while the provider's
//!   [`ping`](cloudprovider_api::NodeProvider::ping) succeeds, as virtual-kubelet does: a dead backend lets the
//!   node-lifecycle controller mark the node `Unknown`.
//! * **Status**: `Ready`, `MemoryPressure`, `DiskPressure`, `PIDPressure` (defaults: ready, no pressure;
//!   overridden with [`Heartbeat::set_conditions`]) are computed at every renewal and patched to `/status`
//!   only when they changed or the last post is older than `status_report_frequency`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use controller_core::heartbeat::{Heartbeat, HeartbeatConfig};
//! use controller_core::runtime::CancellationToken;
//! use k8s_openapi::api::core::v1::Node;
//! # async fn demo(provider: Arc<dyn cloudprovider_api::NodeProvider>) -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let shutdown = CancellationToken::new();
//! let heartbeat = Heartbeat::start(client, HeartbeatConfig::default(), shutdown)?;
//! let mut node = Node::default();
//! node.metadata.name = Some("vk-1".into());
//! heartbeat.register(node, provider).await?;
//! # Ok(()) }
//! ```

mod metrics;
mod renew;
mod scheduler;
mod status;

use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::NodeProvider;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};

pub use metrics::HeartbeatMetrics;
pub use status::default_conditions;

use tokio_util::sync::CancellationToken;

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Why a heartbeat could not start or a node could not be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeartbeatError {
    /// A configuration value is out of range.
    #[error("invalid heartbeat configuration {field}: {message}")]
    InvalidConfig {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The Node has no name.
    #[error("the Node to register has no metadata.name")]
    MissingNodeName,
    /// Creating or updating the Node failed.
    #[error("registering Node {node}: {source}")]
    Register {
        /// The node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The scheduler stopped (shutdown).
    #[error("the heartbeat scheduler has stopped")]
    Stopped,
}

/// The longest lease duration, status report frequency and request timeout of a [`HeartbeatConfig`]: one day.
pub const MAX_HEARTBEAT_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// Timings and limits of the heartbeat. The defaults are the kubelet's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// `leaseDurationSeconds` of the node Leases (kubelet: 40 s).
    pub lease_duration: Duration,
    /// Renew every `lease_duration × renew_fraction` (kubelet: 0.25, i.e. 10 s).
    pub renew_fraction: f64,
    /// Each renewal comes up to this fraction of the interval later (kubelet: 0.04).
    pub jitter: f64,
    /// Post node status at least this often even when nothing changed (kubelet's `nodeStatusReportFrequency`,
    /// 5 min).
    pub status_report_frequency: Duration,
    /// Lease and status writes in flight at once, over all nodes.
    pub max_concurrent_writes: usize,
    /// Timeout of each API call and ping.
    pub request_timeout: Duration,
    /// Field manager of the Node registration.
    pub field_manager: String,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(40),
            renew_fraction: 0.25,
            jitter: 0.04,
            status_report_frequency: Duration::from_secs(300),
            max_concurrent_writes: 64,
            request_timeout: Duration::from_secs(10),
            field_manager: "virtual-kubelet".into(),
        }
    }
}

impl HeartbeatConfig {
    /// The interval between renewals, before jitter.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration.mul_f64(self.renew_fraction)
    }

    fn validate(&self) -> Result<(), HeartbeatError> {
        let invalid = |field, message: &str| {
            Err(HeartbeatError::InvalidConfig {
                field,
                message: message.to_owned(),
            })
        };
        if self.lease_duration.as_secs() < 1 {
            return invalid("lease_duration", "must be at least 1s");
        }
        // Every timer of the scheduler adds these to `Instant::now()`: bounded, they cannot overflow it.
        for (field, value) in [
            ("lease_duration", self.lease_duration),
            ("status_report_frequency", self.status_report_frequency),
            ("request_timeout", self.request_timeout),
        ] {
            if value > MAX_HEARTBEAT_PERIOD {
                return invalid(field, "must be at most one day");
            }
        }
        if self.status_report_frequency.is_zero() {
            return invalid("status_report_frequency", "must be positive");
        }
        if !(self.renew_fraction > 0.0 && self.renew_fraction < 1.0) {
            return invalid("renew_fraction", "must be in (0, 1)");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return invalid("jitter", "must be in [0, 1]");
        }
        if self.max_concurrent_writes == 0 {
            return invalid("max_concurrent_writes", "must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be positive");
        }
        Ok(())
    }
}

pub(crate) enum Command {
    Add {
        name: String,
        uid: String,
        provider: Arc<dyn NodeProvider>,
    },
    Remove(String),
    Conditions(String, Vec<NodeCondition>),
}

/// Keeps many Nodes alive. Cheap to clone; the scheduler stops when the [`CancellationToken`] given to
/// [`start`](Self::start) fires.
#[derive(Clone)]
pub struct Heartbeat {
    client: kube::Client,
    config: Arc<HeartbeatConfig>,
    commands: mpsc::UnboundedSender<Command>,
    metrics: HeartbeatMetrics,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    /// Validates `config` and spawns the scheduler (needs a tokio runtime).
    pub fn start(
        client: kube::Client,
        config: HeartbeatConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, HeartbeatError> {
        Self::start_with_metrics(client, config, HeartbeatMetrics::default(), shutdown)
    }

    /// [`start`](Self::start) counting into `metrics` (e.g. from [`HeartbeatMetrics::register`]).
    pub fn start_with_metrics(
        client: kube::Client,
        config: HeartbeatConfig,
        metrics: HeartbeatMetrics,
        shutdown: CancellationToken,
    ) -> Result<Self, HeartbeatError> {
        config.validate()?;
        let config = Arc::new(config);
        let (commands, receiver) = mpsc::unbounded_channel();
        let scheduler = scheduler::Scheduler::new(
            client.clone(),
            Arc::clone(&config),
            metrics.clone(),
            receiver,
        );
        tokio::spawn(scheduler.run(shutdown));
        Ok(Self {
            client,
            config,
            commands,
            metrics,
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> &HeartbeatMetrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &HeartbeatConfig {
        &self.config
    }

    /// Creates or updates `node` (labels, annotations, taints, provider ID by server-side apply; status is the
    /// heartbeat's), then keeps it alive: its Lease is created at the first renewal, due at once. Returns the
    /// Node as stored. Registering a name again replaces the provider.
    pub async fn register(
        &self,
        node: Node,
        provider: Arc<dyn NodeProvider>,
    ) -> Result<Node, HeartbeatError> {
        let name = node
            .metadata
            .name
            .clone()
            .ok_or(HeartbeatError::MissingNodeName)?;
        let span = info_span!("register_node", namespace = "", name = %name);
        let stored = async {
            let api: Api<Node> = Api::all(self.client.clone());
            let mut applied = Node {
                metadata: node.metadata,
                spec: node.spec,
                status: None,
            };
            applied.metadata.managed_fields = None;
            applied.metadata.resource_version = None;
            applied.metadata.uid = None;
            let params = PatchParams::apply(&self.config.field_manager).force();
            api.patch(&name, &params, &Patch::Apply(&applied))
                .await
                .map_err(|source| HeartbeatError::Register {
                    node: name.clone(),
                    source,
                })
        }
        .instrument(span)
        .await?;
        let uid = stored.metadata.uid.clone().unwrap_or_default();
        self.commands
            .send(Command::Add {
                name,
                uid,
                provider,
            })
            .map_err(|_| HeartbeatError::Stopped)?;
        Ok(stored)
    }

    /// Replaces the provider-reported conditions of `node` (by type; the rest keep their defaults). Posted at
    /// the node's next renewal.
    pub fn set_conditions(&self, node: &str, conditions: Vec<NodeCondition>) {
        let _ = self
            .commands
            .send(Command::Conditions(node.to_owned(), conditions));
    }

    /// Stops keeping `node` alive (the Node and its Lease stay; the Lease expires).
    pub fn deregister(&self, node: &str) {
        let _ = self.commands.send(Command::Remove(node.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 21, finding 2): a huge lease duration or report frequency overflowed `Instant`.
    #[test]
    fn durations_are_bounded() {
        let too_long = Duration::from_secs(u64::MAX / 2);
        let config = HeartbeatConfig {
            lease_duration: too_long,
            ..HeartbeatConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(HeartbeatError::InvalidConfig {
                field: "lease_duration",
                ..
            })
        ));
        let config = HeartbeatConfig {
            status_report_frequency: too_long,
            ..HeartbeatConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(HeartbeatError::InvalidConfig {
                field: "status_report_frequency",
                ..
            })
        ));
        assert!(HeartbeatConfig::default().validate().is_ok());
    }
}
