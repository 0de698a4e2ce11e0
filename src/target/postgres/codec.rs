//! PostgreSQL (and CockroachDB) values in and out of [`Value`], exactly.
//!
//! Parameters are sent in PostgreSQL's *text* format ([`TextParam`]), so the server parses
//! them with the type it inferred for each placeholder: `"12.50"` becomes NUMERIC, INT8,
//! TEXT or JSONB as the statement needs, without a float in between. Results arrive in the
//! binary format and are decoded here ([`PgValue`]) into the text scripts and the applier
//! use: numbers as exact decimal text (NUMERIC digit by digit), timestamps in RFC 3339,
//! `\x` hex for bytes, JSON documents, one-dimensional arrays.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

use crate::target::batch::Cell;
use crate::types::Value;
use crate::types::civil::civil_from_days;

type BoxError = Box<dyn Error + Sync + Send>;

/// A value sent in text format; the server converts it to the placeholder's type.
#[derive(Debug)]
pub struct TextParam<'a>(pub &'a Value);

impl ToSql for TextParam<'_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Bool(b) => out.extend_from_slice(if *b { b"t" } else { b"f" }),
            Value::Number(s) | Value::String(s) => out.extend_from_slice(s.as_bytes()),
            Value::Json(j) => out.extend_from_slice(j.to_string().as_bytes()),
            Value::JsonText(s) => out.extend_from_slice(s.as_bytes()),
            Value::Array(items) => out.extend_from_slice(array_literal(items).as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    to_sql_checked!();
}

/// A column of cells sent as a one-dimensional `text[]` in binary format: each element goes
/// as its length and bytes, so nothing is quoted here and the server parses no array literal
/// (the statement casts the elements to the column's type).
#[derive(Debug)]
pub struct TextArray<'c, 'a>(pub &'c [Cell<'a>]);

impl ToSql for TextArray<'_, '_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        encode_text_array(self.0, out)?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(member) if *member == Type::TEXT)
    }

    to_sql_checked!();
}

/// Writes `cells` as a binary one-dimensional `text[]` (what [`TextArray`] sends).
pub fn encode_text_array(cells: &[Cell<'_>], out: &mut BytesMut) -> Result<(), BoxError> {
    use bytes::BufMut;
    let len = |n: usize| i32::try_from(n).map_err(|_| "a text[] parameter exceeds 2 GiB");
    let count = len(cells.len())?;
    out.put_i32(i32::from(count > 0)); // dimensions (an empty array has none)
    out.put_i32(i32::from(cells.iter().any(Option::is_none)));
    out.put_u32(Type::TEXT.oid());
    if count > 0 {
        out.put_i32(count);
        out.put_i32(1); // lower bound
    }
    for cell in cells {
        match cell {
            None => out.put_i32(-1),
            Some(text) => {
                out.put_i32(len(text.len())?);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    Ok(())
}

/// A `text[]` parameter encoded ahead by [`encode_text_array`].
#[derive(Debug)]
pub struct EncodedTextArray<'a>(pub &'a [u8]);

impl ToSql for EncodedTextArray<'_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        TextArray::accepts(ty)
    }

    to_sql_checked!();
}

/// `{1,"a b",NULL}`: a PostgreSQL array literal, elements quoted and escaped.
pub fn array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&array_literal(inner)),
            other => {
                let text = match other {
                    Value::Bool(b) => {
                        if *b {
                            "t".to_owned()
                        } else {
                            "f".to_owned()
                        }
                    }
                    Value::Json(j) => j.to_string(),
                    Value::Number(s) | Value::String(s) | Value::JsonText(s) => s.clone(),
                    Value::Null | Value::Array(_) => unreachable!("handled above"),
                };
                out.push('"');
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

/// A result column decoded from PostgreSQL's binary format.
#[derive(Debug, Clone, PartialEq)]
pub struct PgValue(pub Value);

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode(ty, raw).map(PgValue)
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, BoxError> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn need(raw: &[u8], n: usize, ty: &Type) -> Result<(), BoxError> {
    if raw.len() < n {
        return Err(format!("a {} value of {} bytes is too short", ty.name(), raw.len()).into());
    }
    Ok(())
}

fn be_i16(raw: &[u8]) -> i16 {
    i16::from_be_bytes([raw[0], raw[1]])
}

fn be_i32(raw: &[u8]) -> i32 {
    i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]])
}

fn be_i64(raw: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[..8]);
    i64::from_be_bytes(b)
}

fn utf8(raw: &[u8]) -> Result<String, BoxError> {
    Ok(std::str::from_utf8(raw)?.to_owned())
}

fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    if let Kind::Array(element) = ty.kind() {
        return decode_array(element, raw);
    }
    if let Kind::Domain(base) = ty.kind() {
        return decode(base, raw);
    }
    if matches!(ty.kind(), Kind::Enum(_)) {
        return Ok(Value::String(utf8(raw)?));
    }
    Ok(match *ty {
        Type::BOOL => {
            need(raw, 1, ty)?;
            Value::Bool(raw[0] != 0)
        }
        Type::INT2 => {
            need(raw, 2, ty)?;
            Value::Number(be_i16(raw).to_string())
        }
        Type::INT4 => {
            need(raw, 4, ty)?;
            Value::Number(be_i32(raw).to_string())
        }
        Type::OID => {
            need(raw, 4, ty)?;
            Value::Number((be_i32(raw) as u32).to_string())
        }
        Type::INT8 => {
            need(raw, 8, ty)?;
            Value::Number(be_i64(raw).to_string())
        }
        Type::FLOAT4 => {
            need(raw, 4, ty)?;
            Value::Number(float_text(f64::from(f32::from_bits(be_i32(raw) as u32)), true))
        }
        Type::FLOAT8 => {
            need(raw, 8, ty)?;
            Value::Number(float_text(f64::from_bits(be_i64(raw) as u64), false))
        }
        Type::NUMERIC => Value::Number(numeric_text(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::UNKNOWN => {
            Value::String(utf8(raw)?)
        }
        Type::JSON => Value::Json(serde_json::from_slice(raw)?),
        Type::JSONB => {
            need(raw, 1, ty)?;
            if raw[0] != 1 {
                return Err(format!("unknown jsonb version {}", raw[0]).into());
            }
            Value::Json(serde_json::from_slice(&raw[1..])?)
        }
        Type::UUID => {
            need(raw, 16, ty)?;
            let h: String = raw[..16].iter().map(|b| format!("{b:02x}")).collect();
            Value::String(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ))
        }
        Type::BYTEA => Value::String(format!(
            "\\x{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )),
        Type::DATE => {
            need(raw, 4, ty)?;
            Value::String(match be_i32(raw) {
                i32::MAX => "infinity".into(),
                i32::MIN => "-infinity".into(),
                days => date_text(i64::from(days)),
            })
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            need(raw, 8, ty)?;
            Value::String(match be_i64(raw) {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                micros => {
                    let days = micros.div_euclid(86_400_000_000);
                    let rest = micros.rem_euclid(86_400_000_000);
                    let zone = if *ty == Type::TIMESTAMPTZ { "Z" } else { "" };
                    format!("{}T{}{zone}", date_text(days), time_text(rest))
                }
            })
        }
        Type::TIME => {
            need(raw, 8, ty)?;
            Value::String(time_text(be_i64(raw)))
        }
        _ => {
            return Err(format!(
                "values of type {} cannot be read yet: cast the column to text in the query (col::text)",
                ty.name()
            )
            .into());
        }
    })
}

/// PostgreSQL's spelling of special floats; shortest round-trip digits otherwise.
fn float_text(f: f64, single: bool) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else if single {
        (f as f32).to_string()
    } else {
        f.to_string()
    }
}

/// NUMERIC's binary form: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() < 8 {
        return Err("a numeric value is too short".into());
    }
    let ndigits = usize::try_from(be_i16(raw)).map_err(|_| "negative numeric digit count")?;
    let weight = i32::from(be_i16(&raw[2..]));
    let sign = u16::from_be_bytes([raw[4], raw[5]]);
    let dscale = usize::try_from(be_i16(&raw[6..])).map_err(|_| "negative numeric scale")?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        other => return Err(format!("unknown numeric sign {other:#x}").into()),
    }
    if raw.len() < 8 + 2 * ndigits {
        return Err("a numeric value is truncated".into());
    }
    let digits: Vec<i32> = (0..ndigits).map(|i| i32::from(be_i16(&raw[8 + 2 * i..]))).collect();
    let mut int_part = String::new();
    for group in 0..=weight.max(-1) {
        let d = usize::try_from(group).ok().and_then(|g| digits.get(g)).copied().unwrap_or(0);
        if int_part.is_empty() {
            if d != 0 {
                int_part = d.to_string();
            }
        } else {
            int_part.push_str(&format!("{d:04}"));
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let mut group = weight + 1;
    while frac.len() < dscale {
        let d = if group < 0 {
            0
        } else {
            usize::try_from(group).ok().and_then(|g| digits.get(g)).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{d:04}"));
        group += 1;
    }
    frac.truncate(dscale);
    let mut text = if sign == 0x4000 { format!("-{int_part}") } else { int_part };
    if dscale > 0 {
        text.push('.');
        text.push_str(&frac);
    }
    Ok(text)
}

/// `YYYY-MM-DD` for days since 2000-01-01 (proleptic Gregorian; years before 1 as BC).
fn date_text(days_since_2000: i64) -> String {
    let (year, month, day) = civil_from_days(days_since_2000 + 10_957);
    if year <= 0 {
        format!("{:04}-{month:02}-{day:02} BC", 1 - year)
    } else {
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// `HH:MM:SS[.ffffff]` (trailing zeros of the fraction dropped) for microseconds of a day.
fn time_text(micros: i64) -> String {
    let (secs, frac) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let text = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 { text } else { format!("{text}.{}", format!("{frac:06}").trim_end_matches('0')) }
}

/// One-dimensional arrays (and empty ones); deeper arrays nest.
fn decode_array(element: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    need(raw, 12, element)?;
    let ndim = usize::try_from(be_i32(raw)).map_err(|_| "negative array dimensions")?;
    if ndim == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    let mut pos = 12;
    let mut dims = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        need(&raw[pos..], 8, element)?;
        dims.push(usize::try_from(be_i32(&raw[pos..])).map_err(|_| "negative array length")?);
        pos += 8;
    }
    let total: usize = dims.iter().product();
    let mut items = Vec::with_capacity(total);
    for _ in 0..total {
        need(&raw[pos..], 4, element)?;
        let len = be_i32(&raw[pos..]);
        pos += 4;
        if len < 0 {
            items.push(Value::Null);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| "bad element length")?;
        need(&raw[pos..], len, element)?;
        items.push(decode(element, &raw[pos..pos + len])?);
        pos += len;
    }
    // Fold the flat list into nested arrays, innermost dimension first.
    for &dim in dims.iter().skip(1).rev() {
        items = items.chunks(dim.max(1)).map(|c| Value::Array(c.to_vec())).collect();
    }
    Ok(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_arrays_go_as_lengths_and_bytes() {
        let cells: Vec<Cell> = vec![Some("ab".into()), None, Some("".into())];
        let mut out = BytesMut::new();
        TextArray(&cells).to_sql(&Type::TEXT_ARRAY, &mut out).expect("encodes");
        let words = |b: &[u8]| {
            b.chunks(4)
                .map(|c| i32::from_be_bytes(c.try_into().expect("4 bytes")))
                .collect::<Vec<_>>()
        };
        assert_eq!(words(&out[..20]), [1, 1, 25, 3, 1], "one dimension, has NULL, text, 3 from 1");
        assert_eq!(&out[20..], b"\0\0\0\x02ab\xff\xff\xff\xff\0\0\0\0");
        let mut empty = BytesMut::new();
        TextArray(&[]).to_sql(&Type::TEXT_ARRAY, &mut empty).expect("encodes");
        assert_eq!(words(&empty), [0, 0, 25], "no dimensions");
        assert!(TextArray::accepts(&Type::TEXT_ARRAY) && !TextArray::accepts(&Type::INT8_ARRAY));
    }

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for v in [ndigits, weight] {
            raw.extend(v.to_be_bytes());
        }
        raw.extend(sign.to_be_bytes());
        raw.extend(dscale.to_be_bytes());
        for d in digits {
            raw.extend(d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numeric_digits_are_exact() {
        assert_eq!(numeric_text(&numeric(2, 0, 0, 2, &[12, 5000])).expect("ok"), "12.50");
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).expect("ok"), "0");
        assert_eq!(numeric_text(&numeric(0, 0, 0, 3, &[])).expect("ok"), "0.000");
        assert_eq!(numeric_text(&numeric(1, -1, 0x4000, 4, &[5])).expect("ok"), "-0.0005");
        assert_eq!(numeric_text(&numeric(3, 2, 0, 0, &[9, 0, 1])).expect("ok"), "900000001");
        assert_eq!(numeric_text(&numeric(1, 2, 0, 0, &[7])).expect("ok"), "700000000");
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).expect("ok"), "NaN");
        assert!(numeric_text(&[0, 1]).is_err());
        assert!(numeric_text(&numeric(3, 0, 0, 0, &[1])).is_err(), "truncated");
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(date_text(0), "2000-01-01");
        assert_eq!(date_text(-10_957), "1970-01-01");
        assert_eq!(date_text(59), "2000-02-29");
        assert_eq!(date_text(8_766), "2024-01-01");
        assert_eq!(date_text(-730_119), "0001-01-01");
        assert_eq!(date_text(-730_120), "0001-12-31 BC");
        assert_eq!(time_text(0), "00:00:00");
        assert_eq!(time_text(3_723_500_000), "01:02:03.5");
        assert_eq!(time_text(86_399_999_999), "23:59:59.999999");
    }

    #[test]
    fn array_literals_quote_elements() {
        let items = vec![
            Value::Number("1".into()),
            Value::String("a \"b\"\\".into()),
            Value::Null,
            Value::Bool(true),
        ];
        assert_eq!(array_literal(&items), r#"{"1","a \"b\"\\",NULL,"t"}"#);
        assert_eq!(array_literal(&[]), "{}");
    }

    #[test]
    fn malformed_binary_is_an_error_not_a_panic() {
        for ty in [
            Type::INT4,
            Type::INT8,
            Type::UUID,
            Type::TIMESTAMPTZ,
            Type::DATE,
            Type::JSONB,
            Type::INT4_ARRAY,
        ] {
            assert!(decode(&ty, &[1]).is_err(), "{ty}");
        }
        assert!(decode(&Type::JSONB, &[2, b'{', b'}']).is_err());
        assert!(
            decode(&Type::INTERVAL, &[0; 16])
                .expect_err("unsupported")
                .to_string()
                .contains("col::text")
        );
    }
}
