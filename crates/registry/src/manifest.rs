//! The few manifest shapes the client must read: descriptors, indexes and platforms.

use std::collections::BTreeMap;

use nix_layer_blob::Digest;
use serde::{Deserialize, Serialize};

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

/// An OCI content descriptor (the fields this crate writes and reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `bytes` with no optional fields.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// `os/architecture[/variant]`, as in image indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this program runs on, in OCI's names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_owned(),
            os: "linux".to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let (os, arch) = (it.next()?, it.next()?);
        let variant = it.next().map(str::to_owned);
        if os.is_empty() || arch.is_empty() || it.next().is_some() {
            return None;
        }
        Some(Platform { architecture: arch.to_owned(), os: os.to_owned(), variant })
    }

    /// Whether an index entry for `other` serves this platform. A wanted variant must match,
    /// except that arm64's default `v8` equals no variant.
    pub fn matches(&self, other: &Platform) -> bool {
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_owned),
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || norm(self) == norm(other))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image index or manifest list: only the parts needed to choose a platform.
#[derive(Debug, Deserialize)]
pub(crate) struct IndexDoc {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// The blobs an image manifest points at.
#[derive(Debug, Deserialize)]
pub(crate) struct ManifestDoc {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A manifest (or index) as fetched: the exact bytes, their media type and digest.
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

    /// The config and layer descriptors of an image manifest (not an index).
    pub fn blobs(&self) -> Result<(Descriptor, Vec<Descriptor>), serde_json::Error> {
        let doc: ManifestDoc = serde_json::from_slice(&self.bytes)?;
        Ok((doc.config, doc.layers))
    }
}

/// The `{}` config of artifacts that have none.
pub(crate) const EMPTY_JSON: &[u8] = b"{}";

/// An OCI image manifest for an artifact: an empty config, the payload blobs, and an
/// optional `subject` (which makes it a referrer of that manifest). Fields in spec order.
pub(crate) fn artifact_manifest(
    artifact_type: &str,
    blobs: &[Descriptor],
    subject: Option<&Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ArtifactManifest<'a> {
        schema_version: u32,
        media_type: &'a str,
        artifact_type: &'a str,
        config: Descriptor,
        layers: &'a [Descriptor],
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<&'a Descriptor>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        annotations: &'a BTreeMap<String, String>,
    }
    let m = ArtifactManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        artifact_type,
        config: Descriptor::of(OCI_EMPTY, EMPTY_JSON),
        layers: blobs,
        subject,
        annotations,
    };
    serde_json::to_vec(&m).expect("serialising a manifest cannot fail")
}

/// An OCI image index listing `manifests` (the referrers tag schema's document).
pub(crate) fn index_bytes(manifests: &[Descriptor]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'a str,
        manifests: &'a [Descriptor],
    }
    serde_json::to_vec(&Index { schema_version: 2, media_type: OCI_INDEX, manifests })
        .expect("serialising an index cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_matching() {
        let p = |s| Platform::parse(s).unwrap();
        assert!(p("linux/amd64").matches(&p("linux/amd64")));
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(!p("windows/amd64").matches(&p("linux/amd64")));
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        assert!(Platform::parse("linux").is_none() && Platform::parse("a/b/c/d").is_none());
    }
}
