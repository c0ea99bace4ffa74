//! Election parameters and their validation.

use std::time::Duration;

/// The longest lease duration, renew deadline, retry period and request timeout accepted: one day. Longer values
/// would make failover take longer than any supervisor waits, and `Instant + Duration` on some platforms
/// overflows for values near `Duration::MAX`.
pub const MAX_TIMING: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a [`LeaseConfig`] is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required text field is empty.
    #[error("leader election: {0} must not be empty")]
    Empty(&'static str),
    /// A duration is shorter than one second.
    #[error("leader election: {field} must be at least 1s, got {value:?}")]
    TooShort {
        /// The field.
        field: &'static str,
        /// Its value.
        value: Duration,
    },
    /// A duration is longer than [`MAX_TIMING`].
    #[error("leader election: {field} must be at most {max:?}, got {value:?}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its value.
        value: Duration,
        /// The bound, [`MAX_TIMING`].
        max: Duration,
    },
    /// The durations are not ordered as `lease_duration > renew_deadline > 1.2 × retry_period`.
    #[error(
        "leader election: need lease-duration ({lease:?}) > renew-deadline ({renew:?}) > 1.2 × retry-period ({retry:?})"
    )]
    BadOrder {
        /// Lease duration.
        lease: Duration,
        /// Renew deadline.
        renew: Duration,
        /// Retry period.
        retry: Duration,
    },
    /// The per-request timeout leaves no room to retry within the renew deadline.
    #[error(
        "leader election: request timeout ({timeout:?}) must be shorter than renew-deadline ({renew:?})"
    )]
    RequestTimeout {
        /// The request timeout.
        timeout: Duration,
        /// The renew deadline.
        renew: Duration,
    },
}

/// Where the Lease lives, who we are, and client-go's timing parameters.
///
/// ```
/// use lease_election::LeaseConfig;
/// let config = LeaseConfig::new("kube-system", "cloud-controller-manager", "replica-a");
/// assert!(config.validate().is_ok());
/// assert_eq!(config.lease_duration.as_secs(), 15);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, unique among candidates (e.g. `<hostname>_<uuid>`).
    pub identity: String,
    /// How long others wait after last seeing the record change before taking over. client-go: 15s.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership. client-go: 10s.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews. client-go: 2s.
    pub retry_period: Duration,
    /// Timeout of each API request. Default renew_deadline / 2, so one hung request cannot cost leadership.
    pub request_timeout: Duration,
    /// Write an empty holder with a 1s duration on a graceful exit, after the guarded work has stopped, so another
    /// candidate takes over at once. Default true.
    pub release_on_cancel: bool,
    /// Watch the Lease (needs `list` and `watch` on leases besides client-go's `get`, `create`, `update`), so a
    /// released Lease is taken within milliseconds and our own timed-out writes are recognised without a conflict.
    /// Without it candidates work from their own reads and writes only. Default true.
    pub watch: bool,
}

impl LeaseConfig {
    /// client-go's defaults (15s / 10s / 2s, request timeout 5s, release on cancel) for the given Lease and identity.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        let renew_deadline = Duration::from_secs(10);
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline,
            retry_period: Duration::from_secs(2),
            request_timeout: renew_deadline / 2,
            release_on_cancel: true,
            watch: true,
        }
    }

    /// Sets lease duration, renew deadline and retry period, and the request timeout to renew_deadline / 2.
    pub fn with_timings(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.retry_period = retry_period;
        self.request_timeout = renew_deadline / 2;
        self
    }

    /// Checks client-go's rules: names non-empty; durations ≥ 1s (and ≤ [`MAX_TIMING`]); lease > renew deadline > 1.2 × retry period;
    /// request timeout < renew deadline.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("identity", &self.identity),
        ] {
            if value.is_empty() {
                return Err(ConfigError::Empty(field));
            }
        }
        for (field, value) in [
            ("lease-duration", self.lease_duration),
            ("renew-deadline", self.renew_deadline),
            ("retry-period", self.retry_period),
        ] {
            if value < Duration::from_secs(1) {
                return Err(ConfigError::TooShort { field, value });
            }
            if value > MAX_TIMING {
                return Err(ConfigError::TooLong {
                    field,
                    value,
                    max: MAX_TIMING,
                });
            }
        }
        if self.lease_duration <= self.renew_deadline
            || self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64()
        {
            return Err(ConfigError::BadOrder {
                lease: self.lease_duration,
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        if self.request_timeout.is_zero() || self.request_timeout >= self.renew_deadline {
            return Err(ConfigError::RequestTimeout {
                timeout: self.request_timeout,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }

    /// The lease duration in whole seconds as written to the Lease (at least 1).
    pub(crate) fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> LeaseConfig {
        LeaseConfig::new("ns", "lock", "me")
    }

    #[test]
    fn defaults_are_client_go() {
        let c = base();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            (
                c.lease_duration,
                c.renew_deadline,
                c.retry_period,
                c.request_timeout
            ),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2),
                Duration::from_secs(5)
            )
        );
    }

    #[test]
    fn rejects_bad_values() {
        let s = Duration::from_secs;
        assert!(matches!(
            LeaseConfig {
                identity: String::new(),
                ..base()
            }
            .validate(),
            Err(ConfigError::Empty("identity"))
        ));
        assert!(matches!(
            base().with_timings(s(10), s(10), s(2)).validate(),
            Err(ConfigError::BadOrder { .. })
        ));
        // 1.2 × 2s = 2.4s is not below 2s.
        assert!(matches!(
            base().with_timings(s(15), s(2), s(2)).validate(),
            Err(ConfigError::BadOrder { .. })
        ));
        assert!(matches!(
            base()
                .with_timings(s(15), s(10), Duration::from_millis(500))
                .validate(),
            Err(ConfigError::TooShort {
                field: "retry-period",
                ..
            })
        ));
        assert!(matches!(
            LeaseConfig {
                request_timeout: s(10),
                ..base()
            }
            .validate(),
            Err(ConfigError::RequestTimeout { .. })
        ));
        assert_eq!(base().with_timings(s(4), s(3), s(1)).validate(), Ok(()));
    }

    /// Regression (issue 21, finding 2): huge durations passed validation and then overflowed an `Instant`.
    #[test]
    fn rejects_durations_that_would_overflow_the_clock() {
        let huge = Duration::from_secs(u64::MAX / 4);
        let day = MAX_TIMING;
        for (config, field) in [
            (base().with_timings(huge, s(10), s(2)), "lease-duration"),
            (base().with_timings(day, huge, s(2)), "renew-deadline"),
            (base().with_timings(day, day / 2, huge), "retry-period"),
        ] {
            let err = config.validate();
            assert!(
                matches!(err, Err(ConfigError::TooLong { field: f, .. }) if f == field),
                "{field}: {err:?}"
            );
        }
        assert_eq!(
            base().with_timings(day, day / 2, day / 4).validate(),
            Ok(())
        );
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }
}
