//! The single timer queue behind every node's heartbeat: due nodes leave a `DelayQueue`, wait in a ready list
//! while `max_concurrent_writes` heartbeats are in flight, run, and are put back with their next due time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::NodeProvider;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::jiff::Timestamp;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::{Instrument, debug, debug_span, warn};

use super::renew::{self, Clients, Job, Outcome};
use super::status::{changed, merged, stamped};
use super::{Command, HeartbeatConfig, HeartbeatMetrics, default_conditions};
use tokio_util::sync::CancellationToken;

/// Backoff of failed Lease writes (the kubelet's 200 ms → 7 s).
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(7);

struct NodeState {
    uid: String,
    provider: Arc<dyn NodeProvider>,
    lease: Option<Lease>,
    overrides: Vec<NodeCondition>,
    posted: Vec<NodeCondition>,
    posted_at: Option<Instant>,
    /// When the current (or next) heartbeat was due; a renewal later than `due + interval` is missed.
    due: Instant,
    /// Whether the node has renewed yet (the first renewal is followed by a spread-out second one).
    renewed_once: bool,
    failures: u32,
    in_flight: bool,
    key: Option<delay_queue::Key>,
    /// Bumped on re-registration so the outcome of an older heartbeat is ignored.
    generation: u64,
}

type InFlight = FuturesUnordered<BoxFuture<'static, (String, u64, Outcome)>>;

pub(crate) struct Scheduler {
    config: Arc<HeartbeatConfig>,
    clients: Arc<Clients>,
    metrics: HeartbeatMetrics,
    commands: mpsc::UnboundedReceiver<Command>,
    nodes: HashMap<String, NodeState>,
    queue: DelayQueue<String>,
    ready: VecDeque<String>,
    generation: u64,
}

impl Scheduler {
    pub(crate) fn new(
        client: kube::Client,
        config: Arc<HeartbeatConfig>,
        metrics: HeartbeatMetrics,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let clients = Arc::new(Clients::new(
            client,
            config.lease_duration,
            config.request_timeout,
        ));
        Self {
            config,
            clients,
            metrics,
            commands,
            nodes: HashMap::new(),
            queue: DelayQueue::new(),
            ready: VecDeque::new(),
            generation: 0,
        }
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut in_flight: InFlight = FuturesUnordered::new();
        let stop = shutdown.cancelled_owned();
        tokio::pin!(stop);
        let mut commands_open = true;
        loop {
            while in_flight.len() < self.config.max_concurrent_writes {
                let Some(name) = self.ready.pop_front() else {
                    break;
                };
                if let Some(job) = self.launch(&name) {
                    in_flight.push(job);
                }
            }
            tokio::select! {
                _ = &mut stop => break,
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.apply(command),
                    None => commands_open = false,
                },
                Some(expired) = self.queue.next(), if !self.queue.is_empty() => {
                    let name = expired.into_inner();
                    if let Some(node) = self.nodes.get_mut(&name) {
                        node.key = None;
                        self.ready.push_back(name);
                    }
                }
                Some((name, generation, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.finish(name, generation, outcome);
                }
            }
        }
        debug!(nodes = self.nodes.len(), "heartbeat scheduler stopped");
    }

    fn interval(&self) -> Duration {
        self.config.renew_interval()
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Add {
                name,
                uid,
                provider,
            } => {
                self.generation += 1;
                let now = Instant::now();
                let previous = self.nodes.remove(&name);
                let (overrides, posted, posted_at) = match previous {
                    Some(p) => {
                        if let Some(key) = p.key {
                            self.queue.remove(&key);
                        }
                        (p.overrides, p.posted, p.posted_at)
                    }
                    None => {
                        self.metrics.nodes.inc();
                        (Vec::new(), Vec::new(), None)
                    }
                };
                self.nodes.insert(
                    name.clone(),
                    NodeState {
                        uid,
                        provider,
                        lease: None,
                        overrides,
                        posted,
                        posted_at,
                        due: now,
                        renewed_once: false,
                        failures: 0,
                        in_flight: false,
                        key: None,
                        generation: self.generation,
                    },
                );
                self.ready.push_back(name);
            }
            Command::Remove(name) => {
                if let Some(node) = self.nodes.remove(&name) {
                    if let Some(key) = node.key {
                        self.queue.remove(&key);
                    }
                    self.metrics.nodes.dec();
                }
            }
            Command::Conditions(name, conditions) => {
                if let Some(node) = self.nodes.get_mut(&name) {
                    node.overrides = merged(&node.overrides, &conditions);
                }
            }
        }
    }

    fn launch(&mut self, name: &str) -> Option<BoxFuture<'static, (String, u64, Outcome)>> {
        let report = self.config.status_report_frequency;
        let node = self.nodes.get_mut(name)?;
        if node.in_flight {
            return None;
        }
        node.in_flight = true;
        let desired = merged(&default_conditions(), &node.overrides);
        let status_due = node.posted_at.is_none_or(|at| at.elapsed() >= report)
            || changed(&node.posted, &desired);
        let job = Job {
            name: name.to_owned(),
            uid: node.uid.clone(),
            provider: Arc::clone(&node.provider),
            lease: node.lease.clone(),
            status: status_due.then(|| stamped(&node.posted, &desired, Timestamp::now())),
        };
        let clients = Arc::clone(&self.clients);
        let generation = node.generation;
        let span = debug_span!("heartbeat", namespace = "", name = %name);
        Some(Box::pin(
            async move {
                let name = job.name.clone();
                let outcome = renew::beat(&clients, job).await;
                (name, generation, outcome)
            }
            .instrument(span),
        ))
    }

    fn finish(&mut self, name: String, generation: u64, outcome: Outcome) {
        let interval = self.interval();
        let jitter = self.config.jitter;
        let Some(node) = self.nodes.get_mut(&name) else {
            return;
        };
        if node.generation != generation {
            return;
        }
        node.in_flight = false;
        let now = Instant::now();
        let (next, keep_due) = match outcome {
            Outcome::PingFailed(error) => {
                self.metrics.ping_failures.inc();
                warn!(node = %name, %error, "provider ping failed; not renewing the Lease");
                (now + jittered(interval, jitter), false)
            }
            Outcome::Renewed {
                lease,
                conflicted,
                status,
            } => {
                self.metrics.renewals.inc();
                if conflicted {
                    self.metrics.conflicts.inc();
                }
                if now > node.due + interval {
                    self.metrics.missed_renewals.inc();
                    warn!(node = %name, late = ?(now - node.due), "Lease renewal missed its deadline");
                }
                node.lease = Some(*lease);
                node.failures = 0;
                match status {
                    Some(Ok(posted)) => {
                        node.posted = posted;
                        node.posted_at = Some(now);
                        self.metrics.status_updates.inc();
                    }
                    Some(Err(error)) => {
                        self.metrics.status_update_failures.inc();
                        warn!(node = %name, %error, "posting node status failed");
                    }
                    None => {}
                }
                let next = if node.renewed_once {
                    jittered(interval, jitter)
                } else {
                    // Spread the second renewal over a whole interval so nodes registered together do not
                    // renew together forever.
                    interval.mul_f64(0.5 + rand::rng().random::<f64>())
                };
                node.renewed_once = true;
                (now + next, false)
            }
            Outcome::LeaseFailed { error, conflicted } => {
                self.metrics.renewal_failures.inc();
                if conflicted {
                    self.metrics.conflicts.inc();
                }
                node.lease = None;
                node.failures += 1;
                let backoff = BACKOFF_MIN
                    .saturating_mul(1 << node.failures.saturating_sub(1).min(6))
                    .min(BACKOFF_MAX);
                warn!(node = %name, %error, ?backoff, "renewing the node Lease failed");
                (now + backoff, true)
            }
        };
        if !keep_due {
            node.due = next;
        }
        node.key = Some(self.queue.insert_at(name, next));
    }
}

fn jittered(interval: Duration, jitter: f64) -> Duration {
    interval.mul_f64(1.0 + jitter * rand::rng().random::<f64>())
}
