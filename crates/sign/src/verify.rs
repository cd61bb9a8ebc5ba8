//! Checking that an image's digest carries a signature by a given key, in the `.sig` tag
//! (cosign, containers/image) or as an OCI 1.1 referrer.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{blob_digest, Client, Error as RegistryError, Reference};
use oci_spec::image::{Descriptor, ImageManifest};

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

/// `Err(Ok(_))` refuses one stored entry; `Err(Err(_))` is a registry failure, which is no
/// verdict on what is stored and stops verification.
pub(crate) type Verdict<T> = Result<T, Result<Rejection, RegistryError>>;

/// The image manifest of a listed referrer.
pub(crate) fn referrer_manifest(
    client: &Client,
    image: &Reference,
    referrer: &oci_spec::image::Digest,
) -> Verdict<ImageManifest> {
    let garbled = |s: String| Ok(Rejection::Garbled(s));
    let referrer = blob_digest(referrer).map_err(|e| garbled(e.to_string()))?;
    let m = match client.get_manifest(&image.with_digest(referrer)) {
        Ok(m) => m,
        Err(RegistryError::NotFound { .. }) => return Err(garbled("listed but absent".into())),
        Err(e) => return Err(Err(e)),
    };
    m.image().map_err(|e| garbled(format!("not a manifest: {e}")))
}

/// Refuses a stored layer of another media type than `expected`.
pub(crate) fn expect_media_type(layer: &Descriptor, expected: &str) -> Result<(), Rejection> {
    match layer.media_type().as_ref() {
        m if m == expected => Ok(()),
        m => Err(Rejection::Garbled(format!("media type `{m}`, not `{expected}`"))),
    }
}

/// The bytes of a stored `what` (payload, envelope): refused before it is fetched when its
/// descriptor says more than `limit` bytes, and checked against its digest and size.
pub(crate) fn fetch_layer(
    client: &Client,
    image: &Reference,
    layer: &Descriptor,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>, Rejection> {
    if layer.size() > limit {
        return Err(Rejection::Garbled(format!("a {}-byte {what} (the limit is {limit})", layer.size())));
    }
    let digest = blob_digest(layer.digest()).map_err(|e| Rejection::Garbled(e.to_string()))?;
    let mut bytes = Vec::new();
    client
        .fetch_blob_sized(image, &digest, layer.size(), &mut bytes)
        .map_err(|e| Rejection::Garbled(format!("the {what} blob: {e}")))?;
    Ok(bytes)
}

/// The signature annotation of a layer (or, for a referrer, of its manifest).
fn signature_of<'a>(layer: &'a Descriptor, manifest: Option<&'a ImageManifest>) -> Option<&'a String> {
    let get =
        |a: &'a Option<std::collections::HashMap<String, String>>| a.as_ref()?.get(SIGNATURE_ANNOTATION);
    get(layer.annotations()).or_else(|| manifest.and_then(|m| get(m.annotations())))
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
            match m.image() {
                Ok(doc) => {
                    for (i, layer) in doc.layers().iter().enumerate() {
                        let what = format!("{sig_tag} layer {i}");
                        match check(client, image, key, &digest, layer, signature_of(layer, None)) {
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
        let doc = match referrer_manifest(client, image, referrer.digest()) {
            Ok(doc) => doc,
            Err(Ok(why)) => {
                rejections.push((what, why));
                continue;
            }
            Err(Err(e)) => return Err(e.into()),
        };
        let Some(layer) = doc.layers().first() else {
            rejections.push((what, Rejection::Garbled("no payload layer".into())));
            continue;
        };
        match check(client, image, key, &digest, layer, signature_of(layer, Some(&doc))) {
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
    layer: &Descriptor,
    signature: Option<&String>,
) -> Result<String, Rejection> {
    expect_media_type(layer, SIMPLE_SIGNING)?;
    let signature =
        signature.ok_or_else(|| Rejection::Garbled(format!("no `{SIGNATURE_ANNOTATION}` annotation")))?;
    let signature = B64
        .decode(signature.trim())
        .map_err(|e| Rejection::Garbled(format!("the signature is not base64: {e}")))?;
    let payload = fetch_layer(client, image, layer, "payload", PAYLOAD_LIMIT)?;
    if !key.verifies(&payload, &signature) {
        return Err(Rejection::BadSignature);
    }
    let p = parse(&payload).map_err(Rejection::Garbled)?;
    if p.critical.image.docker_manifest_digest != digest.to_string() {
        return Err(Rejection::OtherDigest { signed: p.critical.image.docker_manifest_digest });
    }
    Ok(p.critical.identity.docker_reference)
}
