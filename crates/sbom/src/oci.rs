//! The SBOM as an OCI 1.1 artifact: an image manifest whose `artifactType`
//! is the document's media type, whose one layer is the document, whose
//! config is the empty descriptor, and whose `subject` is the image
//! manifest. Registries with the referrers API list it for the image; in an
//! OCI layout it goes in the index next to the image.
//!
//! [`referrer`] is the one place this manifest is made: `build --sbom` stores it in a
//! layout and `push --sbom` sends the same bytes, so one SBOM has one referrer digest.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};

use nix_layer_blob::descriptor_of;

use crate::{check_digest, Error, Format, SbomTime};

/// Media type of an OCI image manifest, the referrer's and usually the subject's.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The empty config of an artifact, `{}` (image-spec 1.1).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// An SBOM referrer, ready to store or push: write (push) every blob, then the manifest
/// bytes, exactly as they are.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The manifest, typed.
    pub manifest: ImageManifest,
    /// Its bytes, exactly as they are to be stored and pushed (their digest is the
    /// referrer's identity).
    pub bytes: Vec<u8>,
    /// The manifest's descriptor, with its `artifactType` (for an index entry or a
    /// referrers listing).
    pub descriptor: Descriptor,
    /// The empty config and the document, with their descriptors.
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
}

/// The referrer manifest of `document` (in `format`) for the image manifest `subject`:
/// artifact type and layer media type the format's, the empty config (inline as
/// `e30=`), the layer titled `sbom.cdx.json` / `sbom.spdx.json`, and `created` (the
/// image's time) as its only annotation, so the same inputs give the same bytes. Only
/// the subject's media type, digest and size are kept.
pub fn referrer(
    format: Format,
    document: &[u8],
    subject: &Descriptor,
    created: &SbomTime,
) -> Result<Referrer, Error> {
    check_digest(subject.digest().as_ref())?;
    let subject = Descriptor::new(subject.media_type().clone(), subject.size(), subject.digest().clone());
    let mut config = descriptor_of(EMPTY_MEDIA_TYPE, EMPTY);
    config.set_data(Some("e30=".to_owned()));
    let mut layer = descriptor_of(format.media_type(), document);
    layer.set_annotations(Some(HashMap::from([(
        "org.opencontainers.image.title".to_owned(),
        format!("sbom{}", format.file_suffix()),
    )])));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(format.media_type()))
        .config(config.clone())
        .layers(vec![layer.clone()])
        .subject(subject)
        .annotations(HashMap::from([(
            "org.opencontainers.image.created".to_owned(),
            created.as_str().to_owned(),
        )]))
        .build()
        .expect("every required manifest field is set");
    // One annotation per map: the bytes do not depend on a map's order.
    let bytes = serde_json::to_vec(&manifest).expect("manifests serialise");
    let mut descriptor = descriptor_of(OCI_MANIFEST_MEDIA_TYPE, &bytes);
    descriptor.set_artifact_type(Some(MediaType::from(format.media_type())));
    Ok(Referrer {
        manifest,
        bytes,
        descriptor,
        blobs: vec![(config, EMPTY.to_vec()), (layer, document.to_vec())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{graph, image};
    use crate::Sbom;

    #[test]
    fn referrer_manifest_is_an_oci_artifact_of_the_image() {
        let g = graph();
        let doc = Sbom::new(&g, None, image()).unwrap().to_bytes(Format::CycloneDx);
        let mut subject = descriptor_of(OCI_MANIFEST_MEDIA_TYPE, b"{\"schemaVersion\":2}");
        subject.set_annotations(Some(HashMap::from([("a".to_owned(), "b".to_owned())])));
        let r = referrer(Format::CycloneDx, &doc, &subject, &image().created).unwrap();
        let m: ImageManifest = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(m, r.manifest);
        assert_eq!(m.artifact_type().as_ref().unwrap().to_string(), "application/vnd.cyclonedx+json");
        let s = m.subject().as_ref().unwrap();
        assert_eq!((s.digest(), s.size()), (subject.digest(), subject.size()));
        assert!(s.annotations().is_none(), "only what identifies the subject");
        assert_eq!(m.config().media_type().to_string(), EMPTY_MEDIA_TYPE);
        // sha256("{}"), the digest image-spec gives for the empty descriptor.
        assert_eq!(
            m.config().digest().to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(m.config().data().as_deref(), Some("e30="));
        assert_eq!(m.layers().len(), 1);
        assert_eq!(m.layers()[0].digest().to_string(), nix_layer_blob::Digest::of(&doc).to_string());
        assert_eq!(m.layers()[0].size(), doc.len() as u64);
        let d = descriptor_of(OCI_MANIFEST_MEDIA_TYPE, &r.bytes);
        assert_eq!((r.descriptor.digest(), r.descriptor.size()), (d.digest(), d.size()));
        assert_eq!(
            r.descriptor.artifact_type().as_ref().unwrap().to_string(),
            Format::CycloneDx.media_type()
        );
        assert_eq!(r.blobs.len(), 2);
        for (d, bytes) in &r.blobs {
            assert_eq!(d.digest(), descriptor_of("x", bytes).digest());
        }
        // Same inputs, same bytes.
        assert_eq!(referrer(Format::CycloneDx, &doc, &subject, &image().created).unwrap().bytes, r.bytes);
    }
}
