use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::compression::Encoder;
use crate::{Compression, Digest, Error, HashingWriter};

/// A layer stored as a file: what a manifest (digest, size), an image config (diff_id) and a
/// docker-archive (uncompressed size) need to know about it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    /// sha256 of the uncompressed tar stream (goes into the image config's `rootfs`).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// sha256 of the stored bytes (goes into the manifest).
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
    /// A file holding exactly the stored bytes.
    pub path: PathBuf,
}

impl LayerBlob {
    /// The OCI layer media type for this blob's compression.
    pub fn media_type(&self) -> &'static str {
        self.compression.layer_media_type()
    }
}

/// Buffer in front of the hasher: tar writers emit many 512-byte headers.
const FRONT_BUFFER: usize = 256 * 1024;
/// Buffer in front of the file: few, large writes.
const FILE_BUFFER: usize = 1024 * 1024;

/// Streams a layer's tar bytes once: sha256 of the uncompressed stream (`diff_id`) →
/// compressor → sha256 of what is stored (`digest`) → a temporary file in `dir`, renamed to
/// `dir/<digest hex>` once complete. The blob is made read-only (0444). It is not synced:
/// these blobs feed an output that is itself renamed into place, like any file a tool
/// writes; the layer cache, which must not serve torn data after a crash, syncs.
///
/// A failure (including one returned by `produce`) leaves no file behind. If `dir/<hex>`
/// already holds the right bytes it is kept as it is (other names may be hard links to it);
/// a file of that name with other contents is replaced.
pub fn write_blob(
    dir: &Path,
    compression: Compression,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<LayerBlob, Error> {
    write_blob_via(dir, dir, compression, Durability::Unsynced, produce)
}

/// Whether a blob is synced to disk before it gets its final name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Unsynced,
    Synced,
}

/// [`write_blob`] with the temporary file in `tmp_dir` (same file system as `dest_dir`).
pub(crate) fn write_blob_via(
    tmp_dir: &Path,
    dest_dir: &Path,
    compression: Compression,
    durability: Durability,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<LayerBlob, Error> {
    let tmp = tempfile::Builder::new()
        .prefix(".blob-")
        .suffix(".partial")
        .tempfile_in(tmp_dir)
        .map_err(Error::io("could not create a temporary blob file in", tmp_dir))?;
    let tmp_path = tmp.path().to_owned();
    let write_err = |e| Error::io("could not write the blob file", &tmp_path)(e);

    let file = BufWriter::with_capacity(FILE_BUFFER, tmp.as_file());
    let stored = match compression {
        // Stored bytes == uncompressed bytes: one hash is enough.
        Compression::None => Stage::Plain(file),
        c => Stage::Packed(Box::new(c.encoder(HashingWriter::new(file)).map_err(write_err)?)),
    };
    let mut front = BufWriter::with_capacity(FRONT_BUFFER, HashingWriter::new(stored));
    produce(&mut front).map_err(|cause| Error::Produce { dir: dest_dir.to_owned(), cause })?;
    let raw = front.into_inner().map_err(|e| write_err(e.into_error()))?;
    let (stored, diff_id, uncompressed_size) = raw.finish();
    let (mut file, stored_digest) = stored.finish().map_err(write_err)?;
    file.flush().map_err(write_err)?;
    drop(file);
    let (digest, size) = stored_digest.unwrap_or((diff_id, uncompressed_size));

    // Synced before the rename so a crash cannot leave a complete-looking name over
    // missing data.
    if durability == Durability::Synced {
        tmp.as_file().sync_all().map_err(write_err)?;
    }
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o444)).map_err(write_err)?;

    let path = dest_dir.join(digest.hex());
    install(tmp, &path, &digest)?;
    Ok(LayerBlob { diff_id, uncompressed_size, digest, size, compression, path })
}

/// Moves a finished temporary file to `dest`, which is named by `digest`.
pub(crate) fn install(tmp: NamedTempFile, dest: &Path, digest: &Digest) -> Result<(), Error> {
    let err = Error::io("could not move the finished blob to", dest);
    match tmp.persist_noclobber(dest) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            // Another writer got there first (a concurrent build, or another layer with the
            // same bytes). Keep its file if it is intact: replacing it would change its inode
            // and so invalidate cache entries and hard links that point at it.
            if file_has_digest(dest, digest) {
                Ok(())
            } else {
                e.file.persist(dest).map(drop).map_err(|e| err(e.error))
            }
        }
        Err(e) => Err(err(e.error)),
    }
}

/// True if `path` is a regular file whose contents hash to `digest`.
pub(crate) fn file_has_digest(path: &Path, digest: &Digest) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    matches!(Digest::of_reader(&mut f as &mut dyn Read), Ok((d, _)) if d == *digest)
}

/// The write side after the uncompressed hasher.
enum Stage<W: Write> {
    Plain(W),
    Packed(Box<Encoder<HashingWriter<W>>>),
}

impl<W: Write> Stage<W> {
    /// The file writer and, when compressed, the stored digest and size.
    fn finish(self) -> io::Result<(W, Option<(Digest, u64)>)> {
        match self {
            Stage::Plain(w) => Ok((w, None)),
            Stage::Packed(enc) => {
                let (w, digest, size) = enc.finish()?.finish();
                Ok((w, Some((digest, size))))
            }
        }
    }
}

impl<W: Write> Write for Stage<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stage::Plain(w) => w.write(buf),
            Stage::Packed(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stage::Plain(w) => w.flush(),
            Stage::Packed(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::compress_bytes;

    fn data() -> Vec<u8> {
        (0u32..300_000).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    fn produce_data(w: &mut dyn Write) -> io::Result<()> {
        // Uneven chunks, like a tar writer's headers and file bodies.
        for chunk in data().chunks(7919) {
            w.write_all(chunk)?;
        }
        Ok(())
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn records_both_digests_and_stores_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let input = data();
        for c in Compression::ALL {
            let blob = write_blob(dir.path(), c, produce_data).unwrap();
            assert_eq!(blob.diff_id, Digest::of(&input), "{c}");
            assert_eq!(blob.uncompressed_size, input.len() as u64);
            assert_eq!(blob.compression, c);
            let stored = fs::read(&blob.path).unwrap();
            assert_eq!(blob.path, dir.path().join(blob.digest.hex()));
            assert_eq!((Digest::of(&stored), stored.len() as u64), (blob.digest, blob.size));
            // Same bytes as the in-memory encoder: buffering does not change the stream.
            assert_eq!(stored, compress_bytes(c, &input).unwrap(), "{c}");
            let mut back = Vec::new();
            c.decoder(&stored[..]).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, input, "{c}");
            let mode = fs::metadata(&blob.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o444);
        }
        assert_eq!(files_in(dir.path()).len(), 3, "only the three blobs remain");
    }

    #[test]
    fn same_input_gives_same_blob() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for c in Compression::ALL {
            let x = write_blob(a.path(), c, produce_data).unwrap();
            let y = write_blob(b.path(), c, |w| w.write_all(&data())).unwrap();
            assert_eq!((x.digest, x.size, x.diff_id), (y.digest, y.size, y.diff_id), "{c}");
            assert_eq!(fs::read(&x.path).unwrap(), fs::read(&y.path).unwrap());
        }
    }

    #[test]
    fn failure_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_blob(dir.path(), Compression::Gzip, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("source vanished"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Produce { .. }));
        assert!(err.to_string().contains("source vanished"), "{err}");
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn missing_dir_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = write_blob(&missing, Compression::None, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn existing_intact_blob_is_kept_and_corrupt_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_blob(dir.path(), Compression::Zstd, produce_data).unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = ino(&first.path);
        let again = write_blob(dir.path(), Compression::Zstd, produce_data).unwrap();
        assert_eq!(ino(&again.path), before, "an intact blob keeps its inode");

        // Corrupt it (make it writable first, as a careless tool might).
        fs::set_permissions(&first.path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&first.path, b"garbage").unwrap();
        let fixed = write_blob(dir.path(), Compression::Zstd, produce_data).unwrap();
        assert!(file_has_digest(&fixed.path, &fixed.digest));
        assert_eq!(files_in(dir.path()).len(), 1);
    }

    #[test]
    fn empty_stream_is_a_valid_blob() {
        let dir = tempfile::tempdir().unwrap();
        for c in Compression::ALL {
            let blob = write_blob(dir.path(), c, |_| Ok(())).unwrap();
            assert_eq!(blob.diff_id, Digest::of(b""));
            assert_eq!(blob.uncompressed_size, 0);
            let mut back = Vec::new();
            c.decoder(File::open(&blob.path).unwrap()).unwrap().read_to_end(&mut back).unwrap();
            assert!(back.is_empty());
        }
    }
}
