//! Value parsers for flags written the way MOLT (a Go program) takes them.

use std::ffi::OsStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

use crate::conn::ConnString;
use crate::types::duration;

/// Go's `strconv.ParseBool`: `1 t T true TRUE True` and `0 f F false FALSE False`.
///
/// Boolean flags take `--flag` (true) or `--flag=false`, as in MOLT; `--flag false` is not a
/// boolean value there either.
pub fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean: write true or false")),
    }
}

/// A duration zero or more: `250ms`, `10s`, `1m30s`.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| e.to_string())
}

/// A size in bytes: `256MiB`, `1GiB`, `512KiB`, `64MB`, or a plain number of bytes.
pub fn byte_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} is not a size: write e.g. 256MiB, 1GiB, 512KiB or a number of bytes"
            ));
        }
    };
    let n: usize = digits.parse().map_err(|_| {
        format!("{text:?} is not a size: write e.g. 256MiB, 1GiB, 512KiB or a number of bytes")
    })?;
    n.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}

/// A period where zero or a negative value turns the feature off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Option<Duration>);

/// Parses a [`Period`].
pub fn go_period(text: &str) -> Result<Period, String> {
    duration::parse_period(text).map(Period).map_err(|e| e.to_string())
}

/// Parses a connection URL without ever echoing it: clap's own error would repeat the value,
/// password included.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnStringParser;

impl TypedValueParser for ConnStringParser {
    type Value = ConnString;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<ConnString, clap::Error> {
        let flag = arg.and_then(|a| a.get_long()).unwrap_or("connection");
        let fail = |message: String| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("--{flag}: {message}\n"))
                .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| fail("the connection URL is not valid UTF-8".to_owned()))?;
        ConnString::parse(text).map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_as_go_reads_them() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(go_bool(f), Ok(false));
        }
        assert!(go_bool("yes").is_err());
    }

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(byte_size("256MiB"), Ok(256 << 20));
        assert_eq!(byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(byte_size("512KiB"), Ok(512 << 10));
        assert_eq!(byte_size("64MB"), Ok(64_000_000));
        assert_eq!(byte_size("1048576"), Ok(1 << 20));
        for bad in ["", "MiB", "12 parsecs", "-1MiB", "1.5GiB"] {
            assert!(byte_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conn_errors_do_not_echo_the_value() {
        let cmd = clap::Command::new("t").arg(clap::Arg::new("c").long("targetConn"));
        let arg = cmd.get_arguments().next().cloned();
        let err = ConnStringParser
            .parse_ref(&cmd, arg.as_ref(), OsStr::new("host=h password=hunter2"))
            .expect_err("not a URL");
        let text = err.to_string();
        assert!(text.contains("--targetConn: not a connection URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
