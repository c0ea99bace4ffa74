//! Checked arithmetic where a configured or remote duration meets the monotonic clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::MAX_TIMING;

/// `t + d` without the panic of `Instant + Duration` on overflow. Configured durations cannot overflow:
/// [`LeaseConfig::validate`](crate::LeaseConfig::validate) bounds them by [`MAX_TIMING`] with a typed
/// [`ConfigError::TooLong`](crate::ConfigError::TooLong) naming the field. A duration read from a Lease (another
/// candidate's `leaseDurationSeconds`, up to 68 years) that does not fit saturates to `t + MAX_TIMING`, and on a clock
/// at the very end of its range to `t` itself (a deadline already passed: leadership is never extended on a failed
/// computation).
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(MAX_TIMING))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_panics_and_saturates() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + MAX_TIMING);
        let sixty_eight_years = Duration::from_secs(u64::from(i32::MAX.unsigned_abs()));
        assert!(after(now, sixty_eight_years) > now + MAX_TIMING);
        assert_eq!(
            after(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
    }
}
