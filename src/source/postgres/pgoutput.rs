//! Decoding PostgreSQL's `pgoutput` logical replication messages (protocol version 1).
//!
//! A transaction arrives as Begin, Relation/Type descriptions (cached by relation id; a new
//! description of the same id replaces the old), row messages, and Commit. The decoder turns
//! each into a [`SourceTransaction`] whose position is the commit's end LSN:
//!
//! - Insert → upsert of the new tuple;
//! - Update → upsert of the new tuple; when the key changed (the message carries the old key
//!   or old tuple) a delete of the old key comes first;
//! - Delete → delete of the old key (or old tuple);
//! - Truncate → reported with the transaction, for the caller to decide (earlier changes to the
//!   truncated table in the same transaction are dropped: the truncate voids them);
//! - Origin and logical-decoding Messages are skipped.
//!
//! Values arrive in text form and are converted by type OID into exact values (numbers as
//! their text, JSON as the server's JSON text, which a userscript reads as a document,
//! timestamps as RFC 3339, arrays as arrays). A column whose value is an unchanged TOAST
//! datum (`u`) is left out of the row, so the applier keeps the target's value. Malformed input is an error, never a panic.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::types::civil::{civil_from_days, days_from_civil};
use crate::types::mutation::{Mutation, Op, Position, SourceTransaction};
use crate::types::position::PgLsn;
use crate::types::{Name, Row, Value, new_row};

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput: {0}")]
pub struct DecodeError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(message.into()))
}

/// A relation (table) description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation id.
    pub id: u32,
    /// Its schema.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The table name its mutations carry: `name`, or `namespace.name` for names the decoder
    /// was told to qualify ([`Decoder::qualify`]).
    pub table: String,
    /// Columns: name (shared with every row decoded from this relation), type OID, part of
    /// the replica identity (key).
    pub columns: Vec<(Name, u32, bool)>,
}

/// What a complete transaction carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The transaction, positioned at its commit's end LSN.
    pub transaction: SourceTransaction,
    /// Tables truncated in it, as `(namespace, name)`, in order.
    pub truncated: Vec<(String, String)>,
    /// Key changes whose upserts still lack unchanged TOAST values.
    pub toasted: Vec<ToastedKeyChange>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return err(format!("message ends inside {what}"));
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        self.u32(what).map(|v| v as i32)
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = &self.data[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return err(format!("{what} is not NUL-terminated"));
        };
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| DecodeError(format!("{what} is not UTF-8")))?;
        self.pos += nul + 1;
        Ok(s.to_owned())
    }
}

/// One tuple column: NULL, unchanged TOAST, or text.
enum Cell {
    Null,
    Unchanged,
    Text(String),
}

fn tuple(r: &mut Reader<'_>) -> Result<Vec<Cell>, DecodeError> {
    let n = r.i16("the column count")?;
    if n < 0 {
        return err("negative column count");
    }
    let mut cells = Vec::with_capacity(n as usize);
    for _ in 0..n {
        cells.push(match r.u8("a column kind")? {
            b'n' => Cell::Null,
            b'u' => Cell::Unchanged,
            b't' => {
                let len = r.i32("a value length")?;
                let len = usize::try_from(len)
                    .map_err(|_| DecodeError("negative value length".into()))?;
                let bytes = r.take(len, "a value")?;
                Cell::Text(
                    std::str::from_utf8(bytes)
                        .map_err(|_| DecodeError("a text value is not UTF-8".into()))?
                        .to_owned(),
                )
            }
            other => return err(format!("unknown column kind {:?}", other as char)),
        });
    }
    Ok(cells)
}

/// The transaction being decoded.
#[derive(Debug, Default)]
struct Open {
    mutations: Vec<Mutation>,
    truncated: Vec<(String, String)>,
    toasted: Vec<ToastedKeyChange>,
    commit_nanos: i64,
}

/// An update that changed the row's key while leaving TOAST values unchanged: the message
/// carries neither the values nor (with the default replica identity) the old row, so the
/// upsert at `mutation` lacks `columns`. Their values are the old row's, on the target.
#[derive(Debug, Clone, PartialEq)]
pub struct ToastedKeyChange {
    /// Index of the upsert in the transaction's mutations.
    pub mutation: usize,
    /// The source table (as mutations name it).
    pub table: String,
    /// The old key.
    pub old_key: Row,
    /// The missing columns with their type OIDs.
    pub columns: Vec<(Name, u32)>,
}

/// Decodes pgoutput messages, one transaction at a time.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Arc<Relation>>,
    current: Option<Open>,
    qualified: HashSet<String>,
}

impl Decoder {
    /// A decoder with no relations known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The relation with this id, if described.
    pub fn relation(&self, id: u32) -> Option<&Relation> {
        self.relations.get(&id).map(|r| &**r)
    }

    /// Tables with these names (the same name in several source schemas) are reported as
    /// `namespace.name`, so a userscript can tell them apart.
    pub fn qualify(&mut self, names: HashSet<String>) {
        self.qualified = names;
    }

    /// Between a Begin and its Commit.
    pub fn in_transaction(&self) -> bool {
        self.current.is_some()
    }

    /// Feeds one message; returns the transaction when the message is its Commit.
    pub fn decode(&mut self, message: &[u8]) -> Result<Option<Decoded>, DecodeError> {
        let mut r = Reader { data: message, pos: 0 };
        match r.u8("the message type")? {
            b'B' => {
                let _final_lsn = r.u64("Begin's LSN")?;
                let micros = r.u64("Begin's timestamp")? as i64;
                let _xid = r.u32("Begin's xid")?;
                let nanos = micros.saturating_add(PG_EPOCH_MICROS).saturating_mul(1000);
                self.current = Some(Open { commit_nanos: nanos, ..Open::default() });
                Ok(None)
            }
            b'C' => {
                let _flags = r.u8("Commit's flags")?;
                let _commit_lsn = r.u64("Commit's LSN")?;
                let end_lsn = r.u64("Commit's end LSN")?;
                let _ts = r.u64("Commit's timestamp")?;
                let Some(open) = self.current.take() else {
                    return err("Commit without Begin");
                };
                Ok(Some(Decoded {
                    transaction: SourceTransaction {
                        mutations: open.mutations,
                        position: Position::Lsn(PgLsn(end_lsn)),
                        commit_nanos: open.commit_nanos,
                    },
                    truncated: open.truncated,
                    toasted: open.toasted,
                }))
            }
            b'R' => {
                let id = r.u32("Relation's id")?;
                let namespace = r.string("Relation's namespace")?;
                let name = r.string("Relation's name")?;
                let _identity = r.u8("Relation's replica identity")?;
                let n = r.i16("Relation's column count")?;
                let mut columns = Vec::with_capacity(n.max(0) as usize);
                for _ in 0..n.max(0) {
                    let flags = r.u8("a column's flags")?;
                    let column = r.string("a column's name")?;
                    let type_oid = r.u32("a column's type")?;
                    let _modifier = r.i32("a column's type modifier")?;
                    columns.push((Name::from(column), type_oid, flags & 1 == 1));
                }
                let table = if self.qualified.contains(&name) {
                    format!("{namespace}.{name}")
                } else {
                    name.clone()
                };
                self.relations
                    .insert(id, Arc::new(Relation { id, namespace, name, table, columns }));
                Ok(None)
            }
            b'Y' | b'O' | b'M' => Ok(None),
            b'I' => {
                let relation = self.relation_for(&mut r)?;
                if r.u8("Insert's tuple marker")? != b'N' {
                    return err("Insert without a new tuple");
                }
                let cells = tuple(&mut r)?;
                let row = row_of(&relation, cells, false)?;
                self.push(Mutation {
                    table: relation.table.clone(),
                    op: Op::Upsert,
                    row,
                    before: None,
                })
            }
            b'U' => {
                let relation = self.relation_for(&mut r)?;
                let mut marker = r.u8("Update's tuple marker")?;
                let mut old = None;
                if marker == b'K' || marker == b'O' {
                    old = Some((marker, tuple(&mut r)?));
                    marker = r.u8("Update's new tuple marker")?;
                }
                if marker != b'N' {
                    return err("Update without a new tuple");
                }
                let mut new_row = row_of(&relation, tuple(&mut r)?, false)?;
                let mut before = None;
                let mut toasted = None;
                if let Some((kind, cells)) = old {
                    let old_row = row_of(&relation, cells, kind == b'K')?;
                    let key_changed =
                        relation.columns.iter().filter(|(_, _, key)| *key).any(|(c, _, _)| {
                            old_row.get(c).is_some()
                                && new_row.get(c).is_some()
                                && old_row.get(c) != new_row.get(c)
                        });
                    if kind == b'O' {
                        // The full old row (REPLICA IDENTITY FULL) holds the unchanged values.
                        fill_missing(&relation, &mut new_row, &old_row);
                    }
                    if key_changed {
                        let key = key_of(&relation, &old_row);
                        // An earlier upsert of the old key in this transaction may carry them.
                        if let Some(open) = &self.current
                            && let Some(earlier) = open.mutations.iter().rev().find(|m| {
                                m.table == relation.table
                                    && key.iter().all(|(c, v)| m.row.get(c) == Some(v))
                            })
                            && earlier.op == Op::Upsert
                        {
                            let earlier = earlier.row.clone();
                            fill_missing(&relation, &mut new_row, &earlier);
                        }
                        let missing: Vec<(Name, u32)> = relation
                            .columns
                            .iter()
                            .filter(|(c, _, _)| !new_row.contains_key(c))
                            .map(|(c, oid, _)| (c.clone(), *oid))
                            .collect();
                        if !missing.is_empty() {
                            toasted = Some((key.clone(), missing));
                        }
                        self.push(Mutation {
                            table: relation.table.clone(),
                            op: Op::Delete,
                            row: key,
                            before: None,
                        })?;
                    }
                    if kind == b'O' {
                        before = Some(old_row);
                    }
                }
                let result = self.push(Mutation {
                    table: relation.table.clone(),
                    op: Op::Upsert,
                    row: new_row,
                    before,
                });
                if let (Some((old_key, columns)), Some(open)) = (toasted, self.current.as_mut()) {
                    open.toasted.push(ToastedKeyChange {
                        mutation: open.mutations.len() - 1,
                        table: relation.table.clone(),
                        old_key,
                        columns,
                    });
                }
                result
            }
            b'D' => {
                let relation = self.relation_for(&mut r)?;
                let kind = r.u8("Delete's tuple marker")?;
                if kind != b'K' && kind != b'O' {
                    return err("Delete without an old key or tuple");
                }
                let old = row_of(&relation, tuple(&mut r)?, kind == b'K')?;
                let key = key_of(&relation, &old);
                let row = if key.is_empty() { old.clone() } else { key };
                self.push(Mutation {
                    table: relation.table.clone(),
                    op: Op::Delete,
                    row,
                    before: (kind == b'O').then_some(old),
                })
            }
            b'T' => {
                let n = r.u32("Truncate's relation count")?;
                let _options = r.u8("Truncate's options")?;
                let mut tables = Vec::new();
                for _ in 0..n {
                    let id = r.u32("a truncated relation")?;
                    let relation = self
                        .relations
                        .get(&id)
                        .ok_or_else(|| DecodeError(format!("Truncate of unknown relation {id}")))?;
                    tables.push((
                        relation.namespace.clone(),
                        relation.name.clone(),
                        relation.table.clone(),
                    ));
                }
                match &mut self.current {
                    Some(open) => {
                        // Earlier changes to a truncated table in this transaction are void.
                        let void = |m: &Mutation| tables.iter().any(|(_, _, t)| *t == m.table);
                        // New index of each kept mutation, for the TOAST list.
                        let index: Vec<Option<usize>> = open
                            .mutations
                            .iter()
                            .scan(0, |kept, m| {
                                Some((!void(m)).then(|| {
                                    *kept += 1;
                                    *kept - 1
                                }))
                            })
                            .collect();
                        open.mutations.retain(|m| !void(m));
                        open.toasted.retain_mut(|t| match index[t.mutation] {
                            Some(i) => {
                                t.mutation = i;
                                true
                            }
                            None => false,
                        });
                        open.truncated.extend(tables.into_iter().map(|(ns, name, _)| (ns, name)));
                    }
                    None => return err("Truncate outside a transaction"),
                }
                Ok(None)
            }
            other => err(format!("unknown message type {:?}", other as char)),
        }
    }

    fn relation_for(&self, r: &mut Reader<'_>) -> Result<Arc<Relation>, DecodeError> {
        let id = r.u32("the relation id")?;
        self.relations
            .get(&id)
            .cloned()
            .ok_or_else(|| DecodeError(format!("row for relation {id}, which was never described")))
    }

    fn push(&mut self, m: Mutation) -> Result<Option<Decoded>, DecodeError> {
        match &mut self.current {
            Some(open) => {
                open.mutations.push(m);
                Ok(None)
            }
            None => err("row change outside a transaction"),
        }
    }
}

/// The key columns of `row` (those the relation marks as its replica identity).
fn key_of(relation: &Relation, row: &Row) -> Row {
    relation
        .columns
        .iter()
        .filter(|(_, _, k)| *k)
        .filter_map(|(c, _, _)| row.get(c).map(|v| (c.clone(), v.clone())))
        .collect()
}

/// Adds to `row` the columns it lacks (unchanged TOAST values) that `from` has, in the
/// relation's column order.
fn fill_missing(relation: &Relation, row: &mut Row, from: &Row) {
    if relation.columns.iter().all(|(c, _, _)| row.contains_key(c)) {
        return;
    }
    let mut filled = new_row(relation.columns.len());
    for (c, _, _) in &relation.columns {
        if let Some(v) = row.get(c).or_else(|| from.get(c)) {
            filled.insert(c.clone(), v.clone());
        }
    }
    *row = filled;
}

/// A row from a tuple: unchanged TOAST values are left out; for a key tuple (`K`), only the
/// key columns are kept.
fn row_of(relation: &Relation, cells: Vec<Cell>, key_only: bool) -> Result<Row, DecodeError> {
    if cells.len() != relation.columns.len() {
        return err(format!(
            "relation {}.{} has {} columns but the tuple has {}",
            relation.namespace,
            relation.name,
            relation.columns.len(),
            cells.len()
        ));
    }
    let mut row = new_row(cells.len());
    for ((name, type_oid, key), cell) in relation.columns.iter().zip(cells) {
        if key_only && !key {
            continue;
        }
        match cell {
            Cell::Unchanged => {}
            Cell::Null => {
                row.insert(name.clone(), Value::Null);
            }
            Cell::Text(text) => {
                row.insert(name.clone(), text_value(*type_oid, text));
            }
        }
    }
    Ok(row)
}

/// A value in PostgreSQL's text output form, by type OID.
pub fn text_value(type_oid: u32, text: String) -> Value {
    match type_oid {
        16 => Value::Bool(text == "t"),
        20 | 21 | 23 | 26 | 700 | 701 | 1700 => Value::Number(text),
        114 | 3802 => Value::JsonText(text),
        1114 => Value::String(text.replacen(' ', "T", 1)),
        1184 => Value::String(timestamptz_utc(&text).unwrap_or(text)),
        1000 => array(&text, 16),
        1005 => array(&text, 21),
        1007 => array(&text, 23),
        1016 => array(&text, 20),
        1021 => array(&text, 700),
        1022 => array(&text, 701),
        1231 => array(&text, 1700),
        1009 | 1015 | 2951 | 1182 | 1115 | 1185 => array(&text, element_of(type_oid)),
        _ => Value::String(text),
    }
}

fn element_of(array_oid: u32) -> u32 {
    match array_oid {
        1182 => 1082,
        1115 => 1114,
        1185 => 1184,
        2951 => 2950,
        _ => 25,
    }
}

/// `{1,2,NULL}` / `{"a b","c\"d"}` into an array (one dimension; nested braces nest).
fn array(text: &str, element: u32) -> Value {
    fn parse(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, element: u32) -> Option<Value> {
        if chars.next()? != '{' {
            return None;
        }
        let mut items = Vec::new();
        loop {
            match chars.peek()? {
                '}' => {
                    chars.next();
                    return Some(Value::Array(items));
                }
                '{' => items.push(parse(chars, element)?),
                '"' => {
                    chars.next();
                    let mut s = String::new();
                    loop {
                        match chars.next()? {
                            '\\' => s.push(chars.next()?),
                            '"' => break,
                            c => s.push(c),
                        }
                    }
                    items.push(text_value(element, s));
                }
                _ => {
                    let mut s = String::new();
                    while let Some(&c) = chars.peek() {
                        if c == ',' || c == '}' {
                            break;
                        }
                        s.push(c);
                        chars.next();
                    }
                    items.push(if s == "NULL" { Value::Null } else { text_value(element, s) });
                }
            }
            match chars.peek()? {
                ',' => {
                    chars.next();
                }
                '}' => {}
                _ => return None,
            }
        }
    }
    let mut chars = text.chars().peekable();
    parse(&mut chars, element).unwrap_or_else(|| Value::String(text.to_owned()))
}

/// `2024-01-02 03:04:05.5+02` (any offset) as UTC RFC 3339: `2024-01-02T01:04:05.5Z`.
fn timestamptz_utc(text: &str) -> Option<String> {
    let (date, rest) = text.split_once(' ')?;
    let sign_at = rest.rfind(['+', '-'])?;
    let (time, offset) = rest.split_at(sign_at);
    let sign: i64 = if offset.starts_with('-') { -1 } else { 1 };
    let parts: Vec<i64> = offset[1..].split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let offset_secs = sign
        * (parts.first()? * 3600 + parts.get(1).unwrap_or(&0) * 60 + parts.get(2).unwrap_or(&0));
    if offset_secs == 0 {
        return Some(format!("{date}T{time}Z"));
    }
    let (hms, frac) = time.split_once('.').map_or((time, None), |(h, f)| (h, Some(f)));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if t.len() != 3 || d.len() != 3 {
        return None;
    }
    let days = days_from_civil(d[0], d[1], d[2]);
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2] - offset_secs;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
    Some(format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}{frac}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_by_type() {
        assert_eq!(
            text_value(20, "9007199254740993".into()),
            Value::Number("9007199254740993".into())
        );
        assert_eq!(text_value(16, "t".into()), Value::Bool(true));
        assert_eq!(
            text_value(1184, "2024-01-02 03:04:05.5+00".into()),
            Value::String("2024-01-02T03:04:05.5Z".into())
        );
        assert_eq!(
            text_value(1184, "2024-01-01 01:30:00+02:30".into()),
            Value::String("2023-12-31T23:00:00Z".into())
        );
        assert_eq!(
            text_value(1114, "2024-01-02 03:04:05".into()),
            Value::String("2024-01-02T03:04:05".into())
        );
        assert_eq!(
            text_value(1009, r#"{"a b","c\"d",NULL,plain}"#.into()),
            Value::Array(vec![
                Value::String("a b".into()),
                Value::String("c\"d".into()),
                Value::Null,
                Value::String("plain".into())
            ])
        );
        assert_eq!(
            text_value(1007, "{1,2}".into()),
            Value::Array(vec![Value::Number("1".into()), Value::Number("2".into())])
        );
        assert_eq!(
            text_value(1007, "{1,2".into()),
            Value::String("{1,2".into()),
            "malformed stays text"
        );
        // JSON stays the server's text (a target takes text); a script gets the document.
        let json = text_value(3802, r#"{"a": 1.50, "b": [1, 2]}"#.into());
        assert_eq!(json, Value::JsonText(r#"{"a": 1.50, "b": [1, 2]}"#.into()));
        let document: serde_json::Value =
            serde_json::from_str(r#"{"a":1.50,"b":[1,2]}"#).expect("json");
        assert_eq!(json.to_json(), document, "numbers exactly as written");
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut d = Decoder::new();
        for bad in
            [&b""[..], b"Z", b"B\x00", b"I\x00\x00\x00\x01N", b"C\x00", b"R\x00\x00\x00\x01ns"]
        {
            assert!(d.decode(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A valid Relation message for relation 1 with `columns` text columns, the first a key.
    fn relation(columns: u8) -> Vec<u8> {
        let mut m = vec![b'R', 0, 0, 0, 1];
        m.extend(b"public\0t\0");
        m.push(b'd');
        m.extend(i16::from(columns).to_be_bytes());
        for c in 0..columns {
            m.push(u8::from(c == 0));
            m.extend(format!("c{c}\0").as_bytes());
            m.extend(25u32.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    fn begin() -> Vec<u8> {
        let mut m = vec![b'B'];
        m.extend([0u8; 20]);
        m
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut d = Decoder::new();
            let _ = d.decode(&relation(3));
            let _ = d.decode(&begin());
            let _ = d.decode(&bytes);
        }

        #[test]
        fn corrupted_inserts_never_panic(
            values in proptest::collection::vec("[a-z0-9]{0,8}", 3),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut insert = vec![b'I', 0, 0, 0, 1, b'N'];
            insert.extend(3i16.to_be_bytes());
            for v in &values {
                insert.push(b't');
                insert.extend((v.len() as i32).to_be_bytes());
                insert.extend(v.as_bytes());
            }
            let mut d = Decoder::new();
            d.decode(&relation(3)).expect("relation");
            d.decode(&begin()).expect("begin");
            prop_assert!(d.decode(&insert).is_ok(), "the uncorrupted insert decodes");
            for (at, byte) in flips {
                let i = at % insert.len();
                insert[i] = byte;
            }
            insert.truncate(cut % (insert.len() + 1));
            let _ = d.decode(&insert);
        }
    }
}
