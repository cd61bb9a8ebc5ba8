use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::write::{file_has_digest, set_final_mode, write_blob_via, Durability};
use crate::{BlobInfo, Compression, Digest, Error, LayerBlob};

/// Names a cache entry: the sha256 (hex) of everything that determines a layer's bytes.
///
/// Callers must include *every* input that changes the output (path set and order, tar
/// options, owners and mtime, compression, nix-layer's version): two layers with one key
/// are assumed to be identical.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// Hashes `parts`, each prefixed with its length so `["ab","c"]` and `["a","bc"]` differ.
    pub fn new(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for part in parts {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        CacheKey(hex::encode(h.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.0)
    }
}

/// What [`LayerCache::verify_all`] found and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub blobs_checked: usize,
    /// Blobs whose contents did not match their name (or that had no valid name).
    pub blobs_removed: Vec<PathBuf>,
    pub entries_checked: usize,
    /// Keys of entries that were unreadable or pointed at a missing or changed blob.
    pub entries_removed: Vec<String>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checked {} blobs ({} removed) and {} entries ({} removed)",
            self.blobs_checked,
            self.blobs_removed.len(),
            self.entries_checked,
            self.entries_removed.len()
        )?;
        for path in &self.blobs_removed {
            write!(f, "\nremoved damaged blob {}", path.display())?;
        }
        for key in &self.entries_removed {
            write!(f, "\nremoved invalid entry {key}")?;
        }
        Ok(())
    }
}

/// A content-addressed store of finished layer blobs, keyed by [`CacheKey`].
///
/// Layout under `root`: `blobs/sha256/<hex>` (read-only blobs, shared by every entry with
/// the same bytes), `entries/<key>` (small JSON records), `tmp/` (files being written).
/// Every file appears under its final name by an atomic rename, so concurrent builders,
/// threads or processes, can insert and read at the same time; inserting one key twice
/// at once is harmless because both writers produce identical files.
///
/// An entry records the blob file's length, mtime and inode as seen at insertion, and a
/// checksum of its own contents. [`get`](Self::get) serves an entry only if all of these
/// still agree, which catches truncation, replacement and most edits without re-reading
/// the blob. An in-place edit that keeps the length and restores the mtime is only caught
/// by [`verify_all`](Self::verify_all), which re-hashes everything.
///
/// A cache this user cannot write (another user's, a read-only mount) is used read-only:
/// hits are served (after the same checks), misses are built outside it.
#[derive(Clone, Debug)]
pub struct LayerCache {
    root: PathBuf,
    writable: bool,
}

/// Entry format version; bump when [`EntryBody`] changes (old entries then read as misses).
const ENTRY_FORMAT: u32 = 1;
/// Entries are tiny; anything larger is not ours.
const MAX_ENTRY_LEN: u64 = 64 * 1024;
/// Name prefix of cache entries being written.
const ENTRY_PREFIX: &str = ".entry-";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBody {
    format: u32,
    diff_id: Digest,
    uncompressed_size: u64,
    digest: Digest,
    size: u64,
    compression: Compression,
    blob_len: u64,
    blob_mtime_ns: i64,
    blob_inode: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    entry: EntryBody,
    /// sha256 (hex) of `serde_json::to_vec(&entry)`.
    checksum: String,
}

impl EntryBody {
    fn checksum(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("entry serialises");
        hex::encode(Sha256::digest(&bytes))
    }
}

/// Why an entry is not served.
#[derive(Debug, PartialEq, Eq)]
enum Invalid {
    Unreadable,
    Unparsable,
    BadChecksum,
    OldFormat,
    BlobMissing,
    /// The blob's length differs from the size its name implies: it is damaged.
    BlobWrongLength,
    BlobChanged,
    /// The blob's bytes do not hash to its digest.
    BlobCorrupt,
}

fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec())
}

impl LayerCache {
    /// Opens (creating if needed) the cache at `root`, and removes temporary files left
    /// behind by builders that died more than a day ago.
    pub fn open(root: &Path) -> Result<Self, Error> {
        let mut cache = LayerCache { root: root.to_owned(), writable: true };
        let dirs = [cache.blobs_dir(), cache.entries_dir(), cache.tmp_dir()];
        for dir in &dirs {
            if let Err(e) = fs::create_dir_all(dir) {
                if !dir.is_dir() {
                    return Err(Error::io(
                        "could not create the layer cache directory (check permissions, or use another cache location)",
                        dir,
                    )(e));
                }
            }
        }
        cache.writable = dirs.iter().all(|d| rustix::fs::access(d, rustix::fs::Access::WRITE_OK).is_ok());
        if cache.writable {
            cache.remove_stale_tmp();
        }
        Ok(cache)
    }

    /// Opens a cache that must already exist (for maintenance commands: a typo must not
    /// create an empty cache and report it clean).
    pub fn open_existing(root: &Path) -> Result<Self, Error> {
        let probe = LayerCache { root: root.to_owned(), writable: false };
        if !probe.blobs_dir().is_dir() || !probe.entries_dir().is_dir() {
            return Err(Error::NotACache(root.to_owned()));
        }
        Self::open(root)
    }

    /// False when this user cannot add to the cache (it is then used read-only).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn entries_dir(&self) -> PathBuf {
        self.root.join("entries")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.entries_dir().join(key.as_str())
    }

    /// Path of the blob with `digest`, whether or not it is present.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Removes temporary files whose writer died (their lock is free); a running
    /// builder's files stay.
    fn remove_stale_tmp(&self) {
        let tmp = self.tmp_dir();
        crate::write::sweep_temporaries(&tmp);
        nix_layer_scratch::sweep(&tmp, ENTRY_PREFIX);
    }

    /// The blob cached under `key`, or `None` on a miss. An entry that fails validation is
    /// removed and reported as a miss, so the caller rebuilds the layer.
    pub fn get(&self, key: &CacheKey) -> Option<LayerBlob> {
        match self.check(key) {
            Ok(blob) => blob,
            Err(_) if !self.writable => None,
            Err(_) => {
                // A concurrent insert may have just replaced the bad entry with a good one;
                // removing that costs one rebuild, never a wrong answer.
                let _ = fs::remove_file(self.entry_path(key));
                None
            }
        }
    }

    /// `Ok(None)` on a plain miss, `Err` for an entry that must not be served.
    fn check(&self, key: &CacheKey) -> Result<Option<LayerBlob>, Invalid> {
        let mut file = match File::open(self.entry_path(key)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(_) => return Err(Invalid::Unreadable),
        };
        let mut bytes = Vec::new();
        (&mut file).take(MAX_ENTRY_LEN).read_to_end(&mut bytes).map_err(|_| Invalid::Unreadable)?;
        let parsed: EntryFile = serde_json::from_slice(&bytes).map_err(|_| Invalid::Unparsable)?;
        let e = parsed.entry;
        if parsed.checksum != e.checksum() {
            return Err(Invalid::BadChecksum);
        }
        if e.format != ENTRY_FORMAT {
            return Err(Invalid::OldFormat);
        }
        let path = self.blob_path(&e.digest);
        let meta = fs::symlink_metadata(&path).map_err(|_| Invalid::BlobMissing)?;
        if !meta.is_file() {
            return Err(Invalid::BlobMissing);
        }
        if meta.len() != e.size {
            // The digest fixes the length, so this file is damaged for every entry.
            let _ = fs::remove_file(&path);
            return Err(Invalid::BlobWrongLength);
        }
        if meta.len() != e.blob_len || mtime_ns(&meta) != e.blob_mtime_ns || meta.ino() != e.blob_inode {
            return Err(Invalid::BlobChanged);
        }
        // The cheap checks above catch most damage; hashing catches the rest (an edit that
        // keeps length, mtime and inode). Nothing is served unverified.
        let info = BlobInfo {
            diff_id: e.diff_id,
            uncompressed_size: e.uncompressed_size,
            digest: e.digest,
            size: e.size,
            compression: e.compression,
        };
        match LayerBlob::open_verified(&path, info) {
            Ok(blob) => Ok(Some(blob)),
            Err(_) => {
                let _ = fs::remove_file(&path);
                Err(Invalid::BlobCorrupt)
            }
        }
    }

    /// The blob cached under `key` if it is valid and stored with `compression`; otherwise
    /// runs `produce` to write the layer's tar stream, stores the blob and records the
    /// entry. Returns the blob and whether it was a hit.
    ///
    /// On a cache this user cannot write, a miss is built into `fallback_dir` instead and
    /// not recorded.
    pub fn get_or_insert(
        &self,
        key: &CacheKey,
        compression: Compression,
        fallback_dir: &Path,
        produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(LayerBlob, bool), Error> {
        if let Some(blob) = self.get(key) {
            if blob.compression == compression {
                return Ok((blob, true));
            }
        }
        if !self.writable {
            return Ok((crate::write_blob(fallback_dir, compression, produce)?, false));
        }
        let blob =
            write_blob_via(&self.tmp_dir(), &self.blobs_dir(), compression, Durability::Synced, produce)?;
        let meta = fs::symlink_metadata(blob.path())
            .map_err(Error::io("could not stat the cached blob", blob.path()))?;
        let entry = EntryBody {
            format: ENTRY_FORMAT,
            diff_id: blob.diff_id,
            uncompressed_size: blob.uncompressed_size,
            digest: blob.digest,
            size: blob.size,
            compression,
            blob_len: meta.len(),
            blob_mtime_ns: mtime_ns(&meta),
            blob_inode: meta.ino(),
        };
        self.write_entry(key, entry)?;
        Ok((blob, false))
    }

    fn write_entry(&self, key: &CacheKey, entry: EntryBody) -> Result<(), Error> {
        let tmp_dir = self.tmp_dir();
        let checksum = entry.checksum();
        let bytes = serde_json::to_vec(&EntryFile { entry, checksum }).expect("entry serialises");
        let mut tmp = nix_layer_scratch::ScratchFile::new_in(&tmp_dir, ENTRY_PREFIX)
            .map_err(Error::io("could not create a temporary cache entry in", &tmp_dir))?;
        tmp.write_all(&bytes).map_err(Error::io("could not write the cache entry", tmp.path()))?;
        // Readable by whoever the umask allows: a shared cache is read by other users.
        set_final_mode(tmp.file(), 0o644)
            .map_err(Error::io("could not write the cache entry", tmp.path()))?;
        // No fsync: an entry lost or torn by a crash fails its checksum and reads as a miss.
        let dest = self.entry_path(key);
        tmp.persist(&dest).map_err(|e| Error::io("could not store the cache entry", &dest)(e.source))?;
        Ok(())
    }

    /// Re-hashes every blob, removes those whose contents do not match their name, then
    /// removes entries that no longer validate. Slow (reads everything); meant for
    /// maintenance, not for every build.
    pub fn verify_all(&self) -> Result<VerifyReport, Error> {
        let mut report = VerifyReport::default();
        let blobs_dir = self.blobs_dir();
        for dirent in read_dir_sorted(&blobs_dir)? {
            let path = blobs_dir.join(&dirent);
            report.blobs_checked += 1;
            let intact = format!("sha256:{dirent}")
                .parse::<Digest>()
                .is_ok_and(|digest| file_has_digest(&path, &digest));
            if !intact {
                fs::remove_file(&path).map_err(Error::io("could not remove the damaged blob", &path))?;
                report.blobs_removed.push(path);
            }
        }
        for name in read_dir_sorted(&self.entries_dir())? {
            report.entries_checked += 1;
            let key = CacheKey(name.clone());
            if self.check(&key).is_err() {
                let path = self.entry_path(&key);
                fs::remove_file(&path)
                    .map_err(Error::io("could not remove the invalid cache entry", &path))?;
                report.entries_removed.push(name);
            }
        }
        Ok(report)
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<String>, Error> {
    let err = Error::io("could not list the layer cache directory", dir);
    let mut names = Vec::new();
    for dirent in fs::read_dir(dir).map_err(err)? {
        let dirent = dirent.map_err(Error::io("could not list the layer cache directory", dir))?;
        names.push(dirent.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{FileTimes, OpenOptions};
    use std::os::unix::fs::{FileExt, PermissionsExt};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    fn layer_bytes(seed: u8) -> Vec<u8> {
        (0..200_000u32).map(|i| (i % 253) as u8 ^ seed).collect()
    }

    fn key(name: &str) -> CacheKey {
        CacheKey::new(&[b"test", name.as_bytes()])
    }

    fn make_writable(path: &Path) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn entry_exists(cache: &LayerCache, k: &CacheKey) -> bool {
        cache.entry_path(k).exists()
    }

    #[test]
    fn key_is_length_prefixed_and_stable() {
        assert_ne!(CacheKey::new(&[b"ab", b"c"]), CacheKey::new(&[b"a", b"bc"]));
        assert_ne!(CacheKey::new(&[b"a"]), CacheKey::new(&[b"a", b""]));
        assert_eq!(CacheKey::new(&[b"x", b"y"]), CacheKey::new(&[b"x", b"y"]));
        assert_eq!(key("a").as_str().len(), 64);
        // Pinned: changing the key derivation silently empties every cache.
        assert_eq!(
            CacheKey::new(&[]).as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn miss_then_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("a");
        assert!(cache.get(&k).is_none());
        let (blob, hit) =
            cache.get_or_insert(&k, Compression::Gzip, dir.path(), |w| w.write_all(&layer_bytes(1))).unwrap();
        assert!(!hit);
        assert_eq!(blob.diff_id, Digest::of(&layer_bytes(1)));
        assert_eq!(blob.path(), cache.blob_path(&blob.digest));
        let (again, hit) = cache
            .get_or_insert(&k, Compression::Gzip, dir.path(), |_| panic!("must not rebuild on a hit"))
            .unwrap();
        assert!(hit);
        assert_eq!(again, blob);
        assert_eq!(cache.get(&k), Some(blob));
        assert!(fs::read_dir(cache.tmp_dir()).unwrap().next().is_none(), "tmp/ is left empty");
    }

    #[test]
    fn equal_blobs_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let (a, _) = cache
            .get_or_insert(&key("a"), Compression::Zstd, dir.path(), |w| w.write_all(&layer_bytes(3)))
            .unwrap();
        let (b, _) = cache
            .get_or_insert(&key("b"), Compression::Zstd, dir.path(), |w| w.write_all(&layer_bytes(3)))
            .unwrap();
        assert_eq!(a.path(), b.path());
        assert_eq!(fs::read_dir(cache.blobs_dir()).unwrap().count(), 1);
        // Both entries stay valid: the second insert kept the first file (same inode).
        assert_eq!(cache.get(&key("a")), Some(a));
        assert_eq!(cache.get(&key("b")), Some(b));
    }

    #[test]
    fn other_compression_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("c");
        cache.get_or_insert(&k, Compression::Gzip, dir.path(), |w| w.write_all(b"data")).unwrap();
        let (blob, hit) =
            cache.get_or_insert(&k, Compression::None, dir.path(), |w| w.write_all(b"data")).unwrap();
        assert!(!hit);
        assert_eq!(blob.compression, Compression::None);
        assert_eq!(cache.get(&k).unwrap().compression, Compression::None);
    }

    /// Belt and braces beside the key: an entry made at another level is not served.
    #[test]
    fn other_compression_level_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("level");
        let gzip9: Compression = "gzip:9".parse().unwrap();
        let data = layer_bytes(3);
        let (_, hit) =
            cache.get_or_insert(&k, Compression::Gzip, dir.path(), |w| w.write_all(&data)).unwrap();
        assert!(!hit);
        let (blob, hit) = cache.get_or_insert(&k, gzip9, dir.path(), |w| w.write_all(&data)).unwrap();
        assert!(!hit, "a gzip:5 entry was served for gzip:9");
        assert_eq!(blob.compression, gzip9);
        let (blob, hit) = cache.get_or_insert(&k, gzip9, dir.path(), |w| w.write_all(&data)).unwrap();
        assert!(hit && blob.compression == gzip9, "the level is kept in the entry");
    }

    #[test]
    fn truncated_blob_is_detected_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("t");
        let (blob, _) =
            cache.get_or_insert(&k, Compression::Gzip, dir.path(), |w| w.write_all(&layer_bytes(5))).unwrap();
        make_writable(blob.path());
        OpenOptions::new().write(true).open(blob.path()).unwrap().set_len(blob.size / 2).unwrap();
        assert_eq!(cache.check(&k), Err(Invalid::BlobWrongLength));
        assert!(cache.get(&k).is_none());
        assert!(!entry_exists(&cache, &k), "bad entry dropped");
        assert!(!blob.path().exists(), "damaged blob dropped");
        let (rebuilt, hit) =
            cache.get_or_insert(&k, Compression::Gzip, dir.path(), |w| w.write_all(&layer_bytes(5))).unwrap();
        assert!(!hit);
        assert_eq!(rebuilt.digest, blob.digest);
        assert!(file_has_digest(rebuilt.path(), &rebuilt.digest));
    }

    #[test]
    fn blob_overwritten_in_place_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("o");
        let (blob, _) =
            cache.get_or_insert(&k, Compression::None, dir.path(), |w| w.write_all(&layer_bytes(7))).unwrap();
        make_writable(blob.path());
        // File timestamps come from a coarse kernel clock; make sure the write lands on a
        // later tick than the insert.
        std::thread::sleep(Duration::from_millis(30));
        let mut f = OpenOptions::new().write(true).open(blob.path()).unwrap();
        f.write_all(b"XXXX").unwrap(); // same length, same inode, new contents
        drop(f);
        assert_eq!(cache.check(&k), Err(Invalid::BlobChanged));
        assert!(cache.get(&k).is_none());
        assert!(!entry_exists(&cache, &k));
    }

    #[test]
    fn blob_replaced_by_another_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("r");
        let (blob, _) =
            cache.get_or_insert(&k, Compression::None, dir.path(), |w| w.write_all(b"abc")).unwrap();
        let other = dir.path().join("other");
        fs::write(&other, b"xyz").unwrap();
        fs::rename(&other, blob.path()).unwrap();
        assert_eq!(cache.check(&k), Err(Invalid::BlobChanged));
        assert!(cache.get(&k).is_none());
    }

    #[test]
    fn garbage_or_tampered_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("g");
        cache.get_or_insert(&k, Compression::Zstd, dir.path(), |w| w.write_all(b"abc")).unwrap();
        let path = cache.entry_path(&k);

        let good = fs::read_to_string(&path).unwrap();
        let tampered = good.replacen("\"uncompressed_size\":3", "\"uncompressed_size\":4", 1);
        assert_ne!(tampered, good);
        fs::write(&path, tampered).unwrap();
        assert_eq!(cache.check(&k), Err(Invalid::BadChecksum));
        assert!(cache.get(&k).is_none());
        assert!(!path.exists());

        for garbage in [&b"\x00\xff garbage"[..], b"", b"{}", b"{\"entry\":1,\"checksum\":\"\"}"] {
            fs::write(&path, garbage).unwrap();
            assert_eq!(cache.check(&k), Err(Invalid::Unparsable));
            assert!(cache.get(&k).is_none());
            assert!(!path.exists());
        }
        let (_, hit) =
            cache.get_or_insert(&k, Compression::Zstd, dir.path(), |w| w.write_all(b"abc")).unwrap();
        assert!(!hit);
        assert!(cache.get(&k).is_some());
    }

    #[test]
    fn missing_blob_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("m");
        let (blob, _) =
            cache.get_or_insert(&k, Compression::None, dir.path(), |w| w.write_all(b"abc")).unwrap();
        fs::remove_file(blob.path()).unwrap();
        assert_eq!(cache.check(&k), Err(Invalid::BlobMissing));
        assert!(cache.get(&k).is_none());
    }

    /// Length, mtime and inode unchanged: only the hash sees the edit, and `get` hashes.
    #[test]
    fn same_size_same_mtime_corruption_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let k = key("quiet");
        let (blob, _) =
            cache.get_or_insert(&k, Compression::Zstd, dir.path(), |w| w.write_all(&layer_bytes(4))).unwrap();
        let mtime = fs::metadata(blob.path()).unwrap().modified().unwrap();
        make_writable(blob.path());
        let f = OpenOptions::new().write(true).open(blob.path()).unwrap();
        f.write_all_at(b"\xff\xff", 100).unwrap();
        f.set_times(FileTimes::new().set_modified(mtime)).unwrap();
        drop(f);
        assert_eq!(cache.check(&k), Err(Invalid::BlobCorrupt));
        let mut rebuilt = false;
        let (again, hit) = cache
            .get_or_insert(&k, Compression::Zstd, dir.path(), |w| {
                rebuilt = true;
                w.write_all(&layer_bytes(4))
            })
            .unwrap();
        assert!(rebuilt && !hit);
        assert!(file_has_digest(again.path(), &again.digest));
    }

    /// A symlink put in place of a blob is never followed or served.
    #[test]
    fn blob_replaced_by_a_symlink_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&dir.path().join("c")).unwrap();
        let k = key("link");
        let (blob, _) =
            cache.get_or_insert(&k, Compression::None, dir.path(), |w| w.write_all(b"layer")).unwrap();
        let decoy = dir.path().join("decoy");
        fs::write(&decoy, b"layer").unwrap();
        fs::remove_file(blob.path()).unwrap();
        std::os::unix::fs::symlink(&decoy, blob.path()).unwrap();
        assert!(cache.get(&k).is_none());
    }

    /// A cache this user cannot write still serves hits; misses are built elsewhere.
    #[test]
    fn read_only_cache_serves_hits_and_builds_misses_outside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        let cache = LayerCache::open(&root).unwrap();
        cache.get_or_insert(&key("a"), Compression::None, dir.path(), |w| w.write_all(b"a")).unwrap();
        let ro = LayerCache { root: root.clone(), writable: false };
        let (hit, was_hit) =
            ro.get_or_insert(&key("a"), Compression::None, dir.path(), |_| panic!("a hit")).unwrap();
        assert!(was_hit && hit.path().starts_with(&root));
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let (miss, was_hit) =
            ro.get_or_insert(&key("b"), Compression::None, &out, |w| w.write_all(b"b")).unwrap();
        assert!(!was_hit && miss.path().starts_with(&out));
        assert!(!ro.entry_path(&key("b")).exists());
    }

    #[test]
    fn open_existing_refuses_what_is_not_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = LayerCache::open_existing(&missing).unwrap_err();
        assert!(e.to_string().contains("is not a layer cache"), "{e}");
        assert!(!missing.exists(), "nothing is created");
        LayerCache::open(&missing).unwrap();
        LayerCache::open_existing(&missing).unwrap();
    }

    #[test]
    fn verify_all_catches_same_size_same_mtime_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let (bad, _) = cache
            .get_or_insert(&key("bad"), Compression::Gzip, dir.path(), |w| w.write_all(&layer_bytes(9)))
            .unwrap();
        let (good, _) = cache
            .get_or_insert(&key("good"), Compression::Gzip, dir.path(), |w| w.write_all(&layer_bytes(10)))
            .unwrap();
        let mtime = fs::metadata(bad.path()).unwrap().modified().unwrap();
        make_writable(bad.path());
        std::thread::sleep(Duration::from_millis(30));
        let mut f = OpenOptions::new().write(true).open(bad.path()).unwrap();
        f.write_all(b"\0\0\0\0").unwrap();
        f.set_times(FileTimes::new().set_modified(mtime)).unwrap();
        drop(f);
        fs::set_permissions(bad.path(), fs::Permissions::from_mode(0o444)).unwrap();
        let report = cache.verify_all().unwrap();
        assert_eq!(report.blobs_checked, 2);
        assert_eq!(report.blobs_removed, vec![bad.path().to_owned()]);
        assert_eq!(report.entries_checked, 2);
        assert_eq!(report.entries_removed, vec![key("bad").to_string()]);
        let text = report.to_string();
        assert!(text.starts_with("checked 2 blobs (1 removed) and 2 entries (1 removed)"), "{text}");
        assert!(text.contains(&bad.digest.hex()), "{text}");
        assert!(cache.get(&key("bad")).is_none());
        assert_eq!(cache.get(&key("good")), Some(good));
        // A second pass finds nothing more.
        let again = cache.verify_all().unwrap();
        assert!(again.blobs_removed.is_empty() && again.entries_removed.is_empty());
    }

    #[test]
    fn verify_all_removes_stray_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let stray = cache.blobs_dir().join("not-a-digest");
        fs::write(&stray, b"x").unwrap();
        let report = cache.verify_all().unwrap();
        assert_eq!(report.blobs_removed, vec![stray.clone()]);
        assert!(!stray.exists());
    }

    #[test]
    fn open_removes_only_temp_files_whose_writer_died() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        // Left by a killed builder: nobody holds its lock.
        let dead = cache.tmp_dir().join(".blob-old.partial");
        fs::write(&dead, b"x").unwrap();
        let dead_entry = cache.tmp_dir().join(".entry-old");
        fs::write(&dead_entry, b"x").unwrap();
        // Being written by a live builder (this process, from another thread's view).
        let live = nix_layer_scratch::ScratchFile::new_in(&cache.tmp_dir(), ".blob-").unwrap();
        LayerCache::open(dir.path()).unwrap();
        assert!(!dead.exists() && !dead_entry.exists());
        assert!(live.path().exists(), "a running builder's file is left alone");
    }

    #[test]
    fn open_reports_an_unusable_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = LayerCache::open(&file).unwrap_err();
        assert!(err.to_string().contains("could not create the layer cache directory"), "{err}");
    }

    /// Several threads insert one key at once; all succeed with the same blob.
    #[test]
    fn concurrent_inserts_from_threads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(LayerCache::open(dir.path()).unwrap());
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (cache, barrier) = (cache.clone(), barrier.clone());
                let fallback = dir.path().to_owned();
                std::thread::spawn(move || {
                    barrier.wait();
                    cache
                        .get_or_insert(&key("shared"), Compression::Gzip, &fallback, |w| {
                            for chunk in layer_bytes(11).chunks(10_000) {
                                w.write_all(chunk)?;
                            }
                            Ok(())
                        })
                        .unwrap()
                        .0
                })
            })
            .collect();
        let blobs: Vec<LayerBlob> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(blobs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(cache.get(&key("shared")), Some(blobs[0].clone()));
        assert!(file_has_digest(blobs[0].path(), &blobs[0].digest));
        assert_eq!(fs::read_dir(cache.blobs_dir()).unwrap().count(), 1);
        assert!(fs::read_dir(cache.tmp_dir()).unwrap().next().is_none());
    }

    const CHILD_ENV: &str = "NIX_LAYER_BLOB_TEST_CACHE_ROOT";

    /// Helper for `concurrent_inserts_from_two_processes`: run in a child process, it
    /// inserts one slowly produced layer into the cache named by the environment.
    #[test]
    #[ignore = "helper run by concurrent_inserts_from_two_processes"]
    fn child_inserts_slowly() {
        let Some(root) = std::env::var_os(CHILD_ENV) else { return };
        let cache = LayerCache::open(Path::new(&root)).unwrap();
        let (blob, hit) = cache
            .get_or_insert(&key("two-processes"), Compression::None, Path::new(&root), |w| {
                for chunk in layer_bytes(13).chunks(20_000) {
                    w.write_all(chunk)?;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            })
            .unwrap();
        println!("CHILD-RESULT {} {hit}", blob.digest);
    }

    #[test]
    fn concurrent_inserts_from_two_processes() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args(["--ignored", "--exact", "cache::tests::child_inserts_slowly", "--nocapture"])
                    .env(CHILD_ENV, dir.path())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let expected = Digest::of(&layer_bytes(13));
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "child failed: {stdout}");
            let line = stdout.lines().find(|l| l.starts_with("CHILD-RESULT")).expect("child reported");
            assert!(line.contains(&expected.to_string()), "{line}");
        }
        let cache = LayerCache::open(dir.path()).unwrap();
        let blob = cache.get(&key("two-processes")).expect("entry valid after both inserts");
        assert!(file_has_digest(blob.path(), &expected));
        assert!(fs::read_dir(cache.tmp_dir()).unwrap().next().is_none());
    }
}
