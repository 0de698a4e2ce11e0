//! JSON Web Tokens that let a CockroachDB changefeed write into chosen schemas.
//!
//! `replicator make-jwt` signs a claim with a private key; [`Verifier`] checks incoming tokens
//! against the public keys in the staging table `jwt_public_keys`. The claim is MOLT's:
//!
//! ```json
//! {"iss": "replicator", "jti": "<random UUID>", "iat": 1700000000,
//!  "https://github.com/cockroachdb/replicator": {"schemas": [["db", "schema"]]}}
//! ```
//!
//! Keys are asymmetric only (RSA → RS256, EC P-256 → ES256, P-384 → ES384): the verifier
//! holds nothing secret, so shared-secret (HMAC) keys are refused.

mod claims;
mod key;
mod verify;

pub use claims::{AllowedSchema, Claims, NAMESPACE, ReplicatorClaim};
pub use key::{KeyError, SigningKey};
pub use verify::{Denied, PublicKeyError, Verifier, VerifyingKey};
