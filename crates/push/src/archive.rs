//! The image of a docker-archive: its config kept byte for byte, its layers verified
//! against the config's diff_ids as they are read and gzipped for the registry.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use nix_layer_blob::Compression;
use nix_layer_registry::{BlobSource, BytesBlob, Client, ImageUpload, Reference};

use crate::record::BlobInfoRecord;
use crate::upload::{Mounts, Verified};
use crate::{save_record, PushOutcome};

/// Pushes the image named `name` (one of its `RepoTags`) of the docker-archive `file`, or
/// its only image: an archive of several images needs a name.
pub fn push_archive(
    client: &Client,
    record: &BlobInfoRecord,
    file: &Path,
    name: Option<&str>,
    destination: &Reference,
    tags: &[&str],
) -> Result<PushOutcome> {
    let base = nix_layer_image::BaseImage::open_docker_archive_image(file, name)?;
    let scratch = nix_layer_scratch::ScratchDir::new_in(&std::env::temp_dir(), "nix-layer-push-")
        .context("cannot create a scratch directory")?;
    let mut blobs = Vec::new();
    for i in 0..base.layers.len() {
        let raw = base.materialize_layer(i, scratch.path(), true)?;
        let gz = nix_layer_blob::write_blob(scratch.path(), Compression::Gzip, |w| {
            std::io::copy(&mut raw.reader(), w).map(drop)
        })?;
        blobs.push(gz);
    }
    let repo = format!("{}/{}", destination.registry, destination.repository);
    let reference = nix_layer_image::ImageRef::new(&repo, destination.tag.as_deref().unwrap_or("latest"))?;
    let infos = blobs.iter().map(|b| b.info().clone()).collect();
    let image =
        nix_layer_image::Image::from_config(reference, base.config_bytes.clone(), infos, &BTreeMap::new())?;
    let config = BytesBlob::new(image.config().bytes().to_vec());
    let verified: Vec<Verified> = blobs.iter().map(Verified).collect();
    let mut sources: Vec<&dyn BlobSource> = vec![&config];
    sources.extend(verified.iter().map(|v| v as &dyn BlobSource));
    let upload = ImageUpload {
        blobs: &sources,
        manifest: image.manifest().bytes(),
        media_type: image.manifest().media_type(),
        mount_from: &[],
    };
    let mounts = Mounts { record, also: Vec::new() };
    let report = mounts.push_image(client, destination, tags, &upload, &HashSet::new())?;
    let mut warnings = Vec::new();
    save_record(record, &mut warnings);
    Ok(PushOutcome { report, not_built: 0, index: Default::default(), warnings })
}
