//! What a candidate knows about the Lease, and the pure decisions made from it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use crate::clock::after;

/// The Lease as last seen, with the LOCAL monotonic time its record last changed.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub lease: Lease,
    /// The local time at which the record (holder, times, duration, transitions) was last seen to change. Expiry is
    /// judged from this, never from the remote `renewTime`, so clock skew between machines does not matter.
    pub changed_at: Instant,
}

impl Observed {
    /// Folds a freshly seen Lease into what we knew. `changed_at` only moves when the record's content changed.
    /// An older resourceVersion than the one we hold is ignored (a late watch event after our own write).
    pub fn observe(prev: Option<&Observed>, lease: Lease, now: Instant) -> Option<Observed> {
        match prev {
            Some(p) if is_older(&lease, &p.lease) => None,
            Some(p) if same_record(&p.lease, &lease) => Some(Observed {
                lease,
                changed_at: p.changed_at,
            }),
            _ => Some(Observed {
                lease,
                changed_at: now,
            }),
        }
    }

    pub fn spec(&self) -> LeaseSpec {
        self.lease.spec.clone().unwrap_or_default()
    }

    /// The current holder, `None` when empty.
    pub fn holder(&self) -> Option<&str> {
        self.lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .filter(|h| !h.is_empty())
    }

    pub fn transitions(&self) -> i32 {
        self.lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0)
    }

    /// When the holder's claim runs out, in local time.
    pub fn expires_at(&self) -> Instant {
        let secs = self
            .lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(0)
            .max(0);
        after(
            self.changed_at,
            Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
        )
    }

    /// True when someone else holds a lease that has not yet expired: we must not write.
    pub fn held_by_other(&self, me: &str, now: Instant) -> bool {
        matches!(self.holder(), Some(h) if h != me) && now < self.expires_at()
    }
}

fn same_record(a: &Lease, b: &Lease) -> bool {
    let (a, b) = (
        a.spec.clone().unwrap_or_default(),
        b.spec.clone().unwrap_or_default(),
    );
    a.holder_identity == b.holder_identity
        && a.lease_duration_seconds == b.lease_duration_seconds
        && a.acquire_time == b.acquire_time
        && a.renew_time == b.renew_time
        && a.lease_transitions == b.lease_transitions
}

/// resourceVersions are opaque, but etcd's are integers; compare them when both parse.
fn is_older(candidate: &Lease, held: &Lease) -> bool {
    let rv = |l: &Lease| {
        l.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    matches!((rv(candidate), rv(held)), (Some(c), Some(h)) if c < h)
}

/// Now, truncated to microseconds (what the API server stores), so we can recognise our own write later.
pub(crate) fn micro_now() -> MicroTime {
    let now = Timestamp::now();
    MicroTime(Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lease(rv: &str, holder: &str, renew_us: i64) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Timestamp::from_microsecond(renew_us).ok().map(MicroTime),
                ..Default::default()
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_uses_local_change_time_not_remote_timestamps() {
        let t0 = Instant::now();
        // The remote renewTime is far in the past (skewed clock): irrelevant.
        let o =
            Observed::observe(None, lease("1", "a", 0), t0).unwrap_or_else(|| panic!("observed"));
        assert!(o.held_by_other("b", t0 + Duration::from_secs(14)));
        assert!(!o.held_by_other("b", t0 + Duration::from_secs(15)));
        assert!(!o.held_by_other("a", t0));

        // Same record with a new resourceVersion (e.g. a label change): changed_at stays.
        let t1 = t0 + Duration::from_secs(5);
        let o2 = Observed::observe(Some(&o), lease("2", "a", 0), t1)
            .unwrap_or_else(|| panic!("observed"));
        assert_eq!(o2.changed_at, t0);
        // A renew moves it.
        let o3 = Observed::observe(Some(&o2), lease("3", "a", 1), t1)
            .unwrap_or_else(|| panic!("observed"));
        assert_eq!(o3.changed_at, t1);
        // A late, older event is ignored.
        assert!(Observed::observe(Some(&o3), lease("2", "b", 9), t1).is_none());
    }

    #[test]
    fn micro_now_has_microsecond_precision() {
        let t = micro_now();
        assert_eq!(t.0.subsec_nanosecond() % 1000, 0);
    }
}
