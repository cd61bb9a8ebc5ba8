//! Pushing images to registries, as a library: an image built straight from its closure
//! ([`push_build`]), the image (or multi-platform index) of an OCI layout
//! ([`push_layout`]), the image of a docker-archive ([`push_archive`]), or a
//! multi-platform tag over images already pushed ([`push_platform_index`]).
//!
//! Every push sends only what the registry lacks: a blob the repository holds is skipped
//! (HEAD), one another repository of the registry holds is mounted, the rest is uploaded.
//! Mount candidates come from the [`BlobInfoRecord`] (which repositories this machine saw
//! holding a blob) and from the registry's layer index. That index ([`layer_index`]) also
//! lets a push skip compressing layers that went out before, but only once each entry is
//! verified against the layer built here.

pub mod layer_index;
pub mod record;

mod archive;
mod build;
mod layout;
mod upload;

pub use archive::push_archive;
pub use build::{push_build, BuildPush, CACHE_INDEX_ENTRIES};
pub use layer_index::IndexStats;
pub use layout::{push_layout, push_platform_index};
pub use record::{BlobInfoRecord, Proven, Tar};
pub use upload::MAX_MOUNT_CANDIDATES;

use nix_layer_blob::Digest;
use nix_layer_registry::{Client, PushReport, Reference};
use nix_layer_sign::{Signed, Signer};
use oci_spec::image::Descriptor;

/// What a push did.
#[derive(Debug)]
pub struct PushOutcome {
    pub report: PushReport,
    /// Store layers whose compression the verified registry layer index made unnecessary.
    pub not_built: usize,
    /// The layer index lookups (all zero for pushes that do not build).
    pub index: IndexStats,
    /// Things skipped that did not stop the push (a damaged layer index, a refused entry,
    /// a record that could not be saved), for the caller to show.
    pub warnings: Vec<String>,
}

impl PushOutcome {
    /// The one-line summary the CLI prints with `--verbose`.
    pub fn summary(&self, registry: &str, repository: &str) -> String {
        let r = &self.report;
        format!(
            "pushed {registry}/{repository}@{}: {} blobs uploaded ({} bytes), {} mounted, {} already there ({} layers not even built; {} blobs proven, {} bytes)",
            r.manifest_digest,
            r.uploaded(),
            r.bytes_uploaded(),
            r.mounted(),
            r.blobs.len() - r.uploaded() - r.mounted(),
            self.not_built,
            self.index.proven,
            self.index.proof_bytes,
        )
    }
}

/// Saves the record; a failure is only a warning (the push itself is done).
fn save_record(record: &BlobInfoRecord, warnings: &mut Vec<String>) {
    if let Err(e) = record.save() {
        let at = record.path().map(|p| p.display().to_string()).unwrap_or_default();
        warnings.push(format!("the blob-info record {at} could not be saved: {e}"));
    }
}

/// Signs what a push wrote: the manifest (or index, and each manifest it lists) by the
/// digest pushed, never by the tag (someone may have moved it since), under the
/// destination's name; and each referrer pushed with it (the SBOM).
pub fn sign_pushed(
    client: &Client,
    destination: &Reference,
    digest: &Digest,
    referrers: &[Descriptor],
    signer: &dyn Signer,
) -> anyhow::Result<Vec<Signed>> {
    use anyhow::Context as _;
    let mut pinned = destination.clone();
    pinned.digest = Some(*digest);
    let mut signed = nix_layer_sign::sign_image(client, &pinned, signer)
        .with_context(|| format!("pushed {destination}@{digest}, but could not sign it"))?;
    let identity = nix_layer_sign::docker_reference(destination);
    for r in referrers {
        signed.push(
            nix_layer_sign::sign_manifest(client, destination, &identity, r, signer).with_context(|| {
                format!("cannot sign the referrer {} of {destination}@{digest}", r.digest())
            })?,
        );
    }
    Ok(signed)
}
