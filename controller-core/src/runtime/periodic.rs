//! Controllers that work in passes over a whole cache rather than per object (cloud-node-lifecycle, route).
//!
//! [`Periodic`] holds a [`PeriodicPass`] with the metrics and the shutdown signal, and offers the pieces such a
//! loop is made of, written once:
//! * [`wait_until_ready`](Periodic::wait_until_ready): never pass over a cache that has not finished its initial
//!   list (an empty cache is not "no objects"), abandoned on shutdown;
//! * [`ticker`]: one pass per period, delayed rather than bursting after a late pass;
//! * [`run_pass`](Periodic::run_pass): one pass, timed and counted in the shared reconcile metrics
//!   (`cloud_controller_reconcile_total{controller, result}`, `cloud_controller_reconcile_duration_seconds`) and
//!   as one item of the pass's work queue (`workqueue_*{name}`);
//! * [`throttled_until`](Periodic::throttled_until): when the cloud's retry-after lets the next pass start;
//! * [`unless_shutdown`](Periodic::unless_shutdown): any wait, abandoned on shutdown.
//!
//! [`run`](Periodic::run) is the plain loop built from them. A controller with more triggers than a timer builds
//! its own driver from the same pieces (the route controller does).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{error, info};

use super::{CancellationToken, RuntimeMetrics, Synced};

/// The shortest period [`ticker`] and [`Periodic::run`] accept; shorter ones are raised to it.
pub const MIN_PERIOD: Duration = Duration::from_millis(10);

/// How one pass ended, for the metrics and for scheduling the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// The cloud throttled a call and asked to wait this long before the next pass.
    pub retry_after: Option<Duration>,
    /// Something failed or was left undone; the pass should be retried.
    pub incomplete: bool,
}

impl PassOutcome {
    /// The `result` label of the reconcile metrics: `throttled`, `transient` (incomplete) or `success`.
    pub fn result_label(&self) -> &'static str {
        match (self.retry_after, self.incomplete) {
            (Some(_), _) => "throttled",
            (None, true) => "transient",
            (None, false) => "success",
        }
    }
}

/// One pass of a periodic controller.
pub trait PeriodicPass: Send + Sync + 'static {
    /// The controller's name, as upstream names it; used in logs and metrics.
    fn name(&self) -> &'static str;

    /// The `name` label of the pass's `workqueue_*` metrics (a pass is one item): upstream's queue name where
    /// there is one (`Routes`), else [`name`](Self::name).
    fn queue_name(&self) -> &'static str {
        self.name()
    }

    /// Brings the world in line with the cache once. A pass is abandoned (dropped) on shutdown, so each of its
    /// steps must be safe to redo: the next pass, or the next leader, does it again.
    fn pass(&self) -> impl Future<Output = PassOutcome> + Send;
}

/// `at + delay`, saturating a year ahead instead of panicking on absurd configured durations.
pub(crate) fn later(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay)
        .unwrap_or_else(|| at + Duration::from_secs(60 * 60 * 24 * 365))
}

/// A ticker firing at once, then every `period` (at least [`MIN_PERIOD`]); after a late tick the next one is
/// a full period later (no burst of catch-up ticks).
pub fn ticker(period: Duration) -> Interval {
    let mut ticker = tokio::time::interval(period.max(MIN_PERIOD));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// A [`PeriodicPass`] with what running it needs: the shared metrics and the shutdown signal. Cheap to clone.
pub struct Periodic<P> {
    pass: Arc<P>,
    metrics: RuntimeMetrics,
    shutdown: CancellationToken,
}

impl<P> Clone for Periodic<P> {
    fn clone(&self) -> Self {
        Self {
            pass: Arc::clone(&self.pass),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<P: PeriodicPass> fmt::Debug for Periodic<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Periodic")
            .field("controller", &self.pass.name())
            .field("stopped", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<P: PeriodicPass> Periodic<P> {
    /// `pass`, recorded in `metrics`, until `shutdown` fires.
    pub fn new(pass: P, metrics: RuntimeMetrics, shutdown: CancellationToken) -> Self {
        Self {
            pass: Arc::new(pass),
            metrics,
            shutdown,
        }
    }

    /// The pass itself.
    pub fn inner(&self) -> &P {
        &self.pass
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// `fut`'s output, or `None` (and `fut` dropped) once shutdown fires; shutdown wins a tie.
    pub async fn unless_shutdown<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => None,
            out = fut => Some(out),
        }
    }

    /// Waits until the cache behind `synced` has its initial list. False when shutdown fired first, or the cache
    /// was dropped before its list (logged): the controller should stop.
    pub async fn wait_until_ready(&self, mut synced: Synced) -> bool {
        match self.unless_shutdown(synced.wait()).await {
            None => false,
            Some(true) => true,
            Some(false) => {
                error!(
                    controller = self.pass.name(),
                    "the cache stopped before its initial list; stopping"
                );
                false
            }
        }
    }

    /// One pass, timed and counted in the reconcile metrics under the controller's name. Owns what it needs, so
    /// it can be spawned.
    pub fn run_pass(&self) -> impl Future<Output = PassOutcome> + Send + 'static {
        let pass = Arc::clone(&self.pass);
        let metrics = self.metrics.clone();
        let queue = metrics.work_queue(pass.queue_name());
        async move {
            let started = std::time::Instant::now();
            queue.started("pass");
            let outcome = pass.pass().await;
            queue.finished("pass");
            if outcome != PassOutcome::default() {
                queue.retried();
            }
            metrics.record(
                pass.name(),
                outcome.result_label(),
                started.elapsed().as_secs_f64(),
            );
            outcome
        }
    }

    /// When a pass that ended (at `now`) with `outcome` lets the next one start, if the cloud throttled it.
    pub fn throttled_until(&self, outcome: &PassOutcome, now: Instant) -> Option<Instant> {
        let pause = outcome.retry_after?;
        info!(
            controller = self.pass.name(),
            ?pause,
            "the cloud throttles; pausing"
        );
        Some(later(now, pause))
    }

    /// The plain loop: once `store` is ready, a pass every `period` ([`ticker`]), pausing after a throttled pass
    /// for the cloud's retry-after, until shutdown (which abandons a running pass or pause).
    pub async fn run(self, synced: Synced, period: Duration) {
        if !self.wait_until_ready(synced).await {
            return;
        }
        let mut ticker = ticker(period);
        loop {
            if self.unless_shutdown(ticker.tick()).await.is_none() {
                return;
            }
            let Some(outcome) = self.unless_shutdown(self.run_pass()).await else {
                return;
            };
            if let Some(resume) = self.throttled_until(&outcome, Instant::now())
                && self
                    .unless_shutdown(tokio::time::sleep_until(resume))
                    .await
                    .is_none()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use parking_lot::Mutex;
    use tokio::sync::watch;

    use super::*;

    const NAME: &str = "test-periodic";
    const PERIOD: Duration = Duration::from_secs(1);

    /// Answers each pass with the next scripted outcome (then success), or never when `hang` is set.
    #[derive(Default)]
    struct Script {
        outcomes: Mutex<VecDeque<PassOutcome>>,
        started: Mutex<Vec<Instant>>,
        hang: bool,
    }

    impl PeriodicPass for Script {
        fn name(&self) -> &'static str {
            NAME
        }

        async fn pass(&self) -> PassOutcome {
            self.started.lock().push(Instant::now());
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.outcomes.lock().pop_front().unwrap_or_default()
        }
    }

    /// A cache that has its initial list (keep the sender: dropping it means the cache is gone).
    fn ready_store() -> (Synced, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(true);
        (Synced::from(rx), tx)
    }

    /// A cache that never gets its initial list while the sender lives.
    fn unsynced_store() -> (Synced, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (Synced::from(rx), tx)
    }

    fn throttled(after: Duration) -> PassOutcome {
        PassOutcome {
            retry_after: Some(after),
            incomplete: true,
        }
    }

    /// Starts `script` in a task; returns it with the pass starts, the metrics and the shutdown signal.
    fn start(
        script: Script,
        store: Synced,
        period: Duration,
    ) -> (
        tokio::task::JoinHandle<()>,
        Periodic<Script>,
        RuntimeMetrics,
    ) {
        let metrics = RuntimeMetrics::default();
        let periodic = Periodic::new(script, metrics.clone(), CancellationToken::new());
        let task = tokio::spawn(periodic.clone().run(store, period));
        (task, periodic, metrics)
    }

    fn gaps(periodic: &Periodic<Script>) -> Vec<Duration> {
        let started = periodic.inner().started.lock();
        started.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Stops the loop and asserts that it ends at once, whatever it was waiting for.
    async fn stops_at_once(task: tokio::task::JoinHandle<()>, periodic: &Periodic<Script>) {
        periodic.shutdown().cancel();
        // Paused time: a loop that ignored shutdown would sleep on, and the clock would jump to this timeout.
        let ended = tokio::time::timeout(Duration::from_millis(1), task).await;
        assert!(
            matches!(ended, Ok(Ok(()))),
            "the loop did not stop on shutdown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_pass_pauses_for_the_retry_after_and_every_pass_is_counted() {
        let script = Script::default();
        script.outcomes.lock().extend([
            PassOutcome::default(),
            throttled(Duration::from_secs(30)),
            PassOutcome {
                retry_after: None,
                incomplete: true,
            },
        ]);
        let (store, _writer) = ready_store();
        let (task, periodic, metrics) = start(script, store.clone(), PERIOD);
        tokio::time::sleep(Duration::from_millis(33_500)).await;
        // Passes at 0s, 1s (throttled), 31s, 32s, 33s: the pause replaced the ticks in between.
        assert_eq!(
            gaps(&periodic),
            [1, 30, 1, 1].map(Duration::from_secs),
            "passes should pause for the cloud's retry-after"
        );
        assert_eq!(metrics.count(NAME, "success"), 3);
        assert_eq!(metrics.count(NAME, "throttled"), 1);
        assert_eq!(metrics.count(NAME, "transient"), 1);

        // Shutdown during a pause ends it, and no pass starts after it.
        periodic
            .inner()
            .outcomes
            .lock()
            .push_back(throttled(Duration::from_secs(3600)));
        tokio::time::sleep(PERIOD).await;
        assert_eq!(metrics.count(NAME, "throttled"), 2);
        stops_at_once(task, &periodic).await;
        let passes = periodic.inner().started.lock().len();
        tokio::time::sleep(Duration::from_secs(7200)).await;
        assert_eq!(periodic.inner().started.lock().len(), passes);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait_for_the_cache_the_ticker_and_a_running_pass() {
        // The cache never becomes ready: no pass, and shutdown ends the wait.
        let (store, writer) = unsynced_store();
        let (task, periodic, _) = start(Script::default(), store, PERIOD);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(periodic.inner().started.lock().is_empty());
        stops_at_once(task, &periodic).await;

        // A cache dropped before its list stops the loop by itself.
        let (store, dropped) = unsynced_store();
        drop(dropped);
        let (task, _, _) = start(Script::default(), store, PERIOD);
        let ended = tokio::time::timeout(Duration::from_millis(1), task).await;
        assert!(
            matches!(ended, Ok(Ok(()))),
            "a dropped cache did not stop it"
        );
        drop(writer);

        // Waiting for the next tick.
        let (store, _writer) = ready_store();
        let (task, periodic, _) = start(Script::default(), store, Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(periodic.inner().started.lock().len(), 1);
        stops_at_once(task, &periodic).await;

        // In a pass that never ends: abandoned, and not counted.
        let (store, _writer) = ready_store();
        let script = Script {
            hang: true,
            ..Script::default()
        };
        let (task, periodic, metrics) = start(script, store, PERIOD);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(periodic.inner().started.lock().len(), 1);
        stops_at_once(task, &periodic).await;
        assert_eq!(metrics.count(NAME, "success"), 0);
    }
}
