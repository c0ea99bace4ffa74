//! Fault injection: errors for the next N calls or until cleared, added latency, and token-bucket throttling.

use std::collections::HashMap;
use std::time::Duration;

use cloudprovider_api::CloudError;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cloud::{FakeCloud, lock};
use crate::method::Method;

/// The error an injected fault produces. [`CloudError`] is not `Clone`, so a fault stores this description and
/// builds a fresh error for every failing call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// [`CloudError::Transient`].
    Transient,
    /// [`CloudError::Throttled`] with this retry-after.
    Throttled(Duration),
    /// [`CloudError::NotFound`] of the method's [object kind](Method::object_kind), with the call's key as id.
    NotFound,
    /// [`CloudError::InvalidInput`] naming this field.
    InvalidInput(String),
    /// [`CloudError::ImplementedElsewhere`].
    ImplementedElsewhere,
    /// [`CloudError::NotImplemented`] naming the method.
    NotImplemented,
}

impl FaultKind {
    /// The error this fault produces for a call of `method` with `key`.
    pub fn to_error(&self, method: Method, key: &str) -> CloudError {
        match self {
            FaultKind::Transient => {
                CloudError::transient(format!("injected fault in {method}({key})"))
            }
            FaultKind::Throttled(retry_after) => CloudError::throttled(
                *retry_after,
                format!("injected throttling of {method}({key})"),
            ),
            FaultKind::NotFound => CloudError::not_found(method.object_kind(), key),
            FaultKind::InvalidInput(field) => CloudError::invalid_input(
                field.clone(),
                format!("injected fault in {method}({key})"),
            ),
            FaultKind::ImplementedElsewhere => {
                CloudError::ImplementedElsewhere(format!("injected fault in {method}({key})"))
            }
            FaultKind::NotImplemented => CloudError::NotImplemented(method.as_str()),
        }
    }
}

/// A token bucket: on average at most `per_second` calls a second, with bursts of up to `burst` calls. A call
/// beyond that fails with [`CloudError::Throttled`] (nothing else happens: the call has no effect).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// Calls refilled per second. Must be positive and finite.
    pub per_second: f64,
    /// Bucket size, the most calls allowed at once (0 counts as 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// A fixed retry-after to report; by default the time until the next token.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

fn default_burst() -> u32 {
    1
}

impl RateLimit {
    /// `per_second` calls a second with bursts of `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst,
            retry_after_ms: None,
        }
    }

    /// Reports this fixed retry-after instead of the time until the next token.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after_ms = Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(format!(
                "perSecond must be positive and finite, got {}",
                self.per_second
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        let tokens = f64::from(limit.burst.max(1));
        Self {
            limit,
            tokens,
            last: now,
        }
    }

    /// Takes a token, or says how long to wait for one.
    fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        let rate = self.limit.per_second;
        let burst = f64::from(self.limit.burst.max(1));
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if let Some(ms) = self.limit.retry_after_ms {
            return Err(Duration::from_millis(ms));
        }
        let wait = if rate > 0.0 {
            (1.0 - self.tokens) / rate
        } else {
            1.0
        };
        // Round up to whole milliseconds so a caller waiting that long finds a token.
        let wait = Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(1));
        let ms = u64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
        Err(Duration::from_millis(ms.max(1)))
    }
}

#[derive(Debug)]
struct Rule {
    method: Method,
    key: Option<String>,
    kind: FaultKind,
    /// `None`: until cleared.
    remaining: Option<u32>,
}

/// Why a call is refused before it runs.
#[derive(Clone, Debug)]
pub(crate) enum Denial {
    Throttled(Duration),
    Fault(FaultKind),
}

impl Denial {
    pub(crate) fn to_error(&self, method: Method, key: &str) -> CloudError {
        match self {
            Denial::Throttled(retry_after) => CloudError::throttled(
                *retry_after,
                format!("rate limit exceeded calling {method}; retry after {retry_after:?}"),
            ),
            Denial::Fault(kind) => kind.to_error(method, key),
        }
    }
}

/// All fault-injection settings of one fake cloud.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<Rule>,
    global_latency: Duration,
    method_latency: HashMap<Method, Duration>,
    global_limit: Option<Bucket>,
    method_limits: HashMap<Method, Bucket>,
}

impl Faults {
    /// The latency to add to a call of `method`: its own if set, else the global one.
    pub(crate) fn latency(&self, method: Method) -> Duration {
        self.method_latency
            .get(&method)
            .copied()
            .unwrap_or(self.global_latency)
    }

    /// Throttling, then a per-key fault for `key`, then a method-wide fault.
    pub(crate) fn check(&mut self, method: Method, key: &str, now: Instant) -> Option<Denial> {
        if let Some(denied) = self.throttle(method, now) {
            return Some(denied);
        }
        self.take_keyed(method, key)
            .or_else(|| self.take_method_wide(method))
    }

    /// Throttling and method-wide faults only (per-key faults are taken with [`take_keyed`](Self::take_keyed)).
    pub(crate) fn check_method(&mut self, method: Method, now: Instant) -> Option<Denial> {
        if let Some(denied) = self.throttle(method, now) {
            return Some(denied);
        }
        self.take_method_wide(method)
    }

    fn throttle(&mut self, method: Method, now: Instant) -> Option<Denial> {
        if let Some(bucket) = self.global_limit.as_mut()
            && let Err(wait) = bucket.admit(now)
        {
            return Some(Denial::Throttled(wait));
        }
        if let Some(bucket) = self.method_limits.get_mut(&method)
            && let Err(wait) = bucket.admit(now)
        {
            return Some(Denial::Throttled(wait));
        }
        None
    }

    fn take_method_wide(&mut self, method: Method) -> Option<Denial> {
        self.take(|r| r.method == method && r.key.is_none())
    }

    /// A per-key fault of `method` for `key`, consuming one of its remaining failures.
    pub(crate) fn take_keyed(&mut self, method: Method, key: &str) -> Option<Denial> {
        self.take(|r| r.method == method && r.key.as_deref() == Some(key))
    }

    fn take(&mut self, matches: impl Fn(&Rule) -> bool) -> Option<Denial> {
        let idx = self.rules.iter().position(matches)?;
        let rule = self.rules.get_mut(idx)?;
        let kind = rule.kind.clone();
        if let Some(left) = rule.remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.rules.remove(idx);
            }
        }
        Some(Denial::Fault(kind))
    }

    fn add(
        &mut self,
        method: Method,
        key: Option<String>,
        kind: FaultKind,
        remaining: Option<u32>,
    ) {
        if remaining == Some(0) {
            return;
        }
        self.rules.push(Rule {
            method,
            key,
            kind,
            remaining,
        });
    }

    pub(crate) fn set_global_latency(&mut self, latency: Duration) {
        self.global_latency = latency;
    }

    pub(crate) fn set_latency(&mut self, method: Method, latency: Option<Duration>) {
        match latency {
            Some(l) => self.method_latency.insert(method, l),
            None => self.method_latency.remove(&method),
        };
    }

    pub(crate) fn set_rate_limit(&mut self, limit: Option<RateLimit>, now: Instant) {
        self.global_limit = limit.map(|l| Bucket::new(l, now));
    }

    pub(crate) fn set_method_rate_limit(
        &mut self,
        method: Method,
        limit: Option<RateLimit>,
        now: Instant,
    ) {
        match limit {
            Some(l) => self.method_limits.insert(method, Bucket::new(l, now)),
            None => self.method_limits.remove(&method),
        };
    }
}

/// Fault injection.
impl FakeCloud {
    /// Fails the next `n` calls of `method` with `kind`; later calls behave normally again. Faults queue up: a
    /// second `fail_next` takes effect after the first is used up.
    pub fn fail_next(&self, method: Method, n: u32, kind: FaultKind) {
        lock(&self.inner.faults).add(method, None, kind, Some(n));
    }

    /// Fails every call of `method` with `kind` until [`clear_faults`](Self::clear_faults).
    pub fn fail_always(&self, method: Method, kind: FaultKind) {
        lock(&self.inner.faults).add(method, None, kind, None);
    }

    /// Fails the next `n` calls of `method` whose key is `key` (see [`Method`] for the keys), e.g. only the
    /// calls about one node. Per-key faults are used before method-wide ones.
    pub fn fail_next_for(&self, method: Method, key: impl Into<String>, n: u32, kind: FaultKind) {
        lock(&self.inner.faults).add(method, Some(key.into()), kind, Some(n));
    }

    /// Fails every call of `method` whose key is `key` until [`clear_faults`](Self::clear_faults).
    pub fn fail_always_for(&self, method: Method, key: impl Into<String>, kind: FaultKind) {
        lock(&self.inner.faults).add(method, Some(key.into()), kind, None);
    }

    /// Removes the pending faults (method-wide and per-key) of `method`.
    pub fn clear_faults(&self, method: Method) {
        lock(&self.inner.faults)
            .rules
            .retain(|r| r.method != method);
    }

    /// Removes every pending fault, latency and rate limit.
    pub fn reset_faults(&self) {
        *lock(&self.inner.faults) = Faults::default();
    }

    /// How many more calls of `method` will fail from method-wide faults (`None`: failing until cleared).
    pub fn pending_faults(&self, method: Method) -> Option<u32> {
        lock(&self.inner.faults)
            .rules
            .iter()
            .filter(|r| r.method == method && r.key.is_none())
            .try_fold(0u32, |n, r| r.remaining.map(|left| n.saturating_add(left)))
    }

    /// Adds `latency` to every call of `method` (replacing the global latency for it). Zero removes the delay;
    /// [`clear_latency`](Self::clear_latency) goes back to the global value.
    pub fn set_latency(&self, method: Method, latency: Duration) {
        lock(&self.inner.faults).set_latency(method, Some(latency));
    }

    /// Makes `method` use the global latency again.
    pub fn clear_latency(&self, method: Method) {
        lock(&self.inner.faults).set_latency(method, None);
    }

    /// Adds `latency` to every call of a method without a latency of its own.
    pub fn set_global_latency(&self, latency: Duration) {
        lock(&self.inner.faults).set_global_latency(latency);
    }

    /// Limits the rate of all calls together (`None` removes the limit). The bucket starts full.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        lock(&self.inner.faults).set_rate_limit(limit, Instant::now());
    }

    /// Limits the rate of calls of `method` (`None` removes the limit). Applies in addition to the global one.
    pub fn set_method_rate_limit(&self, method: Method, limit: Option<RateLimit>) {
        lock(&self.inner.faults).set_method_rate_limit(method, limit, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_consumed_in_order_and_keyed_first() {
        let mut f = Faults::default();
        let now = Instant::now();
        f.add(Method::Master, None, FaultKind::Transient, Some(1));
        f.add(Method::Master, None, FaultKind::NotFound, Some(1));
        f.add(
            Method::Master,
            Some("k".into()),
            FaultKind::NotImplemented,
            Some(1),
        );
        f.add(Method::Zone, None, FaultKind::Transient, Some(0));
        let kind = |d: Option<Denial>| match d {
            Some(Denial::Fault(k)) => Some(k),
            _ => None,
        };
        assert_eq!(kind(f.check(Method::Zone, "", now)), None);
        assert_eq!(
            kind(f.check(Method::Master, "k", now)),
            Some(FaultKind::NotImplemented)
        );
        assert_eq!(
            kind(f.check(Method::Master, "k", now)),
            Some(FaultKind::Transient)
        );
        assert_eq!(
            kind(f.check(Method::Master, "other", now)),
            Some(FaultKind::NotFound)
        );
        assert_eq!(kind(f.check(Method::Master, "k", now)), None);
        assert!(f.rules.is_empty());
    }

    #[test]
    fn bucket_refills_and_computes_retry_after() {
        let start = Instant::now();
        let mut b = Bucket::new(RateLimit::new(2.0, 2), start);
        assert_eq!(b.admit(start), Ok(()));
        assert_eq!(b.admit(start), Ok(()));
        assert_eq!(b.admit(start), Err(Duration::from_millis(500)));
        assert_eq!(b.admit(start + Duration::from_millis(500)), Ok(()));
        let mut fixed = Bucket::new(
            RateLimit::new(1.0, 0).with_retry_after(Duration::from_secs(7)),
            start,
        );
        assert_eq!(fixed.admit(start), Ok(()));
        assert_eq!(fixed.admit(start), Err(Duration::from_secs(7)));
        let mut broken = Bucket::new(RateLimit::new(f64::NAN, 1), start);
        assert_eq!(broken.admit(start), Ok(()));
        assert_eq!(
            broken.admit(start + Duration::from_secs(100)),
            Err(Duration::from_secs(1))
        );
    }

    #[test]
    fn fault_kinds_map_to_errors() {
        let m = Method::EnsureLoadBalancer;
        assert_eq!(
            FaultKind::Transient.to_error(m, "ns/a").kind_label(),
            "transient"
        );
        let t = FaultKind::Throttled(Duration::from_secs(3)).to_error(m, "ns/a");
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
        assert!(matches!(
            FaultKind::NotFound.to_error(m, "ns/a"),
            CloudError::NotFound { kind: "load balancer", ref id } if id == "ns/a"
        ));
        assert!(matches!(
            FaultKind::InvalidInput("spec.ports".into()).to_error(m, "ns/a"),
            CloudError::InvalidInput { ref field, .. } if field == "spec.ports"
        ));
        assert_eq!(
            FaultKind::ImplementedElsewhere
                .to_error(m, "x")
                .kind_label(),
            "implemented_elsewhere"
        );
        assert!(matches!(
            FaultKind::NotImplemented.to_error(m, "x"),
            CloudError::NotImplemented("ensure_load_balancer")
        ));
    }
}
