//! What a table-map event says about a table, completed from the binlog's own column metadata
//! (`binlog_row_metadata=FULL`) or, with `--fetchMetadata`, from `information_schema`.
//!
//! Table maps precede every rows event and carry column types and their type metadata. Names,
//! signedness, character sets, ENUM/SET labels and the primary key come from the optional
//! metadata when the server writes it in full; otherwise from `information_schema.COLUMNS`
//! (read once per table and kept until a DDL statement is seen).

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_common::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;

use crate::types::Name;

/// How a character column's bytes become text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charset {
    /// Not text: BINARY, VARBINARY, BLOB (`\x` hex).
    Binary,
    /// utf8mb4, utf8mb3, ascii: UTF-8 already.
    Utf8,
    /// MySQL's latin1 (Windows-1252).
    Latin1,
    /// UCS-2 / UTF-16 big endian.
    Utf16Be,
    /// UTF-16 little endian.
    Utf16Le,
    /// UTF-32 big endian.
    Utf32,
    /// Anything else: decoded when the bytes are valid UTF-8, else an error naming it.
    Other(String),
}

impl Charset {
    /// From a character set name (`utf8mb4`, `latin1`, `binary`, …).
    pub fn from_name(name: &str) -> Charset {
        match name.to_ascii_lowercase().as_str() {
            "binary" => Charset::Binary,
            "utf8" | "utf8mb3" | "utf8mb4" | "ascii" => Charset::Utf8,
            "latin1" => Charset::Latin1,
            "ucs2" | "utf16" => Charset::Utf16Be,
            "utf16le" => Charset::Utf16Le,
            "utf32" => Charset::Utf32,
            other => Charset::Other(other.to_owned()),
        }
    }
}

/// One column, as the binlog encodes it and as the target will see it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name (shared with every row decoded from this table).
    pub name: Name,
    /// The real type (ENUM/SET resolved from STRING).
    pub kind: ColumnType,
    /// The table map's type metadata (lengths, precision, fractional digits).
    pub meta: Vec<u8>,
    /// UNSIGNED (numeric columns).
    pub unsigned: bool,
    /// For character and BLOB columns: how to read the bytes.
    pub charset: Charset,
    /// ENUM/SET labels, in declaration order.
    pub labels: Vec<String>,
}

/// A table as the rows events need it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its database.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its columns in order.
    pub columns: Vec<Column>,
    /// Primary key column positions (empty when the table has none).
    pub key: Vec<usize>,
}

/// Why a table's description could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The table map itself did not parse.
    #[error("the table map of {table} is malformed: {message}")]
    Malformed {
        /// `db.table`.
        table: String,
        /// What failed.
        message: String,
    },
    /// Column names are missing and `--fetchMetadata` is off.
    #[error(
        "the binlog has no column names for {table}: the server must run with \
         binlog_row_metadata=FULL (SET GLOBAL binlog_row_metadata = 'FULL' and in the server's \
         configuration file), or start replicator with --fetchMetadata to read them from \
         information_schema"
    )]
    NoNames {
        /// `db.table`.
        table: String,
    },
    /// information_schema does not match the table map.
    #[error(
        "information_schema lists {listed} columns for {table} but the binlog row has {mapped}; \
         the table changed after the row was written. Replicating it needs \
         binlog_row_metadata=FULL on the server (then drop --fetchMetadata)"
    )]
    Mismatch {
        /// `db.table`.
        table: String,
        /// Columns in information_schema.
        listed: usize,
        /// Columns in the table map.
        mapped: usize,
    },
    /// Reading information_schema failed.
    #[error("reading the columns of {table} from information_schema failed")]
    Query {
        /// `db.table`.
        table: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
}

/// Table descriptions by binlog table id, and (with `--fetchMetadata`) by name.
pub struct Catalog {
    /// Collation id → character set name.
    collations: HashMap<u16, String>,
    /// Read `information_schema` instead of the binlog's column metadata.
    fetch: bool,
    /// The last table map seen per table id (its raw bytes) and what it made.
    by_id: HashMap<u64, (Vec<u8>, Arc<TableInfo>)>,
    /// `information_schema` answers by `(db, table)`.
    fetched: HashMap<(String, String), Vec<Fetched>>,
}

#[derive(Debug, Clone)]
struct Fetched {
    name: String,
    unsigned: bool,
    charset: Option<String>,
    labels: Vec<String>,
    key: bool,
}

impl Catalog {
    /// A catalog; `collations` from `information_schema.COLLATIONS`.
    pub fn new(collations: HashMap<u16, String>, fetch: bool) -> Self {
        Self { collations, fetch, by_id: HashMap::new(), fetched: HashMap::new() }
    }

    /// Reads the server's collation ids.
    pub async fn collations(
        conn: &mut mysql_async::Conn,
    ) -> Result<HashMap<u16, String>, mysql_async::Error> {
        let rows: Vec<(u64, String)> = conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
            .await?;
        Ok(rows.into_iter().filter_map(|(id, cs)| Some((u16::try_from(id).ok()?, cs))).collect())
    }

    /// Forgets every description: a DDL statement may have changed any of them.
    pub fn invalidate(&mut self) {
        self.by_id.clear();
        self.fetched.clear();
    }

    /// The description for a table map (cached while the map is unchanged).
    pub async fn table(
        &mut self,
        tme: &TableMapEvent<'_>,
        raw: &[u8],
        conn: Option<&mut mysql_async::Conn>,
    ) -> Result<Arc<TableInfo>, SchemaError> {
        if let Some((seen, info)) = self.by_id.get(&tme.table_id())
            && seen.as_slice() == raw
        {
            return Ok(info.clone());
        }
        let info = Arc::new(self.describe(tme, conn).await?);
        self.by_id.insert(tme.table_id(), (raw.to_vec(), info.clone()));
        Ok(info)
    }

    async fn describe(
        &mut self,
        tme: &TableMapEvent<'_>,
        conn: Option<&mut mysql_async::Conn>,
    ) -> Result<TableInfo, SchemaError> {
        let schema = tme.database_name().into_owned();
        let name = tme.table_name().into_owned();
        let table = format!("{schema}.{name}");
        let malformed = |message: String| SchemaError::Malformed { table: table.clone(), message };
        let count = usize::try_from(tme.columns_count()).map_err(|e| malformed(e.to_string()))?;
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let kind = tme
                .get_column_type(i)
                .map_err(|e| malformed(e.to_string()))?
                .ok_or_else(|| malformed(format!("column {i} has no type")))?;
            let meta = tme.get_column_metadata(i).unwrap_or_default().to_vec();
            columns.push(Column {
                name: Name::from(""),
                kind,
                meta,
                unsigned: false,
                charset: Charset::Binary,
                labels: Vec::new(),
            });
        }
        let mut key = Vec::new();
        if self.fetch {
            let conn = conn.ok_or_else(|| malformed("no metadata connection".into()))?;
            let listed = self.fetch_columns(conn, &schema, &name).await?;
            if listed.len() != count {
                return Err(SchemaError::Mismatch { table, listed: listed.len(), mapped: count });
            }
            for (i, (column, fetched)) in columns.iter_mut().zip(listed).enumerate() {
                column.name = fetched.name.into();
                column.unsigned = fetched.unsigned;
                column.charset =
                    fetched.charset.map_or(Charset::Binary, |cs| Charset::from_name(&cs));
                column.labels = fetched.labels;
                if fetched.key {
                    key.push(i);
                }
            }
        } else {
            self.read_binlog_metadata(tme, &mut columns, &mut key)
                .map_err(|e| malformed(e.to_string()))?;
            if columns.iter().any(|c| c.name.is_empty()) {
                return Err(SchemaError::NoNames { table });
            }
        }
        Ok(TableInfo { schema, name, columns, key })
    }

    fn read_binlog_metadata(
        &self,
        tme: &TableMapEvent<'_>,
        columns: &mut [Column],
        key: &mut Vec<usize>,
    ) -> std::io::Result<()> {
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
        let mut signed = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut enum_set_charsets = extractor.iter_enum_and_set_charset();
        let mut names = extractor.iter_column_name();
        for column in columns.iter_mut() {
            if column.kind.is_numeric_type() {
                column.unsigned = signed.next().unwrap_or(false);
            }
            let collation = if column.kind.is_character_type() {
                charsets.next().transpose()?
            } else if column.kind.is_enum_or_set_type() {
                enum_set_charsets.next().transpose()?
            } else {
                None
            };
            if let Some(id) = collation {
                column.charset = match self.collations.get(&id) {
                    Some(cs) => Charset::from_name(cs),
                    None if id == 63 => Charset::Binary,
                    None => Charset::Other(format!("collation {id}")),
                };
            } else if column.kind.is_character_type() {
                // No charset metadata: text if it decodes, else hex (decided per value).
                column.charset = Charset::Other("unknown".into());
            }
            if let Some(name) = names.next().transpose()? {
                column.name = Name::from(name.name().as_ref());
            }
        }
        for k in extractor.iter_primary_key() {
            key.push(usize::try_from(k?).map_err(std::io::Error::other)?);
        }
        let (mut enums, mut sets) = (Vec::new(), Vec::new());
        for field in tme.iter_optional_meta() {
            match field? {
                OptionalMetadataField::EnumStrValue(values) => {
                    for v in values.iter_values() {
                        enums.push(v?.values().iter().map(|l| l.value().into_owned()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(values) => {
                    for v in values.iter_values() {
                        sets.push(v?.values().iter().map(|l| l.value().into_owned()).collect());
                    }
                }
                _ => {}
            }
        }
        let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
        for column in columns.iter_mut() {
            match column.kind {
                ColumnType::MYSQL_TYPE_ENUM => column.labels = enums.next().unwrap_or_default(),
                ColumnType::MYSQL_TYPE_SET => column.labels = sets.next().unwrap_or_default(),
                _ => {}
            }
        }
        Ok(())
    }

    async fn fetch_columns(
        &mut self,
        conn: &mut mysql_async::Conn,
        schema: &str,
        name: &str,
    ) -> Result<Vec<Fetched>, SchemaError> {
        let cache_key = (schema.to_owned(), name.to_owned());
        if let Some(found) = self.fetched.get(&cache_key) {
            return Ok(found.clone());
        }
        let rows: Vec<(String, String, String, Option<String>, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLUMN_KEY \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
                (schema, name),
            )
            .await
            .map_err(|source| SchemaError::Query { table: format!("{schema}.{name}"), source })?;
        let found: Vec<Fetched> = rows
            .into_iter()
            .map(|(name, data_type, column_type, charset, key)| {
                let data_type = data_type.to_ascii_lowercase();
                let labels = if data_type == "enum" || data_type == "set" {
                    parse_labels(&column_type)
                } else {
                    Vec::new()
                };
                Fetched {
                    name,
                    unsigned: column_type.to_ascii_lowercase().contains("unsigned"),
                    charset,
                    labels,
                    key: key == "PRI",
                }
            })
            .collect();
        self.fetched.insert(cache_key, found.clone());
        Ok(found)
    }
}

/// The labels of `enum('a','b''c')` / `set(…)`.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else { return Vec::new() };
    let body = &column_type[open + 1..column_type.rfind(')').unwrap_or(column_type.len())];
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                c => label.push(c),
            }
        }
        labels.push(label);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_from_column_type() {
        assert_eq!(parse_labels("enum('a','b''c','d,e')"), vec!["a", "b'c", "d,e"]);
        assert_eq!(parse_labels("set('x','y')"), vec!["x", "y"]);
        assert!(parse_labels("int(11)").is_empty());
    }

    #[test]
    fn charset_names() {
        assert_eq!(Charset::from_name("utf8mb4"), Charset::Utf8);
        assert_eq!(Charset::from_name("latin1"), Charset::Latin1);
        assert_eq!(Charset::from_name("binary"), Charset::Binary);
        assert_eq!(Charset::from_name("sjis"), Charset::Other("sjis".into()));
    }
}
