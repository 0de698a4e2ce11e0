//! Private keys for signing: PEM in, algorithm chosen by the key.
//!
//! Accepted: PKCS#1 `RSA PRIVATE KEY` (RS256), SEC1 `EC PRIVATE KEY` and PKCS#8 `PRIVATE KEY`
//! holding RSA (RS256), EC P-256 (ES256) or EC P-384 (ES384). Everything else gets an error
//! that names what the file holds and what to do instead.

use std::fmt;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::claims::Claims;

pub(super) const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(super) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(super) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(super) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_CONTEXT_0: u8 = 0xa0;

const SUPPORTED: &str = "use an RSA key (RS256) or an EC key on P-256 (ES256) or P-384 (ES384), \
                         e.g. openssl ecparam -name prime256v1 -genkey -noout -out key.pem";

/// Why a key file cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No PEM block at all.
    #[error(
        "{0} is not a PEM private key (no -----BEGIN … PRIVATE KEY----- block); make-jwt signs \
         with a private key, not a shared secret: {SUPPORTED}"
    )]
    NotPem(String),
    /// A JWK of type `oct`, or anything else that is a shared secret.
    #[error(
        "{0} holds an HMAC (shared-secret) key, which make-jwt does not support: the target \
         verifies tokens with a public key, so the key must be asymmetric; {SUPPORTED}"
    )]
    Hmac(String),
    /// A JSON Web Key of an asymmetric type.
    #[error("{0} is a JSON Web Key; make-jwt reads PEM: convert it to a PEM private key")]
    Jwk(String),
    /// Only public material (public key, certificate).
    #[error(
        "{path} holds {what}, not a private key: pass the private key with -k (its public key \
         is what goes into the staging table jwt_public_keys)"
    )]
    NotPrivate {
        /// The key file.
        path: String,
        /// What was found instead.
        what: String,
    },
    /// A passphrase-protected key.
    #[error(
        "{0} holds an encrypted private key: decrypt it first, e.g. \
         openssl pkcs8 -in {0} -out key-plain.pem"
    )]
    Encrypted(String),
    /// Several private keys; which one is meant is not ours to guess.
    #[error("{path} holds {count} private keys: pass a file with exactly one")]
    Several {
        /// The key file.
        path: String,
        /// How many private keys it holds.
        count: usize,
    },
    /// A private key of an algorithm or curve we do not sign with.
    #[error("{path} holds {what} private key, which make-jwt does not support: {SUPPORTED}")]
    Unsupported {
        /// The key file.
        path: String,
        /// The key's kind, e.g. "an Ed25519".
        what: String,
    },
    /// The PEM block's contents are not the structure its label promises.
    #[error("{path} holds a malformed {label} block: {reason}")]
    Malformed {
        /// The key file.
        path: String,
        /// The PEM label.
        label: String,
        /// What is wrong.
        reason: String,
    },
    /// The crypto library refused the key or failed to sign.
    #[error("cannot sign with {path}")]
    Sign {
        /// The key file.
        path: String,
        /// The library's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// A private key ready to sign, with the JWT algorithm its type implies.
pub struct SigningKey {
    algorithm: Algorithm,
    key: EncodingKey,
    path: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PEM private key; `path` names it in errors.
    pub fn from_pem(pem_text: &[u8], path: &str) -> Result<Self, KeyError> {
        let path = path.to_owned();
        let blocks = match pem::parse_many(pem_text) {
            Ok(blocks) if !blocks.is_empty() => blocks,
            _ => return Err(classify_non_pem(pem_text, path)),
        };
        let private: Vec<_> = blocks.iter().filter(|b| b.tag().ends_with("PRIVATE KEY")).collect();
        let block = match private.as_slice() {
            [] => {
                let what = match blocks[0].tag() {
                    "CERTIFICATE" => "a certificate".to_owned(),
                    tag if tag.contains("PUBLIC KEY") => "a public key".to_owned(),
                    tag => format!("a {tag} block"),
                };
                return Err(KeyError::NotPrivate { path, what });
            }
            [one] => *one,
            many => {
                return Err(KeyError::Several { path, count: many.len() });
            }
        };
        let der = block.contents();
        let malformed = |reason: &str| KeyError::Malformed {
            path: path.clone(),
            label: block.tag().to_owned(),
            reason: reason.to_owned(),
        };
        let (algorithm, key) = match block.tag() {
            "RSA PRIVATE KEY" => {
                check_pkcs1(der).ok_or_else(|| malformed("not a PKCS#1 RSAPrivateKey"))?;
                (Algorithm::RS256, EncodingKey::from_rsa_der(der))
            }
            "EC PRIVATE KEY" => {
                let curve = sec1_curve(der)
                    .ok_or_else(|| malformed("not a SEC1 ECPrivateKey"))?
                    .ok_or_else(|| {
                        malformed(
                            "the key names no curve; convert it with \
                             openssl pkcs8 -topk8 -nocrypt -in KEY -out key8.pem",
                        )
                    })?;
                let algorithm = ec_algorithm(curve, &path)?;
                (algorithm, EncodingKey::from_ec_der(&wrap_sec1_in_pkcs8(curve, der)))
            }
            "PRIVATE KEY" => {
                let info = pkcs8(der).ok_or_else(|| malformed("not a PKCS#8 PrivateKeyInfo"))?;
                match info.algorithm {
                    OID_RSA => {
                        check_pkcs1(info.private_key)
                            .ok_or_else(|| malformed("the RSA key inside is not PKCS#1"))?;
                        (Algorithm::RS256, EncodingKey::from_rsa_der(info.private_key))
                    }
                    OID_EC_PUBLIC_KEY => {
                        let curve = info
                            .parameter_oid
                            .ok_or_else(|| malformed("the EC key names no curve"))?;
                        (ec_algorithm(curve, &path)?, EncodingKey::from_ec_der(der))
                    }
                    other => {
                        let what = match other {
                            OID_ED25519 => "an Ed25519".to_owned(),
                            OID_ED448 => "an Ed448".to_owned(),
                            OID_DSA => "a DSA".to_owned(),
                            oid => format!("an unknown (algorithm {})", oid_text(oid)),
                        };
                        return Err(KeyError::Unsupported { path, what });
                    }
                }
            }
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted(path)),
            "DSA PRIVATE KEY" => {
                return Err(KeyError::Unsupported { path, what: "a DSA".to_owned() });
            }
            "OPENSSH PRIVATE KEY" => {
                return Err(KeyError::Unsupported { path, what: "an OpenSSH-format".to_owned() });
            }
            other => {
                return Err(KeyError::Unsupported { path, what: format!("a {other}") });
            }
        };
        let signing = Self { algorithm, key, path };
        // Sign once now, so a key the crypto library rejects fails here with its reason.
        signing.sign(&Claims::new(&[], 0))?;
        Ok(signing)
    }

    /// The JWT algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .map_err(|source| KeyError::Sign { path: self.path.clone(), source })
    }
}

fn ec_algorithm(curve: &[u8], path: &str) -> Result<Algorithm, KeyError> {
    let what = match curve {
        OID_P256 => return Ok(Algorithm::ES256),
        OID_P384 => return Ok(Algorithm::ES384),
        OID_P521 => "an EC P-521".to_owned(),
        OID_SECP256K1 => "an EC secp256k1".to_owned(),
        oid => format!("an EC (curve {})", oid_text(oid)),
    };
    Err(KeyError::Unsupported { path: path.to_owned(), what })
}

/// Names what a non-PEM file is, as far as it can be told.
fn classify_non_pem(text: &[u8], path: String) -> KeyError {
    if let Ok(serde_json::Value::Object(jwk)) = serde_json::from_slice(text) {
        return match jwk.get("kty").and_then(|k| k.as_str()) {
            Some("oct") => KeyError::Hmac(path),
            _ => KeyError::Jwk(path),
        };
    }
    KeyError::NotPem(path)
}

/// One DER element: tag, contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    der(input).and_then(|(t, body, rest)| (t == tag).then_some((body, rest)))
}

/// A PKCS#1 RSAPrivateKey starts with a SEQUENCE holding an INTEGER version and the modulus.
fn check_pkcs1(input: &[u8]) -> Option<()> {
    let (seq, _) = expect(input, TAG_SEQUENCE)?;
    let (_, rest) = expect(seq, TAG_INTEGER)?;
    expect(rest, TAG_INTEGER).map(|_| ())
}

struct Pkcs8<'a> {
    algorithm: &'a [u8],
    parameter_oid: Option<&'a [u8]>,
    private_key: &'a [u8],
}

fn pkcs8(input: &[u8]) -> Option<Pkcs8<'_>> {
    let (seq, _) = expect(input, TAG_SEQUENCE)?;
    let (_, rest) = expect(seq, TAG_INTEGER)?;
    let (alg, rest) = expect(rest, TAG_SEQUENCE)?;
    let (algorithm, params) = expect(alg, TAG_OID)?;
    let parameter_oid = expect(params, TAG_OID).map(|(oid, _)| oid);
    let (private_key, _) = expect(rest, TAG_OCTET_STRING)?;
    Some(Pkcs8 { algorithm, parameter_oid, private_key })
}

/// The named curve of a SEC1 ECPrivateKey: `None` if malformed, `Some(None)` if unnamed.
fn sec1_curve(input: &[u8]) -> Option<Option<&[u8]>> {
    let (seq, _) = expect(input, TAG_SEQUENCE)?;
    let (_, rest) = expect(seq, TAG_INTEGER)?;
    let (_, rest) = expect(rest, TAG_OCTET_STRING)?;
    Some(
        expect(rest, TAG_CONTEXT_0).and_then(|(params, _)| expect(params, TAG_OID).map(|(o, _)| o)),
    )
}

/// PrivateKeyInfo { version 0, { id-ecPublicKey, curve }, OCTET STRING sec1 }.
fn wrap_sec1_in_pkcs8(curve: &[u8], sec1: &[u8]) -> Vec<u8> {
    let mut alg = encode(TAG_OID, OID_EC_PUBLIC_KEY);
    alg.extend(encode(TAG_OID, curve));
    let mut body = encode(TAG_INTEGER, &[0]);
    body.extend(encode(TAG_SEQUENCE, &alg));
    body.extend(encode(TAG_OCTET_STRING, sec1));
    encode(TAG_SEQUENCE, &body)
}

fn encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

/// Dotted form of an OID's DER contents, for messages.
fn oid_text(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value = 0u64;
    for &b in oid {
        value = value << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_print_dotted() {
        assert_eq!(oid_text(OID_P256), "1.2.840.10045.3.1.7");
        assert_eq!(oid_text(OID_P384), "1.3.132.0.34");
        assert_eq!(oid_text(OID_ED25519), "1.3.101.112");
    }

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let body = vec![7u8; len];
            let encoded = encode(TAG_OCTET_STRING, &body);
            let (tag, got, rest) = der(&encoded).expect("parses");
            assert_eq!((tag, got.len(), rest.len()), (TAG_OCTET_STRING, len, 0));
        }
        assert!(der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none(), "5-byte lengths refused");
        assert!(der(&[0x30, 0x05, 1]).is_none(), "truncated body refused");
        assert!(der(&[0x30]).is_none());
    }

    #[test]
    fn garbage_is_not_pem_and_json_is_classified() {
        let err = SigningKey::from_pem(b"my-shared-secret", "k").expect_err("not pem");
        assert!(matches!(err, KeyError::NotPem(_)), "{err}");
        assert!(err.to_string().contains("not a shared secret"), "{err}");
        let err = SigningKey::from_pem(br#"{"kty":"oct","k":"c2VjcmV0"}"#, "k").expect_err("hmac");
        assert!(matches!(err, KeyError::Hmac(_)), "{err}");
        let err = SigningKey::from_pem(br#"{"kty":"EC","crv":"P-256"}"#, "k").expect_err("jwk");
        assert!(matches!(err, KeyError::Jwk(_)), "{err}");
    }

    #[test]
    fn malformed_der_inside_pem_is_named() {
        let text = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(text.as_bytes(), "k.pem").expect_err("malformed");
        assert!(err.to_string().contains("malformed PRIVATE KEY block"), "{err}");
    }
}
