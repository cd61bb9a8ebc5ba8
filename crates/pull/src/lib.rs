//! Base images from a registry (`--from-image REG/repo@sha256:…`), pinned by digest.
//!
//! A base is fetched once into a local OCI layout (every blob verified as it arrives) and
//! kept under its pin AND the wanted platform, so `--variant v6` never reuses what a
//! `--variant v7` build kept. A kept layout is checked against the pin every time it is
//! used: the pin's blob must hash to the pin, the image it selects for the platform must be
//! the one the layout names, and every blob must match its descriptor. A layout that fails
//! is fetched again once; if the fresh copy fails too, the build fails. The image's config
//! must be for the wanted platform: a single-platform pin of another architecture is refused.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use nix_layer_blob::Digest;
use nix_layer_image::{Document, OciLayout, REF_NAME_ANNOTATION};
use nix_layer_registry::{blob_digest, Client, Reference};
use nix_layer_scratch::ScratchDir;
use oci_spec::image::{Descriptor, ImageManifest, Platform};

mod download;
pub mod fixed_output;
mod verify;

pub use verify::verify_kept;

/// The name the base image has in its kept layout (what the build opens).
pub const BASE_NAME: &str = "base";

/// Prefix of fetches under way (and of layouts being discarded) in the bases directory.
pub(crate) const SCRATCH_PREFIX: &str = ".fetch-";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--from-image {0}: a registry image must be pinned by digest, so the build is reproducible: \
         give `{0}@sha256:…` (`skopeo inspect docker://{0}` shows the digest); if it was meant \
         as a file or directory, that does not exist"
    )]
    NotPinned(String),
    #[error("the base image {reference} is for {actual}, but this build is for {wanted}; {hint}")]
    PlatformMismatch { reference: String, wanted: String, actual: String, hint: String },
    #[error("the base image {reference} does not match its pin: {problem}")]
    PinMismatch { reference: String, problem: String },
    #[error(
        "the registry sent more than the {size} bytes the descriptor of blob {digest} of {reference} \
         declares; the download was stopped"
    )]
    TooLong { reference: String, digest: Digest, size: u64 },
    #[error("{} {problem}", path.display())]
    BadManifest { path: PathBuf, problem: String },
    #[error("the manifest names {named} blobs (config and layers) but {given} were given")]
    BlobCount { named: usize, given: usize },
    #[error("{} is {actual} ({len} bytes), but the manifest names {digest} ({size} bytes)", path.display())]
    BlobMismatch { path: PathBuf, actual: Digest, len: u64, digest: Digest, size: u64 },
    #[error("neither XDG_CACHE_HOME nor HOME is set: give --cache DIR to keep base images")]
    NoCacheDir,
    #[error("{action} `{}`: {cause}", path.display())]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Registry(#[from] nix_layer_registry::Error),
    #[error(transparent)]
    Image(#[from] nix_layer_image::Error),
}

pub(crate) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |cause| Error::Io { action, path: path.to_owned(), cause }
}

/// Whether `--from-image ARG` names a registry image rather than a file or directory: it
/// is not an existing path, and it is pinned (`…@sha256:…`) or starts with a registry host
/// (`host.name/…`, `host:port/…`, `localhost/…`), so that an unpinned registry image gets
/// "pin it by digest" rather than "no such file".
pub fn is_registry_reference(arg: &str) -> bool {
    if Path::new(arg).exists() {
        return false;
    }
    if arg.contains("@sha256:") {
        return true;
    }
    let Some((first, _)) = arg.split_once('/') else { return false };
    let host_like = first.contains('.') || first.contains(':') || first == "localhost";
    host_like && !arg.starts_with('.') && Reference::parse(arg).is_ok()
}

/// Where fetched base images are kept: under the layer cache when there is one, else in
/// `$XDG_CACHE_HOME/nix-layer/bases` (`~/.cache/…`).
pub fn bases_dir(cache: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(c) = cache {
        return Ok(c.join("bases"));
    }
    let home_cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or(Error::NoCacheDir)?;
    Ok(home_cache.join("nix-layer").join("bases"))
}

/// The kept layout's directory name: the pin and the whole wanted platform.
fn kept_name(pin: &Digest, platform: &Platform) -> String {
    let mut name = format!("{}-{}-{}", pin.hex(), platform.os(), platform.architecture());
    if let Some(v) = platform.variant() {
        name.push('-');
        name.push_str(v);
    }
    name
}

/// The local OCI layout of `reference` (pinned by digest) for `platform`, its image named
/// [`BASE_NAME`]: the kept one when it still matches the pin, else fetched (again) now.
pub fn fetch_base(
    client: &Client,
    reference: &str,
    platform: &Platform,
    cache: Option<&Path>,
) -> Result<PathBuf, Error> {
    let r = Reference::parse(reference)?;
    let Some(pin) = r.digest else {
        return Err(Error::NotPinned(reference.to_owned()));
    };
    let bases = bases_dir(cache)?;
    let dest = bases.join(kept_name(&pin, platform));
    if dest.join("oci-layout").is_file() {
        if verify_kept(&dest, &pin, platform, reference).is_ok() {
            return Ok(dest);
        }
        // Damaged or replaced: set aside (removed with the scratch directory), fetched again.
        let aside = ScratchDir::new_in(&bases, SCRATCH_PREFIX)
            .map_err(io_err("cannot create a directory in", &bases))?;
        fs::rename(&dest, aside.path().join("stale"))
            .map_err(io_err("cannot set aside the damaged base image", &dest))?;
    }
    fs::create_dir_all(&bases).map_err(io_err("cannot create", &bases))?;
    nix_layer_scratch::sweep(&bases, SCRATCH_PREFIX);
    let scratch =
        ScratchDir::new_in(&bases, SCRATCH_PREFIX).map_err(io_err("cannot create a directory in", &bases))?;
    let tmp = scratch.path().join("layout");
    fetch_into(client, &r, platform, &tmp)?;
    verify_kept(&tmp, &pin, platform, reference)?;
    match fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        // Another build kept it meanwhile: used only if it too matches the pin.
        Err(_) if dest.join("oci-layout").is_file() => {
            verify_kept(&dest, &pin, platform, reference)?;
            Ok(dest)
        }
        Err(e) => Err(io_err("cannot move the base image to", &dest)(e)),
    }
}

/// Fetches the image into a new layout at `dir`: the pinned index (if the pin is one), the
/// platform's manifest, its config and layers, each verified by the client as it arrives.
fn fetch_into(client: &Client, r: &Reference, platform: &Platform, dir: &Path) -> Result<(), Error> {
    let resolved = client.resolve_image(r, platform)?;
    let layout = OciLayout::open_or_create(dir)?;
    if let Some(index) = &resolved.index {
        layout.add_document(&Document::from_bytes(index.bytes.clone(), &index.media_type))?;
    }
    let manifest = Document::from_bytes(resolved.manifest.bytes.clone(), &resolved.manifest.media_type);
    let parsed = parse_manifest(&manifest, &r.to_string())?;
    let blobs = std::iter::once(parsed.config()).chain(parsed.layers());
    for d in blobs {
        let digest = digest_of(d)?;
        let path = layout.blob_path(&digest);
        if path.is_file() {
            continue; // a config that is also a layer, or a layer listed twice
        }
        download::fetch_bounded(client, r, &digest, d.size(), &path)?;
    }
    layout.add_document(&manifest)?;
    name_base(&layout, &manifest)
}

fn parse_manifest(doc: &Document, reference: &str) -> Result<ImageManifest, Error> {
    oci_spec::image::ImageManifest::from_reader(doc.bytes()).map_err(|e| Error::PinMismatch {
        reference: reference.to_owned(),
        problem: format!("its manifest is not an image manifest: {e}"),
    })
}

pub(crate) fn digest_of(d: &Descriptor) -> Result<Digest, Error> {
    Ok(blob_digest(d.digest()).map_err(nix_layer_image::Error::from)?)
}

/// Names `manifest` (already stored) [`BASE_NAME`] in `layout`'s index.
pub fn name_base(layout: &OciLayout, manifest: &Document) -> Result<(), Error> {
    let mut entry = manifest.descriptor();
    entry.set_annotations(Some(HashMap::from([(REF_NAME_ANNOTATION.to_owned(), BASE_NAME.to_owned())])));
    Ok(layout.add_index_entry(entry)?)
}
