//! The flake's `pullImage` (nix/pull-image.nix): `lock-image` writes the lock file it
//! reads at evaluation time; its builders, hidden from `--help`, are `fetch-blob`, which
//! fetches one manifest or blob by digest (a fixed-output derivation whose output hash is
//! that digest, so Nix checks it too), and `assemble-layout`, which puts the fetched blobs
//! together into an OCI layout naming the image `base`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use nix_layer_blob::{Digest, HashingWriter};
use nix_layer_image::{Document, OciLayout};
use nix_layer_registry::{blob_digest, PlatformExt, Reference, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use nix_layer_scratch::{ScratchDir, ScratchFile};
use oci_spec::image::Platform;

/// The name the pulled image has in its layout (what `fromImage` opens).
#[cfg(test)]
use nix_layer_pull::BASE_NAME;

/// Credentials for a fetch in a Nix build, where no `--creds` can be given: `user:password`.
pub const CREDS_ENV: &str = "NIX_LAYER_REGISTRY_CREDS";

#[derive(Args)]
pub struct LockImageArgs {
    /// The image: `registry/repository@sha256:…` (a tag is resolved to its digest now).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// A platform to lock, `os/arch[/variant]` (repeatable; needed for an index).
    #[arg(long = "platform", value_name = "OS/ARCH", value_parser = parse_platform)]
    pub platforms: Vec<Platform>,
    /// Speak plain HTTP (a registry on localhost).
    #[arg(long)]
    pub plain_http: bool,
    /// Registry credentials `user:password` (default: Docker/Podman auth files, credential
    /// helpers, and GITHUB_TOKEN for ghcr.io).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Where to write the lock (default: stdout), e.g. base.lock.json beside flake.nix.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).ok_or_else(|| format!("`{s}` is not os/arch[/variant], e.g. linux/arm64"))
}

/// `lock-image`: the lock file of an image, written whole or not at all.
pub fn lock_image(a: &LockImageArgs) -> Result<()> {
    let client = crate::pull::client(a.plain_http, a.creds.as_deref())?;
    let lock = nix_layer_image_lock::lock_image(&client, &a.reference, &a.platforms)?;
    match &a.output {
        Some(path) => Ok(lock.write_to(path)?),
        None => crate::print_report(&lock.to_json()),
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Media {
    /// An image manifest or index (`GET /v2/<repo>/manifests/<digest>`).
    Manifest,
    /// A config or layer blob (`GET /v2/<repo>/blobs/<digest>`).
    Blob,
}

#[derive(Args)]
pub struct FetchBlobArgs {
    /// The repository, e.g. ghcr.io/owner/image (a tag or digest in it is ignored).
    #[arg(long, value_name = "REPO")]
    pub reference: String,
    /// The content's digest: the bytes are checked against it before OUT exists.
    #[arg(long, value_name = "sha256:HEX")]
    pub digest: Digest,
    #[arg(long, value_enum, default_value = "blob")]
    pub media: Media,
    /// Speak plain HTTP (a registry on localhost).
    #[arg(long)]
    pub plain_http: bool,
    /// CA certificates (PEM) to trust besides the usual ones: SSL_CERT_FILE for this fetch.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
}

#[derive(Args)]
pub struct AssembleLayoutArgs {
    /// The image manifest (not an index).
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// The manifest's blobs in its order: the config, then each layer.
    #[arg(value_name = "BLOB")]
    pub blobs: Vec<PathBuf>,
    /// The OCI layout directory to create.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
}

/// `fetch-blob`: the manifest or blob, verified, at `-o`.
pub fn fetch_blob(a: &FetchBlobArgs) -> Result<()> {
    normalise_builder_env();
    if let Some(ca) = &a.ca_file {
        // The derivation's own attributes are not in the environment (structured attrs).
        File::open(ca).with_context(|| format!("cannot read the CA file {}", ca.display()))?;
        std::env::set_var("SSL_CERT_FILE", ca);
    }
    let creds = std::env::var(CREDS_ENV).ok().filter(|c| !c.is_empty());
    let client = crate::pull::client(a.plain_http, creds.as_deref())?;
    let repo = Reference::parse(&a.reference)?.with_digest(a.digest);
    match a.media {
        Media::Blob => {
            client.fetch_blob_to_path(&repo, &a.digest, &a.output)?;
        }
        Media::Manifest => {
            // get_manifest checks the bytes against the pinned digest.
            let manifest = client.get_manifest(&repo)?;
            write_file(&a.output, &manifest.bytes)?;
        }
    }
    Ok(())
}

/// The variables a fixed-output fetch passes through (`impureEnvVars` in
/// nix/pull-image.nix) that this process reads itself or through the registry client.
const PASSED_THROUGH: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "NIX_SSL_CERT_FILE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Nix sets every `impureEnvVars` variable in the builder, empty when the caller's
/// environment lacks it: an empty `NO_PROXY` would hide `no_proxy`, an empty
/// `SSL_CERT_FILE` would name no file. Empty ones are removed, as if never set; then
/// Nix's own CA variable (what nixpkgs' fetchers honour) stands for `SSL_CERT_FILE`.
/// Runs before the registry client reads the environment, in the builder's main thread.
fn normalise_builder_env() {
    for var in PASSED_THROUGH {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(var);
        }
    }
    if std::env::var_os("SSL_CERT_FILE").is_none() {
        if let Some(nix_ca) = std::env::var_os("NIX_SSL_CERT_FILE") {
            std::env::set_var("SSL_CERT_FILE", nix_ca);
        }
    }
}

/// Writes `bytes` to `dest` through a file beside it, renamed once complete.
fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent(dest);
    let mut tmp = ScratchFile::new_in(dir, ".fetch-")
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(dest)
        .map_err(|e| anyhow::Error::new(e.source))
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

fn parent(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The media type of manifest bytes: the one they declare, else OCI's (whose
/// `mediaType` field is optional).
fn manifest_media_type(bytes: &[u8], path: &Path) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{} is not JSON", path.display()))?;
    let declared = v.get("mediaType").and_then(|m| m.as_str());
    if declared.is_some_and(|m| m != OCI_MANIFEST && m != DOCKER_MANIFEST) || v.get("manifests").is_some() {
        bail!(
            "{} is {} rather than an image manifest: pick a platform's manifest from it",
            path.display(),
            declared.unwrap_or(OCI_INDEX)
        );
    }
    Ok(declared.unwrap_or(OCI_MANIFEST).to_owned())
}

/// Names `manifest` (already stored) `base` in `layout`'s index.
pub fn name_base(layout: &OciLayout, manifest: &Document) -> Result<()> {
    Ok(nix_layer_pull::name_base(layout, manifest)?)
}

/// `assemble-layout`: an OCI layout of the manifest and its blobs (each copied and checked
/// against the manifest's descriptor), written beside `-o` and renamed into place.
pub fn assemble_layout(a: &AssembleLayoutArgs) -> Result<()> {
    let bytes =
        std::fs::read(&a.manifest).with_context(|| format!("cannot read {}", a.manifest.display()))?;
    let media_type = manifest_media_type(&bytes, &a.manifest)?;
    let doc = nix_layer_registry::Manifest { bytes, media_type: media_type.clone(), digest: Digest::of(&[]) };
    let (config, layers) =
        doc.blobs().with_context(|| format!("{} is not a valid image manifest", a.manifest.display()))?;
    let wanted: Vec<_> = std::iter::once(&config).chain(&layers).collect();
    if wanted.len() != a.blobs.len() {
        bail!(
            "the manifest names {} blobs (config and layers) but {} were given",
            wanted.len(),
            a.blobs.len()
        );
    }
    let dir = parent(&a.output);
    let scratch = ScratchDir::new_in(dir, ".layout-")
        .with_context(|| format!("cannot create a directory in {}", dir.display()))?;
    let tmp = scratch.path().join("layout");
    let layout = OciLayout::open_or_create(&tmp)?;
    for (desc, src) in wanted.iter().zip(&a.blobs) {
        let digest = blob_digest(desc.digest())
            .with_context(|| format!("{} names a blob this tool cannot check", a.manifest.display()))?;
        copy_verified(src, &digest, desc.size(), &layout.blob_path(&digest))?;
    }
    let manifest = Document::from_bytes(doc.bytes, &media_type);
    layout.add_document(&manifest)?;
    name_base(&layout, &manifest)?;
    std::fs::rename(&tmp, &a.output)
        .with_context(|| format!("cannot move the layout to {}", a.output.display()))?;
    Ok(())
}

/// Copies `src` to `dest` (through a scratch file), failing unless it hashes to `digest`
/// and has `size` bytes. A blob listed twice is copied once.
fn copy_verified(src: &Path, digest: &Digest, size: u64, dest: &Path) -> Result<()> {
    if dest.exists() {
        return Ok(());
    }
    let mut input = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut tmp = ScratchFile::new_in(parent(dest), ".blob-")
        .with_context(|| format!("cannot create a file beside {}", dest.display()))?;
    let mut w = HashingWriter::new(io::BufWriter::new(tmp.file_mut()));
    io::copy(&mut input, &mut w).with_context(|| format!("cannot copy {} into the layout", src.display()))?;
    let (mut inner, actual, n) = w.finish();
    inner.flush().with_context(|| format!("cannot write {}", dest.display()))?;
    drop(inner);
    if actual != *digest || n != size {
        bail!("{} is {actual} ({n} bytes), but the manifest names {digest} ({size} bytes)", src.display());
    }
    tmp.set_mode(0o444).with_context(|| format!("cannot write {}", dest.display()))?;
    tmp.persist(dest)
        .map_err(|e| anyhow::Error::new(e.source))
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = AssembleLayoutArgs {
            manifest: write(d.path(), "m", &m),
            blobs: vec![write(d.path(), "c", config), write(d.path(), "l", layer)],
            output: d.path().join("out"),
        };
        assemble_layout(&a).unwrap();
        let layout = OciLayout::open_existing(&a.output).unwrap();
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
        let m = manifest(b"{}", b"layer", true);
        let a = AssembleLayoutArgs {
            manifest: write(d.path(), "m", &m),
            blobs: vec![write(d.path(), "c", b"{}"), write(d.path(), "l", b"tampered")],
            output: d.path().join("out"),
        };
        let e = format!("{:#}", assemble_layout(&a).unwrap_err());
        assert!(e.contains("but the manifest names"), "{e}");
        assert!(!a.output.exists());
        let short = AssembleLayoutArgs { blobs: vec![a.blobs[0].clone()], ..a };
        assert!(format!("{:#}", assemble_layout(&short).unwrap_err()).contains("names 2 blobs"));
    }

    #[test]
    fn an_index_is_not_taken_for_a_manifest() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "i", br#"{"schemaVersion":2,"manifests":[]}"#);
        let e = manifest_media_type(&std::fs::read(&p).unwrap(), &p).unwrap_err().to_string();
        assert!(e.contains(OCI_INDEX), "{e}");
    }
}
