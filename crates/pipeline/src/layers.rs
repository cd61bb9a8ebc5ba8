//! Produces an image's layers: base layers copied in and verified, store layers in
//! parallel (as blobs, through the cache, straight into docker-archive slots, or as a
//! bounded stream), and the top layer.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Condvar, Mutex};

use nix_layer_blob::{BlobInfo, CacheKey, Compression, Digest, HashingWriter, LayerBlob, LayerCache};
use nix_layer_image::SlotArchive;
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

/// One finished layer: what the image says about it, and its verified blob unless it
/// went straight into a docker-archive (or a stream) and exists nowhere else.
pub(crate) struct Produced {
    pub kind: LayerKind,
    pub info: BlobInfo,
    pub blob: Option<LayerBlob>,
    pub comment: String,
    pub paths: usize,
    pub cached: bool,
}

impl Produced {
    fn from_blob(kind: LayerKind, blob: LayerBlob, comment: String, paths: usize, cached: bool) -> Self {
        Produced { kind, info: blob.info().clone(), blob: Some(blob), comment, paths, cached }
    }

    /// An uncompressed layer that has no blob of its own.
    fn unstored(kind: LayerKind, diff_id: Digest, size: u64, comment: String, paths: usize) -> Self {
        let info = BlobInfo {
            diff_id,
            uncompressed_size: size,
            digest: diff_id,
            size,
            compression: Compression::None,
        };
        Produced { kind, info, blob: None, comment, paths, cached: false }
    }
}

/// Everything layer production needs, borrowed from the build.
pub(crate) struct Layers<'a> {
    pub req: &'a BuildRequest,
    pub plan: &'a ImagePlan,
    /// Where blobs that are not cached are written (the build's staging directory).
    pub blob_dir: &'a Path,
    pub progress: &'a dyn Progress,
    /// A registry's record of layers it already holds, by cache key (see [`crate::push`]):
    /// such a layer is not produced at all.
    pub remote: Option<&'a Remote<'a>>,
}

/// Looks a store layer's cache key up in a registry's layer index: the layer's description
/// if the registry holds its blob.
pub type Remote<'a> = dyn Fn(&str) -> Option<BlobInfo> + Sync + 'a;

impl Layers<'_> {
    fn store_opts(&self) -> StoreLayerOptions {
        StoreLayerOptions { owner: self.req.owner.clone(), mtime: self.req.mtime.epoch }
    }

    pub fn store_paths(&self) -> &[Vec<StorePath>] {
        &self.plan.store_layers.layers
    }

    fn nar_bytes(&self, paths: &[StorePath]) -> u64 {
        let g = &self.plan.graph;
        paths.iter().filter_map(|p| g.index_of(p)).map(|i| g.info(i).nar_size).sum()
    }

    /// Writes store layer `i`'s tar to `w`.
    fn write_store(&self, i: usize, w: &mut dyn Write) -> io::Result<()> {
        nix_layer_tar::write_store_layer(&self.store_paths()[i], &self.store_opts(), w)
            .map(drop)
            .map_err(io::Error::other)
    }

    fn store_done(
        &self,
        i: usize,
        info: Result<(BlobInfo, Option<LayerBlob>, bool), Error>,
    ) -> Result<Produced, Error> {
        let (info, blob, cached) = info?;
        let paths = &self.store_paths()[i];
        self.progress.layer_done(&LayerKind::Store(i), self.nar_bytes(paths), cached);
        Ok(Produced {
            kind: LayerKind::Store(i),
            info,
            blob,
            comment: paths_comment(paths),
            paths: paths.len(),
            cached,
        })
    }

    /// Runs `f` on every store layer on `req.jobs` threads, biggest first (with one task
    /// per layer this keeps every core busy to the end); results in plan order.
    fn each_store_layer<T: Send>(
        &self,
        f: impl Fn(usize) -> Result<T, Error> + Sync,
    ) -> Result<Vec<T>, Error> {
        let n = self.store_paths().len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.nar_bytes(&self.store_paths()[i])));
        let mut out: Vec<(usize, T)> = worker_pool(self.req.jobs)?.install(|| {
            order.par_iter().with_max_len(1).map(|&i| f(i).map(|t| (i, t))).collect::<Result<Vec<_>, Error>>()
        })?;
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    /// The base image's layers as verified blobs (uncompressed when the output needs tar,
    /// as docker-archive does).
    pub fn base(&self, uncompressed: bool) -> Result<Vec<Produced>, Error> {
        let Some(base) = &self.plan.base else { return Ok(Vec::new()) };
        // Named by content, not by where the base was read from: the same base gives the
        // same image bytes from any path, and a base in the store is not a reference.
        (0..base.layers.len())
            .map(|i| {
                let blob = base.materialize_layer(i, self.blob_dir, uncompressed)?;
                let comment = format!("base layer {} ({})", i + 1, blob.diff_id);
                self.progress.layer_done(&LayerKind::Base(i), blob.uncompressed_size, false);
                Ok(Produced::from_blob(LayerKind::Base(i), blob, comment, 0, false))
            })
            .collect()
    }

    /// Every store layer as a blob: from the cache when there is one (a hit is verified
    /// before it is used), else written into the staging directory.
    pub fn store_blobs(&self, compression: Compression) -> Result<Vec<Produced>, Error> {
        let cache = self.req.cache.as_deref().map(LayerCache::open).transpose()?;
        self.each_store_layer(|i| {
            let key = self.cache_key(&self.store_paths()[i], compression);
            if let Some(info) =
                self.remote.and_then(|r| r(key.as_str())).filter(|b| b.compression == compression)
            {
                return self.store_done(i, Ok((info, None, true)));
            }
            let produce = |w: &mut dyn Write| self.write_store(i, w);
            let result = match &cache {
                Some(cache) => {
                    cache.get_or_insert(&key, compression, self.blob_dir, produce).map_err(Error::from)
                }
                None => nix_layer_blob::write_blob(self.blob_dir, compression, produce)
                    .map(|b| (b, false))
                    .map_err(Error::from),
            };
            self.store_done(i, result.map(|(blob, hit)| (blob.info().clone(), Some(blob), hit)))
        })
    }

    /// Every store layer written straight into its slot of `archive` (slot `first + i`),
    /// which was sized for `lengths`.
    pub fn store_into_slots(
        &self,
        archive: &SlotArchive,
        first: usize,
        lengths: &[u64],
    ) -> Result<Vec<Produced>, Error> {
        self.each_store_layer(|i| {
            let result = archive
                .write_layer(first + i, &mut |w| self.write_store(i, w))
                .map_err(|e| self.changed(i, e.into()));
            self.store_done(i, result.map(|diff_id| (unstored_info(diff_id, lengths[i]), None, false)))
        })
    }

    /// Exact byte length of every store layer, from `lstat` alone (in parallel: on large
    /// closures this pass is not free).
    pub fn store_lengths(&self) -> Result<Vec<u64>, Error> {
        let opts = self.store_opts();
        self.each_store_layer(|i| {
            nix_layer_tar::store_layer_len(&self.store_paths()[i], &opts).map_err(Error::from)
        })
    }

    /// diff_id and length of every store layer, hashed without being stored (the first
    /// pass of a stream, which must name each layer before its bytes go out).
    pub fn store_digests(&self) -> Result<Vec<(Digest, u64)>, Error> {
        self.each_store_layer(|i| {
            let mut w = HashingWriter::new(io::sink());
            self.write_store(i, &mut w).map_err(io_err(format!("cannot read store layer {}", i + 1)))?;
            let (_, d, n) = w.finish();
            Ok((d, n))
        })
    }

    /// Store layers in plan order, produced by `req.jobs` threads ahead of the reader
    /// into bounded buffers: `consume(i, reader)` is called once per layer, in order.
    /// Memory stays under jobs × [`STREAM_BUFFERS`] × [`STREAM_CHUNK`].
    pub fn stream_store(&self, wanted: &[bool], consume: &mut ConsumeLayer) -> Result<(), Error> {
        let n = self.store_paths().len();
        let slots: Mutex<Vec<Option<Chunks>>> = Mutex::new((0..n).map(|_| None).collect());
        let ready = Condvar::new();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| -> Result<(), Error> {
            for _ in 0..self.req.jobs.max(1).min(n.max(1)) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    if !wanted[i] {
                        continue;
                    }
                    let (tx, rx) = sync_channel(STREAM_BUFFERS);
                    slots.lock().expect("not poisoned")[i] = Some(rx);
                    ready.notify_all();
                    let mut w = io::BufWriter::with_capacity(STREAM_CHUNK, ChannelWriter(tx.clone()));
                    let result = self.write_store(i, &mut w).and_then(|()| w.flush());
                    drop(w);
                    if let Err(e) = result {
                        // The reader may be gone; then nobody needs the error either.
                        let _ = tx.send(Err(e));
                    }
                });
            }
            let outcome = (0..n).try_for_each(|i| {
                if !wanted[i] {
                    return consume(i, None);
                }
                let rx = {
                    let mut guard = slots.lock().expect("not poisoned");
                    loop {
                        if let Some(rx) = guard[i].take() {
                            break rx;
                        }
                        guard = ready.wait(guard).expect("not poisoned");
                    }
                };
                let mut reader = ChannelReader { rx, buf: Vec::new(), pos: 0 };
                consume(i, Some(&mut reader)).map_err(|e| self.changed(i, e))?;
                let paths = &self.store_paths()[i];
                self.progress.layer_done(&LayerKind::Store(i), self.nar_bytes(paths), false);
                Ok(())
            });
            if outcome.is_err() {
                // Unblock the producers: dropping every receiver makes their sends fail.
                let mut guard = slots.lock().expect("not poisoned");
                guard.iter_mut().for_each(|s| drop(s.take()));
                next.store(n, std::sync::atomic::Ordering::SeqCst);
            }
            outcome
        })
    }

    /// The layers of a stream, described without their bytes (the store's are hashed).
    pub fn store_unstored(&self, digests: &[(Digest, u64)]) -> Vec<Produced> {
        digests
            .iter()
            .enumerate()
            .map(|(i, &(d, n))| {
                let paths = &self.store_paths()[i];
                Produced::unstored(LayerKind::Store(i), d, n, paths_comment(paths), paths.len())
            })
            .collect()
    }

    /// A size or digest that moved between planning and writing means the store changed
    /// under the build: say so rather than report a generic mismatch. Other errors (the
    /// output cannot be written, its reader went away) are passed on as they are.
    fn changed(&self, i: usize, e: Error) -> Error {
        use nix_layer_image::Error as E;
        match e {
            Error::Image(E::LayerSize { .. } | E::DigestMismatch { .. }) => {
                let first = self.store_paths()[i].first().map(|p| p.to_string()).unwrap_or_default();
                Error::Changed { layer: i + 1, first, cause: Box::new(e) }
            }
            other => other,
        }
    }

    /// A store layer's bytes are fixed by its ordered paths (store paths are immutable;
    /// the NAR hash guards against a path rebuilt with other bytes), the tar settings and
    /// the compressor.
    pub fn cache_key(&self, paths: &[StorePath], c: Compression) -> CacheKey {
        let o = &self.req.owner;
        let settings =
            format!("{} {} {} {} {} {}", o.uid, o.gid, o.uname, o.gname, self.req.mtime.epoch, c.identity());
        let mut parts: Vec<Vec<u8>> = vec![LAYER_FORMAT.to_vec(), settings.into_bytes()];
        let g = &self.plan.graph;
        for p in paths {
            let hash =
                g.index_of(p).and_then(|i| g.info(i).nar_hash).map(|h| h.to_base16()).unwrap_or_default();
            parts.push(format!("{p} {hash}").into_bytes());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        CacheKey::new(&refs)
    }

    /// The customisation layer: merged contents, the top-layer spec, and the Nix
    /// database when asked for.
    pub fn top(&self, compression: Compression) -> Result<Produced, Error> {
        let db_dir = nix_layer_scratch::ScratchDir::new_in(&std::env::temp_dir(), "nix-layer-db-")
            .map_err(io_err("cannot create a temporary directory for the Nix database"))?;
        let mut generated = Vec::new();
        if self.req.nix_db {
            write_nix_db(self.plan, db_dir.path(), self.req.mtime.epoch)?;
            generated
                .push(GeneratedTree { path: "/nix/var/nix/db".into(), source: db_dir.path().to_path_buf() });
        }
        let input = TopLayerInput {
            contents: &self.req.contents,
            spec: &self.req.top_layer,
            generated: &generated,
            store_dir: &self.req.store_dir,
            host_files: self.req.host_files,
            mtime: self.req.mtime.epoch,
        };
        let blob = nix_layer_blob::write_blob(self.blob_dir, compression, |w| {
            nix_layer_tar::write_top_layer(&input, w).map(drop).map_err(io::Error::other)
        })?;
        self.progress.layer_done(&LayerKind::Top, blob.uncompressed_size, false);
        Ok(Produced::from_blob(LayerKind::Top, blob, "customisation layer".into(), 0, false))
    }
}

fn unstored_info(diff_id: Digest, size: u64) -> BlobInfo {
    BlobInfo { diff_id, uncompressed_size: size, digest: diff_id, size, compression: Compression::None }
}

/// Bytes in one buffer of a streamed layer, and buffers a producer may run ahead.
pub(crate) const STREAM_CHUNK: usize = 1 << 20;
pub(crate) const STREAM_BUFFERS: usize = 4;

/// What a stream does with store layer `i`: its bytes, or `None` for a layer not produced.
pub(crate) type ConsumeLayer<'a> = dyn FnMut(usize, Option<&mut dyn io::Read>) -> Result<(), Error> + 'a;

/// The receiving end of one streamed layer: its bytes in chunks, or the error that ended it.
type Chunks = Receiver<io::Result<Vec<u8>>>;

struct ChannelWriter(SyncSender<io::Result<Vec<u8>>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // At most one chunk per message, so the buffers bound the memory whatever the
        // writer's own buffer sizes.
        let n = buf.len().min(STREAM_CHUNK);
        self.0
            .send(Ok(buf[..n].to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the stream's reader stopped"))?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: Chunks,
    buf: Vec<u8>,
    pos: usize,
}

impl io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.buf = chunk?;
                    self.pos = 0;
                }
                // The producer finished: end of this layer.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn worker_pool(jobs: usize) -> Result<rayon::ThreadPool, Error> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {jobs} worker threads: {e}")))
}

/// The history comment dockerTools writes: the layer's store paths.
fn paths_comment(paths: &[StorePath]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("'{p}'")).collect();
    format!("store paths: [{}]", quoted.join(", "))
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
