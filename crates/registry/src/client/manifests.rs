//! Manifests: bounded, verified reads; writes by digest first, then tags; whole images.

use std::collections::HashSet;

use nix_layer_blob::Digest;
use serde::Deserialize;

use oci_spec::image::{Descriptor, Platform};

use crate::manifest::{blob_digest, descriptor, is_index, Manifest, PlatformExt, ACCEPT_MANIFESTS};
use crate::{Error, Reference};

use super::blobs::not_found;
use super::transport::{header, ReqBody};
use super::{pull_scope, push_scope, Client, ImageUpload, PushReport, ResolvedImage};

/// Manifests larger than this are refused (the OCI distribution spec's suggested limit).
const MANIFEST_LIMIT: u64 = 4 << 20;

impl Client {
    /// Fetches the manifest or index `r` names (by digest if pinned, else by tag), verifying
    /// its digest against the pin and against the registry's `Docker-Content-Digest`.
    pub fn get_manifest(&self, r: &Reference) -> Result<Manifest, Error> {
        let reference = r.manifest_reference();
        let mut req = self.req("GET", r, &format!("manifests/{reference}"), pull_scope(&r.repository));
        req.headers.push(("Accept", ACCEPT_MANIFESTS.into()));
        let resp = self.send(&req, ReqBody::Empty)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(not_found(r, format!("manifest {reference}"))),
            _ => return Err(self.status_error(&req, &format!("the manifest {reference}"), resp)),
        }
        let protocol = |reason: String| Error::Protocol {
            registry: r.registry.clone(),
            what: format!("GET {}", req.url),
            reason,
        };
        let header_digest = header(&resp, "Docker-Content-Digest");
        let content_type =
            header(&resp, "Content-Type").map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
        let bytes = self.body_reader(&req, resp, MANIFEST_LIMIT).read_all()?;
        let digest = Digest::of(&bytes);
        let what = || format!("manifest {reference} of {}/{}", r.registry, r.repository);
        if let Some(expected) = r.digest.filter(|d| *d != digest) {
            return Err(Error::DigestMismatch { what: what(), expected, actual: digest.to_string() });
        }
        if let Some(h) = header_digest.filter(|h| *h != digest.to_string()) {
            return Err(Error::DigestMismatch {
                what: format!("{} (the registry's digest)", what()),
                expected: digest,
                actual: h,
            });
        }
        #[derive(Deserialize)]
        struct MediaType {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
        }
        let embedded = serde_json::from_slice::<MediaType>(&bytes)
            .map_err(|e| protocol(format!("not JSON: {e}")))?
            .media_type;
        let media_type = embedded.or(content_type).ok_or_else(|| protocol("no media type".into()))?;
        Ok(Manifest { bytes, media_type, digest })
    }

    /// Fetches `r`; if it is an index, picks the manifest for `platform` and fetches that.
    pub fn resolve_image(&self, r: &Reference, platform: &Platform) -> Result<ResolvedImage, Error> {
        let top = self.get_manifest(r)?;
        if !top.is_index() {
            return Ok(ResolvedImage { index: None, manifest: top });
        }
        let index = top.index().map_err(|e| Error::Protocol {
            registry: r.registry.clone(),
            what: format!("index {r}"),
            reason: e.to_string(),
        })?;
        let chosen = index.manifests().iter().find(|d| {
            d.platform().as_ref().is_some_and(|p| platform.matches(p)) && !is_index(d.media_type().as_ref())
        });
        let Some(chosen) = chosen else {
            let available: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref().map(PlatformExt::name))
                .collect();
            return Err(Error::NoPlatform {
                reference: r.to_string(),
                wanted: platform.name(),
                available: available.join(", "),
            });
        };
        let chosen = blob_digest(chosen.digest()).map_err(|e| Error::Protocol {
            registry: r.registry.clone(),
            what: format!("index {r}"),
            reason: e.to_string(),
        })?;
        let manifest = self.get_manifest(&r.with_digest(chosen))?;
        Ok(ResolvedImage { index: Some(top), manifest })
    }

    /// PUTs manifest bytes unchanged under `reference` (a tag or the digest) and checks that
    /// the registry's digest is ours. Returns the digest and the `OCI-Subject` header.
    pub(crate) fn put_manifest(
        &self,
        repo: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(Digest, Option<String>), Error> {
        let digest = Digest::of(bytes);
        let mut req = self.req("PUT", repo, &format!("manifests/{reference}"), push_scope(&repo.repository));
        req.headers.push(("Content-Type", media_type.to_owned()));
        let resp = self.send(&req, ReqBody::Bytes(bytes))?;
        if !matches!(resp.status().as_u16(), 200 | 201) {
            return Err(self.status_error(&req, &format!("manifest {digest} as {reference}"), resp));
        }
        if let Some(theirs) = header(&resp, "Docker-Content-Digest").filter(|h| *h != digest.to_string()) {
            return Err(Error::DigestMismatch {
                what: format!(
                    "manifest pushed to {}/{}:{reference} (the registry's digest)",
                    repo.registry, repo.repository
                ),
                expected: digest,
                actual: theirs,
            });
        }
        Ok((digest, header(&resp, "OCI-Subject")))
    }

    /// Pushes a manifest (or index) whose blobs are already in `repo`: by digest first,
    /// checked against the registry's digest, and only then under each tag, so a digest the
    /// registry disputes moves no tag. Returns its digest.
    pub fn push_manifest(
        &self,
        repo: &Reference,
        tags: &[&str],
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, Error> {
        let digest = Digest::of(bytes);
        for tag in tags {
            repo.with_tag(tag)?;
        }
        self.put_manifest(repo, &digest.to_string(), bytes, media_type)?;
        for tag in tags {
            self.put_manifest(repo, tag, bytes, media_type)?;
        }
        Ok(digest)
    }

    /// Pushes an image: every blob the registry lacks (HEAD first, so a re-run after an
    /// interruption sends only the rest), each confirmed present, and only then the
    /// manifest bytes, under `target`'s tag and each of `tags` (by digest if none).
    /// A digest pinned in `target` must be the manifest's.
    pub fn push_image(
        &self,
        target: &Reference,
        tags: &[&str],
        image: &ImageUpload,
    ) -> Result<PushReport, Error> {
        self.push_image_known(target, tags, image, &HashSet::new())
    }

    /// [`Client::push_image`] when a HEAD of this same run already found some blobs in
    /// `target`'s repository at their size: those in `present` are reported present without
    /// another HEAD. Only a HEAD's answer belongs there, never a hint such as the layer
    /// cache index's entries; every other blob is checked (and uploaded) as usual.
    pub fn push_image_known(
        &self,
        target: &Reference,
        tags: &[&str],
        image: &ImageUpload,
        present: &HashSet<Digest>,
    ) -> Result<PushReport, Error> {
        let digest = Digest::of(image.manifest);
        if let Some(pinned) = target.digest.filter(|d| *d != digest) {
            return Err(Error::DigestMismatch {
                what: format!("manifest to push to {target}"),
                expected: pinned,
                actual: digest.to_string(),
            });
        }
        let mut all_tags: Vec<&str> = Vec::new();
        for t in target.tag.as_deref().into_iter().chain(tags.iter().copied()) {
            if !all_tags.contains(&t) {
                all_tags.push(t);
            }
        }
        for t in &all_tags {
            target.with_tag(t)?;
        }
        let blobs = self.push_blobs_known(target, image.blobs, image.mount_from, present)?;
        self.push_manifest(target, &all_tags, image.manifest, image.media_type)?;
        Ok(PushReport {
            manifest_digest: digest,
            blobs,
            tags: all_tags.iter().map(|t| t.to_string()).collect(),
        })
    }

    /// Pushes a multi-platform image: each platform's image by digest (its blobs first),
    /// then the index or manifest list bytes under `target`'s tag and `tags`. The report
    /// lists the blobs of all platforms.
    pub fn push_index(
        &self,
        target: &Reference,
        tags: &[&str],
        images: &[ImageUpload],
        index: &[u8],
        media_type: &str,
    ) -> Result<PushReport, Error> {
        let repo = target.with_repository(&target.repository)?;
        let mut blobs = Vec::new();
        for image in images {
            blobs.extend(self.push_image(&repo, &[], image)?.blobs);
        }
        let upload = ImageUpload { blobs: &[], manifest: index, media_type, mount_from: &[] };
        let report = self.push_image(target, tags, &upload)?;
        Ok(PushReport { blobs, ..report })
    }

    /// The descriptor of manifest `r` from a HEAD (`None` if absent): to resolve a tag to a
    /// digest without downloading.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<Descriptor>, Error> {
        let reference = r.manifest_reference();
        let mut req = self.req("HEAD", r, &format!("manifests/{reference}"), pull_scope(&r.repository));
        req.headers.push(("Accept", ACCEPT_MANIFESTS.into()));
        let resp = self.send(&req, ReqBody::Empty)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.status_error(&req, &format!("the manifest {reference}"), resp)),
        }
        let protocol = |reason: &str| Error::Protocol {
            registry: r.registry.clone(),
            what: format!("HEAD {}", req.url),
            reason: reason.into(),
        };
        let digest =
            header(&resp, "Docker-Content-Digest").ok_or_else(|| protocol("no Docker-Content-Digest"))?;
        let digest = digest.parse::<Digest>().map_err(|e| protocol(&e.to_string()))?;
        let size = header(&resp, "Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let media_type = header(&resp, "Content-Type").unwrap_or_default();
        Ok(Some(descriptor(&media_type, &digest, size)))
    }
}
