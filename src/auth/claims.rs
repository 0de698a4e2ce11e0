//! The token claim and the `db.schema` patterns it allows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::types::name::{DottedName, NameError};

/// The claim name under which the allowed schemas travel (MOLT's namespace).
pub const NAMESPACE: &str = "https://github.com/cockroachdb/replicator";

/// The issuer every token carries.
pub const ISSUER: &str = "replicator";

/// A schema a token may write: `db.schema` (CockroachDB/PostgreSQL targets) or `db`
/// (MySQL/Oracle targets); a part may be `*` for any. Parts may be double-quoted to hold dots
/// or other characters (`"my.db".public`), with `""` for a literal quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSchema(DottedName);

/// Why an `-a/--allow` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid schema {input:?} for -a/--allow: {reason}; write db.schema (CockroachDB or \
     PostgreSQL targets) or db (MySQL or Oracle targets), with * for any part, e.g. -a defaultdb.public"
)]
pub struct AllowError {
    input: String,
    reason: String,
}

impl AllowedSchema {
    /// The parts, unquoted: `["db", "schema"]` or `["db"]`.
    pub fn parts(&self) -> &[String] {
        self.0.parts()
    }
}

impl FromStr for AllowedSchema {
    type Err = AllowError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| AllowError { input: input.to_owned(), reason };
        let name: DottedName = input.parse().map_err(|e: NameError| fail(e.to_string()))?;
        if name.len() > 2 {
            return Err(fail("more than two parts".to_owned()));
        }
        Ok(Self(name))
    }
}

impl fmt::Display for AllowedSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The namespaced part of the claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatorClaim {
    /// The schemas the token may write, each as its parts.
    pub schemas: Vec<Vec<String>>,
}

/// Everything a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Always `ISSUER` (`replicator`).
    pub iss: String,
    /// A random UUID identifying this token, so it can be revoked (`jwt_revoked_ids`).
    pub jti: String,
    /// Issued-at time, seconds since the Unix epoch.
    pub iat: u64,
    /// What the token allows.
    #[serde(rename = "https://github.com/cockroachdb/replicator")]
    pub replicator: ReplicatorClaim,
}

impl Claims {
    /// A claim for `schemas`, issued at `iat` with a fresh random `jti`.
    pub fn new(schemas: &[AllowedSchema], iat: u64) -> Self {
        Self {
            iss: ISSUER.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat,
            replicator: ReplicatorClaim {
                schemas: schemas.iter().map(|s| s.parts().to_vec()).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(s: &str) -> Result<Vec<String>, AllowError> {
        s.parse::<AllowedSchema>().map(|a| a.parts().to_vec())
    }

    #[test]
    fn allow_patterns_parse() {
        assert_eq!(allow("defaultdb.public"), Ok(vec!["defaultdb".into(), "public".into()]));
        assert_eq!(allow("sales"), Ok(vec!["sales".into()]));
        assert_eq!(allow("db.*"), Ok(vec!["db".into(), "*".into()]));
        assert_eq!(allow("*"), Ok(vec!["*".into()]));
    }

    #[test]
    fn malformed_allow_patterns_say_why_and_what_to_write() {
        for (bad, why) in [("a.b.c", "more than two parts"), ("db.", "a name is empty")] {
            let text = allow(bad).expect_err(bad).to_string();
            assert!(text.contains(why), "{bad:?}: {text}");
            assert!(text.contains("-a defaultdb.public"), "{text}");
        }
    }

    #[test]
    fn claim_serializes_with_molt_namespace() {
        let schemas = ["db.public".parse().expect("ok"), "mysqldb".parse().expect("ok")];
        let claims = Claims::new(&schemas, 1_700_000_000);
        let json = serde_json::to_value(&claims).expect("serializes");
        assert_eq!(json["iss"], "replicator");
        assert_eq!(json["iat"], 1_700_000_000);
        assert_eq!(json[NAMESPACE]["schemas"], serde_json::json!([["db", "public"], ["mysqldb"]]));
        let jti = json["jti"].as_str().expect("jti is a string");
        assert_eq!(uuid::Uuid::parse_str(jti).expect("jti is a UUID").get_version_num(), 4);
        assert_ne!(Claims::new(&schemas, 0).jti, Claims::new(&schemas, 0).jti);
    }
}
