//! The registry's layer index, used as a hint and nothing more.
//!
//! An entry (cache key → blob) lets a push skip compressing a store layer. Whoever can
//! push to the repository can write the index, so an entry is used only when:
//!
//! 1. its diff_id is the one of the tar this machine would write for the layer (hashed
//!    here, uncompressed: no compression is paid), and
//! 2. its blob, as the cache repository serves it, unpacks to exactly that tar: the blob is
//!    streamed (at most its recorded size), decompressed as a registry client does it
//!    (every gzip member, every zstd frame; at most the tar's length) and hashed. The proof
//!    is remembered in the [`BlobInfoRecord`], so each blob is downloaded once per machine.
//!
//! What this guarantees: every layer of the pushed image unpacks to the bytes a push
//! without the index would send, so the config (and its diff_ids) is the same and so is
//! every container's filesystem. It does not prove how a blob was compressed: an entry whose
//! blob holds the right tar compressed by another encoder or level is used as it is, and
//! the manifest then names that blob (its digest differs from the local build's), unless
//! `exact` is asked for: the unpacked tar is then compressed again here and must give the
//! blob's digest (a proof then costs a compression). Anything
//! else (wrong diff_id, a blob that unpacks to other bytes, that is missing, larger than
//! recorded or not compressed as its media type says) is ignored with a warning and the
//! layer is built locally, so the push gives the image it would give without the index.
//! An unreadable index is skipped with a warning.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::Mutex;

use nix_layer_blob::{BlobInfo, Compression, Digest, HashingWriter};
use nix_layer_registry::{Client, LayerCacheIndex, Reference};

use crate::record::{BlobInfoRecord, Proven, Tar};

/// Counts of what the index lookups did, for the summary and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Entries used (their layers were not compressed).
    pub used: usize,
    /// Of those, blobs proven by this push (downloaded and unpacked).
    pub proven: usize,
    /// Compressed bytes downloaded to prove them.
    pub proof_bytes: u64,
    /// Entries refused (see the warnings).
    pub refused: usize,
}

/// `repo`'s layer index, or an empty one and a warning when it cannot be read (damaged,
/// foreign, oversized, endless, deleted, or the registry failed): the index is a hint, and
/// a push goes on without it.
pub fn read_or_skip(client: &Client, repo: &Reference) -> (LayerCacheIndex, Option<String>) {
    match client.read_layer_cache(repo) {
        Ok(index) => (index, None),
        Err(e) => (
            LayerCacheIndex::default(),
            Some(format!(
                "the registry's layer index of {}/{} is skipped: {e}",
                repo.registry, repo.repository
            )),
        ),
    }
}

/// A read registry index with the checks above.
pub(crate) struct VerifiedIndex<'a> {
    pub client: &'a Client,
    pub repo: Reference,
    pub index: LayerCacheIndex,
    pub record: &'a BlobInfoRecord,
    /// Blobs must also be what the local encoder makes of the tar.
    pub exact: bool,
    /// The push's compression: the cache key names its codec and level, so an entry is
    /// of this codec and level or unusable.
    pub compression: Compression,
    /// Blobs a HEAD found in `repo` at their size.
    pub confirmed: Mutex<HashSet<Digest>>,
    pub stats: Mutex<IndexStats>,
    pub warnings: Mutex<Vec<String>>,
}

impl<'a> VerifiedIndex<'a> {
    /// Reads `repo`'s index; a damaged, foreign or oversized one is skipped with a warning.
    pub fn read(
        client: &'a Client,
        repo: Reference,
        record: &'a BlobInfoRecord,
        exact: bool,
        compression: Compression,
    ) -> VerifiedIndex<'a> {
        let (index, warning) = read_or_skip(client, &repo);
        let warnings = warning.into_iter().collect();
        VerifiedIndex {
            client,
            repo,
            index,
            record,
            exact,
            compression,
            confirmed: Mutex::default(),
            stats: Mutex::default(),
            warnings: Mutex::new(warnings),
        }
    }

    fn refuse(&self, key: &str, why: String) -> Option<BlobInfo> {
        self.stats.lock().expect("stats").refused += 1;
        self.warnings.lock().expect("warnings").push(format!(
            "the registry's layer index entry {key} is not used ({why}); the layer is built here"
        ));
        None
    }

    /// The layer with cache key `key`, if the index has an entry for it that passes the
    /// checks; `local` hashes the layer's tar.
    pub fn lookup(&self, key: &str, local: &nix_layer_pipeline::LocalDiffId) -> Option<BlobInfo> {
        let entry = self.index.get(key)?;
        // The media type names the codec only; the level comes from the key.
        let compression = self.compression;
        if entry.media_type != compression.layer_media_type() {
            return self.refuse(key, format!("media type {} is not {compression}'s", entry.media_type));
        }
        let (diff_id, tar_len) = match self.record.tar(key) {
            Some(t) => (t.diff_id, t.size),
            None => {
                let (diff_id, size) = local()?;
                self.record.add_tar(key, Tar { diff_id, size });
                (diff_id, size)
            }
        };
        if entry.diff_id != diff_id {
            return self.refuse(key, format!("it names diff_id {}, the layer's is {diff_id}", entry.diff_id));
        }
        match self.client.head_blob(&self.repo, &entry.digest) {
            Ok(Some(size)) if size == entry.size => {}
            Ok(Some(size)) => {
                return self.refuse(key, format!("blob {} is {size} bytes, not {}", entry.digest, entry.size))
            }
            Ok(None) => return self.refuse(key, format!("blob {} is missing", entry.digest)),
            Err(e) => return self.refuse(key, format!("blob {}: {e}", entry.digest)),
        }
        let known = self.record.proven(&entry.digest).is_some_and(|p| {
            (p.diff_id, p.size, p.compression) == (diff_id, tar_len, compression)
                && (p.reproduced || !self.exact)
        });
        if !known {
            match prove(self.client, &self.repo, &entry.digest, entry.size, compression, tar_len, self.exact)
            {
                Ok(got) if (got.diff_id, got.size) == (diff_id, tar_len) => {
                    let reproduced = got.reencoded == Some(entry.digest);
                    if self.exact && !reproduced {
                        return self.refuse(
                            key,
                            format!(
                                "blob {} holds the layer but compressed otherwise than here",
                                entry.digest
                            ),
                        );
                    }
                    let mut s = self.stats.lock().expect("stats");
                    s.proven += 1;
                    s.proof_bytes += entry.size;
                    self.record.add_proven(
                        &entry.digest,
                        Proven { diff_id, size: tar_len, compression, reproduced },
                    );
                }
                Ok(got) => {
                    return self.refuse(
                        key,
                        format!(
                            "blob {} unpacks to {} ({} bytes), not to the layer",
                            entry.digest, got.diff_id, got.size
                        ),
                    )
                }
                Err(e) => {
                    return self.refuse(key, format!("blob {} cannot be unpacked: {e:#}", entry.digest))
                }
            }
        }
        self.stats.lock().expect("stats").used += 1;
        self.confirmed.lock().expect("confirmed").insert(entry.digest);
        self.record.add_location(&self.repo.registry, &self.repo.repository, &entry.digest);
        Some(BlobInfo {
            diff_id,
            uncompressed_size: tar_len,
            digest: entry.digest,
            size: entry.size,
            compression,
        })
    }
}

/// What a blob unpacks to.
pub(crate) struct Unpacked {
    pub diff_id: Digest,
    pub size: u64,
    /// The digest of the tar compressed again by this machine's encoder, when asked.
    pub reencoded: Option<Digest>,
}

/// Downloads `blob` (at most `size` bytes; its digest checked by the client), unpacks it
/// as `compression` with the reader every local check uses (every gzip member, every zstd
/// frame; a truncated stream is an error), at most `max_tar` bytes (one more proves it
/// longer), and hashes what it unpacks to; with `reencode`, also compresses that again.
pub(crate) fn prove(
    client: &Client,
    repo: &Reference,
    blob: &Digest,
    size: u64,
    compression: Compression,
    max_tar: u64,
    reencode: bool,
) -> anyhow::Result<Unpacked> {
    let (rx, tx) = io::pipe()?;
    std::thread::scope(|s| {
        let unpack = s.spawn(move || -> io::Result<Unpacked> {
            let mut tar = HashingWriter::new(BoundedTar { left: max_tar.saturating_add(1) });
            let mut again = match reencode {
                true => Some(compression.encoder(HashingWriter::new(io::sink()))?),
                false => None,
            };
            let mut decoder = compression.decoder(rx)?;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match decoder.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                tar.write_all(&buf[..n])?;
                if let Some(enc) = again.as_mut() {
                    enc.write_all(&buf[..n])?;
                }
            }
            let reencoded = again.map(|e| e.finish().map(|h| h.digest())).transpose()?;
            let (_, diff_id, size) = tar.finish();
            Ok(Unpacked { diff_id, size, reencoded })
        });
        let mut body = BoundedBody { left: size, pipe: tx };
        let fetched = client.fetch_blob(repo, blob, &mut body);
        drop(body); // end of input for the unpacker
        let unpacked = unpack.join().map_err(|_| anyhow::anyhow!("the unpacker panicked"))?;
        // The unpacker's error explains a fetch cut short by it (a broken pipe).
        let got = unpacked?;
        fetched?;
        Ok(got)
    })
}

/// Discards bytes, failing once more than `left` arrive.
struct BoundedTar {
    left: u64,
}

impl Write for BoundedTar {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.left = self
            .left
            .checked_sub(buf.len() as u64)
            .ok_or_else(|| io::Error::other("it unpacks to more bytes than the layer has"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Passes at most `left` compressed bytes on: a body longer than the blob's recorded size
/// fails as it arrives.
struct BoundedBody {
    left: u64,
    pipe: io::PipeWriter,
}

impl Write for BoundedBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.left = self
            .left
            .checked_sub(buf.len() as u64)
            .ok_or_else(|| io::Error::other("the blob is longer than its recorded size"))?;
        self.pipe.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
