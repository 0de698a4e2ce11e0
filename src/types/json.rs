//! JSON documents read with each number's text exactly as written.
//!
//! serde_json (with `arbitrary_precision`) keeps a number's digits but rewrites its exponent
//! (`1e400` becomes `1e+400`, `1E5` `1e+5`); a value that travels through replicator should
//! come out as the source wrote it, so JSON text from a source is read here.

/// Reads a JSON document, keeping each number's text exactly as written (`1e400`, `2.50`,
/// `1E5`: serde_json would write the exponent as `e+400`). `None` when `text` is not JSON.
pub fn parse(text: &str) -> Option<serde_json::Value> {
    let mut reader = Reader { text: text.as_bytes(), at: 0 };
    let value = reader.value(0)?;
    reader.skip_space();
    (reader.at == reader.text.len()).then_some(value)
}

/// A recursive-descent JSON reader (strings are decoded by serde_json).
struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    /// Deeper than this is refused, as serde_json does.
    const MAX_DEPTH: usize = 128;

    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.text.get(self.at) == Some(&byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn value(&mut self, depth: usize) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        if depth > Self::MAX_DEPTH {
            return None;
        }
        self.skip_space();
        let rest = &self.text[self.at..];
        for (word, value) in
            [(&b"true"[..], J::Bool(true)), (b"false", J::Bool(false)), (b"null", J::Null)]
        {
            if rest.starts_with(word) {
                self.at += word.len();
                return Some(value);
            }
        }
        match rest.first()? {
            b'"' => self.string().map(J::String),
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value(depth + 1)?);
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                Some(J::Array(items))
            }
            b'{' => {
                self.at += 1;
                let mut map = serde_json::Map::new();
                if !self.eat(b'}') {
                    loop {
                        self.skip_space();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        map.insert(key, self.value(depth + 1)?);
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                Some(J::Object(map))
            }
            _ => {
                let start = self.at;
                while self.text.get(self.at).is_some_and(|b| {
                    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.at += 1;
                }
                let number = std::str::from_utf8(&self.text[start..self.at]).ok()?;
                // serde_json checks the grammar; the text is kept as it was written.
                serde_json::from_str::<serde_json::Number>(number).ok()?;
                Some(J::Number(serde_json::Number::from_string_unchecked(number.to_owned())))
            }
        }
    }

    /// A string literal at the cursor, decoded.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        if self.text.get(start) != Some(&b'"') {
            return None;
        }
        let mut i = start + 1;
        loop {
            match self.text.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        self.at = i + 1;
        serde_json::from_slice(&self.text[start..self.at]).ok()
    }
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
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "01x", "1 2", "\"open", "[1] x", "--1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(&deep), None, "too deep");
    }
}
