//! Produces an image's layers: base layers copied in and verified, store layers in
//! parallel (as blobs, through the cache, straight into docker-archive slots, or as a
//! bounded stream), and the top layer.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use nix_layer_blob::{BlobInfo, CacheKey, Compression, Digest, HashingWriter, LayerBlob, LayerCache};
use nix_layer_image::SlotArchive;
use nix_layer_nixdb::Registration;
use nix_layer_store::StorePath;
use nix_layer_tar::{GeneratedTree, StoreLayerOptions, TopLayerInput};
use rayon::prelude::*;

use crate::{io_err, Error, ImagePlan, ImageRequest, Progress};

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
    pub req: &'a ImageRequest,
    pub plan: &'a ImagePlan,
    /// Where blobs that are not cached are written (the build's staging directory).
    pub blob_dir: &'a Path,
    pub progress: &'a dyn Progress,
    /// A registry's record of layers it already holds, by cache key (see [`crate::push`]):
    /// such a layer is not produced at all.
    pub remote: Option<&'a Remote<'a>>,
}

/// Looks a store layer's cache key up in a registry's layer index: the layer's description
/// if the registry holds its blob. The second argument hashes the layer's tar (diff_id and
/// length) for the lookup to check an entry against: the lookup must answer only with a
/// blob that unpacks to this tar (it may know the diff_id from an earlier hash of the same
/// cache key, which fixes the tar as it fixes a local cache entry).
pub type Remote<'a> = dyn Fn(&str, &LocalDiffId) -> Option<BlobInfo> + Sync + 'a;

/// The diff_id and length of a store layer's tar, hashed on first use.
pub type LocalDiffId<'a> = dyn Fn() -> Option<(Digest, u64)> + 'a;

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
            if let Some(remote) = self.remote {
                // A local hit is verified and costs no request: it goes first.
                if let Some(blob) =
                    cache.as_ref().and_then(|c| c.get(&key)).filter(|b| b.compression == compression)
                {
                    return self.store_done(i, Ok((blob.info().clone(), Some(blob), true)));
                }
                let hashed = std::sync::OnceLock::new();
                let local = || {
                    *hashed.get_or_init(|| {
                        let mut w = HashingWriter::new(io::sink());
                        self.write_store(i, &mut w).ok()?;
                        let (_, d, n) = w.finish();
                        Some((d, n))
                    })
                };
                if let Some(info) = remote(key.as_str(), &local).filter(|b| b.compression == compression) {
                    return self.store_done(i, Ok((info, None, true)));
                }
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

    /// diff_id and length of store layer `i`, hashed without being stored (what a stream
    /// to an engine that may hold the layer needs before it can leave the layer out).
    pub fn store_digest(&self, i: usize) -> Result<(Digest, u64), Error> {
        let mut w = HashingWriter::new(io::sink());
        self.write_store(i, &mut w).map_err(io_err(format!("cannot read store layer {}", i + 1)))?;
        let (_, d, n) = w.finish();
        Ok((d, n))
    }

    /// Store layers in plan order, produced by `req.jobs` threads ahead of the reader
    /// into bounded buffers: `consume(i, reader)` is called once per layer, in order
    /// (`None` for a layer not `wanted`, which is not produced).
    pub fn stream_store(&self, wanted: &[bool], consume: &mut ConsumeLayer) -> Result<(), Error> {
        let produce = |i: usize, w: &mut dyn Write| self.write_store(i, w);
        stream_ordered(self.req.jobs, wanted, &produce, &mut |i, reader| {
            let Some(reader) = reader else { return consume(i, None) };
            consume(i, Some(reader)).map_err(|e| self.changed(i, e))?;
            let paths = &self.store_paths()[i];
            self.progress.layer_done(&LayerKind::Store(i), self.nar_bytes(paths), false);
            Ok(())
        })
    }

    /// Store layer `i` of a stream, described without its bytes.
    pub fn store_unstored(&self, i: usize, diff_id: Digest, size: u64) -> Produced {
        let paths = &self.store_paths()[i];
        Produced::unstored(LayerKind::Store(i), diff_id, size, paths_comment(paths), paths.len())
    }

    /// A size or digest that moved between planning and writing means the store changed
    /// under the build: say so rather than report a generic mismatch. Other errors (the
    /// output cannot be written, its reader went away) are passed on as they are.
    pub fn changed(&self, i: usize, e: Error) -> Error {
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

/// What a stream does with layer `i`: its bytes, or `None` for a layer not produced.
pub(crate) type ConsumeLayer<'a> = dyn FnMut(usize, Option<&mut dyn io::Read>) -> Result<(), Error> + 'a;

/// Writes layer `i`'s bytes.
pub(crate) type ProduceLayer<'a> = dyn Fn(usize, &mut dyn Write) -> io::Result<()> + Sync + 'a;

/// The receiving end of one streamed layer: its bytes in chunks, or the error that ended it.
type Chunks = Receiver<io::Result<Vec<u8>>>;

/// Runs `produce` for every wanted layer on `jobs` threads, in order of index, each ahead
/// of the reader by at most [`STREAM_BUFFERS`] × [`STREAM_CHUNK`] bytes, and hands the
/// layers to `consume` in order. Returns when every thread has ended, with `consume`'s
/// first error.
///
/// Every layer's channel exists before any thread starts, and this function alone holds
/// the receiving ends. When `consume` fails they are all dropped before the threads are
/// waited for, so every send fails from then on: whether a thread is blocked in one, has
/// claimed a layer and not yet written, or claims one later. No thread can be left
/// waiting for a reader that is gone.
pub(crate) fn stream_ordered(
    jobs: usize,
    wanted: &[bool],
    produce: &ProduceLayer,
    consume: &mut ConsumeLayer,
) -> Result<(), Error> {
    let n = wanted.len();
    let (senders, receivers): (Vec<Option<SyncSender<_>>>, Vec<Option<Chunks>>) = wanted
        .iter()
        .map(|&w| match w {
            true => {
                let (tx, rx) = sync_channel(STREAM_BUFFERS);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        })
        .unzip();
    let senders = Mutex::new(senders);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(n.max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let Some(tx) = senders.lock().expect("not poisoned")[i].take() else { continue };
                let mut w = io::BufWriter::with_capacity(STREAM_CHUNK, ChannelWriter(tx.clone()));
                let result = produce(i, &mut w).and_then(|()| w.flush());
                drop(w);
                if let Err(e) = result {
                    // The reader may be gone; then nobody needs the error either.
                    let _ = tx.send(Err(e));
                }
            });
        }
        let mut receivers = receivers;
        let mut outcome = Ok(());
        for (i, slot) in receivers.iter_mut().enumerate() {
            let mut reader = slot.take().map(|rx| ChannelReader { rx, buf: Vec::new(), pos: 0 });
            outcome = consume(i, reader.as_mut().map(|r| r as _));
            if outcome.is_err() {
                // No further layer is started, and only then is any receiver dropped: a
                // producer freed by a failing send must not claim a layer whose channel
                // still takes its chunks.
                next.store(n, Ordering::SeqCst);
                break;
            }
        }
        // Before the scope waits for the threads: every send fails from here on.
        next.store(n, Ordering::SeqCst);
        drop(receivers);
        outcome
    })
}

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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use super::*;

    /// Runs `f` on a thread of its own; a test that would hang fails instead. (A guard,
    /// not synchronisation: nothing waits for this time to pass.)
    fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(60)).expect("the stream hung")
    }

    fn layer_bytes(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
    }

    #[test]
    fn layers_arrive_whole_and_in_order() {
        let lens = [0, 1, STREAM_CHUNK + 3, 5 * STREAM_CHUNK, 17];
        let wanted = [true, true, false, true, true];
        let got = within_a_minute(move || {
            let produce = |i: usize, w: &mut dyn Write| w.write_all(&layer_bytes(i, lens[i]));
            let mut got = Vec::new();
            stream_ordered(3, &wanted, &produce, &mut |i, r| {
                let mut bytes = Vec::new();
                if let Some(r) = r {
                    r.read_to_end(&mut bytes).unwrap();
                }
                got.push((i, bytes));
                Ok(())
            })
            .unwrap();
            got
        });
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        for (i, bytes) in &got {
            let expected = if wanted[*i] { layer_bytes(*i, lens[*i]) } else { Vec::new() };
            assert!(*bytes == expected, "layer {i}: {} bytes", bytes.len());
        }
    }

    #[test]
    fn a_producer_error_reaches_the_reader() {
        let err = within_a_minute(|| {
            let produce = |i: usize, w: &mut dyn Write| {
                w.write_all(b"partial")?;
                match i {
                    1 => Err(io::Error::other("a store file vanished")),
                    _ => Ok(()),
                }
            };
            stream_ordered(2, &[true, true, true], &produce, &mut |_, r| {
                let mut bytes = Vec::new();
                r.expect("wanted").read_to_end(&mut bytes).map_err(io_err("reading"))?;
                Ok(())
            })
            .unwrap_err()
        });
        assert!(err.to_string().contains("a store file vanished"), "{err}");
    }

    /// How far each producer got, and a signal when that changes.
    #[derive(Default)]
    struct Progress {
        writes_started: Mutex<Vec<usize>>,
        changed: Condvar,
    }

    impl Progress {
        fn started(&self, i: usize) {
            self.writes_started.lock().unwrap()[i] += 1;
            self.changed.notify_all();
        }
        fn wait_until(&self, done: impl Fn(&[usize]) -> bool) {
            let mut w = self.writes_started.lock().unwrap();
            while !done(&w) {
                w = self.changed.wait(w).unwrap();
            }
        }
    }

    /// The race of `build -o - | head -c 100`, forced: the output fails after 100 bytes
    /// while two producers are blocked on full buffers, a third has claimed its layer but
    /// not yet written (it writes only once the reader has failed), and more layers are
    /// left. The stream must end with the output's error and every thread must end: no
    /// producer may wait for a reader that is gone.
    #[test]
    fn a_failing_reader_releases_every_producer() {
        const LAYERS: usize = 6;
        let progress =
            Arc::new(Progress { writes_started: Mutex::new(vec![0; LAYERS]), ..Default::default() });
        let (failed_tx, failed_rx) = channel::<()>();
        let failed_rx = Mutex::new(failed_rx);
        let p = progress.clone();
        let (err, consumed) = within_a_minute(move || {
            // Layers 0 and 1 never end by themselves; layer 2 waits for the reader to fail.
            let produce = |i: usize, w: &mut dyn Write| -> io::Result<()> {
                if i == 2 {
                    p.started(i);
                    let _ = failed_rx.lock().unwrap().recv();
                }
                let chunk = vec![i as u8; STREAM_CHUNK];
                loop {
                    p.started(i);
                    w.write_all(&chunk)?;
                }
            };
            let mut consumed = Vec::new();
            let failed: Mutex<Option<Sender<()>>> = Mutex::new(Some(failed_tx));
            let err = stream_ordered(3, &[true; LAYERS], &produce, &mut |i, r| {
                consumed.push(i);
                // Both endless producers are in (or entering) a send into a full channel:
                // nobody has read a byte yet.
                p.wait_until(|w| w[0] > STREAM_BUFFERS && w[1] > STREAM_BUFFERS && w[2] == 1);
                let mut head = [0u8; 100];
                r.expect("wanted").read_exact(&mut head).map_err(io_err("reading"))?;
                drop(failed.lock().unwrap().take());
                Err(Error::Io {
                    context: "cannot write the stream".into(),
                    source: io::Error::from(io::ErrorKind::BrokenPipe),
                })
            })
            .unwrap_err();
            (err, consumed)
        });
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe),
            "{err}"
        );
        assert_eq!(consumed, [0], "the reader stopped at the first layer");
        let started = progress.writes_started.lock().unwrap().clone();
        assert!(
            started[3..].iter().all(|&n| n <= 1),
            "no layer was produced past a first write: {started:?}"
        );
    }
}
