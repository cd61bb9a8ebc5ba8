//! DSSE envelopes (https://github.com/secure-systems-lab/dsse/blob/master/envelope.md), the
//! form cosign stores signed in-toto attestations in: the signature covers the
//! pre-authentication encoding (PAE) of the payload type and the payload, never the JSON
//! around them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::signer::Signer;
use crate::Error;

/// The payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the payload bytes.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the signature over [`pae`].
    pub sig: String,
}

/// `DSSEv1 <len(type)> <type> <len(body)> <body>`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Signs `payload` into an envelope.
pub fn sign(signer: &dyn Signer, payload_type: &str, payload: &[u8]) -> Result<Envelope, Error> {
    let signature = signer.sign(&pae(payload_type, payload))?;
    Ok(Envelope {
        payload_type: payload_type.to_owned(),
        payload: B64.encode(payload),
        signatures: vec![EnvelopeSignature { keyid: String::new(), sig: B64.encode(signature.signature) }],
    })
}

/// The payload of `envelope` if one of its signatures verifies with `key` and its type is
/// `payload_type`; otherwise why not.
pub fn open(envelope: &Envelope, payload_type: &str, key: &PublicKey) -> Result<Vec<u8>, String> {
    if envelope.payload_type != payload_type {
        return Err(format!("payload type `{}`, not `{payload_type}`", envelope.payload_type));
    }
    let payload =
        B64.decode(envelope.payload.trim()).map_err(|e| format!("the payload is not base64: {e}"))?;
    if envelope.signatures.is_empty() {
        return Err("the envelope has no signatures".into());
    }
    let message = pae(&envelope.payload_type, &payload);
    for s in &envelope.signatures {
        if let Ok(sig) = B64.decode(s.sig.trim()) {
            if key.verifies(&message, &sig) {
                return Ok(payload);
            }
        }
    }
    Err("no signature of the envelope verifies with this key (signed by another key, or the statement or signature was altered)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_specification_example() {
        // The DSSE protocol document's worked example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn an_envelope_opens_with_its_key_only_and_untampered() {
        let (private, public) = crate::generate_pair(b"pw").unwrap();
        let (other, other_public) = crate::generate_pair(b"pw").unwrap();
        let key = crate::KeySigner::new(crate::PrivateKey::from_encrypted_pem(&private, b"pw").unwrap());
        let public = PublicKey::from_pem(&public).unwrap();
        let e = sign(&key, IN_TOTO, b"{\"a\":1}").unwrap();
        assert_eq!(open(&e, IN_TOTO, &public).unwrap(), b"{\"a\":1}");
        // Another key.
        let other_public = PublicKey::from_pem(&other_public).unwrap();
        assert!(open(&e, IN_TOTO, &other_public).unwrap_err().starts_with("no signature"));
        let e2 = sign(
            &crate::KeySigner::new(crate::PrivateKey::from_encrypted_pem(&other, b"pw").unwrap()),
            IN_TOTO,
            b"x",
        )
        .unwrap();
        assert!(open(&e2, IN_TOTO, &public).is_err());
        // The payload altered, the type altered (both are signed through the PAE).
        let mut t = e.clone();
        t.payload = B64.encode(b"{\"a\":2}");
        assert!(open(&t, IN_TOTO, &public).unwrap_err().starts_with("no signature"));
        let mut t = e.clone();
        t.payload_type = "application/json".into();
        assert!(open(&t, IN_TOTO, &public).unwrap_err().contains("payload type"));
        assert!(open(&t, "application/json", &public).unwrap_err().starts_with("no signature"));
        // Garbled.
        let mut t = e.clone();
        t.signatures.clear();
        assert!(open(&t, IN_TOTO, &public).unwrap_err().contains("no signatures"));
        let mut t = e;
        t.payload = "%%".into();
        assert!(open(&t, IN_TOTO, &public).unwrap_err().contains("base64"));
    }
}
