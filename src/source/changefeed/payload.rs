//! Changefeed bodies: the webhook envelope (table and query feeds), cloud-storage ndjson
//! files, and HLC timestamps, read with every number's exact text.
//!
//! Lenient where MOLT is brittle, strict where data is at stake: unknown fields are ignored
//! (`mvcc_timestamp`, `length`); a bare envelope (`__crdb__`) is refused with a message that
//! says to use `envelope='wrapped'`; a body with both `payload` and `resolved` is refused,
//! never half-read; in a table feed a line without `key`, `updated` or `topic` is refused, as
//! is a zero timestamp. Each error names the line.

use serde_json::{Map, Value as Json};

use crate::types::position::Hlc;

/// One change a changefeed sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The table: the topic's last part (re-homed into the URL's schema), or the query feed's
    /// or file's table; `None` when the request names it (query feeds).
    pub table: Option<String>,
    /// The key values (`"key":[…]`), when the line has them.
    pub key: Option<Vec<Json>>,
    /// The row after the change; `None` for a delete.
    pub after: Option<Map<String, Json>>,
    /// The row before (`diff`).
    pub before: Option<Map<String, Json>>,
    /// When it happened.
    pub updated: Hlc,
}

/// What a body holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Changes, in the order sent.
    Lines(Vec<Line>),
    /// A resolved timestamp: everything at or before it has been sent.
    Resolved(Hlc),
}

/// Why a body cannot be read (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON.
    #[error("the body is not JSON{}", at(*.line))]
    NotJson {
        /// The ndjson line (1-based), if any.
        line: Option<usize>,
    },
    /// A bare envelope.
    #[error(
        "the body uses the bare envelope (__crdb__); create the changefeed with \
         envelope='wrapped' (the default)"
    )]
    Bare,
    /// Both data and a resolved timestamp.
    #[error("the body has both payload and resolved; a changefeed sends one or the other")]
    Both,
    /// The shape is wrong.
    #[error("{what}")]
    Shape {
        /// What is wrong.
        what: String,
    },
    /// A line is wrong.
    #[error("line {line}: {what}")]
    Line {
        /// Its place in the body (1-based).
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// An ndjson line longer than `--ndjsonBufferSize`.
    #[error("line {line} is longer than --ndjsonBufferSize ({limit} bytes): raise the flag")]
    TooLong {
        /// Its place.
        line: usize,
        /// The limit.
        limit: usize,
    },
}

fn at(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// Reads an HLC as CockroachDB writes it: `<nanos>.<logical>`, the logical part 10 digits
/// (or any zero, `1.0`); nanoseconds at least 0.
pub fn hlc(text: &str) -> Result<Hlc, String> {
    let bad = || format!("{text:?} is not a timestamp (<nanos>.<10-digit logical>)");
    let (nanos, logical) = text.split_once('.').ok_or_else(bad)?;
    if nanos.is_empty() || !nanos.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if logical.is_empty() || !logical.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let zero = logical.bytes().all(|b| b == b'0');
    if logical.len() != 10 && !zero {
        return Err(bad());
    }
    let nanos = nanos.parse::<i64>().map_err(|_| bad())?;
    let logical = logical.parse::<u32>().map_err(|_| bad())?;
    Ok(Hlc { nanos, logical })
}

/// Reads a webhook body. `query_feed`: the URL names the table (`/db/schema/table`), lines
/// need no `key` or `topic`. An empty body is no lines.
pub fn webhook(body: &[u8], query_feed: bool) -> Result<Body, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|_| PayloadError::NotJson { line: None })?;
    if text.trim().is_empty() {
        return Ok(Body::Lines(Vec::new()));
    }
    let json = crate::types::json::parse(text).ok_or(PayloadError::NotJson { line: None })?;
    let Json::Object(top) = json else {
        return Err(PayloadError::Shape { what: "the body must be a JSON object".into() });
    };
    if top.contains_key("__crdb__") {
        return Err(PayloadError::Bare);
    }
    let mut top = top;
    let only_envelope = top.keys().all(|k| matches!(k.as_str(), "payload" | "resolved" | "length"));
    let payload = top.remove("payload").filter(|p| !p.is_null());
    let resolved = top.get("resolved").filter(|r| !r.is_null());
    match (payload, resolved) {
        (Some(Json::Array(lines)), None) => {
            let mut out = Vec::with_capacity(lines.len());
            for (i, line) in lines.into_iter().enumerate() {
                out.push(read_line(line, i + 1, query_feed, true)?);
            }
            Ok(Body::Lines(out))
        }
        (Some(_), None) => {
            Err(PayloadError::Shape { what: "\"payload\" must be an array of lines".into() })
        }
        (None, Some(Json::String(r))) => match hlc(r) {
            Ok(at) if at == Hlc::default() => {
                Err(PayloadError::Shape { what: "the resolved timestamp is zero".into() })
            }
            Ok(at) => Ok(Body::Resolved(at)),
            Err(what) => Err(PayloadError::Shape { what: format!("resolved: {what}") }),
        },
        (None, Some(_)) => {
            Err(PayloadError::Shape { what: "\"resolved\" must be a string".into() })
        }
        (Some(_), Some(_)) => Err(PayloadError::Both),
        // `{}` and `{"payload":null}` are empty; any other shape would be data dropped unseen.
        (None, None) if only_envelope => Ok(Body::Lines(Vec::new())),
        (None, None) => Err(PayloadError::Shape {
            what: "the body has neither \"payload\" nor \"resolved\"".into(),
        }),
    }
}

/// Reads a cloud-storage data file of `topic`: one JSON object per line, none longer than
/// `max_line` bytes.
pub fn ndjson(body: &[u8], topic: &str, max_line: usize) -> Result<Vec<Line>, PayloadError> {
    let mut out = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.len() > max_line {
            return Err(PayloadError::TooLong { line, limit: max_line });
        }
        let text =
            std::str::from_utf8(raw).map_err(|_| PayloadError::NotJson { line: Some(line) })?;
        if text.trim().is_empty() {
            continue;
        }
        let json =
            crate::types::json::parse(text).ok_or(PayloadError::NotJson { line: Some(line) })?;
        if json.get("__crdb__").is_some() {
            return Err(PayloadError::Bare);
        }
        let mut read = read_line(json, line, true, false)?;
        read.table = Some(last_part(topic));
        out.push(read);
    }
    Ok(out)
}

/// One line of a body. `from_url`: the table comes from the request (no `topic` needed, and
/// a key may be missing: the target's primary key supplies it); `webhook`: a webhook line
/// (an ndjson line without `updated` gets the option's name in its error).
fn read_line(line: Json, n: usize, from_url: bool, webhook: bool) -> Result<Line, PayloadError> {
    let fail = |what: String| PayloadError::Line { line: n, what };
    let Json::Object(mut fields) = line else {
        return Err(fail("a line must be a JSON object".into()));
    };
    let updated = match fields.get("updated") {
        Some(Json::String(t)) => hlc(t).map_err(|e| fail(format!("updated: {e}")))?,
        Some(_) => return Err(fail("\"updated\" must be a string".into())),
        None if webhook => {
            return Err(fail("\"updated\" is missing: create the changefeed WITH updated".into()));
        }
        None => {
            return Err(fail(
                "\"updated\" is missing: CREATE CHANGEFEED must specify the 'WITH updated' option"
                    .into(),
            ));
        }
    };
    if updated == Hlc::default() {
        return Err(fail("the timestamp is zero".into()));
    }
    let mut row = |name: &str| -> Result<Option<Map<String, Json>>, PayloadError> {
        match fields.remove(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Object(row)) => Ok(Some(row)),
            Some(_) => Err(fail(format!("\"{name}\" must be an object or null"))),
        }
    };
    let (after, before) = (row("after")?, row("before")?);
    let key = match fields.remove("key") {
        Some(Json::Array(key)) if !key.is_empty() => Some(key),
        Some(Json::Array(_)) => return Err(fail("\"key\" is empty".into())),
        Some(Json::Null) | None if from_url => None,
        Some(Json::Null) | None => {
            return Err(fail("\"key\" is missing: a table feed sends key_in_value".into()));
        }
        Some(_) => return Err(fail("\"key\" must be an array".into())),
    };
    let table = if from_url {
        None
    } else {
        match fields.get("topic") {
            Some(Json::String(topic)) if !topic.trim().is_empty() => Some(last_part(topic)),
            _ => {
                return Err(fail(
                    "\"topic\" is missing or empty: the table must be named (topic_in_value)"
                        .into(),
                ));
            }
        }
    };
    Ok(Line { table, key, after, before, updated })
}

/// The last part of a dotted, optionally double-quoted name (`db.public."My.T"` → `My.T`).
fn last_part(name: &str) -> String {
    let name = name.trim();
    if let Some(inner) = name.strip_suffix('"')
        && let Some(start) = inner.rfind('"')
    {
        return inner[start + 1..].replace("\"\"", "\"");
    }
    name.rsplit('.').next().unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(body: &str, query: bool) -> Vec<Line> {
        match webhook(body.as_bytes(), query).expect("body") {
            Body::Lines(lines) => lines,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timestamps_as_cockroachdb_writes_them() {
        assert_eq!(
            hlc("1712345678901234567.0000000001"),
            Ok(Hlc { nanos: 1_712_345_678_901_234_567, logical: 1 })
        );
        assert_eq!(hlc("1.0"), Ok(Hlc { nanos: 1, logical: 0 }));
        for bad in ["1.5", "1", ".0000000001", "-1.0", "0x10.0", "1.00000000001", "a.b", ""] {
            assert!(hlc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_webhook_envelope() {
        let body = r#"{"payload":[
          {"after":{"id":1,"big":12345678901234567890,"d":4E+2},"key":[1],"topic":"employees","updated":"1712345678901234567.0000000000","mvcc_timestamp":"x"},
          {"after":{"id":2},"before":{"id":2,"v":"x"},"key":[2],"topic":"db.public.\"Emp.loyees\"","updated":"1712345678901234567.0000000001"},
          {"after":null,"key":[3, "a"],"topic":"migration_db.migration_schema.employees","updated":"1712345679000000000.0000000000"},
          {"key":[4],"topic":"employees","updated":"1712345679000000000.0000000000"}],"length":4}"#;
        let got = lines(body, false);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].table.as_deref(), Some("employees"));
        assert_eq!(
            serde_json::Value::Object(got[0].after.clone().expect("after")).to_string(),
            r#"{"id":1,"big":12345678901234567890,"d":4E+2}"#,
            "numbers keep their text"
        );
        assert_eq!(got[1].table.as_deref(), Some("Emp.loyees"));
        assert!(got[1].before.is_some());
        assert_eq!(got[2].table.as_deref(), Some("employees"), "re-homed by its last part");
        assert!(got[2].after.is_none() && got[3].after.is_none(), "null and absent: deletes");
        assert_eq!(got[2].key.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            webhook(br#"{"resolved":"1712345680000000000.0000000000"}"#, false),
            Ok(Body::Resolved(Hlc { nanos: 1_712_345_680_000_000_000, logical: 0 }))
        );
        for empty in ["", "  ", r#"{"payload":[]}"#, r#"{"payload":null}"#, "{}"] {
            assert_eq!(webhook(empty.as_bytes(), false), Ok(Body::Lines(Vec::new())), "{empty:?}");
        }
        for other in [r#"{"rows":[{"id":1}]}"#, r#"{"length":1,"data":[]}"#] {
            assert!(
                webhook(other.as_bytes(), false)
                    .is_err_and(|e| e.to_string().contains("neither \"payload\" nor \"resolved\"")),
                "{other}"
            );
        }
    }

    #[test]
    fn query_feeds_need_no_key_or_topic() {
        let got = lines(
            r#"{"payload":[{"after":{"id":7},"updated":"5.0000000001"},{"after":null,"before":{"id":7},"updated":"6.0"}]}"#,
            true,
        );
        assert_eq!((got[0].table.clone(), got[0].key.clone()), (None, None));
        assert!(got[1].after.is_none() && got[1].before.is_some());
    }

    #[test]
    fn malformed_bodies_are_named() {
        let err = |body: &str| webhook(body.as_bytes(), false).expect_err(body).to_string();
        assert!(err("{").contains("not JSON"));
        assert!(err("[]").contains("must be a JSON object"));
        assert!(err(r#"{"__crdb__":{"updated":"1.0"}}"#).contains("envelope='wrapped'"));
        assert!(err(r#"{"payload":[],"resolved":"1.0"}"#).contains("both payload and resolved"));
        assert!(err(r#"{"resolved":"1.5"}"#).contains("not a timestamp"));
        assert!(err(r#"{"payload":{}}"#).contains("must be an array"));
        let line = |l: &str| err(&format!(r#"{{"payload":[{l}]}}"#));
        assert!(
            line(r#"{"after":{},"key":[1],"topic":"t"}"#)
                .contains("line 1: \"updated\" is missing")
        );
        assert!(line(r#"{"after":{},"topic":"t","updated":"1.0"}"#).contains("\"key\" is missing"));
        assert!(
            line(r#"{"after":{},"key":[],"topic":"t","updated":"1.0"}"#)
                .contains("\"key\" is empty")
        );
        assert!(line(r#"{"after":{},"key":[1],"updated":"1.0"}"#).contains("\"topic\" is missing"));
        assert!(
            line(r#"{"after":{},"key":[1],"topic":" ","updated":"1.0"}"#)
                .contains("\"topic\" is missing")
        );
        assert!(line(r#"{"after":{},"key":[1],"topic":"t","updated":"0.0"}"#).contains("zero"));
        assert!(
            webhook(br#"{"resolved":"0.0"}"#, false).is_err_and(|e| e.to_string().contains("zero"))
        );
        assert!(
            line(r#"{"after":[1],"key":[1],"topic":"t","updated":"1.0"}"#)
                .contains("object or null")
        );
    }

    #[test]
    fn ndjson_files() {
        let body = b"{\"after\":{\"id\":1},\"key\":[1],\"updated\":\"1.0\",\"mvcc_timestamp\":\"1.0\"}\n\n{\"after\":null,\"key\":[1],\"updated\":\"2.0\"}\n";
        let got = ndjson(body, "db.public.orders", 1 << 20).expect("ndjson");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].table.as_deref(), Some("orders"));
        assert!(
            ndjson(body, "orders", 10)
                .expect_err("long")
                .to_string()
                .contains("--ndjsonBufferSize")
        );
        let err = ndjson(b"{\"after\":{}}\n", "t", 100).expect_err("no updated").to_string();
        assert!(err.contains("'WITH updated'"), "{err}");
        assert!(ndjson(b"nope", "t", 100).expect_err("json").to_string().contains("line 1"));
    }
}
