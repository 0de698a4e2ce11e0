//! JSON documents read with each number's text exactly as written.
//!
//! serde_json (with `arbitrary_precision`) keeps a number's digits but rewrites its exponent
//! (`1e400` becomes `1e+400`, `1E5` `1e+5`); a value that travels through replicator should
//! come out as the source wrote it, so JSON text from a source is read here.

/// Reads a JSON document, keeping each number's text exactly as written (`1e400`, `2.50`,
/// `1E5`: serde_json would write the exponent as `e+400`). `None` when `text` is not JSON.
pub fn parse(text: &str) -> Option<serde_json::Value> {
    let mut reader = Reader { text: text.as_bytes(), at: 0 };
    let value = reader.document(0)?;
    reader.skip_space();
    (reader.at == reader.text.len()).then_some(value)
}

/// A recursive-descent JSON reader (strings are decoded by serde_json). Besides whole
/// documents ([`parse`]), callers that know a document's shape read it piece by piece: a
/// field's name, a value as a document, or a value checked and passed over ([`Reader::skip`]),
/// whose text [`Reader::since`] then gives.
pub struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Deeper than this is refused, as serde_json does.
    pub const MAX_DEPTH: usize = 128;

    /// A reader at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Self { text: text.as_bytes(), at: 0 }
    }

    /// Where the reader is (a byte offset).
    pub fn at(&self) -> usize {
        self.at
    }

    /// The text from byte offset `start` to the cursor (`start` taken from [`Reader::at`]
    /// at a value's start, the cursor after it).
    pub fn since(&self, start: usize) -> &'a str {
        // Both ends are at token boundaries, which are ASCII, so the slice is UTF-8.
        std::str::from_utf8(&self.text[start..self.at]).unwrap_or_default()
    }

    /// The next byte after white space, not consumed.
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.at).copied()
    }

    /// Whether only white space is left.
    pub fn at_end(&mut self) -> bool {
        self.skip_space();
        self.at == self.text.len()
    }

    /// The string at the cursor (a member's name, or a value), after white space, decoded;
    /// borrowed from the text when it has no escape.
    pub fn name(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        self.skip_space();
        let (start, end, plain) = self.string_span()?;
        if plain {
            return std::str::from_utf8(&self.text[start + 1..end - 1]).ok().map(Into::into);
        }
        serde_json::from_slice(&self.text[start..end]).ok().map(std::borrow::Cow::Owned)
    }

    /// Checks the value at the cursor and moves past it without building it.
    pub fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > Self::MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                let (start, end, plain) = self.string_span()?;
                if !plain {
                    serde_json::from_slice::<String>(&self.text[start..end]).ok()?;
                }
            }
            b'{' => self.members(|r, _| r.skip(depth + 1))?,
            b'[' => self.items(|r| r.skip(depth + 1))?,
            _ => {
                // A scalar: as cheap to build as to check.
                self.document(depth)?;
            }
        }
        Some(())
    }

    /// Reads the object at the cursor: `member` gets each member's name with the reader at its
    /// value, which it reads (or skips).
    pub fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, std::borrow::Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let name = self.name()?;
            if !self.eat(b':') {
                return None;
            }
            member(self, name)?;
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// Reads the array at the cursor: `item` reads (or skips) each element.
    pub fn items(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            item(self)?;
            if self.eat(b']') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// Consumes `byte` after white space, if it is next.
    pub fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.text.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The value at the cursor, as a document (`depth`: its depth in the whole text).
    pub fn document(&mut self, depth: usize) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        if depth > Self::MAX_DEPTH {
            return None;
        }
        self.skip_space();
        let rest = &self.text[self.at..];
        let word = |reader: &mut Self, word: &[u8], value: J| {
            rest.starts_with(word).then(|| {
                reader.at += word.len();
                value
            })
        };
        match rest.first()? {
            b't' => word(self, b"true", J::Bool(true)),
            b'f' => word(self, b"false", J::Bool(false)),
            b'n' => word(self, b"null", J::Null),
            b'"' => self.name().map(|s| J::String(s.into_owned())),
            b'[' => {
                let mut items = Vec::new();
                self.items(|r| {
                    items.push(r.document(depth + 1)?);
                    Some(())
                })?;
                Some(J::Array(items))
            }
            b'{' => {
                // Collected first so the map is built at its size, not grown (and rehashed)
                // field by field.
                let mut fields = Vec::with_capacity(8);
                self.members(|r, key| {
                    fields.push((key.into_owned(), r.document(depth + 1)?));
                    Some(())
                })?;
                let mut map = serde_json::Map::with_capacity(fields.len());
                map.extend(fields);
                Some(J::Object(map))
            }
            _ => {
                let start = self.at;
                while self.text.get(self.at).is_some_and(|b| {
                    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.at += 1;
                }
                let number = &self.text[start..self.at];
                if !is_number(number) {
                    return None;
                }
                // Only ASCII digits, signs, dots and exponents: valid UTF-8.
                let number = std::str::from_utf8(number).ok()?;
                Some(J::Number(serde_json::Number::from_string_unchecked(number.to_owned())))
            }
        }
    }

    /// The string literal at the cursor, passed over: its span (quotes included) and whether
    /// it is plain (no escape, and no control character, which JSON does not allow).
    fn string_span(&mut self) -> Option<(usize, usize, bool)> {
        let start = self.at;
        if self.text.get(start) != Some(&b'"') {
            return None;
        }
        let mut i = start + 1;
        let mut plain = true;
        loop {
            match *self.text.get(i)? {
                b'\\' => {
                    plain = false;
                    i += 2;
                }
                b'"' => break,
                b if b < 0x20 => {
                    plain = false;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        self.at = i + 1;
        Some((start, self.at, plain))
    }
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_number(text: &[u8]) -> bool {
    let digits = |at: &mut usize| {
        let from = *at;
        while text.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at > from
    };
    let mut at = usize::from(text.first() == Some(&b'-'));
    if text.get(at) == Some(&b'0') {
        at += 1;
    } else if !digits(&mut at) {
        return false;
    }
    if text.get(at) == Some(&b'.') {
        at += 1;
        if !digits(&mut at) {
            return false;
        }
    }
    if matches!(text.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(text.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if !digits(&mut at) {
            return false;
        }
    }
    at == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_read_with_the_numbers_as_written() {
        let text = r#" {"e": 1e400, "E": -1E+5, "p": 2.50, "s": "a\"b\\", "n": [true, false, null, {}], "u": "\u00e9"} "#;
        let doc = parse(text).expect("json");
        assert_eq!(
            doc.to_string(),
            r#"{"e":1e400,"E":-1E+5,"p":2.50,"s":"a\"b\\","n":[true,false,null,{}],"u":"é"}"#
        );
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01x",
            "1 2",
            "\"open",
            "[1] x",
            "--1",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "-",
            "+1",
            "1.2.3",
            "1e5e5",
            "\"tab\there\"",
            "\"\\q\"",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        for (good, text) in [
            ("0", "0"),
            ("-0.5e-3", "-0.5e-3"),
            ("[10,1E5]", "[10,1E5]"),
            ("\"a\\tb\"", "\"a\\tb\""),
        ] {
            assert_eq!(parse(good).map(|v| v.to_string()).as_deref(), Some(text), "{good}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(&deep), None, "too deep");
    }
}
