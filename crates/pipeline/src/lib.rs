//! The build pipeline: closure graph → layer plan → layer blobs (in
//! parallel) → image config → output format, written atomically.
//!
//! Everything here is orchestration; the bytes are produced by the crates it
//! wires together (`nix-layer-plan`, `nix-layer-tar`, `nix-layer-blob`,
//! `nix-layer-image`). The command line lives in the `nix-layer` crate.

mod layers;
mod output;
pub mod sbom;

use std::collections::BTreeMap;
use std::path::PathBuf;

use nix_layer_blob::{BlobInfo, Compression, Digest, LayerBlob};
use nix_layer_graph::Graph;
use nix_layer_image::{BaseImage, ConfigSpec, HistoryEntry, Image, ImageConfigInput, ImageRef};
use nix_layer_plan::{Family, Plan, Strategy};
use nix_layer_store::{StoreDir, StorePath};
use nix_layer_tar::{HostFiles, Ownership, TopLayerSpec};

use layers::{Layers, Produced};

pub use layers::{LayerKind, LocalDiffId, Remote};
pub use nix_layer_image::Timestamp;
pub use output::{Output, OutputFormat};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Graph(#[from] nix_layer_graph::Error),
    #[error(transparent)]
    Plan(#[from] nix_layer_plan::Error),
    #[error(transparent)]
    Tar(#[from] nix_layer_tar::Error),
    #[error(transparent)]
    Blob(#[from] nix_layer_blob::Error),
    #[error(transparent)]
    Image(#[from] nix_layer_image::Error),
    #[error(transparent)]
    NixDb(#[from] nix_layer_nixdb::Error),
    #[error("{what} refers to {path}, which is not in the closure graph; add it to the graph's roots (or to --closure)")]
    NotInGraph { what: String, path: String },
    #[error("--nix-db needs the NAR hash of every path, but the graph has none for {0}; pass a graph with narHash (exportReferencesGraph, nix path-info --json) or use --closure")]
    NoNarHash(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(
        "store layer {layer} (from {first}) changed while it was read; is something modifying the store?"
    )]
    Changed {
        layer: usize,
        first: String,
        #[source]
        cause: Box<Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A build: the image, and how it is written. Push and load send an [`ImageRequest`]
/// elsewhere and take no [`WriteRequest`].
pub struct BuildRequest {
    pub image: ImageRequest,
    pub write: WriteRequest,
}

/// What the image is (and how its layers are made), already parsed and validated by the
/// caller; nothing here depends on where it goes.
pub struct ImageRequest {
    pub graph: Graph,
    /// Restrict the image to the closure of these paths (plus contents and
    /// paths named by the config or top layer). `None`: the whole graph.
    pub roots: Option<Vec<StorePath>>,
    pub store_dir: StoreDir,
    /// The image name, validated; its tag defaults to a hash of the config.
    pub name: String,
    pub tag: Option<String>,
    pub max_layers: usize,
    pub strategy: Strategy,
    /// Sibling closures (package sets, other images) the `shared` strategy
    /// plans against, so that every image of the family gets the same layers.
    pub family: Option<Family>,
    pub config: ConfigSpec,
    pub contents: Vec<StorePath>,
    pub top_layer: TopLayerSpec,
    /// Whether the top-layer spec's `copy` entries may read outside the store.
    pub host_files: HostFiles,
    pub from_image: Option<PathBuf>,
    pub architecture: String,
    /// CPU variant (`v8`, `v7`), for the config and the index's platform.
    pub variant: Option<String>,
    /// `org.opencontainers.image.*` and other annotations for the manifest.
    pub annotations: BTreeMap<String, String>,
    pub created: Timestamp,
    pub mtime: Timestamp,
    pub owner: Ownership,
    pub nix_db: bool,
    pub include_store_paths: bool,
    pub jobs: usize,
    pub cache: Option<PathBuf>,
}

/// How a build writes the image.
pub struct WriteRequest {
    pub format: OutputFormat,
    pub compression: Compression,
    /// A CycloneDX SBOM of the closure beside the image (`IMAGE.cdx.json`), or in an OCI
    /// layout as a referrer of the image.
    pub sbom: bool,
    pub output: Output,
}

/// Whether the engine reading a stream holds a layer chain (a layer's diff_id with those
/// below it, bottom first).
pub type Present<'a> = dyn Fn(&[Digest]) -> bool + 'a;

/// What a build produced, for the summary line and for tests.
#[derive(Debug)]
pub struct BuildSummary {
    pub image: String,
    pub layers: Vec<LayerSummary>,
    pub config_digest: Digest,
    pub manifest_digest: Digest,
    pub cache_hits: usize,
}

#[derive(Debug)]
pub struct LayerSummary {
    pub kind: LayerKind,
    pub diff_id: Digest,
    pub size: u64,
    pub paths: usize,
}

/// Hooks for a progress display; every method has a silent default.
pub trait Progress: Sync {
    fn start(&self, _layers: usize, _bytes: u64) {}
    fn layer_done(&self, _kind: &LayerKind, _bytes: u64, _cached: bool) {}
    fn finish(&self) {}
}

/// No progress output.
pub struct Silent;
impl Progress for Silent {}

/// The layers of an image, bottom first, before they are written.
pub struct ImagePlan {
    pub graph: Graph,
    pub store_layers: Plan,
    pub base: Option<BaseImage>,
}

/// Resolves the graph, the base image and the store-layer plan.
pub fn plan_image(req: &ImageRequest) -> Result<ImagePlan, Error> {
    let graph = image_graph(req)?;
    let base = req.from_image.as_deref().map(BaseImage::open).transpose()?;
    let base_layers = base.as_ref().map_or(0, |b| b.layers.len());
    let budget = nix_layer_plan::store_layer_budget(req.max_layers, base_layers)?;
    let store_layers = if req.include_store_paths && !graph.is_empty() {
        nix_layer_plan::plan(&graph, req.strategy, budget, req.family.as_ref())?
    } else {
        Plan { layers: Vec::new() }
    };
    Ok(ImagePlan { graph, store_layers, base })
}

/// The part of the graph that goes into the image, after checking that every
/// path the contents, config and top layer name is in it.
fn image_graph(req: &ImageRequest) -> Result<Graph, Error> {
    let g = &req.graph;
    let index = |what: &str, p: &StorePath| {
        g.index_of(p).ok_or_else(|| Error::NotInGraph { what: what.to_owned(), path: p.to_string() })
    };
    let mut wanted = Vec::new();
    for p in &req.contents {
        wanted.push(index("--contents", p)?);
    }
    for p in req.top_layer.referenced_paths(&req.store_dir) {
        wanted.push(index("the top-layer spec", &p)?);
    }
    let config_json = serde_json::to_string(&req.config).unwrap_or_default();
    for p in req.store_dir.paths_in(&config_json) {
        wanted.push(index("the image config", &p)?);
    }
    let Some(roots) = &req.roots else {
        return Ok(g.clone());
    };
    for r in roots {
        wanted.push(index("--root", r)?);
    }
    let keep = g.closure(&wanted);
    Ok(g.subgraph(&keep)?)
}

/// Builds the image as a docker-archive stream into `out`, as `-o -` does. With
/// `present`, the bytes of the layers the reader holds already are left out, from the
/// bottom up to the first it lacks: `present(chain)` says whether the engine reading the
/// stream holds the layer chain `chain` (a layer's diff_id with those below it), as
/// `docker load` then takes it from its store.
pub fn stream(
    req: &ImageRequest,
    progress: &dyn Progress,
    out: &mut dyn std::io::Write,
    present: Option<&Present<'_>>,
) -> Result<BuildSummary, Error> {
    run(req, progress, &output::Staging::new(&Output::Stdout)?, None, |layers, _, assemble| {
        output::docker_archive_stream(layers, assemble, out, present)
    })
    .map(|(_, summary)| summary)
}

/// An image made for a registry: its value, and for each layer its verified blob, or
/// `None` where the registry already holds it. Blobs live until this is dropped.
pub struct Built {
    pub image: Image,
    pub blobs: Vec<Option<LayerBlob>>,
    /// Every store layer's cache key with its description, for the registry's layer index.
    pub store_keys: Vec<(String, BlobInfo)>,
    _staging: output::Staging,
}

/// Produces the image's layers as blobs compressed with `compression` without writing an
/// output: what `nix-layer push` sends. A store layer for which `remote(cache key)` gives a
/// description is not produced at all (the registry holds it).
pub fn build_for_registry(
    req: &ImageRequest,
    compression: Compression,
    progress: &dyn Progress,
    remote: &layers::Remote,
) -> Result<(Built, BuildSummary), Error> {
    let staging = output::Staging::new(&Output::Stdout)?;
    let (built, summary) = run(req, progress, &staging, Some(remote), |layers, _, assemble| {
        let produced = output::all_blobs(layers, compression)?;
        let image = assemble(&produced.iter().collect::<Vec<_>>())?;
        let keys = layers
            .store_paths()
            .iter()
            .zip(produced.iter().filter(|l| matches!(l.kind, LayerKind::Store(_))))
            .map(|(paths, l)| (layers.cache_key(paths, compression).as_str().to_owned(), l.info.clone()))
            .collect();
        Ok((image, produced.into_iter().map(|l| l.blob).collect::<Vec<_>>(), keys))
    })?;
    let (image, blobs, store_keys) = built;
    Ok((Built { image, blobs, store_keys, _staging: staging }, summary))
}

/// Runs the whole build.
pub fn build(req: &BuildRequest, progress: &dyn Progress) -> Result<BuildSummary, Error> {
    let WriteRequest { format, compression, sbom, ref output } = req.write;
    output::check(format, output)?;
    if sbom && *output == Output::Stdout {
        return Err(Error::Invalid("--sbom writes the SBOM beside the image: give -o PATH, not -o -".into()));
    }
    let staging = output::Staging::new(output)?;
    let (_, summary) = run(&req.image, progress, &staging, None, |layers, staging, assemble| {
        let image = match (format, output) {
            (OutputFormat::DockerArchive, Output::Stdout) => {
                let stdout = std::io::stdout();
                output::docker_archive_stream(layers, assemble, &mut stdout.lock(), None)
            }
            (OutputFormat::DockerArchive, Output::Path(dest)) => {
                output::docker_archive_file(layers, staging, dest, assemble)
            }
            (OutputFormat::Oci, Output::Path(dir)) => {
                output::oci_layout(layers, staging, dir, compression, assemble)
            }
            (OutputFormat::Oci, Output::Stdout) => unreachable!("refused by output::check"),
            (OutputFormat::OciArchive, out) => {
                output::oci_archive(layers, staging, out, compression, assemble)
            }
        }?;
        if let (true, Output::Path(p)) = (sbom, output) {
            sbom::attach(&req.image, layers.plan, &image, p, format == OutputFormat::Oci)?;
        }
        Ok(image)
    })?;
    Ok(summary)
}

/// Plans the image, then lets `write` produce its layers and write it. Every writer names
/// its layers to one assembler, which makes the image value (config, manifest) they all
/// write; the summary is taken from it too.
fn run<T>(
    req: &ImageRequest,
    progress: &dyn Progress,
    staging: &output::Staging,
    remote: Option<&layers::Remote>,
    write: impl FnOnce(&Layers, &output::Staging, &output::Assemble) -> Result<T, Error>,
) -> Result<(T, BuildSummary), Error> {
    let plan = plan_image(req)?;
    let store_bytes: u64 = (0..plan.graph.len()).map(|i| plan.graph.info(i).nar_size).sum();
    let base_count = plan.base.as_ref().map_or(0, |b| b.layers.len());
    progress.start(base_count + plan.store_layers.layers.len() + 1, store_bytes);
    let layers = Layers { req, plan: &plan, blob_dir: staging.blob_dir(), progress, remote };
    let made = std::cell::RefCell::new(None);
    let assemble = |produced: &[&Produced]| -> Result<Image, Error> {
        let image = assemble_image(req, &plan, produced)?;
        *made.borrow_mut() = Some((image.clone(), summarize(produced)));
        Ok(image)
    };
    let written = write(&layers, staging, &assemble)?;
    progress.finish();
    let (image, (layers, cache_hits)) = made.into_inner().expect("every writer assembles the image");
    let summary = BuildSummary {
        image: image.reference().to_string(),
        layers,
        config_digest: image.config().digest(),
        manifest_digest: image.manifest().digest(),
        cache_hits,
    };
    Ok((written, summary))
}

fn summarize(produced: &[&Produced]) -> (Vec<LayerSummary>, usize) {
    let layers = produced
        .iter()
        .map(|l| LayerSummary {
            kind: l.kind.clone(),
            diff_id: l.info.diff_id,
            size: l.info.uncompressed_size,
            paths: l.paths,
        })
        .collect();
    (layers, produced.iter().filter(|l| l.cached).count())
}

/// The image value for `produced` (bottom first): config with one history entry per
/// layer, the base image's Env inherited, annotations on the manifest, and the tag (when
/// none was given) derived from the config, as dockerTools derives it from its inputs.
fn assemble_image(req: &ImageRequest, plan: &ImagePlan, produced: &[&Produced]) -> Result<Image, Error> {
    let input = ImageConfigInput {
        created: req.created.rfc3339.clone(),
        architecture: req.architecture.clone(),
        os: "linux".into(),
        variant: req.variant.clone(),
        config: effective_config(req, plan.base.as_ref()),
        history: produced
            .iter()
            .map(|l| HistoryEntry {
                created: req.created.rfc3339.clone(),
                comment: l.comment.clone(),
                created_by: None,
            })
            .collect(),
    };
    let infos: Vec<_> = produced.iter().map(|l| l.info.clone()).collect();
    let provisional = ImageRef::new(&req.name, req.tag.as_deref().unwrap_or("latest"))?;
    // OCI annotations given as config labels are on the manifest too, where registries
    // read them (GitHub's links a package to its repository from there); explicit
    // annotations win.
    let mut annotations: BTreeMap<String, String> = input
        .config
        .Labels
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("org.opencontainers.image."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.extend(req.annotations.clone());
    let image = Image::new(provisional, &input, infos, &annotations)?;
    match &req.tag {
        Some(_) => Ok(image),
        None => {
            let tag = default_tag(image.config().bytes());
            Ok(image.renamed(ImageRef::new(&req.name, &tag)?))
        }
    }
}

/// The config the image gets: ours, with Env inherited from the base image
/// the way dockerTools does it.
fn effective_config(req: &ImageRequest, base: Option<&BaseImage>) -> ConfigSpec {
    let mut config = req.config.clone();
    if let Some(base) = base {
        let env = nix_layer_image::inherit_env(&base.env(), config.Env.as_deref().unwrap_or(&[]));
        if !env.is_empty() {
            config.Env = Some(env);
        }
    }
    config
}

/// dockerTools tags untagged images with a hash of their inputs; ours is the
/// config's hash (it pins every layer), in Nix's base-32, 32 characters.
fn default_tag(config_json: &[u8]) -> String {
    let digest = Digest::of(config_json);
    let mut s = nix_layer_store::nix32_encode(digest.bytes());
    s.truncate(32);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tag_is_stable_nix32() {
        let t = default_tag(b"{}");
        assert_eq!(t.len(), 32);
        assert_eq!(t, default_tag(b"{}"));
        assert_ne!(t, default_tag(b"{ }"));
    }
}
