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

use crate::attach::{append_to_tag, attestation_tag, tag_layers};
use crate::dsse::{self, Envelope, IN_TOTO};
use crate::keys::PublicKey;
use crate::provenance::subjects;
use crate::signer::{Signer, SIGNATURE_ANNOTATION};
use crate::verify::{expect_media_type, fetch_layer, referrer_manifest, Rejection, VerifyError};
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
    let mut found: Vec<(String, Descriptor)> = Vec::new();
    let mut rejections = Vec::new();
    for r in client.list_referrers(image, &digest, Some(IN_TOTO))? {
        let what = format!("referrer {}", r.digest());
        match referrer_manifest(client, image, r.digest()) {
            Ok(m) => match m.layers().first() {
                Some(layer) => found.push((what, layer.clone())),
                None => rejections.push((what, Rejection::Garbled("no envelope layer".into()))),
            },
            Err(Ok(why)) => rejections.push((what, why)),
            Err(Err(e)) => return Err(e.into()),
        }
    }
    let tag = attestation_tag(&digest);
    match client.get_manifest(&image.with_tag(&tag)?) {
        // Every envelope layer is one attestation; cosign writes nothing else there.
        Ok(m) => match m.image() {
            Ok(a) => found.extend(
                a.layers()
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.media_type().as_ref() == DSSE_ENVELOPE)
                    .map(|(i, l)| (format!("{tag} layer {i}"), l.clone())),
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
        if !seen.insert(layer.digest().to_string()) {
            continue;
        }
        match check(client, image, key, &digest, &layer) {
            Ok((envelope, predicate_type)) => {
                good.push(Attestation { envelope, source: what, predicate_type })
            }
            Err(why) => rejections.push((what, why)),
        }
    }
    if !rejections.is_empty() {
        return Err(VerifyError::BadAttestations { image: image.to_string(), digest, rejections });
    }
    Ok(good)
}

/// One envelope: its digest and its statement's predicate type, or why it is refused.
fn check(
    client: &Client,
    image: &Reference,
    key: &PublicKey,
    digest: &Digest,
    layer: &Descriptor,
) -> Result<(Digest, String), Rejection> {
    let garbled = Rejection::Garbled;
    expect_media_type(layer, DSSE_ENVELOPE)?;
    let bytes = fetch_layer(client, image, layer, "envelope", ENVELOPE_LIMIT)?;
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
    Ok((Digest::of(&bytes), v["predicateType"].as_str().unwrap_or_default().to_owned()))
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
