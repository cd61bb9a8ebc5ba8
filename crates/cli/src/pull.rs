//! `--from-image REF@sha256:…`: a base image from a registry, pinned by digest, fetched
//! once into a local OCI layout (every blob verified as it arrives) and reused after.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix_layer_image::{Document, OciLayout};
use nix_layer_registry::{Client, ClientOptions, CredentialSource, Credentials, Platform, Reference};

/// Whether `--from-image` names a registry image rather than a file or directory.
pub fn is_registry_reference(arg: &str) -> bool {
    arg.contains("@sha256:") && !Path::new(arg).exists()
}

/// The registry client for `--plain-http` and `--creds`.
pub fn client(plain_http: bool, creds: Option<&str>) -> Result<Client> {
    let creds = creds.map(Credentials::parse).transpose()?;
    Ok(Client::new(
        ClientOptions { plain_http, ..ClientOptions::default() },
        CredentialSource::from_process(creds),
    ))
}

/// Where fetched base images are kept: under the layer cache when there is one, else in
/// `$XDG_CACHE_HOME/nix-layer/bases` (`~/.cache/…`).
fn bases_dir(cache: Option<&Path>) -> Result<PathBuf> {
    if let Some(c) = cache {
        return Ok(c.join("bases"));
    }
    let home_cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: give --cache DIR to keep base images")?;
    Ok(home_cache.join("nix-layer").join("bases"))
}

/// The local OCI layout of `reference` for `platform` (fetched now if it is not kept yet).
/// The image is named `base` in it.
pub fn fetch_base(
    client: &Client,
    reference: &str,
    platform: &Platform,
    cache: Option<&Path>,
) -> Result<PathBuf> {
    let r = Reference::parse(reference)?;
    let Some(pinned) = r.digest else {
        bail!("--from-image {reference}: pin a registry image by digest (…@sha256:…), so the build is reproducible");
    };
    let bases = bases_dir(cache)?;
    let dest = bases.join(format!("{}-{}-{}", pinned.hex(), platform.os, platform.architecture));
    if dest.join("oci-layout").is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&bases).with_context(|| format!("cannot create {}", bases.display()))?;
    nix_layer_scratch::sweep(&bases, ".fetch-");
    let scratch = nix_layer_scratch::ScratchDir::new_in(&bases, ".fetch-")
        .with_context(|| format!("cannot create a directory in {}", bases.display()))?;
    let tmp = scratch.path().join("layout");
    let resolved = client.resolve_image(&r, platform)?;
    let layout = OciLayout::open_or_create(&tmp)?;
    let (config, layers) = resolved.manifest.blobs().context("the base image's manifest is not valid")?;
    for d in std::iter::once(&config).chain(&layers) {
        client.fetch_blob_to_path_sized(&r, &d.digest, d.size, &layout.blob_path(&d.digest))?;
    }
    let manifest = Document::from_bytes(resolved.manifest.bytes.clone(), &resolved.manifest.media_type);
    layout.add_document(&manifest)?;
    crate::fetch::name_base(&layout, &manifest)?;
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        // Another build fetched it meanwhile.
        Err(_) if dest.join("oci-layout").is_file() => Ok(dest),
        Err(e) => Err(e).with_context(|| format!("cannot move the base image to {}", dest.display())),
    }
}
