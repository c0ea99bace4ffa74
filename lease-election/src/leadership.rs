//! The handle given to guarded work: our fencing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

/// Handed to the work that runs while leading. Cheap to clone; give a clone to every task that acts as leader.
///
/// [`is_leader`](Self::is_leader) is the check to make right before a side effect: it turns false at the *send* time
/// of the last successful renew plus the renew deadline, which is before any other candidate can acquire (they wait
/// at least the lease duration after they saw that renew). [`epoch`](Self::epoch) (the Lease's `leaseTransitions`
/// after we acquired it) tags writes so a receiver can reject a stale leader's.
#[derive(Debug, Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
    lost: watch::Receiver<bool>,
}

#[derive(Debug)]
struct Inner {
    identity: String,
    epoch: i32,
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
}

/// The elector's side of a [`Leadership`].
#[derive(Debug)]
pub(crate) struct LeadershipControl {
    inner: Arc<Inner>,
    lost_tx: watch::Sender<bool>,
}

impl LeadershipControl {
    pub fn new(identity: &str, epoch: i32, valid_until: Instant) -> (Self, Leadership) {
        let inner = Arc::new(Inner {
            identity: identity.to_owned(),
            epoch,
            valid_until: Mutex::new(valid_until),
            lost: AtomicBool::new(false),
        });
        let (lost_tx, lost) = watch::channel(false);
        (
            Self {
                inner: Arc::clone(&inner),
                lost_tx,
            },
            Leadership { inner, lost },
        )
    }

    /// A renew sent at `sent` succeeded: leadership is safe until `sent + renew_deadline`.
    pub fn extend(&self, valid_until: Instant) {
        let mut v = self.inner.valid_until.lock();
        if valid_until > *v {
            *v = valid_until;
        }
    }

    pub fn valid_until(&self) -> Instant {
        *self.inner.valid_until.lock()
    }

    /// Leadership is gone: every clone sees it at once.
    pub fn revoke(&self) {
        self.inner.lost.store(true, Ordering::SeqCst);
        let _ = self.lost_tx.send(true);
    }
}

impl Drop for LeadershipControl {
    fn drop(&mut self) {
        self.revoke();
    }
}

impl Leadership {
    /// True while this process is still safely leader: not revoked, and within the renew deadline of the send time
    /// of the last successful renew. Check it right before every side effect.
    pub fn is_leader(&self) -> bool {
        !self.inner.lost.load(Ordering::SeqCst) && Instant::now() < *self.inner.valid_until.lock()
    }

    /// Until when (local monotonic time) leadership is known to be safe, absent a further renew.
    pub fn valid_until(&self) -> Instant {
        *self.inner.valid_until.lock()
    }

    /// The fencing epoch: the Lease's `leaseTransitions` when we acquired it. Grows with each change of holder.
    pub fn epoch(&self) -> i32 {
        self.inner.epoch
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// Completes when leadership is lost (or the elector stops). Use it to stop tasks the work spawned.
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        // An error means the elector is gone, which also ends leadership.
        let _ = rx.wait_for(|lost| *lost).await;
    }
}
