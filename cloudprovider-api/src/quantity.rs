//! Kubernetes resource quantities, for providers that read capacities from their configuration.

/// Parses a Kubernetes quantity (`"2"`, `"500m"`, `"1.5Gi"`, `"1e3"`) into thousandths, rounding up. `None` for
/// anything unparsable (`"lots"`, `"1x"`) or too large for an `i128`.
///
/// ```
/// use cloudprovider_api::parse_quantity;
/// assert_eq!(parse_quantity("500m"), Some(500));
/// assert_eq!(parse_quantity("4Gi"), Some(4 << 30 ) .map(|b: i128| b * 1000));
/// assert_eq!(parse_quantity("lots"), None);
/// ```
pub fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // value = mantissa / 10^frac_len
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    let frac_len = u32::try_from(frac_part.len()).ok()?;
    // The suffix as (numerator, power of ten): value·1000 = mantissa·num·10^(pow10+3) / 10^frac_len.
    let (num, pow10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        exp if exp.starts_with(['e', 'E']) => (1, exp[1..].parse().ok()?),
        _ => return None,
    };
    let exponent = pow10 + 3 - i32::try_from(frac_len).ok()?;
    let scaled = mantissa.checked_mul(num)?;
    let value = if exponent >= 0 {
        scaled.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?
    } else {
        let div = 10i128.checked_pow(exponent.unsigned_abs())?;
        // Round up, as the API does for sub-milli amounts.
        (scaled + div - 1) / div
    };
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (q, want) in [
            ("2", 2000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5Gi", 1536 * 1024 * 1024 * 1000),
            ("4Gi", 4 * 1024 * 1024 * 1024 * 1000),
            ("128Mi", 128 * 1024 * 1024 * 1000),
            ("1k", 1_000_000),
            ("1e3", 1_000_000),
            ("110", 110_000),
            ("1n", 1),
        ] {
            assert_eq!(parse_quantity(q), Some(want), "{q}");
        }
        for bad in ["", "m", "1x", "1.2.3", "Gi"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }
}
