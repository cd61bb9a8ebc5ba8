//! Signed in-toto attestations as OCI 1.1 referrers of the manifest they are about (the
//! DSSE envelope is the artifact's one layer) and as layers of cosign's `sha256-<hex>.att`
//! tag, and their verification (from both).

use std::collections::{BTreeMap, HashSet};

use nix_layer_blob::Digest;
use nix_layer_registry::{
    annotations as annotation_map, blob_digest, descriptor_of, BytesBlob, Client, Error as RegistryError,
    Reference, ReferrerPush,
};
use oci_spec::image::Descriptor;
use serde::Deserialize;

use crate::attach::{append_to_tag, attestation_tag, tag_layers};
use crate::dsse::{self, Envelope, IN_TOTO};
use crate::keys::PublicKey;
use crate::provenance::subjects;
use crate::signer::{Signer, SIGNATURE_ANNOTATION};
use crate::verify::{Rejection, VerifyError};
use crate::Error;

/// The envelope's media type (the artifact's layer); the artifact type is [`IN_TOTO`].
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Envelopes larger than this are refused before they are fetched (a closure of tens of
/// thousands of paths is a few MiB).
const ENVELOPE_LIMIT: u64 = 64 << 20;

/// Signs `statement` (an in-toto statement about `subject`) and stores the envelope as a
/// referrer of `subject` in `image`'s repository, and as cosign does, as a layer of the
/// manifest tagged `sha256-<hex>.att` (what `cosign verify-attestation`, policy-controller
/// and Kyverno read). The layer carries cosign's annotations: the statement's
/// `predicateType`, and an empty signature annotation (the signature is in the envelope).
pub fn attach_attestation(
    client: &Client,
    image: &Reference,
    subject: &Descriptor,
    statement: &[u8],
    signer: &dyn Signer,
) -> Result<ReferrerPush, Error> {
    let digest = blob_digest(subject.digest()).map_err(|e| Error::Format {
        what: format!("the attested manifest in {image}"),
        reason: e.to_string(),
    })?;
    let predicate_type = serde_json::from_slice::<serde_json::Value>(statement)
        .ok()
        .and_then(|v| v["predicateType"].as_str().map(str::to_owned))
        .ok_or_else(|| Error::Format {
            what: "the in-toto statement".into(),
            reason: "no predicateType".into(),
        })?;
    let envelope = dsse::sign(signer, IN_TOTO, statement)?;
    let blob = BytesBlob::new(serde_json::to_vec(&envelope).expect("an envelope serialises"));

    let tag = attestation_tag(&digest);
    let existing = tag_layers(client, image, &tag)?;
    let mut layer = descriptor_of(DSSE_ENVELOPE, &blob.bytes);
    let annotations = BTreeMap::from([
        (SIGNATURE_ANNOTATION.to_owned(), String::new()),
        ("predicateType".to_owned(), predicate_type),
    ]);
    layer.set_annotations(annotation_map(&annotations));
    append_to_tag(client, image, &tag, existing, &blob, &layer)?;

    Ok(client.push_referrer(image, subject, IN_TOTO, &blob, DSSE_ENVELOPE, &BTreeMap::new())?)
}

/// A verified attestation.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// The envelope's blob digest.
    pub envelope: Digest,
    /// Where it was found: `referrer sha256:…` or `sha256-<hex>.att layer N` (an envelope
    /// stored in both places is named once, by the first).
    pub source: String,
    pub predicate_type: String,
}

#[derive(Deserialize)]
struct Artifact {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: Digest,
    size: u64,
}

/// Checks every in-toto attestation of the manifest `image` names, stored as referrers
/// (nix-layer) or as layers of the `sha256-<hex>.att` tag (cosign, and nix-layer too):
/// each must be an envelope signed by `key` over a statement whose subject is that
/// manifest's digest. An envelope in both places is checked once. Succeeds with the
/// attestations when there is at least one and all verify.
pub fn verify_attestations(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
) -> Result<Vec<Attestation>, VerifyError> {
    let digest = client.get_manifest(image)?.digest;
    let mut found: Vec<(String, Layer)> = Vec::new();
    let mut rejections = Vec::new();
    for r in client.list_referrers(image, &digest, Some(IN_TOTO))? {
        let what = format!("referrer {}", r.digest());
        match referrer_envelope(client, image, r.digest()) {
            Ok(layer) => found.push((what, layer)),
            Err(Ok(why)) => rejections.push((what, why)),
            Err(Err(e)) => return Err(e.into()),
        }
    }
    let tag = attestation_tag(&digest);
    match client.get_manifest(&image.with_tag(&tag)?) {
        // Every envelope layer is one attestation; cosign writes nothing else there.
        Ok(m) => match serde_json::from_slice::<Artifact>(&m.bytes) {
            Ok(a) => found.extend(
                a.layers
                    .into_iter()
                    .enumerate()
                    .filter(|(_, l)| l.media_type == DSSE_ENVELOPE)
                    .map(|(i, l)| (format!("{tag} layer {i}"), l)),
            ),
            Err(e) => rejections.push((tag.clone(), Rejection::Garbled(format!("not a manifest: {e}")))),
        },
        Err(RegistryError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if found.is_empty() && rejections.is_empty() {
        return Err(VerifyError::NoAttestations { image: image.to_string(), digest, tag });
    }
    let mut good = Vec::new();
    let mut seen = HashSet::new();
    for (what, layer) in found {
        if !seen.insert(layer.digest) {
            continue;
        }
        match check(client, image, key, &digest, &layer) {
            Ok(predicate_type) => {
                good.push(Attestation { envelope: layer.digest, source: what, predicate_type })
            }
            Err(why) => rejections.push((what, why)),
        }
    }
    if !rejections.is_empty() {
        return Err(VerifyError::BadAttestations { image: image.to_string(), digest, rejections });
    }
    Ok(good)
}

/// The envelope layer of one attestation referrer, or why it is refused (or a registry
/// failure, which is not a verdict on the attestation).
fn referrer_envelope(
    client: &Client,
    image: &Reference,
    referrer: &oci_spec::image::Digest,
) -> Result<Layer, Result<Rejection, RegistryError>> {
    let garbled = |s: String| Ok(Rejection::Garbled(s));
    let referrer = blob_digest(referrer).map_err(|e| garbled(e.to_string()))?;
    let m = match client.get_manifest(&image.with_digest(referrer)) {
        Ok(m) => m,
        Err(RegistryError::NotFound { .. }) => return Err(garbled("listed but absent".into())),
        Err(e) => return Err(Err(e)),
    };
    let a: Artifact =
        serde_json::from_slice(&m.bytes).map_err(|e| garbled(format!("not a manifest: {e}")))?;
    a.layers.into_iter().next().ok_or_else(|| garbled("no envelope layer".into()))
}

/// One envelope: its statement's predicate type, or why it is refused.
fn check(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
    digest: &Digest,
    layer: &Layer,
) -> Result<String, Rejection> {
    let garbled = Rejection::Garbled;
    if layer.media_type != DSSE_ENVELOPE {
        return Err(garbled(format!("media type `{}`, not `{DSSE_ENVELOPE}`", layer.media_type)));
    }
    if layer.size > ENVELOPE_LIMIT {
        return Err(garbled(format!("a {}-byte envelope (the limit is {ENVELOPE_LIMIT})", layer.size)));
    }
    let mut bytes = Vec::new();
    client
        .fetch_blob_sized(image, &layer.digest, layer.size, &mut bytes)
        .map_err(|e| garbled(format!("the envelope blob: {e}")))?;
    let envelope: Envelope =
        serde_json::from_slice(&bytes).map_err(|e| garbled(format!("not a DSSE envelope: {e}")))?;
    let statement = dsse::open(&envelope, IN_TOTO, key).map_err(|why| {
        if why.starts_with("no signature") {
            Rejection::BadSignature
        } else {
            garbled(why)
        }
    })?;
    let named = subjects(&statement).map_err(garbled)?;
    if !named.iter().any(|h| *h == digest.hex()) {
        let signed = named.iter().map(|h| format!("sha256:{h}")).collect::<Vec<_>>().join(", ");
        return Err(Rejection::OtherDigest { signed });
    }
    let v: serde_json::Value = serde_json::from_slice(&statement).expect("parsed by subjects");
    Ok(v["predicateType"].as_str().unwrap_or_default().to_owned())
}

/// Checks that every referrer of the manifest `image` names whose artifact type is one of
/// `artifact_types` (the SBOMs) is itself signed by `key`; the verified referrers.
pub fn verify_referrers_signed(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
    artifact_types: &[&str],
) -> Result<Vec<crate::Verified>, VerifyError> {
    let digest = client.get_manifest(image)?.digest;
    let mut verified = Vec::new();
    for t in artifact_types {
        for r in client.list_referrers(image, &digest, Some(t))? {
            let referrer = blob_digest(r.digest()).map_err(|e| {
                VerifyError::from(RegistryError::Protocol {
                    registry: image.registry.clone(),
                    what: format!("a referrer of {image}"),
                    reason: e.to_string(),
                })
            })?;
            verified.push(crate::verify_image(client, &image.with_digest(referrer), key)?);
        }
    }
    Ok(verified)
}
