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
    // All zeros is 0; more digits than an i128 holds is too large (not 0).
    let digits = digits.trim_start_matches('0');
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let frac_len = i32::try_from(frac_part.len()).ok()?;
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
    // Checked: the exponent is the user's (`1e2147483647`).
    let exponent = pow10.checked_add(3)?.checked_sub(frac_len)?;
    let scaled = mantissa.checked_mul(num)?;
    let value = if exponent >= 0 {
        scaled.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?
    } else {
        let div = 10i128.checked_pow(exponent.unsigned_abs())?;
        // Round up, as the API does for sub-milli amounts (without `scaled + div - 1`, which overflows near
        // i128::MAX).
        scaled / div + i128::from(scaled % div != 0)
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

    /// Regressions found by the property tests (issue 21): a number with more digits than an i128 holds was 0, and
    /// a user's exponent or a value near i128::MAX overflowed (a panic in debug builds, garbage in release).
    #[test]
    fn huge_numbers_and_exponents() {
        assert_eq!(
            parse_quantity("10000000000000000000000000000000000000000"),
            None
        );
        assert_eq!(
            parse_quantity("99999999999999999999999999999999999999999Gi"),
            None
        );
        assert_eq!(
            parse_quantity("000000000000000000000000000000000000000000001"),
            Some(1000)
        );
        assert_eq!(parse_quantity("0"), Some(0));
        assert_eq!(parse_quantity("0.000"), Some(0));
        for text in [
            "1e2147483647",
            "1E2147483645",
            "0.0001e-2147483648",
            "1e-2147483648",
        ] {
            assert_eq!(parse_quantity(text), None, "{text}");
        }
        let max = i128::MAX;
        assert_eq!(
            parse_quantity(&format!("{max}n")),
            Some(max / 1_000_000 + 1)
        );
        assert_eq!(parse_quantity(&format!("{max}m")), Some(max));
        assert_eq!(parse_quantity(&format!("{max}u")), Some(max / 1000 + 1));
    }
}
