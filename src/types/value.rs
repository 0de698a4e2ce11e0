//! Row values as they travel between databases, scripts and the applier.
//!
//! Numbers are kept as their exact decimal text, never as floats: a NUMERIC(38,10) or a
//! BIGINT beyond 2^53 arrives at the target exactly as the source wrote it (invariant 5 in
//! `docs/architecture.md`). JSON columns keep their document (or, from PostgreSQL, the server's exact
//! JSON text); SQL arrays keep their elements.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;

/// One column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number of any SQL type, as its exact decimal text (`"42"`, `"-0.50"`, `"1e+21"`).
    Number(String),
    /// Text, and every type whose canonical form is text (dates, times, UUIDs, `\x` hex bytes).
    String(String),
    /// A JSON document (JSON/JSONB columns); numbers inside it are JSON numbers.
    Json(serde_json::Value),
    /// A JSON document as the source's server wrote it (PostgreSQL's json/jsonb text output,
    /// valid JSON by the server's own check). Kept as text because a target takes it as text:
    /// reading it into a document and writing it back out was a fifth of replicator's CPU on
    /// the pgoutput path. A userscript gets the document (see `script::convert`).
    JsonText(String),
    /// A SQL array.
    Array(Vec<Value>),
}

/// A column name as rows hold it: shared, so the rows of one table point at the same text
/// (a source decoding 100,000 rows allocates no column names).
pub type Name = Arc<str>;

/// The hasher of rows: column names are not attacker-chosen keys, and SipHash was a visible
/// share of decoding.
pub type RowHasher = foldhash::fast::RandomState;

/// A row: column name → value, in column order. Build one with `Row::default()`,
/// [`new_row`] or `collect()`.
pub type Row = IndexMap<Name, Value, RowHasher>;

/// An empty row with room for `columns` values.
pub fn new_row(columns: usize) -> Row {
    Row::with_capacity_and_hasher(columns, RowHasher::default())
}

impl Value {
    /// The value as text the way scripts see key values (`onRowDelete`'s `string[]`): numbers
    /// and strings as themselves, booleans as `true`/`false`, JSON as JSON text; `None` for
    /// NULL.
    pub fn as_key_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(s) | Value::String(s) => Some(s.clone()),
            Value::Json(j) => Some(j.to_string()),
            Value::JsonText(s) => Some(s.clone()),
            Value::Array(_) => Some(self.to_string()),
        }
    }

    /// A column value from JSON as users write rows in files (`script test` input, golden
    /// tests): a number becomes [`Value::Number`] with its text exactly as written
    /// (`9000000000000000001` stays exact), strings, booleans and null stay as they are, and
    /// objects and arrays are JSON documents whose numbers stay JSON numbers.
    pub fn from_json(json: serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n.to_string()),
            serde_json::Value::String(s) => Value::String(s),
            other => Value::Json(other),
        }
    }

    /// A JSON rendering that keeps numbers exact where JSON can: column numbers become JSON
    /// numbers when their text is a valid JSON number, strings otherwise.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(s) => serde_json::from_str::<serde_json::Number>(s)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|_| serde_json::Value::String(s.clone())),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Json(j) => j.clone(),
            Value::JsonText(s) => {
                super::json::parse(s).unwrap_or_else(|| serde_json::Value::String(s.clone()))
            }
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(s) | Value::String(s) => f.write_str(s),
            Value::Json(j) => write!(f, "{j}"),
            Value::JsonText(s) => f.write_str(s),
            Value::Array(items) => {
                f.write_str("{")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_and_json_keep_numbers_exact() {
        let big = Value::Number("9000000000000000001".into());
        assert_eq!(big.as_key_text().as_deref(), Some("9000000000000000001"));
        assert_eq!(Value::Null.as_key_text(), None);
        assert_eq!(Value::Bool(true).as_key_text().as_deref(), Some("true"));
        let json = Value::Array(vec![Value::Number("12".into()), Value::String("x".into())]);
        assert_eq!(json.to_json(), serde_json::json!([12, "x"]));
        assert_eq!(Value::Number("NaN".into()).to_json(), serde_json::json!("NaN"));
        assert_eq!(Value::Number("19.90".into()).to_json().to_string(), "19.90");
    }

    #[test]
    fn json_input_keeps_number_text() {
        let row: serde_json::Value = serde_json::from_str(
            r#"{"id": 9000000000000000001, "price": 19.90, "doc": {"n": 1.50}, "tags": [1, 2]}"#,
        )
        .expect("json");
        let serde_json::Value::Object(map) = row else { panic!("object") };
        let values: Vec<Value> = map.into_iter().map(|(_, v)| Value::from_json(v)).collect();
        assert_eq!(values[0], Value::Number("9000000000000000001".into()));
        assert_eq!(values[1], Value::Number("19.90".into()));
        assert_eq!(values[2].to_json().to_string(), r#"{"n":1.50}"#);
        assert!(matches!(values[3], Value::Json(_)));
    }
}
