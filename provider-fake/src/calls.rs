//! The call log: every trait call with its key argument and outcome.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use cloudprovider_api::CloudResult;

use crate::cloud::{FakeCloud, lock};
use crate::method::Method;

/// How a recorded call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// It succeeded.
    Ok,
    /// It failed; the [`CloudError::kind_label`](cloudprovider_api::CloudError::kind_label) of the error
    /// (`not_found`, `throttled`, `transient`, …).
    Err(&'static str),
}

impl CallOutcome {
    /// True for [`CallOutcome::Ok`].
    pub fn is_ok(self) -> bool {
        self == CallOutcome::Ok
    }

    pub(crate) fn of<T>(result: &CloudResult<T>) -> Self {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(e) => CallOutcome::Err(e.kind_label()),
        }
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallOutcome::Ok => f.write_str("ok"),
            CallOutcome::Err(kind) => f.write_str(kind),
        }
    }
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Call {
    /// Position in the log since it was created or last cleared, starting at 0.
    pub seq: u64,
    /// The method called.
    pub method: Method,
    /// The key argument (see [`Method`]).
    pub key: String,
    /// How it ended.
    pub outcome: CallOutcome,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {}({}) -> {}",
            self.seq, self.method, self.key, self.outcome
        )
    }
}

/// The most recent calls (a ring of `capacity`) and exact per-method counts.
#[derive(Debug)]
pub(crate) struct CallLog {
    entries: VecDeque<Call>,
    capacity: usize,
    counts: HashMap<Method, usize>,
    next_seq: u64,
}

impl CallLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            counts: HashMap::new(),
            next_seq: 0,
        }
    }

    pub(crate) fn record(&mut self, method: Method, key: String, outcome: CallOutcome) {
        *self.counts.entry(method).or_default() += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Call {
            seq,
            method,
            key,
            outcome,
        });
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.counts.clear();
        self.next_seq = 0;
    }
}

/// The call log.
impl FakeCloud {
    /// The recorded calls, oldest first. Only the most recent
    /// [`call_log_capacity`](crate::FakeConfig::call_log_capacity) calls are kept; [`count`](Self::count) stays
    /// exact regardless.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.calls).entries.iter().cloned().collect()
    }

    /// The recorded calls of `method`, oldest first.
    pub fn calls_of(&self, method: Method) -> Vec<Call> {
        lock(&self.inner.calls)
            .entries
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many times `method` was called since the log was created or cleared (including failed calls).
    pub fn count(&self, method: Method) -> usize {
        lock(&self.inner.calls)
            .counts
            .get(&method)
            .copied()
            .unwrap_or(0)
    }

    /// How many calls of any method were made since the log was created or cleared.
    pub fn total_calls(&self) -> usize {
        lock(&self.inner.calls).counts.values().sum()
    }

    /// Forgets all recorded calls and counts.
    pub fn clear_calls(&self) {
        lock(&self.inner.calls).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_recent_calls_and_exact_counts() {
        let mut log = CallLog::new(2);
        for i in 0..3 {
            log.record(Method::Zone, i.to_string(), CallOutcome::Ok);
        }
        log.record(Method::Master, "c".into(), CallOutcome::Err("not_found"));
        let keys: Vec<_> = log
            .entries
            .iter()
            .map(|c| (c.seq, c.key.as_str()))
            .collect();
        assert_eq!(keys, [(2, "2"), (3, "c")]);
        assert_eq!(log.counts.get(&Method::Zone), Some(&3));
        let none = {
            let mut l = CallLog::new(0);
            l.record(Method::Zone, String::new(), CallOutcome::Ok);
            (l.entries.len(), l.counts.get(&Method::Zone).copied())
        };
        assert_eq!(none, (0, Some(1)));
        assert_eq!(
            Call {
                seq: 3,
                method: Method::Master,
                key: "c".into(),
                outcome: CallOutcome::Err("not_found")
            }
            .to_string(),
            "#3 master(c) -> not_found"
        );
        log.clear();
        assert!(log.entries.is_empty() && log.counts.is_empty());
    }
}
