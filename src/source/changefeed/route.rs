//! Which target schema, table and body form a changefeed request's path names (MOLT's
//! grammar).
//!
//! The path's segments are percent-decoded (`+` stays `+`; `%2F` inside a segment stays in the
//! name); empty segments are dropped; at most 8. The first segments name the target schema:
//! two on a PostgreSQL/CockroachDB target (`/db/schema`), one on MySQL/MariaDB (`/database`).
//! What remains:
//!
//! | remaining | form |
//! |---|---|
//! | nothing | webhook body, table feed (`{"payload":[…]}` or `{"resolved":"…"}`) |
//! | `table` | webhook body of a query feed (`CREATE CHANGEFEED … AS SELECT`): the table is this one |
//! | `[table/]YYYY-MM-DD/<5 groups>-<topic>-<schema id>.ndjson` | a cloud-storage data file |
//! | `[table/]YYYY-MM-DD/<33 digits>.RESOLVED` | a cloud-storage resolved marker |

use crate::types::position::Hlc;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The target schema's parts (`["db", "public"]`, `["shop"]`).
    pub schema: Vec<String>,
    /// The table a query feed (or a file under a table segment) writes.
    pub table: Option<String>,
    /// How the body is to be read.
    pub form: Form,
}

/// How a request's body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// A webhook body.
    Webhook,
    /// A cloud-storage data file: one JSON object per line, of table `topic`.
    Ndjson {
        /// The topic named in the file name.
        topic: String,
    },
    /// A cloud-storage resolved marker (the body is ignored).
    Resolved {
        /// The resolved timestamp in the file name.
        resolved: Hlc,
    },
}

/// Why a path names nothing (404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Too few segments for the target schema.
    #[error("the path must start with the target schema ({expected}), e.g. {example}")]
    TooShort {
        /// How the schema is written.
        expected: &'static str,
        /// An example path.
        example: &'static str,
    },
    /// More than 8 segments.
    #[error("the path has more than the maximum of 8 segments")]
    TooLong,
    /// A segment that is not valid percent-encoded UTF-8.
    #[error("path segment {0:?} is not valid percent-encoded UTF-8")]
    Encoding(String),
    /// The rest of the path matches no form.
    #[error("no changefeed request has the path {0:?}")]
    Unknown(String),
}

/// Reads `path` (as sent, percent-encoded) for a target whose schema has `schema_parts` parts.
pub fn route(path: &str, schema_parts: usize) -> Result<Route, RouteError> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s).ok_or_else(|| RouteError::Encoding(s.to_owned())))
        .collect::<Result<_, _>>()?;
    if segments.len() > 8 {
        return Err(RouteError::TooLong);
    }
    if segments.len() < schema_parts {
        return Err(if schema_parts == 2 {
            RouteError::TooShort { expected: "two segments, /db/schema", example: "/shop/public" }
        } else {
            RouteError::TooShort { expected: "one segment, /database", example: "/shop" }
        });
    }
    let (schema, rest) = segments.split_at(schema_parts);
    let schema = schema.to_vec();
    let unknown = || RouteError::Unknown(path.to_owned());
    let (table, file) = match rest {
        [] => return Ok(Route { schema, table: None, form: Form::Webhook }),
        [table] => return Ok(Route { schema, table: Some(table.clone()), form: Form::Webhook }),
        [date, file] => (None, (date, file)),
        [table, date, file] => (Some(table.clone()), (date, file)),
        _ => return Err(unknown()),
    };
    let (date, file) = file;
    if !is_date(date) {
        return Err(unknown());
    }
    if let Some(digits) = file.strip_suffix(".RESOLVED") {
        let resolved = resolved_file(digits).ok_or_else(unknown)?;
        return Ok(Route { schema, table, form: Form::Resolved { resolved } });
    }
    if let Some(name) = file.strip_suffix(".ndjson") {
        let topic = ndjson_topic(name).ok_or_else(unknown)?;
        return Ok(Route { schema, table, form: Form::Ndjson { topic } });
    }
    Err(unknown())
}

/// `%xx` decoded; `+` is kept. `None` on a bad escape or invalid UTF-8.
pub(super) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex =
                segment.get(i + 1..i + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The topic of `<5 hyphen-terminated groups><topic>-<schema id>` (the topic may hold `-`).
fn ndjson_topic(name: &str) -> Option<String> {
    let mut rest = name;
    for _ in 0..5 {
        let (group, tail) = rest.split_once('-')?;
        if group.is_empty() {
            return None;
        }
        rest = tail;
    }
    let (topic, schema_id) = rest.rsplit_once('-')?;
    (!topic.is_empty() && !schema_id.is_empty()).then(|| topic.to_owned())
}

/// `YYYYMMDDHHMMSS` + 9 digits of nanoseconds + 10 of the logical counter (UTC).
fn resolved_file(digits: &str) -> Option<Hlc> {
    if digits.len() != 33 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |range: std::ops::Range<usize>| digits[range].parse::<i64>().ok();
    let (year, month, day) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hour, minute, second) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = crate::types::civil::days_from_civil(year, month, day);
    let seconds = days.checked_mul(86_400)? + hour * 3600 + minute * 60 + second;
    let nanos = seconds.checked_mul(1_000_000_000)?.checked_add(n(14..23)?)?;
    let logical = digits[23..33].parse::<u32>().ok()?;
    Some(Hlc { nanos, logical })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(schema: &[&str], table: Option<&str>) -> Route {
        Route {
            schema: schema.iter().map(|s| s.to_string()).collect(),
            table: table.map(str::to_owned),
            form: Form::Webhook,
        }
    }

    #[test]
    fn table_and_query_feeds() {
        assert_eq!(route("/shop/public", 2), Ok(webhook(&["shop", "public"], None)));
        assert_eq!(route("/shop/public/", 2), Ok(webhook(&["shop", "public"], None)));
        assert_eq!(
            route("/shop/public/orders", 2),
            Ok(webhook(&["shop", "public"], Some("orders")))
        );
        assert_eq!(route("/shop", 1), Ok(webhook(&["shop"], None)));
        assert_eq!(route("/shop/orders?access_token=x", 1), Ok(webhook(&["shop"], Some("orders"))));
        assert_eq!(
            route("/my%20db/a+b/%C3%A9t%2Fé", 2),
            Ok(webhook(&["my db", "a+b"], Some("ét/é"))),
            "percent-decoded, + kept"
        );
        // MOLT's ambiguity: on a PostgreSQL target this is a query feed of a table whose
        // name looks like a resolved file.
        let odd = route("/db/2020-04-04/202004042351304139680000000000000.RESOLVED", 2);
        assert_eq!(
            odd,
            Ok(webhook(&["db", "2020-04-04"], Some("202004042351304139680000000000000.RESOLVED")))
        );
    }

    #[test]
    fn cloud_storage_files() {
        let file = route(
            "/shop/public/2020-04-02/202004022058072107140000000000000-56087568dba1e6b8-1-72-00000000-order-lines-1.ndjson",
            2,
        )
        .expect("ndjson");
        assert_eq!(file.form, Form::Ndjson { topic: "order-lines".into() });
        assert_eq!(file.table, None);
        let resolved = route("/shop/2020-04-04/202004042351304139680000000000000.RESOLVED", 1)
            .expect("resolved");
        assert_eq!(
            resolved.form,
            Form::Resolved { resolved: Hlc { nanos: 1_586_044_290_413_968_000, logical: 0 } }
        );
        let under_table =
            route("/shop/orders/2020-04-04/202004042351304139680000000000001.RESOLVED", 1)
                .expect("resolved under a table");
        assert_eq!(under_table.table.as_deref(), Some("orders"));
    }

    #[test]
    fn what_names_nothing() {
        assert!(matches!(route("/", 2), Err(RouteError::TooShort { .. })));
        assert!(matches!(route("/shop", 2), Err(RouteError::TooShort { .. })));
        assert_eq!(route("/a/b/c/d/e/f/g/h/i", 1), Err(RouteError::TooLong));
        assert!(matches!(route("/a/%zz", 1), Err(RouteError::Encoding(_))));
        assert!(matches!(route("/a/%ff", 1), Err(RouteError::Encoding(_))), "not UTF-8");
        assert!(matches!(route("/shop/x/y/z", 1), Err(RouteError::Unknown(_))));
        assert!(matches!(route("/shop/2020-04-04/123.RESOLVED", 1), Err(RouteError::Unknown(_))));
        assert!(matches!(route("/shop/2020-04-04/a-b.ndjson", 1), Err(RouteError::Unknown(_))));
        assert!(matches!(route("/shop/2020-4-04/x.json", 1), Err(RouteError::Unknown(_))));
    }
}
