//! Produces the layers of an image: base layers and the top layer as blobs
//! in the staging directory, store layers in parallel into a [`LayerSink`].

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use nix_layer_blob::{CacheKey, Compression, Digest, LayerBlob, LayerCache};
use nix_layer_nixdb::Registration;
use nix_layer_store::StorePath;
use nix_layer_tar::{GeneratedTree, StoreLayerOptions, TopLayerInput};
use rayon::prelude::*;

use crate::{io_err, BuildRequest, Error, ImagePlan, Progress};

/// Bump when the bytes of a layer for the same inputs change, so that old
/// cache entries are never served for the new format.
const LAYER_FORMAT: &[u8] = b"nix-layer store layer v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerKind {
    /// Layer `n` (0-based) of the base image.
    Base(usize),
    /// Store layer `n` (0-based) of the plan.
    Store(usize),
    /// The customisation layer on top.
    Top,
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerKind::Base(n) => write!(f, "base layer {}", n + 1),
            LayerKind::Store(n) => write!(f, "store layer {}", n + 1),
            LayerKind::Top => f.write_str("top layer"),
        }
    }
}

/// One finished layer. `blob` is `None` when the layer went straight into a
/// docker-archive and exists nowhere else.
pub(crate) struct Produced {
    pub kind: LayerKind,
    pub diff_id: Digest,
    pub size: u64,
    pub blob: Option<LayerBlob>,
    pub comment: String,
    pub paths: usize,
    pub cached: bool,
}

/// Where store layers go: content-addressed blob files (optionally via the
/// cache), or slots of a docker-archive being written in place.
pub(crate) trait LayerSink: Sync {
    /// Writes store layer `index`; returns its diff_id, uncompressed size,
    /// blob (if it is one) and whether it came from the cache.
    fn write(
        &self,
        index: usize,
        paths: &[StorePath],
        produce: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(Digest, u64, Option<LayerBlob>, bool), Error>;
}

/// Blob files in a directory, or in the layer cache when there is one.
pub(crate) struct BlobSink<'a> {
    pub dir: &'a Path,
    pub cache: Option<LayerCache>,
    pub compression: Compression,
    pub key: &'a (dyn Fn(&[StorePath]) -> CacheKey + Sync),
}

impl LayerSink for BlobSink<'_> {
    fn write(
        &self,
        _index: usize,
        paths: &[StorePath],
        produce: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(Digest, u64, Option<LayerBlob>, bool), Error> {
        let (blob, hit) = match &self.cache {
            Some(cache) => cache.get_or_insert(&(self.key)(paths), self.compression, produce)?,
            None => (nix_layer_blob::write_blob(self.dir, self.compression, produce)?, false),
        };
        Ok((blob.diff_id, blob.uncompressed_size, Some(blob), hit))
    }
}

/// The base image's layers as blobs in `dir` (uncompressed when the output
/// needs tar, as docker-archive does).
pub(crate) fn base_layers(
    req: &BuildRequest,
    plan: &ImagePlan,
    dir: &Path,
    uncompressed: bool,
    progress: &dyn Progress,
) -> Result<Vec<Produced>, Error> {
    let Some(base) = &plan.base else { return Ok(Vec::new()) };
    let from = req.from_image.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    (0..base.layers.len())
        .map(|i| {
            let blob = base.materialize_layer(i, dir, uncompressed)?;
            progress.layer_done(&LayerKind::Base(i), blob.uncompressed_size, false);
            Ok(Produced {
                kind: LayerKind::Base(i),
                diff_id: blob.diff_id,
                size: blob.uncompressed_size,
                blob: Some(blob),
                comment: format!("base layer {} of {from}", i + 1),
                paths: 0,
                cached: false,
            })
        })
        .collect()
}

/// Writes every store layer of the plan into `sink`, in parallel on
/// `req.jobs` threads, and returns them in plan order.
pub(crate) fn store_layers(
    req: &BuildRequest,
    plan: &ImagePlan,
    sink: &dyn LayerSink,
    progress: &dyn Progress,
) -> Result<Vec<Produced>, Error> {
    let opts = StoreLayerOptions { owner: req.owner.clone(), mtime: req.mtime.epoch };
    let layers = &plan.store_layers.layers;
    let graph = &plan.graph;
    let nar_bytes = |paths: &[StorePath]| -> u64 {
        paths.iter().filter_map(|p| graph.index_of(p)).map(|i| graph.info(i).nar_size).sum()
    };
    // Biggest first: with one task per layer this keeps every core busy to the end.
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(nar_bytes(&layers[i])));
    let pool = worker_pool(req.jobs)?;
    let write_one = |i: usize| -> Result<Produced, Error> {
        let paths = &layers[i];
        let produce = |w: &mut dyn Write| -> io::Result<()> {
            nix_layer_tar::write_store_layer(paths, &opts, w).map(drop).map_err(io::Error::other)
        };
        let (diff_id, size, blob, cached) = sink.write(i, paths, &produce)?;
        progress.layer_done(&LayerKind::Store(i), nar_bytes(paths), cached);
        Ok(Produced {
            kind: LayerKind::Store(i),
            diff_id,
            size,
            blob,
            comment: paths_comment(paths),
            paths: paths.len(),
            cached,
        })
    };
    let mut out: Vec<Produced> = pool.install(|| {
        order.par_iter().with_max_len(1).map(|&i| write_one(i)).collect::<Result<Vec<_>, Error>>()
    })?;
    out.sort_by_key(|p| match p.kind {
        LayerKind::Store(i) => i,
        _ => unreachable!("only store layers here"),
    });
    Ok(out)
}

fn worker_pool(jobs: usize) -> Result<rayon::ThreadPool, Error> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {jobs} worker threads: {e}")))
}

/// The exact byte length of every store layer, from `lstat` alone (in
/// parallel: on large closures this pass is not free).
pub(crate) fn store_layer_lengths(req: &BuildRequest, plan: &ImagePlan) -> Result<Vec<u64>, Error> {
    let opts = StoreLayerOptions { owner: req.owner.clone(), mtime: req.mtime.epoch };
    let layers = &plan.store_layers.layers;
    worker_pool(req.jobs)?.install(|| {
        layers
            .par_iter()
            .with_max_len(1)
            .map(|paths| nix_layer_tar::store_layer_len(paths, &opts).map_err(Error::from))
            .collect()
    })
}

/// The history comment dockerTools writes: the layer's store paths.
fn paths_comment(paths: &[StorePath]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("'{p}'")).collect();
    format!("store paths: [{}]", quoted.join(", "))
}

/// A store layer's bytes are fixed by its ordered paths (store paths are
/// immutable; the NAR hash guards against a path rebuilt with other bytes),
/// the tar settings and the compressor.
pub(crate) fn store_layer_key(
    req: &BuildRequest,
    plan: &ImagePlan,
    paths: &[StorePath],
    c: Compression,
) -> CacheKey {
    let settings = format!(
        "{} {} {} {} {} {}",
        req.owner.uid,
        req.owner.gid,
        req.owner.uname,
        req.owner.gname,
        req.mtime.epoch,
        c.as_str()
    );
    let mut parts: Vec<Vec<u8>> = vec![LAYER_FORMAT.to_vec(), settings.into_bytes()];
    for p in paths {
        let hash = plan
            .graph
            .index_of(p)
            .and_then(|i| plan.graph.info(i).nar_hash)
            .map(|h| h.to_base16())
            .unwrap_or_default();
        parts.push(format!("{p} {hash}").into_bytes());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    CacheKey::new(&refs)
}

/// The customisation layer: merged contents, the top-layer spec, and the Nix
/// database when asked for.
pub(crate) fn top_layer(
    req: &BuildRequest,
    plan: &ImagePlan,
    dir: &Path,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<Produced, Error> {
    let db_dir =
        tempfile::tempdir().map_err(io_err("cannot create a temporary directory for the Nix database"))?;
    let mut generated = Vec::new();
    if req.nix_db {
        write_nix_db(plan, db_dir.path(), req.mtime.epoch)?;
        generated.push(GeneratedTree { path: "/nix/var/nix/db".into(), source: db_dir.path().to_path_buf() });
    }
    let input = TopLayerInput {
        contents: &req.contents,
        spec: &req.top_layer,
        generated: &generated,
        store_dir: &req.store_dir,
        host_files: req.host_files,
        mtime: req.mtime.epoch,
    };
    let blob = nix_layer_blob::write_blob(dir, compression, |w| {
        nix_layer_tar::write_top_layer(&input, w).map(drop).map_err(io::Error::other)
    })?;
    progress.layer_done(&LayerKind::Top, blob.uncompressed_size, false);
    Ok(Produced {
        kind: LayerKind::Top,
        diff_id: blob.diff_id,
        size: blob.uncompressed_size,
        blob: Some(blob),
        comment: "customisation layer".into(),
        paths: 0,
        cached: false,
    })
}

fn write_nix_db(plan: &ImagePlan, dir: &Path, time: u64) -> Result<(), Error> {
    let g = &plan.graph;
    let mut regs = Vec::with_capacity(g.len());
    for i in 0..g.len() {
        let info = g.info(i);
        let nar_hash = info.nar_hash.ok_or_else(|| Error::NoNarHash(info.path.to_string()))?;
        let mut references: Vec<&StorePath> = info.references.iter().collect();
        if info.self_reference {
            references.push(&info.path);
        }
        regs.push(Registration {
            path: &info.path,
            nar_hash,
            nar_size: info.nar_size,
            references,
            deriver: info.deriver.as_deref(),
        });
    }
    nix_layer_nixdb::write_db(dir, &regs, time as i64)?;
    Ok(())
}
