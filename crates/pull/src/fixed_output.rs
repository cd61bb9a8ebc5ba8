//! The builders of the flake's `pullImage` (nix/pull-image.nix), as Nix fixed-output
//! derivations: [`fetch_blob`] fetches one manifest or blob by digest (the derivation's
//! output hash is that digest, so Nix checks it too), and [`assemble_layout`] puts the
//! fetched blobs together into an OCI layout naming the image [`BASE_NAME`].
//!
//! [`BASE_NAME`]: crate::BASE_NAME

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix_layer_blob::{Digest, HashingWriter};
use nix_layer_image::{Document, OciLayout};
use nix_layer_registry::{Client, Reference, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use nix_layer_scratch::{ScratchDir, ScratchFile};
use oci_spec::image::Descriptor;
use serde::Deserialize;

use crate::{digest_of, io_err, name_base, Error};

/// What [`fetch_blob`] fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// An image manifest or index (`GET /v2/<repo>/manifests/<digest>`).
    Manifest,
    /// A config or layer blob (`GET /v2/<repo>/blobs/<digest>`).
    Blob,
}

/// Fetches the manifest or blob `digest` of the repository `reference` (a tag or digest
/// in it is ignored) to `output`, which exists only once the bytes are checked against
/// `digest`. A blob whose `size` is known is cut off at the first byte past it.
pub fn fetch_blob(
    client: &Client,
    reference: &str,
    digest: &Digest,
    media: Media,
    size: Option<u64>,
    output: &Path,
) -> Result<(), Error> {
    let repo = Reference::parse(reference)?.with_digest(*digest);
    match media {
        Media::Blob => {
            match size {
                Some(size) => client.fetch_blob_to_path_sized(&repo, digest, size, output)?,
                None => client.fetch_blob_to_path(&repo, digest, output)?,
            };
        }
        Media::Manifest => {
            // get_manifest checks the bytes against the pinned digest.
            let manifest = client.get_manifest(&repo)?;
            write_file(output, &manifest.bytes)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `dest` through a file beside it, renamed once complete.
fn write_file(dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = parent(dest);
    let mut tmp = ScratchFile::new_in(dir, ".fetch-").map_err(io_err("cannot create a file in", dir))?;
    tmp.write_all(bytes).map_err(io_err("cannot write", tmp.path()))?;
    tmp.persist(dest).map_err(|e| io_err("cannot write", dest)(e.source))?;
    Ok(())
}

fn parent(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The blobs an image manifest points at (as leniently read as the registry client does:
/// `layers` may be absent).
#[derive(Deserialize)]
struct ManifestBlobs {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The media type of manifest bytes: the one they declare, else OCI's (whose
/// `mediaType` field is optional).
fn manifest_media_type(bytes: &[u8], path: &Path) -> Result<String, Error> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::BadManifest { path: path.to_owned(), problem: format!("is not JSON: {e}") })?;
    let declared = v.get("mediaType").and_then(|m| m.as_str());
    if declared.is_some_and(|m| m != OCI_MANIFEST && m != DOCKER_MANIFEST) || v.get("manifests").is_some() {
        return Err(Error::BadManifest {
            path: path.to_owned(),
            problem: format!(
                "is {} rather than an image manifest: pick a platform's manifest from it",
                declared.unwrap_or(OCI_INDEX)
            ),
        });
    }
    Ok(declared.unwrap_or(OCI_MANIFEST).to_owned())
}

/// An OCI layout of the image manifest at `manifest` and its `blobs` (the config, then
/// each layer, in the manifest's order), each copied and checked against the manifest's
/// descriptor; written beside `output` and renamed into place, so `output` exists only
/// whole.
pub fn assemble_layout(manifest: &Path, blobs: &[PathBuf], output: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(manifest).map_err(io_err("cannot read", manifest))?;
    let media_type = manifest_media_type(&bytes, manifest)?;
    let parsed: ManifestBlobs = serde_json::from_slice(&bytes).map_err(|e| Error::BadManifest {
        path: manifest.to_owned(),
        problem: format!("is not a valid image manifest: {e}"),
    })?;
    let wanted: Vec<&Descriptor> = std::iter::once(&parsed.config).chain(&parsed.layers).collect();
    if wanted.len() != blobs.len() {
        return Err(Error::BlobCount { named: wanted.len(), given: blobs.len() });
    }
    let dir = parent(output);
    let scratch = ScratchDir::new_in(dir, ".layout-").map_err(io_err("cannot create a directory in", dir))?;
    let tmp = scratch.path().join("layout");
    let layout = OciLayout::open_or_create(&tmp)?;
    for (desc, src) in wanted.iter().zip(blobs) {
        let digest = digest_of(desc)?;
        copy_verified(src, &digest, desc.size(), &layout.blob_path(&digest))?;
    }
    let doc = Document::from_bytes(bytes, &media_type);
    layout.add_document(&doc)?;
    name_base(&layout, &doc)?;
    std::fs::rename(&tmp, output).map_err(io_err("cannot move the layout to", output))?;
    Ok(())
}

/// Copies `src` to `dest` (through a scratch file), failing unless it hashes to `digest`
/// and has `size` bytes. A blob listed twice is copied once.
fn copy_verified(src: &Path, digest: &Digest, size: u64, dest: &Path) -> Result<(), Error> {
    if dest.exists() {
        return Ok(());
    }
    let mut input = File::open(src).map_err(io_err("cannot read", src))?;
    let mut tmp =
        ScratchFile::new_in(parent(dest), ".blob-").map_err(io_err("cannot create a file beside", dest))?;
    let mut w = HashingWriter::new(io::BufWriter::new(tmp.file_mut()));
    io::copy(&mut input, &mut w).map_err(io_err("cannot copy into the layout", src))?;
    let (mut inner, actual, n) = w.finish();
    inner.flush().map_err(io_err("cannot write", dest))?;
    drop(inner);
    if actual != *digest || n != size {
        return Err(Error::BlobMismatch { path: src.to_owned(), actual, len: n, digest: *digest, size });
    }
    tmp.set_mode(0o444).map_err(io_err("cannot write", dest))?;
    tmp.persist(dest).map_err(|e| io_err("cannot write", dest)(e.source))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BASE_NAME;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn manifest(config: &[u8], layer: &[u8], media_type: bool) -> Vec<u8> {
        let desc = |m: &str, b: &[u8]| serde_json::json!({"mediaType": m, "digest": Digest::of(b).to_string(), "size": b.len()});
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": desc("application/vnd.oci.image.config.v1+json", config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer)],
        });
        if media_type {
            v["mediaType"] = OCI_MANIFEST.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn assembles_a_layout_naming_the_image_base() {
        let d = tempfile::tempdir().unwrap();
        let (config, layer) = (
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            b"layer bytes",
        );
        let m = manifest(config, layer, false);
        let output = d.path().join("out");
        assemble_layout(
            &write(d.path(), "m", &m),
            &[write(d.path(), "c", config), write(d.path(), "l", layer)],
            &output,
        )
        .unwrap();
        let layout = OciLayout::open_existing(&output).unwrap();
        assert_eq!(layout.refs().unwrap(), vec![(BASE_NAME.to_owned(), Digest::of(&m))]);
        assert_eq!(std::fs::read(layout.blob_path(&Digest::of(layer))).unwrap(), layer);
        // Nothing is left beside the output.
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["c", "l", "m", "out"]);
    }

    #[test]
    fn a_blob_that_is_not_the_manifests_is_refused_and_nothing_is_written() {
        let d = tempfile::tempdir().unwrap();
        let m = write(d.path(), "m", &manifest(b"{}", b"layer", true));
        let blobs = [write(d.path(), "c", b"{}"), write(d.path(), "l", b"tampered")];
        let output = d.path().join("out");
        let e = assemble_layout(&m, &blobs, &output).unwrap_err().to_string();
        assert!(e.contains("but the manifest names"), "{e}");
        assert!(!output.exists());
        let e = assemble_layout(&m, &blobs[..1], &output).unwrap_err().to_string();
        assert!(e.contains("names 2 blobs"), "{e}");
    }

    #[test]
    fn an_index_is_not_taken_for_a_manifest() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "i", br#"{"schemaVersion":2,"manifests":[]}"#);
        let e = manifest_media_type(&std::fs::read(&p).unwrap(), &p).unwrap_err().to_string();
        assert!(e.contains(OCI_INDEX), "{e}");
    }
}
