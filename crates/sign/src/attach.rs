//! Storing signatures where cosign and containers/image look: the manifest tagged
//! `sha256-<hex>.sig` in the image's repository, one layer per signature (the payload, with
//! the signature in an annotation), plus an OCI 1.1 referrer of the signed manifest.
//! Attestations go the same way under `sha256-<hex>.att` ([`append_to_tag`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nix_layer_blob::Digest;
use nix_layer_registry::{
    annotations as annotation_map, blob_digest, descriptor_of, document_bytes, BlobSource, BytesBlob, Client,
    Error as RegistryError, Reference, ReferrersVia, OCI_MANIFEST,
};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde_json::json;

use crate::payload::{payload, SIMPLE_SIGNING};
use crate::signer::{Signer, SIGNATURE_ANNOTATION};
use crate::Error;

/// The artifact type of a signature stored as an OCI 1.1 referrer (cosign's).
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// The tag cosign stores the signatures of `digest` under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The tag cosign stores the attestations of `digest` under.
pub fn attestation_tag(digest: &Digest) -> String {
    format!("sha256-{}.att", digest.hex())
}

/// The identity a signature names: the repository, with the tag when signed by tag (as
/// containers/image writes it, so its default `matchRepoDigestOrExact` accepts a pull by
/// that tag and refuses the same manifest under another tag).
pub fn docker_reference(r: &Reference) -> String {
    match &r.tag {
        Some(t) => format!("{}/{}:{t}", r.registry, r.repository),
        None => format!("{}/{}", r.registry, r.repository),
    }
}

/// What signing one manifest did.
#[derive(Debug, Clone)]
pub struct Signed {
    pub digest: Digest,
    /// `false` when the signer's signature was already there.
    pub added: bool,
    /// How the OCI 1.1 referrer was stored (`None` when nothing new was added).
    pub referrer: Option<ReferrersVia>,
}

/// Signs the manifest `image` names (by tag or digest) and, if it is an index, each
/// manifest it lists. Existing signatures under each `.sig` tag are kept. A reference
/// with both a tag and a digest signs that digest under the tag's name: what a push
/// should pass, so a tag moved by someone else since is never what gets signed.
pub fn sign_image(client: &Client, image: &Reference, signer: &dyn Signer) -> Result<Vec<Signed>, Error> {
    let top = client.get_manifest(image)?;
    let identity = docker_reference(image);
    let mut subjects = vec![top.descriptor()];
    if top.is_index() {
        let index = top
            .index()
            .map_err(|e| Error::Format { what: format!("the index {image}"), reason: e.to_string() })?;
        subjects.extend(index.manifests().iter().cloned());
    }
    subjects.iter().map(|s| sign_manifest(client, image, &identity, s, signer)).collect()
}

/// Signs one manifest `subject` of `image`'s repository under `identity`.
pub fn sign_manifest(
    client: &Client,
    image: &Reference,
    identity: &str,
    subject: &Descriptor,
    signer: &dyn Signer,
) -> Result<Signed, Error> {
    let digest = blob_digest(subject.digest()).map_err(|e| Error::Format {
        what: format!("the manifest to sign in {image}"),
        reason: e.to_string(),
    })?;
    let payload = payload(identity, &digest);
    let tag = signature_tag(&digest);
    let existing = tag_layers(client, image, &tag)?;
    let payload_digest = Digest::of(&payload).to_string();
    let mine = existing.iter().any(|l| {
        l.digest().as_ref() == payload_digest
            && l.annotations()
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                .and_then(|s| B64.decode(s).ok())
                .is_some_and(|sig| signer.already_signed(&payload, &sig))
    });
    if mine {
        return Ok(Signed { digest, added: false, referrer: None });
    }
    let signature = signer.sign(&payload)?;
    let mut annotations = signature.annotations.clone();
    annotations.insert(SIGNATURE_ANNOTATION.to_owned(), B64.encode(&signature.signature));
    let blob = BytesBlob::new(payload);
    let mut layer = descriptor_of(SIMPLE_SIGNING, &blob.bytes);
    layer.set_annotations(annotation_map(&annotations));
    append_to_tag(client, image, &tag, existing, &blob, &layer)?;

    let referrer =
        client.push_referrer(image, subject, SIGNATURE_ARTIFACT_TYPE, &blob, SIMPLE_SIGNING, &annotations)?;
    Ok(Signed { digest, added: true, referrer: Some(referrer.via) })
}

/// The layers of the manifest under `tag` (cosign's `.sig` or `.att`), to be kept when one
/// is appended; none when the tag does not exist.
pub(crate) fn tag_layers(client: &Client, image: &Reference, tag: &str) -> Result<Vec<Descriptor>, Error> {
    let tagged = image.with_tag(tag)?;
    match client.get_manifest(&tagged) {
        Ok(m) => Ok(m
            .image()
            .map_err(|e| Error::Format { what: format!("the manifest {tagged}"), reason: e.to_string() })?
            .layers()
            .clone()),
        Err(RegistryError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Pushes `blob` and the manifest under `tag` holding the `existing` layers plus `layer`
/// (its descriptor), with an image config listing them, as cosign writes it (tools that
/// list a signature or attestation image expect one).
pub(crate) fn append_to_tag(
    client: &Client,
    image: &Reference,
    tag: &str,
    mut layers: Vec<Descriptor>,
    blob: &BytesBlob,
    layer: &Descriptor,
) -> Result<(), Error> {
    layers.push(layer.clone());
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest().to_string()).collect();
    // cosign's config: an image config with no platform (oci-spec's type has no empty os).
    let config = BytesBlob::new(document_bytes(&json!({
        "architecture": "",
        "config": {},
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })));
    client.push_blobs(image, &[&config as &dyn BlobSource, blob], &[])?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor_of(MediaType::ImageConfig.as_ref(), &config.bytes))
        .layers(layers)
        .build()
        .expect("every required manifest field is set");
    client.push_manifest(image, &[tag], &document_bytes(&manifest), OCI_MANIFEST)?;
    Ok(())
}
