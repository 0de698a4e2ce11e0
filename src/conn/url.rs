//! Connection strings whose password never reaches logs, metrics or error messages.
//!
//! [`ConnString`] keeps the URL a user passed (`postgres://user:pass@host:5432/db?sslmode=…`)
//! and shows it only redacted: `Display` and `Debug` print `postgres://user:****@host:5432/db`,
//! with password-like query parameters (`password`, `sslpassword`) masked too. The raw text
//! is reachable only through [`ConnString::expose_secret`], for the code that connects.

use std::fmt;
use std::str::FromStr;

use super::Protocol;

/// What replaces a password wherever a connection string is shown.
pub const MASK: &str = "****";

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword", "pass", "pwd"];

/// Why a connection string was refused. Never contains the string itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnStringError {
    /// Not of the form `scheme://…`.
    #[error(
        "not a connection URL: expected scheme://user:password@host:port/database \
         (for example postgres://app:secret@127.0.0.1:5432/defaultdb)"
    )]
    NotAUrl,
    /// No host after `scheme://`.
    #[error("connection URL {0} names no host")]
    NoHost(String),
}

/// A database connection URL that redacts its password when shown.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnString {
    raw: String,
    scheme_end: usize,
    /// Byte range of the userinfo (`user[:password]`), without the `@`.
    userinfo: Option<(usize, usize)>,
    /// Byte range of `host[:port]`.
    host: (usize, usize),
    /// Byte range of the path after the host, without the leading `/`.
    path: Option<(usize, usize)>,
    /// Byte offset of the `?` starting the query, if any.
    query: Option<usize>,
}

impl ConnString {
    /// Parses `scheme://[user[:password]@]host[:port][/database][?params]`.
    ///
    /// Lenient where users are: a password holding an unescaped `/` or `@` still splits at the
    /// last `@` before the query, so it is still redacted.
    pub fn parse(raw: &str) -> Result<Self, ConnStringError> {
        let raw = raw.trim().to_owned();
        let scheme_end = raw.find("://").ok_or(ConnStringError::NotAUrl)?;
        let scheme = &raw[..scheme_end];
        if scheme.is_empty()
            || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(ConnStringError::NotAUrl);
        }
        let rest_start = scheme_end + 3;
        let query = raw[rest_start..].find('?').map(|i| rest_start + i);
        let before_query_end = query.unwrap_or(raw.len());
        let userinfo =
            raw[rest_start..before_query_end].rfind('@').map(|i| (rest_start, rest_start + i));
        let host_start = userinfo.map_or(rest_start, |(_, end)| end + 1);
        let host_end = raw[host_start..before_query_end]
            .find('/')
            .map_or(before_query_end, |i| host_start + i);
        let path = (host_end < before_query_end).then_some((host_end + 1, before_query_end));
        let conn = Self { raw, scheme_end, userinfo, host: (host_start, host_end), path, query };
        if host_start == host_end {
            return Err(ConnStringError::NoHost(conn.redacted()));
        }
        Ok(conn)
    }

    /// The connection string as given, password included. Only for the code that connects.
    pub fn expose_secret(&self) -> &str {
        &self.raw
    }

    /// The URL scheme (`postgres`, `mysql`, …), as written.
    pub fn scheme(&self) -> &str {
        &self.raw[..self.scheme_end]
    }

    /// The wire protocol the scheme names, if we speak it.
    pub fn protocol(&self) -> Option<Protocol> {
        Protocol::from_scheme(self.scheme())
    }

    /// The user name, percent-decoded.
    pub fn user(&self) -> Option<String> {
        let (start, end) = self.userinfo?;
        let info = &self.raw[start..end];
        let user = info.split_once(':').map_or(info, |(user, _)| user);
        (!user.is_empty()).then(|| percent_decode(user))
    }

    /// The password, percent-decoded. Only for the code that connects: never log it.
    pub fn expose_password(&self) -> Option<String> {
        let (start, end) = self.userinfo?;
        let (_, password) = self.raw[start..end].split_once(':')?;
        Some(percent_decode(password))
    }

    /// Every query parameter as `(name, value)`, values percent-decoded, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        let Some(q) = self.query else { return Vec::new() };
        self.raw[q + 1..]
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// `host[:port]` as written.
    pub fn host(&self) -> &str {
        &self.raw[self.host.0..self.host.1]
    }

    /// The database (PostgreSQL, MySQL) or service (Oracle) named by the path, percent-decoded;
    /// `None` when the URL has no path.
    pub fn database(&self) -> Option<String> {
        let (start, end) = self.path?;
        let db = self.raw[start..end].trim_end_matches('/');
        (!db.is_empty()).then(|| percent_decode(db))
    }

    /// The value of a query parameter, percent-decoded (first occurrence).
    pub fn param(&self, name: &str) -> Option<String> {
        let q = self.query?;
        self.raw[q + 1..].split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// The URL with the password and secret query parameters replaced by `****`.
    ///
    /// When the strict split finds no `user:password@` before the query but the text still
    /// has a `:` followed later by an `@` (a password holding an unescaped `?`), everything
    /// between them is masked: showing too little beats showing a password.
    pub fn redacted(&self) -> String {
        let rest_start = self.scheme_end + 3;
        let (userinfo, tail_start) = match self.userinfo {
            Some((start, end)) => (Some((start, end)), end + 1),
            None => {
                let rest = &self.raw[rest_start..];
                match rest.rfind('@') {
                    Some(at) if rest[..at].contains(':') => {
                        (Some((rest_start, rest_start + at)), rest_start + at + 1)
                    }
                    _ => (None, rest_start),
                }
            }
        };
        let mut out = String::with_capacity(self.raw.len());
        out.push_str(&self.raw[..rest_start]);
        if let Some((start, end)) = userinfo {
            match self.raw[start..end].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(&self.raw[start..end]),
            }
            out.push('@');
        }
        let tail = &self.raw[tail_start..];
        match tail.split_once('?') {
            None => out.push_str(tail),
            Some((before, query)) => {
                out.push_str(before);
                out.push('?');
                let params = query.split('&').map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}={MASK}")
                    }
                    _ => pair.to_owned(),
                });
                out.push_str(&params.collect::<Vec<_>>().join("&"));
            }
        }
        out
    }
}

impl FromStr for ConnString {
    type Err = ConnStringError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnString").field(&self.redacted()).finish()
    }
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(s: &str) -> ConnString {
        ConnString::parse(s).expect("valid connection string")
    }

    #[test]
    fn display_and_debug_mask_the_password() {
        let c = conn("postgres://user:s3cr3t@host:5432/db?sslmode=disable");
        assert_eq!(c.to_string(), "postgres://user:****@host:5432/db?sslmode=disable");
        assert_eq!(
            format!("{c:?}"),
            r#"ConnString("postgres://user:****@host:5432/db?sslmode=disable")"#
        );
        assert_eq!(c.expose_secret(), "postgres://user:s3cr3t@host:5432/db?sslmode=disable");
    }

    #[test]
    fn parts_are_read_and_decoded() {
        let c = conn("postgresql://app%40corp:pw@127.0.0.1:26257/my%20db?sslmode=require&x");
        assert_eq!(c.scheme(), "postgresql");
        assert_eq!(c.protocol(), Some(Protocol::Postgres));
        assert_eq!(c.user().as_deref(), Some("app@corp"));
        assert_eq!(c.host(), "127.0.0.1:26257");
        assert_eq!(c.database().as_deref(), Some("my db"));
        assert_eq!(c.param("sslmode").as_deref(), Some("require"));
        assert_eq!(c.param("x").as_deref(), Some(""));
        assert_eq!(c.param("missing"), None);
    }

    #[test]
    fn urls_without_user_path_or_password() {
        let c = conn("mysql://127.0.0.1:3306");
        assert_eq!(c.user(), None);
        assert_eq!(c.database(), None);
        assert_eq!(c.to_string(), "mysql://127.0.0.1:3306");
        let c = conn("mysql://root@127.0.0.1:3306/");
        assert_eq!(c.user().as_deref(), Some("root"));
        assert_eq!(c.database(), None);
        assert_eq!(c.to_string(), "mysql://root@127.0.0.1:3306/");
        // An empty password is still a password field: shown masked, so its absence is not told.
        assert_eq!(conn("mysql://root:@h/db").to_string(), "mysql://root:****@h/db");
    }

    #[test]
    fn awkward_passwords_never_show() {
        for pw in ["p@ss", "p/ss", "p:ss", "p?ss", "p%40ss", "pa ss", "🔑key"] {
            let raw = format!("postgres://u:{pw}@h:5432/db?sslmode=disable");
            let c = conn(&raw);
            let shown = format!("{c} {c:?} {}", c.redacted());
            assert!(!shown.contains(pw), "{pw} leaked in {shown}");
            assert_eq!(c.to_string(), "postgres://u:****@h:5432/db?sslmode=disable");
            if pw != "p?ss" {
                assert_eq!(c.host(), "h:5432", "for {pw}");
            }
        }
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        let c = conn("postgres://h/db?user=u&password=hunter2&sslpassword=k3y&sslmode=verify-full");
        assert_eq!(
            c.to_string(),
            "postgres://h/db?user=u&password=****&sslpassword=****&sslmode=verify-full"
        );
    }

    #[test]
    fn malformed_strings_are_refused_without_echoing_them() {
        let err = ConnString::parse("host=h password=hunter2").expect_err("not a URL");
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(err, ConnStringError::NotAUrl);
        let err = ConnString::parse("postgres://u:hunter2@/db").expect_err("no host");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("u:****@"), "{err}");
        assert_eq!(ConnString::parse("://h"), Err(ConnStringError::NotAUrl));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
