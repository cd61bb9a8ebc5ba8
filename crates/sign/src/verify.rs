//! Checking that an image's digest carries a signature by a given key, in the `.sig` tag
//! (cosign, containers/image) or as an OCI 1.1 referrer.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{blob_digest, Client, Error as RegistryError, Reference};
use serde::Deserialize;

use crate::attach::{signature_tag, SIGNATURE_ARTIFACT_TYPE};
use crate::keys::PublicKey;
use crate::payload::{parse, SIMPLE_SIGNING};
use crate::signer::SIGNATURE_ANNOTATION;

/// Payloads are a few hundred bytes; a bigger one is refused before it is fetched.
const PAYLOAD_LIMIT: u64 = 64 << 10;

/// Why one stored signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The signature does not verify against the key over the payload: another key
    /// signed it, or the payload or signature was altered.
    BadSignature,
    /// The key signed it, but for another manifest.
    OtherDigest { signed: String },
    /// Unreadable: missing annotation, not base64, not a payload, a blob that does not
    /// match its digest.
    Garbled(String),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadSignature => {
                f.write_str("the signature does not verify with this key (signed by another key, or the payload or signature was altered)")
            }
            Rejection::OtherDigest { signed } => write!(f, "validly signed, but for another manifest ({signed})"),
            Rejection::Garbled(why) => write!(f, "garbled: {why}"),
        }
    }
}

/// Verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{image} ({digest}) has no signatures: no {tag} tag and no signature referrers")]
    Missing { image: String, digest: Digest, tag: String },
    #[error("{image} ({digest}) has {} signature(s), none valid for this key:{}", .rejections.len(), list(.rejections))]
    NoValidSignature { image: String, digest: Digest, rejections: Vec<(String, Rejection)> },
    #[error("{image} ({digest}) has no in-toto attestations (no `application/vnd.in-toto+json` referrers, no envelopes under the {tag} tag)")]
    NoAttestations { image: String, digest: Digest, tag: String },
    #[error("{image} ({digest}) has attestation(s) that do not verify with this key:{}", list(.rejections))]
    BadAttestations { image: String, digest: Digest, rejections: Vec<(String, Rejection)> },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn list(r: &[(String, Rejection)]) -> String {
    r.iter().map(|(w, why)| format!("\n  {w}: {why}")).collect()
}

/// A verified signature.
#[derive(Debug, Clone)]
pub struct Verified {
    pub digest: Digest,
    /// The identity the payload names (`critical.identity.docker-reference`).
    pub docker_reference: String,
    /// Where it was found: the `.sig` tag or the referrer's digest.
    pub source: String,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    layers: Vec<Layer>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// Verifies that the manifest `image` names (its exact digest) is signed by `key`.
pub fn verify_image(client: &Client, image: &Reference, key: &PublicKey) -> Result<Verified, VerifyError> {
    let manifest = client.get_manifest(image)?;
    let digest = manifest.digest;
    let mut rejections = Vec::new();
    let mut found_any = false;

    let sig_tag = signature_tag(&digest);
    let sig_ref = image.with_tag(&sig_tag)?;
    match client.get_manifest(&sig_ref) {
        Ok(m) => {
            found_any = true;
            match serde_json::from_slice::<Doc>(&m.bytes) {
                Ok(doc) => {
                    for (i, layer) in doc.layers.iter().enumerate() {
                        let what = format!("{sig_tag} layer {i}");
                        let sig = layer.annotations.get(SIGNATURE_ANNOTATION);
                        match check(client, image, key, &digest, layer, sig) {
                            Ok(identity) => {
                                return Ok(Verified { digest, docker_reference: identity, source: sig_tag });
                            }
                            Err(r) => rejections.push((what, r)),
                        }
                    }
                }
                Err(e) => {
                    rejections.push((sig_tag.clone(), Rejection::Garbled(format!("not a manifest: {e}"))))
                }
            }
        }
        Err(RegistryError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }

    for referrer in client.list_referrers(image, &digest, Some(SIGNATURE_ARTIFACT_TYPE))? {
        found_any = true;
        let what = format!("referrer {}", referrer.digest());
        let referrer = match blob_digest(referrer.digest()) {
            Ok(d) => d,
            Err(e) => {
                rejections.push((what, Rejection::Garbled(e.to_string())));
                continue;
            }
        };
        let m = match client.get_manifest(&image.with_digest(referrer)) {
            Ok(m) => m,
            Err(RegistryError::NotFound { .. }) => {
                rejections.push((what, Rejection::Garbled("listed but absent".into())));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let doc = match serde_json::from_slice::<Doc>(&m.bytes) {
            Ok(d) => d,
            Err(e) => {
                rejections.push((what, Rejection::Garbled(format!("not a manifest: {e}"))));
                continue;
            }
        };
        let Some(layer) = doc.layers.first() else {
            rejections.push((what, Rejection::Garbled("no payload layer".into())));
            continue;
        };
        let sig = layer.annotations.get(SIGNATURE_ANNOTATION).or(doc.annotations.get(SIGNATURE_ANNOTATION));
        match check(client, image, key, &digest, layer, sig) {
            Ok(identity) => return Ok(Verified { digest, docker_reference: identity, source: what }),
            Err(r) => rejections.push((what, r)),
        }
    }

    if !found_any {
        return Err(VerifyError::Missing { image: image.to_string(), digest, tag: sig_tag });
    }
    Err(VerifyError::NoValidSignature { image: image.to_string(), digest, rejections })
}

/// Checks one signature layer; the signed identity if it is valid for `digest`.
fn check(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
    digest: &Digest,
    layer: &Layer,
    signature: Option<&String>,
) -> Result<String, Rejection> {
    if layer.media_type != SIMPLE_SIGNING {
        return Err(Rejection::Garbled(format!("media type `{}`, not `{SIMPLE_SIGNING}`", layer.media_type)));
    }
    let signature =
        signature.ok_or_else(|| Rejection::Garbled(format!("no `{SIGNATURE_ANNOTATION}` annotation")))?;
    let signature = B64
        .decode(signature.trim())
        .map_err(|e| Rejection::Garbled(format!("the signature is not base64: {e}")))?;
    if layer.size > PAYLOAD_LIMIT {
        return Err(Rejection::Garbled(format!(
            "a {}-byte payload (the limit is {PAYLOAD_LIMIT})",
            layer.size
        )));
    }
    let mut payload = Vec::new();
    client
        .fetch_blob_sized(image, &layer.digest, layer.size, &mut payload)
        .map_err(|e| Rejection::Garbled(format!("the payload blob: {e}")))?;
    if !key.verifies(&payload, &signature) {
        return Err(Rejection::BadSignature);
    }
    let p = parse(&payload).map_err(Rejection::Garbled)?;
    if p.critical.image.docker_manifest_digest != digest.to_string() {
        return Err(Rejection::OtherDigest { signed: p.critical.image.docker_manifest_digest });
    }
    Ok(p.critical.identity.docker_reference)
}
