//! The kube-apiserver audit log (JSON lines, level Metadata for Leases): who sent which Lease request when.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// The audit policy: Metadata for `coordination.k8s.io` Leases, nothing else.
pub const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
- level: None
"#;

/// One Lease request, merged over its audit stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub user: String,
    pub verb: String,
    /// The Lease name (`objectRef.name`; for a list/watch with `metadata.name=` field selector, that name).
    pub name: Option<String>,
    /// `requestReceivedTimestamp`, unix microseconds.
    pub received_us: i64,
    /// `stageTimestamp` of the `ResponseComplete` stage, if the request completed.
    pub completed_us: Option<i64>,
    /// HTTP status code of the response, if completed.
    pub code: Option<i64>,
}

impl Request {
    /// Counted as one request: completed non-watch requests, and every watch once (it may still be open).
    pub fn countable(&self) -> bool {
        self.verb == "watch" || self.completed_us.is_some()
    }

    /// A write that succeeded (create or update answered 2xx).
    pub fn successful_write(&self) -> bool {
        matches!(self.verb.as_str(), "update" | "create")
            && matches!(self.code, Some(c) if (200..300).contains(&c))
    }
}

/// Reads every Lease request of the log, keyed by audit ID, in order of receipt.
pub fn read(path: &Path) -> Result<Vec<Request>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut by_id: HashMap<String, Request> = HashMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue; // a torn last line
        };
        let s = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
        if s("/objectRef/resource") != Some("leases")
            || s("/objectRef/apiGroup") != Some("coordination.k8s.io")
        {
            continue;
        }
        let (Some(id), Some(stage), Some(user), Some(verb), Some(received)) = (
            s("/auditID"),
            s("/stage"),
            s("/user/username"),
            s("/verb"),
            s("/requestReceivedTimestamp").and_then(parse_rfc3339_us),
        ) else {
            continue;
        };
        let request = by_id.entry(id.to_owned()).or_insert_with(|| Request {
            user: user.to_owned(),
            verb: verb.to_owned(),
            name: s("/objectRef/name").map(str::to_owned),
            received_us: received,
            completed_us: None,
            code: None,
        });
        if stage == "ResponseComplete" {
            request.completed_us = s("/stageTimestamp").and_then(parse_rfc3339_us);
            request.code = event
                .pointer("/responseStatus/code")
                .and_then(Value::as_i64);
        }
    }
    let mut requests: Vec<Request> = by_id.into_values().collect();
    requests.sort_by_key(|r| r.received_us);
    Ok(requests)
}

/// Lease requests of some users (each candidate authenticates as its own user) within `[start_us, end_us)`, counted per user and per verb.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub per_user: BTreeMap<String, u64>,
    pub per_verb: BTreeMap<String, u64>,
    /// Watches open at some point in the window (started before its end, not completed before its start).
    pub watches_open: u64,
}

pub fn count(requests: &[Request], users: &[String], start_us: i64, end_us: i64) -> Counts {
    let mut counts = Counts::default();
    for user in users {
        counts.per_user.insert(user.clone(), 0);
    }
    for r in requests {
        if !counts.per_user.contains_key(&r.user) {
            continue;
        }
        if r.verb == "watch"
            && r.received_us < end_us
            && r.completed_us.is_none_or(|c| c >= start_us)
        {
            counts.watches_open += 1;
        }
        if r.received_us < start_us || r.received_us >= end_us || !r.countable() {
            continue;
        }
        *counts.per_user.entry(r.user.clone()).or_default() += 1;
        *counts.per_verb.entry(r.verb.clone()).or_default() += 1;
    }
    counts
}

/// The receipt time of `user`'s last successful write before `before_us`.
pub fn last_successful_write(requests: &[Request], user: &str, before_us: i64) -> Option<i64> {
    requests
        .iter()
        .filter(|r| r.user == user && r.received_us < before_us && r.successful_write())
        .map(|r| r.received_us)
        .max()
}

/// Parses `2026-05-01T12:34:56.123456Z` (any fraction length, `Z` or `±hh:mm`) into unix microseconds.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(range)?).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 6 {
                micros = micros * 10 + i64::from(d - b'0');
                digits += 1;
            }
            i += 1;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = h * 3600 + m * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timestamps() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        // date -u -d 2026-05-01T12:34:56Z +%s → 1777638896
        assert_eq!(
            parse_rfc3339_us("2026-05-01T12:34:56.123456Z"),
            Some(1_777_638_896_123_456)
        );
        assert_eq!(
            parse_rfc3339_us("2026-05-01T14:34:56.123456+02:00"),
            Some(1_777_638_896_123_456)
        );
        assert_eq!(parse_rfc3339_us("not a time"), None);
    }

    #[test]
    fn counts_watches_once_and_completed_requests_only() {
        let r = |user: &str, verb: &str, at: i64, done: Option<i64>| Request {
            user: user.into(),
            verb: verb.into(),
            name: Some("l".into()),
            received_us: at,
            completed_us: done,
            code: done.map(|_| 200),
        };
        let requests = vec![
            r("a", "watch", 5, None),       // open across the window, started before
            r("a", "watch", 12, Some(200)), // started inside
            r("a", "get", 11, Some(12)),
            r("a", "update", 13, None), // never completed
            r("b", "get", 15, Some(16)),
            r("c", "get", 15, Some(16)), // not ours
            r("b", "get", 25, Some(26)), // after
        ];
        let c = count(&requests, &["a".into(), "b".into()], 10, 20);
        assert_eq!(c.per_user["a"], 2);
        assert_eq!(c.per_user["b"], 1);
        assert_eq!(c.per_verb["get"], 2);
        assert_eq!(c.per_verb["watch"], 1);
        assert_eq!(c.watches_open, 2);
        assert_eq!(last_successful_write(&requests, "a", 100), None);
    }
}
