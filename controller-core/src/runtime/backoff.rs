//! Per-object exponential backoff (upstream's workqueue rate limiter: 5s doubling to 300s by default).

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use parking_lot::Mutex;

/// Exponential backoff with jitter, tracked per object key, reset on success.
pub struct PerObjectBackoff {
    builder: ExponentialBuilder,
    max: Duration,
    state: Mutex<HashMap<String, ExponentialBackoff>>,
}

impl std::fmt::Debug for PerObjectBackoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerObjectBackoff")
            .field("failing", &self.state.lock().len())
            .finish()
    }
}

impl PerObjectBackoff {
    /// Delays start at `base` and double up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(base)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            max,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before retrying `key` after one more failure.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut state = self.state.lock();
        let backoff = state
            .entry(key.to_owned())
            .or_insert_with(|| self.builder.build());
        // Jitter may add up to one more `base`; never exceed `max` by more than that.
        backoff.next().unwrap_or(self.max)
    }

    /// Forgets the failures of `key`.
    pub fn reset(&self, key: &str) {
        self.state.lock().remove(key);
    }

    /// Forgets the failures of every key `keep` rejects (e.g. objects deleted while failing, which never succeed
    /// and would otherwise be remembered for the life of the process).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.state.lock().retain(|key, _| keep(key));
    }

    /// How many keys are failing.
    pub fn failing(&self) -> usize {
        self.state.lock().len()
    }
}

impl Default for PerObjectBackoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_per_key_and_resets() {
        let b = PerObjectBackoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let first = b.next_delay("a");
        let mut last = first;
        for _ in 0..6 {
            last = b.next_delay("a");
        }
        assert!(first < Duration::from_secs(3), "{first:?}");
        assert!(
            last >= Duration::from_secs(8) && last <= Duration::from_secs(17),
            "{last:?}"
        );
        // Another key is independent.
        assert!(b.next_delay("b") < Duration::from_secs(3));
        b.reset("a");
        assert!(b.next_delay("a") < Duration::from_secs(3));
        assert_eq!(b.failing(), 2);
        b.retain(|key| key == "b");
        assert_eq!(b.failing(), 1);
        // "a" starts over; "b" kept its history.
        assert!(b.next_delay("a") < Duration::from_secs(3));
        assert!(b.next_delay("b") >= Duration::from_secs(1));
    }
}
