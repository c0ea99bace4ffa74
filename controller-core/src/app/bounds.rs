//! The bounds of every number and duration flag, checked at startup so a value no one would mean fails with an
//! error naming the flag instead of a panic deep in a rate limiter or a timer (`Instant + Duration` overflows,
//! `Duration::from_secs_f64` of a huge number panics). `docs/operating.md` lists them.

use std::time::Duration;

use lease_election::ConfigError;

use super::AppError;

/// The lowest `--kube-api-qps`: one request every 100 s.
pub const MIN_KUBE_API_QPS: f32 = 0.01;
/// The highest `--kube-api-qps`.
pub const MAX_KUBE_API_QPS: f32 = 100_000.0;
/// The highest `--kube-api-burst`.
pub const MAX_KUBE_API_BURST: u32 = 1_000_000;
/// The longest period, resync or cache TTL flag: one day (leader-election durations have the same bound,
/// [`lease_election::MAX_TIMING`]).
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks that `value` of `flag` lies in `min..=MAX_PERIOD`.
pub fn check_duration(flag: &'static str, value: Duration, min: Duration) -> Result<(), AppError> {
    if value < min {
        let message = if min == Duration::from_nanos(1) {
            "must be positive".to_owned()
        } else {
            format!("must be at least {}", humantime::format_duration(min))
        };
        return Err(AppError::flag(flag, message));
    }
    if value > MAX_PERIOD {
        return Err(AppError::flag(
            flag,
            format!(
                "must be at most {}, got {}",
                humantime::format_duration(MAX_PERIOD),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

/// Checks `--kube-api-qps` and `--kube-api-burst`.
pub fn check_rate(qps: f32, burst: u32) -> Result<(), AppError> {
    if !(qps.is_finite() && (MIN_KUBE_API_QPS..=MAX_KUBE_API_QPS).contains(&qps)) {
        return Err(AppError::flag(
            "--kube-api-qps",
            format!("must be between {MIN_KUBE_API_QPS} and {MAX_KUBE_API_QPS}, got {qps}"),
        ));
    }
    if !(1..=MAX_KUBE_API_BURST).contains(&burst) {
        return Err(AppError::flag(
            "--kube-api-burst",
            format!("must be between 1 and {MAX_KUBE_API_BURST}, got {burst}"),
        ));
    }
    Ok(())
}

/// A leader-election configuration error as the error of the flag it names (`--leader-elect-lease-duration`, …).
pub fn leader_elect_flag_error(e: ConfigError) -> AppError {
    let flag = match &e {
        ConfigError::TooShort { field, .. } | ConfigError::TooLong { field, .. } => match *field {
            "lease-duration" => "--leader-elect-lease-duration",
            "renew-deadline" => "--leader-elect-renew-deadline",
            "retry-period" => "--leader-elect-retry-period",
            _ => "--leader-elect-*",
        },
        ConfigError::Empty("namespace") => "--leader-elect-resource-namespace",
        ConfigError::Empty("name") => "--leader-elect-resource-name",
        ConfigError::Empty("identity") => "--leader-elect-identity",
        _ => {
            "--leader-elect-lease-duration/--leader-elect-renew-deadline/--leader-elect-retry-period"
        }
    };
    AppError::flag(flag, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_flag() {
        let s = Duration::from_secs;
        assert!(check_duration("--x", s(1), Duration::from_nanos(1)).is_ok());
        let e = check_duration("--x", Duration::ZERO, Duration::from_nanos(1));
        assert!(e.is_err_and(|e| e.to_string() == "--x: must be positive"));
        let e = check_duration("--x", s(u64::MAX), Duration::ZERO);
        assert!(e.is_err_and(|e| e.to_string().starts_with("--x: must be at most 1day")));
        for qps in [1e-10, 1e-20, 0.0, -1.0, f32::NAN, f32::INFINITY, 1e9] {
            let e = check_rate(qps, 10);
            assert!(
                e.is_err_and(|e| e.to_string().contains("--kube-api-qps")),
                "{qps}"
            );
        }
        assert!(check_rate(20.0, 0).is_err_and(|e| e.to_string().contains("--kube-api-burst")));
        assert!(check_rate(MIN_KUBE_API_QPS, MAX_KUBE_API_BURST).is_ok());
        assert!(check_rate(MAX_KUBE_API_QPS, 1).is_ok());
    }
}
