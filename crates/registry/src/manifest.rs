//! The OCI documents the client reads and writes, as oci-spec types: what a fetched
//! document is ([`Manifest`]), how a platform is chosen ([`PlatformExt`]), and the exact
//! bytes of the artifact manifests and referrers indexes this crate writes.

use std::collections::{BTreeMap, HashMap};

use nix_layer_blob::Digest;
use oci_spec::image::{
    Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Platform,
    PlatformBuilder,
};
use serde::Serialize;
use serde_json::Value;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The empty JSON blob `{}` that artifacts without a config point at.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Every manifest type the client accepts, for `Accept`.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub use nix_layer_blob::{blob_digest, descriptor, descriptor_of, oci_digest};

/// Platform matching and naming on oci-spec's [`Platform`].
pub trait PlatformExt: Sized {
    /// The platform this program runs on, in OCI's names.
    fn host() -> Self;
    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    fn parse(s: &str) -> Option<Self>;
    /// Whether an index entry for `other` serves this platform. A wanted variant must match,
    /// except that arm64's default `v8` equals no variant.
    fn matches(&self, other: &Self) -> bool;
    /// `os/arch[/variant]`.
    fn name(&self) -> String;
}

/// A platform of `os`, `architecture` and an optional `variant`.
pub fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
    let b = PlatformBuilder::default().os(os).architecture(architecture);
    match variant {
        Some(v) => b.variant(v),
        None => b,
    }
    .build()
    .expect("os and architecture are set")
}

impl PlatformExt for Platform {
    fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        platform("linux", architecture, variant)
    }

    fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let (os, arch) = (it.next()?, it.next()?);
        let variant = it.next();
        if os.is_empty() || arch.is_empty() || it.next().is_some() {
            return None;
        }
        Some(platform(os, arch, variant))
    }

    fn matches(&self, other: &Platform) -> bool {
        let norm = |p: &Platform| match (p.architecture().to_string().as_str(), p.variant().as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_owned),
        };
        self.os() == other.os()
            && self.architecture() == other.architecture()
            && (self.variant().is_none() || norm(self) == norm(other))
    }

    fn name(&self) -> String {
        let mut s = format!("{}/{}", self.os(), self.architecture());
        if let Some(v) = self.variant() {
            s.push('/');
            s.push_str(v);
        }
        s
    }
}

/// A manifest (or index) as fetched: the exact bytes, their media type and digest. Not an
/// OCI type but a document in transit; [`Manifest::image`], [`Manifest::blobs`] and [`Manifest::index`] read it
/// as oci-spec types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }

    /// The document as an image manifest (not an index).
    pub fn image(&self) -> Result<ImageManifest, serde_json::Error> {
        serde_json::from_slice(&self.bytes)
    }

    /// The config and layer descriptors of an image manifest (not an index).
    pub fn blobs(&self) -> Result<(Descriptor, Vec<Descriptor>), serde_json::Error> {
        let doc = self.image()?;
        Ok((doc.config().clone(), doc.layers().clone()))
    }

    /// The document as an image index (or Docker manifest list).
    pub fn index(&self) -> Result<ImageIndex, serde_json::Error> {
        serde_json::from_slice(&self.bytes)
    }

    /// This document's descriptor: its media type, digest and size.
    pub fn descriptor(&self) -> Descriptor {
        descriptor(&self.media_type, &self.digest, self.bytes.len() as u64)
    }
}

/// The `{}` config of artifacts that have none.
pub(crate) const EMPTY_JSON: &[u8] = b"{}";

/// The position of a key in the documents this crate writes: image-spec's field order;
/// other keys (annotation names) follow, sorted.
fn key_rank(key: &str) -> usize {
    const ORDER: &[&str] = &[
        "schemaVersion",
        "mediaType",
        "digest",
        "size",
        "artifactType",
        "config",
        "layers",
        "manifests",
        "subject",
        "platform",
        "architecture",
        "os",
        "variant",
        "annotations",
    ];
    ORDER.iter().position(|k| *k == key).unwrap_or(ORDER.len())
}

fn write_ordered(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // serde_json's map is sorted by key, so the sort is stable among unranked keys.
            entries.sort_by_key(|(k, _)| key_rank(k));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec cannot fail");
                out.push(b':');
                write_ordered(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_ordered(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec cannot fail"),
    }
}

/// The bytes of an OCI document this crate writes: compact JSON in image-spec's field
/// order, with map entries (annotations) sorted, so the same document always has the same
/// digest (oci-spec keeps annotations in a `HashMap`, whose order varies between runs).
pub fn document_bytes(doc: &impl Serialize) -> Vec<u8> {
    let value = serde_json::to_value(doc).expect("an OCI document serialises");
    let mut out = Vec::new();
    write_ordered(&value, &mut out);
    out
}

/// `annotations` as a descriptor's or manifest's annotation map (none when empty).
pub fn annotations(annotations: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!annotations.is_empty()).then(|| annotations.clone().into_iter().collect())
}

/// An OCI image manifest for an artifact: an empty config, the payload blobs, and an
/// optional `subject` (which makes it a referrer of that manifest).
pub(crate) fn artifact_manifest(
    artifact_type: &str,
    blobs: &[Descriptor],
    subject: Option<&Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut b = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(artifact_type))
        .config(descriptor_of(OCI_EMPTY, EMPTY_JSON))
        .layers(blobs.to_vec());
    if let Some(s) = subject {
        b = b.subject(s.clone());
    }
    if let Some(a) = self::annotations(annotations) {
        b = b.annotations(a);
    }
    document_bytes(&b.build().expect("every required manifest field is set"))
}

/// An OCI image index listing `manifests` (the referrers tag schema's document).
pub(crate) fn index_bytes(manifests: &[Descriptor]) -> Vec<u8> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests.to_vec())
        .build()
        .expect("every required index field is set");
    document_bytes(&index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_matching() {
        let p = |s| <Platform as PlatformExt>::parse(s).unwrap();
        assert!(p("linux/amd64").matches(&p("linux/amd64")));
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(!p("windows/amd64").matches(&p("linux/amd64")));
        assert_eq!(p("linux/arm/v7").name(), "linux/arm/v7");
        assert!(<Platform as PlatformExt>::parse("linux").is_none());
        assert!(<Platform as PlatformExt>::parse("a/b/c/d").is_none());
    }

    /// The bytes are those of the hand-ordered serialiser this replaced: spec field order,
    /// annotations sorted, whatever order a `HashMap` iterates in.
    #[test]
    fn artifact_manifest_bytes_are_fixed() {
        let notes: BTreeMap<String, String> = (0..8).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        let mut layer = descriptor_of("application/x-payload", b"payload");
        layer.set_annotations(annotations(&notes));
        let subject = descriptor_of(OCI_MANIFEST, b"{}");
        let bytes = artifact_manifest("application/x-art", &[layer], Some(&subject), &notes);
        let text = String::from_utf8(bytes).unwrap();
        let empty = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let payload = Digest::of(b"payload");
        let notes_json = "{\"k0\":\"v0\",\"k1\":\"v1\",\"k2\":\"v2\",\"k3\":\"v3\",\"k4\":\"v4\",\"k5\":\"v5\",\"k6\":\"v6\",\"k7\":\"v7\"}";
        assert_eq!(
            text,
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"application/x-art\",\
                 \"config\":{{\"mediaType\":\"{OCI_EMPTY}\",\"digest\":\"{empty}\",\"size\":2}},\
                 \"layers\":[{{\"mediaType\":\"application/x-payload\",\"digest\":\"{payload}\",\"size\":7,\
                 \"annotations\":{notes_json}}}],\
                 \"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{empty}\",\"size\":2}},\
                 \"annotations\":{notes_json}}}"
            )
        );
        let mut entry = descriptor_of(OCI_MANIFEST, b"{}");
        entry.set_artifact_type(Some(MediaType::from("application/x-art")));
        entry.set_platform(Some(platform("linux", "arm64", Some("v8"))));
        entry.set_annotations(annotations(&notes));
        assert_eq!(
            String::from_utf8(index_bytes(&[entry])).unwrap(),
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\
                 \"digest\":\"{empty}\",\"size\":2,\"artifactType\":\"application/x-art\",\
                 \"platform\":{{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}},\
                 \"annotations\":{notes_json}}}]}}"
            )
        );
    }
}
