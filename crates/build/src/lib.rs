//! The build pipeline: closure graph → layer plan → layer blobs (in
//! parallel) → image config → output format, written atomically.
//!
//! Everything here is orchestration; the bytes are produced by the crates it
//! wires together (`nix-layer-plan`, `nix-layer-tar`, `nix-layer-blob`,
//! `nix-layer-image`). The command line lives in the `nix-layer` crate.

mod layers;
mod output;

use std::path::PathBuf;

use nix_layer_blob::{Compression, Digest, LayerBlob};
use nix_layer_graph::Graph;
use nix_layer_image::{BaseImage, ConfigSpec, HistoryEntry, ImageConfigInput, ImageRef};
use nix_layer_plan::{Family, Plan, Strategy};
use nix_layer_store::{StoreDir, StorePath};
use nix_layer_tar::{HostFiles, Ownership, TopLayerSpec};

pub use layers::LayerKind;
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
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Everything a build needs, already parsed and validated by the caller.
pub struct BuildRequest {
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
    pub format: OutputFormat,
    pub compression: Compression,
    pub config: ConfigSpec,
    pub contents: Vec<StorePath>,
    pub top_layer: TopLayerSpec,
    /// Whether the top-layer spec's `copy` entries may read outside the store.
    pub host_files: HostFiles,
    pub from_image: Option<PathBuf>,
    pub architecture: String,
    pub created: Timestamp,
    pub mtime: Timestamp,
    pub owner: Ownership,
    pub nix_db: bool,
    pub include_store_paths: bool,
    pub jobs: usize,
    pub cache: Option<PathBuf>,
    pub output: Output,
}

/// What a build produced, for the summary line and for tests.
#[derive(Debug)]
pub struct BuildSummary {
    pub image: String,
    pub layers: Vec<LayerSummary>,
    pub config_digest: Digest,
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
pub fn plan_image(req: &BuildRequest) -> Result<ImagePlan, Error> {
    let graph = image_graph(req)?;
    let base = req.from_image.as_deref().map(BaseImage::open).transpose()?;
    let base_layers = base.as_ref().map_or(0, |b| b.layers.len());
    let budget = nix_layer_plan::store_layer_budget(req.max_layers, base_layers)?;
    let store_layers = if req.include_store_paths && !graph.is_empty() {
        match &req.family {
            Some(family) => nix_layer_plan::plan_with_family(&graph, req.strategy, budget, family)?,
            None => nix_layer_plan::plan(&graph, req.strategy, budget)?,
        }
    } else {
        Plan { layers: Vec::new() }
    };
    Ok(ImagePlan { graph, store_layers, base })
}

/// The part of the graph that goes into the image, after checking that every
/// path the contents, config and top layer name is in it.
fn image_graph(req: &BuildRequest) -> Result<Graph, Error> {
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

/// Runs the whole build.
pub fn build(req: &BuildRequest, progress: &dyn Progress) -> Result<BuildSummary, Error> {
    let plan = plan_image(req)?;
    let staging = output::Staging::new(&req.output)?;
    let compression = match req.format {
        // docker-archive holds uncompressed layers only.
        OutputFormat::DockerArchive => Compression::None,
        _ => req.compression,
    };
    let store_bytes: u64 = (0..plan.graph.len()).map(|i| plan.graph.info(i).nar_size).sum();
    let base_count = plan.base.as_ref().map_or(0, |b| b.layers.len());
    progress.start(base_count + plan.store_layers.layers.len() + 1, store_bytes);

    let uncompressed = compression == Compression::None;
    let base = layers::base_layers(req, &plan, staging.blob_dir(), uncompressed, progress)?;
    let top = layers::top_layer(req, &plan, staging.blob_dir(), compression, progress)?;
    // A docker-archive file without a cache is written in place: one read of
    // the store, one write of the archive.
    let direct = match (&req.output, req.format, &req.cache) {
        (Output::Path(dest), OutputFormat::DockerArchive, None) => Some(dest),
        _ => None,
    };
    let (store, direct_archive) = match direct {
        Some(_) => {
            let sizes = layers::store_layer_lengths(req, &plan)?;
            let archive = output::DirectArchive::create(&staging, &base, &sizes, &top, req.mtime.epoch)?;
            (layers::store_layers(req, &plan, &archive, progress)?, Some(archive))
        }
        None => {
            let key = |paths: &[StorePath]| layers::store_layer_key(req, &plan, paths, compression);
            let sink = layers::BlobSink {
                dir: staging.blob_dir(),
                cache: req.cache.as_deref().map(nix_layer_blob::LayerCache::open).transpose()?,
                compression,
                key: &key,
            };
            (layers::store_layers(req, &plan, &sink, progress)?, None)
        }
    };
    let produced: Vec<layers::Produced> = base.into_iter().chain(store).chain([top]).collect();

    let history = produced
        .iter()
        .map(|l| HistoryEntry {
            created: req.created.rfc3339.clone(),
            comment: l.comment.clone(),
            created_by: None,
        })
        .collect();
    let config_json = nix_layer_image::image_config_json(&ImageConfigInput {
        created: req.created.rfc3339.clone(),
        architecture: req.architecture.clone(),
        os: "linux".into(),
        config: effective_config(req, plan.base.as_ref()),
        diff_ids: produced.iter().map(|l| l.diff_id).collect(),
        history,
    });
    let config_digest = Digest::of(&config_json);
    let tag = req.tag.clone().unwrap_or_else(|| default_tag(&config_json));
    let image = ImageRef::new(&req.name, &tag)?.to_string();

    match (direct_archive, direct) {
        (Some(archive), Some(dest)) => {
            archive.finish(&produced, &config_json, std::slice::from_ref(&image), dest)?
        }
        _ => {
            let blobs: Vec<&LayerBlob> = produced.iter().filter_map(|l| l.blob.as_ref()).collect();
            output::write(req, &staging, &blobs, &config_json, &image, &tag, req.mtime.epoch)?;
        }
    }
    progress.finish();
    Ok(BuildSummary {
        image,
        layers: produced
            .iter()
            .map(|l| LayerSummary { kind: l.kind.clone(), diff_id: l.diff_id, size: l.size, paths: l.paths })
            .collect(),
        config_digest,
        cache_hits: produced.iter().filter(|l| l.cached).count(),
    })
}

/// The config the image gets: ours, with Env inherited from the base image
/// the way dockerTools does it.
fn effective_config(req: &BuildRequest, base: Option<&BaseImage>) -> ConfigSpec {
    let mut config = req.config.clone();
    if let Some(base) = base {
        let base_env: Vec<String> = base
            .config
            .pointer("/config/Env")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let env = nix_layer_image::inherit_env(&base_env, config.Env.as_deref().unwrap_or(&[]));
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
