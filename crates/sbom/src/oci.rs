//! The SBOM as an OCI 1.1 artifact: an image manifest whose `artifactType`
//! is the document's media type, whose one layer is the document, whose
//! config is the empty descriptor, and whose `subject` is the image
//! manifest. Registries with the referrers API list it for the image; in an
//! OCI layout it goes in the index next to the image.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{check_digest, Error, Format, SbomTime};

/// Media type of an OCI image manifest, the referrer's and usually the subject's.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The empty config of an artifact, `{}` (image-spec 1.1).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// A content descriptor: what the subject and the blobs are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// The descriptor of `bytes` as `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            size: bytes.len() as u64,
        }
    }
}

/// An SBOM referrer, ready to store: write every blob (digest → bytes), then
/// the manifest; push the blobs, then the manifest.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The manifest's bytes, exactly as they are to be stored and pushed.
    pub manifest: Vec<u8>,
    /// Its descriptor (media type [`OCI_MANIFEST_MEDIA_TYPE`]).
    pub descriptor: Descriptor,
    /// The artifact type, for the index entry / referrers listing.
    pub artifact_type: &'static str,
    /// The empty config and the document, by digest.
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    artifact_type: &'static str,
    config: Config<'a>,
    layers: [Layer<'a>; 1],
    subject: &'a Descriptor,
    annotations: Annotations<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Config<'a> {
    #[serde(flatten)]
    descriptor: &'a Descriptor,
    /// The empty config inline (base64 of `{}`), as image-spec suggests.
    data: &'static str,
}

#[derive(Serialize)]
struct Layer<'a> {
    #[serde(flatten)]
    descriptor: &'a Descriptor,
    annotations: LayerAnnotations,
}

#[derive(Serialize)]
struct LayerAnnotations {
    #[serde(rename = "org.opencontainers.image.title")]
    title: String,
}

#[derive(Serialize)]
struct Annotations<'a> {
    #[serde(rename = "org.opencontainers.image.created")]
    created: &'a str,
}

/// The referrer manifest of `document` (in `format`) for the image manifest
/// `subject`. `created` is the image's time, so the bytes are deterministic.
pub fn referrer(
    format: Format,
    document: &[u8],
    subject: &Descriptor,
    created: &SbomTime,
) -> Result<Referrer, Error> {
    check_digest(&subject.digest)?;
    let config = Descriptor::of(EMPTY_MEDIA_TYPE, EMPTY);
    let layer = Descriptor::of(format.media_type(), document);
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST_MEDIA_TYPE,
        artifact_type: format.media_type(),
        config: Config { descriptor: &config, data: "e30=" },
        layers: [Layer {
            descriptor: &layer,
            annotations: LayerAnnotations { title: format!("sbom{}", format.file_suffix()) },
        }],
        subject,
        annotations: Annotations { created: created.as_str() },
    };
    let bytes = serde_json::to_vec(&manifest).expect("manifests serialise");
    Ok(Referrer {
        descriptor: Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &bytes),
        manifest: bytes,
        artifact_type: format.media_type(),
        blobs: vec![(config, EMPTY.to_vec()), (layer, document.to_vec())],
    })
}

#[cfg(test)]
mod tests {
    use oci_spec::image::ImageManifest;

    use super::*;
    use crate::tests::{graph, image};
    use crate::Sbom;

    #[test]
    fn referrer_manifest_is_an_oci_artifact_of_the_image() {
        let g = graph();
        let doc = Sbom::new(&g, None, image()).unwrap().to_bytes(Format::CycloneDx);
        let subject = Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, b"{\"schemaVersion\":2}");
        let r = referrer(Format::CycloneDx, &doc, &subject, &image().created).unwrap();
        let m: ImageManifest = serde_json::from_slice(&r.manifest).unwrap();
        assert_eq!(m.artifact_type().as_ref().unwrap().to_string(), "application/vnd.cyclonedx+json");
        assert_eq!(m.subject().as_ref().unwrap().digest().to_string(), subject.digest);
        assert_eq!(m.subject().as_ref().unwrap().size(), subject.size);
        assert_eq!(m.config().media_type().to_string(), EMPTY_MEDIA_TYPE);
        // sha256("{}"), the digest image-spec gives for the empty descriptor.
        assert_eq!(
            m.config().digest().to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(m.layers().len(), 1);
        assert_eq!(
            m.layers()[0].digest().to_string(),
            format!("sha256:{}", hex::encode(Sha256::digest(&doc)))
        );
        assert_eq!(m.layers()[0].size(), doc.len() as u64);
        assert_eq!(r.descriptor, Descriptor::of(OCI_MANIFEST_MEDIA_TYPE, &r.manifest));
        assert_eq!(r.blobs.len(), 2);
        for (d, bytes) in &r.blobs {
            assert_eq!(d, &Descriptor::of(&d.media_type, bytes));
        }
        // Same inputs, same bytes; a bad subject digest is refused.
        assert_eq!(
            referrer(Format::CycloneDx, &doc, &subject, &image().created).unwrap().manifest,
            r.manifest
        );
        let bad = Descriptor { digest: "sha256:zz".into(), ..subject };
        assert!(matches!(referrer(Format::Spdx, &doc, &bad, &image().created), Err(Error::BadDigest(_))));
    }
}
