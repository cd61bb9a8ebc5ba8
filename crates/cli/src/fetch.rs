//! The flake's `pullImage` (nix/pull-image.nix): `lock-image` writes the lock file it
//! reads at evaluation time; its builders, hidden from `--help`, are `fetch-blob`, which
//! fetches one manifest or blob by digest (a fixed-output derivation whose output hash is
//! that digest, so Nix checks it too), and `assemble-layout`, which puts the fetched blobs
//! together into an OCI layout naming the image `base`.

//! Argument handling only: the work is `nix_layer_pull::fixed_output`'s.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use nix_layer_blob::Digest;
use nix_layer_pull::fixed_output;
use nix_layer_registry::PlatformExt;
use oci_spec::image::Platform;

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
    /// The blob's size, when its descriptor is at hand: a body running past it is cut off.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<u64>,
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
    let media = match a.media {
        Media::Manifest => fixed_output::Media::Manifest,
        Media::Blob => fixed_output::Media::Blob,
    };
    Ok(fixed_output::fetch_blob(&client, &a.reference, &a.digest, media, a.size, &a.output)?)
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

/// `assemble-layout`: an OCI layout of the manifest and its blobs (each copied and checked
/// against the manifest's descriptor), written beside `-o` and renamed into place.
pub fn assemble_layout(a: &AssembleLayoutArgs) -> Result<()> {
    Ok(fixed_output::assemble_layout(&a.manifest, &a.blobs, &a.output)?)
}
