//! Numbers inside JSON values keep their exact source text through a userscript.
//!
//! JavaScript numbers are doubles, so a JSON number such as `12345678901234567890`, `1e400`
//! or `1.000000000000000000001` cannot be one without changing its value, and even `2.50`
//! would come back as `2.5`. The rules:
//!
//! - **Into the script**: a JSON number arrives as a JS number when that number prints as the
//!   same value (`String(n)` has the source's value: `2.50` → `2.5`, `0.1`, `1e21`); any
//!   other arrives as a string holding its exact text (`"12345678901234567890"`, `"1e400"`).
//!   See [`js_number`]. A JSON column whose document is a bare number gets its text as a
//!   string, as every column number does.
//! - **Out of the script**: where the script returns, at the same place of a JSON column's
//!   document, a value equal to the one it was given (the same number, or the same string
//!   for a number given as a string), the source's text is kept ([`keep_source_text`]). A
//!   JSON column the script leaves as it was reaches the target as the source's text, byte
//!   for byte; in a document the script changed, the numbers it did not change keep their
//!   text.
//!
//! So nothing is rounded unless the script computes a new number itself.

use super::RowOp;
use crate::types::{Row, Value};

/// The double a JSON number's text becomes in a script, when it prints as the same value;
/// `None` when no double does (the script gets the exact text as a string instead).
pub fn js_number(text: &str) -> Option<f64> {
    let f: f64 = text.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    let mut buffer = ryu::Buffer::new();
    (canonical(text)? == canonical(buffer.format_finite(f))?).then_some(f)
}

/// A decimal number as (negative, significant digits, exponent of the last digit); zero is
/// `(false, "", 0)`. `None` when `text` is not a decimal number.
fn canonical(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return Some((false, String::new(), 0));
    }
    let frac_len = i64::try_from(frac.len()).ok()?;
    let dropped = i64::try_from(digits.len() - trimmed.len()).ok()?;
    Some((negative, trimmed.to_owned(), exponent.checked_sub(frac_len)?.checked_add(dropped)?))
}

/// `returned` (what a script gave back for a column) with the source's text kept where it
/// holds what the script was given: `original` itself when the whole value is unchanged,
/// else a document whose unchanged numbers keep their text. Values other than JSON
/// documents are returned as they are.
pub fn keep_source_text(returned: Value, original: &Value) -> Value {
    let parsed;
    let source = match original {
        Value::Json(j) => j,
        Value::JsonText(text) => match crate::types::json::parse(text) {
            Some(j) => {
                parsed = j;
                &parsed
            }
            None => return returned,
        },
        _ => return returned,
    };
    keep_text_of(returned, original, source)
}

/// [`keep_source_text`] with `original`'s document already at hand.
pub(crate) fn keep_text_of(returned: Value, original: &Value, source: &serde_json::Value) -> Value {
    if let serde_json::Value::Number(n) = source {
        // A document that is a bare number reached the script as its text.
        let same = match &returned {
            Value::String(s) => s == n.as_str(),
            Value::Number(s) => canonical(s).is_some() && canonical(s) == canonical(n.as_str()),
            _ => false,
        };
        return if same { original.clone() } else { returned };
    }
    // A document (or array) that changed keeps its unchanged numbers' text; any other value
    // that changed is returned as it is.
    let (document, scalar) = match returned {
        Value::JsonText(_) => return returned,
        Value::Json(document) => (document, None),
        Value::Array(_) => (returned.to_json(), None),
        other => (other.to_json(), Some(other)),
    };
    if same_as_seen(&document, source) {
        return original.clone();
    }
    scalar.unwrap_or_else(|| Value::Json(merge(document, source)))
}

/// Applies [`keep_source_text`] to every column of `row` that was a JSON value in `original`.
pub fn keep_row_text(row: &mut Row, original: &Row) {
    if !original.values().any(|v| matches!(v, Value::Json(_) | Value::JsonText(_))) {
        return;
    }
    for (column, value) in row.iter_mut() {
        if let Some(source @ (Value::Json(_) | Value::JsonText(_))) = original.get(column) {
            let returned = std::mem::replace(value, Value::Null);
            *value = keep_source_text(returned, source);
        }
    }
}

/// The JSON columns of the upserts handed to `onWrite`, by primary key: what
/// [`keep_ops_text`] compares `write()`'s rows with.
pub fn json_originals(ops: &[RowOp]) -> Vec<(Vec<String>, Row)> {
    ops.iter()
        .filter_map(|op| {
            let data = op.data.as_ref()?;
            let json: Row = data
                .iter()
                .filter(|(_, v)| matches!(v, Value::Json(_) | Value::JsonText(_)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (!json.is_empty() && !op.pk.is_empty()).then(|| (op.pk.clone(), json))
        })
        .collect()
}

/// [`keep_row_text`] for the rows a script hands to `write()`, each compared with the row
/// of the same primary key that `onWrite` received.
pub fn keep_ops_text(ops: &mut [RowOp], originals: &[(Vec<String>, Row)]) {
    if originals.is_empty() {
        return;
    }
    let by_key: std::collections::HashMap<&[String], &Row> =
        originals.iter().map(|(pk, row)| (pk.as_slice(), row)).collect();
    for op in ops {
        if let (Some(data), Some(original)) = (op.data.as_mut(), by_key.get(op.pk.as_slice())) {
            keep_row_text(data, original);
        }
    }
}

/// `returned` equals what the script was given for `source`.
fn same_as_seen(returned: &serde_json::Value, source: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (returned, source) {
        (J::Number(_) | J::String(_), J::Number(_)) => same_number(returned, source),
        (J::String(r), J::String(s)) => r == s,
        (J::Bool(r), J::Bool(s)) => r == s,
        (J::Null, J::Null) => true,
        (J::Array(r), J::Array(s)) => {
            r.len() == s.len() && r.iter().zip(s).all(|(r, s)| same_as_seen(r, s))
        }
        (J::Object(r), J::Object(s)) => {
            r.len() == s.len()
                && r.iter().all(|(k, r)| s.get(k).is_some_and(|s| same_as_seen(r, s)))
        }
        _ => false,
    }
}

/// `returned` is the number `source` as the script saw it: the same double, or the same
/// text for a number given as a string.
fn same_number(returned: &serde_json::Value, source: &serde_json::Value) -> bool {
    let serde_json::Value::Number(source) = source else { return false };
    let text = source.as_str();
    match (returned, js_number(text)) {
        (serde_json::Value::Number(r), Some(seen)) => r.as_str().parse::<f64>().ok() == Some(seen),
        (serde_json::Value::String(r), None) => r == text,
        _ => false,
    }
}

/// `returned` with the source's number text wherever a number (or a number given as a
/// string) is unchanged at the same place.
fn merge(returned: serde_json::Value, source: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match (returned, source) {
        (r @ (J::Number(_) | J::String(_)), s @ J::Number(_)) => {
            if same_number(&r, s) {
                s.clone()
            } else {
                r
            }
        }
        (J::Array(mut r), J::Array(s)) => {
            for (r, s) in r.iter_mut().zip(s) {
                *r = merge(std::mem::take(r), s);
            }
            J::Array(r)
        }
        (J::Object(mut r), J::Object(s)) => {
            for (k, r) in r.iter_mut() {
                if let Some(s) = s.get(k) {
                    *r = merge(std::mem::take(r), s);
                }
            }
            J::Object(r)
        }
        (r, _) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_a_double_prints_the_same_are_numbers() {
        for (text, want) in [
            ("2.50", Some(2.5)),
            ("0.1", Some(0.1)),
            ("-0", Some(-0.0)),
            ("1e21", Some(1e21)),
            ("100", Some(100.0)),
            ("1.5E-7", Some(1.5e-7)),
            ("9007199254740993", None),
            ("12345678901234567890", None),
            ("1e400", None),
            ("-1e400", None),
            ("1e-400", None),
            ("1.0000000000000000000001", None),
            ("0.10000000000000000555", None),
            ("abc", None),
        ] {
            assert_eq!(js_number(text), want, "{text}");
        }
        assert_eq!(canonical("0012.3400e2"), Some((false, "1234".into(), 0)));
        assert_eq!(canonical("0.000"), Some((false, String::new(), 0)));
        assert_eq!(canonical("."), None);
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).expect("json")
    }

    #[test]
    fn an_unchanged_document_keeps_its_exact_text() {
        let text = r#"{"big": 12345678901234567890,  "p": 2.50, "e": 1e400, "a": [0.1, "x"]}"#;
        assert_eq!(js_number("1e400"), None);
        let original = Value::JsonText(text.into());
        // As the script saw it: big and e as strings, p as 2.5.
        let returned = Value::Json(json(
            r#"{"a": [0.1, "x"], "big": "12345678901234567890", "p": 2.5, "e": "1e400"}"#,
        ));
        assert_eq!(keep_source_text(returned, &original), original);
    }

    #[test]
    fn a_changed_document_keeps_the_text_of_what_did_not_change() {
        let original =
            Value::JsonText(r#"{"big": 12345678901234567890, "p": 2.50, "n": [1.0, 7]}"#.into());
        let returned = Value::Json(json(
            r#"{"big": "12345678901234567890", "p": 2.5, "n": [1, 8], "seen": true}"#,
        ));
        let Value::Json(kept) = keep_source_text(returned, &original) else { panic!("a document") };
        assert_eq!(
            kept.to_string(),
            r#"{"big":12345678901234567890,"p":2.50,"n":[1.0,8],"seen":true}"#
        );
        // A number the script replaced by another is the script's.
        let returned = Value::Json(json(r#"{"big": 12345678901234567000, "p": "2.50", "n": []}"#));
        let Value::Json(kept) = keep_source_text(returned, &original) else { panic!("a document") };
        assert_eq!(kept.to_string(), r#"{"big":12345678901234567000,"p":"2.50","n":[]}"#);
    }

    #[test]
    fn scalar_documents_and_other_values() {
        let original = Value::JsonText("12345678901234567890".into());
        let returned = Value::String("12345678901234567890".into());
        assert_eq!(keep_source_text(returned, &original), original);
        let original = Value::JsonText("2.50".into());
        assert_eq!(keep_source_text(Value::Number("2.5".into()), &original), original);
        assert_eq!(
            keep_source_text(Value::Number("3".into()), &original),
            Value::Number("3".into())
        );
        // Not a JSON column: left alone.
        let original = Value::Number("2.50".into());
        assert_eq!(
            keep_source_text(Value::String("2.5".into()), &original),
            Value::String("2.5".into())
        );
        let mut row: Row =
            [("id".into(), Value::Number("1".into())), ("doc".into(), Value::String("x".into()))]
                .into_iter()
                .collect();
        let source: Row = [
            ("id".into(), Value::Number("1".into())),
            ("doc".into(), Value::JsonText(r#""x""#.into())),
        ]
        .into_iter()
        .collect();
        keep_row_text(&mut row, &source);
        assert_eq!(row["doc"], Value::JsonText(r#""x""#.into()));
    }
}
