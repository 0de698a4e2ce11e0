//! Changefeed bodies: the webhook envelope (table and query feeds), cloud-storage ndjson
//! files, and HLC timestamps, read with every number's exact text.
//!
//! Lenient where MOLT is brittle, strict where data is at stake: unknown fields are ignored
//! (`mvcc_timestamp`, `length`); a bare envelope (`__crdb__`) is refused with a message that
//! says to use `envelope='wrapped'`; a body with both `payload` and `resolved` is refused,
//! never half-read; in a table feed a line without `key`, `updated` or `topic` is refused, as
//! is a zero timestamp. Each error names the line.

use serde_json::{Map, Value as Json};

use crate::types::Name;
use crate::types::json::Reader;
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
    pub after: Option<Fields>,
    /// The row before (`diff`).
    pub before: Option<Fields>,
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
///
/// The body is read in one pass that knows the envelope's shape: rows are built as they are
/// read (no document of the whole body first), their column names shared between lines, and
/// a column's object kept as its text (a JSON column's document goes to the target as it
/// came). Anything that is not JSON is refused as a whole, before any line's own error.
pub fn webhook(body: &[u8], query_feed: bool) -> Result<Body, PayloadError> {
    let text = std::str::from_utf8(body).map_err(|_| PayloadError::NotJson { line: None })?;
    if text.trim().is_empty() {
        return Ok(Body::Lines(Vec::new()));
    }
    let mut r = Reader::new(text);
    if r.peek() != Some(b'{') {
        return Err(match crate::types::json::parse(text) {
            Some(_) => PayloadError::Shape { what: "the body must be a JSON object".into() },
            None => PayloadError::NotJson { line: None },
        });
    }
    let envelope = read_envelope(&mut r, query_feed)
        .filter(|_| r.at_end())
        .ok_or(PayloadError::NotJson { line: None })?;
    let Envelope { bare, only_envelope, payload, resolved } = envelope;
    if bare {
        return Err(PayloadError::Bare);
    }
    match (payload, resolved.filter(|r| !r.is_null())) {
        (Some(Payload::Lines(lines)), None) => lines.map(Body::Lines),
        (Some(Payload::Other), None) => {
            Err(PayloadError::Shape { what: "\"payload\" must be an array of lines".into() })
        }
        (None, Some(Json::String(r))) => match hlc(&r) {
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

/// A webhook body's top-level fields (the last of a repeated field counts, as in a map).
struct Envelope {
    /// `__crdb__` is there: the bare envelope.
    bare: bool,
    /// No field but `payload`, `resolved` and `length`.
    only_envelope: bool,
    /// `payload`, unless absent or null.
    payload: Option<Payload>,
    resolved: Option<Json>,
}

enum Payload {
    /// An array: its lines, or the first line's error.
    Lines(Result<Vec<Line>, PayloadError>),
    /// Anything else.
    Other,
}

/// The body's object, at the cursor; `None`: not JSON.
fn read_envelope(r: &mut Reader<'_>, query_feed: bool) -> Option<Envelope> {
    let mut envelope = Envelope { bare: false, only_envelope: true, payload: None, resolved: None };
    r.members(|r, name| {
        match &*name {
            "payload" => {
                envelope.payload = match r.peek()? {
                    b'[' => Some(Payload::Lines(read_lines(r, query_feed)?)),
                    b'n' => {
                        r.skip(1)?;
                        None
                    }
                    _ => {
                        r.skip(1)?;
                        Some(Payload::Other)
                    }
                }
            }
            "resolved" => envelope.resolved = Some(r.document(1)?),
            "length" => r.skip(1)?,
            other => {
                envelope.bare |= other == "__crdb__";
                envelope.only_envelope = false;
                r.skip(1)?;
            }
        }
        Some(())
    })?;
    Some(envelope)
}

/// The `payload` array at the cursor: its lines, or the first line's error (the rest is still
/// read, so a body that is not JSON further on is refused as such); `None`: not JSON.
fn read_lines(r: &mut Reader<'_>, query_feed: bool) -> Option<Result<Vec<Line>, PayloadError>> {
    let mut out = Ok(Vec::new());
    let mut names = Names::default();
    let mut n = 0;
    r.items(|r| {
        n += 1;
        let line = if r.peek()? == b'{' {
            let parts = read_parts(r, &mut names, 2)?;
            out.is_ok().then(|| check_line(parts, n, query_feed, true))
        } else {
            r.skip(2)?;
            Some(Err(PayloadError::Line { line: n, what: "a line must be a JSON object".into() }))
        };
        match (&mut out, line) {
            (Ok(lines), Some(Ok(line))) => lines.push(line),
            (Ok(_), Some(Err(e))) => out = Err(e),
            _ => {}
        }
        Some(())
    })?;
    Some(out)
}

/// Reads a cloud-storage data file of `topic`: one JSON object per line, none longer than
/// `max_line` bytes.
pub fn ndjson(body: &[u8], topic: &str, max_line: usize) -> Result<Vec<Line>, PayloadError> {
    let mut out = Vec::new();
    let mut names = Names::default();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.len() > max_line {
            return Err(PayloadError::TooLong { line, limit: max_line });
        }
        let not_json = PayloadError::NotJson { line: Some(line) };
        let text = std::str::from_utf8(raw).map_err(|_| not_json.clone())?;
        if text.trim().is_empty() {
            continue;
        }
        let mut r = Reader::new(text);
        if r.peek() != Some(b'{') {
            return Err(match crate::types::json::parse(text) {
                Some(_) => PayloadError::Line { line, what: "a line must be a JSON object".into() },
                None => not_json,
            });
        }
        let parts = read_parts(&mut r, &mut names, 0).filter(|_| r.at_end()).ok_or(not_json)?;
        if parts.bare {
            return Err(PayloadError::Bare);
        }
        let mut read = check_line(parts, line, true, false)?;
        read.table = Some(last_part(topic));
        out.push(read);
    }
    Ok(out)
}

/// A row as a changefeed sent it: its columns in the order sent (a repeated name: the last
/// counts, as in a map).
pub type Fields = Vec<(Name, Cell)>;

/// A column's value as a changefeed sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A scalar or an array, as a document (numbers keep their text).
    Value(Json),
    /// An object, as its JSON text (checked): a JSON column's document is written to the
    /// target as it came, not rebuilt and serialised again.
    Object(String),
}

impl Cell {
    /// The value as a document.
    pub fn document(&self) -> Json {
        match self {
            Cell::Value(v) => v.clone(),
            Cell::Object(text) => crate::types::json::parse(text).unwrap_or_default(),
        }
    }
}

/// `fields` as one JSON object's text (what consistent mode stages).
pub fn fields_text(fields: &Fields) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * fields.len() + 2);
    out.push(b'{');
    for (i, (name, cell)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &**name);
        out.push(b':');
        match cell {
            Cell::Value(v) => {
                let _ = serde_json::to_writer(&mut out, v);
            }
            Cell::Object(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
    out.push(b'}');
    out
}

/// `fields` as a document.
pub fn fields_document(fields: &Fields) -> Map<String, Json> {
    fields.iter().map(|(name, cell)| (name.to_string(), cell.document())).collect()
}

/// Reads `text`, one JSON object or `null`, as a row (what consistent mode staged): `Err`
/// when it is neither.
pub fn read_fields(text: &str) -> Result<Option<Fields>, &'static str> {
    let mut r = Reader::new(text);
    let read = match r.peek() {
        Some(b'{') => read_object(&mut r, &mut Names::default(), 0).map(Some),
        Some(b'n') => r.skip(0).map(|()| None),
        _ => return Err("not a JSON object"),
    };
    read.filter(|_| r.at_end()).ok_or("not JSON")
}

/// Column names read before, by place in the row: the rows of a request share them.
#[derive(Default)]
struct Names(Vec<Name>);

impl Names {
    /// The `i`th column's name, `name`: the one read before if it is the same.
    fn get(&mut self, i: usize, name: &str) -> Name {
        match self.0.get(i) {
            Some(seen) if **seen == *name => seen.clone(),
            _ => {
                let fresh = Name::from(name);
                if i < self.0.len() {
                    self.0[i] = fresh.clone();
                } else if i == self.0.len() {
                    self.0.push(fresh.clone());
                }
                fresh
            }
        }
    }
}

/// The object at the cursor, as a row (`depth`: its depth in the body).
fn read_object(r: &mut Reader<'_>, names: &mut Names, depth: usize) -> Option<Fields> {
    let mut fields = Vec::with_capacity(names.0.len().max(4));
    r.members(|r, name| {
        let cell = if r.peek()? == b'{' {
            let start = r.at();
            r.skip(depth + 1)?;
            Cell::Object(r.since(start).to_owned())
        } else {
            Cell::Value(r.document(depth + 1)?)
        };
        fields.push((names.get(fields.len(), &name), cell));
        Some(())
    })?;
    Some(fields)
}

/// What one line holds, read but not checked yet (the last of a repeated field counts).
#[derive(Default)]
struct Parts {
    updated: Option<Json>,
    after: Option<Row>,
    before: Option<Row>,
    key: Option<Json>,
    topic: Option<Json>,
    /// `__crdb__` is there (a bare envelope, when the line is a file's).
    bare: bool,
}

/// `after` or `before` as sent.
enum Row {
    Null,
    Fields(Fields),
    /// Neither an object nor null.
    Other,
}

/// The line object at the cursor (`depth`: its depth in the body); `None`: not JSON.
fn read_parts(r: &mut Reader<'_>, names: &mut Names, depth: usize) -> Option<Parts> {
    let mut parts = Parts::default();
    r.members(|r, name| {
        match &*name {
            row @ ("after" | "before") => {
                let read = match r.peek()? {
                    b'{' => Row::Fields(read_object(r, names, depth + 1)?),
                    b'n' => {
                        r.skip(depth + 1)?;
                        Row::Null
                    }
                    _ => {
                        r.skip(depth + 1)?;
                        Row::Other
                    }
                };
                *(if row == "after" { &mut parts.after } else { &mut parts.before }) = Some(read);
            }
            "updated" => parts.updated = Some(r.document(depth + 1)?),
            "key" => parts.key = Some(r.document(depth + 1)?),
            "topic" => parts.topic = Some(r.document(depth + 1)?),
            other => {
                parts.bare |= other == "__crdb__";
                r.skip(depth + 1)?;
            }
        }
        Some(())
    })?;
    Some(parts)
}

/// Checks one line's parts. `from_url`: the table comes from the request (no `topic`
/// needed, and a key may be missing: the target's primary key supplies it); `webhook`: a
/// webhook line (an ndjson line without `updated` gets the option's name in its error).
fn check_line(parts: Parts, n: usize, from_url: bool, webhook: bool) -> Result<Line, PayloadError> {
    let fail = |what: String| PayloadError::Line { line: n, what };
    let updated = match &parts.updated {
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
    let row = |name: &str, row: Option<Row>| -> Result<Option<Fields>, PayloadError> {
        match row {
            None | Some(Row::Null) => Ok(None),
            Some(Row::Fields(fields)) => Ok(Some(fields)),
            Some(Row::Other) => Err(fail(format!("\"{name}\" must be an object or null"))),
        }
    };
    let (after, before) = (row("after", parts.after)?, row("before", parts.before)?);
    let key = match parts.key {
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
        match &parts.topic {
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
pub(super) fn last_part(name: &str) -> String {
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
            serde_json::Value::Object(fields_document(got[0].after.as_ref().expect("after")))
                .to_string(),
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

    /// A line or a body in a form both readers give, to compare.
    type Seen = (Option<String>, Option<Vec<Json>>, Option<Json>, Option<Json>, Hlc);

    fn seen(lines: Vec<Line>) -> Vec<Seen> {
        let doc = |f: Option<Fields>| f.map(|f| Json::Object(fields_document(&f)));
        lines
            .into_iter()
            .map(|l| (l.table, l.key, doc(l.after), doc(l.before), l.updated))
            .collect()
    }

    fn seen_tree(lines: Vec<super::super::payload_tree::Line>) -> Vec<Seen> {
        let doc = |f: Option<Map<String, Json>>| f.map(Json::Object);
        lines
            .into_iter()
            .map(|l| (l.table, l.key, doc(l.after), doc(l.before), l.updated))
            .collect()
    }

    fn agree(body: &str) -> Result<(), String> {
        use super::super::payload_tree as tree;
        for query in [false, true] {
            let new = webhook(body.as_bytes(), query).map(|b| match b {
                Body::Lines(l) => (seen(l), None),
                Body::Resolved(r) => (Vec::new(), Some(r)),
            });
            let old = tree::webhook(body.as_bytes(), query).map(|b| match b {
                tree::Body::Lines(l) => (seen_tree(l), None),
                tree::Body::Resolved(r) => (Vec::new(), Some(r)),
            });
            if new != old {
                return Err(format!("webhook (query feed {query}): {new:?} != {old:?}"));
            }
        }
        let new = ndjson(body.as_bytes(), "db.public.t", 1 << 20).map(seen);
        let old = tree::ndjson(body.as_bytes(), "db.public.t", 1 << 20).map(seen_tree);
        if new != old {
            return Err(format!("ndjson: {new:?} != {old:?}"));
        }
        Ok(())
    }

    #[test]
    fn the_one_pass_reader_agrees_with_the_document_reader() {
        for body in [
            r#"{"payload":[{"after":{"id":1,"doc":{"a": [1, 2.50, {"b": null}], "c": "\u00e9"},"d":4E+2},"key":[1],"topic":"t","updated":"1.0"}]}"#,
            r#"{"payload":[{"after":{"id":1,"id":2},"key":[1],"topic":"t","updated":"1.0","after":{"x":{}}}],"payload":null}"#,
            r#"{"payload":[{"after":{"a":{"b":{"c":}}},"key":[1],"topic":"t","updated":"1.0"}]}"#,
            r#"{"payload":[{"key":[1],"topic":"t","updated":"0.0"},{"after":"x"}], "length": 2}"#,
            r#"{"payload":[1,{"after":{}}]}"#,
            r#"{"payload":[{"after":{"s":"tab	in"}}]}"#,
            r#"{"resolved":"1.0","length":1}"#,
            r#"{"resolved":null,"payload":null,"x":1}"#,
            r#"{"__crdb__":{"updated":"1.0"},"payload":[]}"#,
            r#"{"after":{"id":1},"key":[1],"updated":"1.0","__crdb__":{}}"#,
            "{\"after\":{\"id\":1},\"updated\":\"1.0\"}\n{\"after\":{\"id\":{\"deep\":true}},\"updated\":\"2.0\"}",
            "[1]",
            "{\"after\":{\"\\u0041\":1},\"updated\":\"1.0\"}",
        ] {
            agree(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
        let deep = format!(
            r#"{{"payload":[{{"after":{{"d":{}1{}}}}}]}}"#,
            "[".repeat(130),
            "]".repeat(130)
        );
        agree(&deep).unwrap_or_else(|e| panic!("deep: {e}"));
    }

    mod differential {
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                Just("null".to_owned()),
                Just("true".to_owned()),
                Just("-0.50e+3".to_owned()),
                Just("12345678901234567890".to_owned()),
                Just("4E+2".to_owned()),
                Just(r#""plain""#.to_owned()),
                Just(r#""esc\"aped\\\u00e9""#.to_owned()),
                Just(r#""5.0000000001""#.to_owned()),
                Just("\"t\"".to_owned()),
            ];
            leaf.prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(", "))),
                    proptest::collection::vec(
                        (proptest::sample::select(vec!["a", "b", "id", "ID", "\\u0061"]), inner),
                        0..4
                    )
                    .prop_map(|v| format!(
                        "{{{}}}",
                        v.iter()
                            .map(|(k, v)| format!("\"{k}\": {v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    )),
                ]
            })
        }

        fn line() -> impl Strategy<Value = String> {
            let field = (
                proptest::sample::select(vec![
                    "after",
                    "before",
                    "key",
                    "topic",
                    "updated",
                    "__crdb__",
                    "mvcc_timestamp",
                ]),
                prop_oneof![
                    value(),
                    Just(r#""1712345678901234567.0000000001""#.to_owned()),
                    Just("[1]".to_owned()),
                    Just(r#"{"id": 1, "doc": {"x": [1, {"y": 2.0}]}}"#.to_owned())
                ],
            );
            proptest::collection::vec(field, 0..6).prop_map(|v| {
                format!(
                    "{{{}}}",
                    v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
                )
            })
        }

        /// A row of columns (some repeated, some with escaped names).
        fn row() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                (proptest::sample::select(vec!["id", "ID", "doc", "n", "s", "\\u0069d"]), value()),
                1..6,
            )
            .prop_map(|v| {
                format!(
                    "{{{}}}",
                    v.iter().map(|(k, v)| format!("\"{k}\" : {v}")).collect::<Vec<_>>().join(",")
                )
            })
        }

        /// A line a changefeed would send, its fields in any order, some repeated.
        fn good_line() -> impl Strategy<Value = String> {
            let fields = (
                row(),
                prop_oneof![Just(None), row().prop_map(Some)],
                proptest::sample::select(vec!["[1]", "[1, \"a\"]", "[{\"k\": 1}]"]),
                proptest::sample::select(vec!["1.0", "1712345678901234567.0000000001"]),
            )
                .prop_map(|(after, before, key, updated)| {
                    let mut fields = vec![
                        format!(r#""after":{after}"#),
                        format!(r#""key":{key}"#),
                        r#""topic":"db.public.t""#.to_owned(),
                        format!(r#""updated":"{updated}""#),
                    ];
                    if let Some(before) = before {
                        fields.push(format!(r#""before":{before}"#));
                    }
                    fields
                });
            (fields, any::<prop::sample::Index>(), any::<bool>()).prop_map(|(mut f, at, extra)| {
                if extra {
                    f.push(r#""mvcc_timestamp":"1.0""#.to_owned());
                }
                let by = at.index(f.len());
                f.rotate_left(by);
                format!("{{{}}}", f.join(","))
            })
        }

        fn body() -> impl Strategy<Value = String> {
            let lines = proptest::collection::vec(
                prop_oneof![6 => good_line(), 3 => line(), 1 => value()],
                0..5,
            );
            let top = (
                lines,
                proptest::sample::select(vec![
                    "",
                    r#","length":2"#,
                    r#","resolved":"1.0""#,
                    r#","x":1"#,
                ]),
                any::<bool>(),
            )
                .prop_map(|(lines, extra, ndjson)| {
                    if ndjson {
                        lines.join("\n")
                    } else {
                        format!(r#"{{"payload":[{}]{extra}}}"#, lines.join(","))
                    }
                });
            // Sometimes broken: cut short, or a byte changed.
            (
                top,
                0..4u8,
                any::<prop::sample::Index>(),
                proptest::sample::select(vec!["}", "]", ",", ":", "\"", "x", " "]),
            )
                .prop_map(|(body, damage, at, byte)| {
                    let mut cut = at.index(body.len() + 1);
                    while !body.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    match damage {
                        0 => body[..cut].to_owned(),
                        1 => format!("{}{byte}{}", &body[..cut], &body[cut..]),
                        _ => body,
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3_000))]

            #[test]
            fn generated_bodies_read_the_same(body in body()) {
                super::agree(&body).map_err(TestCaseError::fail)?;
            }
        }
    }
}
