//! The image (or multi-platform index) of an OCI layout, blobs sent as stored; and a
//! multi-platform tag over per-platform images already in a repository.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix_layer_blob::Digest;
use nix_layer_registry::{BlobSource, Client, FileBlob, ImageUpload, PushReport, Reference};

use crate::record::BlobInfoRecord;
use crate::upload::Mounts;
use crate::{save_record, PushOutcome};

/// Pushes the image named `name` of the OCI layout `dir` (its only image when `None`),
/// mounting blobs other repositories of the registry hold.
pub fn push_layout(
    client: &Client,
    record: &BlobInfoRecord,
    dir: &Path,
    name: Option<&str>,
    destination: &Reference,
    tags: &[&str],
) -> Result<PushOutcome> {
    let layout = nix_layer_image::OciLayout::open_existing(dir)?;
    let index = layout.read_index()?;
    let entry = match name {
        Some(n) => layout.find(n)?.with_context(|| format!("{} has no image named `{n}`", dir.display()))?,
        None => match index.manifests().as_slice() {
            [only] => only.clone(),
            many => bail!("{} holds {} images; name one with --image", dir.display(), many.len()),
        },
    };
    let blob_path = |d: &str| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let read = |d: &str| {
        std::fs::read(blob_path(d)).with_context(|| format!("cannot read blob {d} of {}", dir.display()))
    };
    let file_blob = |d: &serde_json::Value| -> Result<FileBlob> {
        let digest = d["digest"].as_str().context("a descriptor without digest")?;
        Ok(FileBlob {
            path: blob_path(digest),
            digest: digest.parse()?,
            size: d["size"].as_u64().context("a descriptor without size")?,
        })
    };
    let image_blobs = |manifest: &serde_json::Value| -> Result<Vec<FileBlob>> {
        let mut v = vec![file_blob(&manifest["config"])?];
        for l in manifest["layers"].as_array().context("a manifest without layers")? {
            v.push(file_blob(l)?);
        }
        Ok(v)
    };
    let mounts = Mounts { record, also: Vec::new() };
    let none = HashSet::new();
    let digest = entry.digest().to_string();
    let bytes = read(&digest)?;
    let media_type = entry.media_type().to_string();
    let doc: serde_json::Value = serde_json::from_slice(&bytes)?;
    let report = match doc["manifests"].as_array() {
        None => {
            let blobs = image_blobs(&doc)?;
            let sources: Vec<&dyn BlobSource> = blobs.iter().map(|b| b as &dyn BlobSource).collect();
            let upload =
                ImageUpload { blobs: &sources, manifest: &bytes, media_type: &media_type, mount_from: &[] };
            mounts.push_image(client, destination, tags, &upload, &none)?
        }
        Some(children) => {
            // Each platform's image by digest (its blobs first), then the index.
            let untagged = destination.with_repository(&destination.repository)?;
            let mut blobs = Vec::new();
            for child in children {
                let d = child["digest"].as_str().context("an index entry without digest")?;
                let child_bytes = read(d)?;
                let child_doc: serde_json::Value = serde_json::from_slice(&child_bytes)?;
                let media =
                    child["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json");
                let files = image_blobs(&child_doc)?;
                let sources: Vec<&dyn BlobSource> = files.iter().map(|b| b as &dyn BlobSource).collect();
                let upload = ImageUpload {
                    blobs: &sources,
                    manifest: &child_bytes,
                    media_type: media,
                    mount_from: &[],
                };
                blobs.extend(mounts.push_image(client, &untagged, &[], &upload, &none)?.blobs);
            }
            let upload =
                ImageUpload { blobs: &[], manifest: &bytes, media_type: &media_type, mount_from: &[] };
            let report = client.push_image(destination, tags, &upload)?;
            PushReport { blobs, ..report }
        }
    };
    let mut warnings = Vec::new();
    save_record(record, &mut warnings);
    Ok(PushOutcome { report, not_built: 0, index: Default::default(), warnings })
}

/// Writes one tag for images of several platforms already in `destination`'s repository
/// (each platform read from its config), as an OCI index or a Docker manifest list.
pub fn push_platform_index(
    client: &Client,
    destination: &Reference,
    sources: &[Reference],
    tags: &[&str],
    docker: bool,
) -> Result<Digest> {
    let mut manifests = Vec::new();
    for r in sources {
        if (r.registry.as_str(), r.repository.as_str())
            != (destination.registry.as_str(), destination.repository.as_str())
        {
            bail!(
                "{r} is not in {}/{}: an index refers to manifests of its own repository",
                destination.registry,
                destination.repository
            );
        }
        let m = client.get_manifest(r)?;
        if m.is_index() {
            bail!("{r} is already an index; give the per-platform images");
        }
        let (config, _) = m.blobs().with_context(|| format!("the manifest of {r} is not valid"))?;
        let mut bytes = Vec::new();
        let config = nix_layer_registry::blob_digest(config.digest())
            .with_context(|| format!("the manifest of {r} names config {}", config.digest()))?;
        client.fetch_blob(r, &config, &mut bytes)?;
        let doc = nix_layer_image::Document::from_bytes(m.bytes.clone(), &m.media_type);
        manifests.push(nix_layer_image::platform_descriptor(&doc, &bytes)?);
    }
    let kind =
        if docker { nix_layer_image::IndexKind::DockerManifestList } else { nix_layer_image::IndexKind::Oci };
    let index = nix_layer_image::platform_index(manifests, kind)?;
    let mut all = tags.to_vec();
    all.extend(destination.tag.as_deref());
    Ok(client.push_manifest(destination, &all, index.bytes(), index.media_type())?)
}
