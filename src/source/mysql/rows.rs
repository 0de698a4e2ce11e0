//! Rows events into mutations: row images read column by column, each value converted into
//! the exact form the target and userscripts expect (`crate::types::Value`).
//!
//! Numbers keep their exact text (unsigned BIGINT up to 2^64−1, DECIMAL digit for digit);
//! FLOAT/DOUBLE their shortest round-trip text; DATE `YYYY-MM-DD`; DATETIME
//! `YYYY-MM-DDTHH:MM:SS[.ffffff]`; TIMESTAMP the same in UTC with `Z`; TIME `HH:MM:SS[.ffffff]`;
//! YEAR its number; text columns decoded from their character set; binary columns `\x` hex;
//! JSON (MySQL's binary form) a JSON document; ENUM and SET their labels (`a,b` for a SET);
//! BIT its bits as `0`/`1` text.
//!
//! Values no PostgreSQL-protocol target can hold (zero or partial-zero dates, TIME outside
//! 00:00:00–24:00:00) are still passed on, as their MySQL text, with a [`Problem`] naming the
//! table, column and value: without a userscript replication stops with it; a userscript may
//! map the value.

use mysql_common::binlog::events::RowsEventData;
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use mysql_common::proto::MyDeserialize;

use super::schema::{Charset, Column, TableInfo};
use crate::types::civil::{civil_from_days, days_from_civil};
use crate::types::mutation::{Mutation, Op};
use crate::types::{Row, Value, new_row};

/// A value the target cannot hold as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `db.table`.
    pub table: String,
    /// The column.
    pub column: String,
    /// The value as MySQL shows it.
    pub value: String,
    /// Why it cannot go as it is.
    pub why: &'static str,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{} = {:?}: {}", self.table, self.column, self.value, self.why)
    }
}

/// Why a rows event could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading a row of {table} failed at column {column:?}: {message}")]
pub struct RowError {
    /// `db.table`.
    pub table: String,
    /// The column being read.
    pub column: String,
    /// What was wrong.
    pub message: String,
}

/// Appends the mutations of one rows event; values the target cannot hold go to `problems`.
pub fn decode<'a>(
    event: &'a RowsEventData<'a>,
    table: &'a TableInfo,
    mutations: &mut Vec<Mutation>,
    problems: &mut Vec<Problem>,
) -> Result<(), RowError> {
    let qualified = || format!("{}.{}", table.schema, table.name);
    let fail = |column: &str, message: String| RowError {
        table: qualified(),
        column: column.to_owned(),
        message,
    };
    if matches!(event, RowsEventData::PartialUpdateRowsEvent(_)) {
        return Err(fail(
            "",
            "partial JSON updates are not supported: SET GLOBAL binlog_row_value_options = ''"
                .into(),
        ));
    }
    let count = usize::try_from(event.num_columns()).unwrap_or(usize::MAX);
    if count != table.columns.len() {
        return Err(fail(
            "",
            format!("the row has {count} columns, the table map {}", table.columns.len()),
        ));
    }
    let before: Option<Vec<usize>> = event.columns_before_image().map(|b| b.iter_ones().collect());
    let after: Option<Vec<usize>> = event.columns_after_image().map(|b| b.iter_ones().collect());
    let mut buf = ParseBuf(event.rows_data());
    while !buf.is_empty() {
        let old = match &before {
            Some(present) => Some(read_image(&mut buf, table, present, problems, &fail)?),
            None => None,
        };
        let new = match &after {
            Some(present) => Some(read_image(&mut buf, table, present, problems, &fail)?),
            None => None,
        };
        match (old, new) {
            (None, Some(row)) => mutations.push(Mutation::upsert(&table.name, row)),
            (Some(row), None) => mutations.push(Mutation::delete(&table.name, row)),
            (Some(old), Some(new)) => {
                let key_changed = table.key.iter().any(|&k| {
                    let name = &table.columns[k].name;
                    old.get(name) != new.get(name)
                });
                if key_changed {
                    mutations.push(Mutation::delete(&table.name, old));
                    mutations.push(Mutation::upsert(&table.name, new));
                } else {
                    mutations.push(Mutation {
                        table: table.name.clone(),
                        op: Op::Upsert,
                        row: new,
                        before: Some(old),
                    });
                }
            }
            (None, None) => break,
        }
    }
    Ok(())
}

fn read_image<'a>(
    buf: &mut ParseBuf<'a>,
    table: &'a TableInfo,
    present: &[usize],
    problems: &mut Vec<Problem>,
    fail: &dyn Fn(&str, String) -> RowError,
) -> Result<Row, RowError> {
    let nulls_len = present.len().div_ceil(8);
    if buf.len() < nulls_len {
        return Err(fail("", "the row image ends early".into()));
    }
    let nulls = buf.eat(nulls_len);
    let mut row = new_row(present.len());
    for (n, &i) in present.iter().enumerate() {
        let column = &table.columns[i];
        if nulls[n / 8] & (1 << (n % 8)) != 0 {
            row.insert(column.name.clone(), Value::Null);
            continue;
        }
        let value = read_value(buf, column).map_err(|e| fail(&column.name, e))?;
        let value = convert(value, column, &mut |value, why| {
            problems.push(Problem {
                table: format!("{}.{}", table.schema, table.name),
                column: column.name.to_string(),
                value,
                why,
            })
        })
        .map_err(|e| fail(&column.name, e))?;
        row.insert(column.name.clone(), value);
    }
    Ok(row)
}

/// A raw value: what mysql_common reads, except DATE and DECIMAL (read here).
enum Raw<'a> {
    Value(BinlogValue<'a>),
    Date(u32),
    Decimal(String),
}

fn read_value<'a>(buf: &mut ParseBuf<'a>, column: &'a Column) -> Result<Raw<'a>, String> {
    if matches!(column.kind, ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE) {
        if buf.len() < 3 {
            return Err("the DATE value ends early".into());
        }
        let b = buf.eat(3);
        return Ok(Raw::Date(u32::from(b[0]) | (u32::from(b[1]) << 8) | (u32::from(b[2]) << 16)));
    }
    if column.kind == ColumnType::MYSQL_TYPE_NEWDECIMAL
        && let [precision, scale, ..] = column.meta[..]
    {
        return decimal_text(buf, usize::from(precision), usize::from(scale)).map(Raw::Decimal);
    }
    BinlogValue::deserialize((column.kind, column.meta.as_slice(), column.unsigned, false), buf)
        .map(Raw::Value)
        .map_err(|e| format!("{e} (type {:?})", column.kind))
}

/// DECIMAL(precision, scale)'s binary form as its exact text: `-` for negatives, the integer
/// digits without leading zeros (`0` when there are none), and `scale` fraction digits.
///
/// The form: base-10⁹ groups, big-endian, the integer part's leftover digits first and the
/// fraction's last, each leftover group in as few bytes as its digits need; negative values
/// have every bit inverted, and the first bit is flipped so that the bytes sort as numbers.
fn decimal_text(buf: &mut ParseBuf<'_>, precision: usize, scale: usize) -> Result<String, String> {
    const BYTES_FOR: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    if precision == 0 || precision > 65 || scale > precision || scale > 30 {
        return Err(format!("DECIMAL({precision},{scale}) is not a valid DECIMAL type"));
    }
    let integer = precision - scale;
    let groups = [(integer % 9, 1), (9, integer / 9), (9, scale / 9), (scale % 9, 1)];
    let size: usize = groups.iter().map(|&(digits, n)| BYTES_FOR[digits] * n).sum();
    if buf.len() < size {
        return Err("the DECIMAL value ends early".into());
    }
    let raw = buf.eat(size);
    let negative = raw[0] & 0x80 == 0;
    let mask = if negative { 0xFF } else { 0 };
    let mut bytes = raw.iter().enumerate().map(|(i, &b)| if i == 0 { b ^ 0x80 } else { b } ^ mask);
    let mut text = String::with_capacity(precision + 2);
    if negative {
        text.push('-');
    }
    let start = text.len();
    for (g, &(digits, n)) in groups.iter().enumerate() {
        if g == 2 && scale > 0 {
            if text.len() == start {
                text.push('0');
            }
            text.push('.');
        }
        for _ in 0..n {
            let width = BYTES_FOR[digits];
            if width == 0 {
                continue;
            }
            let value =
                (0..width).fold(0u32, |v, _| (v << 8) | u32::from(bytes.next().unwrap_or(0)));
            if value >= 10u32.pow(digits as u32) {
                return Err(format!("a DECIMAL group holds {value}, more than {digits} digits"));
            }
            let width = if g < 2 && text.len() == start {
                // The integer part so far is zero: no leading zeros.
                value.checked_ilog10().map_or(0, |log| log + 1)
            } else {
                digits as u32
            };
            push_digits(&mut text, value, width);
        }
    }
    if text.len() == start {
        text.push('0');
    }
    if negative && text[start..].bytes().all(|b| b == b'0' || b == b'.') {
        // MySQL keeps no negative zero; a -0.00 is 0.00.
        text.remove(0);
    }
    Ok(text)
}

fn convert(
    raw: Raw<'_>,
    column: &Column,
    problem: &mut dyn FnMut(String, &'static str),
) -> Result<Value, String> {
    use mysql_common::value::Value as My;
    let value = match raw {
        Raw::Date(packed) => {
            let (y, m, d) = (packed >> 9, (packed >> 5) & 15, packed & 31);
            let mut text = String::with_capacity(10);
            push_date(&mut text, y, m, d);
            if !valid_date(y, m, d) {
                problem(text.clone(), "a zero or incomplete date; PostgreSQL has no such date");
            }
            return Ok(Value::String(text));
        }
        Raw::Decimal(text) => return Ok(Value::Number(text)),
        Raw::Value(BinlogValue::Value(v)) => v,
        Raw::Value(BinlogValue::Jsonb(j)) => {
            let json = serde_json::Value::try_from(j).map_err(|e| e.to_string())?;
            return Ok(Value::Json(json));
        }
        Raw::Value(BinlogValue::JsonDiff(_)) => {
            return Err("a partial JSON update cannot be applied".into());
        }
    };
    Ok(match (column.kind, value) {
        (_, My::NULL) => Value::Null,
        (_, My::Int(i)) => match column.kind {
            ColumnType::MYSQL_TYPE_ENUM => label(column, i, problem),
            ColumnType::MYSQL_TYPE_TIMESTAMP => timestamp(i, 0, problem),
            _ => Value::Number(i.to_string()),
        },
        (_, My::UInt(u)) => Value::Number(u.to_string()),
        (_, My::Float(f)) => Value::Number(float_text(f64::from(f), true)),
        (_, My::Double(d)) => Value::Number(float_text(d, false)),
        (_, My::Date(y, m, d, h, mi, s, us)) => {
            let mut text = String::with_capacity(26);
            push_date(&mut text, u32::from(y), u32::from(m), u32::from(d));
            text.push('T');
            push_time(&mut text, u32::from(h), u32::from(mi), u32::from(s), us);
            if !valid_date(u32::from(y), u32::from(m), u32::from(d)) {
                problem(
                    text.replace('T', " "),
                    "a zero or incomplete date; PostgreSQL has no such date",
                );
            }
            Value::String(text)
        }
        (_, My::Time(negative, days, h, m, s, us)) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let mut text = format!("{}{hours:02}:{m:02}:{s:02}", if negative { "-" } else { "" });
            push_fraction(&mut text, us);
            let over = hours > 24 || (hours == 24 && (m, s, us) != (0, 0, 0));
            if negative || over {
                problem(
                    text.clone(),
                    "a TIME outside 00:00:00–24:00:00; PostgreSQL time cannot hold it",
                );
            }
            Value::String(text)
        }
        (ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL, My::Bytes(b)) => {
            Value::Number(ascii(b))
        }
        (ColumnType::MYSQL_TYPE_YEAR, My::Bytes(b)) => {
            let text = ascii(b);
            // YEAR 0000 is stored as 0, which the library reports as 1900 (not a valid YEAR).
            Value::Number(if text == "1900" { "0".into() } else { text })
        }
        (ColumnType::MYSQL_TYPE_TIMESTAMP2, My::Bytes(b)) => {
            let text = ascii(b);
            let (secs, micros) = text.split_once('.').unwrap_or((&text, "0"));
            let secs: i64 = secs.parse().map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            let micros: u32 = micros.parse().map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
            timestamp(secs, micros, problem)
        }
        (ColumnType::MYSQL_TYPE_BIT, My::Bytes(b)) => {
            let bits = usize::from(column.meta.get(1).copied().unwrap_or(0)) * 8
                + usize::from(column.meta.first().copied().unwrap_or(0));
            let all: String =
                b.iter().map(|byte| format!("{byte:08b}")).collect::<Vec<_>>().concat();
            Value::String(all[all.len().saturating_sub(bits)..].to_owned())
        }
        (ColumnType::MYSQL_TYPE_SET, My::Bytes(b)) => {
            let mut chosen = Vec::new();
            for (i, name) in column.labels.iter().enumerate() {
                if b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                    chosen.push(name.as_str());
                }
            }
            if column.labels.is_empty() && b.iter().any(|&x| x != 0) {
                problem(
                    hex(&b),
                    "SET labels unknown (binlog_row_metadata=FULL or --fetchMetadata)",
                );
            }
            Value::String(chosen.join(","))
        }
        (_, My::Bytes(b)) => text(b, column, problem),
    })
}

fn label(column: &Column, index: i64, problem: &mut dyn FnMut(String, &'static str)) -> Value {
    if index == 0 {
        // The "invalid value" MySQL stores as index 0 reads back as ''.
        return Value::String(String::new());
    }
    match usize::try_from(index - 1).ok().and_then(|i| column.labels.get(i)) {
        Some(l) => Value::String(l.clone()),
        None => {
            problem(
                index.to_string(),
                "ENUM label unknown (binlog_row_metadata=FULL or --fetchMetadata)",
            );
            Value::Number(index.to_string())
        }
    }
}

fn timestamp(secs: i64, micros: u32, problem: &mut dyn FnMut(String, &'static str)) -> Value {
    if secs == 0 && micros == 0 {
        let text = "0000-00-00 00:00:00".to_owned();
        problem(text.clone(), "a zero TIMESTAMP; PostgreSQL has no such time");
        return Value::String(text);
    }
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut text = String::with_capacity(27);
    // MySQL TIMESTAMPs start in 1970: every part is a small non-negative number.
    let part = |n: i64| u32::try_from(n).unwrap_or(0);
    let rest = part(rest);
    push_date(&mut text, part(y), part(m), part(d));
    text.push('T');
    push_time(&mut text, rest / 3600, rest % 3600 / 60, rest % 60, micros);
    text.push('Z');
    Value::String(text)
}

/// Text a number formatter wrote (DECIMAL, YEAR, TIMESTAMP seconds): ASCII, taken as it is.
fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `YYYY-MM-DD`, the year zero-padded to four digits (wider years as they are).
fn push_date(out: &mut String, y: u32, m: u32, d: u32) {
    if y < 10_000 {
        push_digits(out, y, 4);
    } else {
        out.push_str(&y.to_string());
    }
    out.push('-');
    push_digits(out, m, 2);
    out.push('-');
    push_digits(out, d, 2);
}

/// `HH:MM:SS[.ffffff]`, the fraction without trailing zeros (none when zero).
fn push_time(out: &mut String, h: u32, m: u32, s: u32, micros: u32) {
    push_digits(out, h, 2);
    out.push(':');
    push_digits(out, m, 2);
    out.push(':');
    push_digits(out, s, 2);
    push_fraction(out, micros);
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (n / 10u32.pow(place)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

fn push_fraction(out: &mut String, micros: u32) {
    if micros == 0 {
        return;
    }
    let mut micros = micros % 1_000_000;
    let mut width = 6;
    while micros.is_multiple_of(10) && width > 1 {
        micros /= 10;
        width -= 1;
    }
    out.push('.');
    push_digits(out, micros, width);
}

fn valid_date(y: u32, m: u32, d: u32) -> bool {
    if !(1..=12).contains(&m) || d == 0 || y == 0 {
        return false;
    }
    let (y, m) = (i64::from(y), i64::from(m));
    let next = if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) };
    i64::from(d) <= next - days_from_civil(y, m, 1)
}

/// Shortest round-trip text, laid out as JavaScript writes numbers: plain within
/// [1e-6, 1e21), exponent form (`1.5e-7`, `1e+21`) outside. FLOAT keeps its single-precision
/// digits (`0.1`, not the double nearest to it).
fn float_text(value: f64, single: bool) -> String {
    if !value.is_finite() {
        // MySQL stores no infinities or NaN; should one arrive, it is shown as Rust spells it.
        return format!("{value:e}");
    }
    let mut buf = ryu::Buffer::new();
    // The cast is exact: `value` was widened from the f32 it came from.
    let shortest = if single { buf.format_finite(value as f32) } else { buf.format_finite(value) };
    js_layout(shortest)
}

/// Lays out a shortest round-trip rendering (`-1.5e-7`, `100.0`, `0.001`, `1e21`, any mix of
/// plain and exponent form) the way JavaScript's `Number.prototype.toString` does.
fn js_layout(shortest: &str) -> String {
    if !shortest.contains(['e', 'E']) {
        // Plain already (ryu writes 1e-5 to 1e16 so, within JavaScript's plain range); only an
        // integer's `.0` goes.
        return shortest.strip_suffix(".0").unwrap_or(shortest).to_owned();
    }
    let (negative, text) = match shortest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, shortest),
    };
    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The value is 0.DIGITS × 10^point.
    let all = || int.bytes().chain(frac.bytes());
    let leading = all().take_while(|&b| b == b'0').count();
    let digits: Vec<u8> = all().skip(leading).collect();
    let significant = digits.len() - digits.iter().rev().take_while(|&&b| b == b'0').count();
    let digits = &digits[..significant];
    let mut out = String::with_capacity(24);
    if digits.is_empty() {
        out.push_str(if negative { "-0" } else { "0" });
        return out;
    }
    if negative {
        out.push('-');
    }
    let len = digits.len() as i32;
    let point = i32::try_from(int.len()).unwrap_or(i32::MAX) - leading as i32 + exponent;
    let push = |out: &mut String, d: &[u8]| out.extend(d.iter().map(|&b| char::from(b)));
    if len <= point && point <= 21 {
        push(&mut out, digits);
        out.extend(std::iter::repeat_n('0', (point - len) as usize));
    } else if 0 < point && point <= 21 {
        push(&mut out, &digits[..point as usize]);
        out.push('.');
        push(&mut out, &digits[point as usize..]);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        push(&mut out, digits);
    } else {
        push(&mut out, &digits[..1]);
        if len > 1 {
            out.push('.');
            push(&mut out, &digits[1..]);
        }
        let e = point - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&e.unsigned_abs().to_string());
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn text(bytes: Vec<u8>, column: &Column, problem: &mut dyn FnMut(String, &'static str)) -> Value {
    let decoded = match &column.charset {
        Charset::Binary => {
            let mut bytes = bytes;
            if column.kind == ColumnType::MYSQL_TYPE_STRING {
                // BINARY(n) is stored without its trailing zero bytes: put them back.
                let width = string_width(&column.meta);
                if bytes.len() < width {
                    bytes.resize(width, 0);
                }
            }
            return Value::String(hex(&bytes));
        }
        Charset::Utf8 => String::from_utf8(bytes).map_err(|e| e.into_bytes()),
        Charset::Latin1 => Ok(bytes.iter().map(|&b| cp1252(b)).collect()),
        Charset::Utf16Be | Charset::Utf16Le => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| {
                    let pair = [c[0], c.get(1).copied().unwrap_or(0)];
                    if column.charset == Charset::Utf16Be {
                        u16::from_be_bytes(pair)
                    } else {
                        u16::from_le_bytes(pair)
                    }
                })
                .collect();
            String::from_utf16(&units).map_err(|_| bytes)
        }
        Charset::Utf32 => bytes
            .chunks(4)
            .map(|c| {
                let mut word = [0u8; 4];
                word[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(word))
            })
            .collect::<Option<String>>()
            .ok_or(bytes),
        Charset::Other(_) => String::from_utf8(bytes).map_err(|e| e.into_bytes()),
    };
    match decoded {
        Ok(s) => Value::String(s),
        Err(bytes) => {
            let why = match &column.charset {
                Charset::Other(_) => {
                    "text in a character set replicator does not decode (utf8mb4, latin1, ascii, ucs2, utf16, utf32 are)"
                }
                _ => "bytes that are not valid in the column's character set",
            };
            let shown = hex(&bytes);
            problem(shown.clone(), why);
            Value::String(shown)
        }
    }
}

/// The declared byte width of a CHAR/BINARY column from its table-map metadata.
fn string_width(meta: &[u8]) -> usize {
    match meta {
        [b0, b1, ..] if (b0 & 0x30) != 0x30 => {
            usize::from(*b1) | (usize::from((b0 & 0x30) ^ 0x30) << 4)
        }
        [_, b1, ..] => usize::from(*b1),
        _ => 0,
    }
}

/// MySQL's latin1 is Windows-1252 (its 0x80–0x9F holes map to the C1 controls).
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9F => char::from_u32(u32::from(HIGH[usize::from(b - 0x80)])).unwrap_or('\u{FFFD}'),
        _ => char::from(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(kind: ColumnType, meta: Vec<u8>) -> Column {
        Column {
            name: "c".into(),
            kind,
            meta,
            unsigned: false,
            charset: Charset::Utf8,
            labels: vec!["red".into(), "green".into(), "blue".into()],
        }
    }

    fn run(
        kind: ColumnType,
        meta: Vec<u8>,
        value: mysql_common::value::Value,
    ) -> (Value, Vec<String>) {
        let mut problems = Vec::new();
        let v =
            convert(Raw::Value(BinlogValue::Value(value)), &column(kind, meta), &mut |v, why| {
                problems.push(format!("{v}: {why}"))
            })
            .expect("converts");
        (v, problems)
    }

    #[test]
    fn values_convert_exactly() {
        use mysql_common::value::Value as My;
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_LONGLONG, vec![], My::UInt(u64::MAX)).0,
            Value::Number("18446744073709551615".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_DOUBLE, vec![8], My::Double(0.1)).0,
            Value::Number("0.1".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_DOUBLE, vec![8], My::Double(1e300)).0,
            Value::Number("1e+300".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_FLOAT, vec![4], My::Float(1.5)).0,
            Value::Number("1.5".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_ENUM, vec![0, 1], My::Int(2)).0,
            Value::String("green".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_SET, vec![0, 1], My::Bytes(vec![0b101])).0,
            Value::String("red,blue".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_BIT, vec![2, 1], My::Bytes(vec![0b10, 0b1000_0001])).0,
            Value::String("1010000001".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_YEAR, vec![], My::Bytes(b"1900".to_vec())).0,
            Value::Number("0".into())
        );
        assert_eq!(
            run(
                ColumnType::MYSQL_TYPE_TIMESTAMP2,
                vec![6],
                My::Bytes(b"1700000000.000500".to_vec())
            )
            .0,
            Value::String("2023-11-14T22:13:20.0005Z".into())
        );
        assert_eq!(
            run(
                ColumnType::MYSQL_TYPE_DATETIME2,
                vec![3],
                My::Date(2024, 2, 29, 23, 59, 58, 120_000)
            )
            .0,
            Value::String("2024-02-29T23:59:58.12".into())
        );
        assert_eq!(
            run(ColumnType::MYSQL_TYPE_TIME2, vec![0], My::Time(false, 0, 7, 8, 9, 0)).0,
            Value::String("07:08:09".into())
        );
    }

    /// Floats as Rust's `Display` (plain) and `LowerExp` write them, with the JavaScript
    /// range: the layout `js_layout` must reproduce.
    fn reference<T: std::fmt::Display + std::fmt::LowerExp>(v: T) -> String {
        let plain = v.to_string();
        let magnitude = plain.parse::<f64>().expect("a float").abs();
        if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
            let e = format!("{v:e}");
            match e.split_once('e') {
                Some((m, exp)) if !exp.starts_with('-') => format!("{m}e+{exp}"),
                _ => e,
            }
        } else {
            plain
        }
    }

    proptest::proptest! {
        #[test]
        fn doubles_keep_their_shortest_digits_in_javascript_layout(bits: u64) {
            let d = f64::from_bits(bits);
            proptest::prop_assume!(d.is_finite());
            let (ours, rust) = (float_text(d, false), reference(d));
            proptest::prop_assert_eq!(ours.parse::<f64>().ok(), Some(d));
            proptest::prop_assert_eq!(ours.len(), rust.len());
            proptest::prop_assert_eq!(ours.find(['.', 'e']), rust.find(['.', 'e']));
        }

        #[test]
        fn floats_keep_their_single_precision_digits(bits: u32) {
            let f = f32::from_bits(bits);
            proptest::prop_assume!(f.is_finite());
            // Where two shortest renderings are equally near, ryu takes the even digit
            // (as JavaScript and PostgreSQL do) and Rust the one rounded up: both read back
            // as the same float, with as many digits, laid out the same way.
            let (ours, rust) = (float_text(f64::from(f), true), reference(f));
            proptest::prop_assert_eq!(ours.parse::<f32>().ok(), Some(f));
            proptest::prop_assert_eq!(ours.len(), rust.len());
            proptest::prop_assert_eq!(ours.find(['.', 'e']), rust.find(['.', 'e']));
        }
    }

    /// A DECIMAL's binary form as MySQL writes it (through mysql_common's encoder).
    fn decimal_bytes(text: &str) -> Vec<u8> {
        let decimal: mysql_common::binlog::decimal::Decimal = text.parse().expect("a decimal");
        let mut out = Vec::new();
        decimal.write_bin(&mut out).expect("encodes");
        out
    }

    fn decode_decimal(bytes: &[u8], precision: usize, scale: usize) -> Result<String, String> {
        let mut buf = ParseBuf(bytes);
        let text = decimal_text(&mut buf, precision, scale)?;
        assert!(buf.is_empty(), "the value's bytes are all read");
        Ok(text)
    }

    proptest::proptest! {
        #[test]
        fn decimals_read_exactly(
            precision in 1usize..=65,
            scale_seed: usize,
            digits in proptest::collection::vec(0u8..10, 65),
            negative: bool,
        ) {
            let scale = scale_seed % (precision.min(30) + 1);
            let integer = precision - scale;
            // The encoder sizes the value from its text: the integer part is full width.
            let mut int: String = digits[..integer].iter().map(|d| char::from(b'0' + d)).collect();
            if let Some(first) = int.get_mut(0..1) && first == "0" {
                int.replace_range(0..1, "7");
            }
            let frac: String = digits[integer..precision].iter().map(|d| char::from(b'0' + d)).collect();
            let mut text = if int.is_empty() { "0".to_owned() } else { int };
            if scale > 0 {
                text = format!("{text}.{frac}");
            }
            if negative && text.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
                text.insert(0, '-');
            }
            // mysql_common counts the `0` of `0.5` as an integer digit; `.5` has none.
            let bytes = decimal_bytes(if integer == 0 { text.replacen("0.", ".", 1) } else { text.clone() }.as_str());
            proptest::prop_assert_eq!(decode_decimal(&bytes, precision, scale), Ok(text.clone()));
            // The same as mysql_common's reader.
            let reference = mysql_common::binlog::decimal::Decimal::read_bin(&bytes[..], precision, scale, false)
                .expect("reads");
            proptest::prop_assert_eq!(reference.to_string(), text);
        }
    }

    #[test]
    fn decimals_small_in_wide_columns_and_broken_ones() {
        // DECIMAL(12,2): one byte for the integer's leftover digit, a 4-byte group, one byte
        // for the two fraction digits.
        assert_eq!(decode_decimal(&[0x80, 0, 0, 0, 0, 50], 12, 2), Ok("0.50".into()));
        assert_eq!(
            decode_decimal(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xcd], 12, 2),
            Ok("-0.50".into())
        );
        assert_eq!(decode_decimal(&[0x80, 0, 0, 0, 5, 0], 12, 2), Ok("5.00".into()));
        assert_eq!(decode_decimal(&[0x81, 0, 0, 0, 0, 0], 12, 2), Ok("1000000000.00".into()));
        assert_eq!(decode_decimal(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff], 12, 2), Ok("0.00".into()));
        assert_eq!(decode_decimal(&[0x80, 0, 0, 0], 10, 0).map_err(|_| ()), Err(()), "too short");
        assert!(
            decode_decimal(&[0x80, 0x3b, 0x9a, 0xca, 0x00, 0], 12, 2)
                .is_err_and(|e| e.contains("more than 9 digits"))
        );
        assert!(decode_decimal(&[0x80], 66, 0).is_err_and(|e| e.contains("not a valid")));
    }

    #[test]
    fn float_layout_at_the_edges() {
        for (value, text) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1e21, "1e+21"),
            (999_999_999_999_999_900_000.0, "999999999999999900000"),
            (1e-6, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (-123.25, "-123.25"),
            (100.0, "100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(float_text(value, false), text);
        }
        assert_eq!(float_text(f64::from(0.1f32), true), "0.1");
        assert_eq!(float_text(f64::from(1e-7f32), true), "1e-7");
        assert_eq!(hex(&[0, 0x7f, 0xff]), "\\x007fff");
    }

    #[test]
    fn dates_and_times_are_written_digit_by_digit() {
        let mut out = String::new();
        push_date(&mut out, 7, 1, 9);
        out.push(' ');
        push_time(&mut out, 0, 5, 59, 1);
        out.push(' ');
        push_time(&mut out, 23, 0, 0, 999_990);
        out.push(' ');
        push_time(&mut out, 12, 34, 56, 0);
        assert_eq!(out, "0007-01-09 00:05:59.000001 23:00:00.99999 12:34:56");
        assert_eq!(
            timestamp(253_402_300_799, 100_000, &mut |_, _| panic!("valid")),
            Value::String("9999-12-31T23:59:59.1Z".into())
        );
        assert_eq!(
            convert(
                Raw::Date((2024 << 9) | (2 << 5) | 29),
                &column(ColumnType::MYSQL_TYPE_DATE, vec![]),
                &mut |_, _| { panic!("valid") }
            )
            .expect("converts"),
            Value::String("2024-02-29".into())
        );
    }

    #[test]
    fn values_the_target_cannot_hold_are_problems() {
        use mysql_common::value::Value as My;
        let (v, p) = run(ColumnType::MYSQL_TYPE_DATETIME2, vec![0], My::Date(0, 0, 0, 0, 0, 0, 0));
        assert_eq!(v, Value::String("0000-00-00T00:00:00".into()));
        assert_eq!(p.len(), 1, "{p:?}");
        let (v, p) = run(ColumnType::MYSQL_TYPE_TIME2, vec![0], My::Time(false, 1, 2, 0, 0, 0));
        assert_eq!(v, Value::String("26:00:00".into()));
        assert!(p[0].contains("TIME outside"), "{p:?}");
        let (_, p) = run(ColumnType::MYSQL_TYPE_TIME2, vec![0], My::Time(true, 0, 1, 0, 0, 0));
        assert_eq!(p.len(), 1);
        let (_, p) = run(ColumnType::MYSQL_TYPE_TIME2, vec![0], My::Time(false, 1, 0, 0, 0, 0));
        assert!(p.is_empty(), "24:00:00 fits: {p:?}");
        assert!(!valid_date(2023, 2, 29));
        assert!(valid_date(2024, 2, 29));
    }

    #[test]
    fn text_in_charsets() {
        let mut c = column(ColumnType::MYSQL_TYPE_VARCHAR, vec![]);
        let mut none = |_: String, _: &'static str| panic!("no problem expected");
        c.charset = Charset::Latin1;
        assert_eq!(text(vec![0x80, b'a', 0xE9], &c, &mut none), Value::String("€aé".into()));
        c.charset = Charset::Utf16Be;
        assert_eq!(text(vec![0, b'h', 0, b'i'], &c, &mut none), Value::String("hi".into()));
        c.charset = Charset::Binary;
        assert_eq!(text(vec![0, 0xff], &c, &mut none), Value::String("\\x00ff".into()));
        c.charset = Charset::Utf8;
        let mut problems = Vec::new();
        let v = text(vec![0xff], &c, &mut |v, _| problems.push(v));
        assert_eq!(v, Value::String("\\xff".into()));
        assert_eq!(problems, vec!["\\xff".to_owned()]);
    }
}
