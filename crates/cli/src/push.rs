//! `nix-layer push`: arguments for nix-layer-push, which builds an image from its closure
//! (or reads an OCI layout's or a docker-archive's) and sends it to a registry, only the
//! blobs it lacks, mounting what other repositories of the registry hold.

use anyhow::{bail, Result};
use clap::Args;
use nix_layer_push::{BlobInfoRecord, BuildPush};
use nix_layer_registry::Reference;
use nix_layer_sign::{KeySigner, PrivateKey, Signer};

use crate::args::BuildArgs;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("provenance_out").args(["provenance", "provenance_predicate"]).multiple(true)))]
pub struct PushArgs {
    /// Where to push: `registry.example/app:tag` (several tags: --tag).
    #[arg(value_name = "REF")]
    pub destination: String,
    /// More tags for the same manifest.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Repository of the same registry that holds the shared layer index (default: the
    /// destination's); its layers are mounted rather than sent.
    #[arg(long, value_name = "REPO")]
    pub cache_repo: Option<String>,
    /// How a registry layer index entry is checked before its blob is used instead of
    /// compressing the layer here: `content` (the blob unpacks to the tar built here, so
    /// the config and every layer's content are the same; proving a blob costs a download
    /// and a decompression, once per machine) or `exact` (the blob is also what this
    /// machine's compressor makes of that tar, so the manifest digest is the same too;
    /// proving costs a compression).
    #[arg(long, value_name = "HOW", default_value = "content", value_parser = ["content", "exact"])]
    pub verify_index: String,
    /// Push an image of this OCI layout (one nix-layer wrote) instead of building one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["closure", "graph"])]
    pub layout: Option<std::path::PathBuf>,
    /// Push the image of this docker-archive instead of building one: its config is kept
    /// byte for byte, its layers are verified against it and gzipped.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["closure", "graph", "layout"])]
    pub archive: Option<std::path::PathBuf>,
    /// The image's name in --layout or --archive (default: its only image; one of several
    /// must be named).
    #[arg(long = "image", value_name = "NAME")]
    pub image: Option<String>,
    /// Sign the pushed manifest digest (an index: it and each platform's manifest, and the
    /// SBOM referrer) with this cosign private key (password from COSIGN_PASSWORD or the
    /// terminal, asked before anything is pushed).
    #[arg(long = "sign", value_name = "KEY")]
    pub sign: Option<std::path::PathBuf>,
    /// Attach SLSA provenance (an in-toto statement in a DSSE envelope signed with the
    /// --sign key) as a referrer of the manifest. Built images only.
    #[arg(long, requires = "sign", conflicts_with_all = ["layout", "archive"])]
    pub provenance: bool,
    /// Once the push is done, write the SLSA provenance predicate (unsigned: the
    /// `predicate` of the statement --provenance signs) to FILE, for another signer:
    /// `cosign attest --type slsaprovenance1 --predicate FILE REF@DIGEST`. No key needed.
    /// Built images only.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["layout", "archive"])]
    pub provenance_predicate: Option<std::path::PathBuf>,
    /// The flake.lock of the flake the image was built from: its locked inputs (the
    /// transitive ones too, with their NAR hashes and revisions) are listed in the
    /// provenance (--provenance or --provenance-predicate). Read before anything is pushed.
    #[arg(long, value_name = "FILE", requires = "provenance_out")]
    pub flake_lock: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
}

pub fn run(mut a: PushArgs, verbose: bool) -> Result<()> {
    let destination = Reference::parse(&a.destination)?;
    // The key is opened first: a wrong password stops the push before anything is sent.
    let signer = match &a.sign {
        Some(path) => {
            let password = nix_layer_sign::password(false)?;
            Some(KeySigner::new(PrivateKey::read(path, &password)?))
        }
        None => None,
    };
    let flake_inputs = match &a.flake_lock {
        Some(path) => nix_layer_sign::flake_lock::read(path)?,
        None => Vec::new(),
    };
    let client = crate::pull::client(a.build.plain_http, a.build.creds.as_deref())?;
    let tags: Vec<&str> = a.tags.iter().map(String::as_str).collect();
    let record = BlobInfoRecord::for_user();
    let verbose = verbose || a.build.verbose;
    let outcome = if let Some(file) = &a.archive {
        let o =
            nix_layer_push::push_archive(&client, &record, file, a.image.as_deref(), &destination, &tags)?;
        sign(&client, &destination, &o, signer.as_ref())?;
        o
    } else if let Some(dir) = &a.layout {
        let o = nix_layer_push::push_layout(&client, &record, dir, a.image.as_deref(), &destination, &tags)?;
        sign(&client, &destination, &o, signer.as_ref())?;
        o
    } else {
        if a.image.is_some() {
            bail!("--image names an image of --layout or --archive");
        }
        // The image is named by the destination; layers are compressed for a registry.
        if a.build.name.is_none() {
            a.build.name = Some(format!(
                "{}/{}:{}",
                destination.registry,
                destination.repository,
                destination.tag.as_deref().unwrap_or("latest")
            ));
        }
        a.build.format = Some("oci".into());
        // For a push the SBOM goes to the registry, not beside an output.
        let req = crate::flags::image_request(a.build)?;
        let how = BuildPush {
            destination: &destination,
            tags: &tags,
            cache_repo: a.cache_repo.as_deref(),
            compression: req.compression,
            sbom: req.sbom,
            exact_index: a.verify_index == "exact",
            signer: signer.as_ref().map(|s| s as &dyn Signer),
            provenance: a.provenance,
            provenance_predicate: a.provenance_predicate.as_deref(),
            flake_inputs: &flake_inputs,
        };
        nix_layer_push::push_build(&client, &record, &req.image, &how)?
    };
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    if verbose {
        eprintln!("{}", outcome.summary(&destination.registry, &destination.repository));
    }
    crate::print_report(&format!("{}\n", outcome.report.manifest_digest))
}

fn sign(
    client: &nix_layer_registry::Client,
    destination: &Reference,
    o: &nix_layer_push::PushOutcome,
    signer: Option<&KeySigner>,
) -> Result<()> {
    if let Some(s) = signer {
        nix_layer_push::sign_pushed(client, destination, &o.report.manifest_digest, &[], s)?;
    }
    Ok(())
}

#[derive(Args)]
pub struct PushIndexArgs {
    /// The multi-platform tag to write, e.g. `ghcr.io/org/app:1`.
    #[arg(value_name = "REF")]
    pub destination: String,
    /// The per-platform images already in that repository (tags or digests), e.g.
    /// `ghcr.io/org/app:1-amd64`.
    #[arg(long = "from", value_name = "REF", required = true)]
    pub sources: Vec<String>,
    /// More tags for the same index.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Write a Docker manifest list instead of an OCI image index.
    #[arg(long)]
    pub docker: bool,
    /// Speak plain HTTP to the registry (never implied).
    #[arg(long)]
    pub plain_http: bool,
    /// `user:password` (default: auth files, credential helpers, GITHUB_TOKEN for ghcr.io).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
}

/// `nix-layer push-index`: one tag for images of several platforms that are already in
/// the registry (each platform read from its config), written as an index.
pub fn push_index(a: PushIndexArgs) -> Result<()> {
    let client = crate::pull::client(a.plain_http, a.creds.as_deref())?;
    let destination = Reference::parse(&a.destination)?;
    let sources = a.sources.iter().map(|s| Reference::parse(s)).collect::<Result<Vec<_>, _>>()?;
    let tags: Vec<&str> = a.tags.iter().map(String::as_str).collect();
    let digest = nix_layer_push::push_platform_index(&client, &destination, &sources, &tags, a.docker)?;
    crate::print_report(&format!("{digest}\n"))
}
