//! Image lock files: what a registry image pinned by digest is made of, per platform.
//!
//! `nix-layer lock-image REF@sha256:… --platform linux/amd64` asks the registry once and
//! writes the chosen manifests (and the index they came from, if any) with each blob's
//! digest, size and media type. The file is committed beside a flake, and Nix's
//! `pullImage { lockFile = …; }` reads it at evaluation time: every manifest and blob
//! is then a fixed-output derivation named by its digest, with no import-from-derivation
//! (which `nix flake check`, `nix flake show` and Hydra refuse).
//!
//! Nothing in the lock is trusted more than the digests: the fetches check every byte
//! against them, and the layout is assembled only from blobs the fetched manifest names.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix_layer_blob::Digest;
use nix_layer_registry::{
    blob_digest, platform as make_platform, Client, Manifest, PlatformExt, Reference, DOCKER_MANIFEST,
    OCI_MANIFEST,
};
use oci_spec::image::{Descriptor, Platform};
use serde::{Deserialize, Serialize};

/// The lock format this crate writes and reads (`lockVersion`).
pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] nix_layer_registry::Error),
    #[error(
        "{reference} is a multi-platform index: name the platforms to lock with --platform \
         (it has: {available})"
    )]
    NeedPlatform { reference: String, available: String },
    #[error("{reference} has no image for {wanted}; it has: {available}")]
    NoPlatform { reference: String, wanted: String, available: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{action} {}: {cause}", path.display())]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },
}

/// One manifest or blob: what a fetch needs to get it and check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl TryFrom<&Descriptor> for Blob {
    type Error = nix_layer_blob::Error;

    fn try_from(d: &Descriptor) -> Result<Blob, Self::Error> {
        Ok(Blob { media_type: d.media_type().to_string(), digest: blob_digest(d.digest())?, size: d.size() })
    }
}

impl From<&Manifest> for Blob {
    fn from(m: &Manifest) -> Blob {
        Blob { media_type: m.media_type.clone(), digest: m.digest, size: m.bytes.len() as u64 }
    }
}

/// One platform's image manifest and the blobs it names, in its order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockedManifest {
    pub platform: Platform,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// A lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageLock {
    pub lock_version: u32,
    /// `registry/repository`: where the fetches ask.
    pub image_name: String,
    /// The digest that was locked: the index's, or the manifest's when there is no index.
    pub image_digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Blob>,
    /// In the order the platforms were asked for; one per distinct manifest.
    pub manifests: Vec<LockedManifest>,
}

/// The platform fields of an image config.
#[derive(Deserialize)]
struct ConfigPlatform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

fn invalid(what: impl Into<String>, reason: impl ToString) -> Error {
    Error::Invalid { what: what.into(), reason: reason.to_string() }
}

fn listed<'a>(platforms: impl Iterator<Item = &'a Platform>) -> String {
    let names: Vec<String> = platforms.map(Platform::name).collect();
    if names.is_empty() {
        "no platform".into()
    } else {
        names.join(", ")
    }
}

/// Asks the registry what `reference` (a tag or a digest) is made of for each of
/// `platforms`, in that order. An index needs at least one platform; a single image
/// manifest is locked for its own platform (read from its config), which must be among
/// `platforms` when any are given.
pub fn lock_image(client: &Client, reference: &str, platforms: &[Platform]) -> Result<ImageLock, Error> {
    let r = Reference::parse(reference)?;
    // get_manifest checks the bytes against a pinned digest.
    let top = client.get_manifest(&r)?;
    // Everything else is asked for by digest, so a tag that moves meanwhile changes nothing.
    let pinned = r.with_digest(top.digest);
    let image_name = format!("{}/{}", r.registry, r.repository);
    let mut manifests: Vec<LockedManifest> = Vec::new();
    let index = if top.is_index() {
        let doc = top.index().map_err(|e| invalid(format!("index {pinned}"), e))?;
        // Nested indexes are not images of a platform.
        let images: Vec<&Descriptor> = doc
            .manifests()
            .iter()
            .filter(|d| is_image_manifest(d.media_type().as_ref()) && d.platform().is_some())
            .collect();
        let available = || listed(images.iter().filter_map(|d| d.platform().as_ref()));
        if platforms.is_empty() {
            return Err(Error::NeedPlatform { reference: pinned.to_string(), available: available() });
        }
        for wanted in platforms {
            let Some(chosen) =
                images.iter().find(|d| d.platform().as_ref().is_some_and(|p| wanted.matches(p)))
            else {
                return Err(Error::NoPlatform {
                    reference: pinned.to_string(),
                    wanted: wanted.name(),
                    available: available(),
                });
            };
            let digest = blob_digest(chosen.digest()).map_err(|e| invalid(format!("index {pinned}"), e))?;
            if manifests.iter().any(|m| m.manifest.digest == digest) {
                continue;
            }
            let manifest = client.get_manifest(&pinned.with_digest(digest))?;
            let p = chosen.platform().as_ref().expect("filtered on platform");
            // Only what chooses an image goes in the lock: os, architecture, variant.
            let platform =
                make_platform(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref());
            manifests.push(lock_manifest(&pinned, &manifest, platform)?);
        }
        Some(Blob::from(&top))
    } else {
        let (config, _) = image_blobs(&top, &pinned)?;
        let mut bytes = Vec::new();
        client.fetch_blob(&pinned, &config.digest, &mut bytes)?;
        let p: ConfigPlatform =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the config of {pinned}"), e))?;
        let platform = make_platform(&p.os, &p.architecture, p.variant.as_deref());
        if let Some(wanted) = platforms.iter().find(|w| !w.matches(&platform)) {
            return Err(Error::NoPlatform {
                reference: pinned.to_string(),
                wanted: wanted.name(),
                available: format!("{} (a single image, not an index)", platform.name()),
            });
        }
        manifests.push(lock_manifest(&pinned, &top, platform)?);
        None
    };
    Ok(ImageLock { lock_version: LOCK_VERSION, image_name, image_digest: top.digest, index, manifests })
}

fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// The config and layers of an image manifest, as lock entries.
fn image_blobs(m: &Manifest, r: &Reference) -> Result<(Blob, Vec<Blob>), Error> {
    let what = || format!("manifest {} of {r}", m.digest);
    if !is_image_manifest(&m.media_type) {
        return Err(invalid(what(), format!("is {}, not an image manifest", m.media_type)));
    }
    let (config, layers) = m.blobs().map_err(|e| invalid(what(), e))?;
    let blob = |d: &Descriptor| Blob::try_from(d).map_err(|e| invalid(what(), e));
    Ok((blob(&config)?, layers.iter().map(blob).collect::<Result<_, _>>()?))
}

fn lock_manifest(r: &Reference, m: &Manifest, platform: Platform) -> Result<LockedManifest, Error> {
    let (config, layers) = image_blobs(m, r)?;
    Ok(LockedManifest { platform, manifest: Blob::from(m), config, layers })
}

impl ImageLock {
    /// The lock as written to its file: pretty JSON, fields in a fixed order, one trailing
    /// newline. The same registry content and platforms give the same bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a lock serialises") + "\n"
    }

    /// Parses a lock file's text, refusing another format version and unknown fields.
    pub fn from_json(text: &str, what: &str) -> Result<ImageLock, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            lock_version: Option<u32>,
        }
        let v: Version = serde_json::from_str(text).map_err(|e| invalid(what, e))?;
        if v.lock_version != Some(LOCK_VERSION) {
            return Err(invalid(
                what,
                format!(
                    "lockVersion {} is not {LOCK_VERSION}: write it again with this nix-layer's lock-image",
                    v.lock_version.map_or("(none)".into(), |n| n.to_string())
                ),
            ));
        }
        serde_json::from_str(text).map_err(|e| invalid(what, e))
    }

    /// The locked manifest that serves `wanted` (the same matching as an index's).
    pub fn manifest_for(&self, wanted: &Platform) -> Result<&LockedManifest, Error> {
        self.manifests.iter().find(|m| wanted.matches(&m.platform)).ok_or_else(|| Error::NoPlatform {
            reference: format!("the lock of {}@{}", self.image_name, self.image_digest),
            wanted: wanted.name(),
            available: listed(self.manifests.iter().map(|m| &m.platform)),
        })
    }

    /// Writes the lock to `path` through a file beside it, renamed into place once
    /// complete: an interrupted write leaves the previous lock (or nothing).
    pub fn write_to(&self, path: &Path) -> Result<(), Error> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let io = |action| move |cause| Error::Io { action, path: path.to_owned(), cause };
        // A committed file: readable by others as the umask allows.
        let mut tmp = nix_layer_scratch::ScratchFile::with_mode_in(dir, ".lock-", 0o644)
            .map_err(|cause| Error::Io { action: "cannot create a file in", path: dir.to_owned(), cause })?;
        tmp.write_all(self.to_json().as_bytes()).map_err(io("cannot write"))?;
        tmp.file().sync_all().map_err(io("cannot write"))?;
        tmp.persist(path).map_err(|e| e.source).map_err(io("cannot write"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
