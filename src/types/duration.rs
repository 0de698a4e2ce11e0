//! Durations written the way MOLT's (Go) flags take them: `250ms`, `10s`, `1m30s`, `1.5h`,
//! `0`. Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`; a leading `-` makes it negative,
//! which some flags read as "disabled".

use std::time::Duration;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not in Go's duration syntax.
    #[error(
        "invalid duration {0:?}: write a number and a unit, e.g. 250ms, 10s, 1m30s, 1h \
         (units: ns, us, ms, s, m, h)"
    )]
    Syntax(String),
    /// Negative where only zero or more makes sense.
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
    /// Larger than we can represent.
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parses a Go-style duration into signed nanoseconds.
pub fn parse_nanos(text: &str) -> Result<i128, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    let s = text.trim();
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut total: f64 = 0.0;
    let mut exact: i128 = 0;
    let mut all_integral = true;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(syntax)?;
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(syntax());
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(syntax()),
        };
        if num.contains('.') {
            all_integral = false;
        } else {
            let n: i128 = num.parse().map_err(|_| DurationError::Overflow(text.to_owned()))?;
            exact = n
                .checked_mul(scale)
                .and_then(|v| exact.checked_add(v))
                .ok_or_else(|| DurationError::Overflow(text.to_owned()))?;
        }
        total += num.parse::<f64>().map_err(|_| syntax())? * scale as f64;
        rest = after;
    }
    let nanos = if all_integral { exact } else { total.round() as i128 };
    if nanos > i128::from(i64::MAX) {
        return Err(DurationError::Overflow(text.to_owned()));
    }
    Ok(if negative { -nanos } else { nanos })
}

/// Parses a duration that must be zero or more (`clap` value parser).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let nanos = parse_nanos(text)?;
    if nanos < 0 {
        return Err(DurationError::Negative(text.to_owned()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses a period where zero or a negative value means "off" (`--schemaRefresh`).
pub fn parse_period(text: &str) -> Result<Option<Duration>, DurationError> {
    let nanos = parse_nanos(text)?;
    Ok((nanos > 0).then(|| Duration::from_nanos(nanos as u64)))
}

/// Formats like Go's `time.Duration.String`: `0s`, `25ms`, `2s`, `1m30s`, `1h0m0s`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = match nanos {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", fraction(nanos, div));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `n / div` as a decimal without trailing zeros.
fn fraction(n: u128, div: u128) -> String {
    let whole = n / div;
    let rest = n % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let ms = |n: u64| Duration::from_millis(n);
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("10s"), Ok(ms(10_000)));
        assert_eq!(parse("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse("1h0m0s"), Ok(ms(3_600_000)));
        assert_eq!(parse("1.5h"), Ok(ms(5_400_000)));
        assert_eq!(parse("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("2µs"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("+5s"), Ok(ms(5_000)));
        assert_eq!(parse(" 3s "), Ok(ms(3_000)));
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in ["", "10", "s", "1x", "1.2.3s", ".s", "-", "1s2", "ten seconds", "1 s"] {
            assert!(
                matches!(parse(bad), Err(DurationError::Syntax(_))),
                "{bad:?} should be a syntax error"
            );
        }
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert!(matches!(parse("99999999999h"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn periods_zero_or_negative_are_off() {
        assert_eq!(parse_period("1m"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(parse_period("0"), Ok(None));
        assert_eq!(parse_period("-1s"), Ok(None));
    }

    #[test]
    fn formats_like_go_and_round_trips() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(25), "25ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3_600), "1h0m0s"),
            (Duration::from_secs(86_400), "24h0m0s"),
        ];
        for (d, text) in cases {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d), "round trip of {text}");
        }
    }
}
