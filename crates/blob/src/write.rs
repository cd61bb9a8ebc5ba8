use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::ops::Deref;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix_layer_scratch::ScratchFile;

use crate::compression::Encoder;
use crate::{Compression, Digest, Error, HashingWriter};

/// What a manifest (digest, size), an image config (diff_id) and a docker-archive
/// (uncompressed size) need to know about a layer blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// sha256 of the uncompressed tar stream (goes into the image config's `rootfs`).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// sha256 of the stored bytes (goes into the manifest).
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
}

impl BlobInfo {
    /// The OCI layer media type for this blob's compression.
    pub fn media_type(&self) -> &'static str {
        self.compression.layer_media_type()
    }
}

/// A layer stored as a file whose bytes were hashed on the way in: either while they were
/// written ([`write_blob`]) or by reading the file once ([`LayerBlob::open_verified`]).
///
/// It holds the file open (opened without following symlinks), so what is read or
/// hard-linked later is the inode that was verified, whatever happens to its name.
/// There is no other way to make one: every blob an output receives has been verified.
#[derive(Clone, Debug)]
pub struct LayerBlob {
    info: BlobInfo,
    path: PathBuf,
    file: Arc<File>,
}

impl Deref for LayerBlob {
    type Target = BlobInfo;
    fn deref(&self) -> &BlobInfo {
        &self.info
    }
}

impl PartialEq for LayerBlob {
    fn eq(&self, other: &Self) -> bool {
        self.info == other.info && self.path == other.path
    }
}

impl Eq for LayerBlob {}

impl LayerBlob {
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    /// Where the blob was when it was verified (for messages; read through [`reader`](Self::reader)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored bytes, read from the verified inode.
    pub fn reader(&self) -> impl Read + '_ {
        FileAt { file: &self.file, pos: 0 }
    }

    /// Opens `path` without following a symlink, checks that it is a regular file of
    /// `info.size` bytes and that its bytes hash to `info.digest`. `info`'s diff_id and
    /// uncompressed size are taken as given (they describe what the stored bytes decompress
    /// to, and are fixed by the digest once it matches).
    pub fn open_verified(path: &Path, info: BlobInfo) -> Result<LayerBlob, Error> {
        let file = open_blob(path)?;
        let meta = file.metadata().map_err(Error::io("cannot stat the blob", path))?;
        if !meta.is_file() || meta.len() != info.size {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                problem: format!("expected a regular file of {} bytes, found {}", info.size, describe(&meta)),
            });
        }
        let (actual, len) = Digest::of_reader(&mut FileAt { file: &file, pos: 0 })
            .map_err(Error::io("cannot read the blob", path))?;
        if actual != info.digest || len != info.size {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                problem: format!("its bytes hash to {actual}, not {}", info.digest),
            });
        }
        Ok(LayerBlob { info, path: path.to_owned(), file: Arc::new(file) })
    }

    /// Puts the blob at `dest` (temporary files go in `dest`'s directory): a hard link to
    /// the verified inode where the file system allows it, else a copy checked against the
    /// digest as it is written. A file already at `dest` is kept only if it is this inode
    /// or a regular file with the right bytes; anything else there is replaced.
    pub fn install_at(&self, dest: &Path) -> Result<(), Error> {
        if let Ok(existing) = fs::symlink_metadata(dest) {
            let ours = self.file.metadata().map_err(Error::io("cannot stat the blob", &self.path))?;
            if existing.is_file() && existing.ino() == ours.ino() && existing.dev() == ours.dev() {
                return Ok(());
            }
            if existing.is_file() && existing.len() == self.size && file_has_digest(dest, &self.digest) {
                return Ok(());
            }
            remove_if_present(dest)?;
        }
        if self.link_to(dest).is_ok() {
            return Ok(());
        }
        self.copy_to(dest)
    }

    /// `linkat` of the open file through `/proc/self/fd`, so the name that is linked is
    /// the inode that was verified, not whatever the source path holds now.
    fn link_to(&self, dest: &Path) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let src = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            src.as_str(),
            rustix::fs::CWD,
            dest,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(io::Error::from)
    }

    fn copy_to(&self, dest: &Path) -> Result<(), Error> {
        let tmp = temp_blob(parent_of(dest))?;
        let write_err = |e| Error::io("could not write the blob file", tmp.path())(e);
        let mut w = HashingWriter::new(BufWriter::with_capacity(FILE_BUFFER, tmp.file()));
        io::copy(&mut self.reader(), &mut w).map_err(write_err)?;
        let (buffered, digest, size) = w.finish();
        buffered.into_inner().map_err(|e| write_err(e.into_error()))?;
        if digest != self.digest || size != self.size {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                problem: format!("it changed after it was verified (now {digest}, {size} bytes)"),
            });
        }
        set_final_mode(tmp.file(), 0o444).map_err(write_err)?;
        install(tmp, dest, &self.digest).map(drop)
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn remove_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot replace the damaged file", path)(e)),
    }
}

fn describe(meta: &fs::Metadata) -> String {
    let ft = meta.file_type();
    if ft.is_file() {
        format!("{} bytes", meta.len())
    } else if ft.is_dir() {
        "a directory".into()
    } else {
        "something that is not a regular file".into()
    }
}

/// Opens a file for reading without following a final symlink (`O_NOFOLLOW`; a symlink
/// gives `ELOOP`).
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path)
}

/// [`open_no_follow`] for blobs: a symlink planted where a blob was expected is an error,
/// never a way to read another file.
fn open_blob(path: &Path) -> Result<File, Error> {
    open_no_follow(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            Error::Corrupt { path: path.to_owned(), problem: "it is a symlink".into() }
        } else {
            Error::io("cannot open the blob", path)(e)
        }
    })
}

/// Sets `mode` as masked by the process umask: files meant to be shared (blobs, index
/// files) get the permissions the user's umask allows, not a temporary file's 0600.
pub(crate) fn set_final_mode(file: &File, mode: u32) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(nix_layer_scratch::final_mode(mode)))
}

/// A reader at a moving offset of a shared file (`pread`): several readers of one open
/// file do not disturb each other.
struct FileAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
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
    let tmp = temp_blob(tmp_dir)?;
    let tmp_path = tmp.path().to_owned();
    let write_err = |e| Error::io("could not write the blob file", &tmp_path)(e);

    let file = BufWriter::with_capacity(FILE_BUFFER, tmp.file());
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
    let info = BlobInfo { diff_id, uncompressed_size, digest, size, compression };
    finish_blob(tmp, dest_dir, info, durability)
}

/// Stores bytes that are already a layer blob compressed with `compression` (a base
/// image's layer), hashing them as stored (`digest`) and, in the same pass, as
/// decompressed (`diff_id`), so the caller can check both against what the image claims.
pub fn write_stored_blob(
    dir: &Path,
    compression: Compression,
    stored: &mut dyn Read,
) -> Result<LayerBlob, Error> {
    let tmp = temp_blob(dir)?;
    let tmp_path = tmp.path().to_owned();
    let read_err = |e| Error::io("could not copy a stored blob into", &tmp_path)(e);
    let (digest, size, diff_id, uncompressed_size) = {
        let file = BufWriter::with_capacity(FILE_BUFFER, tmp.file());
        let mut tee = Tee { inner: stored, copy: HashingWriter::new(file) };
        let mut plain = HashingWriter::new(io::sink());
        {
            let mut decoder = compression.decoder(&mut tee).map_err(read_err)?;
            io::copy(&mut decoder, &mut plain).map_err(read_err)?;
        }
        // Whatever follows the compressed stream is part of the stored bytes too.
        io::copy(&mut tee, &mut io::sink()).map_err(read_err)?;
        let Tee { copy, .. } = tee;
        let (file, digest, size) = copy.finish();
        file.into_inner().map_err(|e| read_err(e.into_error()))?;
        let (_, diff_id, uncompressed_size) = plain.finish();
        (digest, size, diff_id, uncompressed_size)
    };
    let info = BlobInfo { diff_id, uncompressed_size, digest, size, compression };
    finish_blob(tmp, dir, info, Durability::Unsynced)
}

/// A reader that copies everything it reads into `copy`.
struct Tee<R, W> {
    inner: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Name prefix of blobs being written: a build killed outright leaves them behind, and
/// [`sweep_temporaries`] removes those no live process holds.
pub(crate) const TEMP_PREFIX: &str = ".blob-";

/// A temporary blob file: locked while written, removed if the process is interrupted.
fn temp_blob(dir: &Path) -> Result<ScratchFile, Error> {
    ScratchFile::new_in(dir, TEMP_PREFIX).map_err(Error::io("could not create a temporary blob file in", dir))
}

/// Removes temporary blobs in `dir` left by processes that died (SIGKILL, power loss).
pub fn sweep_temporaries(dir: &Path) -> usize {
    nix_layer_scratch::sweep(dir, TEMP_PREFIX)
}

/// Gives a fully written temporary blob its final mode and name (`dest_dir/<digest hex>`).
fn finish_blob(
    tmp: ScratchFile,
    dest_dir: &Path,
    info: BlobInfo,
    durability: Durability,
) -> Result<LayerBlob, Error> {
    let tmp_path = tmp.path().to_owned();
    let write_err = |e| Error::io("could not write the blob file", &tmp_path)(e);
    // Synced before the rename so a crash cannot leave a complete-looking name over
    // missing data.
    if durability == Durability::Synced {
        tmp.file().sync_all().map_err(write_err)?;
    }
    set_final_mode(tmp.file(), 0o444).map_err(write_err)?;
    let path = dest_dir.join(info.digest.hex());
    let file = tmp.file().try_clone().map_err(write_err)?;
    match install(tmp, &path, &info.digest)? {
        // Another writer's intact file is under the name: hold that inode instead, so
        // hard links made from this blob share it.
        Installed::Existing => LayerBlob::open_verified(&path, info),
        Installed::Ours => Ok(LayerBlob { info, path, file: Arc::new(file) }),
    }
}

/// Which file ended up under a blob's name.
pub(crate) enum Installed {
    Ours,
    Existing,
}

/// Moves a finished temporary file to `dest`, which is named by `digest`.
pub(crate) fn install(tmp: ScratchFile, dest: &Path, digest: &Digest) -> Result<Installed, Error> {
    let err = Error::io("could not move the finished blob to", dest);
    match tmp.persist_noclobber(dest) {
        Ok(_) => Ok(Installed::Ours),
        Err(e) if e.is_already_exists() => {
            // Another writer got there first (a concurrent build, or another layer with the
            // same bytes). Keep its file if it is intact: replacing it would change its inode
            // and so invalidate cache entries and hard links that point at it.
            if file_has_digest(dest, digest) {
                Ok(Installed::Existing)
            } else {
                e.file.persist(dest).map(|_| Installed::Ours).map_err(|e| err(e.source))
            }
        }
        Err(e) => Err(err(e.source)),
    }
}

/// True if `path` is a regular file (not a symlink) whose contents hash to `digest`.
pub(crate) fn file_has_digest(path: &Path, digest: &Digest) -> bool {
    let Ok(mut f) = open_blob(path) else { return false };
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
            let stored = fs::read(blob.path()).unwrap();
            assert_eq!(blob.path(), dir.path().join(blob.digest.hex()));
            assert_eq!((Digest::of(&stored), stored.len() as u64), (blob.digest, blob.size));
            // Same bytes as the in-memory encoder: buffering does not change the stream.
            assert_eq!(stored, compress_bytes(c, &input).unwrap(), "{c}");
            let mut back = Vec::new();
            c.decoder(&stored[..]).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, input, "{c}");
            let mode = fs::metadata(blob.path()).unwrap().permissions().mode();
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
            assert_eq!(fs::read(x.path()).unwrap(), fs::read(y.path()).unwrap());
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
        let before = ino(first.path());
        let again = write_blob(dir.path(), Compression::Zstd, produce_data).unwrap();
        assert_eq!(ino(again.path()), before, "an intact blob keeps its inode");

        // Corrupt it (make it writable first, as a careless tool might).
        fs::set_permissions(first.path(), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(first.path(), b"garbage").unwrap();
        let fixed = write_blob(dir.path(), Compression::Zstd, produce_data).unwrap();
        assert!(file_has_digest(fixed.path(), &fixed.digest));
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
            c.decoder(File::open(blob.path()).unwrap()).unwrap().read_to_end(&mut back).unwrap();
            assert!(back.is_empty());
        }
    }

    #[test]
    fn open_verified_checks_bytes_type_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let blob = write_blob(dir.path(), Compression::Gzip, produce_data).unwrap();
        let again = LayerBlob::open_verified(blob.path(), blob.info().clone()).unwrap();
        assert_eq!(again, blob);

        let copy = dir.path().join("copy");
        fs::copy(blob.path(), &copy).unwrap();
        let mut wrong = blob.info().clone();
        wrong.digest = Digest::of(b"other");
        let e = LayerBlob::open_verified(&copy, wrong).unwrap_err();
        assert!(e.to_string().contains("hash to"), "{e}");
        let mut short = blob.info().clone();
        short.size -= 1;
        assert!(LayerBlob::open_verified(&copy, short).is_err());

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&copy, &link).unwrap();
        let e = LayerBlob::open_verified(&link, blob.info().clone()).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn install_links_the_verified_inode_or_copies_and_checks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let blob = write_blob(dir.path(), Compression::None, produce_data).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let dest = out.join(blob.digest.hex());
        blob.install_at(&dest).unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&dest), ino(blob.path()));
        // The source name now holds something else: the verified inode is still what installs.
        fs::remove_file(blob.path()).unwrap();
        fs::write(blob.path(), b"swapped").unwrap();
        let dest2 = out.join("second");
        blob.install_at(&dest2).unwrap();
        assert_eq!(fs::read(&dest2).unwrap(), data());
        // The copy path verifies too, and a damaged file at the destination is replaced.
        let dest3 = out.join("third");
        fs::write(&dest3, b"garbage").unwrap();
        blob.copy_to(&out.join("fourth")).unwrap();
        blob.install_at(&dest3).unwrap();
        assert_eq!(fs::read(&dest3).unwrap(), data());
        assert_eq!(fs::read(out.join("fourth")).unwrap(), data());
        // A symlink at the destination is replaced, not written through.
        let target = dir.path().join("target");
        fs::write(&target, b"keep me").unwrap();
        let dest5 = out.join("fifth");
        std::os::unix::fs::symlink(&target, &dest5).unwrap();
        blob.install_at(&dest5).unwrap();
        assert!(fs::symlink_metadata(&dest5).unwrap().is_file());
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn stored_blobs_get_both_digests_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        for c in Compression::ALL {
            let stored = compress_bytes(c, &data()).unwrap();
            let blob = write_stored_blob(dir.path(), c, &mut &stored[..]).unwrap();
            assert_eq!((blob.digest, blob.size), (Digest::of(&stored), stored.len() as u64), "{c}");
            assert_eq!(
                (blob.diff_id, blob.uncompressed_size),
                (Digest::of(&data()), data().len() as u64),
                "{c}"
            );
            assert_eq!(fs::read(blob.path()).unwrap(), stored);
        }
        assert!(write_stored_blob(dir.path(), Compression::Zstd, &mut &b"not zstd"[..]).is_err());
    }
}
