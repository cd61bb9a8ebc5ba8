//! Cosign's key files. The private key is an ECDSA P-256 key as PKCS#8 DER, encrypted the
//! way sigstore's Go libraries do (go-securesystemslib's `encrypted` package): a key from
//! scrypt(password, salt) seals the DER in a NaCl secretbox, and a JSON document carrying
//! the KDF parameters, salt, nonce and ciphertext is PEM-armoured as
//! `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign wrote `ENCRYPTED COSIGN PRIVATE KEY`).
//! The public key is PKIX (`SubjectPublicKeyInfo`) DER armoured as `PUBLIC KEY`.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_secretbox::aead::Aead;
use crypto_secretbox::{KeyInit, Nonce, XSalsa20Poly1305};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::{pem, Error};

pub const SIGSTORE_PRIVATE_KEY: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
pub const COSIGN_PRIVATE_KEY: &str = "ENCRYPTED COSIGN PRIVATE KEY";
pub const PUBLIC_KEY: &str = "PUBLIC KEY";

/// scrypt parameters written for new keys: 2^15, 8, 1, the set every sigstore version
/// reads (newer ones write 2^16 and also accept 2^17, so those are read too).
const LOG_N: u8 = 15;
const ACCEPTED_LOG_N: [u8; 3] = [15, 16, 17];
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// `SubjectPublicKeyInfo` of an uncompressed P-256 point, up to the point itself:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) }.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P256_POINT_LEN: usize = 65;

#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

/// Go's `[]byte` in JSON: standard base64 with padding.
mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

/// An ECDSA P-256 signing key.
pub struct PrivateKey {
    pair: EcdsaKeyPair,
}

/// An ECDSA P-256 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point (0x04 || X || Y).
    point: Vec<u8>,
}

fn derive(password: &[u8], salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<[u8; 32], Error> {
    let params =
        scrypt::Params::new(log_n, r, p).map_err(|e| Error::Crypto(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).map_err(|e| Error::Crypto(format!("scrypt: {e}")))?;
    Ok(key)
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(|_| Error::Crypto("the system random generator failed".into()))?;
    Ok(out)
}

impl PrivateKey {
    /// The key file: PKCS#8 DER encrypted under `password`, as `ENCRYPTED SIGSTORE PRIVATE KEY`.
    pub fn to_encrypted_pem(pkcs8: &[u8], password: &[u8]) -> Result<String, Error> {
        let rng = SystemRandom::new();
        let salt: [u8; SALT_LEN] = random(&rng)?;
        let nonce: [u8; NONCE_LEN] = random(&rng)?;
        let key = derive(password, &salt, LOG_N, 8, 1)?;
        let sealed = XSalsa20Poly1305::new(&key.into())
            .encrypt(Nonce::from_slice(&nonce), pkcs8)
            .map_err(|_| Error::Crypto("sealing the key failed".into()))?;
        let envelope = Envelope {
            kdf: Kdf {
                name: "scrypt".into(),
                params: KdfParams { n: 1 << LOG_N, r: 8, p: 1 },
                salt: salt.to_vec(),
            },
            cipher: Cipher { name: "nacl/secretbox".into(), nonce: nonce.to_vec() },
            ciphertext: sealed,
        };
        let json = serde_json::to_vec(&envelope).expect("serialising the key envelope cannot fail");
        Ok(pem::encode(SIGSTORE_PRIVATE_KEY, &json))
    }

    /// Reads a cosign private key file (either label), decrypting it with `password`.
    pub fn from_encrypted_pem(text: &str, password: &[u8]) -> Result<PrivateKey, Error> {
        let bad = |reason: String| Error::Format { what: "the private key".into(), reason };
        let (label, json) = pem::decode(text).map_err(bad)?;
        if label != SIGSTORE_PRIVATE_KEY && label != COSIGN_PRIVATE_KEY {
            return Err(bad(format!(
                "a PEM `{label}` block, not a cosign key (`{SIGSTORE_PRIVATE_KEY}` or `{COSIGN_PRIVATE_KEY}`)"
            )));
        }
        let env: Envelope =
            serde_json::from_slice(&json).map_err(|e| bad(format!("not cosign's key JSON: {e}")))?;
        if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
            return Err(bad(format!("unsupported KDF `{}` or cipher `{}`", env.kdf.name, env.cipher.name)));
        }
        let KdfParams { n, r, p } = env.kdf.params;
        // Only the parameter sets sigstore writes: a forged file cannot make us spend gigabytes.
        let log_n = ACCEPTED_LOG_N
            .into_iter()
            .find(|l| 1u64 << l == n)
            .filter(|_| r == 8 && p == 1)
            .ok_or_else(|| bad(format!("unsupported scrypt parameters N={n} r={r} p={p}")))?;
        if env.cipher.nonce.len() != NONCE_LEN {
            return Err(bad(format!(
                "a {}-byte nonce (secretbox needs {NONCE_LEN})",
                env.cipher.nonce.len()
            )));
        }
        let key = derive(password, &env.kdf.salt, log_n, r, p)?;
        let der = XSalsa20Poly1305::new(&key.into())
            .decrypt(Nonce::from_slice(&env.cipher.nonce), env.ciphertext.as_slice())
            .map_err(|_| Error::Decrypt)?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &der, &SystemRandom::new())
                .map_err(|e| bad(format!("not an ECDSA P-256 PKCS#8 key (only P-256 is supported): {e}")))?;
        Ok(PrivateKey { pair })
    }

    pub fn read(path: &Path, password: &[u8]) -> Result<PrivateKey, Error> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::Io {
            action: "read",
            path: path.into(),
            cause,
        })?;
        Self::from_encrypted_pem(&text, password).map_err(|e| match e {
            Error::Format { reason, .. } => Error::Key { path: path.into(), reason },
            other => other,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { point: self.pair.public_key().as_ref().to_vec() }
    }

    /// An ASN.1 DER ECDSA-SHA256 signature of `message` (randomised, as Go's).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| Error::Crypto("signing failed".into()))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// A new key pair as the two files' contents: the encrypted private key and the public key.
pub fn generate_pair(password: &[u8]) -> Result<(String, String), Error> {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| Error::Crypto("key generation failed".into()))?;
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
        .map_err(|e| Error::Crypto(format!("the generated key: {e}")))?;
    let public = PublicKey { point: pair.public_key().as_ref().to_vec() };
    Ok((PrivateKey::to_encrypted_pem(pkcs8.as_ref(), password)?, public.to_pem()))
}

impl PublicKey {
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_P256_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        pem::encode(PUBLIC_KEY, &der)
    }

    pub fn from_pem(text: &str) -> Result<PublicKey, Error> {
        let bad = |reason: String| Error::Format { what: "the public key".into(), reason };
        let (label, der) = pem::decode(text).map_err(bad)?;
        if label != PUBLIC_KEY {
            return Err(bad(format!("a PEM `{label}` block, not `{PUBLIC_KEY}`")));
        }
        match der.strip_prefix(&SPKI_P256_PREFIX[..]) {
            Some(point) if point.len() == P256_POINT_LEN && point[0] == 0x04 => {
                Ok(PublicKey { point: point.to_vec() })
            }
            _ => Err(bad("not an uncompressed ECDSA P-256 key (only P-256 is supported)".into())),
        }
    }

    pub fn read(path: &Path) -> Result<PublicKey, Error> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::Io {
            action: "read",
            path: path.into(),
            cause,
        })?;
        Self::from_pem(&text).map_err(|e| match e {
            Error::Format { reason, .. } => Error::Key { path: path.into(), reason },
            other => other,
        })
    }

    /// Whether `signature` (ASN.1 DER) is this key's ECDSA-SHA256 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_round_trips_and_signs() {
        let (private, public) = generate_pair(b"pw").unwrap();
        assert!(private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let key = PrivateKey::from_encrypted_pem(&private, b"pw").unwrap();
        let public = PublicKey::from_pem(&public).unwrap();
        assert_eq!(key.public_key(), public);
        let sig = key.sign(b"payload").unwrap();
        assert!(public.verifies(b"payload", &sig));
        assert!(!public.verifies(b"payloae", &sig));
        assert!(matches!(PrivateKey::from_encrypted_pem(&private, b"wrong"), Err(Error::Decrypt)));
        // The older label reads the same.
        let older = private.replace(SIGSTORE_PRIVATE_KEY, COSIGN_PRIVATE_KEY);
        assert_eq!(PrivateKey::from_encrypted_pem(&older, b"pw").unwrap().public_key(), public);
    }

    #[test]
    fn forged_scrypt_parameters_are_refused_before_any_work() {
        let (private, _) = generate_pair(b"").unwrap();
        let (_, json) = pem::decode(&private).unwrap();
        let forged = String::from_utf8(json).unwrap().replace("\"N\":32768", "\"N\":1073741824");
        let err = PrivateKey::from_encrypted_pem(&pem::encode(SIGSTORE_PRIVATE_KEY, forged.as_bytes()), b"");
        assert!(err.is_err_and(|e| e.to_string().contains("unsupported scrypt parameters")));
    }

    #[test]
    fn other_pem_blocks_are_refused() {
        let err =
            PublicKey::from_pem(&pem::encode("PUBLIC KEY", &[0x30, 0x03, 0x02, 0x01, 0x00])).unwrap_err();
        assert!(err.to_string().contains("only P-256"), "{err}");
        assert!(PrivateKey::from_encrypted_pem(&pem::encode("PRIVATE KEY", b"x"), b"").is_err());
        assert!(PublicKey::from_pem("garbage").is_err());
    }
}
