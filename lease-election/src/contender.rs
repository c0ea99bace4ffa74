//! One candidate's API operations on the Lease: read, create, update, with optimistic concurrency and recognition
//! of our own timed-out writes.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tracing::{debug, warn};

use crate::elector::Shared;
use crate::record::{Observed, micro_now};
use crate::{LeaderState, LeaseConfig};

/// How many writes of unknown outcome we remember.
const MAX_UNKNOWN_WRITES: usize = 4;

pub(crate) enum Attempt {
    /// We hold the Lease; the write that proved it was sent at this instant.
    Holding { sent: Instant },
    /// Someone else holds an unexpired Lease.
    HeldByOther,
    /// The attempt failed (timeout, network, server error); try again later.
    Failed,
}

enum Write {
    Done { sent: Instant },
    Conflict,
    Failed,
}

pub(crate) struct Contender<'a> {
    api: &'a Api<Lease>,
    config: &'a LeaseConfig,
    shared: &'a Shared,
    pub observed: Option<Observed>,
    /// Writes whose outcome we never learned (timed out / connection lost): their renewTime and send time. If the
    /// Lease later shows our identity with one of these renewTimes, that write landed at that send time.
    unknown_writes: Vec<(MicroTime, Instant)>,
    pub watched: watch::Receiver<Option<Lease>>,
}

impl<'a> Contender<'a> {
    pub fn new(
        api: &'a Api<Lease>,
        config: &'a LeaseConfig,
        shared: &'a Shared,
        watched: watch::Receiver<Option<Lease>>,
    ) -> Self {
        Self {
            api,
            config,
            shared,
            observed: None,
            unknown_writes: Vec::new(),
            watched,
        }
    }

    fn me(&self) -> &str {
        &self.config.identity
    }

    /// Folds a Lease seen anywhere (watch, GET, write response) into our view.
    pub fn absorb(&mut self, lease: Option<Lease>) {
        let now = Instant::now();
        match lease {
            None => self.observed = None,
            Some(lease) => {
                if let Some(o) = Observed::observe(self.observed.as_ref(), lease, now) {
                    self.observed = Some(o);
                }
            }
        }
    }

    /// Takes the latest Lease from the watch.
    pub fn absorb_watch(&mut self) {
        let lease = self.watched.borrow_and_update().clone();
        self.absorb(lease);
    }

    pub fn holder(&self) -> Option<String> {
        self.observed
            .as_ref()
            .and_then(|o| o.holder().map(str::to_owned))
    }

    pub fn publish_following(&self) {
        let leader = self.holder();
        self.shared.state.send_if_modified(|s| {
            let next = LeaderState::Following {
                leader: leader.clone(),
            };
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    async fn get(&mut self) -> bool {
        match timeout(
            self.config.request_timeout,
            self.api.get_opt(&self.config.name),
        )
        .await
        {
            Ok(Ok(lease)) => {
                self.absorb(lease);
                true
            }
            Ok(Err(e)) => {
                debug!(error = %e, "reading the Lease failed");
                false
            }
            Err(_) => {
                debug!("reading the Lease timed out");
                false
            }
        }
    }

    /// If a write of unknown outcome is now visible as ours, the send time of that write.
    fn landed_unknown_write(&mut self) -> Option<Instant> {
        let o = self.observed.as_ref()?;
        if o.holder() != Some(self.me()) {
            return None;
        }
        let renew = o.lease.spec.as_ref().and_then(|s| s.renew_time.clone())?;
        let pos = self.unknown_writes.iter().position(|(t, _)| *t == renew)?;
        let (_, sent) = self.unknown_writes.remove(pos);
        debug!("a write that timed out had landed");
        Some(sent)
    }

    async fn write(&mut self, spec: LeaseSpec) -> Write {
        let renew_time = spec.renew_time.clone();
        let (create, lease) = match &self.observed {
            Some(o) => (
                false,
                Lease {
                    spec: Some(spec),
                    ..o.lease.clone()
                },
            ),
            None => (
                true,
                Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                },
            ),
        };
        let pp = PostParams::default();
        let sent = Instant::now();
        let result = if create {
            timeout(self.config.request_timeout, self.api.create(&pp, &lease)).await
        } else {
            timeout(
                self.config.request_timeout,
                self.api.replace(&self.config.name, &pp, &lease),
            )
            .await
        };
        match result {
            Ok(Ok(written)) => {
                self.unknown_writes.clear();
                self.absorb(Some(written));
                Write::Done { sent }
            }
            // The precondition failed: this write did not apply (an earlier unknown one may have).
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => Write::Conflict,
            other => {
                match other {
                    Ok(Err(e)) => warn!(error = %e, "writing the Lease failed"),
                    _ => {
                        warn!(timeout = ?self.config.request_timeout, "writing the Lease timed out")
                    }
                }
                if let Some(t) = renew_time {
                    if self.unknown_writes.len() == MAX_UNKNOWN_WRITES {
                        self.unknown_writes.remove(0);
                    }
                    self.unknown_writes.push((t, sent));
                }
                Write::Failed
            }
        }
    }

    /// The record we write to take or keep the Lease.
    fn our_record(&self) -> LeaseSpec {
        let now = micro_now();
        let old = self
            .observed
            .as_ref()
            .map(Observed::spec)
            .unwrap_or_default();
        let old_holder = old.holder_identity.as_deref().unwrap_or("");
        let ours = old_holder == self.me();
        LeaseSpec {
            holder_identity: Some(self.me().to_owned()),
            lease_duration_seconds: Some(self.config.lease_duration_seconds()),
            acquire_time: if ours {
                old.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..old
        }
    }

    /// Acquire (or keep) the Lease unless someone else holds it unexpired. With `refresh` the Lease is read first
    /// (a follower without a watch must, or it would notice a renew or a release only when its stale write fails).
    pub async fn try_acquire_or_renew(&mut self, refresh: bool) -> Attempt {
        if (refresh || self.observed.is_none()) && !self.get().await {
            return Attempt::Failed;
        }
        for slow_path in [false, true] {
            if let Some(sent) = self.landed_unknown_write() {
                return Attempt::Holding { sent };
            }
            if let Some(o) = &self.observed
                && o.held_by_other(self.me(), Instant::now())
            {
                return Attempt::HeldByOther;
            }
            match self.write(self.our_record()).await {
                Write::Done { sent } => return Attempt::Holding { sent },
                Write::Failed => return Attempt::Failed,
                Write::Conflict if slow_path => return Attempt::Failed,
                Write::Conflict => {
                    // Our view was stale (or our own timed-out write landed): read and decide again.
                    if let Some(m) = &self.shared.metrics {
                        m.slowpath.get_or_create(&self.shared.labels).inc();
                    }
                    if !self.get().await {
                        return Attempt::Failed;
                    }
                }
            }
        }
        Attempt::Failed
    }

    /// Gives the Lease up: empty holder, 1s duration, transitions kept. Only while the Lease is still ours.
    pub async fn release(&mut self) {
        for _ in 0..3 {
            let Some(o) = &self.observed else { return };
            if o.holder() != Some(self.me()) {
                return;
            }
            let now = micro_now();
            let spec = LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..o.spec()
            };
            match self.write(spec).await {
                Write::Done { .. } => {
                    debug!("released the Lease");
                    return;
                }
                Write::Conflict => {
                    if !self.get().await {
                        return;
                    }
                }
                Write::Failed => {}
            }
        }
    }
}
