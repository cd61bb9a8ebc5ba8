//! `nix-layer push`: an image straight from its closure, or an OCI layout's image, to a
//! registry, sending only the blobs it lacks. The registry doubles as the shared layer
//! cache: a small index there (tag `nix-layer-cache`) maps layer cache keys to blobs, so a
//! fresh machine does not even produce the layers that went out before.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;
use nix_layer_blob::{BlobInfo, Compression, LayerBlob};
use nix_layer_registry::{
    BlobSource, BytesBlob, CachedLayer, Client, Descriptor, FileBlob, ImageUpload, PushReport, Reference,
};

use crate::args::BuildArgs;

/// Entries the registry's layer index keeps (the oldest writes go first).
const CACHE_INDEX_ENTRIES: usize = 4096;

#[derive(Args)]
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
    /// Push an image of this OCI layout (one nix-layer wrote) instead of building one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["closure", "graph"])]
    pub layout: Option<std::path::PathBuf>,
    /// Push the image of this docker-archive (one nix-layer wrote) instead of building one:
    /// its config is kept byte for byte, its layers are verified against it and gzipped.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["closure", "graph", "layout"])]
    pub archive: Option<std::path::PathBuf>,
    /// The image's name in --layout (default: its only image).
    #[arg(long = "image", value_name = "NAME", requires = "layout")]
    pub layout_image: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// A verified layer blob, read from the inode that was verified.
struct Verified<'a>(&'a LayerBlob);

impl BlobSource for Verified<'_> {
    fn digest(&self) -> nix_layer_blob::Digest {
        self.0.digest
    }
    fn size(&self) -> u64 {
        self.0.size
    }
    fn open(&self) -> std::io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.0.reader()))
    }
}

/// A layer the registry's index says it holds: never read here. If the registry lost it
/// between the check and the push, the push fails rather than send something else.
struct Remote(BlobInfo);

impl BlobSource for Remote {
    fn digest(&self) -> nix_layer_blob::Digest {
        self.0.digest
    }
    fn size(&self) -> u64 {
        self.0.size
    }
    fn open(&self) -> std::io::Result<Box<dyn Read + '_>> {
        Err(std::io::Error::other(format!(
            "layer {} was in the registry's layer index but is gone; push again to rebuild it",
            self.0.digest
        )))
    }
}

pub fn run(mut a: PushArgs, verbose: bool) -> Result<()> {
    let destination = Reference::parse(&a.destination)?;
    let client = crate::pull::client(a.build.plain_http, a.build.creds.as_deref())?;
    let tags: Vec<&str> = a.tags.iter().map(String::as_str).collect();
    if let Some(file) = &a.archive {
        let report = push_archive(&client, file, &destination, &tags)?;
        return summarize(&destination, &report, 0, a.build.verbose);
    }
    if let Some(dir) = &a.layout {
        let report = push_layout(&client, dir, a.layout_image.as_deref(), &destination, &tags)?;
        return summarize(&destination, &report, 0, verbose);
    }
    let cache_repo = match &a.cache_repo {
        Some(repo) => destination.with_repository(repo)?,
        None => destination.clone(),
    };
    let index = client.read_layer_cache(&cache_repo).context("cannot read the registry's layer index")?;
    // The blobs the HEADs below found in the cache repository: when that is the
    // destination, the push does not ask about them again.
    let confirmed = Mutex::new(HashSet::new());
    let remote = |key: &str| -> Option<BlobInfo> {
        let c = index.get(key)?;
        let compression = Compression::from_layer_media_type(&c.media_type)?;
        // Only what the cache repository really holds, at the recorded size.
        let held = client.head_blob(&cache_repo, &c.digest).ok()?? == c.size;
        if held {
            confirmed.lock().expect("confirmed blobs").insert(c.digest);
        }
        held.then_some(BlobInfo {
            diff_id: c.diff_id,
            // Unknown without the bytes; only the summary would use it.
            uncompressed_size: 0,
            digest: c.digest,
            size: c.size,
            compression,
        })
    };
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
    let req = crate::flags::image_request(a.build)?;
    // For a push the SBOM goes to the registry.
    let want_sbom = req.sbom;
    let (req, compression) = (req.image, req.compression);
    let (built, summary) =
        nix_layer_pipeline::build_for_registry(&req, compression, &nix_layer_pipeline::Silent, &remote)?;
    let image = &built.image;
    let verified: Vec<Verified> = built.blobs.iter().flatten().map(Verified).collect();
    let remote_layers: Vec<Remote> = image
        .layers()
        .iter()
        .zip(&built.blobs)
        .filter(|(_, b)| b.is_none())
        .map(|(info, _)| Remote(info.clone()))
        .collect();
    let config = BytesBlob::new(image.config().bytes().to_vec());
    let mut sources: Vec<&dyn BlobSource> = vec![&config];
    sources.extend(verified.iter().map(|v| v as &dyn BlobSource));
    sources.extend(remote_layers.iter().map(|r| r as &dyn BlobSource));
    let mount_from: Vec<&str> = (cache_repo.repository != destination.repository)
        .then_some(cache_repo.repository.as_str())
        .into_iter()
        .collect();
    let upload = ImageUpload {
        blobs: &sources,
        manifest: image.manifest().bytes(),
        media_type: image.manifest().media_type(),
        mount_from: &mount_from,
    };
    let present = if cache_repo.repository == destination.repository {
        confirmed.into_inner().expect("confirmed blobs")
    } else {
        HashSet::new()
    };
    let report = client.push_image_known(&destination, &tags, &upload, &present)?;
    let new: BTreeMap<String, CachedLayer> = built
        .store_keys
        .iter()
        .map(|(key, info)| {
            let layer = CachedLayer {
                digest: info.digest,
                diff_id: info.diff_id,
                size: info.size,
                media_type: info.media_type().into(),
            };
            (key.clone(), layer)
        })
        .collect();
    client
        .write_layer_cache(&cache_repo, &new, CACHE_INDEX_ENTRIES)
        .context("the image is pushed, but the registry's layer index could not be updated")?;
    if want_sbom {
        push_sbom(&client, &destination, &req, image)?;
    }
    summarize(&destination, &report, remote_layers.len(), verbose || summary.layers.is_empty())
}

/// The SBOM of the image's closure as a referrer of its manifest.
fn push_sbom(
    client: &Client,
    destination: &Reference,
    req: &nix_layer_pipeline::ImageRequest,
    image: &nix_layer_image::Image,
) -> Result<()> {
    use nix_layer_sbom::{Format, Sbom, SbomTime};
    let sbom_image = nix_layer_sbom::Image {
        name: format!("{}/{}", destination.registry, destination.repository),
        tag: destination.tag.clone(),
        created: SbomTime::parse(
            &nix_layer_image::Timestamp::from_epoch(req.created.epoch).map_err(anyhow::Error::msg)?.rfc3339,
        )?,
        digest: Some(image.manifest().digest().to_string()),
        architecture: Some(req.architecture.clone()),
    };
    let doc = Sbom::new(&req.graph, req.roots.as_deref(), sbom_image)?.to_bytes(Format::CycloneDx);
    let subject = Descriptor::of(image.manifest().media_type(), image.manifest().bytes());
    let payload = BytesBlob::new(doc);
    let media = Format::CycloneDx.media_type();
    client.push_referrer(destination, &subject, media, &payload, media, &BTreeMap::new())?;
    Ok(())
}

/// Pushes the image of a docker-archive: each layer verified against the config's
/// diff_ids as it is read, gzipped for the registry; the config's bytes unchanged.
fn push_archive(client: &Client, file: &Path, destination: &Reference, tags: &[&str]) -> Result<PushReport> {
    let base = nix_layer_image::BaseImage::open(file)?;
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
    let name = format!("{}/{}", destination.registry, destination.repository);
    let reference = nix_layer_image::ImageRef::new(&name, destination.tag.as_deref().unwrap_or("latest"))?;
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
    Ok(client.push_image(destination, tags, &upload)?)
}

/// Pushes an image (or a multi-platform index) of an OCI layout, blobs as stored.
fn push_layout(
    client: &Client,
    dir: &Path,
    name: Option<&str>,
    destination: &Reference,
    tags: &[&str],
) -> Result<PushReport> {
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
    let digest = entry.digest().to_string();
    let bytes = read(&digest)?;
    let media_type = entry.media_type().to_string();
    let doc: serde_json::Value = serde_json::from_slice(&bytes)?;
    match doc["manifests"].as_array() {
        None => {
            let blobs = image_blobs(&doc)?;
            let sources: Vec<&dyn BlobSource> = blobs.iter().map(|b| b as &dyn BlobSource).collect();
            let upload =
                ImageUpload { blobs: &sources, manifest: &bytes, media_type: &media_type, mount_from: &[] };
            Ok(client.push_image(destination, tags, &upload)?)
        }
        Some(children) => {
            let mut parts = Vec::new();
            for child in children {
                let d = child["digest"].as_str().context("an index entry without digest")?;
                let child_bytes = read(d)?;
                let child_doc: serde_json::Value = serde_json::from_slice(&child_bytes)?;
                let media = child["mediaType"]
                    .as_str()
                    .unwrap_or("application/vnd.oci.image.manifest.v1+json")
                    .to_owned();
                parts.push((image_blobs(&child_doc)?, child_bytes, media));
            }
            let sources: Vec<Vec<&dyn BlobSource>> = parts
                .iter()
                .map(|(blobs, ..)| blobs.iter().map(|b| b as &dyn BlobSource).collect())
                .collect();
            let uploads: Vec<ImageUpload> = parts
                .iter()
                .zip(&sources)
                .map(|((_, manifest, media), s)| ImageUpload {
                    blobs: s,
                    manifest,
                    media_type: media,
                    mount_from: &[],
                })
                .collect();
            Ok(client.push_index(destination, tags, &uploads, &bytes, &media_type)?)
        }
    }
}

fn summarize(destination: &Reference, report: &PushReport, from_index: usize, verbose: bool) -> Result<()> {
    let line = format!(
        "pushed {}/{}@{}: {} blobs uploaded ({} bytes), {} mounted, {} already there ({} layers not even built)\n",
        destination.registry,
        destination.repository,
        report.manifest_digest,
        report.uploaded(),
        report.bytes_uploaded(),
        report.mounted(),
        report.blobs.len() - report.uploaded() - report.mounted(),
        from_index,
    );
    if verbose {
        eprint!("{line}");
    }
    crate::print_report(&format!("{}\n", report.manifest_digest))
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
    let mut manifests = Vec::new();
    for src in &a.sources {
        let r = Reference::parse(src)?;
        if (r.registry.as_str(), r.repository.as_str())
            != (destination.registry.as_str(), destination.repository.as_str())
        {
            bail!(
                "{src} is not in {}/{}: an index refers to manifests of its own repository",
                destination.registry,
                destination.repository
            );
        }
        let m = client.get_manifest(&r)?;
        if m.is_index() {
            bail!("{src} is already an index; give the per-platform images");
        }
        let (config, _) = m.blobs().with_context(|| format!("the manifest of {src} is not valid"))?;
        let mut bytes = Vec::new();
        client.fetch_blob(&r, &config.digest, &mut bytes)?;
        let doc = nix_layer_image::Document::from_bytes(m.bytes.clone(), &m.media_type);
        manifests.push(nix_layer_image::platform_descriptor(&doc, &bytes)?);
    }
    let kind = if a.docker {
        nix_layer_image::IndexKind::DockerManifestList
    } else {
        nix_layer_image::IndexKind::Oci
    };
    let index = nix_layer_image::platform_index(manifests, kind)?;
    let tags: Vec<&str> = a.tags.iter().map(String::as_str).collect();
    let mut all = tags.clone();
    all.extend(destination.tag.as_deref());
    let digest = client.push_manifest(&destination, &all, index.bytes(), index.media_type())?;
    crate::print_report(&format!("{digest}\n"))
}
