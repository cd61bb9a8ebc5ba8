//! Who signs: the interface every signing method implements.

use std::collections::BTreeMap;

use crate::keys::{PrivateKey, PublicKey};
use crate::Error;

/// The cosign annotation holding the base64 signature on the payload's descriptor.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A signature and whatever a verifier needs beside a public key, as the annotations that
/// go on the payload's descriptor next to [`SIGNATURE_ANNOTATION`].
pub struct Signature {
    pub signature: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

/// A way to sign payloads. [`KeySigner`] signs with a cosign key file. Keyless signing
/// fits here too: its `sign` would get a short-lived Fulcio certificate for an OIDC
/// identity, sign, log the signature in Rekor, and return the certificate, chain and Rekor
/// bundle as the annotations `dev.sigstore.cosign/certificate`, `.../chain` and
/// `.../bundle`. That needs the public sigstore services and is not implemented.
pub trait Signer {
    fn sign(&self, payload: &[u8]) -> Result<Signature, Error>;

    /// Whether an existing signature of `payload` is this signer's, so signing again adds
    /// nothing. A signer that cannot tell answers `false` (and a duplicate is appended).
    fn already_signed(&self, _payload: &[u8], _signature: &[u8]) -> bool {
        false
    }
}

/// Signs with an ECDSA P-256 cosign key.
pub struct KeySigner {
    key: PrivateKey,
    public: PublicKey,
}

impl KeySigner {
    pub fn new(key: PrivateKey) -> KeySigner {
        let public = key.public_key();
        KeySigner { key, public }
    }
}

impl Signer for KeySigner {
    fn sign(&self, payload: &[u8]) -> Result<Signature, Error> {
        Ok(Signature { signature: self.key.sign(payload)?, annotations: BTreeMap::new() })
    }

    fn already_signed(&self, payload: &[u8], signature: &[u8]) -> bool {
        self.public.verifies(payload, signature)
    }
}
