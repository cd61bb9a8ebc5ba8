//! Referrers (an SBOM attached to an image): an artifact manifest whose `subject` is the
//! image, found through the registry's referrers API, or, where the registry has none,
//! through the referrers tag schema (an index tagged `sha256-<hex>`), as the OCI
//! distribution spec 1.1 prescribes for clients.

use std::collections::BTreeMap;

use nix_layer_blob::Digest;

use crate::client::{pull_scope, BytesBlob, ReqBody};
use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use crate::manifest::{
    annotations as annotation_map, artifact_manifest, blob_digest, descriptor, index_bytes, EMPTY_JSON,
    OCI_INDEX, OCI_MANIFEST,
};
use crate::{BlobSource, Client, Error, Reference};

/// How the referrer can be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferrersVia {
    /// The registry indexes `subject`s itself (`GET /v2/<repo>/referrers/<digest>`).
    Api,
    /// The registry lacks the API; the `sha256-<hex>` tag's index lists the referrer.
    TagSchema,
}

#[derive(Clone, Debug)]
pub struct ReferrerPush {
    /// The artifact manifest's descriptor (with its `artifactType`).
    pub manifest: Descriptor,
    pub via: ReferrersVia,
}

fn tag_schema_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

impl Client {
    /// Pushes `payload` (of `payload_media_type`) as an artifact of `artifact_type` that
    /// refers to the manifest `subject` in `repo`.
    pub fn push_referrer(
        &self,
        repo: &Reference,
        subject: &Descriptor,
        artifact_type: &str,
        payload: &dyn BlobSource,
        payload_media_type: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<ReferrerPush, Error> {
        let config = BytesBlob::new(EMPTY_JSON.to_vec());
        self.push_blobs(repo, &[&config, payload], &[])?;
        let artifact_of = subject;
        let layer = descriptor(payload_media_type, &payload.digest(), payload.size());
        let subject_digest = blob_digest(subject.digest()).map_err(|e| Error::Protocol {
            registry: repo.registry.clone(),
            what: "the referrer's subject".into(),
            reason: e.to_string(),
        })?;
        // The subject's identity and artifact type only: no annotations, platform, urls, data.
        let mut subject = descriptor(subject.media_type().as_ref(), &subject_digest, subject.size());
        subject.set_artifact_type(artifact_of.artifact_type().clone());
        let bytes = artifact_manifest(artifact_type, &[layer], Some(&subject), annotations);
        self.push_referrer_manifest(repo, &subject_digest, &bytes, artifact_type, annotations)
    }

    /// Pushes referrer manifest `bytes` exactly as given (an artifact of `artifact_type`
    /// whose `subject` is `subject`; its blobs already pushed) by digest, and lists it in
    /// the referrers tag schema where the registry has no referrers API. The one way both
    /// [`Client::push_referrer`] and callers holding ready-made manifests (an SBOM written
    /// byte for byte as `build --sbom` writes it) attach a referrer.
    pub fn push_referrer_manifest(
        &self,
        repo: &Reference,
        subject: &Digest,
        bytes: &[u8],
        artifact_type: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<ReferrerPush, Error> {
        let (digest, oci_subject) =
            self.put_manifest(repo, &Digest::of(bytes).to_string(), bytes, OCI_MANIFEST)?;
        let mut manifest = descriptor(OCI_MANIFEST, &digest, bytes.len() as u64);
        manifest.set_artifact_type(Some(MediaType::from(artifact_type)));
        manifest.set_annotations(annotation_map(annotations));
        if oci_subject.is_some() || self.referrers_api(repo, subject)?.is_some() {
            return Ok(ReferrerPush { manifest, via: ReferrersVia::Api });
        }
        let mut listed = self.tag_schema_index(repo, subject)?;
        if !listed.iter().any(|d| blob_digest(d.digest()).ok() == Some(digest)) {
            listed.push(manifest.clone());
            self.push_manifest(repo, &[&tag_schema_tag(subject)], &index_bytes(&listed), OCI_INDEX)?;
        }
        Ok(ReferrerPush { manifest, via: ReferrersVia::TagSchema })
    }

    /// The referrers of `subject` in `repo` (optionally only of `artifact_type`), from the
    /// API or the tag schema.
    pub fn list_referrers(
        &self,
        repo: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, Error> {
        let all = match self.referrers_api(repo, subject)? {
            Some(list) => list,
            None => self.tag_schema_index(repo, subject)?,
        };
        Ok(all
            .into_iter()
            .filter(|d| {
                artifact_type.is_none_or(|t| d.artifact_type().as_ref().is_some_and(|a| a.to_string() == t))
            })
            .collect())
    }

    /// `Some(referrers)` if the registry serves the referrers API, `None` if not.
    fn referrers_api(&self, repo: &Reference, subject: &Digest) -> Result<Option<Vec<Descriptor>>, Error> {
        let req = self.req("GET", repo, &format!("referrers/{subject}"), pull_scope(&repo.repository));
        let resp = self.send(&req, ReqBody::Empty)?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => return Err(self.status_error(&req, "the referrers query", resp)),
            _ => return Ok(None),
        }
        let body = self.body_reader(&req, resp, 4 << 20).read_all();
        let doc = body.ok().and_then(|b| serde_json::from_slice::<ImageIndex>(&b).ok());
        // A 200 that is not an index is not the referrers API (some servers answer any path).
        Ok(doc.map(|d| d.manifests().clone()))
    }

    fn tag_schema_index(&self, repo: &Reference, subject: &Digest) -> Result<Vec<Descriptor>, Error> {
        let at = repo.with_tag(&tag_schema_tag(subject))?;
        match self.get_manifest(&at) {
            Ok(m) => m.index().map(|d| d.manifests().clone()).map_err(|e| Error::Protocol {
                registry: repo.registry.clone(),
                what: format!("the referrers index {at}"),
                reason: e.to_string(),
            }),
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}
