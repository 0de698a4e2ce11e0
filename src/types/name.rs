//! Dotted names as users type them on the command line: `db.schema`, `db`, `"My.Db".public`.
//!
//! A part is either unquoted (no dots, quotes or whitespace) or double-quoted, where `""`
//! stands for one quote. Names keep the case they were written in.

use std::fmt;
use std::str::FromStr;

/// A name of one or more parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DottedName(Vec<String>);

/// Why a dotted name was refused; the caller adds which flag and what to write instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// `a..b`, `.a`, `a.` or an empty string.
    #[error("a name is empty")]
    EmptyPart,
    /// `""`.
    #[error("a quoted name is empty")]
    EmptyQuoted,
    /// `"abc`.
    #[error("a quoted name is not closed")]
    Unclosed,
    /// `a"b`.
    #[error("a quote may only start a name")]
    StrayQuote,
    /// `"a"b`.
    #[error("a quoted name must be followed by . or the end")]
    AfterQuote,
    /// `my db`.
    #[error("names may not hold spaces unless quoted")]
    Whitespace,
}

impl DottedName {
    /// The parts, unquoted.
    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// How many parts.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a parsed name; here for completeness with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for DottedName {
    type Err = NameError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut parts = Vec::new();
        let mut chars = input.chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(NameError::Unclosed),
                    }
                }
                if part.is_empty() {
                    return Err(NameError::EmptyQuoted);
                }
            } else {
                while let Some(&c) = chars.peek() {
                    match c {
                        '.' => break,
                        '"' => return Err(NameError::StrayQuote),
                        c if c.is_whitespace() || c.is_control() => {
                            return Err(NameError::Whitespace);
                        }
                        c => part.push(c),
                    }
                    chars.next();
                }
                if part.is_empty() {
                    return Err(NameError::EmptyPart);
                }
            }
            parts.push(part);
            match chars.next() {
                None => return Ok(Self(parts)),
                Some('.') => {}
                Some(_) => return Err(NameError::AfterQuote),
            }
        }
    }
}

impl fmt::Display for DottedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let plain = part == "*"
                || part.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '-'));
            if plain {
                f.write_str(part)?;
            } else {
                write!(f, "\"{}\"", part.replace('"', "\"\""))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Result<Vec<String>, NameError> {
        s.parse::<DottedName>().map(|n| n.parts().to_vec())
    }

    #[test]
    fn names_parse() {
        assert_eq!(parts("defaultdb.public"), Ok(vec!["defaultdb".into(), "public".into()]));
        assert_eq!(parts("sales"), Ok(vec!["sales".into()]));
        assert_eq!(parts("*.*"), Ok(vec!["*".into(), "*".into()]));
        assert_eq!(parts(r#""my.db"."Pub""lic""#), Ok(vec!["my.db".into(), "Pub\"lic".into()]));
        assert_eq!(parts("a.b.c").map(|p| p.len()), Ok(3));
    }

    #[test]
    fn malformed_names_say_why() {
        for (bad, why) in [
            ("", NameError::EmptyPart),
            ("db.", NameError::EmptyPart),
            (".public", NameError::EmptyPart),
            ("a..b", NameError::EmptyPart),
            ("my db.public", NameError::Whitespace),
            (r#""db.public"#, NameError::Unclosed),
            (r#"""."s""#, NameError::EmptyQuoted),
            (r#""db"x.s"#, NameError::AfterQuote),
            (r#"d"b.s"#, NameError::StrayQuote),
        ] {
            assert_eq!(parts(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn display_quotes_only_when_needed() {
        for s in ["defaultdb.public", "*.*", "db", r#""my.db"."Pub""lic""#, r#""has space""#] {
            let parsed: DottedName = s.parse().expect(s);
            assert_eq!(parsed.to_string(), s);
        }
    }
}
