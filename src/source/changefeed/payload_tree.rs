//! The changefeed body reader as it was until 2026-12-08 (a document of the whole body, then
//! its fields), kept for tests: the one-pass reader in [`super::payload`] must agree with it
//! line for line and error for error.

use serde_json::{Map, Value as Json};

use super::payload::{PayloadError, hlc, last_part};
use crate::types::position::Hlc;

/// A line as this reader gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub table: Option<String>,
    pub key: Option<Vec<Json>>,
    pub after: Option<Map<String, Json>>,
    pub before: Option<Map<String, Json>>,
    pub updated: Hlc,
}

/// What a body holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Lines(Vec<Line>),
    Resolved(Hlc),
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
