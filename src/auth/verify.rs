//! Checking a changefeed's token: the public keys in staging's `jwt_public_keys`, the revoked
//! ids in `jwt_revoked_ids`, and MOLT's claim.
//!
//! A token passes when it is signed with RS256/384/512 or ES256/384 by one of the active keys
//! (HMAC and `none` are refused), carries a `jti` that is not revoked, is within its `exp` and
//! `nbf` when it has them, and allows the request's schema: an entry of the claim's schemas
//! with as many parts as the schema, each equal ignoring case or `*`. The claim is read under
//! MOLT's namespace and under the legacy `cdc-sink` one.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::claims::ReplicatorClaim;
use super::key::{OID_EC_PUBLIC_KEY, OID_P256, OID_P384, OID_RSA};

/// A public key that verifies tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("algorithms", &self.algorithms).finish_non_exhaustive()
    }
}

/// Why a public key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PublicKeyError(String);

impl VerifyingKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo): RSA, or EC on P-256 or P-384.
    pub fn from_pem(pem_text: &str) -> Result<Self, PublicKeyError> {
        let block = pem::parse(pem_text.trim())
            .map_err(|e| PublicKeyError(format!("not a PEM public key: {e}")))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(PublicKeyError(format!(
                "a PEM {:?} block, not a PUBLIC KEY (openssl ec -in key.pem -pubout)",
                block.tag()
            )));
        }
        let der = block.contents();
        let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
        let bad = |e: jsonwebtoken::errors::Error| PublicKeyError(format!("unreadable key: {e}"));
        let pem_bytes = pem_text.trim().as_bytes();
        if has(OID_RSA) {
            let key = DecodingKey::from_rsa_pem(pem_bytes).map_err(bad)?;
            return Ok(Self {
                algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                key,
            });
        }
        if has(OID_EC_PUBLIC_KEY) {
            let algorithm = if has(OID_P256) {
                Algorithm::ES256
            } else if has(OID_P384) {
                Algorithm::ES384
            } else {
                return Err(PublicKeyError(
                    "an EC key on a curve other than P-256 or P-384".into(),
                ));
            };
            let key = DecodingKey::from_ec_pem(pem_bytes).map_err(bad)?;
            return Ok(Self { algorithms: vec![algorithm], key });
        }
        Err(PublicKeyError("neither an RSA nor an EC public key".into()))
    }
}

/// Why a request's token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token (401).
    #[error("missing access token: send Authorization: Bearer <token from make-jwt>")]
    Missing,
    /// Not a token these keys accept (401).
    #[error("invalid access token: {0}")]
    Invalid(String),
    /// Its `jti` is in `jwt_revoked_ids` (401).
    #[error("the access token has been revoked")]
    Revoked,
    /// Valid, but not for this schema (403).
    #[error("the access token does not allow schema {0}")]
    Schema(String),
}

/// The claims a token must carry. The first name is `claims::NAMESPACE`, which the signer writes
/// (the round trip in the tests below holds them together); the second is cdc-sink's.
#[derive(Debug, Deserialize)]
struct Presented {
    jti: Option<String>,
    #[serde(rename = "https://github.com/cockroachdb/replicator")]
    replicator: Option<ReplicatorClaim>,
    #[serde(rename = "https://github.com/cockroachdb/cdc-sink")]
    legacy: Option<ReplicatorClaim>,
}

/// What tokens are checked against.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: Vec<VerifyingKey>,
    revoked: HashSet<String>,
}

impl Verifier {
    /// Checks against `keys`, refusing the ids in `revoked`.
    pub fn new(keys: Vec<VerifyingKey>, revoked: HashSet<String>) -> Self {
        Self { keys, revoked }
    }

    /// Reads the active keys of staging's `jwt_public_keys` and the ids of `jwt_revoked_ids`.
    /// A key row that does not parse is returned with why (to be logged) and skipped: one bad
    /// row does not lock every changefeed out.
    pub async fn load(
        client: &impl tokio_postgres::GenericClient,
        staging: &crate::staging::StagingSchema,
    ) -> Result<(Self, Vec<(String, PublicKeyError)>), tokio_postgres::Error> {
        let rows = client
            .query(
                &format!(
                    "SELECT id::TEXT, public_key FROM {} WHERE active ORDER BY id",
                    staging.table("jwt_public_keys")
                ),
                &[],
            )
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut skipped = Vec::new();
        for row in rows {
            let (id, pem): (String, String) = (row.get(0), row.get(1));
            match VerifyingKey::from_pem(&pem) {
                Ok(key) => keys.push(key),
                Err(e) => skipped.push((id, e)),
            }
        }
        let revoked = client
            .query(&format!("SELECT id FROM {}", staging.table("jwt_revoked_ids")), &[])
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok((Self::new(keys, revoked), skipped))
    }

    /// How many keys it holds.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Checks `token` for writing into `schema` (its parts).
    pub fn check(&self, token: Option<&str>, schema: &[String]) -> Result<(), Denied> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Denied::Missing)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Denied::Invalid(format!("unreadable header: {e}")))?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::ES256,
            Algorithm::ES384,
        ];
        if !allowed.contains(&header.alg) {
            return Err(Denied::Invalid(format!(
                "algorithm {:?} is not accepted (RS256/384/512, ES256/384 only)",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        validation.validate_nbf = true;
        let mut last = "no public key in jwt_public_keys matches".to_owned();
        for key in self.keys.iter().filter(|k| k.algorithms.contains(&header.alg)) {
            match jsonwebtoken::decode::<Presented>(token, &key.key, &validation) {
                Ok(data) => return self.authorize(data.claims, schema),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Denied::Invalid(last))
    }

    fn authorize(&self, claims: Presented, schema: &[String]) -> Result<(), Denied> {
        let jti = claims.jti.filter(|j| !j.is_empty());
        let Some(jti) = jti else {
            return Err(Denied::Invalid("the token has no jti".into()));
        };
        if self.revoked.contains(&jti) {
            return Err(Denied::Revoked);
        }
        let entries = claims.replicator.into_iter().chain(claims.legacy).flat_map(|c| c.schemas);
        let matches = |entry: &Vec<String>| {
            entry.len() == schema.len()
                && entry.iter().zip(schema).all(|(e, s)| e == "*" || e.eq_ignore_ascii_case(s))
        };
        if entries.into_iter().any(|e| matches(&e)) {
            Ok(())
        } else {
            Err(Denied::Schema(schema.join(".")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, SigningKey};

    /// A fresh P-256 key pair from the openssl command line, as an operator makes one.
    fn keypair() -> (String, String) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("replicator-verify-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let private = dir.join("ec.pem");
        let public = dir.join("ec.pub");
        let run = |args: &[&std::ffi::OsStr]| {
            let out =
                std::process::Command::new("openssl").args(args).output().expect("run openssl");
            assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "ecparam".as_ref(),
            "-name".as_ref(),
            "prime256v1".as_ref(),
            "-genkey".as_ref(),
            "-noout".as_ref(),
            "-out".as_ref(),
            private.as_os_str(),
        ]);
        run(&[
            "ec".as_ref(),
            "-in".as_ref(),
            private.as_os_str(),
            "-pubout".as_ref(),
            "-out".as_ref(),
            public.as_os_str(),
        ]);
        let pair = (
            std::fs::read_to_string(&private).expect("private"),
            std::fs::read_to_string(&public).expect("public"),
        );
        let _ = std::fs::remove_dir_all(&dir);
        pair
    }

    fn parts(s: &str) -> Vec<String> {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn tokens_are_checked_for_key_revocation_and_schema() {
        let (ec_private, ec_public) = keypair();
        let signer = SigningKey::from_pem(ec_private.as_bytes(), "test").expect("key");
        let schemas = ["shop.*".parse().expect("ok"), "Sales".parse().expect("ok")];
        let claims = Claims::new(&schemas, 1_700_000_000);
        let token = signer.sign(&claims).expect("sign");
        let key = VerifyingKey::from_pem(&ec_public).expect("public key");
        let verifier = Verifier::new(vec![key.clone()], HashSet::new());
        assert_eq!(verifier.check(Some(&token), &parts("SHOP.public")), Ok(()));
        assert_eq!(verifier.check(Some(&token), &parts("sales")), Ok(()));
        assert_eq!(
            verifier.check(Some(&token), &parts("other.public")),
            Err(Denied::Schema("other.public".into()))
        );
        assert_eq!(
            verifier.check(Some(&token), &parts("shop")),
            Err(Denied::Schema("shop".into()))
        );
        assert_eq!(verifier.check(None, &parts("shop.public")), Err(Denied::Missing));
        let revoked = Verifier::new(vec![key], [claims.jti.clone()].into_iter().collect());
        assert_eq!(revoked.check(Some(&token), &parts("shop.public")), Err(Denied::Revoked));
        let nobody = Verifier::default();
        assert!(matches!(
            nobody.check(Some(&token), &parts("shop.public")),
            Err(Denied::Invalid(_))
        ));
        // HS256 and `none` never pass.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .expect("hs256");
        assert!(
            matches!(verifier.check(Some(&hs), &parts("shop.public")), Err(Denied::Invalid(m)) if m.contains("not accepted"))
        );
        assert!(matches!(
            verifier.check(Some("eyJhbGciOiJub25lIn0.e30."), &parts("a.b")),
            Err(Denied::Invalid(_))
        ));
        assert!(matches!(verifier.check(Some("garbage"), &parts("a.b")), Err(Denied::Invalid(_))));
    }

    #[test]
    fn public_keys_say_what_is_wrong() {
        assert!(VerifyingKey::from_pem("nope").expect_err("pem").to_string().contains("not a PEM"));
        let private = VerifyingKey::from_pem(&keypair().0).expect_err("private");
        assert!(private.to_string().contains("not a PUBLIC KEY"), "{private}");
    }
}
