//! The elector: contend for the Lease, run the guarded work while leading, stop it when leadership is lost.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use parking_lot::Mutex;
use rand::Rng;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::after;
use crate::contender::{Attempt, Contender};
use crate::leadership::{Leadership, LeadershipControl};
use crate::metrics::{LeaderElectionMetrics, LeaseLabels};
use crate::{ConfigError, LeaseConfig};

/// How long a graceful exit waits for the Lease release: a process must exit within about a second of SIGTERM even
/// when the apiserver does not answer.
const RELEASE_TIMEOUT: Duration = Duration::from_millis(800);

/// What this candidate knows about leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderState {
    /// Not yet determined.
    Unknown,
    /// This process leads; `epoch` is the Lease's `leaseTransitions` when it acquired.
    Leading {
        /// The fencing epoch.
        epoch: i32,
    },
    /// Another candidate (or nobody) leads.
    Following {
        /// The current holder, if any.
        leader: Option<String>,
    },
    /// This process just lost leadership; its work has been stopped.
    Lost,
}

/// Why [`LeaderElector::run`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<T> {
    /// The guarded work finished by itself, with this output. The Lease was released if configured.
    WorkFinished(T),
    /// Leadership was lost; the work was stopped (dropped) first.
    LeadershipLost,
    /// The shutdown future completed; the work was stopped and the Lease released if configured.
    Shutdown,
}

/// The health check failed: this process believes it leads but has not renewed for too long.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "leader election: leading but the last successful renew was {since:?} ago (allowed {allowed:?})"
)]
pub struct Unhealthy {
    /// Time since the last successful renew was sent.
    pub since: Duration,
    /// Lease duration plus the watchdog timeout.
    pub allowed: Duration,
}

pub(crate) struct Shared {
    pub state: watch::Sender<LeaderState>,
    pub last_renew: Mutex<Option<Instant>>,
    pub metrics: Option<LeaderElectionMetrics>,
    pub labels: LeaseLabels,
}

/// Lease-based leader election for one candidate.
///
/// ```no_run
/// use lease_election::{Ended, LeaderElector, LeaseConfig};
/// # async fn demo(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let config = LeaseConfig::new("kube-system", "my-controller", "pod-a");
/// let elector = LeaderElector::new(client, config)?;
/// let ended = elector
///     .run(tokio::signal::ctrl_c(), |leadership| async move {
///         loop {
///             // ... reconcile ...
///             if !leadership.is_leader() {
///                 break; // do not touch the world any more
///             }
///             tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///         }
///     })
///     .await;
/// assert!(matches!(ended, Ended::Shutdown | Ended::LeadershipLost | Ended::WorkFinished(())));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl LeaderElector {
    /// A candidate for the Lease described by `config`. Fails if the configuration is invalid.
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, ConfigError> {
        Self::build(client, config, None)
    }

    /// Like [`new`](Self::new), recording into `metrics`.
    pub fn with_metrics(
        client: Client,
        config: LeaseConfig,
        metrics: LeaderElectionMetrics,
    ) -> Result<Self, ConfigError> {
        Self::build(client, config, Some(metrics))
    }

    fn build(
        client: Client,
        config: LeaseConfig,
        metrics: Option<LeaderElectionMetrics>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (state, _) = watch::channel(LeaderState::Unknown);
        let labels = LeaseLabels {
            name: config.name.clone(),
        };
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            shared: Arc::new(Shared {
                state,
                last_renew: Mutex::new(None),
                metrics,
                labels,
            }),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// A receiver of state changes (leading, following with the holder, lost).
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.shared.state.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> LeaderState {
        self.shared.state.borrow().clone()
    }

    /// The identity of the current leader as last observed.
    pub fn current_leader(&self) -> Option<String> {
        match &*self.shared.state.borrow() {
            LeaderState::Leading { .. } => Some(self.config.identity.clone()),
            LeaderState::Following { leader } => leader.clone(),
            LeaderState::Unknown | LeaderState::Lost => None,
        }
    }

    /// client-go's healthz watchdog: unhealthy when this process believes it leads but has not renewed for the lease
    /// duration plus `timeout` (a deadlocked leader). Healthy otherwise, including while following.
    pub fn check_health(&self, timeout: Duration) -> Result<(), Unhealthy> {
        if !matches!(*self.shared.state.borrow(), LeaderState::Leading { .. }) {
            return Ok(());
        }
        let Some(last) = *self.shared.last_renew.lock() else {
            return Ok(());
        };
        let since = last.elapsed();
        let allowed = self.config.lease_duration.saturating_add(timeout);
        if since > allowed {
            return Err(Unhealthy { since, allowed });
        }
        Ok(())
    }

    /// Contends for the Lease until it is acquired, then runs `work` with a [`Leadership`] handle while renewing.
    ///
    /// Returns when the work finishes, when leadership is lost (the work future is dropped first), or when
    /// `shutdown` completes. On a finish or shutdown the Lease is released (if `release_on_cancel`) only after the
    /// work future has been dropped. Tasks the work spawned must watch [`Leadership::lost`] or check
    /// [`Leadership::is_leader`] themselves.
    pub async fn run<S, F, Fut, T>(&self, shutdown: S, work: F) -> Ended<T>
    where
        S: Future,
        F: FnOnce(Leadership) -> Fut,
        Fut: Future<Output = T>,
    {
        let span = info_span!(
            "leader_election",
            lease = %format!("{}/{}", self.config.namespace, self.config.name),
            identity = %self.config.identity
        );
        self.run_inner(shutdown, work).instrument(span).await
    }

    async fn run_inner<S, F, Fut, T>(&self, shutdown: S, work: F) -> Ended<T>
    where
        S: Future,
        F: FnOnce(Leadership) -> Fut,
        Fut: Future<Output = T>,
    {
        // Without a watch the sender stays idle (but alive, so waiting on it pends rather than failing).
        let (_idle_sender, watched, _stop_watch) = if self.config.watch {
            let (task, rx) = spawn_lease_watch(self.api.clone(), &self.config.name);
            (None, rx, Some(AbortOnDrop(task)))
        } else {
            let (tx, rx) = watch::channel(None);
            (Some(tx), rx, None)
        };
        let mut c = Contender::new(&self.api, &self.config, &self.shared, watched);
        tokio::pin!(shutdown);

        let Some(sent) = self.acquire(&mut c, shutdown.as_mut()).await else {
            c.publish_following();
            return Ended::Shutdown;
        };

        let epoch = c.observed.as_ref().map(|o| o.transitions()).unwrap_or(0);
        let (control, leadership) = LeadershipControl::new(
            &self.config.identity,
            epoch,
            after(sent, self.config.renew_deadline),
        );
        *self.shared.last_renew.lock() = Some(sent);
        self.shared
            .state
            .send_replace(LeaderState::Leading { epoch });
        self.record_leading(true);
        info!(epoch, "became leader");

        let mut work = Box::pin(work(leadership));
        let ended = tokio::select! {
            biased;
            _ = shutdown.as_mut() => Ended::Shutdown,
            () = self.keep_leading(&mut c, &control, sent) => Ended::LeadershipLost,
            out = &mut work => Ended::WorkFinished(out),
        };
        // The guarded work stops BEFORE anything else happens (in particular before the release).
        control.revoke();
        drop(work);
        self.record_leading(false);
        *self.shared.last_renew.lock() = None;

        match ended {
            Ended::LeadershipLost => {
                warn!("lost leadership; guarded work stopped");
                self.shared.state.send_replace(LeaderState::Lost);
            }
            _ => {
                if self.config.release_on_cancel
                    && tokio::time::timeout(RELEASE_TIMEOUT, c.release())
                        .await
                        .is_err()
                {
                    warn!("releasing the Lease timed out; others take over when it expires");
                }
                c.publish_following();
            }
        }
        ended
    }

    /// Follower phase: returns the send time of the write that made us leader, or `None` on shutdown.
    async fn acquire<S: Future>(
        &self,
        c: &mut Contender<'_>,
        mut shutdown: std::pin::Pin<&mut S>,
    ) -> Option<Instant> {
        // Without a watch, a follower reads the Lease every retry period, as client-go does.
        let poll = !self.config.watch;
        loop {
            // Shutdown also interrupts a request in flight (an unreachable apiserver must not delay the exit by a
            // request timeout). If that request was a write that landed, the Lease stays ours until it expires;
            // the guarded work never ran.
            let attempt = tokio::select! {
                biased;
                _ = shutdown.as_mut() => return None,
                a = c.try_acquire_or_renew(poll) => a,
            };
            match attempt {
                Attempt::Holding { sent } => return Some(sent),
                Attempt::HeldByOther => {}
                Attempt::Failed => self.record_failure(),
            }
            c.publish_following();
            let now = Instant::now();
            // Wake at expiry of the holder's claim (exactly), or after a jittered retry period; a watch event (e.g. a
            // release) wakes us at once.
            let retry = after(now, jittered(self.config.retry_period));
            let next = match &c.observed {
                Some(o) if o.held_by_other(&self.config.identity, now) => {
                    if poll {
                        retry.min(o.expires_at())
                    } else {
                        o.expires_at()
                    }
                }
                _ => retry,
            };
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return None,
                changed = c.watched.changed() => {
                    if changed.is_ok() {
                        c.absorb_watch();
                    } else {
                        sleep_until(next).await;
                    }
                }
                () = sleep_until(next) => {}
            }
        }
    }

    /// Leader phase: renews every retry period; returns when leadership is lost (no successful renew sent within the
    /// renew deadline, or the Lease shows another holder).
    async fn keep_leading(
        &self,
        c: &mut Contender<'_>,
        control: &LeadershipControl,
        mut last_sent: Instant,
    ) {
        let me = self.config.identity.as_str();
        loop {
            let deadline = control.valid_until();
            let next = after(last_sent, self.config.retry_period);
            tokio::select! {
                biased;
                () = sleep_until(deadline) => return,
                changed = c.watched.changed(), if c.watched.has_changed().is_ok() => {
                    if changed.is_ok() {
                        c.absorb_watch();
                        if matches!(c.holder(), Some(h) if h != me) {
                            warn!(holder = ?c.holder(), "the Lease shows another holder");
                            return;
                        }
                    }
                    continue;
                }
                () = sleep_until(next) => {}
            }
            let started = Instant::now();
            let attempt = tokio::select! {
                biased;
                () = sleep_until(deadline) => return,
                a = c.try_acquire_or_renew(false) => a,
            };
            match attempt {
                Attempt::Holding { sent } => {
                    if after(sent, self.config.renew_deadline) <= Instant::now() {
                        // Proof of a write so old it no longer protects us.
                        continue;
                    }
                    control.extend(after(sent, self.config.renew_deadline));
                    *self.shared.last_renew.lock() = Some(sent);
                    last_sent = sent;
                    if let Some(m) = &self.shared.metrics {
                        m.renew_latency
                            .get_or_create(&self.shared.labels)
                            .observe(started.elapsed().as_secs_f64());
                    }
                }
                Attempt::HeldByOther => {
                    warn!(holder = ?c.holder(), "another candidate holds the Lease");
                    return;
                }
                Attempt::Failed => {
                    self.record_failure();
                    debug!("renew failed; retrying");
                    // Retry a retry period after this attempt, not after the last success.
                    last_sent = Instant::now().max(last_sent);
                }
            }
        }
    }

    fn record_leading(&self, leading: bool) {
        if let Some(m) = &self.shared.metrics {
            m.is_leader
                .get_or_create(&self.shared.labels)
                .set(i64::from(leading));
            if leading {
                m.transitions.get_or_create(&self.shared.labels).inc();
            }
        }
    }

    fn record_failure(&self) {
        if let Some(m) = &self.shared.metrics {
            m.failures.get_or_create(&self.shared.labels).inc();
        }
    }
}

/// client-go's follower jitter (`wait.JitterUntil` with factor 1.2): a retry period plus up to 1.2 more, so 2 s
/// becomes 2–4.4 s. Keeps a polling follower's load at client-go's; with the watch it only spaces out retries.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + rand::rng().random_range(0.0..1.2))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches the one Lease and publishes the latest object (`None` once deleted).
fn spawn_lease_watch(
    api: Api<Lease>,
    name: &str,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<Option<Lease>>) {
    let (tx, rx) = watch::channel(None);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                    tx.send_replace(Some(l));
                }
                Ok(watcher::Event::Delete(_)) => {
                    tx.send_replace(None);
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => debug!(error = %e, "Lease watch error; retrying with backoff"),
            }
        }
    });
    (task, rx)
}
