//! Shared helpers: candidates with an audit log of the instants at which they believed they were leader.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lease_election::{Ended, LeaderElectionMetrics, LeaderElector, LeaseConfig};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const NS: &str = "default";

/// Short timings for tests that provoke failovers: lease 2s, renew deadline 1.5s, retry 1s.
pub fn fast(name: &str, identity: &str) -> LeaseConfig {
    LeaseConfig::new(NS, name, identity).with_timings(
        Duration::from_secs(2),
        Duration::from_millis(1500),
        Duration::from_secs(1),
    )
}

/// One sample: in leadership session `session`, candidate `who` checked `is_leader()` at `at` and got true.
#[derive(Clone, Debug)]
pub struct Sample {
    pub session: usize,
    pub who: String,
    pub at: Instant,
}

/// Every moment any candidate acted as leader.
#[derive(Clone, Default)]
pub struct Audit {
    samples: Arc<Mutex<Vec<Sample>>>,
    sessions: Arc<AtomicUsize>,
}

impl Audit {
    /// (who, first, last) of each leadership session, ordered by start.
    pub fn sessions(&self) -> Vec<(String, Instant, Instant)> {
        let samples = self.samples.lock().clone();
        let mut out: Vec<(usize, String, Instant, Instant)> = Vec::new();
        for s in samples {
            match out.iter_mut().find(|(id, ..)| *id == s.session) {
                Some(e) => {
                    e.2 = e.2.min(s.at);
                    e.3 = e.3.max(s.at);
                }
                None => out.push((s.session, s.who.clone(), s.at, s.at)),
            }
        }
        out.sort_by_key(|e| e.2);
        out.into_iter().map(|(_, w, a, b)| (w, a, b)).collect()
    }

    /// Panics if two sessions overlap in time.
    pub fn assert_no_overlap(&self) {
        let sessions = self.sessions();
        for pair in sessions.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.2 < b.1,
                "leadership overlap: {} acted until {:?} after {} started at {:?}\nall sessions: {sessions:#?}",
                a.0,
                a.2,
                b.0,
                b.1
            );
        }
    }
}

/// A running candidate.
pub struct Candidate {
    pub elector: LeaderElector,
    pub metrics: LeaderElectionMetrics,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Ended<()>>,
}

impl Candidate {
    /// Starts a candidate whose work samples `is_leader()` every 5 ms into `audit`.
    pub fn start(client: kube::Client, config: LeaseConfig, audit: &Audit) -> Candidate {
        let metrics = LeaderElectionMetrics::default();
        let elector = LeaderElector::with_metrics(client, config.clone(), metrics.clone())
            .unwrap_or_else(|e| panic!("config: {e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let audit = audit.clone();
        let who = config.identity.clone();
        let e = elector.clone();
        let task = tokio::spawn(async move {
            e.run(stopped, move |leadership| async move {
                let session = audit.sessions.fetch_add(1, Ordering::SeqCst);
                loop {
                    if !leadership.is_leader() {
                        leadership.lost().await;
                        return;
                    }
                    audit.samples.lock().push(Sample {
                        session,
                        who: who.clone(),
                        at: Instant::now(),
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
        });
        Candidate {
            elector,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    pub fn is_leading(&self) -> bool {
        matches!(
            self.elector.state(),
            lease_election::LeaderState::Leading { .. }
        )
    }

    /// Graceful shutdown: the work stops, then the Lease is released.
    pub async fn shutdown(mut self) -> Ended<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task
            .await
            .unwrap_or_else(|e| panic!("candidate task: {e}"))
    }

    /// A crash: the task is aborted, nothing is released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Waits until `f` is true, polling every 10 ms (takeover times are measured around it), or panics after `limit`
/// with `what`.
pub async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    test_support::eventually_every(limit, Duration::from_millis(10), what, async || {
        f().then_some(())
    })
    .await;
}

/// The index of the single leading candidate, if exactly one leads.
pub fn single_leader(candidates: &[Candidate]) -> Option<usize> {
    let leading: Vec<usize> = (0..candidates.len())
        .filter(|i| candidates[*i].is_leading())
        .collect();
    (leading.len() == 1).then(|| leading[0])
}

/// Starts `a` and waits until it leads, then starts `b` and waits until it follows `a`.
pub async fn leader_and_follower(
    (a_client, a_config): (kube::Client, LeaseConfig),
    (b_client, b_config): (kube::Client, LeaseConfig),
    audit: &Audit,
) -> (Candidate, Candidate) {
    let a_id = a_config.identity.clone();
    let a = Candidate::start(a_client, a_config, audit);
    wait_until(
        Duration::from_secs(10),
        "the first candidate to lead",
        || a.is_leading(),
    )
    .await;
    let b = Candidate::start(b_client, b_config, audit);
    wait_until(
        Duration::from_secs(10),
        "the second candidate to follow",
        || b.elector.current_leader().as_deref() == Some(a_id.as_str()),
    )
    .await;
    (a, b)
}
