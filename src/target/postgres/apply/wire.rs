//! Planned statements in the form they go on the wire: each owns its bytes (binary `text[]`
//! parameters, or COPY text for upserts COPY can load), so a batch can be planned on another
//! thread while the one before is written.

use std::borrow::Cow;

use super::super::codec::encode_text_array;
use super::{Applied, ApplyError, COPY_MIN_ROWS, Statement};
use crate::target::batch::Cell;
use crate::types::mutation::Op;

/// A planned statement in the form it goes on the wire: it owns its bytes (one copy of each
/// value), so a batch can be planned on another thread while the previous one is written.
#[derive(Debug, Clone)]
pub struct Wire {
    /// The target schema.
    pub schema: String,
    /// The target table.
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// The statement's SQL.
    pub sql: String,
    /// Rows it writes.
    pub rows: usize,
    /// `COPY … FROM STDIN` when the rows go in by COPY first.
    pub copy_sql: Option<String>,
    /// The rows.
    pub data: WireData,
}

/// A [`Wire`] statement's rows.
#[derive(Debug, Clone)]
pub enum WireData {
    /// One binary `text[]` per parameter.
    Params(Vec<bytes::Bytes>),
    /// The rows in COPY's text format (the parameters are read back from it if COPY fails).
    Copy {
        /// Tab-separated, newline-terminated rows.
        text: bytes::Bytes,
        /// Columns per row.
        columns: usize,
    },
}

/// Renders planned statements into their wire form: large upserts that COPY can load as COPY
/// text, everything else as binary `text[]` parameters.
pub fn render(statements: &[Statement<'_>]) -> Result<Vec<Wire>, ApplyError> {
    statements
        .iter()
        .map(|s| {
            let copy_sql =
                s.copy.as_ref().filter(|_| s.rows >= COPY_MIN_ROWS).map(|c| c.copy_sql.clone());
            let data = if copy_sql.is_some() {
                WireData::Copy { text: copy_text(s), columns: s.params.len() }
            } else {
                WireData::Params(encode_params(&s.params).map_err(|e| encoding_error(&s.table, e))?)
            };
            Ok(Wire {
                schema: s.schema.clone(),
                table: s.table.clone(),
                op: s.op,
                sql: s.sql.clone(),
                rows: s.rows,
                copy_sql,
                data,
            })
        })
        .collect()
}

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Parameters that could not be encoded (a value over 2 GiB, or COPY text that does not read
/// back): a data error of `table`.
pub(super) fn encoding_error(table: &str, e: BoxError) -> ApplyError {
    ApplyError::Database {
        table: table.to_owned(),
        message: e.to_string(),
        code: None,
        kind: crate::error::ErrorKind::Data,
        source: e,
    }
}

pub(super) fn encode_params(params: &[Vec<Cell<'_>>]) -> Result<Vec<bytes::Bytes>, BoxError> {
    params
        .iter()
        .map(|column| {
            let size: usize = column.iter().map(|c| 4 + c.as_ref().map_or(0, |t| t.len())).sum();
            let mut out = bytes::BytesMut::with_capacity(20 + size);
            encode_text_array(column, &mut out)?;
            Ok(out.freeze())
        })
        .collect()
}

/// The rows of an upsert (its column arrays) in COPY's text format.
pub(super) fn copy_text(s: &Statement<'_>) -> bytes::Bytes {
    let size: usize =
        s.params.iter().flatten().map(|c| 1 + c.as_ref().map_or(2, |t| t.len())).sum();
    let mut buf = bytes::BytesMut::with_capacity(size + size / 16);
    for r in 0..s.rows {
        for (c, column) in s.params.iter().enumerate() {
            if c > 0 {
                buf.extend_from_slice(b"\t");
            }
            match column.get(r) {
                Some(Some(text)) => copy_escape(text, &mut buf),
                _ => buf.extend_from_slice(b"\\N"),
            }
        }
        buf.extend_from_slice(b"\n");
    }
    buf.freeze()
}

/// The parameters of a statement rendered as COPY text, read back from that text (when COPY
/// is resting or has failed and the upsert runs instead).
pub(super) fn params_from_copy(text: &[u8], columns: usize) -> Result<Vec<bytes::Bytes>, BoxError> {
    let mut params: Vec<Vec<Cell<'static>>> = vec![Vec::new(); columns];
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        for (c, field) in line.split(|&b| b == b'\t').enumerate() {
            let cell = (field != b"\\N").then(|| copy_unescape(field).into());
            params.get_mut(c).ok_or("a COPY row has more fields than columns")?.push(cell);
        }
    }
    encode_params(&params)
}

pub(super) fn copy_unescape(field: &[u8]) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b't') => b'\t',
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(&other) => other,
            None => b'\\',
        });
    }
    // The text was UTF-8 when it was escaped, and escapes are ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

impl Wire {
    pub(super) fn params(&self) -> Result<Cow<'_, [bytes::Bytes]>, ApplyError> {
        match &self.data {
            WireData::Params(p) => Ok(Cow::Borrowed(p)),
            WireData::Copy { text, columns } => params_from_copy(text, *columns)
                .map(Cow::Owned)
                .map_err(|e| encoding_error(&self.table, e)),
        }
    }

    pub(super) fn count(&self, applied: &mut Applied) {
        match self.op {
            Op::Upsert => applied.upserts += self.rows,
            Op::Delete => applied.deletes += self.rows,
        }
    }
}

/// Whether one of the eight bytes of `word` is a backslash, tab, newline or carriage return
/// (the classic test for a zero byte, applied to the word XORed with each).
fn has_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let any = |byte: u8| zero(word ^ (ONES * u64::from(byte)));
    (any(b'\\') | any(b'\t') | any(b'\n') | any(b'\r')) != 0
}

/// A value in COPY's text format: backslash, tab, newline and carriage return escaped.
pub fn copy_escape(text: &str, out: &mut bytes::BytesMut) {
    let bytes = text.as_bytes();
    // Most values have nothing to escape: found eight bytes at a time, copied in one go.
    let clean = bytes
        .chunks_exact(8)
        .all(|c| !has_special(u64::from_le_bytes(c.try_into().unwrap_or_default())))
        && bytes
            .chunks_exact(8)
            .remainder()
            .iter()
            .all(|b| !matches!(b, b'\\' | b'\t' | b'\n' | b'\r'));
    if clean {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_escape_escapes_the_four_bytes_wherever_they_are() {
        let naive = |text: &str| {
            text.replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('\r', "\\r")
        };
        for len in 0..20 {
            for at in 0..len.max(1) {
                for special in ['\\', '\t', '\n', '\r', 'é', '\u{8c}'] {
                    let text: String =
                        (0..len).map(|i| if i == at { special } else { 'a' }).collect();
                    let mut out = bytes::BytesMut::new();
                    copy_escape(&text, &mut out);
                    assert_eq!(std::str::from_utf8(&out), Ok(naive(&text).as_str()), "{text:?}");
                }
            }
        }
    }
}
