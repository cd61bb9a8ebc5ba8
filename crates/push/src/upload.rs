//! Sending an image's blobs and manifest: blobs the repository holds are skipped (HEAD),
//! blobs another repository of the registry holds are mounted (no bytes sent), the rest
//! are uploaded. Where to mount from comes from the [`BlobInfoRecord`] and from the
//! caller (the registry layer index's repository).

use std::collections::{BTreeMap, HashSet};

use nix_layer_blob::Digest;
use nix_layer_registry::{BlobReport, BlobSource, Client, ImageUpload, PushReport, Reference};

use crate::record::BlobInfoRecord;

/// Mount candidates tried per blob: each failed one costs a request (and a cancelled
/// upload session).
pub const MAX_MOUNT_CANDIDATES: usize = 3;

/// Where a push may mount blobs from and what it learns.
pub(crate) struct Mounts<'a> {
    pub record: &'a BlobInfoRecord,
    /// Repositories to try for every blob (after those the record names).
    pub also: Vec<String>,
}

impl Mounts<'_> {
    fn candidates(&self, target: &Reference, blob: &Digest) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for repo in
            self.record.repos_holding(&target.registry, blob).into_iter().chain(self.also.iter().cloned())
        {
            if repo != target.repository && !out.contains(&repo) {
                out.push(repo);
            }
        }
        out.truncate(MAX_MOUNT_CANDIDATES);
        out
    }

    /// Sends the blobs `target`'s repository lacks (`present`: a HEAD of this run found
    /// them), each mounted from a candidate if one holds it. Reports in the order given.
    pub fn push_blobs(
        &self,
        client: &Client,
        target: &Reference,
        blobs: &[&dyn BlobSource],
        present: &HashSet<Digest>,
    ) -> anyhow::Result<Vec<BlobReport>> {
        // Blobs with the same candidates go in one call, which runs them in parallel.
        let mut groups: BTreeMap<Vec<String>, Vec<&dyn BlobSource>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for b in blobs {
            if present.contains(&b.digest()) || !seen.insert(b.digest()) {
                continue;
            }
            groups.entry(self.candidates(target, &b.digest())).or_default().push(*b);
        }
        let mut reports: BTreeMap<Digest, BlobReport> = BTreeMap::new();
        for (from, group) in &groups {
            let from: Vec<&str> = from.iter().map(String::as_str).collect();
            for r in client.push_blobs(target, group, &from)? {
                reports.insert(r.digest, r);
            }
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for b in blobs {
            if !seen.insert(b.digest()) {
                continue;
            }
            self.record.add_location(&target.registry, &target.repository, &b.digest());
            out.push(reports.remove(&b.digest()).unwrap_or(BlobReport {
                digest: b.digest(),
                size: b.size(),
                outcome: nix_layer_registry::BlobOutcome::Present,
            }));
        }
        Ok(out)
    }

    /// [`Mounts::push_blobs`], then the manifest under `target`'s tag and `tags`.
    pub fn push_image(
        &self,
        client: &Client,
        target: &Reference,
        tags: &[&str],
        image: &ImageUpload,
        present: &HashSet<Digest>,
    ) -> anyhow::Result<PushReport> {
        let blobs = self.push_blobs(client, target, image.blobs, present)?;
        // Every blob is now confirmed (a HEAD after each upload or mount, or before).
        let all: HashSet<Digest> = blobs.iter().map(|b| b.digest).collect();
        let report = client.push_image_known(target, tags, image, &all)?;
        Ok(PushReport { blobs, ..report })
    }
}

/// A verified layer blob, read from the inode that was verified.
pub(crate) struct Verified<'a>(pub &'a nix_layer_blob::LayerBlob);

impl nix_layer_registry::BlobSource for Verified<'_> {
    fn digest(&self) -> nix_layer_blob::Digest {
        self.0.digest
    }
    fn size(&self) -> u64 {
        self.0.size
    }
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        Ok(Box::new(self.0.reader()))
    }
}
